"""Bounds on what a request, a guest or an operator's number can make the platform hold or break,
and the smaller defects of issue 10 item 7, in a real engine with real modules:

- a trace item stays within its byte budget whatever a Worker logs or fetches;
- retention holds by bytes as well as by count, and a hand-set absurd retention breaks nothing;
- a response header with a control character is refused with 502, never passed on as `ok`;
- a var removed from a protocol Worker is gone from its environment;
- a corrupt stored module is an `internalError` with a sentence, not `exceededMemory`;
- the database and its companions are private to their owner;
- a read-only database is one sentence.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from wasmdeck.engine import Engine, InvalidInput, TraceFilter
from wasmdeck.engine.store import DEFAULT_TRACE_RETENTION_BYTES, CorruptModule, DatabaseUnavailable, Store
from wasmdeck.engine.traces import MAX_ITEM_BYTES, item_size, new_item

from .conftest import fixture_module, protocol_module
from .guest_modules import environment_of, environment_probe_module, protocol_response_module, stdout_bytes_module

REPO = Path(__file__).resolve().parent.parent


async def stored(engine: Engine, worker: str) -> list[dict]:
    await engine.flush_traces()
    return engine.recent_traces(10, TraceFilter(worker=worker))


def stored_sizes(db_path: Path) -> list[int]:
    with sqlite3.connect(db_path) as db:
        return [row[0] for row in db.execute("SELECT length(CAST(item AS BLOB)) FROM traces")]


# -- trace item size ------------------------------------------------------------------------


async def test_a_fetch_and_log_flood_makes_one_bounded_trace_item(engine: Engine, db_path: Path) -> None:
    """1,000 refused fetches of a 64 KiB URL, each logged (64 KiB log frames), made one 63 MiB item."""
    engine.deploy("fetcher", protocol_module("fetcher"))  # a new namespace allows no egress: every fetch is refused
    long_url = "http://blocked.example.com/?q=" + "x" * 64 * 1024
    response = await engine.request(f"http://fetcher.example.com/?count=1000&url={quote(long_url, safe='')}")
    assert response.status == 200, response.text[:200]
    item = response.trace
    assert item["truncated"] is True
    assert item_size(item) <= MAX_ITEM_BYTES, f"the item is {item_size(item)} bytes"
    assert item["subrequests"], "every subrequest entry was dropped; the first ones should stay"
    assert all(len(entry["url"]) <= 2048 for entry in item["subrequests"])
    assert item["subrequests"][0]["url"].startswith("http://blocked.example.com/?q=xxx")
    assert item["subrequests"][0]["url"].endswith("\u2026"), "a cut URL must say it was cut"
    assert sum(len(log["message"][0]) for log in item["logs"]) <= 128 * 1024
    assert len(item["event"]["request"]["url"]) <= 8 * 1024
    [kept] = await stored(engine, "fetcher")
    assert kept["truncated"] and max(stored_sizes(db_path)) <= MAX_ITEM_BYTES


async def test_a_wcgi_worker_logging_at_its_limits_stays_within_the_budget(engine: Engine, deploy) -> None:
    deploy("misbehave")
    response = await engine.request("http://misbehave.x/?mode=stderrflood&lines=5000")
    assert response.status == 200
    assert response.trace["truncated"] is True and item_size(response.trace) <= MAX_ITEM_BYTES


def test_every_long_field_of_an_item_is_cut_and_marked() -> None:
    huge = "y" * 300_000
    item = new_item(
        script_name="w", namespace="default", outcome="exception", event_timestamp=1, cpu_time=1, wall_time=1,
        url="http://w.example.com/" + huge, method="GET",
        headers=[(f"X-H{i}", huge) for i in range(300)], status=500,
        logs=[{"timestamp": 1, "level": "log", "message": [huge]} for _ in range(3000)],
        exceptions=[{"timestamp": 1, "name": huge, "message": huge} for _ in range(100)],
        subrequests=[{"url": "http://a/" + huge, "method": "GET", "via": "refused", "durationMs": 1.0, "error": huge}] * 5000,
    )
    assert item["truncated"] is True
    assert item_size(item) <= MAX_ITEM_BYTES
    assert len(item["event"]["request"]["headers"]) <= 100
    assert all(len(value) <= 4096 for value in item["event"]["request"]["headers"].values())
    assert len(item["exceptions"]) <= 20 and all(len(e["message"]) <= 8192 and len(e["name"]) <= 200 for e in item["exceptions"])


def test_escaped_text_counts_at_its_stored_size() -> None:
    """Control characters take six bytes each in the stored JSON: the budget is in stored bytes."""
    item = new_item(
        script_name="w", namespace="default", outcome="ok", event_timestamp=1, cpu_time=1, wall_time=1,
        url="http://w.example.com/", method="GET", headers=[], status=200,
        logs=[{"timestamp": 1, "level": "log", "message": ["\x01" * 60_000]} for _ in range(2)]
        + [{"timestamp": 1, "level": "log", "message": ["\U0001F600" * 8_000]}],
    )
    assert item_size(item) <= MAX_ITEM_BYTES and item["truncated"] is True


def test_a_small_item_is_untouched() -> None:
    logs = [{"timestamp": 1, "level": "info", "message": ["hello served GET /"]}]
    item = new_item(script_name="w", namespace="default", outcome="ok", event_timestamp=1, cpu_time=1, wall_time=1,
                    url="http://w.example.com/a?b=c", method="GET", headers=[("Accept", "*/*")], status=200, logs=logs)
    assert item["truncated"] is False and item["logs"] == logs
    assert item["event"]["request"] == {"url": "http://w.example.com/a?b=c", "method": "GET", "headers": {"accept": "*/*"}}


# -- retention ----------------------------------------------------------------------------------


def _big_item(index: int, size: int) -> dict:
    return new_item(script_name="w", namespace="default", outcome="ok", event_timestamp=index, cpu_time=1, wall_time=1,
                    url=f"http://w.example.com/{index}", method="GET", headers=[], status=200,
                    logs=[{"timestamp": 1, "level": "log", "message": ["z" * 60_000]} for _ in range(size // 60_000)])


def test_retention_by_bytes_keeps_the_newest_that_fit(db_path: Path) -> None:
    store = Store(db_path)
    try:
        assert store.trace_retention_bytes() == DEFAULT_TRACE_RETENTION_BYTES
        store.set_trace_retention(max_bytes=2**20)
        for batch in range(10):
            store.insert_traces("test", [_big_item(batch * 3 + i, 120_000) for i in range(3)])
        kept = [item["eventTimestamp"] for _, item in store.traces_newest(100)]
        assert store.trace_bytes() <= 2**20, f"{store.trace_bytes()} bytes kept"
        assert sum(stored_sizes(db_path)) == store.trace_bytes()
        assert kept == list(range(29, 29 - len(kept), -1)) and len(kept) >= 7, kept
        store.set_trace_retention(items=3)
        store.insert_traces("test", [_big_item(30, 1000)])
        assert [item["eventTimestamp"] for _, item in store.traces_newest(100)] == [30, 29, 28]
    finally:
        store.close()


def test_retention_numbers_have_sane_ranges(engine: Engine) -> None:
    for items, max_bytes in ((0, None), (10**23, None), (None, 1000), (None, 10**23), (True, None), ("5", None)):
        with pytest.raises(InvalidInput):
            engine.set_trace_retention(items, max_bytes=max_bytes)
    engine.set_trace_retention(500, max_bytes=64 * 2**20)
    assert (engine.trace_retention(), engine.trace_retention_bytes()) == (500, 64 * 2**20)


async def test_an_absurd_stored_retention_does_not_break_trace_writes(engine: Engine, deploy, db_path: Path) -> None:
    """An older wasmdeck accepted `retention 99999999999999999999999`; then every trace write failed."""
    with sqlite3.connect(db_path) as db:
        db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('trace_retention', '99999999999999999999999')")
        db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('trace_retention_bytes', 'lots')")
    deploy("hello")
    await engine.request("http://hello.x/")
    assert len(await stored(engine, "hello")) == 1
    assert engine.traces.write_dropped == 0


# -- response headers with control characters --------------------------------------------------------


@pytest.mark.parametrize("value, named", [(b"a\x00b", "NUL"), (b"a\rb", "CR"), (b"a\x1bb", "0x1b"), (b"a\x7fb", "DEL")])
async def test_a_cgi_header_value_with_a_control_character_is_refused(engine: Engine, value: bytes, named: str) -> None:
    engine.deploy("raw", stdout_bytes_module(b"Content-Type: text/plain\r\nX-Bad: " + value + b"\r\n\r\nbody"))
    response = await engine.request("http://raw.x/")
    assert response.status == 502 and response.outcome == "exception"
    assert "X-Bad" in response.text and named in response.text, response.text
    assert response.trace["exceptions"][0]["name"] == "InvalidResponse"
    assert "X-Bad" in response.trace["exceptions"][0]["message"]


async def test_a_tab_in_a_header_value_is_allowed(engine: Engine) -> None:
    engine.deploy("raw", stdout_bytes_module(b"Content-Type: text/plain\r\nX-Ok: a\tb\r\n\r\nbody"))
    response = await engine.request("http://raw.x/")
    assert response.status == 200 and response.header("x-ok") == "a\tb"


@pytest.mark.parametrize("value, named", [("a\u0000b", "NUL"), ("a\rb", "CR"), ("a\u0001b", "0x01")])
async def test_a_protocol_header_value_with_a_control_character_is_refused(engine: Engine, value: str, named: str) -> None:
    engine.deploy("raw", protocol_response_module(200, [["content-type", "text/plain"], ["x-bad", value]], b"hi"), abi="protocol")
    response = await engine.request("http://raw.x/")
    assert response.status == 502 and response.outcome == "exception"
    assert "x-bad" in response.text and named in response.text, response.text
    assert response.trace["event"]["response"]["status"] == 502


# -- protocol Worker environment -------------------------------------------------------------------


async def test_a_var_removed_from_a_protocol_worker_is_absent(engine: Engine) -> None:
    engine.deploy("probe", environment_probe_module(), abi="protocol", vars={"KEEP": "1", "DROP": "secret"})
    assert environment_of((await engine.request("http://probe.x/")).body) == {"KEEP": "1", "DROP": "secret"}
    engine.set_vars("probe", {"KEEP": "2"})
    assert environment_of((await engine.request("http://probe.x/")).body) == {"KEEP": "2"}
    engine.set_vars("probe", {})
    assert environment_of((await engine.request("http://probe.x/")).body) == {}


# -- corrupt modules ----------------------------------------------------------------------------------


async def test_a_corrupt_stored_module_is_an_internal_error_with_a_sentence(db_path: Path, wasmer_cache: Path) -> None:
    async with Engine(db_path, cache_dir=wasmer_cache) as engine:
        worker = engine.deploy("hello", fixture_module("hello"))
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE modules SET bytes = ? WHERE sha256 = ?", [b"\0asm\x01\0\0\0 corrupt", worker.sha256])
    async with Engine(db_path, cache_dir=wasmer_cache) as engine:
        # what runs is the metered copy, checked against its own digest: still whole, so it serves,
        # while reading the original (export, the admin API's content) says it is corrupt
        assert (await engine.request("http://hello.x/")).status == 200
        with pytest.raises(CorruptModule):
            engine.module_bytes(worker)
    with sqlite3.connect(db_path) as db:  # the metered copy damaged too: it is made again from the original
        db.execute("UPDATE metered_modules SET bytes = ? WHERE sha256 = ?", [b"\0asm\x01\0\0\0 damaged", worker.sha256])
    async with Engine(db_path, cache_dir=wasmer_cache) as engine:
        response = await engine.request("http://hello.x/")
        assert response.status == 500 and response.outcome == "internalError"
        assert "corrupt" in response.text and "sha256" in response.text
        assert "memory" not in response.text.lower()
        assert response.trace["exceptions"][0]["message"].startswith(f"the stored module {worker.sha256[:12]} is corrupt")
        with pytest.raises(CorruptModule):
            engine.module_bytes(worker)


# -- the database file ---------------------------------------------------------------------------------


async def test_the_database_and_its_companions_are_private(tmp_path: Path) -> None:
    folder = tmp_path / "new-folder"
    db = folder / "wasmdeck.db"
    async with Engine(db) as engine:
        engine.deploy("hello", fixture_module("hello"), vars={"API_TOKEN": "s3cret"})
        await engine.request("http://hello.x/")  # the first dispatch creates the compile cache
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path.name}: {oct(path.stat().st_mode)}"
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        cache = db.with_name(db.name + ".wasmer-cache")
        assert stat.S_IMODE(cache.stat().st_mode) & 0o077 == 0, oct(cache.stat().st_mode)


def test_an_existing_world_readable_database_is_made_private(db_path: Path) -> None:
    Store(db_path).close()
    os.chmod(db_path, 0o644)
    Store(db_path).close()
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


def _read_only(path: Path) -> None:
    """Make `path` unwritable even for root (immutable), or skip."""
    os.chmod(path, 0o444)
    if os.geteuid() != 0:
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr: a file cannot be made read-only")


def _writable(path: Path) -> None:
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    os.chmod(path, 0o600)


def _cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wasmdeck.cli.main", "--db", str(db), *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def test_a_read_only_database_is_one_sentence(tmp_path: Path) -> None:
    db = tmp_path / "ro.db"
    assert _cli(db, "deploy", "hello", str(fixture_module("hello"))).returncode == 0
    _read_only(db)
    try:
        listed = _cli(db, "list")
        assert listed.returncode == 0 and "hello" in listed.stdout, listed.stderr  # reading still works
        refused = _cli(db, "deploy", "other", str(fixture_module("hello")))
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
        assert "read-only" in refused.stderr and str(db) in refused.stderr
        served = _cli(db, "request", "http://hello.x/")
        assert served.returncode == 0 and served.stdout == "Hello from wasmdeck!\n"
        assert "Traceback" not in served.stderr and "read-only" in served.stderr, served.stderr
        assert len(served.stderr.strip().splitlines()) == 1, served.stderr
    finally:
        _writable(db)


def test_a_read_only_database_refuses_writes_through_the_store(tmp_path: Path) -> None:
    db = tmp_path / "ro.db"
    Store(db).close()
    _read_only(db)
    try:
        store = Store(db)
        try:
            with pytest.raises(DatabaseUnavailable, match="read-only"):
                store.set_trace_retention(5)
        finally:
            store.close()
    finally:
        _writable(db)


def test_rollback_to_an_absurd_version_is_refused(engine: Engine, deploy) -> None:
    deploy("hello")
    with pytest.raises(InvalidInput, match="version"):
        engine.rollback("hello", 10**23)
    assert json.loads(json.dumps(engine.worker("hello").as_dict()))["version"] == 1

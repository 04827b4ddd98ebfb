"""Deploy pipeline, versions, rollback, and the SQLite store shared by many processes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from wasmdeck.engine import Engine, InvalidInput, InvalidModule, NotFound
from wasmdeck.engine.store import SCHEMA_VERSION, Store

from .conftest import ROOT, fixture_module
from .wasm_builder import HEADER, module_importing

def snapshot(engine: Engine) -> list:
    return [(w.namespace, w.name, w.version, w.sha256, w.tags, w.vars) for w in engine.store.workers()]


@pytest.mark.parametrize(
    ("module", "needle"),
    [
        (b"", "empty"),
        (b"hello, world", "ReferenceError: hello is not defined"),  # UTF-8 text: a JavaScript Worker, checked
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "not a WebAssembly module"),
        (HEADER, "_start"),
        (fixture_module("hello").read_bytes()[:100], "truncated"),
        (module_importing("env", "host_call"), "env.host_call"),
        (module_importing("wasi_snapshot_preview1", "not_a_call"), "wasi_snapshot_preview1.not_a_call"),
    ],
)
def test_bad_modules_are_refused_and_change_nothing(engine: Engine, deploy, module: bytes, needle: str) -> None:
    deploy("hello")
    before = snapshot(engine)
    with pytest.raises(InvalidModule, match=needle.replace(".", r"\.")) as error:
        engine.deploy("hello", module)
    assert "\n" not in str(error.value)
    assert snapshot(engine) == before


def test_a_module_over_the_size_limit_is_refused(db_path, wasmer_cache) -> None:
    engine = Engine(db_path, cache_dir=wasmer_cache, max_module_bytes=16 * 1024)
    with pytest.raises(InvalidModule, match="limit"):
        engine.deploy("hello", fixture_module("hello"))
    with pytest.raises(InvalidModule, match="limit"):
        engine.deploy("hello", fixture_module("hello").read_bytes())
    assert engine.workers() == []
    engine.store.close()


@pytest.mark.parametrize("name", ["Hello", "-x", "x-", "a_b", "a.b", "", "x" * 64, "héllo", "a b"])
def test_names_that_are_not_dns_labels_are_refused(engine: Engine, name: str) -> None:
    with pytest.raises(InvalidInput, match="DNS label"):
        engine.deploy(name, fixture_module("hello"))
    assert engine.workers() == []


def test_63_character_name_is_fine(engine: Engine) -> None:
    engine.deploy("a" * 63, fixture_module("hello"))
    assert engine.worker("a" * 63).version == 1


@pytest.mark.parametrize(
    ("tags", "needle"),
    [
        ([f"t{i}" for i in range(9)], "at most 8"),
        (["a,b"], "','"),
        (["a&b"], "'&'"),
        (["a b"], "whitespace"),
        (["tab\there"], "whitespace"),
        ([""], "empty"),
    ],
)
def test_bad_tags_are_refused(engine: Engine, tags: list[str], needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        engine.deploy("hello", fixture_module("hello"), tags=tags)
    assert engine.workers() == []


@pytest.mark.parametrize(
    ("variables", "needle"),
    [
        ({"REQUEST_METHOD": "x"}, "reserved"),
        ({"HTTP_HOST": "x"}, "reserved"),
        ({"path_info": "x"}, "reserved"),
        ({"1BAD": "x"}, "not an environment variable name"),
        ({"A-B": "x"}, "not an environment variable name"),
        ({"NUL": "a\0b"}, "NUL"),
    ],
)
def test_bad_vars_are_refused(engine: Engine, variables: dict, needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        engine.deploy("hello", fixture_module("hello"), vars=variables)


def test_missing_file_and_unknown_namespace(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        engine.deploy("hello", tmp_path / "nope.wasm")
    with pytest.raises(InvalidInput, match="not a file"):
        engine.deploy("hello", tmp_path)
    with pytest.raises(NotFound, match="namespace 'ghost'"):
        engine.deploy("hello", fixture_module("hello"), namespace="ghost")
    assert engine.workers() == []


def test_eight_tags_and_duplicate_tags(engine: Engine) -> None:
    worker = engine.deploy("hello", fixture_module("hello"), tags=[f"t{i}" for i in range(8)] + ["t0"])
    assert len(worker.tags) == 8


async def test_versions_rollback_and_delete(engine: Engine) -> None:
    engine.deploy("hello", fixture_module("hello"), vars={"GREETING": "one"}, tags=["free"])
    engine.deploy("hello", fixture_module("hello"), vars={"GREETING": "two"}, tags=["pro"])
    assert (await engine.request("http://hello.x/")).text == "two\n"
    rolled = engine.rollback("hello", 1)
    assert rolled.version == 3 and rolled.tags == ("free",) and rolled.vars == {"GREETING": "one"}
    assert (await engine.request("http://hello.x/")).text == "one\n"
    versions = engine.versions("hello")
    assert [v.version for v in versions] == [1, 2, 3]
    assert [v.current for v in versions] == [False, False, True]
    assert "rollback to version 1" in versions[-1].message
    with pytest.raises(NotFound, match="no version 9"):
        engine.rollback("hello", 9)
    engine.delete("hello")
    assert (await engine.request("http://hello.x/")).status == 404
    with pytest.raises(NotFound):
        engine.versions("hello")
    with pytest.raises(NotFound):
        engine.delete("hello")
    assert engine.store.db.execute("SELECT COUNT(*) FROM modules").fetchone()[0] == 0


async def test_new_deploy_serves_from_next_request(engine: Engine) -> None:
    engine.deploy("site", fixture_module("hello"))
    assert (await engine.request("http://site.x/")).text.startswith("Hello")
    engine.deploy("site", fixture_module("echo"))
    assert (await engine.request("http://site.x/")).json()["env"]["REQUEST_METHOD"] == "GET"


def test_modules_are_stored_once_by_sha256(engine: Engine) -> None:
    first = engine.deploy("one", fixture_module("hello"))
    second = engine.deploy("two", fixture_module("hello"))
    assert first.sha256 == second.sha256
    assert engine.store.db.execute("SELECT COUNT(*) FROM modules").fetchone()[0] == 1


def test_tags_and_vars_edits_make_new_versions(engine: Engine) -> None:
    engine.deploy("hello", fixture_module("hello"), tags=["free"])
    assert engine.set_tags("hello", ["pro", "eu"]).version == 2
    worker = engine.set_vars("hello", {"GREETING": "hi"})
    assert worker.version == 3 and worker.tags == ("pro", "eu") and worker.vars == {"GREETING": "hi"}
    assert [w.name for w in engine.workers(tags=["eu"])] == ["hello"]
    assert engine.workers(tags=["free"]) == []


def test_default_namespace_always_exists_and_cannot_be_deleted(engine: Engine) -> None:
    assert [ns.name for ns in engine.namespaces()] == ["default"]
    with pytest.raises(InvalidInput):
        engine.delete_namespace("default")
    engine.create_namespace("team-a")
    with pytest.raises(InvalidInput, match="already exists"):
        engine.create_namespace("team-a")
    with pytest.raises(InvalidInput, match="DNS label"):
        engine.create_namespace("Team A")
    engine.deploy("hello", fixture_module("hello"), namespace="team-a")
    with pytest.raises(InvalidInput, match="still has 1 worker"):
        engine.delete_namespace("team-a")
    engine.delete("hello", namespace="team-a")
    engine.delete_namespace("team-a")


def test_schema_version_and_wal(db_path: Path) -> None:
    store = Store(db_path)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    Store(db_path).close()  # reopening migrates nothing and keeps the data


def test_newer_schema_and_foreign_files_are_refused(tmp_path: Path) -> None:
    newer = tmp_path / "newer.db"
    store = Store(newer)
    store.db.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    store.close()
    with pytest.raises(InvalidInput, match="newer"):
        Store(newer)
    text = tmp_path / "notes.txt"
    text.write_text("just some notes\n" * 100)
    with pytest.raises(InvalidInput, match="not a wasmdeck database"):
        Store(text)
    other = tmp_path / "other.db"
    connection = sqlite3.connect(other)
    connection.execute("CREATE TABLE people (name TEXT)")
    connection.commit()
    connection.close()
    with pytest.raises(InvalidInput, match="not a wasmdeck"):
        Store(other)
    with pytest.raises(InvalidInput, match="directory"):
        Store(tmp_path)


async def test_state_and_compiled_artifacts_survive_a_restart(db_path: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    async with Engine(db_path, cache_dir=cache) as first:
        first.deploy("hello", fixture_module("hello"), tags=["free"])
        first.set_limits("free", cpu_ms=77)
        assert (await first.request("http://hello.x/")).status == 200
    compiled = sorted(p for p in cache.rglob("*") if p.is_file() and "compiled" in p.parts)
    assert compiled, "the compiled module is cached on disk"
    async with Engine(db_path, cache_dir=cache) as second:
        assert second.worker("hello").tags == ("free",)
        assert second.limits()["free"].cpu_ms == 77
        assert (await second.request("http://hello.x/")).status == 200
        await second.flush_traces()
        assert len(second.recent_traces(10)) == 2
    assert sorted(p for p in cache.rglob("*") if p.is_file() and "compiled" in p.parts) == compiled


def test_default_cache_sits_beside_the_database(db_path: Path) -> None:
    engine = Engine(db_path)
    assert engine.runtime.cache_dir == db_path.with_name("wasmdeck.db.wasmer-cache")
    engine.store.close()


KILLED_DEPLOY = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from wasmdeck.engine import Engine
    from wasmdeck.engine import store as store_module

    original = store_module.Store._new_version

    def slow_new_version(self, db, *args, **kwargs):
        version = original(self, db, *args, **kwargs)
        print("inside", flush=True)
        time.sleep(60)
        return version

    store_module.Store._new_version = slow_new_version
    engine = Engine({db!r})
    engine.deploy("hello", {module!r}, vars={{"GREETING": "half-done"}})
    """
)


async def test_a_deploy_killed_midway_leaves_the_previous_version(db_path: Path, wasmer_cache: Path) -> None:
    async with Engine(db_path, cache_dir=wasmer_cache) as engine:
        engine.deploy("hello", fixture_module("hello"), vars={"GREETING": "stable"})
    script = KILLED_DEPLOY.format(root=str(ROOT), db=str(db_path), module=str(fixture_module("echo")))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "inside"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=10)
    async with Engine(db_path, cache_dir=wasmer_cache) as engine:
        assert engine.store.integrity_ok()
        assert [v.version for v in engine.versions("hello")] == [1]
        assert (await engine.request("http://hello.x/")).text == "stable\n"


WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from wasmdeck.engine import Engine
    engine = Engine({db!r})
    for i in range(25):
        engine.deploy("w{index}", {module!r}, vars={{"N": str(i)}})
        engine.set_limits("tag{index}", cpu_ms=100 + i)
    print("done")
    """
)


def test_many_processes_share_one_database(db_path: Path) -> None:
    Store(db_path).close()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER.format(root=str(ROOT), db=str(db_path), index=i, module=str(fixture_module("hello")))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    results = [child.communicate(timeout=120) for child in children]
    for child, (out, err) in zip(children, results):
        assert child.returncode == 0, err
        assert "locked" not in err
    store = Store(db_path)
    assert sorted(w.name for w in store.workers()) == ["w0", "w1", "w2", "w3"]
    assert all(w.version == 25 for w in store.workers())
    store.close()

"""Every number the CLI and the admin API take has a sane range, and inputs that used to end as
"internal error" (exit 70) or a 500 are one sentence and exit 1/2 or a 4xx."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from wasmdeck.engine import Engine
from wasmdeck.server.admin_app import create_admin_app

from .conftest import fixture_module
from .test_admin_api import AUTH, TOKEN, error
from .test_cli import assert_refused, fixture, ok, tail_items, wasmdeck

HUGE = "99999999999999999999999"


@pytest.mark.parametrize("args, mentions", [
    (("retention", HUGE), "more than 10000000"),
    (("retention", "0"), "less than 1"),
    (("retention", "--bytes", HUGE), "not a size from 1.0 MiB to 64.0 GiB"),
    (("retention", "--bytes", "1k"), "not a size from"),
    (("retention", "--bytes", "lots"), "not a size such as"),
    (("rollback", "hello", HUGE), "more than 2147483647"),
    (("rollback", "hello", "0"), "less than 1"),
    (("tail", "--history", HUGE, "--no-follow"), "more than 10000000"),
    (("serve", "--max-body-bytes", HUGE), "more than 1073741824"),
    (("serve", "--max-header-bytes", "100"), "less than 1024"),
    (("serve", "--max-headers", HUGE), "more than 10000"),
    (("serve", "--tail-max-clients", HUGE), "more than 100000"),
    (("serve", "--port", "70000"), "more than 65535"),
])
def test_numbers_out_of_range_are_a_usage_error(tmp_path: Path, args: tuple[str, ...], mentions: str) -> None:
    assert_refused(wasmdeck(tmp_path, *args), " ".join(args), code=2, mentions=mentions)


def test_retention_by_count_and_bytes(tmp_path: Path) -> None:
    assert ok(tmp_path, "retention") == "keeping the newest 10000 trace items, at most 256.0 MiB of them\n"
    assert ok(tmp_path, "retention", "--bytes", "2GiB") == "keeping the newest 10000 trace items, at most 2.0 GiB of them\n"
    assert ok(tmp_path, "retention", "50", "--bytes", "1048576") == "keeping the newest 50 trace items, at most 1.0 MiB of them\n"
    assert ok(tmp_path, "retention", "--bytes", "64m") == "keeping the newest 50 trace items, at most 64.0 MiB of them\n"


def test_an_absurd_retention_stored_by_an_older_version_is_ignored(tmp_path: Path) -> None:
    ok(tmp_path, "deploy", "hello", fixture("hello"))
    with sqlite3.connect(tmp_path / "w.db") as db:
        db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('trace_retention', ?)", [HUGE])
    assert ok(tmp_path, "retention").startswith("keeping the newest 10000 trace items")
    result = wasmdeck(tmp_path, "request", "http://hello.x/")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert len(tail_items(tmp_path)) == 1


@pytest.mark.parametrize("args, mentions", [
    (("request", "http://[::1/"), "http://[::1/"),
    (("export", "/proc/nope/platform"), "/proc/nope"),
])
def test_bad_urls_and_unusable_paths_are_one_sentence(tmp_path: Path, args: tuple[str, ...], mentions: str) -> None:
    ok(tmp_path, "deploy", "hello", fixture("hello"))
    assert_refused(wasmdeck(tmp_path, *args), " ".join(args), code=1, mentions=mentions)


def test_a_database_path_in_a_missing_place_is_one_sentence(tmp_path: Path) -> None:
    result = wasmdeck(tmp_path, "--db", "/proc/nope/w.db", "list", db=False)
    assert_refused(result, "a database under /proc", code=1, mentions="/proc/nope")


async def test_admin_rollback_to_an_absurd_version_is_400(engine: Engine) -> None:
    engine.deploy("hello", fixture_module("hello"))
    app = create_admin_app(engine, TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin", headers=AUTH) as client:
        for version in (10**23, 2**31, -1):
            message = error(await client.post("/namespaces/default/scripts/hello/rollback", json={"version": version}),
                            400, "version")["message"]
            assert "2147483647" in message
        assert engine.worker("hello").version == 1


async def test_admin_content_of_a_corrupt_module_is_a_sentence(engine: Engine, db_path: Path) -> None:
    worker = engine.deploy("hello", fixture_module("hello"))
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE modules SET bytes = ? WHERE sha256 = ?", [b"tampered", worker.sha256])
    app = create_admin_app(engine, TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin", headers=AUTH) as client:
        err = error(await client.get("/namespaces/default/scripts/hello/content"), 500)
        assert err["code"] == "corrupt_module" and "corrupt" in err["message"]

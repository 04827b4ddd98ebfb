"""The demo platform (a dispatch Worker in front of every tenant) through the command line: what
`wasmdeck serve`, `wasmdeck request` and `wasmdeck demo` report is the user Worker's outcome, with
the dispatch Worker's item beside it; its platform Workers are no tenants over real HTTP either."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_cli import REPO, assert_refused, ok, request, wasmdeck
from .test_server import Server, access_lines, start_server

DEMO_MANIFEST = REPO / "wasmdeck" / "demo" / "platform.toml"


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("demo-cli")
    ok(folder, "apply", str(DEMO_MANIFEST))
    return folder


@pytest.fixture(scope="module")
def served(demo_db: Path) -> Iterator[Server]:
    server = start_server(demo_db / "w.db", demo_db)
    try:
        yield server
    finally:
        assert server.stop() == 0, server.stderr()


def _logged(server: Server, host: str) -> list[tuple[str, ...]]:
    import time

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = [line for line in access_lines(server) if line[1] == host]
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no access log line for {host}: {server.stderr()[-2000:]}")


def test_serve_reports_the_tenants_trap_not_the_dispatchers_ok(served: Server) -> None:
    response = served.get("/", host="trap.demo.local")
    assert response.status_code == 500, response.text
    assert response.headers["x-wasmdeck-outcome"] == "exception"
    assert response.text.startswith("Worker threw an exception: the guest trapped")
    assert _logged(served, "trap.demo.local") == [("GET", "trap.demo.local", "/", "500", "exception")]
    hello = served.get("/", host="hello.demo.local")
    assert (hello.status_code, hello.headers["x-wasmdeck-outcome"]) == (200, "ok")
    # the dispatch Worker answers a missing tenant its own way; the outcome is the tenant's
    missing = served.get("/", host="missing.demo.local")
    assert (missing.status_code, missing.text, missing.headers["x-wasmdeck-outcome"]) == (
        404, "no such tenant: missing", "scriptNotFound")


@pytest.mark.parametrize("platform_worker", ["gateway", "audit", "dispatcher"])
def test_serve_never_routes_to_a_platform_worker(served: Server, platform_worker: str) -> None:
    response = served.get("/?url=http://127.0.0.1:1/", host=f"{platform_worker}.demo.local")
    assert (response.status_code, response.text) == (404, f"no such tenant: {platform_worker}")
    assert response.headers["x-wasmdeck-outcome"] == "scriptNotFound"
    assert _logged(served, f"{platform_worker}.demo.local")[0][3:] == ("404", "scriptNotFound")


def test_request_json_shows_the_user_workers_trace_with_the_dispatchers_beside_it(demo_db: Path) -> None:
    shown = request(demo_db, "http://trap.demo.local/")
    assert shown["status"] == 500
    trace, dispatcher = shown["trace"], shown["dispatcherTrace"]
    assert (trace["scriptName"], trace["outcome"]) == ("trap", "exception")
    assert trace["exceptions"][0]["name"] == "WasmTrap"
    # `request` keeps a trap's log lines from the first trap on: the one line, nothing cut
    assert [log["message"] for log in trace["logs"]] == [["about to trap in explode_on_purpose"]]
    assert trace["truncated"] is False
    assert (dispatcher["scriptName"], dispatcher["outcome"], dispatcher["event"]["response"]["status"]) == ("dispatcher", "ok", 500)
    hello = request(demo_db, "http://hello.demo.local/")
    assert hello["trace"]["scriptName"] == "hello" and hello["dispatcherTrace"]["scriptName"] == "dispatcher"


def test_request_fail_exits_1_naming_the_status_and_the_user_workers_outcome(demo_db: Path) -> None:
    result = wasmdeck(demo_db, "request", "--fail", "http://trap.demo.local/")
    assert_refused(result, "--fail on the tenant's trap", code=1, mentions="500")
    assert "(outcome exception)" in result.stderr
    assert result.stdout.startswith("Worker threw an exception")  # the body is still printed, like curl without -s
    assert wasmdeck(demo_db, "request", "--fail", "http://hello.demo.local/").returncode == 0


def test_wasmdeck_demo_shows_the_traps_exception(tmp_path: Path) -> None:
    out = ok(tmp_path, "demo", db=False)
    block = out[out.index("500 GET http://trap.demo.local/"):]
    block = block[: block.index("\n404 GET")]
    assert "GET http://trap.demo.local/ - Exception Thrown @ " in block, block
    assert "(error) about to trap in explode_on_purpose" in block, block  # the demo keeps a first trap's lines
    assert re.search(r"^\s+WasmTrap: RuntimeError: unreachable$", block, re.MULTILINE), block
    assert "    via GET http://trap.demo.local/ - Ok @ " in block, block  # the dispatch Worker's own item, beside it
    assert "(output truncated)" not in block

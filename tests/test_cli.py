"""End-to-end tests of the `wasmdeck` command line, run as a real subprocess.

Every test gets its own database in tmp_path. Each CLI call costs a fresh Python
process (~0.35 s), so related checks are grouped into one test, each with its own
assert message.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from .wasm_builder import HEADER, module_importing

REPO = Path(__file__).resolve().parent.parent
WCGI = REPO / "fixtures" / "wcgi"
TIMEOUT = 60


# --- helpers -----------------------------------------------------------------


def fixture(name: str) -> str:
    return str(WCGI / f"{name}.wasm")


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WASMDECK_DB", "XDG_DATA_HOME")}
    env.update(extra or {})
    return env


def wasmdeck(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, input: str | None = None, db: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run `python -m wasmdeck.cli.main [--db tmp_path/w.db] ARGS...` from the repo root."""
    command = [sys.executable, "-m", "wasmdeck.cli.main"]
    if db:
        command += ["--db", str(tmp_path / "w.db")]
    return subprocess.run(
        [*command, *args],
        cwd=REPO,
        env=_env(env),
        input=input,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def ok(tmp_path: Path, *args: str, **kwargs: Any) -> str:
    """Run a command that must succeed; return its stdout."""
    result = wasmdeck(tmp_path, *args, **kwargs)
    assert result.returncode == 0, f"`wasmdeck {' '.join(args)}` failed ({result.returncode}): {result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def ok_json(tmp_path: Path, *args: str, **kwargs: Any) -> Any:
    return json.loads(ok(tmp_path, *args, **kwargs))


def request(tmp_path: Path, url: str, *args: str, **kwargs: Any) -> dict[str, Any]:
    """`wasmdeck request --json URL ARGS...`, which must print exactly one JSON object."""
    out = ok(tmp_path, "request", "--json", url, *args, **kwargs)
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, f"request --json printed {len(lines)} lines, expected one JSON object: {out!r}"
    return json.loads(lines[0])


def echo_env(response: dict[str, Any]) -> dict[str, str]:
    assert response["status"] == 200, response
    return json.loads(response["body"])["env"]


def assert_refused(result: subprocess.CompletedProcess[str], what: str, code: int = 1, mentions: str | None = None) -> None:
    """One line on stderr, no traceback, the expected non-zero exit status."""
    assert result.returncode == code, f"{what}: exit {result.returncode}, expected {code}; stderr={result.stderr!r}"
    assert "Traceback" not in result.stderr, f"{what}: traceback on stderr: {result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"{what}: expected one line on stderr, got {lines!r}"
    assert lines[0].startswith("wasmdeck"), f"{what}: stderr line {lines[0]!r} does not start with 'wasmdeck'"
    if mentions is not None:
        assert mentions in lines[0], f"{what}: message {lines[0]!r} does not mention {mentions!r}"


def tail_items(tmp_path: Path, *args: str, history: int = 100) -> list[dict[str, Any]]:
    out = ok(tmp_path, "tail", "--history", str(history), "--no-follow", "--format", "json", *args)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def urls(items: list[dict[str, Any]]) -> list[str]:
    return [item["event"]["request"]["url"] for item in items]


def in_parallel(calls: list[tuple[Any, ...]], workers: int = 3) -> list[Any]:
    """Run independent CLI calls concurrently: [(function, arg, ...), ...] -> results in order."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda call: call[0](*call[1:]), calls))


def db_dump(path: Path) -> list[str]:
    """Every row of every table, read directly (no CLI call needed)."""
    connection = sqlite3.connect(path)
    try:
        return list(connection.iterdump())
    finally:
        connection.close()


# hand-assembled modules
NO_START_MODULE = HEADER
HOST_CALL_MODULE = module_importing("env", "host_call")

PRETTY_LINE = re.compile(r"^(GET|POST|PUT) http://\S+ - [A-Za-z ]+ @ \d{1,2}/\d{1,2}/\d{4}, \d{1,2}:\d{2}:\d{2} (AM|PM)$")


# --- 2. where the database lives -----------------------------------------------


def test_db_falls_back_to_env_then_xdg(tmp_path: Path) -> None:
    env_db = tmp_path / "from-env" / "env.db"
    env_db.parent.mkdir()
    ok(tmp_path, "deploy", "hello", fixture("hello"), env={"WASMDECK_DB": str(env_db)}, db=False)
    assert env_db.is_file(), "$WASMDECK_DB was not used when --db is omitted"
    listed = ok_json(tmp_path, "list", "--json", env={"WASMDECK_DB": str(env_db)}, db=False)
    assert [w["name"] for w in listed] == ["hello"], "a later call with the same $WASMDECK_DB does not see the worker"
    assert not (tmp_path / "w.db").exists()

    xdg, home = tmp_path / "xdg", tmp_path / "home"
    xdg.mkdir()
    home.mkdir()
    env = {"XDG_DATA_HOME": str(xdg), "HOME": str(home)}
    ok(tmp_path, "deploy", "echo", fixture("echo"), env=env, db=False)
    assert (xdg / "wasmdeck" / "wasmdeck.db").is_file(), "without --db and $WASMDECK_DB the db is not in $XDG_DATA_HOME/wasmdeck"
    listed = ok_json(tmp_path, "list", "--json", env=env, db=False)
    assert [w["name"] for w in listed] == ["echo"], "the XDG database is a different one from the $WASMDECK_DB one"
    assert not (home / ".local").exists(), "the db went under $HOME although $XDG_DATA_HOME is set"


# --- 1. the command forms ----------------------------------------------------------


def test_deploy_list_delete_and_namespace_commands(tmp_path: Path) -> None:
    out = ok(tmp_path, "deploy", "hello", fixture("hello"), "--tag", "free", "--tag", "beta", "--var", "GREETING=hi")
    assert "deployed hello version 1" in out and "namespace default" in out, out
    ok(tmp_path, "deploy", "echo", fixture("echo"))

    table = ok(tmp_path, "list")
    assert table.splitlines()[0].split()[:3] == ["NAME", "VERSION", "TAGS"], table
    assert re.search(r"^hello\s+1\s+free,beta\s", table, re.M), f"list table lacks hello: {table}"
    assert re.search(r"^echo\s+1\s+-\s", table, re.M), f"list table lacks echo: {table}"

    listed = ok_json(tmp_path, "list", "--json")
    by_name = {w["name"]: w for w in listed}
    assert set(by_name) == {"hello", "echo"}, listed
    assert by_name["hello"]["tags"] == ["free", "beta"], "tags are not kept in order"
    assert by_name["hello"]["vars"] == {"GREETING": "hi"}, "--var is not stored"
    assert by_name["hello"]["current"] is True and by_name["hello"]["version"] == 1

    tagged = ok_json(tmp_path, "list", "--tag", "free", "--json")
    assert [w["name"] for w in tagged] == ["hello"], "list --tag does not filter"
    assert ok_json(tmp_path, "list", "--tag", "nosuch", "--json") == [], "list --tag of an unused tag is not empty"

    out = ok(tmp_path, "namespace", "create", "staging", "--routing", "path", "--cpu-ms", "1000")
    assert "created namespace staging" in out and "path" in out, out
    out = ok(tmp_path, "namespace", "set", "staging", "--routing", "host", "--memory-mb", "32")
    assert "routing by host" in out and "cpuMs=1000" in out and "memoryMb=32" in out, f"namespace set: {out}"
    namespaces = {ns["name"]: ns for ns in ok_json(tmp_path, "namespace", "list", "--json")}
    assert set(namespaces) == {"default", "staging"}, namespaces
    assert namespaces["staging"]["routing"] == "host"
    assert namespaces["staging"]["defaults"]["cpuMs"] == 1000 and namespaces["staging"]["defaults"]["memoryMb"] == 32
    table = ok(tmp_path, "namespace", "list")
    assert re.search(r"^staging\s+host\s+1000\s+32\s", table, re.M), f"namespace list table: {table}"

    ok(tmp_path, "deploy", "hello", fixture("hello"), "--namespace", "staging")
    assert "no workers in namespace" not in ok(tmp_path, "list", "--namespace", "staging")
    assert "as version 2" in ok(tmp_path, "rollback", "hello", "1", "--namespace", "staging")
    staged = ok_json(tmp_path, "versions", "hello", "--namespace", "staging", "--json")
    assert [(v["namespace"], v["version"], v["current"]) for v in staged] == [("staging", 1, False), ("staging", 2, True)]
    assert [v["version"] for v in ok_json(tmp_path, "versions", "hello", "--json")] == [1], "rollback touched another namespace"
    assert [w["name"] for w in ok_json(tmp_path, "list", "--namespace", "staging", "--json")] == ["hello"]
    assert_refused(
        wasmdeck(tmp_path, "namespace", "delete", "staging"), "deleting a namespace that has workers", mentions="worker"
    )
    out = ok(tmp_path, "delete", "hello", "--namespace", "staging")
    assert "deleted hello" in out, out
    assert "deleted namespace staging" in ok(tmp_path, "namespace", "delete", "staging")
    assert [ns["name"] for ns in ok_json(tmp_path, "namespace", "list", "--json")] == ["default"]

    ok(tmp_path, "delete", "echo")
    assert [w["name"] for w in ok_json(tmp_path, "list", "--json")] == ["hello"], "delete removed the wrong worker"
    assert "no workers in namespace default with tags nosuch" in ok(tmp_path, "list", "--tag", "nosuch")


def test_limits_and_retention_commands(tmp_path: Path) -> None:
    out = ok(tmp_path, "limits", "list")
    assert "no tag limits are set" in out and "cpuMs=5000" in out, f"limits list with nothing set: {out}"
    assert ok_json(tmp_path, "limits", "list", "--json") == {}
    out = ok(tmp_path, "limits", "set", "free", "--cpu-ms", "50", "--memory-mb", "64", "--subrequests", "5")
    assert out.strip() == "limits for tag free: cpuMs=50, memoryMb=64, subRequests=5", out
    out = ok(tmp_path, "limits", "set", "free", "--cpu-ms", "70")
    assert "cpuMs=70" in out and "memoryMb=64" in out, f"limits set does not merge with earlier values: {out}"
    assert ok_json(tmp_path, "limits", "list", "--json") == {
        "free": {"cpuMs": 70, "memoryMb": 64, "subRequests": 5, "wallMs": None}
    }
    table = ok(tmp_path, "limits", "list")
    assert re.search(r"^free\s+70\s+64\s+5\s+-$", table, re.M), f"limits list table: {table}"
    assert "removed the limits of tag free" in ok(tmp_path, "limits", "delete", "free")
    assert ok_json(tmp_path, "limits", "list", "--json") == {}, "limits delete left the tag"
    assert_refused(wasmdeck(tmp_path, "limits", "delete", "free"), "deleting limits that are not set", mentions="free")

    assert re.fullmatch(r"keeping the newest \d+ trace items, at most [\d.]+ MiB of them\n", ok(tmp_path, "retention")), \
        "retention shows nothing sensible"
    assert ok(tmp_path, "retention", "2") == "keeping the newest 2 trace items, at most 256.0 MiB of them\n"
    ok(tmp_path, "deploy", "hello", fixture("hello"))
    for path in ("a", "b", "c"):
        request(tmp_path, f"http://hello.x/{path}")
    assert urls(tail_items(tmp_path)) == ["http://hello.x/b", "http://hello.x/c"], "retention 2 does not keep the newest 2"
    assert_refused(wasmdeck(tmp_path, "retention", "0"), "retention 0", code=2, mentions="less than 1")


# --- 3. request --json, headers, body, vars ---------------------------------------


def test_request_json_trace_redaction_and_cgi_environment(tmp_path: Path) -> None:
    ok(tmp_path, "deploy", "echo", fixture("echo"), "--tag", "t1", "--var", "GREETING=howdy", "--var", "EMPTY=")
    response = request(
        tmp_path,
        "http://echo.example.com/some/path?q=1",
        "-H", "Authorization: Bearer sekrit",
        "-H", "Cookie: session=abc",
        "-H", "X-Api-Key: k123",
        "-H", "X-Auth-Token: t456",
        "-H", "X-Plain: visible",
    )
    assert {"status", "headers", "body", "trace"} <= set(response), f"request --json keys: {sorted(response)}"
    assert response["status"] == 200
    trace = response["trace"]
    for key in (
        "scriptName", "scriptTags", "dispatchNamespace", "outcome", "eventTimestamp",
        "cpuTime", "wallTime", "event", "logs", "exceptions", "truncated",
    ):
        assert key in trace, f"trace lacks the TraceItem field {key}"
    assert trace["scriptName"] == "echo" and trace["scriptTags"] == ["t1"] and trace["dispatchNamespace"] == "default"
    assert trace["outcome"] == "ok" and trace["truncated"] is False and trace["exceptions"] == []
    assert isinstance(trace["eventTimestamp"], int) and trace["eventTimestamp"] > 1_600_000_000_000
    assert isinstance(trace["cpuTime"], int) and isinstance(trace["wallTime"], int)
    req = trace["event"]["request"]
    assert req["url"] == "http://echo.example.com/some/path?q=1" and req["method"] == "GET"
    assert trace["event"]["response"] == {"status": 200}
    headers = req["headers"]
    for name in ("authorization", "cookie", "x-api-key", "x-auth-token"):
        assert headers.get(name) == "REDACTED", f"request header {name} is not redacted in the trace: {headers}"
    assert headers.get("x-plain") == "visible", f"X-Plain should not be redacted: {headers}"
    assert "sekrit" not in json.dumps(trace) and "k123" not in json.dumps(trace), "a secret leaked into the trace"

    env = echo_env(response)
    assert env["HTTP_X_PLAIN"] == "visible", "-H does not become an HTTP_* variable"
    assert env["GREETING"] == "howdy" and env["EMPTY"] == "", "--var values are not in the worker's environment"
    assert env["REQUEST_METHOD"] == "GET" and env["QUERY_STRING"] == "q=1" and env["PATH_INFO"] == "/some/path"
    assert "CONTENT_LENGTH" not in env, "a request without a body has a CONTENT_LENGTH"

    response = request(tmp_path, "http://echo.x/", "-X", "PUT", "-d", "hello body", "-H", "Content-Type: text/plain")
    body = json.loads(response["body"])
    env = body["env"]
    assert env["REQUEST_METHOD"] == "PUT", "-X PUT does not set REQUEST_METHOD"
    assert body["body"] == "hello body" and env["CONTENT_LENGTH"] == "10", "-d DATA is not the request body"
    assert env["CONTENT_TYPE"] == "text/plain"
    assert response["trace"]["event"]["request"]["method"] == "PUT"

    env = echo_env(request(tmp_path, "http://echo.x/", "-d", "abc"))
    assert env["REQUEST_METHOD"] == "POST", "-d without -X should POST"
    body = json.loads(request(tmp_path, "http://echo.x/", "-d", "@-", input="from stdin")["body"])
    assert body["body"] == "from stdin", "-d @- does not read the body from stdin"
    body_file = tmp_path / "body.txt"
    body_file.write_text("from a file")
    assert json.loads(request(tmp_path, "http://echo.x/", "-d", f"@{body_file}")["body"])["body"] == "from a file"

    # Plain output is the body; -i adds the status line and headers.
    plain = ok(tmp_path, "request", "http://echo.x/?status=201&header=X-Out:yes", "-i")
    assert plain.startswith("HTTP/1.1 201 Created\n"), f"-i does not start with the status line as curl -i: {plain[:80]!r}"
    assert "\nX-Out: yes\n" in plain and "Content-Type: application/json" in plain
    assert json.loads(plain.split("\n\n", 1)[1])["env"]["REQUEST_METHOD"] == "GET"

    before = ok_json(tmp_path, "versions", "echo", "--json")
    for var in ("REQUEST_METHOD=x", "HTTP_HOST=evil", "PATH_INFO=/x"):
        result = wasmdeck(tmp_path, "deploy", "echo", fixture("echo"), "--var", var)
        assert_refused(result, f"--var {var}", mentions=var.split("=")[0])
        assert "reserved" in result.stderr, f"--var {var}: the message does not say the name is reserved: {result.stderr}"
    assert ok_json(tmp_path, "versions", "echo", "--json") == before, "a refused --var deploy changed the versions"


# --- 4. routing --------------------------------------------------------------------


def test_routing_by_host_namespace_and_path(tmp_path: Path) -> None:
    ok(tmp_path, "deploy", "hello", fixture("hello"), "--var", "GREETING=hi from default")
    response = request(tmp_path, "http://hello.example.com/")
    assert response["status"] == 200 and response["body"] == "hi from default\n", "Host's first label does not pick hello"

    by_header = request(tmp_path, "http://nosuch.example.com/", "-H", "Host: hello.example.com")
    assert by_header["status"] == 200 and by_header["body"] == "hi from default\n", "a Host header does not pick the worker"

    missing = request(tmp_path, "http://nosuch.example.com/")
    assert missing["status"] == 404, "an unknown worker is not a 404"
    assert missing["body"].startswith("Worker not found"), missing["body"]
    assert missing["trace"]["outcome"] == "scriptNotFound"
    plain = wasmdeck(tmp_path, "request", "http://nosuch.example.com/")
    assert plain.returncode == 0 and plain.stdout.startswith("Worker not found")
    failed = wasmdeck(tmp_path, "request", "--fail", "http://nosuch.example.com/")
    assert_refused(failed, "--fail on a 404", code=1, mentions="404")  # 1, as for every refused command
    assert "(outcome scriptNotFound)" in failed.stderr, failed.stderr

    ok(tmp_path, "namespace", "create", "other")
    ok(tmp_path, "deploy", "hello", fixture("hello"), "--namespace", "other", "--var", "GREETING=hi from other")
    assert request(tmp_path, "http://hello.x/")["body"] == "hi from default\n"
    other = request(tmp_path, "http://hello.x/", "--namespace", "other")
    assert other["body"] == "hi from other\n", "--namespace other does not route to the other namespace's hello"
    assert other["trace"]["dispatchNamespace"] == "other"

    ok(tmp_path, "namespace", "create", "paths")
    out = ok(tmp_path, "namespace", "set", "paths", "--routing", "path")
    assert "routing by path" in out, out
    ok(tmp_path, "deploy", "hello", fixture("echo"), "--namespace", "paths")
    response = request(tmp_path, "http://anything/hello/x?y=1", "--namespace", "paths")
    env = echo_env(response)
    assert env["PATH_INFO"] == "/x" and env["SCRIPT_NAME"] == "/hello", f"path routing split: {env}"
    assert env["QUERY_STRING"] == "y=1"
    assert response["trace"]["scriptName"] == "hello"
    assert request(tmp_path, "http://hello.x/", "--namespace", "paths")["status"] == 404, "path routing still routes by host"


# --- 5. limits ---------------------------------------------------------------------


def test_limits_apply_from_the_next_request_and_show_their_source(tmp_path: Path) -> None:
    ok(tmp_path, "deploy", "burn", fixture("burn"), "--tag", "free")
    ok(tmp_path, "deploy", "hog", fixture("hog"), "--tag", "free")
    ok(tmp_path, "limits", "set", "free", "--cpu-ms", "50")
    # the first run after a deploy compiles the module (cached on disk after that), and that time counts
    assert request(tmp_path, "http://burn.x/?ms=1")["status"] == 200
    response = request(tmp_path, "http://burn.x/?forever=1")
    assert response["status"] == 503 and response["trace"]["outcome"] == "exceededCpu", response
    assert 50 <= response["trace"]["cpuTime"] <= 150, f"cpuTime {response['trace']['cpuTime']} not within [50, 150]"
    assert json.loads(response["body"])["limit"] == "cpuMs"

    ok(tmp_path, "limits", "set", "free", "--cpu-ms", "400")
    response = request(tmp_path, "http://burn.x/?ms=100")
    assert response["status"] == 200 and response["trace"]["outcome"] == "ok", "raising cpu-ms to 400 did not apply"
    assert response["body"] == "burned 100 ms\n"

    ok(tmp_path, "limits", "set", "free", "--memory-mb", "16")
    response = request(tmp_path, "http://hog.x/?mb=64")
    assert response["status"] == 503 and response["trace"]["outcome"] == "exceededMemory", response
    assert request(tmp_path, "http://hog.x/?mb=4")["status"] == 200, "hog within its memory limit failed"

    ok(tmp_path, "limits", "set", "a", "--cpu-ms", "300")
    ok(tmp_path, "limits", "set", "b", "--cpu-ms", "100", "--wall-ms", "9000")
    ok(tmp_path, "deploy", "hello", fixture("hello"), "--tag", "a", "--tag", "b")
    table = ok(tmp_path, "limits", "show", "hello")
    assert re.search(r"^cpuMs\s+100\s+tag:b$", table, re.M), f"strictest tag should win for cpuMs: {table}"
    assert re.search(r"^memoryMb\s+128\s+engine$", table, re.M), f"memoryMb should come from the engine: {table}"
    assert re.search(r"^wallMs\s+9000\s+tag:b$", table, re.M), table
    shown = ok_json(tmp_path, "limits", "show", "hello", "--json")
    assert shown["cpuMs"] == 100 and shown["sources"]["cpuMs"] == "tag:b", shown
    assert shown["sources"]["subRequests"] == "engine"
    ok(tmp_path, "namespace", "set", "default", "--memory-mb", "64")
    shown = ok_json(tmp_path, "limits", "show", "hello", "--json")
    assert shown["memoryMb"] == 64 and shown["sources"]["memoryMb"] == "namespace", "namespace defaults are not used"


# --- 6. versions and rollback ----------------------------------------------------------


def test_versions_and_rollback(tmp_path: Path) -> None:
    ok(tmp_path, "deploy", "hello", fixture("hello"), "--var", "GREETING=first")
    out = ok(tmp_path, "deploy", "hello", fixture("hello"), "--var", "GREETING=second")
    assert "version 2" in out, out
    assert request(tmp_path, "http://hello.x/")["body"] == "second\n"

    table = ok(tmp_path, "versions", "hello")
    rows = table.splitlines()[1:]
    assert len(rows) == 2, f"versions should list 2 versions: {table}"
    assert rows[0].startswith(" 1") and rows[1].startswith("*2"), f"the current version (2) is not marked: {table}"

    out = ok(tmp_path, "rollback", "hello", "1")
    assert "version 1" in out and "version 3" in out, f"rollback message: {out}"
    assert request(tmp_path, "http://hello.x/")["body"] == "first\n", "rollback 1 does not serve the old greeting"

    versions = ok_json(tmp_path, "versions", "hello", "--json")
    assert [v["version"] for v in versions] == [1, 2, 3], versions
    assert [v["current"] for v in versions] == [False, False, True]
    assert "rollback" in versions[2]["message"] and "1" in versions[2]["message"], versions[2]["message"]
    assert versions[2]["vars"] == {"GREETING": "first"}
    assert versions[2]["sha256"] == versions[0]["sha256"]

    result = wasmdeck(tmp_path, "rollback", "hello", "7")
    assert_refused(result, "rollback to a version that does not exist", mentions="no version 7")
    assert ok_json(tmp_path, "versions", "hello", "--json") == versions, "a refused rollback changed the versions"


# --- 7. tail ------------------------------------------------------------------------


def test_tail_history_filters_and_pretty_format(tmp_path: Path) -> None:
    in_parallel(
        [(ok, tmp_path, "deploy", name, fixture(name)) for name in ("hello", "logger", "trap", "echo")]
        + [(ok, tmp_path, "namespace", "create", "other")]
    )
    ok(tmp_path, "deploy", "hello", fixture("hello"), "--namespace", "other")

    request(tmp_path, "http://hello.x/")
    request(tmp_path, "http://logger.x/")
    request(tmp_path, "http://echo.x/", "-d", "posted")
    request(tmp_path, "http://trap.x/")
    request(tmp_path, "http://nosuch.x/")
    request(tmp_path, "http://hello.x/other", "--namespace", "other")
    everything = [
        "http://hello.x/", "http://logger.x/", "http://echo.x/", "http://trap.x/", "http://nosuch.x/", "http://hello.x/other",
    ]

    out = ok(tmp_path, "tail", "--history", "10", "--no-follow", "--format", "json")
    lines = out.splitlines()
    assert len(lines) == 6, f"expected one JSON item per line, got {len(lines)} lines"
    items = [json.loads(line) for line in lines]
    assert urls(items) == everything, "tail --history is not oldest -> newest"
    assert [i["outcome"] for i in items] == ["ok", "ok", "ok", "exception", "scriptNotFound", "ok"]
    checks: list[tuple[str, tuple[str, ...], list[str]]] = [
        ("--history 2 gives the 2 newest", ("--history", "2"), everything[-2:]),
        ("--status error", ("--status", "error"), ["http://trap.x/"]),
        ("--status ok", ("--status", "ok"), [everything[i] for i in (0, 1, 2, 5)]),
        ("--status canceled", ("--status", "canceled"), []),
        ("--worker hello", ("--worker", "hello"), ["http://hello.x/", "http://hello.x/other"]),
        ("--method POST", ("--method", "POST"), ["http://echo.x/"]),
        ("--search in log lines", ("--search", "logger warn line"), ["http://logger.x/"]),
        ("--search in exceptions", ("--search", "explode_on_purpose"), ["http://trap.x/"]),
        ("--namespace other", ("--namespace", "other"), ["http://hello.x/other"]),
        ("--namespace default", ("--namespace", "default"), everything[:5]),
        ("combined filters", ("--namespace", "default", "--worker", "hello", "--status", "ok"), ["http://hello.x/"]),
    ]
    found = in_parallel([(tail_items, tmp_path, *args) for _what, args, _expected in checks])
    for (what, _args, expected), result in zip(checks, found):
        assert urls(result) == expected, f"tail {what}: got {urls(result)}"

    logger_item = items[1]
    levels = {log["level"]: log["message"] for log in logger_item["logs"]}
    assert levels.get("warn") == ["logger warn line"] and levels.get("error") == ["logger error line"], logger_item["logs"]

    pretty = ok(tmp_path, "tail", "--history", "10", "--no-follow", "--format", "pretty", "--worker", "hello")
    heads = [line for line in pretty.splitlines() if not line.startswith(" ")]
    assert len(heads) == 2, pretty
    for head in heads:
        assert PRETTY_LINE.match(head), f"pretty line {head!r} does not look like 'GET http://hello.x/ - Ok @ 11/27/2026, 8:00:00 AM'"
    assert heads[0].startswith("GET http://hello.x/ - Ok @ "), heads[0]
    assert "  (info) hello served GET /" in pretty.splitlines(), f"pretty format does not show the log line: {pretty}"
    pretty_404 = ok(tmp_path, "tail", "--history", "10", "--no-follow", "--worker", "nosuch")
    assert PRETTY_LINE.match(pretty_404.splitlines()[0]) and " - Worker Not Found @ " in pretty_404, pretty_404


def test_live_tail_sees_requests_from_other_processes(tmp_path: Path) -> None:
    ok(tmp_path, "deploy", "hello", fixture("hello"))
    tail = subprocess.Popen(
        [sys.executable, "-m", "wasmdeck.cli.main", "--db", str(tmp_path / "w.db"), "tail", "--format", "json"],
        cwd=REPO,
        env=_env(None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert tail.stdout is not None
        for line in tail.stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        time.sleep(1.5)
        assert tail.poll() is None, f"tail exited early: {tail.stderr.read() if tail.stderr else ''}"
        request(tmp_path, "http://hello.x/one")
        request(tmp_path, "http://hello.x/two", "-X", "POST")
        deadline = time.monotonic() + 10
        received: list[dict[str, Any]] = []
        while len(received) < 2 and time.monotonic() < deadline:
            try:
                received.append(json.loads(lines.get(timeout=max(0.01, deadline - time.monotonic()))))
            except queue.Empty:
                break
        assert urls(received) == ["http://hello.x/one", "http://hello.x/two"], (
            f"live tail did not print the two requests of other processes within 10 s: {received}"
        )
        assert received[1]["event"]["request"]["method"] == "POST"
    finally:
        tail.send_signal(signal.SIGINT)  # what Ctrl-C does
        try:
            tail.wait(timeout=10)
        except subprocess.TimeoutExpired:
            tail.kill()
            tail.wait()
        reader.join(timeout=5)
        err = tail.stderr.read() if tail.stderr else ""
        if tail.stderr:
            tail.stderr.close()
    assert tail.returncode == 130, f"tail interrupted with Ctrl-C exits {tail.returncode}, expected 130"
    assert err.strip() == "", f"tail wrote to stderr: {err!r}"


# --- 8. refusals --------------------------------------------------------------------


def test_refusals_are_one_line_and_change_nothing(tmp_path: Path) -> None:
    ok(tmp_path, "deploy", "hello", fixture("hello"), "--tag", "free", "--var", "GREETING=hi")
    ok(tmp_path, "limits", "set", "free", "--cpu-ms", "1000")
    request(tmp_path, "http://hello.x/")

    def snapshot() -> dict[str, Any]:
        listed, versions = in_parallel([(ok_json, tmp_path, "list", "--json"), (ok_json, tmp_path, "versions", "hello", "--json")])
        return {"list": listed, "versions": versions, "tables": db_dump(tmp_path / "w.db")}

    before = snapshot()

    directory = tmp_path / "a-directory"
    directory.mkdir()
    text = tmp_path / "notes.wasm"
    text.write_text("this is not WebAssembly\n")
    truncated = tmp_path / "truncated.wasm"
    truncated.write_bytes(Path(fixture("hello")).read_bytes()[:100])
    no_start = tmp_path / "nostart.wasm"
    no_start.write_bytes(NO_START_MODULE)
    host_call = tmp_path / "hostcall.wasm"
    host_call.write_bytes(HOST_CALL_MODULE)
    hello = fixture("hello")

    cases: list[tuple[str, list[str], int, str | None]] = [
        ("missing module file", ["deploy", "hello", str(tmp_path / "nope.wasm")], 1, "does not exist"),
        ("directory as module", ["deploy", "hello", str(directory)], 1, "not a file"),
        ("text file as module", ["deploy", "hello", str(text)], 1, "syntax error at notes.wasm:1:"),  # UTF-8 text: checked as JavaScript
        ("truncated module", ["deploy", "hello", str(truncated)], 1, "truncated"),
        ("module without _start", ["deploy", "hello", str(no_start)], 1, "_start"),
        ("module importing env.host_call", ["deploy", "hello", str(host_call)], 1, "env.host_call"),
        ("name Hello", ["deploy", "Hello", hello], 1, "DNS label"),
        ("name -x", ["deploy", "--", "-x", hello], 1, "DNS label"),
        ("name x-", ["deploy", "x-", hello], 1, "DNS label"),
        ("name a_b", ["deploy", "a_b", hello], 1, "DNS label"),
        ("64-character name", ["deploy", "a" * 64, hello], 1, "DNS label"),
        ("9 tags", ["deploy", "hello", hello, *[arg for i in range(9) for arg in ("--tag", f"t{i}")]], 1, "at most 8 tags"),
        ("tag with a comma", ["deploy", "hello", hello, "--tag", "a,b"], 1, "'a,b'"),
        ("tag with &", ["deploy", "hello", hello, "--tag", "a&b"], 1, "'a&b'"),
        ("tag with a space", ["deploy", "hello", hello, "--tag", "a b"], 1, "'a b'"),
        ("--var without =", ["deploy", "hello", hello, "--var", "NOEQUALS"], 1, "NOEQUALS"),
        ("--var REQUEST_METHOD", ["deploy", "hello", hello, "--var", "REQUEST_METHOD=x"], 1, "REQUEST_METHOD"),
        ("unknown namespace", ["deploy", "hello", hello, "--namespace", "nope"], 1, "nope"),
        ("list of an unknown namespace", ["list", "--namespace", "nope"], 1, "nope"),
        ("delete of a missing worker", ["delete", "ghost"], 1, "ghost"),
        ("rollback of a missing worker", ["rollback", "ghost", "1"], 1, "ghost"),
        ("versions of a missing worker", ["versions", "ghost"], 1, "ghost"),
        ("limits show of a missing worker", ["limits", "show", "ghost"], 1, "ghost"),
        ("malformed URL", ["request", "not a url"], 1, "not a url"),
        ("malformed header", ["request", "http://hello.x/", "-H", "nocolon"], 1, "nocolon"),
        ("missing body file", ["request", "http://hello.x/", "-d", f"@{tmp_path / 'nope.txt'}"], 1, "does not exist"),
        ("tail --status bogus", ["tail", "--status", "bogus", "--no-follow"], 2, "bogus"),
        ("tail --sampling-rate 1.5", ["tail", "--sampling-rate", "1.5", "--no-follow"], 1, "sampling rate"),
        ("limits set without options", ["limits", "set", "free"], 1, "at least one"),
        ("limits set --cpu-ms -5", ["limits", "set", "free", "--cpu-ms", "-5"], 2, "negative"),
        ("limits set --cpu-ms too large", ["limits", "set", "free", "--cpu-ms", "999999999"], 1, "cpuMs"),
        ("limits set on a bad tag", ["limits", "set", "a b", "--cpu-ms", "5"], 1, "'a b'"),
        ("namespace create of a bad name", ["namespace", "create", "Bad_NS"], 1, "DNS label"),
        ("namespace create of an existing one", ["namespace", "create", "default"], 1, "already exists"),
        ("namespace delete default", ["namespace", "delete", "default"], 1, "default"),
        ("namespace set of a missing one", ["namespace", "set", "nope", "--routing", "path"], 1, "nope"),
        ("unknown command", ["frobnicate"], 2, "frobnicate"),
        ("no command", [], 2, "give a command: deploy, list,"),
        ("limits without an action", ["limits"], 2, "give an action: set, list, delete, show"),
        ("secret without an action", ["secret"], 2, "give an action: put, list, delete"),
    ]
    results = in_parallel([(wasmdeck, tmp_path, *args) for _what, args, _code, _mentions in cases])
    for (what, _args, code, mentions), result in zip(cases, results):
        assert_refused(result, what, code=code, mentions=mentions)

    after = snapshot()
    assert after["list"] == before["list"], "a refused command changed `list --json`"
    assert after["versions"] == before["versions"], "a refused command changed `versions hello --json`"
    assert after["tables"] == before["tables"], "a refused command changed the database (tags, limits, namespaces or traces)"


def test_database_paths_that_are_not_databases(tmp_path: Path) -> None:
    directory = tmp_path / "dbdir"
    directory.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "wasmdeck.cli.main", "--db", str(directory), "list"],
        cwd=REPO, env=_env(None), capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert_refused(result, "a directory as --db", mentions="directory")
    assert list(directory.iterdir()) == [], "a refused directory --db got files written into it"

    text = tmp_path / "notes.txt"
    text.write_text("just some notes\n")
    for args in (["list"], ["deploy", "hello", fixture("hello")]):
        result = subprocess.run(
            [sys.executable, "-m", "wasmdeck.cli.main", "--db", str(text), *args],
            cwd=REPO, env=_env(None), capture_output=True, text=True, timeout=TIMEOUT,
        )
        assert_refused(result, f"a text file as --db ({args[0]})", mentions="not a wasmdeck database")
    assert text.read_text() == "just some notes\n", "the text file given as --db was modified"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dbdir", "notes.txt"], "refused --db left files behind"


# --- 9. runtime output stays off the terminal ----------------------------------------------


def test_trap_backtrace_does_not_reach_the_terminal(tmp_path: Path) -> None:
    ok(tmp_path, "deploy", "trap", fixture("trap"))
    result = wasmdeck(tmp_path, "request", "http://trap.x/")
    assert result.returncode == 0, result.stderr
    assert "RuntimeError" not in result.stderr, f"the runtime's trap report reached stderr: {result.stderr!r}"
    assert "explode_on_purpose" not in result.stderr, f"the trap backtrace reached stderr: {result.stderr!r}"
    assert result.stderr.strip() == "", f"unexpected stderr: {result.stderr!r}"
    assert result.stdout.startswith("Worker threw an exception"), result.stdout

    result = wasmdeck(tmp_path, "request", "--json", "http://trap.x/")
    assert result.returncode == 0 and result.stderr.strip() == "", f"unexpected stderr with --json: {result.stderr!r}"
    response = json.loads(result.stdout)
    assert response["status"] == 500 and response["trace"]["outcome"] == "exception"
    message = response["trace"]["exceptions"][0]["message"]
    assert "unreachable" in message and "explode_on_purpose" in message, f"trap message: {message!r}"


def test_logs_written_before_a_trap_are_kept(tmp_path: Path) -> None:
    ok(tmp_path, "deploy", "trap", fixture("trap"))
    logs = request(tmp_path, "http://trap.x/")["trace"]["logs"]
    assert {"level": "error", "message": ["about to trap in explode_on_purpose"]} in [
        {"level": log["level"], "message": log["message"]} for log in logs
    ], f"the guest's stderr line before the trap is missing from the trace logs: {logs}"


def test_misbehaving_and_sandboxed_workers(tmp_path: Path) -> None:
    ok(tmp_path, "deploy", "misbehave", fixture("misbehave"))
    ok(tmp_path, "deploy", "fsprobe", fixture("fsprobe"))
    response = request(tmp_path, "http://misbehave.x/?mode=noheader")
    assert response["status"] == 502 and response["trace"]["outcome"] == "exception", "output without headers is not a 502"
    assert "header" in response["trace"]["exceptions"][0]["message"]
    response = request(tmp_path, "http://misbehave.x/?mode=exit")
    assert response["status"] == 500 and response["trace"]["outcome"] == "exception", "a non-zero exit is not an exception"
    response = request(tmp_path, "http://misbehave.x/?mode=redirect")
    assert response["status"] == 302 and ["Location", "/elsewhere"] in response["headers"]

    response = request(tmp_path, "http://fsprobe.x/?read=/etc/passwd")
    assert response["status"] == 404 and response["body"] == "missing\n", "the host filesystem is visible to a worker"
    response = request(tmp_path, "http://fsprobe.x/?write=note&value=abc")
    assert response["status"] == 200 and "wrote 3 bytes" in response["body"], response


# --- 10. persistence across restarts ------------------------------------------------------


def test_workers_and_traces_survive_restarts(tmp_path: Path) -> None:
    ok(tmp_path, "deploy", "hello", fixture("hello"), "--var", "GREETING=persisted")
    first = request(tmp_path, "http://hello.x/first")
    assert first["body"] == "persisted\n"
    second = request(tmp_path, "http://hello.x/second")
    items = tail_items(tmp_path, history=10)
    assert urls(items) == ["http://hello.x/first", "http://hello.x/second"], "traces of earlier processes are missing"
    assert items[0]["eventTimestamp"] == first["trace"]["eventTimestamp"]
    assert items[1] == second["trace"], "the stored trace item differs from the one request --json printed"
    assert [w["name"] for w in ok_json(tmp_path, "list", "--json")] == ["hello"], "the deployed worker did not survive"


def test_tail_no_follow_alone_prints_the_newest_stored_items(tmp_path: Path) -> None:
    import asyncio

    from wasmdeck.engine import Engine
    from wasmdeck.engine.traces import new_item

    async def store(count: int) -> None:
        async with Engine(tmp_path / "w.db") as engine:
            for n in range(count):
                engine.traces.publish(new_item(
                    script_name="hello", namespace="default", outcome="ok", event_timestamp=1_795_766_400_000 + n,
                    cpu_time=0, wall_time=0, url=f"http://hello.x/{n}", method="GET", headers=[], status=200,
                ))
            await engine.flush_traces()

    assert ok(tmp_path, "tail", "--no-follow") == "", "an empty database has no history to print"
    asyncio.run(store(25))
    newest = [f"http://hello.x/{n}" for n in range(5, 25)]
    assert urls([json.loads(line) for line in ok(tmp_path, "tail", "--no-follow", "--format", "json").splitlines()]) == newest, \
        "tail --no-follow without --history does not print the 20 newest items, oldest first"
    assert len(ok(tmp_path, "tail", "--no-follow").splitlines()) == 20
    assert urls(tail_items(tmp_path, history=3)) == newest[-3:], "--history still sets the count"
    assert ok(tmp_path, "tail", "--no-follow", "--history", "0") == "", "--history 0 asks for nothing"
    assert "20" in " ".join(ok(tmp_path, "tail", "--help").split()), "the help does not say the default count"


def test_small_sizes_show_in_bytes_and_a_nonstandard_status_stays_a_number(tmp_path: Path) -> None:
    script = tmp_path / "sw.js"
    script.write_text('addEventListener("fetch", e => e.respondWith(new Response("hi", {status: 299})));\n')
    deployed = ok(tmp_path, "deploy", "sw", str(script))
    size = len(script.read_bytes())
    assert f"(JavaScript, service-worker, fetch, {size} B, sha256 " in deployed, deployed
    assert f"  {size} B  " in ok(tmp_path, "list"), "list shows a script under 1 KiB as 0.x KiB"
    assert "24.1 KiB" in ok(tmp_path, "deploy", "hello", fixture("hello"))
    assert ok(tmp_path, "request", "http://sw.x/", "-i").startswith("HTTP/1.1 299\n")


def test_demo_hint_names_a_database_that_still_exists(tmp_path: Path) -> None:
    kept = ok(tmp_path, "demo")  # --db given: the database stays
    assert f"Try: wasmdeck --db {tmp_path / 'w.db'} tail" in kept
    throwaway = ok(tmp_path, "demo", db=False)
    assert "<database>" not in throwaway and "wasmdeck demo --keep" in throwaway


def test_db_is_accepted_after_any_command(tmp_path: Path) -> None:
    db = str(tmp_path / "after.db")
    ok(tmp_path, "deploy", "hello", fixture("hello"), "--db", db, db=False)
    assert "hello" in ok(tmp_path, "list", "--db", db, db=False)
    assert "free" in ok(tmp_path, "limits", "set", "free", "--cpu-ms", "5", "--db", db, db=False)
    assert "free" in ok(tmp_path, "limits", "list", "--db", db, db=False)
    assert "hello" not in ok(tmp_path, "list")  # the default test database was never written
    assert "--db" in ok(tmp_path, "request", "--help", db=False)

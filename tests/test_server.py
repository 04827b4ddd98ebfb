"""End-to-end tests of `wasmdeck serve`: the server runs as a real subprocess on a free
127.0.0.1 port and is driven with httpx as a real HTTP client.

One server (module scope) answers most tests; the SIGTERM test starts its own on the same
database, since it stops it. Workers and the tag limit are set up with the CLI beforehand.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from .test_cli import REPO, _env, fixture, ok, tail_items

MAX_BODY = 4096
START_TIMEOUT = 20.0
HEALTH = "/__wasmdeck/health"
ACCESS_LINE = re.compile(r" (GET|POST|HEAD) (\S+) (\S+) (\d{3}) (\w+) \d+\.\dms$")


# --- helpers -----------------------------------------------------------------


def _serve_command(db: Path, *args: str) -> list[str]:
    """`wasmdeck --db DB serve ARGS`; `python -m wasmdeck.server` (the same code) until the CLI has `serve`."""
    from wasmdeck.cli import main as cli_main

    if "serve" in cli_main.COMMANDS:
        return [sys.executable, "-m", "wasmdeck.cli.main", "--db", str(db), "serve", *args]
    return [sys.executable, "-m", "server", "--db", str(db), *args]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    stderr_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def get(self, path: str = "/", host: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if host is not None:
            headers["Host"] = host
        return httpx.request(kwargs.pop("method", "GET"), self.base + path, headers=headers, timeout=20, **kwargs)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=20)


def start_server(db: Path, tmp: Path, *args: str) -> Server:
    """Start the server on a free port (another process may grab it first: then retry) and wait for its health check."""
    for attempt in range(5):
        port = _free_port()
        stderr_path = tmp / f"server-{port}.stderr"
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                _serve_command(db, "--host", "127.0.0.1", "--port", str(port), *args),
                cwd=REPO, env=_env(None), stdout=subprocess.DEVNULL, stderr=stderr,
            )
        server = Server(process, port, stderr_path)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            try:
                if server.get(HEALTH).status_code == 200:
                    return server
            except httpx.TransportError:
                time.sleep(0.05)
        if process.poll() is None:
            server.stop(signal.SIGKILL)
            pytest.fail(f"the server did not answer its health check within {START_TIMEOUT} s: {server.stderr()}")
        if "cannot listen" not in server.stderr():
            pytest.fail(f"the server exited {process.returncode} at start: {server.stderr()}")
    pytest.fail("no free port found in 5 attempts")


def access_lines(server: Server) -> list[tuple[str, ...]]:
    return [match.groups() for line in server.stderr().splitlines() if (match := ACCESS_LINE.search(line))]


# --- the shared server ---------------------------------------------------------


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with w.db holding hello, echo, burn and `spin` (burn under the tag `tiny`: 50 ms of CPU)."""
    tmp = tmp_path_factory.mktemp("serve")
    ok(tmp, "deploy", "hello", fixture("hello"))
    ok(tmp, "deploy", "echo", fixture("echo"))
    ok(tmp, "deploy", "burn", fixture("burn"))
    ok(tmp, "deploy", "spin", fixture("burn"), "--tag", "tiny")
    ok(tmp, "limits", "set", "tiny", "--cpu-ms", "50")
    return tmp


@pytest.fixture(scope="module")
def server(platform: Path) -> Iterator[Server]:
    running = start_server(platform / "w.db", platform, "--max-body-bytes", str(MAX_BODY))
    try:
        yield running
    finally:
        code = running.stop()
        assert code == 0, f"the shared server exited {code}: {running.stderr()}"
        assert "Traceback" not in running.stderr(), running.stderr()


# --- routing, bodies, headers ----------------------------------------------------


def test_host_routes_to_the_worker_and_unknown_hosts_get_404(server: Server) -> None:
    response = server.get("/", host="hello.example.com")
    assert response.status_code == 200, response.text
    assert response.text.strip() == "Hello from wasmdeck!", response.text
    assert response.headers["x-wasmdeck-outcome"] == "ok"
    assert "trace" not in response.text and not any("trace" in k for k in response.headers), "the trace item leaked"

    head = server.get("/", host="hello.example.com", method="HEAD")
    assert head.status_code == 200 and head.content == b"", "HEAD should answer the status and headers only"

    missing = server.get("/x", host="nope.example.com:8787")
    assert missing.status_code == 404 and missing.text.startswith("Worker not found"), missing.text
    assert missing.headers["x-wasmdeck-outcome"] == "scriptNotFound"


def test_post_body_headers_and_remote_addr_reach_the_worker(server: Server) -> None:
    response = server.get(
        "/p/a%20b?q=1&header=X-Thing:yes", host="echo.example.com", method="POST", content=b"hello body",
        headers={"X-Custom": "v1", "X-Forwarded-For": "10.1.2.3", "Content-Type": "text/plain"},
    )
    assert response.status_code == 200, response.text
    echoed = response.json()
    env = echoed["env"]
    assert echoed["body"] == "hello body" and echoed["bodyLength"] == 10, echoed
    assert env["REQUEST_METHOD"] == "POST" and env["CONTENT_LENGTH"] == "10" and env["CONTENT_TYPE"] == "text/plain", env
    assert env["PATH_INFO"] == "/p/a b" and env["REQUEST_URI"] == "/p/a%20b?q=1&header=X-Thing:yes", env
    assert env["QUERY_STRING"] == "q=1&header=X-Thing:yes", env
    assert env["HTTP_HOST"] == "echo.example.com" and env["SERVER_NAME"] == "echo.example.com", env
    assert env["HTTP_X_CUSTOM"] == "v1", "a request header did not reach the worker as HTTP_*"
    assert env["REMOTE_ADDR"] == "127.0.0.1", "REMOTE_ADDR is not the client's address (or X-Forwarded-For was trusted)"
    assert "HTTPS" not in env, "a plain-http request was marked HTTPS"
    assert response.headers["x-thing"] == "yes", "a response header set by the worker did not pass through"

    teapot = server.get("/?status=418", host="echo.example.com")
    assert teapot.status_code == 418, "the worker's status did not pass through"


def test_bodies_over_the_limit_get_413(server: Server) -> None:
    at_limit = server.get("/", host="echo.example.com", method="POST", content=b"x" * MAX_BODY)
    assert at_limit.status_code == 200 and at_limit.json()["bodyLength"] == MAX_BODY, "a body at the limit was refused"

    declared = server.get("/", host="echo.example.com", method="POST", content=b"x" * (2 * MAX_BODY))
    assert declared.status_code == 413, declared.text
    assert declared.text.count("\n") == 1 and str(MAX_BODY) in declared.text, f"413 body is not one sentence: {declared.text!r}"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(8):
            yield b"y" * 1024

    streamed = server.get("/", host="echo.example.com", method="POST", content=chunks())
    assert streamed.status_code == 413, f"a chunked body over the limit got {streamed.status_code}"

    # a huge declared body is refused before any of it is sent, so it is never read
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(b"POST / HTTP/1.1\r\nHost: echo.example.com\r\nContent-Length: 1000000000\r\n\r\n")
        answer = raw.recv(4096).decode("latin-1")
    assert answer.startswith("HTTP/1.1 413"), f"Content-Length is not checked up front: {answer!r}"

    assert server.get(HEALTH).status_code == 200, "the server is unwell after refusing bodies"


def test_requests_the_engine_refuses_get_400(server: Server) -> None:
    response = server.get("/", host="echo.example.com:notaport")
    assert response.status_code == 400, response.text
    assert response.text.startswith("Bad request:") and response.text.count("\n") == 1, response.text
    assert "Traceback" not in server.stderr()

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: bad/host\r\n\r\n")
        answer = raw.recv(4096).decode("latin-1")
    assert answer.startswith("HTTP/1.1 400"), f"a Host with a slash was not refused: {answer!r}"


def test_health_endpoint_is_reserved_on_every_host(server: Server) -> None:
    for host in (None, "hello.example.com"):
        response = server.get(HEALTH, host=host)
        assert response.status_code == 200, response.text
        health = response.json()
        assert health["status"] == "ok" and health["workers"] == 4, health
        assert set(health["guests"]) >= {"running", "waiting", "maxConcurrency"}, health
        assert health["maxBodyBytes"] == MAX_BODY, health
    assert server.get(HEALTH, method="POST").status_code == 405
    other = server.get("/__wasmdeck/other", host="hello.example.com")
    assert other.status_code == 404 and not other.text.startswith("Worker not found"), other.text


def test_tag_limit_set_with_the_cli_gives_503_exceeded_cpu(server: Server) -> None:
    response = server.get("/?forever=1", host="spin.example.com")
    assert response.status_code == 503, response.text
    assert response.headers["x-wasmdeck-outcome"] == "exceededCpu"
    assert response.json()["limit"] == "cpuMs", response.text


async def test_concurrent_requests_all_succeed(server: Server) -> None:
    gate = asyncio.Semaphore(16)
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)

    async with httpx.AsyncClient(base_url=server.base, limits=limits, timeout=30) as client:

        async def one(i: int) -> tuple[int, str]:
            async with gate:
                response = await client.get(f"/?i={i}", headers={"Host": "hello.example.com"})
                return response.status_code, response.text

        results = await asyncio.gather(*(one(i) for i in range(200)))
    statuses = [status for status, _ in results]
    assert statuses == [200] * 200, f"not all 200: {sorted(set(statuses))}"
    assert all(text.strip() == "Hello from wasmdeck!" for _, text in results)


def test_access_log_and_stored_traces(server: Server, platform: Path) -> None:
    server.get("/logged?secret=1", host="hello.example.com")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(line[2] == "/logged" for line in access_lines(server)):
        time.sleep(0.05)
    lines = access_lines(server)
    assert ("GET", "hello.example.com", "/logged", "200", "ok") in lines, server.stderr()[-2000:]
    assert "secret=1" not in server.stderr(), "the access log shows the query string"

    # the server's dispatches are stored in the database for other processes (batched every 100 ms)
    deadline = time.monotonic() + 5
    while True:
        items = tail_items(platform, "--worker", "hello", history=20)
        if "http://hello.example.com/logged?secret=REDACTED" in [item["event"]["request"]["url"] for item in items]:
            break
        assert time.monotonic() < deadline, f"the server's request is not in the stored traces: {items[-3:]}"
        time.sleep(0.2)


# --- graceful shutdown ---------------------------------------------------------------


def test_sigterm_finishes_in_flight_requests_then_exits_0(platform: Path) -> None:
    server = start_server(platform / "w.db", platform, "--no-access-log")
    try:
        outcome: dict[str, Any] = {}

        def slow() -> None:
            try:
                outcome["response"] = server.get("/?ms=800", host="burn.example.com")
            except Exception as error:  # reported by the assertion below
                outcome["error"] = error

        thread = threading.Thread(target=slow)
        thread.start()
        deadline = time.monotonic() + 10
        while server.get(HEALTH).json()["guests"]["running"] < 1:
            assert time.monotonic() < deadline, "the slow request never started running"
            time.sleep(0.02)
        server.process.send_signal(signal.SIGTERM)
        thread.join(timeout=20)
        code = server.process.wait(timeout=20)
    finally:
        server.stop(signal.SIGKILL)
    assert "error" not in outcome, f"the in-flight request failed: {outcome.get('error')!r}"
    response = outcome["response"]
    assert response.status_code == 200 and response.text.strip() == "burned 800 ms", response.text
    stderr = server.stderr()
    assert code == 0, f"the server exited {code} after SIGTERM: {stderr}"
    assert "Traceback" not in stderr, stderr
    assert not access_lines(server), f"--no-access-log still logs requests: {stderr}"

    stored = tail_items(platform, "--worker", "burn", history=5)
    assert any(item["event"]["request"]["url"] == "http://burn.example.com/?ms=800" and item["outcome"] == "ok" for item in stored), (
        "the request finished during shutdown is not in the stored traces (engine not closed?)"
    )


def test_a_busy_port_is_one_line_and_exit_1(platform: Path, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run(
            _serve_command(platform / "w.db", "--host", "127.0.0.1", "--port", str(port)),
            cwd=REPO, env=_env(None), capture_output=True, text=True, timeout=30,
        )
    assert result.returncode == 1, f"exit {result.returncode}: {result.stderr}"
    lines = [line for line in result.stderr.splitlines() if "serving namespace" not in line]
    assert len(lines) == 1 and lines[0].startswith("wasmdeck: cannot listen"), result.stderr


# --- the ASGI app in-process (what a TLS-terminating uvicorn would hand it) -------------


async def test_app_builds_the_request_from_the_scope(engine: Any, deploy: Any) -> None:
    from wasmdeck.server import DispatchApp

    deploy("echo")
    app = DispatchApp(engine, access_log=False)
    scope = {
        "type": "http", "http_version": "1.1", "method": "PUT", "scheme": "https",
        "path": "/a b", "raw_path": b"/a%20b", "query_string": b"x=1",
        "headers": [(b"host", b"echo.example.com"), (b"content-type", b"text/plain")],
        "client": ("192.0.2.7", 5555), "server": ("127.0.0.1", 8787),
    }
    incoming = [{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.request", "body": b"cd"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, body = sent
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    assert start["status"] == 200 and headers["x-wasmdeck-outcome"] == "ok", sent
    assert headers["content-length"] == str(len(body["body"])), headers
    echoed = json.loads(body["body"])
    assert echoed["body"] == "abcd", "a body streamed in two chunks was not joined"
    env = echoed["env"]
    assert env["HTTPS"] == "on" and env["REMOTE_ADDR"] == "192.0.2.7" and env["REQUEST_METHOD"] == "PUT", env
    await engine.flush_traces()
    assert engine.recent_traces(1)[0]["event"]["request"]["url"] == "https://echo.example.com/a%20b?x=1"


def test_serve_with_the_admin_api(platform: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "admin-token"
    admin_port = _free_port()
    server = start_server(platform / "w.db", tmp_path, "--admin-port", str(admin_port), "--admin-token-file", str(token_file))
    try:
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        token = token_file.read_text().strip()
        admin = f"http://127.0.0.1:{admin_port}"
        assert httpx.get(f"{admin}/namespaces", timeout=20).status_code == 401
        listed = httpx.get(f"{admin}/namespaces", headers={"Authorization": f"Bearer {token}"}, timeout=20)
        assert listed.status_code == 200 and "default" in [ns["name"] for ns in listed.json()["result"]]
        assert server.get("/", host="hello.example.com").status_code == 200
    finally:
        assert server.stop() == 0


def test_tail_remote_through_the_cli(platform: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "admin-token"
    admin_port = _free_port()
    server = start_server(platform / "w.db", tmp_path, "--admin-port", str(admin_port), "--admin-token-file", str(token_file))
    try:
        assert server.get("/?remote=1", host="hello.example.com").status_code == 200
        token = token_file.read_text().strip()
        command = [sys.executable, "-m", "wasmdeck.cli.main", "tail", "--remote", f"http://127.0.0.1:{admin_port}",
                   "--worker", "hello", "--history", "50", "--no-follow", "--format", "json"]
        result = subprocess.run([*command, "--token", token], capture_output=True, text=True, cwd=REPO, timeout=60)
        assert result.returncode == 0, result.stderr
        urls = [json.loads(line)["event"]["request"]["url"] for line in result.stdout.splitlines()]
        assert any(url.endswith("/?remote=1") for url in urls)
        refused = subprocess.run([*command, "--token", "wrong"], capture_output=True, text=True, cwd=REPO, timeout=60)
        assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    finally:
        assert server.stop() == 0


def test_warm_instance_bounds_from_the_command_line(tmp_path: Path) -> None:
    """--max-instances, --max-instances-per-worker, --instance-idle-timeout and
    --instance-max-invocations reach the engine: health shows them, and an instance retires after
    its invocations. Out-of-range or contradictory values are one sentence and a non-zero exit."""
    from .conftest import protocol_module

    ok(tmp_path, "deploy", "warm", str(protocol_module("proto-hello")))
    server = start_server(tmp_path / "w.db", tmp_path, "--max-instances", "8", "--max-instances-per-worker", "2",
                          "--instance-idle-timeout", "30", "--instance-max-invocations", "2")
    try:
        bounds = server.get(HEALTH).json()["instances"]
        assert (bounds["maxInstances"], bounds["maxPerWorker"], bounds["idleTimeoutS"], bounds["maxInvocations"]) == (8, 2, 30, 2)
        for _ in range(5):
            assert server.get("/", host="warm.localhost").status_code == 200
        workers = server.get(HEALTH).json()["instances"]["workers"]["warm"]
        assert workers["invocations"] == 5 and workers["started"] == 3
        assert workers["retired"].get("maxInvocations") == 2
    finally:
        assert server.stop() == 0, server.stderr()

    for args, needle in [
        (("--max-instances", "0"), "0 is less than 1"),
        (("--max-instances", "500"), "more than 160"),
        (("--instance-idle-timeout", "soon"), "'soon' is not a number of seconds"),
        (("--instance-max-invocations", "-1"), "-1 is negative"),
        (("--max-instances", "4", "--max-instances-per-worker", "8"), "--max-instances-per-worker (8) is more than --max-instances (4)"),
    ]:
        result = subprocess.run(_serve_command(tmp_path / "w.db", "--host", "127.0.0.1", "--port", "1", *args),
                                cwd=REPO, env=_env(None), capture_output=True, text=True, timeout=30)
        assert result.returncode != 0 and needle in result.stderr, (args, result.returncode, result.stderr)
        assert "Traceback" not in result.stderr

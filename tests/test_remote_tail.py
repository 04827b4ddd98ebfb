"""Live tail over the network (`server.tail_stream`, `cli.remote_tail`): a real uvicorn server on
127.0.0.1 in the test's event loop (so the engine's dispatches reach the tail), real WebSocket clients."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import socket
import time
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount, WebSocketRoute
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from wasmdeck.cli.remote_tail import remote_tail, tail_url
from wasmdeck.engine import Engine, Request
from wasmdeck.engine.traces import new_item
from wasmdeck.server.admin_app import create_admin_app
from wasmdeck.server.tail_stream import TailEndpoint

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Served:
    def __init__(self, endpoint: TailEndpoint, base: str) -> None:
        self.endpoint = endpoint
        self.base = base

    def url(self, **params: Any) -> str:
        return tail_url(self.base, params)


async def serve(engine: Engine, **options: Any):
    endpoint = TailEndpoint(engine, TOKEN, **options)
    # what `create_admin_app` will do once the route is mounted there
    app = Starlette(routes=[WebSocketRoute("/tail", endpoint), Mount("/", create_admin_app(engine, TOKEN))])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return Served(endpoint, f"http://127.0.0.1:{port}"), server, task


@pytest.fixture
async def tail_server(engine: Engine, deploy):
    deploy("hello")
    deploy("trap")
    served, server, task = await serve(engine, poll_interval=0.05)
    served.options = lambda **o: serve(engine, **o)  # type: ignore[attr-defined]
    try:
        yield served
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def hit(engine: Engine, worker: str, n: int = 1) -> None:
    for _ in range(n):
        await engine.dispatch(Request(f"http://{worker}.x/"))


async def recv(ws, timeout: float = 5.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def items(ws, count: int) -> list[dict[str, Any]]:
    found = []
    while len(found) < count:
        message = await recv(ws)
        if "type" not in message:
            found.append(message)
    return found


async def test_refused_without_a_valid_token(tail_server: Served) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(tail_server.url(), additional_headers=headers):
                pass
        assert refused.value.response.status_code == 401
        assert json.loads(refused.value.response.body)["errors"][0]["code"] == "unauthorized"
    # the token is accepted only in the header, never in the query
    with pytest.raises(InvalidStatus):
        async with connect(tail_server.url() + "?token=" + TOKEN):
            pass
    with pytest.raises(InvalidStatus) as bad:
        async with connect(tail_server.url(status="weird"), additional_headers=AUTH):
            pass
    assert bad.value.response.status_code == 400


async def test_items_arrive_and_filters_narrow(engine: Engine, tail_server: Served) -> None:
    async with (
        connect(tail_server.url(), additional_headers=AUTH) as everything,
        connect(tail_server.url(worker="trap"), additional_headers=AUTH) as trap_only,
        connect(tail_server.url(status="error"), additional_headers=AUTH) as errors,
        connect(tail_server.url(worker="hello", method=["POST", "PUT"]), additional_headers=AUTH) as posts,
    ):
        for ws in (everything, trap_only, errors, posts):
            assert await recv(ws) == {"type": "ready"}
        await hit(engine, "hello")
        await hit(engine, "trap")
        await engine.dispatch(Request("http://hello.x/", method="POST", body=b"x"))
        got = await items(everything, 3)
        assert [(i["scriptName"], i["event"]["request"]["method"]) for i in got] == [
            ("hello", "GET"), ("trap", "GET"), ("hello", "POST")]
        assert [i["scriptName"] for i in await items(trap_only, 1)] == ["trap"]
        assert [i["outcome"] for i in await items(errors, 1)] == ["exception"]
        assert [i["event"]["request"]["method"] for i in await items(posts, 1)] == ["POST"]
        await hit(engine, "trap")  # nothing else arrived on the narrow streams in between
        assert (await items(trap_only, 1))[0]["scriptName"] == "trap"
        assert (await items(errors, 1))[0]["scriptName"] == "trap"


async def test_history_then_end(engine: Engine, tail_server: Served) -> None:
    await hit(engine, "hello", 3)
    await hit(engine, "trap")
    await engine.traces.flush()
    async with connect(tail_server.url(worker="hello", history=2, follow=0), additional_headers=AUTH) as ws:
        assert await recv(ws) == {"type": "ready"}
        assert [i["scriptName"] for i in await items(ws, 2)] == ["hello", "hello"]
        assert await recv(ws) == {"type": "closing", "reason": "end of history"}
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert ws.close_code == 1000


async def test_per_worker_and_total_caps(engine: Engine, deploy) -> None:
    deploy("hello")
    served, server, task = await serve(engine, per_worker=2, total=3)
    try:
        async with (
            connect(served.url(worker="hello"), additional_headers=AUTH) as a,
            connect(served.url(worker="hello"), additional_headers=AUTH) as b,
        ):
            for ws in (a, b):
                assert await recv(ws) == {"type": "ready"}
            async with connect(served.url(worker="hello"), additional_headers=AUTH) as over:
                closing = await recv(over)
                assert closing["type"] == "closing" and "too many tail clients" in closing["reason"]
                with pytest.raises(ConnectionClosed):
                    await recv(over)
                assert over.close_code == 1013
            async with connect(served.url(worker="other"), additional_headers=AUTH) as other:
                assert await recv(other) == {"type": "ready"}
                async with connect(served.url(), additional_headers=AUTH) as total:
                    assert (await recv(total))["type"] == "closing"
                    with pytest.raises(ConnectionClosed):
                        await recv(total)
                    assert total.close_code == 1013
        for _ in range(100):  # slots are given back when clients leave
            if served.endpoint.hub.count() == 0:
                break
            await asyncio.sleep(0.02)
        assert served.endpoint.hub.count() == 0
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def _raw_client_that_never_reads(base: str, query: str = "") -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /tail{query} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock  # and never read again


async def test_slow_client_is_dropped_without_slowing_dispatch(engine: Engine, deploy) -> None:
    deploy("hello")
    served, server, task = await serve(engine, queue_size=16, slow_timeout=0.3, poll_interval=0.05)
    try:
        baseline = time.perf_counter()
        await hit(engine, "hello", 20)
        baseline = time.perf_counter() - baseline

        slow = await asyncio.to_thread(_raw_client_that_never_reads, served.base)
        for _ in range(100):
            if served.endpoint.hub.count() == 1:
                break
            await asyncio.sleep(0.01)
        assert served.endpoint.hub.count() == 1
        padding = [{"level": "log", "message": [os.urandom(4000).hex()], "timestamp": 0}]  # incompressible, ~8 KB
        started = time.perf_counter()
        for n in range(2000):
            engine.traces.publish(new_item(script_name="hello", namespace="default", outcome="ok", event_timestamp=n,
                                           cpu_time=0, wall_time=0, url="http://hello.x/", method="GET", headers=[],
                                           status=200, logs=padding))
            if n % 100 == 0:
                await asyncio.sleep(0)  # let the server's tasks run between bursts
        publishing = time.perf_counter() - started
        assert publishing < 2.0, publishing
        during = time.perf_counter()
        await hit(engine, "hello", 20)
        during = time.perf_counter() - during
        assert during < baseline * 3 + 0.5, (baseline, during)
        # the server gives up on the client
        deadline = time.monotonic() + 10
        while served.endpoint.hub.count() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert served.endpoint.hub.count() == 0
        slow.close()
        # a well-behaved client still gets live items afterwards
        async with connect(served.url(worker="hello"), additional_headers=AUTH) as ws:
            assert await recv(ws) == {"type": "ready"}
            await hit(engine, "hello")
            assert (await items(ws, 1))[0]["scriptName"] == "hello"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def test_remote_tail_prints_like_the_local_tail(engine: Engine, tail_server: Served) -> None:
    await hit(engine, "hello", 2)
    await hit(engine, "trap")
    await engine.traces.flush()
    out, err = io.StringIO(), io.StringIO()
    code = await remote_tail(tail_server.base, TOKEN, history=10, follow=False, format="json", out=out, err=err)
    assert code == 0, err.getvalue()
    assert [json.loads(line)["scriptName"] for line in out.getvalue().splitlines()] == ["hello", "hello", "trap"]

    out = io.StringIO()
    code = await remote_tail(tail_server.base, TOKEN, worker="trap", history=10, follow=False, out=out, err=err)
    assert code == 0
    assert out.getvalue().startswith("GET http://trap.x/ - Exception Thrown @ ")

    out, err = io.StringIO(), io.StringIO()
    assert await remote_tail(tail_server.base, "wrong", out=out, err=err) == 1
    assert "refused the admin token (401)" in err.getvalue() and out.getvalue() == ""


async def test_remote_tail_follows_live_items(engine: Engine, tail_server: Served) -> None:
    out, err = io.StringIO(), io.StringIO()
    task = asyncio.create_task(remote_tail(tail_server.base, TOKEN, worker="hello", format="json", out=out, err=err))
    for _ in range(200):
        if tail_server.endpoint.hub.count():
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    await hit(engine, "hello", 2)
    await hit(engine, "trap")
    for _ in range(200):
        if len(out.getvalue().splitlines()) >= 2:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [json.loads(line)["scriptName"] for line in out.getvalue().splitlines()] == ["hello", "hello"]


async def test_remote_tail_connection_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    err = io.StringIO()
    assert await remote_tail(f"http://127.0.0.1:{port}", TOKEN, out=io.StringIO(), err=err) == 1
    assert err.getvalue().startswith(f"wasmdeck: cannot connect to ws://127.0.0.1:{port}/tail")
    assert err.getvalue().count("\n") == 1


def test_tail_remote_takes_the_token_from_the_environment(tmp_path) -> None:
    import os
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "wasmdeck.cli.main", "--db", str(tmp_path / "x.db"), "tail", "--remote", f"http://127.0.0.1:{port}"]
    env = {k: v for k, v in os.environ.items() if k not in ("WASMDECK_TOKEN", "WASMDECK_ADMIN_TOKEN")}
    missing = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode == 2 and "needs the admin token (--token or $WASMDECK_TOKEN)" in missing.stderr
    given = subprocess.run(command, capture_output=True, text=True, env={**env, "WASMDECK_TOKEN": TOKEN}, timeout=60)
    assert given.returncode == 1 and given.stderr.startswith(f"wasmdeck: cannot connect to ws://127.0.0.1:{port}/tail")


async def test_remote_no_follow_alone_prints_the_newest_stored_items(engine: Engine, tail_server: Served, capsys) -> None:
    from wasmdeck.cli.main import NO_FOLLOW_HISTORY, build_parser, run_remote_tail

    for n in range(NO_FOLLOW_HISTORY + 5):
        engine.traces.publish(new_item(script_name="hello", namespace="default", outcome="ok", event_timestamp=n,
                                       cpu_time=0, wall_time=0, url=f"http://hello.x/{n}", method="GET", headers=[], status=200))
    await engine.traces.flush()
    args = build_parser().parse_args(["tail", "--remote", tail_server.base, "--token", TOKEN, "--no-follow", "--format", "json"])
    assert await run_remote_tail(args) == 0
    shown = [json.loads(line)["eventTimestamp"] for line in capsys.readouterr().out.splitlines()]
    assert shown == list(range(5, NO_FOLLOW_HISTORY + 5))

"""`RemoteClient` against a real served engine: the dispatch listener and the admin API on uvicorn,
on free 127.0.0.1 ports, in the test's event loop (so the test can compare with `LocalClient`
over the same engine, and see what the listener dispatched)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn

from wasmdeck.engine import Engine, InvalidInput, InvalidModule, Limits, NotFound, Request, TraceFilter, WasmdeckError
from wasmdeck.client import EngineClient, LocalClient
from wasmdeck.client.remote import REQUEST_ID_HEADER, RemoteClient, RemoteError
from wasmdeck.server import DEFAULT_MAX_BODY_BYTES, DispatchApp
from wasmdeck.server.admin_app import DispatchListener, create_admin_app
from wasmdeck.server.tail_stream import TailEndpoint

from .conftest import fixture_module

TOKEN = "test-token-0123456789"
HELLO = fixture_module("hello")


@dataclass
class Served:
    admin_url: str
    dispatch_url: str | None
    tail: TailEndpoint  # the admin app's /tail


async def _start(app: Any, port: int = 0) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, task, f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def served(engine: Engine, *, dispatch: bool = True, namespace: str = "default", **tail_options: Any) -> AsyncIterator[Served]:
    """The engine behind a dispatch listener (unless `dispatch=False`) and an admin API, as `wasmdeck serve` runs them."""
    running: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []
    try:
        listener = None
        if dispatch:
            server, task, dispatch_url = await _start(DispatchApp(engine, namespace=namespace, access_log=False))
            running.append((server, task))
            listener = DispatchListener(dispatch_url, namespace, DEFAULT_MAX_BODY_BYTES)
        admin = create_admin_app(engine, TOKEN, dispatch=listener, tail_options=tail_options or None)
        server, task, admin_url = await _start(admin)
        running.append((server, task))
        tail = next(route.app for route in admin.app.routes if getattr(route, "path", "") == "/tail")
        yield Served(admin_url, listener.url if listener else None, tail)
    finally:
        for server, _ in running:
            server.should_exit = True
        for _, task in running:
            await asyncio.wait_for(task, 10)


@pytest.fixture
async def remote(engine: Engine) -> AsyncIterator[RemoteClient]:
    async with served(engine) as server:
        client = RemoteClient(server.admin_url, TOKEN)
        try:
            yield client
        finally:
            await client.close()


# -- every method, the same answers as in-process ----------------------------------------------


async def test_every_method_answers_as_the_local_client_does(engine: Engine, remote: RemoteClient) -> None:
    local = LocalClient(engine)
    assert await remote.namespaces() == await local.namespaces()
    assert (await remote.namespace("default")).name == "default"

    hello = await remote.deploy("hello", HELLO, "default", ["free", "eu"], {"GREETING": "hi"})
    assert hello == engine.worker("hello") and hello.tags == ("free", "eu") and hello.vars == {"GREETING": "hi"}
    echo = await remote.deploy("echo", fixture_module("echo").read_bytes(), "default", [], {})
    assert echo == engine.worker("echo")

    response = await remote.dispatch(Request("http://hello.example.com/"), "default")
    assert response.status == 200 and response.text == "hi\n"
    assert response.header("content-type") == "text/plain"
    trace = response.trace
    assert trace["outcome"] == "ok" and trace["scriptName"] == "hello" and trace["scriptVersion"] == 1
    assert trace["event"]["request"]["url"] == "http://hello.example.com/"
    assert REQUEST_ID_HEADER.lower() not in trace["event"]["request"]["headers"]
    assert trace["logs"][0]["message"] == ["hello served GET /"]
    await remote.dispatch(Request("http://nope.example.com/"), "default")

    await engine.flush_traces()
    rows = await remote.workers("default")
    assert rows == await local.workers("default")
    assert [(r.worker.name, r.requests, r.errors, r.last_outcome) for r in rows] == [("echo", 0, 0, None), ("hello", 1, 0, "ok")]
    assert [r.worker.name for r in await remote.workers("default", tags=["eu"])] == ["hello"]

    tagged = await remote.set_tags("hello", ["paid"], "default")
    assert tagged == engine.worker("hello") and tagged.tags == ("paid",) and tagged.version == 2
    varied = await remote.set_vars("hello", {"GREETING": "hey"}, "default")
    assert varied == engine.worker("hello") and varied.vars == {"GREETING": "hey"} and varied.version == 3
    rolled = await remote.rollback("hello", 1, "default")
    assert rolled == engine.worker("hello") and rolled.version == 4 and rolled.tags == ("free", "eu")
    assert await remote.versions("hello", "default") == await local.versions("hello", "default")

    assert await remote.set_limits("free", Limits(cpu_ms=50, wall_ms=900)) == Limits(cpu_ms=50, wall_ms=900)
    assert await remote.set_limits("free", Limits(memory_mb=64), clear=["wall_ms"]) == Limits(cpu_ms=50, memory_mb=64)
    assert await remote.limits() == await local.limits() == {"free": Limits(cpu_ms=50, memory_mb=64)}
    effective = await remote.effective_limits("hello", "default")
    assert effective == await local.effective_limits("hello", "default")
    assert effective.cpu_ms == 50 and effective.sources["cpuMs"] == "tag:free"
    assert await remote.engine_defaults() == await local.engine_defaults()
    await remote.delete_limits("free")
    assert await remote.limits() == {}

    everything = await remote.recent_traces(10)
    assert everything == await local.recent_traces(10)
    assert [i["scriptName"] for i in everything] == ["hello", "nope"]
    assert await remote.recent_traces(10, TraceFilter(worker="nope", method=("GET",))) == [everything[1]]
    assert await remote.recent_traces(10, TraceFilter(status="error")) == []

    await remote.delete("echo", "default")
    assert [w.name for w in engine.workers()] == ["hello"]


async def test_outbound_and_egress_settings_over_http(engine: Engine, remote: RemoteClient) -> None:
    from .conftest import protocol_module

    engine.deploy("gateway", protocol_module("outbound-logger"))
    engine.deploy("hello", fixture_module("hello"))
    changed = await remote.set_outbound("gateway", [("customer_name", None), ("url", "{request.url}")], "default")
    assert changed == engine.namespace() == await LocalClient(engine).namespace("default")
    assert [(p.name, p.template) for p in changed.outbound.parameters] == [("customer_name", None), ("url", "{request.url}")]
    assert (await remote.set_egress(["*.example.com"], ["evil.example.com"], "default")).egress == engine.namespace().egress
    with pytest.raises(InvalidInput, match="must speak the Worker protocol"):
        await remote.set_outbound("hello", [], "default")
    with pytest.raises(InvalidInput, match="without a scheme or path"):
        await remote.set_egress(["http://x"], [], "default")
    assert (await remote.set_outbound(None, [], "default")).outbound is None

    engine.deploy("audit", protocol_module("tail-collector"))
    added = await remote.add_tail_consumer("audit", "hello", False, "default")
    await remote.add_tail_consumer("audit", None, True, "default")
    assert await remote.tail_consumers("default") == await LocalClient(engine).tail_consumers("default") == engine.tail_consumers("default")
    assert added in engine.tail_consumers("default")
    with pytest.raises(InvalidInput, match="cannot be its own tail consumer"):
        await remote.add_tail_consumer("audit", "audit", False, "default")
    await remote.remove_tail_consumer("audit", "hello", False, "default")
    await remote.remove_tail_consumer("audit", None, True, "default")
    assert engine.tail_consumers("default") == []
    with pytest.raises(NotFound):
        await remote.remove_tail_consumer("audit", None, True, "default")
    assert engine.namespace().egress.as_dict() == {"allow": ["*.example.com"], "block": ["evil.example.com"]}


async def test_dispatch_carries_method_headers_and_body_and_keeps_repeated_headers(engine: Engine, remote: RemoteClient) -> None:
    engine.deploy("echo", fixture_module("echo"))
    request = Request("http://echo.example.com/p/a%20b?q=1&header=X-Thing:yes", method="PUT",
                      headers=[("X-Custom", "v1"), ("Content-Type", "text/plain")], body=b"hello body")
    response = await remote.dispatch(request, "default")
    echoed = response.json()
    env = echoed["env"]
    assert response.status == 200 and echoed["body"] == "hello body"
    assert env["REQUEST_METHOD"] == "PUT" and env["HTTP_X_CUSTOM"] == "v1" and env["QUERY_STRING"] == "q=1&header=X-Thing:yes"
    assert env["PATH_INFO"] == "/p/a b" and env["HTTP_HOST"] == "echo.example.com"
    assert "HTTP_USER_AGENT" not in env and "HTTP_ACCEPT_ENCODING" not in env, "httpx's own headers reached the worker"
    assert response.header("x-thing") == "yes" and response.header("x-wasmdeck-outcome") is None
    assert response.trace["event"]["request"]["method"] == "PUT"

    teapot = await remote.dispatch(Request("http://echo.example.com/?status=418"), "default")
    assert teapot.status == 418 and teapot.trace["event"]["response"]["status"] == 418
    # the listener's own answers have no trace item
    health = await remote.dispatch(Request("http://any.example.com/__wasmdeck/health"), "default")
    assert health.status == 200 and health.json()["status"] == "ok" and health.trace == {}


# -- errors: the engine's classes and sentences ---------------------------------------------------

Call = Callable[[EngineClient], Awaitable[Any]]

REFUSED: list[tuple[str, Call, type[WasmdeckError]]] = [
    ("bad name", lambda c: c.deploy("Bad_Name", HELLO, "default", [], {}), InvalidInput),
    ("bad tag", lambda c: c.deploy("x", HELLO, "default", ["a,b"], {}), InvalidInput),
    ("reserved var", lambda c: c.deploy("x", HELLO, "default", [], {"REQUEST_METHOD": "x"}), InvalidInput),
    ("missing file", lambda c: c.deploy("x", "/nonexistent/x.wasm", "default", [], {}), InvalidInput),
    ("not wasm", lambda c: c.deploy("x", b"not wasm at all", "default", [], {}), InvalidModule),
    ("unknown namespace", lambda c: c.deploy("x", HELLO, "nope", [], {}), NotFound),
    ("workers of unknown namespace", lambda c: c.workers("nope"), NotFound),
    ("versions of unknown worker", lambda c: c.versions("nope", "default"), NotFound),
    ("bad tags", lambda c: c.set_tags("hello", ["a b"], "default"), InvalidInput),
    ("tags of unknown worker", lambda c: c.set_tags("nope", ["a"], "default"), NotFound),
    ("reserved var edit", lambda c: c.set_vars("hello", {"HTTP_X": "1"}, "default"), InvalidInput),
    ("missing version", lambda c: c.rollback("hello", 9, "default"), NotFound),
    ("delete unknown worker", lambda c: c.delete("nope", "default"), NotFound),
    ("limits of a bad tag", lambda c: c.set_limits("a,b", Limits(cpu_ms=5)), InvalidInput),
    ("delete unset limits", lambda c: c.delete_limits("none"), NotFound),
    ("limits of unknown worker", lambda c: c.effective_limits("nope", "default"), NotFound),
]


@pytest.mark.parametrize(("call", "kind"), [(call, kind) for _, call, kind in REFUSED], ids=[label for label, _, _ in REFUSED])
async def test_refusals_are_the_engine_s_own_errors(engine: Engine, remote: RemoteClient, call: Call,
                                                    kind: type[WasmdeckError]) -> None:
    engine.deploy("hello", HELLO)
    with pytest.raises(WasmdeckError) as in_process:
        await call(LocalClient(engine))
    with pytest.raises(WasmdeckError) as over_http:
        await call(remote)
    assert type(over_http.value) is type(in_process.value) is kind
    assert str(over_http.value) == str(in_process.value)
    assert [w.version for w in engine.workers()] == [1] and engine.limits() == {}


async def test_dispatch_refuses_another_namespace_and_a_server_without_listener(engine: Engine, remote: RemoteClient) -> None:
    engine.create_namespace("acme")
    with pytest.raises(InvalidInput, match="dispatches namespace 'default' only.*wasmdeck serve --namespace acme"):
        await remote.dispatch(Request("http://hello.example.com/"), "acme")
    async with served(engine, dispatch=False) as server:
        client = RemoteClient(server.admin_url, TOKEN)
        try:
            with pytest.raises(WasmdeckError, match="has no dispatch listener"):
                await client.dispatch(Request("http://hello.example.com/"), "default")
        finally:
            await client.close()


async def test_unreachable_server_bad_token_and_not_an_admin_api(engine: Engine) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with served(engine) as server:
        cases = [
            (RemoteClient(f"http://127.0.0.1:{port}", TOKEN), "cannot reach the wasmdeck admin API at http://127.0.0.1:"),
            (RemoteClient(server.admin_url, "wrong"), "refused the admin token"),
            (RemoteClient(str(server.dispatch_url), TOKEN), "not the admin API's JSON"),
        ]
        for client, needle in cases:
            try:
                with pytest.raises(RemoteError) as failure:
                    await client.connect()
                assert needle in str(failure.value) and "\n" not in str(failure.value)
                with pytest.raises(RemoteError):
                    await client.namespaces()
            finally:
                await client.close()
    with pytest.raises(InvalidInput, match="not an http"):
        RemoteClient("ftp://127.0.0.1:1", TOKEN)


# -- live traces over the WebSocket -------------------------------------------------------------


async def test_stream_delivers_matching_items(engine: Engine) -> None:
    engine.deploy("hello", HELLO)
    engine.deploy("trap", fixture_module("trap"))
    async with served(engine) as server:
        remote = RemoteClient(server.admin_url, TOKEN)
        stream = remote.stream(TraceFilter(worker="trap"))
        everything = remote.stream()
        try:
            await asyncio.wait_for(asyncio.gather(stream.connected.wait(), everything.connected.wait()), 10)
            await remote.dispatch(Request("http://hello.example.com/"), "default")
            await remote.dispatch(Request("http://trap.example.com/"), "default")
            got: list[dict[str, Any]] = []
            for _ in range(50):
                await stream.wait(0.1)
                got += stream.drain()
                if got:
                    break
            assert [(i["scriptName"], i["outcome"]) for i in got] == [("trap", "exception")]
            assert stream.take_dropped() == 0
            await everything.wait(1.0)
            assert [i["scriptName"] for i in everything.drain()] == ["hello", "trap"]
            assert server.tail.hub.count() == 2
        finally:
            await remote.close()
        for _ in range(100):
            if server.tail.hub.count() == 0:
                break
            await asyncio.sleep(0.02)
        assert server.tail.hub.count() == 0, "closing the client closes its streams"


async def test_a_refused_stream_says_why(engine: Engine) -> None:
    async with served(engine) as server:
        remote = RemoteClient(server.admin_url, "wrong")
        try:
            stream = remote.stream()
            for _ in range(100):
                if stream.error:
                    break
                await asyncio.sleep(0.02)
            assert stream.error is not None and "bearer token" in stream.error
            assert not stream.connected.is_set()
        finally:
            await remote.close()


async def test_stream_connects_again_after_a_server_restart(engine: Engine) -> None:
    engine.deploy("hello", HELLO)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server, task, url = await _start(create_admin_app(engine, TOKEN), port)
    remote = RemoteClient(url, TOKEN)
    stream = remote.stream()
    try:
        await asyncio.wait_for(stream.connected.wait(), 10)
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        for _ in range(100):
            if not stream.connected.is_set():
                break
            await asyncio.sleep(0.02)
        assert not stream.connected.is_set()
        server, task, _ = await _start(create_admin_app(engine, TOKEN), port)
        await asyncio.wait_for(stream.connected.wait(), 10)
        await engine.request("http://hello.example.com/again")
        await stream.wait(2.0)
        assert [i["event"]["request"]["url"] for i in stream.drain()] == ["http://hello.example.com/again"]
    finally:
        await remote.close()
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def test_two_deploys_of_one_name_at_once_both_complete_and_no_request_sees_a_torn_state(engine: Engine) -> None:
    import json

    import httpx

    engine.deploy("hello", HELLO, vars={"GREETING": "before"})
    async with served(engine) as server:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        answers: list[tuple[int, str]] = []
        stop = asyncio.Event()

        async def hammer() -> None:
            async with httpx.AsyncClient(base_url=server.dispatch_url, headers={"Host": "hello.example.com"}) as client:
                while not stop.is_set():
                    response = await client.get("/")
                    answers.append((response.status_code, response.text))

        async def deploy(greeting: str) -> httpx.Response:
            async with httpx.AsyncClient(base_url=server.admin_url, headers=headers) as admin:
                return await admin.put(
                    "/namespaces/default/scripts/hello",
                    data={"metadata": json.dumps({"vars": {"GREETING": greeting}})},
                    files={"module": ("hello.wasm", HELLO.read_bytes(), "application/wasm")},
                )

        load = [asyncio.create_task(hammer()) for _ in range(4)]
        await asyncio.sleep(0.2)
        first, second = await asyncio.gather(deploy("first"), deploy("second"))
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*load)
    assert first.status_code == 200 and second.status_code == 200
    versions = sorted([first.json()["result"]["version"], second.json()["result"]["version"]])
    assert versions == [2, 3]  # both landed, one after the other
    last = "first" if first.json()["result"]["version"] == 3 else "second"
    assert engine.worker("hello").vars == {"GREETING": last}  # the last wins
    assert answers and all(status == 200 for status, _ in answers)
    assert {text for _, text in answers} <= {"before\n", "first\n", "second\n"}  # never a torn or failed answer
    assert answers[-1][1] == f"{last}\n"

"""The `/tail` WebSocket's shared store poller and its client caps as `wasmdeck serve` sets them.

(Filters, history, slow clients and `wasmdeck tail --remote` are in tests/test_remote_tail.py.)
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from wasmdeck.cli.main import main as wasmdeck_main
from wasmdeck.cli.remote_tail import tail_url
from wasmdeck.engine import Engine, TraceFilter
from wasmdeck.engine.traces import new_item
from wasmdeck.server.tail_stream import _Follower, _Outbox

from .conftest import fixture_module
from .test_remote_client import TOKEN, served
from .test_server import _free_port, start_server

AUTH = {"Authorization": f"Bearer {TOKEN}"}
POLL_S = 0.05


async def recv(ws: Any, timeout: float = 5.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def items(ws: Any, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while len(found) < count:
        message = await recv(ws)
        if "type" not in message:
            found.append(message)
    return found


async def quiet(ws: Any, seconds: float) -> list[dict[str, Any]]:
    """Whatever arrives within `seconds` (for asserting that nothing more does)."""
    got = []
    try:
        while True:
            got.append(await recv(ws, seconds))
    except asyncio.TimeoutError:
        return got


@pytest.fixture
async def other_process(db_path: Path, wasmer_cache: Path):
    """A second engine on the same database, as another process would be: its items reach the
    server's tail only through the store."""
    other = Engine(db_path, cache_dir=wasmer_cache)
    try:
        yield other
    finally:
        await other.close()


async def test_one_poller_reads_the_store_for_every_client(engine: Engine, other_process: Engine,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    other_process.deploy("hello", fixture_module("hello"))
    other_process.deploy("trap", fixture_module("trap"))
    reads = 0
    traces_after = engine.store.traces_after

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        return traces_after(*args, **kwargs)

    monkeypatch.setattr(engine.store, "traces_after", counted)
    async with served(engine, poll_interval=POLL_S) as server:
        base = server.admin_url
        filters = [{}, {}, {"worker": "trap"}, {"status": "error"}, {"worker": "hello"}, {"worker": "hello", "method": "POST"}]
        sockets = [await connect(tail_url(base, f), additional_headers=AUTH) for f in filters]
        try:
            for ws in sockets:
                assert await recv(ws) == {"type": "ready"}
            assert server.tail.poller.running
            await other_process.request("http://hello.example.com/1")
            await other_process.request("http://trap.example.com/2")
            await other_process.flush_traces()
            everything, everything_too, trap, errors, hello, hello_posts = sockets
            for ws in (everything, everything_too):
                assert [i["scriptName"] for i in await items(ws, 2)] == ["hello", "trap"]
            assert [i["scriptName"] for i in await items(trap, 1)] == ["trap"]
            assert [i["outcome"] for i in await items(errors, 1)] == ["exception"]
            assert [i["scriptName"] for i in await items(hello, 1)] == ["hello"]
            assert await quiet(hello_posts, 0.2) == []

            reads_before = reads
            await asyncio.sleep(0.5)
            # one read of the store per interval (10 in 0.5 s) for all six clients, not one per client (60)
            assert 4 <= reads - reads_before <= 13, reads - reads_before
        finally:
            for ws in sockets:
                await ws.close()
        for _ in range(100):
            if not server.tail.poller.running:
                break
            await asyncio.sleep(0.02)
        assert not server.tail.poller.running, "the poller stops when the last client leaves"
        assert server.tail.hub.count() == 0


async def test_stored_items_come_once_after_the_history(engine: Engine, other_process: Engine) -> None:
    other_process.deploy("hello", fixture_module("hello"))
    for n in (1, 2):
        await other_process.request(f"http://hello.example.com/old{n}")
    await other_process.flush_traces()
    async with served(engine, poll_interval=POLL_S) as server:
        async with connect(tail_url(server.admin_url, {"history": 5}), additional_headers=AUTH) as ws:
            assert await recv(ws) == {"type": "ready"}
            await other_process.request("http://hello.example.com/new")
            await other_process.flush_traces()
            await engine.request("http://hello.example.com/mine")  # this engine's own: through its subscription
            got = await items(ws, 4)
            urls = [i["event"]["request"]["url"].rsplit("/", 1)[1] for i in got]
            assert urls[:2] == ["old1", "old2"] and sorted(urls[2:]) == ["mine", "new"]
            assert await quiet(ws, 0.3) == [], "an item came twice"


def test_stored_items_wait_for_the_history_and_a_full_queue_counts_drops() -> None:
    def stored(worker: str, path: str) -> dict[str, Any]:
        return new_item(script_name=worker, namespace="default", outcome="ok", event_timestamp=0, cpu_time=0, wall_time=0,
                        url=f"http://{worker}.x{path}", method="GET", headers=[], status=200)

    def frames(outbox: _Outbox) -> list[Any]:
        got = []
        while not outbox.queue.empty():
            message = json.loads(outbox.queue.get_nowait())
            got.append(message if "type" in message else message["event"]["request"]["url"])
        return got

    outbox = _Outbox(2)
    follower = _Follower(TraceFilter(worker="hello"), start_id=10, outbox=outbox)
    follower.offer_stored(10, stored("hello", "/in-history"))
    follower.offer_stored(11, stored("trap", "/unwanted"))
    follower.offer_stored(12, stored("hello", "/held"))
    assert frames(outbox) == [], "nothing goes out before the history"
    follower.go_live()
    for n in (13, 14, 15):
        follower.offer_stored(n, stored("hello", f"/{n}"))
    assert frames(outbox) == ["http://hello.x/held", "http://hello.x/13"]
    assert outbox.dropped == 2
    follower.offer_stored(16, stored("hello", "/16"))
    assert frames(outbox) == [{"type": "dropped", "count": 2}, "http://hello.x/16"]


def test_serve_passes_the_tail_caps_to_the_admin_api(tmp_path: Path) -> None:
    token_file = tmp_path / "admin-token"
    admin_port = _free_port()
    server = start_server(tmp_path / "w.db", tmp_path, "--no-access-log", "--admin-port", str(admin_port),
                          "--admin-token-file", str(token_file), "--tail-max-per-worker", "1", "--tail-max-clients", "2")
    try:
        admin = f"http://127.0.0.1:{admin_port}"
        headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
        info = httpx.get(f"{admin}/server", headers=headers, timeout=20).json()["result"]
        assert info["tail"] == {"perWorker": 1, "total": 2, "clients": 0}
        assert info["dispatch"] == {"url": server.base, "namespace": "default", "maxBodyBytes": 10 * 1024 * 1024,
                                    "maxHeaderBytes": 32 * 1024, "maxHeaders": 100}

        async def clients() -> list[tuple[str, int | None]]:
            outcomes = []
            async with connect(tail_url(admin, {"worker": "hello"}), additional_headers=headers) as first:
                outcomes.append(((await recv(first))["type"], None))
                for query in ({"worker": "hello"}, {"worker": "other"}, {}):
                    ws = await connect(tail_url(admin, query), additional_headers=headers)
                    message = await recv(ws)
                    if message["type"] == "closing":
                        with pytest.raises(ConnectionClosed):
                            await recv(ws)
                        outcomes.append((message["reason"], ws.close_code))
                    else:
                        outcomes.append((message["type"], None))
                await ws.close()
            return outcomes

        outcomes = asyncio.run(clients())
        assert outcomes[0] == ("ready", None) and outcomes[2] == ("ready", None)
        assert outcomes[1][0].startswith("too many tail clients for worker 'hello'") and "(limit 1)" in outcomes[1][0]
        assert outcomes[1][1] == 1013
        assert outcomes[3][0].startswith("too many tail clients on this server (limit 2)") and outcomes[3][1] == 1013
    finally:
        assert server.stop(signal.SIGTERM) == 0, server.stderr()


@pytest.mark.parametrize("option", ["--tail-max-per-worker", "--tail-max-clients"])
def test_tail_caps_below_one_are_a_usage_error(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert wasmdeck_main(["serve", "--admin-port", "8788", option, "0"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"argument {option}: 0 is less than 1")

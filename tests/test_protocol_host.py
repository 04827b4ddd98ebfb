"""`ProtocolHost` is composed with the engine, not part of it: it runs real protocol Workers with
only the collaborators it is given (runtime, network, config cache, recorder, module bytes and a
`RunUser` for `dispatch()` calls), and never imports the engine."""

from __future__ import annotations

import ast
import json
import struct
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from wasmdeck.engine import Engine, Limits, Request, Response
from wasmdeck.engine.config_cache import ConfigCache
from wasmdeck.engine.limits import ENGINE_DEFAULTS
from wasmdeck.engine.network import Network
from wasmdeck.engine.protocol import Frame
from wasmdeck.engine.protocol_host import Invocation, ProtocolHost
from wasmdeck.engine.recorder import Recorder
from wasmdeck.engine.runtime import Runtime
from wasmdeck.engine.store import Namespace, Store, now_ms
from wasmdeck.engine.trace_bus import TraceBus
from wasmdeck.engine.traces import TraceFilter, new_item

from .conftest import ROOT, fixture_module, protocol_module


def test_the_protocol_host_never_imports_the_engine() -> None:
    tree = ast.parse((ROOT / "engine" / "protocol_host.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "engine" not in imported and not any(name and name.endswith(".engine") for name in imported), imported


class Hosted:
    """A ProtocolHost on a database that holds a dispatch Worker, with a stand-in RunUser."""

    def __init__(self, db_path: Path, wasmer_cache: Path) -> None:
        self.calls: list[tuple[str, Limits | None, dict[str, str], int]] = []
        self.store = Store(db_path, now_ms)
        self.traces = TraceBus(self.store, "test-origin", persist=False)
        self.runtime = Runtime(wasmer_cache, max_concurrency=4, max_queue=4, max_output_bytes=1 << 20)
        self.network = Network()
        self.config = ConfigCache(self.store, ENGINE_DEFAULTS)
        self.host = ProtocolHost(runtime=self.runtime, network=self.network, config=self.config,
                                 recorder=Recorder(self.traces, now_ms), module_bytes=self.store.module_bytes,
                                 run_user=self.run_user)

    async def run_user(
        self, request: Request, namespace: Namespace, name: str, *,
        limits: Limits | None, outbound_values: Mapping[str, str], wall_cap_ms: int,
    ) -> Response:
        self.calls.append((name, limits, dict(outbound_values), wall_cap_ms))
        answer = Response(201, [("Content-Type", "text/plain")], f"stand-in for {name}".encode())
        answer.trace = new_item(script_name=name, namespace=namespace.name, outcome="ok", event_timestamp=now_ms(),
                                cpu_time=0, wall_time=0, url=request.url, method=request.method, headers=[], status=201)
        return answer

    async def close(self) -> None:
        await self.host.close()
        await self.traces.close()
        await self.runtime.close()
        await self.network.close()
        self.store.close()


@pytest.fixture
async def hosted(db_path: Path, wasmer_cache: Path):
    async with Engine(db_path, cache_dir=wasmer_cache) as engine:  # only to write the platform into the database
        engine.deploy("dispatcher", protocol_module("dispatcher"), vars={"CPU_MS": "40"})
        engine.deploy("hello", fixture_module("hello"))
        engine.set_dispatch_worker("dispatcher")
    found = Hosted(db_path, wasmer_cache)
    try:
        yield found
    finally:
        await found.close()


async def test_a_dispatch_worker_runs_on_the_hosts_collaborators_alone(hosted: Hosted) -> None:
    with hosted.traces.subscribe(TraceFilter(), 10) as published:
        hosted.config.refresh()
        namespace = hosted.config.namespace("default")
        response = await hosted.host.dispatch_through_worker(
            Request("http://tenant-a.example.com/x"), namespace, now_ms(), time.perf_counter())
        # the dispatch Worker ran for real and asked for tenant-a with its limits; the stand-in answered
        assert [(name, limits, values) for name, limits, values, _ in hosted.calls] == [("tenant-a", Limits(cpu_ms=40), {})]
        assert 0 < hosted.calls[0][3] <= ENGINE_DEFAULTS.wall_ms
        assert (response.status, response.text, response.header("x-dispatched-by")) == (201, "stand-in for tenant-a", "dispatcher")
        assert response.trace["scriptName"] == "tenant-a"
        assert response.dispatcher_trace is not None and response.dispatcher_trace["scriptName"] == "dispatcher"
        # the host published the dispatch Worker's item through its recorder; the stand-in's is the caller's to publish
        assert [item["scriptName"] for item in published.drain()] == ["dispatcher"]


@pytest.mark.parametrize("name", [5, None, ["hello"], "Not_A_Label"])
async def test_a_dispatch_call_that_names_no_worker_properly_is_refused(hosted: Hosted, name: object) -> None:
    hosted.config.refresh()
    namespace = hosted.config.namespace("default")
    dispatcher = hosted.config.worker("default", "dispatcher")
    assert dispatcher is not None
    invocation = Invocation(namespace, dispatcher, "dispatcher", hosted.config.limits(namespace, dispatcher),
                            Request("http://x.example.com/"))
    answer = await hosted.host._serve_call(invocation, Frame({"type": "dispatch", "id": 7, "name": name}), 5.0)
    meta_length, body_length = struct.unpack("<II", answer[:8])  # the frame header (docs/worker-protocol.md)
    meta = json.loads(answer[8:8 + meta_length])
    assert (meta["type"], meta["id"], meta["name"]) == ("dispatch_error", 7, "InvalidRequest"), meta
    assert body_length == 0 and len(answer) == 8 + meta_length
    assert hosted.calls == []  # nothing ran: a non-string name such as 5 never reaches a Worker named "5"

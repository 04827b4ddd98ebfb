"""A namespace's platform Workers (its dispatch Worker, Outbound Worker and Tail Workers) are never
reached as tenants: not by host label, not by path segment, not as a Python dispatch function's
target, not through a dispatch Worker's `dispatch()`. Each answers as a Worker that does not
exist (404 `Worker not found`, outcome scriptNotFound), and the platform Worker never runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from wasmdeck.engine import DispatchTarget, Engine, Request
from wasmdeck.engine.traces import TraceFilter

from .conftest import fixture_module, protocol_module

ROLES = ("gateway", "audit")  # the Outbound Worker and a Tail Worker


def _platform(engine: Engine, origin, *, namespace: str = "default") -> None:
    """hello (a tenant), gateway (Outbound Worker adding a credential), audit (Tail Worker)."""
    engine.deploy("hello", fixture_module("hello"), namespace=namespace)
    engine.deploy("shop", protocol_module("fetcher"), namespace=namespace)
    engine.deploy("gateway", protocol_module("outbound-credential"), namespace=namespace, vars={"API_TOKEN": "operator-secret"})
    engine.deploy("audit", protocol_module("tail-collector"), namespace=namespace)
    engine.set_egress(allow=[origin.netloc], namespace=namespace)
    engine.set_outbound("gateway", ["customer_name"], namespace=namespace)
    engine.add_tail_consumer("audit", namespace=namespace)


async def _items(engine: Engine, worker: str) -> list[dict]:
    await engine.flush_tail_deliveries()
    await engine.flush_traces()
    return engine.recent_traces(100, TraceFilter(worker=worker))


def _assert_not_found(response, name: str, namespace: str = "default") -> None:
    assert response.status == 404, response.text
    assert response.text == f"Worker not found: no worker named {name!r} in namespace {namespace!r}\n"
    assert response.trace["outcome"] == "scriptNotFound" and response.trace["scriptName"] == name
    (note,) = response.trace["exceptions"]
    assert note["name"] == "PlatformWorker" and "platform Workers are never routed to as tenants" in note["message"]


async def test_host_routing_never_reaches_the_outbound_or_a_tail_worker(engine: Engine, origin) -> None:
    _platform(engine, origin)
    # the attack: the credential-adding Outbound Worker, run as a tenant, would forward the
    # caller's own URL with the operator's credential
    stolen = await engine.dispatch(Request(url=origin.url("/steal"), headers=[("Host", "gateway.example.com")]))
    _assert_not_found(stolen, "gateway")
    assert "Outbound Worker" in stolen.trace["exceptions"][0]["message"]
    _assert_not_found(await engine.request("http://audit.example.com/"), "audit")
    assert "Tail Worker" in (await engine.request("http://audit.example.com/")).trace["exceptions"][0]["message"]
    assert origin.seen == []
    # an unknown Worker answers the same way, without the operator's note
    unknown = await engine.request("http://ghost.example.com/")
    assert (unknown.status, unknown.trace["outcome"], unknown.trace["exceptions"]) == (404, "scriptNotFound", [])
    # the roles still do their work: the tenant's fetch goes through gateway, audit gets items
    fetched = await engine.request(f"http://shop.example.com/?url={origin.url('/prices')}")
    assert fetched.status == 200 and fetched.trace["subrequests"][0]["via"] == "outbound"
    assert origin.seen[-1].headers.get("authorization") == "Bearer operator-secret"
    delivered = [log["message"][0] for item in await _items(engine, "audit") for log in item["logs"]]
    assert "tail shop ok 200" in delivered
    # the platform Workers ran only in their roles: gateway for the tenant's fetch, audit on tail events
    gateway_runs = [i for i in await _items(engine, "gateway") if i["outcome"] != "scriptNotFound"]
    assert [i["event"]["request"]["url"] for i in gateway_runs] == [origin.url("/prices")]
    audit_runs = [i for i in await _items(engine, "audit") if i["outcome"] != "scriptNotFound"]
    assert audit_runs and all("consumedEvents" in i["event"] for i in audit_runs)


async def test_path_routing_never_reaches_a_platform_worker(engine: Engine, origin) -> None:
    engine.create_namespace("paths", routing="path")
    _platform(engine, origin, namespace="paths")
    assert (await engine.request("http://platform.example.com/hello/x", namespace="paths")).status == 200
    for name in ROLES:
        _assert_not_found(await engine.request(f"http://platform.example.com/{name}/x?url={origin.url('/')}", namespace="paths"),
                          name, "paths")
    assert origin.seen == []


async def test_a_dispatch_functions_target_is_never_a_platform_worker(db_path: Path, wasmer_cache: Path, origin) -> None:
    async def dispatcher(request: Request, namespace) -> str | DispatchTarget:
        name = request.host.split(".")[0]
        return DispatchTarget(name) if name == "audit" else name

    async with Engine(db_path, cache_dir=wasmer_cache, dispatch_function=dispatcher) as engine:
        _platform(engine, origin)
        engine.deploy("front", protocol_module("dispatcher"))
        engine.set_dispatch_worker("front")  # configured, though the Python function routes: still a platform Worker
        assert (await engine.request("http://hello.example.com/")).status == 200
        for name in (*ROLES, "front"):
            _assert_not_found(await engine.request(f"http://{name}.example.com/"), name)
        assert origin.seen == []


async def test_a_dispatch_workers_dispatch_never_reaches_a_platform_worker(engine: Engine, origin) -> None:
    _platform(engine, origin)
    engine.deploy("front", protocol_module("dispatcher"))
    engine.set_dispatch_worker("front")
    assert (await engine.request("http://hello.example.com/")).status == 200
    for name in (*ROLES, "front"):
        response = await engine.request(f"http://{name}.example.com/")
        # the dispatch Worker learns scriptNotFound and answers its own way, as for any missing tenant
        assert (response.status, response.text) == (404, f"no such tenant: {name}")
        assert response.trace["outcome"] == "scriptNotFound" and response.trace["scriptName"] == name
        assert response.trace["exceptions"][0]["name"] == "PlatformWorker"
        assert response.dispatcher_trace is not None and response.dispatcher_trace["outcome"] == "ok"
    assert origin.seen == []


async def test_a_worker_that_loses_its_role_is_an_ordinary_worker_again(engine: Engine, origin) -> None:
    _platform(engine, origin)
    assert (await engine.request("http://gateway.example.com/")).status == 404
    engine.set_outbound(None)
    engine.remove_tail_consumer("audit")
    ran = await engine.request("http://audit.example.com/")
    assert (ran.status, ran.text, ran.trace["outcome"]) == (200, "tail collector", "ok")
    got = await engine.request("http://gateway.example.com/")
    assert got.trace["outcome"] == "ok" and got.trace["exceptions"] == []
    engine.add_tail_consumer("audit", worker="hello")  # a role again, in whichever scope
    assert (await engine.request("http://audit.example.com/")).status == 404


@pytest.mark.parametrize("scope", [{"worker": "hello"}, {"dispatcher": True}, {}])
async def test_every_tail_consumer_scope_makes_a_platform_worker(engine: Engine, origin, scope: dict) -> None:
    engine.deploy("hello", fixture_module("hello"))
    engine.deploy("audit", protocol_module("tail-collector"))
    assert (await engine.request("http://audit.example.com/")).status == 200
    engine.add_tail_consumer("audit", **scope)
    _assert_not_found(await engine.request("http://audit.example.com/"), "audit")

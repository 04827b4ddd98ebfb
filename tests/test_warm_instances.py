"""Warm instances (docs/worker-protocol.md, section 9): a version 2 Worker's instance serves
request after request, as a Cloudflare isolate does. Real modules in real sandboxes: the
committed fixtures/protocol builds, chiefly proto-warm (a global counter, and every way of
misbehaving between or during invocations) and proto-hello."""

from __future__ import annotations

import asyncio
import resource
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from wasmdeck.engine import DispatchTarget, Engine, InstanceSettings, Request, TraceFilter
from wasmdeck.engine.traces import format_pretty

from .conftest import fixture_module, protocol_module

WARM = protocol_module("proto-warm")


def make_engine(db_path: Path, cache: Path, **settings) -> Engine:
    return Engine(db_path, cache_dir=cache, instances=InstanceSettings(**settings) if settings else None)


@pytest.fixture
def warm(engine: Engine):
    """Deploy proto-warm as `warm` (tag `t`: limits set per test) and return a requester."""
    engine.deploy("warm", WARM, tags=["t"])

    async def request(query: str = "", name: str = "warm", **options):
        return await engine.request(f"http://{name}.example.com/?{query}", **options)

    return request


def instance_of(response) -> tuple[str, bool, int]:
    trace = response.trace
    return trace["instanceId"], trace["newInstance"], trace["instanceInvocation"]


def counter(response) -> int:
    return int(response.text.split()[1])  # "count N invocation I ..."


async def stats_when(engine: Engine, worker: str, check, timeout: float = 5.0, namespace: str = "default") -> dict:
    """The worker's instance stats once `check(stats)` holds (retirement happens in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = engine.instance_stats(namespace).get(worker, {})
        if stats and check(stats) or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.02)


# -- reuse ---------------------------------------------------------------------------------


async def test_a_global_counter_grows_across_requests_on_one_instance(engine, warm):
    first = await warm()
    responses = [first] + [await warm() for _ in range(4)]
    assert [counter(r) for r in responses] == [1, 2, 3, 4, 5]
    ids = {instance_of(r)[0] for r in responses}
    assert len(ids) == 1
    assert [instance_of(r)[1:] for r in responses] == [(True, 1), (False, 2), (False, 3), (False, 4), (False, 5)]
    assert all(r.trace["outcome"] == "ok" and "instanceRetired" not in r.trace for r in responses)
    stats = engine.instance_stats()["warm"]
    assert stats == {"busy": 0, "idle": 1, "starting": 0, "started": 1, "invocations": 5,
                     "reusedInvocations": 4, "retired": {}}


async def test_version_1_guests_start_a_process_for_every_invocation(engine):
    engine.deploy("v1", protocol_module("proto-misbehave"))
    responses = [await engine.request("http://v1.example.com/?mode=nosuchmode") for _ in range(3)]
    assert [(r.trace["newInstance"], r.trace["instanceInvocation"]) for r in responses] == [(True, 1)] * 3
    assert len({r.trace["instanceId"] for r in responses}) == 3
    assert "v1" not in engine.instance_stats()  # no warm instance was ever involved


async def test_wcgi_items_have_no_instance_fields(engine):
    engine.deploy("hello", fixture_module("hello"))
    response = await engine.request("http://hello.example.com/")
    assert "newInstance" not in response.trace and "instanceId" not in response.trace


async def test_two_workers_never_share_an_instance_even_with_one_module(engine):
    engine.deploy("alpha", WARM)
    engine.deploy("beta", WARM)
    engine.create_namespace("other")
    engine.deploy("alpha", WARM, namespace="other")
    seen: dict[str, set[str]] = {"alpha": set(), "beta": set(), "other/alpha": set()}
    counts: dict[str, list[int]] = {key: [] for key in seen}
    for _ in range(3):
        for key, url, ns in (("alpha", "alpha", "default"), ("beta", "beta", "default"), ("other/alpha", "alpha", "other")):
            response = await engine.request(f"http://{url}.example.com/", namespace=ns)
            seen[key].add(response.trace["instanceId"])
            counts[key].append(counter(response))
    assert all(values == [1, 2, 3] for values in counts.values()), counts  # each counts only its own requests
    assert len(set.union(*seen.values())) == 3 and all(len(ids) == 1 for ids in seen.values())


async def test_the_workers_vars_are_its_instances_environment(engine):
    engine.deploy("warm", WARM, vars={"customer_name": "from-vars"})
    response = await engine.request("http://warm.example.com/?env=customer_name")
    assert response.text.endswith("env from-vars\n")


# -- retirement --------------------------------------------------------------------------


async def test_an_instance_retires_after_its_maximum_of_invocations(db_path, wasmer_cache):
    async with make_engine(db_path, wasmer_cache, max_invocations=3) as engine:
        engine.deploy("warm", WARM)
        responses = [await engine.request("http://warm.example.com/") for _ in range(7)]
        assert [counter(r) for r in responses] == [1, 2, 3, 1, 2, 3, 1]
        assert [r.trace["newInstance"] for r in responses] == [True, False, False, True, False, False, True]
        assert "after 3 invocations: it reached the limit of invocations per instance" in responses[2].trace["instanceRetired"]
        assert all(r.status == 200 for r in responses)
        stats = await stats_when(engine, "warm", lambda s: s["retired"].get("maxInvocations") == 2)
        assert stats["retired"] == {"maxInvocations": 2} and stats["started"] == 3


async def test_an_idle_instance_stops_after_the_idle_timeout(db_path, wasmer_cache):
    async with make_engine(db_path, wasmer_cache, idle_timeout_s=0.3) as engine:
        engine.deploy("warm", WARM)
        first = await engine.request("http://warm.example.com/")
        assert engine.instance_stats()["warm"]["idle"] == 1
        stats = await stats_when(engine, "warm", lambda s: s["idle"] == 0, timeout=5)
        assert stats["retired"] == {"idle": 1} and stats["idle"] == 0
        again = await engine.request("http://warm.example.com/")
        assert again.trace["newInstance"] is True and again.trace["instanceId"] != first.trace["instanceId"]
        assert counter(again) == 1


async def test_the_guest_can_retire_its_instance(engine, warm):
    await warm()
    retiring = await warm("mode=retire")
    assert retiring.status == 200 and 'it asked to retire ("retire": true)' in retiring.trace["instanceRetired"]
    after = await warm()
    assert after.trace["newInstance"] is True and counter(after) == 1
    stats = await stats_when(engine, "warm", lambda s: "retired" in s["retired"])
    assert stats["retired"] == {"retired": 1}


@pytest.mark.parametrize("change", ["deploy", "rollback", "tags", "vars", "memory", "delete"])
async def test_an_instance_is_retired_when_its_version_stops_being_current(engine, warm, change):
    first = await warm()
    if change == "deploy":
        engine.deploy("warm", WARM, tags=["t"], message="same module, new version")
    elif change == "rollback":
        engine.rollback("warm", 1)
    elif change == "tags":
        engine.set_tags("warm", ["t", "u"])
    elif change == "vars":
        engine.set_vars("warm", {"X": "1"})
    elif change == "memory":
        engine.set_limits("t", memory_mb=64)
    else:
        engine.delete("warm")
    stats = await stats_when(engine, "warm", lambda s: s["idle"] == 0)
    assert stats["retired"] == {"outdated": 1}, stats
    after = await warm()
    if change == "delete":
        assert after.status == 404
    else:
        assert after.trace["newInstance"] is True and after.trace["instanceId"] != first.trace["instanceId"]


async def test_a_change_by_another_process_retires_the_instance_too(db_path, wasmer_cache):
    async with Engine(db_path, cache_dir=wasmer_cache) as engine:
        engine.deploy("warm", WARM)
        await engine.request("http://warm.example.com/")
        async with Engine(db_path, cache_dir=wasmer_cache) as other:  # another process would do the same
            other.set_vars("warm", {"GREETING": "changed elsewhere"})
        # no request comes in: the engine notices on its own (PRAGMA data_version, once a second)
        stats = await stats_when(engine, "warm", lambda s: s["idle"] == 0, timeout=5)
        assert stats["retired"] == {"outdated": 1}


async def test_a_spinning_invocation_ends_exceeded_cpu_and_the_next_request_gets_a_fresh_instance(engine, warm):
    engine.set_limits("t", cpu_ms=100)
    await warm()
    began = time.perf_counter()
    spun = await warm("mode=spin")
    assert spun.status == 503 and spun.trace["outcome"] == "exceededCpu"
    assert time.perf_counter() - began < 5
    assert "its invocation exceeded the CPU time limit" in spun.trace["instanceRetired"]
    after = await warm()
    assert after.status == 200 and after.trace["newInstance"] is True and counter(after) == 1


async def test_memory_leaked_across_invocations_reaches_the_cap_then_a_fresh_instance_serves(engine, warm):
    engine.set_limits("t", memory_mb=16)
    outcomes = []
    for _ in range(8):
        response = await warm("mode=leak&mb=3")
        outcomes.append(response.trace["outcome"])
        if response.trace["outcome"] != "ok":
            break
    # the leak lives on between invocations, so the cap is reached after a few of them
    assert outcomes[-1] == "exceededMemory" and outcomes[:-1] == ["ok"] * (len(outcomes) - 1) and len(outcomes) > 2
    assert response.status == 503 and "16 MiB" in response.trace["exceptions"][-1]["message"]
    assert "it ran out of memory under its cap" in response.trace["instanceRetired"]
    fresh = await warm("mode=leak&mb=3")
    assert fresh.status == 200 and fresh.trace["newInstance"] is True and "leaked 3 MiB" in fresh.text


async def test_a_trap_on_the_nth_invocation_retires_the_instance(engine, warm):
    responses = [await warm("mode=trap-at&n=3") for _ in range(4)]
    assert [r.status for r in responses] == [200, 200, 500, 200]
    assert responses[2].trace["exceptions"][0]["name"] == "WasmTrap"
    assert responses[2].trace["instanceRetired"].endswith("after 3 invocations: it trapped")
    assert responses[3].trace["newInstance"] is True


async def test_a_call_never_answered_in_time_ends_exceeded_wall_time(engine, warm):
    engine.set_limits("t", wall_ms=300)
    response = await warm("mode=sleep&ms=2000&n=1")
    assert response.trace["outcome"] == "exceededWallTime"
    assert "its invocation exceeded the wall-time limit" in response.trace["instanceRetired"]
    assert (await warm()).trace["newInstance"] is True


async def test_a_full_engine_stops_the_idle_instance_used_longest_ago(db_path, wasmer_cache):
    async with make_engine(db_path, wasmer_cache, max_instances=2) as engine:
        for name in ("a", "b", "c"):
            engine.deploy(name, WARM)
        for name in ("a", "b", "c"):
            await engine.request(f"http://{name}.example.com/")
        stats = await stats_when(engine, "a", lambda s: s["retired"])
        assert stats["retired"] == {"evicted": 1}
        assert engine.instance_totals()["idle"] == 2
        assert (await engine.request("http://b.example.com/")).trace["newInstance"] is False


async def test_the_memory_budget_bounds_the_instances_alive(db_path, wasmer_cache):
    async with make_engine(db_path, wasmer_cache, memory_budget_mb=100) as engine:
        engine.set_limits("big", memory_mb=64)
        engine.deploy("a", WARM, tags=["big"])
        engine.deploy("b", WARM, tags=["big"])
        await engine.request("http://a.example.com/")
        await engine.request("http://b.example.com/")  # 64 + 64 > 100: a's idle instance makes room
        totals = engine.instance_totals()
        assert totals["memoryMb"] == 64 and totals["idle"] == 1 and totals["retired"] == {"evicted": 1}


# -- a guest that misbehaves ---------------------------------------------------------------


async def items_of(engine: Engine, worker: str) -> list[dict]:
    await engine.flush_traces()
    return engine.recent_traces(200, TraceFilter(worker=worker))


async def test_output_between_invocations_retires_the_instance_with_a_reason(engine, warm):
    answered = await warm("mode=between&delay=100")
    assert answered.status == 200
    stats = await stats_when(engine, "warm", lambda s: s["retired"])
    assert stats["retired"] == {"outputBetweenInvocations": 1}
    instance_items = [item for item in await items_of(engine, "warm") if "instance" in item["event"]]
    assert len(instance_items) == 1
    item = instance_items[0]
    assert item["outcome"] == "exception" and item["instanceId"] == answered.trace["instanceId"]
    assert item["exceptions"][0]["name"] == "InstanceRetired"
    assert item["exceptions"][0]["message"] == (
        f"instance {answered.trace['instanceId']} was retired after 1 invocation: it wrote output while no "
        "invocation was in flight (a 'log' frame after its final frame)"
    )
    assert f"Instance {answered.trace['instanceId']} of warm retired (outputBetweenInvocations)" in format_pretty(item)
    after = await warm()
    assert after.status == 200 and after.trace["newInstance"] is True
    # the instance's item is no invocation: the worker's request counts and last outcome leave it out
    await engine.flush_traces()
    stats_row = engine.worker_stats()["warm"]
    assert stats_row["requests"] == 2 and stats_row["errors"] == 0 and stats_row["lastOutcome"] == "ok"


async def test_answering_twice_is_a_protocol_error_of_that_invocation_or_of_the_instance(engine, warm):
    twice = await warm("mode=twice")
    stats = await stats_when(engine, "warm", lambda s: s["retired"])
    if twice.trace["outcome"] == "exception":  # the second answer arrived with the first
        assert twice.status == 502 and "sent a 'response' frame after its final frame" in twice.trace["exceptions"][0]["message"]
        assert stats["retired"] == {"protocolError": 1}
    else:  # it arrived once the instance was idle
        assert stats["retired"] == {"outputBetweenInvocations": 1}
    assert (await warm()).trace["newInstance"] is True


async def test_an_exit_without_retire_retires_the_instance_and_no_request_fails(engine, warm):
    answered = await warm("mode=exit")
    assert answered.status == 200 and answered.text == "answered; exiting without retire\n"
    after = [await warm() for _ in range(3)]
    assert all(r.status == 200 for r in after)
    assert after[0].trace["newInstance"] is True and counter(after[0]) == 1
    stats = await stats_when(engine, "warm", lambda s: s["retired"])
    assert stats["retired"] == {"exited": 1}
    reason = answered.trace.get("instanceRetired") or next(
        item["exceptions"][0]["message"] for item in await items_of(engine, "warm") if "instance" in item["event"]
    )
    assert 'it exited without saying it would ("retire": true)' in reason


async def test_an_instance_that_never_reads_the_next_event_fails_only_that_event(engine, warm):
    engine.set_limits("t", cpu_ms=100)
    assert (await warm("mode=noread")).status == 200
    stuck = await warm()
    assert stuck.trace["outcome"] == "exceededCpu"
    assert "wrote nothing after this event" in stuck.trace["exceptions"][0]["message"]
    assert (await warm()).trace["newInstance"] is True


@pytest.mark.parametrize("mode, reason", [
    ("ready", "protocolError"), ("twice", None), ("trap-at&n=1", "trap"), ("spin", "exceededCpu"),
    ("between&delay=20", "outputBetweenInvocations"), ("exit", "exited"), ("leak&mb=100", "exceededMemory"),
])
async def test_no_other_request_or_worker_notices_a_misbehaving_instance(engine, warm, mode, reason):
    engine.set_limits("t", cpu_ms=200, memory_mb=32)
    engine.deploy("calm", WARM)
    engine.deploy("hello", protocol_module("proto-hello"))

    async def calm_traffic() -> list[int]:
        statuses = []
        for _ in range(15):
            statuses.append((await engine.request("http://calm.example.com/")).status)
            statuses.append((await engine.request("http://hello.example.com/")).status)
        return statuses

    calm = asyncio.ensure_future(calm_traffic())
    bad = [await warm(f"mode={mode}") for _ in range(3)]
    assert await calm == [200] * 30
    assert (await engine.request("http://calm.example.com/")).text.startswith("count 16 ")  # never restarted
    # a frame written "between" invocations while the next event is already in flight is that
    # invocation's (nothing tells them apart), so not every bad request retires an instance
    stats = await stats_when(engine, "warm", lambda s: s["retired"] and not s["busy"])
    retired = stats["retired"]
    if reason == "outputBetweenInvocations":
        # on a busy machine the next event can be in flight before the stray frame arrives: then it
        # is that invocation's protocol error
        assert retired and set(retired) <= {reason, "protocolError"}, retired
    elif reason is not None:
        assert set(retired) == {reason}, retired
    assert engine.instance_stats()["calm"]["retired"] == {} and engine.instance_stats()["hello"]["retired"] == {}
    for response in bad:
        sentence = response.trace.get("instanceRetired")
        if sentence is not None:
            assert sentence.startswith(f"instance {response.trace['instanceId']} was retired after ")
            assert "\n" not in sentence and len(sentence) < 300  # one sentence
    assert (await warm()).status == 200


async def test_an_exception_keeps_its_stack_and_does_not_retire_the_instance(engine, warm):
    thrown = await warm("mode=stack")
    assert thrown.status == 500 and thrown.trace["outcome"] == "exception"
    exception = thrown.trace["exceptions"][0]
    assert (exception["name"], exception["message"]) == ("TypeError", "cart is undefined")
    assert exception["stack"] == "TypeError: cart is undefined\n    at total (worker.js:3:7)"
    assert 'it asked to retire ("retire": true)' in thrown.trace["instanceRetired"]
    # an exception without "retire" is an answer like any other: the instance serves on
    engine.deploy("zig", protocol_module("sdk-probe-zig"))
    failed = await engine.request("http://zig.example.com/?case=error")
    after = await engine.request("http://zig.example.com/?case=instance")
    assert failed.trace["outcome"] == "exception" and "instanceRetired" not in failed.trace
    assert after.trace["instanceId"] == failed.trace["instanceId"] and after.text.startswith("invocation 2 served 2")


async def test_stderr_belongs_to_the_invocation_that_wrote_it(engine, warm):
    first = await warm("mode=stderr")
    second = await warm("mode=stderr")
    assert [log["message"] for log in first.trace["logs"]] == [["stderr of invocation 1"]]
    assert [log["message"] for log in second.trace["logs"]] == [["stderr of invocation 2"]]


@pytest.mark.parametrize("mode, name, message", [
    ("throw", "ConfigError", "the config does not parse"),
    ("exit", "InstanceStartFailed", "the instance exited with status 3 before answering init with ready"),
    ("garbage", "ProtocolError", "the Worker wrote text to stdout instead of protocol frames"),
])
async def test_an_instance_that_does_not_become_ready_fails_the_invocation_waiting_for_it(engine, mode, name, message):
    engine.deploy("broken", WARM, vars={"INIT_MODE": mode})
    response = await engine.request("http://broken.example.com/")
    assert response.status in (500, 502) and response.trace["outcome"] == "exception"
    exception = response.trace["exceptions"][0]
    assert exception["name"] == name and message in exception["message"]
    assert response.trace["newInstance"] is True
    assert "it did not answer init with ready" in response.trace["instanceRetired"]
    stats = await stats_when(engine, "broken", lambda s: s["retired"])
    assert stats["retired"] == {"startFailed": 1} and stats["idle"] == 0


async def test_logs_written_before_ready_belong_to_the_first_invocation(engine):
    engine.deploy("chatty", WARM, vars={"INIT_MODE": "log"})
    first = await engine.request("http://chatty.example.com/")
    second = await engine.request("http://chatty.example.com/")
    assert [log["message"] for log in first.trace["logs"]] == [["starting up"]]
    assert second.trace["logs"] == [] and counter(second) == 2


async def test_a_slow_start_past_the_start_timeout_fails(db_path, wasmer_cache):
    async with make_engine(db_path, wasmer_cache, start_timeout_s=0.3) as engine:
        engine.deploy("slow", WARM, vars={"INIT_MODE": "slow", "INIT_SLEEP_MS": "5000"})
        response = await engine.request("http://slow.example.com/")
        assert "did not answer init with ready within 0.3 s" in response.trace["exceptions"][0]["message"]


# -- calls: overlapping, sleep, canceled ---------------------------------------------------


async def test_overlapping_calls_are_served_concurrently_and_answered_in_any_order(engine, warm, origin):
    engine.set_egress(allow=["127.0.0.1"])
    url = origin.url("/slow?ms=400")
    began = time.perf_counter()
    response = await warm(f"mode=overlap&n=4&url={quote(url, safe='')}")
    elapsed = time.perf_counter() - began
    assert response.text.startswith("answers 4 ok 4 failed 0 order ")
    assert elapsed < 1.4  # four 400 ms fetches at once, not one after the other
    assert len(response.trace["subrequests"]) == 4


async def test_sleep_calls_do_not_count_toward_cpu_time(engine, warm):
    engine.set_limits("t", cpu_ms=50)
    response = await warm("mode=sleep&ms=150&n=3")  # sleeps of 450, 300, 150 ms, all at once
    assert response.status == 200 and response.text == "answers 3 ok 3 failed 0 order 102 101 100\n"
    assert response.trace["cpuTime"] < 50 and response.trace["wallTime"] >= 400
    assert "subrequests" not in response.trace  # a sleep is no subrequest


async def test_the_call_over_64_in_flight_is_answered_too_many_calls(engine, warm):
    # sleeps of 21 ms to 1.4 s: the shortest outlasts the writing of all 65 calls, even on a busy machine
    response = await warm("mode=toomany&ms=1300")
    assert response.text.startswith("answers 65 ok 64 failed 1 order 164:TooManyCalls ")


async def test_an_invocation_may_sleep_at_most_10000_times(engine, warm):
    engine.set_limits("t", cpu_ms=30_000, wall_ms=60_000)  # 10,003 frame exchanges take seconds on a busy machine
    response = await warm("mode=calls&n=10003")  # sleeps of 0 ms, one after the other
    assert response.status == 200 and response.text == "10003 calls, 3 refused\n"


async def test_calls_in_flight_at_the_final_frame_are_canceled(engine, warm, origin):
    engine.set_egress(allow=["127.0.0.1"])
    url = origin.url("/slow?ms=3000")
    began = time.perf_counter()
    response = await warm(f"mode=abandon&url={quote(url, safe='')}")
    assert response.status == 200 and time.perf_counter() - began < 2.5
    after = await warm()  # the same instance serves on: no answer of the abandoned call reaches it
    assert after.status == 200 and after.trace["newInstance"] is False and counter(after) == 2


# -- pools under load, versions under load ----------------------------------------------------


async def test_the_pool_bound_holds_under_c64_load(db_path, wasmer_cache):
    async with make_engine(db_path, wasmer_cache, max_per_worker=4) as engine:
        engine.deploy("warm", WARM)
        most = 0
        stop = asyncio.Event()

        async def watch() -> None:
            nonlocal most
            while not stop.is_set():
                stats = engine.instance_stats().get("warm", {})
                most = max(most, stats.get("busy", 0) + stats.get("idle", 0) + stats.get("starting", 0))
                await asyncio.sleep(0.001)

        watcher = asyncio.ensure_future(watch())
        responses = await asyncio.gather(*[engine.request("http://warm.example.com/") for _ in range(64)])
        stop.set()
        await watcher
        assert [r.status for r in responses] == [200] * 64
        ids = {r.trace["instanceId"] for r in responses}
        assert len(ids) <= 4 and most <= 4
        assert engine.instance_stats()["warm"]["started"] <= 4


async def test_requests_wait_for_a_busy_pool_no_longer_than_their_wall_time(db_path, wasmer_cache):
    async with make_engine(db_path, wasmer_cache, max_per_worker=1) as engine:
        engine.deploy("warm", WARM, tags=["t"])
        engine.set_limits("t", wall_ms=400)
        sleeper = asyncio.ensure_future(engine.request("http://warm.example.com/?mode=sleep&ms=300&n=1"))
        await asyncio.sleep(0.05)
        waiting = await engine.request("http://warm.example.com/")
        assert (await sleeper).status == 200
        assert waiting.trace["outcome"] in ("ok", "loadShed")
        if waiting.trace["outcome"] == "loadShed":
            assert "instances of worker 'warm' were busy" in waiting.trace["exceptions"][0]["message"]


async def test_deploys_during_c16_traffic_never_serve_an_old_version_after_deploy_returned(engine):
    hello = protocol_module("proto-hello")
    engine.deploy("site", hello, vars={"GREETING": "version 0"})
    deployed = 0
    stop = False
    problems: list[str] = []
    bodies: set[str] = set()

    async def client() -> None:
        while not stop:
            floor = deployed  # requests started now must see at least this version
            response = await engine.request("http://site.example.com/")
            text = response.text.strip()
            bodies.add(text)
            if response.status != 200 or not text.startswith("version "):
                problems.append(f"{response.status} {text!r}")
                continue
            number = int(text.split()[1])
            if number < floor:
                problems.append(f"version {number} answered a request started after version {floor} was deployed")
            if response.trace["scriptVersion"] != number + 1:  # the body and the trace tell the same version
                problems.append(f"body says version {number}, trace says {response.trace['scriptVersion']}")

    clients = [asyncio.ensure_future(client()) for _ in range(16)]
    for n in range(1, 8):
        await asyncio.sleep(0.15)
        engine.deploy("site", hello, vars={"GREETING": f"version {n}"})
        deployed = n
    await asyncio.sleep(0.15)
    stop = True
    await asyncio.gather(*clients)
    assert problems == []
    assert {f"version {n}" for n in range(8)} <= bodies
    stats = await stats_when(engine, "site", lambda s: s["busy"] == 0 and s["retired"].get("outdated", 0) >= 7)
    assert stats["retired"].get("outdated", 0) >= 7 and set(stats["retired"]) == {"outdated"}


# -- platform roles on warm instances -------------------------------------------------------


async def test_the_outbound_hop_reuses_its_instance_with_per_invocation_parameters(db_path, wasmer_cache, origin):
    def route(request: Request, namespace) -> DispatchTarget:
        return DispatchTarget("fetcher", outbound={"customer_name": request.header("x-customer") or ""})

    async with Engine(db_path, cache_dir=wasmer_cache, dispatch_function=route) as engine:
        engine.deploy("fetcher", protocol_module("fetcher"))
        engine.deploy("gateway", protocol_module("outbound-logger"))
        engine.set_egress(allow=["127.0.0.1"])
        engine.set_outbound("gateway", ["customer_name"])
        url = f"http://x.example.com/?url={quote(origin.url('/echo'), safe='')}&count=2"
        for customer in ("acme", "globex", "acme"):
            response = await engine.request(url, headers={"x-customer": customer})
            assert response.status == 200 and response.text.startswith("1 200 0\n2 200 0\n")
        await engine.flush_traces()
        hops = engine.recent_traces(20, TraceFilter(worker="gateway"))
        assert len(hops) == 6
        assert len({item["instanceId"] for item in hops}) == 1
        assert [item["instanceInvocation"] for item in hops] == [1, 2, 3, 4, 5, 6]
        customers = [item["logs"][0]["message"][0].rsplit("customer=", 1)[1] for item in hops]
        assert customers == ["acme", "acme", "globex", "globex", "acme", "acme"]  # never a stale value
        user = engine.recent_traces(10, TraceFilter(worker="fetcher"))
        assert [item["instanceInvocation"] for item in user] == [1, 2, 3]


async def test_dispatch_and_tail_workers_run_on_warm_instances(engine, origin):
    engine.deploy("dispatcher", protocol_module("dispatcher"))
    engine.deploy("audit", protocol_module("tail-collector"))
    engine.deploy("warm", WARM)
    engine.set_dispatch_worker("dispatcher")
    engine.add_tail_consumer("audit", dispatcher=True)
    responses = [await engine.request("http://warm.example.com/") for _ in range(3)]
    assert [counter(r) for r in responses] == [1, 2, 3]
    assert [r.dispatcher_trace["instanceInvocation"] for r in responses] == [1, 2, 3]
    await engine.flush_tail_deliveries()
    await engine.flush_traces()
    tails = engine.recent_traces(20, TraceFilter(worker="audit"))
    assert tails and len({item["instanceId"] for item in tails}) == 1
    assert tails[-1]["instanceInvocation"] == len(tails)


async def test_an_instance_computing_between_invocations_is_stopped_at_its_idle_timeout(db_path, wasmer_cache):
    async with make_engine(db_path, wasmer_cache, idle_timeout_s=0.5) as engine:
        engine.deploy("warm", WARM)
        assert (await engine.request("http://warm.example.com/?mode=spin-after")).status == 200
        before = cpu_seconds()
        await asyncio.sleep(0.4)
        assert cpu_seconds() - before > 0.2  # it burns a core while it looks idle
        stats = await stats_when(engine, "warm", lambda s: s["retired"], timeout=10)
        assert stats["retired"] == {"idle": 1}
        await asyncio.sleep(1.5)  # closing its stdin does nothing: it is killed after a grace
        before = cpu_seconds()
        await asyncio.sleep(1.0)
        assert cpu_seconds() - before < 0.3


# -- shutdown -------------------------------------------------------------------------------


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def test_closing_the_engine_stops_every_instance_and_no_guest_keeps_running(db_path, wasmer_cache):
    engine = Engine(db_path, cache_dir=wasmer_cache)
    engine.deploy("warm", WARM, tags=["t"])
    engine.set_limits("t", cpu_ms=60_000, wall_ms=60_000)
    for name in ("a", "b", "c"):
        engine.deploy(name, WARM)
        await engine.request(f"http://{name}.example.com/")
    spinning = asyncio.ensure_future(engine.request("http://warm.example.com/?mode=spin"))
    await asyncio.sleep(0.3)
    assert engine.instance_totals()["busy"] == 1 and engine.instance_totals()["idle"] == 3
    await engine.close()
    totals = engine.instance_totals()
    assert (totals["busy"], totals["idle"], totals["starting"]) == (0, 0, 0)
    assert totals["retired"].get("closed") == 4
    response = await spinning
    assert response.status >= 500
    before = cpu_seconds()
    await asyncio.sleep(1.0)
    assert cpu_seconds() - before < 0.3  # a spinning guest would burn a whole core


# -- statistics: Python API, health endpoint, admin API, remote client ------------------------


async def test_instance_stats_are_served_by_health_admin_api_and_both_clients(engine, warm):
    import httpx

    from wasmdeck.client import LocalClient
    from wasmdeck.client.remote import RemoteClient
    from wasmdeck.server import DispatchApp
    from wasmdeck.server.admin_app import create_admin_app

    from .test_remote_client import TOKEN, served

    engine.set_limits("t", cpu_ms=100)
    await warm()
    await warm()
    await warm("mode=spin")
    expected = {"busy": 0, "idle": 0, "starting": 0, "started": 1, "invocations": 3, "reusedInvocations": 2,
                "retired": {"exceededCpu": 1}}
    assert await stats_when(engine, "warm", lambda s: s["idle"] == 0) == expected
    totals = engine.instance_totals()
    assert totals["started"] == 1 and totals["retired"] == {"exceededCpu": 1}
    assert (totals["maxInstances"], totals["maxPerWorker"], totals["idleTimeoutS"], totals["maxInvocations"]) == (
        128, 16, 60.0, 10_000)

    health_app = DispatchApp(engine, access_log=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=health_app), base_url="http://any.host") as http:
        health = (await http.get("/__wasmdeck/health")).json()
    assert health["instances"]["workers"] == {"warm": expected}
    assert health["instances"]["retired"] == {"exceededCpu": 1} and health["instances"]["maxInstances"] == 128

    admin = create_admin_app(engine, TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=admin), base_url="http://admin", headers=auth) as http:
        assert (await http.get("/namespaces/default/instances")).json()["result"] == {"warm": expected}
        assert (await http.get("/instances")).json()["result"]["retired"] == {"exceededCpu": 1}
        missing = await http.get("/namespaces/nope/instances")
        assert missing.status_code == 404 and "nope" in missing.json()["errors"][0]["message"]

    assert await LocalClient(engine).instance_stats("default") == {"warm": expected}
    async with served(engine) as server:
        remote = RemoteClient(server.admin_url, TOKEN)
        try:
            assert await remote.instance_stats("default") == {"warm": expected}
        finally:
            await remote.close()


def test_sigterm_on_serve_lets_an_invocation_on_a_warm_instance_finish_then_stops(tmp_path, db_path):
    import signal
    import threading

    from .test_server import start_server

    setup = Engine(db_path)
    setup.deploy("warm", WARM)
    asyncio.run(setup.close())
    server = start_server(db_path, tmp_path)
    try:
        assert server.get("/", host="warm.example.com").text.startswith("count 1 ")
        answers = []
        slow = threading.Thread(target=lambda: answers.append(server.get("/?mode=sleep&ms=800&n=1", host="warm.example.com")))
        slow.start()
        time.sleep(0.3)  # the invocation is in flight on the warm instance
        server.process.send_signal(signal.SIGTERM)
        slow.join(20)
        assert [(r.status_code, r.text) for r in answers] == [(200, "answers 1 ok 1 failed 0 order 100\n")]
        assert server.process.wait(timeout=20) == 0
        assert "Traceback" not in server.stderr()
    finally:
        server.stop(signal.SIGKILL)


@pytest.mark.parametrize("settings, message", [
    ({"max_instances": 0}, "max_instances must be a whole number of at least 1, not 0"),
    ({"max_per_worker": 2.5}, "max_per_worker must be a whole number of at least 1, not 2.5"),
    ({"idle_timeout_s": -1}, "idle_timeout_s must be a positive number of seconds, not -1"),
    ({"start_timeout_s": float("inf")}, "start_timeout_s must be a positive number of seconds, not inf"),
    ({"max_invocations": True}, "max_invocations must be a whole number of at least 1, not True"),
])
def test_bad_instance_settings_are_refused_in_one_sentence(settings, message):
    from wasmdeck.engine import InvalidInput

    with pytest.raises(InvalidInput) as refused:
        InstanceSettings(**settings)
    assert str(refused.value) == message

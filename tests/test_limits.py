"""Per-tag limits: resolution, CPU, memory, wall time, and changes applying from the next request."""

from __future__ import annotations

import asyncio

import pytest

from wasmdeck.engine import ENGINE_DEFAULTS, Engine, InvalidInput, Limits
from wasmdeck.engine.limits import resolve


def test_strictest_tag_wins_per_field_then_namespace_then_engine() -> None:
    tag_limits = {
        "free": Limits(cpu_ms=50, memory_mb=64),
        "eu": Limits(cpu_ms=80, memory_mb=32),
        "beta": Limits(sub_requests=5),
    }
    effective = resolve(("free", "eu", "beta", "unknown"), tag_limits, Limits(wall_ms=2_000, sub_requests=9))
    assert (effective.cpu_ms, effective.memory_mb, effective.sub_requests, effective.wall_ms) == (50, 32, 5, 2_000)
    assert effective.sources == {
        "cpuMs": "tag:free",
        "memoryMb": "tag:eu",
        "subRequests": "tag:beta",
        "wallMs": "namespace",
    }
    bare = resolve((), tag_limits, Limits())
    assert bare.cpu_ms == ENGINE_DEFAULTS.cpu_ms and bare.sources["cpuMs"] == "engine"


def test_dispatch_limits_only_tighten() -> None:
    base = resolve(("free",), {"free": Limits(cpu_ms=50)}, Limits())
    tighter = base.tightened(Limits(cpu_ms=10, memory_mb=100_0))
    assert tighter.cpu_ms == 10 and tighter.sources["cpuMs"] == "dispatch"
    assert tighter.memory_mb == ENGINE_DEFAULTS.memory_mb  # 1000 > 128: ignored
    looser = base.tightened(Limits(cpu_ms=5_000))
    assert looser.cpu_ms == 50 and looser.sources["cpuMs"] == "tag:free"


@pytest.mark.parametrize(
    "values",
    [dict(cpu_ms=0), dict(cpu_ms=-1), dict(memory_mb=0), dict(memory_mb=10**6), dict(cpu_ms="10"), dict(wall_ms=True)],
)
def test_bad_limit_values_are_refused(values: dict) -> None:
    with pytest.raises(InvalidInput):
        Limits(**values)


def test_unknown_limit_key_is_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown limit"):
        Limits.from_dict({"cpu": 5})
    assert Limits.from_dict({"cpuMs": 5, "sub_requests": 2}) == Limits(cpu_ms=5, sub_requests=2)


async def test_set_limits_merge_and_clear(engine: Engine) -> None:
    engine.set_limits("free", cpu_ms=10, memory_mb=64)
    engine.set_limits("free", sub_requests=3)
    assert engine.limits()["free"] == Limits(cpu_ms=10, memory_mb=64, sub_requests=3)
    engine.set_limits("free", clear=("memory_mb",))
    assert engine.limits()["free"].memory_mb is None
    with pytest.raises(InvalidInput):
        engine.set_limits("bad,tag", cpu_ms=1)
    engine.delete_limits("free")
    assert "free" not in engine.limits()


async def test_cpu_limit_kills_guest_within_a_few_ms(engine: Engine, deploy) -> None:
    deploy("burn", tags=["free"])
    engine.set_limits("free", cpu_ms=60)
    response = await engine.request("http://burn.x/?forever=1")
    assert response.status == 503
    assert response.trace["outcome"] == "exceededCpu"
    assert response.json()["limit"] == "cpuMs" and response.json()["value"] == 60
    # the guest is stopped close to the limit, not after some long grace period
    assert 60 <= response.trace["cpuTime"] <= 60 + 60
    assert response.trace["exceptions"][0]["name"] == "ExceededCpu"


async def test_limit_change_applies_from_next_request(engine: Engine, deploy) -> None:
    deploy("burn", tags=["free"])
    engine.set_limits("free", cpu_ms=500)
    assert (await engine.request("http://burn.x/?ms=80")).status == 200
    engine.set_limits("free", cpu_ms=30)
    assert (await engine.request("http://burn.x/?ms=80")).trace["outcome"] == "exceededCpu"


async def test_limit_change_by_another_process_applies(engine: Engine, deploy, db_path, wasmer_cache) -> None:
    deploy("burn", tags=["free"])
    assert (await engine.request("http://burn.x/?ms=80")).status == 200
    other = Engine(db_path, cache_dir=wasmer_cache)  # its own connection, as another process would have
    other.set_limits("free", cpu_ms=20)
    await other.close()
    assert (await engine.request("http://burn.x/?ms=80")).trace["outcome"] == "exceededCpu"


async def test_namespace_defaults_apply_when_no_tag_sets_a_field(engine: Engine, deploy) -> None:
    deploy("burn")
    engine.update_namespace("default", defaults=Limits(cpu_ms=25))
    response = await engine.request("http://burn.x/?ms=200")
    assert response.trace["outcome"] == "exceededCpu"
    assert "namespace" in response.json()["detail"]
    assert engine.effective_limits("burn").sources["cpuMs"] == "namespace"


async def test_wall_time_limit(engine: Engine, deploy) -> None:
    deploy("burn", tags=["slow"])
    engine.set_limits("slow", cpu_ms=5_000, wall_ms=50)
    response = await engine.request("http://burn.x/?forever=1")
    assert response.status == 503
    assert response.trace["outcome"] == "exceededWallTime"
    assert response.json()["limit"] == "wallMs"


async def test_memory_cap_stops_a_hog(engine: Engine, deploy) -> None:
    deploy("hog", tags=["small"])
    engine.set_limits("small", memory_mb=16)
    capped = await engine.request("http://hog.x/?mb=64")
    assert capped.status == 503
    assert capped.trace["outcome"] == "exceededMemory"
    assert capped.json()["limit"] == "memoryMb"
    assert (await engine.request("http://hog.x/?mb=4")).status == 200
    engine.set_limits("small", memory_mb=256)
    assert (await engine.request("http://hog.x/?mb=64")).status == 200


async def test_memory_cap_below_module_start_size(engine: Engine, deploy) -> None:
    deploy("hello", tags=["tiny"])
    engine.set_limits("tiny", memory_mb=1)
    response = await engine.request("http://hello.x/")
    assert response.status == 503
    assert response.trace["outcome"] == "exceededMemory"
    assert "at start" in response.trace["exceptions"][0]["message"]


def test_effective_limits_report_sources(engine: Engine, deploy) -> None:
    deploy("hello", tags=["a", "b"])
    engine.set_limits("a", cpu_ms=300, memory_mb=64)
    engine.set_limits("b", cpu_ms=100)
    effective = engine.effective_limits("hello")
    assert effective.as_dict()["cpuMs"] == 100
    assert effective.as_dict()["sources"] == {"cpuMs": "tag:b", "memoryMb": "tag:a", "subRequests": "engine", "wallMs": "engine"}
    # the same camelCase keys in Python as in JSON, like every other name the API shows
    assert effective.sources == effective.as_dict()["sources"]


async def test_a_guest_over_its_cpu_limit_stops_burning(engine: Engine, deploy) -> None:
    """wasmer-sdk can only stop a guest at a WASI call; metering makes a pure loop make one."""
    import resource

    deploy("burn", tags=["free"])
    engine.set_limits("free", cpu_ms=50)

    def cpu_seconds() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    for _ in range(3):
        assert (await engine.request("http://burn.x/?forever=1")).trace["outcome"] == "exceededCpu"
    before = cpu_seconds()
    await asyncio.sleep(1.0)
    assert cpu_seconds() - before < 0.3, "a timed-out guest kept running"


def test_a_module_that_cannot_be_metered_is_refused(engine: Engine) -> None:
    from wasmdeck.engine import InvalidModule

    from .wasm_builder import functype, module, name, section, uleb, vec

    body = b"\x00" + b"\xfb\x00\x00\x0b"  # no locals; a GC instruction
    gc_module = module(
        section(1, vec([functype()])),
        section(3, vec([uleb(0)])),
        section(7, vec([name("_start") + b"\x00" + uleb(0)])),
        section(10, vec([uleb(len(body)) + body])),
    )
    with pytest.raises(InvalidModule, match="cannot meter"):
        engine.deploy("gc", gc_module)
    assert engine.workers() == []

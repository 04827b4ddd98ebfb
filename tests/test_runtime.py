"""The sandbox runtime: isolation, concurrency, load shedding, cleanup, and fd 2."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from wasmdeck.engine import Engine

from .conftest import ROOT, fixture_module


async def test_workers_never_see_each_others_files(engine: Engine) -> None:
    engine.deploy("alice", fixture_module("fsprobe"))
    engine.deploy("bob", fixture_module("fsprobe"))
    wrote = await engine.request("http://alice.x/?write=/workspace/secret.txt&value=alice-only")
    assert wrote.status == 200, wrote.text
    assert (await engine.request("http://alice.x/?read=/workspace/secret.txt")).text == "alice-only"
    peek = await engine.request("http://bob.x/?read=/workspace/secret.txt")
    assert peek.status == 404
    listing = await engine.request("http://bob.x/?list=/workspace")
    assert "secret.txt" not in listing.text


async def test_the_host_filesystem_is_invisible(engine: Engine) -> None:
    engine.deploy("probe", fixture_module("fsprobe"))
    for path in ("/etc/passwd", "/proc/self/status", str(ROOT / "pyproject.toml")):
        response = await engine.request(f"http://probe.x/?read={path}")
        assert response.status == 404, path


async def test_a_redeploy_gets_a_fresh_sandbox(engine: Engine) -> None:
    engine.deploy("probe", fixture_module("fsprobe"))
    await engine.request("http://probe.x/?write=/workspace/state&value=v1")
    engine.deploy("probe", fixture_module("fsprobe"), vars={"X": "2"})  # same module, new version
    # same sha256 and memory cap: the sandbox (and its workspace) is kept
    assert (await engine.request("http://probe.x/?read=/workspace/state")).text == "v1"
    engine.set_limits("big", memory_mb=64)
    engine.set_tags("probe", ["big"])
    # a different memory cap means a different compiled package, so a new sandbox
    assert (await engine.request("http://probe.x/?read=/workspace/state")).status == 404


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_concurrent_dispatch_without_errors_or_leaks(engine: Engine) -> None:
    engine.deploy("hello", fixture_module("hello"))
    engine.deploy("echo", fixture_module("echo"))
    gate = asyncio.Semaphore(16)

    async def one(i: int) -> tuple[int, str]:
        async with gate:
            name = "hello" if i % 2 else "echo"
            response = await engine.request(f"http://{name}.x/?i={i}", method="POST", body=f"body-{i}")
            return response.status, response.text

    # wasmer-sdk keeps a process-wide pool of about 200 runtime threads: the first burst fills it
    await asyncio.gather(*(one(i) for i in range(300)))
    threads_before, fds_before = _threads(), _fds()
    results = await asyncio.gather(*(one(i) for i in range(300)))
    assert [status for status, _ in results] == [200] * 300
    assert all(f"body-{i}" in text for i, (_, text) in enumerate(results) if i % 2 == 0)
    assert engine.runtime.running == 0 and engine.runtime.waiting == 0
    await engine.flush_traces()
    assert engine.store.trace_count() == 600
    # nothing grows per request
    assert _threads() <= threads_before + 8
    assert _fds() <= fds_before + 8


async def test_excess_load_is_shed_with_503(db_path, wasmer_cache) -> None:
    async with Engine(db_path, cache_dir=wasmer_cache, max_concurrency=2, max_queue=2) as engine:
        engine.deploy("burn", fixture_module("burn"))
        await engine.request("http://burn.x/?ms=1")
        results = await asyncio.gather(*(engine.request("http://burn.x/?ms=300") for _ in range(8)))
        outcomes = sorted(r.trace["outcome"] for r in results)
        assert outcomes.count("ok") == 4
        assert outcomes.count("loadShed") == 4
        shed = next(r for r in results if r.trace["outcome"] == "loadShed")
        assert shed.status == 503 and shed.json()["limit"] == "concurrency"
        assert engine.runtime.shed == 4
        # once the burst is over, everything is served again
        assert (await engine.request("http://burn.x/?ms=1")).status == 200


async def test_queue_wait_is_bounded_by_wall_time(db_path, wasmer_cache) -> None:
    async with Engine(db_path, cache_dir=wasmer_cache, max_concurrency=1, max_queue=10) as engine:
        engine.deploy("slow", fixture_module("burn"), tags=["patient"])
        engine.deploy("quick", fixture_module("hello"), tags=["impatient"])
        engine.set_limits("patient", cpu_ms=5_000, wall_ms=5_000)
        engine.set_limits("impatient", wall_ms=200)
        await engine.request("http://slow.x/?ms=1")
        await engine.request("http://quick.x/")
        slow = asyncio.ensure_future(engine.request("http://slow.x/?ms=1000"))
        await asyncio.sleep(0.1)
        quick = await engine.request("http://quick.x/")
        assert quick.status == 503 and quick.trace["outcome"] == "loadShed"
        assert 150 <= quick.trace["wallTime"] < 900
        assert (await slow).status == 200


async def test_close_releases_sandboxes(db_path, wasmer_cache) -> None:
    engine = Engine(db_path, cache_dir=wasmer_cache)
    for name in ("a", "b", "c"):
        engine.deploy(name, fixture_module("hello"))
        assert (await engine.request(f"http://{name}.x/")).status == 200
    assert engine.runtime.sandbox_count == 3
    engine.delete("b")
    assert engine.runtime.sandbox_count == 2
    await engine.close()
    assert engine.runtime.sandbox_count == 0
    with pytest.raises(Exception, match="closed"):
        await engine.request("http://a.x/")


async def test_guest_failures_do_not_disturb_other_workers(engine: Engine) -> None:
    engine.deploy("hello", fixture_module("hello"))
    engine.deploy("trap", fixture_module("trap"))
    engine.deploy("burn", fixture_module("burn"), tags=["fast"])
    engine.set_limits("fast", cpu_ms=30)
    results = await asyncio.gather(
        *[engine.request("http://trap.x/") for _ in range(5)],
        *[engine.request("http://burn.x/?forever=1") for _ in range(3)],
        *[engine.request("http://hello.x/") for _ in range(10)],
    )
    assert [r.status for r in results[8:]] == [200] * 10
    assert {r.trace["outcome"] for r in results[:5]} == {"exception"}
    assert {r.trace["outcome"] for r in results[5:8]} == {"exceededCpu"}


TRAP_IN_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, {root!r})
    from wasmdeck.engine import Engine
    async def main():
        async with Engine({db!r}) as engine:
            engine.deploy("trap", {module!r})
            response = await engine.request("http://trap.x/")
            print(response.trace["exceptions"][0]["message"].splitlines()[0])
            print("python stderr still works", file=sys.stderr)
    asyncio.run(main())
    """
)


def test_runtime_backtraces_never_reach_the_terminal(tmp_path) -> None:
    script = TRAP_IN_CHILD.format(root=str(ROOT), db=str(tmp_path / "w.db"), module=str(fixture_module("trap")))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "RuntimeError: unreachable" in result.stdout  # in the trace
    assert "unreachable" not in result.stderr and "explode_on_purpose" not in result.stderr
    assert "python stderr still works" in result.stderr


async def test_fd2_capture_is_released_on_close(db_path, wasmer_cache) -> None:
    from wasmdeck.engine.stderr_capture import RuntimeStderr

    before = os.fstat(2)
    async with Engine(db_path, cache_dir=wasmer_cache) as engine:
        engine.deploy("trap", fixture_module("trap"))
        await engine.request("http://trap.x/")
        assert RuntimeStderr.active()
        assert os.fstat(2).st_ino != before.st_ino
    assert not RuntimeStderr.active()
    assert os.fstat(2).st_ino == before.st_ino
    assert any("unreachable" in line for line in RuntimeStderr.lines)
    assert threading.active_count() >= 1

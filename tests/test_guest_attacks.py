"""Guests that misbehave on purpose, through the engine: each attack meets its limit or refusal,
judged by the host process's own CPU time and memory, not by the answer alone.

CPU is time.process_time() (every thread of this process, wasmer-sdk's included); memory is the
resident set from /proc/self/statm, sampled while the guest runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from wasmdeck.engine import Engine, InvalidModule
from wasmdeck.engine.metering import MAX_FUNCTION_BODY_BYTES
from wasmdeck.engine.wasm_module import MAX_TABLE_ELEMENTS, MAX_TABLES

from .conftest import fixture_module
from .wasm_builder import I32, ModuleBuilder, op, wat

IDLE_WINDOW_S = 0.5
IDLE_CPU_S = 0.05


def cpu() -> float:
    return time.process_time()


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


async def idle_cpu(seconds: float = IDLE_WINDOW_S) -> float:
    """CPU this process uses over a window in which it should do nothing."""
    before = cpu()
    await asyncio.sleep(seconds)
    return cpu() - before


async def peak_rss_while(awaitable) -> tuple[object, float]:
    """Run ``awaitable`` while sampling the resident set; return its result and the peak growth in MiB."""
    baseline = rss_mib()
    peak = baseline
    done = False

    async def sample() -> None:
        nonlocal peak
        while not done:
            peak = max(peak, rss_mib())
            await asyncio.sleep(0.005)

    sampler = asyncio.ensure_future(sample())
    try:
        result = await awaitable
    finally:
        done = True
        await sampler
    return result, peak - baseline


def bypass_module(iterations: int = 200, body_instructions: int = 4000) -> bytes:
    """The loop the old metering missed: fewer iterations than its per-activation tick, around a
    long straight-line body, in a function called over and over."""
    straight = "(local.set 1 (i64.add (i64.mul (local.get 1) (i64.const 6364136223846793005)) (i64.const 1)))\n" * (body_instructions // 6)
    return wat(f"""(module (memory (export "memory") 1)
      (func $short (local i32 i64)
        (loop {straight}
          (br_if 0 (i32.lt_u (local.tee 0 (i32.add (local.get 0) (i32.const 1))) (i32.const {iterations})))))
      (func (export "_start") (loop (call $short) (br 0))))""")


BULK_LOOP = wat("""(module (memory (export "memory") 1700)
  (func (export "_start") (loop
    (memory.fill (i32.const 0) (i32.const 1) (i32.const 104857600))
    (memory.copy (i32.const 1024) (i32.const 0) (i32.const 104857600))
    (br 0))))""")


@pytest.fixture
async def tight(engine: Engine) -> Engine:
    engine.set_limits("tight", cpu_ms=50)
    return engine


async def expect_stopped(engine: Engine, worker: str) -> None:
    response = await engine.request(f"http://{worker}.example/")
    assert response.status == 503 and response.trace["outcome"] == "exceededCpu", response.text
    await asyncio.sleep(0.2)  # the last stretch before a stop point
    assert await idle_cpu() < IDLE_CPU_S


async def test_the_bypass_loop_is_stopped_and_uses_no_cpu_afterwards(tight: Engine) -> None:
    tight.deploy("bypass", bypass_module(), tags=["tight"])
    await expect_stopped(tight, "bypass")
    await tight.close()
    assert await idle_cpu() < IDLE_CPU_S


async def test_a_bulk_memory_loop_is_stopped_and_uses_no_cpu_afterwards(tight: Engine) -> None:
    tight.deploy("bulk", BULK_LOOP, tags=["tight"])
    await expect_stopped(tight, "bulk")
    await tight.close()
    assert await idle_cpu() < IDLE_CPU_S


async def test_other_tenants_are_served_after_300_concurrent_attacks(engine: Engine) -> None:
    engine.set_limits("tight", cpu_ms=15)
    engine.deploy("bypass", bypass_module(), tags=["tight"])
    engine.deploy("bulk", BULK_LOOP, tags=["tight"])
    engine.deploy("hello", fixture_module("hello"))
    attacks = [engine.request(f"http://{'bypass' if i % 3 else 'bulk'}.example/") for i in range(300)]
    answers = await asyncio.wait_for(asyncio.gather(*attacks), 120)
    assert {(a.status, a.trace["outcome"]) for a in answers} <= {(503, "exceededCpu"), (503, "loadShed")}
    assert sum(a.trace["outcome"] == "exceededCpu" for a in answers) >= 200
    await asyncio.sleep(0.3)
    assert await idle_cpu() < IDLE_CPU_S
    served = await asyncio.wait_for(asyncio.gather(*(engine.request("http://hello.example/") for _ in range(20))), 30)
    assert all(r.status == 200 and r.text == "Hello from wasmdeck!\n" for r in served)


# --- tables ---------------------------------------------------------------------------------------

TABLE_GROWER = wat("""(module (memory (export "memory") 1)
  (table $t 0 funcref) (func $f) (elem declare func $f)
  (global $grown (mut i32) (i32.const 0))
  (func (export "_start") (local i32)
    (loop
      (if (i32.ne (table.grow $t (ref.func $f) (i32.const 100000)) (i32.const -1))
        (then (global.set $grown (i32.add (global.get $grown) (i32.const 1)))))
      (br_if 0 (i32.lt_u (local.tee 0 (i32.add (local.get 0) (i32.const 1))) (i32.const 400))))
    (if (i32.ne (global.get $grown) (i32.const 2)) (then unreachable))))""")


async def test_a_table_grow_loop_stays_within_the_table_cap(engine: Engine) -> None:
    # 400 grows of 100,000 initialised elements would hold 320 MiB; capped, two succeed and the rest fail
    engine.set_limits("small", memory_mb=8)
    engine.deploy("grower", TABLE_GROWER, tags=["small"])
    engine.deploy("hello", fixture_module("hello"))
    await engine.request("http://hello.example/")  # the runtime's first sandbox is not the guest's cost
    response, grew = await peak_rss_while(engine.request("http://grower.example/"))
    assert response.trace["outcome"] == "exception"  # the guest exits with an error after the loop (no output)
    assert "unreachable" not in str(response.trace["exceptions"])  # exactly two grows succeeded
    assert grew < 64, f"the resident set grew by {grew:.0f} MiB"


def test_modules_with_too_many_or_too_large_tables_are_refused(engine: Engine) -> None:
    many = wat(f"(module (memory (export \"memory\") 1) {'(table 1 funcref)' * (MAX_TABLES + 1)} (func (export \"_start\")))")
    with pytest.raises(InvalidModule, match=f"declares {MAX_TABLES + 1} tables, but a Worker may have at most {MAX_TABLES}"):
        engine.deploy("many", many)
    large = wat(f"(module (memory (export \"memory\") 1) (table {MAX_TABLE_ELEMENTS + 1} funcref) (func (export \"_start\")))")
    with pytest.raises(InvalidModule, match="table 0 needs 262,145 elements at start"):
        engine.deploy("large", large)
    assert engine.workers() == []


async def test_a_table_without_a_maximum_gets_the_cap(engine: Engine) -> None:
    data = wat(f"""(module
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1) (table $t 1 funcref)
      (func (export "_start")
        (if (i32.ne (table.grow $t (ref.null func) (i32.const {MAX_TABLE_ELEMENTS})) (i32.const -1)) (then unreachable))
        (if (i32.eq (table.grow $t (ref.null func) (i32.const {MAX_TABLE_ELEMENTS - 1})) (i32.const -1)) (then unreachable))
        (call $ok))
      (func $ok (call $exit (i32.const 0))))""")
    engine.deploy("capped", data)
    response = await engine.request("http://capped.example/")
    assert "unreachable" not in str(response.trace["exceptions"]), response.trace


# --- the start function -----------------------------------------------------------------------------

async def test_a_start_function_that_loops_is_stopped_at_its_cpu_limit(tight: Engine) -> None:
    # under bare wasmer-sdk it would spin for ever; it must not fail with "WASM context is invalid"
    tight.deploy("spinner", wat("""(module (memory (export "memory") 1)
      (func $spin (loop (br 0))) (start $spin) (func (export "_start")))"""), tags=["tight"])
    await expect_stopped(tight, "spinner")


async def test_a_start_function_runs_before_start(engine: Engine) -> None:
    data = wat("""(module
      (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 64) "Content-Type: text/plain\\r\\n\\r\\n")
      (global $n (mut i32) (i32.const 0))
      (func $init (local i32) (loop (global.set $n (i32.add (global.get $n) (i32.const 1)))
        (br_if 0 (i32.lt_u (local.tee 0 (i32.add (local.get 0) (i32.const 1))) (i32.const 1000)))))
      (start $init)
      (func (export "_start")
        (i32.store (i32.const 0) (i32.const 64)) (i32.store (i32.const 4) (i32.const 28))
        (i32.store8 (i32.const 92) (i32.add (i32.const 48) (i32.div_u (global.get $n) (i32.const 1000))))
        (i32.store (i32.const 8) (i32.const 92)) (i32.store (i32.const 12) (i32.const 1))
        (drop (call $w (i32.const 1) (i32.const 0) (i32.const 2) (i32.const 16)))))""")
    engine.deploy("starter", data)
    response = await engine.request("http://starter.example/")
    assert response.status == 200 and response.text == "1", (response.status, response.text, response.trace["exceptions"])


# --- large modules ------------------------------------------------------------------------------------

def loops_module(total_bytes: int, function_bytes: int) -> bytes:
    """Functions made of small loops, ``function_bytes`` each, ``total_bytes`` in all."""
    unit = op.loop(op.local_get(0) + op.i32_const(1) + op.i32_add + op.local_tee(0) + op.i32_const(10) + op.i32_lt_u + op.br_if(0))
    b = ModuleBuilder()
    b.memory(1)
    functions = [b.function(unit * (function_bytes // len(unit)), locals_=[(1, I32)]) for _ in range(total_bytes // function_bytes)]
    b.function(b"".join(op.call(f) for f in functions), export="_start")
    return b.build()


def test_a_21_mib_module_of_loops_is_refused_at_deploy_with_a_sentence(engine: Engine) -> None:
    data = loops_module(22_200_000, 7_400_000)  # three functions, each under wasmer's limit as deployed
    assert len(data) > 21 << 20
    with pytest.raises(InvalidModule) as refused:
        engine.deploy("loops", data)
    message = str(refused.value)
    assert "once metered" in message and f"{MAX_FUNCTION_BODY_BYTES:,}-byte limit" in message and "\n" not in message
    assert engine.workers() == []


def test_a_24_mib_single_function_is_refused_at_deploy_with_a_sentence(engine: Engine) -> None:
    b = ModuleBuilder()
    b.memory(1)
    b.function(op.nop * (24 << 20), export="_start")
    with pytest.raises(InvalidModule) as refused:
        engine.deploy("huge", b.build())
    assert "function 0 is 25,165,826 bytes" in str(refused.value) and "split the function" in str(refused.value)
    assert engine.workers() == []


def test_a_module_that_fails_to_compile_is_refused_at_deploy(engine: Engine) -> None:
    # valid in structure, invalid in its code (a type error): wasmer refuses it when it compiles
    b = ModuleBuilder()
    b.memory(1)
    b.function(op.i32_const(0), export="_start")  # a [] -> [] function that leaves an i32 on the stack
    with pytest.raises(InvalidModule, match="cannot run under Wasmer") as refused:
        engine.deploy("broken", b.build())
    assert "type mismatch" in str(refused.value)
    assert engine.workers() == []


async def test_a_big_deploy_in_a_thread_leaves_the_event_loop_serving(engine: Engine) -> None:
    engine.deploy("hello", fixture_module("hello"))
    big = loops_module(22_200_000, 7_400_000)
    lags: list[float] = []
    served: list[int] = []
    stop = False

    async def ticker() -> None:
        while not stop:
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - started - 0.01)

    async def client() -> None:
        while not stop:
            served.append((await engine.request("http://hello.example/")).status)

    tasks = [asyncio.ensure_future(ticker()), asyncio.ensure_future(client())]
    with pytest.raises(InvalidModule):
        await asyncio.to_thread(engine.deploy, "big", big)
    stop = True
    await asyncio.gather(*tasks)
    assert served and set(served) == {200}
    assert max(lags) < 0.25, f"the event loop stalled for {max(lags) * 1000:.0f} ms during the deploy"


async def test_a_restarted_engine_does_not_meter_again(db_path: Path, wasmer_cache: Path, monkeypatch) -> None:
    async with Engine(db_path, cache_dir=wasmer_cache) as first:
        first.deploy("hello", fixture_module("hello"))
        assert (await first.request("http://hello.example/")).status == 200

    import wasmdeck.engine.engine as engine_module
    import wasmdeck.engine.runtime as runtime_module

    def no_metering(_data: bytes) -> bytes:
        raise AssertionError("the module was metered again")

    monkeypatch.setattr(engine_module, "meter_isolated", no_metering)
    monkeypatch.setattr(runtime_module, "meter", no_metering)
    async with Engine(db_path, cache_dir=wasmer_cache) as second:
        response = await second.request("http://hello.example/")
        assert response.status == 200 and response.text == "Hello from wasmdeck!\n"


async def test_the_load_path_prepares_modules_off_the_event_loop(engine: Engine, monkeypatch) -> None:
    engine.deploy("hello", fixture_module("hello"))
    import wasmdeck.engine.runtime as runtime_module

    threads: list[str] = []
    prepare = runtime_module.prepare_to_run

    def watched(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return prepare(*args, **kwargs)

    monkeypatch.setattr(runtime_module, "prepare_to_run", watched)
    assert (await engine.request("http://hello.example/")).status == 200
    assert threads and threading.main_thread().name not in threads


# --- files -------------------------------------------------------------------------------------------

def file_bomb(path: str, append: bool) -> bytes:
    """Writes 256 MiB to ``path`` (relative to the root preopen) in 64 KiB chunks, ignoring errors,
    and answers how many chunks were written."""
    oflags, fdflags = (1, 1) if append else (9, 0)  # O_CREAT (| O_TRUNC); FDFLAGS_APPEND
    return wat(f"""(module
      (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 4)
      (data (i32.const 1024) "Content-Type: text/plain\\r\\n\\r\\n")
      (data (i32.const 2048) "{path}")
      (func (export "_start") (local $fd i32) (local $i i32) (local $ok i32)
        (if (call $open (i32.const 3) (i32.const 1) (i32.const 2048) (i32.const {len(path)}) (i32.const {oflags})
                        (i64.const -1) (i64.const -1) (i32.const {fdflags}) (i32.const 16))
          (then unreachable))
        (local.set $fd (i32.load (i32.const 16)))
        (i32.store (i32.const 32) (i32.const 65536)) (i32.store (i32.const 36) (i32.const 65536))
        (block (loop
          (br_if 1 (i32.ge_u (local.get $i) (i32.const 4096)))
          (if (i32.eqz (call $write (local.get $fd) (i32.const 32) (i32.const 1) (i32.const 40)))
            (then (local.set $ok (i32.add (local.get $ok) (i32.const 1)))))
          (local.set $i (i32.add (local.get $i) (i32.const 1))) (br 0)))
        (i32.store (i32.const 48) (i32.const 1024)) (i32.store (i32.const 52) (i32.const 28))
        (i32.store8 (i32.const 2100) (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $ok) (i32.const 1000)) (i32.const 10))))
        (i32.store8 (i32.const 2101) (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $ok) (i32.const 100)) (i32.const 10))))
        (i32.store8 (i32.const 2102) (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $ok) (i32.const 10)) (i32.const 10))))
        (i32.store8 (i32.const 2103) (i32.add (i32.const 48) (i32.rem_u (local.get $ok) (i32.const 10))))
        (i32.store (i32.const 56) (i32.const 2100)) (i32.store (i32.const 60) (i32.const 4))
        (drop (call $write (i32.const 1) (i32.const 48) (i32.const 2) (i32.const 40)))))""")


@pytest.mark.parametrize("path", ["workspace/big", "tmp/big"])
async def test_file_writes_are_capped_in_every_request(engine: Engine, path: str) -> None:
    from wasmdeck.engine.file_quota import FILE_WRITE_QUOTA

    engine.set_limits("small", memory_mb=8)
    engine.deploy("bomb", file_bomb(path, append=False), tags=["small"])
    engine.deploy("hello", fixture_module("hello"))
    await engine.request("http://hello.example/")
    response, grew = await peak_rss_while(engine.request("http://bomb.example/"))
    written = int(response.text) * 65536
    assert response.status == 200 and FILE_WRITE_QUOTA - 65536 - 4096 <= written <= FILE_WRITE_QUOTA, response.text
    assert grew < FILE_WRITE_QUOTA / 2**20 + 40, f"the resident set grew by {grew:.0f} MiB"


async def test_a_workspace_over_its_cap_is_replaced_and_released(engine: Engine) -> None:
    from wasmdeck.engine.file_quota import WORKSPACE_BYTES

    engine.set_limits("small", memory_mb=8)
    engine.deploy("bomb", file_bomb("workspace/log", append=True), tags=["small"])
    engine.deploy("hello", fixture_module("hello"))
    await engine.request("http://hello.example/")
    baseline = rss_mib()
    peak = 0.0
    for _ in range(6):  # 6 x 32 MiB appended to one file: more than the workspace may keep
        response, grew = await peak_rss_while(engine.request("http://bomb.example/"))
        assert response.status == 200
        peak = max(peak, rss_mib() - baseline + grew)
    assert engine.runtime.workspaces_replaced >= 2
    assert peak < WORKSPACE_BYTES / 2**20 + 100, f"the resident set grew by {peak:.0f} MiB"


async def test_a_deploy_in_a_thread_serves_from_the_next_request(engine: Engine) -> None:
    engine.deploy("hello", fixture_module("hello"))
    deploying = asyncio.ensure_future(asyncio.to_thread(engine.deploy, "echo", fixture_module("echo")))
    while not deploying.done():
        assert (await engine.request("http://hello.example/")).status == 200
    await deploying
    response = await engine.request("http://echo.example/?x=1")
    assert response.status == 200 and '"QUERY_STRING": "x=1"' in response.text


async def test_a_damaged_metered_module_is_made_again(db_path: Path, wasmer_cache: Path) -> None:
    from wasmdeck.engine.metering import SCHEME
    from wasmdeck.engine.store import METERED_TABLE

    async with Engine(db_path, cache_dir=wasmer_cache) as first:
        first.deploy("hello", fixture_module("hello"))
        first.store.db.execute(f"UPDATE {METERED_TABLE} SET bytes = X'0061736d01000000ff'")
    async with Engine(db_path, cache_dir=wasmer_cache) as second:
        response = await second.request("http://hello.example/")
        assert response.status == 200 and response.text == "Hello from wasmdeck!\n"
        assert second.store.metered_module(second.worker("hello").sha256, SCHEME) is not None


def test_a_module_that_cannot_instantiate_is_refused_and_one_without_memory_at_start_is_not(engine: Engine) -> None:
    # a data segment past the end of memory: instantiation fails, so the deploy does
    with pytest.raises(InvalidModule, match="cannot run under Wasmer.*out of bounds"):
        engine.deploy("oob", wat('(module (memory (export "memory") 1) (data (i32.const 70000) "x") (func (export "_start")))'))
    # no memory at start: the compile probe cannot answer, so the guest's own code runs briefly;
    # looping or trapping there is its business, not a reason to refuse it
    engine.deploy("spins", wat('(module (memory (export "memory") 0) (func (export "_start") (loop (br 0))))'))
    assert [w.name for w in engine.workers()] == ["spins"]

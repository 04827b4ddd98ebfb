"""Property-based tests of the metering (Hypothesis): generated modules, not hand-picked ones.

1. Meaning: programs that finish (nested counted loops, br_table mazes, blocks and ifs with
   branches out, multi-value blocks, loops with results, calls, indirect calls, bulk memory,
   exceptions caught across frames) print the same bytes metered as plain, and every metered
   module is valid WebAssembly.
2. Stopping: programs that never finish (short loops around long straight-line bodies called
   over and over, recursion and call cycles, indirect calls, bulk memory loops, br_table mazes
   with back edges) run under the engine with cpuMs = CPU_MS. Each is answered 503 exceededCpu,
   the process spends at most CPU_MS + CPU_MARGIN_S of CPU on it from the request to
   SETTLE_S after the answer, and none at all in the window after that, nor after Engine.close().
   CPU is the process's own (time.process_time: every thread, wasmer-sdk's included).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wasmdeck.engine import Engine
from wasmdeck.engine.metering import meter

from .wasm_builder import I32, I64, ModuleBuilder, op, validation_error
from .test_metering import run

CPU_MS = 40
CPU_MARGIN_S = 0.15  # request handling, package load and the last stretch before a stop point
SETTLE_S = 0.3  # after the answer: the guest must have stopped by then
IDLE_WINDOW_S = 0.3  # then: no CPU at all (below IDLE_CPU_S)
IDLE_CPU_S = 0.03
MIXES = ["mul", "xor", "rotl", "add"]


# --- a program generator ------------------------------------------------------------------------

@dataclass
class Program:
    """What the functions of a generated module share."""

    finite: bool  # True: every loop is counted and calls go to later functions only
    functions: int
    memory_pages: int
    structure: bool = False  # also what wasmer-sdk cannot run (tail calls, legacy exceptions): validated only
    builder: ModuleBuilder = field(default_factory=ModuleBuilder)
    tag: int = 0
    depth_global: int = 0
    pair_type: int = 0
    acc_type: int = 0
    first_function: int = 0


class Body:
    """Generates one function body: (param $acc i64) (result i64), counters as extra i32 locals."""

    def __init__(self, draw, program: Program, me: int):
        self.draw, self.p, self.me = draw, program, me
        self.locals = 0  # i32 counters after the parameter
        self.budget = 60  # statements left for this function

    def counter(self) -> int:
        self.locals += 1
        return self.locals  # local 0 is $acc

    def mix(self, rng: random.Random | None = None) -> bytes:
        """$acc = $acc <op> constant."""
        c = rng.randrange(1, 2**31) if rng else self.draw(st.integers(1, 2**31))
        kind = rng.choice(MIXES) if rng else self.draw(st.sampled_from(MIXES))
        code = {"mul": op.i64_const(c) + op.i64_mul, "add": op.i64_const(c) + op.i64_add,
                "xor": op.i64_const(c) + b"\x85", "rotl": op.i64_const(c % 63 + 1) + b"\x89"}[kind]
        return op.local_get(0) + code + op.local_set(0)

    def address(self, span: int) -> bytes:
        """An i32 address in memory, computed from $acc, leaving ``span`` bytes before the end."""
        limit = self.p.memory_pages * 65536 - span
        mask = (1 << (limit.bit_length() - 1)) - 1
        return op.local_get(0) + op.i32_wrap_i64 + op.i32_const(mask) + op.i32_and

    def straight(self, long: bool) -> bytes:
        """Straight-line arithmetic, loads and stores; a long stretch is drawn from one seed."""
        n = self.draw(st.integers(200, 3000) if long else st.integers(1, 12))
        rng = random.Random(self.draw(st.integers(0, 2**32))) if long else None
        parts = []
        for i in range(n):
            if (i * 7 + n) % 5 == 3:  # a store and a load
                parts.append(self.address(8) + op.local_get(0) + op.i64_store())
                parts.append(op.local_get(0) + self.address(8) + b"\x29\x03\x00" + op.i64_add + op.local_set(0))
            else:
                parts.append(self.mix(rng))
        return b"".join(parts)

    def bit(self, shift: int) -> bytes:
        """An i32 condition from one bit of $acc."""
        return op.local_get(0) + op.i64_const(shift) + b"\x88" + op.i32_wrap_i64 + op.i32_const(1) + op.i32_and

    def statements(self, depth: int) -> bytes:
        count = self.draw(st.integers(1, 3 if depth else 5))
        return b"".join(self.statement(depth) for _ in range(count))

    def statement(self, depth: int) -> bytes:
        self.budget -= 1
        kinds = ["straight", "straight"]
        if depth < 3 and self.budget > 0:
            kinds += ["loop", "block", "if", "maze", "pair", "loop_result"]
        if self.p.functions > 1 or not self.p.finite:
            kinds += ["call", "call_indirect"]
        kinds += ["bulk"]
        if self.p.finite and depth < 3 and self.budget > 0:
            kinds += ["try"]
        if self.p.structure and depth < 3 and self.budget > 0:
            kinds += ["legacy_try", "delegate"]
        kind = self.draw(st.sampled_from(kinds))
        return getattr(self, "s_" + kind)(depth)

    def s_straight(self, depth: int) -> bytes:
        return self.straight(long=not self.p.finite and self.draw(st.booleans()))

    def s_loop(self, depth: int) -> bytes:
        c = self.counter()
        # finite: few iterations; never-ending programs: under 256, the per-activation tick the old
        # metering counted, around whatever body (a long one is the bypass it missed)
        count = self.draw(st.integers(1, 20) if self.p.finite else st.integers(1, 255))
        return (op.i32_const(0) + op.local_set(c)
                + op.loop(self.statements(depth + 1) + op.local_get(c) + op.i32_const(1) + op.i32_add
                          + op.local_tee(c) + op.i32_const(count) + op.i32_lt_u + op.br_if(0)))

    def s_loop_result(self, depth: int) -> bytes:
        c = self.counter()
        count = self.draw(st.integers(1, 10))
        body = (self.statements(depth + 1) + op.local_get(0) + op.local_get(c) + op.i32_const(1) + op.i32_add
                + op.local_tee(c) + op.i32_const(count) + op.i32_lt_u + op.br_if(0))
        return op.i32_const(0) + op.local_set(c) + op.loop(body, bt=I64) + op.local_get(0) + op.i64_add + op.local_set(0)

    def s_block(self, depth: int) -> bytes:
        return op.block(self.statements(depth + 1) + self.bit(3) + op.br_if(0) + self.statements(depth + 1))

    def s_if(self, depth: int) -> bytes:
        return self.bit(5) + op.if_(self.statements(depth + 1), self.statements(depth + 1))

    def s_maze(self, depth: int) -> bytes:
        """Nested blocks and a br_table into them; never-ending programs may branch back to a loop."""
        n = self.draw(st.integers(2, 5))
        targets = [self.draw(st.integers(0, n - 1)) for _ in range(self.draw(st.integers(1, 8)))]
        inner = op.local_get(0) + op.i32_wrap_i64 + op.i32_const(7) + op.i32_and + op.br_table(targets, n - 1)
        for _ in range(n):
            inner = op.block(inner) + self.mix()
        if self.p.finite:
            return inner
        # a loop around the maze whose br_table may also jump back to the loop's header
        c = self.counter()
        back = op.local_get(0) + op.i32_wrap_i64 + op.i32_const(3) + op.i32_and + op.br_table([1, 0], 0)
        inner = op.block(back) + inner
        return op.i32_const(0) + op.local_set(c) + op.loop(
            inner + op.local_get(c) + op.i32_const(1) + op.i32_add + op.local_tee(c) + op.i32_const(200)
            + op.i32_lt_u + op.br_if(0))

    def s_pair(self, depth: int) -> bytes:
        """A block with two results."""
        body = self.statements(depth + 1) + op.local_get(0) + op.local_get(0) + op.i64_const(3) + op.i64_mul
        return op.block(body, bt=op.typed(self.p.pair_type)) + op.i64_add + op.local_set(0)

    def callee(self) -> int | None:
        if self.p.finite:
            later = list(range(self.me + 1, self.p.functions))
            return self.draw(st.sampled_from(later)) if later else None
        return self.draw(st.integers(0, self.p.functions - 1))  # recursion and cycles

    def guarded(self, call: bytes) -> bytes:
        """A call; in never-ending programs behind a depth guard, so recursion cannot overflow the stack."""
        code = op.local_get(0) + call + op.local_get(0) + op.i64_add + op.local_set(0)
        if self.p.finite:
            return code
        g = self.p.depth_global
        return (op.global_get(g) + op.i32_const(40) + op.i32_lt_u
                + op.if_(op.global_get(g) + op.i32_const(1) + op.i32_add + op.global_set(g) + code
                         + op.global_get(g) + op.i32_const(1) + op.i32_sub + op.global_set(g)))

    def s_call(self, depth: int) -> bytes:
        target = self.callee()
        return self.mix() if target is None else self.guarded(op.call(self.p.first_function + target))

    def s_call_indirect(self, depth: int) -> bytes:
        target = self.callee()
        if target is None:
            return self.mix()
        return self.guarded(op.i32_const(target) + op.call_indirect(self.p.acc_type))

    def s_bulk(self, depth: int) -> bytes:
        memory = self.p.memory_pages * 65536
        size = self.draw(st.integers(0, 3 * 65536 + 17) if self.p.finite else st.integers(memory // 4, memory // 2))
        which = self.draw(st.sampled_from(["fill", "copy"]))
        length = op.i32_const(size)
        if which == "fill":
            code = self.address(size) + op.local_get(0) + op.i32_wrap_i64 + length + op.memory_fill()
        else:
            shift = op.i32_const(self.draw(st.integers(0, 64))) + op.i32_add
            code = self.address(size + 64) + self.address(size + 64) + shift + length + op.memory_copy()
        fold = op.local_get(0) + self.address(8) + b"\x29\x03\x00" + op.i64_add + op.local_set(0)
        return code + fold

    def s_legacy_try(self, depth: int) -> bytes:
        """Legacy exception handling: try / catch with a rethrow from inside a loop and a block."""
        tag = self.p.tag
        body = self.statements(depth + 1) + self.bit(2) + op.if_(op.local_get(0) + b"\x08" + op.uleb_(tag))
        handler = (op.local_set(0) + self.statements(depth + 1)
                   + op.block(op.loop(self.bit(4) + op.br_if(1) + b"\x09\x02")))  # rethrow 2: the catch
        return b"\x06\x40" + body + b"\x07" + op.uleb_(tag) + handler + b"\x19" + self.statements(depth + 1) + b"\x0b"

    def s_delegate(self, depth: int) -> bytes:
        return op.block(b"\x06\x40" + self.statements(depth + 1) + b"\x18\x00")  # try ... delegate 0

    def s_try(self, depth: int) -> bytes:
        """A throw (maybe from a callee, maybe uncaught there) caught by a try_table two frames up."""
        body = self.statements(depth + 1) + self.bit(1) + op.if_(op.local_get(0) + op.throw(self.p.tag))
        caught = op.block(op.try_table(body, [(0, self.p.tag, 0)]) + op.local_get(0), bt=I64)
        return caught + op.local_get(0) + op.i64_add + op.local_set(0)


@st.composite
def programs(draw, finite: bool, structure: bool = False) -> bytes:
    p = Program(finite=finite, functions=draw(st.integers(1, 4)), memory_pages=8 if finite else 64, structure=structure)
    b = p.builder
    fd_write = b.import_function("fd_write", [I32, I32, I32, I32], [I32])
    p.acc_type = b.type([I64], [I64])
    p.pair_type = b.type([], [I64, I64])
    b.memory(p.memory_pages, p.memory_pages)
    b.table(p.functions, p.functions)
    p.tag = b.tag([I64])
    p.depth_global = b.global_(I32, True, op.i32_const(0))
    out = b.function(op.i32_const(16) + op.local_get(0) + op.i64_store() + op.i32_const(0) + op.i32_const(16)
                     + op.i32_store() + op.i32_const(4) + op.i32_const(8) + op.i32_store()
                     + op.i32_const(1) + op.i32_const(0) + op.i32_const(1) + op.i32_const(8) + op.call(fd_write) + op.drop,
                     params=[I64])
    p.first_function = out + 1
    indices = [b.declare([I64], [I64]) for _ in range(p.functions)]
    for me, index in enumerate(indices):
        body = Body(draw, p, me)
        code = body.statements(0) + op.local_get(0)
        if structure and me + 1 < p.functions and draw(st.booleans()):  # end in a tail call
            code += op.return_call(indices[me + 1]) if draw(st.booleans()) else (
                op.i32_const(me + 1) + op.return_call_indirect(p.acc_type))
        b.functions[index - b.imported_functions].locals = [(body.locals, I32)] if body.locals else []
        b.define(index, code)
    b.elements(0, indices)
    seed = op.i64_const(draw(st.integers(0, 2**62)))
    if finite:
        b.function(seed + op.call(indices[0]) + op.call(out), export="_start")
    else:
        b.function(op.loop(seed + op.call(indices[0]) + op.drop + op.br(0)), export="_start")
    return b.build()


# --- 1. meaning -------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=programs(finite=True))
def test_generated_programs_print_the_same_metered(wasmer_cache, data):
    assert validation_error(data) is None, validation_error(data)
    out = meter(data)
    assert validation_error(out) is None, validation_error(out)
    plain, metered = asyncio.run(_both(wasmer_cache, data, out))
    assert (metered.reason, metered.exit_code, metered.stdout.bytes) == (plain.reason, plain.exit_code, plain.stdout.bytes)


async def _both(cache, data: bytes, out: bytes):
    from wasmer_sdk import WasmerError

    results = []
    for candidate in (data, out):
        try:
            results.append(await run(cache, candidate, timeout=60))
        except WasmerError as error:  # an uncaught exception traps both the same way
            results.append(_Trapped(str(error).splitlines()[0].split(":")[-1].strip()))
    return results


@dataclass
class _Trapped:
    message: str

    @property
    def reason(self):
        return "trap"

    @property
    def exit_code(self):
        return self.message

    @property
    def stdout(self):
        return _Empty()


class _Empty:
    bytes = b""


@settings(max_examples=60, deadline=None)
@given(data=programs(finite=True, structure=True))
def test_generated_programs_with_tail_calls_and_legacy_exceptions_stay_valid(data):
    # wasmer-sdk cannot run these (no tail calls, no legacy exceptions): the rewrite must still be valid
    assert validation_error(data) is None, validation_error(data)
    out = meter(data)
    assert validation_error(out) is None, validation_error(out)


# --- 2. stopping ---------------------------------------------------------------------------------

_names = (f"gen{i}" for i in itertools.count())


@pytest.fixture(scope="module")
def arena(tmp_path_factory, wasmer_cache):
    """One engine on one event loop for every generated module (a module-scoped fixture, as
    Hypothesis runs all its examples inside one test call)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    engine = Engine(tmp_path_factory.mktemp("properties") / "db.sqlite", cache_dir=wasmer_cache, persist_traces=False)
    engine.set_limits("tight", cpu_ms=CPU_MS, memory_mb=32, wall_ms=10_000)
    yield loop, engine
    closing = time.process_time()
    loop.run_until_complete(engine.close())
    time.sleep(0.05)
    before = time.process_time()
    time.sleep(IDLE_WINDOW_S)
    idle = time.process_time() - before
    asyncio.set_event_loop(None)
    loop.close()
    assert idle < IDLE_CPU_S, f"the process used {idle:.3f} s of CPU after Engine.close() ({closing=})"


@settings(max_examples=18, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=programs(finite=False))
def test_generated_programs_that_never_finish_are_stopped(arena, data):
    loop, engine = arena
    worker = next(_names)
    engine.deploy(worker, data, tags=["tight"])
    loop.run_until_complete(asyncio.sleep(0.05))  # let earlier work settle before measuring
    cpu_before = time.process_time()
    response = loop.run_until_complete(engine.request(f"http://{worker}.example/"))
    answered = time.process_time()
    loop.run_until_complete(asyncio.sleep(SETTLE_S))
    settled = time.process_time()
    loop.run_until_complete(asyncio.sleep(IDLE_WINDOW_S))
    idle = time.process_time() - settled

    assert response.status == 503 and response.trace["outcome"] == "exceededCpu", (response.status, response.trace)
    assert settled - cpu_before <= CPU_MS / 1000 + CPU_MARGIN_S, (
        f"{settled - cpu_before:.3f} s of CPU for a {CPU_MS} ms limit ({answered - cpu_before:.3f} s by the answer)")
    assert idle < IDLE_CPU_S, f"the guest still used {idle:.3f} s of CPU {SETTLE_S} s after the answer"
    engine.delete(worker)

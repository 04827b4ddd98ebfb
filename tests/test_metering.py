"""engine.metering: the rewrite's structure, its refusals, and what metered modules do under wasmer-sdk.

Generated modules (Hypothesis) are in test_metering_properties.py, attacks through the engine in
test_guest_attacks.py.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wasmdeck.engine.errors import InvalidModule
from wasmdeck.engine.metering import (
    BOUND_UNITS,
    BULK_CHUNK,
    LEAF_MAX,
    MAX_FUNCTION_BODY_BYTES,
    PROBE,
    STOP_POINT,
    YIELD_BUDGET,
    meter,
)
from wasmdeck.engine.runtime import COMPILE_PROBE_ARGS
from wasmdeck.engine.wasm_module import inspect_module, validate_worker_module

from .wasm_builder import (
    WASI,
    custom,
    functype,
    module,
    name,
    section,
    uleb,
    validation_error,
    vec,
    wat,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "wcgi"
FIXTURE_NAMES = sorted(p.stem for p in FIXTURES.glob("*.wasm"))
PROTOCOL_FIXTURES = sorted((ROOT / "fixtures" / "protocol").glob("*.wasm"))


def fixture(name_: str) -> bytes:
    return (FIXTURES / f"{name_}.wasm").read_bytes()


def imports_of(data: bytes) -> list[tuple[str, str]]:
    return [(i.module, i.name) for i in inspect_module(data).imports]


def metered(data: bytes) -> bytes:
    """Meter and check that the result is valid WebAssembly."""
    out = meter(data)
    assert validation_error(out) is None, validation_error(out)
    return out


def refused(data: bytes) -> str:
    with pytest.raises(InvalidModule) as info:
        meter(data)
    message = str(info.value)
    assert message and "\n" not in message
    return message


# Printing a value: _start programs below report what they computed on stdout, so a metered run
# can be compared with a plain one byte for byte.
OUT = """
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 8)
  (func $out (param $v i64)
    (i64.store (i32.const 16) (local.get $v))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 8))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
"""


def program(body: str) -> bytes:
    return wat(f"(module {OUT} {body})")


# --- structure ----------------------------------------------------------------------------------

def test_the_stop_point_and_the_probe_are_imported_when_missing():
    data = program('(func (export "_start") (local i32) (loop (br_if 0 (i32.eqz (local.get 0)))))')
    out = metered(data)
    assert imports_of(out) == [(WASI, "fd_write"), (WASI, STOP_POINT), (WASI, PROBE)]
    info = inspect_module(out)
    assert info.exports_function("_start")


def test_existing_imports_are_reused_and_a_wrong_signature_is_refused():
    data = wat(f"""(module
      (import "{WASI}" "clock_time_get" (func (param i32 i64 i32) (result i32)))
      (import "{WASI}" "args_sizes_get" (func (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start") (loop (br 0))))""")
    assert imports_of(metered(data)) == imports_of(data)
    wrong = wat(f"""(module (import "{WASI}" "clock_time_get" (func (param i32) (result i32)))
      (memory (export "memory") 1) (func (export "_start") (loop (br 0))))""")
    assert "clock_time_get with the wrong signature" in refused(wrong)


def test_function_indices_move_everywhere():
    # a table element, a ref.func global, an export, the start function, calls and the name section
    data = wat(f"""(module
      (import "{WASI}" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (table 2 funcref)
      (global $g funcref (ref.func $seven))
      (elem (i32.const 0) $seven)
      (func $seven (result i32) (i32.const 7))
      (func $init)
      (start $init)
      (func $main (export "_start") (local i32)
        (loop (local.set 0 (i32.add (local.get 0) (i32.const 1))) (br_if 0 (i32.lt_u (local.get 0) (i32.const 3))))
        (call $exit (i32.add (call $seven) (call_indirect (result i32) (i32.const 0)))))
      (export "seven" (func $seven)))""")
    names = _wasm_print(metered(data))
    # 2 imports added after proc_exit: every defined function moves up by 2
    assert '(export "seven" (func $seven))' in names
    assert "(elem (;0;) (i32.const 0) func $seven)" in names
    assert "(global $g (;1;) funcref ref.func $seven)" in names or "ref.func $seven" in names
    assert "(start" not in names  # moved into the entry function
    assert "call $seven" in names and "call $init" in names and "call $main" in names


def _wasm_print(data: bytes) -> str:
    from .wasm_builder import _wasm_tools

    return subprocess.run([_wasm_tools(), "print", "-"], input=data, capture_output=True, check=True).stdout.decode()


def test_a_cheap_leaf_is_left_alone_and_a_costly_one_is_charged():
    cheap = "(i32.add (local.get 0) (i32.const 1))"
    costly = "(i32.load (i32.load (local.get 0)))" * (LEAF_MAX // 64 + 1) + " (drop)" * (LEAF_MAX // 64)
    data = program(f"""
      (func $cheap (param i32) (result i32) {cheap})
      (func $costly (param i32) (result i32) {costly})
      (func (export "_start") (drop (call $cheap (i32.const 1))) (drop (call $costly (i32.const 0))))""")
    printed = _wasm_print(metered(data))
    cheap_body = printed.split("(func $cheap")[1].split("(func ")[0]
    costly_body = printed.split("(func $costly")[1].split("(func ")[0]
    assert "global.get" not in cheap_body
    assert "global.get" in costly_body


def test_a_module_without_code_still_gets_its_entry_and_is_valid():
    data = module(
        section(1, vec([functype()])),
        section(2, vec([name(WASI) + name("sched_yield") + b"\x00" + uleb(0)])),
        section(5, vec([b"\x00\x01"])),
        section(7, vec([name("_start") + b"\x00" + uleb(0), name("memory") + b"\x02" + uleb(0)])),
    )
    out = metered(data)
    assert inspect_module(out).exports_function("_start")


def test_debug_sections_that_point_into_code_are_dropped():
    data = program('(func (export "_start") (loop (br 0)))')
    data += custom(".debug_info", b"\x01\x02") + custom("sourceMappingURL", b"x") + custom("producers", b"\x00")
    out = metered(data)
    names = [s for s, _ in inspect_module(out).custom_sections]
    assert ".debug_info" not in names and "sourceMappingURL" not in names and "producers" in names


# --- refusals -------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, what", [
    (b"\xfb\x00\x00", "instruction 0xfb 0"),  # GC
    (b"\xfc\x12", "instruction 0xfc 18"),
    (b"\xfd\x9a\x01", "instruction 0xfd 154"),
    (b"\x27", "instruction 0x27"),
])
def test_unknown_instructions_are_refused(body, what):
    data = module(section(1, vec([functype()])), section(3, vec([uleb(0)])),
                  section(10, vec([uleb(len(body) + 2) + b"\x00" + body + b"\x0b"])))
    assert what in refused(data)


def test_atomic_wait_is_refused():
    data = wat('(module (memory 1 1 shared) (func (drop (memory.atomic.wait32 (i32.const 0) (i32.const 0) (i64.const -1)))))')
    assert "memory.atomic.wait" in refused(data) and "cannot stop it" in refused(data)


def test_64_bit_memories_and_tables_are_refused():
    assert "64-bit memory" in refused(wat("(module (memory i64 1))"))
    assert "64-bit table" in refused(wat("(module (table i64 1 funcref))"))


@pytest.mark.parametrize("code", [b"", b"\x01", b"\x0b\x0b", b"\x02\x40\x0b", b"\x0c\x05\x0b", b"\x05\x0b", b"\x07\x00\x0b"])
def test_bodies_that_do_not_decode_are_refused(code):
    data = module(section(1, vec([functype()])), section(3, vec([uleb(0)])),
                  section(10, vec([uleb(len(code) + 1) + b"\x00" + code])))
    message = refused(data)
    assert "malformed" in message or "does not decode" in message or "end" in message


def test_a_function_too_big_once_metered_is_refused_with_a_sentence():
    # loops whose bodies are one instruction: the rewrite multiplies their size
    loops = b"\x03\x40\x01\x0b" * (MAX_FUNCTION_BODY_BYTES // 4 - 10)
    body = b"\x00" + loops + b"\x0b"
    data = module(section(1, vec([functype()])), section(3, vec([uleb(0)])), section(10, vec([uleb(len(body)) + body])))
    message = refused(data)
    assert "once metered" in message and "7,654,321" in message and "split the function" in message


def test_truncated_and_corrupted_input_only_raises_invalid_module():
    rng = random.Random(7)
    base = fixture("echo")
    for _ in range(150):
        data = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(8, len(data))] = rng.randrange(256)
        cut = bytes(data[: rng.randrange(8, len(data) + 1)])
        for candidate in (bytes(data), cut):
            try:
                meter(candidate)
            except InvalidModule:
                pass


@pytest.mark.parametrize("fixture_name", FIXTURE_NAMES)
def test_fixtures_meter_and_still_validate(fixture_name):
    data = fixture(fixture_name)
    out = metered(data)
    validate_worker_module(out)


@pytest.mark.parametrize("path", PROTOCOL_FIXTURES, ids=lambda p: p.stem)
def test_protocol_fixtures_meter_and_validate(path):
    metered(path.read_bytes())


def test_the_stated_bound_adds_up():
    assert BOUND_UNITS >= YIELD_BUDGET and BOUND_UNITS < 2 * YIELD_BUDGET
    assert BULK_CHUNK <= 1 << 16


# --- rewrites that must keep their meaning (validated by wasm-tools: features wasmer lacks) -------

def test_tail_calls_and_legacy_exceptions_are_rewritten_validly():
    data = wat(f"""(module {OUT}
      (type $t (func (param i32) (result i32)))
      (table 1 funcref) (elem (i32.const 0) $down)
      (tag $e (param i32))
      (func $down (param i32) (result i32)
        (if (result i32) (i32.eqz (local.get 0)) (then (i32.const 7))
          (else (return_call_indirect (type $t) (i32.sub (local.get 0) (i32.const 1)) (i32.const 0)))))
      (func $count (param i32) (result i32)
        (if (result i32) (i32.eqz (local.get 0)) (then (i32.const 0))
          (else (return_call $count (i32.sub (local.get 0) (i32.const 1))))))
      (func (export "_start") (local i32)
        try
          loop
            (local.set 0 (i32.add (local.get 0) (i32.const 1)))
            (br_if 0 (i32.lt_u (local.get 0) (i32.const 10)))
          end
          (throw $e (call $down (i32.const 5)))
        catch $e
          (call $out (i64.extend_i32_u))
        catch_all
        end
        block
          try
            nop
          delegate 0
        end
        (call $out (i64.extend_i32_u (call $count (i32.const 100))))))""")
    metered(data)


# --- under wasmer-sdk ------------------------------------------------------------------------------

async def run(cache: Path, data: bytes, query: str = "", *, timeout: float = 10, stdin: bytes | None = None,
              args: list[str] | None = None):
    from wasmer_sdk import Wasmer

    async with Wasmer(cache_root=str(cache)) as wasmer:
        package = await wasmer.packages.load(data)
        sandbox = await wasmer.sandboxes.create(packages=[package])
        try:
            command = sandbox.command(package, args or [], env={"REQUEST_METHOD": "GET", "QUERY_STRING": query})
            kwargs = {"stdin": stdin} if stdin is not None else {}
            return await command.run(check=False, timeout=timeout, **kwargs)
        finally:
            await sandbox.close()


async def same_output(cache: Path, data: bytes) -> bytes:
    """Run ``data`` plain and metered; both must exit the same way and print the same bytes."""
    plain = await run(cache, data)
    out = await run(cache, metered(data))
    assert (out.reason, out.exit_code, out.stdout.bytes) == (plain.reason, plain.exit_code, plain.stdout.bytes)
    return out.stdout.bytes


async def test_metered_hello_and_echo_behave_the_same(wasmer_cache):
    hello = await run(wasmer_cache, metered(fixture("hello")))
    assert hello.exit_code == 0
    assert hello.stdout.bytes.endswith(b"\r\n\r\nHello from wasmdeck!\n")
    assert b"info: hello served GET /" in hello.stderr.bytes

    echo = await run(wasmer_cache, metered(fixture("echo")), "status=201&header=X-A:b", stdin=b"payload")
    text = echo.stdout.bytes.decode()
    assert echo.exit_code == 0 and "Status: 201" in text and "X-A: b" in text
    assert '"QUERY_STRING": "status=201&header=X-A:b"' in text
    assert '"body": "payload"' in text


async def test_metered_burn_still_answers(wasmer_cache):
    out = await run(wasmer_cache, metered(fixture("burn")), "ms=20")
    assert out.exit_code == 0 and out.stdout.bytes.endswith(b"burned 20 ms\n")


async def test_a_metered_trap_still_names_the_function(wasmer_cache):
    from wasmer_sdk import WasmerError

    with pytest.raises(WasmerError) as info:
        await run(wasmer_cache, metered(fixture("trap")))
    assert "unreachable" in str(info.value) and "explode_on_purpose" in str(info.value)


async def test_the_compile_probe_runs_none_of_the_guests_code(wasmer_cache):
    data = program("""(func $init (call $out (i64.const 1)))  (start $init)
      (func (export "_start") (call $out (i64.const 2)) (loop (br 0)))""")
    probe = await run(wasmer_cache, metered(data), args=COMPILE_PROBE_ARGS, timeout=5)
    assert (probe.reason.value, probe.exit_code, probe.stdout.bytes, probe.stderr.bytes) == ("exited", 0, b"", b"")
    # run normally: the start function first, then _start, which loops until its timeout
    normal = await run(wasmer_cache, metered(data), timeout=0.2)
    assert normal.reason.value == "timeout" and normal.stdout.bytes == (1).to_bytes(8, "little") + (2).to_bytes(8, "little")


async def test_the_probe_leaves_memory_as_it_was(wasmer_cache):
    # the probe borrows bytes 0..8 of memory 0: the guest must still see its data segment there
    data = program("""(data (i32.const 0) "\\01\\02\\03\\04\\05\\06\\07\\08")
      (func (export "_start") (call $out (i64.load (i32.const 0))))""")
    # $out writes over bytes 0..8 itself, so read them into the output before anything else
    data = program("""(data (i32.const 24) "\\01\\02\\03\\04\\05\\06\\07\\08")
      (data (i32.const 0) "\\aa\\bb\\cc\\dd\\ee\\ff\\11\\22")
      (global $first (mut i64) (i64.const 0))
      (func (export "_start") (global.set $first (i64.load (i32.const 0))) (call $out (global.get $first)))""")
    assert await same_output(wasmer_cache, data) == bytes.fromhex("aabbccddeeff1122")


async def test_a_start_function_that_reaches_wasi_runs(wasmer_cache):
    # under wasmer-sdk a start function runs before the WASI context exists; metered, it runs from _start
    data = program("""(func $init (call $out (i64.const 42)))  (start $init)
      (func (export "_start") (call $out (i64.const 43)))""")
    out = await run(wasmer_cache, metered(data))
    assert out.exit_code == 0 and out.stdout.bytes == (42).to_bytes(8, "little") + (43).to_bytes(8, "little")


async def test_renumbered_calls_tables_and_globals_compute_the_same(wasmer_cache):
    data = wat(f"""(module {OUT}
      (table 2 funcref) (elem (i32.const 0) $seven)
      (global $g funcref (ref.func $sum))
      (func $seven (result i32) (i32.const 7))
      (func $sum (result i32) (local i32 i32)
        (loop (local.set 1 (i32.add (local.get 1) (local.get 0)))
              (local.set 0 (i32.add (local.get 0) (i32.const 1)))
              (br_if 0 (i32.lt_u (local.get 0) (i32.const 100))))
        (local.get 1))
      (func (export "_start")
        (table.set (i32.const 1) (global.get $g))
        (call $out (i64.extend_i32_u (i32.add (call_indirect (result i32) (i32.const 0))
                                              (call_indirect (result i32) (i32.const 1)))))
        (call $out (i64.extend_i32_u (call $sum)))))""")
    assert await same_output(wasmer_cache, data) == (4957).to_bytes(8, "little") + (4950).to_bytes(8, "little")


async def test_branches_out_of_wrapped_loops_keep_their_targets(wasmer_cache):
    # br_table mazes, br_if to outer blocks, loops with results, loops with parameters, multi-value
    data = wat(f"""(module {OUT}
      (type $pair (func (result i32 i32)))
      (type $step (func (param i32) (result i32)))
      (func $maze (param $n i32) (result i64) (local $i i32) (local $acc i64)
        (block $done
          (loop $outer
            (block $a (block $b (block $c
              (loop $inner
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_table $a $b $c $inner $outer $done (i32.rem_u (local.get $i) (i32.const 7))))
              ) (local.set $acc (i64.add (local.get $acc) (i64.const 1))) (br $outer))
              (local.set $acc (i64.add (local.get $acc) (i64.const 100))) (br_if $outer (i32.lt_u (local.get $i) (local.get $n))))
            (local.set $acc (i64.add (local.get $acc) (i64.const 10000)))
            (br_if $outer (i32.lt_u (local.get $i) (local.get $n)))))
        (i64.add (local.get $acc) (i64.extend_i32_u (local.get $i))))
      (func $with_result (result i32) (local i32)
        (loop (result i32) (local.set 0 (i32.add (local.get 0) (i32.const 3)))
          (br_if 0 (i32.lt_u (local.get 0) (i32.const 50))) (local.get 0)))
      (func $with_params (result i32) (local i32)
        (i32.const 1)
        (loop (type $step) (i32.mul (i32.const 2)) (br_if 0 (i32.lt_u (local.tee 0 (i32.const 0)) (i32.const 0))))
        (loop (param i32) (result i32) (i32.add (i32.const 5)) (local.tee 0) (br_if 0 (i32.lt_u (local.get 0) (i32.const 40))))
        )
      (func $pairs (result i32 i32) (local i32)
        (loop (type $pair) (local.set 0 (i32.add (local.get 0) (i32.const 1)))
          (br_if 0 (i32.lt_u (local.get 0) (i32.const 9))) (local.get 0) (i32.const 5)))
      (func (export "_start")
        (call $out (call $maze (i32.const 1000)))
        (call $out (i64.extend_i32_u (call $with_result)))
        (call $out (i64.extend_i32_u (call $with_params)))
        (call $out (i64.extend_i32_u (i32.sub (call $pairs))))))""")
    out = await same_output(wasmer_cache, data)
    assert len(out) == 32


async def test_exceptions_caught_across_frames_compute_the_same(wasmer_cache):
    data = wat(f"""(module {OUT}
      (tag $e (param i32))
      (func $deep (param i32)
        (if (i32.eqz (local.get 0)) (then (throw $e (i32.const 99))))
        (call $deep (i32.sub (local.get 0) (i32.const 1))))
      (func (export "_start") (local $i i32) (local $sum i32)
        (loop
          (block $caught (result i32)
            (try_table (catch $e $caught) (call $deep (i32.const 20))) (i32.const 0))
          (local.set $sum (i32.add (local.get $sum)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if 0 (i32.lt_u (local.get $i) (i32.const 50))))
        (call $out (i64.extend_i32_u (local.get $sum)))))""")
    assert await same_output(wasmer_cache, data) == (4950).to_bytes(8, "little")


BULK = f"""(module {OUT}
  (data $seg "0123456789abcdef")
  (func $sum (param $from i32) (param $n i32) (result i64) (local $acc i64)
    (block (loop (br_if 1 (i32.eqz (local.get $n)))
      (local.set $acc (i64.add (i64.mul (local.get $acc) (i64.const 31)) (i64.load8_u (local.get $from))))
      (local.set $from (i32.add (local.get $from) (i32.const 1)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1))) (br 0)))
    (local.get $acc))
  (func (export "_start")
    (memory.fill (i32.const 100) (i32.const 7) (i32.const {3 * BULK_CHUNK + 5}))
    (memory.copy (i32.const 150) (i32.const 100) (i32.const {2 * BULK_CHUNK + 11}))  ;; overlapping, forwards
    (memory.init $seg (i32.const 120) (i32.const 3) (i32.const 10))
    (memory.copy (i32.const 110) (i32.const 118) (i32.const {BULK_CHUNK + 20}))  ;; overlapping, d < s: forwards
    (memory.copy (i32.const 130) (i32.const 112) (i32.const {BULK_CHUNK + 20}))  ;; overlapping, d > s: from the end
    (call $out (call $sum (i32.const 90) (i32.const {3 * BULK_CHUNK + 100})))
    (memory.fill (i32.const 0) (i32.const 0) (i32.const 0))
    (memory.copy (i32.const 524288) (i32.const 0) (i32.const 0))
    (call $out (i64.const 1))
    {{tail}}))"""


async def test_bulk_memory_in_chunks_computes_the_same(wasmer_cache):
    assert len(await same_output(wasmer_cache, wat(BULK.format(tail="")))) == 16


@pytest.mark.parametrize("tail", [
    "(memory.fill (i32.const 524286) (i32.const 9) (i32.const 3))",  # one byte past the end (8 pages)
    "(memory.copy (i32.const 0) (i32.const 524200) (i32.const 100))",
    "(memory.copy (i32.const 524200) (i32.const 0) (i32.const 100))",
    "(memory.init $seg (i32.const 0) (i32.const 10) (i32.const 7))",
    "(data.drop $seg) (memory.init $seg (i32.const 0) (i32.const 0) (i32.const 1))",
    "(memory.fill (i32.const -1) (i32.const 9) (i32.const 2))",  # wraps around 2**32
])
async def test_an_out_of_bounds_bulk_instruction_traps_and_writes_nothing(wasmer_cache, tail):
    # the trap must come before any chunk is written: memory after the trap is what _start printed
    from wasmer_sdk import WasmerError

    data = wat(BULK.format(tail=tail))
    errors = []
    for candidate in (data, metered(data)):
        with pytest.raises(WasmerError) as info:
            await run(wasmer_cache, candidate)
        errors.append(str(info.value).splitlines()[0])
    assert "out of bounds" in errors[0] and errors[0].split(":")[-1] == errors[1].split(":")[-1]


async def test_table_instructions_still_work_metered(wasmer_cache):
    data = wat(f"""(module {OUT}
      (table $t 4 64 funcref) (elem $e func $a $b) (func $a) (func $b)
      (func (export "_start")
        (call $out (i64.extend_i32_u (table.grow $t (ref.null func) (i32.const 10))))
        (table.fill $t (i32.const 0) (ref.func $a) (i32.const 14))
        (table.init $t $e (i32.const 2) (i32.const 0) (i32.const 2))
        (table.copy $t $t (i32.const 5) (i32.const 1) (i32.const 4))
        (call $out (i64.extend_i32_u (table.grow $t (ref.null func) (i32.const 100))))
        (call $out (i64.extend_i32_u (table.size $t)))))""")
    assert await same_output(wasmer_cache, data) == b"".join((n % 2**64).to_bytes(8, "little") for n in (4, 0xFFFFFFFF, 14))


# Whether a guest stops is checked in a child process: getrusage() is per process, and the runs in
# this one (the unmetered one below) may leave a guest spinning.
CPU_AFTER_TIMEOUT = textwrap.dedent("""
    import asyncio, os, resource, sys
    from wasmer_sdk import Wasmer

    def cpu():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    async def main(path, query, cache):
        async with Wasmer(cache_root=cache) as wasmer:
            package = await wasmer.packages.load(open(path, "rb").read())
            sandbox = await wasmer.sandboxes.create(packages=[package])
            command = sandbox.command(package, env={"REQUEST_METHOD": "GET", "QUERY_STRING": query})
            out = await command.run(check=False, timeout=0.05)
            before = cpu()
            await asyncio.sleep(1.0)
            print(out.reason.name, round(cpu() - before, 2), flush=True)
            os._exit(0)  # a guest still spinning dies with the process

    asyncio.run(main(*sys.argv[1:]))
""")


def cpu_after_timeout(tmp_path: Path, data: bytes, query: str = "") -> tuple[str, float]:
    """Run ``data`` in a fresh process with a 50 ms timeout; return the exit reason and the CPU
    seconds that process uses in the second after the run returned."""
    path = tmp_path / "guest.wasm"
    path.write_bytes(data)
    child = subprocess.Popen(
        [sys.executable, "-c", CPU_AFTER_TIMEOUT, str(path), query, str(tmp_path / "cache")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        reason, cpu = child.communicate(timeout=60)[0].split()
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            child.wait()
    return reason, float(cpu)


def test_metered_burn_forever_stops_at_its_timeout(tmp_path):
    assert cpu_after_timeout(tmp_path, metered(fixture("burn")), "forever=1") == ("TIMEOUT", pytest.approx(0, abs=0.1))


def test_unmetered_burn_keeps_burning_after_its_timeout(tmp_path):
    """The problem metering solves: the runtime reports a timeout, but the guest spins on."""
    reason, cpu = cpu_after_timeout(tmp_path, fixture("burn"), "forever=1")
    assert reason == "TIMEOUT" and cpu > 0.15


def test_a_start_function_that_loops_is_stopped(tmp_path):
    data = program("(func $spin (loop (br 0))) (start $spin) (func (export \"_start\"))")
    assert cpu_after_timeout(tmp_path, metered(data)) == ("TIMEOUT", pytest.approx(0, abs=0.1))


# --- file writes (see engine.file_quota) ------------------------------------------------------------

FILES = f"""(module
  (import "{WASI}" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "{WASI}" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "{WASI}" "fd_close" (func $close (param i32) (result i32)))
  (import "{WASI}" "fd_renumber" (func $renumber (param i32 i32) (result i32)))
  (import "{WASI}" "fd_seek" (func $seek (param i32 i64 i32 i32) (result i32)))
  (import "{WASI}" "fd_tell" (func $tell (param i32 i32) (result i32)))
  (import "{WASI}" "fd_pwrite" (func $pwrite (param i32 i32 i32 i64 i32) (result i32)))
  (import "{WASI}" "fd_filestat_set_size" (func $set_size (param i32 i64) (result i32)))
  (import "{WASI}" "fd_allocate" (func $allocate (param i32 i64 i64) (result i32)))
  (import "{WASI}" "random_get" (func $random (param i32 i32) (result i32)))
  (memory (export "memory") 40)
  (data (i32.const 200) "tmp/quota-probe")
  (func $out (param $v i64)
    (i64.store (i32.const 16) (local.get $v))
    (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 8))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $r (param i32) (call $out (i64.extend_i32_u (local.get 0))))
  (func (export "_start") (local $fd i32)
    (call $r (call $close (i32.const 1)))  ;; stdout stays open
    (drop (call $open (i32.const 3) (i32.const 1) (i32.const 200) (i32.const 15) (i32.const 9)
                      (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 100)))
    (local.set $fd (i32.load (i32.const 100)))
    (call $r (i32.gt_u (local.get $fd) (i32.const 2)))  ;; the file did not take descriptor 1
    (call $r (call $renumber (local.get $fd) (i32.const 1)))  ;; ENOTSUP
    (call $r (call $seek (local.get $fd) (i64.const 1073741824) (i32.const 0) (i32.const 104)))  ;; ENOSPC
    (call $r (call $tell (local.get $fd) (i32.const 104)))
    (call $out (i64.load (i32.const 104)))  ;; back at the end: 0
    (i32.store (i32.const 32) (i32.const 300)) (i32.store (i32.const 36) (i32.const 10))
    (call $r (call $pwrite (local.get $fd) (i32.const 32) (i32.const 1) (i64.const 1073741824) (i32.const 40)))  ;; ENOSPC
    (call $r (call $set_size (local.get $fd) (i64.const 1073741824)))  ;; ENOSPC
    (call $r (call $allocate (local.get $fd) (i64.const -16) (i64.const 32)))  ;; wraps around: ENOSPC
    (call $r (call $seek (local.get $fd) (i64.const 1048576) (i32.const 0) (i32.const 104)))  ;; 1 MiB past the end: fine
    (call $r (call $fd_write (local.get $fd) (i32.const 32) (i32.const 1) (i32.const 40)))
    (call $r (call $random (i32.const 65536) (i32.const 2000000)))  ;; in charged chunks
    (call $out (i64.load (i32.const 2065000)))))"""


async def test_file_growth_is_counted_and_stdio_cannot_be_swapped(wasmer_cache):
    out = await run(wasmer_cache, metered(wat(FILES)))
    values = [int.from_bytes(out.stdout.bytes[i:i + 8], "little") for i in range(0, len(out.stdout.bytes), 8)]
    assert values[:12] == [0, 1, 58, 51, 0, 0, 51, 51, 51, 0, 0, 0], values
    assert values[12] != 0 and len(values) == 13  # random bytes landed 2 MB into the buffer


def test_wrapped_imports_are_unreachable_except_through_their_wrappers():
    # a table element and an export of the import itself both lead to the wrapper
    data = wat(f"""(module
      (import "{WASI}" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1) (table 1 funcref) (elem (i32.const 0) $w)
      (export "w" (func $w))
      (func $main (export "_start") (drop (call $w (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 0)))))""")
    printed = _wasm_print(metered(data))
    assert "(elem (;0;) (i32.const 0) func $w)" not in printed
    assert '(export "w" (func $w))' not in printed
    main = printed.split("(func $main")[1].split("(func ")[0]
    assert "call $w" not in main and "call 6" in main  # 6: the wrapper, after the two added imports


async def test_catch_labels_and_rethrows_across_wrapped_loops(wasmer_cache):
    # a try_table inside a loop whose catch leaves the loop: its label crosses the loop's wrapper
    data = wat(f"""(module {OUT}
      (tag $e (param i32))
      (func (export "_start") (local i32)
        (call $out (i64.extend_i32_u
          (block $h (result i32)
            (loop $l
              (try_table (catch $e $h)
                (local.set 0 (i32.add (local.get 0) (i32.const 1)))
                (if (i32.gt_u (local.get 0) (i32.const 5)) (then (throw $e (i32.mul (local.get 0) (i32.const 7))))))
              (br $l))
            (i32.const 0))))))""")
    assert await same_output(wasmer_cache, data) == (42).to_bytes(8, "little")
    # legacy exceptions (wasmer-sdk cannot run them): a rethrow inside a loop inside the catch
    legacy = wat("""(module (tag $e)
      (func (local i32)
        try
          (throw $e)
        catch $e
          loop
            (br_if 0 (i32.lt_u (local.tee 0 (i32.add (local.get 0) (i32.const 1))) (i32.const 3)))
            (rethrow 1)
          end
        end))""")
    metered(legacy)


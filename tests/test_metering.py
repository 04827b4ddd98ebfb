"""Tests for engine.metering: hand-assembled modules, the fixtures, and runs under wasmer-sdk."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from .wasm_builder import custom, functype, module, name, section, sleb, uleb, vec

from wasmdeck.engine.errors import InvalidInput, InvalidModule
from wasmdeck.engine.metering import YIELD_EVERY, meter
from wasmdeck.engine.wasm_module import inspect_module, validate_worker_module

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "wcgi"
FIXTURE_NAMES = sorted(p.stem for p in FIXTURES.glob("*.wasm"))
WASI = "wasi_snapshot_preview1"
I32, I64, FUNCREF = 0x7F, 0x7E, 0x70
TICK = 256  # loop iterations between two takes from the budget (engine.metering._TICK)


# --- a tiny assembler -------------------------------------------------------------------------

def func_import(field: str, type_index: int, module_name: str = WASI) -> bytes:
    return name(module_name) + name(field) + b"\x00" + uleb(type_index)


def export(export_name: str, kind: int, index: int) -> bytes:
    return name(export_name) + bytes([kind]) + uleb(index)


def body(code: bytes, local_groups=()) -> bytes:
    """A function body: (count, type) local groups, then the code (which must end with 0x0b)."""
    raw = vec(uleb(n) + bytes([t]) for n, t in local_groups) + code
    return uleb(len(raw)) + raw


def call(index: int) -> bytes:
    return b"\x10" + uleb(index)


def ref_func(index: int) -> bytes:
    return b"\xd2" + uleb(index)


def const_expr(code: bytes) -> bytes:
    return code + b"\x0b"


# The instrumentation, spelled out independently of the implementation (see the module docstring).

def spend(amount: int, *, budget: int, yield_index: int, every: int = YIELD_EVERY) -> bytes:
    g = uleb(budget)
    return (b"\x23" + g + b"\x41" + sleb(amount) + b"\x6b\x24" + g
            + b"\x23" + g + b"\x41\x00\x48\x04\x40"
            + b"\x41" + sleb(every) + b"\x24" + g + call(yield_index) + b"\x1a\x0b")


def loop_tick(counter: int, *, budget: int, yield_index: int, every: int = YIELD_EVERY) -> bytes:
    tick = min(TICK, every)
    c = uleb(counter)
    return (b"\x20" + c + b"\x41\x01\x6a\x22" + c + b"\x41" + sleb(tick - 1) + b"\x71\x45\x04\x40"
            + spend(tick, budget=budget, yield_index=yield_index, every=every) + b"\x0b")


def budget_global(every: int = YIELD_EVERY) -> bytes:
    return bytes([I32, 1]) + const_expr(b"\x41" + sleb(every))


def sections(data: bytes) -> list[tuple[int, bytes]]:
    """(id, payload) of every section, in order."""
    out, pos = [], 8
    while pos < len(data):
        section_id, pos = data[pos], pos + 1
        size = shift = 0
        while True:
            byte, pos = data[pos], pos + 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        out.append((section_id, data[pos:pos + size]))
        pos += size
    return out


def custom_names(data: bytes) -> list[str]:
    names = []
    for section_id, payload in sections(data):
        if section_id == 0:
            names.append(payload[1:1 + payload[0]].decode())
    return names


def refused(data: bytes) -> str:
    with pytest.raises(InvalidModule) as info:
        meter(data)
    message = str(info.value)
    assert message and "\n" not in message and message.count(". ") == 0
    return message


# --- the scheme on one loop -------------------------------------------------------------------

LOOP_TYPES = section(1, vec([functype(), functype([I32], [I32])]))
LOOP_IMPORTS = section(2, vec([func_import("proc_exit", 1)]))
LOOP_CODE = b"\x03\x40\x41\x00\x0d\x00\x0b\x0b"  # loop; i32.const 0; br_if 0; end; end


def loop_module(*, imports=LOOP_IMPORTS, types=LOOP_TYPES, globals_=b"") -> bytes:
    return module(
        types, imports,
        section(3, vec([uleb(0)])),
        section(5, vec([b"\x00\x01"])),
        *([section(6, globals_)] if globals_ else []),
        section(7, vec([export("_start", 0, 1), export("memory", 2, 0)])),
        section(10, vec([body(LOOP_CODE, [(2, I64)])])),
    )


def test_a_loop_gets_counted_and_the_import_added():
    out = meter(loop_module())
    got = dict(sections(out))
    # A new type [] -> [i32] at the end, the import at the end, a budget global.
    assert got[1] == vec([functype(), functype([I32], [I32]), functype([], [I32])])
    assert got[2] == vec([func_import("proc_exit", 1), func_import("sched_yield", 2)])
    assert got[6] == vec([budget_global()])
    # _start moved from function 1 to 2; the counter is local 2, after the two i64s.
    assert got[7] == vec([export("_start", 0, 2), export("memory", 2, 0)])
    spend1 = spend(1, budget=0, yield_index=1)
    tick = loop_tick(2, budget=0, yield_index=1)
    expected = spend1 + b"\x03\x40" + tick + b"\x41\x00\x0d\x00\x0b\x0b"
    assert got[10] == vec([body(expected, [(2, I64), (1, I32)])])
    assert inspect_module(out).imports[-1].name == "sched_yield"
    validate_worker_module(out)


def test_every_is_encoded_and_checked():
    out = meter(loop_module(), every=16)
    tick = loop_tick(2, budget=0, yield_index=1, every=16)
    assert tick in out and budget_global(16) in out
    assert b"\x41\x0f\x71" in tick  # every below the tick: the mask is every - 1
    assert meter(loop_module(), every=1 << 30)
    for bad in (0, 3, 1000, -4, 1 << 31, True, 2.0, "64"):
        with pytest.raises(InvalidInput, match="power of two"):
            meter(loop_module(), every=bad)


def test_a_plain_type_of_the_right_shape_is_reused():
    types = section(1, vec([functype(), functype([I32], [I32]), functype([], [I32])]))
    got = dict(sections(meter(loop_module(types=types))))
    assert got[1] == vec([functype(), functype([I32], [I32]), functype([], [I32])])
    assert got[2] == vec([func_import("proc_exit", 1), func_import("sched_yield", 2)])


def test_a_type_in_a_rec_group_is_not_reused():
    rec = b"\x4e" + vec([functype([], [I32])])
    types = section(1, vec([functype(), functype([I32], [I32]), rec]))
    got = dict(sections(meter(loop_module(types=types))))
    assert got[1] == vec([functype(), functype([I32], [I32]), rec, functype([], [I32])])
    assert got[2].endswith(func_import("sched_yield", 3))


def test_an_existing_sched_yield_import_is_reused():
    types = section(1, vec([functype(), functype([I32], [I32]), functype([], [I32])]))
    imports = section(2, vec([func_import("sched_yield", 2), func_import("proc_exit", 1)]))
    data = module(
        types, imports,
        section(3, vec([uleb(0)])),
        section(6, vec([bytes([I32, 0]) + const_expr(b"\x41\x07")])),
        section(7, vec([export("_start", 0, 2)])),
        section(10, vec([body(LOOP_CODE)])),
    )
    got = dict(sections(meter(data)))
    assert got[1] == sections(data)[0][1] and got[2] == sections(data)[1][1]  # nothing added
    assert got[7] == vec([export("_start", 0, 2)])  # nothing moved
    assert got[6] == vec([bytes([I32, 0]) + const_expr(b"\x41\x07"), budget_global()])  # budget is global 1
    code = spend(1, budget=1, yield_index=0) + b"\x03\x40" + loop_tick(0, budget=1, yield_index=0) + LOOP_CODE[2:]
    assert got[10] == vec([body(code, [(1, I32)])])


def test_a_sched_yield_import_with_the_wrong_signature_is_refused():
    imports = section(2, vec([func_import("sched_yield", 0)]))
    assert "sched_yield with the wrong signature" in refused(loop_module(imports=imports))


def test_missing_type_import_and_global_sections_are_created_in_order():
    data = module(section(1, vec([functype()])), section(3, vec([uleb(0)])), section(10, vec([body(LOOP_CODE)])))
    out = meter(data)
    assert [s for s, _ in sections(out)] == [1, 2, 3, 6, 10]
    got = dict(sections(out))
    assert got[1] == vec([functype(), functype([], [I32])])
    assert got[2] == vec([func_import("sched_yield", 1)])
    assert got[6] == vec([budget_global()])
    inspect_module(out)


def test_a_module_without_loops_or_calls_is_returned_unchanged():
    leaf = b"\x20\x00\x20\x00\x6c\x0b"  # local.get 0; local.get 0; i32.mul
    data = module(
        section(1, vec([functype([I32], [I32])])),
        section(3, vec([uleb(0), uleb(0)])),
        section(7, vec([export("sq", 0, 1)])),
        section(10, vec([body(leaf), body(b"\x41\x02\x0b")])),
        custom(".debug_info", b"kept, since nothing moved"),
    )
    assert meter(data) == data
    no_code = module(section(1, vec([functype()])))
    assert meter(no_code) == no_code


def test_calls_alone_are_counted_so_recursion_is_metered():
    rec = b"\x20\x00\x45\x04\x40\x0f\x0b\x20\x00\x41\x01\x6b\x10\x00\x20\x00\x41\x01\x6b\x10\x00\x0b"
    data = module(section(1, vec([functype([I32])])), section(3, vec([uleb(0)])), section(10, vec([body(rec)])))
    got = dict(sections(meter(data)))
    moved = rec.replace(b"\x10\x00", b"\x10\x01")  # rec is function 1 now
    assert got[10] == vec([body(spend(1, budget=0, yield_index=0) + moved, [(1, I32)])])


# --- every place a function index lives -------------------------------------------------------

def index_module(f, *, instrumented: bool) -> bytes:
    """A module that names functions everywhere. ``f`` maps an original function index to the
    one expected in the output; with ``instrumented``, the expected output of meter()."""
    # functions: 0 fd_write, 1 proc_exit (imports); 2 sq, 3 tail, 4 start (defined)
    types = [functype(), functype([I32], [I32]), functype([I32] * 4, [I32]), functype([I32])]
    imports = [func_import("fd_write", 2), func_import("proc_exit", 3)]
    globals_ = [bytes([FUNCREF, 1]) + const_expr(ref_func(f(2))), bytes([I32, 0]) + const_expr(b"\x41\x2a")]
    if instrumented:
        types.append(functype([], [I32]))
        imports.append(func_import("sched_yield", 4))
        globals_.append(budget_global())
    y, g = 2, 2  # the yield import's index and the budget global's, in the output

    def entry(code: bytes, groups=()):
        if not instrumented:
            return body(code, groups)
        return body(spend(1, budget=g, yield_index=y) + code, [*groups, (1, I32)])

    sq = body(b"\x20\x00\x20\x00\x6c\x0b")  # a leaf: left alone
    tail = entry(b"\x20\x00\x12" + uleb(f(2)) + b"\x0b")  # return_call sq
    tick = loop_tick(0, budget=g, yield_index=y) if instrumented else b""
    start_code = (
        b"\x03\x40" + tick + b"\x41\x00\x0d\x00\x0b"  # loop; i32.const 0; br_if 0; end
        + ref_func(f(3)) + b"\x1a"  # ref.func tail; drop
        + b"\x41\x05" + call(f(3)) + b"\x1a"  # call tail; drop
        + b"\x41\x00" + b"\x11\x01\x00" + b"\x1a"  # call_indirect (type 1) table 0; drop: a type index, unchanged
        + b"\x41\x00" + call(f(1)) + b"\x0b"  # call proc_exit: an import, unchanged
    )
    start = entry(start_code)
    elements = [
        b"\x00" + const_expr(b"\x41\x00") + vec([uleb(f(2)), uleb(f(3))]),
        b"\x01\x00" + vec([uleb(f(3)), uleb(f(0))]),
        b"\x02\x00" + const_expr(b"\x41\x02") + b"\x00" + vec([uleb(f(4))]),
        b"\x03\x00" + vec([uleb(f(2))]),
        b"\x04" + const_expr(b"\x41\x01") + vec([const_expr(ref_func(f(2))), const_expr(b"\xd0\x70")]),
        b"\x05\x70" + vec([const_expr(ref_func(f(4)))]),
        b"\x06\x00" + const_expr(b"\x41\x03") + b"\x70" + vec([const_expr(ref_func(f(3)))]),
        b"\x07\x70" + vec([const_expr(ref_func(f(2))), const_expr(ref_func(f(1)))]),
    ]
    tables = [b"\x70\x00\x08", b"\x40\x00\x70\x00\x01" + const_expr(ref_func(f(3)))]
    function_names = vec(uleb(f(i)) + name(n) for i, n in enumerate(["fd_write", "proc_exit", "sq", "tail", "start"]))
    local_names = vec([uleb(f(2)) + vec([uleb(0) + name("x")]), uleb(f(3)) + vec([uleb(0) + name("y")])])
    label_names = vec([uleb(f(4)) + vec([uleb(0) + name("spin")])])
    global_names = vec([uleb(0) + name("fr")])
    names = b"\x00" + uleb(2) + name("m") + b"".join(
        bytes([sub]) + uleb(len(content)) + content
        for sub, content in ((1, function_names), (2, local_names), (3, label_names), (7, global_names))
    )
    return module(
        section(1, vec(types)),
        section(2, vec(imports)),
        section(3, vec([uleb(1), uleb(1), uleb(0)])),
        section(4, vec(tables)),
        section(5, vec([b"\x00\x01"])),
        section(6, vec(globals_)),
        section(7, vec([export("_start", 0, f(4)), export("sq", 0, f(2)), export("fd", 0, f(0)),
                        export("memory", 2, 0), export("answer", 3, 1)])),
        section(8, uleb(f(3))),
        section(9, vec(elements)),
        section(10, vec([sq, tail, start])),
        custom("name", names),
        *([] if instrumented else [custom(".debug_info", b"\x01\x02"), custom(".debug_line", b"")]),
        custom("producers", b"\x00"),
    )


def test_function_indices_move_everywhere():
    original = index_module(lambda i: i, instrumented=False)
    inspect_module(original)
    expected = index_module(lambda i: i + 1 if i >= 2 else i, instrumented=True)
    out = meter(original)
    for (got_id, got), (want_id, want) in zip(sections(out), sections(expected)):
        assert (got_id, got) == (want_id, want), f"section {got_id} differs"
    assert out == expected
    assert custom_names(out) == ["name", "producers"]  # the DWARF sections are dropped
    inspect_module(out)


def test_a_malformed_name_section_is_dropped_not_kept_wrong():
    data = loop_module() + custom("name", b"\x01\x05\x01\x01")  # a subsection that runs past the end
    assert custom_names(meter(data)) == []


def test_other_offset_sections_are_dropped():
    data = loop_module() + b"".join(custom(n, b"x") for n in
                                    ["sourceMappingURL", "linking", "reloc.CODE", "metadata.code.branch_hint", "keep"])
    assert custom_names(meter(data)) == ["keep"]


# --- the decoder ------------------------------------------------------------------------------

MEMARG = b"\x02\x10"  # align 2, offset 16
EVERY_KIND_OF_INSTRUCTION = b"".join([
    b"\x02\x40\x0b", b"\x02\x7f\x41\x01\x0b\x1a", b"\x02\x00\x0b",  # blocks: empty, valtype, type index
    b"\x02\x63\x70\xd0\x70\x0b\x1a",  # block (result (ref null func))
    b"\x41\x00\x04\x40\x01\x05\x01\x0b",  # if/else
    b"\x02\x40\x41\x00\x0e\x02\x00\x00\x00\x0b",  # br_table
    b"\x41\x00\x28" + MEMARG + b"\x1a",  # i32.load
    b"\x41\x00\x28\x42\x00\x10\x1a",  # i32.load with a memory index (align bit 6)
    b"\x41\x00\x42\x80\x80\x80\x80\x10\x37\x03\x80\x80\x80\x80\x80\x80\x01",  # i64.store, 64-bit offset
    b"\x3f\x00\x40\x00\x1a",  # memory.size; memory.grow; drop
    b"\x43\x00\x00\x80\x3f\x1a\x44" + bytes(8) + b"\x1a",  # f32/f64.const
    b"\x41\x7f\xc0\xc1\x1a",  # sign extension
    b"\x43\x00\x00\x80\x3f\xfc\x00\x1a",  # i32.trunc_sat_f32_s
    b"\x41\x00\x41\x00\x41\x00\xfc\x0b\x00",  # memory.fill
    b"\x41\x00\x41\x00\x41\x00\xfc\x0a\x00\x00",  # memory.copy
    b"\xfc\x09\x00",  # data.drop 0
    b"\x41\x00\x41\x00\x41\x00\xfc\x08\x00\x00",  # memory.init 0 0
    b"\xfc\x10\x00\x1a\xd0\x70\x41\x00\xfc\x0f\x00\x1a",  # table.size, table.grow
    b"\x41\x00\x25\x00\x1a\x41\x00\xd0\x70\x26\x00",  # table.get, table.set
    b"\xd0\x70\xd1\x1a\xd0\x6f\x1a",  # ref.null, ref.is_null
    b"\x41\x01\x41\x02\x41\x00\x1c\x01\x7f\x1a",  # select (result i32)
    b"\x41\x01\x41\x02\x41\x00\x1b\x1a",  # select
    b"\xfd\x0c" + bytes(range(16)) + b"\xfd\x15\x03\x1a",  # v128.const; i8x16.extract_lane_s 3
    b"\x41\x00\xfd\x00" + MEMARG + b"\xfd\x0d" + bytes(16) + b"\x1a",  # v128.load; i8x16.shuffle (one operand dup'd below)
    b"\x41\x00\xfd\x0c" + bytes(16) + b"\xfd\x58" + MEMARG + b"\x05",  # v128.store8_lane
    b"\x41\x00\xfd\x5c" + MEMARG + b"\xfd\x62\x1a",  # v128.load32_zero; i8x16.popcnt
    b"\xfd\x0c" + bytes(16) + b"\xfd\x0c" + bytes(16) + b"\xfd\x80\x02\x1a",  # i8x16.relaxed_swizzle (0x100)
    b"\x41\x00\x41\x01\xfe\x1e" + MEMARG + b"\x1a\xfe\x03\x00",  # i32.atomic.rmw.add; atomic.fence
    b"\x41\x00\x41\x00\xfe\x00" + MEMARG + b"\x1a",  # memory.atomic.notify
    b"\x06\x40\x41\x00\x08\x00\x07\x00\x1a\x19\x0b",  # try; throw 0; catch 0; drop; catch_all; end
    b"\x06\x40\x06\x40\x01\x18\x00\x19\x0b",  # try; try; nop; delegate 0; catch_all; end
    b"\x06\x40\x01\x07\x00\x1a\x09\x00\x0b",  # try; catch 0; drop; rethrow 0; end
    b"\x02\x6f\x1f\x40\x04\x00\x00\x00\x01\x00\x00\x02\x00\x03\x00\x0b\xd0\x6f\x0b\x1a",  # try_table, 4 catches
    b"\x02\x40\xd0\x6f\x0a\x0b",  # throw_ref
    b"\xd0\x00\xd3\x1a",  # ref.null (type 0); ref.as_non_null
    b"\x02\x40\xd0\x70\xd4\x00\x1a\x0b",  # br_on_null
    b"\x02\x40\xd0\x70\xd6\x00\x0b",  # br_on_non_null (the label takes no values)
    b"\xd0\x6e\xd0\x6e\xd5\x1a",  # ref.eq (eqref)
    b"\x41\x00\xd0\x00\x14\x00\x1a",  # call_ref (type 0)
    b"\x41\x00\x41\x00\x11\x00\x00\x1a",  # call_indirect
    b"\x10\x00\x1a",  # call 0
    b"\x03\x40\x0b",  # loop
    b"\x41\x00\x41\x00\x13\x00\x00",  # return_call_indirect
    b"\x41\x00\xd0\x00\x15\x00",  # return_call_ref
    b"\x41\x00\x12\x00",  # return_call 0
    b"\x00\x0b",  # unreachable; end
])


def decoder_module(code: bytes) -> bytes:
    types = section(1, vec([functype([I32], [I32]), functype([], [I32])]))
    imports = section(2, vec([func_import("sched_yield", 1)]))
    return module(types, imports, section(3, vec([uleb(0)])), section(10, vec([body(code)])))


def test_every_instruction_encoding_is_decoded_and_copied_through():
    assert EVERY_KIND_OF_INSTRUCTION.count(b"\x03\x40\x0b") == 1
    out = meter(decoder_module(EVERY_KIND_OF_INSTRUCTION))
    code_payload = dict(sections(out))[10]
    tick = loop_tick(1, budget=0, yield_index=0)
    entry = spend(1, budget=0, yield_index=0)
    renumbered = EVERY_KIND_OF_INSTRUCTION.replace(b"\x03\x40\x0b", b"\x03\x40" + tick + b"\x0b")
    assert code_payload == vec([body(entry + renumbered, [(1, I32)])])


@pytest.mark.parametrize("code, opcode", [
    (b"\xfb\x00\x00\x0b", "0xfb 0"),  # struct.new: garbage collection
    (b"\xd0\x70\xfb\x16\x0b", "0xfb 22"),
    (b"\x27\x0b", "0x27"),
    (b"\xe0\x00\x0b", "0xe0"),  # stack switching
    (b"\xfd\x9a\x01\x0b", "0xfd 154"),  # a hole in the SIMD opcodes
    (b"\xfd\x94\x02\x0b", "0xfd 276"),  # past relaxed SIMD
    (b"\xfc\x12\x0b", "0xfc 18"),
    (b"\xfe\x04\x0b", "0xfe 4"),
    (b"\x1f\x40\x01\x04\x00\x0b", "0x1f with catch kind 4"),
])
def test_unknown_instructions_are_refused(code, opcode):
    message = refused(decoder_module(b"\x03\x40\x0b" + code))
    assert message == (f"the module uses instruction {opcode} (in function 1), "
                       "which wasmdeck cannot meter for CPU limits")


@pytest.mark.parametrize("code", [
    b"\x03\x40\x0b\x0b\x0b",  # code after the final end
    b"\x03\x40\x02\x40\x0b",  # a block left open
    b"\x18\x00\x0b",  # delegate outside a try
    b"\x41\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x0b",  # an integer that never ends inside the body
])
def test_bodies_that_do_not_decode_are_refused(code):
    assert refused(decoder_module(code)) == (
        "the code section is malformed: the body of function 1 does not decode to valid instructions"
    )


def test_malformed_modules_raise_invalid_module():
    assert refused(b"") == "the module is empty"
    assert "not a WebAssembly module" in refused(b"hello")


# --- the fixtures -----------------------------------------------------------------------------

@pytest.mark.parametrize("fixture", FIXTURE_NAMES)
def test_fixtures_meter_and_still_validate(fixture):
    data = (FIXTURES / f"{fixture}.wasm").read_bytes()
    out = meter(data)
    info = validate_worker_module(out)
    assert [i.name for i in info.imports][-1] == "sched_yield"
    assert info.custom_section("name") is not None  # kept, renumbered


def meter_or_refuse(data: bytes) -> None:
    """meter() either refuses with InvalidModule or returns a module that parses."""
    try:
        out = meter(data)
    except InvalidModule as error:
        assert str(error) and "\n" not in str(error)
        return
    inspect_module(out)


def test_truncated_and_corrupted_input_only_raises_invalid_module():
    rng = random.Random(1234)
    for fixture in FIXTURE_NAMES:
        data = (FIXTURES / f"{fixture}.wasm").read_bytes()
        for cut in [*range(0, 40), *rng.sample(range(40, len(data)), 25)]:
            meter_or_refuse(data[:cut])
        for _ in range(30):
            corrupt = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                corrupt[rng.randrange(8, len(corrupt))] = rng.randrange(256)
            meter_or_refuse(bytes(corrupt))
    for _ in range(300):
        meter_or_refuse(b"\0asm\x01\x00\x00\x00" + rng.randbytes(rng.randint(0, 200)))
    code = EVERY_KIND_OF_INSTRUCTION
    for _ in range(300):  # bodies cut short or with bytes changed, inside a well-formed module
        mangled = bytearray(code[:rng.randrange(1, len(code))] + b"\x0b")
        for _ in range(rng.randint(0, 3)):
            mangled[rng.randrange(len(mangled))] = rng.randrange(256)
        meter_or_refuse(decoder_module(bytes(mangled)))


def test_a_5_mb_module_meters_in_well_under_two_seconds():
    # 20,000 functions, each a loop around calls, loads, stores and arithmetic: about 5 MB of code.
    inner = (b"\x20\x00\x41\x01\x6a\x21\x00" + b"\x41\x00\x28\x02\x10\x20\x00\x6a\x41\x00\x36\x02\x10" * 8
             + b"\x20\x00\x10\x00\x1a" * 6 + b"\x44" + bytes(8) + b"\x1a")
    code = b"\x03\x40" + inner * 2 + b"\x20\x00\x41\xe4\x00\x49\x0d\x00\x0b\x0b"
    n = 20_000
    data = module(
        section(1, vec([functype([I32], [I32])])),
        section(3, vec([uleb(0)] * n)),
        section(5, vec([b"\x00\x01"])),
        section(10, vec([body(code)] * n)),
    )
    assert len(data) > 5_000_000
    started = time.perf_counter()
    out = meter(data)
    elapsed = time.perf_counter() - started
    inspect_module(out)
    print(f"metered {len(data)} bytes in {elapsed:.2f} s")
    assert elapsed < 3.0  # about 1 s here; generous for a loaded machine


# --- behaviour under wasmer-sdk -----------------------------------------------------------------

async def run(cache: Path, data: bytes, query: str = "", *, timeout: float = 5, stdin: bytes | None = None):
    from wasmer_sdk import Wasmer

    async with Wasmer(cache_root=str(cache)) as wasmer:
        package = await wasmer.packages.load(data)
        sandbox = await wasmer.sandboxes.create(packages=[package])
        try:
            command = sandbox.command(package, env={"REQUEST_METHOD": "GET", "QUERY_STRING": query})
            kwargs = {"stdin": stdin} if stdin is not None else {}
            return await command.run(check=False, timeout=timeout, **kwargs)
        finally:
            await sandbox.close()


def fixture(name_: str) -> bytes:
    return (FIXTURES / f"{name_}.wasm").read_bytes()


async def test_metered_hello_and_echo_behave_the_same(wasmer_cache):
    hello = await run(wasmer_cache, meter(fixture("hello")))
    assert hello.exit_code == 0
    assert hello.stdout.bytes.endswith(b"\r\n\r\nHello from wasmdeck!\n")
    assert b"info: hello served GET /" in hello.stderr.bytes

    echo = await run(wasmer_cache, meter(fixture("echo")), "status=201&header=X-A:b", stdin=b"payload")
    text = echo.stdout.bytes.decode()
    assert echo.exit_code == 0 and "Status: 201" in text and "X-A: b" in text
    assert '"QUERY_STRING": "status=201&header=X-A:b"' in text
    assert '"body": "payload"' in text


async def test_metered_burn_still_answers(wasmer_cache):
    out = await run(wasmer_cache, meter(fixture("burn")), "ms=20")
    assert out.exit_code == 0 and out.stdout.bytes.endswith(b"burned 20 ms\n")


async def test_a_metered_trap_still_names_the_function(wasmer_cache):
    from wasmer_sdk import WasmerError

    with pytest.raises(WasmerError) as info:
        await run(wasmer_cache, meter(fixture("trap")))
    assert "unreachable" in str(info.value) and "explode_on_purpose" in str(info.value)


# Whether a guest stops is checked in a child process: getrusage() is per process, and other tests
# in this one may have left unmetered guests spinning (the very problem metering solves).
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
    assert cpu_after_timeout(tmp_path, meter(fixture("burn")), "forever=1") == ("TIMEOUT", pytest.approx(0, abs=0.3))


def test_unmetered_burn_keeps_burning_after_its_timeout(tmp_path):
    """The problem metering solves: the runtime reports a timeout, but the guest spins on."""
    reason, cpu = cpu_after_timeout(tmp_path, fixture("burn"), "forever=1")
    # A whole core for ever (0.95-1.0 on an idle machine); less when guests that earlier tests
    # left spinning in the pytest process share the cores, but far from the ~0 of a stopped guest.
    assert reason == "TIMEOUT" and cpu > 0.15


def spin_module(functions: list[tuple[bytes, bytes, list]], start: int) -> bytes:
    """A WASI command without imports: (type, code, local groups) per function; exports _start."""
    types = list(dict.fromkeys(t for t, _, _ in functions))
    return module(
        section(1, vec(types)),
        section(3, vec(uleb(types.index(t)) for t, _, _ in functions)),
        section(5, vec([b"\x00\x01"])),
        section(7, vec([export("_start", 0, start), export("memory", 2, 0)])),
        section(10, vec(body(code, groups) for _, code, groups in functions)),
    )


def count_to(limit: int, then: bytes = b"") -> bytes:
    """loop { then; local0 += 1; br_if (local0 < limit) }"""
    return b"\x03\x40" + then + b"\x20\x00\x41\x01\x6a\x22\x00\x41" + sleb(limit) + b"\x49\x0d\x00\x0b"


def test_short_loops_nested_across_functions_are_stopped(tmp_path):
    # inner loops 60,000 times; mid calls inner 60,000 times; _start calls mid for ever. A counter that
    # restarts in every call would never reach 65,536 here.
    void = functype()
    inner = (void, count_to(60_000) + b"\x0b", [(1, I32)])
    mid = (void, count_to(60_000, call(0)) + b"\x0b", [(1, I32)])
    start = (void, b"\x03\x40" + call(1) + b"\x0c\x00\x0b\x0b", [])
    assert cpu_after_timeout(tmp_path, meter(spin_module([inner, mid, start], 2))) == ("TIMEOUT", pytest.approx(0, abs=0.3))


def test_loop_free_recursion_is_stopped(tmp_path):
    # rec(n) { if (n == 0) return; rec(n - 1); rec(n - 1); }: 2**60 calls, no loop at all
    rec = (functype([I32]), b"\x20\x00\x45\x04\x40\x0f\x0b" + (b"\x20\x00\x41\x01\x6b" + call(0)) * 2 + b"\x0b", [])
    start = (functype(), b"\x41\x3c" + call(0) + b"\x0b", [])
    assert cpu_after_timeout(tmp_path, meter(spin_module([rec, start], 1))) == ("TIMEOUT", pytest.approx(0, abs=0.3))


async def test_renumbered_calls_tables_and_globals_compute_the_same(wasmer_cache):
    # _start exits with seven() + 20 * (sum_to_100 via the table == 4950) + 40 * (sum_to_100() == 4950)
    # where the table holds seven (active element) and sum_to_100 (from a ref.func global).
    types = [functype(), functype([I32]), functype([], [I32])]
    seven = b"\x41\x07\x0b"
    sum_to_100 = count_to(100, b"\x20\x01\x20\x00\x6a\x21\x01") + b"\x20\x01\x0b"  # local1 += local0
    start = (
        b"\x41\x01\x23\x00\x26\x00"  # table[1] = global 0 (ref.func sum_to_100)
        + b"\x41\x00\x11\x02\x00"  # call_indirect table[0]: seven
        + b"\x41\x01\x11\x02\x00\x41\xd6\x26\x46\x41\x14\x6c\x6a"  # + 20 * (table[1]() == 4950)
        + call(2) + b"\x41\xd6\x26\x46\x41\x28\x6c\x6a"  # + 40 * (sum_to_100() == 4950)
        + call(0) + b"\x0b"  # proc_exit
    )
    data = module(
        section(1, vec(types)),
        section(2, vec([func_import("proc_exit", 1)])),
        section(3, vec([uleb(2), uleb(2), uleb(0)])),
        section(4, vec([b"\x70\x00\x02"])),
        section(5, vec([b"\x00\x01"])),
        section(6, vec([bytes([FUNCREF, 0]) + const_expr(ref_func(2))])),
        section(7, vec([export("_start", 0, 3), export("memory", 2, 0)])),
        section(9, vec([b"\x00" + const_expr(b"\x41\x00") + vec([uleb(1)])])),
        section(10, vec([body(seven), body(sum_to_100, [(2, I32)]), body(start)])),
    )
    plain = await run(wasmer_cache, data)
    assert plain.exit_code == 67
    for every in (1, 4, YIELD_EVERY):  # yielding on every count, too
        metered = await run(wasmer_cache, meter(data, every=every))
        assert metered.exit_code == 67

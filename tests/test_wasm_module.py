"""Tests for engine.wasm_module: modules are assembled by hand, no compiler needed."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from .wasm_builder import HEADER, custom, functype, module, name, section, uleb, vec

from wasmdeck.engine.errors import InvalidInput, InvalidModule
from wasmdeck.engine.wasm_module import (
    DEFAULT_MAX_MODULE_BYTES,
    WASI_PREVIEW1_FUNCTIONS,
    WASI_PREVIEW1_MODULE,
    WASM_PAGE_BYTES,
    Export,
    Import,
    Memory,
    cap_memory,
    inspect_module,
    memory_limit_pages,
    validate_worker_module,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
I32, I64 = 0x7F, 0x7E
FUNC, TABLE, MEM, GLOBAL = 0, 1, 2, 3


# --- a tiny assembler (shared basics in tests/wasm_builder.py) ---------------

_module = module


def limits(initial: int, maximum: int | None = None, shared=False, is64=False) -> bytes:
    flags = (0x01 if maximum is not None else 0) | (0x02 if shared else 0) | (0x04 if is64 else 0)
    return bytes([flags]) + uleb(initial) + (uleb(maximum) if maximum is not None else b"")


def imp(module: str, field: str, kind: int, desc: bytes) -> bytes:
    return name(module) + name(field) + bytes([kind]) + desc


def exp(export_name: str, kind: int, index: int) -> bytes:
    return name(export_name) + bytes([kind]) + uleb(index)


EMPTY_BODY = vec([]) + b"\x0b"  # no locals, just `end`


def body(code: bytes = EMPTY_BODY) -> bytes:
    return uleb(len(code)) + code


TYPES = section(1, vec([functype([I32] * 4, [I32]), functype()]))
IMPORTS = section(2, vec([imp(WASI_PREVIEW1_MODULE, "fd_write", FUNC, uleb(0))]))
FUNCS = section(3, vec([uleb(1)]))
EXPORTS = section(7, vec([exp("_start", FUNC, 1), exp("memory", MEM, 0)]))
START_ONLY = section(7, vec([exp("_start", FUNC, 1)]))
CODE = section(10, vec([body()]))


def command(memory: bytes | None = limits(1), *, imports=IMPORTS, exports=EXPORTS, extra=()) -> bytes:
    """A minimal WASI command: imports fd_write, defines _start and one memory."""
    parts = [TYPES, imports, FUNCS]
    if memory is not None:
        parts.append(section(5, vec([memory])))
    parts += [exports, CODE, *extra]
    return _module(*parts)


VALID = command(extra=[custom("producers", b"\x00"), custom("name", b"\x01\x02")])


def refused(data: bytes, **kwargs) -> str:
    with pytest.raises(InvalidModule) as info:
        validate_worker_module(data, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message
    return message


# --- accepted modules -------------------------------------------------------

def test_minimal_command_is_accepted_and_described():
    info = validate_worker_module(VALID)
    assert info.size == len(VALID)
    assert info.imports == (Import(WASI_PREVIEW1_MODULE, "fd_write", "func"),)
    assert info.exports == (Export("_start", "func"), Export("memory", "memory"))
    assert info.memories == (Memory(1, None, False, False, False),)
    assert info.custom_sections == (("producers", b"\x00"), ("name", b"\x01\x02"))
    assert info.custom_section("name") == b"\x01\x02"
    assert info.custom_section("missing") is None
    assert info.exports_function("_start") and not info.exports_function("memory")
    assert inspect_module(VALID) == info


def test_constants():
    assert DEFAULT_MAX_MODULE_BYTES == 25 * 1024 * 1024
    assert WASM_PAGE_BYTES == 65536
    assert len(WASI_PREVIEW1_FUNCTIONS) == 46
    assert {"fd_write", "proc_exit", "sock_shutdown", "path_open"} <= WASI_PREVIEW1_FUNCTIONS
    assert memory_limit_pages(128) == 2048
    assert memory_limit_pages(0) == 1


def test_all_section_kinds_are_parsed():
    data = _module(
        custom("first", b""),
        TYPES,
        IMPORTS,
        FUNCS,
        section(4, vec([b"\x70" + limits(1, 1), b"\x40\x00\x6f" + limits(0) + b"\xd0\x6f\x0b"])),
        section(5, vec([limits(2, 10, shared=True)])),
        section(13, vec([b"\x00" + uleb(1)])),
        section(6, vec([bytes([I32, 0]) + b"\x41\x2a\x0b", bytes([I64, 1]) + b"\x42\x7f\x0b"])),
        section(7, vec([exp("_start", FUNC, 1), exp("g", GLOBAL, 1), exp("t", TABLE, 1)])),
        section(8, uleb(1)),
        section(9, vec([
            b"\x00\x41\x00\x0b" + vec([uleb(1)]),  # active, table 0
            b"\x01\x00" + vec([uleb(0)]),  # passive funcrefs
            b"\x05\x70" + vec([b"\xd2\x01\x0b"]),  # passive expressions
        ])),
        section(12, uleb(2)),
        section(10, vec([body(vec([uleb(3) + bytes([I64])]) + b"\x01\x0b")])),
        section(11, vec([b"\x00\x41\x10\x0b" + name("hi"), b"\x01" + name("passive")])),
        custom("last", b"tail"),
    )
    info = validate_worker_module(data)
    assert info.memories == (Memory(2, 10, True, False, False),)
    assert [n for n, _ in info.custom_sections] == ["first", "last"]


def test_custom_sections_may_appear_anywhere_and_repeat():
    data = _module(custom("a", b"1"), TYPES, custom("a", b"2"), IMPORTS, FUNCS, START_ONLY, CODE)
    info = inspect_module(data)
    assert info.custom_section("a") == b"1"
    assert info.custom_sections == (("a", b"1"), ("a", b"2"))


# --- refusals ---------------------------------------------------------------

def test_empty():
    assert refused(b"") == "the module is empty"
    with pytest.raises(InvalidModule, match="empty"):
        inspect_module(b"")


@pytest.mark.parametrize("data", [b"hello", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", b"\0as", b"asm\0\1\0\0\0"])
def test_not_wasm(data):
    assert "not a WebAssembly module" in refused(data)


def test_wrong_version():
    assert "version 2" in refused(b"\0asm\x02\x00\x00\x00")


def test_component_binary():
    message = refused(b"\0asm\x0d\x00\x01\x00" + b"\x00\x00")
    assert "component" in message and "core" in message


def test_truncated_header():
    assert "truncated" in refused(b"\0asm\x01\x00")


def test_every_truncation_is_refused_cleanly():
    data = command()  # the code section comes last
    for cut in range(len(data)):
        with pytest.raises(InvalidModule):
            validate_worker_module(data[:cut])
    # with custom sections after the code, cutting between sections leaves a valid module
    boundaries = {len(command()), len(command()) + len(custom("producers", b"\x00"))}
    for cut in range(len(VALID)):
        try:
            validate_worker_module(VALID[:cut])
        except InvalidModule:
            continue
        assert cut in boundaries


def test_truncation_inside_a_section_names_the_sizes():
    data = _module(TYPES, IMPORTS, FUNCS, section(10, vec([body()]))[:-1])
    message = refused(data)
    assert message == "the module is truncated: section 10 (code) declares 4 bytes but only 3 remain"


def test_unknown_section_id():
    assert "unknown id 14" in refused(_module(TYPES, section(14, b"")))


def test_duplicate_section():
    assert "section 1 (type) twice" in refused(_module(TYPES, TYPES))


def test_out_of_order_sections():
    message = refused(_module(TYPES, FUNCS, IMPORTS))
    assert "section 2 (import) after section 3 (function)" in message
    # the data count section sits between element and code
    assert "order" in refused(_module(TYPES, FUNCS, CODE, section(12, uleb(0))))


def test_section_size_overflow():
    data = _module(TYPES) + b"\x03\xff\xff\xff\xff\x0f"
    assert "declares 4294967295 bytes" in refused(data)
    assert "5 bytes" in refused(_module(TYPES) + b"\x03\xff\xff\xff\xff\xff\x0f")
    assert "32 bits" in refused(_module(TYPES) + b"\x03\xff\xff\xff\xff\x7f")


def test_trailing_bytes_in_section():
    data = _module(TYPES, IMPORTS, section(3, vec([uleb(1)]) + b"\x00\x00"), EXPORTS, CODE)
    assert refused(data) == "section 3 (function) is malformed: it has 2 bytes of trailing data after its contents"


def test_bad_utf8_names():
    assert "UTF-8" in refused(_module(custom(b"\xff\xfe", b"")))
    bad_import = section(2, vec([imp(WASI_PREVIEW1_MODULE, "x", FUNC, uleb(0))]).replace(b"\x01x", b"\x01\xc3"))
    assert "UTF-8" in refused(command(imports=bad_import))


def test_count_mismatch_and_bad_indices():
    assert "declares 1 function but has 0 function bodies" in refused(_module(TYPES, IMPORTS, FUNCS, START_ONLY))
    assert "type index 7" in refused(_module(TYPES, section(3, vec([uleb(7)]))))
    assert "does not exist" in refused(command(exports=section(7, vec([exp("_start", FUNC, 9)]))))
    assert "twice" in refused(command(exports=section(7, vec([exp("_start", FUNC, 1), exp("_start", FUNC, 0)]))))
    assert "data count" in refused(_module(section(12, uleb(1))))


def test_code_body_must_fit_and_end():
    bad = section(10, vec([uleb(50) + EMPTY_BODY]))
    assert "declares 50 bytes" in refused(_module(TYPES, IMPORTS, FUNCS, START_ONLY, bad))
    no_end = section(10, vec([body(vec([]) + b"\x01")]))
    assert "end instruction" in refused(_module(TYPES, IMPORTS, FUNCS, START_ONLY, no_end))


def test_no_start_export():
    message = refused(command(exports=section(7, vec([exp("memory", MEM, 0)]))))
    assert "does not export _start" in message and "WASI command" in message


def test_start_that_is_a_memory():
    message = refused(command(exports=section(7, vec([exp("_start", MEM, 0)]))))
    assert "_start as a memory, not a function" in message


def test_start_with_a_signature():
    assert "_start" in refused(command(exports=section(7, vec([exp("_start", FUNC, 0)]))))


def test_import_outside_wasi_is_named():
    imports = section(2, vec([
        imp(WASI_PREVIEW1_MODULE, "fd_write", FUNC, uleb(0)),
        imp("env", "host_log", FUNC, uleb(0)),
    ]))
    exports = section(7, vec([exp("_start", FUNC, 2)]))
    assert refused(command(imports=imports, exports=exports)) == (
        "the module imports env.host_log, which is outside WASI preview 1"
    )


def test_wasi_name_that_does_not_exist():
    imports = section(2, vec([imp(WASI_PREVIEW1_MODULE, "not_a_call", FUNC, uleb(0))]))
    assert "wasi_snapshot_preview1.not_a_call" in refused(command(imports=imports))


def test_memory_import_is_refused():
    imports = section(2, vec([
        imp(WASI_PREVIEW1_MODULE, "fd_write", FUNC, uleb(0)),
        imp("env", "memory", MEM, limits(1)),
    ]))
    message = refused(command(memory=None, imports=imports))
    assert "memory" in message and "env.memory" in message
    info = inspect_module(command(memory=None, imports=imports))
    assert info.memories == (Memory(1, None, False, False, True),)


def test_too_big():
    message = refused(VALID, max_bytes=len(VALID) - 1)
    assert "MiB" in message and str(len(VALID)) in message and str(len(VALID) - 1) in message
    assert refused(b"x" * (3 * 1024 * 1024), max_bytes=2 * 1024 * 1024) == (
        "the module is 3 MiB (3145728 bytes), more than the 2 MiB (2097152 bytes) limit"
    )
    validate_worker_module(VALID, max_bytes=len(VALID))


def test_multi_memory():
    data = _module(TYPES, IMPORTS, FUNCS, section(5, vec([limits(1), limits(1)])), EXPORTS, CODE)
    assert "2 memories" in refused(data)


def test_memory64():
    message = refused(command(memory=limits(1, 4, is64=True)))
    assert "memory64" in message
    assert inspect_module(command(memory=limits(1, 4, is64=True))).memories[0].memory64


def test_bad_memory_limits():
    assert "below its initial" in refused(command(memory=limits(4, 2)))
    assert "more than 65536 pages" in refused(command(memory=limits(65537)))
    assert "shared memory must declare a maximum" in refused(command(memory=b"\x02\x01"))
    assert "flags 0x10" in refused(command(memory=b"\x10\x01"))


def test_non_bytes_input():
    with pytest.raises(InvalidModule):
        inspect_module("not bytes")  # type: ignore[arg-type]
    assert inspect_module(memoryview(VALID)).size == len(VALID)
    assert inspect_module(bytearray(VALID)).size == len(VALID)


# --- fuzz -------------------------------------------------------------------

def _outcome(data: bytes) -> None:
    try:
        inspect_module(data)
    except InvalidModule as exc:
        message = str(exc)
        assert message and "could not be parsed" not in message, message
        return
    try:
        validate_worker_module(data)
        cap_memory(data, 4)
    except InvalidModule as exc:
        assert "could not be parsed" not in str(exc)


def test_fuzz_mutations_and_random_bytes():
    rng = random.Random(20240607)
    started = time.perf_counter()
    base = _module(
        TYPES, IMPORTS, FUNCS,
        section(4, vec([b"\x70" + limits(1, 1)])),
        section(5, vec([limits(1, 2)])),
        section(6, vec([bytes([I32, 0]) + b"\x41\x2a\x0b"])),
        EXPORTS,
        section(9, vec([b"\x00\x41\x00\x0b" + vec([uleb(1)])])),
        section(12, uleb(1)),
        CODE,
        section(11, vec([b"\x00\x41\x10\x0b" + name("hi")])),
        custom("name", b"\x00\x01"),
    )
    validate_worker_module(base)
    for _ in range(3000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(4)
            pos = rng.randrange(len(data) + 1) if op == 1 else rng.randrange(max(1, len(data)))
            if op == 0 and data:
                data[pos] = rng.choice([rng.randrange(256), data[pos] ^ (1 << rng.randrange(8)), 0xFF, 0x80])
            elif op == 1:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
            elif op == 2 and data:
                del data[pos:pos + rng.randint(1, 6)]
            else:
                del data[pos:]
        _outcome(bytes(data))
    for i in range(2000):
        tail = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        _outcome(HEADER + tail if i % 2 else tail)
    assert time.perf_counter() - started < 5


def test_huge_lebs_and_counts_are_bounded():
    for payload in [b"\xff" * 40, b"\x80" * 40, b"\x80\x80\x80\x80\x80\x00", b"\x00"]:
        with pytest.raises(InvalidModule):
            inspect_module(_module(section(1, payload + b"\x60")))
    # a count far beyond the section's size fails at once instead of looping
    with pytest.raises(InvalidModule, match="declares 4294967295 types"):
        inspect_module(_module(section(1, b"\xff\xff\xff\xff\x0f")))


# --- cap_memory -------------------------------------------------------------

def _memory_section_span(data: bytes) -> tuple[int, int]:
    """Where the memory section (header included) starts and ends, found by hand."""
    pos = 8
    while pos < len(data):
        start, section_id = pos, data[pos]
        pos += 1
        size = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if section_id == 5:
            return start, pos + size
        pos += size
    raise AssertionError("no memory section")


def _assert_only_memory_section_changed(before: bytes, after: bytes) -> None:
    s1, e1 = _memory_section_span(before)
    s2, e2 = _memory_section_span(after)
    assert s1 == s2 and before[:s1] == after[:s2] and before[e1:] == after[e2:]


def test_cap_sets_a_missing_maximum():
    capped = cap_memory(VALID, 32)
    assert inspect_module(capped).memories == (Memory(1, 32, False, False, False),)
    _assert_only_memory_section_changed(VALID, capped)
    validate_worker_module(capped)


def test_cap_lowers_a_larger_maximum_and_keeps_a_smaller_one():
    data = command(memory=limits(1, 100))
    assert inspect_module(cap_memory(data, 50)).memories[0].maximum_pages == 50
    assert inspect_module(cap_memory(data, 500)).memories[0].maximum_pages == 100
    assert inspect_module(cap_memory(data, 100)).memories[0].maximum_pages == 100


def test_cap_refuses_when_initial_exceeds_it():
    with pytest.raises(InvalidModule) as info:
        cap_memory(command(memory=limits(40)), 32)
    assert str(info.value) == (
        "the module needs 2.5 MiB of memory at start (40 pages), more than its 2 MiB limit (32 pages)"
    )


def test_cap_keeps_the_shared_flag():
    capped = cap_memory(command(memory=limits(1, 64, shared=True)), 16)
    assert inspect_module(capped).memories == (Memory(1, 16, True, False, False),)


def test_cap_without_memory_section_is_a_no_op():
    data = command(memory=None, exports=START_ONLY)
    assert cap_memory(data, 16) == data


def test_cap_reencodes_lebs_and_section_size():
    data = command(memory=limits(1, 2))
    capped = cap_memory(data, 65536)  # nothing to lower: max stays 2
    assert capped == data
    unbounded = command(memory=limits(1))
    capped = cap_memory(unbounded, 65536)  # max 65536 needs 3 LEB bytes
    assert len(capped) == len(unbounded) + 3
    start, end = _memory_section_span(capped)
    assert capped[start:end] == b"\x05\x06\x01\x01\x01\x80\x80\x04"
    assert inspect_module(capped).memories[0].maximum_pages == 65536
    _assert_only_memory_section_changed(unbounded, capped)
    # over-long LEBs in the input are re-encoded canonically too
    padded = command(memory=b"\x01\x81\x80\x80\x00\x82\x80\x80\x00")
    capped = cap_memory(padded, 8)
    start, end = _memory_section_span(capped)
    assert capped[start:end] == b"\x05\x04\x01\x01\x01\x02"
    _assert_only_memory_section_changed(padded, capped)


def test_cap_clamps_to_the_wasm32_limit_and_validates_its_argument():
    capped = cap_memory(VALID, 10**6)
    assert inspect_module(capped).memories[0].maximum_pages == 65536
    for bad in (0, -1, True, 1.5):
        with pytest.raises(InvalidInput):
            cap_memory(VALID, bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidModule):
        cap_memory(b"junk", 16)


# --- real modules (fixtures built with zig cc, when present) ---------------

def _fixtures() -> list[Path]:
    found = sorted(FIXTURES.glob("**/*.wasm"))
    if not found:
        pytest.skip("no fixtures/*.wasm built yet")
    return found


def test_real_fixtures_inspect_and_cap():
    accepted = 0
    for path in _fixtures():
        data = path.read_bytes()
        inspect_module(data)  # real toolchain output always parses
        try:
            info = validate_worker_module(data)
        except InvalidModule:
            continue  # a fixture may be a deliberately refused module
        accepted += 1
        (memory,) = info.memories
        limit = max(memory.initial_pages, 2048)
        capped = cap_memory(data, limit)
        _assert_only_memory_section_changed(data, capped)
        expected = limit if memory.maximum_pages is None else min(limit, memory.maximum_pages)
        assert validate_worker_module(capped).memories[0].maximum_pages == expected
        with pytest.raises(InvalidModule, match="at start"):
            cap_memory(data, memory.initial_pages - 1)
    assert accepted, "no fixture is a valid Worker"


def test_gc_type_forms_and_other_imports():
    types = section(1, vec([
        functype(),
        b"\x4e" + vec([b"\x5f" + vec([b"\x78\x01", b"\x64\x01\x00"]), b"\x50" + vec([uleb(1)]) + b"\x5e\x7f\x01"]),
        b"\x60" + vec([b"\x63\x6e"]) + vec([]),
    ]))
    assert inspect_module(_module(types)).imports == ()
    with pytest.raises(InvalidModule, match="type 1 is not a function type"):
        inspect_module(_module(types, section(3, vec([uleb(1)]))))
    message = refused(command(imports=section(2, vec([imp("wasi_unstable", "fd_write", FUNC, uleb(0))]))))
    assert "wasi_unstable.fd_write" in message and "outside WASI preview 1" in message
    tag_import = section(2, vec([imp(WASI_PREVIEW1_MODULE, "fd_write", FUNC, uleb(0)), imp("env", "exn", 4, b"\x00\x01")]))
    exports = section(7, vec([exp("_start", FUNC, 1)]))
    assert "imports a tag (env.exn)" in refused(command(imports=tag_import, exports=exports))

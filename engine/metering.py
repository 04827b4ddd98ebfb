"""Make guest code stoppable: charge the static cost of straight-line code to one module-wide
budget, and make a WASI call whenever it runs out.

Why: wasmer-sdk stops a guest (timeout, kill, sandbox close) only when the guest makes a WASI
call that checks for it. A pure compute loop is reported to the host as TIMEOUT, but its thread
goes on spinning a core for ever, after its sandbox is closed and after the engine is: a tenant
could take every runtime thread with a few hundred requests. So every module is rewritten to
reach such a call often enough, whatever an adversary builds.

The scheme
----------
The module gets a mutable i32 global ``$budget`` (appended: no global index moves), starting at
``YIELD_BUDGET`` in every guest process, never reset by a call. Each function is cut into
*regions*, straight-line code between two region starts: the function's entry, every loop
header, the point right after every call into the module, the point right after the ``end`` of
any block holding a region start, the start of every legacy ``catch`` clause, and a split
wherever a region would cost more than ``REGION_MAX`` units. At its start a region's whole static
cost (every instruction in it, on every branch: an upper bound of one pass) is taken from the
budget. Some starts also *check*: when the budget is below zero they refill it and make the
*stop call*, a WASI call that wasmer-sdk checks for a stop request (``clock_time_get`` with an
invalid clock and an out-of-bounds pointer: it changes nothing and costs about 0.13 us, against
0.9 us for ``sched_yield``; ``random_get`` and ``args_sizes_get`` are no stop points, measured).
The entry, loop headers and the points after calls always check; the other starts only charge,
unless the charges taken since the last check on some path to them exceed ``UNCHECKED_MAX``
(computed statically, per function), or the function handles exceptions.

Costs are in units of about one simple instruction: 1 for most, ``W_MEM`` for a memory or table
access (a load that misses every cache takes about 200 ns), ``W_DIV`` for integer division,
``W_FDIV`` for float division and square root, ``W_GROW`` for ``memory.grow``, ``W_CALL`` plus
``LEAF_MAX`` for a call, ``W_IMPORT`` for a call to an import, ``W_THROW`` for a throw and, in a
module that can throw, ``W_UNWIND`` more for every call (an unwound frame costs about 0.4 us).
Bulk memory instructions (``memory.fill``, ``memory.copy``, ``memory.init``) become calls to
generated helpers that check their bounds first (out of bounds, the helper runs the original
instruction, which traps exactly as before and writes nothing) and then work in chunks of
``BULK_CHUNK`` bytes, each charged by its length before it runs and followed by a check. Table
instructions whose work grows with an operand (``table.grow``, ``table.fill``, ``table.copy``,
``table.init``) are charged by that operand, and checked, just before they run (tables are
capped at load: ``wasm_module.prepare_to_run``). WASI calls that can make the host hold files,
and ``random_get``, go through generated wrappers (``file_quota``).

The bound
---------
Code runs again only through a loop header or a call, and both start regions, so every
instruction that runs was charged at the last region start its frame passed, and no call or loop
lies between that start and the instruction (that is what the region after a block holding one
is for: without it, code after a block that made a call would be prepaid before the call, and a
deep recursion unwinding through such frames would run all of it after the stop call). A frame
suspended in a call has nothing prepaid left. So between two stop calls a guest runs at most:
what was prepaid before the first (one region), the charges taken after it until the budget runs
out (``YIELD_BUDGET`` and the charge that overdraws it), and what runs between that charge and the
next check (``UNCHECKED_MAX`` and one region): ``BOUND_UNITS``, about 1.16 M units, in all.
Functions with no loop, no call into the module, nothing charged by count and a static cost of at
most ``LEAF_MAX`` (cheap leaves) are left alone: every call site pays ``LEAF_MAX`` for them.

In time (2-core machine, wasmer-sdk 0.5.0 with cranelift): simple instructions run at 0.1-0.6 ns
a unit; the slowest measured per unit is a chain of dependent loads missing every cache and the
TLB over 64-96 MiB of linear memory, about 195 ns a load, 3 ns a unit; a throw unwinding deep
recursion is under 2 ns a unit. So a guest runs at most about 3.5 ms (typically well under 1 ms)
between two points where wasmer-sdk can stop it. ``bench/metering.py`` measures the stop itself:
with a deadline, guests that never finish return 2-8 ms after it (pointer chase the slowest;
wasmer-sdk alone, for a guest that does nothing but stop calls, takes about 2.5 ms) and use no CPU
afterwards.

Speed
-----
Loop headers cost a subtract and a branch: in functions without exception handling the budget
lives in a new local while the function runs (written back to the global before every call into
the module, return, tail call, throw and branch out of the function, read again after every
call), and a loop's check, when the budget is spent, leaves the loop (``loop bt`` becomes
``block bt (loop $again bt (block $stop (loop bt ...``), so the stop call sits outside the loop and
the loop keeps its values in registers. Direct calls to cheap leaves (found first, by a probe
that gives up on a function as soon as it is not one) skip the write-back and read. Functions that
handle exceptions keep the budget in the global: a caught exception arrives without passing a
write-back. Figures: ``bench/README.md``.

Other rewrites
--------------
- The stop call's import and ``args_sizes_get`` (and ``fd_filestat_get`` for the file wrappers)
  are imported if the module does not import them: appended after the other imports, so every
  defined function index moves up, and every place a function index appears is renumbered
  (calls, ``ref.func``, element segments, global and table initializers, exports, the start
  function, the ``name`` section). References to a wrapped WASI import point at its wrapper.
- A WASI command's ``_start`` export is replaced by an entry function that first answers a
  *compile probe* (run with two or more arguments, it restores the 8 bytes of memory it used and
  returns, so the engine compiles and instantiates a module at deploy without running any of its
  code), then calls the module's start function (moved here from the start section: wasmer-sdk
  runs a start function before the WASI context exists, so one that reaches a WASI call, as any
  metered loop does, failed with "WASM context is invalid"), then the original ``_start``.
- ``memory.atomic.wait32/64`` are refused (they block a runtime thread where nothing can stop
  it), as are 64-bit memories and tables, the GC proposal's instructions, any instruction this
  decoder does not know, and functions that would exceed Wasmer's 7,654,321-byte body limit once
  metered. Debug sections that point into the code section are dropped.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

from . import file_quota
from .errors import InvalidModule
from .wasm_module import WASI_PREVIEW1_MODULE, _Parser, _Reader, _uleb

SCHEME = "wasmdeck-metering-2"  # changes whenever the rewrite does: stored metered modules are redone

YIELD_BUDGET = 1 << 20  # units between two stop points
REGION_MAX = 1 << 14  # a longer stretch of straight-line code is split into regions of at most this
UNCHECKED_MAX = 1 << 14  # charges a path may take after the last check before a region start must check
LEAF_MAX = 256  # functions this cheap, without loops or calls, are charged at their call sites
W_MEM = 64  # a load, a store, a table access (a cache miss is about 200 ns)
W_DIV = 16  # integer division and remainder
W_FDIV = 8  # float division and square root
W_CALL = 16  # a call, plus LEAF_MAX for a callee left alone
W_IMPORT = 64  # a call to an imported (WASI) function
W_GROW = 1 << 14  # memory.grow
W_REF_FUNC = 16
W_THROW = 1 << 12  # a throw (about 4 us)
W_UNWIND = 256  # more per call in a module that can throw (an unwound frame is about 0.4 us)
BULK_CHUNK = 1 << 16  # bytes per chunk of memory.fill / copy / init
BULK_BASE = 64  # units per chunk, plus its length shifted right by:
FILL_SHIFT = 2  # 16,384 units a 64 KiB chunk: filling memory touched for the first time faults its pages in (about 1 GB/s)
COPY_SHIFT = 2
TABLE_SHIFT = 2  # table.grow / fill / copy / init: (count >> 2) + W_MEM units
MAX_WEIGHT = max(W_GROW, (BULK_CHUNK >> COPY_SHIFT) + BULK_BASE)  # the most one instruction or chunk is charged
# prepaid before a stop call (one region), charges until the budget is overdrawn (including the
# overdrawing one), and what runs from there to the next check
BOUND_UNITS = YIELD_BUDGET + 3 * (REGION_MAX + MAX_WEIGHT) + UNCHECKED_MAX

MAX_FUNCTION_BODY_BYTES = 7_654_321  # what Wasmer (wasmparser) accepts in one function body
MAX_LOCALS = 50_000  # what Wasmer (wasmparser) accepts in one function

STOP_POINT = "clock_time_get"
PROBE = "args_sizes_get"
_STOP_TYPE = b"\x60\x03\x7f\x7e\x7f\x01\x7f"  # func [i32 i64 i32] -> [i32]
_PROBE_TYPE = b"\x60\x02\x7f\x7f\x01\x7f"  # func [i32 i32] -> [i32]
_VOID_TYPE = b"\x60\x00\x00"  # func [] -> []
_BULK_TYPE = b"\x60\x03\x7f\x7f\x7f\x00"  # func [i32 i32 i32] -> []

# Custom sections that hold offsets into the code section, or describe the pre-link layout.
_STALE_CUSTOM_PREFIXES = (".debug_", "reloc.", "metadata.code.")
_STALE_CUSTOM_NAMES = {"linking", "sourceMappingURL", "external_debug_info"}
# Section ids in the order the spec requires them (custom sections aside).
_SECTION_RANK = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 13: 6, 6: 7, 7: 8, 8: 9, 9: 10, 12: 11, 10: 12, 11: 13}


def meter(data: bytes) -> bytes:
    """Return the metered module (see the module docstring).

    Raises InvalidModule with one clear sentence when the module is malformed, uses an
    instruction this rewriter does not understand or refuses, or would exceed Wasmer's limits
    once metered.
    """
    try:
        return _Rewriter(data).run()
    except InvalidModule:
        raise
    except (IndexError, ValueError, TypeError, OverflowError, RecursionError, MemoryError, AssertionError) as exc:
        # A safety net: the rewriter is written not to get here (a module it cannot rewrite soundly is refused).
        raise InvalidModule(f"the module could not be metered ({type(exc).__name__}); it is probably corrupt") from None


ISOLATE_ABOVE_BYTES = 1 << 20  # larger modules are metered in a child process (see meter_isolated)
ISOLATED_MEMORY_BYTES = 4 << 30  # the child's address-space limit
ISOLATED_TIMEOUT_S = 600


def meter_isolated(data: bytes) -> bytes:
    """meter(), in a child process when the module is larger than ISOLATE_ABOVE_BYTES: metering
    a big module takes seconds of pure Python and hundreds of MiB, which must not hold this
    process's GIL (the event loop serving requests would stall) nor its memory. The child runs
    with `-P`: a folder named `wasmdeck` in the current directory (a checkout) must not shadow the
    installed package."""
    if len(data) <= ISOLATE_ABOVE_BYTES:
        return meter(data)
    try:
        done = subprocess.run(
            [sys.executable, "-P", "-m", __name__], input=bytes(data), capture_output=True,
            timeout=ISOLATED_TIMEOUT_S, check=False,
        )
    except subprocess.TimeoutExpired:
        raise InvalidModule(f"the module could not be metered within {ISOLATED_TIMEOUT_S} s") from None
    if done.returncode == 0:
        return done.stdout
    message = done.stderr.decode("utf-8", "replace").strip().splitlines()
    if done.returncode == 2 and message:
        raise InvalidModule(message[-1])
    raise InvalidModule(f"the module could not be metered: the metering process failed (exit status {done.returncode})")


def _limit_child_memory() -> None:
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_AS, (ISOLATED_MEMORY_BYTES, ISOLATED_MEMORY_BYTES))
    except (ValueError, OSError):
        pass


def _main() -> int:
    """``python -m wasmdeck.engine.metering``: meter the module on stdin to stdout (exit 2 and
    one sentence on stderr when it is refused)."""
    _limit_child_memory()
    try:
        out = meter(sys.stdin.buffer.read())
    except InvalidModule as refused:
        print(str(refused), file=sys.stderr)
        return 2
    sys.stdout.buffer.write(out)
    return 0


# --- encoding helpers -------------------------------------------------------------------------

def _sleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40):
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _name(text: str) -> bytes:
    raw = text.encode()
    return _uleb(len(raw)) + raw


def _section_bytes(section_id: int, payload: bytes) -> bytes:
    return bytes([section_id]) + _uleb(len(payload)) + payload


_Patches = list[tuple[int, int, bytes]]  # (from, to, replacement), in order, positions in the module


def _splice(raw: bytes, start: int, end: int, patches: _Patches) -> bytes:
    """raw[start:end] with the patches applied (in order, none overlapping)."""
    pieces, at = [], start
    for lo, hi, new in patches:
        if lo < at:
            raise AssertionError("the rewrite planned overlapping or unordered edits")
        pieces.append(raw[at:lo])
        pieces.append(new)
        at = hi
    pieces.append(raw[at:end])
    return b"".join(pieces)


# --- the section walker -----------------------------------------------------------------------

@dataclass(frozen=True)
class _Section:
    id: int
    start: int  # offset of the id byte
    body: int  # offset of the payload
    end: int


def _sections(raw: bytes) -> list[_Section]:
    """The module's sections in file order (the module has been parsed already)."""
    out, pos, view = [], 8, memoryview(raw)
    while pos < len(raw):
        r = _Reader(view, pos + 1, len(raw), "the module")
        size = r.u32()
        out.append(_Section(raw[pos], pos, r.pos, r.pos + size))
        pos = r.pos + size
    return out


# --- the instruction decoder ------------------------------------------------------------------

# How the immediates of each one-byte opcode are encoded, and what the rewriter does with it.
(_BAD, _NONE, _LEB, _MEMARG, _BLOCK, _LOOP, _IF, _ELSE, _END, _CALL, _CALL_INDIRECT, _CALL_REF,
 _RETURN_CALL, _RETURN_CALL_INDIRECT, _RETURN_CALL_REF, _REF_FUNC, _BR, _BR_TABLE, _BR_ON, _RETURN,
 _THROW, _BYTES4, _BYTES8, _SELECT_T, _TRY, _CATCH, _CATCH_ALL, _TRY_TABLE, _DELEGATE,
 _PREFIX_FC, _PREFIX_FD, _PREFIX_FE) = range(32)

_OPCODES = [_BAD] * 256
_WEIGHTS = [1] * 256
# instructions that keep a function from being a cheap leaf (direct calls are judged by their callee)
_NOT_LEAF = {_LOOP, _CALL_INDIRECT, _CALL_REF, _RETURN_CALL_INDIRECT, _RETURN_CALL_REF, _TRY, _TRY_TABLE}


def _define(kind: int, *opcodes: int) -> None:
    for op in opcodes:
        _OPCODES[op] = kind


_define(_NONE,
        0x00, 0x01,  # unreachable, nop
        0x1A, 0x1B,  # drop, select
        0xD1, 0xD3, 0xD4,  # ref.is_null, ref.eq, ref.as_non_null
        *range(0x45, 0xC5))  # numeric instructions, including sign extension (0xC0-0xC4)
_define(_LEB,
        *range(0x20, 0x27),  # local.get/set/tee, global.get/set, table.get/set
        0x3F, 0x40,  # memory.size, memory.grow (memory index)
        0x41, 0x42,  # i32.const, i64.const (signed, but skipped the same way)
        0xD0)  # ref.null heap type (s33)
_define(_MEMARG, *range(0x28, 0x3F))  # loads and stores
_define(_BLOCK, 0x02)
_define(_LOOP, 0x03)
_define(_IF, 0x04)
_define(_ELSE, 0x05)
_define(_TRY, 0x06)  # legacy exception handling
_define(_CATCH, 0x07)
_define(_THROW, 0x08, 0x09, 0x0A)  # throw tag, rethrow depth, throw_ref
_define(_END, 0x0B)
_define(_BR, 0x0C, 0x0D)  # br, br_if
_define(_BR_TABLE, 0x0E)
_define(_RETURN, 0x0F)
_define(_CALL, 0x10)
_define(_CALL_INDIRECT, 0x11)  # type index, table index
_define(_RETURN_CALL, 0x12)
_define(_RETURN_CALL_INDIRECT, 0x13)
_define(_CALL_REF, 0x14)  # type index
_define(_RETURN_CALL_REF, 0x15)
_define(_DELEGATE, 0x18)
_define(_CATCH_ALL, 0x19)
_define(_SELECT_T, 0x1C)
_define(_TRY_TABLE, 0x1F)
_define(_BYTES4, 0x43)  # f32.const
_define(_BYTES8, 0x44)  # f64.const
_define(_REF_FUNC, 0xD2)
_define(_BR_ON, 0xD5, 0xD6)  # br_on_null, br_on_non_null
_define(_PREFIX_FC, 0xFC)
_define(_PREFIX_FD, 0xFD)
_define(_PREFIX_FE, 0xFE)

for _op in range(0x28, 0x3F):
    _WEIGHTS[_op] = W_MEM
for _op in (0x25, 0x26):  # table.get, table.set
    _WEIGHTS[_op] = W_MEM
for _op in (0x6D, 0x6E, 0x6F, 0x70, 0x7F, 0x80, 0x81, 0x82):  # integer div and rem
    _WEIGHTS[_op] = W_DIV
for _op in (0x91, 0x95, 0x9F, 0xA3):  # float sqrt and div
    _WEIGHTS[_op] = W_FDIV
for _op in (0x08, 0x09, 0x0A):
    _WEIGHTS[_op] = W_THROW
_WEIGHTS[0x40] = W_GROW
_WEIGHTS[0xD2] = W_REF_FUNC

# 0xFC: saturating truncation (0-7) has no immediates; bulk memory and table ops take indices.
_FC_LEBS = {**{sub: 0 for sub in range(8)}, 8: 2, 9: 1, 10: 2, 11: 1, 12: 2, 13: 1, 14: 2, 15: 1, 16: 1, 17: 1}
_FC_BULK_MEMORY = {8, 10, 11}  # memory.init, memory.copy, memory.fill: become helper calls
_FC_TABLE_WORK = {12, 14, 15, 17}  # table.init, table.copy, table.grow, table.fill: charged by their count
_FC_CHARGED = _FC_BULK_MEMORY | _FC_TABLE_WORK
# 0xFD (SIMD): the numbers up to the last relaxed SIMD instruction (0x113) that no instruction uses.
_FD_UNUSED = {154, 162, 165, 166, 175, 176, 178, 179, 180, 187, 194, 197, 198, 207, 208, 210, 211, 212, 226, 238}
_FD_MAX = 0x113
_FD_MEMORY = {*range(0, 12), *range(84, 94)}  # loads, stores, lane loads and stores, load-zero
_SINGLE_BYTE_VALTYPES = {0x7F, 0x7E, 0x7D, 0x7C, 0x7B, *range(0x69, 0x75)}  # numbers, v128, ref shorthands


class _Unsupported(Exception):
    """An instruction the decoder does not know; its args[0] names it, e.g. "0xfb 1"."""


class _NotLight(Exception):
    """The function probed is not a cheap leaf."""


class _TooBig(Exception):
    """The function would grow past MAX_FUNCTION_BODY_BYTES once metered."""


class _Refused(Exception):
    """An instruction the decoder knows but wasmdeck refuses; args[0] is the sentence's reason."""


def _read_u32(d: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = d[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 28:
            raise ValueError("an integer is encoded in more than 5 bytes")


def _skip_leb(d: bytes, pos: int) -> int:
    while d[pos] & 0x80:
        pos += 1
    return pos + 1


def _skip_memarg(d: bytes, pos: int) -> int:
    has_memory_index = d[pos] & 0x40  # bit 6 of the alignment
    pos = _skip_leb(d, pos)
    if has_memory_index:
        pos = _skip_leb(d, pos)
    return _skip_leb(d, pos)  # offset (u64)


def _skip_blocktype(d: bytes, pos: int) -> int:
    byte = d[pos]
    if byte == 0x40 or byte in _SINGLE_BYTE_VALTYPES:
        return pos + 1
    if byte in (0x63, 0x64):  # (ref null? <heap type>)
        return _skip_leb(d, pos + 1)
    if 0x40 <= byte < 0x80:  # a negative s33 that is no value type
        raise _Unsupported(f"with block type 0x{byte:02x}")
    return _skip_leb(d, pos)  # a type index


def _skip_valtype(d: bytes, pos: int) -> int:
    byte = d[pos]
    if byte in (0x63, 0x64):
        return _skip_leb(d, pos + 1)
    if byte not in _SINGLE_BYTE_VALTYPES:
        raise _Unsupported(f"with value type 0x{byte:02x}")
    return pos + 1


# --- snippets ---------------------------------------------------------------------------------

_I32_CONST_0_LT_S = b"\x41\x00\x48"
_IF_VOID = b"\x04\x40"


# --- the rewriter -----------------------------------------------------------------------------

# Check point kinds (what is inserted where a region starts).
_ENTRY, _RELOAD, _CHECK = range(3)  # from the global / from the global after a call / from the local


@dataclass(slots=True)
class _Frame:
    entry_region: int  # the region code at the frame's start is charged to
    holds_check: bool = False  # a region starts inside it
    wrapped: bool = False  # a loop given three enclosing frames (see _Rewriter.loop_head)
    is_loop: bool = False
    exit_debt: int = 0  # the largest unchecked charge a branch carries to the frame's end


@dataclass
class _BodyPlan:
    """The rewrite of one function body: insertions and replacements, in order."""

    edits: list = field(default_factory=list)  # (pos, end, bytes | (kind, region)) in order
    costs: list[int] = field(default_factory=lambda: [0])
    cost_total: int = 0
    light: bool = True  # no loop, no call, nothing dynamic: may be left alone if cheap enough
    cached: bool = True  # the budget lives in a local while the function runs (no exception handling)


@dataclass(frozen=True)
class _Helper:
    kind: str  # "fill", "copy", "init"
    a: int  # memory index (fill, init: destination; copy: destination)
    b: int = 0  # copy: source memory index; init: data segment index


class _Rewriter:
    def __init__(self, data: bytes):
        if isinstance(data, memoryview):
            data = bytes(data)
        parser = _Parser(data)
        info = parser.parse()  # structure, bounds and section order are checked here
        self.raw = bytes(data)
        self.view = memoryview(self.raw)
        self.parser = parser
        self.info = info
        self.types = parser.types
        self.func_types = parser.func_types
        self.imported_funcs = parser.imported_funcs
        self.sections = _sections(self.raw)
        self.by_id = {s.id: s for s in self.sections if s.id != 0}
        if any(m.memory64 for m in info.memories):
            raise InvalidModule("the module uses a 64-bit memory (memory64), which wasmdeck cannot meter; build it for wasm32")
        if any(t.table64 for t in info.tables):
            raise InvalidModule("the module uses a 64-bit table, which wasmdeck cannot meter")
        self.can_throw = parser.tags > 0
        self.call_weight = W_CALL + LEAF_MAX + (W_UNWIND if self.can_throw else 0)
        self.type_bytes, self.plain_types = self.read_types()
        self.new_types: list[bytes] = []
        self.budget_global = _uleb(parser.globals)

    # --- types and imports --------------------------------------------------------------------

    def read_types(self) -> tuple[list[bytes | None], dict[bytes, int]]:
        """Each type's encoding (None inside a rec group) and the index of each plain function type."""
        section = self.by_id.get(1)
        if section is None:
            return [], {}
        r = _Reader(self.view, section.body, section.end, "the type section")
        encodings: list[bytes | None] = []
        plain: dict[bytes, int] = {}
        for _ in range(r.u32()):
            start = r.pos
            form = r.u8()
            if form == 0x4E:  # a rec group
                for _ in range(r.u32()):
                    self.parser._sub_type(r, None)
                    encodings.append(None)
                continue
            self.parser._sub_type(r, form)
            raw = self.raw[start:r.pos]
            plain.setdefault(raw, len(encodings))
            encodings.append(raw)
        return encodings, plain

    def type_index(self, encoding: bytes) -> int:
        """The index of a plain function type with this encoding, appending it if there is none."""
        if encoding not in self.plain_types:
            self.plain_types[encoding] = len(self.type_bytes) + len(self.new_types)
            self.new_types.append(encoding)
        return self.plain_types[encoding]

    def wasi_import(self, field_name: str, encoding: bytes, added: list[tuple[str, int]]) -> int:
        """The function index of the module's own import of wasi_snapshot_preview1.<field_name>, or of
        one to be added (recorded in ``added``)."""
        for index, (module, name, type_index) in enumerate(self.parser.func_imports):
            if module == WASI_PREVIEW1_MODULE and name == field_name:
                if self.type_bytes[type_index] != encoding:
                    raise InvalidModule(
                        f"the module imports {WASI_PREVIEW1_MODULE}.{field_name} with the wrong signature, "
                        "so it cannot run"
                    )
                return index
        added.append((field_name, self.type_index(encoding)))
        return self.imported_funcs + len(added) - 1

    # --- the plan -----------------------------------------------------------------------------

    def run(self) -> bytes:
        p = self.parser
        exports_start = any(e.name == "_start" and e.kind == "func" for e in self.info.exports)
        has_memory = bool(self.info.memories)
        self.added_imports: list[tuple[str, int]] = []
        self.stop_index = self.wasi_import(STOP_POINT, _STOP_TYPE, self.added_imports)
        self.probe_index = (self.wasi_import(PROBE, _PROBE_TYPE, self.added_imports)
                            if exports_start and has_memory else None)
        # WASI functions that can make the host hold files (see file_quota): by import index
        wrapped = {
            index: name for index, (module, name, type_index) in enumerate(p.func_imports)
            if has_memory and module == WASI_PREVIEW1_MODULE
            and self.type_bytes[type_index] == file_quota.SIGNATURES.get(name)
        }
        self.filestat_index = (self.wasi_import(file_quota.FILESTAT, file_quota.FILESTAT_SIGNATURE, self.added_imports)
                               if set(wrapped.values()) & file_quota.NEEDS_FILESTAT else None)
        self.shift = len(self.added_imports)
        defined = len(self.func_types) - self.imported_funcs
        self.next_function = self.imported_funcs + self.shift + defined  # new index space
        # New functions, in this order: the stop helper, the entry function, the file size helper,
        # the WASI wrappers, bulk helpers (as found).
        self.new_functions: list[tuple[int, bytes]] = []  # (type index, body)
        self.stop_helper = self.add_function(_VOID_TYPE, None)
        self.entry = self.add_function(_VOID_TYPE, None) if exports_start else None
        self.file_size = (self.add_function(file_quota.FILE_SIZE_TYPE, None)
                          if self.filestat_index is not None else None)
        self.wrapped = wrapped
        self.interposed: dict[int, int] = {  # import index -> its wrapper's index
            index: self.add_function_of_type(p.func_imports[index][2]) for index in wrapped
        }
        self.quota_global = p.globals + 1
        self.helpers: dict[_Helper, int] = {}

        code = self.by_id.get(10)
        self.light_functions(code)
        bodies = self.rewrite_code(code) if code is not None else []
        self.finish_new_functions()

        appended: dict[int, list[bytes]] = {
            1: self.new_types,
            2: [_name(WASI_PREVIEW1_MODULE) + _name(field) + b"\x00" + _uleb(t) for field, t in self.added_imports],
            3: [_uleb(t) for t, _ in self.new_functions],
            6: [b"\x7f\x01\x41" + _sleb(YIELD_BUDGET) + b"\x0b"]  # (global $budget (mut i32) (i32.const budget))
            + ([b"\x7e\x01\x42" + _sleb(file_quota.FILE_WRITE_QUOTA) + b"\x0b"] if self.wrapped else []),  # $quota
            10: [body for _, body in self.new_functions],
        }
        out = [self.raw[:8]]
        written: set[int] = set()

        def add_missing_before(rank: int) -> None:
            for sid in sorted(appended, key=_SECTION_RANK.__getitem__):
                if sid not in self.by_id and sid not in written and _SECTION_RANK[sid] < rank and appended[sid]:
                    out.append(_section_bytes(sid, _uleb(len(appended[sid])) + b"".join(appended[sid])))
                    written.add(sid)

        for section in self.sections:
            if section.id == 0:
                out.append(self.rewrite_custom(section))
                continue
            add_missing_before(_SECTION_RANK[section.id])
            written.add(section.id)
            if section.id == 8 and self.entry is not None:
                continue  # the start function is called from the entry function
            if section.id == 10:
                code_payload = _uleb(len(bodies) + len(appended[10])) + b"".join(bodies) + b"".join(appended[10])
                out.append(_section_bytes(10, code_payload))
                continue
            payload = self.rewrite_function_refs(section) if section.id in (4, 6, 7, 8, 9) else None
            if section.id in appended and appended[section.id]:
                r = _Reader(self.view, section.body, section.end, "the module")
                count = r.u32()
                rest = self.raw[r.pos:section.end] if payload is None else payload[r.pos - section.body:]
                payload = _uleb(count + len(appended[section.id])) + rest + b"".join(appended[section.id])
            out.append(self.raw[section.start:section.end] if payload is None else _section_bytes(section.id, payload))
        add_missing_before(max(_SECTION_RANK.values()) + 1)
        return b"".join(out)

    def add_function(self, type_encoding: bytes, body: bytes | None) -> int:
        return self.add_function_of_type(self.type_index(type_encoding))

    def add_function_of_type(self, type_index: int) -> int:
        index = self.next_function + len(self.new_functions)
        self.new_functions.append((type_index, b""))
        return index

    def new_index(self, index: int) -> int:
        """Where an original function index points after the rewrite (a wrapped WASI import: to
        its wrapper, so the guest cannot reach the import itself)."""
        if index >= self.imported_funcs:
            return index + self.shift
        return self.interposed.get(index, index)

    def func_index_patch(self, r: _Reader, patches: _Patches, *, names: bool = False) -> None:
        """Read a function index at r and, if it moves, record the patch (``names``: for the name
        section, where an import keeps its own index)."""
        start = r.pos
        index = r.u32()
        moved = index + self.shift if index >= self.imported_funcs else index
        if not names:
            moved = self.new_index(index)
        if moved != index:
            patches.append((start, r.pos, _uleb(moved)))

    # --- sections that name functions ---------------------------------------------------------

    def rewrite_function_refs(self, section: _Section) -> bytes | None:
        """The payload of a table, global, export, start or element section with its function
        indices moved, or None when nothing changes."""
        r = _Reader(self.view, section.body, section.end, "the module")
        patches: _Patches = []
        if section.id == 8:  # start
            self.func_index_patch(r, patches)
        elif section.id == 7:  # exports
            for _ in range(r.u32()):
                name = r.name()
                kind = r.u8()
                start = r.pos
                index = r.u32()
                if kind == 0:
                    target = self.entry if name == "_start" and self.entry is not None else self.new_index(index)
                    if target != index:
                        patches.append((start, r.pos, _uleb(target)))
        elif section.id == 6:  # globals
            for _ in range(r.u32()):
                r.global_type()
                self.const_expr(r, patches)
        elif section.id == 4:  # tables
            for _ in range(r.u32()):
                if self.raw[r.pos] == 0x40:  # 0x40 0x00 tabletype expr: a table with an initializer
                    r.bytes(2)
                    r.table_type()
                    self.const_expr(r, patches)
                else:
                    r.table_type()
        elif section.id == 9:  # elements
            for _ in range(r.u32()):
                flags = r.u32()
                if flags & 0x03 == 2:  # active, with an explicit table index
                    r.u32()
                if not flags & 0x01:  # active: offset expression
                    self.const_expr(r, patches)
                if flags & 0x03:  # element kind (0x00, funcref) or reference type
                    if flags & 0x04:
                        r.ref_type()
                    else:
                        r.u8()
                for _ in range(r.u32()):
                    if flags & 0x04:
                        self.const_expr(r, patches)
                    else:
                        self.func_index_patch(r, patches)
        if not patches:
            return None
        return _splice(self.raw, section.body, section.end, patches)

    def const_expr(self, r: _Reader, patches: _Patches) -> None:
        """Walk a constant expression (the opcodes _Reader.const_expr allows), moving ref.func."""
        while True:
            op = r.u8()
            if op == 0x0B:
                return
            if op == 0xD2:  # ref.func
                self.func_index_patch(r, patches)
            elif op == 0x41:  # i32.const
                r.s(32)
            elif op == 0x42:  # i64.const
                r.s(64)
            elif op == 0x23:  # global.get
                r.u32()
            elif op in (0x43, 0x44):  # f32.const, f64.const
                r.bytes(4 if op == 0x43 else 8)
            elif op == 0xD0:  # ref.null
                r.heap_type()
            elif op == 0xFD:  # v128.const (the only SIMD instruction allowed here)
                r.u32()
                r.bytes(16)
            elif op == 0xFB:  # GC allocation and conversion: type indices only
                sub = r.u32()
                for _ in range({0: 1, 1: 1, 6: 1, 7: 1, 8: 2}.get(sub, 0)):
                    r.u32()
            # else: extended-const arithmetic, no immediates (_Parser allowed nothing else)

    # --- code ---------------------------------------------------------------------------------

    def light_functions(self, section: _Section | None) -> set[int]:
        """The defined functions left alone as cheap leaves: their callers pay for them and make
        such calls without handing over the budget."""
        self.light: set[int] = set()
        if section is None:
            return self.light
        r = _Reader(self.view, section.body, section.end, "the code section")
        for i in range(r.u32()):
            size = r.u32()
            start = r.pos
            r.pos += size
            body = _Reader(self.view, start, r.pos, "the code section")
            for _ in range(body.u32()):
                body.u32()
                body.value_type()
            try:
                self.scan(body.pos, r.pos, probe=True)
            except (_NotLight, _Unsupported, _Refused, _TooBig, ValueError, IndexError):
                continue  # not light (or refused, which rewrite_body will say)
            self.light.add(self.imported_funcs + i)
        return self.light

    def rewrite_code(self, section: _Section) -> list[bytes]:
        """The rewritten bodies (each with its size), in order."""
        r = _Reader(self.view, section.body, section.end, "the code section")
        count = r.u32()
        bodies = []
        for i in range(count):
            size = r.u32()
            start = r.pos
            r.pos += size
            body = self.rewrite_body(self.imported_funcs + i, start, r.pos)
            bodies.append(_uleb(len(body)) + body)
        return bodies

    def stop_call(self) -> bytes:
        return b"\x10" + _uleb(self.stop_helper)

    def rewrite_body(self, func: int, start: int, end: int) -> bytes:
        """One function body, instrumented (or only renumbered, for a cheap leaf)."""
        r = _Reader(self.view, start, end, "the code section")
        r.what = f"the body of function {func}"
        groups = r.u32()
        groups_start = r.pos
        declared = 0
        for _ in range(groups):
            declared += r.u32()
            r.value_type()
        code_start = r.pos
        signature = self.types[self.func_types[func]]
        assert signature is not None  # the parser refuses a function whose type is not a function type
        params = signature[0]
        if end - start > MAX_FUNCTION_BODY_BYTES:
            raise InvalidModule(
                f"function {func} is {end - start:,} bytes, over the {MAX_FUNCTION_BODY_BYTES:,}-byte limit of a "
                "function body, so the module could not run; split the function"
            )
        try:
            plan = self.scan(code_start, end)
        except _Unsupported as unsupported:
            raise InvalidModule(
                f"the module uses instruction {unsupported.args[0]} (in function {func}), "
                "which wasmdeck cannot meter for CPU limits"
            ) from None
        except _Refused as refused:
            raise InvalidModule(f"the module uses {refused.args[0]} (in function {func})") from None
        except _TooBig:
            raise InvalidModule(self.too_big(func, None)) from None
        except (ValueError, IndexError):
            raise InvalidModule(
                f"the code section is malformed: the body of function {func} does not decode to valid instructions"
            ) from None
        if (plan.light and plan.cost_total <= LEAF_MAX) != (func in self.light):
            raise AssertionError(f"function {func} was judged a cheap leaf by one pass and not by the other")
        if func in self.light:
            edits = [(lo, hi, new) for lo, hi, new in plan.edits if isinstance(new, bytes)]
            return self.raw[start:code_start] + _splice(self.raw, code_start, end, edits)
        if params + declared + 2 > MAX_LOCALS:
            raise InvalidModule(f"function {func} has too many locals to add the ones that meter it for CPU limits")
        b = _uleb(params + declared)  # the budget (or scratch) local, then the count local
        n = _uleb(params + declared + 1)
        cached = plan.cached
        snippets = []
        made: dict[tuple, bytes] = {}  # the same snippet recurs: make each once
        costs = plan.costs
        for lo, hi, new in plan.edits:
            if new.__class__ is tuple:
                key = (new[0], costs[new[1]] if new[1] is not None else 0, new[2] if len(new) > 2 else None)
                code = made.get(key)
                if code is None:
                    if key[0] == "loophead":
                        assert key[2] is not None  # a loop head's edit carries its block type
                        code = self.loop_head(key[2], key[1], b, cached)
                    elif key[0] == "looptail":
                        code = self.loop_tail(b, cached)
                    else:
                        code = self.snippet(key[0], key[1], b, n, cached)
                    made[key] = code
                new = code
            snippets.append((lo, hi, new))
        header = _uleb(groups + 1) + self.raw[groups_start:code_start] + b"\x02\x7f"  # + (2 x i32)
        body = header + _splice(self.raw, code_start, end, snippets)
        if len(body) > MAX_FUNCTION_BODY_BYTES:
            raise InvalidModule(self.too_big(func, len(body)))
        return body

    @staticmethod
    def too_big(func: int, size: int | None) -> str:
        grown = f"{size:,} bytes" if size is not None else "larger"
        return (f"function {func} would be {grown} once metered, over the {MAX_FUNCTION_BODY_BYTES:,}-byte limit of a "
                "function body, so the module could not run; split the function")

    def snippet(self, kind: str, cost: int, b: bytes, n: bytes, cached: bool) -> bytes:
        """The code inserted at a check point (see the module docstring). In the cached mode ``b``
        holds the budget; otherwise it is scratch. ``n`` is scratch for a dynamic charge."""
        g = self.budget_global
        refill = b"\x41" + _sleb(YIELD_BUDGET) + (b"\x21" + b if cached else b"\x24" + g) + self.stop_call()
        if cached:
            test = b"\x22" + b + _I32_CONST_0_LT_S + _IF_VOID + refill + b"\x0b"  # local.tee b; if b < 0 {...}
        else:
            test = (b"\x22" + b + b"\x24" + g + b"\x20" + b  # local.tee t; global.set g; local.get t
                    + _I32_CONST_0_LT_S + _IF_VOID + refill + b"\x0b")
        if kind == "writeback":
            return b"\x20" + b + b"\x24" + g if cached else b""
        if kind == "dynamic":  # the count is on top of the stack: take (count >> TABLE_SHIFT) + W_MEM
            source = b"\x20" + b if cached else b"\x23" + g
            return (b"\x22" + n + source + b"\x20" + n + b"\x41" + _sleb(TABLE_SHIFT) + b"\x76\x6b"
                    + b"\x41" + _sleb(W_MEM) + b"\x6b" + test)
        source = b"\x20" + b if kind in ("check", "charge") and cached else b"\x23" + g  # entry, reload: the global
        if kind == "charge":  # take the cost; a debt waits for the next check
            return source + b"\x41" + _sleb(max(cost, 1)) + b"\x6b" + (b"\x21" + b if cached else b"\x24" + g)
        return source + b"\x41" + _sleb(max(cost, 1)) + b"\x6b" + test

    def no_params(self, blocktype: bytes) -> bool:
        """Whether a block type takes no parameters (every one but a function type with some)."""
        first = blocktype[0]
        if first == 0x40 or first in _SINGLE_BYTE_VALTYPES or first in (0x63, 0x64):
            return True
        index = _read_u32(blocktype, 0)[0]
        signature = self.types[index] if index < len(self.types) else None
        return signature is not None and signature[0] == 0

    def loop_head(self, blocktype: bytes, cost: int, b: bytes, cached: bool) -> bytes:
        """``loop bt`` becomes ``block bt (loop $again bt (block $stop (loop bt CHECK ...`` where CHECK
        takes the loop's cost and, when the budget is spent, branches to $stop: the call to the stop
        point then sits outside the loop (see loop_tail), so the loop's own code has no call in it
        and keeps its values in registers."""
        g = self.budget_global
        if cached:
            charge = b"\x20" + b + b"\x41" + _sleb(max(cost, 1)) + b"\x6b\x22" + b
        else:
            charge = b"\x23" + g + b"\x41" + _sleb(max(cost, 1)) + b"\x6b\x22" + b + b"\x24" + g + b"\x20" + b
        return (b"\x02" + blocktype + b"\x03" + blocktype + b"\x02\x40\x03" + blocktype
                + charge + _I32_CONST_0_LT_S + b"\x0d\x01")

    def loop_tail(self, b: bytes, cached: bool) -> bytes:
        """The loop's ``end``, then: the loop is done, leave with its results; $stop: refill the
        budget, make the stop call and enter the loop again."""
        refill = b"\x41" + _sleb(YIELD_BUDGET) + (b"\x21" + b if cached else b"\x24" + self.budget_global)
        return b"\x0b\x0c\x02\x0b" + refill + self.stop_call() + b"\x0c\x00\x0b\x0b"

    def scan(self, pos: int, end: int, probe: bool = False) -> _BodyPlan:
        """Decode the instructions in raw[pos:end] and plan the body's rewrite.

        Regions start at check points; each records its cost. A region start either *checks*
        (takes the cost and makes the stop call when the budget is spent) or only *charges*
        (takes the cost; a debt waits for the next check). Loop headers, the entry and the
        point after a call always check; other starts check only when the charges taken since
        the last check, on any path to them, exceed UNCHECKED_MAX (and always in functions that
        handle exceptions). So no loop gets a call in its code unless it makes one.

        With ``probe``, only find out whether the function is a cheap leaf (no loop, no call into
        the module, nothing charged by count, at most LEAF_MAX units): raises _NotLight as soon as
        it is not.

        Raises _Unsupported / _Refused for an instruction wasmdeck cannot or will not meter,
        ValueError when the body does not decode to exactly one expression, IndexError when it
        runs off the end of the module.
        """
        d = self.raw
        limit = LEAF_MAX if probe else 1 << 62
        opcodes, weights = _OPCODES, _WEIGHTS
        plan = _BodyPlan()
        edits = plan.edits
        costs = plan.costs  # region 0 is the entry's
        unchecked = [0]  # per region: charges taken since the last check, on the worst path to its start
        frames = [_Frame(0)]
        added = [0, 0]  # added[k]: frames the rewrite inserts around frames[0 .. k-1]
        cur = 0
        total = 0
        imported = self.imported_funcs
        interposed = self.interposed
        light = self.light
        call_weight = self.call_weight
        edits.append((pos, pos, ("entry", 0)))
        handles_exceptions = False

        def start_region(at: int, debt: int, kind: str | None = None) -> int:
            """A region starting at ``at``; ``debt``: charges taken since the last check on the worst
            path here. ``kind`` forces "check" or "reload"; otherwise it checks only if it must."""
            if kind is None:
                kind = "check" if debt > UNCHECKED_MAX or handles_exceptions else "charge"
            costs.append(0)
            unchecked.append(debt if kind == "charge" else 0)
            edits.append((at, at, (kind, len(costs) - 1)))
            frames[-1].holds_check = True
            return len(costs) - 1

        def push(frame: _Frame) -> None:
            frames.append(frame)
            added.append(added[-1] + (3 if frame.wrapped else 0))

        def pop() -> _Frame:
            added.pop()
            return frames.pop()

        def branch(at: int, depth: int) -> int:
            """A branch (or catch clause) to the label ``depth`` frames out, its immediate at ``at``:
            record the debt it carries to a block's end and renumber it past the frames the
            rewrite puts around wrapped loops it crosses. Returns the position after it."""
            label, after = _read_u32(d, at)
            if depth >= len(frames):
                raise ValueError("a branch names a label that does not exist")
            target = frames[-1 - depth]
            target.exit_debt = max(target.exit_debt, unchecked[cur] + costs[cur])
            more = added[-1] - added[len(frames) - depth] if depth else 0
            if more:
                edits.append((at, after, _uleb(label + more)))
            return after

        body_start = pos
        growth = 0  # at least this many bytes are added: to give up early on a function that grows too big
        while pos < end:
            op = d[pos]
            kind = opcodes[op]
            if _NONE <= kind <= _MEMARG:  # the common case, kept short
                w = weights[op]
                c = costs[cur]
                if c + w > REGION_MAX and c > 0:
                    cur = start_region(pos, unchecked[cur] + c)
                    c = 0
                costs[cur] = c + w
                total += w
                if total > limit:
                    raise _NotLight()
                pos += 1
                if kind == _LEB:
                    while d[pos] & 0x80:
                        pos += 1
                    pos += 1
                elif kind == _MEMARG:
                    pos = _skip_memarg(d, pos)
                continue
            op_pos = pos
            pos += 1
            w = weights[op]
            if kind == _LOOP or kind == _CALL_INDIRECT or kind == _CALL_REF:
                growth += 28 if kind == _LOOP else 16  # what a loop, a call's write-back and reload add at least
                if pos - body_start + growth > MAX_FUNCTION_BODY_BYTES:
                    raise _TooBig()
            # immediates first (calls need theirs to know their weight)
            if kind == _CALL or kind == _RETURN_CALL:
                index, after = _read_u32(d, pos)
                w = W_IMPORT if index < imported else call_weight
                if index in interposed:  # a wrapper the module now defines (it may take from the budget)
                    index_is_import = False
                else:  # an import, or a cheap leaf: neither touches the budget
                    index_is_import = index < imported or index in light
            elif kind == _CALL_INDIRECT or kind == _RETURN_CALL_INDIRECT:
                pos = _skip_leb(d, _skip_leb(d, pos))
                w = call_weight + W_MEM
            elif kind == _CALL_REF or kind == _RETURN_CALL_REF:
                pos = _skip_leb(d, pos)
                w = call_weight + W_MEM
            elif kind == _PREFIX_FC:
                sub, pos = _read_u32(d, pos)
                lebs = _FC_LEBS.get(sub)
                if lebs is None:
                    raise _Unsupported(f"0xfc {sub}")
                immediates = []
                for _ in range(lebs):
                    value, pos = _read_u32(d, pos)
                    immediates.append(value)
                if sub in _FC_BULK_MEMORY:
                    w = W_CALL
                elif sub in _FC_TABLE_WORK:
                    w = W_MEM
            elif kind == _PREFIX_FD:
                sub, pos = _read_u32(d, pos)
                if sub <= 11 or sub in (92, 93):  # loads, stores, load_zero
                    pos = _skip_memarg(d, pos)
                elif sub in (12, 13):  # v128.const, i8x16.shuffle
                    pos += 16
                elif 21 <= sub <= 34:  # extract_lane, replace_lane
                    pos += 1
                elif 84 <= sub <= 91:  # load_lane, store_lane
                    pos = _skip_memarg(d, pos) + 1
                elif sub > _FD_MAX or sub in _FD_UNUSED:
                    raise _Unsupported(f"0xfd {sub}")
                if sub in _FD_MEMORY:
                    w = W_MEM
            elif kind == _PREFIX_FE:
                sub, pos = _read_u32(d, pos)
                if sub == 3:  # atomic.fence and its reserved byte
                    pos += 1
                elif sub in (1, 2):
                    raise _Refused("memory.atomic.wait, which blocks a runtime thread where wasmdeck cannot stop it")
                elif sub == 0 or 0x10 <= sub <= 0x4E:  # notify, loads, stores, read-modify-write
                    pos = _skip_memarg(d, pos)
                else:
                    raise _Unsupported(f"0xfe {sub}")
                w = W_MEM
            elif kind == _BAD:
                if op == 0xFB:
                    raise _Unsupported(f"0xfb {_read_u32(d, pos)[0]}")
                raise _Unsupported(f"0x{op:02x}")

            if probe and (total + w > limit or kind in _NOT_LEAF or (kind == _PREFIX_FC and sub in _FC_CHARGED)
                          or ((kind == _CALL or kind == _RETURN_CALL) and not index_is_import)):
                raise _NotLight()
            # a region that would grow past REGION_MAX gets a new one before this instruction
            if costs[cur] + w > REGION_MAX and costs[cur] > 0:
                cur = start_region(op_pos, unchecked[cur] + costs[cur])
            costs[cur] += w
            total += w

            if kind == _BLOCK or kind == _IF:
                pos = _skip_blocktype(d, pos)
                push(_Frame(cur))
            elif kind == _LOOP:
                pos = _skip_blocktype(d, pos)
                plan.light = False
                if self.no_params(d[op_pos + 1:pos]):
                    # the loop's check leaves the loop to make the stop call (see loop_head)
                    push(_Frame(cur, holds_check=True, wrapped=True, is_loop=True))
                    costs.append(0)
                    unchecked.append(0)
                    cur = len(costs) - 1
                    edits.append((op_pos, pos, ("loophead", cur, d[op_pos + 1:pos])))
                else:  # a loop with parameters keeps its check (and the stop call) inside
                    push(_Frame(cur, is_loop=True))
                    cur = start_region(pos, 0, "check")
            elif kind == _ELSE:
                if len(frames) < 2:
                    raise ValueError("else outside a block")
                frame = frames[-1]
                frame.exit_debt = max(frame.exit_debt, unchecked[cur] + costs[cur])
                cur = frame.entry_region
            elif kind == _END or kind == _DELEGATE:
                if kind == _DELEGATE:  # its label counts from outside the try block
                    depth, _ = _read_u32(d, pos)
                    pos = branch(pos, depth + 1) if len(frames) > depth + 1 else _skip_leb(d, pos)
                frame = pop()
                if frame.wrapped:
                    edits.append((op_pos, pos, ("looptail", None)))
                if not frames:
                    if kind == _DELEGATE or pos != end:
                        raise ValueError("the function's body does not end where its last end is")
                    edits.append((op_pos, op_pos, ("writeback", None)))
                    plan.cost_total = total
                    plan.cached = not handles_exceptions
                    return plan
                if frame.holds_check:
                    debt = unchecked[cur] + costs[cur]
                    if not frame.is_loop:
                        debt = max(debt, frame.exit_debt)
                    cur = start_region(pos, debt)
                else:
                    cur = frame.entry_region
            elif kind == _CALL:
                moved = self.new_index(index)
                if not index_is_import:
                    growth += 16
                    edits.append((op_pos, op_pos, ("writeback", None)))
                if moved != index:
                    edits.append((pos, after, _uleb(moved)))
                pos = after
                if not index_is_import:
                    plan.light = False
                    cur = start_region(pos, 0, "reload")
            elif kind == _CALL_INDIRECT or kind == _CALL_REF:
                edits.append((op_pos, op_pos, ("writeback", None)))
                plan.light = False
                cur = start_region(pos, 0, "reload")
            elif kind == _RETURN_CALL:
                edits.append((op_pos, op_pos, ("writeback", None)))
                moved = self.new_index(index)
                if moved != index:
                    edits.append((pos, after, _uleb(moved)))
                pos = after
                plan.light = False
            elif kind == _RETURN_CALL_INDIRECT or kind == _RETURN_CALL_REF:
                edits.append((op_pos, op_pos, ("writeback", None)))
                plan.light = False
            elif kind == _RETURN:
                edits.append((op_pos, op_pos, ("writeback", None)))
            elif kind == _BR or kind == _BR_ON:
                depth, _ = _read_u32(d, pos)
                if depth == len(frames) - 1:  # a branch to the function's own label returns
                    edits.append((op_pos, op_pos, ("writeback", None)))
                pos = branch(pos, depth)
            elif kind == _BR_TABLE:
                count, pos = _read_u32(d, pos)
                exits = False
                at = len(edits)
                for _ in range(count + 1):
                    depth, _ = _read_u32(d, pos)
                    exits = exits or depth == len(frames) - 1
                    pos = branch(pos, depth)
                if exits:
                    edits.insert(at, (op_pos, op_pos, ("writeback", None)))
            elif kind == _THROW:
                edits.append((op_pos, op_pos, ("writeback", None)))  # before any edit of its immediate
                if op == 0x09:  # rethrow names a catch clause's label
                    depth, _ = _read_u32(d, pos)
                    pos = branch(pos, depth)
                elif op == 0x08:
                    pos = _skip_leb(d, pos)
            elif kind == _REF_FUNC:
                index, after = _read_u32(d, pos)
                moved = self.new_index(index)
                if moved != index:
                    edits.append((pos, after, _uleb(moved)))
                pos = after
            elif kind == _PREFIX_FC:
                if sub in _FC_BULK_MEMORY:
                    if sub == 11:  # memory.fill mem
                        helper = self.helper(_Helper("fill", immediates[0]))
                    elif sub == 10:  # memory.copy dst src
                        helper = self.helper(_Helper("copy", immediates[0], immediates[1]))
                    else:  # memory.init data mem
                        helper = self.helper(_Helper("init", immediates[1], immediates[0]))
                    edits.append((op_pos, op_pos, ("writeback", None)))
                    edits.append((op_pos, pos, b"\x10" + _uleb(helper)))
                    plan.light = False
                    cur = start_region(pos, 0, "reload")
                elif sub in _FC_TABLE_WORK:
                    edits.append((op_pos, op_pos, ("dynamic", None)))
                    plan.light = False
            elif kind == _TRY or kind == _TRY_TABLE:
                pos = _skip_blocktype(d, pos)
                handles_exceptions = True
                if kind == _TRY_TABLE:
                    count, pos = _read_u32(d, pos)
                    for _ in range(count):
                        catch = d[pos]
                        if catch > 3:
                            raise _Unsupported(f"0x1f with catch kind {catch}")
                        pos += 1
                        if catch < 2:  # catch and catch_ref name a tag
                            pos = _skip_leb(d, pos)
                        depth, _ = _read_u32(d, pos)  # the label, counted from outside the try_table
                        pos = branch(pos, depth)
                push(_Frame(cur))
                plan.light = False
            elif kind == _CATCH or kind == _CATCH_ALL:
                if len(frames) < 2:
                    raise ValueError("catch outside a try block")
                if kind == _CATCH:
                    pos = _skip_leb(d, pos)
                cur = start_region(pos, 0, "check")
            elif kind == _SELECT_T:
                count, pos = _read_u32(d, pos)
                for _ in range(count):
                    pos = _skip_valtype(d, pos)
            elif kind == _BYTES4:
                pos += 4
            elif kind == _BYTES8:
                pos += 8
        raise ValueError("the body ends before its final end")

    # --- generated functions ------------------------------------------------------------------

    def helper(self, spec: _Helper) -> int:
        """The function index of the helper that does a bulk memory instruction in charged chunks."""
        index = self.helpers.get(spec)
        if index is None:
            memories = len(self.info.memories)
            if spec.a >= memories or (spec.kind == "copy" and spec.b >= memories):
                raise ValueError("a bulk memory instruction names a memory the module does not have")
            if spec.kind == "init" and spec.b >= len(self.parser.data_lengths):
                raise ValueError("memory.init names a data segment the module does not have")
            index = self.helpers[spec] = self.add_function(_BULK_TYPE, None)
        return index

    def finish_new_functions(self) -> None:
        """Fill in the bodies of the functions the rewrite adds."""
        bodies: dict[int, bytes] = {self.stop_helper: self.stop_helper_body()}
        if self.entry is not None:
            bodies[self.entry] = self.entry_body()
        if self.wrapped:
            wrappers = file_quota.Wrappers(
                self.quota_global, self.file_size, self.parser.globals, self.stop_helper, YIELD_BUDGET,
                b"\x41" + _sleb(COPY_SHIFT) + b"\x76\x41" + _sleb(BULK_BASE) + b"\x6a",  # (chunk >> shift) + base
            )
            if self.file_size is not None:
                assert self.filestat_index is not None  # $file_size is planned only with fd_filestat_get
                bodies[self.file_size] = wrappers.file_size_body(self.filestat_index)
            for index, name in self.wrapped.items():
                bodies[self.interposed[index]] = wrappers.body(name, index)
        for spec, index in self.helpers.items():
            bodies[index] = self.bulk_body(spec)
        self.new_functions = [
            (type_index, _uleb(len(bodies[self.next_function + i])) + bodies[self.next_function + i])
            for i, (type_index, _) in enumerate(self.new_functions)
        ]

    def stop_helper_body(self) -> bytes:
        # clock_time_get(99, 0, -1): an invalid clock and an out-of-bounds result pointer
        return b"\x00" + b"\x41\xe3\x00\x42\x00\x41\x7f\x10" + _uleb(self.stop_index) + b"\x1a\x0b"

    def entry_body(self) -> bytes:
        """The new ``_start``: answer the compile probe, run the start function, then ``_start``."""
        code = b""
        if self.probe_index is not None:
            # locals: 0 = saved (i64), 1 = argc (i32)
            code += (b"\x3f\x00\x04\x40"  # if memory.size(0) != 0:
                     b"\x41\x00\x29\x03\x00\x21\x00"  # saved = i64.load(0)
                     b"\x41\x00\x41\x04\x10" + _uleb(self.probe_index) + b"\x1a"  # args_sizes_get(0, 4)
                     b"\x41\x00\x28\x02\x00\x21\x01"  # argc = i32.load(0)
                     b"\x41\x00\x20\x00\x37\x03\x00"  # i64.store(0, saved)
                     b"\x20\x01\x41\x02\x4f\x04\x40\x0f\x0b"  # if argc >= 2: return
                     b"\x0b")
        if self.parser.start_function is not None:
            code += b"\x10" + _uleb(self.new_index(self.parser.start_function))
        start = self.parser.export_indices["_start"]
        code += b"\x10" + _uleb(self.new_index(start)) + b"\x0b"
        locals_ = b"\x02\x01\x7e\x01\x7f" if self.probe_index is not None else b"\x00"
        return locals_ + code

    def bulk_body(self, spec: _Helper) -> bytes:
        """A helper taking the operands of memory.fill (d, v, n), memory.copy (d, s, n) or
        memory.init (d, s, n): it checks the bounds first (out of bounds, it runs the original
        instruction, which traps without writing anything), then works in charged chunks."""
        g = self.budget_global
        mem_a = _uleb(spec.a)
        # params 0, 1, 2; locals 3 = chunk, 4 = scratch
        shift = FILL_SHIFT if spec.kind == "fill" else COPY_SHIFT
        if spec.kind == "fill":
            original = b"\xfc\x0b" + mem_a
        elif spec.kind == "copy":
            original = b"\xfc\x0a" + mem_a + _uleb(spec.b)
        else:
            original = b"\xfc\x08" + _uleb(spec.b) + mem_a

        def end_beyond(operand: int, limit: bytes) -> bytes:
            # (u64) operand + (u64) n > limit
            return (b"\x20" + bytes([operand]) + b"\xad\x20\x02\xad\x7c" + limit + b"\x56")

        def memory_bytes(memory: bytes) -> bytes:
            return b"\x3f" + memory + b"\xad\x42\x10\x86"  # (u64) memory.size << 16

        checks = end_beyond(0, memory_bytes(mem_a))
        if spec.kind == "copy":
            checks += end_beyond(1, memory_bytes(_uleb(spec.b))) + b"\x72"  # i32.or
        elif spec.kind == "init":
            checks += end_beyond(1, b"\x42" + _sleb(self.parser.data_lengths[spec.b])) + b"\x72"
        trap = checks + b"\x04\x40\x20\x00\x20\x01\x20\x02" + original + b"\x0f\x0b"
        chunk = (b"\x20\x02\x41" + _sleb(BULK_CHUNK) + b"\x20\x02\x41" + _sleb(BULK_CHUNK)
                 + b"\x49\x1b\x21\x03")  # chunk = n < CHUNK ? n : CHUNK
        charge = (b"\x23" + g + b"\x20\x03\x41" + _sleb(shift) + b"\x76\x6b\x41" + _sleb(BULK_BASE) + b"\x6b"
                  + b"\x22\x04\x24" + g + b"\x20\x04" + _I32_CONST_0_LT_S + _IF_VOID
                  + b"\x41" + _sleb(YIELD_BUDGET) + b"\x24" + g + self.stop_call() + b"\x0b")
        advance_n = b"\x20\x02\x20\x03\x6b\x22\x02"  # n -= chunk (left on the stack)
        advance = lambda local: b"\x20" + bytes([local]) + b"\x20\x03\x6a\x21" + bytes([local])  # noqa: E731
        if spec.kind == "copy" and spec.a == spec.b:
            # overlapping copies keep memmove's meaning: forwards when d <= s, else from the end
            backward = (b"\x03\x40" + chunk + charge + b"\x20\x02\x20\x03\x6b\x21\x02"  # n -= chunk
                        + b"\x20\x00\x20\x02\x6a\x20\x01\x20\x02\x6a\x20\x03" + original  # copy(d+n, s+n, chunk)
                        + b"\x20\x02\x0d\x00\x0b")
            forward = (b"\x03\x40" + chunk + charge + b"\x20\x00\x20\x01\x20\x03" + original
                       + advance(0) + advance(1) + advance_n + b"\x0d\x00\x0b")
            loop = b"\x20\x00\x20\x01\x4b\x04\x40" + backward + b"\x05" + forward + b"\x0b"
        else:
            operands = b"\x20\x00\x20\x01\x20\x03"  # d, v or s, chunk
            moves = advance(0) + (advance(1) if spec.kind != "fill" else b"")
            loop = b"\x03\x40" + chunk + charge + operands + original + moves + advance_n + b"\x0d\x00\x0b"
        return b"\x01\x02\x7f" + trap + loop + b"\x0b"

    # --- custom sections ----------------------------------------------------------------------

    def rewrite_custom(self, section: _Section) -> bytes:
        r = _Reader(self.view, section.body, section.end, "a custom section")
        name = r.name()
        if name.startswith(_STALE_CUSTOM_PREFIXES) or name in _STALE_CUSTOM_NAMES:
            return b""
        if name != "name" or self.shift == 0:
            return self.raw[section.start:section.end]
        try:
            payload = self.rewrite_names(r.pos, section.end)
        except (InvalidModule, IndexError, ValueError):
            return b""  # a malformed name section is only debug info: drop it rather than keep wrong names
        return _section_bytes(0, _name("name") + payload)

    def rewrite_names(self, pos: int, end: int) -> bytes:
        """The name section's payload with function indices moved in subsections 1 (function
        names), 2 (local names) and 3 (label names); the others are kept as they are."""
        out = []
        r = _Reader(self.view, pos, end, "the name section")
        while r.pos < end:
            sub_start = r.pos
            sub_id = r.u8()
            size = r.u32()
            content, content_end = r.pos, r.pos + size
            if content_end > end:
                raise ValueError("a name subsection runs past the section's end")
            r.pos = content_end
            if sub_id not in (1, 2, 3):
                out.append(self.raw[sub_start:content_end])
                continue
            sub = _Reader(self.view, content, content_end, "the name section")
            patches: _Patches = []
            for _ in range(sub.u32()):
                self.func_index_patch(sub, patches, names=True)
                if sub_id == 1:
                    sub.name()
                else:  # a name map per function
                    for _ in range(sub.u32()):
                        sub.u32()
                        sub.name()
            if sub.pos != content_end:
                raise ValueError("a name subsection has trailing bytes")
            new = _splice(self.raw, content, content_end, patches)
            out.append(bytes([sub_id]) + _uleb(len(new)) + new)
        return b"".join(out)


if __name__ == "__main__":
    sys.exit(_main())

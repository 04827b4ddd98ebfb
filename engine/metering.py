"""Make guest code stoppable: instrument loops and calls to call WASI ``sched_yield`` now and then.

Why: wasmer-sdk stops a guest (timeout, kill, sandbox close) only when the guest
makes a WASI call. A pure compute loop such as ``for (;;) x++;`` is reported to
the host as TIMEOUT, but its thread goes on spinning a full CPU core for ever,
even after its sandbox is closed: a tenant can take a core down with one
request, and a per-request CPU limit means nothing for such code. Measured: the
same loop calling any WASI function (``sched_yield``, ``clock_time_get``, even a
failing ``fd_write``) every 65,536 iterations is stopped at the timeout, with no
CPU used afterwards.

The scheme. The module gets one new mutable i32 global ``$budget`` (appended,
so no global index moves), starting at ``every``. Every function that has a
``loop`` or makes a call of any kind gets one new i32 local ``$c`` (declared
after all its other locals, so no local index moves), and two snippets::

    ;; at the function's entry: a call costs 1
    SPEND(1)

    ;; at the start of every loop body, right after `loop <blocktype>`
    local.get $c ; i32.const 1 ; i32.add ; local.tee $c
    i32.const (TICK - 1) ; i32.and ; i32.eqz
    if  SPEND(TICK)  end                  ;; every TICK (256) iterations of this activation

    ;; SPEND(n):
    global.get $budget ; i32.const n ; i32.sub ; global.set $budget
    global.get $budget ; i32.const 0 ; i32.lt_s
    if  i32.const every ; global.set $budget ; call $sched_yield ; drop  end

Every inserted ``if`` has block type 0x40 (no params, no results), the
snippets are balanced on the operand stack and nothing in them branches out,
so every branch depth in the original body stays right and a loop's
parameters stay where they are.

Why this shape: a loop iteration costs only a register increment and a test;
the global (a load and a store) is touched once per TICK iterations and once
per call. A counter local to each activation alone, as in the first design,
is not enough: it starts from 0 in every call, so loops shorter than
``every`` nested across functions (``for (;;) f();`` where ``f`` loops 60,000
times over a function that loops 60,000 times) and loop-free recursion or tail
calls never yield; both were measured to keep burning a core after the
timeout. With the shared budget, a guest runs at most about ``every`` counted
loop iterations and calls between two yields, plus fewer than TICK uncounted
iterations per call, i.e. about ``every * TICK`` (16.8 M) loop iterations in
the worst case an adversary can build. Functions with neither loops nor calls
(leaves) are left alone: their straight-line code is bounded by their size,
and whatever calls them is counted.

``$sched_yield`` is the module's own import of
``wasi_snapshot_preview1.sched_yield`` when it has one. Otherwise that import is
added at the end of the import section, with type ``[] -> [i32]`` (an existing
plain type of that shape, or a new one appended to the type section). Being the
last function import, it takes function index ``F`` (the number of function
imports), so every defined function index ``>= F`` moves up by one, everywhere a
function index appears: ``call``, ``return_call`` and ``ref.func`` in code;
element segments; ``ref.func`` in global and table initializers; function
exports; the start function; and the ``name`` section's function, local and
label names (so trap backtraces still name functions). Debug info that points
into the code section (``.debug_*``, source maps, linking and relocation
sections) would be stale, so it is dropped.

Every other byte is copied through as it is. To find loops and calls, each
function body is decoded instruction by instruction (the core spec plus sign
extension, saturating float-to-int, bulk memory, reference types, multi-value,
tail calls, SIMD and relaxed SIMD, threads, exception handling (legacy and
new), and typed function references). An instruction outside that set (the GC
proposal's 0xFB prefix, for one) raises ``InvalidModule``: a module that cannot
be metered is refused rather than run unstoppable. A module with no loops and
no calls is returned unchanged.

Cost, measured under wasmer-sdk 0.5.0 with a small C benchmark (best of 11 runs,
metered / plain): a 100 M-iteration integer hash loop 1.00; qsort of 1 M ints
through a comparator (a leaf, left alone) 0.9-1.05; naive recursive fib(37)
1.08-1.10; a byte-store sieve loop, the worst case, 1.35-1.6 (the first design,
a bare per-activation counter, measured the same). Metering a 4.4 MB module
takes about 0.45 s.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidInput, InvalidModule
from .wasm_module import WASI_PREVIEW1_MODULE, _Parser, _Reader, _uleb

YIELD_EVERY = 65536  # loop iterations and calls between yields, counted module-wide

_YIELD_NAME = "sched_yield"
_YIELD_TYPE = b"\x60\x00\x01\x7f"  # func [] -> [i32]
_TICK = 256  # loop iterations counted locally before they are taken from the global budget
_MAX_LOCALS = 50_000  # what Wasmer (wasmparser) accepts in one function
# Custom sections that hold offsets into the code section, or describe the pre-link layout.
_STALE_CUSTOM_PREFIXES = (".debug_", "reloc.", "metadata.code.")
_STALE_CUSTOM_NAMES = {"linking", "sourceMappingURL", "external_debug_info"}
# Section ids in the order the spec requires them (custom sections aside).
_SECTION_RANK = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 13: 6, 6: 7, 7: 8, 8: 9, 9: 10, 12: 11, 10: 12, 11: 13}


def meter(data: bytes, *, every: int = YIELD_EVERY) -> bytes:
    """Return a module that calls wasi_snapshot_preview1.sched_yield once each ``every`` loop
    iterations and calls, so the runtime can stop it at its CPU or wall-time limit.

    ``every`` must be a power of two. A module without loops or calls is returned unchanged.
    Raises InvalidModule with one clear sentence when the module is malformed or uses an
    instruction this rewriter does not understand (so it could not be metered).
    """
    if isinstance(every, bool) or not isinstance(every, int) or not 1 <= every <= 1 << 30 or every & (every - 1):
        raise InvalidInput(f"the yield interval must be a power of two from 1 to 2**30 (got {every!r})")
    try:
        return _Rewriter(data, every).run()
    except InvalidModule:
        raise
    except (IndexError, ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        # A safety net: the rewriter is written not to get here.
        raise InvalidModule(
            f"the module could not be metered ({type(exc).__name__}); it is probably corrupt"
        ) from None


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


_Patches = list[tuple[int, int, bytes]]  # (from, to, replacement), in order, positions in the module


def _splice(raw: bytes, start: int, end: int, patches: _Patches) -> bytes:
    """raw[start:end] with the patches applied."""
    pieces, at = [], start
    for lo, hi, new in patches:
        pieces.append(raw[at:lo])
        pieces.append(new)
        at = hi
    pieces.append(raw[at:end])
    return b"".join(pieces)


def _section_bytes(section_id: int, payload: bytes) -> bytes:
    return bytes([section_id]) + _uleb(len(payload)) + payload


# --- the section walker -----------------------------------------------------------------------

@dataclass(frozen=True)
class _Section:
    id: int
    start: int  # offset of the id byte
    body: int  # offset of the payload
    end: int


def _sections(raw: bytes) -> list[_Section]:
    """The module's sections in file order (the module has been validated already)."""
    out, pos, view = [], 8, memoryview(raw)
    while pos < len(raw):
        r = _Reader(view, pos + 1, len(raw), "the module")
        size = r.u32()
        out.append(_Section(raw[pos], pos, r.pos, r.pos + size))
        pos = r.pos + size
    return out


# --- the instruction decoder ------------------------------------------------------------------

# How the immediates of each one-byte opcode are encoded.
(_BAD, _NONE, _LEB, _LEB2, _MEMARG, _BLOCK, _LOOP, _END, _CALL, _CALL_INDIRECT, _CALL_REF,
 _REF_FUNC, _BR_TABLE, _BYTES4, _BYTES8, _SELECT_T, _TRY_TABLE, _DELEGATE,
 _PREFIX_FC, _PREFIX_FD, _PREFIX_FE) = range(21)

_OPCODES = [_BAD] * 256


def _define(kind: int, *opcodes: int) -> None:
    for op in opcodes:
        _OPCODES[op] = kind


_define(_NONE,
        0x00, 0x01,  # unreachable, nop
        0x05, 0x0A, 0x0F,  # else, throw_ref, return
        0x19, 0x1A, 0x1B,  # catch_all, drop, select
        0xD1, 0xD3, 0xD5,  # ref.is_null, ref.as_non_null, ref.eq
        *range(0x45, 0xC5))  # numeric instructions, including sign extension (0xC0-0xC4)
_define(_LEB,
        0x07, 0x08, 0x09,  # catch tag, throw tag, rethrow depth
        0x0C, 0x0D,  # br, br_if
        *range(0x20, 0x27),  # local.get/set/tee, global.get/set, table.get/set
        0x3F, 0x40,  # memory.size, memory.grow (memory index)
        0x41, 0x42,  # i32.const, i64.const (signed, but skipped the same way)
        0xD0,  # ref.null heap type (s33)
        0xD4, 0xD6)  # br_on_null, br_on_non_null
_define(_MEMARG, *range(0x28, 0x3F))  # loads and stores
_define(_BLOCK, 0x02, 0x04, 0x06)  # block, if, try
_define(_LOOP, 0x03)
_define(_END, 0x0B)
_define(_CALL, 0x10, 0x12)  # call, return_call: function index
_define(_CALL_INDIRECT, 0x11, 0x13)  # call_indirect, return_call_indirect: type index, table index
_define(_CALL_REF, 0x14, 0x15)  # call_ref, return_call_ref: type index
_define(_REF_FUNC, 0xD2)
_define(_BR_TABLE, 0x0E)
_define(_BYTES4, 0x43)  # f32.const
_define(_BYTES8, 0x44)  # f64.const
_define(_SELECT_T, 0x1C)
_define(_TRY_TABLE, 0x1F)
_define(_DELEGATE, 0x18)
_define(_PREFIX_FC, 0xFC)
_define(_PREFIX_FD, 0xFD)
_define(_PREFIX_FE, 0xFE)

# 0xFC: saturating truncation (0-7) has no immediates; bulk memory and table ops take indices.
_FC_LEBS = {**{sub: 0 for sub in range(8)}, 8: 2, 9: 1, 10: 2, 11: 1, 12: 2, 13: 1, 14: 2, 15: 1, 16: 1, 17: 1}
# 0xFD (SIMD): the numbers up to the last relaxed SIMD instruction (0x113) that no instruction uses.
_FD_UNUSED = {154, 162, 165, 166, 175, 176, 178, 179, 180, 187, 194, 197, 198, 207, 208, 210, 211, 212, 226, 238}
_FD_MAX = 0x113
_SINGLE_BYTE_VALTYPES = {0x7F, 0x7E, 0x7D, 0x7C, 0x7B, *range(0x69, 0x75)}  # numbers, v128, ref shorthands


class _Unsupported(Exception):
    """An instruction the decoder does not know; its args[0] names it, e.g. "0xfb 1"."""


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


@dataclass
class _Scan:
    patches: _Patches  # function indices moved, loop code inserted
    has_loop: bool
    has_call: bool


def _scan_body(d: bytes, pos: int, end: int, shift_from: int | None, loop_code: bytes) -> _Scan:
    """Decode the instructions in d[pos:end] and plan the body's rewrite: ``loop_code`` goes right
    after each ``loop <blocktype>``, and function indices ``>= shift_from`` (in call, return_call
    and ref.func) move up by one.

    Raises _Unsupported for an unknown instruction, ValueError when the body does not decode to
    exactly one expression, IndexError when it runs off the end of the module.
    """
    opcodes = _OPCODES
    patches: _Patches = []
    has_loop = has_call = False
    depth = 0  # blocks open inside the function's own block
    while pos < end:
        op = d[pos]
        pos += 1
        kind = opcodes[op]
        if kind == _NONE:
            continue
        if kind == _LEB:
            while d[pos] & 0x80:
                pos += 1
            pos += 1
        elif kind == _MEMARG:
            pos = _skip_memarg(d, pos)
        elif kind == _END:
            if depth == 0:
                if pos != end:
                    raise ValueError("there is code after the function's final end")
                return _Scan(patches, has_loop, has_call)
            depth -= 1
        elif kind == _BLOCK:
            pos = _skip_blocktype(d, pos)
            depth += 1
        elif kind == _CALL or kind == _REF_FUNC:
            has_call = has_call or kind == _CALL
            index, after = _read_u32(d, pos)
            if shift_from is not None and index >= shift_from:
                patches.append((pos, after, _uleb(index + 1)))
            pos = after
        elif kind == _LOOP:
            pos = _skip_blocktype(d, pos)
            depth += 1
            patches.append((pos, pos, loop_code))
            has_loop = True
        elif kind == _CALL_INDIRECT:
            pos = _skip_leb(d, _skip_leb(d, pos))
            has_call = True
        elif kind == _CALL_REF:
            pos = _skip_leb(d, pos)
            has_call = True
        elif kind == _BR_TABLE:
            count, pos = _read_u32(d, pos)
            for _ in range(count + 1):
                pos = _skip_leb(d, pos)
        elif kind == _BYTES4:
            pos += 4
        elif kind == _BYTES8:
            pos += 8
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
        elif kind == _PREFIX_FC:
            sub, pos = _read_u32(d, pos)
            lebs = _FC_LEBS.get(sub)
            if lebs is None:
                raise _Unsupported(f"0xfc {sub}")
            for _ in range(lebs):
                pos = _skip_leb(d, pos)
        elif kind == _PREFIX_FE:
            sub, pos = _read_u32(d, pos)
            if sub == 3:  # atomic.fence and its reserved byte
                pos += 1
            elif sub <= 2 or 0x10 <= sub <= 0x4E:  # notify, wait, loads, stores, read-modify-write
                pos = _skip_memarg(d, pos)
            else:
                raise _Unsupported(f"0xfe {sub}")
        elif kind == _SELECT_T:
            count, pos = _read_u32(d, pos)
            for _ in range(count):
                pos = _skip_valtype(d, pos)
        elif kind == _TRY_TABLE:
            pos = _skip_blocktype(d, pos)
            depth += 1
            count, pos = _read_u32(d, pos)
            for _ in range(count):
                catch = d[pos]
                if catch > 3:
                    raise _Unsupported(f"0x1f with catch kind {catch}")
                pos += 1
                if catch < 2:  # catch and catch_ref name a tag
                    pos = _skip_leb(d, pos)
                pos = _skip_leb(d, pos)  # label
        elif kind == _DELEGATE:  # ends a legacy try block
            pos = _skip_leb(d, pos)
            if depth == 0:
                raise ValueError("delegate outside a try block")
            depth -= 1
        elif op == 0xFB:  # garbage collection
            raise _Unsupported(f"0xfb {_read_u32(d, pos)[0]}")
        else:
            raise _Unsupported(f"0x{op:02x}")
    raise ValueError("the body ends before its final end")


# --- the module rewriter ----------------------------------------------------------------------

class _Rewriter:
    def __init__(self, data: bytes, every: int):
        parser = _Parser(data)
        parser.parse()  # structure, bounds and section order are checked here
        self.raw = bytes(data)
        self.view = memoryview(self.raw)
        self.every = every
        self.tick = min(every, _TICK)
        self.types = parser.types
        self.func_types = parser.func_types
        self.imported_funcs = parser.imported_funcs
        self.counter_global = _uleb(parser.globals)  # the index the appended $budget global gets
        self.sections = _sections(self.raw)
        self.by_id = {s.id: s for s in self.sections if s.id != 0}
        # Set by find_yield_import():
        self.yield_index = 0
        self.shift_from: int | None = None  # when the import is added: defined functions move up from here
        self.yield_type: int | None = None  # the added import's type index
        self.new_type = False  # whether that type is appended to the type section

    def reader(self, section: _Section, what: str) -> _Reader:
        return _Reader(self.view, section.body, section.end, what)

    def func_index_patch(self, r: _Reader, patches: _Patches) -> None:
        """Read a function index at r and, if it moves, record the patch."""
        start = r.pos
        index = r.u32()
        if self.shift_from is not None and index >= self.shift_from:
            patches.append((start, r.pos, _uleb(index + 1)))

    # --- the plan -----------------------------------------------------------------------------

    def run(self) -> bytes:
        self.find_yield_import()
        code = self.by_id.get(10)
        if code is None:
            return self.raw
        new_code, instrumented = self.rewrite_code(code)
        if not instrumented:
            return self.raw
        # One entry to append to each of these vector sections (created where the module has none).
        appended = {6: b"\x7f\x01\x41" + _sleb(self.every) + b"\x0b"}  # (global (mut i32) (i32.const every))
        if self.new_type:
            appended[1] = _YIELD_TYPE
        if self.shift_from is not None:
            appended[2] = self.yield_import_entry()
        out = [self.raw[:8]]
        for section in self.sections:
            if section.id:
                for missing in sorted(appended, key=_SECTION_RANK.__getitem__):
                    if missing not in self.by_id and _SECTION_RANK[missing] < _SECTION_RANK[section.id]:
                        out.append(_section_bytes(missing, _uleb(1) + appended.pop(missing)))
            else:
                out.append(self.rewrite_custom(section))
                continue
            if section.id == 10:
                payload: bytes | None = new_code
            elif self.shift_from is not None and section.id in (4, 6, 7, 8, 9):
                payload = self.rewrite_function_refs(section)
            else:
                payload = None
            if section.id in appended:
                r = self.reader(section, "the module")
                count = r.u32()
                rest = self.raw[r.pos:section.end] if payload is None else payload[r.pos - section.body:]
                payload = _uleb(count + 1) + rest + appended.pop(section.id)
            out.append(self.raw[section.start:section.end] if payload is None else _section_bytes(section.id, payload))
        for missing in sorted(appended, key=_SECTION_RANK.__getitem__):  # they go after all the others
            out.append(_section_bytes(missing, _uleb(1) + appended[missing]))
        return b"".join(out)

    def find_yield_import(self) -> None:
        """Use the module's own sched_yield import, or plan to add one."""
        section = self.by_id.get(2)
        if section is not None:
            r = self.reader(section, "the import section")
            func = 0
            for _ in range(r.u32()):
                module, name, kind = r.name(), r.name(), r.u8()
                if kind == 0:
                    type_index = r.u32()
                    if module == WASI_PREVIEW1_MODULE and name == _YIELD_NAME:
                        if self.types[type_index] != (0, 1):
                            raise InvalidModule(
                                f"the module imports {WASI_PREVIEW1_MODULE}.{_YIELD_NAME} with the wrong "
                                "signature, so it cannot be metered for CPU limits"
                            )
                        self.yield_index = func
                        return
                    func += 1
                elif kind == 1:
                    r.table_type()
                elif kind == 2:
                    r.memory_type(imported=True)
                elif kind == 3:
                    r.global_type()
                else:  # a tag: attribute, type index
                    r.u8()
                    r.u32()
        self.yield_index = self.shift_from = self.imported_funcs
        self.yield_type = self.find_plain_yield_type()
        if self.yield_type is None:
            self.yield_type = len(self.types)
            self.new_type = True

    def find_plain_yield_type(self) -> int | None:
        """The index of a type that is exactly ``func [] -> [i32]`` on its own (not in a rec group)."""
        section = self.by_id.get(1)
        if section is None:
            return None
        r = self.reader(section, "the type section")
        skipper = _Parser(b"")  # for its type-skipping helper
        index = 0
        for _ in range(r.u32()):
            start = r.pos
            form = r.u8()
            if form == 0x4E:  # a rec group
                for _ in range(r.u32()):
                    skipper._sub_type(r, None)
                    index += 1
                continue
            skipper._sub_type(r, form)
            if self.raw[start:r.pos] == _YIELD_TYPE:
                return index
            index += 1
        return None

    def yield_import_entry(self) -> bytes:
        return _name(WASI_PREVIEW1_MODULE) + _name(_YIELD_NAME) + b"\x00" + _uleb(self.yield_type or 0)

    # --- sections that name functions ---------------------------------------------------------

    def rewrite_function_refs(self, section: _Section) -> bytes | None:
        """The payload of a table, global, export, start or element section with its function
        indices moved, or None when none moves."""
        r = self.reader(section, "the module")
        patches: _Patches = []
        if section.id == 8:  # start
            self.func_index_patch(r, patches)
        elif section.id == 7:  # exports
            for _ in range(r.u32()):
                r.name()
                if r.u8() == 0:
                    self.func_index_patch(r, patches)
                else:
                    r.u32()
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

    def rewrite_code(self, section: _Section) -> tuple[bytes, bool]:
        r = self.reader(section, "the code section")
        count = r.u32()
        bodies = [_uleb(count)]
        any_instrumented = False
        self.spend_call, self.spend_tick = self.spend(1), self.spend(self.tick)
        for i in range(count):
            size = r.u32()
            start = r.pos
            r.pos += size
            body, instrumented = self.rewrite_body(self.imported_funcs + i, start, r.pos)
            any_instrumented = any_instrumented or instrumented
            bodies.append(_uleb(len(body)))
            bodies.append(body)
        return b"".join(bodies), any_instrumented

    def spend(self, amount: int) -> bytes:
        """Take ``amount`` from the budget; when it runs out, refill it and yield."""
        g = self.counter_global
        return (b"\x23" + g + b"\x41" + _sleb(amount) + b"\x6b\x24" + g  # $g -= amount
                + b"\x23" + g + b"\x41\x00\x48\x04\x40"  # if $g < 0
                + b"\x41" + _sleb(self.every) + b"\x24" + g  # $g = every
                + b"\x10" + _uleb(self.yield_index) + b"\x1a\x0b")  # call $sched_yield; drop; end

    def rewrite_body(self, func: int, start: int, end: int) -> tuple[bytes, bool]:
        """One function body with its entry and loops instrumented and its calls renumbered."""
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
        c = _uleb(signature[0] + declared)  # the new local: after params and locals
        loop_code = (b"\x20" + c + b"\x41\x01\x6a\x22" + c  # $c += 1
                     + b"\x41" + _sleb(self.tick - 1) + b"\x71\x45\x04\x40"  # if ($c & (tick - 1)) == 0
                     + self.spend_tick + b"\x0b")
        try:
            scan = _scan_body(self.raw, code_start, end, self.shift_from, loop_code)
        except _Unsupported as unsupported:
            raise InvalidModule(
                f"the module uses instruction {unsupported.args[0]} (in function {func}), "
                "which wasmdeck cannot meter for CPU limits"
            ) from None
        except (ValueError, IndexError):
            raise InvalidModule(
                f"the code section is malformed: the body of function {func} does not decode to valid instructions"
            ) from None
        if not (scan.has_loop or scan.has_call):  # a leaf: bounded by its own size
            return _splice(self.raw, start, end, scan.patches), False
        if signature[0] + declared + 1 > _MAX_LOCALS:
            raise InvalidModule(
                f"function {func} has too many locals to add the counter that meters it for CPU limits"
            )
        header = _uleb(groups + 1) + self.raw[groups_start:code_start] + b"\x01\x7f"  # + (1 x i32)
        return header + self.spend_call + _splice(self.raw, code_start, end, scan.patches), True

    # --- custom sections ----------------------------------------------------------------------

    def rewrite_custom(self, section: _Section) -> bytes:
        r = self.reader(section, "a custom section")
        name = r.name()
        if name.startswith(_STALE_CUSTOM_PREFIXES) or name in _STALE_CUSTOM_NAMES:
            return b""
        if name != "name" or self.shift_from is None:
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
                self.func_index_patch(sub, patches)
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

"""A tiny WebAssembly binary assembler for tests that need hand-made modules.

Two levels: byte helpers (``uleb``, ``section``, ``module``...) for tests that spell a module
out byte by byte, and ``ModuleBuilder`` plus instruction helpers (``op``) for tests that build
programs, such as the adversarial modules the metering property tests generate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

HEADER = b"\0asm\x01\x00\x00\x00"
I32, I64, F32, F64, V128, FUNCREF, EXTERNREF = 0x7F, 0x7E, 0x7D, 0x7C, 0x7B, 0x70, 0x6F
VOID = 0x40  # the empty block type
WASI = "wasi_snapshot_preview1"


def uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def sleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        done = (n == 0 and not byte & 0x40) or (n == -1 and byte & 0x40)
        out.append(byte if done else byte | 0x80)
        if done:
            return bytes(out)


def vec(items: Iterable[bytes]) -> bytes:
    items = list(items)
    return uleb(len(items)) + b"".join(items)


def name(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return uleb(len(raw)) + raw


def section(section_id: int, payload: bytes) -> bytes:
    return bytes([section_id]) + uleb(len(payload)) + payload


def custom(section_name: str | bytes, payload: bytes) -> bytes:
    return section(0, name(section_name) + payload)


def module(*sections: bytes) -> bytes:
    return HEADER + b"".join(sections)


def functype(params=(), results=()) -> bytes:
    return b"\x60" + vec(bytes([p]) for p in params) + vec(bytes([r]) for r in results)


def module_importing(import_module: str, field: str) -> bytes:
    """A WASI command whose only import is `import_module.field` (a `[] -> []` function)."""
    return module(
        section(1, vec([functype()])),
        section(2, vec([name(import_module) + name(field) + b"\x00" + uleb(0)])),
        section(3, vec([uleb(0)])),
        section(7, vec([name("_start") + b"\x00" + uleb(1)])),
        section(10, vec([uleb(2) + b"\x00\x0b"])),
    )


# --- instructions --------------------------------------------------------------------------------

class op:
    """Instruction encoders; each returns the instruction's bytes."""

    @staticmethod
    def blocktype(bt: int | Sequence[int] | None) -> bytes:
        if bt is None:
            return bytes([VOID])
        if isinstance(bt, int):
            return bytes([bt])
        raise TypeError("a multi-value block type needs a type index: pass op.typed(index)")

    @staticmethod
    def typed(type_index: int) -> bytes:
        return sleb(type_index)

    @staticmethod
    def _bt(bt) -> bytes:
        return bt if isinstance(bt, bytes) else op.blocktype(bt)

    @staticmethod
    def block(body: bytes, bt=None) -> bytes:
        return b"\x02" + op._bt(bt) + body + b"\x0b"

    @staticmethod
    def loop(body: bytes, bt=None) -> bytes:
        return b"\x03" + op._bt(bt) + body + b"\x0b"

    @staticmethod
    def if_(then: bytes, else_: bytes | None = None, bt=None) -> bytes:
        return b"\x04" + op._bt(bt) + then + (b"\x05" + else_ if else_ is not None else b"") + b"\x0b"

    @staticmethod
    def try_table(body: bytes, catches: Sequence[tuple[int, int | None, int]] = (), bt=None) -> bytes:
        """catches: (kind, tag or None, label); kind 0 catch, 1 catch_ref, 2 catch_all, 3 catch_all_ref."""
        encoded = [bytes([kind]) + (uleb(tag) if kind < 2 else b"") + uleb(label) for kind, tag, label in catches]
        return b"\x1f" + op._bt(bt) + vec(encoded) + body + b"\x0b"

    uleb_ = staticmethod(uleb)
    br = staticmethod(lambda depth: b"\x0c" + uleb(depth))
    br_if = staticmethod(lambda depth: b"\x0d" + uleb(depth))
    br_table = staticmethod(lambda targets, default: b"\x0e" + vec(uleb(t) for t in targets) + uleb(default))
    call = staticmethod(lambda index: b"\x10" + uleb(index))
    call_indirect = staticmethod(lambda type_index, table=0: b"\x11" + uleb(type_index) + uleb(table))
    return_call = staticmethod(lambda index: b"\x12" + uleb(index))
    return_call_indirect = staticmethod(lambda type_index, table=0: b"\x13" + uleb(type_index) + uleb(table))
    throw = staticmethod(lambda tag: b"\x08" + uleb(tag))
    local_get = staticmethod(lambda i: b"\x20" + uleb(i))
    local_set = staticmethod(lambda i: b"\x21" + uleb(i))
    local_tee = staticmethod(lambda i: b"\x22" + uleb(i))
    global_get = staticmethod(lambda i: b"\x23" + uleb(i))
    global_set = staticmethod(lambda i: b"\x24" + uleb(i))
    i32_const = staticmethod(lambda n: b"\x41" + sleb(n))
    i64_const = staticmethod(lambda n: b"\x42" + sleb(n))
    i32_load = staticmethod(lambda offset=0: b"\x28\x02" + uleb(offset))
    i32_store = staticmethod(lambda offset=0: b"\x36\x02" + uleb(offset))
    i64_store = staticmethod(lambda offset=0: b"\x37\x03" + uleb(offset))
    i32_load8_u = staticmethod(lambda offset=0: b"\x2d\x00" + uleb(offset))
    memory_size = staticmethod(lambda mem=0: b"\x3f" + uleb(mem))
    memory_grow = staticmethod(lambda mem=0: b"\x40" + uleb(mem))
    memory_fill = staticmethod(lambda mem=0: b"\xfc\x0b" + uleb(mem))
    memory_copy = staticmethod(lambda dst=0, src=0: b"\xfc\x0a" + uleb(dst) + uleb(src))
    memory_init = staticmethod(lambda data, mem=0: b"\xfc\x08" + uleb(data) + uleb(mem))
    data_drop = staticmethod(lambda data: b"\xfc\x09" + uleb(data))
    table_grow = staticmethod(lambda table=0: b"\xfc\x0f" + uleb(table))
    table_fill = staticmethod(lambda table=0: b"\xfc\x11" + uleb(table))
    table_copy = staticmethod(lambda dst=0, src=0: b"\xfc\x0e" + uleb(dst) + uleb(src))
    table_init = staticmethod(lambda elem, table=0: b"\xfc\x0c" + uleb(elem) + uleb(table))
    table_size = staticmethod(lambda table=0: b"\xfc\x10" + uleb(table))
    ref_null = staticmethod(lambda heap=FUNCREF: b"\xd0" + bytes([heap]))
    ref_func = staticmethod(lambda index: b"\xd2" + uleb(index))
    unreachable = b"\x00"
    nop = b"\x01"
    drop = b"\x1a"
    select = b"\x1b"
    ret = b"\x0f"
    end = b"\x0b"
    i32_eqz = b"\x45"
    i32_eq = b"\x46"
    i32_ne = b"\x47"
    i32_lt_s = b"\x48"
    i32_lt_u = b"\x49"
    i32_gt_u = b"\x4b"
    i32_add = b"\x6a"
    i32_sub = b"\x6b"
    i32_mul = b"\x6c"
    i32_and = b"\x71"
    i32_or = b"\x72"
    i32_xor = b"\x73"
    i32_shl = b"\x74"
    i32_shr_u = b"\x76"
    i32_rotl = b"\x77"
    i64_add = b"\x7c"
    i64_mul = b"\x7e"
    i64_extend_i32_u = b"\xad"
    i32_wrap_i64 = b"\xa7"


# --- modules ---------------------------------------------------------------------------------------

@dataclass
class _Function:
    type_index: int
    locals: list[tuple[int, int]]
    code: bytes  # without the final end


@dataclass
class ModuleBuilder:
    """Builds a module from types, imports, functions and the rest; indices are handed out as
    things are added (imports must come before the first defined function)."""

    types: list[bytes] = field(default_factory=list)
    imports: list[bytes] = field(default_factory=list)
    functions: list[_Function] = field(default_factory=list)
    tables: list[bytes] = field(default_factory=list)
    memories: list[bytes] = field(default_factory=list)
    tags: list[bytes] = field(default_factory=list)
    globals: list[bytes] = field(default_factory=list)
    exports: list[bytes] = field(default_factory=list)
    start: int | None = None
    element_segments: list[bytes] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list)
    imported_functions: int = 0

    def type(self, params: Sequence[int] = (), results: Sequence[int] = ()) -> int:
        encoded = functype(params, results)
        if encoded not in self.types:
            self.types.append(encoded)
        return self.types.index(encoded)

    def import_function(self, field_name: str, params=(), results=(), module_name: str = WASI) -> int:
        if self.functions:
            raise ValueError("add imports before defined functions")
        self.imports.append(name(module_name) + name(field_name) + b"\x00" + uleb(self.type(params, results)))
        self.imported_functions += 1
        return self.imported_functions - 1

    def function(self, code: bytes, params=(), results=(), locals_: Sequence[tuple[int, int]] = (),
                 export: str | None = None) -> int:
        """A defined function; ``code`` is its body without the final end. Returns its index."""
        self.functions.append(_Function(self.type(params, results), list(locals_), code))
        index = self.imported_functions + len(self.functions) - 1
        if export:
            self.export(export, 0, index)
        return index

    def declare(self, params=(), results=(), locals_: Sequence[tuple[int, int]] = ()) -> int:
        """A function whose code comes later (``define``): for recursion and call cycles."""
        return self.function(b"\x00", params, results, locals_)

    def define(self, index: int, code: bytes) -> None:
        self.functions[index - self.imported_functions].code = code

    def memory(self, initial: int, maximum: int | None = None, export: str | None = "memory") -> int:
        limits = b"\x00" + uleb(initial) if maximum is None else b"\x01" + uleb(initial) + uleb(maximum)
        self.memories.append(limits)
        if export:
            self.export(export, 2, len(self.memories) - 1)
        return len(self.memories) - 1

    def table(self, initial: int, maximum: int | None = None, reftype: int = FUNCREF) -> int:
        limits = b"\x00" + uleb(initial) if maximum is None else b"\x01" + uleb(initial) + uleb(maximum)
        self.tables.append(bytes([reftype]) + limits)
        return len(self.tables) - 1

    def tag(self, params: Sequence[int] = ()) -> int:
        self.tags.append(b"\x00" + uleb(self.type(params)))
        return len(self.tags) - 1

    def global_(self, valtype: int, mutable: bool, init: bytes) -> int:
        self.globals.append(bytes([valtype, 1 if mutable else 0]) + init + b"\x0b")
        return len(self.globals) - 1

    def export(self, export_name: str, kind: int, index: int) -> None:
        self.exports.append(name(export_name) + bytes([kind]) + uleb(index))

    def elements(self, offset: int, functions: Sequence[int], table: int = 0) -> None:
        if table == 0:
            self.elements_raw(b"\x00" + op.i32_const(offset) + b"\x0b" + vec(uleb(f) for f in functions))
        else:
            self.elements_raw(b"\x02" + uleb(table) + op.i32_const(offset) + b"\x0b\x00" + vec(uleb(f) for f in functions))

    def elements_raw(self, segment: bytes) -> None:
        self.element_segments.append(segment)

    def passive_data(self, payload: bytes) -> int:
        self.data.append(b"\x01" + name(payload))
        return len(self.data) - 1

    def active_data(self, offset: int, payload: bytes) -> int:
        self.data.append(b"\x00" + op.i32_const(offset) + b"\x0b" + name(payload))
        return len(self.data) - 1

    def build(self) -> bytes:
        out = [section(1, vec(self.types))]
        if self.imports:
            out.append(section(2, vec(self.imports)))
        if self.functions:
            out.append(section(3, vec(uleb(f.type_index) for f in self.functions)))
        if self.tables:
            out.append(section(4, vec(self.tables)))
        if self.memories:
            out.append(section(5, vec(self.memories)))
        if self.tags:
            out.append(section(13, vec(self.tags)))
        if self.globals:
            out.append(section(6, vec(self.globals)))
        if self.exports:
            out.append(section(7, vec(self.exports)))
        if self.start is not None:
            out.append(section(8, uleb(self.start)))
        if self.element_segments:
            out.append(section(9, vec(self.element_segments)))
        if self.data:
            out.append(section(12, uleb(len(self.data))))
        if self.functions:
            bodies = []
            for f in self.functions:
                raw = vec(uleb(n) + bytes([t]) for n, t in f.locals) + f.code + b"\x0b"
                bodies.append(uleb(len(raw)) + raw)
            out.append(section(10, vec(bodies)))
        if self.data:
            out.append(section(11, vec(self.data)))
        return module(*out)


# --- wasm-tools (the Bytecode Alliance's toolkit, a dev dependency) ---------------------------------

def _wasm_tools() -> str:
    import shutil
    import sys
    from pathlib import Path

    beside = Path(sys.executable).parent / "wasm-tools"
    found = str(beside) if beside.exists() else shutil.which("wasm-tools")
    if found is None:
        raise RuntimeError("wasm-tools is not installed (pip install -e '.[dev]')")
    return found


def wat(text: str) -> bytes:
    """Assemble WebAssembly text format into a binary module."""
    import subprocess

    done = subprocess.run([_wasm_tools(), "parse", "-"], input=text.encode(), capture_output=True, check=False)
    if done.returncode != 0:
        raise ValueError(done.stderr.decode(errors="replace"))
    return done.stdout


def validation_error(data: bytes) -> str | None:
    """None when the module is valid WebAssembly (every proposal enabled), else wasm-tools' message."""
    import subprocess

    done = subprocess.run([_wasm_tools(), "validate", "--features", "all", "-"], input=data, capture_output=True, check=False)
    return None if done.returncode == 0 else done.stderr.decode(errors="replace").strip()

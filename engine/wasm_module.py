"""Parse, validate and rewrite WebAssembly binary modules at the section level.

Scope: the *structure* of a core WebAssembly module (MVP plus the common
extensions: bulk memory, reference types, SIMD constants, threads' shared
memory, memory64, exception-handling tags, the GC type forms). Every section is
bounds-checked, and the sections a deploy cares about (types, imports,
functions, memories, exports, start, code framing, data count) are decoded.
Function bodies are *not* validated instruction by instruction: Wasmer does
that when it compiles the module.

Everything here is pure stdlib and must hold up against arbitrary bytes: any
problem with the input becomes an ``InvalidModule`` carrying one sentence the
user can act on, never an IndexError, UnicodeDecodeError or the like.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

from .errors import InvalidInput, InvalidModule, MemoryOverLimit

WASI_PREVIEW1_MODULE = "wasi_snapshot_preview1"
WASI_PREVIEW1_FUNCTIONS: frozenset[str] = frozenset(
    """
    args_get args_sizes_get environ_get environ_sizes_get clock_res_get
    clock_time_get fd_advise fd_allocate fd_close fd_datasync fd_fdstat_get
    fd_fdstat_set_flags fd_fdstat_set_rights fd_filestat_get
    fd_filestat_set_size fd_filestat_set_times fd_pread fd_prestat_get
    fd_prestat_dir_name fd_pwrite fd_read fd_readdir fd_renumber fd_seek
    fd_sync fd_tell fd_write path_create_directory path_filestat_get
    path_filestat_set_times path_link path_open path_readlink
    path_remove_directory path_rename path_symlink path_unlink_file
    poll_oneoff proc_exit proc_raise sched_yield random_get sock_accept
    sock_recv sock_send sock_shutdown
    """.split()
)
DEFAULT_MAX_MODULE_BYTES = 25 * 1024 * 1024
WASM_PAGE_BYTES = 65536
# Tables live in host memory outside linear memory (8 bytes an element, measured), so they are
# capped on their own: at most MAX_TABLES tables of at most MAX_TABLE_ELEMENTS elements each
# (2 MiB a table, 16 MiB in all). A deploy refuses more tables or a larger minimum; loading
# rewrites every table's maximum to the cap, so table.grow fails (returns -1) beyond it.
MAX_TABLES = 8
MAX_TABLE_ELEMENTS = 262_144

_MAGIC = b"\0asm"
_MAX_PAGES_32 = 65536  # 4 GiB
_MAX_PAGES_64 = 1 << 48

_SECTION_NAMES = {
    0: "custom", 1: "type", 2: "import", 3: "function", 4: "table",
    5: "memory", 6: "global", 7: "export", 8: "start", 9: "element",
    10: "code", 11: "data", 12: "data count", 13: "tag",
}
# Position of each non-custom section in the order the spec requires.
_SECTION_ORDER = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 13: 6, 6: 7, 7: 8, 8: 9,
                  9: 10, 12: 11, 10: 12, 11: 13}
_KINDS = ("func", "table", "memory", "global", "tag")

_NUM_TYPES = {0x7F, 0x7E, 0x7D, 0x7C, 0x7B}  # i32 i64 f32 f64 v128
# Abstract heap types; as value types these bytes are the ref shorthands
# (0x70 funcref, 0x6F externref, and the GC proposal's any/eq/i31/... refs).
_HEAP_TYPES = set(range(0x69, 0x75))
_REF_NULL_OR_REF = (0x63, 0x64)  # (ref null <heap type>), (ref <heap type>)


@dataclass(frozen=True)
class Import:
    module: str
    name: str
    kind: str  # "func", "table", "memory", "global" or "tag"


@dataclass(frozen=True)
class Export:
    name: str
    kind: str


@dataclass(frozen=True)
class Memory:
    initial_pages: int
    maximum_pages: int | None
    shared: bool
    memory64: bool
    imported: bool


@dataclass(frozen=True)
class Table:
    initial: int
    maximum: int | None
    table64: bool
    imported: bool


@dataclass(frozen=True)
class ModuleInfo:
    size: int
    imports: tuple[Import, ...]
    exports: tuple[Export, ...]
    memories: tuple[Memory, ...]  # imported ones first, then defined ones
    custom_sections: tuple[tuple[str, bytes], ...]  # (name, payload), file order
    tables: tuple[Table, ...] = ()  # imported ones first, then defined ones

    def custom_section(self, name: str) -> bytes | None:
        for section_name, payload in self.custom_sections:
            if section_name == name:
                return payload
        return None

    def exports_function(self, name: str) -> bool:
        return any(e.name == name and e.kind == "func" for e in self.exports)


def _show(name: str) -> str:
    """A name as it may safely appear in a one-line message."""
    text = name if name.isprintable() else name.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 80 else text[:77] + "..."


def _count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def _bytes(n: int) -> str:
    return _count(n, "byte")


def _mib(n_bytes: int) -> str:
    mib = n_bytes / (1024 * 1024)
    return f"{mib:g} MiB" if mib == int(mib) else f"{mib:.2f} MiB"


def _pages_mib(pages: int) -> str:
    mib = pages / 16
    return f"{int(mib)}" if mib == int(mib) else f"{mib:.1f}"


def _uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class _Reader:
    """A cursor over ``data[pos:end]``; positions are absolute in the module."""

    def __init__(self, data: memoryview, pos: int, end: int, where: str):
        self.data, self.pos, self.end, self.where = data, pos, end, where
        self.what: str | None = None  # the item being read, for messages
        self.short_message: str | None = None  # replaces the message when bytes run out

    def fail(self, problem: str) -> NoReturn:
        suffix = f" (in {self.what})" if self.what else ""
        raise InvalidModule(f"{self.where} is malformed: {problem}{suffix}")

    def _short(self) -> NoReturn:
        if self.short_message:
            raise InvalidModule(self.short_message)
        if self.what:
            raise InvalidModule(f"{self.where} is malformed: it ends in the middle of {self.what}")
        raise InvalidModule(f"{self.where} is malformed: its contents run past the section's end")

    def remaining(self) -> int:
        return self.end - self.pos

    def u8(self) -> int:
        if self.pos >= self.end:
            self._short()
        byte = self.data[self.pos]
        self.pos += 1
        return byte

    def bytes(self, n: int) -> memoryview:
        if n > self.end - self.pos:
            self._short()
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def _leb(self, bits: int, signed: bool) -> int:
        max_len = (bits + 6) // 7
        result = shift = 0
        for _ in range(max_len):
            byte = self.u8()
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        else:
            self.fail(f"an integer is encoded in more than {max_len} bytes")
        if signed:
            if byte & 0x40:
                result -= 1 << shift
            if not -(1 << (bits - 1)) <= result < (1 << (bits - 1)):
                self.fail(f"an integer does not fit in {bits} bits")
        elif result >= 1 << bits:
            self.fail(f"an integer does not fit in {bits} bits")
        return result

    def u32(self) -> int:
        return self._leb(32, False)

    def u64(self) -> int:
        return self._leb(64, False)

    def s(self, bits: int) -> int:
        return self._leb(bits, True)

    def count(self, items: str) -> int:
        """A vector length; every item takes at least one byte, so check early."""
        n = self.u32()
        if n > self.remaining():
            self.fail(f"it declares {n} {items} but only {_bytes(self.remaining())} remain")
        return n

    def name(self) -> str:
        raw = self.bytes(self.u32())
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError:
            self.fail("a name is not valid UTF-8")

    # --- types --------------------------------------------------------------

    def heap_type(self) -> None:
        value = self.s(33)
        if value < 0 and (value + 0x80) not in _HEAP_TYPES:
            self.fail(f"unknown heap type 0x{(value + 0x80) & 0xFF:02x}")

    def value_type(self, byte: int | None = None) -> int:
        byte = self.u8() if byte is None else byte
        if byte in _REF_NULL_OR_REF:
            self.heap_type()
        elif byte not in _NUM_TYPES and byte not in _HEAP_TYPES:
            self.fail(f"unknown value type 0x{byte:02x}")
        return byte

    def ref_type(self) -> None:
        byte = self.u8()
        if byte not in _HEAP_TYPES and byte not in _REF_NULL_OR_REF:
            self.fail(f"unknown reference type 0x{byte:02x}")
        self.value_type(byte)

    def limits(self, what: str, allow_shared: bool) -> tuple[int, int | None, bool, bool]:
        flags = self.u8()
        if flags & ~0x07 or (flags & 0x02 and not allow_shared):
            self.fail(f"the {what} limits use unsupported flags 0x{flags:02x}")
        is64 = bool(flags & 0x04)
        read = self.u64 if is64 else self.u32
        initial = read()
        maximum = read() if flags & 0x01 else None
        if maximum is not None and maximum < initial:
            self.fail(f"the {what}'s maximum size ({maximum}) is below its initial size ({initial})")
        return initial, maximum, bool(flags & 0x02), is64

    def memory_type(self, imported: bool) -> Memory:
        initial, maximum, shared, is64 = self.limits("memory", allow_shared=True)
        cap = _MAX_PAGES_64 if is64 else _MAX_PAGES_32
        if initial > cap or (maximum is not None and maximum > cap):
            self.fail(f"a memory asks for more than {cap} pages")
        if shared and maximum is None:
            self.fail("a shared memory must declare a maximum size")
        return Memory(initial, maximum, shared, is64, imported)

    def table_type(self, imported: bool = False) -> Table:
        self.ref_type()
        initial, maximum, _, is64 = self.limits("table", allow_shared=False)
        return Table(initial, maximum, is64, imported)

    def global_type(self) -> None:
        self.value_type()
        if self.u8() not in (0, 1):
            self.fail("a global's mutability flag is neither 0 nor 1")

    def const_expr(self) -> None:
        """Skip a constant expression (the opcodes allowed there) up to its end."""
        while True:
            op = self.u8()
            if op == 0x0B:  # end
                return
            if op == 0x41:
                self.s(32)
            elif op == 0x42:
                self.s(64)
            elif op == 0x43:
                self.bytes(4)
            elif op == 0x44:
                self.bytes(8)
            elif op in (0x23, 0xD2):  # global.get, ref.func
                self.u32()
            elif op == 0xD0:  # ref.null
                self.heap_type()
            elif op in (0x6A, 0x6B, 0x6C, 0x7C, 0x7D, 0x7E):  # extended-const arithmetic
                pass
            elif op == 0xFD and self.u32() == 12:  # v128.const
                self.bytes(16)
            elif op == 0xFB:  # GC allocation and conversion
                sub = self.u32()
                if sub in (0, 1, 6, 7):
                    self.u32()
                elif sub == 8:
                    self.u32()
                    self.u32()
                elif sub not in (26, 27, 28):
                    self.fail(f"instruction 0xfb {sub} is not allowed in a constant expression")
            else:
                self.fail(f"instruction 0x{op:02x} is not allowed in a constant expression")


class _Parser:
    """One pass over a module, keeping what validation and rewriting need."""

    def __init__(self, data: bytes):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidModule("the module must be given as raw bytes")
        self.data = memoryview(bytes(data) if isinstance(data, memoryview) else data)
        self.types: list[tuple[int, int] | None] = []  # (params, results), None if not a func
        self.func_types: list[int] = []  # type index of every function, imported first
        self.imported_funcs = 0
        self.tables = self.globals = self.tags = 0
        self.imports: list[Import] = []
        self.exports: list[Export] = []
        self.export_indices: dict[str, int] = {}
        self.memories: list[Memory] = []
        self.customs: list[tuple[str, bytes]] = []
        self.code_count = 0
        self.data_count: int | None = None
        self.data_segments = 0
        self.data_lengths: list[int] = []  # bytes in each data segment, in order
        self.func_imports: list[tuple[str, str, int]] = []  # (module, name, type index) of each function import
        self.table_list: list[Table] = []
        self.table_section: tuple[int, int] | None = None  # (start of header, end)
        self.start_function: int | None = None
        self.memory_section: tuple[int, int] | None = None  # (start of header, end)

    def parse(self) -> ModuleInfo:
        try:
            return self._parse()
        except InvalidModule:
            raise
        except (IndexError, ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
            # A safety net: the parser is written not to get here.
            raise InvalidModule(
                f"the module could not be parsed ({type(exc).__name__}); it is probably corrupt"
            ) from None

    def _parse(self) -> ModuleInfo:
        data, size = self.data, len(self.data)
        if size == 0:
            raise InvalidModule("the module is empty")
        if bytes(data[:4]) != _MAGIC:
            raise InvalidModule("the file is not a WebAssembly module (it does not start with \\0asm)")
        if size < 8:
            raise InvalidModule("the module is truncated: it ends inside the 8-byte header")
        if int.from_bytes(data[6:8], "little") == 1:  # the component model's "layer"
            raise InvalidModule(
                "the file is a WebAssembly component, which is not supported; "
                "build a core WASI preview 1 module instead"
            )
        version = int.from_bytes(data[4:8], "little")
        if version != 1:
            raise InvalidModule(f"the module uses WebAssembly binary version {version}, but only version 1 is supported")

        top = _Reader(data, 8, size, "the module")
        last_rank, last_id = 0, 0
        while top.pos < size:
            start = top.pos
            section_id = top.u8()
            label = f"section {section_id} ({_SECTION_NAMES.get(section_id, 'unknown')})"
            if section_id not in _SECTION_NAMES:
                raise InvalidModule(
                    f"the module has a section with unknown id {section_id} at offset {start}; "
                    "it is corrupt or built for a newer WebAssembly version"
                )
            top.what = f"the header of {label}"
            top.short_message = f"the module is truncated: it ends in the middle of the header of {label}"
            length = top.u32()
            if length > size - top.pos:
                raise InvalidModule(
                    f"the module is truncated: {label} declares {_bytes(length)} "
                    f"but only {size - top.pos} remain"
                )
            if section_id != 0:
                rank = _SECTION_ORDER[section_id]
                if section_id == last_id:
                    raise InvalidModule(f"the module has {label} twice")
                if rank < last_rank:
                    raise InvalidModule(
                        f"the module has {label} after section {last_id} "
                        f"({_SECTION_NAMES[last_id]}), which breaks the required section order"
                    )
                last_rank, last_id = rank, section_id
            r = _Reader(data, top.pos, top.pos + length, label)
            getattr(self, "_section_" + _SECTION_NAMES[section_id].replace(" ", "_"))(r)
            if section_id == 5:
                self.memory_section = (start, r.end)
            elif section_id == 4:
                self.table_section = (start, r.end)
            if r.pos != r.end:
                r.what = None
                r.fail(f"it has {_bytes(r.end - r.pos)} of trailing data after its contents")
            top.pos = r.end

        defined = len(self.func_types) - self.imported_funcs
        if defined != self.code_count:
            raise InvalidModule(
                f"the module declares {_count(defined, 'function')} "
                f"but has {_count(self.code_count, 'function body', 'function bodies')}"
            )
        if self.data_count is not None and self.data_count != self.data_segments:
            raise InvalidModule(
                f"the module's data count section says {_count(self.data_count, 'data segment')} "
                f"but its data section has {self.data_segments}"
            )
        return ModuleInfo(
            size=size,
            imports=tuple(self.imports),
            exports=tuple(self.exports),
            memories=tuple(self.memories),
            custom_sections=tuple(self.customs),
            tables=tuple(self.table_list),
        )

    # --- sections -----------------------------------------------------------

    def _type_index(self, r: _Reader) -> int:
        index = r.u32()
        if index >= len(self.types):
            r.fail(f"type index {index} is out of range ({len(self.types)} types)")
        if self.types[index] is None:
            r.fail(f"type {index} is not a function type")
        return index

    def _section_custom(self, r: _Reader) -> None:
        r.what = "the custom section's name"
        name = r.name()
        self.customs.append((name, bytes(r.bytes(r.remaining()))))

    def _section_type(self, r: _Reader) -> None:
        for i in range(r.count("types")):
            r.what = f"type {len(self.types)}"
            form: int | None = r.u8()
            group = 1
            if form == 0x4E:  # rec group
                group = r.count("types")
                form = None
            for _ in range(group):
                self.types.append(self._sub_type(r, form))
                form = None

    def _sub_type(self, r: _Reader, form: int | None) -> tuple[int, int] | None:
        form = r.u8() if form is None else form
        if form in (0x50, 0x4F):  # sub / sub final, with supertypes
            for _ in range(r.count("supertypes")):
                r.u32()
            form = r.u8()
        if form == 0x60:
            params = r.count("parameters")
            for _ in range(params):
                r.value_type()
            results = r.count("results")
            for _ in range(results):
                r.value_type()
            return params, results
        if form in (0x5F, 0x5E):  # struct (fields) or array (one field)
            for _ in range(r.count("fields") if form == 0x5F else 1):
                byte = r.u8()
                if byte not in (0x78, 0x77):  # i8, i16 packed types
                    r.value_type(byte)
                if r.u8() not in (0, 1):
                    r.fail("a field's mutability flag is neither 0 nor 1")
            return None
        r.fail(f"unknown type form 0x{form:02x}")

    def _section_import(self, r: _Reader) -> None:
        for i in range(r.count("imports")):
            r.what = f"import {i}"
            module, name = r.name(), r.name()
            r.what = f"import {i} ({_show(module)}.{_show(name)})"
            kind = r.u8()
            if kind == 0:
                self.func_types.append(self._type_index(r))
                self.func_imports.append((module, name, self.func_types[-1]))
                self.imported_funcs += 1
            elif kind == 1:
                self.table_list.append(r.table_type(imported=True))
                self.tables += 1
            elif kind == 2:
                self.memories.append(r.memory_type(imported=True))
            elif kind == 3:
                r.global_type()
                self.globals += 1
            elif kind == 4:
                self._tag_type(r)
            else:
                r.fail(f"unknown import kind 0x{kind:02x}")
            self.imports.append(Import(module, name, _KINDS[kind]))

    def _section_function(self, r: _Reader) -> None:
        for i in range(r.count("functions")):
            r.what = f"function {len(self.func_types)}"
            self.func_types.append(self._type_index(r))

    def _section_table(self, r: _Reader) -> None:
        for i in range(r.count("tables")):
            r.what = f"table {self.tables}"
            if r.pos < r.end and r.data[r.pos] == 0x40:  # table with an initializer
                r.u8()
                if r.u8() != 0:
                    r.fail("a table initializer has a nonzero reserved byte")
                self.table_list.append(r.table_type())
                r.const_expr()
            else:
                self.table_list.append(r.table_type())
            self.tables += 1

    def _section_memory(self, r: _Reader) -> None:
        for i in range(r.count("memories")):
            r.what = f"memory {len(self.memories)}"
            self.memories.append(r.memory_type(imported=False))

    def _tag_type(self, r: _Reader) -> None:
        if r.u8() != 0:
            r.fail("a tag has an unknown attribute")
        self._type_index(r)
        self.tags += 1

    def _section_tag(self, r: _Reader) -> None:
        for i in range(r.count("tags")):
            r.what = f"tag {self.tags}"
            self._tag_type(r)

    def _section_global(self, r: _Reader) -> None:
        for i in range(r.count("globals")):
            r.what = f"global {self.globals}"
            r.global_type()
            r.const_expr()
            self.globals += 1

    def _section_export(self, r: _Reader) -> None:
        limits = (len(self.func_types), self.tables, len(self.memories), self.globals, self.tags)
        for i in range(r.count("exports")):
            r.what = f"export {i}"
            name = r.name()
            r.what = f"export {i} ({_show(name)})"
            kind = r.u8()
            if kind >= len(_KINDS):
                r.fail(f"unknown export kind 0x{kind:02x}")
            index = r.u32()
            if index >= limits[kind]:
                r.fail(f"it exports {_KINDS[kind]} {index}, which does not exist")
            if name in self.export_indices:
                r.fail("the name is exported twice")
            self.export_indices[name] = index
            self.exports.append(Export(name, _KINDS[kind]))

    def _section_start(self, r: _Reader) -> None:
        index = r.u32()
        if index >= len(self.func_types):
            r.fail(f"the start function {index} does not exist")
        self.start_function = index

    def _section_element(self, r: _Reader) -> None:
        for i in range(r.count("element segments")):
            r.what = f"element segment {i}"
            flags = r.u32()
            if flags > 7:
                r.fail(f"unknown element segment flags {flags}")
            if flags & 0x03 == 2:  # active with an explicit table index
                r.u32()
            if not flags & 0x01:  # active: offset expression
                r.const_expr()
            if flags & 0x03:  # element kind or reference type
                if flags & 0x04:
                    r.ref_type()
                elif r.u8() != 0:
                    r.fail("unknown element kind")
            for _ in range(r.count("elements")):
                if flags & 0x04:
                    r.const_expr()
                else:
                    r.u32()

    def _section_data_count(self, r: _Reader) -> None:
        r.what = "the data segment count"
        self.data_count = r.u32()

    def _section_code(self, r: _Reader) -> None:
        for i in range(r.count("function bodies")):
            r.what = f"function body {i}"
            length = r.u32()
            if length > r.remaining():
                r.fail(f"the body declares {_bytes(length)} but only {_bytes(r.remaining())} remain in the section")
            body = _Reader(r.data, r.pos, r.pos + length, r.where)
            body.what = r.what
            locals_total = 0
            for _ in range(body.count("local groups")):
                locals_total += body.u32()
                body.value_type()
            if locals_total >= 1 << 32:
                body.fail("it declares too many locals")
            if body.pos >= body.end or body.data[body.end - 1] != 0x0B:
                body.fail("the body does not end with an end instruction")
            r.pos = body.end
            self.code_count += 1

    def _section_data(self, r: _Reader) -> None:
        for i in range(r.count("data segments")):
            r.what = f"data segment {i}"
            flags = r.u32()
            if flags == 2:
                r.u32()
            if flags in (0, 2):
                r.const_expr()
            elif flags != 1:
                r.fail(f"unknown data segment flags {flags}")
            self.data_lengths.append(len(r.bytes(r.u32())))
            self.data_segments += 1


def inspect_module(data: bytes) -> ModuleInfo:
    """Parse the structure of every section; raise InvalidModule on any problem."""
    return _Parser(data).parse()


def validate_worker_module(data: bytes, *, max_bytes: int = DEFAULT_MAX_MODULE_BYTES) -> ModuleInfo:
    """Check that ``data`` is a module a deploy accepts: a WASI preview 1 command."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        size = memoryview(data).nbytes
        if size == 0:
            raise InvalidModule("the module is empty")
        if size > max_bytes:
            raise InvalidModule(
                f"the module is {_mib(size)} ({size} bytes), more than the "
                f"{_mib(max_bytes)} ({max_bytes} bytes) limit"
            )
    parser = _Parser(data)
    info = parser.parse()

    start = next((e for e in info.exports if e.name == "_start"), None)
    if start is None:
        raise InvalidModule(
            "the module does not export _start, so it is not a WASI command; "
            "build it as an executable (a reactor or library will not run)"
        )
    if start.kind != "func":
        raise InvalidModule(f"the module exports _start as a {start.kind}, not a function, so it is not a WASI command")
    signature = parser.types[parser.func_types[parser.export_indices["_start"]]]
    if signature != (0, 0):
        raise InvalidModule("the module's _start takes parameters or returns results, but a WASI command's _start must do neither")

    for imp in info.imports:
        where = f"{_show(imp.module)}.{_show(imp.name)}"
        if imp.kind != "func":
            raise InvalidModule(
                f"the module imports a {imp.kind} ({where}), but a Worker may import only "
                "WASI preview 1 functions and must define its own memory, tables and globals"
            )
        if imp.module == WASI_PREVIEW1_MODULE:
            if imp.name not in WASI_PREVIEW1_FUNCTIONS:
                raise InvalidModule(f"the module imports {where}, which is not a WASI preview 1 function")
        elif imp.module == "wasi_unstable":
            raise InvalidModule(
                f"the module imports {where}, which is outside WASI preview 1 "
                "(wasi_unstable is its predecessor; rebuild with a current toolchain)"
            )
        else:
            raise InvalidModule(f"the module imports {where}, which is outside WASI preview 1")

    check_tables(info)
    if len(info.memories) > 1:
        raise InvalidModule(
            f"the module has {len(info.memories)} memories, but a Worker may have at most one (multi-memory is not supported)"
        )
    if any(m.memory64 for m in info.memories):
        raise InvalidModule("the module uses a 64-bit memory (memory64), which is not supported; build it for wasm32")
    return info


def check_tables(info: ModuleInfo) -> None:
    """Refuse more than MAX_TABLES tables, 64-bit tables, and tables that need more than
    MAX_TABLE_ELEMENTS elements at start."""
    if len(info.tables) > MAX_TABLES:
        raise InvalidModule(
            f"the module declares {len(info.tables)} tables, but a Worker may have at most {MAX_TABLES}"
        )
    for index, table in enumerate(info.tables):
        if table.table64:
            raise InvalidModule(f"table {index} is a 64-bit table, which is not supported; build the module for wasm32")
        if table.initial > MAX_TABLE_ELEMENTS:
            raise InvalidModule(
                f"table {index} needs {table.initial:,} elements at start, more than the "
                f"{MAX_TABLE_ELEMENTS:,} a Worker's table may hold"
            )


def cap_memory(data: bytes, max_pages: int) -> bytes:
    """Return ``data`` with every defined memory's maximum lowered to ``max_pages``.

    Only the memory section is re-encoded; all other bytes are kept as they are.
    """
    return prepare_to_run(data, max_pages, cap_tables=False)


def prepare_to_run(data: bytes, max_pages: int, *, cap_tables: bool = True) -> bytes:
    """Return ``data`` ready to load under a memory limit of ``max_pages``: every defined
    memory's maximum lowered to it, and (with ``cap_tables``) every defined table's maximum
    lowered to MAX_TABLE_ELEMENTS. Raises InvalidModule when a minimum is over its cap or the
    module has more than MAX_TABLES tables.

    Only the memory and table sections are re-encoded; all other bytes are kept as they are.
    """
    if isinstance(max_pages, bool) or not isinstance(max_pages, int) or max_pages < 1:
        raise InvalidInput(f"the memory limit must be a whole number of pages, at least 1 (got {max_pages!r})")
    parser = _Parser(data)
    info = parser.parse()
    raw = bytes(data)
    patches: list[tuple[int, int, bytes]] = []
    if parser.memory_section is not None:
        start, end = parser.memory_section
        defined = [m for m in info.memories if not m.imported]
        payload = bytearray(_uleb(len(defined)))
        for memory in defined:
            if memory.initial_pages > max_pages:
                raise MemoryOverLimit(
                    f"the module needs {_pages_mib(memory.initial_pages)} MiB of memory at start "
                    f"({memory.initial_pages} pages), more than its {_pages_mib(max_pages)} MiB limit ({max_pages} pages)"
                )
            limit = min(max_pages, _MAX_PAGES_64 if memory.memory64 else _MAX_PAGES_32)
            maximum = limit if memory.maximum_pages is None else min(memory.maximum_pages, limit)
            flags = 0x01 | (0x02 if memory.shared else 0) | (0x04 if memory.memory64 else 0)
            payload += bytes([flags]) + _uleb(memory.initial_pages) + _uleb(maximum)
        patches.append((start, end, b"\x05" + _uleb(len(payload)) + bytes(payload)))
    if cap_tables:
        check_tables(info)
        if parser.table_section is not None:
            patches.append(_capped_table_section(raw, *parser.table_section))
    patches.sort()
    pieces, at = [], 0
    for lo, hi, new in patches:
        pieces += [raw[at:lo], new]
        at = hi
    pieces.append(raw[at:])
    return b"".join(pieces)


def _capped_table_section(raw: bytes, start: int, end: int) -> tuple[int, int, bytes]:
    """The table section (from its id byte to its end) with every maximum capped."""
    view = memoryview(raw)
    header = _Reader(view, start + 1, end, "the table section")
    header.u32()  # the section size
    r = _Reader(view, header.pos, end, "the table section")
    payload = bytearray(_uleb(r.u32()))
    while r.pos < end:
        initialized = raw[r.pos] == 0x40  # 0x40 0x00 tabletype expr: a table with an initializer
        if initialized:
            payload += raw[r.pos:r.pos + 2]
            r.pos += 2
        type_start = r.pos
        r.ref_type()
        payload += raw[type_start:r.pos]
        initial, maximum, _, is64 = r.limits("table", allow_shared=False)
        capped = MAX_TABLE_ELEMENTS if maximum is None else min(maximum, MAX_TABLE_ELEMENTS)
        payload += bytes([0x01 | (0x04 if is64 else 0)]) + _uleb(initial) + _uleb(capped)
        if initialized:
            expr_start = r.pos
            r.const_expr()
            payload += raw[expr_start:r.pos]
    return start, end, b"\x04" + _uleb(len(payload)) + bytes(payload)


def memory_limit_pages(memory_mb: int) -> int:
    """The number of 64 KiB pages in ``memory_mb`` MiB (at least one)."""
    return max(1, memory_mb * (1024 * 1024 // WASM_PAGE_BYTES))

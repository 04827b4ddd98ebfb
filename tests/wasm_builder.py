"""A tiny WebAssembly binary assembler for tests that need hand-made modules."""

from __future__ import annotations

from collections.abc import Iterable

HEADER = b"\0asm\x01\x00\x00\x00"


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

"""Hand-assembled WASI guests for tests that need output no fixture writes: raw bytes on stdout
(a CGI response with a NUL in a header, a protocol frame with a bare CR) or the guest's own
environment sent back in a protocol response frame.

Each guest first reads once from stdin (so a protocol guest has its event before it answers;
a WCGI guest sees end of input at once), then writes, then returns from `_start` (exit 0).
"""

from __future__ import annotations

import json
import struct

from .wasm_builder import functype, module, name, section, sleb, uleb, vec

WASI = "wasi_snapshot_preview1"
I32 = 0x7F
PAGE = 65536

# memory layout shared by both guests
_IOVECS = 32  # up to three (ptr, len) pairs
_COUNTS = 16  # environ_sizes_get results: count, buffer size
_NWRITTEN = 64
_READ_IOVEC = 72
_READ_BUFFER = 4096  # 4 KiB of stdin is plenty to know the event arrived
_META = 8192
_ENV_POINTERS = 16384
_ENV_BUFFER = 3 * PAGE


def _i32(value: int) -> bytes:
    return b"\x41" + sleb(value)


def _store(address: int, value_code: bytes) -> bytes:
    return _i32(address) + value_code + b"\x36\x02\x00"  # i32.store align=2 offset=0


def _load(address: int) -> bytes:
    return _i32(address) + b"\x28\x02\x00"  # i32.load


def _data(offset: int, payload: bytes) -> bytes:
    return b"\x00" + _i32(offset) + b"\x0b" + uleb(len(payload)) + payload


def _command(imports: list[tuple[str, int]], types: list[bytes], body: bytes, pages: int, data: list[bytes]) -> bytes:
    """A WASI command: `imports` (name, type index) from WASI, one exported memory, `_start` = body."""
    start_type = len(types)
    code = vec([]) + body + b"\x0b"
    return module(
        section(1, vec([*types, functype()])),
        section(2, vec([name(WASI) + name(field) + b"\x00" + uleb(index) for field, index in imports])),
        section(3, vec([uleb(start_type)])),
        section(5, vec([b"\x00" + uleb(pages)])),
        section(7, vec([name("memory") + b"\x02" + uleb(0), name("_start") + b"\x00" + uleb(len(imports))])),
        section(10, vec([uleb(len(code)) + code])),
        section(11, vec(data)),
    )


# fd_read and fd_write: (fd, iovs, iovs_len, result) -> errno; environ_*: (a, b) -> errno
_FD_TYPE = functype((I32, I32, I32, I32), (I32,))
_ENV_TYPE = functype((I32, I32), (I32,))


def _read_stdin_once(fd_read: int) -> bytes:
    return (
        _store(_READ_IOVEC, _i32(_READ_BUFFER))
        + _store(_READ_IOVEC + 4, _i32(_META - _READ_BUFFER))
        + _i32(0) + _i32(_READ_IOVEC) + _i32(1) + _i32(_NWRITTEN) + b"\x10" + uleb(fd_read) + b"\x1a"
    )


def _write_stdout(fd_write: int, iovec_count: int) -> bytes:
    return _i32(1) + _i32(_IOVECS) + _i32(iovec_count) + _i32(_NWRITTEN) + b"\x10" + uleb(fd_write) + b"\x1a"


def stdout_bytes_module(output: bytes) -> bytes:
    """A guest that writes exactly `output` to stdout."""
    pages = 1 + (_META + len(output)) // PAGE
    body = (
        _read_stdin_once(0)
        + _store(_IOVECS, _i32(_META))
        + _store(_IOVECS + 4, _i32(len(output)))
        + _write_stdout(1, 1)
    )
    return _command([("fd_read", 0), ("fd_write", 0)], [_FD_TYPE], body, pages, [_data(_META, output)])


def protocol_frame(meta: dict, body: bytes = b"") -> bytes:
    raw = json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode()
    return struct.pack("<II", len(raw), len(body)) + raw + body


def protocol_response_module(status: int, headers: list[list[str]], body: bytes = b"") -> bytes:
    """A Worker-protocol guest that answers every event with this response frame."""
    return stdout_bytes_module(protocol_frame({"type": "response", "status": status, "headers": headers}, body))


def environment_probe_module() -> bytes:
    """A Worker-protocol guest answering 200 with its environment as the body: `NAME=VALUE` entries,
    each ending in a NUL byte (exactly what WASI `environ_get` hands it)."""
    meta = json.dumps({"type": "response", "status": 200, "headers": [["content-type", "application/octet-stream"]]},
                      separators=(",", ":")).encode()
    body = (
        _read_stdin_once(0)
        + _i32(_COUNTS) + _i32(_COUNTS + 4) + b"\x10" + uleb(2) + b"\x1a"  # environ_sizes_get
        + _i32(_ENV_POINTERS) + _i32(_ENV_BUFFER) + b"\x10" + uleb(3) + b"\x1a"  # environ_get
        + _store(0, _i32(len(meta)))  # frame header: meta length, body length
        + _store(4, _load(_COUNTS + 4))
        + _store(_IOVECS, _i32(0)) + _store(_IOVECS + 4, _i32(8))
        + _store(_IOVECS + 8, _i32(_META)) + _store(_IOVECS + 12, _i32(len(meta)))
        + _store(_IOVECS + 16, _i32(_ENV_BUFFER)) + _store(_IOVECS + 20, _load(_COUNTS + 4))
        + _write_stdout(1, 3)
    )
    imports = [("fd_read", 0), ("fd_write", 0), ("environ_sizes_get", 1), ("environ_get", 1)]
    return _command(imports, [_FD_TYPE, _ENV_TYPE], body, 5, [_data(_META, meta)])


def environment_of(response_body: bytes) -> dict[str, str]:
    """The probe's answer as a dict."""
    entries = [entry for entry in response_body.split(b"\x00") if entry]
    return dict(entry.decode().partition("=")[::2] for entry in entries)

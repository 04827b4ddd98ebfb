"""The wasmdeck Worker protocol's frames (docs/worker-protocol.md): encoding, incremental
decoding, and the checks on what a guest may send.

A frame is `meta_length` and `body_length` (u32 little-endian each), a JSON object (the
meta, always with a string `type`) and raw body bytes.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

from .validation import control_character

ABI = "protocol"
VERSION = 1
MARKER_EXPORT = "wasmdeck_worker_protocol_1"
# version 2 (section 9): warm instances serving invocation after invocation
VERSION_2 = 2
MARKER_EXPORT_2 = "wasmdeck_worker_protocol_2"
MAX_CALLS_IN_FLIGHT = 64
MARKER_EXPORTS = (MARKER_EXPORT, MARKER_EXPORT_2)  # a module exporting either speaks the protocol
MAX_META_BYTES = 1024 * 1024
MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_LOG_MESSAGE = 64 * 1024
LOG_LEVELS = ("debug", "info", "log", "warn", "error")

_HEADER = struct.Struct("<II")
GUEST_CALLS = frozenset({"fetch", "dispatch"})
GUEST_FINALS = frozenset({"response", "done", "exception"})
GUEST_TYPES = GUEST_CALLS | GUEST_FINALS | {"log"}
GUEST_CALLS_2 = GUEST_CALLS | {"sleep"}
# `waiting`: the guest is about to block reading stdin (section 9.3); the engine trusts it only from
# the runtimes it ships, and ignores it from any other guest
GUEST_TYPES_2 = GUEST_TYPES | GUEST_CALLS_2 | {"ready", "waiting"}


class ProtocolViolation(Exception):
    """The guest broke the protocol; the message says how, in one sentence."""


@dataclass
class Frame:
    meta: dict[str, Any]
    body: bytes = b""

    @property
    def type(self) -> str:
        return self.meta["type"]


def encode(meta: dict[str, Any], body: bytes = b"") -> bytes:
    raw = json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode()
    if len(raw) > MAX_META_BYTES:
        raise ValueError(f"frame meta of {len(raw)} bytes is over the {MAX_META_BYTES} byte limit")
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"frame body of {len(body)} bytes is over the {MAX_BODY_BYTES} byte limit")
    return _HEADER.pack(len(raw), len(body)) + raw + body


@dataclass
class FrameDecoder:
    """Feed stdout chunks in; take whole frames out. Raises ProtocolViolation on a bad frame."""

    _buffer: bytearray = field(default_factory=bytearray)
    allowed: frozenset[str] = GUEST_TYPES  # the frame types a guest may send (GUEST_TYPES_2 for version 2)

    def feed(self, chunk: bytes) -> list[Frame]:
        self._buffer.extend(chunk)
        frames: list[Frame] = []
        while len(self._buffer) >= _HEADER.size:
            meta_length, body_length = _HEADER.unpack_from(self._buffer)
            if meta_length > MAX_META_BYTES or body_length > MAX_BODY_BYTES:
                raise ProtocolViolation(_oversize_message(bytes(self._buffer[: _HEADER.size]), meta_length, body_length))
            end = _HEADER.size + meta_length + body_length
            if len(self._buffer) < end:
                break
            raw_meta = bytes(self._buffer[_HEADER.size : _HEADER.size + meta_length])
            body = bytes(self._buffer[_HEADER.size + meta_length : end])
            del self._buffer[:end]
            frames.append(Frame(_parse_meta(raw_meta, self.allowed), body))
        return frames

    @property
    def pending(self) -> int:
        return len(self._buffer)


def _oversize_message(header: bytes, meta_length: int, body_length: int) -> str:
    if header.isascii() and all(32 <= b < 127 or b in (9, 10, 13) for b in header):
        return f"the Worker wrote text to stdout instead of protocol frames (it starts {header.decode()!r})"
    if meta_length > MAX_META_BYTES:
        return f"the Worker sent a frame whose meta is {meta_length} bytes, over the {MAX_META_BYTES} byte limit"
    return f"the Worker sent a frame whose body is {body_length} bytes, over the {MAX_BODY_BYTES} byte limit"


def _parse_meta(raw: bytes, allowed: frozenset[str] = GUEST_TYPES) -> dict[str, Any]:
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        preview = raw[:40].decode("utf-8", "replace")
        raise ProtocolViolation(f"the Worker sent a frame whose meta is not JSON (it starts {preview!r})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("type"), str):
        raise ProtocolViolation("the Worker sent a frame whose meta is not a JSON object with a string \"type\"")
    if meta["type"] not in allowed:
        raise ProtocolViolation(
            f"the Worker sent a frame of unknown type {meta['type'][:40]!r}; "
            f"a Worker sends {', '.join(sorted(allowed))}"
        )
    return meta


def headers_from(value: Any, what: str) -> list[tuple[str, str]]:
    """A JSON header list `[[name, value], ...]` as sent by a guest."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ProtocolViolation(f"{what} headers must be a list of [name, value] pairs")
    pairs: list[tuple[str, str]] = []
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(part, str) for part in item)
        ):
            raise ProtocolViolation(f"{what} headers must be a list of [name, value] pairs of strings")
        name, text = item
        if not name or any(ord(ch) <= 32 or ord(ch) >= 127 or ch in '()<>@,;:\\"/[]?={}' for ch in name):
            raise ProtocolViolation(f"{what} header name {name[:40]!r} is not a valid HTTP header name")
        bad = control_character(text)
        if bad is not None:
            kind = "a line break or NUL" if bad in ("CR", "LF", "NUL") else "a control character"
            raise ProtocolViolation(f"{what} header {name} has a value with {kind} ({bad}), which HTTP forbids")
        pairs.append((name, text))
    return pairs


def log_level(value: Any) -> str:
    return value if value in LOG_LEVELS else "log"

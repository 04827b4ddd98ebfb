"""The Worker protocol's frame codec and message checks (engine/protocol.py), byte by byte."""

from __future__ import annotations

import json
import struct

import pytest

from wasmdeck.engine import protocol
from wasmdeck.engine.protocol import FrameDecoder, ProtocolViolation, encode, headers_from, log_level


def raw_frame(meta: bytes, body: bytes = b"") -> bytes:
    return struct.pack("<II", len(meta), len(body)) + meta + body


def test_frames_decode_whole_from_any_chunking() -> None:
    stream = (
        encode({"type": "log", "level": "info", "message": "héllo ✓"})
        + encode({"type": "response", "status": 200, "headers": [["a", "b"]]}, bytes(range(256)))
    )
    for size in (1, 2, 7, len(stream)):
        decoder = FrameDecoder()
        frames = []
        for start in range(0, len(stream), size):
            frames += decoder.feed(stream[start : start + size])
        assert [f.type for f in frames] == ["log", "response"]
        assert frames[0].meta["message"] == "héllo ✓"
        assert frames[1].body == bytes(range(256))
        assert decoder.pending == 0


def test_encode_refuses_oversized_frames() -> None:
    with pytest.raises(ValueError, match="body of 10485761 bytes is over"):
        encode({"type": "response"}, b"x" * (protocol.MAX_BODY_BYTES + 1))
    with pytest.raises(ValueError, match="meta of .* bytes is over"):
        encode({"type": "log", "message": "x" * protocol.MAX_META_BYTES})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"HTTP/1.1 200 OK\r\n", "wrote text to stdout instead of protocol frames (it starts 'HTTP/1.1')"),
        (struct.pack("<II", protocol.MAX_META_BYTES + 1, 0), "meta is 1048577 bytes, over the 1048576 byte limit"),
        (struct.pack("<II", 2, protocol.MAX_BODY_BYTES + 1), "body is 10485761 bytes, over the 10485760 byte limit"),
        (raw_frame(b"{not json"), "meta is not JSON (it starts '{not json')"),
        (raw_frame(b"\xff\xfe"), "meta is not JSON"),
        (raw_frame(b"[1, 2]"), 'not a JSON object with a string "type"'),
        (raw_frame(b'{"type": 3}'), 'not a JSON object with a string "type"'),
        (raw_frame(b'{"type": "fetch_result"}'), "unknown type 'fetch_result'"),  # a host-to-guest type
    ],
)
def test_bad_frames_are_violations_with_one_sentence(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolViolation) as caught:
        FrameDecoder().feed(data)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_every_guest_type_is_accepted() -> None:
    stream = b"".join(encode({"type": kind}) for kind in sorted(protocol.GUEST_TYPES))
    assert sorted(f.type for f in FrameDecoder().feed(stream)) == sorted(protocol.GUEST_TYPES)


def test_headers_and_log_levels() -> None:
    assert headers_from(None, "x") == []
    assert headers_from([["Content-Type", "a"], ["set-cookie", "1"], ["set-cookie", "2"]], "x") == [
        ("Content-Type", "a"), ("set-cookie", "1"), ("set-cookie", "2")]
    for bad, message in (
        ({"a": "b"}, "must be a list"),
        ([["a"]], "pairs of strings"),
        ([["a", 1]], "pairs of strings"),
        ([["bad name", "v"]], "not a valid HTTP header name"),
        ([["x", "a\r\nInjected: 1"]], "line break or NUL"),
    ):
        with pytest.raises(ProtocolViolation, match=message):
            headers_from(bad, "the response's")
    assert [log_level(level) for level in ("debug", "info", "log", "warn", "error", "fatal", None, 3)] == [
        "debug", "info", "log", "warn", "error", "log", "log", "log"]


def test_the_spec_documents_every_type_and_limit() -> None:
    from .conftest import ROOT

    spec = (ROOT / "docs" / "worker-protocol.md").read_text()
    for kind in sorted(protocol.GUEST_TYPES) + ["fetch_result", "fetch_error", "dispatch_result", "dispatch_error", "tail"]:
        assert f"**`{kind}`" in spec, kind
    assert "**1 MiB**" in spec and "**10 MiB**" in spec and protocol.MARKER_EXPORT in spec
    assert json.loads(encode({"type": "done"})[8:].decode()) == {"type": "done"}

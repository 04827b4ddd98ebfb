"""Bounds on what an anonymous client may make the dispatch listener hold before a request reaches
the app: the request line and header fields (uvicorn's httptools protocol accepts any amount).

- More than `max_header_bytes` bytes of request line and header fields, or more than
  `max_headers` header fields: `431 Request Header Fields Too Large`.
- A request target over `max_url_bytes` (16 KiB, at most half of `max_header_bytes`): `414 URI Too Long`.
- Either way the answer is one sentence and the connection is closed; nothing is dispatched.

The parser is fed at most what the limits still allow, so a client sending megabytes of headers
makes the server hold no more than about the limit. Chunked trailer fields (which arrive after
the body has started) and chunk framing count against the same header budget, which refills
with every chunk of body data: a request that sends too much of them is cut off.
"""

from __future__ import annotations

import logging
from typing import Any

DEFAULT_MAX_HEADER_BYTES = 32 * 1024
DEFAULT_MAX_HEADERS = 100
DEFAULT_MAX_URL_BYTES = 16 * 1024
MAX_HEADER_BYTES_RANGE = (1024, 1024 * 1024)
MAX_HEADERS_RANGE = (8, 10_000)

log = logging.getLogger("wasmdeck.server")

LINGER_S = 1.0
LINGER_BYTES = 4 * 1024 * 1024

_REASONS = {414: "URI Too Long", 431: "Request Header Fields Too Large"}


class HeadTooLarge(Exception):
    def __init__(self, status: int, sentence: str) -> None:
        super().__init__(sentence)
        self.status = status
        self.sentence = sentence


def bounded_protocol(
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    max_headers: int = DEFAULT_MAX_HEADERS,
    max_url_bytes: int = DEFAULT_MAX_URL_BYTES,
) -> type:
    """uvicorn's httptools protocol with these limits (pass it as `uvicorn.Config(http=...)`).
    uvicorn is imported here, not with this module, so the CLI starts without it."""
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    header_bytes, header_count, url_bytes = max_header_bytes, max_headers, min(max_url_bytes, max_header_bytes // 2)

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        max_header_bytes = header_bytes
        max_headers = header_count
        max_url_bytes = url_bytes

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._unparsed = 0  # bytes fed since the parser last made progress (a head, body data, a chunk, a message)
            self._head_bytes = 0
            self._header_count = 0
            self._url_bytes = 0
            self._refusal: HeadTooLarge | None = None
            self._discarding = False
            self._discarded = 0

        def data_received(self, data: bytes) -> None:
            if self._discarding:
                self._discarded += len(data)
                if self._discarded > LINGER_BYTES:
                    self.transport.close()
                return
            view = memoryview(data)
            while view:
                room = self.max_header_bytes - self._unparsed
                if room <= 0:
                    self._refuse(HeadTooLarge(431, self._too_large_sentence()))
                    return
                piece, view = view[:room], view[room:]
                self._unparsed += len(piece)
                self._feed(bytes(piece))
                if self.parser is None or self.transport.is_closing() or self._discarding:
                    return

        def _feed(self, data: bytes) -> None:
            """uvicorn's own data_received, with a refusal raised by a callback answered as such."""
            self._unset_keepalive_if_required()
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                if self._refusal is not None:
                    self._refuse(self._refusal)
                    return
                message = "Invalid HTTP request received."
                self.logger.warning(message)
                self.send_400_response(message)
            except httptools.HttpParserUpgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()

        def _too_large_sentence(self) -> str:
            return (f"The request's header fields are larger than this server's limit of {self.max_header_bytes} bytes "
                    "(request line and headers together).")

        def _fail(self, refusal: HeadTooLarge) -> None:
            """Stop the parser: httptools wraps the exception in an HttpParserError, which `_feed` answers."""
            self._refusal = refusal
            raise refusal

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = self._header_count = self._url_bytes = 0

        def on_url(self, url: bytes) -> None:
            self._url_bytes += len(url)
            if self._url_bytes > self.max_url_bytes:
                self._fail(HeadTooLarge(414, f"The request target is longer than this server's limit of {self.max_url_bytes} bytes."))
            self._count_head(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_count += 1
            if self._header_count > self.max_headers:
                self._fail(HeadTooLarge(431, f"The request has more than this server's limit of {self.max_headers} header fields."))
            self._count_head(len(name) + len(value) + 4)
            super().on_header(name, value)

        def _count_head(self, size: int) -> None:
            self._head_bytes += size
            if self._head_bytes > self.max_header_bytes:
                self._fail(HeadTooLarge(431, self._too_large_sentence()))

        # progress points: each gives the header budget back
        def on_headers_complete(self) -> None:
            self._unparsed = 0
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            self._unparsed = max(0, self._unparsed - len(body))
            super().on_body(body)

        def on_chunk_complete(self) -> None:
            self._unparsed = 0

        def on_message_complete(self) -> None:
            self._unparsed = 0
            super().on_message_complete()

        def _refuse(self, refusal: HeadTooLarge) -> None:
            """Answer (unless a response of this connection is under way) and close; nothing is dispatched."""
            if self.transport.is_closing():
                return
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
            log.info("refused a request from %s with %d: %s", client, refusal.status, refusal.sentence)
            if self.cycle is not None and not self.cycle.response_complete:
                self.transport.close()  # a response of this connection is under way: no room for ours
                return
            body = (refusal.sentence + "\n").encode()
            self.transport.write(
                f"HTTP/1.1 {refusal.status} {_REASONS[refusal.status]}\r\n".encode()
                + b"content-type: text/plain; charset=utf-8\r\n"
                + f"content-length: {len(body)}\r\n".encode()
                + b"connection: close\r\n\r\n"
                + body
            )
            # Linger: closing with unread input makes the kernel send a reset that can destroy the
            # answer before the client reads it; so end our side, drop what still arrives for a
            # moment, then close.
            self._discarding = True
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)

    return BoundedHttpToolsProtocol

"""Header values cross the engine as byte strings (one character per byte), both ways.

The JavaScript runtime reads incoming values as UTF-8 and sends every character past ASCII as its
UTF-8 bytes, as workerd does (tests/golden/workers/wire.js). The HTTP server hands guests latin-1
strings; the network must do the same for fetch() answers and put a guest's byte string on the wire
unchanged, or a UTF-8 header from an origin would reach the Worker garbled and one the Worker sends
would fail to encode.
"""
from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from wasmdeck.engine.egress import EgressPolicy
from wasmdeck.engine.network import Network


@pytest.fixture
def utf8_origin() -> Iterator[tuple[int, list[bytes]]]:
    """An origin on 127.0.0.1 that records the raw bytes of each request's x-name header and answers
    with the UTF-8 header `x-utf: café €`."""
    seen: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            seen.append((self.headers.get("x-name") or "").encode("latin-1"))
            self.send_response(200)
            self.send_header("x-utf", "café €".encode().decode("latin-1"))
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


async def test_fetch_header_values_travel_as_byte_strings(utf8_origin) -> None:
    port, seen = utf8_origin
    network = Network()
    try:
        sent = "résumé €".encode().decode("latin-1")  # what the JavaScript runtime writes for "résumé €"
        got = await network.fetch("GET", f"http://127.0.0.1:{port}/", [("x-name", sent)], b"", 5,
                                  policy=EgressPolicy.parse(["127.0.0.1"]))
        assert seen == ["résumé €".encode()]
        assert dict(got.headers)["x-utf"] == "café €".encode().decode("latin-1")
        # a guest that writes real characters past U+00FF still gets its header sent, as UTF-8
        await network.fetch("GET", f"http://127.0.0.1:{port}/", [("x-name", "€ only")], b"", 5,
                            policy=EgressPolicy.parse(["127.0.0.1"]))
        assert seen[-1] == "€ only".encode()
    finally:
        await network.close()

"""A real HTTP origin on 127.0.0.1 for Workers' fetch() calls, recording what it receives.

    /echo        answers 200 with the request body, and the request headers as x-seen-* headers
    /slow?ms=N   waits N ms, then answers 200 "slow"
    /status/N    answers status N
    /big?mb=N    answers N MiB of "x"
    anything     answers 200 "origin: METHOD PATH"
"""

from __future__ import annotations

import http.server
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Origin:
    host: str
    port: int
    seen: list[Seen] = field(default_factory=list)

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return f"http://{self.netloc}{path}"


def start_origin() -> tuple[Origin, http.server.ThreadingHTTPServer]:
    record: list[Seen] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            record.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            status, headers, payload = 200, [("content-type", "text/plain")], f"origin: {self.command} {parts.path}".encode()
            if parts.path == "/echo":
                payload = body
                headers = [("content-type", "application/octet-stream")]
                headers += [(f"x-seen-{k.lower()}", v) for k, v in self.headers.items() if k.lower() not in ("content-length",)]
            elif parts.path == "/slow":
                time.sleep(int(parse_qs(parts.query).get("ms", ["100"])[0]) / 1000)
                payload = b"slow"
            elif parts.path == "/big":
                payload = b"x" * int(float(parse_qs(parts.query).get("mb", ["1"])[0]) * 1024 * 1024)
            elif parts.path.startswith("/status/"):
                status = int(parts.path.rsplit("/", 1)[1])
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return Origin("127.0.0.1", server.server_address[1], record), server

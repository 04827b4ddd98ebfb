"""The HTTP-shaped request and response that flow through dispatch."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .errors import InvalidInput

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})
Headers = list[tuple[str, str]]


def _token_ok(name: str) -> bool:
    return bool(name) and all(33 <= ord(ch) < 127 and ch not in '()<>@,;:\\"/[]?={} \t' for ch in name)


def find_header(headers: Headers, name: str) -> str | None:
    """The first value of a header, by case-insensitive name."""
    lowered = name.lower()
    for key, value in headers:
        if key.lower() == lowered:
            return value
    return None


def parse_header_line(line: str) -> tuple[str, str]:
    """`Name: value` as typed on a command line."""
    name, sep, value = line.partition(":")
    name = name.strip()
    if not sep or not _token_ok(name):
        raise InvalidInput(f"header {line!r} is not of the form 'Name: value'")
    return name, value.strip()


@dataclass
class Request:
    """A request arriving at a dispatch namespace."""

    url: str
    method: str = "GET"
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    remote_addr: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.method = (self.method or "GET").upper()
        if self.method not in METHODS and not _token_ok(self.method):
            raise InvalidInput(f"{self.method!r} is not an HTTP method")
        try:
            parts = urlsplit(self.url)
        except ValueError as error:  # e.g. an unclosed IPv6 bracket: 'http://[::1/'
            raise InvalidInput(f"{self.url!r} is not a valid URL ({error})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput(f"{self.url!r} is not an http:// or https:// URL with a host")
        try:
            parts.port
        except ValueError as error:
            raise InvalidInput(f"{self.url!r} has a bad port") from error
        if isinstance(self.body, str):
            self.body = self.body.encode()
        self.headers = [(str(k), str(v)) for k, v in self.headers]
        for name, value in self.headers:
            if not _token_ok(name):
                raise InvalidInput(f"header name {name!r} is not valid")
            if "\r" in value or "\n" in value or "\x00" in value:
                raise InvalidInput(f"header {name} has a line break or NUL in its value")

    def header(self, name: str) -> str | None:
        return find_header(self.headers, name)

    @property
    def host(self) -> str:
        """The Host header if given, else the URL's host, lowercased and without a port."""
        host = self.header("host") or urlsplit(self.url).netloc
        host = host.rsplit("@", 1)[-1].strip().lower()
        if host.startswith("["):
            return host.split("]")[0] + "]"
        return host.split(":")[0]


@dataclass
class Response:
    """What dispatch answers: status, headers, body, and trace items.

    `trace` is the item of the Worker the request was for: the user Worker's, also when a
    dispatch Worker fronts the namespace and dispatched to it (the last one, if it dispatched
    more than once); the dispatch Worker's own item when it answered without dispatching.
    `dispatcher_trace` is the dispatch Worker's item whenever one handled the request.
    """

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    trace: dict[str, Any] = field(default_factory=dict)
    dispatcher_trace: dict[str, Any] | None = None
    # set when the Worker answered before its invocation ended (JavaScript `ctx.waitUntil` work goes
    # on): done when it has, and `trace` (the same dict) then holds the invocation's final item
    finished: "asyncio.Future[None] | None" = field(default=None, repr=False, compare=False)

    @property
    def outcome(self) -> str:
        """The outcome to report for the whole request: the dispatch Worker's when it failed,
        else that of the Worker the request was for."""
        if self.dispatcher_trace is not None and self.dispatcher_trace.get("outcome") != "ok":
            return str(self.dispatcher_trace.get("outcome"))
        return str(self.trace.get("outcome", "-"))

    def header(self, name: str) -> str | None:
        return find_header(self.headers, name)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape `wasmdeck request --json` prints; the body is text when it is UTF-8."""
        try:
            body: Any = self.body.decode("utf-8")
            encoding = "utf-8"
        except UnicodeDecodeError:
            import base64

            body = base64.b64encode(self.body).decode()
            encoding = "base64"
        return {
            "status": self.status,
            "headers": [[k, v] for k, v in self.headers],
            "body": body,
            "bodyEncoding": encoding,
            "trace": self.trace,
            **({"dispatcherTrace": self.dispatcher_trace} if self.dispatcher_trace is not None else {}),
        }


def text_response(status: int, message: str) -> Response:
    """A plain-text answer the engine itself gives (not found, an exception, an internal error)."""
    return Response(status, [("Content-Type", "text/plain; charset=utf-8")], (message.rstrip("\n") + "\n").encode())


def limit_response(status: int, error: str, limit: str, detail: str, value: int | None = None) -> Response:
    """The JSON answer for an invocation stopped by a limit: which one, and why."""
    body: dict[str, Any] = {"error": error, "limit": limit, "detail": detail}
    if value is not None:
        body["value"] = value
    return Response(status, [("Content-Type", "application/json")], (json.dumps(body) + "\n").encode())

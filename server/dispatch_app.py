"""The dispatch listener: a plain ASGI callable that sends every HTTP request through `Engine.dispatch`.

Any Host goes to dispatch, so `curl -H 'Host: hello.example.com' localhost:8787/` reaches the
worker `hello` (the namespace's router picks the worker, exactly as for `wasmdeck request`).

- Paths under `/__wasmdeck/` are reserved on every host and never reach a worker (like
  Cloudflare's `/cdn-cgi/`): `GET /__wasmdeck/health` answers 200 JSON with engine stats.
  A worker name is a DNS label, so under path routing `__wasmdeck` can never name a worker.
- Request bodies are bounded (`max_body_bytes`, 10 MiB by default): a declared
  Content-Length over the limit is refused before any of the body is read, and a chunked
  body is counted as it streams in; either way 413 with one sentence and `Connection: close`.
- Request header fields are bounded too (`max_header_bytes`, 32 KiB with the request target;
  `max_headers`, 100 fields): more is 431 with one sentence. Under `wasmdeck serve` the
  uvicorn protocol in `http_limits` refuses them before reading them; this check holds under
  any ASGI server.
- A response header that cannot go on the wire (a name that is not a token, a control
  character in a value) is never handed to the HTTP server: 502 with one sentence. The ABIs
  refuse such headers already; this is the last line.
- A request the engine refuses to build (bad Host, bad port, a target that is not a path)
  gets 400 with one sentence; an unexpected failure gets 500 with one sentence (logged
  with its traceback to the `wasmdeck.server` logger), never a traceback to the client.
- The worker's response headers pass through (hop-by-hop ones and Content-Length are the
  server's business); the trace item is not sent, its outcome is, as `X-Wasmdeck-Outcome`.
- One access-log line per request on the `wasmdeck.access` logger:
  `METHOD HOST PATH STATUS OUTCOME WALLms` (the query string is left out: it often carries tokens).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from wasmdeck.engine import DEFAULT_NAMESPACE, Engine, InvalidInput, Request, Response, WasmdeckError
from wasmdeck.engine.validation import control_character

from .http_limits import DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADERS

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_BODY_BYTES_LIMIT = 1024 * 1024 * 1024
RESERVED_PREFIX = "/__wasmdeck/"
HEALTH_PATH = RESERVED_PREFIX + "health"
OUTCOME_HEADER = "X-Wasmdeck-Outcome"

access_log = logging.getLogger("wasmdeck.access")
log = logging.getLogger("wasmdeck.server")

# The server frames the response itself; these never come from the worker.
_SERVER_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer", "proxy-connection"}
)
# Host header: a DNS name or IPv4 address, or a bracketed IPv6 literal, with an optional port.
_HOST = re.compile(r"^(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(?::[^/?#@\s]*)?$")


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class DispatchApp:
    """ASGI 3 application: `await app(scope, receive, send)`. The caller owns (and closes) the engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_headers: int = DEFAULT_MAX_HEADERS,
        access_log: bool = True,
    ) -> None:
        if not 0 <= max_body_bytes <= MAX_BODY_BYTES_LIMIT:
            raise InvalidInput(f"the body limit must be from 0 to {MAX_BODY_BYTES_LIMIT} bytes")
        if max_header_bytes < 1 or max_headers < 1:
            raise InvalidInput("the header limits must be at least 1")
        self.engine = engine
        self.namespace = namespace
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.access_log = access_log
        self.started = time.monotonic()
        self.in_flight = 0
        self.served = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send)
        # other scope types (websocket) are not served: returning makes the server refuse them

    # -- one request ------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        method = scope["method"]
        path = scope.get("path", "")
        raw_path = scope.get("raw_path")
        shown_path = raw_path.decode("latin-1") if raw_path else path
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", [])]
        host = next((v for k, v in headers if k.lower() == "host"), None) or _server_host(scope)
        self.in_flight += 1
        try:
            try:
                response, outcome = await self._respond(scope, receive, method, path, headers, host)
            except Exception:
                log.exception("failed to answer %s %s%s", method, host, shown_path)
                response, outcome = _plain(500, "Internal error in the wasmdeck server."), "internalError"
            if response is None:  # the client went away before its body arrived: nothing to answer
                outcome, status = "clientGone", 499
            else:
                status = response.status
                await _send_response(send, response, outcome, method)
        finally:
            self.in_flight -= 1
            self.served += 1
        if self.access_log:
            wall = (time.perf_counter() - started) * 1000
            access_log.info("%s %s %s %d %s %.1fms", method, host or "-", shown_path or "-", status, outcome, wall)

    async def _respond(
        self, scope: Scope, receive: Receive, method: str, path: str, headers: list[tuple[str, str]], host: str
    ) -> tuple[Response | None, str]:
        refusal = self._head_refusal(scope, headers)
        if refusal is not None:
            return refusal, "headersTooLarge"
        if path.startswith(RESERVED_PREFIX) or path == RESERVED_PREFIX.rstrip("/"):
            return self._reserved(method, path), "reserved"
        declared = next((v for k, v in headers if k.lower() == "content-length"), None)
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_body_bytes:
            return self._too_large(), "bodyTooLarge"
        try:
            body = await _read_body(receive, self.max_body_bytes)
        except BodyTooLarge:
            return self._too_large(), "bodyTooLarge"
        except ClientGone:
            return None, "clientGone"
        try:
            request = self._request(scope, method, headers, host, body)
        except InvalidInput as error:
            return _plain(400, f"Bad request: {str(error).rstrip('.')}."), "badRequest"
        try:
            response = await self.engine.dispatch(request, namespace=self.namespace)
        except WasmdeckError as error:  # e.g. the engine is closing, or the namespace was deleted
            return _plain(503, f"The server cannot dispatch right now: {str(error).rstrip('.')}."), "unavailable"
        response.headers = [(k, v) for k, v in response.headers if k.lower() not in _SERVER_HEADERS]
        unsendable = _unsendable_header(response.headers)
        if unsendable is not None:  # the engine refuses these already; never hand one to the HTTP server
            log.warning("refused to send a response for %s: %s", request.url.split("?")[0], unsendable)
            return _plain(502, f"Bad gateway: the Worker's response cannot be sent: {unsendable}."), "exception"
        return response, response.outcome

    def _request(self, scope: Scope, method: str, headers: list[tuple[str, str]], host: str, body: bytes) -> Request:
        if not host or not _HOST.match(host):
            raise InvalidInput(f"the Host header {host!r} is not a host name")
        raw_path = scope.get("raw_path")
        target = raw_path.decode("latin-1") if raw_path else scope.get("path", "")
        if not target.startswith("/"):
            raise InvalidInput(f"the request target {target!r} is not a path starting with /")
        query = scope.get("query_string", b"").decode("latin-1")
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        url = f"{scheme}://{host}{target}" + (f"?{query}" if query else "")
        client = scope.get("client")
        remote = {"remote_addr": client[0]} if client else {}
        return Request(url=url, method=method, headers=headers, body=body, **remote)

    def _head_refusal(self, scope: Scope, headers: list[tuple[str, str]]) -> Response | None:
        """431 for too many or too large header fields (the uvicorn protocol in `http_limits` refuses
        them before they are read; this holds under any ASGI server)."""
        if len(headers) > self.max_headers:
            sentence = f"The request has more than this server's limit of {self.max_headers} header fields."
        elif (sum(len(k) + len(v) + 4 for k, v in headers) + len(scope.get("raw_path") or b"")
              + len(scope.get("query_string") or b"") > self.max_header_bytes):
            sentence = (f"The request's header fields are larger than this server's limit of {self.max_header_bytes} "
                        "bytes (request line and headers together).")
        else:
            return None
        response = _plain(431, sentence)
        response.headers.append(("Connection", "close"))
        return response

    def _too_large(self) -> Response:
        response = _plain(413, f"The request body is larger than this server's limit of {self.max_body_bytes} bytes.")
        response.headers.append(("Connection", "close"))  # the unread rest of the body must not become the next request
        return response

    def _reserved(self, method: str, path: str) -> Response:
        if path != HEALTH_PATH:
            return _plain(404, f"Not found: {path} is reserved for wasmdeck and names no endpoint.")
        if method not in ("GET", "HEAD"):
            response = _plain(405, "The health endpoint answers GET and HEAD only.")
            response.headers.append(("Allow", "GET, HEAD"))
            return response
        body = json.dumps(self.health(), separators=(",", ":")).encode() + b"\n"
        return Response(200, [("Content-Type", "application/json"), ("Cache-Control", "no-store")], body)

    def health(self) -> dict[str, Any]:
        """What the health endpoint answers: engine and server stats."""
        runtime = self.engine.runtime
        namespaces = self.engine.namespaces()
        return {
            "status": "ok",
            "namespace": self.namespace,
            "uptimeS": round(time.monotonic() - self.started, 3),
            "requests": {"inFlight": self.in_flight, "served": self.served},
            "guests": {
                "running": runtime.running,
                "waiting": runtime.waiting,
                "maxConcurrency": runtime.max_concurrency,
                "maxQueue": runtime.max_queue,
                "sandboxes": runtime.sandbox_count,
            },
            "instances": {**self.engine.instance_totals(), "workers": self.engine.instance_stats(self.namespace)},
            "workers": len(self.engine.workers(self.namespace)),
            "namespaces": len(namespaces),
            "maxBodyBytes": self.max_body_bytes,
            "maxHeaderBytes": self.max_header_bytes,
            "maxHeaders": self.max_headers,
        }


# -- helpers ---------------------------------------------------------------------------


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing it as soon as more than `limit` bytes have arrived."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def _unsendable_header(headers: list[tuple[str, str]]) -> str | None:
    """Why a header cannot go on the wire (a name that is not a token, a control character in a
    value), or None when all can."""
    for name, value in headers:
        if not _TOKEN.match(name):
            return f"the header name {name[:60]!r} is not a valid HTTP token"
        bad = control_character(value)
        if bad is not None:
            return f"the header {name} has a control character ({bad}) in its value"
    return None


def _server_host(scope: Scope) -> str:
    """For an HTTP/1.0 request without a Host header: the address the server listens on."""
    server = scope.get("server")
    if not server or server[1] is None:
        return ""
    host, port = server
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}"


def _plain(status: int, sentence: str) -> Response:
    return Response(status, [("Content-Type", "text/plain; charset=utf-8")], (sentence + "\n").encode())


async def _send_response(send: Send, response: Response, outcome: str, method: str) -> None:
    headers = [
        (name.encode("latin-1", "replace"), value.encode("latin-1", "replace"))
        for name, value in response.headers
    ]
    if method != "HEAD":
        headers.append((b"content-length", str(len(response.body)).encode()))
    headers.append((OUTCOME_HEADER.lower().encode(), outcome.encode("latin-1", "replace")))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})

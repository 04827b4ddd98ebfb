"""The remote transport of `EngineClient`: a served engine's admin API over HTTP.

    client = RemoteClient("http://127.0.0.1:8788", token)
    await client.connect()                      # checks the address and the token: RemoteError if not
    rows = await client.workers("default")      # the same WorkerRow, Worker, Limits... LocalClient returns

Only the admin URL is needed: `GET /server` names the dispatch listener serving the same engine,
and `dispatch()` sends the request there as real HTTP. Its trace items (the user Worker's and,
behind a dispatch Worker, the dispatcher's) are then read back from the admin API (`GET /traces`),
found by an `X-Wasmdeck-Request-Id` header the client adds (the workers see it too; it is removed
from the items returned). A dispatch Worker that rewrites the request without that header leaves
only its own item to be found. The listener serves one
namespace, so a request for another namespace is refused with a sentence saying so.
`stream()` follows the admin listener's `/tail` WebSocket, reconnecting when it drops.

Errors are the engine's own classes with the engine's sentence (the envelope's `code` says which:
`not_found` → NotFound, `invalid_module` → InvalidModule, the other 4xx → InvalidInput), so the
console shows the same inline errors in both modes. A server that cannot be reached, refuses the
token or does not speak the admin API raises `RemoteError`, also a WasmdeckError, in one sentence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import httpx

from .interface import EngineClient, TraceStream, WorkerRow
from ..engine.errors import InvalidInput, InvalidModule, NotFound, WasmdeckError
from ..engine.engine import read_module
from ..engine.http import Request, Response
from ..engine.javascript import DEFAULT_FILENAME, ScriptInfo, looks_like_javascript
from ..engine.limits import CAMEL, FIELDS, EffectiveLimits, Limits
from ..engine.secrets import SecretsUnavailable, check_secret
from ..engine.store import Namespace, TailConsumer, Worker, WorkerVersion
from ..engine.traces import OUTCOMES, TraceFilter
from ..engine.validation import check_name, check_tags, check_vars

REQUEST_ID_HEADER = "X-Wasmdeck-Request-Id"
MAX_ITEMS_PER_REQUEST = 20  # the dispatcher's item and those of the Workers it dispatched to
ADMIN_TIMEOUT_S = 60.0  # a deploy uploads up to 25 MiB
CONNECT_TIMEOUT_S = 10.0
RECONNECT_MIN_S = 0.25
RECONNECT_MAX_S = 5.0
MAX_FRAME_BYTES = 16 * 1024 * 1024

_ERRORS: dict[str, type[WasmdeckError]] = {
    "not_found": NotFound,
    "invalid_module": InvalidModule,
    "invalid_input": InvalidInput,
    "conflict": InvalidInput,
    "too_large": InvalidInput,
    "secrets_unavailable": SecretsUnavailable,
}
# what httpx adds to every request on its own; a dispatched request carries only its own headers
_HTTPX_DEFAULT_HEADERS = ("accept", "accept-encoding", "connection", "user-agent")
# what the dispatch listener adds to a worker's response (the outcome is in the trace item)
_LISTENER_HEADERS = frozenset({"content-length", "x-wasmdeck-outcome"})


class RemoteError(WasmdeckError):
    """The server cannot be reached, refused the admin token, or does not answer as the admin API does."""


def _transport_failure(error: httpx.HTTPError) -> str:
    cause: BaseException = error
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    if isinstance(cause, OSError) and cause.errno and cause.errno > 0:
        return os.strerror(cause.errno)  # "Connection refused", not asyncio's "Connect call failed (...)"
    reason = getattr(cause, "strerror", None) or str(cause) or str(error) or type(error).__name__
    return reason.rstrip(".")


def _quoted(segment: str) -> str:
    return quote(segment, safe="")


# -- the engine's records from their JSON shapes ----------------------------------------------


def _limits(data: Mapping[str, Any]) -> Limits:
    return Limits.from_dict(dict(data))


def _effective_limits(data: Mapping[str, Any]) -> EffectiveLimits:
    sources = {CAMEL[name]: str(data["sources"][CAMEL[name]]) for name in FIELDS}
    return EffectiveLimits(**{name: data[CAMEL[name]] for name in FIELDS}, sources=sources)


def _namespace(data: Mapping[str, Any]) -> Namespace:
    return Namespace.from_dict(dict(data))


def _version_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "namespace": data["namespace"], "name": data["name"], "version": data["version"], "sha256": data["sha256"],
        "size": data["size"], "abi": data["abi"], "tags": tuple(data["tags"]), "vars": dict(data["vars"]),
        "created_at": data["createdAt"], "message": data["message"], "current": data["current"],
        "script": _script(data.get("script")),
    }


def _script(data: Any) -> ScriptInfo | None:
    """A JavaScript Worker's script as the server reports it (format, handlers, file name)."""
    if not isinstance(data, Mapping):
        return None
    return ScriptInfo(str(data.get("filename") or "worker.js"), str(data.get("format")), tuple(data.get("handlers") or ()))


def _version(data: Mapping[str, Any]) -> WorkerVersion:
    return WorkerVersion(**_version_fields(data))


def _worker(data: Mapping[str, Any]) -> Worker:
    return Worker(**_version_fields(data), first_deployed_at=data["firstDeployedAt"])


def _filter_params(trace_filter: TraceFilter | None) -> list[tuple[str, str]]:
    """A TraceFilter as the query parameters of `/traces` and `/tail`."""
    if trace_filter is None:
        return []
    params = [(name, str(getattr(trace_filter, name))) for name in ("namespace", "worker", "status", "search", "header", "sampling_rate")
              if getattr(trace_filter, name) is not None]
    return params + [("method", method) for method in trace_filter.method]


def _read_module(module: bytes | str | os.PathLike[str]) -> tuple[bytes, str]:
    """The module's bytes (read as the engine's deploy reads them; the server checks the size) and a file name."""
    data = read_module(module)
    if isinstance(module, (bytes, bytearray, memoryview)):  # unnamed: the names the engine gives such a module
        return data, DEFAULT_FILENAME if looks_like_javascript(data) else "module.wasm"
    return data, Path(module).name


# -- the client --------------------------------------------------------------------------------


class RemoteClient(EngineClient):
    """An engine served by `wasmdeck serve --admin-port`, over its admin API. `url` is the admin API's address."""

    def __init__(self, url: str, token: str, *, timeout: float = ADMIN_TIMEOUT_S) -> None:
        if not token:
            raise InvalidInput("the admin token cannot be empty")
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput(f"{url!r} is not an http:// or https:// address of an admin API")
        self.url = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        self.description = f"remote {self.url}"
        self._token = token
        self._admin = httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_S),
        )
        # the engine bounds every request by its wallMs, so the read has no timeout of its own
        self._dispatcher = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT_S))
        for name in _HTTPX_DEFAULT_HEADERS:
            del self._dispatcher.headers[name]
        self._server: dict[str, Any] | None = None
        self._streams: set[RemoteTraceStream] = set()

    # -- the admin API -----------------------------------------------------------------

    async def _call(self, method: str, path: str, **options: Any) -> Any:
        """One admin API call: its `result`, or the engine's error class with the server's sentence."""
        try:
            response = await self._admin.request(method, path, **options)
        except httpx.HTTPError as error:
            raise RemoteError(f"cannot reach the wasmdeck admin API at {self.url}: {_transport_failure(error)}") from None
        try:
            body = response.json()
            success = body["success"]
        except (ValueError, KeyError, TypeError):
            raise RemoteError(
                f"{self.url} answered {method} {path} with HTTP {response.status_code}, not the admin API's JSON; "
                "is it a wasmdeck admin listener?"
            ) from None
        if success:
            return body.get("result")
        if response.status_code == 401:
            raise RemoteError(f"the server at {self.url} refused the admin token; pass the token it printed at first start")
        first = (body.get("errors") or [{}])[0]
        message = first.get("message") or f"the admin API answered HTTP {response.status_code}"
        raise _ERRORS.get(first.get("code"), WasmdeckError)(message)

    @staticmethod
    def _script(namespace: str, name: str, part: str = "") -> str:
        return f"/namespaces/{_quoted(namespace)}/scripts/{_quoted(name)}{part}"

    async def connect(self) -> dict[str, Any]:
        """Check the address and the token (`RemoteError` if either is wrong); the server's `GET /server` answer."""
        self._server = await self._call("GET", "/server")
        return self._server

    async def namespace(self, name: str) -> Namespace:
        return _namespace(await self._call("GET", f"/namespaces/{_quoted(name)}"))

    async def set_outbound(
        self, service: str | None, parameters: Iterable[tuple[str, str | None]], namespace: str
    ) -> Namespace:
        path = f"/namespaces/{_quoted(namespace)}/outbound"
        if service is None:
            return _namespace(await self._call("DELETE", path))
        body = {"service": service, "parameters": [{"name": name, "template": template} for name, template in parameters]}
        return _namespace(await self._call("PUT", path, json=body))

    async def set_egress(self, allow: Iterable[str], block: Iterable[str], namespace: str) -> Namespace:
        body = {"allow": list(allow), "block": list(block)}
        return _namespace(await self._call("PUT", f"/namespaces/{_quoted(namespace)}/egress", json=body))

    async def tail_consumers(self, namespace: str) -> list[TailConsumer]:
        return [TailConsumer(**item) for item in await self._call("GET", f"/namespaces/{_quoted(namespace)}/tail-consumers")]

    async def add_tail_consumer(self, consumer: str, worker: str | None, dispatcher: bool, namespace: str) -> TailConsumer:
        body: dict[str, Any] = {"consumer": consumer, "dispatcher": dispatcher}
        if worker is not None:
            body["worker"] = worker
        return TailConsumer(**await self._call("POST", f"/namespaces/{_quoted(namespace)}/tail-consumers", json=body))

    async def remove_tail_consumer(self, consumer: str, worker: str | None, dispatcher: bool, namespace: str) -> None:
        params = {"dispatcher": "true" if dispatcher else "false", **({"worker": worker} if worker is not None else {})}
        await self._call("DELETE", f"/namespaces/{_quoted(namespace)}/tail-consumers/{_quoted(consumer)}", params=params)

    async def namespaces(self) -> list[Namespace]:
        return [_namespace(item) for item in await self._call("GET", "/namespaces")]

    async def workers(self, namespace: str, tags: Iterable[str] = ()) -> list[WorkerRow]:
        wanted = list(tags)
        params = {"tags": ",".join(f"{tag}:yes" for tag in wanted)} if wanted else None
        base = f"/namespaces/{_quoted(namespace)}"
        records, stats = await asyncio.gather(self._call("GET", base + "/scripts", params=params), self._call("GET", base + "/stats"))
        rows = []
        for record in records:
            numbers = stats.get(record["name"], {})
            rows.append(WorkerRow(_worker(record), numbers.get("requests", 0), numbers.get("errors", 0), numbers.get("lastOutcome")))
        return rows

    async def instance_stats(self, namespace: str) -> dict[str, dict[str, Any]]:
        stats: dict[str, dict[str, Any]] = await self._call("GET", f"/namespaces/{_quoted(namespace)}/instances")
        return stats

    async def versions(self, name: str, namespace: str) -> list[WorkerVersion]:
        return [_version(item) for item in await self._call("GET", self._script(namespace, name, "/versions"))]

    async def deploy(self, name, module, namespace, tags, vars) -> Worker:  # type: ignore[no-untyped-def]
        # the engine's own checks, in the engine's order, before a module is read and uploaded
        check_name(name)
        checked_tags = check_tags(tags)
        checked_vars = check_vars(dict(vars or {}))
        data, filename = _read_module(module)
        metadata = {"tags": list(checked_tags), "vars": checked_vars}
        record = await self._call(
            "PUT", self._script(namespace, name),
            data={"metadata": json.dumps(metadata)}, files={"module": (filename, data, "application/wasm")},
        )
        return _worker(record)

    async def _worker_now(self, name: str, namespace: str) -> Worker:
        return _worker(await self._call("GET", self._script(namespace, name)))

    async def set_tags(self, name: str, tags: Iterable[str], namespace: str) -> Worker:
        await self._call("PUT", self._script(namespace, name, "/tags"), json=list(tags))
        return await self._worker_now(name, namespace)

    async def set_vars(self, name: str, vars: Mapping[str, str], namespace: str) -> Worker:
        await self._call("PUT", self._script(namespace, name, "/vars"), json=dict(vars))
        return await self._worker_now(name, namespace)

    async def secret_names(self, name: str, namespace: str) -> list[str]:
        return list(await self._call("GET", self._script(namespace, name, "/secrets")))

    async def put_secret(self, name: str, key: str, value: str, namespace: str) -> Worker:
        check_secret(key, value)  # the engine's own check, before the value leaves this process
        await self._call("PUT", self._script(namespace, name, f"/secrets/{_quoted(key)}"), json={"value": value})
        return await self._worker_now(name, namespace)

    async def delete_secret(self, name: str, key: str, namespace: str) -> Worker:
        await self._call("DELETE", self._script(namespace, name, f"/secrets/{_quoted(key)}"))
        return await self._worker_now(name, namespace)

    async def update_settings(
        self, name: str, namespace: str, *, tags: Iterable[str] | None = None, vars: Mapping[str, str] | None = None
    ) -> Worker:
        body: dict[str, Any] = {}
        if tags is not None:
            body["tags"] = list(check_tags(tags))
        if vars is not None:
            body["vars"] = check_vars(dict(vars))
        if not body:
            raise InvalidInput("give new tags, new vars, or both")
        return _worker(await self._call("PATCH", self._script(namespace, name, "/settings"), json=body))

    async def rollback(self, name: str, version: int, namespace: str) -> Worker:
        return _worker(await self._call("POST", self._script(namespace, name, "/rollback"), json={"version": version}))

    async def delete(self, name: str, namespace: str) -> None:
        await self._call("DELETE", self._script(namespace, name))

    async def limits(self) -> dict[str, Limits]:
        return {tag: _limits(values) for tag, values in (await self._call("GET", "/limits")).items()}

    async def set_limits(self, tag: str, limits: Limits, clear: Iterable[str] = ()) -> Limits:
        body: dict[str, int | None] = {camel: value for camel, value in limits.as_dict().items() if value is not None}
        body.update({CAMEL[name]: None for name in clear})
        return _limits(await self._call("PUT", f"/limits/{_quoted(tag)}", json=body))

    async def delete_limits(self, tag: str) -> None:
        await self._call("DELETE", f"/limits/{_quoted(tag)}")

    async def effective_limits(self, name: str, namespace: str) -> EffectiveLimits:
        return _effective_limits(await self._call("GET", self._script(namespace, name, "/limits")))

    async def engine_defaults(self) -> Limits:
        return _limits((await self.connect())["engineDefaults"])

    async def recent_traces(self, limit: int, trace_filter: TraceFilter | None = None) -> list[dict[str, Any]]:
        return await self._call("GET", "/traces", params=[("limit", str(limit)), *_filter_params(trace_filter)])

    # -- dispatch ----------------------------------------------------------------------

    async def _dispatch_listener(self) -> dict[str, Any]:
        server = self._server or await self.connect()
        listener = server.get("dispatch")
        if listener is None:
            raise WasmdeckError(f"the server at {self.url} has no dispatch listener, so it cannot send requests")
        return listener

    def _reachable(self, listener_url: str) -> str:
        """The listener's URL, with a wildcard address (0.0.0.0, ::) replaced by the admin API's host."""
        parts = urlsplit(listener_url)
        if parts.hostname in ("0.0.0.0", "::", ""):
            host = urlsplit(self.url).hostname or "127.0.0.1"
            host = f"[{host}]" if ":" in host else host
            return urlunsplit((parts.scheme, f"{host}:{parts.port}", parts.path, "", ""))
        return listener_url

    async def dispatch(self, request: Request, namespace: str) -> Response:
        listener = await self._dispatch_listener()
        if namespace != listener["namespace"]:
            raise InvalidInput(
                f"the server at {self.url} dispatches namespace {listener['namespace']!r} only; "
                f"serve {namespace!r} (wasmdeck serve --namespace {namespace}) to send requests to it"
            )
        target = urlsplit(request.url)
        address = urlunsplit(("", "", target.path or "/", target.query, ""))
        request_id = secrets.token_hex(12)
        headers = list(request.headers)
        if request.header("host") is None:
            headers.insert(0, ("Host", target.netloc))
        headers.append((REQUEST_ID_HEADER, request_id))
        base = self._reachable(listener["url"])
        try:
            async with self._dispatcher.stream(request.method, base + address, headers=headers, content=request.body) as answer:
                body = b"".join([chunk async for chunk in answer.aiter_raw()])  # as the worker sent it: no decoding
        except httpx.HTTPError as error:
            self._server = None  # the server may have moved: ask again next time
            raise RemoteError(f"cannot reach the dispatch listener at {base}: {_transport_failure(error)}") from None
        response_headers = [(name, value) for name, value in answer.headers.multi_items() if name not in _LISTENER_HEADERS]
        response = Response(answer.status_code, response_headers, body)
        if answer.headers.get("x-wasmdeck-outcome") in OUTCOMES:
            response.trace, response.dispatcher_trace = await self._traces_of(request_id, listener["namespace"])
        return response

    async def _traces_of(self, request_id: str, namespace: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The request's trace items, found by the `request_id` header it carried, as `Response` holds them:
        the item of the Worker it was for, and the dispatch Worker's own item when one fronts the
        namespace (the same item twice when the dispatcher answered without dispatching).

        Every Worker that saw the request's headers stored them: the dispatch Worker (stored last,
        after the Workers it dispatched to), the user Workers it dispatched to with the request as it
        came, and an Outbound Worker only if a tenant forwarded the headers in a fetch (left out)."""
        settings, found = await asyncio.gather(
            self.namespace(namespace),
            self._call("GET", "/traces", params={
                "limit": str(MAX_ITEMS_PER_REQUEST), "namespace": namespace, "header": f"{REQUEST_ID_HEADER}:{request_id}"}),
        )
        for item in found:
            item["event"]["request"]["headers"].pop(REQUEST_ID_HEADER.lower(), None)
        dispatcher = settings.dispatch_worker
        outbound = settings.outbound.service if settings.outbound else None
        dispatcher_items = [item for item in found if dispatcher is not None and item.get("scriptName") == dispatcher]
        dispatcher_item = dispatcher_items[-1] if dispatcher_items else None
        users = [item for item in found if item.get("scriptName") not in (dispatcher, outbound)]
        if users:
            return users[-1], dispatcher_item
        if dispatcher_item is not None:
            return dispatcher_item, dispatcher_item
        return (found[-1] if found else {}), None

    # -- live traces -------------------------------------------------------------------

    def stream(self, trace_filter: TraceFilter | None = None, buffer: int = 10_000) -> "RemoteTraceStream":
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        address = urlunsplit((scheme, parts.netloc, parts.path + "/tail", urlencode(_filter_params(trace_filter)), ""))
        stream = RemoteTraceStream(address, self._token, buffer, on_close=self._streams.discard)
        self._streams.add(stream)
        return stream

    async def close(self) -> None:
        for stream in list(self._streams):
            stream.close()
        await self._admin.aclose()
        await self._dispatcher.aclose()


class RemoteTraceStream(TraceStream):
    """Trace items from the admin listener's `/tail` WebSocket, buffered for `drain()`.

    A dropped connection is opened again (waiting 0.25 s, doubling up to 5 s); items dispatched
    while it was down are not delivered. A refused token or filter ends the stream: `error` says why.
    `connected` is set while the server has confirmed the subscription (its `ready` message).
    """

    def __init__(self, address: str, token: str, buffer: int,
                 on_close: Callable[[RemoteTraceStream], None] | None = None) -> None:
        self.address = address
        self.dropped = 0
        self.error: str | None = None
        self.connected = asyncio.Event()
        self._token = token
        self._buffer = buffer
        self._items: deque[dict[str, Any]] = deque()
        self._wakeup = asyncio.Event()
        self._on_close = on_close
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="wasmdeck-remote-tail")

    def _offer(self, item: dict[str, Any]) -> None:
        if len(self._items) >= self._buffer:
            self.dropped += 1
            return
        self._items.append(item)
        self._wakeup.set()

    async def _follow(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus, WebSocketException

        delay = RECONNECT_MIN_S
        while True:
            try:
                async with connect(self.address, additional_headers={"Authorization": f"Bearer {self._token}"},
                                   open_timeout=CONNECT_TIMEOUT_S, max_size=MAX_FRAME_BYTES, ping_interval=20) as websocket:
                    async for frame in websocket:
                        self._receive(json.loads(frame))
                        if self.connected.is_set():
                            delay = RECONNECT_MIN_S
            except InvalidStatus as refused:
                if refused.response.status_code in (400, 401):
                    self.error = _refusal(refused.response.status_code, refused.response.body)
                    return
            except (OSError, TimeoutError, WebSocketException, ValueError):
                pass  # the server went away or is restarting: try again
            self.connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    def _receive(self, message: Any) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind is None:
            self._offer(message)
        elif kind == "ready":
            self.connected.set()
        elif kind == "dropped":
            self.dropped += int(message.get("count") or 0)

    def drain(self) -> list[dict[str, Any]]:
        items = list(self._items)
        self._items.clear()
        self._wakeup.clear()
        return items

    async def wait(self, timeout: float) -> None:
        if self._items:
            return
        self._wakeup.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    def take_dropped(self) -> int:
        dropped, self.dropped = self.dropped, 0
        return dropped

    def close(self) -> None:
        self._task.cancel()
        if self._on_close is not None:
            self._on_close(self)


def _refusal(status: int, body: bytes | bytearray | None) -> str:
    try:
        return json.loads(body or b"")["errors"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        return f"the tail stream was refused with HTTP {status}"

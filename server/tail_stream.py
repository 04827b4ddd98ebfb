"""Live tail over the network: `GET /tail` on the admin listener, a WebSocket of trace items.

Authentication: the same bearer token as the rest of the admin API, in the
`Authorization: Bearer <token>` header of the upgrade request. A `token` query parameter is
deliberately NOT accepted (query strings end up in logs and shell history). A missing or wrong
token is refused before the upgrade with a 401 envelope when the server supports WebSocket
denial responses (uvicorn and Starlette's TestClient do), else with close code 1008.

Query parameters (the filters of `wasmdeck tail`):

    namespace, worker, status (ok|error|canceled), method (repeatable), search, header (NAME or
    NAME:VALUE), sampling_rate (0 < r < 1), history (N newest stored items first), follow (1|0)

Invalid parameters are refused before the upgrade with a 400 envelope (or close code 1008).

Messages from the server are JSON text frames, one per message:

* a trace item: the same object `wasmdeck tail --format json` prints (it never has a `"type"` key);
* a control message, an object with a `"type"` key:

  - `{"type": "ready"}`: first message; the live subscription exists, so every item dispatched
    after it is delivered (subject to filters, sampling and drops). History items follow it.
  - `{"type": "dropped", "count": N}`: N matching items were skipped because this client (or the
    server's buffer for it) fell behind.
  - `{"type": "closing", "reason": "..."}`: the last message before the server closes, with reason
    `"end of history"` (follow=0; close code 1000), `"too slow"` (the client did not read; close
    code 1008), `"too many tail clients ..."` (over a cap; close code 1013, try again later) or
    `"server shutting down"` (close code 1001).

Messages from the client are read and ignored (reading them is how a disconnect is noticed).

Dispatch never waits on a client: the engine's subscription buffer is bounded and counts drops,
a pump task moves items into a small per-connection queue, and a sender task writes them to the
socket. When the queue stays full for `slow_timeout` seconds the client is closed as too slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from engine import Engine, InvalidInput
from engine.traces import TraceFilter

from .auth import token_matches

DEFAULT_PER_WORKER = 8
DEFAULT_TOTAL = 64
DEFAULT_QUEUE = 256
DEFAULT_SLOW_TIMEOUT_S = 5.0
DEFAULT_POLL_INTERVAL_S = 0.25
MAX_HISTORY = 10_000
CLOSE_TIMEOUT_S = 1.0

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_query(query: Any) -> tuple[TraceFilter, int, bool]:
    """`(filter, history, follow)` from the query parameters (a Starlette `QueryParams`); `InvalidInput` if bad."""
    known = {"namespace", "worker", "status", "method", "search", "header", "sampling_rate", "history", "follow"}
    unknown = sorted(set(query.keys()) - known)
    if unknown:
        raise InvalidInput(f"unknown query parameter {unknown[0]!r}")
    rate = query.get("sampling_rate")
    try:
        sampling_rate = float(rate) if rate not in (None, "") else None
    except ValueError:
        raise InvalidInput(f"sampling_rate {rate!r} is not a number") from None
    raw_history = query.get("history") or "0"
    if not raw_history.isdigit() or int(raw_history) > MAX_HISTORY:
        raise InvalidInput(f"history must be a whole number from 0 to {MAX_HISTORY}")
    raw_follow = (query.get("follow") or "1").lower()
    if raw_follow not in _TRUE | _FALSE:
        raise InvalidInput("follow must be 1 or 0")
    trace_filter = TraceFilter(
        namespace=query.get("namespace") or None,
        worker=query.get("worker") or None,
        status=query.get("status") or None,
        method=tuple(m for m in query.getlist("method") if m),
        search=query.get("search") or None,
        header=query.get("header") or None,
        sampling_rate=sampling_rate,
    )
    return trace_filter, int(raw_history), raw_follow in _TRUE


@dataclass
class TailHub:
    """Counts open tail connections per `(namespace, worker)` filter key and in total."""

    per_worker: int = DEFAULT_PER_WORKER
    total: int = DEFAULT_TOTAL
    active: dict[tuple[str | None, str | None], int] = field(default_factory=dict)

    def count(self) -> int:
        return sum(self.active.values())

    def acquire(self, key: tuple[str | None, str | None]) -> str | None:
        """Reserve a slot; the refusal reason if a cap is reached."""
        if self.count() >= self.total:
            return f"too many tail clients on this server (limit {self.total}); try again later"
        if self.active.get(key, 0) >= self.per_worker:
            what = f"worker {key[1]!r}" if key[1] else "all workers"
            return f"too many tail clients for {what} in namespace {key[0] or '*'} (limit {self.per_worker}); try again later"
        self.active[key] = self.active.get(key, 0) + 1
        return None

    def release(self, key: tuple[str | None, str | None]) -> None:
        left = self.active.get(key, 0) - 1
        if left > 0:
            self.active[key] = left
        else:
            self.active.pop(key, None)


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


class _TooSlow(Exception):
    pass


class TailEndpoint:
    """The `/tail` WebSocket handler (use with `WebSocketRoute("/tail", endpoint)`)."""

    def __init__(
        self,
        engine: Engine,
        token: str,
        *,
        per_worker: int = DEFAULT_PER_WORKER,
        total: int = DEFAULT_TOTAL,
        queue_size: int = DEFAULT_QUEUE,
        slow_timeout: float = DEFAULT_SLOW_TIMEOUT_S,
        poll_interval: float = DEFAULT_POLL_INTERVAL_S,
    ) -> None:
        if not token:
            raise InvalidInput("the admin token cannot be empty")
        self.engine = engine
        self.token = token
        self.hub = TailHub(per_worker, total)
        self.queue_size = queue_size
        self.slow_timeout = slow_timeout
        self.poll_interval = poll_interval

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.handle(WebSocket(scope, receive, send))

    async def _refuse(self, websocket: WebSocket, status: int, message: str) -> None:
        from .admin_app import envelope_error  # late: admin_app imports this module

        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            headers = {"WWW-Authenticate": 'Bearer realm="wasmdeck-admin"'} if status == 401 else None
            await websocket.send_denial_response(envelope_error(status, message, headers=headers))
        else:
            await websocket.close(code=1008, reason=message[:120])

    async def handle(self, websocket: WebSocket) -> None:
        if not token_matches(self.token, websocket.headers.get("authorization")):
            await self._refuse(websocket, 401, "a valid bearer token is required (Authorization: Bearer <token>)")
            return
        try:
            trace_filter, history, follow = parse_query(websocket.query_params)
        except InvalidInput as error:
            await self._refuse(websocket, 400, str(error))
            return
        key = (trace_filter.namespace, trace_filter.worker)
        refusal = self.hub.acquire(key)
        await websocket.accept()
        if refusal is not None:
            await self._close(websocket, 1013, refusal)
            return
        try:
            await self._stream(websocket, trace_filter, history, follow)
        finally:
            self.hub.release(key)

    async def _stream(self, websocket: WebSocket, trace_filter: TraceFilter, history: int, follow: bool) -> None:
        queue: asyncio.Queue[str] = asyncio.Queue(self.queue_size)
        dropped = 0

        def on_dropped(count: int) -> None:
            nonlocal dropped
            dropped += count

        async def pump() -> str:
            nonlocal dropped
            async for item in self.engine.tail(
                trace_filter, history=history, follow=follow, poll_interval=self.poll_interval, on_dropped=on_dropped
            ):
                if dropped and not queue.full():
                    queue.put_nowait(_dumps({"type": "dropped", "count": dropped}))
                    dropped = 0
                try:
                    await asyncio.wait_for(queue.put(_dumps(item)), self.slow_timeout)
                except asyncio.TimeoutError:
                    raise _TooSlow from None
            return "end of history"

        async def sender() -> None:
            while True:
                await websocket.send_text(await queue.get())
                queue.task_done()

        async def receiver() -> None:
            with contextlib.suppress(WebSocketDisconnect):
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        return

        pump_task = asyncio.create_task(pump(), name="wasmdeck-tail-pump")
        await asyncio.sleep(0)  # the pump runs up to its first wait: the engine subscription now exists
        try:
            await websocket.send_text(_dumps({"type": "ready"}))
        except Exception:
            pump_task.cancel()
            with contextlib.suppress(BaseException):
                await pump_task
            return
        send_task = asyncio.create_task(sender(), name="wasmdeck-tail-send")
        receive_task = asyncio.create_task(receiver(), name="wasmdeck-tail-receive")
        tasks = {pump_task, send_task, receive_task}
        close: tuple[int, str] | None = None
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if pump_task in done:
                error = pump_task.exception()
                if isinstance(error, _TooSlow):
                    close = (1008, "too slow")
                elif error is not None:
                    close = (1011, "internal error in the tail stream; see the server log")
                else:
                    # the history is queued: let the sender finish it unless the client leaves first
                    drained = asyncio.create_task(queue.join())
                    await asyncio.wait({drained, send_task, receive_task}, timeout=self.slow_timeout,
                                       return_when=asyncio.FIRST_COMPLETED)
                    drained.cancel()
                    close = (1000, pump_task.result())
        except asyncio.CancelledError:
            close = (1001, "server shutting down")
            raise
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            if close is not None:
                await self._close(websocket, *close)

    async def _close(self, websocket: WebSocket, code: int, reason: str) -> None:
        """Best effort: a closing notice and a close frame, never waiting more than `CLOSE_TIMEOUT_S`."""
        if websocket.application_state != WebSocketState.CONNECTED:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await websocket.send_text(_dumps({"type": "closing", "reason": reason}))
                await websocket.close(code=code, reason=reason[:120])
        except Exception:
            pass

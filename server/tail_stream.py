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

Where items come from: this server's own dispatches reach each client through its own engine
subscription (pushed, no polling). Items that other processes sharing the database store (a
`wasmdeck request`, another server) are read by one `StorePoller` per endpoint, every
`poll_interval` seconds while any client follows, and handed to every client whose filter wants
them: the database is read once per interval whether one client follows or sixty-four.

Dispatch never waits on a client: the engine's subscription buffer is bounded and counts drops,
a pump task moves items into a small per-connection queue, and a sender task writes them to the
socket. When the queue stays full for `slow_timeout` seconds the client is closed as too slow;
items the store poller finds for a client whose queue is full are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from wasmdeck.engine import Engine, InvalidInput
from wasmdeck.engine.traces import TraceFilter

from .auth import token_matches
from .envelope import envelope_error

DEFAULT_PER_WORKER = 8
DEFAULT_TOTAL = 64
DEFAULT_QUEUE = 256
DEFAULT_SLOW_TIMEOUT_S = 5.0
DEFAULT_POLL_INTERVAL_S = 0.25
MAX_HISTORY = 10_000
CLOSE_TIMEOUT_S = 1.0
FILTER_PARAMETERS = ("namespace", "worker", "status", "method", "search", "header", "sampling_rate")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

log = logging.getLogger("wasmdeck.server")


class InvalidParameter(InvalidInput):
    """A query parameter is malformed; `parameter` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


def _filter_part(parameter: str, **value: Any) -> None:
    """Let `TraceFilter` check one field on its own, so its refusal names the parameter."""
    try:
        TraceFilter(**value)
    except InvalidInput as error:
        raise InvalidParameter(parameter, str(error)) from None


def parse_trace_filter(query: Any, also_known: tuple[str, ...] = ()) -> TraceFilter:
    """The filters of `wasmdeck tail` from query parameters (a Starlette `QueryParams`); `InvalidParameter` if bad.

    Parameters other than the filters and `also_known` are refused, so a typo never silently widens a filter.
    """
    known = set(FILTER_PARAMETERS) | set(also_known)
    unknown = sorted(set(query.keys()) - known)
    if unknown:
        raise InvalidParameter(unknown[0], f"unknown query parameter {unknown[0]!r}")
    rate = query.get("sampling_rate")
    try:
        sampling_rate = float(rate) if rate not in (None, "") else None
    except ValueError:
        raise InvalidParameter("sampling_rate", f"sampling_rate {rate!r} is not a number") from None
    status = query.get("status") or None
    _filter_part("status", status=status)
    _filter_part("sampling_rate", sampling_rate=sampling_rate)
    return TraceFilter(
        namespace=query.get("namespace") or None,
        worker=query.get("worker") or None,
        status=status,
        method=tuple(m for m in query.getlist("method") if m),
        search=query.get("search") or None,
        header=query.get("header") or None,
        sampling_rate=sampling_rate,
    )


def parse_query(query: Any) -> tuple[TraceFilter, int, bool]:
    """`(filter, history, follow)` from the `/tail` query parameters; `InvalidParameter` if bad."""
    trace_filter = parse_trace_filter(query, also_known=("history", "follow"))
    raw_history = query.get("history") or "0"
    if not (raw_history.isascii() and raw_history.isdigit()) or int(raw_history) > MAX_HISTORY:  # "²" is a digit int() refuses
        raise InvalidParameter("history", f"history must be a whole number from 0 to {MAX_HISTORY}")
    raw_follow = (query.get("follow") or "1").lower()
    if raw_follow not in _TRUE | _FALSE:
        raise InvalidParameter("follow", "follow must be 1 or 0")
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


class _Outbox:
    """One client's bounded queue of JSON frames for its sender; what does not fit is counted and
    announced with a `dropped` notice as soon as there is room again."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue(size)
        self.dropped = 0

    def _announce_drops(self) -> None:
        if self.dropped and not self.queue.full():
            self.queue.put_nowait(_dumps({"type": "dropped", "count": self.dropped}))
            self.dropped = 0

    def offer(self, item: dict[str, Any]) -> None:
        """Queue an item without waiting; count it as dropped if the queue is full."""
        self._announce_drops()
        if self.queue.full():
            self.dropped += 1
        else:
            self.queue.put_nowait(_dumps(item))

    async def put(self, item: dict[str, Any], timeout: float) -> None:
        """Queue an item, waiting up to `timeout` seconds for room; `_TooSlow` if there is none."""
        self._announce_drops()
        try:
            await asyncio.wait_for(self.queue.put(_dumps(item)), timeout)
        except asyncio.TimeoutError:
            raise _TooSlow from None


class _Follower:
    """A following client as the store poller sees it: its filter, the last stored row its history
    covers, and its outbox. Stored items that arrive while its history is still being queued wait,
    so history always comes first."""

    def __init__(self, trace_filter: TraceFilter, start_id: int, outbox: _Outbox) -> None:
        self.filter = trace_filter
        self.start_id = start_id
        self.outbox = outbox
        self._held: list[dict[str, Any]] | None = []

    def offer_stored(self, row_id: int, item: dict[str, Any]) -> None:
        if row_id <= self.start_id or not self.filter.matches(item):
            return
        if self._held is None:
            self.outbox.offer(item)
        elif len(self._held) < self.outbox.queue.maxsize:
            self._held.append(item)
        else:
            self.outbox.dropped += 1

    def go_live(self) -> None:
        held, self._held = self._held or [], None
        for item in held:
            self.outbox.offer(item)


class StorePoller:
    """Reads the items other processes stored, once per `interval` while anyone follows, and offers each
    to every follower. Runs only while it has followers."""

    def __init__(self, engine: Engine, interval: float) -> None:
        self.engine = engine
        self.interval = interval
        self._followers: set[_Follower] = set()
        self._last_id = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def add(self, follower: _Follower) -> None:
        if not self.running:
            # a new follower's history covers everything up to its start_id: begin after it
            self._last_id = follower.start_id
            self._task = asyncio.get_running_loop().create_task(self._run(), name="wasmdeck-tail-store-poller")
        self._followers.add(follower)

    def remove(self, follower: _Follower) -> None:
        self._followers.discard(follower)
        if not self._followers and self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll()
            except Exception:  # a failed read must not end every client's tail; the next interval tries again
                log.exception("the tail stream could not read stored trace items")

    async def poll(self) -> None:
        store = self.engine.store
        newest = store.last_trace_id()
        rows = await asyncio.to_thread(store.traces_after, self._last_id, exclude_origin=self.engine.origin)
        for row_id, item in rows:
            self._last_id = row_id
            for follower in list(self._followers):
                follower.offer_stored(row_id, item)
        if not rows:
            # nothing from other processes up to `newest`: skip those rows, never ones stored after it
            self._last_id = max(self._last_id, newest)


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
        if per_worker < 1 or total < 1:
            raise InvalidInput("the tail client caps must be at least 1")
        self.engine = engine
        self.token = token
        self.hub = TailHub(per_worker, total)
        self.poller = StorePoller(engine, poll_interval)
        self.queue_size = queue_size
        self.slow_timeout = slow_timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.handle(WebSocket(scope, receive, send))

    async def _refuse(self, websocket: WebSocket, status: int, message: str, field: str | None = None) -> None:
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            headers = {"WWW-Authenticate": 'Bearer realm="wasmdeck-admin"'} if status == 401 else None
            await websocket.send_denial_response(envelope_error(status, message, field, headers=headers))
        else:
            await websocket.close(code=1008, reason=message[:120])

    async def handle(self, websocket: WebSocket) -> None:
        if not token_matches(self.token, websocket.headers.get("authorization")):
            await self._refuse(websocket, 401, "a valid bearer token is required (Authorization: Bearer <token>)")
            return
        try:
            trace_filter, history, follow = parse_query(websocket.query_params)
        except InvalidParameter as error:
            await self._refuse(websocket, 400, str(error), error.parameter)
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
        outbox = _Outbox(self.queue_size)
        # subscribe before reading the newest stored row: an item is then either in the history
        # (stored up to start_id), from the subscription (this engine's), or from the poller (others')
        subscription = self.engine.subscribe(trace_filter) if follow else None
        start_id = self.engine.store.last_trace_id()
        follower = _Follower(trace_filter, start_id, outbox)
        if subscription is not None:
            self.poller.add(follower)

        async def pump() -> tuple[int, str]:
            for item in self.engine.recent_traces(history, trace_filter, up_to_id=start_id) if history else ():
                await outbox.put(item, self.slow_timeout)
            if subscription is None:
                return 1000, "end of history"
            follower.go_live()
            while True:
                live = await subscription.get()
                if live is None:
                    return 1001, "server shutting down"  # the engine is closing
                outbox.dropped += subscription.take_dropped()
                await outbox.put(live, self.slow_timeout)

        async def sender() -> None:
            while True:
                await websocket.send_text(await outbox.queue.get())
                outbox.queue.task_done()

        async def receiver() -> None:
            with contextlib.suppress(WebSocketDisconnect):
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        return

        try:
            try:
                await websocket.send_text(_dumps({"type": "ready"}))
            except Exception:
                return  # the client left during the handshake
            await self._serve(websocket, outbox, pump, sender, receiver)
        finally:
            if subscription is not None:
                subscription.close()
                self.poller.remove(follower)

    async def _serve(
        self,
        websocket: WebSocket,
        outbox: _Outbox,
        pump: Callable[[], Coroutine[Any, Any, tuple[int, str]]],
        sender: Callable[[], Coroutine[Any, Any, None]],
        receiver: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        """Run the three tasks until one ends, then close the socket with the reason (code, text) that ended it."""
        pump_task = asyncio.create_task(pump(), name="wasmdeck-tail-pump")
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
                    log.error("the tail stream failed", exc_info=error)
                    close = (1011, "internal error in the tail stream; see the server log")
                else:
                    # what is queued (the history) goes out first unless the client leaves
                    drained = asyncio.create_task(outbox.queue.join())
                    await asyncio.wait({drained, send_task, receive_task}, timeout=self.slow_timeout,
                                       return_when=asyncio.FIRST_COMPLETED)
                    drained.cancel()
                    close = pump_task.result()
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

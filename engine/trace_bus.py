"""Live fan-out of trace items to subscribers, and batched persistence off the request path.

Publishing never waits: each subscriber has a bounded buffer, and an item that does not
fit is dropped and counted for that subscriber. The writer collects items and stores them
in batches from a worker thread, so a slow disk never slows dispatch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from .errors import WasmdeckError
from .store import Store
from .traces import TraceFilter

log = logging.getLogger("wasmdeck.traces")

DEFAULT_SUBSCRIBER_BUFFER = 1_000
FLUSH_INTERVAL_S = 0.1
MAX_BATCH = 500
MAX_PENDING_WRITES = 20_000
FAILURE_REPORT_INTERVAL_S = 60.0


class Subscription:
    """An async iterator of trace items matching a filter. `dropped` counts items lost to a full buffer."""

    def __init__(self, bus: "TraceBus", trace_filter: TraceFilter, buffer: int) -> None:
        self._bus = bus
        self.filter = trace_filter
        self._items: deque[dict[str, Any]] = deque()
        self._buffer = buffer
        self._wakeup = asyncio.Event()
        self.dropped = 0
        self.closed = False

    def _offer(self, item: dict[str, Any]) -> None:
        if not self.filter.matches(item):
            return
        if len(self._items) >= self._buffer:
            self.dropped += 1
            return
        self._items.append(item)
        self._wakeup.set()

    def pending(self) -> int:
        return len(self._items)

    def take_dropped(self) -> int:
        dropped, self.dropped = self.dropped, 0
        return dropped

    def drain(self) -> list[dict[str, Any]]:
        """Everything buffered right now, without waiting (for UIs that batch their updates)."""
        items = list(self._items)
        self._items.clear()
        self._wakeup.clear()
        return items

    async def wait(self, timeout: float | None = None) -> None:
        """Return when items are buffered or the subscription is closed, or after `timeout` seconds."""
        if self._items or self.closed:
            return
        self._wakeup.clear()
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next item, or None once closed or after `timeout` seconds without one."""
        await self.wait(timeout)
        return self._items.popleft() if self._items else None

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            item = await self.get()
            if item is None:
                return
            yield item

    def close(self) -> None:
        self.closed = True
        self._wakeup.set()
        self._bus._subscriptions.discard(self)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class TraceBus:
    def __init__(self, store: Store, origin: str, retention: int | None = None, persist: bool = True) -> None:
        self._store = store
        self.origin = origin
        self.retention = retention
        self.persist = persist
        self._subscriptions: set[Subscription] = set()
        self._pending: list[dict[str, Any]] = []
        self._writer: asyncio.Task | None = None
        self._flush_needed: asyncio.Event | None = None
        self.write_dropped = 0
        self.published = 0
        self._queued = 0  # items handed to the writer so far
        self._settled = 0  # of those, stored or given up on
        self._progress = asyncio.Condition()
        self._last_failure = ""
        self._last_failure_at = 0.0

    def subscribe(self, trace_filter: TraceFilter | None = None, buffer: int = DEFAULT_SUBSCRIBER_BUFFER) -> Subscription:
        subscription = Subscription(self, trace_filter or TraceFilter(), buffer)
        self._subscriptions.add(subscription)
        return subscription

    def publish(self, item: dict[str, Any]) -> None:
        self.published += 1
        for subscription in list(self._subscriptions):
            subscription._offer(item)
        if not self.persist:
            return
        if len(self._pending) >= MAX_PENDING_WRITES:
            self.write_dropped += 1
            return
        self._pending.append(item)
        self._queued += 1
        self._ensure_writer()

    def _ensure_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._flush_needed = asyncio.Event()
            self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="wasmdeck-trace-writer")

    async def _write_loop(self) -> None:
        while self._pending:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            await self._flush_once()

    async def _flush_once(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                await asyncio.to_thread(self._store.insert_traces, self.origin, batch, self.retention)
            except WasmdeckError as error:  # e.g. a read-only database: one line, now and then, never a traceback
                self.write_dropped += len(batch)
                self._report_failure(f"could not store {len(batch)} trace item(s): {error}")
            except Exception:  # the store is the only place traces persist; keep serving if it fails
                log.exception("could not store %d trace items", len(batch))
                self.write_dropped += len(batch)
            async with self._progress:
                self._settled += len(batch)
                self._progress.notify_all()

    def _report_failure(self, message: str) -> None:
        """Log a storage failure: at once when it is new, then at most every FAILURE_REPORT_INTERVAL_S."""
        now = time.monotonic()
        if message.split(": ", 1)[-1] == self._last_failure and now - self._last_failure_at < FAILURE_REPORT_INTERVAL_S:
            return
        self._last_failure, self._last_failure_at = message.split(": ", 1)[-1], now
        log.warning("wasmdeck: %s (%d dropped so far)", message, self.write_dropped)

    async def flush(self) -> None:
        """Store everything published so far (used at shutdown and by tests). Items published
        while it waits are not waited for, so it ends under steady traffic too."""
        target = self._queued
        await self._flush_once()
        async with self._progress:
            await self._progress.wait_for(lambda: self._settled >= target)

    async def close(self) -> None:
        await self.flush()
        for subscription in list(self._subscriptions):
            subscription.close()

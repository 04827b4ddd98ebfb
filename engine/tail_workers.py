"""Delivering trace items to Tail Workers: queued per consumer, sent in batches after the
producer has answered, so a slow or failing consumer never delays or fails it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

MAX_BATCH = 100
MAX_QUEUED = 5_000

Deliver = Callable[[str, str, list[dict[str, Any]]], Awaitable[None]]  # (namespace, consumer, items)


class TailDelivery:
    def __init__(self, deliver: Deliver, *, max_batch: int = MAX_BATCH, max_queued: int = MAX_QUEUED) -> None:
        self._deliver = deliver
        self._max_batch = max_batch
        self._max_queued = max_queued
        self._queues: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.dropped = 0  # items a full queue refused

    def offer(self, namespace: str, consumer: str, items: list[dict[str, Any]]) -> None:
        key = (namespace, consumer)
        queue = self._queues.setdefault(key, [])
        room = self._max_queued - len(queue)
        if room < len(items):
            self.dropped += len(items) - max(room, 0)
            items = items[: max(room, 0)]
        queue.extend(items)
        if key not in self._tasks or self._tasks[key].done():
            self._tasks[key] = asyncio.ensure_future(self._drain(key))

    async def _drain(self, key: tuple[str, str]) -> None:
        queue = self._queues[key]
        while queue:
            await asyncio.sleep(0)  # let the producer's caller go first
            batch = queue[: self._max_batch]
            del queue[: self._max_batch]
            try:
                await self._deliver(key[0], key[1], batch)
            except Exception:  # the consumer's own trace item records its failure
                pass

    async def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything offered so far has been delivered (or `timeout` passes)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            running = [task for task in self._tasks.values() if not task.done()]
            if not running:
                return
            left = deadline - loop.time()
            if left <= 0:
                return
            await asyncio.wait(running, timeout=left)

    async def close(self, timeout: float = 2.0) -> None:
        await self.flush(timeout)
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()

"""`LocalClient`: the engine client interface over an `Engine` in this process."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping
from typing import Any

from ..engine.engine import Engine
from ..engine.http import Request, Response
from ..engine.limits import EffectiveLimits, Limits
from ..engine.store import Namespace, TailConsumer, Worker, WorkerVersion
from ..engine.traces import TraceFilter
from .interface import EngineClient, TraceStream, WorkerRow


class _LocalStream(TraceStream):
    """Items dispatched by this process arrive at once; items from other processes sharing the
    database are polled from the store."""

    def __init__(self, engine: Engine, trace_filter: TraceFilter, buffer: int, poll_interval: float = 0.25) -> None:
        self._engine = engine
        self._filter = trace_filter
        self._subscription = engine.subscribe(trace_filter, buffer=buffer)
        self._last_id = engine.store.last_trace_id()
        self._poll_interval = poll_interval
        self._next_poll = 0.0
        self._foreign: list[dict[str, Any]] = []
        self._buffer = buffer
        self.dropped = 0

    def _poll(self) -> None:
        loop_time = asyncio.get_running_loop().time()
        if loop_time < self._next_poll:
            return
        self._next_poll = loop_time + self._poll_interval
        rows = self._engine.store.traces_after(
            self._last_id,
            namespace=self._filter.namespace,
            worker=self._filter.worker,
            exclude_origin=self._engine.origin,
        )
        for row_id, item in rows:
            self._last_id = row_id
            if self._filter.matches(item):
                if len(self._foreign) >= self._buffer:
                    self.dropped += 1
                else:
                    self._foreign.append(item)

    def drain(self) -> list[dict[str, Any]]:
        self._poll()
        items = self._subscription.drain()
        if self._foreign:
            items = sorted(items + self._foreign, key=lambda item: item.get("eventTimestamp", 0))
            self._foreign = []
        return items

    async def wait(self, timeout: float) -> None:
        if not self._foreign:
            await self._subscription.wait(timeout)

    def take_dropped(self) -> int:
        dropped = self.dropped + self._subscription.take_dropped()
        self.dropped = 0
        return dropped

    def close(self) -> None:
        self._subscription.close()


class LocalClient(EngineClient):
    """The in-process transport: an `Engine` in this process."""

    def __init__(self, engine: Engine, description: str | None = None) -> None:
        self.engine = engine
        self.description = description or str(engine.db_path)

    async def namespaces(self) -> list[Namespace]:
        return self.engine.namespaces()

    async def workers(self, namespace: str, tags: Iterable[str] = ()) -> list[WorkerRow]:
        stats = self.engine.worker_stats(namespace)
        rows = []
        for worker in self.engine.workers(namespace, tags=tags):
            numbers = stats.get(worker.name, {})
            rows.append(WorkerRow(worker, numbers.get("requests", 0), numbers.get("errors", 0), numbers.get("lastOutcome")))
        return rows

    async def instance_stats(self, namespace: str) -> dict[str, dict[str, Any]]:
        return self.engine.instance_stats(namespace)

    async def versions(self, name: str, namespace: str) -> list[WorkerVersion]:
        return self.engine.versions(name, namespace=namespace)

    async def deploy(self, name, module, namespace, tags, vars) -> Worker:  # type: ignore[no-untyped-def]
        # in a thread: a deploy meters and compiles a new module, or checks a script in the JavaScript runtime
        return await asyncio.to_thread(self.engine.deploy, name, module, namespace=namespace, tags=tags, vars=vars)

    async def set_tags(self, name: str, tags: Iterable[str], namespace: str) -> Worker:
        return self.engine.set_tags(name, tags, namespace=namespace)

    async def set_vars(self, name: str, vars: Mapping[str, str], namespace: str) -> Worker:
        return self.engine.set_vars(name, vars, namespace=namespace)

    async def secret_names(self, name: str, namespace: str) -> list[str]:
        return self.engine.secret_names(name, namespace=namespace)

    async def put_secret(self, name: str, key: str, value: str, namespace: str) -> Worker:
        return self.engine.put_secret(name, key, value, namespace=namespace)

    async def delete_secret(self, name: str, key: str, namespace: str) -> Worker:
        return self.engine.delete_secret(name, key, namespace=namespace)

    async def update_settings(
        self, name: str, namespace: str, *, tags: Iterable[str] | None = None, vars: Mapping[str, str] | None = None
    ) -> Worker:
        return self.engine.update_settings(name, tags=tags, vars=vars, namespace=namespace)

    async def rollback(self, name: str, version: int, namespace: str) -> Worker:
        return self.engine.rollback(name, version, namespace=namespace)

    async def delete(self, name: str, namespace: str) -> None:
        self.engine.delete(name, namespace=namespace)

    async def namespace(self, name: str) -> Namespace:
        return self.engine.namespace(name)

    async def set_outbound(
        self, service: str | None, parameters: Iterable[tuple[str, str | None]], namespace: str
    ) -> Namespace:
        return self.engine.set_outbound(service, list(parameters), namespace=namespace)

    async def set_egress(self, allow: Iterable[str], block: Iterable[str], namespace: str) -> Namespace:
        return self.engine.set_egress(allow=list(allow), block=list(block), namespace=namespace)

    async def tail_consumers(self, namespace: str) -> list[TailConsumer]:
        return self.engine.tail_consumers(namespace)

    async def add_tail_consumer(self, consumer: str, worker: str | None, dispatcher: bool, namespace: str) -> TailConsumer:
        return self.engine.add_tail_consumer(consumer, worker=worker, dispatcher=dispatcher, namespace=namespace)

    async def remove_tail_consumer(self, consumer: str, worker: str | None, dispatcher: bool, namespace: str) -> None:
        self.engine.remove_tail_consumer(consumer, worker=worker, dispatcher=dispatcher, namespace=namespace)

    async def limits(self) -> dict[str, Limits]:
        return self.engine.limits()

    async def set_limits(self, tag: str, limits: Limits, clear: Iterable[str] = ()) -> Limits:
        return self.engine.set_limits(tag, limits, clear=clear)

    async def delete_limits(self, tag: str) -> None:
        self.engine.delete_limits(tag)

    async def effective_limits(self, name: str, namespace: str) -> EffectiveLimits:
        return self.engine.effective_limits(name, namespace=namespace)

    async def engine_defaults(self) -> Limits:
        return self.engine.engine_defaults

    async def dispatch(self, request: Request, namespace: str) -> Response:
        return await self.engine.dispatch(request, namespace=namespace)

    async def recent_traces(self, limit: int, trace_filter: TraceFilter | None = None) -> list[dict[str, Any]]:
        await self.engine.flush_traces()
        return self.engine.recent_traces(limit, trace_filter)

    def stream(self, trace_filter: TraceFilter | None = None, buffer: int = 10_000) -> TraceStream:
        return _LocalStream(self.engine, trace_filter or TraceFilter(), buffer)

    async def close(self) -> None:
        await self.engine.close()

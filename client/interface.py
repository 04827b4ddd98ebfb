"""The engine client interface: what a console (or any remote tool) may ask of an engine.

Two transports implement it: `LocalClient` calls an in-process `Engine`; a remote client
speaks the admin API over HTTP. Screens depend on `EngineClient` only, so every screen
works embedded and remote without two code paths.
"""

from __future__ import annotations

import abc
import asyncio
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..engine.http import Request, Response
from ..engine.limits import EffectiveLimits, Limits
from ..engine.store import Namespace, TailConsumer, Worker, WorkerVersion
from ..engine.traces import TraceFilter


@dataclass(frozen=True)
class WorkerRow:
    """A worker as a listing shows it: the serving version plus its recent traffic."""

    worker: Worker
    requests: int
    errors: int
    last_outcome: str | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


class TraceStream(abc.ABC):
    """Live trace items; `drain()` returns what arrived since the last call, without waiting."""

    dropped: int

    @abc.abstractmethod
    def drain(self) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def wait(self, timeout: float) -> None:
        """Return when items are ready or after `timeout` seconds."""

    @abc.abstractmethod
    def take_dropped(self) -> int: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class EngineClient(abc.ABC):
    """Everything the console does goes through these methods."""

    description: str

    @abc.abstractmethod
    async def namespaces(self) -> list[Namespace]: ...

    @abc.abstractmethod
    async def namespace(self, name: str) -> Namespace: ...

    @abc.abstractmethod
    async def set_outbound(
        self, service: str | None, parameters: Iterable[tuple[str, str | None]], namespace: str
    ) -> Namespace:
        """Send the namespace's user Worker fetches through `service` (None: straight out), with
        (name, template or None) parameters."""

    @abc.abstractmethod
    async def set_egress(self, allow: Iterable[str], block: Iterable[str], namespace: str) -> Namespace: ...

    @abc.abstractmethod
    async def tail_consumers(self, namespace: str) -> list[TailConsumer]: ...

    @abc.abstractmethod
    async def add_tail_consumer(self, consumer: str, worker: str | None, dispatcher: bool, namespace: str) -> TailConsumer:
        """Deliver trace items of `worker`, of the dispatcher, or (neither) of the namespace to `consumer`."""

    @abc.abstractmethod
    async def remove_tail_consumer(self, consumer: str, worker: str | None, dispatcher: bool, namespace: str) -> None: ...

    @abc.abstractmethod
    async def workers(self, namespace: str, tags: Iterable[str] = ()) -> list[WorkerRow]: ...

    @abc.abstractmethod
    async def instance_stats(self, namespace: str) -> dict[str, dict[str, Any]]:
        """Warm instances per worker of the namespace (`Engine.instance_stats`): busy, idle,
        starting, started, invocations, reusedInvocations, retired (counts by reason)."""

    @abc.abstractmethod
    async def versions(self, name: str, namespace: str) -> list[WorkerVersion]: ...

    @abc.abstractmethod
    async def deploy(
        self, name: str, module: bytes | str | os.PathLike[str], namespace: str, tags: Iterable[str], vars: Mapping[str, str]
    ) -> Worker: ...

    @abc.abstractmethod
    async def set_tags(self, name: str, tags: Iterable[str], namespace: str) -> Worker: ...

    @abc.abstractmethod
    async def set_vars(self, name: str, vars: Mapping[str, str], namespace: str) -> Worker: ...

    @abc.abstractmethod
    async def secret_names(self, name: str, namespace: str) -> list[str]:
        """The names of a worker's secrets; no transport ever returns their values."""

    @abc.abstractmethod
    async def put_secret(self, name: str, key: str, value: str, namespace: str) -> Worker:
        """Set a write-only secret (a new version)."""

    @abc.abstractmethod
    async def delete_secret(self, name: str, key: str, namespace: str) -> Worker: ...

    @abc.abstractmethod
    async def update_settings(
        self, name: str, namespace: str, *, tags: Iterable[str] | None = None, vars: Mapping[str, str] | None = None
    ) -> Worker:
        """New tags, new vars or both as one new version running the same module (None keeps one)."""

    @abc.abstractmethod
    async def rollback(self, name: str, version: int, namespace: str) -> Worker: ...

    @abc.abstractmethod
    async def delete(self, name: str, namespace: str) -> None: ...

    @abc.abstractmethod
    async def limits(self) -> dict[str, Limits]: ...

    @abc.abstractmethod
    async def set_limits(self, tag: str, limits: Limits, clear: Iterable[str] = ()) -> Limits: ...

    @abc.abstractmethod
    async def delete_limits(self, tag: str) -> None: ...

    @abc.abstractmethod
    async def effective_limits(self, name: str, namespace: str) -> EffectiveLimits: ...

    @abc.abstractmethod
    async def engine_defaults(self) -> Limits: ...

    @abc.abstractmethod
    async def dispatch(self, request: Request, namespace: str) -> Response: ...

    @abc.abstractmethod
    async def recent_traces(self, limit: int, trace_filter: TraceFilter | None = None) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def stream(self, trace_filter: TraceFilter | None = None, buffer: int = 10_000) -> TraceStream: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

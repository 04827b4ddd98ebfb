"""How every invocation ends, whatever its ABI: the response its caller gets and the trace item
published for it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .errors import InvalidModule, MemoryOverLimit
from .http import Request, Response, limit_response, text_response
from .runtime import LoadShed
from .store import Worker
from .trace_bus import TraceBus
from .traces import exception_entry, new_item


class Recorder:
    """Publishes invocations' trace items on the engine's trace bus; `clock` gives their
    timestamps (epoch milliseconds)."""

    def __init__(self, traces: TraceBus, clock: Callable[[], int]) -> None:
        self.traces = traces
        self.clock = clock

    def finish(
        self,
        request: Request,
        namespace: str,
        worker: Worker | None,
        script_name: str | None,
        outcome: str,
        timestamp: int,
        started: float,
        cpu_ms: int,
        response: Response,
        *,
        logs: list[dict[str, Any]] | None = None,
        exceptions: list[dict[str, Any]] | None = None,
        truncated: bool = False,
        subrequests: list[dict[str, Any]] | None = None,
        instance: dict[str, Any] | None = None,
        publish: bool = True,
        into: dict[str, Any] | None = None,
    ) -> Response:
        """Attach the invocation's trace item to `response` and publish it; `started` is its
        `time.perf_counter()` start, for the wall time; `instance`: the fields saying which guest
        instance ran it (`InstanceUse.trace_fields`). `publish=False` builds a provisional item (a
        Worker answered and its invocation goes on); `into` is such an item, made final in place."""
        item = new_item(
            script_name=script_name,
            script_version=worker.version if worker else None,
            script_tags=worker.tags if worker else (),
            namespace=namespace,
            outcome=outcome,
            event_timestamp=timestamp,
            cpu_time=cpu_ms,
            wall_time=round((time.perf_counter() - started) * 1000),
            url=request.url,
            method=request.method,
            headers=request.headers,
            status=response.status,
            logs=logs,
            exceptions=exceptions,
            truncated=truncated,
            subrequests=subrequests,
            instance=instance,
        )
        if into is not None:
            into.clear()
            into.update(item)
            item = into
        response.trace = item
        if publish:
            self.traces.publish(item)
        return response

    def publish(self, item: dict[str, Any]) -> None:
        """Publish an item built elsewhere (a Tail Worker's tail event)."""
        self.traces.publish(item)

    def start_failure(self, error: Exception) -> tuple[str, Response, list[dict[str, Any]]]:
        """The outcome, response and exceptions when a guest could not even start."""
        now = self.clock()
        if isinstance(error, LoadShed):
            return "loadShed", limit_response(503, "the engine is overloaded; try again shortly", "concurrency", str(error)), [
                exception_entry("LoadShed", str(error), now)]
        if isinstance(error, MemoryOverLimit):
            return "exceededMemory", limit_response(503, "Worker exceeded its memory limit", "memoryMb", str(error)), [
                exception_entry("ExceededMemory", str(error), now)]
        if isinstance(error, InvalidModule):  # e.g. deployed under older checks that it no longer passes
            message = f"the Worker's module cannot be loaded: {error}"
            return "internalError", text_response(500, f"Internal error while running the Worker: {message}"), [
                exception_entry("InternalError", message, now)]
        # a runtime failure must never take the caller down
        return "internalError", text_response(500, f"Internal error while running the Worker: {error}"), [
            exception_entry("InternalError", str(error), now)]

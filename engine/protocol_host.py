"""The host side of the Worker protocol: running protocol invocations, serving their `fetch`
and `dispatch` calls (egress policy, subrequest limit, the Outbound Worker hop, the network),
fronting a namespace with its dispatch Worker, and delivering trace items to Tail Workers.

`ProtocolHost` is a part of `Engine` (its base class), kept in its own module; it uses the
engine's runtime, store, network, config cache and trace bus.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import protocol
from .errors import InvalidInput, NotFound
from .http import Request, Response, limit_response, text_response
from .limits import EffectiveLimits, Limits, looks_out_of_memory
from .network import FetchFailed, FetchResponse, Network
from .outbound import check_outbound_values
from .protocol import Frame, ProtocolViolation
from .protocol_session import SessionResult, converse
from .store import Namespace, Store, Worker
from .tail_workers import TailDelivery
from .trace_bus import TraceBus
from .traces import exception_entry, is_tail_event, log_entries, tail_event_item
from .validation import check_name
from .wasm_module import memory_limit_pages

if TYPE_CHECKING:
    from .runtime import Runtime


@dataclass
class Invocation:
    """What one protocol invocation may do, and what it did."""

    namespace: Namespace
    worker: Worker
    role: str  # "user", "outbound", "dispatcher", "tail"
    limits: EffectiveLimits
    request: Request | None = None
    outbound_values: Mapping[str, str] = field(default_factory=dict)
    fetches: int = 0
    subrequests: list[dict[str, Any]] = field(default_factory=list)
    dispatched: list[dict[str, Any]] = field(default_factory=list)  # user Workers' trace items (dispatcher only)


def protocol_response(final: Frame, method: str) -> Response:
    """The Response a guest's `response` frame describes (raises ProtocolViolation if malformed)."""
    status = final.meta.get("status")
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ProtocolViolation(f"the Worker's response status {status!r} is not a number from 100 to 599")
    headers = protocol.headers_from(final.meta.get("headers"), "the response's")
    return Response(status, headers, b"" if method == "HEAD" else final.body)


class ProtocolHost:
    """Engine's Worker-protocol half. Besides the attributes below, it uses Engine's `_finish`
    (publish a trace item), `_run_user` (run a user Worker of either ABI), `_find_worker`,
    `_limits_for`, `_start_failure` and the config cache (`_cached`, `_check_config`)."""

    # provided by Engine
    runtime: "Runtime"
    store: Store
    network: Network
    traces: TraceBus
    tail_delivery: TailDelivery
    clock: Callable[[], int]
    _closed: bool

    async def _converse(
        self, invocation: Invocation, event: bytes, final_type: str, env: dict[str, str], gated: bool
    ) -> tuple[SessionResult, bytes, bool]:
        """Run one protocol invocation; returns the session's result and the guest's stderr."""
        worker, limits = invocation.worker, invocation.limits
        async with self.runtime.session(
            f"{invocation.namespace.name}/{worker.name}",
            worker.sha256,
            lambda: self.store.module_bytes(worker.sha256),
            memory_pages=memory_limit_pages(limits.memory_mb),
            env=env,
            timeout_s=limits.wall_ms / 1000 + 1.0,
            queue_timeout_s=limits.wall_ms / 1000,
            gated=gated,
        ) as guest:
            result = await converse(
                guest, event, final_type=final_type, cpu_ms=limits.cpu_ms, wall_ms=limits.wall_ms, clock=self.clock,
                on_call=lambda frame, left: self._serve_call(invocation, frame, left),
            )
        return result, bytes(guest.stderr), guest.stderr_truncated

    async def _run_protocol_fetch(
        self, invocation: Invocation, timestamp: int, started: float, *, gated: bool, extra_env: Mapping[str, str] | None = None
    ) -> Response:
        request, ns, worker = invocation.request, invocation.namespace, invocation.worker
        assert request is not None
        try:
            event = protocol.encode(
                {
                    "type": "fetch",
                    "protocol": protocol.VERSION,
                    "request": {"method": request.method, "url": request.url, "headers": [list(h) for h in request.headers]},
                    "worker": worker.name,
                    "namespace": ns.name,
                },
                request.body,
            )
        except ValueError as error:
            return self._finish(
                request, ns.name, worker, worker.name, "exception", timestamp, started, 0,
                text_response(413, f"the request is too large for a Worker-protocol Worker: {error}"),
                exceptions=[exception_entry("RequestTooLarge", str(error), self.clock())],
            )
        try:
            result, stderr, stderr_truncated = await self._converse(
                invocation, event, "response", {**worker.vars, **(extra_env or {})}, gated
            )
        except Exception as error:
            outcome, response, exceptions = self._start_failure(error)
            return self._finish(request, ns.name, worker, worker.name, outcome, timestamp, started, 0, response,
                                exceptions=exceptions, subrequests=invocation.subrequests)
        outcome, logs, exceptions, truncated, failure = self._session_outcome(invocation, result, stderr, stderr_truncated)
        response = failure
        if response is None:
            assert result.final is not None
            try:
                response = protocol_response(result.final, request.method)
            except ProtocolViolation as violation:
                outcome = "exception"
                exceptions.append(exception_entry("ProtocolError", str(violation), self.clock()))
                response = text_response(502, f"Worker threw an exception: {violation}")
        return self._finish(
            request, ns.name, worker, worker.name, outcome, timestamp, started, round(result.cpu_ms), response,
            logs=logs, exceptions=exceptions, truncated=truncated, subrequests=invocation.subrequests,
        )

    def _session_outcome(
        self, invocation: Invocation, result: SessionResult, stderr: bytes, stderr_truncated: bool
    ) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]], bool, Response | None]:
        """Outcome, logs, exceptions, truncated, and the error response (None when the guest answered)."""
        end = self.clock()
        limits = invocation.limits
        stderr_logs, logs_truncated = log_entries(stderr, end)
        logs = result.logs + stderr_logs
        truncated = result.logs_truncated or logs_truncated or stderr_truncated
        exceptions: list[dict[str, Any]] = []
        if result.exit_error:
            exceptions.append(exception_entry("ExitStatus", result.exit_error, end))
        if result.failure is None and result.final is not None and result.final.type == "exception":
            name = str(result.final.meta.get("name") or "Error")[:200]
            message = str(result.final.meta.get("message") or "")
            exceptions.append(exception_entry(name, message, end))
            return "exception", logs, exceptions, truncated, text_response(500, f"Worker threw an exception: {name}: {message}")
        if result.failure is None:
            return "ok", logs, exceptions, truncated, None
        outcome, message = result.failure, result.message
        if outcome == "exceededCpu":
            message = f"{message} (limit from {limits.sources['cpu_ms']})"
            response = limit_response(503, "Worker exceeded its CPU time limit", "cpuMs", message, limits.cpu_ms)
        elif outcome == "exceededWallTime":
            message = f"Worker exceeded its wall-time limit of {limits.wall_ms} ms (limit from {limits.sources['wall_ms']})"
            response = limit_response(503, "Worker exceeded its wall-time limit", "wallMs", message, limits.wall_ms)
        elif looks_out_of_memory(message) or looks_out_of_memory(stderr.decode("utf-8", "replace")):
            outcome = "exceededMemory"
            message = f"Worker ran out of memory under its {limits.memory_mb} MiB limit (limit from {limits.sources['memory_mb']}): {message}"
            response = limit_response(503, "Worker exceeded its memory limit", "memoryMb", message, limits.memory_mb)
        elif outcome == "internalError":
            response = text_response(500, f"Internal error while running the Worker: {message}")
        else:
            first_line = message.splitlines()[0] if message else "unknown failure"
            response = text_response(500 if result.exception_name != "ProtocolError" else 502, f"Worker threw an exception: {first_line}")
        exceptions.append(exception_entry(result.exception_name or "Error", message, end))
        return outcome, logs, exceptions, truncated, response

    async def _serve_call(self, invocation: Invocation, frame: Frame, seconds_left: float) -> bytes:
        if frame.type == "fetch":
            return await self._serve_fetch(invocation, frame, seconds_left)
        return await self._serve_dispatch(invocation, frame, seconds_left)

    async def _serve_fetch(self, invocation: Invocation, frame: Frame, seconds_left: float) -> bytes:
        """A guest's fetch(): subrequest limit, egress policy, then the Outbound Worker or the network."""
        call_id = frame.meta.get("id")
        began = time.perf_counter()
        raw = frame.meta.get("request")
        url = str(raw.get("url", "")) if isinstance(raw, dict) else ""
        method = str(raw.get("method") or "GET").upper() if isinstance(raw, dict) else "GET"
        invocation.fetches += 1

        def record(via: str, status: int | None = None, error: str | None = None) -> None:
            entry: dict[str, Any] = {"url": url, "method": method, "via": via, "durationMs": round((time.perf_counter() - began) * 1000, 1)}
            if status is not None:
                entry["status"] = status
            if error is not None:
                entry["error"] = error
            invocation.subrequests.append(entry)

        def refuse(name: str, message: str, via: str = "refused") -> bytes:
            record(via, error=f"{name}: {message}")
            return protocol.encode({"type": "fetch_error", "id": call_id, "name": name, "message": message})

        limits = invocation.limits
        if invocation.fetches > limits.sub_requests:
            return refuse(
                "TooManySubrequests",
                f"this invocation may make at most {limits.sub_requests} subrequest{'' if limits.sub_requests == 1 else 's'} "
                f"(limit from {limits.sources['sub_requests']})",
            )
        try:
            if not isinstance(raw, dict):
                raise InvalidInput("the fetch call has no request object")
            subrequest = Request(url=url, method=method, headers=protocol.headers_from(raw.get("headers"), "the fetch request's"), body=frame.body)
        except (InvalidInput, ProtocolViolation) as error:
            return refuse("InvalidRequest", str(error))
        blocked = invocation.namespace.egress.check(subrequest.url)
        if blocked is not None:
            return refuse("EgressBlocked", f"the egress policy of namespace {invocation.namespace.name!r} refused {subrequest.url}: {blocked}")
        via = "outbound" if invocation.role == "user" and invocation.namespace.outbound is not None else "network"
        try:
            if via == "outbound":
                got = await self._through_outbound(invocation, subrequest, seconds_left)
            else:
                got = await self.network.fetch(subrequest.method, subrequest.url, subrequest.headers, subrequest.body, max(0.001, seconds_left), policy=invocation.namespace.egress)
        except FetchFailed as failure:
            return refuse(failure.name, str(failure), "refused" if failure.name == "EgressBlocked" else via)
        record(via, status=got.status)
        return protocol.encode(
            {"type": "fetch_result", "id": call_id, "status": got.status, "headers": [list(h) for h in got.headers]}, got.body
        )

    async def _through_outbound(self, invocation: Invocation, subrequest: Request, seconds_left: float) -> FetchResponse:
        """Hand a user Worker's subrequest to the namespace's Outbound Worker; its answer is the fetch's."""
        ns = invocation.namespace
        setting = ns.outbound
        assert setting is not None
        outbound = self._find_worker(ns.name, setting.service)
        if outbound is None:
            raise FetchFailed("OutboundError", f"the namespace's Outbound Worker {setting.service!r} is not deployed")
        if outbound.abi != protocol.ABI:
            raise FetchFailed("OutboundError", f"the Outbound Worker {setting.service!r} is a {outbound.abi} Worker and cannot receive fetches")
        parameters = setting.environment(
            invocation.outbound_values, worker=invocation.worker.name, namespace=ns.name, url=subrequest.url, tags=invocation.worker.tags
        )
        limits = self._limits_for(ns, outbound).tightened(Limits(wall_ms=max(1, int(seconds_left * 1000))), source="caller")
        hop = Invocation(ns, outbound, "outbound", limits, subrequest)
        response = await self._run_protocol_fetch(hop, self.clock(), time.perf_counter(), gated=False, extra_env=parameters)
        assert response.trace is not None
        self._offer_to_tails(ns, [response.trace])
        outcome = response.trace["outcome"]
        if outcome != "ok":
            detail = (response.trace.get("exceptions") or [{}])[-1].get("message", "")
            raise FetchFailed("OutboundError", f"the Outbound Worker {outbound.name!r} failed ({outcome})" + (f": {detail}" if detail else ""))
        return FetchResponse(response.status, response.headers, response.body)

    async def _serve_dispatch(self, invocation: Invocation, frame: Frame, seconds_left: float) -> bytes:
        """A dispatch Worker's dispatch(name, {limits, outbound}): run a user Worker of the namespace."""
        call_id = frame.meta.get("id")

        def refuse(name: str, message: str) -> bytes:
            return protocol.encode({"type": "dispatch_error", "id": call_id, "name": name, "message": message})

        ns = invocation.namespace
        if invocation.role != "dispatcher":
            return refuse("NotAllowed", "only the namespace's dispatch Worker can call dispatch")
        name = frame.meta.get("name")
        options = frame.meta.get("options") or {}
        try:
            check_name(name if isinstance(name, str) else repr(name))
            if not isinstance(options, dict):
                raise InvalidInput("dispatch options must be an object")
            unknown = set(options) - {"limits", "outbound"}
            if unknown:
                raise InvalidInput(f"unknown dispatch option {sorted(unknown)[0]!r}; the options are limits and outbound")
            limits = Limits.from_dict(options.get("limits") or {})
            values = check_outbound_values(options.get("outbound") or {}, ns.outbound)
            raw = frame.meta.get("request")
            if raw is None:
                request = invocation.request
            elif isinstance(raw, dict):
                request = Request(
                    url=str(raw.get("url", "")), method=str(raw.get("method") or "GET"),
                    headers=protocol.headers_from(raw.get("headers"), "the dispatched request's"), body=frame.body,
                )
            else:
                raise InvalidInput("the dispatched request must be an object")
        except (InvalidInput, ProtocolViolation) as error:
            return refuse("InvalidRequest", str(error))
        assert request is not None
        if name == invocation.worker.name:
            return refuse("NotAllowed", "a dispatch Worker cannot dispatch to itself")
        response = await self._run_user(
            request, ns, name, self.clock(), time.perf_counter(),
            limits_override=limits, outbound_values=values, gated=False, wall_cap_ms=int(seconds_left * 1000),
        )
        assert response.trace is not None
        invocation.dispatched.append(response.trace)
        return protocol.encode(
            {
                "type": "dispatch_result",
                "id": call_id,
                "outcome": response.trace["outcome"],
                "status": response.status,
                "headers": [list(h) for h in response.headers],
            },
            response.body,
        )

    async def _dispatch_through_worker(self, request: Request, ns: Namespace, timestamp: int, started: float) -> Response:
        assert ns.dispatch_worker is not None
        dispatcher = self._find_worker(ns.name, ns.dispatch_worker)
        if dispatcher is None or dispatcher.abi != protocol.ABI:
            problem = "is not deployed" if dispatcher is None else f"is a {dispatcher.abi} Worker, not a Worker-protocol one"
            message = f"the namespace's dispatch Worker {ns.dispatch_worker!r} {problem}"
            return self._finish(
                request, ns.name, dispatcher, ns.dispatch_worker, "internalError", timestamp, started, 0,
                text_response(500, message), exceptions=[exception_entry("InternalError", message, self.clock())],
            )
        invocation = Invocation(ns, dispatcher, "dispatcher", self._limits_for(ns, dispatcher), request)
        response = await self._run_protocol_fetch(invocation, timestamp, started, gated=True)
        assert response.trace is not None
        self._offer_to_tails(ns, [response.trace, *invocation.dispatched], from_dispatcher=True)
        response.dispatcher_trace = response.trace
        if invocation.dispatched:
            response.trace = invocation.dispatched[-1]
        return response

    # -- Tail Workers ----------------------------------------------------------------

    def _offer_to_tails(self, ns: Namespace, items: list[dict[str, Any] | None], *, from_dispatcher: bool = False) -> None:
        consumers = self._cached(("tail_consumers", ns.name), lambda: self.store.tail_consumers(ns.name), checked=True)
        if not consumers:
            return
        batches: dict[str, list[dict[str, Any]]] = {}
        for consumer in consumers:
            batch = batches.setdefault(consumer.consumer, [])
            for item in items:
                if item is None or is_tail_event(item) or item.get("scriptName") == consumer.consumer:
                    continue  # no consumer ever receives tail events, so none can loop
                wanted = (
                    consumer.scope == "namespace"
                    or (consumer.scope == "worker" and item.get("scriptName") == consumer.worker)
                    or (consumer.scope == "dispatcher" and from_dispatcher)
                )
                if wanted and not any(existing is item for existing in batch):
                    batch.append(item)
        for consumer_name, batch in batches.items():
            if batch:
                self.tail_delivery.offer(ns.name, consumer_name, batch)

    async def _deliver_tail(self, namespace: str, consumer: str, items: list[dict[str, Any]]) -> None:
        """Run `consumer`'s tail handler on a batch; its own trace item is published, never delivered."""
        if self._closed:
            return
        self._check_config()
        try:
            ns = self._cached(("namespace", namespace), lambda: self.store.namespace(namespace), checked=True)
        except NotFound:
            return
        worker = self._find_worker(namespace, consumer)
        if worker is None or worker.abi != protocol.ABI:
            return
        body = json.dumps(items, separators=(",", ":")).encode()
        if len(body) > protocol.MAX_BODY_BYTES:
            if len(items) > 1:
                half = len(items) // 2
                await self._deliver_tail(namespace, consumer, items[:half])
                await self._deliver_tail(namespace, consumer, items[half:])
                return
            items = [{k: items[0].get(k) for k in ("scriptName", "outcome", "eventTimestamp", "dispatchNamespace")} | {"truncated": True}]
            body = json.dumps(items).encode()
        timestamp, started = self.clock(), time.perf_counter()
        invocation = Invocation(ns, worker, "tail", self._limits_for(ns, worker))
        event = protocol.encode(
            {"type": "tail", "protocol": protocol.VERSION, "count": len(items), "worker": worker.name, "namespace": namespace}, body
        )
        cpu = 0
        try:
            result, stderr, stderr_truncated = await self._converse(invocation, event, "done", dict(worker.vars), gated=True)
        except Exception as error:
            outcome, _, exceptions = self._start_failure(error)
            logs: list[dict[str, Any]] = []
            truncated = False
        else:
            outcome, logs, exceptions, truncated, _ = self._session_outcome(invocation, result, stderr, stderr_truncated)
            cpu = round(result.cpu_ms)
        self.traces.publish(
            tail_event_item(
                script_name=worker.name, script_version=worker.version, script_tags=worker.tags, namespace=namespace,
                outcome=outcome, event_timestamp=timestamp, cpu_time=cpu,
                wall_time=round((time.perf_counter() - started) * 1000), consumed=items, logs=logs,
                exceptions=exceptions, truncated=truncated, subrequests=invocation.subrequests,
            )
        )

"""The host side of the Worker protocol: running protocol invocations, serving their `fetch`
and `dispatch` calls (egress policy, subrequest limit, the Outbound Worker hop, the network),
fronting a namespace with its dispatch Worker, and delivering trace items to Tail Workers.

A version 1 guest runs one process per invocation; a version 2 guest runs on a warm instance of
its worker version (`instances`, `instance_session`), for every role: user, dispatch, Outbound
and Tail Workers alike.

`Engine` owns one `ProtocolHost` and hands it its collaborators (see `ProtocolHost.__init__`);
the host calls nothing else of the engine's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import protocol
from .config_cache import ConfigCache
from .errors import InvalidInput, NotFound
from .instance_session import EventTooLarge, run_on_instance
from .instances import InstanceManager, InstanceSettings, InstanceSpec, InstanceStartFailed, InstanceUse, single_use
from .http import Request, Response, limit_response, text_response
from .limits import EffectiveLimits, Limits, looks_out_of_memory
from .network import FetchFailed, FetchResponse, Network
from .outbound import check_outbound_values
from .protocol import Frame, ProtocolViolation
from .protocol_session import SessionResult, converse
from .recorder import Recorder
from .runtime import Runtime
from .store import Namespace, Worker
from .tail_workers import TailDelivery
from . import traces
from .traces import MAX_EXCEPTION_MESSAGE, exception_entry, instance_event_item, is_tail_event, log_entries, tail_event_item
from .validation import check_name
from .wasm_module import memory_limit_pages


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


@dataclass(frozen=True)
class Outcome:
    """How a protocol invocation ended: `response` is None when the guest answered."""

    outcome: str
    logs: list[dict[str, Any]]
    exceptions: list[dict[str, Any]]
    truncated: bool
    response: Response | None


class RunUser(Protocol):
    """Runs the namespace's user Worker `name` (either ABI) for a dispatch Worker's `dispatch()`
    call, under `limits` (which only tighten) and within `wall_cap_ms`, and publishes its trace
    item. A name that is no user Worker (unknown, or one of the namespace's platform Workers)
    ends `scriptNotFound`."""

    async def __call__(
        self, request: Request, namespace: Namespace, name: str, *,
        limits: Limits | None, outbound_values: Mapping[str, str], wall_cap_ms: int,
    ) -> Response: ...


def protocol_response(final: Frame, method: str) -> Response:
    """The Response a guest's `response` frame describes (raises ProtocolViolation if malformed)."""
    status = final.meta.get("status")
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ProtocolViolation(f"the Worker's response status {status!r} is not a number from 100 to 599")
    headers = protocol.headers_from(final.meta.get("headers"), "the response's")
    return Response(status, headers, b"" if method == "HEAD" else final.body)


class ProtocolHost:
    """Runs Worker-protocol invocations for the engine.

    What it offers the engine: `run_fetch` (a protocol Worker's fetch invocation),
    `dispatch_through_worker` (a request to a namespace fronted by a dispatch Worker),
    `offer_to_tails` (trace items for the namespace's Tail Workers), `flush_tail_deliveries`
    and `close`.

    What it needs, passed in: the guest `runtime`; the `network` for fetches that leave the
    platform; the `config` cache (namespaces, workers, limits, tail consumers; the engine
    refreshes it once per request, the host only when it starts work of its own, a tail
    delivery); the `recorder` that publishes trace items (and whose clock stamps them);
    `module_bytes(sha256)` for the runtime's loads; `run_user` for `dispatch()` calls;
    `instance_settings` for the warm instances of version 2 guests (`self.instances`, which
    retires instances of versions the config no longer serves: the engine calls
    `instances.config_changed()` when the config cache learns of a change).
    """

    def __init__(
        self,
        *,
        runtime: Runtime,
        network: Network,
        config: ConfigCache,
        recorder: Recorder,
        module_bytes: Callable[[str], bytes],
        run_user: RunUser,
        instance_settings: InstanceSettings | None = None,
    ) -> None:
        self.runtime = runtime
        self.network = network
        self.config = config
        self.recorder = recorder
        self.clock = recorder.clock
        self.module_bytes = module_bytes
        self.run_user = run_user
        self.tail_delivery = TailDelivery(self._deliver_tail)
        self.instances = InstanceManager(
            runtime, module_bytes, settings=instance_settings, is_current=self._is_current,
            publish_retirement=self._publish_retirement, refresh_config=config.refresh,
        )
        self._closed = False

    async def flush_tail_deliveries(self, timeout: float) -> None:
        """Wait until the trace items offered so far have reached their Tail Workers."""
        await self.tail_delivery.flush(timeout)

    async def close(self) -> None:
        """Finish (briefly) the deliveries under way; none starts afterwards. Then let invocations
        on warm instances finish (briefly) and stop every instance."""
        await self.tail_delivery.close()
        self._closed = True
        await self.instances.close()

    # -- warm instances --------------------------------------------------------------------

    def _spec(self, invocation: Invocation) -> InstanceSpec:
        worker = invocation.worker
        return InstanceSpec(
            invocation.namespace.name, worker.name, worker.version, worker.sha256,
            memory_limit_pages(invocation.limits.memory_mb), env=dict(worker.vars), tags=worker.tags,
        )

    def _is_current(self, spec: InstanceSpec) -> bool:
        """Do requests for this worker still get this version (module, vars, tags, memory cap)?"""
        try:
            ns = self.config.namespace(spec.namespace)
        except NotFound:
            return False
        worker = self.config.worker(spec.namespace, spec.worker)
        if worker is None or worker.version != spec.version or worker.sha256 != spec.sha256:
            return False
        return memory_limit_pages(self.config.limits(ns, worker).memory_mb) == spec.memory_pages

    def _publish_retirement(self, spec: InstanceSpec, instance_id: str, invocations: int, reason: str, sentence: str) -> None:
        self.recorder.publish(instance_event_item(
            script_name=spec.worker, script_version=spec.version, script_tags=spec.tags, namespace=spec.namespace,
            event_timestamp=self.clock(), instance_id=instance_id, invocations=invocations, reason=reason, message=sentence,
        ))

    # -- running one invocation -------------------------------------------------------

    async def _converse(
        self, invocation: Invocation, meta: dict[str, Any], body: bytes, final_type: str,
        env: Mapping[str, str], gated: bool,
    ) -> tuple[SessionResult, bytes, bool, InstanceUse]:
        """Run one protocol invocation of the event (`meta`, `body`); returns the session's result,
        the guest's stderr, and which instance ran it. `env`: an Outbound Worker's parameters (the
        process environment of a version 1 guest, the event's `env` for a version 2 one). Raises
        EventTooLarge, and what a guest that cannot start raises."""
        worker, limits = invocation.worker, invocation.limits
        on_call: Callable[[Frame, float], Any] = lambda frame, left: self._serve_call(invocation, frame, left)
        if self.instances.protocol_version(worker.sha256) == protocol.VERSION_2:
            async with self.runtime.guest_slot(gated, limits.wall_ms / 1000):
                try:
                    end, use = await run_on_instance(
                        self.instances, self._spec(invocation), meta, body, env, final_type=final_type,
                        cpu_ms=limits.cpu_ms, wall_ms=limits.wall_ms, clock=self.clock, on_call=on_call,
                    )
                except InstanceStartFailed as failed:
                    result = SessionResult(failure=failed.outcome, message=failed.message,
                                           exception_name=failed.name, logs=failed.logs)
                    return result, failed.stderr, False, InstanceUse(failed.instance_id, True, 1, failed.retired)
            return end.result, end.stderr, end.stderr_truncated, use
        try:
            event = protocol.encode(meta, body)
        except ValueError as error:
            raise EventTooLarge(str(error)) from None
        async with self.runtime.session(
            f"{invocation.namespace.name}/{worker.name}",
            worker.sha256,
            lambda: self.module_bytes(worker.sha256),
            memory_pages=memory_limit_pages(limits.memory_mb),
            env={**worker.vars, **env},
            timeout_s=limits.wall_ms / 1000 + 1.0,
            queue_timeout_s=limits.wall_ms / 1000,
            gated=gated,
        ) as guest:
            result = await converse(
                guest, event, final_type=final_type, cpu_ms=limits.cpu_ms, wall_ms=limits.wall_ms, clock=self.clock,
                on_call=on_call,
            )
        return result, bytes(guest.stderr), guest.stderr_truncated, single_use()

    async def run_fetch(
        self, invocation: Invocation, timestamp: int, started: float, *, gated: bool, extra_env: Mapping[str, str] | None = None
    ) -> Response:
        """Send the invocation's request to its Worker as a `fetch` event; the response carries the
        published trace item. `gated=False` for invocations made on behalf of a running one."""
        request, ns, worker = invocation.request, invocation.namespace, invocation.worker
        assert request is not None
        meta = {
            "type": "fetch",
            "protocol": protocol.VERSION,
            "request": {"method": request.method, "url": request.url, "headers": [list(h) for h in request.headers]},
            "worker": worker.name,
            "namespace": ns.name,
        }
        try:
            result, stderr, stderr_truncated, use = await self._converse(
                invocation, meta, request.body, "response", extra_env or {}, gated
            )
        except EventTooLarge as error:
            return self.recorder.finish(
                request, ns.name, worker, worker.name, "exception", timestamp, started, 0,
                text_response(413, f"the request is too large for a Worker-protocol Worker: {error}"),
                exceptions=[exception_entry("RequestTooLarge", str(error), self.clock())],
            )
        except Exception as error:
            outcome, response, exceptions = self.recorder.start_failure(error)
            return self.recorder.finish(request, ns.name, worker, worker.name, outcome, timestamp, started, 0, response,
                                exceptions=exceptions, subrequests=invocation.subrequests)
        ended = self._session_outcome(invocation, result, stderr, stderr_truncated)
        outcome, exceptions, answer = ended.outcome, ended.exceptions, ended.response
        if answer is None:
            assert result.final is not None
            try:
                answer = protocol_response(result.final, request.method)
            except ProtocolViolation as violation:
                outcome = "exception"
                exceptions.append(exception_entry("ProtocolError", str(violation), self.clock()))
                answer = text_response(502, f"Worker threw an exception: {violation}")
        return self.recorder.finish(
            request, ns.name, worker, worker.name, outcome, timestamp, started, round(result.cpu_ms), answer,
            logs=ended.logs, exceptions=exceptions, truncated=ended.truncated, subrequests=invocation.subrequests,
            instance=use.trace_fields(),
        )

    def _session_outcome(self, invocation: Invocation, result: SessionResult, stderr: bytes, stderr_truncated: bool) -> Outcome:
        """How the invocation ended, with the error response when the guest did not answer."""
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
            thrown = exception_entry(name, message, end)
            stack = result.final.meta.get("stack")
            if isinstance(stack, str) and stack:
                thrown["stack"] = stack[:MAX_EXCEPTION_MESSAGE]
            exceptions.append(thrown)
            return Outcome("exception", logs, exceptions, truncated, text_response(500, f"Worker threw an exception: {name}: {message}"))
        if result.failure is None:
            return Outcome("ok", logs, exceptions, truncated, None)
        outcome, message = result.failure, result.message
        if outcome == "exceededCpu":
            message = f"{message} (limit from {limits.sources['cpuMs']})"
            response = limit_response(503, "Worker exceeded its CPU time limit", "cpuMs", message, limits.cpu_ms)
        elif outcome == "exceededWallTime":
            message = f"Worker exceeded its wall-time limit of {limits.wall_ms} ms (limit from {limits.sources['wallMs']})"
            response = limit_response(503, "Worker exceeded its wall-time limit", "wallMs", message, limits.wall_ms)
        elif looks_out_of_memory(message) or looks_out_of_memory(stderr.decode("utf-8", "replace")):
            outcome = "exceededMemory"
            message = f"Worker ran out of memory under its {limits.memory_mb} MiB limit (limit from {limits.sources['memoryMb']}): {message}"
            response = limit_response(503, "Worker exceeded its memory limit", "memoryMb", message, limits.memory_mb)
        elif outcome == "internalError":
            response = text_response(500, f"Internal error while running the Worker: {message}")
        elif outcome == "canceled":
            response = text_response(503, f"The Worker was stopped before it answered: {message}")
        else:
            first_line = message.splitlines()[0] if message else "unknown failure"
            response = text_response(500 if result.exception_name != "ProtocolError" else 502, f"Worker threw an exception: {first_line}")
        exceptions.append(exception_entry(result.exception_name or "Error", message, end))
        return Outcome(outcome, logs, exceptions, truncated, response)

    # -- the guest's calls ------------------------------------------------------------

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
            # kept in their bounded trace form from the start, and one past the trace's cap at most
            # (so the item still says it was truncated): a guest looping over refused fetches with
            # huge URLs cannot make the host hold more than that while it runs
            if len(invocation.subrequests) <= traces.MAX_SUBREQUESTS:
                invocation.subrequests.append(traces.bounded_subrequest(entry)[0])

        def refuse(name: str, message: str, via: str = "refused") -> bytes:
            record(via, error=f"{name}: {message}")
            return protocol.encode({"type": "fetch_error", "id": call_id, "name": name, "message": message})

        limits = invocation.limits
        if invocation.fetches > limits.sub_requests:
            return refuse(
                "TooManySubrequests",
                f"this invocation may make at most {limits.sub_requests} subrequest{'' if limits.sub_requests == 1 else 's'} "
                f"(limit from {limits.sources['subRequests']})",
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
        outbound = self.config.worker(ns.name, setting.service)
        if outbound is None:
            raise FetchFailed("OutboundError", f"the namespace's Outbound Worker {setting.service!r} is not deployed")
        if outbound.abi != protocol.ABI:
            raise FetchFailed("OutboundError", f"the Outbound Worker {setting.service!r} is a {outbound.abi} Worker and cannot receive fetches")
        parameters = setting.environment(
            invocation.outbound_values, worker=invocation.worker.name, namespace=ns.name, url=subrequest.url, tags=invocation.worker.tags
        )
        limits = self.config.limits(ns, outbound).tightened(Limits(wall_ms=max(1, int(seconds_left * 1000))), source="caller")
        hop = Invocation(ns, outbound, "outbound", limits, subrequest)
        response = await self.run_fetch(hop, self.clock(), time.perf_counter(), gated=False, extra_env=parameters)
        assert response.trace is not None
        self.offer_to_tails(ns, [response.trace])
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
            if not isinstance(name, str):
                raise InvalidInput(f"the Worker to dispatch to must be named by a string, not {name!r}")
            check_name(name)
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
        # the dispatch Worker itself, like every platform Worker, is no tenant: run_user answers scriptNotFound
        response = await self.run_user(request, ns, name, limits=limits, outbound_values=values, wall_cap_ms=int(seconds_left * 1000))
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

    # -- dispatch Workers -------------------------------------------------------------

    async def dispatch_through_worker(self, request: Request, ns: Namespace, timestamp: int, started: float) -> Response:
        """A request to a namespace its dispatch Worker fronts. The response's `trace` is the item of
        the user Worker it dispatched to (the last one), `dispatcher_trace` the dispatch Worker's."""
        assert ns.dispatch_worker is not None
        dispatcher = self.config.worker(ns.name, ns.dispatch_worker)
        if dispatcher is None or dispatcher.abi != protocol.ABI:
            problem = "is not deployed" if dispatcher is None else f"is a {dispatcher.abi} Worker, not a Worker-protocol one"
            message = f"the namespace's dispatch Worker {ns.dispatch_worker!r} {problem}"
            return self.recorder.finish(
                request, ns.name, dispatcher, ns.dispatch_worker, "internalError", timestamp, started, 0,
                text_response(500, message), exceptions=[exception_entry("InternalError", message, self.clock())],
            )
        invocation = Invocation(ns, dispatcher, "dispatcher", self.config.limits(ns, dispatcher), request)
        response = await self.run_fetch(invocation, timestamp, started, gated=True)
        assert response.trace is not None
        self.offer_to_tails(ns, [response.trace, *invocation.dispatched], from_dispatcher=True)
        response.dispatcher_trace = response.trace
        if invocation.dispatched:
            response.trace = invocation.dispatched[-1]
        return response

    # -- Tail Workers ----------------------------------------------------------------

    def offer_to_tails(self, ns: Namespace, items: list[dict[str, Any] | None], *, from_dispatcher: bool = False) -> None:
        """Queue `items` for the namespace's Tail Workers that follow them (after the response)."""
        consumers = self.config.tail_consumers(ns.name)
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
        self.config.refresh()
        try:
            ns = self.config.namespace(namespace)
        except NotFound:
            return
        worker = self.config.worker(namespace, consumer)
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
        invocation = Invocation(ns, worker, "tail", self.config.limits(ns, worker))
        meta = {"type": "tail", "protocol": protocol.VERSION, "count": len(items), "worker": worker.name, "namespace": namespace}
        cpu = 0
        use: InstanceUse | None = None
        try:
            result, stderr, stderr_truncated, use = await self._converse(invocation, meta, body, "done", {}, gated=True)
        except Exception as error:
            outcome, _, exceptions = self.recorder.start_failure(error)
            logs: list[dict[str, Any]] = []
            truncated = False
        else:
            ended = self._session_outcome(invocation, result, stderr, stderr_truncated)
            outcome, logs, exceptions, truncated = ended.outcome, ended.logs, ended.exceptions, ended.truncated
            cpu = round(result.cpu_ms)
        self.recorder.publish(
            tail_event_item(
                script_name=worker.name, script_version=worker.version, script_tags=worker.tags, namespace=namespace,
                outcome=outcome, event_timestamp=timestamp, cpu_time=cpu,
                wall_time=round((time.perf_counter() - started) * 1000), consumed=items, logs=logs,
                exceptions=exceptions, truncated=truncated, subrequests=invocation.subrequests,
                instance=use.trace_fields() if use is not None else None,
            )
        )

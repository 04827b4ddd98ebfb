"""The host side of the Worker protocol: running protocol invocations, serving their `fetch`
and `dispatch` calls (egress policy, subrequest limit, the Outbound Worker hop, the network),
fronting a namespace with its dispatch Worker, and delivering trace items to Tail Workers.

A version 1 guest runs one process per invocation; a version 2 guest runs on a warm instance of
its worker version (`instances`, `instance_session`), for every role: user, dispatch, Outbound
and Tail Workers alike. A JavaScript Worker runs on warm instances of the engine's JavaScript
runtime (`javascript`), each loaded with the Worker's script.

A Worker may answer a fetch event before its invocation ends (JavaScript's `ctx.waitUntil`): the
caller gets the response at once, with `Response.finished` set; the trace item (the same dict as
`Response.trace`) is completed and published when the invocation ends, and only then offered to
Tail Workers.

`Engine` owns one `ProtocolHost` and hands it its collaborators (see `ProtocolHost.__init__`);
the host calls nothing else of the engine's.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import javascript, protocol
from .config_cache import ConfigCache
from .errors import InvalidInput, NotFound
from .instance_session import EventTooLarge, InvocationEnd, run_on_instance
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

ConverseEnd = tuple[SessionResult, bytes, bool, InstanceUse]
MAX_OPEN_CONNECTIONS = 6  # simultaneous fetches of one invocation, as Cloudflare allows


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
    # those of them still being completed (user Workers that answered early)
    dispatched_pending: list["asyncio.Future[None]"] = field(default_factory=list)
    # fetches that may be open at once; the others wait their turn (Cloudflare's limit, which also
    # bounds the response bodies the host holds for one invocation)
    connections: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_OPEN_CONNECTIONS))


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
        self._specs: dict[tuple[Any, ...], InstanceSpec] = {}  # per worker version and memory cap, until a change
        config.on_change(self._specs.clear)
        self._finishing: set[asyncio.Task[Any]] = set()  # invocations that answered early and go on
        self._offering: set[asyncio.Task[None]] = set()  # their items, waiting to be offered to Tail Workers
        self._closed = False

    async def flush_tail_deliveries(self, timeout: float) -> None:
        """Wait until the trace items offered so far (and those of invocations that answered early
        and go on) have reached their Tail Workers."""
        await self.wait_finishing(timeout)
        await self.tail_delivery.flush(timeout)

    async def close(self) -> None:
        """Finish (briefly) the deliveries under way; none starts afterwards. Then let invocations
        on warm instances finish (briefly) and stop every instance."""
        await self.wait_finishing(2.0)
        await self.tail_delivery.close()
        self._closed = True
        await self.instances.close()
        await self.wait_finishing(2.0)

    # -- warm instances --------------------------------------------------------------------

    def _spec(self, invocation: Invocation) -> InstanceSpec:
        return self._spec_for(invocation.namespace, invocation.worker, invocation.limits.memory_mb)

    def _spec_for(self, ns: Namespace, worker: Worker, memory_mb: int) -> InstanceSpec:
        """What an instance of this worker version runs. A JavaScript Worker's instances run the
        JavaScript runtime, started with its script, file name, form, memory cap and bindings in init."""
        binding = ns.dispatch_binding if ns.dispatch_worker == worker.name else None
        key = (ns.name, worker.name, worker.version, worker.sha256, memory_mb, binding)
        found = self._specs.get(key)
        if found is not None:
            return found
        if worker.abi != javascript.ABI:
            found = InstanceSpec(
                ns.name, worker.name, worker.version, worker.sha256, memory_limit_pages(memory_mb),
                env=dict(worker.vars), tags=worker.tags,
            )
        else:
            script = worker.script
            source = worker.sha256
            found = InstanceSpec(
                ns.name, worker.name, worker.version, javascript.runtime_sha256(), memory_limit_pages(memory_mb),
                env=dict(worker.vars), tags=worker.tags,
                init_meta=javascript.init_meta(
                    script.filename if script else javascript.DEFAULT_FILENAME, script.format if script else None,
                    memory_mb, javascript.dispatch_bindings(binding),
                ),
                load_init_body=lambda: self.module_bytes(source),
                module_pages=javascript.RUNTIME_PAGES, announces_waiting=True,
                init_timeout_s=javascript.CHECK_TIMEOUT_S,  # top-level code: as long as the deploy check allows
                variant="" if binding is None else f"binding={binding}",
            )
        self._specs[key] = found
        return found

    def _is_current(self, spec: InstanceSpec) -> bool:
        """Do requests for this worker still get this version (module or script, vars, tags, memory
        cap, bindings)?"""
        try:
            ns = self.config.namespace(spec.namespace)
        except NotFound:
            return False
        worker = self.config.worker(spec.namespace, spec.worker)
        if worker is None or worker.version != spec.version:
            return False
        expected = self._spec_for(ns, worker, self.config.limits(ns, worker).memory_mb)
        return expected.key == spec.key and expected.init_meta == spec.init_meta

    def _publish_retirement(self, spec: InstanceSpec, instance_id: str, invocations: int, reason: str, sentence: str) -> None:
        self.recorder.publish(instance_event_item(
            script_name=spec.worker, script_version=spec.version, script_tags=spec.tags, namespace=spec.namespace,
            event_timestamp=self.clock(), instance_id=instance_id, invocations=invocations, reason=reason, message=sentence,
        ))

    # -- running one invocation -------------------------------------------------------

    def _on_instances(self, worker: Worker) -> bool:
        """JavaScript Workers and version 2 protocol modules run on warm instances."""
        return worker.abi == javascript.ABI or self.instances.protocol_version(worker.sha256) == protocol.VERSION_2

    async def _converse(
        self, invocation: Invocation, meta: dict[str, Any], body: bytes, final_type: str,
        env: Mapping[str, str], gated: bool, answer_early: bool = False,
    ) -> tuple[SessionResult, bytes, bool, InstanceUse, "asyncio.Task[ConverseEnd] | None"]:
        """Run one protocol invocation of the event (`meta`, `body`); returns the session's result,
        the guest's stderr, which instance ran it, and (with `answer_early`, when the guest answered
        before its invocation ended: `result.response`) the task giving all of those at its end.
        `env`: an Outbound Worker's parameters (the process environment of a version 1 guest, the
        event's `env` for a version 2 one). Raises EventTooLarge, and what a guest that cannot
        start raises."""
        worker, limits = invocation.worker, invocation.limits
        on_call: Callable[[Frame, float], Any] = lambda frame, left: self._serve_call(invocation, frame, left)
        if self._on_instances(worker):
            await self.runtime.take_guest_slot(gated, limits.wall_ms / 1000)
            try:
                end, use, rest = await run_on_instance(
                    self.instances, self._spec(invocation), meta, body, env, final_type=final_type,
                    cpu_ms=limits.cpu_ms, wall_ms=limits.wall_ms, clock=self.clock, on_call=on_call,
                    answer_early=answer_early,
                )
            except InstanceStartFailed as failed:
                self.runtime.give_guest_slot(gated)
                result = SessionResult(failure=failed.outcome, message=failed.message,
                                       exception_name=failed.name, logs=failed.logs)
                return result, failed.stderr, False, InstanceUse(failed.instance_id, True, 1, failed.retired), None
            except BaseException:
                self.runtime.give_guest_slot(gated)
                raise
            if rest is None:
                self.runtime.give_guest_slot(gated)
                return end.result, end.stderr, end.stderr_truncated, use, None
            waiting_for = rest

            async def finish() -> ConverseEnd:
                try:
                    ended: InvocationEnd
                    ended, final_use = await waiting_for
                finally:
                    self.runtime.give_guest_slot(gated)  # the instance was busy until now
                return ended.result, ended.stderr, ended.stderr_truncated, final_use

            return end.result, b"", False, use, asyncio.ensure_future(finish())
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
        return result, bytes(guest.stderr), guest.stderr_truncated, single_use(), None

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
            result, stderr, stderr_truncated, use, rest = await self._converse(
                invocation, meta, request.body, "response", extra_env or {}, gated, answer_early=True
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
        if rest is not None:
            return self._answered_early(invocation, result, use, rest, timestamp, started)
        return self._fetch_finished(invocation, result, stderr, stderr_truncated, use, timestamp, started)

    def _fetch_finished(
        self, invocation: Invocation, result: SessionResult, stderr: bytes, stderr_truncated: bool, use: InstanceUse,
        timestamp: int, started: float, *, answered: Response | None = None, into: dict[str, Any] | None = None,
    ) -> Response:
        """The fetch invocation is over: its response (`answered`, when the Worker answered before
        the end) and its trace item, published (made in `into` when a provisional one exists)."""
        request, ns, worker = invocation.request, invocation.namespace, invocation.worker
        assert request is not None
        ended = self._session_outcome(invocation, result, stderr, stderr_truncated)
        outcome, exceptions, answer = ended.outcome, ended.exceptions, ended.response
        if answered is not None:
            answer = Response(answered.status, answered.headers, answered.body)  # given already: it stands
        elif answer is None:
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
            instance=use.trace_fields(), into=into,
        )

    def _answered_early(
        self, invocation: Invocation, result: SessionResult, use: InstanceUse, rest: "asyncio.Task[ConverseEnd]",
        timestamp: int, started: float,
    ) -> Response:
        """The Worker answered and its invocation goes on (`ctx.waitUntil`): the caller gets the
        response now, with a provisional trace item that the end of the invocation completes."""
        request, ns, worker = invocation.request, invocation.namespace, invocation.worker
        assert request is not None and result.response is not None
        try:
            answer = protocol_response(result.response, request.method)
        except ProtocolViolation as violation:
            answer = text_response(502, f"Worker threw an exception: {violation}")
            result.exit_error = f"ProtocolError: {violation}"  # recorded with the invocation's end
        self.recorder.finish(
            request, ns.name, worker, worker.name, "ok", timestamp, started, round(result.cpu_ms), answer,
            logs=list(result.logs), subrequests=list(invocation.subrequests), instance=use.trace_fields(), publish=False,
        )
        finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        answer.finished = finished
        provisional = answer.trace

        async def complete() -> None:
            try:
                try:
                    final_result, stderr, stderr_truncated, final_use = await rest
                except Exception as error:
                    final_result = SessionResult(failure="internalError", exception_name="InternalError",
                                                 message=f"the engine failed while the Worker's invocation went on: {error}",
                                                 logs=result.logs, cpu_ms=result.cpu_ms)
                    stderr, stderr_truncated, final_use = b"", False, use
                if result.exit_error and not final_result.exit_error:
                    final_result.exit_error = result.exit_error
                self._fetch_finished(invocation, final_result, stderr, stderr_truncated, final_use, timestamp, started,
                                     answered=answer, into=provisional)
            finally:
                if not finished.done():
                    finished.set_result(None)

        task = asyncio.ensure_future(complete())
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        return answer

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
            if invocation.worker.abi == javascript.ABI and javascript.runtime_out_of_memory(result.final.meta):
                why = f"Worker ran out of memory under its {limits.memory_mb} MiB limit (limit from {limits.sources['memoryMb']})"
                exceptions.append(exception_entry("ExceededMemory", f"{why}: {name}: {message}", end))
                return Outcome("exceededMemory", logs, exceptions, truncated, limit_response(
                    503, "Worker exceeded its memory limit", "memoryMb", why, limits.memory_mb))
            exceptions.append(self._thrown(result.final.meta, end))
            return Outcome("exception", logs, exceptions, truncated, text_response(500, f"Worker threw an exception: {name}: {message}"))
        if result.failure is None and result.final is not None and result.final.type == "done":
            # `done` may carry what waitUntil work threw after the response (JavaScript Workers)
            thrown = result.final.meta.get("exceptions")
            if isinstance(thrown, list) and thrown:
                exceptions.extend(self._thrown(entry, end) for entry in thrown[:traces.MAX_EXCEPTIONS] if isinstance(entry, dict))
                if exceptions:
                    return Outcome("exception", logs, exceptions, truncated, None)
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

    @staticmethod
    def _thrown(meta: Mapping[str, Any], timestamp: int) -> dict[str, Any]:
        """A trace exception from what a guest threw: name, message and (when given) stack."""
        thrown = exception_entry(str(meta.get("name") or "Error")[:200], str(meta.get("message") or ""), timestamp)
        stack = meta.get("stack")
        if isinstance(stack, str) and stack:
            thrown["stack"] = stack[:MAX_EXCEPTION_MESSAGE]
        return thrown

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
            async with invocation.connections:
                seconds_left -= time.perf_counter() - began  # the wait for a connection is the call's time too
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
        if not javascript.speaks_protocol(outbound.abi):
            raise FetchFailed("OutboundError", f"the Outbound Worker {setting.service!r} is a {outbound.abi} Worker and cannot receive fetches")
        parameters = setting.environment(
            invocation.outbound_values, worker=invocation.worker.name, namespace=ns.name, url=subrequest.url, tags=invocation.worker.tags
        )
        limits = self.config.limits(ns, outbound).tightened(Limits(wall_ms=max(1, int(seconds_left * 1000))), source="caller")
        hop = Invocation(ns, outbound, "outbound", limits, subrequest)
        response = await self.run_fetch(hop, self.clock(), time.perf_counter(), gated=False, extra_env=parameters)
        assert response.trace is not None
        self.offer_when_finished(ns, [response.trace], [response.finished])
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
            unknown = set(options) - {"limits", "outbound", "args"}
            if unknown:
                raise InvalidInput(f"unknown dispatch option {sorted(unknown)[0]!r}; the options are limits, outbound and args")
            # `args` (Cloudflare's arguments for the user Worker's top-level function) has no effect here
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
        if response.finished is not None:
            invocation.dispatched_pending.append(response.finished)
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
        if dispatcher is None or not javascript.speaks_protocol(dispatcher.abi):
            problem = "is not deployed" if dispatcher is None else f"is a {dispatcher.abi} Worker, not a Worker-protocol one"
            message = f"the namespace's dispatch Worker {ns.dispatch_worker!r} {problem}"
            return self.recorder.finish(
                request, ns.name, dispatcher, ns.dispatch_worker, "internalError", timestamp, started, 0,
                text_response(500, message), exceptions=[exception_entry("InternalError", message, self.clock())],
            )
        invocation = Invocation(ns, dispatcher, "dispatcher", self.config.limits(ns, dispatcher), request)
        response = await self.run_fetch(invocation, timestamp, started, gated=True)
        assert response.trace is not None
        self.offer_when_finished(ns, [response.trace, *invocation.dispatched],
                                 [response.finished, *invocation.dispatched_pending], from_dispatcher=True)
        response.dispatcher_trace = response.trace
        if invocation.dispatched:
            response.trace = invocation.dispatched[-1]
        return response

    # -- Tail Workers ----------------------------------------------------------------

    def offer_when_finished(
        self, ns: Namespace, items: list[dict[str, Any] | None], waits: list["asyncio.Future[None] | None"],
        *, from_dispatcher: bool = False,
    ) -> None:
        """`offer_to_tails`, once the invocations still going on (`waits`: `Response.finished`) are over."""
        pending = [wait for wait in waits if wait is not None and not wait.done()]
        if not pending:
            self.offer_to_tails(ns, items, from_dispatcher=from_dispatcher)
            return
        async def offer() -> None:
            await asyncio.gather(*pending, return_exceptions=True)
            self.offer_to_tails(ns, items, from_dispatcher=from_dispatcher)

        task = asyncio.ensure_future(offer())
        self._offering.add(task)
        task.add_done_callback(self._offering.discard)

    async def wait_finishing(self, timeout: float) -> None:
        """Wait (at most `timeout` s) for the invocations that answered early to end, and for their
        items to be offered to Tail Workers."""
        if self._finishing:
            await asyncio.wait(list(self._finishing), timeout=timeout)
        if self._offering:
            await asyncio.wait(list(self._offering), timeout=timeout)

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
        if worker is None or not javascript.speaks_protocol(worker.abi):
            return
        sent = [traces.cloudflare_trace_item(item) for item in items] if worker.abi == javascript.ABI else items
        body = json.dumps(sent, separators=(",", ":")).encode()
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
            result, stderr, stderr_truncated, use, _ = await self._converse(invocation, meta, body, "done", {}, gated=True)
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

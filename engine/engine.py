"""`Engine`: the one public entry point. The CLI, the console and the server are thin clients of it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from . import wcgi
from .errors import InvalidInput, InvalidModule, NotFound, WasmdeckError
from .http import Request, Response
from .metering import meter
from .limits import ENGINE_DEFAULTS, EffectiveLimits, Limits, resolve
from .router import DispatchFunction, route
from .runtime import GuestRun, LoadShed, Runtime
from .stderr_capture import RuntimeStderr
from .store import DEFAULT_NAMESPACE, Namespace, Store, Worker, WorkerVersion, now_ms
from .trace_bus import Subscription, TraceBus
from .traces import TraceFilter, exception_entry, log_entries, new_item
from .validation import check_name, check_tag, check_tags, check_vars
from .wasm_module import DEFAULT_MAX_MODULE_BYTES, memory_limit_pages, validate_worker_module

DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
_OUT_OF_MEMORY = re.compile(
    r"out of memory|memory allocation of \d+ bytes failed|cannot allocate memory|failed to allocate|std::bad_alloc|\boom\b",
    re.IGNORECASE,
)


def default_db_path() -> Path:
    """`$WASMDECK_DB`, else `$XDG_DATA_HOME/wasmdeck/wasmdeck.db` (`~/.local/share/wasmdeck/wasmdeck.db`)."""
    if os.environ.get("WASMDECK_DB"):
        return Path(os.environ["WASMDECK_DB"]).expanduser()
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "wasmdeck" / "wasmdeck.db"


def default_concurrency() -> int:
    return max(16, 4 * (os.cpu_count() or 2))


class Engine:
    """Hosts many tenants' WebAssembly Workers in dispatch namespaces backed by one SQLite file.

    Store operations (deploy, list, limits...) are plain methods; running Workers is async
    (`await engine.dispatch(...)`). Use `async with Engine(path) as engine:` or call
    `await engine.close()` so sandboxes are closed and pending traces are stored.
    """

    def __init__(
        self,
        db: str | os.PathLike[str] | None = None,
        *,
        dispatch_function: DispatchFunction | None = None,
        max_concurrency: int | None = None,
        max_queue: int = 256,
        max_module_bytes: int = DEFAULT_MAX_MODULE_BYTES,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        trace_retention: int | None = None,
        persist_traces: bool = True,
        capture_runtime_stderr: bool = True,
        engine_defaults: Limits = ENGINE_DEFAULTS,
        cache_dir: str | os.PathLike[str] | None = None,
        clock: Callable[[], int] = now_ms,
        always_keep_trap_logs: bool = False,
    ) -> None:
        self.db_path = Path(db).expanduser() if db is not None else default_db_path()
        self.clock = clock  # epoch milliseconds for timestamps; tests fix it for deterministic output
        self.store = Store(self.db_path, clock)
        self.dispatch_function = dispatch_function
        self.max_module_bytes = max_module_bytes
        self.max_response_bytes = max_response_bytes
        self.engine_defaults = engine_defaults
        if trace_retention is not None:
            if trace_retention < 1:
                raise InvalidInput("trace retention must be at least 1 item")
        self.origin = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.traces = TraceBus(self.store, self.origin, retention=trace_retention, persist=persist_traces)
        self.runtime = Runtime(
            Path(cache_dir) if cache_dir is not None else self.db_path.with_name(self.db_path.name + ".wasmer-cache"),
            max_concurrency=max_concurrency or default_concurrency(),
            max_queue=max_queue,
            max_output_bytes=max_response_bytes + wcgi.MAX_RESPONSE_HEADER_BYTES,
            always_keep_logs=always_keep_trap_logs,
        )
        self._capture_stderr = capture_runtime_stderr
        self._capturing = False
        self._config: dict[Any, Any] = {}
        self._config_version: int | None = None
        self._data_version: int | None = None
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> "Engine":
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.traces.close()
        await self.runtime.close()
        if self._capturing:
            RuntimeStderr.release()
            self._capturing = False
        self.store.close()

    def capture_runtime_output(self) -> None:
        """Move what the Wasm runtime writes to fd 2 off the terminal (done at the first dispatch
        anyway; a terminal UI calls it before it starts drawing)."""
        if self._capture_stderr and not self._capturing:
            RuntimeStderr.acquire()
            self._capturing = True

    async def flush_traces(self) -> None:
        """Wait until every trace item published so far is stored."""
        await self.traces.flush()

    # -- configuration cache ------------------------------------------------------

    def _check_config(self) -> None:
        """Drop cached config if any process changed a config table since the last check.

        `PRAGMA data_version` is cheap and changes on any commit by another connection,
        including this engine's own trace writer; only then is the config counter read.
        """
        data_version = self.store.db.execute("PRAGMA data_version").fetchone()[0]
        if data_version == self._data_version:
            return
        self._data_version = data_version
        version = self.store.config_version()
        if version != self._config_version:
            self._config.clear()
            self._config_version = version

    def _cached(self, key: Any, load: Callable[[], Any], *, checked: bool = False) -> Any:
        """Config read through a cache that any commit to the database (by any process) invalidates."""
        if not checked:
            self._check_config()
        try:
            return self._config[key]
        except KeyError:
            value = self._config[key] = load()
            return value

    def _changed(self) -> None:
        self._config.clear()
        self._config_version = None
        self._data_version = None

    # -- namespaces ---------------------------------------------------------------

    def namespaces(self) -> list[Namespace]:
        return self.store.namespaces()

    def namespace(self, name: str = DEFAULT_NAMESPACE) -> Namespace:
        return self.store.namespace(name)

    def create_namespace(self, name: str, *, routing: str = "host", defaults: Limits | None = None) -> Namespace:
        check_name(name, "namespace name")
        namespace = self.store.create_namespace(name, routing, defaults)
        self._changed()
        return namespace

    def update_namespace(
        self, name: str, *, routing: str | None = None, defaults: Limits | None = None, clear: Iterable[str] = ()
    ) -> Namespace:
        namespace = self.store.update_namespace(name, routing, defaults, tuple(clear))
        self._changed()
        return namespace

    def delete_namespace(self, name: str) -> None:
        self.store.delete_namespace(name)
        self._changed()

    # -- workers ------------------------------------------------------------------

    def _read_module(self, module: bytes | bytearray | str | os.PathLike[str]) -> bytes:
        if isinstance(module, (bytes, bytearray, memoryview)):
            return bytes(module)
        path = Path(module)
        if not path.exists():
            raise InvalidInput(f"module file {path} does not exist")
        if not path.is_file():
            raise InvalidInput(f"module path {path} is not a file")
        size = path.stat().st_size
        if size > self.max_module_bytes:
            raise InvalidModule(
                f"the module is {size / 2**20:.1f} MiB, over the {self.max_module_bytes / 2**20:.0f} MiB limit"
            )
        return path.read_bytes()

    def deploy(
        self,
        name: str,
        module: bytes | str | os.PathLike[str],
        *,
        namespace: str = DEFAULT_NAMESPACE,
        tags: Iterable[str] = (),
        vars: Mapping[str, str] | None = None,
        message: str = "",
    ) -> Worker:
        """Validate and store a new version of a worker; it serves from the next request.

        Raises InvalidInput / InvalidModule / NotFound (one clear sentence) and changes nothing then.
        """
        check_name(name)
        checked_tags = check_tags(tags)
        checked_vars = check_vars(dict(vars or {}))
        data = self._read_module(module)
        validate_worker_module(data, max_bytes=self.max_module_bytes)
        meter(data)  # refuses a module whose code cannot be metered, so its CPU limit would not hold
        self.store.namespace(namespace)
        sha256 = hashlib.sha256(data).hexdigest()
        worker = self.store.deploy(namespace, name, data, sha256, wcgi.ABI, checked_tags, checked_vars, message)
        self._changed()
        return worker

    def workers(self, namespace: str = DEFAULT_NAMESPACE, *, tags: Iterable[str] = ()) -> list[Worker]:
        self.store.namespace(namespace)
        return self.store.workers(namespace, tuple(tags))

    def worker(self, name: str, *, namespace: str = DEFAULT_NAMESPACE) -> Worker:
        return self.store.worker(namespace, name)

    def versions(self, name: str, *, namespace: str = DEFAULT_NAMESPACE) -> list[WorkerVersion]:
        return self.store.versions(namespace, name)

    def rollback(self, name: str, version: int, *, namespace: str = DEFAULT_NAMESPACE) -> Worker:
        worker = self.store.rollback(namespace, name, version)
        self._changed()
        return worker

    def delete(self, name: str, *, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.store.delete_worker(namespace, name)
        self.runtime.forget_worker(f"{namespace}/{name}")
        self._changed()

    def set_tags(self, name: str, tags: Iterable[str], *, namespace: str = DEFAULT_NAMESPACE) -> Worker:
        worker = self.store.update_settings(namespace, name, check_tags(tags), None, "tags changed")
        self._changed()
        return worker

    def set_vars(self, name: str, vars: Mapping[str, str], *, namespace: str = DEFAULT_NAMESPACE) -> Worker:
        worker = self.store.update_settings(namespace, name, None, check_vars(dict(vars)), "vars changed")
        self._changed()
        return worker

    def worker_stats(self, namespace: str = DEFAULT_NAMESPACE) -> dict[str, dict[str, Any]]:
        return self.store.worker_stats(namespace)

    # -- limits -------------------------------------------------------------------

    def set_limits(self, tag: str, limits: Limits | None = None, *, clear: Iterable[str] = (), **values: int) -> Limits:
        """Set (merge) a tag's limits: `engine.set_limits("free", cpu_ms=10)`; `clear=("cpu_ms",)` unsets fields."""
        check_tag(tag)
        given = limits or Limits(**values)
        result = self.store.set_tag_limits(tag, given, tuple(clear))
        self._changed()
        return result

    def delete_limits(self, tag: str) -> None:
        self.store.delete_tag_limits(tag)
        self._changed()

    def limits(self) -> dict[str, Limits]:
        return self.store.tag_limits()

    def effective_limits(self, name: str, *, namespace: str = DEFAULT_NAMESPACE) -> EffectiveLimits:
        worker = self.store.worker(namespace, name)
        return resolve(worker.tags, self.store.tag_limits(), self.store.namespace(namespace).defaults, self.engine_defaults)

    def trace_retention(self) -> int:
        return self.traces.retention or self.store.trace_retention()

    def set_trace_retention(self, items: int) -> None:
        if items < 1:
            raise InvalidInput("trace retention must be at least 1 item")
        self.store.set_setting("trace_retention", str(items))

    # -- dispatch -----------------------------------------------------------------

    async def request(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: Iterable[tuple[str, str]] | Mapping[str, str] = (),
        body: bytes | str = b"",
        namespace: str = DEFAULT_NAMESPACE,
    ) -> Response:
        """Convenience: build a Request and dispatch it."""
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        data = body.encode() if isinstance(body, str) else body
        return await self.dispatch(Request(url=url, method=method, headers=pairs, body=data), namespace=namespace)

    async def dispatch(self, request: Request, *, namespace: str = DEFAULT_NAMESPACE) -> Response:
        """Route a request to its worker, run it under its limits, and return the response with its trace."""
        if self._closed:
            raise WasmdeckError("the engine is closed")
        self.capture_runtime_output()
        started = time.perf_counter()
        timestamp = self.clock()
        self._check_config()  # once per dispatch; the lookups below reuse it
        ns = self._cached(("namespace", namespace), lambda: self.store.namespace(namespace), checked=True)
        target = await route(request, ns, self.dispatch_function)
        if target.response is not None:
            return target.response
        worker = None
        if target.worker is not None:
            if self.dispatch_function is not None:  # it may have awaited while another task changed the config
                self._check_config()
            worker = self._cached(
                ("worker", namespace, target.worker), lambda: self.store.find_worker(namespace, target.worker), checked=True
            )
        if worker is None:
            return self._finish(
                request, ns.name, None, target.worker, "scriptNotFound", timestamp, started, 0,
                Response(404, [("Content-Type", "text/plain; charset=utf-8")],
                         f"Worker not found: no worker named {target.worker!r} in namespace {ns.name!r}\n".encode()
                         if target.worker else b"Worker not found: the request names no worker\n"),
            )
        base_limits = self._cached(
            ("limits", namespace, worker.name, worker.version),
            lambda: resolve(worker.tags, self._cached("tag_limits", self.store.tag_limits, checked=True), ns.defaults, self.engine_defaults),
            checked=True,
        )
        limits = base_limits.tightened(target.limits)
        env = wcgi.environment(request, script_name=target.script_name, path_info=target.path_info, variables=worker.vars)
        budget_ms = min(limits.cpu_ms, limits.wall_ms)
        try:
            run = await self.runtime.run(
                f"{ns.name}/{worker.name}",
                worker.sha256,
                lambda: self.store.module_bytes(worker.sha256),
                memory_pages=memory_limit_pages(limits.memory_mb),
                env=env,
                stdin=request.body,
                timeout_s=budget_ms / 1000,
                queue_timeout_s=limits.wall_ms / 1000,
                stable_env_keys=wcgi.ALWAYS_SET,
            )
        except LoadShed as shed:
            return self._finish(
                request, ns.name, worker, worker.name, "loadShed", timestamp, started, 0,
                _limit_response(503, "the engine is overloaded; try again shortly", "concurrency", str(shed)),
                exceptions=[exception_entry("LoadShed", str(shed), self.clock())],
            )
        except InvalidModule as error:
            return self._finish(
                request, ns.name, worker, worker.name, "exceededMemory", timestamp, started, 0,
                _limit_response(503, "Worker exceeded its memory limit", "memoryMb", str(error)),
                exceptions=[exception_entry("ExceededMemory", str(error), self.clock())],
            )
        except Exception as error:  # a runtime failure must never take the caller down
            return self._finish(
                request, ns.name, worker, worker.name, "internalError", timestamp, started, 0,
                _text_response(500, f"Internal error while running the Worker: {error}"),
                exceptions=[exception_entry("InternalError", str(error), self.clock())],
            )
        return self._complete(request, ns.name, worker, limits, run, timestamp, started)

    def _complete(
        self,
        request: Request,
        namespace: str,
        worker: Worker,
        limits: EffectiveLimits,
        run: GuestRun,
        timestamp: int,
        started: float,
    ) -> Response:
        end = self.clock()
        logs, logs_truncated = log_entries(run.stderr, end)
        truncated = logs_truncated or run.stderr_truncated
        if run.output_lost:
            # the single-call fast path loses what a trapping guest wrote; this module now runs on
            # the path that keeps it (see Runtime), so its next trap shows its log lines
            logs.append({"timestamp": end, "level": "warn", "message": [
                "log lines written before this trap were lost; they are kept from this worker's next trap on"]})
            truncated = True
        cpu = round(run.duration_ms)
        exceptions: list[dict[str, Any]] = []
        stderr_text = run.stderr.decode("utf-8", "replace")

        def finish(outcome: str, response: Response) -> Response:
            return self._finish(
                request, namespace, worker, worker.name, outcome, timestamp, started, cpu, response,
                logs=logs, exceptions=exceptions, truncated=truncated,
            )

        if run.outcome == "timeout":
            if limits.cpu_ms <= limits.wall_ms:
                message = f"Worker exceeded its CPU time limit of {limits.cpu_ms} ms (limit from {limits.sources['cpu_ms']})"
                exceptions.append(exception_entry("ExceededCpu", message, end))
                return finish("exceededCpu", _limit_response(503, "Worker exceeded its CPU time limit", "cpuMs", message, limits.cpu_ms))
            message = f"Worker exceeded its wall-time limit of {limits.wall_ms} ms (limit from {limits.sources['wall_ms']})"
            exceptions.append(exception_entry("ExceededWallTime", message, end))
            return finish("exceededWallTime", _limit_response(503, "Worker exceeded its wall-time limit", "wallMs", message, limits.wall_ms))
        if run.outcome in ("trap", "exited") and (run.outcome == "trap" or run.exit_code != 0):
            failure = run.error or f"the Worker exited with status {run.exit_code}"
            if _OUT_OF_MEMORY.search(stderr_text) or _OUT_OF_MEMORY.search(failure):
                message = f"Worker ran out of memory under its {limits.memory_mb} MiB limit (limit from {limits.sources['memory_mb']})"
                exceptions.append(exception_entry("ExceededMemory", f"{message}: {failure}", end))
                return finish("exceededMemory", _limit_response(503, "Worker exceeded its memory limit", "memoryMb", message, limits.memory_mb))
            if run.outcome == "trap":
                name, _, detail = failure.removeprefix("command execution failed: ").partition(": ")
                exceptions.append(exception_entry("WasmTrap", failure.removeprefix("command execution failed: "), end))
                first_line = failure.removeprefix("command execution failed: ").splitlines()[0]
                return finish("exception", _text_response(500, f"Worker threw an exception: the guest trapped ({first_line})"))
            exceptions.append(exception_entry("ExitStatus", failure, end))
            return finish("exception", _text_response(500, f"Worker threw an exception: {failure}"))
        if run.outcome == "failed":
            exceptions.append(exception_entry("InternalError", run.error or "the guest failed", end))
            return finish("internalError", _text_response(500, f"Internal error while running the Worker: {run.error}"))
        if run.stdout_truncated:
            message = f"the Worker's response exceeds the {self.max_response_bytes // 2**20} MiB limit"
            exceptions.append(exception_entry("ResponseTooLarge", message, end))
            return finish("exception", _text_response(502, f"Worker threw an exception: {message}"))
        try:
            parsed = wcgi.parse_response(run.stdout)
        except wcgi.InvalidResponse as error:
            exceptions.append(exception_entry("InvalidResponse", str(error), end))
            return finish("exception", _text_response(502, f"Worker threw an exception: {error}"))
        return finish("ok", Response(parsed.status, parsed.headers, b"" if request.method == "HEAD" else parsed.body))

    def _finish(
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
    ) -> Response:
        response.trace = new_item(
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
        )
        self.traces.publish(response.trace)
        return response

    # -- traces -------------------------------------------------------------------

    def subscribe(self, trace_filter: TraceFilter | None = None, *, buffer: int = 1000) -> Subscription:
        """Live trace items of this engine's own dispatches (bounded buffer; drops are counted)."""
        return self.traces.subscribe(trace_filter, buffer)

    def recent_traces(
        self, limit: int = 100, trace_filter: TraceFilter | None = None, *, up_to_id: int | None = None
    ) -> list[dict[str, Any]]:
        """The newest stored items that match (stored no later than row `up_to_id`), oldest first."""
        wanted = trace_filter or TraceFilter()
        found: list[dict[str, Any]] = []
        before: int | None = None if up_to_id is None else up_to_id + 1
        while len(found) < limit:
            rows = self.store.traces_newest(
                max(limit * 2, 200), namespace=wanted.namespace, worker=wanted.worker, before_id=before
            )
            if not rows:
                break
            for row_id, item in rows:
                if wanted.matches(item):
                    found.append(item)
                    if len(found) == limit:
                        break
            before = rows[-1][0]
        return list(reversed(found))

    async def tail(
        self,
        trace_filter: TraceFilter | None = None,
        *,
        history: int = 0,
        follow: bool = True,
        poll_interval: float = 0.25,
        on_dropped: Callable[[int], None] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Stored history, then live items from this process and from every other process using the database."""
        wanted = trace_filter or TraceFilter()
        subscription = self.subscribe(wanted) if follow else None
        last_id = self.store.last_trace_id()
        try:
            if history > 0:
                for item in self.recent_traces(history, wanted, up_to_id=last_id):
                    yield item
            if subscription is None:
                return
            next_poll = time.monotonic() + poll_interval
            while True:
                item = await subscription.get(timeout=max(0.0, next_poll - time.monotonic()))
                if item is not None:
                    yield item
                elif subscription.closed:
                    return  # the engine is closing
                dropped = subscription.take_dropped()
                if dropped and on_dropped:
                    on_dropped(dropped)
                if time.monotonic() >= next_poll:
                    newest = self.store.last_trace_id()
                    rows = await asyncio.to_thread(
                        self.store.traces_after,
                        last_id,
                        namespace=wanted.namespace,
                        worker=wanted.worker,
                        exclude_origin=self.origin,
                    )
                    for row_id, stored in rows:
                        last_id = row_id
                        if wanted.matches(stored):
                            yield stored
                    if not rows:
                        # nothing matched up to `newest`: skip those rows, but never ones stored after it
                        last_id = max(last_id, newest)
                    next_poll = time.monotonic() + poll_interval
        finally:
            if subscription is not None:
                subscription.close()


def _text_response(status: int, message: str) -> Response:
    return Response(status, [("Content-Type", "text/plain; charset=utf-8")], (message.rstrip("\n") + "\n").encode())


def _limit_response(status: int, error: str, limit: str, detail: str, value: int | None = None) -> Response:
    body = {"error": error, "limit": limit, "detail": detail}
    if value is not None:
        body["value"] = value
    return Response(status, [("Content-Type", "application/json")], (json.dumps(body) + "\n").encode())

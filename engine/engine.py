"""`Engine`: the one public entry point. The CLI, the console and the server are thin clients of it."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from . import javascript, protocol, wcgi
from .egress import EgressPolicy
from .compatibility import check_compatibility
from .errors import InvalidInput, InvalidModule, WasmdeckError
from .config_cache import ConfigCache
from .http import Request, Response, limit_response, text_response
from .instances import InstanceSettings
from .metering import SCHEME as METERING_SCHEME, meter_isolated
from .limits import ENGINE_DEFAULTS, EffectiveLimits, Limits, looks_out_of_memory, resolve
from .javascript import ScriptInfo
from .network import Network
from .outbound import OutboundSetting, check_outbound_values
from .protocol_host import Invocation, ProtocolHost
from .recorder import Recorder
from .router import DispatchFunction, route
from .runtime import GuestRun, Runtime
from .secrets import MAX_SECRETS_PER_WORKER, SecretBox, SecretsUnavailable, SealedSecret, check_secret, default_key_path
from .stderr_capture import RuntimeStderr
from .store import DEFAULT_NAMESPACE, Namespace, Store, TailConsumer, Worker, WorkerVersion, now_ms
from .trace_bus import Subscription, TraceBus
from .traces import TraceFilter, exception_entry, log_entries
from .validation import check_name, check_tag, check_tags, check_vars
from .wasm_module import DEFAULT_MAX_MODULE_BYTES, memory_limit_pages, prepare_to_run, validate_worker_module

DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
FIRST_TRAP_NOTE = (
    "(the Worker's first trap since the engine started: what it wrote before the trap was not kept; "
    "from its next trap on its log lines are)"
)


def default_db_path() -> Path:
    """`$WASMDECK_DB`, else `$XDG_DATA_HOME/wasmdeck/wasmdeck.db` (`~/.local/share/wasmdeck/wasmdeck.db`)."""
    if os.environ.get("WASMDECK_DB"):
        return Path(os.environ["WASMDECK_DB"]).expanduser()
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "wasmdeck" / "wasmdeck.db"


ABIS = (wcgi.ABI, protocol.ABI, javascript.ABI)


def default_concurrency() -> int:
    return max(16, 4 * (os.cpu_count() or 2))


def read_module(module: bytes | bytearray | str | os.PathLike[str], max_bytes: int | None = None) -> bytes:
    """A module given as bytes or a file path; a missing, non-file or (with `max_bytes`) oversized file is refused."""
    if isinstance(module, (bytes, bytearray, memoryview)):
        return bytes(module)
    path = Path(module)
    if not path.exists():
        raise InvalidInput(f"module file {path} does not exist")
    if not path.is_file():
        raise InvalidInput(f"module path {path} is not a file")
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise InvalidModule(f"the module is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit")
    return path.read_bytes()


class Engine:
    """Hosts many tenants' WebAssembly Workers in dispatch namespaces backed by one SQLite file.

    Store operations (deploy, list, limits...) are plain methods; running Workers is async
    (`await engine.dispatch(...)`). Use `async with Engine(path) as engine:` or call
    `await engine.close()` so sandboxes are closed and pending traces are stored.

    The engine routes requests and runs WCGI Workers itself; Worker-protocol invocations (and the
    dispatch, Outbound and Tail Workers built on them) run in `self.protocol`, a `ProtocolHost`
    given the parts it shares with the engine (see its docstring for both sides' contract).
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
        network: Network | None = None,
        secrets_key_file: str | os.PathLike[str] | None = None,
        instances: InstanceSettings | None = None,
    ) -> None:
        """`network` is how Workers' fetches reach origins (its resolver and TLS trust); by
        default the system resolver and the certifi CA bundle. `instances` bounds the warm
        instances of version 2 protocol Workers (how many, how long idle, how many invocations
        each; see `InstanceSettings`)."""
        self.db_path = Path(db).expanduser() if db is not None else default_db_path()
        self.secret_box = SecretBox(secrets_key_file if secrets_key_file is not None else default_key_path(self.db_path))
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
            metered_source=self._metered_module,
            keep_prepared=frozenset({javascript.runtime_sha256()}),
        )
        self._runtime_lock = threading.Lock()
        self._prepared_runtime: bytes | None = None  # the JavaScript runtime, metered and capped, checked once
        self.network = network or Network()
        self.config_cache = ConfigCache(self.store, engine_defaults, open_secrets=self._with_secrets)
        self.recorder = Recorder(self.traces, clock)
        self.protocol = ProtocolHost(
            runtime=self.runtime,
            network=self.network,
            config=self.config_cache,
            recorder=self.recorder,
            module_bytes=self._stored_module,
            run_user=self._run_dispatched,
            instance_settings=instances,
        )
        self.config_cache.on_change(self.protocol.instances.config_changed)
        self._capture_stderr = capture_runtime_stderr
        self._capturing = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop running guests, known from the first dispatch
        self._preloading: asyncio.Future[None] | None = None

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> "Engine":
        self._start_preload()
        return self

    def _start_preload(self) -> None:
        """`preload()` in the background (once): the first request joins it if it is not done."""
        if self._preloading is None:
            self._preloading = asyncio.ensure_future(self.preload())
            self._preloading.add_done_callback(lambda task: task.cancelled() or task.exception())

    async def preload(self) -> None:
        """Load now what the first requests would otherwise load: the JavaScript runtime (compiled
        once, from the on-disk cache after a restart) when any JavaScript Worker is deployed.
        `async with Engine(...)` starts it in the background; `wasmdeck serve` waits for it before
        it answers its first request."""
        if self._closed:
            return
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        if await asyncio.to_thread(self.store.serves_abi, javascript.ABI):
            await self.runtime.preload(javascript.runtime_sha256(), javascript.RUNTIME_PAGES, javascript.runtime_module)

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        if self._preloading is not None and not self._preloading.done():
            self._preloading.cancel()
            await asyncio.gather(self._preloading, return_exceptions=True)
        await self.protocol.close()
        self._closed = True
        await self.traces.close()
        await self.runtime.close()
        await self.network.close()
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
        """Wait until every trace item published so far is stored (and first, for at most 30 s, for
        invocations that answered early and go on: their items are published when they end)."""
        await self.protocol.wait_finishing(30.0)
        await self.traces.flush()

    async def flush_tail_deliveries(self, timeout: float = 30.0) -> None:
        """Wait until the trace items produced so far have reached their Tail Workers."""
        await self.protocol.flush_tail_deliveries(timeout)

    # -- namespaces ---------------------------------------------------------------

    def namespaces(self) -> list[Namespace]:
        return self.store.namespaces()

    def namespace(self, name: str = DEFAULT_NAMESPACE) -> Namespace:
        return self.store.namespace(name)

    def create_namespace(self, name: str, *, routing: str = "host", defaults: Limits | None = None) -> Namespace:
        check_name(name, "namespace name")
        namespace = self.store.create_namespace(name, routing, defaults)
        self.config_cache.changed()
        return namespace

    def update_namespace(
        self, name: str, *, routing: str | None = None, defaults: Limits | None = None, clear: Iterable[str] = ()
    ) -> Namespace:
        namespace = self.store.update_namespace(name, routing, defaults, tuple(clear))
        self.config_cache.changed()
        return namespace

    def delete_namespace(self, name: str) -> None:
        self.store.delete_namespace(name)
        self.config_cache.changed()

    # -- workers ------------------------------------------------------------------

    def _read_module(self, module: bytes | bytearray | str | os.PathLike[str]) -> bytes:
        return read_module(module, self.max_module_bytes)

    def _stored_module(self, sha256: str) -> bytes:
        """A module by sha256: a deployed one, or a runtime the engine ships (JavaScript's)."""
        if sha256 == javascript.runtime_sha256():
            return javascript.runtime_module()
        return self.store.module_bytes(sha256)

    def deploy(
        self,
        name: str,
        module: bytes | str | os.PathLike[str],
        *,
        namespace: str = DEFAULT_NAMESPACE,
        tags: Iterable[str] = (),
        vars: Mapping[str, str] | None = None,
        message: str = "",
        abi: str | None = None,
        secrets: Mapping[str, str] | None = None,
        keep_secrets: bool | Iterable[str] = True,
        filename: str | None = None,
    ) -> Worker:
        """Validate and store a new version of a worker; it serves from the next request.

        `abi` is "wcgi", "protocol" or "javascript". By default a module that is not WebAssembly and
        is UTF-8 text is a JavaScript Worker (an ES module with `export default { fetch }`, or a
        service-worker script); a module exporting `wasmdeck_worker_protocol_1` (one process per
        invocation) or `wasmdeck_worker_protocol_2` (warm instances) speaks the Worker protocol;
        any other is a WCGI program. A script is checked by the JavaScript runtime before it is
        stored (compiled and its top-level code run, with no request): a syntax error, no handler,
        an `import`, a throw at top level are refused. `secrets` are set in the same transaction;
        the worker's other secrets stay (`keep_secrets` true), go (false), or stay only when
        `keep_secrets` names them. `filename` is the script's name in stack traces and syntax
        errors (default: the module path's file name, else `worker.js`).
        Raises InvalidInput / InvalidModule / NotFound (one clear sentence) and changes nothing then.
        Slow the first time (metering and compiling, seconds for a big module or the JavaScript
        runtime): call it in a thread from async code.
        """
        check_name(name)
        if abi is not None and abi not in ABIS:
            raise InvalidInput(f"ABI {abi!r} is not one of {', '.join(ABIS)}")
        checked_tags = check_tags(tags)
        checked_vars = check_vars(dict(vars or {}))
        data = self._read_module(module)
        ns = self.store.namespace(namespace)
        sha256 = hashlib.sha256(data).hexdigest()
        sealed = self._seal(namespace, name, secrets or {})
        kept = keep_secrets if isinstance(keep_secrets, bool) else frozenset(keep_secrets)
        source_name = filename or ("" if isinstance(module, (bytes, bytearray, memoryview)) else os.fspath(module))
        named_as_script = str(source_name).lower().endswith((".js", ".mjs", ".cjs")) and not data.startswith(javascript.WASM_MAGIC)
        if abi == javascript.ABI or (abi is None and (named_as_script or javascript.looks_like_javascript(data))):
            javascript.check_source(data, min(self.max_module_bytes, javascript.MAX_SCRIPT_BYTES))
            filename = javascript.script_filename(
                filename if filename is not None else None if isinstance(module, (bytes, bytearray, memoryview)) else str(module))
            limits = resolve(checked_tags, self.store.tag_limits(), ns.defaults, self.engine_defaults)
            binding = ns.dispatch_binding if ns.dispatch_worker == name else None
            # secrets by name only: a refusal quotes what the script threw, and a secret's value never leaves the engine
            env = {**{key: "" for key in self._kept_secret_names(namespace, name, kept)}, **checked_vars,
                   **{key: "" for key in (secrets or {})}}
            script = self._check_script(name, namespace, data, filename, limits.memory_mb, binding, env)
            worker = self.store.deploy(namespace, name, data, sha256, javascript.ABI, checked_tags, checked_vars, message,
                                       sealed, kept, script=script)
            self.config_cache.changed()
            return worker
        info = validate_worker_module(data, max_bytes=self.max_module_bytes)
        if abi is None:
            abi = protocol.ABI if any(e.name in protocol.MARKER_EXPORTS for e in info.exports) else wcgi.ABI
        # Metered once here (refused if it cannot be: its CPU limit would not hold) and compiled, so a
        # module that cannot run is refused now. Slow for big modules: servers call deploy in a thread.
        metered = self.store.metered_module(sha256, METERING_SCHEME)
        if metered is None:  # else it was metered and compiled when first deployed
            metered = meter_isolated(data)
            limits = resolve(checked_tags, self.store.tag_limits(), ns.defaults, self.engine_defaults)
            pages = max([memory_limit_pages(limits.memory_mb), *(m.initial_pages for m in info.memories)])
            self.runtime.check_module(prepare_to_run(metered, pages))
        worker = self.store.deploy(namespace, name, data, sha256, abi, checked_tags, checked_vars, message, sealed, kept)
        self.store.save_metered_module(sha256, METERING_SCHEME, metered)
        self.config_cache.changed()
        return worker

    def _kept_secret_names(self, namespace: str, name: str, kept: bool | frozenset[str]) -> list[str]:
        """The names of the secrets a deploy keeps."""
        if kept is False or self.store.find_worker(namespace, name) is None:
            return []
        names = self.store.secret_names(namespace, name)
        return names if kept is True else [key for key in names if key in kept]

    def _runtime_for_checks(self) -> bytes:
        """The JavaScript runtime as instances run it (metered, its memory capped), metered and
        compiled once per cache folder: both forms are kept there (see `Runtime.keep_prepared`)."""
        with self._runtime_lock:
            if self._prepared_runtime is None:
                prepared, fresh = self.runtime.prepared_module(
                    javascript.runtime_sha256(), javascript.RUNTIME_PAGES, javascript.runtime_module)
                if fresh:
                    self.runtime.check_module(prepared)
                self._prepared_runtime = prepared
            return self._prepared_runtime

    def _check_script(
        self, name: str, namespace: str, source: bytes, filename: str, memory_mb: int, binding: str | None,
        env: dict[str, str],
    ) -> ScriptInfo:
        """Have the JavaScript runtime compile the script and run its top-level code (its `check`
        mode: no request, nothing kept), in the compile checker's thread; InvalidModule when it fails."""
        frame = javascript.check_frame(name, namespace, source, filename, memory_mb, javascript.dispatch_bindings(binding))
        run = self.runtime.run_check(self._runtime_for_checks(), frame, env, javascript.CHECK_TIMEOUT_S)
        if run.outcome == "timeout":
            raise InvalidModule(
                f"the script's top-level code ran for more than {javascript.CHECK_TIMEOUT_S:g} s without finishing; "
                "a Worker's top-level code must only define its handlers"
            )
        try:
            frames = protocol.FrameDecoder(allowed=protocol.GUEST_TYPES_2).feed(run.stdout)
        except protocol.ProtocolViolation as error:
            raise InvalidModule(f"the JavaScript runtime answered the check in a way wasmdeck does not understand ({error})") from None
        answer = next((frame for frame in frames if frame.type in ("ready", "exception")), None)
        if answer is None:
            detail = run.error or run.stderr.decode("utf-8", "replace").strip() or f"exit status {run.exit_code}"
            if looks_out_of_memory(detail):
                raise InvalidModule(f"the script ran out of memory under its {memory_mb} MiB limit while its top-level code ran")
            raise InvalidModule(f"the JavaScript runtime stopped while it checked the script ({detail.splitlines()[0][:300]})")
        if answer.type == "exception":
            raise InvalidModule(javascript.refusal(answer.meta, filename, memory_mb))
        return javascript.script_info(filename, answer.meta)

    def _metered_module(self, sha256: str, original: Callable[[], bytes]) -> bytes:
        """The metered form of a stored module: kept beside it, or made (and kept) now. Runs in a
        worker thread (see Runtime). The engine's own runtimes are metered here and kept prepared
        in the cache folder by the Runtime (they are not tenant data: the database holds none of them)."""
        if sha256 in self.runtime.keep_prepared:
            return meter_isolated(original())
        metered = self.store.metered_module(sha256, METERING_SCHEME)
        if metered is None:
            metered = meter_isolated(original())
            self.store.save_metered_module(sha256, METERING_SCHEME, metered)
        return metered

    def workers(self, namespace: str = DEFAULT_NAMESPACE, *, tags: Iterable[str] = ()) -> list[Worker]:
        self.store.namespace(namespace)
        return self.store.workers(namespace, tuple(tags))

    def worker(self, name: str, *, namespace: str = DEFAULT_NAMESPACE) -> Worker:
        return self.store.worker(namespace, name)

    def module_bytes(self, worker: WorkerVersion) -> bytes:
        """The module a worker version runs, as deployed."""
        return self.store.module_bytes(worker.sha256)

    def versions(self, name: str, *, namespace: str = DEFAULT_NAMESPACE) -> list[WorkerVersion]:
        return self.store.versions(namespace, name)

    def rollback(self, name: str, version: int, *, namespace: str = DEFAULT_NAMESPACE) -> Worker:
        worker = self.store.rollback(namespace, name, version)
        self.config_cache.changed()
        return worker

    def delete(self, name: str, *, namespace: str = DEFAULT_NAMESPACE) -> None:
        """Delete a worker and all its versions. Safe to call from a thread other than the one
        running the engine's event loop (a server's writer threads do)."""
        self.store.delete_worker(namespace, name)
        self.config_cache.changed()
        self._on_engine_loop(self.runtime.forget_worker, f"{namespace}/{name}")

    def _on_engine_loop(self, call: Callable[[str], None], argument: str) -> None:
        """Run `call(argument)` on the event loop that runs this engine's guests: at once when
        that is the current thread's loop (or the engine has run nothing yet), else soon, safely."""
        loop = self._loop
        if loop is None or loop.is_closed():
            call(argument)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            call(argument)
        else:
            loop.call_soon_threadsafe(call, argument)

    def set_tags(self, name: str, tags: Iterable[str], *, namespace: str = DEFAULT_NAMESPACE) -> Worker:
        worker = self.store.update_settings(namespace, name, check_tags(tags), None, "tags changed")
        self.config_cache.changed()
        return worker

    def set_vars(self, name: str, vars: Mapping[str, str], *, namespace: str = DEFAULT_NAMESPACE) -> Worker:
        worker = self.store.update_settings(namespace, name, None, check_vars(dict(vars)), "vars changed")
        self.config_cache.changed()
        return worker

    def update_settings(
        self,
        name: str,
        *,
        tags: Iterable[str] | None = None,
        vars: Mapping[str, str] | None = None,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> Worker:
        """Replace tags, vars or both in one new version running the same module (None keeps one as it is)."""
        if tags is None and vars is None:
            raise InvalidInput("give new tags, new vars, or both")
        checked_tags = None if tags is None else check_tags(tags)
        checked_vars = None if vars is None else check_vars(dict(vars))
        message = " and ".join(part for part, given in (("tags", tags), ("vars", vars)) if given is not None) + " changed"
        worker = self.store.update_settings(namespace, name, checked_tags, checked_vars, message)
        self.config_cache.changed()
        return worker

    def worker_stats(self, namespace: str = DEFAULT_NAMESPACE) -> dict[str, dict[str, Any]]:
        return self.store.worker_stats(namespace)

    # -- secrets (see engine.secrets) and compatibility settings ----------------------

    def _seal(self, namespace: str, name: str, values: Mapping[str, str]) -> list[SealedSecret]:
        if len(values) > MAX_SECRETS_PER_WORKER:
            raise InvalidInput(f"a worker can have at most {MAX_SECRETS_PER_WORKER} secrets, not {len(values)}")
        for key, value in values.items():
            check_secret(key, value)
        return self.secret_box.seal(namespace, name, values, sealed_count=self.store.secret_count())

    def update_bindings(
        self,
        name: str,
        *,
        put_secrets: Mapping[str, str] | None = None,
        delete_secrets: Iterable[str] = (),
        vars: Mapping[str, str] | None = None,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> Worker:
        """Set and delete secrets (and, given `vars`, replace the vars) as one new version.

        A secret is write-only: the worker's guests find it in their environment, nothing shows
        its value. `SecretsUnavailable` if secrets exist but their key file is missing; deleting
        needs no key."""
        put = dict(put_secrets or {})
        deleted = tuple(dict.fromkeys(delete_secrets))
        checked_vars = check_vars(dict(vars)) if vars is not None else None
        self.store.worker(namespace, name)  # NotFound before a key file is made
        sealed = self._seal(namespace, name, put)
        parts = [f"secret {key} set" for key in put] + [f"secret {key} deleted" for key in deleted]
        if checked_vars is not None:
            parts.append("vars changed")
        worker = self.store.change_secrets(namespace, name, sealed, deleted, "; ".join(parts), checked_vars)
        self.config_cache.changed()
        return worker

    def put_secret(self, name: str, key: str, value: str, *, namespace: str = DEFAULT_NAMESPACE) -> Worker:
        """Set one write-only secret (a new version); see `update_bindings`."""
        return self.update_bindings(name, put_secrets={key: value}, namespace=namespace)

    def delete_secret(self, name: str, key: str, *, namespace: str = DEFAULT_NAMESPACE) -> Worker:
        """Remove one secret (a new version); works without the key file."""
        return self.update_bindings(name, delete_secrets=(key,), namespace=namespace)

    def secret_names(self, name: str, *, namespace: str = DEFAULT_NAMESPACE) -> list[str]:
        """The names of a worker's secrets; their values are never returned."""
        return self.store.secret_names(namespace, name)

    def _with_secrets(self, worker: Worker | None) -> Worker | None:
        """The worker to run: its vars joined by its opened secrets (raises SecretsUnavailable)."""
        if worker is None:
            return None
        sealed = self.store.sealed_secrets(worker.namespace, worker.name)
        if not sealed:
            return worker
        opened = self.secret_box.open(worker.namespace, worker.name, sealed, sealed_count=self.store.secret_count())
        return dataclasses.replace(worker, vars={**worker.vars, **opened})

    def compatibility(self, name: str, *, namespace: str = DEFAULT_NAMESPACE) -> tuple[str | None, tuple[str, ...]]:
        """The worker's compatibility date and flags (kept for Cloudflare's tools and the JavaScript runtime)."""
        self.store.worker(namespace, name)
        return self.store.compatibility(namespace, name)

    def set_compatibility(
        self, name: str, date: str | None, flags: Iterable[str] = (), *, namespace: str = DEFAULT_NAMESPACE
    ) -> None:
        checked = check_compatibility(date, flags)
        self.store.set_compatibility(namespace, name, *checked)

    def instance_stats(self, namespace: str = DEFAULT_NAMESPACE) -> dict[str, dict[str, Any]]:
        """Warm instances per worker of the namespace, since this engine started: `busy`, `idle`,
        `starting` (now), `started`, `invocations`, `reusedInvocations` (on an instance that had
        served before) and `retired` (counts by reason). Workers that never ran on one are absent."""
        self.store.namespace(namespace)
        return self.protocol.instances.stats(namespace)

    def instance_totals(self) -> dict[str, Any]:
        """The same counts over the whole engine, with the bounds in force (`maxInstances`...)."""
        return self.protocol.instances.totals()

    # -- limits -------------------------------------------------------------------

    def set_limits(self, tag: str, limits: Limits | None = None, *, clear: Iterable[str] = (), **values: int) -> Limits:
        """Set (merge) a tag's limits: `engine.set_limits("free", cpu_ms=10)`; `clear=("cpu_ms",)` unsets fields."""
        check_tag(tag)
        given = limits or Limits(**values)
        result = self.store.set_tag_limits(tag, given, tuple(clear))
        self.config_cache.changed()
        return result

    def delete_limits(self, tag: str) -> None:
        self.store.delete_tag_limits(tag)
        self.config_cache.changed()

    def limits(self) -> dict[str, Limits]:
        return self.store.tag_limits()

    def effective_limits(self, name: str, *, namespace: str = DEFAULT_NAMESPACE) -> EffectiveLimits:
        worker = self.store.worker(namespace, name)
        return resolve(worker.tags, self.store.tag_limits(), self.store.namespace(namespace).defaults, self.engine_defaults)

    # -- platform: dispatch Worker, Outbound Worker, egress, Tail Workers -----------------

    def _protocol_worker(self, name: str, namespace: str, role: str, handler: str = "fetch") -> Worker:
        """The worker named for a platform role: it must speak the Worker protocol (a protocol
        module or a JavaScript Worker), and a JavaScript one must have the role's handler."""
        worker = self.store.worker(namespace, name)
        if not javascript.speaks_protocol(worker.abi):
            raise InvalidInput(
                f"{role} {name!r} is a {worker.abi} Worker; a {role} must speak the Worker protocol "
                "(see docs/worker-protocol.md) or be a JavaScript Worker"
            )
        if worker.script is not None and handler not in worker.script.handlers:
            raise InvalidInput(
                f"{role} {name!r} is a JavaScript Worker without a {handler}() handler; a {role} needs one"
            )
        return worker

    def set_dispatch_worker(
        self, name: str | None, *, namespace: str = DEFAULT_NAMESPACE, binding: str | None = None
    ) -> Namespace:
        """Front the namespace with a dispatch Worker (None: route by host label or path again).
        `binding` names the dispatch namespace binding a JavaScript dispatch Worker finds in its env
        (`env.dispatcher` unless set; None keeps the namespace's)."""
        self.store.namespace(namespace)
        if binding is not None:
            javascript.check_binding_name(binding)
        if name is not None:
            check_name(name)
            self._protocol_worker(name, namespace, "dispatch Worker")
        result = self.store.set_dispatch_worker(namespace, name, binding)
        self.config_cache.changed()
        return result

    def set_outbound(
        self,
        service: str | None,
        parameters: Iterable[str | tuple[str, str | None]] | Mapping[str, str | None] = (),
        *,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> Namespace:
        """Send the namespace's user Worker fetches through `service` (None: straight to the network).

        `parameters`: names the dispatcher sets, or (name, template) pairs / a mapping of templates.
        """
        self.store.namespace(namespace)
        setting = None
        if service is not None:
            setting = OutboundSetting.parse(service, parameters)
            self._protocol_worker(service, namespace, "Outbound Worker")
        result = self.store.set_outbound(namespace, setting)
        self.config_cache.changed()
        return result

    def set_egress(
        self, *, allow: Iterable[str] = (), block: Iterable[str] = (), namespace: str = DEFAULT_NAMESPACE
    ) -> Namespace:
        """Replace the namespace's egress policy (hosts its Workers' fetches may reach)."""
        policy = EgressPolicy.parse(allow, block)
        result = self.store.set_egress(namespace, policy)
        self.config_cache.changed()
        return result

    def _tail_consumer(self, consumer: str, worker: str | None, dispatcher: bool, namespace: str) -> TailConsumer:
        check_name(consumer, "tail consumer name")
        if worker is not None and dispatcher:
            raise InvalidInput("a tail consumer follows one worker, the dispatcher, or the whole namespace, not several")
        if worker is not None:
            check_name(worker)
            if worker == consumer:
                raise InvalidInput(f"worker {consumer!r} cannot be its own tail consumer")
        scope = "worker" if worker is not None else "dispatcher" if dispatcher else "namespace"
        return TailConsumer(namespace, consumer, scope, worker)

    def add_tail_consumer(
        self, consumer: str, *, worker: str | None = None, dispatcher: bool = False, namespace: str = DEFAULT_NAMESPACE
    ) -> TailConsumer:
        """Deliver trace items to `consumer`'s tail handler: of `worker`, of the dispatcher, or (neither) of the namespace."""
        entry = self._tail_consumer(consumer, worker, dispatcher, namespace)
        self.store.namespace(namespace)
        self._protocol_worker(consumer, namespace, "tail consumer", handler="tail")
        result = self.store.add_tail_consumer(entry)
        self.config_cache.changed()
        return result

    def remove_tail_consumer(
        self, consumer: str, *, worker: str | None = None, dispatcher: bool = False, namespace: str = DEFAULT_NAMESPACE
    ) -> None:
        self.store.remove_tail_consumer(self._tail_consumer(consumer, worker, dispatcher, namespace))
        self.config_cache.changed()

    def tail_consumers(self, namespace: str | None = None) -> list[TailConsumer]:
        if namespace is not None:
            self.store.namespace(namespace)
        return self.store.tail_consumers(namespace)

    def trace_retention(self) -> int:
        return self.traces.retention or self.store.trace_retention()

    def trace_retention_bytes(self) -> int:
        return self.store.trace_retention_bytes()

    def set_trace_retention(self, items: int | None = None, *, max_bytes: int | None = None) -> None:
        """Keep the newest `items` trace items, and of those at most `max_bytes` bytes (as stored);
        None leaves a value as it is. Shared by every process using the database."""
        self.store.set_trace_retention(items, max_bytes)

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
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self.capture_runtime_output()
        started = time.perf_counter()
        timestamp = self.clock()
        self.config_cache.refresh()  # once per dispatch; the lookups below reuse it
        ns = self.config_cache.namespace(namespace)
        if ns.dispatch_worker is not None and self.dispatch_function is None:
            return await self.protocol.dispatch_through_worker(request, ns, timestamp, started)
        target = await route(request, ns, self.dispatch_function)
        if target.response is not None:
            return target.response
        if self.dispatch_function is not None:  # it may have awaited while another task changed the config
            self.config_cache.refresh()
        outbound_values = check_outbound_values(target.outbound or {}, ns.outbound)
        response = await self._run_user(
            request, ns, target.worker, timestamp, started,
            limits_override=target.limits, outbound_values=outbound_values,
            script_name=target.script_name, path_info=target.path_info,
        )
        self.protocol.offer_when_finished(ns, [response.trace], [response.finished])
        return response

    async def _run_dispatched(
        self, request: Request, namespace: Namespace, name: str, *,
        limits: Limits | None, outbound_values: Mapping[str, str], wall_cap_ms: int,
    ) -> Response:
        """A dispatch Worker's `dispatch()` call (the protocol host's `RunUser`): not gated, its
        caller holds the guest slot."""
        return await self._run_user(
            request, namespace, name, self.clock(), time.perf_counter(),
            limits_override=limits, outbound_values=outbound_values, gated=False, wall_cap_ms=wall_cap_ms,
        )

    async def _run_user(
        self,
        request: Request,
        ns: Namespace,
        name: str | None,
        timestamp: int,
        started: float,
        *,
        limits_override: Limits | None = None,
        outbound_values: Mapping[str, str] | None = None,
        script_name: str = "",
        path_info: str | None = None,
        gated: bool = True,
        wall_cap_ms: int | None = None,
    ) -> Response:
        """Run the user Worker `name` (either ABI) for `request`; its trace item is published.

        The namespace's platform Workers (its dispatch, Outbound and Tail Workers) are no user
        Workers: a request for one is answered as for a Worker that does not exist.
        """
        try:
            worker = self.config_cache.worker(ns.name, name) if name is not None else None
        except SecretsUnavailable as error:
            return self.recorder.finish(request, ns.name, None, name, "internalError", timestamp, started, 0,
                                        text_response(500, f"Internal error while running the Worker: {error}"),
                                        exceptions=[exception_entry("SecretsUnavailable", str(error), self.clock())])
        if worker is None or name is None:
            return self._not_found(request, ns, name, None, timestamp, started)
        role = self.config_cache.platform_role(ns, name)
        if role is not None:
            return self._not_found(request, ns, name, role, timestamp, started)
        limits = self.config_cache.limits(ns, worker).tightened(limits_override)
        if wall_cap_ms is not None:
            limits = limits.tightened(Limits(wall_ms=max(1, wall_cap_ms)), source="caller")
        if javascript.speaks_protocol(worker.abi):
            invocation = Invocation(ns, worker, "user", limits, request, dict(outbound_values or {}))
            return await self.protocol.run_fetch(invocation, timestamp, started, gated=gated)
        env = wcgi.environment(request, script_name=script_name, path_info=path_info, variables=worker.vars)
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
                gated=gated,
            )
        except Exception as error:
            outcome, response, exceptions = self.recorder.start_failure(error)
            return self.recorder.finish(request, ns.name, worker, worker.name, outcome, timestamp, started, 0, response, exceptions=exceptions)
        return self._complete(request, ns.name, worker, limits, run, timestamp, started)

    def _not_found(
        self, request: Request, ns: Namespace, name: str | None, role: str | None, timestamp: int, started: float
    ) -> Response:
        """404 `Worker not found`, outcome scriptNotFound. For a platform Worker (`role`) the caller
        learns nothing more; the operator's trace item says why."""
        body = (
            f"Worker not found: no worker named {name!r} in namespace {ns.name!r}\n"
            if name else "Worker not found: the request names no worker\n"
        )
        exceptions = None
        if role is not None:
            why = f"{name!r} is the namespace's {role}; platform Workers are never routed to as tenants"
            exceptions = [exception_entry("PlatformWorker", why, self.clock())]
        return self.recorder.finish(
            request, ns.name, None, name, "scriptNotFound", timestamp, started, 0,
            Response(404, [("Content-Type", "text/plain; charset=utf-8")], body.encode()), exceptions=exceptions,
        )

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
        cpu = round(run.duration_ms)
        exceptions: list[dict[str, Any]] = []
        stderr_text = run.stderr.decode("utf-8", "replace")

        def finish(outcome: str, response: Response) -> Response:
            return self.recorder.finish(
                request, namespace, worker, worker.name, outcome, timestamp, started, cpu, response,
                logs=logs, exceptions=exceptions, truncated=truncated,
            )

        def failed(name: str, message: str) -> None:
            if run.output_lost:
                # nothing was cut (`truncated` stays false): the fast path keeps no output of a
                # trapping guest, so whether it wrote anything is unknown; say so where the trap is
                message = f"{message}\n{FIRST_TRAP_NOTE}"
            exceptions.append(exception_entry(name, message, end))

        if run.outcome == "timeout":
            if limits.cpu_ms <= limits.wall_ms:
                message = f"Worker exceeded its CPU time limit of {limits.cpu_ms} ms (limit from {limits.sources['cpuMs']})"
                exceptions.append(exception_entry("ExceededCpu", message, end))
                return finish("exceededCpu", limit_response(503, "Worker exceeded its CPU time limit", "cpuMs", message, limits.cpu_ms))
            message = f"Worker exceeded its wall-time limit of {limits.wall_ms} ms (limit from {limits.sources['wallMs']})"
            exceptions.append(exception_entry("ExceededWallTime", message, end))
            return finish("exceededWallTime", limit_response(503, "Worker exceeded its wall-time limit", "wallMs", message, limits.wall_ms))
        if run.outcome in ("trap", "exited") and (run.outcome == "trap" or run.exit_code != 0):
            failure = run.error or f"the Worker exited with status {run.exit_code}"
            if looks_out_of_memory(stderr_text) or looks_out_of_memory(failure):
                message = f"Worker ran out of memory under its {limits.memory_mb} MiB limit (limit from {limits.sources['memoryMb']})"
                failed("ExceededMemory", f"{message}: {failure}")
                return finish("exceededMemory", limit_response(503, "Worker exceeded its memory limit", "memoryMb", message, limits.memory_mb))
            if run.outcome == "trap":
                trap = failure.removeprefix("command execution failed: ")
                failed("WasmTrap", trap)
                return finish("exception", text_response(500, f"Worker threw an exception: the guest trapped ({trap.splitlines()[0]})"))
            exceptions.append(exception_entry("ExitStatus", failure, end))
            return finish("exception", text_response(500, f"Worker threw an exception: {failure}"))
        if run.outcome == "failed":
            exceptions.append(exception_entry("InternalError", run.error or "the guest failed", end))
            return finish("internalError", text_response(500, f"Internal error while running the Worker: {run.error}"))
        if run.stdout_truncated:
            message = f"the Worker's response exceeds the {self.max_response_bytes // 2**20} MiB limit"
            exceptions.append(exception_entry("ResponseTooLarge", message, end))
            return finish("exception", text_response(502, f"Worker threw an exception: {message}"))
        try:
            parsed = wcgi.parse_response(run.stdout)
        except wcgi.InvalidResponse as error:
            exceptions.append(exception_entry("InvalidResponse", str(error), end))
            return finish("exception", text_response(502, f"Worker threw an exception: {error}"))
        return finish("ok", Response(parsed.status, parsed.headers, b"" if request.method == "HEAD" else parsed.body))

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
                live = await subscription.get(timeout=max(0.0, next_poll - time.monotonic()))
                if live is not None:
                    yield live
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

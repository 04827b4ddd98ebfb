"""Guest execution on wasmer-sdk: the only module that imports `wasmer_sdk`.

- One sandbox per worker (keyed by namespace and name), never shared, so a file one
  worker writes in its /tmp is invisible to every other. Network is always disabled and
  the host filesystem is never mounted.
- A new guest process per request.
- Modules run metered (see `metering`: without it, a guest spinning in a pure compute loop
  survives its timeout and burns a core), with their memory and tables capped at load. The
  metered module comes from `metered_source` (the engine keeps it in its database, so a
  restarted engine does not meter again); capping and metering run in a worker thread, never
  on the event loop.
- `check_module` compiles and instantiates a module at deploy, in a thread of its own, without
  running any of the guest's code (the metered entry answers a compile probe), so a module that
  cannot run is refused then, not on its first request.
- Compiled artifacts live in an on-disk cache (wasmer's `cache_root`), so a restarted
  engine does not compile again. Loaded packages and sandboxes are kept in bounded LRUs.
- A global bound on concurrent guest processes; beyond it callers wait in a bounded
  queue, and past that they are refused (`LoadShed`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from wasmer_sdk import ExitReason, Package, Wasmer, WasmerError

from . import file_quota
from .errors import InvalidModule
from .metering import SCHEME as METERING_SCHEME, meter
from .wasm_module import inspect_module, prepare_to_run

COMPILE_PROBE_ARGS = ["--wasmdeck-compile-probe"]  # two or more arguments: the metered entry returns at once


_T = TypeVar("_T")


class LoadShed(Exception):
    """Every guest slot is busy and the wait queue is full."""


class GuestStartFailed(Exception):
    """wasmer-sdk could not start the guest process."""


@dataclass
class GuestRun:
    """What one guest process did."""

    outcome: str  # "exited", "timeout", "trap", "failed"
    exit_code: int | None
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    duration_ms: float
    error: str | None = None
    output_lost: bool = False  # a trap on the fast path: what the guest wrote before it is gone


@dataclass
class _WorkerSandbox:
    sandbox: object
    package_key: tuple[str, int]
    package: object
    baseline_env: dict[str, str]
    in_flight: int = 0
    retired: bool = False
    writes_files: bool = False  # the module can create files (see file_quota): its /workspace is measured


class Runtime:
    def __init__(
        self,
        cache_dir: Path,
        *,
        max_concurrency: int,
        max_queue: int,
        max_output_bytes: int,
        max_stderr_bytes: int = 1024 * 1024,
        always_keep_logs: bool = False,
        package_cache_size: int = 128,
        sandbox_cache_size: int = 512,
        metered_source: Callable[[str, Callable[[], bytes]], bytes] | None = None,
        keep_prepared: frozenset[str] = frozenset(),
    ) -> None:
        self.cache_dir = cache_dir
        # (sha256, the module's bytes) -> the metered module; the default meters every time
        self.metered_source = metered_source or (lambda _sha256, original: meter(original()))
        # modules (the engine's own runtimes) whose prepared form is kept in the cache folder, so a
        # restarted engine neither meters nor rewrites them: it reads them and loads them
        self.keep_prepared = keep_prepared
        self._checker: _CompileChecker | None = None
        self._checker_lock = threading.Lock()
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.max_output_bytes = max_output_bytes
        self.max_stderr_bytes = max_stderr_bytes
        self.always_keep_logs = always_keep_logs
        self.package_cache_size = package_cache_size
        self.sandbox_cache_size = sandbox_cache_size
        self._wasmer: Wasmer | None = None
        self._packages: OrderedDict[tuple[str, int], Package] = OrderedDict()
        self._writes_files: dict[tuple[str, int], bool] = {}
        self.workspaces_replaced = 0
        self._sandboxes: OrderedDict[str, _WorkerSandbox] = OrderedDict()
        self._loading: dict[object, asyncio.Future[Any]] = {}
        self._slots: asyncio.Semaphore | None = None
        # modules that trapped once run with stderr on a pipe from then on, so the log lines
        # written before a trap are kept; everything else takes the cheaper single-call path
        self._trapped: set[str] = set()
        self.running = 0
        self.waiting = 0
        self.shed = 0
        self._closed = False

    def _client(self) -> Wasmer:
        if self._wasmer is None:
            self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # compiled tenant code: owner only
            self._wasmer = Wasmer(cache_root=self.cache_dir, output_bytes=self.max_output_bytes)
            self._slots = asyncio.Semaphore(self.max_concurrency)
        return self._wasmer

    async def _once(self, key: object, make: Callable[[], Awaitable[_T]]) -> _T:
        """Run `make` once for concurrent callers asking for the same key."""
        pending: asyncio.Future[_T] | None = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await make()
            future.set_result(value)
            return value
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # mark retrieved
            raise
        finally:
            del self._loading[key]

    async def _package(self, sha256: str, memory_pages: int, module: Callable[[], bytes]) -> Package:
        key = (sha256, memory_pages)
        cached = self._packages.get(key)
        if cached is not None:
            self._packages.move_to_end(key)
            return cached

        async def load() -> Package:
            # metering makes every loop and call path reach a WASI call now and then: the only
            # points where wasmer-sdk can stop a guest that is over its time limit
            preparing = asyncio.ensure_future(asyncio.to_thread(self._prepare, sha256, memory_pages, module))
            client = self._client()  # made (the first time) while the module is prepared
            prepared, writes_files = await preparing
            package = await client.packages.load(prepared)
            self._packages[key] = package
            self._writes_files[key] = writes_files
            while len(self._packages) > self.package_cache_size:
                evicted, _ = self._packages.popitem(last=False)
                self._writes_files.pop(evicted, None)
            return package

        return await self._once(("package", key), load)

    def _prepare(self, sha256: str, memory_pages: int, module: Callable[[], bytes]) -> tuple[bytes, bool]:
        """The metered module with its memory and tables capped (in a worker thread), and whether
        it can create files."""
        kept = self._prepared_file(sha256, memory_pages) if sha256 in self.keep_prepared else None
        if kept is not None:
            found = _read_prepared(kept)
            if found is not None:
                return found
        prepared = prepare_to_run(self.metered_source(sha256, module), memory_pages)
        imports = inspect_module(prepared).imports
        writes_files = any(i.name in file_quota.CREATES_FILES for i in imports)
        if kept is not None:
            _write_prepared(kept, prepared, writes_files)
        return prepared, writes_files

    async def preload(self, sha256: str, memory_pages: int, module: Callable[[], bytes]) -> None:
        """Load (and keep) a module now, so that the first guest to need it does not wait for it."""
        await self._package(sha256, memory_pages, module)

    def prepared_module(self, sha256: str, memory_pages: int, module: Callable[[], bytes]) -> tuple[bytes, bool]:
        """One of `keep_prepared`, prepared as it runs, and whether it was made just now (not found
        in the cache folder). Blocks: call it off the event loop."""
        kept = self._prepared_file(sha256, memory_pages)
        found = _read_prepared(kept) if sha256 in self.keep_prepared else None
        if found is not None:
            return found[0], False
        return self._prepare(sha256, memory_pages, module)[0], True

    def _prepared_file(self, sha256: str, memory_pages: int) -> Path:
        return self.cache_dir / "prepared" / f"{sha256}-{METERING_SCHEME}-{memory_pages}.wasm"

    def run_check(self, prepared: bytes, stdin: bytes, env: dict[str, str], timeout_s: float) -> "GuestRun":
        """Run ``prepared`` once to completion in the compile checker's thread (off any event loop):
        how a deploy asks an interpreter module to check a script. Blocks the calling thread."""
        with self._checker_lock:
            if self._checker is None:
                self._checker = _CompileChecker(self.cache_dir, self.max_output_bytes)
            checker = self._checker
        return checker.run(prepared, stdin, env, timeout_s)

    def check_module(self, prepared: bytes, timeout_s: float = 300.0) -> None:
        """Compile and instantiate ``prepared`` (a metered, capped module) without running any of
        its code; raise InvalidModule with one sentence when Wasmer cannot. Blocks the calling
        thread (call it off the event loop); safe from any thread."""
        with self._checker_lock:
            if self._checker is None:
                self._checker = _CompileChecker(self.cache_dir, self.max_output_bytes)
            checker = self._checker
        checker.check(prepared, timeout_s)

    async def _sandbox(
        self, worker_key: str, sha256: str, memory_pages: int, module: Callable[[], bytes], baseline_env: dict[str, str]
    ) -> _WorkerSandbox:
        entry = self._sandboxes.get(worker_key)
        if entry is not None and entry.package_key == (sha256, memory_pages):
            self._sandboxes.move_to_end(worker_key)
            return entry

        async def create() -> _WorkerSandbox:
            package = await self._package(sha256, memory_pages, module)
            sandbox = await self._client().sandboxes.create(packages=[package], env=baseline_env, network="disabled")
            old = self._sandboxes.pop(worker_key, None)
            if old is not None:
                await self._retire(old)
            fresh = _WorkerSandbox(
                sandbox=sandbox, package_key=(sha256, memory_pages), package=package, baseline_env=baseline_env,
                writes_files=self._writes_files.get((sha256, memory_pages), True),
            )
            self._sandboxes[worker_key] = fresh
            while len(self._sandboxes) > self.sandbox_cache_size:
                _, evicted = self._sandboxes.popitem(last=False)
                await self._retire(evicted)
            return fresh

        return await self._once(("sandbox", worker_key, sha256, memory_pages), create)

    async def _retire(self, entry: _WorkerSandbox) -> None:
        entry.retired = True
        if entry.in_flight == 0:
            await entry.sandbox.close()  # type: ignore[attr-defined]

    async def run(
        self,
        worker_key: str,
        sha256: str,
        module: Callable[[], bytes],
        *,
        memory_pages: int,
        env: dict[str, str],
        stdin: bytes,
        timeout_s: float,
        queue_timeout_s: float,
        stable_env_keys: frozenset[str] = frozenset(),
        gated: bool = True,
    ) -> GuestRun:
        """Run the worker's module once. Raises LoadShed, or InvalidModule if the memory cap cannot hold it.

        `stable_env_keys` name variables that every request sets (often to the same value). The
        sandbox is created with the first request's values for them, and later requests pass only
        the variables that differ: handing an environment to wasmer-sdk costs about 12 us a
        variable, more than everything else the engine does per request.
        """
        async with self._worker_sandbox(
            gated, queue_timeout_s, worker_key, sha256, memory_pages, module,
            {key: env[key] for key in stable_env_keys if key in env},
        ) as entry:
            command = self._command(entry, env)
            if self.always_keep_logs or sha256 in self._trapped:
                return await self._run_process(command, stdin, timeout_s)
            run = await self._run_fast(command, stdin, timeout_s)
            if run.outcome == "trap":
                self._trapped.add(sha256)
            return run

    @asynccontextmanager
    async def _worker_sandbox(
        self,
        gated: bool,
        queue_timeout_s: float,
        worker_key: str,
        sha256: str,
        memory_pages: int,
        module: Callable[[], bytes],
        baseline_env: dict[str, str],
    ) -> AsyncIterator[_WorkerSandbox]:
        """A guest slot (unless `gated` is False) and the worker's sandbox, held for one guest process."""
        if gated:
            await self._acquire_slot(queue_timeout_s)
        elif self._closed:
            raise RuntimeError("the runtime is closed")
        entry: _WorkerSandbox | None = None
        try:
            entry = await self._sandbox(worker_key, sha256, memory_pages, module, baseline_env)
            entry.in_flight += 1
            yield entry
        finally:
            if gated:
                self._release_slot()
            if entry is not None:
                await self._done_with(entry)

    async def _acquire_slot(self, queue_timeout_s: float) -> None:
        if self._closed:
            raise RuntimeError("the runtime is closed")
        self._client()
        assert self._slots is not None
        if self.running + self.waiting >= self.max_concurrency + self.max_queue:
            self.shed += 1
            raise LoadShed(f"all {self.max_concurrency} guest slots are busy and {self.max_queue} requests are waiting")
        self.waiting += 1
        try:
            if self._slots.locked():
                await asyncio.wait_for(self._slots.acquire(), queue_timeout_s)
            else:
                await self._slots.acquire()
        except asyncio.TimeoutError:
            self.shed += 1
            raise LoadShed(f"waited {queue_timeout_s:.1f} s for a free guest slot") from None
        finally:
            self.waiting -= 1
        self.running += 1

    def _release_slot(self) -> None:
        assert self._slots is not None
        self.running -= 1
        self._slots.release()

    async def _done_with(self, entry: _WorkerSandbox) -> None:
        if entry.writes_files and not entry.retired and await self._workspace_over_cap(entry):
            # its files outlive the guest process in host memory: past the cap, a fresh sandbox
            for key, cached in list(self._sandboxes.items()):
                if cached is entry:
                    del self._sandboxes[key]
            entry.retired = True
            self.workspaces_replaced += 1
        entry.in_flight -= 1
        if entry.retired and entry.in_flight == 0:
            await entry.sandbox.close()  # type: ignore[attr-defined]

    @staticmethod
    async def _workspace_over_cap(entry: _WorkerSandbox) -> bool:
        """Whether the sandbox's /workspace holds more than file_quota.WORKSPACE_BYTES (each file,
        directory and link counted as its size plus file_quota.ENTRY_BYTES)."""
        total, pending = 0, ["/workspace"]
        try:
            while pending:
                folder = pending.pop()
                for item in await entry.sandbox.fs.read_dir(folder):  # type: ignore[attr-defined]
                    total += item.size + file_quota.ENTRY_BYTES
                    if total > file_quota.WORKSPACE_BYTES:
                        return True
                    if item.kind == "directory":
                        pending.append(f"{folder}/{item.name}")
        except WasmerError:
            return False
        return False

    @staticmethod
    def _command(entry: _WorkerSandbox, env: dict[str, str]) -> object:
        baseline = entry.baseline_env
        changed = {key: value for key, value in env.items() if baseline.get(key) != value}
        for key in baseline.keys() - env.keys():
            changed[key] = ""  # never happens for truly stable keys; never leak another request's value
        return entry.sandbox.command(entry.package, env=changed)  # type: ignore[attr-defined]

    @asynccontextmanager
    async def session(
        self,
        worker_key: str,
        sha256: str,
        module: Callable[[], bytes],
        *,
        memory_pages: int,
        env: dict[str, str],
        timeout_s: float,
        queue_timeout_s: float,
        gated: bool = True,
    ) -> AsyncIterator["GuestSession"]:
        """A guest process with stdin, stdout and stderr on pipes, for a conversation (the Worker protocol).

        `gated=False` skips the concurrency gate: for invocations made on behalf of a running
        one (an Outbound Worker, a Worker a dispatch Worker calls), which would otherwise wait
        for slots their own callers hold.
        """
        # no baseline: a protocol Worker's env is its vars, and a var removed by a later version must
        # be absent, which a sandbox-wide value (sandboxes outlive versions) could not be
        async with self._worker_sandbox(gated, queue_timeout_s, worker_key, sha256, memory_pages, module, {}) as entry:
            command = self._command(entry, env)
            try:
                process = await command.spawn(  # type: ignore[attr-defined]
                    timeout=timeout_s, output_bytes=self.max_output_bytes, stdin="pipe", stdout="pipe", stderr="pipe"
                )
            except WasmerError as error:
                raise GuestStartFailed(str(error)) from error
            guest = GuestSession(process, self.max_stderr_bytes)
            try:
                yield guest
            finally:
                await guest.close()

    async def _run_fast(self, command: object, stdin: bytes, timeout_s: float) -> GuestRun:
        """One `run()` call: the cheapest path, but a trap loses the output written before it."""
        started = time.perf_counter()
        try:
            output = await command.run(  # type: ignore[attr-defined]
                stdin=stdin, timeout=timeout_s, output_bytes=self.max_output_bytes, check=False
            )
        except WasmerError as error:
            duration = (time.perf_counter() - started) * 1000
            outcome = "trap" if error.code == "EXECUTION_ERROR" else "failed"
            return GuestRun(outcome, None, b"", b"", False, False, duration, error=str(error), output_lost=outcome == "trap")
        duration = (time.perf_counter() - started) * 1000
        stderr = output.stderr.bytes
        return _guest_run(output, stderr[: self.max_stderr_bytes], len(stderr) > self.max_stderr_bytes or output.stderr.truncated, duration)

    async def _run_process(self, command: object, stdin: bytes, timeout_s: float) -> GuestRun:
        """Spawn the guest with stderr on a pipe, so log lines written before a trap are kept."""
        started = time.perf_counter()
        try:
            process = await command.spawn(  # type: ignore[attr-defined]
                timeout=timeout_s,
                output_bytes=self.max_output_bytes,
                stdin="pipe" if stdin else "closed",
                stdout="capture",
                stderr="pipe",
            )
        except WasmerError as error:
            return GuestRun("failed", None, b"", b"", False, False, 0.0, error=str(error))
        feeder = asyncio.ensure_future(_feed(process, stdin)) if stdin else None
        stderr = bytearray()
        truncated = [False]

        async def read_stderr() -> None:
            assert process.stderr is not None
            async for chunk in process.stderr:
                room = self.max_stderr_bytes - len(stderr)
                if len(chunk) > room:
                    truncated[0] = True
                stderr.extend(chunk[: max(0, room)])

        reader = asyncio.ensure_future(read_stderr())
        try:
            output = await process.wait()
        except WasmerError as error:
            duration = (time.perf_counter() - started) * 1000
            await _settle(reader, feeder)
            outcome = "trap" if error.code == "EXECUTION_ERROR" else "failed"
            return GuestRun(outcome, None, b"", bytes(stderr), False, truncated[0], duration, error=str(error))
        duration = (time.perf_counter() - started) * 1000
        # a killed guest's stderr pipe may never report EOF: take what has arrived and move on
        await _settle(reader, feeder, timeout=1.0 if output.reason is ExitReason.EXITED else 0.02)
        return _guest_run(output, bytes(stderr), truncated[0], duration)

    def forget_worker(self, worker_key: str) -> None:
        """Drop a deleted worker's sandbox (closed once its in-flight runs end)."""
        entry = self._sandboxes.pop(worker_key, None)
        if entry is not None:
            entry.retired = True
            if entry.in_flight == 0:
                asyncio.ensure_future(entry.sandbox.close())  # type: ignore[attr-defined]

    @property
    def sandbox_count(self) -> int:
        return len(self._sandboxes)

    async def close(self) -> None:
        self._closed = True
        with self._checker_lock:
            checker, self._checker = self._checker, None
        if checker is not None:
            await asyncio.to_thread(checker.close)
        entries = list(self._sandboxes.values())
        self._sandboxes.clear()
        self._packages.clear()
        for entry in entries:
            try:
                await entry.sandbox.close()  # type: ignore[attr-defined]
            except WasmerError:
                pass
        if self._wasmer is not None:
            await self._wasmer.close()
            self._wasmer = None

    async def take_guest_slot(self, gated: bool, queue_timeout_s: float) -> None:
        """`guest_slot` without a context: give it back with `give_guest_slot(gated)`, whatever happens."""
        if not gated:
            if self._closed:
                raise RuntimeError("the runtime is closed")
            return
        await self._acquire_slot(queue_timeout_s)

    def give_guest_slot(self, gated: bool) -> None:
        if gated:
            self._release_slot()

    @asynccontextmanager
    async def guest_slot(self, gated: bool, queue_timeout_s: float) -> AsyncIterator[None]:
        """One of the guest slots, for work that runs on a guest already started (an invocation on a
        warm instance); `gated=False` (an invocation made on behalf of a running one) takes none."""
        if not gated:
            if self._closed:
                raise RuntimeError("the runtime is closed")
            yield
            return
        await self._acquire_slot(queue_timeout_s)
        try:
            yield
        finally:
            self._release_slot()

    async def start_instance(
        self,
        worker_key: str,
        sha256: str,
        module: Callable[[], bytes],
        *,
        memory_pages: int,
        env: dict[str, str],
        on_stdout: Callable[[bytes | None], None],
        on_stderr: Callable[[bytes], None],
        on_exit: Callable[["GuestExit"], None],
    ) -> "InstanceProcess":
        """Start a long-lived guest process (a warm instance) with stdin, stdout and stderr on pipes.

        It runs until it exits or `InstanceProcess.close()` kills it, with no timeout of its own;
        it holds the worker's sandbox (never closed under it) until closed. Its stdout chunks go to
        `on_stdout` (None once stdout ends), its stderr chunks to `on_stderr`, and how it ended to
        `on_exit`. Raises GuestStartFailed, or InvalidModule if the memory cap cannot hold it.
        """
        holder = AsyncExitStack()
        entry = await holder.enter_async_context(
            self._worker_sandbox(False, 0.0, worker_key, sha256, memory_pages, module, dict(env))
        )
        try:
            command = self._command(entry, env)
            process = await command.spawn(  # type: ignore[attr-defined]
                output_bytes=self.max_output_bytes, stdin="pipe", stdout="pipe", stderr="pipe"
            )
        except WasmerError as error:
            await holder.aclose()
            raise GuestStartFailed(str(error)) from error
        except BaseException:
            await holder.aclose()
            raise
        return InstanceProcess(process, holder.aclose, on_stdout, on_stderr, on_exit)


class _CompileChecker:
    """A thread with its own event loop and Wasmer client, where modules are compiled at deploy.

    The probe runs the metered entry with COMPILE_PROBE_ARGS: it returns before any of the
    guest's code runs, so compiling, linking and instantiating are all that happen. The
    compiled artifact lands in the shared on-disk cache, so the first request does not compile.
    """

    RECYCLE_AFTER = 256  # checks per Wasmer client: compiled modules it keeps are let go with it

    def __init__(self, cache_dir: Path, output_bytes: int) -> None:
        self.cache_dir = cache_dir
        self.output_bytes = output_bytes
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="wasmdeck-compile-check", daemon=True)
        self._thread.start()
        self._wasmer: Wasmer | None = None
        self._checks = 0
        self._kept: dict[int, Package] = {}
        self._kept_bytes: bytes | None = None
        self._kept_client: Wasmer | None = None

    def check(self, prepared: bytes, timeout_s: float) -> None:
        future = asyncio.run_coroutine_threadsafe(self._check(prepared), self._loop)
        try:
            future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise InvalidModule(f"the module could not be compiled within {timeout_s:.0f} s, so it cannot run") from None

    def run(self, prepared: bytes, stdin: bytes, env: dict[str, str], timeout_s: float) -> "GuestRun":
        future = asyncio.run_coroutine_threadsafe(self._run(prepared, stdin, env, timeout_s), self._loop)
        return future.result(timeout_s + 300)  # the first run may compile the module

    async def _run(self, prepared: bytes, stdin: bytes, env: dict[str, str], timeout_s: float) -> "GuestRun":
        wasmer = await self._client()
        package = self._kept.get(id(prepared)) if self._kept_client is wasmer else None
        if package is None:
            try:
                package = await wasmer.packages.load(prepared)
            except WasmerError as error:
                raise InvalidModule(f"Wasmer cannot load the module: {_first_line(error)}") from None
            # the interpreter a deploy checks scripts with is loaded once (per client), not per deploy
            self._kept = {id(prepared): package}
            self._kept_bytes = prepared  # held, so its id is not reused by other bytes
            self._kept_client = wasmer
        sandbox = await wasmer.sandboxes.create(packages=[package], env=env, network="disabled")
        started = time.perf_counter()
        try:
            output = await sandbox.command(package).run(stdin=stdin, timeout=timeout_s, output_bytes=self.output_bytes, check=False)
        except WasmerError as error:
            return GuestRun("trap", None, b"", b"", False, False, (time.perf_counter() - started) * 1000, _first_line(error))
        finally:
            await sandbox.close()
        return _guest_run(output, output.stderr.bytes, output.stderr.truncated, (time.perf_counter() - started) * 1000)

    async def _client(self) -> Wasmer:
        if self._wasmer is None or self._checks >= self.RECYCLE_AFTER:
            if self._wasmer is not None:
                await self._wasmer.close()
            self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # compiled tenant code: owner only
            self._wasmer = Wasmer(cache_root=self.cache_dir, output_bytes=self.output_bytes)
            self._checks = 0
        self._checks += 1
        return self._wasmer

    async def _check(self, prepared: bytes) -> None:
        wasmer = await self._client()
        try:
            package = await wasmer.packages.load(prepared)
            sandbox = await wasmer.sandboxes.create(packages=[package], network="disabled")
        except WasmerError as error:
            raise InvalidModule(f"Wasmer cannot load the module: {_first_line(error)}") from None
        # The probe needs a page of memory at start to answer; a module without one runs its own
        # code instead, briefly: then only a failure to compile, link or instantiate counts.
        probed = any(m.initial_pages > 0 for m in inspect_module(prepared).memories)
        try:
            output = await sandbox.command(package, COMPILE_PROBE_ARGS).run(
                timeout=30 if probed else 0.5, output_bytes=4096, check=False
            )
        except WasmerError as error:
            reason = _first_line(error)
            if probed or any(marker in reason for marker in _LOAD_FAILURES):
                raise InvalidModule(f"the module cannot run under Wasmer: {reason}") from None
            return
        finally:
            await sandbox.close()
        if probed and (output.reason is not ExitReason.EXITED or output.exit_code != 0):
            raise InvalidModule(
                "the module cannot run under Wasmer: its compile probe did not finish cleanly "
                f"({output.reason.value}, exit status {output.exit_code})"
            )

    def close(self) -> None:
        async def shutdown() -> None:
            if self._wasmer is not None:
                await self._wasmer.close()
                self._wasmer = None

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop.close()


def _read_prepared(path: Path) -> tuple[bytes, bool] | None:
    """A prepared module kept by `_write_prepared`, if it is there and whole (its digest matches)."""
    try:
        data = path.read_bytes()
        digest, writes_files = path.with_suffix(".meta").read_text().split()
    except (OSError, ValueError):
        return None
    if hashlib.sha256(data).hexdigest() != digest:
        return None
    return data, writes_files == "files"


def _write_prepared(path: Path, prepared: bytes, writes_files: bool) -> None:
    """Keep a prepared module (owner only; written beside, then renamed into place: never half a file)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        for target, data in ((path, prepared),
                             (path.with_suffix(".meta"), f"{hashlib.sha256(prepared).hexdigest()} {'files' if writes_files else 'none'}\n".encode())):
            partial = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}")
            with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
                out.write(data)
            os.replace(partial, target)
    except OSError:
        pass  # a cache: without it the next engine prepares the module again


# Wasmer's words for a module that never got to run (as opposed to a guest that trapped)
_LOAD_FAILURES = ("compile", "Validate", "instantiat", "Instantiat", "import", "export", "link")


def _first_line(error: Exception) -> str:
    """Wasmer's message without its prefix, on one line."""
    text = str(error).removeprefix("command execution failed: ").strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line if len(line) <= 300 else line[:297] + "..."


@dataclass
class GuestExit:
    outcome: str  # "exited", "timeout", "trap", "failed", "killed"
    exit_code: int | None
    error: str | None = None


class GuestSession:
    """One running guest: write its stdin, read its stdout chunk by chunk, collect its stderr."""

    def __init__(self, process: object, max_stderr_bytes: int) -> None:
        self._process = process
        self._stdout: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.stderr = bytearray()
        self.stderr_truncated = False
        self._max_stderr = max_stderr_bytes
        self._killed = False
        self._exit: GuestExit | None = None
        self._waiter = asyncio.ensure_future(self._wait())
        self._readers = [asyncio.ensure_future(self._pump_stdout()), asyncio.ensure_future(self._pump_stderr())]

    async def _pump_stdout(self) -> None:
        try:
            async for chunk in self._process.stdout:  # type: ignore[attr-defined]
                self._stdout.put_nowait(chunk)
        except WasmerError:
            pass
        finally:
            self._stdout.put_nowait(None)

    async def _pump_stderr(self) -> None:
        try:
            async for chunk in self._process.stderr:  # type: ignore[attr-defined]
                room = self._max_stderr - len(self.stderr)
                if len(chunk) > room:
                    self.stderr_truncated = True
                self.stderr.extend(chunk[: max(0, room)])
        except WasmerError:
            pass

    async def _wait(self) -> GuestExit:
        try:
            output = await self._process.wait()  # type: ignore[attr-defined]
        except WasmerError as error:
            if self._killed:
                return GuestExit("killed", None)
            return GuestExit("trap" if error.code == "EXECUTION_ERROR" else "failed", None, str(error))
        if self._killed:
            return GuestExit("killed", output.exit_code)
        reason = output.reason
        if reason is ExitReason.TIMEOUT:
            return GuestExit("timeout", output.exit_code)
        if reason is ExitReason.EXITED:
            return GuestExit("exited", output.exit_code)
        return GuestExit("failed", output.exit_code, f"the guest process ended abnormally ({reason.value})")

    async def write(self, data: bytes) -> bool:
        """False when the guest no longer reads its stdin."""
        try:
            await self._process.stdin.write(data)  # type: ignore[attr-defined]
            return True
        except WasmerError:
            return False

    async def close_stdin(self) -> None:
        try:
            await self._process.stdin.close()  # type: ignore[attr-defined]
        except WasmerError:
            pass

    async def read(self) -> bytes | None:
        """The next stdout chunk; None once stdout is closed."""
        return await self._stdout.get()

    async def exit(self, timeout: float | None = None) -> GuestExit | None:
        """How the process ended, waiting up to `timeout` seconds (None if it is still running)."""
        done, _ = await asyncio.wait([self._waiter], timeout=timeout)
        return self._waiter.result() if done else None

    async def kill(self) -> None:
        if self._waiter.done():
            return
        self._killed = True
        try:
            await self._process.kill()  # type: ignore[attr-defined]
        except WasmerError:
            pass

    async def close(self) -> None:
        if not self._waiter.done():
            await self.kill()
            await asyncio.wait([self._waiter], timeout=2.0)
        await _settle(*self._readers, timeout=0.05)
        if not self._waiter.done():
            self._waiter.cancel()
        else:
            self._waiter.exception()


class InstanceProcess(GuestSession):
    """A warm instance's process: like a GuestSession, but its output goes to callbacks as it
    arrives (the instance decides which invocation it belongs to), and closing it also lets go
    of the sandbox it held."""

    def __init__(
        self,
        process: object,
        release: Callable[[], Awaitable[None]],
        on_stdout: Callable[[bytes | None], None],
        on_stderr: Callable[[bytes], None],
        on_exit: Callable[[GuestExit], None],
    ) -> None:
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr
        self._release = release
        super().__init__(process, 0)
        self._waiter.add_done_callback(lambda done: None if done.cancelled() else on_exit(done.result()))

    async def _pump_stdout(self) -> None:
        try:
            async for chunk in self._process.stdout:  # type: ignore[attr-defined]
                self._on_stdout(chunk)
        except WasmerError:
            pass
        finally:
            self._on_stdout(None)

    async def _pump_stderr(self) -> None:
        try:
            async for chunk in self._process.stderr:  # type: ignore[attr-defined]
                self._on_stderr(chunk)
        except WasmerError:
            pass

    @property
    def ended(self) -> bool:
        return self._waiter.done()

    async def drain_output(self, timeout: float) -> None:
        """Wait (at most `timeout` seconds) for stdout and stderr to end, so that what a guest
        that has ended wrote before it ended is in."""
        await asyncio.wait(self._readers, timeout=timeout)

    async def close(self) -> None:
        """Kill the process if it still runs, wait for it, and release its sandbox."""
        try:
            await super().close()
        finally:
            release, self._release = self._release, _nothing
            await release()


async def _nothing() -> None:
    return None


def _guest_run(output: object, stderr: bytes, stderr_truncated: bool, duration: float) -> GuestRun:
    reason = output.reason  # type: ignore[attr-defined]
    if reason is ExitReason.TIMEOUT:
        outcome = "timeout"
    elif reason is ExitReason.EXITED:
        outcome = "exited"
    else:
        outcome = "failed"
    return GuestRun(
        outcome,
        output.exit_code,  # type: ignore[attr-defined]
        output.stdout.bytes,  # type: ignore[attr-defined]
        stderr,
        output.stdout.truncated,  # type: ignore[attr-defined]
        stderr_truncated,
        duration,
        error=None if outcome != "failed" else f"the guest process ended abnormally ({reason.value})",
    )


async def _settle(*tasks: "asyncio.Future[None] | None", timeout: float = 1.0) -> None:
    """Let the stdio tasks finish once the process is gone; never wait on them for long."""
    pending = [task for task in tasks if task is not None]
    if not pending:
        return
    done, stuck = await asyncio.wait(pending, timeout=timeout)
    for task in stuck:
        task.cancel()
    for task in done:
        task.exception()


async def _feed(process: object, body: bytes) -> None:
    """Write the request body to the guest's stdin; a guest that never reads it is fine."""
    try:
        await process.stdin.write(body)  # type: ignore[attr-defined]
        await process.stdin.close()  # type: ignore[attr-defined]
    except WasmerError:
        pass


__all__ = ["GuestExit", "GuestRun", "GuestSession", "GuestStartFailed", "InstanceProcess", "InvalidModule", "LoadShed", "Runtime"]

"""Warm instances: Worker-protocol version 2 guests (docs/worker-protocol.md, section 9), each
one process serving invocation after invocation, as a Cloudflare isolate does.

- A pool per worker version (namespace, worker, version, module, memory cap): an instance is
  never shared between workers, versions or namespaces. Instances start on demand and run one
  invocation at a time; at most `max_per_worker` per pool and `max_instances` in all, and the
  memory caps of the live instances add up to at most `memory_budget_mb` (an instance keeps its
  linear memory between invocations). A request that finds its pool full waits for an instance
  (never longer than its own wall time); one that finds the engine full stops the idle instance
  used longest ago, of any worker.
- An instance is retired (stopped, never reused) after `max_invocations`, after
  `idle_timeout_s` without work, when its version stops being current (`config_changed`),
  after any failure of section 9.5, and when the engine closes. Why is counted per worker
  (`stats`), and a failure noticed while no invocation is in flight is published as an
  instance trace item.
- Until one instance of a version has become ready, its instances start one at a time; after a
  start that ran out of time (`InstanceSpec.init_timeout_s`: a JavaScript Worker's top-level code
  gets the deploy check's 2 s), the version's next start waits `START_BACKOFF_S` and the requests
  waiting meanwhile fail at once, saying why. A script that loops only outside the deploy check so
  costs one start's time, not one per request.
- Each idle instance holds one of wasmer-sdk's guest threads (it is blocked in a stdin read):
  with wasmer-sdk 0.5.0, 200 guests blocked that way leave no thread for any other guest, so the
  default bound on instances stays well under that (see InstanceSettings).

`instance_session.converse_on_instance` runs one invocation on an instance;
`instance_session.run_on_instance` leases an instance (`InstanceManager.acquire`), runs the
invocation, and gives the instance back (`release`) or retires it (`retire`).
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import protocol
from .errors import InvalidInput
from .protocol import Frame, FrameDecoder, ProtocolViolation
from .protocol_session import CallHandler, SessionResult, _record_log
from .runtime import GuestExit, GuestStartFailed, InstanceProcess, LoadShed, Runtime
from .wasm_module import inspect_module

# The engine's defaults (measured on a 2-core machine, wasmer-sdk 0.5.0): 200 guests blocked
# reading stdin leave no thread for any other guest, so at most 128 live instances leave room for
# the engine's concurrent per-request guests (max(16, 4 x cores)) and the hops they make.
DEFAULT_MAX_INSTANCES = 128
DEFAULT_MAX_PER_WORKER = 16
DEFAULT_IDLE_TIMEOUT_S = 60.0
DEFAULT_MAX_INVOCATIONS = 10_000
DEFAULT_START_TIMEOUT_S = 10.0
DEFAULT_MEMORY_BUDGET_MB = 4096
STOP_GRACE_S = 1.0  # an idle instance whose stdin is closed gets this long to exit before it is killed
# After a start that ran out of time (a script's top-level code that never ends), the version's next
# start waits this long, and its starts go one at a time until one succeeds: otherwise every request
# (16 at once) would start a process that computes for the whole start time.
START_BACKOFF_S = 2.0
MAX_INVOCATION_STDERR = 1024 * 1024

# Why an instance stopped serving. The first group are failures of section 9.5.
FAILURE_REASONS = (
    "trap", "exited", "exceededCpu", "exceededMemory", "exceededWallTime", "protocolError",
    "outputBetweenInvocations", "startFailed",
)
RETIRE_REASONS = FAILURE_REASONS + ("retired", "maxInvocations", "idle", "outdated", "evicted", "canceled", "closed")

_WHY = {
    "trap": "it trapped",
    "exited": "it exited without saying it would (\"retire\": true)",
    "exceededCpu": "its invocation exceeded the CPU time limit",
    "exceededMemory": "it ran out of memory under its cap (an instance keeps its memory between invocations)",
    "exceededWallTime": "its invocation exceeded the wall-time limit",
    "protocolError": "it broke the Worker protocol",
    "outputBetweenInvocations": "it wrote output while no invocation was in flight",
    "startFailed": "it did not answer init with ready",
    "retired": "it asked to retire (\"retire\": true)",
    "maxInvocations": "it reached the limit of invocations per instance",
    "idle": "it was idle too long",
    "outdated": "its worker version is no longer current",
    "evicted": "the engine needed room for another instance",
    "canceled": "its invocation was canceled before it ended",
    "closed": "the engine closed",
}


def retirement_sentence(instance_id: str, invocations: int, reason: str, detail: str = "") -> str:
    """One sentence saying why an instance stopped serving."""
    served = f"{invocations} invocation{'' if invocations == 1 else 's'}"
    sentence = f"instance {instance_id} was retired after {served}: {_WHY.get(reason, reason)}"
    return f"{sentence} ({detail})" if detail else sentence


@dataclass(frozen=True)
class InstanceSettings:
    max_instances: int = DEFAULT_MAX_INSTANCES
    max_per_worker: int = DEFAULT_MAX_PER_WORKER
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    max_invocations: int = DEFAULT_MAX_INVOCATIONS
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    memory_budget_mb: int = DEFAULT_MEMORY_BUDGET_MB

    def __post_init__(self) -> None:
        for name in ("max_instances", "max_per_worker", "max_invocations", "memory_budget_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"{name} must be a whole number of at least 1, not {value!r}")
        for name in ("idle_timeout_s", "start_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise InvalidInput(f"{name} must be a positive number of seconds, not {value!r}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "maxInstances": self.max_instances,
            "maxPerWorker": self.max_per_worker,
            "idleTimeoutS": self.idle_timeout_s,
            "maxInvocations": self.max_invocations,
            "startTimeoutS": self.start_timeout_s,
            "memoryBudgetMb": self.memory_budget_mb,
        }


@dataclass(frozen=True)
class InstanceSpec:
    """What an instance runs: one version of one worker. `key` is what pools are kept by."""

    namespace: str
    worker: str
    version: int
    sha256: str  # the module the process runs
    memory_pages: int
    env: Mapping[str, str] = field(default_factory=dict)  # the worker's vars: the process environment
    tags: tuple[str, ...] = ()
    # the init frame: extra meta fields and body (an interpreted language's source, section 9.2)
    init_meta: Mapping[str, Any] = field(default_factory=dict)
    init_body: bytes = b""
    # the body read when an instance starts, instead of `init_body` (a script kept in the database)
    load_init_body: Callable[[], bytes] | None = field(default=None, compare=False, repr=False)
    # the memory cap the module is loaded with, when not `memory_pages`: a runtime that caps its own
    # memory at `memory_pages` (from init's memoryMb) is compiled once for every cap
    module_pages: int | None = None
    # the guest is one of the engine's own runtimes: its `waiting` frames stop the CPU clock
    announces_waiting: bool = False
    # what else makes instances of one version differ (a JavaScript dispatch Worker's binding name)
    variant: str = ""
    # how long the guest may take to answer init once it has the frame (a script's top-level code),
    # when that must be less than the engine's start_timeout_s
    init_timeout_s: float | None = None

    @property
    def key(self) -> tuple[str, str, int, str, int, str]:
        return (self.namespace, self.worker, self.version, self.sha256, self.memory_pages, self.variant)

    @property
    def load_pages(self) -> int:
        return self.module_pages if self.module_pages is not None else self.memory_pages

    @property
    def memory_mb(self) -> int:
        return max(1, -(-self.memory_pages // 16))


@dataclass(frozen=True)
class InstanceUse:
    """Which instance an invocation ran on, for its trace item."""

    instance_id: str
    new: bool
    invocation: int
    retired: str | None = None  # the sentence saying why this invocation ended its instance

    def trace_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "newInstance": self.new, "instanceId": self.instance_id, "instanceInvocation": self.invocation,
        }
        if self.retired:
            fields["instanceRetired"] = self.retired
        return fields


def single_use() -> InstanceUse:
    """A version 1 guest: a new process for the invocation, which is its first and only one."""
    return InstanceUse(secrets.token_hex(4), True, 1)


class InstancesBusy(LoadShed):
    """Every instance the request may use is busy, and none became free in time."""


class InstanceStartFailed(Exception):
    """A new instance did not become ready; the invocation waiting for it fails so."""

    def __init__(self, outcome: str, name: str, message: str, *, instance_id: str, retired: str | None = None,
                 logs: list[dict[str, Any]] | None = None, stderr: bytes = b"") -> None:
        super().__init__(message)
        self.outcome = outcome
        self.name = name
        self.message = message
        self.instance_id = instance_id
        self.retired = retired  # the sentence saying why the instance was retired, when it was
        self.logs = logs or []
        self.stderr = stderr


# ("frame", Frame) | ("violation", str) | ("eof", bytes pending) | ("exit", GuestExit) | ("retired", reason),
# and from an invocation's own tasks: ("answered", written) | ("crash", sentence) | ("unwritten", None)
Item = tuple[str, Any]


class Receiver:
    """Where an instance's output goes while an invocation (or its start) is in flight."""

    def __init__(self, max_stderr: int = MAX_INVOCATION_STDERR) -> None:
        self.items: deque[Item] = deque()
        # takes a frame as it arrives (True) instead of queueing it for the waiting task
        self.on_frame: Callable[[Frame], bool] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.stderr = bytearray()
        self.stderr_truncated = False
        self._max_stderr = max_stderr
        self._stderr_waiter: asyncio.Future[None] | None = None

    def put(self, item: Item) -> None:
        if self.on_frame is not None and item[0] == "frame" and self.on_frame(item[1]):
            return
        self.items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def add_stderr(self, chunk: bytes) -> None:
        room = self._max_stderr - len(self.stderr)
        if len(chunk) > room:
            self.stderr_truncated = True
        self.stderr.extend(chunk[: max(0, room)])
        waiter = self._stderr_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def stderr_within(self, timeout: float) -> None:
        """Return when stderr output arrives, or after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        waiter = self._stderr_waiter = loop.create_future()
        def give_up() -> None:
            if not waiter.done():
                waiter.set_result(None)

        timer = loop.call_later(timeout, give_up)
        try:
            await waiter
        finally:
            timer.cancel()
            self._stderr_waiter = None

    async def get(self, timeout: float) -> Item | None:
        """The next item, or None after `timeout` seconds without one."""
        if not self.items:
            if timeout <= 0:
                return None
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            # a bare timer, not asyncio.wait_for: this wait is on every frame's path
            timer = loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
            if not self.items:
                return None
        return self.items.popleft()


def _expire(waiter: "asyncio.Future[None]") -> None:
    if not waiter.done():
        waiter.set_result(None)


class Instance:
    """One running guest process of a pool, and where its output goes."""

    def __init__(self, pool: "Pool", manager: "InstanceManager") -> None:
        self.id = secrets.token_hex(4)
        self.pool = pool
        self._manager = manager
        self.process: InstanceProcess | None = None
        self.state = "starting"  # starting, idle, busy, retired
        self.invocations = 0
        self.idle_since = time.monotonic()
        self.receiver: Receiver | None = None
        self.retire_requested = False
        self.init_logs: list[dict[str, Any]] = []  # log frames written before ready: the first invocation's
        self._decoder = FrameDecoder(allowed=protocol.GUEST_TYPES_2)
        self._broken = False  # its stdout stopped making sense: nothing more is read from it
        self.ended: GuestExit | None = None
        self.wrote_stderr = False  # ever: then a final frame waits a moment for stderr on its way
        self._writes: set[asyncio.Task[None]] = set()
        self.frames_written = 0  # every frame written to it, init included (a `waiting` frame says how many it read)
        # it has said it waits for the engine (a `waiting` frame counting every frame written so far)
        self.quiet = False
        self.announces_idle = False  # it says so between invocations too (seen right after its ready)

    # -- output, as it arrives ---------------------------------------------------------

    def on_stdout(self, chunk: bytes | None) -> None:
        if chunk is None:
            self._deliver(("eof", self._decoder.pending))
            return
        if self._broken:
            return
        try:
            frames = self._decoder.feed(chunk)
        except ProtocolViolation as violation:
            self._broken = True
            self._deliver(("violation", str(violation)))
            return
        for frame in frames:
            if frame.type == "waiting" and frame.meta.get("frames") == self.frames_written:
                self.quiet = True
            self._deliver(("frame", frame))

    def on_stderr(self, chunk: bytes) -> None:
        self.wrote_stderr = True
        if self.receiver is not None:
            self.receiver.add_stderr(chunk)
        # stderr written while no invocation is in flight belongs to none: dropped (section 9.4)

    def on_exit(self, ended: GuestExit) -> None:
        self.ended = ended
        self._deliver(("exit", ended))

    def _deliver(self, item: Item) -> None:
        if self.receiver is not None:
            self.receiver.put(item)
        elif self.state != "retired":  # idle, or between its start and its first invocation
            self._manager.idle_output(self, item)

    async def write(self, data: bytes) -> bool:
        """Write one frame (counted before the write starts: the guest cannot have read it earlier)."""
        assert self.process is not None
        self.frames_written += 1
        self.quiet = False
        return await self.process.write(data)

    def write_soon(self, data: bytes, receiver: Receiver) -> None:
        """Write `data` from a task of its own; ("unwritten", None) reaches `receiver` if it fails."""

        async def write() -> None:
            if not await self.write(data):
                receiver.put(("unwritten", None))

        task = asyncio.ensure_future(write())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def stop(self, graceful: bool) -> None:
        """End the process: an idle one by closing its stdin (it exits on its own), else killed."""
        process = self.process
        if process is None:
            return
        if graceful and not process.ended:
            await process.close_stdin()
            if await process.exit(timeout=STOP_GRACE_S) is None:
                await process.kill()
        await process.close()


@dataclass
class WorkerInstanceStats:
    """Counters for one worker (all its versions) since the engine started."""

    started: int = 0
    invocations: int = 0
    reused_invocations: int = 0
    retired: dict[str, int] = field(default_factory=dict)

    def as_dict(self, busy: int, idle: int, starting: int) -> dict[str, Any]:
        return {
            "busy": busy,
            "idle": idle,
            "starting": starting,
            "started": self.started,
            "invocations": self.invocations,
            "reusedInvocations": self.reused_invocations,
            "retired": dict(sorted(self.retired.items())),
        }


class Pool:
    """The instances of one worker version."""

    def __init__(self, spec: InstanceSpec, generation: int) -> None:
        self.spec = spec
        self.idle: list[Instance] = []  # most recently used last
        self.members: set[Instance] = set()
        self.reserved = 0  # room taken for instances about to start
        self.waiting = 0
        self.stale = False
        self.checked_generation = generation
        # an instance of it has become ready: until then its instances start one at a time, so a version
        # whose start never ends costs one start's time, not one per waiting request
        self.proven = False


_START = object()  # a waiter's answer: "you may start a new instance"


@dataclass
class StartTrouble:
    """A version whose last start ran out of time."""

    sentence: str
    until: float  # time.monotonic() before which no instance of it starts
    starting: bool = False  # one is starting now (the only one)


class InstanceManager:
    """All warm instances of an engine. See the module docstring."""

    def __init__(
        self,
        runtime: Runtime,
        module_bytes: Callable[[str], bytes],
        *,
        settings: InstanceSettings | None = None,
        is_current: Callable[[InstanceSpec], bool] = lambda spec: True,
        publish_retirement: Callable[[InstanceSpec, str, int, str, str], None] | None = None,
        refresh_config: Callable[[], None] | None = None,
    ) -> None:
        """`is_current(spec)`: is this still the version requests get (checked after each
        configuration change); `publish_retirement(spec, instance_id, invocations, reason, sentence)`
        publishes an instance trace item for a failure noticed between invocations;
        `refresh_config()` lets the manager notice changes other processes made while no request
        comes in."""
        self.runtime = runtime
        self.module_bytes = module_bytes
        self.settings = settings or InstanceSettings()
        self.is_current = is_current
        self.publish_retirement = publish_retirement
        self.refresh_config = refresh_config
        self._pools: dict[tuple[str, str, int, str, int, str], Pool] = {}
        self._all: set[Instance] = set()
        self._idle_lru: OrderedDict[Instance, None] = OrderedDict()
        self._waiters: deque[tuple[Pool, asyncio.Future[Any]]] = deque()
        self._stats: dict[tuple[str, str], WorkerInstanceStats] = {}
        self._versions: dict[str, int] = {}  # module sha256 -> protocol version it speaks
        self._stopping: set[asyncio.Task[None]] = set()
        self._troubled: dict[tuple[str, str, int, str, int, str], StartTrouble] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._generation = 0
        self._check_scheduled = False
        self._pumping = False
        self._pump_again = False
        self.live = 0
        self.memory_mb = 0
        self.closed = False

    # -- which guests run here ---------------------------------------------------------

    def protocol_version(self, sha256: str) -> int:
        """2 for a module exporting `wasmdeck_worker_protocol_2`, else 1 (read once per module)."""
        found = self._versions.get(sha256)
        if found is None:
            try:
                info = inspect_module(self.module_bytes(sha256))
                found = protocol.VERSION_2 if info.exports_function(protocol.MARKER_EXPORT_2) else protocol.VERSION
            except Exception:  # the runtime will say what is wrong with it
                found = protocol.VERSION
            self._versions[sha256] = found
        return found

    # -- leasing ------------------------------------------------------------------------

    def _stats_for(self, spec: InstanceSpec) -> WorkerInstanceStats:
        key = (spec.namespace, spec.worker)
        found = self._stats.get(key)
        if found is None:
            found = self._stats[key] = WorkerInstanceStats()
        return found

    def _pool(self, spec: InstanceSpec) -> Pool:
        pool = self._pools.get(spec.key)
        if pool is None:
            pool = self._pools[spec.key] = Pool(spec, self._generation)
        return pool

    def _take_idle(self, pool: Pool) -> Instance | None:
        while pool.idle:
            instance = pool.idle.pop()
            self._idle_lru.pop(instance, None)
            if instance.process is not None and instance.process.ended:  # gone while idle, not noticed yet
                if instance.retire_requested:
                    self.retire(instance, "retired")
                else:
                    self.retire(instance, "exited", publish=True)
                continue
            instance.state = "busy"
            return instance
        return None

    def _reserve(self, pool: Pool) -> bool:
        """Room for one more instance in `pool`, stopping idle ones of other pools if need be."""
        if self.closed or len(pool.members) + pool.reserved >= self.settings.max_per_worker:
            return False
        if not pool.proven and (pool.reserved or any(member.state == "starting" for member in pool.members)):
            return False
        wanted = pool.spec.memory_mb
        while self.live >= self.settings.max_instances or (
            self.memory_mb > 0 and self.memory_mb + wanted > self.settings.memory_budget_mb
        ):
            victim = next(iter(self._idle_lru), None)
            if victim is None:
                return False
            self.retire(victim, "evicted")
        self.live += 1
        self.memory_mb += wanted
        pool.reserved += 1
        return True

    def _unreserve(self, pool: Pool, *, started: bool) -> None:
        """Give back the room of an instance that ended (`started`) or of a reservation never used."""
        self.live -= 1
        self.memory_mb -= pool.spec.memory_mb
        if not started:
            pool.reserved -= 1

    async def acquire(self, spec: InstanceSpec, timeout_s: float) -> tuple[Instance, bool]:
        """An instance of `spec` for one invocation, and whether it was started for it. Waits at
        most `timeout_s` (InstancesBusy), or fails as its start failed (InstanceStartFailed)."""
        if self.closed:
            raise RuntimeError("the engine is closed")
        deadline = time.perf_counter() + timeout_s
        pool = self._pool(spec)
        if not pool.waiting:
            instance = self._take_idle(pool)
            if instance is not None:
                return instance, False
            if self._reserve(pool):
                return await self._start(pool, deadline), True
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        entry = (pool, future)
        self._waiters.append(entry)
        pool.waiting += 1
        try:
            done, _ = await asyncio.wait({future}, timeout=max(0.0, deadline - time.perf_counter()))
        except asyncio.CancelledError:
            self._give_back(pool, future)
            raise
        finally:
            pool.waiting -= 1
            try:
                self._waiters.remove(entry)
            except ValueError:
                pass
        if not done:
            future.cancel()
            raise InstancesBusy(
                f"all {len(pool.members)} instances of worker {spec.worker!r} were busy for {timeout_s:.1f} s"
                if len(pool.members) >= self.settings.max_per_worker
                else f"all {self.live} instances of the engine were busy for {timeout_s:.1f} s"
            )
        got = future.result()
        if got is _START:
            return await self._start(pool, deadline), True
        return got, False

    def _give_back(self, pool: Pool, future: asyncio.Future[Any]) -> None:
        """A waiter was canceled: return what it was given, if anything."""
        if not future.done():
            future.cancel()
            return
        if future.cancelled() or future.exception() is not None:
            return
        got = future.result()
        if got is _START:
            self._unreserve(pool, started=False)
            self._pump_waiters()
        else:
            self._park(got)

    def _pump_waiters(self) -> None:
        """Serve waiters in arrival order: an idle instance of their pool, or room to start one.
        (Making room retires instances, which pumps again: that pass is run by the outer one.)"""
        if self._pumping:
            self._pump_again = True
            return
        self._pumping = True
        try:
            self._pump_again = True
            while self._pump_again:
                self._pump_again = False
                for entry in list(self._waiters):
                    pool, future = entry
                    if future.done():
                        continue
                    instance = self._take_idle(pool)
                    if instance is not None:
                        future.set_result(instance)
                    elif self._reserve(pool):
                        future.set_result(_START)
                    else:
                        continue
                    try:
                        self._waiters.remove(entry)
                    except ValueError:
                        pass
        finally:
            self._pumping = False

    async def _start(self, pool: Pool, deadline: float) -> Instance:
        """Start an instance (room already reserved) and wait for its ready, at most until
        `deadline`; the start goes on without the caller if the caller stops waiting."""
        trouble = self._troubled.get(pool.spec.key)
        if trouble is not None:
            if trouble.starting or time.monotonic() < trouble.until:
                self._unreserve(pool, started=False)
                self._pump_waiters()
                raise InstanceStartFailed(
                    "exception", "InstanceStartFailed",
                    f"{trouble.sentence}; after such a start, a new instance of this version starts {START_BACKOFF_S:g} s "
                    "later at the earliest, one at a time until one is ready", instance_id="",
                )
            trouble.starting = True
        instance = Instance(pool, self)
        pool.reserved -= 1
        pool.members.add(instance)
        self._all.add(instance)
        self._stats_for(pool.spec).started += 1
        boot = asyncio.ensure_future(self._boot(instance))
        if trouble is not None:
            boot.add_done_callback(lambda _: setattr(trouble, "starting", False))
        self._ensure_reaper()
        try:
            done, _ = await asyncio.wait({boot}, timeout=max(0.0, deadline - time.perf_counter()))
        except asyncio.CancelledError:
            boot.add_done_callback(lambda task: self._after_boot(instance, task))
            raise
        if not done:
            boot.add_done_callback(lambda task: self._after_boot(instance, task))
            raise InstanceStartFailed(
                "exceededWallTime", "ExceededWallTime",
                f"Worker exceeded its wall-time limit waiting for a new instance to start (instance {instance.id})",
                instance_id=instance.id,
            )
        boot.result()  # raises InstanceStartFailed
        instance.state = "busy"
        return instance

    def _after_boot(self, instance: Instance, task: asyncio.Task[None]) -> None:
        """A start its caller stopped waiting for: a ready instance joins the pool."""
        if task.cancelled() or task.exception() is not None:
            return  # _boot retired it
        self._park(instance)

    async def _boot(self, instance: Instance) -> None:
        """Spawn, send init, wait for ready. Retires the instance and raises InstanceStartFailed
        when it does not become ready."""
        spec = instance.pool.spec
        receiver = Receiver()
        instance.receiver = receiver
        started = time.perf_counter()
        deadline = started + self.settings.start_timeout_s

        held = SessionResult(logs=instance.init_logs)

        def fail(outcome: str, name: str, message: str) -> InstanceStartFailed:
            sentence = self.retire(instance, "startFailed")
            return InstanceStartFailed(outcome, name, message, instance_id=instance.id, retired=sentence,
                                       logs=instance.init_logs, stderr=bytes(receiver.stderr))

        try:
            body = spec.init_body
            if spec.load_init_body is not None:
                # read while the module loads and the process starts
                loading = asyncio.ensure_future(asyncio.to_thread(spec.load_init_body))
            instance.process = await self.runtime.start_instance(
                f"{spec.namespace}/{spec.worker}", spec.sha256, lambda: self.module_bytes(spec.sha256),
                memory_pages=spec.load_pages, env=dict(spec.env),
                on_stdout=instance.on_stdout, on_stderr=instance.on_stderr, on_exit=instance.on_exit,
            )
            if spec.load_init_body is not None:
                body = await loading
        except GuestStartFailed as error:
            raise fail("internalError", "InternalError", f"the instance could not start: {error}") from None
        except BaseException:
            self.retire(instance, "startFailed")
            raise
        init = protocol.encode(
            {**spec.init_meta, "type": "init", "protocol": protocol.VERSION_2, "worker": spec.worker,
             "namespace": spec.namespace, "version": spec.version,
             **({} if "language" in spec.init_meta else {"language": "wasm"})},
            body,
        )
        try:
            if not await instance.write(init):
                raise fail("exception", "InstanceStartFailed", "the instance stopped reading before its init frame")
            limit_s = self.settings.start_timeout_s
            if spec.init_timeout_s is not None and time.perf_counter() + spec.init_timeout_s < deadline:
                limit_s = spec.init_timeout_s
                deadline = time.perf_counter() + limit_s
            exited_at: float | None = None
            while True:
                wait = deadline - time.perf_counter()
                if exited_at is not None:
                    wait = min(wait, exited_at + STOP_GRACE_S - time.perf_counter())
                item = await receiver.get(wait)
                if item is None and exited_at is not None:
                    item = ("eof", 0)  # stdout never said it ended: take the exit as the end
                if item is None:
                    sentence = f"the instance did not answer init with ready within {limit_s:g} s"
                    self._troubled[spec.key] = StartTrouble(sentence, time.monotonic() + START_BACKOFF_S)
                    raise fail("exception", "InstanceStartFailed", sentence)
                kind, value = item
                if kind == "frame":
                    frame: Frame = value
                    if frame.type == "ready":
                        break
                    if frame.type == "log":
                        _record_log(held, frame, int(time.time() * 1000), 1000)
                        continue
                    if frame.type == "waiting":  # no event yet: nothing to stop
                        continue
                    if frame.type == "exception":
                        name = str(frame.meta.get("name") or "Error")[:200]
                        message = str(frame.meta.get("message") or "")
                        raise fail("exception", name, message)
                    raise fail(
                        "exception", "ProtocolError",
                        f"the instance sent a {frame.type!r} frame before ready; before ready only log frames may come",
                    )
                if kind == "violation":
                    raise fail("exception", "ProtocolError", str(value))
                if kind == "retired":
                    raise fail("canceled", "Canceled", f"the instance was stopped while it started ({value})")
                if kind == "exit" and exited_at is None:
                    exited_at = time.perf_counter()  # stdout may still hold what it wrote last
                    continue
                if kind in ("eof", "exit"):
                    ended = await instance.process.exit(timeout=STOP_GRACE_S)
                    await instance.process.drain_output(0.2)
                    if ended is not None and ended.outcome == "trap":
                        raise fail("exception", "WasmTrap", (ended.error or "the guest trapped").removeprefix("command execution failed: "))
                    status = f" with status {ended.exit_code}" if ended is not None and ended.exit_code is not None else ""
                    raise fail("exception", "InstanceStartFailed", f"the instance exited{status} before answering init with ready")
        except InstanceStartFailed:
            raise
        except BaseException:
            self.retire(instance, "canceled")
            raise
        finally:
            instance.receiver = None
        # a runtime that announces every wait, between invocations too, says so with ready (the two
        # frames leave in one write): its idle instances can then be told from busy ones
        instance.announces_idle = spec.announces_waiting and instance.quiet
        instance.idle_since = time.monotonic()
        self._troubled.pop(spec.key, None)
        if not instance.pool.proven:
            instance.pool.proven = True
            self._pump_waiters()  # the requests waiting for this first start may start theirs now

    # -- returning ----------------------------------------------------------------------

    def release(self, instance: Instance) -> str | None:
        """An invocation ended well: the instance serves again, unless it should retire now (then
        the sentence saying why)."""
        if instance.state == "retired":
            return None
        pool = instance.pool
        if self.closed:
            return self.retire(instance, "closed")
        if self._outdated(pool):
            return self.retire(instance, "outdated")
        if instance.invocations >= self.settings.max_invocations:
            return self.retire(instance, "maxInvocations")
        self._park(instance)
        return None

    def _outdated(self, pool: Pool) -> bool:
        if not pool.stale and pool.checked_generation != self._generation:
            try:
                current = self.is_current(pool.spec)
            except Exception:  # the configuration cannot be read now (a locked database): ask again later
                return False
            pool.checked_generation = self._generation
            if not current:
                self._mark_stale(pool)
        return pool.stale

    def _park(self, instance: Instance) -> None:
        """Hand the instance to the first waiter of its pool, or keep it idle."""
        if instance.state == "retired":
            return
        pool = instance.pool
        if self.closed:
            self.retire(instance, "closed")
            return
        instance.state = "idle"
        instance.idle_since = time.monotonic()
        if instance.ended is None:
            for entry in list(self._waiters):  # a waiter of a stale pool asked before the change: it may have it
                waiting_pool, future = entry
                if waiting_pool is pool and not future.done():
                    instance.state = "busy"
                    future.set_result(instance)
                    self._waiters.remove(entry)
                    return
        if pool.stale:
            self.retire(instance, "outdated")
            return
        pool.idle.append(instance)
        self._idle_lru[instance] = None
        if instance.ended is not None:  # it ended while it was busy and nobody noticed
            self.retire(instance, "exited", publish=True)

    def retire(self, instance: Instance, reason: str, *, publish: bool = False, detail: str = "") -> str:
        """Stop the instance for good (in the background) and count why; returns the sentence."""
        sentence = retirement_sentence(instance.id, instance.invocations, reason, detail)
        if instance.state == "retired":
            return sentence
        graceful = instance.state == "idle" and reason in ("idle", "outdated", "evicted", "closed", "maxInvocations")
        instance.state = "retired"
        if instance.receiver is not None:  # an invocation (or start) is in flight on it: tell it
            instance.receiver.put(("retired", reason))
        pool = instance.pool
        if instance in pool.idle:
            pool.idle.remove(instance)
        self._idle_lru.pop(instance, None)
        pool.members.discard(instance)
        self._all.discard(instance)
        self._unreserve(pool, started=True)
        counts = self._stats_for(pool.spec).retired
        counts[reason] = counts.get(reason, 0) + 1
        if not pool.members and not pool.reserved and not pool.waiting and self._pools.get(pool.spec.key) is pool:
            del self._pools[pool.spec.key]
        if publish and self.publish_retirement is not None:
            self.publish_retirement(pool.spec, instance.id, instance.invocations, reason, sentence)
        task = asyncio.ensure_future(instance.stop(graceful))
        self._stopping.add(task)
        task.add_done_callback(self._stopped)
        self._pump_waiters()
        return sentence

    def _stopped(self, task: asyncio.Task[None]) -> None:
        self._stopping.discard(task)
        if not task.cancelled():
            task.exception()  # a failure to stop is the runtime's to report; never unhandled

    def expect_quiet(self, instance: Instance, within_s: float) -> None:
        """An instance that announces its waits between invocations (`announces_idle`) was given
        back before it announced one: unless it does within `within_s` (what is left of its
        invocation's CPU time), it is still computing for nobody (a microtask loop after its
        response) and is retired."""
        invocations = instance.invocations

        def check() -> None:
            if instance.state == "idle" and not instance.quiet and instance.invocations == invocations:
                self.retire(instance, "exceededCpu", publish=True,
                            detail="it went on computing after its invocation ended, without waiting for an event")

        asyncio.get_running_loop().call_later(within_s, check)

    def idle_output(self, instance: Instance, item: Item) -> None:
        """Output from an idle instance: a failure unless it is the end the guest announced."""
        kind, value = item
        if kind in ("eof", "exit"):
            if instance.retire_requested:
                self.retire(instance, "retired")
                return
            ended = value if kind == "exit" else instance.ended
            if ended is not None and ended.outcome == "trap":
                self.retire(instance, "trap", publish=True, detail=(ended.error or "")[:300])
                return
            self.retire(instance, "exited", publish=True)
            return
        if kind == "frame":
            if value.type == "waiting":  # a runtime announcing that it waits: harmless here
                return
            detail = f"a {value.type!r} frame after its final frame"
        else:
            detail = str(value)
        self.retire(instance, "outputBetweenInvocations", publish=True, detail=detail)

    # -- configuration changes, idle instances -------------------------------------------

    def config_changed(self) -> None:
        """The configuration changed (this process or another): retire instances of versions that
        are no longer current, soon (never inside the caller)."""
        self._generation += 1
        if self._check_scheduled or not self._pools:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: the next release or reaper pass checks
        self._check_scheduled = True
        loop.call_soon(self._check_outdated)

    def _check_outdated(self) -> None:
        self._check_scheduled = False
        for pool in list(self._pools.values()):
            self._outdated(pool)

    def _mark_stale(self, pool: Pool) -> None:
        pool.stale = True
        self._troubled.pop(pool.spec.key, None)
        if self._pools.get(pool.spec.key) is pool:
            del self._pools[pool.spec.key]
        for instance in list(pool.idle):
            self.retire(instance, "outdated")

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.ensure_future(self._reap())

    async def _reap(self) -> None:
        """Stop instances idle too long; notice configuration changes made by other processes."""
        interval = min(1.0, self.settings.idle_timeout_s / 4)
        while not self.closed and self._all:
            await asyncio.sleep(interval)
            if self.refresh_config is not None:
                try:
                    self.refresh_config()
                except Exception:  # a locked or closed database: try again on the next pass
                    pass
            self._check_outdated()
            oldest = time.monotonic() - self.settings.idle_timeout_s
            for instance in list(self._idle_lru):
                if instance.idle_since <= oldest:
                    self.retire(instance, "idle")

    # -- statistics, shutdown ---------------------------------------------------------

    def stats(self, namespace: str | None = None) -> dict[str, dict[str, Any]]:
        """Per worker of `namespace` (all namespaces, keyed `namespace/worker`, when None)."""
        now: dict[tuple[str, str], list[int]] = {}
        for instance in self._all:
            spec = instance.pool.spec
            counts = now.setdefault((spec.namespace, spec.worker), [0, 0, 0])
            counts[("busy", "idle", "starting").index(instance.state)] += 1
        result: dict[str, dict[str, Any]] = {}
        for (ns, worker), stats in sorted(self._stats.items()):
            if namespace is not None and ns != namespace:
                continue
            busy, idle, starting = now.get((ns, worker), [0, 0, 0])
            result[worker if namespace is not None else f"{ns}/{worker}"] = stats.as_dict(busy, idle, starting)
        return result

    def totals(self) -> dict[str, Any]:
        states = [instance.state for instance in self._all]
        retired: dict[str, int] = {}
        for stats in self._stats.values():
            for reason, count in stats.retired.items():
                retired[reason] = retired.get(reason, 0) + count
        return {
            "busy": states.count("busy"),
            "idle": states.count("idle"),
            "starting": states.count("starting"),
            "memoryMb": self.memory_mb,
            "started": sum(s.started for s in self._stats.values()),
            "invocations": sum(s.invocations for s in self._stats.values()),
            "reusedInvocations": sum(s.reused_invocations for s in self._stats.values()),
            "retired": dict(sorted(retired.items())),
            **self.settings.as_dict(),
        }

    def count_invocation(self, instance: Instance) -> None:
        stats = self._stats_for(instance.pool.spec)
        stats.invocations += 1
        if instance.invocations > 1:
            stats.reused_invocations += 1

    async def close(self, grace_s: float = 2.0) -> None:
        """Let busy instances finish their invocation (at most `grace_s`), then stop every instance."""
        if self.closed:
            return
        deadline = time.monotonic() + grace_s
        while any(instance.state in ("busy", "starting") for instance in self._all) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self.closed = True
        for _, future in list(self._waiters):
            if not future.done():
                future.set_exception(InstancesBusy("the engine is closing"))
        self._waiters.clear()
        for instance in list(self._all):
            self.retire(instance, "closed")
        reaper, self._reaper = self._reaper, None
        loop = asyncio.get_running_loop()
        if reaper is not None and reaper.get_loop() is loop:
            reaper.cancel()
            await asyncio.gather(reaper, return_exceptions=True)
        elif reaper is not None and not reaper.get_loop().is_closed():  # an engine closed from another loop
            reaper.get_loop().call_soon_threadsafe(reaper.cancel)
        # tasks of another event loop (an engine whose guests ran in a loop that has ended since,
        # then closed from a new one) cannot be awaited here; a closed loop runs them no more
        while stopping := [task for task in self._stopping if task.get_loop() is loop and not task.done()]:
            await asyncio.gather(*stopping, return_exceptions=True)


__all__ = [
    "CallHandler", "Instance", "InstanceManager", "InstanceSettings", "InstanceSpec", "InstanceStartFailed",
    "InstanceUse", "InstancesBusy", "RETIRE_REASONS", "Receiver", "retirement_sentence", "single_use",
]

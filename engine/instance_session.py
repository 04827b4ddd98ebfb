"""One invocation on a warm instance (docs/worker-protocol.md, section 9): send the event, serve
the guest's calls (up to 64 in flight, answered in any order, `sleep` among them), collect its
final frame, and enforce cpuMs and wallMs (everything).

cpuMs counts the guest's running time as the engine can see it (`CpuClock`). For a guest the
engine ships itself (the JavaScript runtime, `InstanceSpec.announces_waiting`) that is everything
except the time between a `waiting` frame and the next frame the engine writes to it: the runtime
writes `waiting` (with the number of frames it has read) right before it blocks reading stdin,
and no JavaScript can write one. For any other guest it is the time with no call in flight (its
word that it waits cannot be trusted; a call in flight is the closest sign).

A `response` frame with `"waitUntil": true` answers a fetch event without ending it: the caller
gets the response at once (`InvocationEnd.rest` is the rest of the invocation, running on), and the
invocation ends with `done`.

It never raises for anything the guest does: the result says how the invocation ended and, when
the instance must not serve again, why (`InvocationEnd.retire`, a reason of
`instances.RETIRE_REASONS`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import protocol
from .instances import Instance, InstanceManager, InstanceSpec, InstanceUse, Receiver
from .javascript import runtime_out_of_memory
from .limits import looks_out_of_memory
from .protocol import Frame, ProtocolViolation
from .protocol_session import EXIT_GRACE_S, CallHandler, SessionResult, _ended_early, _record_log, final_type_event

ERROR_TYPES = {"fetch": "fetch_error", "dispatch": "dispatch_error", "sleep": "sleep_error"}
# A sleep is not running time (cpuMs), but serving one costs the engine a frame exchange: a guest
# sleeping 0 ms in a loop would keep the engine busy for its whole wallMs. This bounds it.
MAX_SLEEPS = 10_000


@dataclass
class InvocationEnd:
    result: SessionResult
    stderr: bytes
    stderr_truncated: bool
    invocation: int  # the instance's invocation number (1 for its first)
    retire: str | None = None  # why the instance must not serve again
    detail: str = ""  # what happened, for the retirement sentence
    replay: bool = False  # the instance had ended before it read the event: run it on a fresh one
    # the guest answered early (`response` with "waitUntil": true, in `result.response`) and goes on:
    # this task runs the rest of the invocation and gives its end (with `rest` None)
    rest: "asyncio.Task[InvocationEnd] | None" = None
    cpu_left_s: float = 0.0  # what was left of its CPU time at its final frame





class CpuClock:
    """The guest's running time in one invocation, as far as the engine can tell: it runs from the
    event on, stops while the guest waits for the host (`stop`), runs again from the engine's next
    frame (`start`)."""

    __slots__ = ("budget", "used", "since", "stopped")

    def __init__(self, budget_s: float, now: float) -> None:
        self.budget = budget_s
        self.used = 0.0
        self.since = now
        self.stopped = False

    def stop(self, now: float) -> None:
        if not self.stopped:
            self.used += now - self.since
            self.stopped = True

    def start(self, now: float) -> None:
        if self.stopped:
            self.since = now
            self.stopped = False

    def left(self, now: float) -> float:
        return math.inf if self.stopped else self.budget - self.used - (now - self.since)

    def total(self, now: float) -> float:
        return self.used if self.stopped else self.used + now - self.since


def event_frame(meta: Mapping[str, Any], body: bytes, invocation: int, env: Mapping[str, str]) -> bytes:
    """The event frame of section 9.2: the version 1 event plus `invocation` and `env`.
    Raises ValueError when it is over the frame limits."""
    return protocol.encode({**meta, "protocol": protocol.VERSION_2, "invocation": invocation, "env": dict(env)}, body)


async def converse_on_instance(
    instance: Instance,
    event: bytes,
    *,
    final_type: str,
    cpu_ms: int,
    wall_ms: int,
    clock: Callable[[], int],
    on_call: CallHandler,
    max_log_entries: int = 1000,
    announces_waiting: bool = False,
    answer_early: bool = False,
) -> InvocationEnd:
    """Run one invocation (`event` from `event_frame`) on a leased instance.

    `announces_waiting`: the guest is one of the engine's own runtimes, whose `waiting` frames
    stop the CPU clock (see the module docstring). `answer_early`: a `response` frame with
    `"waitUntil": true` returns at once, with the rest of the invocation in `InvocationEnd.rest`
    (without it, such a frame is kept and the invocation runs on to `done` before returning)."""
    started = time.perf_counter()
    wall_deadline = started + wall_ms / 1000
    cpu = CpuClock(cpu_ms / 1000, started)
    receiver = Receiver()
    instance.receiver = receiver
    instance.invocations += 1
    number = instance.invocations
    result = SessionResult(logs=list(instance.init_logs) if number == 1 else [])
    instance.init_logs = []
    end = InvocationEnd(result, b"", False, number)
    calls: dict[int, asyncio.Task[None]] = {}
    heard_from = False  # any output of this invocation yet
    exit_grace: float | None = None  # the process ended: stdout gets this long to deliver what it holds
    expected_final = final_type  # "done" once a response with "waitUntil": true is in
    process = instance.process
    assert process is not None

    def fail(outcome: str, message: str, name: str, retire: str) -> InvocationEnd:
        result.failure, result.message, result.exception_name = outcome, message, name
        end.retire = retire
        return end

    async def violation(message: str) -> InvocationEnd:
        await process.kill()
        return fail("exception", message, "ProtocolError", "protocolError")

    async def ended_early() -> InvocationEnd:
        await _ended_early(process, result, wall_deadline)
        await process.drain_output(0.2)
        gone = instance.ended
        if result.exception_name == "WasmTrap":
            end.retire = "trap"
        else:
            end.retire = "exited"
            # a clean exit with not a word for this event: it ended after its previous invocation
            end.replay = (number > 1 and not heard_from and not receiver.stderr and gone is not None
                          and gone.outcome == "exited" and gone.exit_code in (0, None))
        return end

    writing = asyncio.Lock()  # one frame at a time on stdin: answers are written by their calls' tasks

    async def write(data: bytes) -> bool:
        """A frame to the guest: it may run from here on (a waiting guest wakes up)."""
        async with writing:
            if announces_waiting:
                cpu.start(time.perf_counter())
            return await instance.write(data)

    sleeps = 0

    def answer_later(frame: Frame, call_id: int) -> None:
        nonlocal sleeps
        if frame.type == "sleep":
            sleeps += 1

        async def serve(sleep_number: int = sleeps) -> None:
            try:
                if frame.type == "sleep":
                    answer = await _sleep(frame, call_id, wall_deadline, sleep_number)
                else:
                    answer = await on_call(frame, wall_deadline - time.perf_counter())
            except ProtocolViolation as broken:
                receiver.put(("violation", str(broken)))
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the host failed serving the call: the invocation cannot go on
                receiver.put(("crash", f"the engine failed serving a {frame.type} call: {error}"))
                return
            # written here, not by the loop below: the guest waits for it, so no extra hop
            calls.pop(call_id, None)
            if not calls and not announces_waiting:
                cpu.start(time.perf_counter())
            written = await write(answer)
            receiver.put(("answered", written))  # the loop below recomputes its CPU deadline

        calls[call_id] = asyncio.ensure_future(serve())

    def waiting(frame: Frame) -> None:
        """The runtime is about to block reading stdin: its CPU stops until the engine writes,
        unless a frame it has not read yet is already on its way (it would not block at all)."""
        if announces_waiting and frame.meta.get("frames") == instance.frames_written:
            cpu.stop(time.perf_counter())

    def call_starts() -> None:
        if not calls and not announces_waiting:
            cpu.stop(time.perf_counter())

    def take_at_once(frame: Frame) -> bool:
        """Log frames, `waiting` and well-formed calls are handled as they arrive, without waking the
        loop below (a hop less for every call); anything else, and everything after it, goes there."""
        nonlocal heard_from
        if receiver.items:  # keep the order: something is already waiting for the loop
            return False
        ftype = frame.type
        if ftype == "waiting":
            waiting(frame)
            return True
        if ftype == "log":
            heard_from = True
            _record_log(result, frame, clock(), max_log_entries)
            return True
        if ftype not in protocol.GUEST_CALLS_2:
            receiver.on_frame = None
            return False
        call_id = frame.meta.get("id")
        if isinstance(call_id, bool) or not isinstance(call_id, int) or call_id in calls or len(calls) >= protocol.MAX_CALLS_IN_FLIGHT:
            return False
        heard_from = True
        call_starts()
        answer_later(frame, call_id)
        return True

    async def drive() -> bool:
        """Run the invocation until its final frame (True) or an early response (False); a failure
        returns True with `result.failure` set."""
        nonlocal exit_grace, heard_from, expected_final
        while True:
            now = time.perf_counter()
            wall_left = wall_deadline - now
            cpu_left = cpu.left(now)
            grace_left = math.inf if exit_grace is None else exit_grace - now
            item = await receiver.get(min(cpu_left, wall_left, grace_left))
            if item is None and exit_grace is not None and time.perf_counter() >= exit_grace:
                await ended_early()
                return True
            if item is None:
                now = time.perf_counter()
                wall_left = wall_deadline - now
                cpu_left = cpu.left(now)
                if wall_left > 0 and cpu_left > 0:
                    continue  # a call started or ended meanwhile: the deadline moved
                result.cpu_ms = cpu.total(now) * 1000
                await process.kill()
                if cpu_left <= wall_left:
                    message = f"Worker exceeded its CPU time limit of {cpu_ms} ms"
                    outcome, name = "exceededCpu", "ExceededCpu"
                else:
                    message = f"Worker exceeded its wall-time limit of {wall_ms} ms"
                    outcome, name = "exceededWallTime", "ExceededWallTime"
                if number > 1 and not heard_from:
                    message += f" (instance {instance.id} wrote nothing after this event, its invocation {number}: it may never have read it)"
                fail(outcome, message, name, outcome)
                return True
            kind, value = item
            if kind == "answered":
                if not value:
                    await ended_early()
                    return True
                continue
            if kind == "unwritten":  # the event did not reach the guest
                await ended_early()
                return True
            if kind == "violation":
                await violation(value)
                return True
            if kind == "crash":
                await process.kill()
                fail("internalError", value, "InternalError", "canceled")
                return True
            if kind == "retired":  # the engine is closing under it
                await process.kill()
                fail("canceled", f"the invocation was stopped: the instance was retired ({value})", "Canceled", value)
                return True
            if kind == "exit":
                # the exit can be reported before stdout has delivered the last frames the guest wrote
                exit_grace = time.perf_counter() + EXIT_GRACE_S
                continue
            if kind == "eof":
                if value:
                    await violation("the Worker closed stdout in the middle of a frame")
                else:
                    await ended_early()
                return True
            frame: Frame = value
            ftype = frame.type
            if ftype == "waiting":
                waiting(frame)
                continue
            heard_from = True
            if ftype == "log":
                _record_log(result, frame, clock(), max_log_entries)
            elif ftype in protocol.GUEST_CALLS_2:
                call_id = frame.meta.get("id")
                if isinstance(call_id, bool) or not isinstance(call_id, int):
                    await violation(f"the Worker's {ftype} call has id {call_id!r}; a call's id is an integer")
                    return True
                if call_id in calls:
                    await violation(f"the Worker made a {ftype} call with id {call_id} while a call with that id was in flight")
                    return True
                if len(calls) >= protocol.MAX_CALLS_IN_FLIGHT:
                    refusal = protocol.encode({
                        "type": ERROR_TYPES[ftype], "id": call_id, "name": "TooManyCalls",
                        "message": f"at most {protocol.MAX_CALLS_IN_FLIGHT} calls may be in flight at once",
                    })
                    if not await write(refusal):
                        await ended_early()
                        return True
                    continue
                call_starts()
                answer_later(frame, call_id)
            elif ftype == "ready":
                await violation("the Worker sent 'ready' during an invocation; ready answers init only")
                return True
            elif ftype == "response" and expected_final == "response" and frame.meta.get("waitUntil") is True:
                # the answer, ahead of the end: the invocation goes on until `done`
                result.response = frame
                expected_final = "done"
                if answer_early:
                    return False
            elif ftype == "exception" or ftype == expected_final:
                now = time.perf_counter()
                result.cpu_ms = cpu.total(now) * 1000
                end.cpu_left_s = max(0.0, cpu.left(now))
                result.final = frame
                instance.retire_requested = frame.meta.get("retire") is True
                return True
            else:
                event_kind = final_type_event(final_type)
                if expected_final == "done" and final_type == "response":
                    await violation(f"the Worker sent a {ftype!r} frame after its response; it ends with 'done'")
                else:
                    await violation(f"the Worker answered a {event_kind} event with a {ftype!r} frame")
                return True

    async def conclude() -> InvocationEnd:
        """The final frame is in (or the invocation failed): calls still in flight are canceled
        (section 9.3), and anything the guest wrote after it that has already arrived is a
        violation of this invocation."""
        try:
            if result.final is None:
                return end
            receiver.on_frame = None
            await _cancel(calls)
            # a stderr line written just before the final frame may still be on its way (stdout and
            # stderr are separate pipes, read by separate wasmer-sdk calls): a guest that writes to
            # stderr gets a moment for this invocation's line when none has come yet, then a loop
            # turn more while chunks keep arriving
            if instance.wrote_stderr:
                if not receiver.stderr:
                    await receiver.stderr_within(STDERR_GRACE_S)
                for _ in range(4):
                    seen = len(receiver.stderr)
                    await asyncio.sleep(0)
                    if len(receiver.stderr) == seen:
                        break
            while receiver.items:
                kind, value = receiver.items.popleft()
                if kind == "frame":
                    if value.type == "waiting":
                        continue
                    result.final = None
                    return await violation(f"the Worker sent a {value.type!r} frame after its final frame")
                if kind == "violation":
                    result.final = None
                    return await violation(value)
                if kind in ("eof", "exit") and not instance.retire_requested:
                    ended = instance.ended or await process.exit(timeout=0.05)
                    if ended is not None and (ended.outcome == "trap" or ended.exit_code not in (0, None)):
                        result.exit_error = ended.error or f"the Worker exited with status {ended.exit_code} after answering"
                        end.retire = "trap" if ended.outcome == "trap" else "exited"
                    else:
                        end.retire = "exited"
                    end.detail = "it ended right after its final frame"
                    break
            if instance.retire_requested and end.retire is None:
                end.retire = "retired"
                if announces_waiting and result.final is not None and runtime_out_of_memory(result.final.meta):
                    end.retire = "exceededMemory"  # the runtime's heap or memory cap ran out: it retires
            return end
        finally:
            cleanup()

    def cleanup() -> None:
        for task in calls.values():
            task.cancel()
        instance.receiver = None
        end.stderr, end.stderr_truncated = bytes(receiver.stderr), receiver.stderr_truncated
        if end.retire is not None and end.retire not in ("retired", "canceled"):
            text = f"{result.message}\n{end.stderr.decode('utf-8', 'replace')}"
            if result.failure != "exceededCpu" and result.failure != "exceededWallTime" and looks_out_of_memory(text):
                end.retire = "exceededMemory"

    async def rest() -> InvocationEnd:
        try:
            await drive()
        except asyncio.CancelledError:
            await process.kill()
            end.retire = "canceled"
            cleanup()
            raise
        except BaseException:
            cleanup()
            raise
        return await conclude()

    receiver.on_frame = take_at_once
    try:
        # written by a task of its own: this stack then wakes up for the answer, not for each of the
        # polls wasmer-sdk makes of the write
        instance.write_soon(event, receiver)
        finished = await drive()
    except asyncio.CancelledError:
        await process.kill()
        end.retire = "canceled"
        cleanup()
        raise
    except BaseException:
        cleanup()
        raise
    if not finished:
        early = InvocationEnd(result, b"", False, number)
        early.rest = asyncio.ensure_future(rest())
        return early
    return await conclude()


async def _cancel(calls: dict[int, "asyncio.Task[None]"]) -> None:
    """Cancel the calls still in flight and let them unwind (briefly)."""
    if not calls:
        return
    tasks = list(calls.values())
    calls.clear()
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=1.0)


async def _sleep(frame: Frame, call_id: int, wall_deadline: float, number: int) -> bytes:
    """A `sleep` call (the invocation's `number`th): answered after `ms`, cut to what is left of the
    invocation's wall time."""
    if number > MAX_SLEEPS:
        return protocol.encode({
            "type": "sleep_error", "id": call_id, "name": "TooManySleeps",
            "message": f"an invocation may make at most {MAX_SLEEPS} sleep calls",
        })
    ms = frame.meta.get("ms")
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms) or ms < 0:
        return protocol.encode({
            "type": "sleep_error", "id": call_id, "name": "InvalidRequest",
            "message": f"sleep needs \"ms\", a number of milliseconds from 0, not {ms!r}",
        })
    await asyncio.sleep(max(0.0, min(ms / 1000, wall_deadline - time.perf_counter())))
    return protocol.encode({"type": "sleep_result", "id": call_id})


class EventTooLarge(ValueError):
    """The event does not fit in a frame (a request body or headers over the limits)."""


async def run_on_instance(
    manager: InstanceManager,
    spec: InstanceSpec,
    meta: Mapping[str, Any],
    body: bytes,
    env: Mapping[str, str],
    *,
    final_type: str,
    cpu_ms: int,
    wall_ms: int,
    clock: Callable[[], int],
    on_call: CallHandler,
    answer_early: bool = False,
) -> tuple[InvocationEnd, InstanceUse, "asyncio.Task[tuple[InvocationEnd, InstanceUse]] | None"]:
    """Lease an instance of `spec`, run one invocation on it, and give it back or retire it.

    `env` is bound for this invocation only (an Outbound Worker's parameters). wallMs bounds
    the whole of it, the wait for an instance included. Raises InstancesBusy (no instance in
    time), InstanceStartFailed (a new instance did not become ready) or EventTooLarge.

    With `answer_early`, an invocation that answers with `"waitUntil": true` returns at once (its
    `result.response` holds the answer), with a third item: the task that gives the end and the
    InstanceUse when the invocation is over (the instance is given back then). Otherwise None.
    """
    deadline = time.perf_counter() + wall_ms / 1000
    replayed = False
    while True:
        instance, new = await manager.acquire(spec, max(0.0, deadline - time.perf_counter()))
        try:
            event = event_frame(meta, body, instance.invocations + 1, env)
        except ValueError as error:
            manager.release(instance)
            raise EventTooLarge(str(error)) from None
        left_ms = max(1, round((deadline - time.perf_counter()) * 1000))
        try:
            end = await converse_on_instance(
                instance, event, final_type=final_type, cpu_ms=cpu_ms, wall_ms=left_ms, clock=clock, on_call=on_call,
                announces_waiting=spec.announces_waiting, answer_early=answer_early,
            )
        except BaseException:
            manager.retire(instance, "canceled")
            raise
        if end.replay and not replayed:
            # it had ended (after its previous invocation) before it read this event: that was its
            # failure, not this invocation's, which runs again on a fresh instance
            manager.retire(instance, "exited", publish=True, detail="it ended after its previous invocation")
            replayed = True
            continue
        if end.rest is not None:
            rest = end.rest
            early_use = InstanceUse(instance.id, new, end.invocation)

            async def give_back() -> tuple[InvocationEnd, InstanceUse]:
                try:
                    finished = await rest
                except BaseException:
                    manager.retire(instance, "canceled")
                    raise
                return finished, _give_back(manager, instance, new, finished)

            return end, early_use, asyncio.ensure_future(give_back())
        return end, _give_back(manager, instance, new, end), None


# An engine runtime given back before its `waiting` frame gets at least this long to send it (the
# frame follows the final one at once; this covers a busy machine's scheduling delays).
MIN_QUIET_GRACE_S = 0.1
# how long a final frame waits for stderr output of a guest that writes to stderr, when none of this
# invocation's has arrived (it ends early when some does)
STDERR_GRACE_S = 0.005


def _give_back(manager: InstanceManager, instance: Instance, new: bool, end: InvocationEnd) -> InstanceUse:
    """The invocation is over: count it, then return the instance to its pool or retire it."""
    manager.count_invocation(instance)
    if end.retire is not None:
        sentence: str | None = manager.retire(instance, end.retire, detail=end.detail)
    else:
        sentence = manager.release(instance)
        if sentence is None and instance.announces_idle and not instance.quiet:
            manager.expect_quiet(instance, max(end.cpu_left_s, MIN_QUIET_GRACE_S))
    return InstanceUse(instance.id, new, end.invocation, sentence)

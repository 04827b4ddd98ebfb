"""One Worker-protocol invocation: send the event, serve the guest's calls, collect its final
frame, and enforce cpuMs (the guest's own running time, waits for call replies left out)
and wallMs (everything).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from . import protocol
from .protocol import Frame, FrameDecoder, ProtocolViolation
from .runtime import GuestSession
from .traces import MAX_LOG_BYTES

# After its final frame a guest should exit at once; this long is allowed for it.
EXIT_GRACE_S = 1.0
CallHandler = Callable[[Frame, float], Awaitable[bytes]]  # (call frame, seconds left) -> answer frame


@dataclass
class SessionResult:
    """`final` is the guest's response/done/exception frame; `failure` (an outcome) says why
    there is none, with `message`."""

    final: Frame | None = None
    failure: str | None = None
    message: str = ""
    exception_name: str = ""
    logs: list[dict[str, Any]] = field(default_factory=list)
    logs_truncated: bool = False
    log_chars: int = 0
    cpu_ms: float = 0.0
    exit_error: str | None = None
    response: Frame | None = None  # a response sent ahead of the end ("waitUntil": true; `final` is then `done`)


async def converse(
    guest: GuestSession,
    event: bytes,
    *,
    final_type: str,
    cpu_ms: int,
    wall_ms: int,
    clock: Callable[[], int],
    on_call: CallHandler,
    max_log_entries: int = 1000,
) -> SessionResult:
    """Drive the guest to its final frame; never raises for anything the guest does."""
    result = SessionResult()
    started = time.perf_counter()
    wall_deadline = started + wall_ms / 1000
    cpu_budget = cpu_ms / 1000
    decoder = FrameDecoder()

    def fail(outcome: str, message: str, name: str = "") -> SessionResult:
        result.failure, result.message, result.exception_name = outcome, message, name
        return result

    def over_limit(waited_for_cpu: bool) -> SessionResult:
        if waited_for_cpu:
            return fail("exceededCpu", f"Worker exceeded its CPU time limit of {cpu_ms} ms", "ExceededCpu")
        return fail("exceededWallTime", f"Worker exceeded its wall-time limit of {wall_ms} ms", "ExceededWallTime")

    if not await guest.write(event):
        return await _ended_early(guest, result, wall_deadline)
    while True:
        cpu_left = cpu_budget - result.cpu_ms / 1000
        wall_left = wall_deadline - time.perf_counter()
        timeout = max(0.0, min(cpu_left, wall_left))
        began = time.perf_counter()
        try:
            chunk = await asyncio.wait_for(guest.read(), timeout)
        except asyncio.TimeoutError:
            result.cpu_ms += (time.perf_counter() - began) * 1000
            await guest.kill()
            return over_limit(cpu_left <= wall_left)
        result.cpu_ms += (time.perf_counter() - began) * 1000
        if chunk is None:
            if decoder.pending:
                await guest.kill()
                return fail("exception", "the Worker closed stdout in the middle of a frame", "ProtocolError")
            return await _ended_early(guest, result, wall_deadline)
        try:
            frames = decoder.feed(chunk)
        except ProtocolViolation as violation:
            await guest.kill()
            return fail("exception", str(violation), "ProtocolError")
        for frame in frames:
            kind = frame.type
            if result.final is not None:
                await guest.kill()
                return fail("exception", f"the Worker sent a {kind!r} frame after its final frame", "ProtocolError")
            if kind == "log":
                _record_log(result, frame, clock(), max_log_entries)
            elif kind in protocol.GUEST_CALLS:
                waited_from = time.perf_counter()
                left = wall_deadline - waited_from
                try:
                    answer = await asyncio.wait_for(on_call(frame, left), max(0.0, left))
                except asyncio.TimeoutError:
                    await guest.kill()
                    return over_limit(False)
                except ProtocolViolation as violation:
                    await guest.kill()
                    return fail("exception", str(violation), "ProtocolError")
                if not await guest.write(answer):
                    return await _ended_early(guest, result, wall_deadline)
            elif kind == "exception":
                result.final = frame
            elif kind != final_type:
                await guest.kill()
                return fail(
                    "exception", f"the Worker answered a {final_type_event(final_type)} event with a {kind!r} frame", "ProtocolError"
                )
            else:
                result.final = frame
        if result.final is not None and not decoder.pending:
            await guest.close_stdin()
            return await _after_final(guest, result, decoder, clock, max_log_entries)


def final_type_event(final_type: str) -> str:
    return "fetch" if final_type == "response" else "tail"


def _record_log(result: SessionResult, frame: Frame, timestamp: int, limit: int) -> None:
    """Keep a `log` frame, within the invocation's bounds: `limit` entries, each message cut to
    protocol.MAX_LOG_MESSAGE characters, and at most traces.MAX_LOG_BYTES characters in all."""
    room = MAX_LOG_BYTES - result.log_chars
    if len(result.logs) >= limit or room <= 0:
        result.logs_truncated = True
        return
    message = frame.meta.get("message")
    text = message if isinstance(message, str) else str(message)
    if len(text) > min(protocol.MAX_LOG_MESSAGE, room):
        text = text[: min(protocol.MAX_LOG_MESSAGE, room)]
        result.logs_truncated = True
    result.log_chars += len(text)
    result.logs.append({"timestamp": timestamp, "level": protocol.log_level(frame.meta.get("level")), "message": [text]})


async def _after_final(
    guest: GuestSession, result: SessionResult, decoder: FrameDecoder, clock: Callable[[], int], limit: int
) -> SessionResult:
    """The final frame is in: the guest should now exit without writing anything more."""
    deadline = time.perf_counter() + EXIT_GRACE_S
    while True:
        left = deadline - time.perf_counter()
        try:
            chunk = await asyncio.wait_for(guest.read(), max(0.0, left))
        except asyncio.TimeoutError:
            await guest.kill()  # answered but lingering: the answer stands
            return result
        if chunk is None:
            break
        try:
            frames = decoder.feed(chunk)
        except ProtocolViolation as violation:
            result.failure, result.message, result.exception_name = "exception", str(violation), "ProtocolError"
            await guest.kill()
            return result
        if frames or decoder.pending:
            kind = frames[0].type if frames else "partial"
            result.failure = "exception"
            result.message = f"the Worker sent a {kind!r} frame after its final frame"
            result.exception_name = "ProtocolError"
            await guest.kill()
            return result
    ended = await guest.exit(timeout=max(0.0, deadline - time.perf_counter()))
    if ended is None:
        await guest.kill()
        return result
    if ended.outcome == "trap" or (ended.outcome == "exited" and ended.exit_code not in (0, None)):
        result.exit_error = ended.error or f"the Worker exited with status {ended.exit_code} after answering"
    return result


async def _ended_early(guest: GuestSession, result: SessionResult, wall_deadline: float) -> SessionResult:
    """stdout closed (or stdin refused writes) before the final frame: say why."""
    ended = await guest.exit(timeout=max(0.05, min(EXIT_GRACE_S, wall_deadline - time.perf_counter())))
    result.failure, result.exception_name = "exception", "ProtocolError"
    if ended is None:
        await guest.kill()
        result.message = "the Worker closed stdout before sending its final frame"
    elif ended.outcome == "trap":
        result.exception_name = "WasmTrap"
        result.message = (ended.error or "the guest trapped").removeprefix("command execution failed: ")
    elif ended.outcome == "timeout":
        result.failure, result.exception_name = "exceededWallTime", "ExceededWallTime"
        result.message = "Worker exceeded its wall-time limit"
    elif ended.outcome == "exited" and ended.exit_code not in (0, None):
        result.exception_name = "ExitStatus"
        result.message = f"the Worker exited with status {ended.exit_code} before sending its final frame"
    elif ended.outcome == "failed":
        result.failure, result.exception_name = "internalError", "InternalError"
        result.message = ended.error or "the guest failed"
    else:
        result.message = "the Worker exited before sending its final frame"
    return result

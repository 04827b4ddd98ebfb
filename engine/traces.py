"""Trace items (Cloudflare's TraceItem shape, camelCase JSON), their filters and formats.

One definition serves the CLI's `tail`, the console's tail panes, the store and, later,
the HTTP tail stream and Tail Workers.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import InvalidInput

OUTCOMES = (
    "ok",
    "exception",
    "exceededCpu",
    "exceededMemory",
    "exceededWallTime",
    "scriptNotFound",
    "canceled",
    "internalError",
    "loadShed",
)
ERROR_OUTCOMES = frozenset(
    {"exception", "exceededCpu", "exceededMemory", "exceededWallTime", "internalError", "loadShed"}
)
STATUS_GROUPS = {"ok": frozenset({"ok"}), "error": ERROR_OUTCOMES, "canceled": frozenset({"canceled"})}
LOG_LEVELS = ("debug", "info", "log", "warn", "error")
SENSITIVE_HEADER_PARTS = ("auth", "jwt", "key", "secret", "token")
REDACTED = "REDACTED"

MAX_LOG_LINES = 1_000
MAX_LOG_BYTES = 128 * 1024
MAX_EXCEPTION_MESSAGE = 8 * 1024

_LEVEL_PREFIX = re.compile(r"^(debug|info|log|warn|warning|error)\s*:\s*", re.IGNORECASE)


def is_sensitive_header(name: str) -> bool:
    lowered = name.lower()
    return lowered in ("cookie", "set-cookie") or any(part in lowered for part in SENSITIVE_HEADER_PARTS)


def redact_headers(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Headers as a dict with lowercase names (repeated ones joined), secrets replaced."""
    result: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        shown = REDACTED if is_sensitive_header(key) else value
        result[key] = f"{result[key]}, {shown}" if key in result and shown != REDACTED else shown
    return result


def log_entries(stderr: bytes, timestamp: int) -> tuple[list[dict[str, Any]], bool]:
    """Each stderr line becomes a log entry; a `warn:`-style prefix sets its level."""
    entries: list[dict[str, Any]] = []
    truncated = False
    text = stderr.decode("utf-8", "replace")
    if len(stderr) > MAX_LOG_BYTES:
        text = stderr[:MAX_LOG_BYTES].decode("utf-8", "replace")
        truncated = True
    lines = text.splitlines()
    if len(lines) > MAX_LOG_LINES:
        lines = lines[:MAX_LOG_LINES]
        truncated = True
    for line in lines:
        level = "log"
        match = _LEVEL_PREFIX.match(line)
        if match:
            level = match.group(1).lower()
            level = "warn" if level == "warning" else level
            line = line[match.end():]
        entries.append({"timestamp": timestamp, "level": level, "message": [line]})
    return entries, truncated


def exception_entry(name: str, message: str, timestamp: int) -> dict[str, Any]:
    return {"timestamp": timestamp, "name": name, "message": message[:MAX_EXCEPTION_MESSAGE]}


def new_item(
    *,
    script_name: str | None,
    script_tags: tuple[str, ...] = (),
    namespace: str,
    outcome: str,
    event_timestamp: int,
    cpu_time: int,
    wall_time: int,
    url: str,
    method: str,
    headers: list[tuple[str, str]],
    status: int | None,
    logs: list[dict[str, Any]] | None = None,
    exceptions: list[dict[str, Any]] | None = None,
    truncated: bool = False,
    script_version: int | None = None,
    subrequests: list[dict[str, Any]] | None = None,
    instance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`instance`: wasmdeck's fields beside Cloudflare's for a Worker-protocol invocation, saying
    which guest instance ran it: `newInstance`, `instanceId`, `instanceInvocation` and, when the
    invocation ended its instance, `instanceRetired` (one sentence)."""
    assert outcome in OUTCOMES, outcome
    item = {
        "scriptName": script_name,
        "scriptVersion": script_version,
        "scriptTags": list(script_tags),
        "dispatchNamespace": namespace,
        "outcome": outcome,
        "eventTimestamp": event_timestamp,
        "cpuTime": cpu_time,
        "wallTime": wall_time,
        "event": {
            "request": {"url": url, "method": method, "headers": redact_headers(headers)},
            "response": {"status": status} if status is not None else None,
        },
        "logs": logs or [],
        "exceptions": exceptions or [],
        "truncated": truncated,
    }
    if subrequests:
        item["subrequests"] = subrequests
    if instance:
        item.update(instance)
    return item


def tail_event_item(
    *,
    script_name: str,
    script_version: int | None,
    script_tags: tuple[str, ...],
    namespace: str,
    outcome: str,
    event_timestamp: int,
    cpu_time: int,
    wall_time: int,
    consumed: list[dict[str, Any]],
    logs: list[dict[str, Any]] | None = None,
    exceptions: list[dict[str, Any]] | None = None,
    truncated: bool = False,
    subrequests: list[dict[str, Any]] | None = None,
    instance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The trace item of a Tail Worker's `tail` invocation (Cloudflare's TailEvent shape)."""
    item = new_item(
        script_name=script_name, script_version=script_version, script_tags=script_tags, namespace=namespace,
        outcome=outcome, event_timestamp=event_timestamp, cpu_time=cpu_time, wall_time=wall_time, url="", method="",
        headers=[], status=None, logs=logs, exceptions=exceptions, truncated=truncated, subrequests=subrequests,
        instance=instance,
    )
    item["event"] = {"consumedEvents": [{"scriptName": c.get("scriptName")} for c in consumed]}
    return item


def is_tail_event(item: dict[str, Any]) -> bool:
    return "consumedEvents" in (item.get("event") or {})


def instance_event_item(
    *,
    script_name: str,
    script_version: int | None,
    script_tags: tuple[str, ...],
    namespace: str,
    event_timestamp: int,
    instance_id: str,
    invocations: int,
    reason: str,
    message: str,
) -> dict[str, Any]:
    """The item published when a warm instance fails while no invocation is in flight (it wrote
    output or exited between invocations): outcome `exception`, `event.instance` naming it, and
    one exception `InstanceRetired` saying why. It belongs to no request and is never delivered
    to Tail Workers."""
    item = new_item(
        script_name=script_name, script_version=script_version, script_tags=script_tags, namespace=namespace,
        outcome="exception", event_timestamp=event_timestamp, cpu_time=0, wall_time=0, url="", method="",
        headers=[], status=None, exceptions=[exception_entry("InstanceRetired", message, event_timestamp)],
        instance={"newInstance": False, "instanceId": instance_id, "instanceInvocation": invocations,
                  "instanceRetired": message},
    )
    item["event"] = {"instance": {"id": instance_id, "invocations": invocations, "retired": reason}}
    return item


def is_instance_event(item: dict[str, Any]) -> bool:
    return "instance" in (item.get("event") or {})


@dataclass(frozen=True)
class TraceFilter:
    """The filters of `wasmdeck tail`, shared by every consumer of traces."""

    namespace: str | None = None
    worker: str | None = None
    status: str | None = None
    method: tuple[str, ...] = ()
    search: str | None = None
    header: str | None = None
    sampling_rate: float | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUS_GROUPS:
            raise InvalidInput(f"status filter {self.status!r} is not one of ok, error, canceled")
        if isinstance(self.method, str):
            object.__setattr__(self, "method", (self.method,))
        object.__setattr__(self, "method", tuple(m.upper() for m in self.method))
        if self.sampling_rate is not None and not 0 < self.sampling_rate < 1:
            raise InvalidInput("sampling rate must be strictly between 0 and 1")

    def matches(self, item: dict[str, Any]) -> bool:
        if self.namespace and item.get("dispatchNamespace") != self.namespace:
            return False
        if self.worker and item.get("scriptName") != self.worker:
            return False
        if self.status and item.get("outcome") not in STATUS_GROUPS[self.status]:
            return False
        request = (item.get("event") or {}).get("request") or {}
        if self.method and str(request.get("method", "")).upper() not in self.method:
            return False
        if self.header:
            name, sep, value = self.header.partition(":")
            headers = request.get("headers") or {}
            present = headers.get(name.strip().lower())
            if present is None or (sep and present != value.strip()):
                return False
        if self.search:
            needle = self.search.lower()
            texts = [" ".join(str(m) for m in log.get("message", [])) for log in item.get("logs", [])]
            texts += [f"{e.get('name')}: {e.get('message')}" for e in item.get("exceptions", [])]
            if not any(needle in text.lower() for text in texts):
                return False
        if self.sampling_rate is not None and random.random() >= self.sampling_rate:
            return False
        return True


def _outcome_label(outcome: str) -> str:
    return {
        "ok": "Ok",
        "exception": "Exception Thrown",
        "exceededCpu": "Exceeded CPU Limit",
        "exceededMemory": "Exceeded Memory",
        "exceededWallTime": "Exceeded Wall Time",
        "scriptNotFound": "Worker Not Found",
        "canceled": "Canceled",
        "internalError": "Internal Error",
        "loadShed": "Load Shed",
    }.get(outcome, outcome)


def format_time(timestamp_ms: int) -> str:
    moment = datetime.fromtimestamp(timestamp_ms / 1000)
    hour = moment.hour % 12 or 12
    return f"{moment.month}/{moment.day}/{moment.year}, {hour}:{moment:%M:%S} {'AM' if moment.hour < 12 else 'PM'}"


def format_pretty(item: dict[str, Any]) -> str:
    """`GET https://x/ - Ok @ 11/27/2026, 8:00:00 AM` plus indented logs and exceptions."""
    event = item.get("event") or {}
    request = event.get("request") or {}
    if "consumedEvents" in event:
        what = f"Tail of {len(event['consumedEvents'])} event(s) ({item.get('scriptName')})"
    elif "instance" in event:
        what = f"Instance {event['instance'].get('id')} of {item.get('scriptName')} retired ({event['instance'].get('retired')})"
    else:
        what = f"{request.get('method', '?')} {request.get('url', '?')}"
    head = f"{what} - {_outcome_label(item.get('outcome', ''))} @ {format_time(int(item.get('eventTimestamp', 0)))}"
    lines = [head]
    for log in item.get("logs", []):
        lines.append(f"  ({log.get('level')}) {' '.join(str(m) for m in log.get('message', []))}")
    for sub in item.get("subrequests", []):
        result = sub.get("status", sub.get("error", "error"))
        lines.append(f"  -> {sub.get('method')} {sub.get('url')} {result} ({sub.get('durationMs')} ms via {sub.get('via')})")
    for exc in item.get("exceptions", []):
        first, *rest = str(exc.get("message", "")).splitlines() or [""]
        lines.append(f"  {exc.get('name')}: {first}")
        lines.extend(f"    {line.strip()}" for line in rest)
    if item.get("truncated"):
        lines.append("  (output truncated)")
    return "\n".join(lines)

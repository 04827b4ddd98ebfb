"""Trace items (Cloudflare's TraceItem shape, camelCase JSON), their filters and formats.

One definition serves the CLI's `tail`, the console's tail panes, the store and, later,
the HTTP tail stream and Tail Workers.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

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
# A header or URL query parameter is secret when its lowercase name contains one of these
# (so `X-Password`, `X-Session-Id`, `Signature`, `X-Credential`, `access_token`,
# `X-Amz-Signature` are), or is `cookie` / `set-cookie`, or (query parameters only) is
# exactly one of SENSITIVE_QUERY_NAMES.
SENSITIVE_NAME_PARTS = (
    "auth", "jwt", "key", "secret", "token", "passw", "pwd", "session", "signature", "credential", "csrf", "xsrf",
)
SENSITIVE_HEADER_PARTS = SENSITIVE_NAME_PARTS  # the name earlier versions exported
SENSITIVE_QUERY_NAMES = frozenset({"code", "sig", "sid", "pw", "pass"})
REDACTED = "REDACTED"

MAX_LOG_LINES = 1_000
MAX_LOG_BYTES = 128 * 1024
MAX_EXCEPTION_MESSAGE = 8 * 1024

# Bounds on one trace item (see README, "Traces"): every long field is cut (ending in
# TRUNCATION_MARK), every list is capped, and what is left must serialize (compact JSON,
# as stored) to at most MAX_ITEM_BYTES; an item that lost anything says `truncated: true`.
MAX_ITEM_BYTES = 256 * 1024
MAX_URL_CHARS = 8 * 1024
MAX_HEADERS = 100
MAX_HEADER_NAME_CHARS = 256
MAX_HEADER_VALUE_CHARS = 4 * 1024
MAX_LOG_MESSAGE_CHARS = 64 * 1024
MAX_EXCEPTIONS = 20
MAX_EXCEPTION_NAME_CHARS = 200
MAX_SUBREQUESTS = 1_000
MAX_SUBREQUEST_URL_CHARS = 2 * 1024
MAX_SUBREQUEST_ERROR_CHARS = 2 * 1024
MAX_CONSUMED_EVENTS = 100
MAX_SHORT_CHARS = 256  # methods, levels, names, outcomes
TRUNCATION_MARK = "\u2026"

_LEVEL_PREFIX = re.compile(r"^(debug|info|log|warn|warning|error)\s*:\s*", re.IGNORECASE)
_encode = json.JSONEncoder(separators=(",", ":")).encode  # exactly how the store writes an item


_SENSITIVE_PART = re.compile("|".join(SENSITIVE_NAME_PARTS))


def _sensitive(lowered: str) -> bool:
    return lowered in ("cookie", "set-cookie") or _SENSITIVE_PART.search(lowered) is not None


def is_sensitive_header(name: str) -> bool:
    return _sensitive(name.lower())


def is_sensitive_query_parameter(name: str) -> bool:
    lowered = unquote_plus(name).strip().lower()
    return lowered in SENSITIVE_QUERY_NAMES or _sensitive(lowered)


def redact_url(url: str) -> str:
    """The URL with the values of secret query parameters and any userinfo password replaced by REDACTED."""
    scheme_end = url.find("://")
    if scheme_end < 0:
        return url
    rest_start = scheme_end + 3
    authority_end = len(url)
    for stop in "/?#":
        found = url.find(stop, rest_start)
        if found >= 0:
            authority_end = min(authority_end, found)
    authority = url[rest_start:authority_end]
    at = authority.rfind("@")
    if at >= 0 and ":" in authority[:at]:
        user = authority[: authority.index(":")]
        authority = f"{user}:{REDACTED}{authority[at:]}"
    head, tail = url[:rest_start] + authority, url[authority_end:]
    query_start = tail.find("?")
    if query_start < 0:
        return head + tail
    fragment_start = tail.find("#", query_start)
    query_end = len(tail) if fragment_start < 0 else fragment_start
    parameters = tail[query_start + 1 : query_end].split("&")
    shown = []
    for parameter in parameters:
        name, sep, _ = parameter.partition("=")
        shown.append(f"{name}={REDACTED}" if sep and is_sensitive_query_parameter(name) else parameter)
    return head + tail[: query_start + 1] + "&".join(shown) + tail[query_end:]


def _cut(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    return text[: max(0, limit - 1)] + TRUNCATION_MARK, True


def redact_headers(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Headers as a dict with lowercase names (repeated ones joined), secrets replaced."""
    return _redacted_headers(headers)[0]


def _redacted_headers(headers: list[tuple[str, str]]) -> tuple[dict[str, str], bool, int]:
    """`redact_headers`, bounded: at most MAX_HEADERS names, each value cut to MAX_HEADER_VALUE_CHARS.
    Also says whether anything was cut, and how many characters are left."""
    result: dict[str, str] = {}
    truncated = False
    for name, value in headers:
        key = name.lower()
        if key not in result and len(result) >= MAX_HEADERS:
            truncated = True
            continue
        if len(key) > MAX_HEADER_NAME_CHARS:
            key, truncated = _cut(key, MAX_HEADER_NAME_CHARS)[0], True
        shown = REDACTED if _sensitive(key) else value
        if key in result and shown != REDACTED:
            shown = f"{result[key]}, {shown}"
        if len(shown) > MAX_HEADER_VALUE_CHARS:
            shown, truncated = _cut(shown, MAX_HEADER_VALUE_CHARS)[0], True
        result[key] = shown
    return result, truncated, sum(len(k) + len(v) for k, v in result.items())


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
    return {"timestamp": timestamp, "name": name, "message": _cut(message, MAX_EXCEPTION_MESSAGE)[0]}


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
    """A trace item, redacted (see `is_sensitive_header`, `redact_url`) and bounded (see MAX_ITEM_BYTES).

    `instance`: wasmdeck's fields beside Cloudflare's for a Worker-protocol invocation, saying
    which guest instance ran it: `newInstance`, `instanceId`, `instanceInvocation` and, when the
    invocation ended its instance, `instanceRetired` (one sentence)."""
    assert outcome in OUTCOMES, outcome
    shown_url, url_cut = _cut(redact_url(url), MAX_URL_CHARS)
    shown_method, method_cut = _cut(method, MAX_SHORT_CHARS)
    shown_headers, headers_cut, header_chars = _redacted_headers(headers)
    bounded_logs, logs_cut, log_chars = _bounded_logs(logs or [])
    bounded_exceptions, exceptions_cut, exception_chars = _bounded_exceptions(exceptions or [])
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
            "request": {"url": shown_url, "method": shown_method, "headers": shown_headers},
            "response": {"status": status} if status is not None else None,
        },
        "logs": bounded_logs,
        "exceptions": bounded_exceptions,
        "truncated": bool(truncated or url_cut or method_cut or headers_cut or logs_cut or exceptions_cut),
    }
    chars = len(shown_url) + len(shown_method) + header_chars + log_chars + exception_chars
    entries = len(shown_headers) + len(bounded_logs) + len(bounded_exceptions)
    if subrequests:
        bounded_subrequests, subrequests_cut, subrequest_chars = _bounded_subrequests(subrequests)
        item["subrequests"] = bounded_subrequests
        item["truncated"] = item["truncated"] or subrequests_cut
        chars += subrequest_chars
        entries += len(bounded_subrequests)
    if instance:
        item.update(instance)
        chars += sum(len(str(value)) for value in instance.values())
    if _MAX_JSON_BYTES_PER_CHAR * chars + _MAX_JSON_BYTES_PER_ENTRY * (entries + 4) <= MAX_ITEM_BYTES:
        return item  # fits whatever its text is: no need to serialize it to know
    return fit_item(item)


# An upper bound of a string's size in ASCII-only JSON, per character (a character outside the
# BMP becomes a 12-byte surrogate pair escape), and of what an entry adds around its texts.
_MAX_JSON_BYTES_PER_CHAR = 12
_MAX_JSON_BYTES_PER_ENTRY = 256


def _bounded_logs(logs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool, int]:
    """At most MAX_LOG_LINES entries and MAX_LOG_BYTES characters of messages, none over
    MAX_LOG_MESSAGE_CHARS; also whether anything was cut, and the characters kept."""
    kept: list[dict[str, Any]] = []
    budget = MAX_LOG_BYTES
    truncated = len(logs) > MAX_LOG_LINES
    for log in logs[:MAX_LOG_LINES] if truncated else logs:
        if budget <= 0:
            truncated = True
            break
        parts = log.get("message")
        if not isinstance(parts, list):
            parts = [parts]
        message: list[str] = []
        for part in parts[:MAX_LOG_LINES]:
            text = part if isinstance(part, str) else str(part)
            limit = min(MAX_LOG_MESSAGE_CHARS, max(budget, 1))
            if len(text) > limit:
                text, truncated = _cut(text, limit)[0], True
            budget -= len(text)
            message.append(text)
        level = log.get("level", "log")
        if not isinstance(level, str) or len(level) > MAX_SHORT_CHARS:
            level, truncated = _cut(str(level), MAX_SHORT_CHARS)[0], True
        kept.append({**log, "level": level, "message": message})
        truncated = truncated or len(parts) > MAX_LOG_LINES
    return kept, truncated, MAX_LOG_BYTES - budget + len(kept) * MAX_SHORT_CHARS


def _bounded_exceptions(exceptions: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool, int]:
    kept: list[dict[str, Any]] = []
    truncated = len(exceptions) > MAX_EXCEPTIONS
    chars = 0
    for entry in exceptions[:MAX_EXCEPTIONS]:
        name, name_cut = _cut(str(entry.get("name", "")), MAX_EXCEPTION_NAME_CHARS)
        message, message_cut = _cut(str(entry.get("message", "")), MAX_EXCEPTION_MESSAGE)
        bounded = {**entry, "name": name, "message": message}
        stack_cut = False
        if "stack" in entry:
            bounded["stack"], stack_cut = _cut(str(entry["stack"]), MAX_EXCEPTION_MESSAGE)
            chars += len(bounded["stack"])
        kept.append(bounded)
        truncated = truncated or name_cut or message_cut or stack_cut
        chars += len(name) + len(message)
    return kept, truncated, chars


def bounded_subrequest(entry: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A subrequest entry as a trace item keeps it: its URL redacted and cut to MAX_SUBREQUEST_URL_CHARS,
    its error cut (with the URL in it redacted alike); also whether anything was cut. A host that
    records subrequests while an invocation runs can keep entries in this form from the start."""
    bounded = dict(entry)
    raw_url = str(entry.get("url", ""))
    shown = redact_url(raw_url)
    bounded["url"], url_cut = _cut(shown, MAX_SUBREQUEST_URL_CHARS)
    bounded["method"], method_cut = _cut(str(entry.get("method", "")), MAX_SHORT_CHARS)
    bounded["via"], via_cut = _cut(str(entry.get("via", "")), MAX_SHORT_CHARS)
    error_cut = False
    if "error" in entry:
        error = str(entry["error"])
        if raw_url and shown != raw_url:
            error = error.replace(raw_url, shown)
        bounded["error"], error_cut = _cut(error, MAX_SUBREQUEST_ERROR_CHARS)
    return bounded, url_cut or method_cut or via_cut or error_cut


def _bounded_subrequests(subrequests: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool, int]:
    """At most MAX_SUBREQUESTS entries, each a `bounded_subrequest`."""
    kept: list[dict[str, Any]] = []
    truncated = len(subrequests) > MAX_SUBREQUESTS
    chars = 0
    for entry in subrequests[:MAX_SUBREQUESTS]:
        bounded, cut = bounded_subrequest(entry)
        truncated = truncated or cut
        chars += len(bounded["url"]) + len(bounded["method"]) + len(bounded["via"]) + len(bounded.get("error", ""))
        kept.append(bounded)
    return kept, truncated, chars


def item_size(item: dict[str, Any]) -> int:
    """The item's size as stored: compact JSON, ASCII only."""
    return len(_encode(item))


def fit_item(item: dict[str, Any], max_bytes: int = MAX_ITEM_BYTES) -> dict[str, Any]:
    """Shrink `item` in place until it serializes to at most `max_bytes`, marking it truncated if
    anything goes: the biggest of its lists loses its second half (a single entry has its text
    halved instead); the request URL is cut last."""
    size = item_size(item)
    if size <= max_bytes:
        return item
    item["truncated"] = True
    request = (item.get("event") or {}).get("request") or {}
    for _ in range(_MAX_SHRINK_ROUNDS):
        sections = _shrinkable_sections(item)
        url = str(request.get("url", ""))
        if sections:
            _, owner, key = max(sections, key=lambda section: section[0])
            _shrink(owner, key)
        elif len(url) > _SHORT_TEXT:
            request["url"] = _cut(url, len(url) // 2)[0]
        else:
            break
        size = item_size(item)
        if size <= max_bytes:
            return item
    for owner, key in _sections(item):  # a budget too small for halving to reach: keep only the fixed fields
        owner[key] = {} if isinstance(owner[key], dict) else []
    if request:
        request["url"] = _cut(str(request.get("url", "")), _SHORT_TEXT)[0]
    return item


_MAX_SHRINK_ROUNDS = 200
_SHORT_TEXT = 16  # a text this short is never cut further: its entry goes instead


def _sections(item: dict[str, Any]) -> list[tuple[Any, str]]:
    """(container, key) of every list or map in the item."""
    event = item.get("event") or {}
    candidates: list[tuple[Any, str]] = [(item, "logs"), (item, "exceptions"), (item, "subrequests"), (event, "consumedEvents")]
    request = event.get("request")
    if isinstance(request, dict):
        candidates.append((request, "headers"))
    return [(owner, key) for owner, key in candidates if isinstance(owner.get(key), (list, dict)) and owner.get(key)]


def _shrinkable_sections(item: dict[str, Any]) -> list[tuple[int, Any, str]]:
    """(serialized size, container, key) of every non-empty list or map in the item."""
    return [(len(_encode(owner[key])), owner, key) for owner, key in _sections(item)]


def _shrink(owner: Any, key: str) -> None:
    """Halve a section: drop the second half of its entries, or halve the texts of its only entry
    (dropping it when they are all short already)."""
    value = owner[key]
    if len(value) > 1:
        owner[key] = dict(list(value.items())[: len(value) // 2]) if isinstance(value, dict) else value[: len(value) // 2]
        return
    if isinstance(value, dict):
        (name, text), = value.items()
        text = str(text)
        owner[key] = {name: _cut(text, len(text) // 2)[0]} if len(text) > _SHORT_TEXT else {}
        return
    entry = dict(value[0]) if isinstance(value[0], dict) else {}
    changed = False
    for field in ("url", "error", "name", "message"):
        current = entry.get(field)
        if isinstance(current, str) and len(current) > _SHORT_TEXT:
            entry[field], changed = _cut(current, len(current) // 2)[0], True
        elif isinstance(current, list):
            parts = [_cut(p, len(p) // 2)[0] if isinstance(p, str) and len(p) > _SHORT_TEXT else p for p in current]
            changed = changed or parts != current
            entry[field] = parts
    owner[key] = [entry] if changed else []


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
    item["event"] = {"consumedEvents": [{"scriptName": c.get("scriptName")} for c in consumed[:MAX_CONSUMED_EVENTS]]}
    if len(consumed) > MAX_CONSUMED_EVENTS:
        item["truncated"] = True
    return fit_item(item)


def cloudflare_trace_item(item: dict[str, Any]) -> dict[str, Any]:
    """An item as a JavaScript Tail Worker receives it: Cloudflare's TraceItem, whose fields wasmdeck's
    items all have, plus the two every Cloudflare item carries and wasmdeck has nothing for
    (`diagnosticsChannelEvents`, `executionModel`)."""
    return {**item, "diagnosticsChannelEvents": item.get("diagnosticsChannelEvents", []),
            "executionModel": item.get("executionModel", "stateless")}


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

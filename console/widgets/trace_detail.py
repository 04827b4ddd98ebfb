"""One trace item whole: a readable summary (outcome, status, times, the warm instance that ran
it, logs, exceptions) and its JSON.

`summary()` is the one rendering of a trace item; the Requests tab's Trace views use it too.
Besides requests and Tail Worker invocations it renders the item of a warm instance that failed
while idle (`event.instance`, no request)."""

from __future__ import annotations

import json
from datetime import tzinfo
from typing import Any

from rich.json import JSON
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Static

from wasmdeck.engine.traces import is_instance_event

from ..formatting import level_style, moment, outcome_style, retirement_style, status_style
from ..styles import stylesheet
from .modals import Dialog

LABEL_WIDTH = 11


def _worker_parts(item: dict[str, Any], outcome: str) -> list[str | tuple[str, str]]:
    """`hello v3  tags free, eu`; a name that matched no worker says so."""
    name = item.get("scriptName")
    if not name:
        return [("none (no worker matched)", "dim")]
    if outcome == "scriptNotFound":
        return [(str(name), "bold"), (" (not found in this namespace)", "yellow")]
    parts: list[str | tuple[str, str]] = [(str(name), "bold cyan")]
    if item.get("scriptVersion") is not None:
        parts.append(f" v{item['scriptVersion']}")
    if item.get("scriptTags"):
        parts.append(("  tags " + ", ".join(item["scriptTags"]), "dim"))
    return parts


def instance_parts(item: dict[str, Any]) -> list[str | tuple[str, str]] | None:
    """`3f2a9c1b · invocation 12 on a warm instance` (or `new instance`); None for an item that
    no warm instance ran (a WCGI request, or one that never reached a Worker)."""
    instance_id = item.get("instanceId")
    if instance_id is None:
        return None
    parts: list[str | tuple[str, str]] = [(str(instance_id), "bold")]
    invocation = item.get("instanceInvocation")
    if is_instance_event(item):
        served = int(invocation or 0)
        parts.append(f" · served {served} invocation{'' if served == 1 else 's'}, then failed while idle")
        return parts
    if invocation is not None:
        parts.append(f" · invocation {invocation}")
    if item.get("newInstance"):
        parts.append((" · new instance", "yellow"))
    else:
        parts.append((" · on a warm instance", "green"))
    return parts


def _request_or_event(item: dict[str, Any]) -> tuple[str, list[str | tuple[str, str]]]:
    """The label and parts of the line saying what the item is about."""
    event = item.get("event") or {}
    if is_instance_event(item):
        instance = event.get("instance") or {}
        reason = str(instance.get("retired") or "?")
        return "Event", [("instance retired", "bold"), " while no request was in flight: ", (reason, retirement_style(reason))]
    request = event.get("request") or {}
    return "Request", [(str(request.get("method") or "?"), "bold"), " ", str(request.get("url") or "")]


def summary(item: dict[str, Any], tz: tzinfo | None = None) -> Text:
    """The human part: what happened, to which worker, when, how long, what it said."""
    event = item.get("event") or {}
    request = event.get("request") or {}
    response = event.get("response")
    status = response.get("status") if response else None
    outcome = str(item.get("outcome") or "?")
    text = Text(no_wrap=False, end="")

    def field(label: str, *parts: str | tuple[str, str]) -> None:
        text.append(f"{label:<{LABEL_WIDTH}}", "bold")
        text.append_text(Text.assemble(*parts))
        text.append("\n")

    idle_failure = is_instance_event(item)
    field("Outcome", (outcome, "bold " + outcome_style(outcome)))
    label, about = _request_or_event(item)
    field(label, *about)
    if not idle_failure:
        field("Status", (str(status) if status is not None else "no response", status_style(status)))
    field("Worker", *_worker_parts(item, outcome))
    instance = instance_parts(item)
    if instance is not None:
        field("Instance", *instance)
    retired = item.get("instanceRetired")
    if retired:  # after an answer (asked to retire, the invocation limit) it is news; after a failure, alarm
        field("Retired", (str(retired), "yellow" if outcome == "ok" else "bold red"))
    field("Namespace", str(item.get("dispatchNamespace") or "-"))
    field("Time", moment(int(item.get("eventTimestamp") or 0), tz))
    if not idle_failure:
        field("Duration", f"wall {item.get('wallTime', 0)} ms", ("  ·  ", "dim"), f"cpu {item.get('cpuTime', 0)} ms")
    exceptions = item.get("exceptions") or []
    text.append(f"\nExceptions ({len(exceptions)})\n", "bold underline")
    if not exceptions:
        text.append("  none\n", "dim")
    for exception in exceptions:
        first, *rest = str(exception.get("message") or "").splitlines() or [""]
        text.append(f"  {moment(int(exception.get('timestamp') or 0), tz, date=False)} ", "dim")
        text.append(f"{exception.get('name')}: ", "bold red")
        text.append(first + "\n")
        for line in rest:
            text.append(f"      {line.rstrip()}\n", "red")
        for line in _stack_lines(exception):
            text.append(f"      {line}\n", "dim")
    logs = item.get("logs") or []
    text.append(f"\nLogs ({len(logs)})\n", "bold underline")
    if not logs:
        text.append("  none\n", "dim")
    for log in logs:
        level = str(log.get("level") or "log")
        text.append(f"  {moment(int(log.get('timestamp') or 0), tz, date=False)} ", "dim")
        text.append(f"{level:<5} ", level_style(level))
        text.append(" ".join(str(part) for part in log.get("message") or ()) + "\n")
    if item.get("truncated"):
        text.append("  The engine cut this item short (truncated): some logs or output are missing.\n", "yellow")

    subrequests = item.get("subrequests") or []
    if subrequests:
        text.append(f"\nSubrequests ({len(subrequests)})\n", "bold underline")
        for sub in subrequests:
            status = sub.get("status")
            text.append(f"  {sub.get('method', '?')} ", "bold")
            text.append(f"{sub.get('url', '')} ")
            if status is not None:
                text.append(str(status), status_style(status))
            else:
                text.append(str(sub.get("error") or "error"), "bold red")
            text.append(f"  {sub.get('durationMs', 0)} ms via {sub.get('via', '?')}\n", "dim")
    consumed = event.get("consumedEvents")
    if consumed is not None:
        text.append(f"\nConsumed events ({len(consumed)})\n", "bold underline")
        for entry in consumed:
            text.append(f"  {entry.get('scriptName') or '-'}\n")

    headers = request.get("headers") or {}
    if headers:
        text.append("\nRequest headers\n", "bold underline")
        for name, value in headers.items():
            text.append(f"  {name}: ", "dim")
            text.append(f"{value}\n")
    text.rstrip()
    return text


class TraceDetailScreen(Dialog[None]):
    """The whole trace item: summary on top, pretty JSON below; esc closes."""

    BINDINGS = [
        Binding("escape", "close", "Close", id="trace.close"),
        Binding("y", "copy", "Copy JSON", id="trace.copy"),
    ]
    DEFAULT_CSS = stylesheet(__name__)
    AUTO_FOCUS = "#trace-body"

    def __init__(self, item: dict[str, Any], *, tz: tzinfo | None = None) -> None:
        super().__init__()
        self.item = item
        self.tz = tz

    def compose(self) -> ComposeResult:
        event = self.item.get("event") or {}
        request = event.get("request") or {}
        outcome = str(self.item.get("outcome") or "?")
        title = Text.assemble(("Trace  ", "bold"), (outcome, "bold " + outcome_style(outcome)), "  ")
        if is_instance_event(self.item):
            instance = event.get("instance") or {}
            title.append(f"instance {instance.get('id')} of {self.item.get('scriptName')} retired ({instance.get('retired')})")
        else:
            title.append_text(Text.assemble((str(request.get("method") or "?"), "bold"), " ", str(request.get("url") or "")))
        with Vertical(id="trace-dialog"):
            yield Label(title, id="trace-title")
            with VerticalScroll(id="trace-body"):
                yield Static(summary(self.item, self.tz), id="trace-summary")
                yield Label("Item (JSON)", id="trace-json-title")
                yield Static(JSON(self.json_text(), indent=2), id="trace-json")
            yield Label("esc close  ·  y copy JSON  ·  ↑↓ pgup pgdn scroll", id="trace-hint")

    def json_text(self) -> str:
        return json.dumps(self.item, indent=2, ensure_ascii=False, default=str)

    def action_close(self) -> None:
        self.dismiss(None)

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.json_text())
        self.notify("Trace item copied as JSON", title="Trace")


def _stack_lines(exception: dict[str, Any]) -> list[str]:
    """The frames of a JavaScript exception's stack (`    at f (worker.js:3:9)`), without the
    first line when it repeats the name and message already shown."""
    lines = [line.strip() for line in str(exception.get("stack") or "").splitlines() if line.strip()]
    if lines and not lines[0].startswith("at "):
        lines = lines[1:]
    return lines

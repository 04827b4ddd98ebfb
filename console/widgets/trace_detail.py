"""One trace item whole: a readable summary (outcome, status, times, logs, exceptions) and its JSON."""

from __future__ import annotations

import json
from datetime import datetime, tzinfo
from typing import Any

from rich.json import JSON
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from wasmdeck.engine.traces import ERROR_OUTCOMES, LOG_LEVELS

OUTCOME_STYLES = {"ok": "bold green", "scriptNotFound": "bold yellow", "canceled": "bold yellow"}
LEVEL_STYLES = {"debug": "dim", "info": "cyan", "log": "", "warn": "yellow", "error": "bold red"}
LABEL_WIDTH = 11


def _outcome_style(outcome: str) -> str:
    return OUTCOME_STYLES.get(outcome, "bold red" if outcome in ERROR_OUTCOMES else "bold magenta")


def _status_style(status: int | None) -> str:
    if status is None:
        return "dim"
    return {2: "green", 3: "cyan", 4: "yellow"}.get(status // 100, "bold red")


def moment(timestamp_ms: int, tz: tzinfo | None = None, *, date: bool = True) -> str:
    when = datetime.fromtimestamp(timestamp_ms / 1000, tz)
    if tz is None:
        when = when.astimezone()
    text = when.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S") + f".{when.microsecond // 1000:03d}"
    return f"{text} {when.tzname()}" if date else text


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

    field("Outcome", (outcome, _outcome_style(outcome)))
    field("Request", (str(request.get("method") or "?"), "bold"), " ", str(request.get("url") or ""))
    field("Status", (str(status) if status is not None else "no response", _status_style(status)))
    worker = item.get("scriptName")
    version = item.get("scriptVersion")
    field(
        "Worker",
        (worker or "-", "cyan" if worker else "dim"),
        (f"  version {version}" if version is not None else "", "dim"),
        ("  tags " + ", ".join(item.get("scriptTags") or ()) if item.get("scriptTags") else "", "dim"),
    )
    field("Namespace", str(item.get("dispatchNamespace") or "-"))
    field("Time", moment(int(item.get("eventTimestamp") or 0), tz))
    field("Duration", f"wall {item.get('wallTime', 0)} ms", ("  ·  ", "dim"), f"cpu {item.get('cpuTime', 0)} ms")
    headers = request.get("headers") or {}
    if headers:
        text.append("Headers\n", "bold")
        for name, value in headers.items():
            text.append(f"  {name}: ", "dim")
            text.append(f"{value}\n")

    logs = item.get("logs") or []
    text.append(f"\nLogs ({len(logs)})\n", "bold underline")
    if not logs:
        text.append("  none\n", "dim")
    for log in logs:
        level = str(log.get("level") or "log")
        text.append(f"  {moment(int(log.get('timestamp') or 0), tz, date=False)} ", "dim")
        text.append(f"{level:<5} ", LEVEL_STYLES.get(level, "") if level in LOG_LEVELS else "magenta")
        text.append(" ".join(str(part) for part in log.get("message") or ()) + "\n")

    subrequests = item.get("subrequests") or []
    if subrequests:
        text.append(f"\nSubrequests ({len(subrequests)})\n", "bold underline")
        for sub in subrequests:
            status = sub.get("status")
            text.append(f"  {sub.get('method', '?')} ", "bold")
            text.append(f"{sub.get('url', '')} ")
            if status is not None:
                text.append(str(status), _status_style(status))
            else:
                text.append(str(sub.get("error") or "error"), "bold red")
            text.append(f"  {sub.get('durationMs', 0)} ms via {sub.get('via', '?')}\n", "dim")
    consumed = event.get("consumedEvents")
    if consumed is not None:
        text.append(f"\nConsumed events ({len(consumed)})\n", "bold underline")
        for entry in consumed:
            text.append(f"  {entry.get('scriptName') or '-'}\n")

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
    if item.get("truncated"):
        text.append("\nLogs were truncated by the engine (too many lines or bytes).\n", "yellow")
    text.rstrip()
    return text


class TraceDetailScreen(ModalScreen[None]):
    """The whole trace item: summary on top, pretty JSON below; esc closes."""

    BINDINGS = [
        Binding("escape", "close", "Close", id="trace.close"),
        Binding("y", "copy", "Copy JSON", id="trace.copy"),
    ]
    DEFAULT_CSS = """
    TraceDetailScreen {
        align: center middle;
        #trace-dialog {
            width: 90%;
            max-width: 140;
            height: 90%;
            border: thick $primary;
            background: $surface;
            padding: 0 1;
        }
        #trace-title { width: 1fr; text-style: bold; margin: 0 0 1 0; }
        #trace-body { height: 1fr; }
        #trace-json-title { text-style: bold underline; margin: 1 0 0 0; }
        #trace-hint { color: $text-muted; margin: 1 0 0 0; }
    }
    """

    def __init__(self, item: dict[str, Any], *, tz: tzinfo | None = None) -> None:
        super().__init__()
        self.item = item
        self.tz = tz

    def compose(self) -> ComposeResult:
        request = (self.item.get("event") or {}).get("request") or {}
        title = Text.assemble(
            ("Trace  ", "bold"),
            (str(self.item.get("outcome") or "?"), _outcome_style(str(self.item.get("outcome")))),
            "  ",
            (str(request.get("method") or "?"), "bold"),
            " ",
            str(request.get("url") or ""),
        )
        # Not the app's `.dialog` classes: those size dialogs to their content, and this one
        # scrolls whatever the item's size.
        with Vertical(id="trace-dialog"):
            yield Label(title, id="trace-title")
            with VerticalScroll(id="trace-body"):
                yield Static(summary(self.item, self.tz), id="trace-summary")
                yield Label("Item (JSON)", id="trace-json-title")
                yield Static(JSON(self.json_text(), indent=2), id="trace-json")
            yield Label("esc close  ·  y copy JSON  ·  ↑↓ pgup pgdn scroll", id="trace-hint")

    def on_mount(self) -> None:
        self.query_one("#trace-body").focus()

    def json_text(self) -> str:
        return json.dumps(self.item, indent=2, ensure_ascii=False, default=str)

    def action_close(self) -> None:
        self.dismiss(None)

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.json_text())
        self.notify("Trace item copied as JSON", title="Trace")


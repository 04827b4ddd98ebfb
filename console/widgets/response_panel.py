"""The response display: status coloured by class in the border title, size and time in the
subtitle, and tabs for the body (JSON pretty-printed and highlighted), the headers and the
invocation's trace (outcome, CPU and wall time, logs, exceptions)."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.highlight import highlight
from textual.widgets import DataTable, Static, TabbedContent, TabPane

from wasmdeck.engine.http import Response

MAX_SHOWN_BODY = 128 * 1024
HEXDUMP_BYTES = 512

STATUS_COLOURS = {2: "green", 3: "cyan", 4: "yellow", 5: "red"}
OUTCOME_STYLES = {"ok": "green", "scriptNotFound": "yellow", "canceled": "yellow"}
LEVEL_STYLES = {"debug": "dim", "info": "cyan", "log": "", "warn": "yellow", "error": "bold red"}


def status_colour(status: int) -> str:
    """2xx green, 3xx cyan, 4xx yellow, 5xx red; anything else magenta."""
    return STATUS_COLOURS.get(status // 100, "magenta")


def status_label(status: int) -> str:
    """`200 OK`, `404 Not Found`; a code without a reason phrase stays a number."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def outcome_text(outcome: str | None) -> Text:
    if not outcome:
        return Text("-", style="dim")
    return Text(outcome, style=OUTCOME_STYLES.get(outcome, "bold red"))


def size_text(size: int) -> str:
    """`21 B`, `1.2 KiB`, `3.4 MiB`."""
    if size < 1024:
        return f"{size} B"
    if size < 2**20:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 2**20:.1f} MiB"


def elapsed_text(seconds: float) -> str:
    """`3 ms` under a second, `1.25 s` above."""
    milliseconds = max(0.0, seconds) * 1000
    return f"{milliseconds:.0f} ms" if milliseconds < 1000 else f"{milliseconds / 1000:.2f} s"


def is_json_type(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json") or media == "text/json"


def _looks_binary(data: bytes) -> bool:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return any(ch < " " and ch not in "\t\n\r\f\v\x1b" for ch in text)


def hexdump(data: bytes, limit: int = HEXDUMP_BYTES) -> str:
    """`00000000  48 65 6c 6c 6f ...  |Hello...|`, 16 bytes a line, at most `limit` bytes."""
    lines = []
    for offset in range(0, min(len(data), limit), 16):
        chunk = data[offset : offset + 16]
        hex_part = " ".join(f"{byte:02x}" for byte in chunk)
        text_part = "".join(chr(byte) if 32 <= byte < 127 else "." for byte in chunk)
        lines.append(f"{offset:08x}  {hex_part:<47}  |{text_part}|")
    return "\n".join(lines)


def body_view(body: bytes, content_type: str | None) -> tuple[str, Content | Text]:
    """What the Body tab shows: a kind (`json`, `text`, `binary`, `empty`) and the renderable."""
    if not body:
        return "empty", Text("(empty body)", style="dim")
    if _looks_binary(body):
        note = Text(f"{len(body):,} bytes of binary" + (f" ({content_type})" if content_type else ""), style="bold")
        note.append("\n\n" + hexdump(body), style="")
        if len(body) > HEXDUMP_BYTES:
            note.append(f"\n… {len(body) - HEXDUMP_BYTES:,} more bytes", style="dim")
        return "binary", note
    text = body.decode("utf-8")
    stripped = text.lstrip()
    if is_json_type(content_type) or stripped[:1] in ("{", "["):
        try:
            parsed = json.loads(text)
        except ValueError:
            pass
        else:
            pretty = json.dumps(parsed, indent=2, ensure_ascii=False)
            return "json", _capped(pretty, lambda shown: highlight(shown, language="json"))
    return "text", _capped(text, lambda shown: Content(shown))


def _capped(text: str, render: Any) -> Content:
    if len(text) <= MAX_SHOWN_BODY:
        return render(text)
    shown = render(text[:MAX_SHOWN_BODY])
    return Content.assemble(shown, (f"\n… showing the first {MAX_SHOWN_BODY // 1024} KiB of {size_text(len(text))}", "dim"))


def trace_view(trace: dict[str, Any]) -> Text:
    """The Trace tab: outcome, worker, times, logs with levels, exceptions with backtraces."""
    if not trace:
        return Text("No trace item came with this response.", style="dim")
    out = Text()

    def field(label: str, value: Text | str) -> None:
        out.append(f"{label:<11}", style="bold")
        out.append_text(value if isinstance(value, Text) else Text(value))
        out.append("\n")

    field("Outcome", outcome_text(trace.get("outcome")))
    name = trace.get("scriptName")
    if name and trace.get("outcome") == "scriptNotFound":
        field("Worker", Text.assemble((str(name), "bold"), (" (not found in this namespace)", "yellow")))
    elif name:
        worker = Text(str(name), style="bold")
        if trace.get("scriptVersion") is not None:
            worker.append(f" v{trace['scriptVersion']}")
        tags = trace.get("scriptTags") or []
        if tags:
            worker.append(f"  tags: {', '.join(tags)}", style="dim")
        field("Worker", worker)
    else:
        field("Worker", Text("none (no worker matched)", style="dim"))
    field("Namespace", str(trace.get("dispatchNamespace", "-")))
    field("CPU time", f"{trace.get('cpuTime', 0)} ms")
    field("Wall time", f"{trace.get('wallTime', 0)} ms")

    logs = trace.get("logs") or []
    out.append(f"\nLogs ({len(logs)})\n", style="bold underline")
    if not logs:
        out.append("  none\n", style="dim")
    for log in logs:
        level = str(log.get("level", "log"))
        out.append(f"  {level:<6}", style=LEVEL_STYLES.get(level, ""))
        out.append(" ".join(str(part) for part in log.get("message", [])) + "\n")

    exceptions = trace.get("exceptions") or []
    out.append(f"\nExceptions ({len(exceptions)})\n", style="bold underline")
    if not exceptions:
        out.append("  none\n", style="dim")
    for exception in exceptions:
        first, *rest = str(exception.get("message", "")).splitlines() or [""]
        out.append(f"  {exception.get('name', 'Error')}", style="bold red")
        out.append(f": {first}\n")
        for line in rest:
            out.append(f"      {line.strip()}\n", style="dim")
    if trace.get("truncated"):
        out.append("\n(logs truncated)\n", style="yellow")
    out.rstrip()
    return out


class ResponsePanel(Vertical):
    """Shows one response; `show(response, elapsed)` replaces what is shown."""

    DEFAULT_CSS = """
    ResponsePanel { border: round $primary 50%; height: 1fr; border-title-align: left; border-subtitle-align: right; }
    ResponsePanel:focus-within { border: round $primary; }
    ResponsePanel TabbedContent, ResponsePanel ContentSwitcher { height: 1fr; }
    ResponsePanel TabPane { padding: 0; height: 1fr; }
    ResponsePanel VerticalScroll { height: 1fr; }
    ResponsePanel #response-body, ResponsePanel #response-trace { padding: 0 1; width: 1fr; }
    ResponsePanel #response-headers { height: 1fr; }
    """

    EMPTY_HINT = "Send a request to see its response here: [b]enter[/b] in the URL or [b]ctrl+s[/b] anywhere."

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.response: Response | None = None
        self.elapsed: float | None = None
        self.body_kind = "none"
        """What the Body tab shows: `none` (nothing sent yet), `empty`, `json`, `text` or `binary`."""
        self.body_text = ""
        """The Body tab's text as shown (JSON pretty-printed), without styles."""
        self.trace_text = ""
        """The Trace tab's text as shown, without styles."""

    def compose(self) -> ComposeResult:
        with TabbedContent(id="response-tabs"):
            with TabPane("Body", id="response-body-tab"):
                with VerticalScroll(id="response-body-scroll"):
                    yield Static(self.EMPTY_HINT, id="response-body")
            with TabPane("Headers", id="response-headers-tab"):
                table: DataTable[object] = DataTable(id="response-headers", cursor_type="row", zebra_stripes=True)
                table.add_columns("Name", "Value")
                yield table
            with TabPane("Trace", id="response-trace-tab"):
                with VerticalScroll(id="response-trace-scroll"):
                    yield Static(Text("No request sent yet.", style="dim"), id="response-trace")

    @on(TabbedContent.TabActivated)
    def _keep_tab_switch_inside(self, event: TabbedContent.TabActivated) -> None:
        # Body/Headers/Trace are this panel's business; the app's own tabs listen for the same message
        event.stop()

    def on_mount(self) -> None:
        self.border_title = "Response"
        self.border_subtitle = ""

    def show(self, response: Response, elapsed: float) -> None:
        self.response = response
        self.elapsed = elapsed
        colour = status_colour(response.status)
        outcome = response.trace.get("outcome") if response.trace else None
        title = Text.assemble("Response ", (f" {status_label(response.status)} ", f"bold black on {colour}"))
        if outcome:
            title.append("  ").append_text(outcome_text(outcome))
        self.border_title = title
        self.border_subtitle = f"{size_text(len(response.body))} · {elapsed_text(elapsed)}"

        self.body_kind, body = body_view(response.body, response.header("content-type"))
        self.body_text = body.plain
        self.query_one("#response-body", Static).update(body)
        self.query_one("#response-body-scroll", VerticalScroll).scroll_home(animate=False)

        table = self.query_one("#response-headers", DataTable)
        table.clear()
        for name, value in response.headers:
            table.add_row(Text(name, style="bold"), value)

        trace = trace_view(response.trace)
        self.trace_text = trace.plain
        self.query_one("#response-trace", Static).update(trace)
        self.query_one("#response-trace-scroll", VerticalScroll).scroll_home(animate=False)

    def show_tab(self, tab: str) -> None:
        """`body`, `headers` or `trace`."""
        self.query_one("#response-tabs", TabbedContent).active = f"response-{tab}-tab"

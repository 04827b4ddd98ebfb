"""The response display: status and the request's outcome in the border title, size and time in
the subtitle, and tabs for the body (JSON pretty-printed and highlighted), the headers, the
trace item of the Worker the request was for (outcome, times, logs, exceptions) and, when a
dispatch Worker fronts the namespace, the dispatcher's own item beside it."""

from __future__ import annotations

import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.highlight import highlight
from textual.widgets import DataTable, Static, TabbedContent, TabPane

from wasmdeck.engine.http import Response

from ..formatting import elapsed_text, outcome_text, size_text, status_colour, status_label
from ..messages import ShowTrace
from ..styles import stylesheet
from .trace_detail import summary

MAX_SHOWN_BODY = 128 * 1024
HEXDUMP_BYTES = 512
TABS = ("body", "headers", "trace", "dispatcher")


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


def _capped(text: str, render: Callable[[str], Content]) -> Content:
    if len(text) <= MAX_SHOWN_BODY:
        return render(text)
    shown = render(text[:MAX_SHOWN_BODY])
    return Content.assemble(shown, (f"\n… showing the first {MAX_SHOWN_BODY // 1024} KiB of {size_text(len(text))}", "dim"))


def _worker_name(item: dict[str, Any]) -> str:
    name = item.get("scriptName")
    version = item.get("scriptVersion")
    return f"{name or '?'}" + (f" v{version}" if version is not None else "")


def trace_view(response: Response) -> Text:
    """The Trace tab: the item of the Worker the request was for, and where the dispatcher's is."""
    trace = response.trace
    if not trace:
        return Text("No trace item came with this response.", style="dim")
    dispatcher = response.dispatcher_trace
    note = Text(style="dim")
    if dispatcher is not None and dispatcher == trace:
        note.append(f"The dispatch Worker {_worker_name(dispatcher)} answered itself: no user Worker ran.")
    elif dispatcher is not None:
        note.append(f"In front of it: dispatch Worker {_worker_name(dispatcher)}, ")
        note.append_text(outcome_text(dispatcher.get("outcome")))
        note.append(f", {dispatcher.get('wallTime', 0)} ms (d shows its item).")
    note.append(("\n" if note else "") + "o opens this item whole.\n\n")
    return note + summary(trace)


def dispatcher_view(response: Response) -> Text:
    """The Dispatcher trace tab: the dispatch Worker's own item, or why there is none."""
    dispatcher = response.dispatcher_trace
    if dispatcher is None:
        return Text("No dispatch Worker handled this request: it went straight to its Worker.", style="dim")
    note = Text(style="dim")
    if dispatcher == response.trace:
        note.append("The dispatch Worker answered itself: no user Worker ran.")
    else:
        note.append(f"It dispatched to {_worker_name(response.trace)}, ")
        note.append_text(outcome_text(response.trace.get("outcome")))
        note.append(" (t shows that item).")
    note.append("\no opens this item whole.\n\n")
    return note + summary(dispatcher)


class ResponsePanel(Vertical):
    """Shows one response; `show(response, elapsed)` replaces what is shown."""

    DEFAULT_CSS = stylesheet(__name__)
    BINDINGS = [
        Binding("b", "show_tab('body')", "Body", id="response.body", show=False, tooltip="Response body"),
        Binding("h", "show_tab('headers')", "Headers", id="response.headers", show=False, tooltip="Response headers"),
        Binding(
            "t", "show_tab('trace')", "Trace", id="response.trace", show=False,
            tooltip="Trace: the item of the request's Worker (logs, exceptions)",
        ),
        Binding(
            "d", "show_tab('dispatcher')", "Dispatcher trace", id="response.dispatcher",
            tooltip="Dispatcher trace: the dispatch Worker's own item",
        ),
        Binding("o", "open_trace", "Open trace", id="response.open", tooltip="Open the shown trace item whole, with its JSON"),
    ]

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
        self.dispatcher_text = ""
        """The Dispatcher trace tab's text as shown, without styles."""

    def compose(self) -> ComposeResult:
        with TabbedContent(id="response-tabs"):
            with TabPane("Body", id="response-body-tab"):
                with VerticalScroll(id="response-body-scroll"):
                    yield Static(self.EMPTY_HINT, id="response-body")
            with TabPane("Headers", id="response-headers-tab"):
                table: DataTable[str | Text] = DataTable(id="response-headers", cursor_type="row", zebra_stripes=True)
                table.add_columns("Name", "Value")
                yield table
            with TabPane("Trace", id="response-trace-tab"):
                with VerticalScroll(id="response-trace-scroll"):
                    yield Static(Text("No request sent yet.", style="dim"), id="response-trace")
            with TabPane("Dispatcher trace", id="response-dispatcher-tab"):
                with VerticalScroll(id="response-dispatcher-scroll"):
                    yield Static(Text("No request sent yet.", style="dim"), id="response-dispatcher")

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
        title = Text.assemble("Response ", (f" {status_label(response.status)} ", f"bold black on {colour}"))
        title.append("  ").append_text(outcome_text(response.outcome))
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

        for tab, view in (("trace", trace_view(response)), ("dispatcher", dispatcher_view(response))):
            setattr(self, f"{tab}_text", view.plain)
            self.query_one(f"#response-{tab}", Static).update(view)
            self.query_one(f"#response-{tab}-scroll", VerticalScroll).scroll_home(animate=False)

    @property
    def active_tab(self) -> str:
        """`body`, `headers`, `trace` or `dispatcher`."""
        active = self.query_one("#response-tabs", TabbedContent).active
        return active.removeprefix("response-").removesuffix("-tab")

    def show_tab(self, tab: str, *, focus: bool = False) -> None:
        """Show `tab` (`body`, `headers`, `trace` or `dispatcher`); with `focus`, put the keyboard in it."""
        if tab not in TABS:
            raise ValueError(f"no response tab {tab!r}; the tabs are {', '.join(TABS)}")
        self.query_one("#response-tabs", TabbedContent).active = f"response-{tab}-tab"
        if focus:
            inner = "#response-headers" if tab == "headers" else f"#response-{tab}-scroll"
            self.query_one(inner).focus()

    def action_show_tab(self, tab: str) -> None:
        self.show_tab(tab, focus=True)

    def shown_item(self) -> dict[str, Any] | None:
        """The trace item the open tab is about: the dispatcher's on its tab, else the request's Worker's."""
        if self.response is None:
            return None
        if self.active_tab == "dispatcher":
            return self.response.dispatcher_trace
        return self.response.trace or None

    def action_open_trace(self) -> None:
        item = self.shown_item()
        if item is None:
            self.notify("No trace item to open: send a request first", severity="warning")
            return
        self.post_message(ShowTrace(item))

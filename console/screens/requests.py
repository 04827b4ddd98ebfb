"""Requests: compose a request, fire it through dispatch, see the response and its trace;
a history of sent requests to fill back or resend."""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.events import Resize
from textual.message import Message
from textual.widgets import DataTable

from wasmdeck.engine.errors import WasmdeckError
from wasmdeck.engine.http import Request, Response

from ..context import UsesConsole
from ..formatting import clip, fit_url, outcome_style, status_style
from ..messages import ShowTrace
from ..styles import stylesheet
from ..widgets.request_form import RequestDraft, RequestForm
from ..widgets.response_panel import ResponsePanel
from ..widgets.trace_detail import TraceDetailScreen

HISTORY_LIMIT = 100
URL_COLUMN_MIN = 16
# (column, width) with the URL's width left out: it takes what the others leave. When the history
# is narrow (a 100-column terminal), the method moves into the URL cell and long outcomes are cut.
WIDE_COLUMNS = (("Method", 7), ("URL", 0), ("Status", 6), ("Outcome", 14))
NARROW_COLUMNS = (("Request", 0), ("Status", 6), ("Outcome", 10))
CELL_PADDING = 2  # DataTable pads each cell by one on either side


@dataclass(frozen=True)
class HistoryEntry:
    """One sent request: what was typed, and what came back."""

    id: int
    draft: RequestDraft
    status: int
    outcome: str | None
    elapsed: float


class RequestsView(UsesConsole, Vertical):
    """The request composer, the response panel and the history of sent requests."""

    DEFAULT_CSS = stylesheet(__name__)

    BINDINGS = [
        Binding("ctrl+s", "send", "Send", id="requests.send"),
        Binding("ctrl+r", "resend", "Resend", id="requests.resend", tooltip="Resend the request selected in the history"),
        Binding("ctrl+l", "focus_url", "URL", id="requests.focus_url", tooltip="Go to the URL and select it"),
        Binding(
            "ctrl+t", "show_trace", "Trace", id="requests.trace",
            tooltip="The response's trace, with the keyboard in the response panel",
        ),
        Binding("escape", "leave_form", "History", id="requests.leave_form", tooltip="Leave the form for the history"),
    ]

    class Sent(Message):
        """A request came back (whatever its status); posted after the panel shows it."""

        def __init__(self, entry: HistoryEntry, response: Response) -> None:
            super().__init__()
            self.entry = entry
            self.response = response

    def __init__(self, history_limit: int = HISTORY_LIMIT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._history: deque[HistoryEntry] = deque(maxlen=history_limit)
        self._ids = itertools.count(1)
        self.last_response: Response | None = None
        self._sending = 0
        self._columns: tuple[tuple[str, int], ...] = WIDE_COLUMNS
        self._url_width = URL_COLUMN_MIN

    def compose(self) -> ComposeResult:
        yield RequestForm(id="request-form")
        with Horizontal(id="requests-lower"):
            yield ResponsePanel(id="response-panel")
            with Vertical(id="requests-history") as history:
                history.border_title = "History"
                history.border_subtitle = "enter: fill · ctrl+r: resend"
                table: DataTable[Text] = DataTable(id="requests-history-table", cursor_type="row", zebra_stripes=True)
                self._add_history_columns(table)
                yield table

    # -- the parts ------------------------------------------------------------------

    @property
    def form(self) -> RequestForm:
        return self.query_one(RequestForm)

    @property
    def panel(self) -> ResponsePanel:
        return self.query_one(ResponsePanel)

    @property
    def history(self) -> list[HistoryEntry]:
        """Sent requests, newest first (at most `history_limit`)."""
        return list(self._history)

    @property
    def namespace(self) -> str:
        return self.host.namespace

    # -- sending --------------------------------------------------------------------

    def send(self, draft: RequestDraft | None = None) -> bool:
        """Send `draft` (default: what the form holds). False, with the error shown inline, if it is malformed."""
        draft = draft or self.form.draft
        try:
            request = draft.build()
        except WasmdeckError as error:
            self.form.show_error(str(error))
            return False
        self.form.show_error("")
        self._dispatch(draft, request)
        return True

    @work(exclusive=True, group="requests-send")
    async def _dispatch(self, draft: RequestDraft, request: Request) -> None:
        panel = self.panel
        panel.loading = True
        self._sending += 1
        clock = self.host.clock
        try:
            started = clock()
            response = await self.host.client.dispatch(request, self.namespace)
            elapsed = clock() - started
        except WasmdeckError as error:
            self.notify(str(error), severity="error", title="Request failed", markup=False)
            return
        except Exception as error:  # a transport failure (e.g. a remote engine gone) must not crash the console
            self.notify(f"{type(error).__name__}: {error}", severity="error", title="Request failed", markup=False)
            return
        finally:
            # a newer send cancels this one (exclusive worker): only the last one clears the spinner
            self._sending -= 1
            panel.loading = self._sending > 0
        self.last_response = response
        panel.show(response, elapsed)
        entry = HistoryEntry(next(self._ids), draft, response.status, response.outcome, elapsed)
        self._history.appendleft(entry)
        self._render_history()
        self.query_one("#requests-history-table", DataTable).move_cursor(row=0, animate=False)
        self.post_message(self.Sent(entry, response))

    def _add_history_columns(self, table: DataTable[Text]) -> None:
        for label, width in self._columns:
            table.add_column(label, width=width or self._url_width, key=label.lower())

    def on_resize(self, _event: Resize) -> None:
        self.call_after_refresh(self._fit_columns)

    def _fit_columns(self) -> None:
        """Give the URL whatever width the other columns (and a scrollbar) leave; when that is too
        little, put the method in the URL's cell and cut long outcomes."""
        table = self.query_one("#requests-history-table", DataTable)
        room = table.size.width - table.styles.scrollbar_size_vertical

        def spare(columns: tuple[tuple[str, int], ...]) -> int:
            return room - sum(width for _, width in columns) - CELL_PADDING * len(columns)

        columns = WIDE_COLUMNS if spare(WIDE_COLUMNS) >= URL_COLUMN_MIN else NARROW_COLUMNS
        url_width = max(URL_COLUMN_MIN, spare(columns))
        if (columns, url_width) != (self._columns, self._url_width):
            self._columns, self._url_width = columns, url_width
            table.clear(columns=True)
            self._add_history_columns(table)
            self._render_history()

    def _cells(self, entry: HistoryEntry) -> list[Text]:
        draft = entry.draft
        cells: dict[str, Text] = {
            "Method": Text(draft.method, style="bold"),
            "URL": Text(fit_url(draft.url, self._url_width), no_wrap=True),
            "Request": Text.assemble((draft.method, "bold"), " ", fit_url(draft.url, self._url_width - len(draft.method) - 1)),
            "Status": Text(str(entry.status), style=status_style(entry.status)),
        }
        outcome = entry.outcome or "-"
        cells["Outcome"] = Text(clip(outcome, dict(self._columns)["Outcome"]).rstrip(), style=outcome_style(outcome))
        return [cells[label] for label, _ in self._columns]

    def _render_history(self) -> None:
        table = self.query_one("#requests-history-table", DataTable)
        cursor = table.cursor_row
        table.clear()
        for entry in self._history:
            table.add_row(*self._cells(entry), key=str(entry.id))
        if table.row_count:
            table.move_cursor(row=min(cursor, table.row_count - 1), animate=False)

    def selected_entry(self) -> HistoryEntry | None:
        table = self.query_one("#requests-history-table", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((entry for entry in self._history if str(entry.id) == key), None)

    # -- events and actions ---------------------------------------------------------

    @on(RequestForm.Send)
    def _form_send(self, event: RequestForm.Send) -> None:
        event.stop()
        self.send(event.draft)

    @on(DataTable.RowSelected, "#requests-history-table")
    def _history_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        entry = self.selected_entry()
        if entry is not None:
            self.form.fill(entry.draft)

    def action_send(self) -> None:
        self.send()

    def action_resend(self) -> None:
        entry = self.selected_entry()
        if entry is None:
            self.notify("Nothing sent yet: there is no request to resend", severity="warning")
            return
        self.form.fill(entry.draft)
        self.send(entry.draft)

    def focus_main(self) -> None:
        """Where the keyboard goes when the tab opens: the URL (escape leaves the form for the history)."""
        self.form.focus_url()

    def action_focus_url(self) -> None:
        self.form.focus_url(select=True)

    def action_show_trace(self) -> None:
        """The Trace tab of the response, with the keyboard in it (b h t d o switch and open from there)."""
        self.panel.show_tab("trace", focus=True)

    @on(ShowTrace)
    def _show_trace(self, event: ShowTrace) -> None:
        event.stop()
        self.app.push_screen(TraceDetailScreen(event.item))

    def action_leave_form(self) -> None:
        self.query_one("#requests-history-table", DataTable).focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "leave_form":
            # escape only means something inside the form; elsewhere it is left to the app
            return self.is_mounted and self.form.has_focus_within
        if action == "show_trace":
            return not (self.is_mounted and self.panel.has_focus_within)  # there already: b h t d o move on
        return True


__all__ = ["HISTORY_LIMIT", "HistoryEntry", "RequestsView"]

"""Tail: live trace panes for the current namespace, stacked or side by side, each with its own filter.

The app owns the one trace stream and pumps it every 50 ms into `add_items()`. This view keeps a
shared buffer of recent rows (every namespace), so a new pane, a changed filter or a namespace
switch can re-filter history; each pane keeps its own bounded buffer of what it shows.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from datetime import tzinfo
from typing import Any

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Vertical
from textual.reactive import reactive

from ..messages import ShowTrace
from ..styles import stylesheet
from ..widgets.tail_pane import TailPane
from ..widgets.trace_detail import TraceDetailScreen
from ..widgets.trace_log import DEFAULT_CAPACITY, TraceRow

MAX_PANES = 6
HISTORY_SIZE = 10_000


def _identity(item: dict[str, Any]) -> tuple[Any, ...]:
    """Enough to recognise a stored item that the live stream already delivered."""
    request = (item.get("event") or {}).get("request") or {}
    return (
        item.get("eventTimestamp"),
        item.get("dispatchNamespace"),
        item.get("scriptName"),
        item.get("outcome"),
        item.get("wallTime"),
        item.get("cpuTime"),
        request.get("method"),
        request.get("url"),
        item.get("instanceId"),
    )


class TailView(Vertical):
    """Live tail panes. The app calls `add_items`, `history` and `namespace_changed`."""

    BINDINGS = [
        Binding("a", "add_pane", "Add pane", id="tail.add", tooltip="Add a pane (each has its own filter)"),
        Binding("x", "close_pane", "Close pane", id="tail.close", show=False),
        Binding("m", "maximize_pane", "Maximise pane", id="tail.maximize", show=False),
        Binding("o", "toggle_orientation", "Stack/side by side", id="tail.orientation", show=False),
    ]
    DEFAULT_CSS = stylesheet(__name__)

    stacked: reactive[bool] = reactive(True)
    """Panes one above the other (True) or side by side (False)."""

    def __init__(
        self,
        *,
        panes: Sequence[str] = ("",),
        capacity: int = DEFAULT_CAPACITY,
        history_size: int = HISTORY_SIZE,
        tz: tzinfo | None = None,
        **kwargs: Any,
    ) -> None:
        """`panes`: the filter text of each pane to start with; `capacity`: rows kept per pane;
        `history_size`: rows kept for re-filtering; `tz`: for displayed times (None: local time)."""
        super().__init__(**kwargs)
        self.capacity = capacity
        self.tz = tz
        self.namespace: str | None = None
        self.maximized: TailPane | None = None
        self._initial_filters = list(panes) or [""]
        self._recent: deque[TraceRow] = deque(maxlen=history_size)
        self._next_seq = 0
        self._pane_number = 0
        self._panes: list[TailPane] = []
        self._current: TailPane | None = None

    def compose(self) -> ComposeResult:
        with Container(id="tail-panes"):
            for text in self._initial_filters:
                yield self._new_pane(text)

    def on_mount(self) -> None:
        # the app's namespace if it has one (the console's); mounted elsewhere, every namespace
        namespace = getattr(self.app, "namespace", None)
        self.namespace = namespace if isinstance(namespace, str) else None

    def watch_stacked(self, stacked: bool) -> None:
        self.set_class(not stacked, "-side-by-side")

    # -- the app's side ---------------------------------------------------------------

    def add_items(self, items: list[dict[str, Any]], dropped: int = 0) -> None:
        """One batch from the live stream (oldest first); `dropped` items were lost upstream."""
        rows = [TraceRow(item, self._next_seq + offset, self.tz) for offset, item in enumerate(items)]
        self._next_seq += len(rows)
        self._recent.extend(rows)
        namespace = self.namespace
        shown = rows if namespace is None else [row for row in rows if row.namespace == namespace]
        if shown or dropped:
            for pane in self._panes:
                pane.accept(shown, dropped)

    def history(self, items: Iterable[dict[str, Any]]) -> None:
        """Stored items from before the stream started, oldest first; already-seen items are skipped."""
        known = {_identity(row.item) for row in self._recent}
        fresh = [item for item in items if _identity(item) not in known]
        if not fresh:
            return
        first = self._recent[0].seq if self._recent else self._next_seq
        rows = [TraceRow(item, first - len(fresh) + offset, self.tz) for offset, item in enumerate(fresh)]
        self._recent = deque(rows + list(self._recent), maxlen=self._recent.maxlen)
        self._reload()

    def namespace_changed(self, namespace: str) -> None:
        self.namespace = namespace
        self._reload()

    # -- panes --------------------------------------------------------------------------

    @property
    def panes(self) -> list[TailPane]:
        return list(self._panes)

    @property
    def current_pane(self) -> TailPane:
        """The pane holding the focus, or the last one that did."""
        current = self._current
        return current if current is not None and current in self._panes else self._panes[0]

    def visible_rows(self) -> list[TraceRow]:
        """Recent rows of the current namespace, oldest first."""
        namespace = self.namespace
        return [row for row in self._recent if namespace is None or row.namespace == namespace]

    def focus_pane(self, pane: TailPane | None = None) -> None:
        """Focus a pane's lines (the current pane by default)."""
        (pane or self.current_pane).log_view.focus()

    def focus_main(self) -> None:
        """What the app calls when the tail tab is shown."""
        self.focus_pane()

    def add_pane(self, filter_text: str = "") -> TailPane:
        """Mount a new pane showing the buffered history through its filter.

        Raises `InvalidInput` (and adds nothing) when the filter text does not parse."""
        pane = self._new_pane(filter_text)
        pane.load(self.visible_rows())
        if self.maximized is not None:
            self._restore()
        self.query_one("#tail-panes").mount(pane)
        return pane

    async def close_pane(self, pane: TailPane) -> None:
        if len(self._panes) <= 1:
            self.notify("The last pane stays open", severity="warning", title="Tail")
            return
        index = self._panes.index(pane)
        self._panes.remove(pane)
        if self.maximized is pane:
            self._restore()
        await pane.remove()
        self._current = self._panes[min(index, len(self._panes) - 1)]
        self.focus_pane(self._current)

    def toggle_maximize(self, pane: TailPane) -> None:
        if self.maximized is not None:
            self._restore()
            return
        self.maximized = pane
        for other in self._panes:
            other.set_class(other is not pane, "-hidden")

    def _restore(self) -> None:
        self.maximized = None
        for pane in self._panes:
            pane.remove_class("-hidden")

    def _new_pane(self, filter_text: str) -> TailPane:
        pane = TailPane(filter_text, title=f"#{self._pane_number + 1}", capacity=self.capacity)
        self._pane_number += 1
        self._panes.append(pane)
        return pane

    def _reload(self) -> None:
        rows = self.visible_rows()
        for pane in self._panes:
            pane.load(rows)

    # -- actions and events -------------------------------------------------------------

    def action_add_pane(self) -> None:
        if len(self._panes) >= MAX_PANES:
            self.notify(f"At most {MAX_PANES} panes", severity="warning", title="Tail")
            return
        pane = self.add_pane()
        self.call_after_refresh(self.focus_pane, pane)

    async def action_close_pane(self) -> None:
        await self.close_pane(self.current_pane)

    def action_maximize_pane(self) -> None:
        self.toggle_maximize(self.current_pane)
        self.focus_pane()

    def action_toggle_orientation(self) -> None:
        self.stacked = not self.stacked

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        for pane in self._panes:
            if event.widget is pane or pane in event.widget.ancestors:
                self._current = pane
                return

    @on(TailPane.FilterChanged)
    def _pane_filter_changed(self, event: TailPane.FilterChanged) -> None:
        event.stop()
        event.pane.load(self.visible_rows())

    @on(ShowTrace)
    def _show_trace(self, event: ShowTrace) -> None:
        event.stop()
        self.app.push_screen(TraceDetailScreen(event.item, tz=self.tz))

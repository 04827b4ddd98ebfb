"""A trace log: one line per trace item, in a widget that renders only the visible lines.

- `TraceRow` wraps one trace item with the width-independent parts of its line, computed once.
- `column_layout` and `render_row` lay a row out in any width, status and outcome always kept.
- `TraceLog` is a Line API `ScrollView`: a bounded deque of rows, a cursor, follow mode, and a
  small cache of rendered strips. Only the lines on screen are ever rendered.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from datetime import tzinfo
from functools import lru_cache
from typing import Any

from rich.cells import set_cell_size
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ..formatting import clip, clock_time, fit_url, middle_truncate, outcome_style, short_duration, status_style
from ..messages import ShowTrace
from ..styles import stylesheet

DEFAULT_CAPACITY = 10_000


# -- one line per trace item ------------------------------------------------------------

class TraceRow:
    """A trace item plus what its line shows, computed once; shared by every pane that shows it."""

    __slots__ = (
        "item", "seq", "namespace", "time", "method", "url", "status", "outcome",
        "wall", "worker", "logs", "exceptions", "truncated", "is_url", "_haystack",
    )  # fmt: skip

    def __init__(self, item: dict[str, Any], seq: int, tz: tzinfo | None = None) -> None:
        event = item.get("event") or {}
        request = event.get("request") or {}
        response = event.get("response") or {}
        self.item = item
        self.seq = seq
        self.namespace: str | None = item.get("dispatchNamespace")
        self.time = clock_time(int(item.get("eventTimestamp") or 0), tz)
        consumed = event.get("consumedEvents")
        instance = event.get("instance")
        if consumed is not None:  # a Tail Worker's invocation: what it consumed instead of a request
            self.method = "TAIL"
            self.url = f"{len(consumed)} event(s): " + ", ".join(sorted({str(c.get('scriptName')) for c in consumed}))
        elif isinstance(instance, dict):  # a warm instance that failed while idle: no request at all
            served = int(instance.get("invocations") or 0)
            self.method = "RETIRED"
            self.url = (
                f"{instance.get('retired')} · instance {instance.get('id')} · "
                f"after {served} invocation{'' if served == 1 else 's'}"
            )
        else:
            self.method = str(request.get("method") or "?")
            self.url = str(request.get("url") or "")
        self.status: int | None = response.get("status")
        self.outcome = str(item.get("outcome") or "?")
        self.wall = short_duration(int(item.get("wallTime") or 0))
        self.worker: str | None = item.get("scriptName")
        self.logs = len(item.get("logs") or ())
        self.exceptions = len(item.get("exceptions") or ())
        self.truncated = bool(item.get("truncated"))
        self.is_url = consumed is None and not isinstance(instance, dict)
        """False when the URL column says what the item is about instead (cut at its end, not its middle)."""
        self._haystack: str | None = None

    def contains(self, needle: str) -> bool:
        """Case-insensitive: in the line's fields, its logs or its exceptions (for highlighting)."""
        if self._haystack is None:
            item = self.item
            parts = [self.method, self.url, str(self.status or ""), self.outcome, self.worker or "", str(item.get("instanceId") or "")]
            parts += [" ".join(str(m) for m in log.get("message", ())) for log in item.get("logs") or ()]
            parts += [f"{e.get('name')}: {e.get('message')}" for e in item.get("exceptions") or ()]
            self._haystack = "\n".join(parts).lower()
        return needle.lower() in self._haystack


# Columns left to right; the URL takes whatever width the others leave. When a pane is narrow
# (side by side on a 100-column terminal), outcome and worker shrink first, then flags, method,
# wall time and time go, then outcome and worker shrink again and the URL may narrow to
# MIN_URL_NARROW; the worker goes last. Status and outcome always stay: they are what a tail is
# watched for, and the worker tells a dispatcher's line from its tenant's.
_WIDE = {"time": 8, "method": 7, "url": 0, "status": 3, "outcome": 16, "wall": 7, "worker": 16, "flags": 7}
_SHRINK = {"outcome": 10, "worker": 10}
_SHRINK_MORE = {"outcome": 9, "worker": 7}
_DROP_ORDER = ("flags", "method", "wall", "time")
MIN_URL = 20
MIN_URL_NARROW = 7
MIN_OUTCOME = 4


@lru_cache(maxsize=64)
def column_layout(width: int) -> tuple[tuple[str, int], ...]:
    """(column, width) pairs that fit `width` cells, one space between columns (from about 20 cells up)."""
    columns = dict(_WIDE)

    def spare() -> int:
        return width - (sum(w for name, w in columns.items() if name != "url") + len(columns) - 1)

    if spare() < MIN_URL:
        columns.update(_SHRINK)
    for name in _DROP_ORDER:
        if spare() >= MIN_URL:
            break
        del columns[name]
    if spare() < MIN_URL_NARROW:
        columns.update(_SHRINK_MORE)
    if spare() < MIN_URL_NARROW:
        del columns["worker"]
    if spare() < MIN_URL_NARROW:  # narrower still: the outcome gives up cells before the URL vanishes
        columns["outcome"] = max(MIN_OUTCOME, columns["outcome"] - (MIN_URL_NARROW - spare()))
    columns["url"] = max(MIN_URL_NARROW, spare())
    return tuple(columns.items())


def _status_cell(status: int | None) -> tuple[str, str]:
    if status is None:
        return "  -", "dim"
    return f"{status:>3}", status_style(status)


def row_cells(row: TraceRow, width: int) -> list[tuple[str, str]]:
    """The row's (text, style) pieces for a line `width` cells wide."""
    cells: list[tuple[str, str]] = []
    add = cells.append
    for index, (column, size) in enumerate(column_layout(width)):
        if index:
            add((" ", ""))
        if column == "time":
            add((row.time, "dim"))
        elif column == "method":
            add((set_cell_size(row.method, size), "bold"))
        elif column == "url":
            add((set_cell_size(fit_url(row.url, size), size) if row.is_url else clip(row.url, size), ""))
        elif column == "status":
            add(_status_cell(row.status))
        elif column == "outcome":
            add((clip(row.outcome, size), outcome_style(row.outcome)))
        elif column == "wall":
            add((row.wall.rjust(size), ""))
        elif column == "worker":
            add((set_cell_size(middle_truncate(row.worker or "-", size), size), "cyan" if row.worker else "dim"))
        elif column == "flags":
            logs = f"L{row.logs}" if row.logs else ""
            errors = f"E{row.exceptions}" if row.exceptions else ""
            more = "+" if row.truncated else ""
            gap = " " if logs and errors else ""
            add((logs, "dim"))
            add((gap + errors, "bold red"))
            add((more.ljust(size - len(logs) - len(gap) - len(errors)), "dim"))
    return cells


@lru_cache(maxsize=512)
def _combined(base: Style, extra: str) -> Style:
    return base + Style.parse(extra) if extra else base


def render_row(
    row: TraceRow, width: int, console: Console, base: Style, highlight: str | None = None, match: Style | None = None
) -> Strip:
    """The row as exactly `width` cells; occurrences of `highlight` get the `match` style."""
    cells = row_cells(row, width)
    if highlight and match is not None:  # the rare case: let Rich find and style the matches
        text = Text(style=base, no_wrap=True, end="")
        for piece, style in cells:
            text.append(piece, style)
        text.highlight_words([highlight], match, case_sensitive=False)
        return Strip(text.render(console), text.cell_len).adjust_cell_length(width, base)
    segments = [Segment(piece, _combined(base, style)) for piece, style in cells if piece]
    return Strip(segments).adjust_cell_length(width, base)


# -- the log: a Line API widget ---------------------------------------------------------


class TraceLog(ScrollView, can_focus=True, inherit_bindings=False):
    """Rows of one pane, newest at the bottom. Renders only the visible lines.

    Follow mode (on by default) keeps the newest row in view. Scrolling or moving the cursor
    up pauses it and counts arrivals in `new_count`; `end` (or scrolling back to the bottom)
    resumes it. ScrollView's own bindings are not inherited: they scroll sideways, which a
    pane never does, and would only clutter the help screen.
    """

    BINDINGS = [
        Binding("up", "cursor_up", "Line up (pauses)", show=False, id="tail.up"),
        Binding("down", "cursor_down", "Line down", show=False, id="tail.down"),
        Binding("pageup", "page_up", "Page up (pauses)", show=False, id="tail.page_up"),
        Binding("pagedown", "page_down", "Page down", show=False, id="tail.page_down"),
        Binding("home", "first", "Oldest line (pauses)", show=False, id="tail.home"),
        Binding("end", "follow", "Newest line, follow", show=False, id="tail.end"),
        Binding("enter", "open", "Open", id="tail.open", tooltip="Open the selected line's trace item whole"),
    ]
    COMPONENT_CLASSES = {"trace-log--cursor", "trace-log--highlight", "trace-log--match"}
    DEFAULT_CSS = stylesheet(__name__)

    class FollowChanged(Message):
        """Follow mode was paused or resumed (by the user or by an action)."""

        def __init__(self, log: TraceLog, follow: bool) -> None:
            super().__init__()
            self.log = log
            self.follow = follow

    def __init__(self, capacity: int = DEFAULT_CAPACITY, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.capacity = capacity
        self.rows: deque[TraceRow] = deque(maxlen=capacity)
        self.cursor = -1
        self.follow = True
        self.new_count = 0
        self.evicted = 0
        self.highlight: str | None = None
        # Rendered lines, so a frame that only shifts the view re-renders nothing. A few screens'
        # worth: every cached Strip is a handful of objects the garbage collector must walk.
        self._strips: LRUCache[tuple[TraceRow, int, str | None], Strip] = LRUCache(256)
        self._moving = False  # True while we scroll ourselves, so the scroll watcher can tell
        self._styles = (Style(), Style(), Style(), Style())  # base, cursor, highlight, match

    # -- feeding --------------------------------------------------------------------

    def replace(self, rows: Iterable[TraceRow]) -> None:
        """Show these rows instead (a new filter, history, a namespace); follow resumes."""
        self.rows = deque(rows, maxlen=self.capacity)
        self.new_count = 0
        self._strips.clear()
        self._set_follow(True)
        self._sync()

    def append(self, rows: list[TraceRow]) -> int:
        """Add a batch at the bottom; return how many old rows fell off the top."""
        if not rows:
            return 0
        overflow = max(0, len(self.rows) + len(rows) - self.capacity)
        self.rows.extend(rows)
        self.evicted += overflow
        if not self.follow:
            self.new_count += len(rows)
            if overflow:  # keep the same rows under the cursor and on screen
                self.cursor = max(0, self.cursor - overflow)
                self._scroll(self.scroll_y - overflow)
        self._sync()
        return overflow

    def clear(self) -> None:
        self.evicted = 0
        self.replace(())

    def _sync(self) -> None:
        """After the rows changed: size, cursor, scroll position and one refresh."""
        if not self.is_mounted:  # rows may arrive before the pane is mounted; on_mount syncs
            return
        self._set_line_count(len(self.rows))
        if self.follow:
            self.cursor = len(self.rows) - 1
            self._scroll(self.max_scroll_y)
        else:
            self.cursor = min(self.cursor, len(self.rows) - 1)
        self.refresh()

    def _set_line_count(self, count: int) -> None:
        """Grow the virtual size without a layout.

        `virtual_size` is a layout reactive: assigning it re-lays out the whole screen, which at
        20 batches a second would cost more than rendering the lines. A pane's size never
        depends on its line count, so only the scrollbars need to hear about it.
        """
        size = Size(self.scrollable_content_region.width, count)
        if size != self.virtual_size:
            self.set_reactive(TraceLog.virtual_size, size)
            self._scroll_update(size)

    # -- follow, cursor, scrolling ----------------------------------------------------

    def _set_follow(self, follow: bool) -> None:
        if follow:
            self.new_count = 0
        if follow != self.follow:
            self.follow = follow
            self.post_message(self.FollowChanged(self, follow))

    def _scroll(self, y: float) -> None:
        self._moving = True
        try:
            self.scroll_to(y=max(0, y), animate=False, immediate=True, force=True)
        finally:
            self._moving = False

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if self._moving:
            return
        # Layout clamps scroll_y to the bottom when the pane grows: that is not the user scrolling up.
        if new_value < old_value and self.follow and round(new_value) < self.max_scroll_y:
            self._set_follow(False)
        elif new_value > old_value and not self.follow and round(new_value) >= self.max_scroll_y:
            self._set_follow(True)
            self._sync()

    def move_cursor(self, index: int) -> None:
        """Put the cursor on row `index`; on the last row follow resumes, anywhere else it pauses."""
        if not self.rows:
            return
        index = max(0, min(index, len(self.rows) - 1))
        if index == len(self.rows) - 1:
            self._set_follow(True)
            self._sync()
            return
        self._set_follow(False)
        self.cursor = index
        height = self.scrollable_content_region.height
        if index < self.scroll_y:
            self._scroll(index)
        elif height and index >= self.scroll_y + height:
            self._scroll(index - height + 1)
        self.refresh()

    def action_cursor_up(self) -> None:
        self.move_cursor(self.cursor - 1)

    def action_cursor_down(self) -> None:
        self.move_cursor(self.cursor + 1)

    def action_page_up(self) -> None:
        self.move_cursor(self.cursor - max(1, self.scrollable_content_region.height - 1))

    def action_page_down(self) -> None:
        self.move_cursor(self.cursor + max(1, self.scrollable_content_region.height - 1))

    def action_first(self) -> None:
        self.move_cursor(0)

    def action_follow(self) -> None:
        self._set_follow(True)
        self._sync()

    def toggle_follow(self) -> None:
        if self.follow:
            self._set_follow(False)
        else:
            self.action_follow()

    @property
    def cursor_row(self) -> TraceRow | None:
        return self.rows[self.cursor] if 0 <= self.cursor < len(self.rows) else None

    def action_open(self) -> None:
        row = self.cursor_row
        if row is not None:
            self.post_message(ShowTrace(row.item))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        index = int(self.scroll_y) + offset.y
        if 0 <= index < len(self.rows):
            self.move_cursor(index)
            if event.chain >= 2:
                self.action_open()

    def on_mount(self) -> None:
        self._sync()

    def on_resize(self) -> None:
        self._sync()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()

    # -- rendering --------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        # Resolve the styles once per pass rather than once per line. (A pane being removed is
        # rendered once more after its component styles are gone: hence the defaults.)
        plain = Style()
        self._styles = (
            self.rich_style,
            self.get_component_rich_style("trace-log--cursor", default=plain),
            self.get_component_rich_style("trace-log--highlight", default=plain),
            self.get_component_rich_style("trace-log--match", partial=True, default=plain),
        )
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        index = int(self.scroll_y) + y
        width = self.scrollable_content_region.width
        base, cursor, highlight, match = self._styles
        if not 0 <= index < len(self.rows) or width <= 0:
            return Strip.blank(width, base)
        row = self.rows[index]
        console = self.app.console
        if index == self.cursor and self.has_focus:
            return render_row(row, width, console, base + cursor)
        key = (row, width, self.highlight)
        strip = self._strips.get(key)
        if strip is None:
            if self.highlight and row.contains(self.highlight):
                strip = render_row(row, width, console, base + highlight, self.highlight, match)
            else:
                strip = render_row(row, width, console, base)
            self._strips[key] = strip
        return strip

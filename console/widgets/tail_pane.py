"""A live tail pane: its own filter, follow mode with "+N new", and a log that renders only visible lines.

The pieces, smallest first:

- `parse_filter` reads the compact filter syntax typed after `/` into a `PaneFilter`.
- `TraceRow` wraps one trace item with the width-independent parts of its line, computed once.
- `TraceLog` is a Line API `ScrollView`: a bounded deque of rows, a cursor, follow mode, and a
  small cache of rendered strips. Only the lines on screen are ever rendered.
- `TailPane` puts a border (badge, filter, counts), a filter input and a `TraceLog` together.

Rows reach a pane already batched (the app pumps its trace stream every 50 ms), so each batch
costs one deque extend, one virtual-size update and one refresh, whatever its size.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from functools import lru_cache
from time import monotonic
from typing import Any

from rich.cells import cell_len, set_cell_size
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.cache import LRUCache
from textual.containers import Vertical
from textual.content import Content
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.timer import Timer
from textual.widgets import Input

from wasmdeck.engine.errors import InvalidInput
from wasmdeck.engine.traces import ERROR_OUTCOMES, TraceFilter

from ..messages import ShowTrace
from .modals import ErrorLine

DEFAULT_CAPACITY = 10_000

# -- the filter syntax ------------------------------------------------------------------

FILTER_HELP = (
    "worker:NAME  status:ok|error|canceled  method:GET,POST  header:NAME[:VALUE]  hl:TEXT  "
    'other words search logs ("quote" spaces)  enter applies, esc clears'
)
FILTER_KEYS = ("worker", "status", "method", "header", "hl")
_KEY = re.compile(r"([A-Za-z][A-Za-z0-9_-]*):")
_BARE = re.compile(r"\S*")
_METHOD = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class PaneFilter:
    """What a pane shows (`trace_filter` hides the rest) and what it highlights (`highlight`)."""

    text: str = ""
    trace_filter: TraceFilter = field(default_factory=TraceFilter)
    highlight: str | None = None

    def matches(self, item: dict[str, Any]) -> bool:
        return self.trace_filter.matches(item)

    def __bool__(self) -> bool:
        return bool(self.text.strip())


def _tokens(text: str) -> list[tuple[str | None, str]]:
    """`key:value`, `key:"a value"`, `"free text"` and bare words, in order."""
    tokens: list[tuple[str | None, str]] = []
    position = 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        key = None
        keyed = _KEY.match(text, position)
        if keyed:
            key = keyed.group(1).lower()
            position = keyed.end()
        if position < len(text) and text[position] == '"':
            end = text.find('"', position + 1)
            if end < 0:
                raise InvalidInput(f"the quote in {text[position:]!r} is never closed")
            value = text[position + 1 : end]
            position = end + 1
        else:
            bare = _BARE.match(text, position)
            assert bare is not None
            value = bare.group()
            position = bare.end()
        tokens.append((key, value))
    return tokens


def parse_filter(text: str) -> PaneFilter:
    """Parse `worker:hello status:error method:POST some text`; raise `InvalidInput` with one sentence."""
    worker: str | None = None
    status: str | None = None
    header: str | None = None
    highlight: str | None = None
    methods: list[str] = []
    words: list[str] = []
    for key, value in _tokens(text):
        if key is None:
            words.append(value)
            continue
        if key not in FILTER_KEYS:
            raise InvalidInput(
                f"unknown filter {key + ':'!r}; use {', '.join(k + ':' for k in FILTER_KEYS)} "
                'or put text with a colon in "quotes"'
            )
        if not value.strip():
            raise InvalidInput(f"{key}: needs a value")
        if key == "method":
            for method in value.split(","):
                if not _METHOD.fullmatch(method):
                    raise InvalidInput(f"{method!r} is not an HTTP method")
                methods.append(method.upper())
            continue
        previous = {"worker": worker, "status": status, "header": header, "hl": highlight}[key]
        if previous is not None:
            raise InvalidInput(f"{key}: is given twice")
        if key == "worker":
            worker = value
        elif key == "status":
            status = value.lower()
        elif key == "header":
            header = value
        else:
            highlight = value
    search = " ".join(words) or None
    trace_filter = TraceFilter(worker=worker, status=status, method=tuple(methods), search=search, header=header)
    return PaneFilter(text.strip(), trace_filter, highlight)


# -- one line per trace item ------------------------------------------------------------

OUTCOME_STYLES = {"ok": "green", "scriptNotFound": "yellow", "canceled": "yellow"}
STATUS_STYLES = {2: "green", 3: "cyan", 4: "yellow", 5: "bold red"}


def outcome_style(outcome: str) -> str:
    return OUTCOME_STYLES.get(outcome, "bold red" if outcome in ERROR_OUTCOMES else "magenta")


def clock_time(timestamp_ms: int, tz: tzinfo | None = None) -> str:
    """HH:MM:SS in `tz` (None: the machine's local time)."""
    return datetime.fromtimestamp(timestamp_ms / 1000, tz).strftime("%H:%M:%S")


def clip(text: str, width: int) -> str:
    """`text` in exactly `width` cells, with an ellipsis when it is cut."""
    if cell_len(text) > width:
        return set_cell_size(text, width - 1) + "…" if width > 1 else "…"[:width]
    return set_cell_size(text, width)


def fit_url(url: str, width: int) -> str:
    """The URL in `width` cells: whole if it fits, else without its scheme, then cut in the middle."""
    if cell_len(url) > width:
        url = url.split("://", 1)[-1]
    return middle_truncate(url, width)


def middle_truncate(text: str, width: int) -> str:
    """Keep both ends of a long text (a URL's host and its last path segment) around an ellipsis."""
    if cell_len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    head = (width - 1) * 3 // 5
    tail = width - 1 - head
    return set_cell_size(text[:head], head) + "…" + (text[-tail:] if tail else "")


class TraceRow:
    """A trace item plus what its line shows, computed once; shared by every pane that shows it."""

    __slots__ = (
        "item", "seq", "namespace", "time", "method", "url", "status", "outcome",
        "wall", "worker", "logs", "exceptions", "truncated", "_haystack",
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
        if consumed is not None:  # a Tail Worker's invocation: what it consumed instead of a request
            self.method = "TAIL"
            self.url = f"{len(consumed)} event(s): " + ", ".join(sorted({str(c.get('scriptName')) for c in consumed}))
        else:
            self.method = str(request.get("method") or "?")
            self.url = str(request.get("url") or "")
        self.status: int | None = response.get("status")
        self.outcome = str(item.get("outcome") or "?")
        wall = int(item.get("wallTime") or 0)
        self.wall = f"{wall}ms" if wall < 100_000 else f"{wall // 1000}s"
        self.worker: str | None = item.get("scriptName")
        self.logs = len(item.get("logs") or ())
        self.exceptions = len(item.get("exceptions") or ())
        self.truncated = bool(item.get("truncated"))
        self._haystack: str | None = None

    def contains(self, needle: str) -> bool:
        """Case-insensitive: in the line's fields, its logs or its exceptions (for highlighting)."""
        if self._haystack is None:
            item = self.item
            parts = [self.method, self.url, str(self.status or ""), self.outcome, self.worker or ""]
            parts += [" ".join(str(m) for m in log.get("message", ())) for log in item.get("logs") or ()]
            parts += [f"{e.get('name')}: {e.get('message')}" for e in item.get("exceptions") or ()]
            self._haystack = "\n".join(parts).lower()
        return needle.lower() in self._haystack


# Columns left to right; the URL takes whatever width the others leave.
# When a pane is narrow, outcome and worker shrink first, then flags, method and wall go.
_WIDE = {"time": 8, "method": 7, "url": 0, "status": 3, "outcome": 16, "wall": 7, "worker": 16, "flags": 7}
_SHRINK = {"outcome": 10, "worker": 10}
_DROP_ORDER = ("flags", "method", "wall")
MIN_URL = 20


@lru_cache(maxsize=64)
def column_layout(width: int) -> tuple[tuple[str, int], ...]:
    """(column, width) pairs that fit `width` cells, one space between columns."""
    columns = dict(_WIDE)

    def fixed() -> int:
        return sum(w for name, w in columns.items() if name != "url") + len(columns) - 1

    if fixed() + MIN_URL > width:
        columns.update(_SHRINK)
    for name in _DROP_ORDER:
        if fixed() + MIN_URL <= width:
            break
        del columns[name]
    columns["url"] = max(MIN_URL, width - fixed())
    return tuple(columns.items())


def _status_cell(status: int | None) -> tuple[str, str]:
    if status is None:
        return "  -", "dim"
    return f"{status:>3}", STATUS_STYLES.get(status // 100, "")


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
            add((set_cell_size(fit_url(row.url, size), size), ""))
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
        Binding("enter", "open", "Show trace", id="tail.open"),
    ]
    COMPONENT_CLASSES = {"trace-log--cursor", "trace-log--highlight", "trace-log--match"}
    DEFAULT_CSS = """
    TraceLog {
        overflow-x: hidden;
        scrollbar-size-vertical: 1;
        & > .trace-log--cursor { background: $block-cursor-background; color: $block-cursor-foreground; }
        & > .trace-log--highlight { background: $warning 15%; }
        & > .trace-log--match { background: $warning 60%; text-style: bold; }
    }
    """

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


# -- the pane ---------------------------------------------------------------------------


class TailPane(Vertical):
    """One live tail: a bordered `TraceLog` with its own filter, follow badge and counts.

    Rows come from the `TailView` (already restricted to the current namespace): `accept()`
    for each live batch, `load()` to re-show history after a filter, namespace or history change.
    """

    BINDINGS = [
        Binding("slash", "edit_filter", "Filter", id="tail.filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="tail.clear_filter"),
        Binding("f", "toggle_follow", "Follow/pause", id="tail.follow"),
        Binding("c", "clear", "Clear", id="tail.clear"),
    ]

    LABEL_PERIOD = 0.25
    """Seconds between two repaints of the border counts under a steady flow."""

    class FilterChanged(Message):
        """The pane's filter changed: it wants history re-filtered through `load()`."""

        def __init__(self, pane: TailPane) -> None:
            super().__init__()
            self.pane = pane

    def __init__(self, filter_text: str = "", *, title: str = "", capacity: int = DEFAULT_CAPACITY, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filter = parse_filter(filter_text)
        self.title = title
        self.capacity = capacity
        self.dropped = 0
        self._last_seq: int | None = None
        self._cleared_after: int | None = None
        self._labels: tuple[Content, Content] | None = None
        self._labels_at = 0.0
        self._label_timer: Timer | None = None
        self.log_view = TraceLog(capacity=capacity)
        self.log_view.highlight = self.filter.highlight

    def compose(self) -> ComposeResult:
        # Hidden (and disabled, so it never takes the focus) until `/` opens it.
        yield Input(self.filter.text, placeholder=FILTER_HELP, classes="tail-filter", disabled=True, compact=True)
        yield ErrorLine(classes="-empty")
        yield self.log_view

    def on_mount(self) -> None:
        self.update_labels()

    # -- what the view calls ------------------------------------------------------------

    def accept(self, rows: list[TraceRow], dropped: int = 0) -> None:
        """A live batch: keep the rows this pane's filter matches; count upstream losses."""
        if rows:
            self._last_seq = rows[-1].seq
        matches = self.filter.matches
        shown = [row for row in rows if matches(row.item)]
        self.dropped += dropped
        self.log_view.append(shown)
        if shown or dropped:
            self._labels_due()

    def load(self, rows: Iterable[TraceRow]) -> None:
        """Replace the contents with the matching rows (oldest first), minus anything cleared."""
        rows = list(rows)
        if rows and (self._last_seq is None or rows[-1].seq > self._last_seq):
            self._last_seq = rows[-1].seq
        after = self._cleared_after
        self.log_view.replace(
            row for row in rows if (after is None or row.seq > after) and self.filter.matches(row.item)
        )
        self.update_labels()

    # -- state ------------------------------------------------------------------------

    @property
    def follow(self) -> bool:
        return self.log_view.follow

    @property
    def new_count(self) -> int:
        return self.log_view.new_count

    @property
    def evicted(self) -> int:
        return self.log_view.evicted

    @property
    def line_count(self) -> int:
        return len(self.log_view.rows)

    @property
    def items(self) -> list[dict[str, Any]]:
        """The trace items this pane holds, oldest first."""
        return [row.item for row in self.log_view.rows]

    def _labels_due(self) -> None:
        """Counts change with every batch, and each border change repaints the whole pane: at 20
        batches a second that costs more than it tells. So counts follow at most every
        LABEL_PERIOD; follow/pause and filter changes still show at once."""
        if self._label_timer is not None:
            return
        wait = self._labels_at + self.LABEL_PERIOD - monotonic()
        if wait <= 0:
            self.update_labels()
        else:
            self._label_timer = self.set_timer(wait, self._flush_labels)

    def _flush_labels(self) -> None:
        self._label_timer = None
        self.update_labels()

    def update_labels(self) -> None:
        """Border title (badge, "+N new", filter) and subtitle (lines, dropped, evicted)."""
        self._labels_at = monotonic()
        log = self.log_view
        if log.follow:
            badge = Content.styled(" TAIL ", "bold reverse $success")
        else:
            badge = Content.styled(f" PAUSED +{log.new_count:,} new ", "bold reverse $warning")
        title = [badge, " "]
        if self.title:
            title += [Content.styled(self.title, "bold"), " "]
        title.append(Content.styled(self.filter.text, "$accent") if self.filter else Content.styled("all", "dim"))
        counts: list[Content | str] = [f"{len(log.rows):,} lines"]
        if self.dropped:
            counts += [" · ", Content.styled(f"{self.dropped:,} dropped upstream", "bold $error")]
        if log.evicted:
            counts += [" · ", Content.styled(f"{log.evicted:,} evicted", "bold $warning")]
        # Assigning a border label repaints the pane: only do it when the text changed.
        labels = (Content.assemble(*title), Content.assemble(*counts))
        if labels != self._labels:
            self._labels = labels
            self.border_title, self.border_subtitle = labels

    @on(TraceLog.FollowChanged)
    def _follow_changed(self, event: TraceLog.FollowChanged) -> None:
        event.stop()
        self.update_labels()

    # -- the filter input ----------------------------------------------------------------

    def set_filter(self, text: str) -> None:
        """Apply filter text; raises `InvalidInput` (and changes nothing) when it does not parse."""
        self.filter = parse_filter(text)
        self.log_view.highlight = self.filter.highlight
        self.query_one(ErrorLine).show("")
        self.update_labels()
        self.post_message(self.FilterChanged(self))

    def _show_filter_input(self, show: bool) -> Input:
        filter_input = self.query_one(".tail-filter", Input)
        filter_input.disabled = not show
        self.set_class(show, "-filtering")
        if not show:
            self.query_one(ErrorLine).show("")
            self.log_view.focus()
        return filter_input

    def action_edit_filter(self) -> None:
        filter_input = self._show_filter_input(True)
        filter_input.value = self.filter.text
        filter_input.focus()

    def action_clear_filter(self) -> None:
        self._show_filter_input(False).value = ""
        if self.filter:
            self.set_filter("")

    @on(Input.Submitted, ".tail-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            self.set_filter(event.value)
        except InvalidInput as error:
            self.query_one(ErrorLine).show(str(error))
            return
        self._show_filter_input(False)

    def action_toggle_follow(self) -> None:
        self.log_view.toggle_follow()

    def action_clear(self) -> None:
        """Forget everything shown so far (history included); new items keep coming."""
        self._cleared_after = self._last_seq
        self.dropped = 0
        self.log_view.clear()
        self.update_labels()


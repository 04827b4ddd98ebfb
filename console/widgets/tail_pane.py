"""A live tail pane: its own filter, follow mode with "+N new", and a log that renders only visible lines.

- `parse_filter` reads the compact filter syntax typed after `/` into a `PaneFilter`.
- `TailPane` puts a border (badge, filter, counts), a filter input and a `TraceLog`
  (`trace_log.py`) together.

Rows reach a pane already batched (the app pumps its trace stream every 50 ms), so each batch
costs one deque extend, one virtual-size update and one refresh, whatever its size.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input

from wasmdeck.engine.errors import InvalidInput
from wasmdeck.engine.traces import TraceFilter

from ..styles import stylesheet
from .error_line import ErrorLine
from .trace_log import DEFAULT_CAPACITY, TraceLog, TraceRow



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


# -- the pane ---------------------------------------------------------------------------


class TailPane(Vertical):
    """One live tail: a bordered `TraceLog` with its own filter, follow badge and counts.

    Rows come from the `TailView` (already restricted to the current namespace): `accept()`
    for each live batch, `load()` to re-show history after a filter, namespace or history change.
    """

    DEFAULT_CSS = stylesheet(__name__)
    BINDINGS = [
        Binding("slash", "edit_filter", "Filter", id="tail.filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="tail.clear_filter"),
        Binding("f", "toggle_follow", "Follow", id="tail.follow", tooltip="Pause or resume following new lines"),
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
        title: list[Content | str] = [badge, " "]
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

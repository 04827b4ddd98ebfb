"""How the console shows the values every screen shares: outcomes, HTTP statuses, log levels,
sizes, durations, times and warm instances. One place, so a 500 or an `exceededCpu` looks the
same everywhere."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, tzinfo
from http import HTTPStatus
from typing import Any

from rich.cells import cell_len, set_cell_size
from rich.text import Text

from wasmdeck.engine.instances import FAILURE_REASONS
from wasmdeck.engine.traces import ERROR_OUTCOMES, LOG_LEVELS

# -- outcomes ----------------------------------------------------------------------------

_QUIET_OUTCOMES = {"ok": "green", "scriptNotFound": "yellow", "canceled": "yellow"}


def outcome_style(outcome: str | None) -> str:
    """ok green; not found and canceled yellow; a failure bold red; none dim; anything unknown magenta."""
    if not outcome or outcome == "-":
        return "dim"
    return _QUIET_OUTCOMES.get(outcome, "bold red" if outcome in ERROR_OUTCOMES else "magenta")


def outcome_text(outcome: str | None) -> Text:
    """The outcome in its style; `-` when there is none."""
    return Text(outcome or "-", style=outcome_style(outcome))


# -- HTTP statuses ------------------------------------------------------------------------

_STATUS_STYLES = {2: "green", 3: "cyan", 4: "yellow", 5: "bold red"}
_STATUS_COLOURS = {2: "green", 3: "cyan", 4: "yellow", 5: "red"}


def status_style(status: int | None) -> str:
    """2xx green, 3xx cyan, 4xx yellow, 5xx bold red; no status dim; anything else magenta."""
    if status is None:
        return "dim"
    return _STATUS_STYLES.get(status // 100, "magenta")


def status_colour(status: int) -> str:
    """The plain colour of a status class, for a badge's background."""
    return _STATUS_COLOURS.get(status // 100, "magenta")


def status_label(status: int) -> str:
    """`200 OK`, `404 Not Found`; a code without a reason phrase stays a number."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


# -- error rates -----------------------------------------------------------------------------

ERROR_RATE_ALERT = 0.05
"""From this share of failed requests on, an error rate is shown as an alarm."""


def error_rate_style(rate: float) -> str:
    return "bold red" if rate >= ERROR_RATE_ALERT else "green"


# -- log levels ---------------------------------------------------------------------------

_LEVEL_STYLES = {"debug": "dim", "info": "cyan", "log": "", "warn": "yellow", "error": "bold red"}


def level_style(level: str) -> str:
    """A log line's level; a level the engine does not know is magenta."""
    return _LEVEL_STYLES[level] if level in LOG_LEVELS else "magenta"


# -- sizes and durations ------------------------------------------------------------------


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


def short_duration(milliseconds: int) -> str:
    """A tail line's wall time in at most 7 cells: `12ms`, `250s`."""
    return f"{milliseconds}ms" if milliseconds < 100_000 else f"{milliseconds // 1000}s"


# -- warm instances -------------------------------------------------------------------------
# A worker's numbers as `EngineClient.instance_stats` gives them: busy, idle, starting (now),
# started, invocations, reusedInvocations and retired {reason: count} since the engine started.


def instances_now(stats: Mapping[str, Any] | None) -> Text:
    """`busy/idle` instances now (one starting counts as busy: it starts for an invocation);
    `-` when no instance of the worker ever ran."""
    if not stats:
        return Text("-", style="dim")
    busy = int(stats.get("busy") or 0) + int(stats.get("starting") or 0)
    idle = int(stats.get("idle") or 0)
    return Text(f"{busy}/{idle}", style="" if busy or idle else "dim")


def reuse_share(stats: Mapping[str, Any] | None) -> float | None:
    """The share of invocations served by an instance that had served before; None before any."""
    invocations = int((stats or {}).get("invocations") or 0)
    if not invocations:
        return None
    return int((stats or {}).get("reusedInvocations") or 0) / invocations


def reuse_text(stats: Mapping[str, Any] | None) -> Text:
    """`96%` of invocations on a warm instance; `-` before the first."""
    share = reuse_share(stats)
    return Text("-", style="dim") if share is None else Text(f"{share:.0%}")


def retirement_style(reason: str) -> str:
    """A failure (trap, a limit, a protocol violation...) bold red; a planned end (idle, outdated, asked) dim."""
    return "bold red" if reason in FAILURE_REASONS else "dim"


def retirements_text(retired: Mapping[str, int] | None) -> Text:
    """`7: trap 2 · idle 5`, most frequent first, failures in red; `none` when nothing retired."""
    counts = {reason: int(count) for reason, count in (retired or {}).items() if count}
    if not counts:
        return Text("none", style="dim")
    text = Text(f"{sum(counts.values())}: ")
    for index, (reason, count) in enumerate(sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))):
        if index:
            text.append(" · ", style="dim")
        text.append(reason, style=retirement_style(reason))
        text.append(f" {count}")
    return text


# -- times --------------------------------------------------------------------------------


def _local(timestamp_ms: int, tz: tzinfo | None) -> datetime:
    """The moment in `tz`; None means the machine's local time zone."""
    when = datetime.fromtimestamp(timestamp_ms / 1000, tz)
    return when if tz is not None else when.astimezone()


def clock_time(timestamp_ms: int, tz: tzinfo | None = None) -> str:
    """`14:03:27`: a tail line's time (made for every line, so kept cheap)."""
    return datetime.fromtimestamp(timestamp_ms / 1000, tz).strftime("%H:%M:%S")


def date_time(timestamp_ms: int, tz: tzinfo | None = None, *, seconds: bool = False) -> str:
    """`2026-11-27 14:03` (with `seconds`, `2026-11-27 14:03:27`): when a version was made."""
    return datetime.fromtimestamp(timestamp_ms / 1000, tz).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def moment(timestamp_ms: int, tz: tzinfo | None = None, *, date: bool = True) -> str:
    """To the millisecond: `2026-11-27 14:03:27.120 UTC`, or `14:03:27.120` without the date."""
    when = _local(timestamp_ms, tz)
    text = when.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S") + f".{when.microsecond // 1000:03d}"
    return f"{text} {when.tzname()}" if date else text


# -- fitting text into columns --------------------------------------------------------------


def clip(text: str, width: int) -> str:
    """`text` in exactly `width` cells, with an ellipsis when it is cut."""
    if cell_len(text) > width:
        return set_cell_size(text, width - 1) + "…" if width > 1 else "…"[:width]
    return set_cell_size(text, width)


def middle_truncate(text: str, width: int) -> str:
    """Keep both ends of a long text (a URL's host and its last path segment) around an ellipsis."""
    if cell_len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    head = (width - 1) * 3 // 5
    tail = width - 1 - head
    return set_cell_size(text[:head], head) + "…" + (text[-tail:] if tail else "")


def fit_url(url: str, width: int) -> str:
    """The URL in at most `width` cells: whole if it fits, else without its scheme, then cut in the middle."""
    if cell_len(url) > width:
        url = url.split("://", 1)[-1]
    return middle_truncate(url, width)

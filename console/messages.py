"""App-level messages: widgets announce what happened; the app decides who refreshes."""

from __future__ import annotations

from typing import Any

from textual.message import Message


class WorkersChanged(Message):
    """A worker was deployed, edited, rolled back or deleted."""


class LimitsChanged(Message):
    """A tag's limits were set or removed."""


class ShowTrace(Message):
    """Open one trace item whole."""

    def __init__(self, item: dict[str, Any]) -> None:
        super().__init__()
        self.item = item


class PlatformChanged(Message):
    """A namespace's Outbound Worker, egress policy, dispatch Worker or tail consumers changed."""


class UnsavedChanged(Message):
    """A view with a save step gained or lost edits that are not saved yet."""

    def __init__(self, unsaved: bool) -> None:
        super().__init__()
        self.unsaved = unsaved

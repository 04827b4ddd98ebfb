"""An inline error under a form: one sentence from the engine, hidden while there is none."""

from __future__ import annotations

from textual.widgets import Static

from ..styles import stylesheet


class ErrorLine(Static):
    DEFAULT_CSS = stylesheet(__name__)

    def show(self, message: str) -> None:
        """Show `message` (markup); "" hides the line."""
        self.update(message)
        self.set_class(not message, "-empty")

"""`?`: help built from the bindings that are active where the user pressed it."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label

GROUP_TITLES = {
    "app": "Everywhere",
    "workers": "Workers",
    "limits": "Limits",
    "requests": "Requests",
    "tail": "Tail",
    "versions": "Versions",
}


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close", id="help.close")]

    def __init__(self, bindings: list[tuple[str, str, str]]) -> None:
        """`bindings`: (group, key display, description), in the order to show them."""
        super().__init__()
        self.bindings = bindings

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wide", id="help-dialog"):
            yield Label("wasmdeck console: keys  [dim](esc closes; ctrl+p opens the command palette)[/dim]", classes="dialog-title")
            table: DataTable[str] = DataTable(id="help-table", cursor_type="none", zebra_stripes=True)
            table.add_columns("Where", "Key", "Does")
            for group, key, description in self.bindings:
                table.add_row(GROUP_TITLES.get(group, group.title()), key, description)
            yield table

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)

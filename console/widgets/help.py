"""`?`: every key of the console, grouped by where it works, the groups of where the user
pressed it first; built from the bindings themselves, so it never goes stale."""

from __future__ import annotations

from collections.abc import Iterable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Label

from ..styles import stylesheet
from .modals import Dialog

GROUP_TITLES = {
    "app": "Everywhere",
    "workers": "Workers tab",
    "limits": "Limits tab",
    "outbound": "Outbound tab",
    "tail_workers": "Tail Workers tab",
    "requests": "Requests tab",
    "response": "Requests: response panel",
    "tail": "Tail tab",
    "trace": "Trace item (whole)",
    "versions": "Versions dialog",
    "secrets": "Secrets dialog",
    "dialog": "Dialogs",
    "confirm": "Questions",
    "unsaved": "Unsaved changes",
}

HelpEntry = tuple[str, str, str]
"""(group, key as shown, what it does)."""


def group_of(binding: Binding) -> str:
    return (binding.id or "app.").split(".")[0]


def build_help(
    bindings: Iterable[Binding], key_display: dict[str, str], here: Iterable[str] = ()
) -> list[HelpEntry]:
    """One entry per (group, description) of the console's own bindings (those with an id and a
    description); the groups in `here` first, then the others in the order met."""
    entries: list[HelpEntry] = []
    seen: set[tuple[str, str]] = set()
    for binding in bindings:
        if not binding.id or not binding.description:
            continue
        group = group_of(binding)
        if (group, binding.description) in seen:
            continue
        seen.add((group, binding.description))
        entries.append((group, key_display.get(binding.key, binding.key), binding.tooltip or binding.description))
    first = list(dict.fromkeys(here))
    order = {group: index for index, group in enumerate(first + [g for g, _, _ in entries if g not in first])}
    return sorted(entries, key=lambda entry: order[entry[0]])


class HelpScreen(Dialog[None]):
    DEFAULT_CSS = stylesheet(__name__)
    AUTO_FOCUS = "#help-table"
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close", id="help.close")]

    def __init__(self, entries: list[HelpEntry]) -> None:
        """`entries`: (group, key display, description), in the order to show them."""
        super().__init__()
        self.entries = entries

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide", id="help-dialog"):
            yield Label(
                "wasmdeck console: keys  [dim](esc closes; ctrl+p opens the command palette; "
                "digits switch tabs when no text field has the keyboard, esc leaves a field)[/dim]",
                classes="dialog-title",
            )
            table: DataTable[str] = DataTable(id="help-table", cursor_type="row", zebra_stripes=True)
            table.add_columns("Where", "Key", "Does")
            for group, key, description in self.entries:
                table.add_row(GROUP_TITLES.get(group, group.replace("_", " ").title()), key, description)
            yield table

    def action_close(self) -> None:
        self.dismiss(None)

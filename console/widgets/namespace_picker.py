"""Choose the namespace the console shows."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from wasmdeck.engine.store import Namespace

from ..styles import stylesheet
from .modals import Dialog


class NamespacePicker(Dialog[str]):
    """The namespaces, the one shown now highlighted; enter chooses, escape keeps the current one."""

    DEFAULT_CSS = stylesheet(__name__)

    def __init__(self, namespaces: list[Namespace], current: str) -> None:
        super().__init__()
        self.namespaces = namespaces
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="namespace-dialog"):
            yield Label("Namespace  [dim](enter chooses, esc cancels)[/dim]", classes="dialog-title")
            options = [
                Option(f"{ns.name}  [dim]routing by {ns.routing}[/dim]", id=ns.name) for ns in self.namespaces
            ]
            picker = OptionList(*options, id="namespace-list")
            yield picker

    def on_mount(self) -> None:
        picker = self.query_one(OptionList)
        names = [ns.name for ns in self.namespaces]
        if self.current in names:
            picker.highlighted = names.index(self.current)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

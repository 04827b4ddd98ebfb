"""The namespace's Outbound Worker, its parameters, and the egress policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.widgets import Button, DataTable, Input, Label, Select

from wasmdeck.engine.egress import EgressPolicy
from wasmdeck.engine.errors import InvalidInput, WasmdeckError
from wasmdeck.engine.outbound import OutboundSetting
from wasmdeck.engine.store import Namespace

from ..context import UsesConsole
from ..messages import PlatformChanged, UnsavedChanged
from ..styles import stylesheet
from ..widgets.error_line import ErrorLine
from ..widgets.field import Field
from ..widgets.modals import FormScreen

Parameter = tuple[str, str | None]


def parse_hosts(text: str) -> list[str]:
    return [entry for entry in (part.strip() for part in text.replace(" ", ",").split(",")) if entry]


@dataclass(frozen=True)
class OutboundState:
    """What the tab edits: the Outbound Worker, its parameters, the egress lists."""

    service: str | None
    parameters: tuple[Parameter, ...]
    allow: tuple[str, ...]
    block: tuple[str, ...]

    @classmethod
    def of(cls, namespace: Namespace) -> OutboundState:
        outbound = namespace.outbound
        egress = namespace.egress.as_dict()
        return cls(
            outbound.service if outbound else None,
            tuple((p.name, p.template) for p in outbound.parameters) if outbound else (),
            tuple(egress["allow"]),
            tuple(egress["block"]),
        )


class ParameterFormScreen(FormScreen[Parameter]):
    """Add or edit one parameter: a name and an optional value template."""

    def __init__(self, name: str = "", template: str | None = None, taken: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.name_ = name
        self.template = template
        self.taken = taken

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="parameter-dialog"):
            yield Label("Edit parameter" if self.name_ else "Add parameter", classes="dialog-title")
            yield Label("Name (an environment variable name)")
            yield Field(self.name_, id="parameter-name", placeholder="customer_name")
            yield Label("Template (blank: only the dispatcher sets it)")
            yield Field(self.template or "", id="parameter-template", placeholder="{worker} {namespace} {request.url} {request.host} {tag:NAME}")
            yield ErrorLine(classes="-empty", id="parameter-error")
            with Horizontal(classes="buttons"):
                yield Button("OK", variant="primary", id="parameter-ok")
                yield Button("Cancel", id="parameter-cancel")

    @on(Button.Pressed, "#parameter-cancel")
    def cancel(self) -> None:
        self.action_cancel()

    @on(Input.Submitted)
    @on(Button.Pressed, "#parameter-ok")
    def ok(self) -> None:
        name = self.query_one("#parameter-name", Input).value.strip()
        template = self.query_one("#parameter-template", Input).value or None
        try:
            if name in self.taken:
                raise InvalidInput(f"outbound parameter {name} is listed twice")
            OutboundSetting.parse("placeholder", [(name, template)])  # the engine's own checks
        except WasmdeckError as failure:
            self.query_one("#parameter-error", ErrorLine).show(escape(str(failure)))
            return
        self.dismiss((name, template))


class OutboundView(UsesConsole, Vertical):
    """Edits apply only when saved (ctrl+s): until then the tab is marked, and leaving it asks."""

    DEFAULT_CSS = stylesheet(__name__)
    BINDINGS = [
        Binding("a", "add_parameter", "Add", id="outbound.add"),
        Binding("e", "edit_parameter", "Edit", id="outbound.edit"),
        Binding("d", "remove_parameter", "Remove", id="outbound.remove"),
        Binding("ctrl+s", "save", "Save", id="outbound.save"),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.parameters: list[Parameter] = []
        self.saved: OutboundState | None = None
        """The settings as stored, from the last load; None until the first load."""
        self._unsaved = False

    def compose(self) -> ComposeResult:
        yield Label("Outbound Worker  [dim](receives every fetch() of this namespace's Workers)[/dim]", classes="section-title")
        yield Select[str]([], prompt="none: fetches go straight to the network", id="outbound-service", allow_blank=True)
        yield Label("Parameters  [dim](a: add, e/enter: edit, d: remove; in the Outbound Worker's environment)[/dim]", classes="section-title")
        table: DataTable[Text] = DataTable(id="outbound-parameters", cursor_type="row", zebra_stripes=True)
        table.add_columns("Name", "Template")
        yield table
        yield Label("Egress policy  [dim](host, host:port or *.example.com; block wins; a new namespace allows nothing)[/dim]", classes="section-title")
        yield Label("Allow")
        yield Field(id="egress-allow", placeholder="api.example.com, *.example.org:443, 127.0.0.1")
        yield Label("Block")
        yield Field(id="egress-block", placeholder="evil.example.com")
        yield ErrorLine(classes="-empty", id="outbound-error")
        with Horizontal(classes="buttons"):
            yield Button("Save (ctrl+s)", variant="primary", id="outbound-save")
            yield Button("Revert", id="outbound-revert")
            yield Label("● Unsaved changes: ctrl+s saves them, Revert throws them away", id="outbound-unsaved")

    def on_mount(self) -> None:
        self.reload()

    def focus_main(self) -> None:
        self.query_one("#outbound-service", Select).focus()

    # -- what is shown, what is saved ---------------------------------------------------

    def shown(self) -> OutboundState:
        """The settings as the tab shows them now, edits included."""
        value = self.query_one("#outbound-service", Select).value
        return OutboundState(
            value if isinstance(value, str) else None,
            tuple(self.parameters),
            tuple(parse_hosts(self.query_one("#egress-allow", Input).value)),
            tuple(parse_hosts(self.query_one("#egress-block", Input).value)),
        )

    def _show(self, state: OutboundState) -> None:
        select: Select[str] = self.query_one("#outbound-service", Select)
        if state.service is None:
            select.clear()
        else:
            select.value = state.service
        self.parameters = list(state.parameters)
        self._show_parameters()
        self.query_one("#egress-allow", Input).value = ", ".join(state.allow)
        self.query_one("#egress-block", Input).value = ", ".join(state.block)
        self.query_one("#outbound-error", ErrorLine).show("")
        self._check_unsaved()

    @work(exclusive=True, group="outbound-reload")
    async def reload(self, *, keep_edits: bool = True) -> None:
        """Read the namespace's settings again; unsaved edits stay on screen unless `keep_edits` is False."""
        client = self.host.client
        namespace = self.host.namespace
        try:
            settings = await client.namespace(namespace)
            rows = await client.workers(namespace)
        except WasmdeckError as error:
            self.notify(str(error), severity="error")
            return
        edits = self.shown() if keep_edits and self.unsaved_changes() is not None else None
        self.saved = OutboundState.of(settings)
        names = [row.worker.name for row in rows if row.worker.abi == "protocol"]
        wanted = [state.service for state in (self.saved, edits) if state is not None and state.service is not None]
        names += [name for name in dict.fromkeys(wanted) if name not in names]  # configured but not deployed (any more): show it
        self.query_one("#outbound-service", Select).set_options([(name, name) for name in names])
        self._show(edits or self.saved)

    def unsaved_changes(self) -> str | None:
        if self.saved is None or not self.is_mounted or self.shown() == self.saved:
            return None
        return f"the Outbound settings of namespace {self.host.namespace}"

    def discard_changes(self) -> None:
        if self.saved is not None:
            self._show(self.saved)
        self.reload(keep_edits=False)

    @on(Select.Changed, "#outbound-service")
    @on(Input.Changed, "#egress-allow, #egress-block")
    def _check_unsaved(self) -> None:
        unsaved = self.unsaved_changes() is not None
        self.set_class(unsaved, "-unsaved")
        if unsaved != self._unsaved:
            self._unsaved = unsaved
            self.post_message(UnsavedChanged(unsaved))

    # -- parameters ----------------------------------------------------------------------

    def _show_parameters(self) -> None:
        table = self.query_one("#outbound-parameters", DataTable)
        table.clear()
        for name, template in self.parameters:
            table.add_row(
                Text(name, style="bold"),
                Text(template) if template is not None else Text("set by the dispatcher", style="dim"),
                key=name,
            )

    def _selected(self) -> int | None:
        table = self.query_one("#outbound-parameters", DataTable)
        if table.row_count == 0:
            return None
        return table.cursor_coordinate.row

    def action_add_parameter(self) -> None:
        taken = frozenset(name for name, _ in self.parameters)

        def added(result: Parameter | None) -> None:
            if result is not None:
                self.parameters.append(result)
                self._show_parameters()
                self._check_unsaved()

        self.app.push_screen(ParameterFormScreen(taken=taken), added)

    @on(DataTable.RowSelected, "#outbound-parameters")
    def action_edit_parameter(self) -> None:
        index = self._selected()
        if index is None:
            self.notify("No parameters yet: press a to add one", severity="warning")
            return
        name, template = self.parameters[index]
        taken = frozenset(other for other, _ in self.parameters if other != name)

        def edited(result: Parameter | None) -> None:
            if result is not None:
                self.parameters[index] = result
                self._show_parameters()
                self._check_unsaved()

        self.app.push_screen(ParameterFormScreen(name, template, taken), edited)

    def action_remove_parameter(self) -> None:
        index = self._selected()
        if index is not None:
            del self.parameters[index]
            self._show_parameters()
            self._check_unsaved()

    # -- saving ----------------------------------------------------------------------------

    @on(Button.Pressed, "#outbound-revert")
    def revert(self) -> None:
        self.discard_changes()

    @on(Button.Pressed, "#outbound-save")
    async def action_save(self) -> None:
        await self.save_changes()

    async def save_changes(self) -> bool:
        error = self.query_one("#outbound-error", ErrorLine)
        state = self.shown()
        client = self.host.client
        namespace = self.host.namespace
        try:
            # check both halves first, so a refused egress entry never leaves a new Outbound Worker half saved
            EgressPolicy.parse(list(state.allow), list(state.block))
            if state.service is None and state.parameters:
                raise InvalidInput("parameters need an Outbound Worker: choose one, or remove the parameters")
            if state.service is not None:
                OutboundSetting.parse(state.service, list(state.parameters))
            await client.set_outbound(state.service, state.parameters, namespace)
            settings = await client.set_egress(state.allow, state.block, namespace)
        except WasmdeckError as failure:
            error.show(escape(str(failure)))
            return False
        error.show("")
        self.saved = OutboundState.of(settings)
        self._show(self.saved)  # as the engine stored it
        self.notify(
            f"Outbound settings of namespace {namespace} saved; they apply from the next request", title="Outbound"
        )
        self.post_message(PlatformChanged())
        self.reload(keep_edits=False)
        return True

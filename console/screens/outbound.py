"""The namespace's Outbound Worker, its parameters, and the egress policy."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Input, Label, Select

from wasmdeck.engine.egress import EgressPolicy
from wasmdeck.engine.errors import InvalidInput, WasmdeckError
from wasmdeck.engine.outbound import OutboundSetting

from ..messages import PlatformChanged
from ..widgets.modals import ErrorLine, FormScreen



def parse_hosts(text: str) -> list[str]:
    return [entry for entry in (part.strip() for part in text.replace(" ", ",").split(",")) if entry]


class ParameterFormScreen(FormScreen):
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
            yield Input(self.name_, id="parameter-name", placeholder="customer_name")
            yield Label("Template (blank: only the dispatcher sets it)")
            yield Input(self.template or "", id="parameter-template", placeholder="{worker} {namespace} {request.url} {request.host} {tag:NAME}")
            yield ErrorLine(classes="-empty", id="parameter-error")
            with Horizontal(classes="buttons"):
                yield Button("OK", variant="primary", id="parameter-ok")
                yield Button("Cancel", id="parameter-cancel")

    @on(Button.Pressed, "#parameter-cancel")
    def cancel(self) -> None:
        self.dismiss(None)

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
            self.query_one("#parameter-error", ErrorLine).show(str(failure))
            return
        self.dismiss((name, template))


class OutboundView(Vertical):
    BINDINGS = [
        Binding("a", "add_parameter", "Add", id="outbound.add"),
        Binding("e", "edit_parameter", "Edit", id="outbound.edit"),
        Binding("d", "remove_parameter", "Remove", id="outbound.remove"),
        Binding("ctrl+s", "save", "Save", id="outbound.save"),
    ]

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.parameters: list[tuple[str, str | None]] = []

    def compose(self) -> ComposeResult:
        yield Label("Outbound Worker  [dim](receives every fetch() of this namespace's Workers)[/dim]", classes="section-title")
        yield Select[str]([], prompt="none: fetches go straight to the network", id="outbound-service", allow_blank=True)
        yield Label("Parameters  [dim](a: add, e/enter: edit, d: remove; in the Outbound Worker's environment)[/dim]", classes="section-title")
        table: DataTable[object] = DataTable(id="outbound-parameters", cursor_type="row", zebra_stripes=True)
        table.add_columns("Name", "Template")
        yield table
        yield Label("Egress policy  [dim](hosts with optional :port, *.example.com wildcards; a new namespace allows nothing; block wins)[/dim]", classes="section-title")
        yield Label("Allow")
        yield Input(id="egress-allow", placeholder="api.example.com, *.example.org:443, 127.0.0.1")
        yield Label("Block")
        yield Input(id="egress-block", placeholder="evil.example.com")
        yield ErrorLine(classes="-empty", id="outbound-error")
        with Horizontal(classes="buttons"):
            yield Button("Save (ctrl+s)", variant="primary", id="outbound-save")
            yield Button("Revert", id="outbound-revert")

    def on_mount(self) -> None:
        self.reload()

    def focus_main(self) -> None:
        self.query_one("#outbound-service", Select).focus()

    @work(exclusive=True, group="outbound-reload")
    async def reload(self) -> None:
        client = self.app.client  # type: ignore[attr-defined]
        namespace = self.app.namespace  # type: ignore[attr-defined]
        try:
            settings = await client.namespace(namespace)
            rows = await client.workers(namespace)
        except WasmdeckError as error:
            self.notify(str(error), severity="error")
            return
        select = self.query_one("#outbound-service", Select)
        names = [row.worker.name for row in rows if row.worker.abi == "protocol"]
        service = settings.outbound.service if settings.outbound else None
        if service is not None and service not in names:
            names.append(service)  # configured but not deployed (any more): show it
        select.set_options([(name, name) for name in names])
        if service is None:
            select.clear()
        else:
            select.value = service
        self.parameters = [(p.name, p.template) for p in settings.outbound.parameters] if settings.outbound else []
        self._show_parameters()
        self.query_one("#egress-allow", Input).value = ", ".join(settings.egress.as_dict()["allow"])
        self.query_one("#egress-block", Input).value = ", ".join(settings.egress.as_dict()["block"])
        self.query_one("#outbound-error", ErrorLine).show("")

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

        def added(result: tuple[str, str | None] | None) -> None:
            if result is not None:
                self.parameters.append(result)
                self._show_parameters()

        self.app.push_screen(ParameterFormScreen(taken=taken), added)

    @on(DataTable.RowSelected, "#outbound-parameters")
    def action_edit_parameter(self) -> None:
        index = self._selected()
        if index is None:
            self.notify("No parameters yet: press a to add one", severity="warning")
            return
        name, template = self.parameters[index]
        taken = frozenset(other for other, _ in self.parameters if other != name)

        def edited(result: tuple[str, str | None] | None) -> None:
            if result is not None:
                self.parameters[index] = result
                self._show_parameters()

        self.app.push_screen(ParameterFormScreen(name, template, taken), edited)

    def action_remove_parameter(self) -> None:
        index = self._selected()
        if index is not None:
            del self.parameters[index]
            self._show_parameters()

    @on(Button.Pressed, "#outbound-revert")
    def revert(self) -> None:
        self.reload()

    @on(Button.Pressed, "#outbound-save")
    async def action_save(self) -> None:
        error = self.query_one("#outbound-error", ErrorLine)
        value = self.query_one("#outbound-service", Select).value
        service = value if isinstance(value, str) else None
        allow = parse_hosts(self.query_one("#egress-allow", Input).value)
        block = parse_hosts(self.query_one("#egress-block", Input).value)
        client = self.app.client  # type: ignore[attr-defined]
        namespace = self.app.namespace  # type: ignore[attr-defined]
        try:
            # check both halves first, so a refused egress entry never leaves a new Outbound Worker half saved
            EgressPolicy.parse(allow, block)
            if service is None and self.parameters:
                raise InvalidInput("parameters need an Outbound Worker: choose one, or remove the parameters")
            if service is not None:
                OutboundSetting.parse(service, self.parameters)
            await client.set_outbound(service, self.parameters, namespace)
            await client.set_egress(allow, block, namespace)
        except WasmdeckError as failure:
            error.show(str(failure))
            return
        error.show("")
        self.notify(
            f"Outbound settings of namespace {namespace} saved; they apply from the next request", title="Outbound"
        )
        self.post_message(PlatformChanged())
        self.reload()

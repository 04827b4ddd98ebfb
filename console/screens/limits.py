"""Per-tag limits: add, edit, remove; and a worker's effective limits with where each came from."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.markup import escape
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Input, Label, Select

from wasmdeck.engine.errors import InvalidInput, WasmdeckError
from wasmdeck.engine.limits import CAMEL, FIELDS, Limits
from wasmdeck.engine.validation import check_tag

from ..context import UsesConsole
from ..messages import LimitsChanged
from ..styles import stylesheet
from ..widgets.error_line import ErrorLine
from ..widgets.field import Field
from ..widgets.modals import ConfirmScreen, FormScreen

LABELS = {"cpu_ms": "CPU ms", "memory_mb": "Memory MiB", "sub_requests": "Subrequests", "wall_ms": "Wall ms"}


class LimitFormScreen(FormScreen[str]):
    """Add or edit one tag's limits; a blank field means "not set by this tag"."""

    def __init__(self, tag: str = "", limits: Limits | None = None) -> None:
        super().__init__()
        self.tag = tag
        self.limits = limits or Limits()

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="limit-dialog"):
            yield Label("Edit tag limits" if self.tag else "Add tag limits", classes="dialog-title")
            yield Label("Tag")
            yield Field(self.tag, id="limit-tag", disabled=bool(self.tag), placeholder="free")
            for name in FIELDS:
                value = getattr(self.limits, name)
                yield Label(f"{LABELS[name]} ({CAMEL[name]}, blank = not set)")
                yield Field("" if value is None else str(value), id=f"limit-{name}", type="integer")
            yield ErrorLine(classes="-empty", id="limit-error")
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="primary", id="limit-save")
                yield Button("Cancel", id="limit-cancel")

    @on(Button.Pressed, "#limit-cancel")
    def cancel(self) -> None:
        self.action_cancel()

    @on(Input.Submitted)
    @on(Button.Pressed, "#limit-save")
    async def save(self) -> None:
        error = self.query_one("#limit-error", ErrorLine)
        try:
            tag = check_tag(self.query_one("#limit-tag", Input).value.strip())
            values: dict[str, int | None] = {}
            for name in FIELDS:
                text = self.query_one(f"#limit-{name}", Input).value.strip()
                if text and not text.lstrip("-").isdigit():
                    raise InvalidInput(f"{CAMEL[name]} must be a whole number")
                values[name] = int(text) if text else None
            limits = Limits(**values)
            if limits.is_empty():
                raise InvalidInput("set at least one limit, or remove the tag's limits instead")
            clear = tuple(name for name, value in values.items() if value is None)
            await self.host.client.set_limits(tag, limits, clear)
        except WasmdeckError as failure:
            error.show(escape(str(failure)))
            return
        self.dismiss(tag)


class LimitsView(UsesConsole, Vertical):
    DEFAULT_CSS = stylesheet(__name__)
    BINDINGS = [
        Binding("a", "add", "Add", id="limits.add"),
        Binding("e", "edit", "Edit", id="limits.edit"),
        Binding("d", "remove", "Remove", id="limits.remove"),
    ]

    def compose(self) -> ComposeResult:
        yield Label("Tag limits  [dim](a: add, e/enter: edit, d: remove; for each field the strictest tag wins)[/dim]", classes="section-title")
        table: DataTable[str | Text] = DataTable(id="limits-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("Tag", "cpuMs", "memoryMb", "subRequests", "wallMs")
        yield table
        yield Label("Effective limits of a worker", classes="section-title")
        yield Select[str]([], prompt="choose a worker", id="limits-worker", allow_blank=True)
        effective: DataTable[str | Text] = DataTable(id="effective-table", cursor_type="none")
        effective.add_columns("Limit", "Value", "From")
        yield effective

    def on_mount(self) -> None:
        self.reload()

    def focus_main(self) -> None:
        self.query_one("#limits-table", DataTable).focus()

    @work(exclusive=True, group="limits-reload")
    async def reload(self) -> None:
        client = self.host.client
        try:
            limits = await client.limits()
            rows = await client.workers(self.host.namespace)
        except WasmdeckError as error:
            self.notify(str(error), severity="error")
            return
        table = self.query_one("#limits-table", DataTable)
        table.clear()
        for tag, values in limits.items():
            table.add_row(
                Text(tag, style="bold"),
                *(Text("-", style="dim") if getattr(values, f) is None else str(getattr(values, f)) for f in FIELDS),
                key=tag,
            )
        select: Select[str] = self.query_one("#limits-worker", Select)
        current = select.value
        names = [row.worker.name for row in rows]
        select.set_options([(name, name) for name in names])
        if isinstance(current, str) and current in names:
            select.value = current
        await self.show_effective()

    @on(Select.Changed, "#limits-worker")
    async def worker_chosen(self) -> None:
        await self.show_effective()

    async def show_effective(self) -> None:
        select = self.query_one("#limits-worker", Select)
        table = self.query_one("#effective-table", DataTable)
        table.clear()
        if not isinstance(select.value, str):
            return
        try:
            effective = await self.host.client.effective_limits(select.value, self.host.namespace)
        except WasmdeckError as error:
            self.notify(str(error), severity="error")
            return
        for name in FIELDS:
            source = effective.sources[CAMEL[name]]
            table.add_row(CAMEL[name], str(getattr(effective, name)), Text(source, style="cyan" if source.startswith("tag:") else "dim"))

    def selected_tag(self) -> str | None:
        table = self.query_one("#limits-table", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return str(key) if key is not None else None

    def _saved(self, tag: str | None) -> None:
        if tag is not None:
            self.notify(f"Limits of tag {tag} saved; they apply from the next request", title="Limits")
            self.post_message(LimitsChanged())
            self.reload()

    def action_add(self) -> None:
        self.app.push_screen(LimitFormScreen(), self._saved)

    @on(DataTable.RowSelected, "#limits-table")
    async def action_edit(self) -> None:
        tag = self.selected_tag()
        if tag is None:
            self.notify("No tag limits yet: press a to add some", severity="warning")
            return
        try:
            limits = (await self.host.client.limits()).get(tag)
        except WasmdeckError as error:
            self.notify(str(error), severity="error")
            return
        self.app.push_screen(LimitFormScreen(tag, limits), self._saved)

    def action_remove(self) -> None:
        tag = self.selected_tag()
        if tag is None:
            return

        async def done(confirmed: bool | None) -> None:
            if not confirmed:
                return
            try:
                await self.host.client.delete_limits(tag)
            except WasmdeckError as error:
                self.notify(str(error), severity="error")
                return
            self.notify(f"Removed the limits of tag {tag}", title="Limits")
            self.post_message(LimitsChanged())
            self.reload()

        self.app.push_screen(ConfirmScreen(f"Remove the limits of tag [b]{tag}[/b]?", yes="Yes, remove"), done)

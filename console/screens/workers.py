"""Workers of the current namespace: list, filter, upload, edit, versions and rollback, delete."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Input, Static

from wasmdeck.client import WorkerRow
from wasmdeck.engine.errors import WasmdeckError

from wasmdeck.engine.store import Worker

from ..context import UsesConsole
from ..formatting import date_time, error_rate_style, outcome_text, size_text
from ..messages import WorkersChanged
from ..styles import stylesheet
from ..widgets.modals import ConfirmScreen, EditWorkerScreen, Rollback, UploadScreen, VersionsScreen


def matches(row: WorkerRow, needle: str) -> bool:
    needle = needle.strip().lower()
    if not needle:
        return True
    if needle.startswith("tag:"):
        wanted = needle[4:]
        return any(tag.lower() == wanted for tag in row.worker.tags)
    return needle in row.worker.name or any(needle in tag.lower() for tag in row.worker.tags)


class WorkersView(UsesConsole, Vertical):
    DEFAULT_CSS = stylesheet(__name__)
    BINDINGS = [
        Binding("u", "upload", "Upload", id="workers.upload"),
        Binding("e", "edit", "Edit tags/vars", id="workers.edit", tooltip="Edit tags and vars (one new version)"),
        Binding("v", "versions", "Versions", id="workers.versions", tooltip="Versions, and roll back to one"),
        Binding("d", "delete", "Delete", id="workers.delete"),
        Binding("slash", "filter", "Filter", id="workers.filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="workers.clear_filter"),
        Binding("r", "reload", "Refresh", id="workers.refresh", show=False),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rows: list[WorkerRow] = []

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter: part of a name or tag, or tag:NAME  (esc clears)", id="workers-filter", classes="filter")
        table: DataTable[str | Text] = DataTable(id="workers-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("Name", "Tags", "ABI", "Size", "Ver", "Deployed", "Reqs", "Err%", "Last outcome")
        yield table
        yield Static("", id="workers-empty", classes="empty-hint")

    def on_mount(self) -> None:
        self.reload()

    def focus_main(self) -> None:
        self.query_one("#workers-table", DataTable).focus()

    @property
    def namespace(self) -> str:
        return self.host.namespace

    @work(exclusive=True, group="workers-reload")
    async def reload(self) -> None:
        try:
            self.rows = await self.host.client.workers(self.namespace)
        except WasmdeckError as error:
            self.notify(str(error), severity="error", title="Could not list workers")
            return
        self.render_rows()

    def action_reload(self) -> None:
        self.reload()

    def render_rows(self) -> None:
        table = self.query_one("#workers-table", DataTable)
        needle = self.query_one("#workers-filter", Input).value
        selected = self.selected_row()
        table.clear()
        shown = [row for row in self.rows if matches(row, needle)]
        for row in shown:
            worker = row.worker
            table.add_row(
                Text(worker.name, style="bold"),
                ", ".join(worker.tags) or Text("-", style="dim"),
                worker.abi,
                size_text(worker.size),
                str(worker.version),
                date_time(worker.created_at),
                str(row.requests),
                Text(f"{row.error_rate:.0%}", style=error_rate_style(row.error_rate)),
                outcome_text(row.last_outcome),
                key=worker.name,
            )
        if selected is not None and selected.worker.name in {row.worker.name for row in shown}:
            table.move_cursor(row=table.get_row_index(selected.worker.name))
        hint = self.query_one("#workers-empty", Static)
        if not self.rows:
            hint.update(f"No workers in namespace {self.namespace} yet. Press [b]u[/b] to upload one.")
        elif not shown:
            hint.update(f"No worker matches {needle!r}.")
        else:
            hint.update("")

    def selected_row(self) -> WorkerRow | None:
        table = self.query_one("#workers-table", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((row for row in self.rows if row.worker.name == key), None)

    @on(Input.Changed, "#workers-filter")
    def filter_changed(self) -> None:
        self.render_rows()

    @on(Input.Submitted, "#workers-filter")
    def filter_done(self) -> None:
        self.query_one("#workers-table", DataTable).focus()

    def action_filter(self) -> None:
        self.query_one("#workers-filter", Input).focus()

    def action_clear_filter(self) -> None:
        self.query_one("#workers-filter", Input).value = ""
        self.query_one("#workers-table", DataTable).focus()

    def _changed(self, message: str) -> None:
        self.notify(message, title="Workers")
        self.post_message(WorkersChanged())
        self.reload()

    def action_upload(self) -> None:
        def done(worker: Worker | None) -> None:
            if worker is not None:
                self._changed(f"Deployed {worker.name} version {worker.version}")

        self.app.push_screen(UploadScreen(self.namespace, base=self.host.upload_base), done)

    def action_edit(self) -> None:
        row = self.selected_row()
        if row is None:
            self.notify("Select a worker first", severity="warning")
            return

        def done(worker: Worker | None) -> None:
            if worker is not None:
                self._changed(f"{worker.name} is now version {worker.version} (tags and vars saved)")

        self.app.push_screen(EditWorkerScreen(row.worker), done)

    async def action_versions(self) -> None:
        row = self.selected_row()
        if row is None:
            self.notify("Select a worker first", severity="warning")
            return
        try:
            versions = await self.host.client.versions(row.worker.name, self.namespace)
        except WasmdeckError as error:
            self.notify(str(error), severity="error")
            return

        def done(rollback: Rollback | None) -> None:
            if rollback is not None:
                self._changed(rollback.sentence())

        self.app.push_screen(VersionsScreen(row.worker, versions), done)

    def action_delete(self) -> None:
        row = self.selected_row()
        if row is None:
            self.notify("Select a worker first", severity="warning")
            return
        name = row.worker.name
        count = row.worker.version
        versions = "its only version" if count == 1 else f"all {count} of its versions"

        async def done(confirmed: bool | None) -> None:
            if not confirmed:
                return
            try:
                await self.host.client.delete(name, self.namespace)
            except WasmdeckError as error:
                self.notify(str(error), severity="error")
                return
            self._changed(f"Deleted {name} and all its versions")

        self.app.push_screen(
            ConfirmScreen(
                f"Delete [b]{name}[/b] and {versions} from namespace {self.namespace}? This cannot be undone.",
                yes="Yes, delete",
            ),
            done,
        )

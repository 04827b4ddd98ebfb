"""Workers of the current namespace: list, filter, upload, edit, versions and rollback, delete,
secrets; each worker's warm instances in the table and, for the selected one, in the pane below."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.events import Resize
from textual.widgets import DataTable, Input, Static

from wasmdeck.client import WorkerRow
from wasmdeck.engine.errors import WasmdeckError

from wasmdeck.engine.store import Worker

from ..context import UsesConsole
from ..formatting import date_time, error_rate_style, instances_now, outcome_text, reuse_text, size_text
from ..messages import WorkersChanged
from ..styles import stylesheet
from ..widgets.modals import ConfirmScreen, EditWorkerScreen, Rollback, UploadScreen, VersionsScreen
from ..widgets.secrets import SecretsScreen
from ..widgets.worker_detail import WorkerDetail

COLUMNS: tuple[str, ...] = ("Name", "Tags", "Lang", "Size", "Ver", "Deployed", "Reqs", "Err%", "Last outcome", "Busy/Idle", "Reused")
NARROW_COLUMNS = tuple(column for column in COLUMNS if column != "Size")
WIDE_FROM = 112
"""Narrower than this (a 100-column terminal), the table leaves out the size (the pane below
shows it) and the year of the deploy time, so the instance columns fit without scrolling."""
INSTANCES_REFRESH_S = 5.0
"""While the tab is shown, the numbers are read again this often even without traffic (instances
that were idle too long stop without a trace item)."""


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
        Binding("e", "edit", "Edit", id="workers.edit", tooltip="Edit tags and vars (one new version)"),
        Binding("v", "versions", "Versions", id="workers.versions", tooltip="Versions, and roll back to one"),
        Binding("d", "delete", "Delete", id="workers.delete"),
        Binding("s", "secrets", "Secrets", id="workers.secrets", tooltip="The worker's secrets: names only; set or delete one"),
        Binding("slash", "filter", "Filter", id="workers.filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="workers.clear_filter"),
        Binding("r", "reload", "Refresh", id="workers.refresh", show=False),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rows: list[WorkerRow] = []
        self.instances: dict[str, dict[str, Any]] = {}
        """Each worker's warm instance numbers (`EngineClient.instance_stats`), by name."""
        self.secret_names: dict[tuple[str, str], list[str]] = {}
        """The secrets' names of the workers selected so far, by (namespace, worker), read again
        whenever one is selected or the table reloads."""
        self._columns = COLUMNS
        self._stats_failed = False

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter: part of a name or tag, or tag:NAME  (esc clears)", id="workers-filter", classes="filter")
        table: DataTable[str | Text] = DataTable(id="workers-table", cursor_type="row", zebra_stripes=True)
        table.add_columns(*self._columns)
        yield table
        yield Static("", id="workers-empty", classes="empty-hint")
        yield WorkerDetail(id="worker-detail")

    def on_mount(self) -> None:
        self.reload()
        self.set_interval(INSTANCES_REFRESH_S, self._refresh_if_shown, name="workers-refresh")

    def _refresh_if_shown(self) -> None:
        if self.region.area and self.screen.is_active:
            self.reload()

    def focus_main(self) -> None:
        self.query_one("#workers-table", DataTable).focus()

    @property
    def namespace(self) -> str:
        return self.host.namespace

    @work(exclusive=True, group="workers-reload")
    async def reload(self) -> None:
        """Read the workers and their instance numbers again, together, and show them."""
        client = self.host.client
        listing, stats = await asyncio.gather(
            client.workers(self.namespace), client.instance_stats(self.namespace), return_exceptions=True
        )
        if isinstance(listing, BaseException):
            if not isinstance(listing, WasmdeckError):
                raise listing
            self.notify(str(listing), severity="error", title="Could not list workers")
            return
        if isinstance(stats, BaseException):
            if not isinstance(stats, WasmdeckError):
                raise stats
            if not self._stats_failed:  # once, not at every refresh
                self.notify(str(stats), severity="warning", title="Could not read instance numbers")
            self._stats_failed = True
            stats = {}
        else:
            self._stats_failed = False
        self.rows = listing
        self.instances = stats
        self.render_rows()
        self.load_secret_names()

    def action_reload(self) -> None:
        self.reload()

    def _cells(self, row: WorkerRow) -> list[str | Text]:
        worker = row.worker
        stats = self.instances.get(worker.name)
        deployed = date_time(worker.created_at)
        cells: dict[str, str | Text] = {
            "Name": Text(worker.name, style="bold"),
            "Tags": ", ".join(worker.tags) or Text("-", style="dim"),
            "Lang": "js" if worker.language == "javascript" else "wasm",
            "Size": size_text(worker.size),
            "Ver": str(worker.version),
            "Deployed": deployed if self._columns is COLUMNS else deployed[5:],  # narrow: no year
            "Reqs": str(row.requests),
            "Err%": Text(f"{row.error_rate:.0%}", style=error_rate_style(row.error_rate)),
            "Last outcome": outcome_text(row.last_outcome),
            "Busy/Idle": instances_now(stats),
            "Reused": reuse_text(stats),
        }
        return [cells[column] for column in self._columns]

    def on_resize(self, event: Resize) -> None:
        columns = COLUMNS if event.size.width >= WIDE_FROM else NARROW_COLUMNS
        if columns is not self._columns:
            self._columns = columns
            table = self.query_one("#workers-table", DataTable)
            table.clear(columns=True)
            table.add_columns(*columns)
            self.render_rows()

    def render_rows(self) -> None:
        table = self.query_one("#workers-table", DataTable)
        needle = self.query_one("#workers-filter", Input).value
        selected = self.selected_row()
        table.clear()
        shown = [row for row in self.rows if matches(row, needle)]
        for row in shown:
            table.add_row(*self._cells(row), key=row.worker.name)
        if selected is not None and selected.worker.name in {row.worker.name for row in shown}:
            table.move_cursor(row=table.get_row_index(selected.worker.name))
        if not self.rows:
            empty = f"No workers in namespace {self.namespace} yet. Press [b]u[/b] to upload one."
        elif not shown:
            empty = f"No worker matches {needle!r}."
        else:
            empty = ""
        hint = self.query_one("#workers-empty", Static)
        hint.update(empty)
        hint.display = bool(empty)
        self.query_one(WorkerDetail).display = bool(shown)
        self.show_detail()

    def selected_row(self) -> WorkerRow | None:
        table = self.query_one("#workers-table", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((row for row in self.rows if row.worker.name == key), None)

    # -- the selected worker's pane ---------------------------------------------------

    def show_detail(self) -> None:
        row = self.selected_row()
        if row is None:
            self.query_one(WorkerDetail).show(None, None, None)
            return
        name = row.worker.name
        self.query_one(WorkerDetail).show(row, self.instances.get(name), self.secret_names.get((row.worker.namespace, name)))

    @on(DataTable.RowHighlighted, "#workers-table")
    def _row_highlighted(self) -> None:
        self.show_detail()
        self.load_secret_names()

    @work(exclusive=True, group="workers-secrets")
    async def load_secret_names(self) -> None:
        """The selected worker's secrets' names, for the pane (values are never read)."""
        row = self.selected_row()
        if row is None:
            return
        worker = row.worker
        try:
            names = await self.host.client.secret_names(worker.name, worker.namespace)
        except WasmdeckError:
            return  # deleted meanwhile: the next reload drops its row
        self.secret_names[(worker.namespace, worker.name)] = sorted(names)
        self.show_detail()

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

    async def action_secrets(self) -> None:
        row = self.selected_row()
        if row is None:
            self.notify("Select a worker first", severity="warning")
            return
        try:
            names = await self.host.client.secret_names(row.worker.name, self.namespace)
        except WasmdeckError as error:
            self.notify(str(error), severity="error")
            return
        def closed(_: None) -> None:
            self.reload()

        self.app.push_screen(SecretsScreen(row.worker, names), closed)

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

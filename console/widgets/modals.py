"""Modal dialogs of the workers screen: upload, edit tags and vars, versions, confirm."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Label, Static, TextArea

from wasmdeck.engine.errors import WasmdeckError
from wasmdeck.engine.store import Worker, WorkerVersion
from wasmdeck.engine.validation import parse_var_assignment

from .path_suggester import PathSuggester


def parse_tags(text: str) -> list[str]:
    return [tag for tag in (part.strip() for part in text.replace(" ", ",").split(",")) if tag]


def parse_vars(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip():
            key, value = parse_var_assignment(line.strip())
            values[key] = value
    return values


def format_vars(values: dict[str, str]) -> str:
    return "\n".join(f"{key}={value}" for key, value in sorted(values.items()))


class ErrorLine(Static):
    """An inline error under a form: one sentence from the engine."""

    DEFAULT_CSS = """
    ErrorLine { color: $error; height: auto; margin: 1 0 0 0; }
    ErrorLine.-empty { display: none; }
    """

    def show(self, message: str) -> None:
        self.update(message)
        self.set_class(not message, "-empty")


class FormScreen(ModalScreen[Any]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="modal.cancel")]

    def action_cancel(self) -> None:
        self.dismiss(None)


class UploadScreen(FormScreen):
    """Deploy a Worker from a .wasm file: name, tags, vars. Errors show inline; nothing is half done."""

    def __init__(self, namespace: str, base: Path | None = None) -> None:
        super().__init__()
        self.namespace = namespace
        self.base = base or Path.cwd()

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="upload-dialog"):
            yield Label(f"Upload a Worker to namespace [b]{self.namespace}[/b]", classes="dialog-title")
            yield Label("Module file (.wasm)")
            yield Input(placeholder="path/to/worker.wasm", id="upload-path", suggester=PathSuggester(self.base))
            yield Label("Name (a DNS label)")
            yield Input(placeholder="my-worker", id="upload-name")
            yield Label("Tags (comma separated, at most 8)")
            yield Input(placeholder="free, eu", id="upload-tags")
            yield Label("Vars (one KEY=VALUE per line)")
            yield TextArea(id="upload-vars", classes="vars")
            yield ErrorLine(classes="-empty", id="upload-error")
            with Horizontal(classes="buttons"):
                yield Button("Deploy", variant="primary", id="upload-deploy")
                yield Button("Cancel", id="upload-cancel")

    @on(Input.Changed, "#upload-path")
    def suggest_name(self, event: Input.Changed) -> None:
        name_input = self.query_one("#upload-name", Input)
        if not name_input.value or name_input.value == getattr(self, "_suggested", ""):
            stem = Path(event.value).stem.lower().replace("_", "-") if event.value.endswith(".wasm") else ""
            self._suggested = stem
            name_input.value = stem

    @on(Button.Pressed, "#upload-cancel")
    def cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    @on(Button.Pressed, "#upload-deploy")
    async def deploy(self) -> None:
        error = self.query_one("#upload-error", ErrorLine)
        path_text = self.query_one("#upload-path", Input).value.strip()
        path = Path(path_text).expanduser()
        if path_text and not path.is_absolute():
            path = self.base / path
        try:
            if not path_text:
                raise WasmdeckError("choose a module file to upload")
            worker = await self.app.client.deploy(  # type: ignore[attr-defined]
                self.query_one("#upload-name", Input).value.strip(),
                path,
                self.namespace,
                parse_tags(self.query_one("#upload-tags", Input).value),
                parse_vars(self.query_one("#upload-vars", TextArea).text),
            )
        except WasmdeckError as failure:
            error.show(str(failure))
            return
        self.dismiss(worker)


class EditWorkerScreen(FormScreen):
    """Edit a worker's tags and vars; saving makes a new version with the same module."""

    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self.worker = worker

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="edit-dialog"):
            yield Label(f"Edit [b]{self.worker.name}[/b] (version {self.worker.version})", classes="dialog-title")
            yield Label("Tags (comma separated, at most 8)")
            yield Input(", ".join(self.worker.tags), id="edit-tags")
            yield Label("Vars (one KEY=VALUE per line)")
            yield TextArea(format_vars(self.worker.vars), id="edit-vars", classes="vars")
            yield ErrorLine(classes="-empty", id="edit-error")
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="primary", id="edit-save")
                yield Button("Cancel", id="edit-cancel")

    @on(Button.Pressed, "#edit-cancel")
    def cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    @on(Button.Pressed, "#edit-save")
    async def save(self) -> None:
        client = self.app.client  # type: ignore[attr-defined]
        error = self.query_one("#edit-error", ErrorLine)
        try:
            tags = parse_tags(self.query_one("#edit-tags", Input).value)
            variables = parse_vars(self.query_one("#edit-vars", TextArea).text)
            worker = self.worker
            # validate both before changing either, so a bad var never leaves new tags behind
            from wasmdeck.engine.validation import check_tags, check_vars

            check_tags(tags)
            check_vars(variables)
            if tuple(tags) != worker.tags:
                worker = await client.set_tags(worker.name, tags, worker.namespace)
            if variables != worker.vars:
                worker = await client.set_vars(worker.name, variables, worker.namespace)
        except WasmdeckError as failure:
            error.show(str(failure))
            return
        self.dismiss(worker)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


class VersionsScreen(FormScreen):
    """A worker's versions; enter rolls back to the highlighted one."""

    BINDINGS = [
        Binding("escape", "cancel", "Close", id="versions.close"),
        Binding("enter", "rollback", "Roll back", id="versions.rollback", priority=True),
    ]

    def __init__(self, worker: Worker, versions: list[WorkerVersion]) -> None:
        super().__init__()
        self.worker = worker
        self.versions = versions

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide", id="versions-dialog"):
            yield Label(f"Versions of [b]{self.worker.name}[/b]  (enter: roll back, esc: close)", classes="dialog-title")
            table: DataTable[str] = DataTable(id="versions-table", cursor_type="row", zebra_stripes=True)
            table.add_columns("", "Version", "SHA-256", "Tags", "Vars", "Created", "Message")
            for version in reversed(self.versions):
                table.add_row(
                    "●" if version.current else "",
                    str(version.version),
                    version.sha256[:12],
                    ",".join(version.tags) or "-",
                    str(len(version.vars)),
                    _when(version.created_at),
                    version.message,
                    key=str(version.version),
                )
            yield table
            yield ErrorLine(classes="-empty", id="versions-error")

    async def action_rollback(self) -> None:
        table = self.query_one("#versions-table", DataTable)
        if table.row_count == 0:
            return
        version = int(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value or 0)
        try:
            worker = await self.app.client.rollback(self.worker.name, version, self.worker.namespace)  # type: ignore[attr-defined]
        except WasmdeckError as failure:
            self.query_one("#versions-error", ErrorLine).show(str(failure))
            return
        self.dismiss(worker)


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [
        Binding("escape,n", "answer(False)", "No", id="confirm.no"),
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="confirm-dialog"):
            yield Label(self.question, classes="dialog-title")
            with Horizontal(classes="buttons"):
                yield Button("Yes, delete", variant="error", id="confirm-yes")
                yield Button("No", id="confirm-no")

    @on(Button.Pressed, "#confirm-yes")
    def yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#confirm-no")
    def no(self) -> None:
        self.dismiss(False)

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

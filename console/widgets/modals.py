"""The console's dialogs: the `Dialog` base every modal shares, the `FormScreen` base of forms
that save something, and the workers screen's dialogs (upload, edit tags and vars, versions and
rollback) plus the yes/no and unsaved-changes questions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Label, Select, TextArea

from wasmdeck.engine.errors import InvalidInput, WasmdeckError
from wasmdeck.engine.store import Worker, WorkerVersion
from wasmdeck.engine.validation import check_tags, check_vars, parse_var_assignment

from ..context import UsesConsole
from ..formatting import date_time
from ..styles import stylesheet
from .error_line import ErrorLine
from .field import Field
from .path_suggester import UPLOADABLE, PathSuggester

ResultT = TypeVar("ResultT")


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


class Dialog(UsesConsole, ModalScreen[ResultT]):
    """A modal box in the middle of the screen; escape closes it with no result.

    It opens with its first field (or, in a question, its safe answer) focused: the app's own
    AUTO_FOCUS names the workers table, which a dialog does not have, so without this a dialog
    would open with nothing focused and swallow what is typed."""

    DEFAULT_CSS = stylesheet(__name__)
    AUTO_FOCUS = "*"
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog.cancel")]

    def action_cancel(self) -> None:
        self.dismiss(None)


class FormScreen(Dialog[ResultT]):
    """A dialog with fields and a save step: edits are marked ("● unsaved" on the box) and
    escape or Cancel asks before throwing them away. Its one-line text fields are `Field`s.

    Tab and shift+tab move between fields as priority bindings: otherwise a field hands the tab
    key up only after the app has already passed it the keys typed after it, so a burst such as a
    password manager's `name<TAB>value` lands whole in the first field."""

    BINDINGS = [
        Binding("tab", "app.focus_next", show=False, priority=True),
        Binding("shift+tab", "app.focus_previous", show=False, priority=True),
    ]
    _saved_values: tuple[tuple[str, str], ...] | None = None

    def on_mount(self) -> None:
        self._saved_values = self.field_values()

    def field_values(self) -> tuple[tuple[str, str], ...]:
        """Every field's id and value, to tell whether anything was edited."""
        values: list[tuple[str, str]] = []
        for field in self.query("Input, TextArea, Select"):
            if isinstance(field, Input):
                values.append((field.id or "", field.value))
            elif isinstance(field, TextArea):
                values.append((field.id or "", field.text))
            elif isinstance(field, Select):
                values.append((field.id or "", str(field.value)))
        return tuple(values)

    def unsaved_changes(self) -> str | None:
        if self._saved_values is None or self.field_values() == self._saved_values:
            return None
        return "this dialog"

    async def save_changes(self) -> bool:
        return False  # a form saves with its own button, where its errors show

    def discard_changes(self) -> None:
        self.dismiss(None)

    @on(Input.Changed)
    @on(TextArea.Changed)
    @on(Select.Changed)
    def _mark_unsaved(self) -> None:
        unsaved = self.unsaved_changes() is not None
        for box in self.query(".dialog"):
            box.border_subtitle = "● unsaved" if unsaved else ""
            box.set_class(unsaved, "-unsaved")

    def action_cancel(self) -> None:
        if self.unsaved_changes() is None:
            self.dismiss(None)
            return

        def answered(discard: bool | None) -> None:
            if discard:
                self.dismiss(None)

        self.app.push_screen(ConfirmScreen("Discard what you typed in this dialog?", yes="Discard", no="Keep editing"), answered)


class UploadScreen(FormScreen[Worker]):
    """Deploy a Worker from a .wasm module or a .js script: name, tags, vars. Errors show inline;
    nothing is half done."""

    def __init__(self, namespace: str, base: Path | None = None) -> None:
        super().__init__()
        self.namespace = namespace
        self.base = base or Path.cwd()
        self._suggested = ""

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="upload-dialog"):
            yield Label(f"Upload a Worker to namespace [b]{escape(self.namespace)}[/b]", classes="dialog-title")
            yield Label("Worker file (.wasm module or .js script; → accepts a suggested path)")
            yield Field(placeholder="path/to/worker.wasm or worker.js", id="upload-path", suggester=PathSuggester(self.base))
            yield Label("Name (a DNS label)")
            yield Field(placeholder="my-worker", id="upload-name")
            yield Label("Tags (comma separated, at most 8)")
            yield Field(placeholder="free, eu", id="upload-tags")
            yield Label("Vars (one KEY=VALUE per line)")
            yield TextArea(id="upload-vars", classes="vars")
            yield ErrorLine(classes="-empty", id="upload-error")
            with Horizontal(classes="buttons"):
                yield Button("Deploy", variant="primary", id="upload-deploy")
                yield Button("Cancel", id="upload-cancel")

    @on(Input.Changed, "#upload-path")
    def suggest_name(self, event: Input.Changed) -> None:
        name_input = self.query_one("#upload-name", Input)
        if not name_input.value or name_input.value == self._suggested:
            stem = Path(event.value).stem.lower().replace("_", "-") if event.value.endswith(UPLOADABLE) else ""
            self._suggested = stem
            name_input.value = stem

    @on(Button.Pressed, "#upload-cancel")
    def cancel(self) -> None:
        self.action_cancel()

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
                raise InvalidInput("choose a .wasm module or a .js script to upload")
            worker = await self.host.client.deploy(
                self.query_one("#upload-name", Input).value.strip(),
                path,
                self.namespace,
                parse_tags(self.query_one("#upload-tags", Input).value),
                parse_vars(self.query_one("#upload-vars", TextArea).text),
            )
        except WasmdeckError as failure:
            error.show(escape(str(failure)))
            return
        self.dismiss(worker)


class EditWorkerScreen(FormScreen[Worker]):
    """Edit a worker's tags and vars; saving makes one new version with the same module."""

    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self.worker = worker

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="edit-dialog"):
            yield Label(f"Edit [b]{self.worker.name}[/b] (version {self.worker.version})", classes="dialog-title")
            yield Label("Tags (comma separated, at most 8)")
            yield Field(", ".join(self.worker.tags), id="edit-tags")
            yield Label("Vars (one KEY=VALUE per line)")
            yield TextArea(format_vars(self.worker.vars), id="edit-vars", classes="vars")
            yield ErrorLine(classes="-empty", id="edit-error")
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="primary", id="edit-save")
                yield Button("Cancel", id="edit-cancel")

    def on_mount(self) -> None:
        variables = self.query_one("#edit-vars", TextArea)
        variables.move_cursor(variables.document.end)  # tabbing in adds a var after the others

    @on(Button.Pressed, "#edit-cancel")
    def cancel(self) -> None:
        self.action_cancel()

    @on(Input.Submitted)
    @on(Button.Pressed, "#edit-save")
    async def save(self) -> None:
        error = self.query_one("#edit-error", ErrorLine)
        worker = self.worker
        try:
            tags = check_tags(parse_tags(self.query_one("#edit-tags", Input).value))
            variables = check_vars(parse_vars(self.query_one("#edit-vars", TextArea).text))
            new_tags = tags if tags != worker.tags else None
            new_vars = variables if variables != worker.vars else None
            if new_tags is None and new_vars is None:
                self.dismiss(None)  # nothing changed: no new version
                return
            updated = await self.host.client.update_settings(worker.name, worker.namespace, tags=new_tags, vars=new_vars)
        except WasmdeckError as failure:
            error.show(escape(str(failure)))
            return
        self.dismiss(updated)


def _same_settings(one: WorkerVersion, other: WorkerVersion) -> bool:
    return (one.sha256, one.abi, one.tags, one.vars) == (other.sha256, other.abi, other.tags, other.vars)


@dataclass(frozen=True)
class Rollback:
    """What a rollback did: `worker` (the new version) now serves version `to` again, instead of `from_`."""

    worker: Worker
    to: int
    from_: int

    def sentence(self) -> str:
        return f"{self.worker.name} now serves v{self.to} (rolled back from v{self.from_}) as v{self.worker.version}"


class VersionsScreen(Dialog[Rollback]):
    """A worker's versions, newest first, the one serving now marked; enter asks, then rolls back
    to the highlighted one. The serving version (or one identical to it) is never offered."""

    BINDINGS = [
        Binding("escape", "cancel", "Close", id="versions.close"),
        Binding("enter", "rollback", "Roll back to the highlighted version", id="versions.rollback", priority=True),
    ]

    def __init__(self, worker: Worker, versions: list[WorkerVersion]) -> None:
        super().__init__()
        self.worker = worker
        self.versions = sorted(versions, key=lambda version: version.version, reverse=True)

    @property
    def current(self) -> WorkerVersion | None:
        return next((version for version in self.versions if version.current), None)

    def compose(self) -> ComposeResult:
        serving = self.current
        with Vertical(classes="dialog wide", id="versions-dialog"):
            yield Label(
                f"Versions of [b]{self.worker.name}[/b]"
                + (f", v{serving.version} serving" if serving else "")
                + "  [dim](↑↓ choose · enter: roll back · esc: close)[/dim]",
                classes="dialog-title",
            )
            table: DataTable[str | Text] = DataTable(id="versions-table", cursor_type="row", zebra_stripes=True)
            table.add_columns("Version", "Serving", "SHA-256", "Tags", "Vars", "Created", "Message")
            for version in self.versions:
                table.add_row(
                    Text(f"v{version.version}", style="bold" if version.current else ""),
                    Text("● now", style="bold green") if version.current else Text(""),
                    version.sha256[:12],
                    ",".join(version.tags) or "-",
                    str(len(version.vars)),
                    date_time(version.created_at, seconds=True),
                    version.message,
                    key=str(version.version),
                )
            yield table
            yield ErrorLine(classes="-empty", id="versions-error")

    def highlighted(self) -> WorkerVersion | None:
        table = self.query_one("#versions-table", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((version for version in self.versions if str(version.version) == key), None)

    def refusal(self, target: WorkerVersion) -> str | None:
        """Why rolling back to `target` would be pointless, in one sentence; None when it is not."""
        serving = self.current
        if serving is None:
            return None
        if target.version == serving.version:
            return f"v{target.version} is the version serving now; choose an earlier one to roll back to."
        if _same_settings(target, serving):
            return (
                f"v{target.version} has the same module, tags and vars as v{serving.version}, which is serving now, "
                "so rolling back to it would change nothing."
            )
        return None

    def action_rollback(self) -> None:
        target = self.highlighted()
        if target is None:
            return
        error = self.query_one("#versions-error", ErrorLine)
        refusal = self.refusal(target)
        if refusal is not None:
            error.show(refusal)
            return
        error.show("")
        serving = self.current
        from_version = serving.version if serving else self.worker.version
        tags = f"tags {', '.join(target.tags)}" if target.tags else "no tags"
        count = len(target.vars)
        variables = "no vars" if not count else "1 var" if count == 1 else f"{count} vars"
        question = (
            f"Roll [b]{self.worker.name}[/b] back to v{target.version}? It will serve v{target.version}'s module "
            f"({target.sha256[:12]}) with {escape(tags)} and {variables} again, as a new version; "
            f"v{from_version} stays in the history."
        )

        async def answered(confirmed: bool | None) -> None:
            if not confirmed:
                return
            try:
                worker = await self.host.client.rollback(self.worker.name, target.version, self.worker.namespace)
            except WasmdeckError as failure:
                error.show(escape(str(failure)))
                return
            self.dismiss(Rollback(worker, target.version, from_version))

        self.app.push_screen(ConfirmScreen(question, yes=f"Roll back to v{target.version}", no="No", danger=False), answered)


class ConfirmScreen(Dialog[bool]):
    """A yes/no question; `y` answers yes, `n` or escape no. It opens on the safe answer."""

    AUTO_FOCUS = "#confirm-no"
    BINDINGS = [
        Binding("escape,n", "answer(False)", "No", id="confirm.no"),
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
    ]

    def __init__(self, question: str, *, yes: str = "Yes", no: str = "No", danger: bool = True) -> None:
        super().__init__()
        self.question = question
        self.yes = yes
        self.no = no
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="confirm-dialog"):
            yield Label(self.question, classes="dialog-title")
            with Horizontal(classes="buttons"):
                yield Button(f"{self.yes} (y)", variant="error" if self.danger else "primary", id="confirm-yes")
                yield Button(f"{self.no} (n)", id="confirm-no")

    @on(Button.Pressed, "#confirm-yes")
    def yes_pressed(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#confirm-no")
    def no_pressed(self) -> None:
        self.dismiss(False)

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class UnsavedChangesScreen(Dialog[str]):
    """Leaving edits that are not saved: "save", "discard", or None (stay)."""

    AUTO_FOCUS = "#unsaved-cancel"
    BINDINGS = [
        Binding("escape", "cancel", "Stay", id="unsaved.stay"),
        Binding("s", "choose('save')", "Save", id="unsaved.save"),
        Binding("d", "choose('discard')", "Discard", id="unsaved.discard"),
    ]

    def __init__(self, what: str, *, leaving: str, can_save: bool = True) -> None:
        super().__init__()
        self.what = what
        self.leaving = leaving
        self.can_save = can_save

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="unsaved-dialog"):
            yield Label(f"You changed {escape(self.what)} and did not save. Save before {escape(self.leaving)}?", classes="dialog-title")
            with Horizontal(classes="buttons"):
                if self.can_save:
                    yield Button("Save (s)", variant="primary", id="unsaved-save")
                yield Button("Discard (d)", variant="error", id="unsaved-discard")
                yield Button("Stay (esc)", id="unsaved-cancel")

    @on(Button.Pressed, "#unsaved-save")
    def save_pressed(self) -> None:
        self.action_choose("save")

    @on(Button.Pressed, "#unsaved-discard")
    def discard_pressed(self) -> None:
        self.action_choose("discard")

    @on(Button.Pressed, "#unsaved-cancel")
    def stay_pressed(self) -> None:
        self.dismiss(None)

    def action_choose(self, choice: str) -> None:
        if choice == "save" and not self.can_save:
            return
        self.dismiss(choice)


__all__ = [
    "ConfirmScreen",
    "Dialog",
    "EditWorkerScreen",
    "FormScreen",
    "Rollback",
    "UnsavedChangesScreen",
    "UploadScreen",
    "VersionsScreen",
    "format_vars",
    "parse_tags",
    "parse_vars",
]

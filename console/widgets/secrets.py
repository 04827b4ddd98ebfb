"""A worker's secrets: names only. `SecretsScreen` lists them and asks before deleting one;
`SecretFormScreen` sets one through a masked field.

A value is write-only: the form sends it to the engine and forgets it (the field is emptied as
soon as the engine took it, and no notification, title or message ever holds it). Every change
is a new version of the worker, so both dialogs answer with the `Worker` as it is now."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.widgets import Button, DataTable, Input, Label

from wasmdeck.engine.errors import WasmdeckError
from wasmdeck.engine.store import Worker

from ..messages import WorkersChanged
from ..styles import stylesheet
from .error_line import ErrorLine
from .field import Field
from .modals import ConfirmScreen, Dialog, FormScreen


class SecretField(Input):
    """The masked value field. A paste keeps every line (a PEM key is one secret, where a plain
    Input keeps only the first line), line breaks as `\n`, and drops one trailing line break, as
    `wasmdeck secret put` does with its stdin."""

    def __init__(self, **options: Any) -> None:
        super().__init__(password=True, **options)

    def _on_paste(self, event: events.Paste) -> None:
        event.prevent_default()  # not Input's own paste, which keeps the first line only
        event.stop()
        text = event.text.replace("\r\n", "\n").replace("\r", "\n")
        if text.endswith("\n"):
            text = text[:-1]
        if text:
            selection = self.selection
            if selection.is_empty:
                self.insert_text_at_cursor(text)
            else:
                self.replace(text, *selection)


@dataclass(frozen=True)
class SecretSet:
    """What the form did: `worker` (its new version) has the secret `name` (never its value)."""

    worker: Worker
    name: str


class SecretFormScreen(FormScreen[SecretSet]):
    """Set one secret of `worker`: a new one (name and value), or a new value for `secret_name`."""

    def __init__(self, worker: Worker, secret_name: str | None = None) -> None:
        super().__init__()
        self.worker = worker
        self.secret_name = secret_name

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="secret-dialog"):
            if self.secret_name is None:
                yield Label(f"Set a secret of [b]{escape(self.worker.name)}[/b]", classes="dialog-title")
                yield Label("Name (like a var: API_TOKEN)")
                yield Field(placeholder="API_TOKEN", id="secret-name")
            else:
                yield Label(
                    f"New value for secret [b]{escape(self.secret_name)}[/b] of [b]{escape(self.worker.name)}[/b]",
                    classes="dialog-title",
                )
            yield Label("Value (hidden as you type; write-only: never shown again)")
            yield SecretField(id="secret-value")
            yield Label(
                "[dim]Saving makes a new version; the Worker finds the value in its environment from the next request.[/dim]"
            )
            yield ErrorLine(classes="-empty", id="secret-error")
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="primary", id="secret-save")
                yield Button("Cancel", id="secret-cancel")

    @property
    def key(self) -> str:
        """The secret's name: the one being replaced, or what the name field holds."""
        if self.secret_name is not None:
            return self.secret_name
        return self.query_one("#secret-name", Input).value.strip()

    @on(Button.Pressed, "#secret-cancel")
    def cancel(self) -> None:
        self.action_cancel()

    @on(Input.Submitted, "#secret-name")
    def name_done(self) -> None:
        """Enter after the name goes on to the value: saving from here would set an empty secret."""
        self.query_one("#secret-value", Input).focus()

    @on(Input.Submitted, "#secret-value")
    @on(Button.Pressed, "#secret-save")
    async def save(self) -> None:
        error = self.query_one("#secret-error", ErrorLine)
        value_field = self.query_one("#secret-value", Input)
        key = self.key
        if not value_field.value:
            error.show("The value is empty: type or paste the secret's value.")
            value_field.focus()
            return
        try:
            worker = await self.host.client.put_secret(self.worker.name, key, value_field.value, self.worker.namespace)
        except WasmdeckError as failure:
            error.show(escape(str(failure)))  # the engine's sentence names the secret, never its value
            return
        value_field.value = ""  # taken: nothing of the console keeps it
        self.dismiss(SecretSet(worker, key))


class SecretsScreen(Dialog[None]):
    """The names of a worker's secrets; `a` sets one, enter a new value for the highlighted one,
    `d` deletes it after asking. Each change posts `WorkersChanged` (the worker has a new version)."""

    DEFAULT_CSS = stylesheet(__name__)
    AUTO_FOCUS = "#secrets-table"
    BINDINGS = [
        Binding("escape", "cancel", "Close", id="secrets.close"),
        Binding("a", "set_secret", "Set a secret", id="secrets.set", tooltip="Set a new secret (a masked value)"),
        Binding("enter", "replace_secret", "New value", id="secrets.replace", tooltip="A new value for the highlighted secret"),
        Binding("d,delete", "delete_secret", "Delete", id="secrets.delete", tooltip="Delete the highlighted secret, after asking"),
    ]

    def __init__(self, worker: Worker, names: list[str]) -> None:
        super().__init__()
        self.worker = worker
        self.names = sorted(names)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="secrets-dialog"):
            yield Label(self._title(), classes="dialog-title", id="secrets-title")
            yield Label(
                "[dim]Names only: a value is write-only and no screen shows it. "
                "[b]enter[/b] sets a new value for the highlighted secret.[/dim]",
                id="secrets-note",
            )
            table: DataTable[str | Text] = DataTable(id="secrets-table", cursor_type="row", zebra_stripes=True)
            table.add_column("Secret", key="name")
            yield table
            yield Label("", id="secrets-empty")
            yield ErrorLine(classes="-empty", id="secrets-error")
            with Horizontal(classes="buttons"):
                yield Button("Set a secret (a)", variant="primary", id="secrets-set")
                yield Button("Delete (d)", variant="error", id="secrets-delete")
                yield Button("Close (esc)", id="secrets-close")

    def _title(self) -> str:
        return f"Secrets of [b]{escape(self.worker.name)}[/b] (v{self.worker.version})"

    def on_mount(self) -> None:
        self._render_names()
        if not self.names:
            self.query_one("#secrets-set", Button).focus()

    def _render_names(self, select: str | None = None) -> None:
        table = self.query_one("#secrets-table", DataTable)
        table.clear()
        for name in self.names:
            table.add_row(Text(name, style="bold"), key=name)
        if select in self.names:
            table.move_cursor(row=self.names.index(select))
            self.call_after_refresh(table.focus)  # enter: another value for the one just set
        if not self.names and table.has_focus:
            self.query_one("#secrets-set", Button).focus()
        table.display = bool(self.names)
        self.query_one("#secrets-delete", Button).disabled = not self.names
        empty = self.query_one("#secrets-empty", Label)
        empty.update(f"[dim]{escape(self.worker.name)} has no secrets: [b]a[/b] sets one.[/dim]")
        empty.display = not self.names
        self.query_one("#secrets-title", Label).update(self._title())

    def highlighted(self) -> str | None:
        table = self.query_one("#secrets-table", DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    async def _reload(self, worker: Worker, select: str | None = None) -> None:
        """After a change: the worker's new version and its names as the engine has them now."""
        self.worker = worker
        self.post_message(WorkersChanged())
        await self._refresh_names(select)

    async def _refresh_names(self, select: str | None = None) -> None:
        try:
            self.names = sorted(await self.host.client.secret_names(self.worker.name, self.worker.namespace))
        except WasmdeckError as failure:
            self.query_one("#secrets-error", ErrorLine).show(escape(str(failure)))
        self._render_names(select)

    # -- actions --------------------------------------------------------------------

    def _open_form(self, name: str | None) -> None:
        async def done(change: SecretSet | None) -> None:
            if change is None:
                return
            await self._reload(change.worker, select=change.name)
            self.notify(f"Set secret {change.name} of {change.worker.name}: now version {change.worker.version}", title="Secrets")

        self.query_one("#secrets-error", ErrorLine).show("")
        self.app.push_screen(SecretFormScreen(self.worker, name), done)

    def action_set_secret(self) -> None:
        self._open_form(None)

    def action_replace_secret(self) -> None:
        self._open_form(self.highlighted())

    def action_delete_secret(self) -> None:
        name = self.highlighted()
        error = self.query_one("#secrets-error", ErrorLine)
        if name is None:
            error.show("There is no secret to delete.")
            return
        error.show("")
        worker = self.worker

        async def answered(confirmed: bool | None) -> None:
            if not confirmed:
                return
            try:
                updated = await self.host.client.delete_secret(worker.name, name, worker.namespace)
            except WasmdeckError as failure:
                await self._refresh_names()  # gone meanwhile (another console, the CLI): show what is there now
                error.show(escape(str(failure)))
                return
            await self._reload(updated)
            self.notify(f"Deleted secret {name} of {updated.name}: now version {updated.version}", title="Secrets")

        self.app.push_screen(
            ConfirmScreen(
                f"Delete secret [b]{escape(name)}[/b] of [b]{escape(worker.name)}[/b]? From the next request its "
                "Worker no longer finds it in its environment, and no version brings it back.",
                yes="Yes, delete",
            ),
            answered,
        )

    @on(DataTable.RowSelected, "#secrets-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_replace_secret()

    @on(Button.Pressed, "#secrets-set")
    def _set_pressed(self) -> None:
        self.action_set_secret()

    @on(Button.Pressed, "#secrets-delete")
    def _delete_pressed(self) -> None:
        self.action_delete_secret()

    @on(Button.Pressed, "#secrets-close")
    def _close_pressed(self) -> None:
        self.dismiss(None)


__all__ = ["SecretField", "SecretFormScreen", "SecretSet", "SecretsScreen"]

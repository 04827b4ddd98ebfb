"""Tail Workers: which Workers receive the namespace's trace items, and whose."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.markup import escape
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Label, Select

from wasmdeck.engine.errors import InvalidInput, WasmdeckError
from wasmdeck.engine.store import TailConsumer

from ..context import UsesConsole
from ..messages import PlatformChanged
from ..styles import stylesheet
from ..widgets.error_line import ErrorLine
from ..widgets.modals import ConfirmScreen, FormScreen

SCOPES = (
    ("worker", "one Worker's items"),
    ("dispatcher", "the dispatcher's items and those of the Workers it dispatches to"),
    ("namespace", "the items of every Worker in the namespace"),
)


def receives(consumer: TailConsumer) -> str:
    if consumer.scope == "worker":
        return f"Worker {consumer.worker}"
    return dict(SCOPES)[consumer.scope]


class TailConsumerFormScreen(FormScreen[TailConsumer]):
    """Attach a Tail Worker: the consumer (a protocol Worker), and what it receives."""

    def __init__(self, namespace: str, consumers: list[str], workers: list[str]) -> None:
        super().__init__()
        self.namespace = namespace
        self.consumer_names = consumers
        self.worker_names = workers

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="tail-consumer-dialog"):
            yield Label(f"Add a Tail Worker to namespace [b]{self.namespace}[/b]", classes="dialog-title")
            yield Label("Consumer (a Worker-protocol Worker with a tail handler)")
            yield Select[str]([(name, name) for name in self.consumer_names], prompt="choose a Worker", id="tail-consumer-name")
            yield Label("It receives")
            yield Select[str]([(text, scope) for scope, text in SCOPES], value="worker", allow_blank=False, id="tail-consumer-scope")
            yield Label("Worker (for one Worker's items)")
            yield Select[str]([(name, name) for name in self.worker_names], prompt="choose a Worker", id="tail-consumer-worker")
            yield ErrorLine(classes="-empty", id="tail-consumer-error")
            with Horizontal(classes="buttons"):
                yield Button("Add", variant="primary", id="tail-consumer-add")
                yield Button("Cancel", id="tail-consumer-cancel")

    @on(Select.Changed, "#tail-consumer-scope")
    def scope_changed(self, event: Select.Changed) -> None:
        self.query_one("#tail-consumer-worker", Select).disabled = event.value != "worker"

    @on(Button.Pressed, "#tail-consumer-cancel")
    def cancel(self) -> None:
        self.action_cancel()

    @on(Button.Pressed, "#tail-consumer-add")
    async def add(self) -> None:
        consumer = self.query_one("#tail-consumer-name", Select).value
        scope = self.query_one("#tail-consumer-scope", Select).value
        worker = self.query_one("#tail-consumer-worker", Select).value
        try:
            if not isinstance(consumer, str):
                raise InvalidInput("choose the consumer: the Worker whose tail handler receives the items")
            if scope == "worker" and not isinstance(worker, str):
                raise InvalidInput("choose the Worker whose items it receives")
            added = await self.host.client.add_tail_consumer(
                consumer, worker if scope == "worker" and isinstance(worker, str) else None, scope == "dispatcher", self.namespace
            )
        except WasmdeckError as failure:
            self.query_one("#tail-consumer-error", ErrorLine).show(escape(str(failure)))
            return
        self.dismiss(added)


class TailWorkersView(UsesConsole, Vertical):
    DEFAULT_CSS = stylesheet(__name__)
    BINDINGS = [
        Binding("a", "add", "Add", id="tail_workers.add"),
        Binding("d", "remove", "Remove", id="tail_workers.remove"),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.consumers: list[TailConsumer] = []

    def compose(self) -> ComposeResult:
        yield Label(
            "Tail Workers  [dim](a: add, d: remove; each gets trace items in batches after the response; "
            "a Tail Worker's own items are never delivered)[/dim]",
            classes="section-title",
        )
        table: DataTable[str | Text] = DataTable(id="tail-consumers", cursor_type="row", zebra_stripes=True)
        table.add_columns("Consumer", "Receives")
        yield table
        yield Label("", id="tail-consumers-hint", classes="empty-hint")

    def on_mount(self) -> None:
        self.reload()

    def focus_main(self) -> None:
        self.query_one("#tail-consumers", DataTable).focus()

    @work(exclusive=True, group="tail-workers-reload")
    async def reload(self) -> None:
        try:
            self.consumers = await self.host.client.tail_consumers(self.host.namespace)
        except WasmdeckError as error:
            self.notify(str(error), severity="error")
            return
        table = self.query_one("#tail-consumers", DataTable)
        table.clear()
        for consumer in self.consumers:
            table.add_row(Text(consumer.consumer, style="bold"), receives(consumer))
        self.query_one("#tail-consumers-hint", Label).update(
            "" if self.consumers else "No Tail Workers in this namespace yet. Press a to attach one."
        )

    async def action_add(self) -> None:
        client = self.host.client
        namespace = self.host.namespace
        try:
            rows = await client.workers(namespace)
        except WasmdeckError as error:
            self.notify(str(error), severity="error")
            return
        consumers = [row.worker.name for row in rows if row.worker.abi == "protocol"]
        workers = [row.worker.name for row in rows]

        def added(consumer: TailConsumer | None) -> None:
            if consumer is not None:
                self.notify(f"{consumer.consumer} now receives {receives(consumer)}", title="Tail Workers")
                self.post_message(PlatformChanged())
                self.reload()

        self.app.push_screen(TailConsumerFormScreen(namespace, consumers, workers), added)

    def action_remove(self) -> None:
        table = self.query_one("#tail-consumers", DataTable)
        if not self.consumers:
            return
        consumer = self.consumers[table.cursor_coordinate.row]

        async def done(confirmed: bool | None) -> None:
            if not confirmed:
                return
            try:
                await self.host.client.remove_tail_consumer(
                    consumer.consumer, consumer.worker, consumer.scope == "dispatcher", consumer.namespace
                )
            except WasmdeckError as error:
                self.notify(str(error), severity="error")
                return
            self.notify(f"{consumer.consumer} no longer receives {receives(consumer)}", title="Tail Workers")
            self.post_message(PlatformChanged())
            self.reload()

        self.app.push_screen(
            ConfirmScreen(f"Stop delivering {receives(consumer)} to [b]{consumer.consumer}[/b]?", yes="Yes, stop"), done
        )

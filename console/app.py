"""The wasmdeck console: workers, limits, requests and live tail over an engine client."""

from __future__ import annotations

import gc
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Header, TabbedContent, TabPane

from wasmdeck.client import EngineClient, TraceStream
from wasmdeck.engine.errors import WasmdeckError
from wasmdeck.engine.traces import TraceFilter

from .messages import LimitsChanged, NamespaceChanged, PlatformChanged, WorkersChanged
from .screens.limits import LimitsView
from .screens.outbound import OutboundView
from .screens.requests import RequestsView
from .screens.tail_workers import TailWorkersView
from .screens.tail import TailView
from .screens.workers import WorkersView
from .widgets.help import HelpScreen
from .widgets.namespace_picker import NamespacePicker
from .widgets.status_bar import StatusBar

PUMP_INTERVAL_S = 0.05
STATS_REFRESH_S = 2.0
TABS = ("workers", "limits", "outbound", "tail-workers", "requests", "tail")

Traffic = Callable[[EngineClient, Callable[[], str]], Awaitable[None]]


class WasmdeckApp(App[None]):
    """The admin console. It only ever talks to the engine through `EngineClient`."""

    CSS_PATH = "app.tcss"
    TITLE = "wasmdeck"
    ENABLE_COMMAND_PALETTE = True
    # start on the workers table, never in the filter box (where 1-6 would be typed, not obeyed)
    AUTO_FOCUS = "#workers-table"
    BINDINGS = [
        Binding("1", "show_tab('workers')", "Workers", id="app.workers", show=False),
        Binding("2", "show_tab('limits')", "Limits", id="app.limits", show=False),
        Binding("3", "show_tab('outbound')", "Outbound", id="app.outbound", show=False),
        Binding("4", "show_tab('tail-workers')", "Tail Workers", id="app.tail_workers", show=False),
        Binding("5", "show_tab('requests')", "Requests", id="app.requests", show=False),
        Binding("6", "show_tab('tail')", "Tail", id="app.tail", show=False),
        Binding("n", "choose_namespace", "Namespace", id="app.namespace"),
        Binding("question_mark", "help", "Help", id="app.help"),
        Binding("q", "quit", "Quit", id="app.quit"),
    ]

    namespace: reactive[str] = reactive("default", init=False)

    def __init__(
        self,
        client: EngineClient,
        *,
        namespace: str = "default",
        clock: Callable[[], float] = time.time,
        traffic: Traffic | None = None,
        upload_base: Path | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.clock = clock
        self.traffic = traffic
        self.upload_base = upload_base or Path.cwd()
        self.set_reactive(WasmdeckApp.namespace, namespace)
        self._stream: TraceStream | None = None
        self._stats_due = 0.0
        self._tabs_ready = False
        self._pending_tab: str | None = None
        self.sub_title = client.description

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="workers", id="tabs"):
            with TabPane("1 Workers", id="workers"):
                yield WorkersView(id="workers-view")
            with TabPane("2 Limits", id="limits"):
                yield LimitsView(id="limits-view")
            with TabPane("3 Outbound", id="outbound"):
                yield OutboundView(id="outbound-view")
            with TabPane("4 Tail Workers", id="tail-workers"):
                yield TailWorkersView(id="tail-workers-view")
            with TabPane("5 Requests", id="requests"):
                yield RequestsView(id="requests-view")
            with TabPane("6 Tail", id="tail"):
                yield TailView(id="tail-view")
        yield StatusBar(self.clock, self.client.description, id="status-bar")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        # keep references: while a dialog is open, queries would search the dialog's screen
        self.status_bar = self.query_one(StatusBar)
        self.tail_view = self.query_one(TailView)
        self.workers_view = self.query_one(WorkersView)
        self.limits_view = self.query_one(LimitsView)
        self.outbound_view = self.query_one(OutboundView)
        self.tail_workers_view = self.query_one(TailWorkersView)
        self.tabs = self.query_one("#tabs", TabbedContent)
        self.status_bar.namespace = self.namespace
        self._stream = self.client.stream(TraceFilter())
        self.load_history()
        self.set_interval(PUMP_INTERVAL_S, self.pump_traces, name="trace-pump")
        # Full garbage collections of a long-lived UI stall input for 100 ms and more under a
        # busy tail (bench/tail_pane.py): freeze what startup made and collect young objects less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 20, 20)
        if self.traffic is not None:
            self.run_traffic()

    @work(group="history")
    async def load_history(self) -> None:
        try:
            history = await self.client.recent_traces(200)
        except WasmdeckError as error:
            self.notify(str(error), severity="error", title="Could not read stored traces")
            return
        self.tail_view.history(history)

    async def on_unmount(self) -> None:
        if self._stream is not None:
            self._stream.close()

    @work(exclusive=True, group="traffic")
    async def run_traffic(self) -> None:
        assert self.traffic is not None
        await self.traffic(self.client, lambda: self.namespace)

    def pump_traces(self) -> None:
        """Batch whatever arrived since the last tick into the tail view and the status line."""
        if self._stream is None:
            return
        items = self._stream.drain()
        dropped = self._stream.take_dropped()
        status = self.status_bar
        if items or dropped:
            self.tail_view.add_items(items, dropped)
        status.record(items)
        now = self.clock()
        if items and now >= self._stats_due:
            self._stats_due = now + STATS_REFRESH_S
            self.workers_view.reload()

    # -- navigation ----------------------------------------------------------------

    @on(TabbedContent.TabActivated, "#tabs")
    def tab_activated(self, event: TabbedContent.TabActivated) -> None:
        # the initial tab's activation arrives as a message after mount; a tab chosen before it
        # (a fast key press at start) would be switched back, so it waits for it
        if not self._tabs_ready:
            self._tabs_ready = True
            if self._pending_tab is not None:
                self.tabs.active, self._pending_tab = self._pending_tab, None
            return  # AUTO_FOCUS has put the keyboard on the first tab already
        self.call_after_refresh(self.focus_tab_content)

    def focus_tab_content(self) -> None:
        """Put the keyboard where the work is: the table, the URL, the tail pane."""
        pane = self.tabs.active_pane
        if pane is None or (self.focused is not None and pane in self.focused.ancestors):
            return
        for view in pane.children:
            focus_main = getattr(view, "focus_main", None)
            if callable(focus_main):
                focus_main()
                return
        focusable = [widget for widget in pane.query("*") if widget.focusable]
        if focusable:
            focusable[0].focus()

    def action_show_tab(self, tab: str) -> None:
        if not self._tabs_ready:
            self._pending_tab = tab
            return
        self.tabs.active = tab
        # move the keyboard into the new tab right away: if the old tab's focused widget is
        # hidden first, Textual refocuses inside the old tab, which switches it back
        self.focus_tab_content()

    def action_choose_namespace(self) -> None:
        self.pick_namespace()

    @work(exclusive=True, group="namespace")
    async def pick_namespace(self) -> None:
        try:
            namespaces = await self.client.namespaces()
        except WasmdeckError as error:
            self.notify(str(error), severity="error")
            return
        chosen = await self.push_screen_wait(NamespacePicker(namespaces, self.namespace))
        if chosen and chosen != self.namespace:
            self.namespace = chosen

    def watch_namespace(self, namespace: str) -> None:
        self.status_bar.namespace = namespace
        self.tail_view.namespace_changed(namespace)
        self.workers_view.reload()
        self.limits_view.reload()
        self.outbound_view.reload()
        self.tail_workers_view.reload()
        self.notify(f"Showing namespace {namespace}", title="Namespace")
        self.post_message(NamespaceChanged(namespace))

    @on(WorkersChanged)
    def workers_changed(self) -> None:
        self.limits_view.reload()
        self.outbound_view.reload()
        self.tail_workers_view.reload()

    @on(PlatformChanged)
    def platform_changed(self) -> None:
        self.workers_view.reload()

    @on(LimitsChanged)
    def limits_changed(self) -> None:
        self.limits_view.reload()

    # -- help and the command palette ----------------------------------------------

    def help_entries(self) -> list[tuple[str, str, str]]:
        """(group, key, description) for every binding reachable from the focused widget."""
        entries: list[tuple[str, str, str]] = []
        seen: set[tuple[str, str]] = set()
        for key, active in self.screen.active_bindings.items():
            binding = active.binding
            # only the console's own bindings: widgets' built-in cursor keys are left out
            if not binding.description or not binding.id:
                continue
            group = (binding.id or "app.").split(".")[0]
            display = self.get_key_display(binding)
            if (group, binding.description) in seen:
                continue
            seen.add((group, binding.description))
            entries.append((group, display, binding.description))
        entries.append(("app", self.get_key_display(Binding("ctrl+p", "command_palette", "")), "Command palette"))
        entries.sort(key=lambda entry: (entry[0] != "app", entry[0]))
        return entries

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.help_entries()))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        workers = self.workers_view
        tail = self.tail_view
        yield SystemCommand("Upload a Worker", "Deploy a .wasm module to this namespace", self._go(workers.action_upload, "workers"))
        yield SystemCommand("Add tag limits", "Set cpuMs, memoryMb, subRequests or wallMs for a tag", self._go(self.limits_view.action_add, "limits"))
        yield SystemCommand(
            "Edit outbound settings", "Choose the Outbound Worker, its parameters and the egress policy",
            self._go(self.outbound_view.focus_main, "outbound"),
        )
        yield SystemCommand(
            "Attach a Tail Worker", "Deliver a Worker's, the dispatcher's or the namespace's trace items to a tail handler",
            self._go(lambda: self.run_worker(self.tail_workers_view.action_add()), "tail-workers"),
        )
        requests = self.query_one(RequestsView)
        yield SystemCommand("Compose a request", "Send a request through dispatch", self._go(requests.focus_main, "requests"))
        yield SystemCommand("New tail pane", "Open another live tail pane", self._go(tail.action_add_pane, "tail"))
        yield SystemCommand("Switch namespace", "Choose the namespace the console shows", self.action_choose_namespace)
        for tab in TABS:
            title = tab.replace("-", " ")
            yield SystemCommand(f"Go to {title.title()}", f"Show the {title} tab", lambda tab=tab: self.action_show_tab(tab))

    def _go(self, action: Callable[[], object], tab: str) -> Callable[[], None]:
        def run() -> None:
            self.action_show_tab(tab)
            action()

        return run

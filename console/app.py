"""The wasmdeck console: workers, limits, requests and live tail over an engine client."""

from __future__ import annotations

import gc
import time
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from pathlib import Path

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.dom import DOMNode
from textual.reactive import reactive
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Header, Input, TabbedContent, TabPane, TextArea

from wasmdeck.client import EngineClient, TraceStream
from wasmdeck.engine.errors import WasmdeckError
from wasmdeck.engine.traces import TraceFilter

from .context import SaveStep
from .styles import stylesheet
from .messages import LimitsChanged, PlatformChanged, UnsavedChanged, WorkersChanged
from .screens.limits import LimitsView
from .screens.outbound import OutboundView
from .screens.requests import RequestsView
from .screens.tail import TailView
from .screens.tail_workers import TailWorkersView
from .screens.workers import WorkersView
from .widgets.help import HelpScreen, build_help
from .widgets.modals import ConfirmScreen, Dialog, FormScreen, UnsavedChangesScreen, VersionsScreen
from .widgets.namespace_picker import NamespacePicker
from .widgets.response_panel import ResponsePanel
from .widgets.secrets import SecretsScreen
from .widgets.status_bar import StatusBar
from .widgets.tail_pane import TailPane
from .widgets.trace_detail import TraceDetailScreen
from .widgets.trace_log import TraceLog

PUMP_INTERVAL_S = 0.05
STATS_REFRESH_S = 2.0
TABS = {
    "workers": "Workers",
    "limits": "Limits",
    "outbound": "Outbound",
    "tail-workers": "Tail Workers",
    "requests": "Requests",
    "tail": "Tail",
}
UNSAVED_MARK = " ●"
# Every class whose bindings the help screen lists, in the order its groups come when not "here".
HELP_SOURCES: tuple[type[DOMNode], ...] = (
    WorkersView, LimitsView, OutboundView, TailWorkersView, RequestsView, ResponsePanel,
    TailView, TailPane, TraceLog, TraceDetailScreen, VersionsScreen, SecretsScreen, Dialog, ConfirmScreen,
)  # fmt: skip

Traffic = Callable[[EngineClient, Callable[[], str]], Awaitable[None]]


class WasmdeckApp(App[None]):
    """The admin console. It only ever talks to the engine through `EngineClient`."""

    CSS = stylesheet(__name__)  # app.tcss; read here, so a subclass elsewhere finds it too
    TITLE = "wasmdeck"
    ENABLE_COMMAND_PALETTE = True
    # start on the workers table, never in the filter box (where 1-6 would be typed, not obeyed)
    AUTO_FOCUS = "#workers-table"
    BINDINGS = [
        Binding("1", "show_tab('workers')", "Workers tab", id="app.workers", show=False),
        Binding("2", "show_tab('limits')", "Limits tab", id="app.limits", show=False),
        Binding("3", "show_tab('outbound')", "Outbound tab", id="app.outbound", show=False),
        Binding("4", "show_tab('tail-workers')", "Tail Workers tab", id="app.tail_workers", show=False),
        Binding("5", "show_tab('requests')", "Requests tab", id="app.requests", show=False),
        Binding("6", "show_tab('tail')", "Tail tab", id="app.tail", show=False),
        Binding("n", "choose_namespace", "Namespace", id="app.namespace"),
        Binding("question_mark", "help", "Help", id="app.help"),
        Binding("q", "request_quit", "Quit", id="app.quit"),
        Binding("escape", "leave_field", "Leave the field", id="app.leave_field", tooltip="Leave a text field (then digits switch tabs)"),
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
        self._current_tab = "workers"
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
        self.requests_view = self.query_one(RequestsView)
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
        # The pump is a timer: it fires outside the message loop, also while the app is being
        # taken down. Feeding views (or starting their reloads) then would reach widgets that
        # are already unmounted.
        if self._stream is None or not self.is_running:
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

    def _view_in(self, tab: str) -> SaveStep | None:
        """The view of `tab`, if it has a save step."""
        pane = self.tabs.get_pane(tab)
        return next((view for view in pane.children if isinstance(view, SaveStep)), None)

    @on(TabbedContent.TabActivated, "#tabs")
    def tab_activated(self, event: TabbedContent.TabActivated) -> None:
        # the initial tab's activation arrives as a message after mount; a tab chosen before it
        # (a fast key press at start) would be switched back, so it waits for it
        if not self._tabs_ready:
            self._tabs_ready = True
            if self._pending_tab is not None:
                self.tabs.active, self._pending_tab = self._pending_tab, None
            return  # AUTO_FOCUS has put the keyboard on the first tab already
        chosen = event.pane.id or self._current_tab
        if chosen == self._current_tab:
            return
        view = self._view_in(self._current_tab)
        if view is not None and view.unsaved_changes() is not None:
            # a click on another tab: stay until the user says what becomes of the edits
            self.tabs.active = self._current_tab
            self.show_tab(chosen)
            return
        self._current_tab = chosen
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
        self.show_tab(tab)

    def show_tab(self, tab: str, then: Callable[[], object] | None = None) -> None:
        """Switch to `tab` (asking first when the tab being left has unsaved edits), then run `then`."""
        if not self._tabs_ready:
            self._pending_tab = tab
            return

        def switch() -> None:
            self._current_tab = tab
            self.tabs.active = tab
            # move the keyboard into the new tab right away: if the old tab's focused widget is
            # hidden first, Textual refocuses inside the old tab, which switches it back
            self.focus_tab_content()
            if then is not None:
                then()

        if tab == self._current_tab:
            switch()
            return
        self.leave_then(f"leaving the {TABS[self._current_tab]} tab", switch, views=[self._view_in(self._current_tab)])

    def _in_text_field(self) -> bool:
        return isinstance(self.screen.focused, (Input, TextArea)) and not isinstance(self.screen, ModalScreen)

    def action_leave_field(self) -> None:
        """From a text field to the tab's main widget, where the digits switch tabs again."""
        pane = self.tabs.active_pane
        if pane is not None:
            self.set_focus(None)
            self.focus_tab_content()

    def action_choose_namespace(self) -> None:
        self.leave_then("switching namespace", self.pick_namespace)

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
        self.outbound_view.reload(keep_edits=False)
        self.tail_workers_view.reload()
        self.notify(f"Showing namespace {namespace}", title="Namespace")

    @on(WorkersChanged)
    def workers_changed(self) -> None:
        self.workers_view.reload()  # a dialog's change (secrets) too; the view's own reload is one and the same
        self.limits_view.reload()
        self.outbound_view.reload()
        self.tail_workers_view.reload()

    @on(PlatformChanged)
    def platform_changed(self) -> None:
        self.workers_view.reload()

    @on(LimitsChanged)
    def limits_changed(self) -> None:
        self.limits_view.reload()

    # -- unsaved edits ---------------------------------------------------------------

    @on(UnsavedChanged)
    def unsaved_changed(self, event: UnsavedChanged) -> None:
        """Mark the tab whose view holds unsaved edits (seen from every tab)."""
        for tab, title in TABS.items():
            view = self._view_in(tab)
            if view is not None:
                number = list(TABS).index(tab) + 1
                marked = view.unsaved_changes() is not None
                self.tabs.get_tab(tab).label = f"{number} {title}" + (UNSAVED_MARK if marked else "")

    def _save_steps(self) -> list[SaveStep]:
        """Open forms (topmost first), then the views with a save step."""
        forms: list[SaveStep] = [screen for screen in reversed(self.screen_stack) if isinstance(screen, FormScreen)]
        views = [view for tab in TABS if (view := self._view_in(tab)) is not None]
        return forms + views

    def leave_then(self, leaving: str, proceed: Callable[[], object], views: Iterable[SaveStep | None] | None = None) -> None:
        """Run `proceed` once none of `views` (default: every form and view) holds unsaved edits:
        for each that does, ask to save, discard, or stay (then `proceed` never runs)."""
        pending = [view for view in (self._save_steps() if views is None else views) if view is not None]
        dirty = next((view for view in pending if view.unsaved_changes() is not None), None)
        if dirty is None:
            proceed()
            return
        what = dirty.unsaved_changes() or "something"

        async def answered(choice: str | None) -> None:
            if choice == "save":
                if not await dirty.save_changes():
                    return  # refused: the reason shows where the edits are, and they stay
            elif choice == "discard":
                dirty.discard_changes()
            else:
                return
            self.leave_then(leaving, proceed, views)

        self.push_screen(
            UnsavedChangesScreen(what, leaving=leaving, can_save=not isinstance(dirty, FormScreen)), answered
        )

    def action_request_quit(self) -> None:
        self.leave_then("quitting", self.exit)

    async def action_quit(self) -> None:
        self.leave_then("quitting", self.exit)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # A dialog owns the keyboard: the digits, n and q of the screen below do nothing there
        # (ctrl+q still quits, asking about unsaved edits first).
        if action in ("show_tab", "choose_namespace", "request_quit") and isinstance(self.screen, ModalScreen):
            return False
        if action == "leave_field":
            return self._in_text_field()
        return True

    # -- help and the command palette ----------------------------------------------

    def help_entries(self) -> list[tuple[str, str, str]]:
        """(group, key, description) for every console binding; the groups active where the focus is first."""
        active = [active.binding for active in self.screen.active_bindings.values()]
        listed = list(active)
        sources: tuple[type[DOMNode], ...] = (WasmdeckApp, *HELP_SOURCES)
        for source in sources:
            listed += Binding.make_bindings(source.BINDINGS)
        listed.append(Binding("ctrl+p", "command_palette", "Command palette (every tab and view by name)", id="app.palette"))
        listed.append(Binding("ctrl+q", "quit", "Quit, from anywhere", id="app.quit_anywhere"))
        display = {binding.key: self.get_key_display(binding) for binding in listed}
        here = [(binding.id or "app.").split(".")[0] for binding in active if binding.id]
        return build_help(listed, display, here)

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.help_entries()))

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if isinstance(screen, ModalScreen):
            return  # a dialog is open: the commands below act on the tabs behind it
        workers = self.workers_view
        tail = self.tail_view
        requests = self.requests_view
        for number, (tab, title) in enumerate(TABS.items(), start=1):
            yield SystemCommand(f"Go to {title}", f"Show the {title} tab ({number})", self._go(tab))
        yield SystemCommand("Upload a Worker", "Deploy a .wasm module to this namespace", self._go("workers", workers.action_upload))
        yield SystemCommand(
            "Worker secrets", "The selected worker's secrets: names only; set or delete one (Workers tab, s)",
            self._go("workers", lambda: self.run_worker(workers.action_secrets())),
        )
        yield SystemCommand(
            "Add tag limits", "Set cpuMs, memoryMb, subRequests or wallMs for a tag", self._go("limits", self.limits_view.action_add)
        )
        yield SystemCommand(
            "Edit outbound settings", "Choose the Outbound Worker, its parameters and the egress policy", self._go("outbound")
        )
        yield SystemCommand(
            "Attach a Tail Worker", "Deliver a Worker's, the dispatcher's or the namespace's trace items to a tail handler",
            self._go("tail-workers", lambda: self.run_worker(self.tail_workers_view.action_add())),
        )
        yield SystemCommand("Compose a request", "Send a request through dispatch (Requests tab, URL)", self._go("requests"))
        for tab, title, help_text in (
            ("body", "Response body", "The last response's body, JSON pretty-printed (Requests tab, b)"),
            ("headers", "Response headers", "The last response's headers (Requests tab, h)"),
            ("trace", "Response trace", "The trace item of the request's Worker: logs, exceptions (Requests tab, t)"),
            ("dispatcher", "Dispatcher trace", "The dispatch Worker's own item for the last request (Requests tab, d)"),
        ):
            yield SystemCommand(title, help_text, self._go("requests", partial(requests.panel.show_tab, tab, focus=True)))
        yield SystemCommand(
            "Open the response's trace item", "The whole trace item of the last request, with its JSON (Requests tab, o)",
            self._go("requests", requests.panel.action_open_trace),
        )
        yield SystemCommand("New tail pane", "Open another live tail pane", self._go("tail", tail.action_add_pane))
        yield SystemCommand(
            "Open the selected tail line", "The whole trace item of the tail's selected line (Tail tab, enter)",
            self._go("tail", lambda: tail.current_pane.log_view.action_open()),
        )
        yield SystemCommand("Switch namespace", "Choose the namespace the console shows (n)", self.action_choose_namespace)
        yield SystemCommand("Keys", "Every key of the console, by where it works (?)", self.action_help)

    def _go(self, tab: str, action: Callable[[], object] | None = None) -> Callable[[], None]:
        def run() -> None:
            self.show_tab(tab, then=action)

        return run

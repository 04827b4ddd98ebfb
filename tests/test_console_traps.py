"""The operator console's traps, each driven with Pilot on the real app over a real engine and real
Wasm Workers (the demo platform where a dispatch Worker matters): the trace the Requests tab
shows, rollback, dialog focus, digit keys, unsaved edits, help and palette, a 100x30 terminal,
ctrl+l, one version per edit, and the trace pump at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, Input, Select, TextArea

from wasmdeck.cli.demo import setup_demo_platform
from wasmdeck.client import LocalClient, TraceStream
from wasmdeck.console.app import WasmdeckApp
from wasmdeck.console.screens.requests import RequestsView
from wasmdeck.console.widgets.error_line import ErrorLine
from wasmdeck.console.widgets.help import HelpScreen
from wasmdeck.console.widgets.modals import ConfirmScreen, UnsavedChangesScreen, VersionsScreen
from wasmdeck.console.widgets.trace_detail import TraceDetailScreen
from wasmdeck.console.widgets.trace_log import column_layout
from wasmdeck.engine import Engine, InvalidInput, NotFound, Request, TraceFilter

from .conftest import FIXED_CLOCK_MS, FIXTURES, fixture_module, protocol_module
from .test_console_app import settle

NARROW = (100, 30)


class NotedApp(WasmdeckApp):
    """The console, keeping every toast it shows."""

    def __init__(self, engine: Engine, **options: Any) -> None:
        super().__init__(LocalClient(engine, description="wasmdeck.db"), clock=lambda: 1_000.0, upload_base=FIXTURES, **options)
        self.toasts: list[str] = []

    def notify(self, message: str, **options: Any) -> None:  # type: ignore[override]
        self.toasts.append(message)
        super().notify(message, **options)


@pytest.fixture
def demo(engine: Engine) -> Engine:
    setup_demo_platform(engine)
    return engine


async def until(pilot: Any, condition: Any, seconds: float = 30.0) -> None:
    """Let the app run until `condition()` holds (a save on leave runs in a dialog's callback)."""
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    assert condition()


async def asked(pilot: Any, key: str) -> UnsavedChangesScreen:
    """Press `key` once no dialog is open, and wait for the unsaved-changes question it opens."""
    await until(pilot, lambda: not pilot.app.screen.is_modal)
    await pilot.press(key)
    await until(pilot, lambda: isinstance(pilot.app.screen, UnsavedChangesScreen))
    return pilot.app.screen


async def type_text(pilot: Any, text: str) -> None:
    await pilot.press(*text)
    await pilot.pause()


async def request(pilot: Any, url: str) -> RequestsView:
    """Type `url` into the Requests tab (ctrl+l selects the old one) and send it with enter."""
    app = pilot.app
    if app.tabs.active != "requests":
        if app.focused is not None and isinstance(app.focused, (Input, TextArea)):
            await pilot.press("escape")
        await pilot.press("5")
        await pilot.pause()
    await pilot.press("ctrl+l")
    await type_text(pilot, url)
    await pilot.press("enter")
    await settle(pilot)
    return app.requests_view


# -- 1. the Requests tab shows the right trace ------------------------------------------------


async def test_requests_tab_shows_the_user_workers_trace_with_the_dispatchers_beside_it(demo: Engine) -> None:
    app = NotedApp(demo)
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        view = await request(pilot, "http://trap.demo.local/")
        panel = view.panel
        response = panel.response
        assert response is not None and response.status == 500
        assert response.trace["scriptName"] == "trap" and response.dispatcher_trace is not None
        # the header says what the request came to: the tenant trapped, whatever the dispatcher did
        title = str(panel.border_title)
        assert "500 Internal Server Error" in title and "exception" in title and " ok" not in title
        assert view.history[0].outcome == "exception"
        assert "Worker     trap v1" in panel.trace_text
        assert "Exceptions (1)" in panel.trace_text and "Exceptions (0)" not in panel.trace_text
        assert "dispatch Worker dispatcher v1" in panel.trace_text
        # ctrl+t puts the keyboard on the Trace tab; d shows the dispatcher's own item, t goes back
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert panel.active_tab == "trace" and panel.has_focus_within
        await pilot.press("d")
        await pilot.pause()
        assert panel.active_tab == "dispatcher"
        assert "Worker     dispatcher v1" in panel.dispatcher_text and "It dispatched to trap v1" in panel.dispatcher_text
        await pilot.press("o")
        await pilot.pause()
        assert isinstance(app.screen, TraceDetailScreen) and app.screen.item["scriptName"] == "dispatcher"
        await pilot.press("escape")
        await pilot.press("t", "o")
        await pilot.pause()
        assert isinstance(app.screen, TraceDetailScreen) and app.screen.item["scriptName"] == "trap"
        assert app.screen.item["exceptions"]
        await pilot.press("escape")
        await pilot.pause()

        # the tenant's logs are in the Trace tab, not only in the Tail tab
        view = await request(pilot, "http://logger.demo.local/?lines=2")
        assert view.panel.response is not None and view.panel.response.trace["scriptName"] == "logger"
        assert "Logs (0)" not in view.panel.trace_text and "Worker     logger v1" in view.panel.trace_text

        # a request the dispatch Worker answers itself: the same item on both tabs, and it says so
        view = await request(pilot, "http://any.demo.local/__dispatcher/health")
        assert view.panel.response is not None and view.panel.response.status == 200
        assert "answered itself" in view.panel.trace_text and "Worker     dispatcher v1" in view.panel.trace_text


async def test_without_a_dispatch_worker_the_dispatcher_tab_says_there_is_none(engine: Engine) -> None:
    engine.deploy("trap", fixture_module("trap"))
    app = NotedApp(engine)
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        view = await request(pilot, "http://trap.localhost/")
        assert view.panel.response is not None and view.panel.response.dispatcher_trace is None
        assert "dispatch Worker" not in view.panel.trace_text and "Exceptions (1)" in view.panel.trace_text
        assert view.panel.dispatcher_text.startswith("No dispatch Worker handled this request")


# -- 2. the Versions dialog -------------------------------------------------------------------


async def test_versions_marks_the_serving_version_refuses_it_and_asks_before_rolling_back(engine: Engine) -> None:
    engine.deploy("hello", fixture_module("hello"), tags=["free"])
    engine.set_tags("hello", ["free", "eu"])
    engine.set_tags("hello", ["pro"])
    app = NotedApp(engine)
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        await pilot.press("v")
        await settle(pilot)
        assert isinstance(app.screen, VersionsScreen)
        table = app.screen.query_one("#versions-table", DataTable)
        assert app.screen.focused is table, "the arrow keys must work at once"
        assert [str(table.get_row_at(row)[1]) for row in range(3)] == ["● now", "", ""]
        await pilot.press("down")
        assert table.cursor_row == 1
        await pilot.press("up", "enter")  # the serving version: never rolled back to, and it says why
        await pilot.pause()
        assert isinstance(app.screen, VersionsScreen)
        error = str(app.screen.query_one("#versions-error", ErrorLine).render())
        assert error == "v3 is the version serving now; choose an earlier one to roll back to."
        assert engine.worker("hello").version == 3
        await pilot.press("down", "enter")  # v2: asks first
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and "v2" in app.screen.question
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, VersionsScreen) and engine.worker("hello").version == 3
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("y")
        await settle(pilot)
        worker = engine.worker("hello")
        assert worker.version == 4 and worker.tags == ("free", "eu")
        assert "hello now serves v2 (rolled back from v3) as v4" in app.toasts
        # v2 is now what v4 serves: rolling back to it again would change nothing, so it is refused
        await pilot.press("v")
        await settle(pilot)
        await pilot.press("down", "down", "enter")
        await pilot.pause()
        assert isinstance(app.screen, VersionsScreen)
        error = str(app.screen.query_one("#versions-error", ErrorLine).render())
        assert error.startswith("v2 has the same module, tags and vars as v4, which is serving now")
        assert engine.worker("hello").version == 4


# -- 3. every dialog opens with its first field focused ------------------------------------------


def _platform(engine: Engine) -> None:
    engine.deploy("hello", fixture_module("hello"), tags=["free"])
    engine.deploy("gateway", protocol_module("outbound-logger"))
    engine.deploy("audit", protocol_module("tail-collector"))
    engine.set_limits("free", cpu_ms=50)
    engine.create_namespace("staging")


@pytest.mark.parametrize(
    ("keys", "dialog", "first", "typed"),
    [
        (["u"], "UploadScreen", "upload-path", "x3.wasm"),
        (["e"], "EditWorkerScreen", "edit-tags", "eu3"),
        (["v"], "VersionsScreen", "versions-table", None),
        (["d"], "ConfirmScreen", "confirm-no", None),
        (["n"], "NamespacePicker", "namespace-list", None),
        (["2", "a"], "LimitFormScreen", "limit-tag", "pro3"),
        (["2", "e"], "LimitFormScreen", "limit-cpu_ms", "3"),  # editing: the tag is fixed, its first limit has the keyboard
        (["3", "a"], "ParameterFormScreen", "parameter-name", "customer3"),
        (["4", "a"], "TailConsumerFormScreen", "tail-consumer-name", None),
        (["question_mark"], "HelpScreen", "help-table", None),
    ],
)
async def test_every_dialog_opens_with_its_first_field_focused(
    engine: Engine, keys: list[str], dialog: str, first: str, typed: str | None
) -> None:
    _platform(engine)
    app = NotedApp(engine)
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot) if key != "n" else await pilot.pause(0.3)
        assert type(app.screen).__name__ == dialog
        assert app.screen.focused is not None and app.screen.focused.id == first
        if typed is not None:  # typing lands in the field, digits included, from the first key, after what is there
            field = app.screen.focused
            assert isinstance(field, Input)
            before = field.value
            await type_text(pilot, typed)
            assert field.value == before + typed and type(app.screen).__name__ == dialog


async def test_the_trace_detail_opens_scrollable_at_once(demo: Engine) -> None:
    app = NotedApp(demo)
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        await request(pilot, "http://trap.demo.local/")
        await pilot.press("ctrl+t", "o")
        await pilot.pause()
        assert isinstance(app.screen, TraceDetailScreen)
        assert app.screen.focused is not None and app.screen.focused.id == "trace-body"


# -- 4. digits switch tabs only outside text fields ----------------------------------------------


async def test_digits_are_typed_in_fields_and_switch_tabs_elsewhere(engine: Engine) -> None:
    _platform(engine)
    app = NotedApp(engine)
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await pilot.pause()
        url = app.query_one("#request-url", Input)
        assert app.tabs.active == "requests" and app.focused is url
        assert url.selected_text == "", "arriving must not select the URL, where the next key would replace it"
        await pilot.press("ctrl+l")
        await type_text(pilot, "http://x3.localhost/1/2/6")
        assert url.value == "http://x3.localhost/1/2/6" and app.tabs.active == "requests"
        await pilot.press("escape")  # leaves the form for the history: now digits switch tabs
        await pilot.press("3")
        await settle(pilot)
        assert app.tabs.active == "outbound"
        allow = app.query_one("#egress-allow", Input)
        allow.focus()
        await type_text(pilot, "10.0.0.3, 127.0.0.1:8080")
        assert allow.value == "10.0.0.3, 127.0.0.1:8080" and app.tabs.active == "outbound"
        await pilot.press("escape")  # leaves the field; the digit now switches, after asking about the edit
        await pilot.pause()
        assert not isinstance(app.focused, Input)
        await asked(pilot, "1")
        await pilot.press("d")
        await until(pilot, lambda: app.tabs.active == "workers")


# -- 5. unsaved edits are marked and confirmed on leave --------------------------------------------


async def test_unsaved_outbound_edits_are_marked_and_asked_about_on_every_way_out(engine: Engine) -> None:
    _platform(engine)
    app = NotedApp(engine)
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        view = app.outbound_view
        allow = app.query_one("#egress-allow", Input)
        assert not view.has_class("-unsaved") and "●" not in str(app.tabs.get_tab("outbound").label)
        allow.focus()
        await type_text(pilot, "api.example.com")
        assert view.has_class("-unsaved") and "●" in str(app.tabs.get_tab("outbound").label)
        assert app.query_one("#outbound-unsaved").display

        # switching tab asks; staying keeps the edit
        app.query_one("#outbound-parameters", DataTable).focus()
        await asked(pilot, "1")
        await pilot.press("escape")
        await pilot.pause()
        assert app.tabs.active == "outbound" and allow.value == "api.example.com"
        # a click on another tab asks too
        await until(pilot, lambda: not app.screen.is_modal)
        await pilot.click("#--content-tab-workers")
        await until(pilot, lambda: isinstance(app.screen, UnsavedChangesScreen))
        assert app.tabs.active == "outbound"
        await pilot.press("escape")
        await pilot.pause()
        # switching namespace asks
        await asked(pilot, "n")
        await pilot.press("escape")
        await pilot.pause()
        assert app.namespace == "default" and allow.value == "api.example.com"
        # discard: the stored settings are shown again, and the tab is left
        await asked(pilot, "1")
        await pilot.press("d")
        await until(pilot, lambda: app.tabs.active == "workers" and allow.value == "")
        await settle(pilot)
        assert app.tabs.active == "workers" and allow.value == "" and engine.namespace().egress.as_dict()["allow"] == []
        assert "●" not in str(app.tabs.get_tab("outbound").label)

        # save on leave: a refused save keeps the edits and the tab
        await pilot.press("3")
        await settle(pilot)
        allow.focus()
        await type_text(pilot, "http://bad.example.com")
        app.query_one("#outbound-parameters", DataTable).focus()
        await asked(pilot, "5")
        await pilot.press("s")
        await until(pilot, lambda: "scheme" in str(app.query_one("#outbound-error", ErrorLine).render()))
        assert app.tabs.active == "outbound" and "scheme" in str(app.query_one("#outbound-error", ErrorLine).render())
        allow.value = "api.example.com"
        await asked(pilot, "5")
        await pilot.press("s")
        await until(pilot, lambda: app.tabs.active == "requests")
        assert app.tabs.active == "requests" and engine.namespace().egress.as_dict()["allow"] == ["api.example.com"]

        # quitting asks too (ctrl+q works from anywhere, even inside a field)
        await pilot.press("3")
        await settle(pilot)
        allow.focus()
        await type_text(pilot, ", api.example.org")
        await asked(pilot, "ctrl+q")
        await pilot.press("escape")
        await pilot.pause()
        assert app.is_running
        await asked(pilot, "ctrl+q")
        await pilot.press("d")
        await until(pilot, lambda: not app.is_running)
    assert engine.namespace().egress.as_dict()["allow"] == ["api.example.com"]


async def test_a_dialog_marks_what_was_typed_and_asks_before_dropping_it(engine: Engine) -> None:
    _platform(engine)
    app = NotedApp(engine)
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        await pilot.press("u")
        await pilot.pause()
        box = app.screen.query_one("#upload-dialog")
        assert box.border_subtitle in (None, "")
        await type_text(pilot, "hello.wasm")
        assert box.border_subtitle == "● unsaved"
        await pilot.press("ctrl+q")  # quitting from a dialog with edits asks first
        await until(pilot, lambda: isinstance(app.screen, UnsavedChangesScreen))
        assert isinstance(app.screen, UnsavedChangesScreen) and not app.screen.can_save
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("escape")  # and so does closing it
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert app.screen.query_one("#upload-path", Input).value == "hello.wasm"
        app.screen.query_one("#upload-path", Input).value = ""
        app.screen.query_one("#upload-name", Input).value = ""
        await pilot.pause()
        await pilot.press("escape")  # nothing typed any more: closes without a question
        await pilot.pause()
        assert not app.screen.is_modal


# -- 6. every tab and sub-tab is reachable from help and the palette -------------------------------


async def test_help_lists_every_tab_and_sub_tab(engine: Engine) -> None:
    app = NotedApp(engine)
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        by_description = {description: key for _, key, description in app.screen.entries}
        for tab in ("Workers", "Limits", "Outbound", "Tail Workers", "Requests", "Tail"):
            assert f"{tab} tab" in by_description
        for sub_tab in ("Response body", "Response headers", "Dispatcher trace: the dispatch Worker's own item",
                        "Trace: the item of the request's Worker (logs, exceptions)",
                        "Open the shown trace item whole, with its JSON", "Open the selected line's trace item whole",
                        "The response's trace, with the keyboard in the response panel"):
            assert sub_tab in by_description, sub_tab
        assert by_description["Dispatcher trace: the dispatch Worker's own item"] == "d"
        # the groups of where the keyboard is come first
        assert app.screen.entries[0][0] in ("app", "workers")


@pytest.mark.parametrize(
    ("search", "tab", "response_tab"),
    [("Dispatcher trace", "requests", "dispatcher"), ("Response headers", "requests", "headers"),
     ("Response trace", "requests", "trace"), ("Go to Tail Workers", "tail-workers", None), ("Go to Limits", "limits", None)],
)
async def test_the_palette_opens_every_tab_and_sub_tab(engine: Engine, search: str, tab: str, response_tab: str | None) -> None:
    app = NotedApp(engine)
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await type_text(pilot, search)
        await pilot.pause(0.5)  # the palette searches in the background
        await pilot.press("enter")
        await settle(pilot)
        assert app.tabs.active == tab
        if response_tab is not None:
            assert app.requests_view.panel.active_tab == response_tab


async def test_the_palette_names_every_tab_and_sub_tab(engine: Engine) -> None:
    app = NotedApp(engine)
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        titles = {command.title for command in app.get_system_commands(app.screen)}
        assert {f"Go to {t}" for t in ("Workers", "Limits", "Outbound", "Tail Workers", "Requests", "Tail")} <= titles
        assert {"Response body", "Response headers", "Response trace", "Dispatcher trace",
                "Open the response's trace item", "Open the selected tail line"} <= titles


# -- 7. a 100x30 terminal stays readable ------------------------------------------------------------


def test_tail_lines_keep_status_and_outcome_at_every_width() -> None:
    for width in range(20, 201):
        layout = dict(column_layout(width))
        assert {"status", "outcome", "url"} <= set(layout), width
        assert sum(layout.values()) + len(layout) - 1 <= width, width
        if width >= 29:
            assert "worker" in layout, f"at {width} cells a dispatcher's line cannot be told from its tenant's"


# -- 8. ctrl+l -------------------------------------------------------------------------------------


async def test_ctrl_l_focuses_the_url_and_selects_it(engine: Engine) -> None:
    app = NotedApp(engine)
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await pilot.pause()
        url = app.query_one("#request-url", Input)
        app.query_one("#request-body", TextArea).focus()
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert app.focused is url and url.selected_text == url.value == "http://hello.localhost/"
        await pilot.press("ctrl+l")  # already in the URL: selects it again
        assert url.selected_text == url.value
        await type_text(pilot, "http://echo.localhost/")
        assert url.value == "http://echo.localhost/"


# -- 9. one edit of tags and vars is one version ----------------------------------------------------


def test_engine_update_settings_makes_one_version(engine: Engine) -> None:
    engine.deploy("hello", fixture_module("hello"), tags=["free"], vars={"A": "1"})
    worker = engine.update_settings("hello", tags=["pro", "eu"], vars={"B": "2"})
    assert (worker.version, worker.tags, worker.vars) == (2, ("pro", "eu"), {"B": "2"})
    assert engine.versions("hello")[-1].message == "tags and vars changed"
    worker = engine.update_settings("hello", vars={"C": "3"})
    assert (worker.version, worker.tags, worker.vars) == (3, ("pro", "eu"), {"C": "3"})
    assert engine.versions("hello")[-1].message == "vars changed"
    with pytest.raises(InvalidInput, match="reserved|CGI"):
        engine.update_settings("hello", tags=["x"], vars={"REQUEST_METHOD": "x"})
    with pytest.raises(InvalidInput):
        engine.update_settings("hello", tags=["bad tag"])
    with pytest.raises(InvalidInput, match="tags, new vars, or both"):
        engine.update_settings("hello")
    with pytest.raises(NotFound):
        engine.update_settings("ghost", tags=["x"])
    assert engine.worker("hello").version == 3 and engine.worker("hello").tags == ("pro", "eu")


# -- 10. the trace pump stops when the app does -----------------------------------------------------


async def test_the_trace_pump_does_not_feed_views_once_the_app_stops(engine: Engine) -> None:
    """The flaky `NoMatches('#workers-table')` at shutdown: the pump is a timer, which fires outside
    the message loop, also while the screens are taken down; it started a workers reload into a
    view whose table was already gone."""
    engine.deploy("hello", fixture_module("hello"))
    app = NotedApp(engine)
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
    drained: list[bool] = []
    stream = app._stream
    assert stream is not None

    class Watched:
        def drain(self) -> list[dict[str, Any]]:
            drained.append(True)
            return []

        def take_dropped(self) -> int:
            return 0

    app._stream = Watched()  # type: ignore[assignment]
    await engine.request("http://hello.x/")
    app.pump_traces()  # what a last timer tick during the teardown does
    assert drained == [], "the pump fed the views of an app that is no longer running"


# -- pictures at 100x30 --------------------------------------------------------------------------


class PinnedClient(LocalClient):
    """What varies from run to run, pinned, so a picture is the same every time: the times, and
    each warm instance's random id (replaced by `00000001`, `00000002`... in the order first seen)."""

    def __init__(self, engine: Engine, **options: Any) -> None:
        super().__init__(engine, **options)
        self.instance_ids: dict[str, str] = {}

    def _pin(self, item: dict[str, Any]) -> dict[str, Any]:
        item["cpuTime"] = item["wallTime"] = 1
        item["eventTimestamp"] = FIXED_CLOCK_MS
        for sub in item.get("subrequests") or ():
            sub["durationMs"] = 1
        found = item.get("instanceId")
        if found and found not in self.instance_ids.values():  # (the same item may come twice)
            stable = self.instance_ids.setdefault(found, f"{len(self.instance_ids) + 1:08x}")
            item["instanceId"] = stable
            if item.get("instanceRetired"):
                item["instanceRetired"] = item["instanceRetired"].replace(found, stable)
            for exception in item.get("exceptions") or ():
                exception["message"] = str(exception.get("message", "")).replace(found, stable)
            instance = (item.get("event") or {}).get("instance")
            if instance:
                instance["id"] = stable
        return item

    async def dispatch(self, request: Request, namespace: str) -> Any:
        response = await super().dispatch(request, namespace)
        for item in (response.trace, response.dispatcher_trace):
            if item:
                self._pin(item)
        return response

    def stream(self, trace_filter: TraceFilter | None = None, buffer: int = 10_000) -> TraceStream:
        return PinnedStream(super().stream(trace_filter, buffer), self._pin)

    async def recent_traces(self, limit: int, trace_filter: TraceFilter | None = None) -> list[dict[str, Any]]:
        return [self._pin(item) for item in await super().recent_traces(limit, trace_filter)]


class PinnedStream(TraceStream):
    def __init__(self, inner: TraceStream, pin: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.inner = inner
        self.pin = pin
        self.dropped = 0

    def drain(self) -> list[dict[str, Any]]:
        return [self.pin(item) for item in self.inner.drain()]

    async def wait(self, timeout: float) -> None:
        await self.inner.wait(timeout)

    def take_dropped(self) -> int:
        return self.inner.take_dropped()

    def close(self) -> None:
        self.inner.close()


class EngineApp(WasmdeckApp):
    """The console over its own engine, which it closes on its own event loop when it stops: a
    picture runs the app on a loop of its own, and the warm instances its requests started live
    on that loop (closing them from another loop afterwards fails)."""

    def __init__(self, engine: Engine, client: LocalClient | None = None, **options: Any) -> None:
        options.setdefault("clock", lambda: 1_000.0)
        options.setdefault("upload_base", FIXTURES)
        super().__init__(client or PinnedClient(engine, description="demo.db"), **options)
        self.engine = engine

    async def on_unmount(self) -> None:
        await self.engine.close()


def close_engine(engine: Engine) -> None:
    """After a picture: close the engine unless the app already did."""
    if not engine._closed:
        asyncio.run(engine.close())


def pinned_demo_app(tmp_path: Path, wasmer_cache: Path) -> tuple[WasmdeckApp, Engine]:
    engine = Engine(tmp_path / "demo.db", cache_dir=wasmer_cache, clock=lambda: FIXED_CLOCK_MS)
    setup_demo_platform(engine)
    return EngineApp(engine), engine


def _snapshot(snap_compare: Any, tmp_path: Path, wasmer_cache: Path, run_before: Any) -> None:
    app, engine = pinned_demo_app(tmp_path, wasmer_cache)
    try:
        assert snap_compare(app, terminal_size=NARROW, run_before=run_before)
    finally:
        close_engine(engine)


def test_snapshot_requests_trace_at_100x30(snap_compare: Any, tmp_path: Path, wasmer_cache: Path) -> None:
    """A trap behind the dispatch Worker: the header says exception, the Trace tab shows the tenant's item."""

    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        await request(pilot, "http://trap.demo.local/")
        await pilot.press("ctrl+t")
        await settle(pilot)

    _snapshot(snap_compare, tmp_path, wasmer_cache, run_before)


def test_snapshot_requests_dispatcher_trace_at_100x30(snap_compare: Any, tmp_path: Path, wasmer_cache: Path) -> None:
    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        await request(pilot, "http://trap.demo.local/")
        await pilot.press("ctrl+t", "d")
        await settle(pilot)

    _snapshot(snap_compare, tmp_path, wasmer_cache, run_before)


def test_snapshot_workers_at_100x30(snap_compare: Any, tmp_path: Path, wasmer_cache: Path) -> None:
    _snapshot(snap_compare, tmp_path, wasmer_cache, settle)


def test_snapshot_outbound_unsaved_at_100x30(snap_compare: Any, tmp_path: Path, wasmer_cache: Path) -> None:
    """An edit not saved yet: the tab label and the view say so."""

    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        pilot.app.query_one("#egress-block", Input).focus()
        await type_text(pilot, ", evil.example.com")
        await pilot.press("escape")  # out of the field: no blinking cursor in the picture
        await settle(pilot)

    _snapshot(snap_compare, tmp_path, wasmer_cache, run_before)


def test_snapshot_unsaved_question_at_100x30(snap_compare: Any, tmp_path: Path, wasmer_cache: Path) -> None:
    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        pilot.app.query_one("#egress-block", Input).focus()
        await type_text(pilot, ", evil.example.com")
        pilot.app.query_one("#outbound-parameters", DataTable).focus()
        await asked(pilot, "1")
        await pilot.pause()

    _snapshot(snap_compare, tmp_path, wasmer_cache, run_before)


def test_snapshot_versions_confirmation_at_100x30(snap_compare: Any, tmp_path: Path, wasmer_cache: Path) -> None:
    """Enter on an earlier version asks first, and says what the rollback will serve."""
    engine = Engine(tmp_path / "w.db", cache_dir=wasmer_cache, clock=lambda: FIXED_CLOCK_MS)
    engine.deploy("hello", fixture_module("hello"), tags=["free"], vars={"GREETING": "hi"})
    engine.update_settings("hello", tags=["pro"], vars={"GREETING": "hello"})

    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("v")
        await settle(pilot)
        await pilot.press("down", "enter")
        await pilot.pause()

    app = EngineApp(engine, PinnedClient(engine, description="wasmdeck.db"))
    try:
        assert snap_compare(app, terminal_size=NARROW, run_before=run_before)
    finally:
        close_engine(engine)

"""Warm instances in the console (issue 11, "Visibility"), on the real app over a real engine and
the real `proto-warm` guest (a version 2 Worker with a global counter), embedded and remote: the
Workers table's instance columns and the selected worker's pane (retirements by reason), the
instance fields of a trace item in the Requests tab and the whole-item screen, and the item of an
instance that failed while idle in the tail; then pictures at 100x30 and 120x40."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable

from wasmdeck.cli.demo import setup_demo_platform
from wasmdeck.client import LocalClient
from wasmdeck.client.remote import RemoteClient
from wasmdeck.console.app import WasmdeckApp
from wasmdeck.console.screens.tail import TailView
from wasmdeck.console.widgets.trace_detail import TraceDetailScreen, summary
from wasmdeck.console.widgets.trace_log import TraceRow
from wasmdeck.console.widgets.worker_detail import WorkerDetail
from wasmdeck.engine import Engine, NotFound, Request
from wasmdeck.engine.instances import InstanceSettings
from wasmdeck.engine.traces import is_instance_event

from .conftest import FIXED_CLOCK_MS, FIXTURES, fixture_module, protocol_module
from .test_console_app import rows, settle
from .test_console_tail import visible
from .test_console_traps import EngineApp, PinnedClient, close_engine, request
from .test_remote_client import TOKEN, served

NARROW = (100, 30)
WIDE = (120, 40)


class ConsoleApp(WasmdeckApp):
    """The console on a real clock (the Workers table reloads with traffic every 2 s), keeping its toasts."""

    def __init__(self, client: Any) -> None:
        super().__init__(client, clock=time.time, upload_base=FIXTURES)
        self.toasts: list[str] = []

    def notify(self, message: str, **options: Any) -> None:  # type: ignore[override]
        self.toasts.append(message)
        super().notify(message, **options)


@pytest.fixture(params=["embedded", "remote"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.asynccontextmanager
async def console_over(engine: Engine, transport: str) -> AsyncIterator[ConsoleApp]:
    """The console over `engine`: in this process, or through a served admin API and dispatch listener."""
    if transport == "embedded":
        yield ConsoleApp(LocalClient(engine, description="wasmdeck.db"))
        return
    async with served(engine) as server:
        client = RemoteClient(server.admin_url, TOKEN)
        try:
            yield ConsoleApp(client)
        finally:
            await client.close()


async def until(pilot: Any, condition: Callable[[], Any], seconds: float = 15.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    assert condition()


def row_of(app: WasmdeckApp, name: str) -> dict[str, str]:
    """The Workers table's row of `name`, by column label."""
    table = app.query_one("#workers-table", DataTable)
    labels = [str(column.label) for column in table.columns.values()]
    found = [dict(zip(labels, row)) for row in rows(app, "workers-table") if row[0] == name]
    assert found, f"no row for {name}"
    return found[0]


def select(app: WasmdeckApp, name: str) -> None:
    table = app.query_one("#workers-table", DataTable)
    table.move_cursor(row=table.get_row_index(name))


async def send(app: WasmdeckApp, url: str) -> Any:
    """A request as traffic sends it: through the console's transport, not its Requests tab."""
    return await app.client.dispatch(Request(url), "default")


# -- the Workers tab ---------------------------------------------------------------------------


async def test_the_workers_table_and_pane_show_instances_and_retirements(engine: Engine, transport: str) -> None:
    engine.deploy("warm", protocol_module("proto-warm"))
    engine.deploy("hello", fixture_module("hello"))
    async with console_over(engine, transport) as app, app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        assert row_of(app, "warm")["Busy/Idle"] == "-" and row_of(app, "warm")["Reused"] == "-"
        select(app, "warm")
        await pilot.pause()
        pane = app.query_one(WorkerDetail)
        assert "Instances  none since the engine started" in pane.plain

        for _ in range(3):
            assert (await send(app, "http://warm.localhost/")).status == 200
        trapped = await send(app, "http://warm.localhost/?mode=trap-at&n=4")
        assert trapped.status == 500 and "it trapped" in trapped.trace["instanceRetired"]
        assert (await send(app, "http://warm.localhost/")).text.startswith("count 1 invocation 1 ")  # a fresh instance
        # the table reloads with the traffic (no key pressed): 5 invocations, 3 on a warm instance
        # (the request count follows once the stored traces are written; the instance numbers at once)
        await until(pilot, lambda: [row_of(app, "warm")[column] for column in ("Reqs", "Busy/Idle", "Reused")] == ["5", "0/1", "60%"])
        assert "Retired    1: trap 1" in pane.plain
        assert "now 0 busy, 1 idle · started 2 · 5 invocations, 60% on a warm instance" in pane.plain

        # a WCGI worker has no instances: dashes in the table, and the pane says why
        assert (row_of(app, "hello")["Busy/Idle"], row_of(app, "hello")["Reused"]) == ("-", "-")
        select(app, "hello")
        await pilot.pause()
        assert "Instances  none: a WCGI Worker runs a new process for each request" in pane.plain
        assert pane.border_title == "hello v1"

        # a new version retires the warm instance as outdated: the pane counts it beside the trap
        select(app, "warm")
        await pilot.pause()
        engine.update_settings("warm", tags=["pro"])
        await send(app, "http://warm.localhost/")
        await pilot.press("r")
        await until(pilot, lambda: "Retired    2: outdated 1 · trap 1" in pane.plain)
        assert row_of(app, "warm")["Ver"] == "2" and pane.border_title == "warm v2"


async def test_the_numbers_refresh_without_traffic_while_the_tab_is_shown(
    tmp_path: Path, wasmer_cache: Path, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instance that stops for being idle writes no trace item: the tab reads the numbers again on its own."""
    monkeypatch.setattr("wasmdeck.console.screens.workers.INSTANCES_REFRESH_S", 0.3)
    engine = Engine(tmp_path / "idle.db", cache_dir=wasmer_cache, instances=InstanceSettings(idle_timeout_s=1.0))
    try:
        engine.deploy("warm", protocol_module("proto-warm"))
        async with console_over(engine, transport) as app, app.run_test(size=WIDE) as pilot:
            await settle(pilot)
            await send(app, "http://warm.localhost/")
            await until(pilot, lambda: row_of(app, "warm")["Busy/Idle"] == "0/1")
            select(app, "warm")
            await until(pilot, lambda: row_of(app, "warm")["Busy/Idle"] == "0/0")  # idle too long: stopped, no item
            assert "Retired    1: idle 1" in app.query_one(WorkerDetail).plain
    finally:
        await engine.close()


def test_a_narrow_table_leaves_out_the_size_and_the_year_but_keeps_the_instances() -> None:
    from wasmdeck.console.screens.workers import COLUMNS, NARROW_COLUMNS

    assert "Size" in COLUMNS and "Size" not in NARROW_COLUMNS
    assert {"Busy/Idle", "Reused"} <= set(NARROW_COLUMNS)


async def test_the_demo_platform_s_table_fits_100_columns(engine: Engine) -> None:
    setup_demo_platform(engine)
    app = ConsoleApp(LocalClient(engine))
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        for url in ("http://burn.demo.local/?ms=500", "http://dispatcher.demo.local/__dispatcher/health"):
            await send(app, url)  # the longest outcome the demo has (exceededCpu), and warm instances
        await pilot.press("r")
        await until(pilot, lambda: row_of(app, "burn")["Last outcome"] == "exceededCpu")
        table = app.query_one("#workers-table", DataTable)
        assert "Size" not in [str(column.label) for column in table.columns.values()]
        assert table.virtual_size.width <= table.size.width, "the table scrolls sideways at 100 columns"
        assert row_of(app, "dispatcher")["Deployed"].count("-") == 1  # month-day, no year
        assert row_of(app, "dispatcher")["Busy/Idle"] == "0/1"
        footer = app.query_one("Footer")
        assert footer.virtual_size.width <= footer.region.width, "the footer's keys are cut (q Quit under ^p palette)"
        await pilot.resize_terminal(*WIDE)
        await settle(pilot)
        assert "Size" in [str(column.label) for column in table.columns.values()]


class NoInstancesClient(LocalClient):
    """An engine client whose server predates instance numbers (its admin API has no `/instances`)."""

    async def instance_stats(self, namespace: str) -> dict[str, dict[str, Any]]:
        raise NotFound("no such route: /namespaces/default/instances")


async def test_workers_are_listed_when_the_instance_numbers_cannot_be_read(engine: Engine) -> None:
    engine.deploy("warm", protocol_module("proto-warm"))
    app = ConsoleApp(NoInstancesClient(engine))
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        assert (row_of(app, "warm")["Busy/Idle"], row_of(app, "warm")["Reused"]) == ("-", "-")
        await pilot.press("r")
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)
        # said once, not at every refresh
        assert app.toasts.count("no such route: /namespaces/default/instances") == 1


# -- trace items -------------------------------------------------------------------------------


async def test_the_requests_trace_and_the_whole_item_show_the_instance(engine: Engine, transport: str) -> None:
    engine.deploy("warm", protocol_module("proto-warm"))
    async with console_over(engine, transport) as app, app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        view = await request(pilot, "http://warm.localhost/")
        await until(pilot, lambda: view.last_response is not None)
        first = view.last_response.trace
        instance = first["instanceId"]
        assert f"Instance   {instance} · invocation 1 · new instance" in view.panel.trace_text

        view = await request(pilot, "http://warm.localhost/?mode=trap-at&n=2")
        await until(pilot, lambda: view.last_response is not None and view.last_response.status == 500)
        text = view.panel.trace_text
        assert f"Instance   {instance} · invocation 2 · on a warm instance" in text
        assert f"Retired    instance {instance} was retired after 2 invocations: it trapped" in text
        await pilot.press("ctrl+t", "o")
        await until(pilot, lambda: isinstance(app.screen, TraceDetailScreen))
        shown = summary(app.screen.item).plain
        assert f"Retired    instance {instance} was retired after 2 invocations: it trapped" in shown
        assert '"instanceId": "' + instance in app.screen.json_text()
        await pilot.press("escape")

        # the same item from the Tail tab: enter on its line
        await pilot.press("escape", "6")
        tail = app.query_one(TailView)
        await until(pilot, lambda: any(item.get("instanceInvocation") == 2 for item in tail.current_pane.items))
        log = tail.current_pane.log_view
        log.move_cursor(next(i for i, row in enumerate(log.rows) if row.item.get("instanceInvocation") == 2))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, TraceDetailScreen))
        assert "it trapped" in summary(app.screen.item).plain and "on a warm instance" in summary(app.screen.item).plain


async def test_an_instance_that_fails_while_idle_is_one_readable_tail_line(engine: Engine, transport: str) -> None:
    engine.deploy("warm", protocol_module("proto-warm"))
    async with console_over(engine, transport) as app, app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await pilot.press("6")
        tail = app.query_one(TailView)
        pane = tail.current_pane
        answered = await send(app, "http://warm.localhost/?mode=between&delay=30")
        assert answered.status == 200
        await until(pilot, lambda: any(is_instance_event(item) for item in pane.items))
        [failed] = [item for item in pane.items if is_instance_event(item)]
        instance = failed["event"]["instance"]["id"]
        assert instance == answered.trace["instanceId"]
        line = next(text for text in visible(pane) if "RETIRED" in text)
        assert "exception" in line and "warm" in line and "RETIRED outputBetweenInvocations · instance" in line
        row = next(row for row in pane.log_view.rows if row.item is failed)
        assert row.url == f"outputBetweenInvocations · instance {instance} · after 1 invocation"
        assert len([text for text in visible(pane) if text]) == 2, "one line for the request, one for the instance"
        # not a request: the status line counts one request and no error
        assert app.status_bar.numbers()[1] == 0.0 and len(app.status_bar._recent) == 1
        # a filter on errors keeps it; enter shows it whole
        pane.set_filter("status:error")
        await pilot.pause()
        assert [item.get("event", {}).get("instance", {}).get("id") for item in pane.items] == [instance]
        await pilot.press("end", "enter")
        await until(pilot, lambda: isinstance(app.screen, TraceDetailScreen))
        text = summary(app.screen.item).plain
        assert "Event      instance retired while no request was in flight: outputBetweenInvocations" in text
        assert f"Instance   {instance} · served 1 invocation, then failed while idle" in text
        assert "InstanceRetired: instance" in text and "Status" not in text and "Request" not in text
        title = str(app.screen.query_one("#trace-title").render())
        assert f"instance {instance} of warm retired (outputBetweenInvocations)" in title
        await pilot.press("escape", "1")
        await pilot.press("r")
        await until(pilot, lambda: "outputBetweenInvocations 1" in app.query_one(WorkerDetail).plain)


def test_an_instance_item_rendered_alone() -> None:
    """The engine's own item for an idle failure, as the line and the summary render it."""
    from datetime import timezone

    from wasmdeck.engine.traces import instance_event_item

    item = instance_event_item(
        script_name="warm", script_version=3, script_tags=("pro",), namespace="default", event_timestamp=FIXED_CLOCK_MS,
        instance_id="0a1b2c3d", invocations=4, reason="exited",
        message="instance 0a1b2c3d was retired after 4 invocations: it exited without saying it would",
    )
    row = TraceRow(item, 1, timezone.utc)
    assert (row.method, row.status, row.outcome, row.worker) == ("RETIRED", None, "exception", "warm")
    assert row.url == "exited · instance 0a1b2c3d · after 4 invocations"
    assert row.contains("0a1b2c3d")
    text = summary(item, timezone.utc).plain
    assert "Worker     warm v3  tags pro" in text and "served 4 invocations" in text and "Duration" not in text


# -- pictures ------------------------------------------------------------------------------------


def _instances_engine(tmp_path: Path, wasmer_cache: Path) -> Engine:
    engine = Engine(tmp_path / "w.db", cache_dir=wasmer_cache, clock=lambda: FIXED_CLOCK_MS)
    engine.deploy("warm", protocol_module("proto-warm"), tags=["pro"])
    engine.deploy("hello", fixture_module("hello"), tags=["free"])
    engine.deploy("greeter", protocol_module("greeter"), tags=["free"])
    return engine


async def _traffic(pilot: Any) -> None:
    """Four invocations of warm, the fourth trapping; hello and greeter once each; then a fresh
    instance of warm serves a fifth and fails while idle afterwards (last, so that its item comes
    after every other in the tail, whatever the timing)."""
    app = pilot.app
    for url in ["http://warm.localhost/"] * 3 + ["http://warm.localhost/?mode=trap-at&n=4", "http://hello.localhost/",
                                                "http://greeter.localhost/", "http://warm.localhost/?mode=between&delay=30"]:
        await send(app, url)
    tail = app.query_one(TailView)
    await until(pilot, lambda: any(is_instance_event(row.item) for row in tail._recent))
    await app.engine.flush_traces()  # the request counts come from stored items: all of them, every time
    select(app, "warm")
    await pilot.press("r")
    await settle(pilot)
    await until(pilot, lambda: "outputBetweenInvocations" in app.query_one(WorkerDetail).plain)


def _picture(snap_compare: Any, tmp_path: Path, wasmer_cache: Path, size: tuple[int, int], run_before: Any) -> None:
    engine = _instances_engine(tmp_path, wasmer_cache)
    app = EngineApp(engine, PinnedClient(engine, description="wasmdeck.db"))
    try:
        assert snap_compare(app, terminal_size=size, run_before=run_before)
    finally:
        close_engine(engine)


@pytest.mark.parametrize("size", [NARROW, WIDE], ids=["100x30", "120x40"])
def test_snapshot_workers_with_instances(snap_compare: Any, tmp_path: Path, wasmer_cache: Path, size: tuple[int, int]) -> None:
    """The instance columns, and the selected worker's pane with its retirements by reason."""

    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        await _traffic(pilot)
        select(pilot.app, "warm")
        await settle(pilot)

    _picture(snap_compare, tmp_path, wasmer_cache, size, run_before)


@pytest.mark.parametrize("size", [NARROW, WIDE], ids=["100x30", "120x40"])
def test_snapshot_tail_with_an_instance_line(snap_compare: Any, tmp_path: Path, wasmer_cache: Path, size: tuple[int, int]) -> None:
    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        await _traffic(pilot)
        await pilot.press("6")
        await settle(pilot)

    _picture(snap_compare, tmp_path, wasmer_cache, size, run_before)


@pytest.mark.parametrize("size", [NARROW, WIDE], ids=["100x30", "120x40"])
def test_snapshot_instance_item_whole(snap_compare: Any, tmp_path: Path, wasmer_cache: Path, size: tuple[int, int]) -> None:
    """Enter on the instance line: what failed, on which instance, after how many invocations."""

    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        await _traffic(pilot)
        await pilot.press("6")
        await settle(pilot)
        log = pilot.app.query_one(TailView).current_pane.log_view
        log.move_cursor(next(i for i, row in enumerate(log.rows) if is_instance_event(row.item)))
        await pilot.press("enter")
        await settle(pilot)

    _picture(snap_compare, tmp_path, wasmer_cache, size, run_before)


@pytest.mark.parametrize("size", [NARROW, WIDE], ids=["100x30", "120x40"])
def test_snapshot_requests_trace_of_a_retiring_invocation(snap_compare: Any, tmp_path: Path, wasmer_cache: Path,
                                                         size: tuple[int, int]) -> None:
    """The Requests tab's trace of the invocation that trapped its warm instance."""

    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        for _ in range(2):
            await send(pilot.app, "http://warm.localhost/")
        await request(pilot, "http://warm.localhost/?mode=trap-at&n=3")
        await pilot.press("ctrl+t")
        await settle(pilot)
        assert re.search(r"Retired    instance \w+ was retired after 3 invocations", pilot.app.requests_view.panel.trace_text)

    _picture(snap_compare, tmp_path, wasmer_cache, size, run_before)

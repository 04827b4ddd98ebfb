"""The console's Tail Workers tab: attach a consumer to one Worker, the dispatcher or the
namespace; refused choices show the engine's sentence and change nothing; remove asks first."""

from __future__ import annotations

from textual.widgets import Select

from wasmdeck.console.widgets.error_line import ErrorLine
from wasmdeck.engine import Engine, Request, TraceFilter

from .conftest import fixture_module, protocol_module
from .test_console_app import SIZE, fixed_engine, make_app, rows, settle  # noqa: F401 (fixed_engine is a fixture)


def _platform(engine: Engine) -> None:
    engine.deploy("audit", protocol_module("tail-collector"))
    engine.deploy("hello", fixture_module("hello"))


async def open_tab(pilot) -> None:
    await settle(pilot)
    await pilot.press("4")
    await settle(pilot)


async def test_attach_a_tail_worker_and_it_receives_the_next_items(engine: Engine) -> None:
    _platform(engine)
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await open_tab(pilot)
        assert rows(app, "tail-consumers") == []
        await pilot.press("a")
        await settle(pilot)
        app.screen.query_one("#tail-consumer-name", Select).value = "audit"
        app.screen.query_one("#tail-consumer-worker", Select).value = "hello"
        await pilot.click("#tail-consumer-add")
        await settle(pilot)
        assert rows(app, "tail-consumers") == [["audit", "Worker hello"]]
        assert [(c.consumer, c.scope, c.worker) for c in engine.tail_consumers("default")] == [("audit", "worker", "hello")]
        await app.client.dispatch(Request("http://hello.example.com/"), "default")
        await engine.flush_tail_deliveries()
        await engine.flush_traces()
        (item,) = engine.recent_traces(10, TraceFilter(worker="audit"))
        assert item["event"]["consumedEvents"] == [{"scriptName": "hello"}]
        # the whole namespace too
        await pilot.press("a")
        await settle(pilot)
        app.screen.query_one("#tail-consumer-name", Select).value = "audit"
        app.screen.query_one("#tail-consumer-scope", Select).value = "namespace"
        await settle(pilot)
        assert app.screen.query_one("#tail-consumer-worker", Select).disabled
        await pilot.click("#tail-consumer-add")
        await settle(pilot)
        assert len(rows(app, "tail-consumers")) == 2
        # remove asks first
        app.query_one("#tail-consumers").focus()
        await pilot.press("d")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert len(engine.tail_consumers("default")) == 1


async def test_a_refused_tail_worker_shows_why_and_changes_nothing(engine: Engine) -> None:
    _platform(engine)
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await open_tab(pilot)
        await pilot.press("a")
        await settle(pilot)
        await pilot.click("#tail-consumer-add")
        await settle(pilot)
        assert "choose the consumer" in str(app.screen.query_one("#tail-consumer-error", ErrorLine).render())
        app.screen.query_one("#tail-consumer-name", Select).value = "audit"
        app.screen.query_one("#tail-consumer-worker", Select).value = "audit"
        await pilot.click("#tail-consumer-add")
        await settle(pilot)
        assert "cannot be its own tail consumer" in str(app.screen.query_one("#tail-consumer-error", ErrorLine).render())
        await pilot.press("escape")
        await settle(pilot)
        assert engine.tail_consumers("default") == []


def test_snapshot_tail_workers(snap_compare, fixed_engine: Engine) -> None:
    _platform(fixed_engine)
    fixed_engine.add_tail_consumer("audit", worker="hello")
    fixed_engine.add_tail_consumer("audit", dispatcher=True)

    async def run_before(pilot) -> None:
        await open_tab(pilot)

    assert snap_compare(make_app(fixed_engine), terminal_size=SIZE, run_before=run_before)


def test_snapshot_tail_worker_form(snap_compare, fixed_engine: Engine) -> None:
    _platform(fixed_engine)

    async def run_before(pilot) -> None:
        await open_tab(pilot)
        await pilot.press("a")
        await settle(pilot)

    assert snap_compare(make_app(fixed_engine), terminal_size=SIZE, run_before=run_before)

"""The console app over a real engine: workers, limits, help, namespaces, and the whole loop
upload -> request -> tail line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, OptionList, TextArea

from wasmdeck.console.app import WasmdeckApp
from wasmdeck.console.screens.tail import TailView
from wasmdeck.console.widgets.help import HelpScreen
from wasmdeck.console.widgets.error_line import ErrorLine
from wasmdeck.console.widgets.modals import ConfirmScreen, EditWorkerScreen, UploadScreen, VersionsScreen
from wasmdeck.engine import Engine, Request
from wasmdeck.client import LocalClient

from .conftest import FIXED_CLOCK_MS, FIXTURES, fixture_module

SIZE = (140, 40)


def make_app(engine: Engine, **options) -> WasmdeckApp:
    return WasmdeckApp(LocalClient(engine, description="wasmdeck.db"), clock=lambda: 1_000.0, upload_base=FIXTURES, **options)


def rows(app: WasmdeckApp, table_id: str) -> list[list[str]]:
    table = app.query_one(f"#{table_id}", DataTable)
    return [[str(cell) for cell in table.get_row_at(index)] for index in range(table.row_count)]


async def settle(pilot, seconds: float = 0.1) -> None:
    """Let pending reloads finish (not the traffic or dialog-waiting workers, which never end)."""
    await pilot.pause(seconds)
    busy = [worker for worker in pilot.app.workers if worker.group not in ("traffic", "namespace")]
    await pilot.app.workers.wait_for_complete(busy)
    await pilot.pause()


@pytest.fixture
def fixed_engine(tmp_path: Path, wasmer_cache: Path):
    engine = Engine(tmp_path / "console.db", cache_dir=wasmer_cache, clock=lambda: FIXED_CLOCK_MS)
    yield engine
    asyncio.run(engine.close()) if not engine._closed else None


async def test_workers_table_lists_workers_with_their_numbers(engine: Engine) -> None:
    engine.deploy("hello", fixture_module("hello"), tags=["free", "eu"])
    engine.deploy("trap", fixture_module("trap"))
    await engine.request("http://hello.x/")
    await engine.request("http://trap.x/")
    await engine.flush_traces()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = rows(app, "workers-table")
        assert [row[0] for row in table] == ["hello", "trap"]
        assert table[0][1] == "free, eu" and table[0][2] == "wasm" and table[0][4] == "1"
        assert table[0][6:] == ["1", "0%", "ok", "-", "-"]  # a WCGI worker runs on no warm instance
        assert table[1][6:] == ["1", "100%", "exception", "-", "-"]
        await pilot.press("slash")
        await pilot.press(*"tag:eu")
        await pilot.pause()
        assert [row[0] for row in rows(app, "workers-table")] == ["hello"]
        await pilot.press("escape")
        await pilot.pause()
        assert len(rows(app, "workers-table")) == 2


async def test_upload_a_worker_then_request_it_and_see_the_tail_line(engine: Engine) -> None:
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("u")
        await pilot.pause()
        assert isinstance(app.screen, UploadScreen)
        app.screen.query_one("#upload-path", Input).value = "hello.wasm"
        await pilot.pause()
        assert app.screen.query_one("#upload-name", Input).value == "hello"
        app.screen.query_one("#upload-tags", Input).value = "free"
        app.screen.query_one("#upload-vars", TextArea).text = "GREETING=hi from the console"
        await pilot.click("#upload-deploy")
        await settle(pilot)
        assert not isinstance(app.screen, UploadScreen)
        worker = engine.worker("hello")
        assert worker.tags == ("free",) and worker.vars == {"GREETING": "hi from the console"}
        assert [row[0] for row in rows(app, "workers-table")] == ["hello"]
        response = await app.client.dispatch(Request("http://hello.x/"), "default")
        assert response.text == "hi from the console\n"
        await pilot.pause(0.2)
        tail = app.query_one(TailView)
        assert any(row.item.get("scriptName") == "hello" and row.item["outcome"] == "ok" for row in tail._recent)


async def test_a_refused_upload_shows_its_error_and_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    engine.deploy("hello", fixture_module("hello"))
    not_wasm = tmp_path / "notes.wasm"
    not_wasm.write_text("this is not WebAssembly")
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for path, name, needle in [
            (str(not_wasm), "hello", "syntax error at notes.wasm:1:6"),  # UTF-8 text: checked as JavaScript
            ("hello.wasm", "Bad_Name", "DNS label"),
            ("missing.wasm", "missing", "does not exist"),
        ]:
            await pilot.press("u")
            await pilot.pause()
            app.screen.query_one("#upload-path", Input).value = path
            app.screen.query_one("#upload-name", Input).value = name
            await pilot.click("#upload-deploy")
            await settle(pilot)
            assert isinstance(app.screen, UploadScreen), "the dialog stays open on an error"
            error = app.screen.query_one("#upload-error", ErrorLine)
            assert needle in str(error.render())
            await pilot.press("escape")  # what was typed is not thrown away without asking
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await pilot.pause()
            assert not isinstance(app.screen, (ConfirmScreen, UploadScreen))
        assert [v.version for v in engine.versions("hello")] == [1]
        assert [w.name for w in engine.workers()] == ["hello"]


async def test_edit_tags_and_vars_then_roll_back(engine: Engine) -> None:
    engine.deploy("hello", fixture_module("hello"), tags=["free"])
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("e")
        await pilot.pause()
        assert isinstance(app.screen, EditWorkerScreen)
        app.screen.query_one("#edit-tags", Input).value = "pro, eu"
        app.screen.query_one("#edit-vars", TextArea).text = "GREETING=edited"
        await pilot.click("#edit-save")
        await settle(pilot)
        worker = engine.worker("hello")
        # one edit of both is one version, not one per field
        assert worker.tags == ("pro", "eu") and worker.vars == {"GREETING": "edited"} and worker.version == 2
        assert engine.versions("hello")[-1].message == "tags and vars changed"
        # a bad var is refused inline and nothing changes, not even the tags
        await pilot.press("e")
        await pilot.pause()
        app.screen.query_one("#edit-tags", Input).value = "other"
        app.screen.query_one("#edit-vars", TextArea).text = "REQUEST_METHOD=x"
        await pilot.click("#edit-save")
        await settle(pilot)
        assert "reserved" in str(app.screen.query_one("#edit-error", ErrorLine).render())
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("y")  # discard what was typed
        await pilot.pause()
        assert engine.worker("hello").version == 2
        # saving without a change makes no version at all
        await pilot.press("e")
        await pilot.pause()
        await pilot.click("#edit-save")
        await settle(pilot)
        assert not isinstance(app.screen, EditWorkerScreen) and engine.worker("hello").version == 2
        await pilot.press("v")
        await settle(pilot)
        assert isinstance(app.screen, VersionsScreen)
        table = app.screen.query_one("#versions-table", DataTable)
        assert table.row_count == 2
        await pilot.press("down")  # newest first: row 1 is version 1
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot)
        rolled = engine.worker("hello")
        assert rolled.version == 3 and rolled.tags == ("free",) and rolled.vars == {}


async def test_delete_asks_first(engine: Engine) -> None:
    engine.deploy("hello", fixture_module("hello"))
    engine.deploy("echo", fixture_module("echo"))
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await settle(pilot)
        assert len(engine.workers()) == 2
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("y")
        await settle(pilot)
        assert [w.name for w in engine.workers()] == ["hello"]
        assert [row[0] for row in rows(app, "workers-table")] == ["hello"]


async def test_limits_add_edit_remove_and_effective(engine: Engine) -> None:
    engine.deploy("burn", fixture_module("burn"), tags=["free", "eu"])
    engine.set_limits("eu", memory_mb=64)
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        await pilot.press("a")
        await pilot.pause()
        app.screen.query_one("#limit-tag", Input).value = "free"
        app.screen.query_one("#limit-cpu_ms", Input).value = "25"
        await pilot.click("#limit-save")
        await settle(pilot)
        assert engine.limits()["free"].cpu_ms == 25
        assert [row[0] for row in rows(app, "limits-table")] == ["eu", "free"]
        # the very next request runs under the new limit
        response = await app.client.dispatch(Request("http://burn.x/?ms=200"), "default")
        assert response.status == 503 and response.trace["outcome"] == "exceededCpu"
        # bad values are refused inline
        await pilot.press("a")
        await pilot.pause()
        app.screen.query_one("#limit-tag", Input).value = "pro"
        app.screen.query_one("#limit-cpu_ms", Input).value = "0"
        await pilot.click("#limit-save")
        await settle(pilot)
        assert "cpuMs" in str(app.screen.query_one("#limit-error", ErrorLine).render())
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("y")  # discard what was typed
        await pilot.pause()
        assert "pro" not in engine.limits()
        # effective limits of a worker, with the tag each value came from
        app.query_one("#limits-worker").value = "burn"
        await settle(pilot)
        effective = {row[0]: row[1:] for row in rows(app, "effective-table")}
        assert effective["cpuMs"] == ["25", "tag:free"]
        assert effective["memoryMb"] == ["64", "tag:eu"]
        assert effective["wallMs"][1] == "engine"
        # remove, with confirmation
        table = app.query_one("#limits-table", DataTable)
        table.focus()
        table.move_cursor(row=1)
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("y")
        await settle(pilot)
        assert "free" not in engine.limits()


async def test_help_is_built_from_bindings(engine: Engine) -> None:
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        described = {description for _, _, description in app.screen.entries}
        assert {"Upload", "Delete", "Versions, and roll back to one", "Quit", "Namespace"} <= described
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)


async def test_switch_namespace(engine: Engine) -> None:
    engine.create_namespace("staging")
    engine.deploy("hello", fixture_module("hello"))
    engine.deploy("echo", fixture_module("echo"), namespace="staging")
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert [row[0] for row in rows(app, "workers-table")] == ["hello"]
        await pilot.press("n")
        await pilot.pause(0.2)  # the picker's worker waits for the dialog, so no settle() here
        picker = app.screen.query_one(OptionList)
        picker.highlighted = 1
        await pilot.press("enter")
        await settle(pilot)
        assert app.namespace == "staging"
        assert [row[0] for row in rows(app, "workers-table")] == ["echo"]
        assert "staging" in str(app.query_one("#status-bar").render())


async def test_status_line_counts_traffic(engine: Engine) -> None:
    engine.deploy("hello", fixture_module("hello"))
    engine.deploy("trap", fixture_module("trap"))
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for url in ["http://hello.x/"] * 3 + ["http://trap.x/"]:
            await app.client.dispatch(Request(url), "default")
        await pilot.pause(0.2)
        text = str(app.query_one("#status-bar").render())
        assert "0.4 req/s" in text and "errors 25%" in text


def test_console_refuses_an_unknown_namespace(tmp_path: Path) -> None:
    import subprocess
    import sys

    from .conftest import ROOT

    result = subprocess.run(
        [sys.executable, "-m", "wasmdeck.cli.main", "--db", str(tmp_path / "w.db"), "console", "--namespace", "ghost"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "wasmdeck: namespace 'ghost' does not exist"


# -- snapshots -------------------------------------------------------------------

def _demo_platform(engine: Engine) -> None:
    engine.set_limits("free", cpu_ms=50, memory_mb=32, sub_requests=10)
    engine.set_limits("pro", cpu_ms=500, memory_mb=128)
    engine.deploy("hello", fixture_module("hello"), tags=["free"], vars={"GREETING": "hi"})
    engine.deploy("hello", fixture_module("hello"), tags=["free", "eu"])
    engine.deploy("echo", fixture_module("echo"), tags=["pro"])
    engine.deploy("trap", fixture_module("trap"), tags=["free"])


def test_snapshot_workers(snap_compare, fixed_engine: Engine) -> None:
    _demo_platform(fixed_engine)
    assert snap_compare(make_app(fixed_engine), terminal_size=SIZE, run_before=settle)


def test_snapshot_upload_dialog(snap_compare, fixed_engine: Engine) -> None:
    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("u")
        await pilot.pause()
        pilot.app.screen.query_one("#upload-path", Input).value = "/nonexistent/nothing-here.wasm"
        await pilot.click("#upload-deploy")
        await settle(pilot)

    assert snap_compare(make_app(fixed_engine), terminal_size=SIZE, run_before=run_before)


def test_snapshot_versions_dialog(snap_compare, fixed_engine: Engine) -> None:
    _demo_platform(fixed_engine)

    async def run_before(pilot) -> None:
        await settle(pilot)
        pilot.app.query_one("#workers-table", DataTable).move_cursor(row=1)
        await pilot.press("v")
        await settle(pilot)

    assert snap_compare(make_app(fixed_engine), terminal_size=SIZE, run_before=run_before)


def test_snapshot_delete_confirmation(snap_compare, fixed_engine: Engine) -> None:
    _demo_platform(fixed_engine)
    assert snap_compare(make_app(fixed_engine), terminal_size=SIZE, press=["_", "d"])


def test_snapshot_edit_dialog(snap_compare, fixed_engine: Engine) -> None:
    _demo_platform(fixed_engine)
    assert snap_compare(make_app(fixed_engine), terminal_size=SIZE, press=["_", "e"])


def test_snapshot_limits(snap_compare, fixed_engine: Engine) -> None:
    _demo_platform(fixed_engine)

    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        pilot.app.query_one("#limits-worker").value = "hello"
        await settle(pilot)

    assert snap_compare(make_app(fixed_engine), terminal_size=SIZE, run_before=run_before)


def test_snapshot_limit_form(snap_compare, fixed_engine: Engine) -> None:
    _demo_platform(fixed_engine)

    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        await pilot.press("e")
        await settle(pilot)

    assert snap_compare(make_app(fixed_engine), terminal_size=SIZE, run_before=run_before)


def test_snapshot_help(snap_compare, fixed_engine: Engine) -> None:
    assert snap_compare(make_app(fixed_engine), terminal_size=SIZE, press=["_", "question_mark"])


def test_snapshot_namespace_picker(snap_compare, fixed_engine: Engine) -> None:
    fixed_engine.create_namespace("staging", routing="path")
    assert snap_compare(make_app(fixed_engine), terminal_size=SIZE, press=["_", "n", "_"])

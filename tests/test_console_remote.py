"""The real console (`WasmdeckApp`) on a `RemoteClient`, under Pilot, against a served engine: the
same screens as in-process, through the admin API, the dispatch listener and the `/tail` WebSocket."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from textual.widgets import Input, TextArea

from wasmdeck.cli.demo import setup_demo_platform
from wasmdeck.cli.main import main as wasmdeck_main
from wasmdeck.console.app import WasmdeckApp
from wasmdeck.console.screens.requests import RequestsView
from wasmdeck.console.screens.tail import TailView
from wasmdeck.console.widgets.error_line import ErrorLine
from wasmdeck.console.widgets.modals import EditWorkerScreen, UploadScreen
from wasmdeck.engine import Engine, NotFound, Request, WasmdeckError
from wasmdeck.client import LocalClient
from wasmdeck.client.remote import REQUEST_ID_HEADER, RemoteClient

from .conftest import FIXTURES, fixture_module
from .test_console_app import SIZE, rows, settle
from .test_remote_client import TOKEN, Served, served
from .test_server import _free_port, start_server


@pytest.fixture
async def server(engine: Engine) -> AsyncIterator[Served]:
    async with served(engine) as running:
        yield running


@pytest.fixture
async def app(server: Served) -> AsyncIterator[WasmdeckApp]:
    client = RemoteClient(server.admin_url, TOKEN)
    try:
        yield WasmdeckApp(client, clock=lambda: 1_000.0, upload_base=FIXTURES)
    finally:
        await client.close()


async def until(condition: Any, pilot: Any, seconds: float = 10.0) -> None:
    """Let the app run until `condition()` holds (remote answers take a round trip or two)."""
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    assert condition()


async def upload(pilot: Any, path: str, name: str, tags: str = "", variables: str = "") -> None:
    await pilot.press("u")
    await pilot.pause()
    assert isinstance(pilot.app.screen, UploadScreen)
    pilot.app.screen.query_one("#upload-path", Input).value = path
    pilot.app.screen.query_one("#upload-name", Input).value = name
    pilot.app.screen.query_one("#upload-tags", Input).value = tags
    pilot.app.screen.query_one("#upload-vars", TextArea).text = variables
    await pilot.click("#upload-deploy")
    await settle(pilot)


async def test_upload_then_request_and_see_the_tail_line(engine: Engine, server: Served, app: WasmdeckApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.sub_title == f"remote {server.admin_url}"
        await upload(pilot, "hello.wasm", "hello", "free", "GREETING=hi from afar")
        assert not isinstance(app.screen, UploadScreen)
        worker = engine.worker("hello")
        assert worker.tags == ("free",) and worker.vars == {"GREETING": "hi from afar"}
        assert [row[:3] for row in rows(app, "workers-table")] == [["hello", "free", "wasm"]]

        await until(lambda: server.tail.hub.count() == 1, pilot)  # the console's live stream is subscribed
        app.action_show_tab("requests")  # by name: the tabs' number keys move as tabs are added
        await pilot.pause()
        requests = app.query_one(RequestsView)
        requests.query_one("#request-url", Input).value = "http://hello.localhost/from-the-console"
        await pilot.press("ctrl+s")
        await until(lambda: requests.last_response is not None, pilot)
        response = requests.last_response
        assert response is not None and response.status == 200 and response.text == "hi from afar\n"
        assert response.trace["outcome"] == "ok" and response.trace["scriptName"] == "hello"

        app.action_show_tab("tail")
        [pane] = app.query_one(TailView).panes
        await until(lambda: any(i["event"]["request"]["url"].endswith("/from-the-console") for i in pane.items), pilot)
        # the workers table counts the request once its numbers are reloaded
        await until(lambda: rows(app, "workers-table")[0][6:] == ["1", "0%", "ok", "-", "-"], pilot)


async def test_a_refused_upload_shows_the_engine_s_sentence_and_changes_nothing(engine: Engine, app: WasmdeckApp,
                                                                               tmp_path: Path) -> None:
    engine.deploy("hello", fixture_module("hello"))
    not_wasm = tmp_path / "notes.wasm"
    not_wasm.write_text("this is not WebAssembly")
    local = LocalClient(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for path, name in [(str(not_wasm), "hello"), ("hello.wasm", "Bad_Name"), ("missing.wasm", "missing")]:
            await upload(pilot, path, name)
            assert isinstance(app.screen, UploadScreen), "the dialog stays open on an error"
            shown = str(app.screen.query_one("#upload-error", ErrorLine).render())
            with pytest.raises(WasmdeckError) as in_process:
                await local.deploy(name, path if Path(path).is_absolute() else FIXTURES / path, "default", [], {})
            assert str(in_process.value) in shown, "the remote console shows another sentence than the local one"
            await pilot.press("escape")
            await pilot.pause()
            await pilot.press("y")  # discard what was typed
            await pilot.pause()
        assert [v.version for v in engine.versions("hello")] == [1]
        assert [w.name for w in engine.workers()] == ["hello"]
        assert [row[0] for row in rows(app, "workers-table")] == ["hello"]


async def test_a_stopped_server_shows_an_error_instead_of_crashing(engine: Engine) -> None:
    async with contextlib.AsyncExitStack() as running:
        server = await running.enter_async_context(served(engine))
        client = RemoteClient(server.admin_url, TOKEN)
        app = WasmdeckApp(client, clock=lambda: 1_000.0, upload_base=FIXTURES)
        try:
            async with app.run_test(size=SIZE) as pilot:
                await settle(pilot)
                await running.aclose()  # the server stops while the console runs
                await upload(pilot, "hello.wasm", "hello")
                assert isinstance(app.screen, UploadScreen)
                shown = str(app.screen.query_one("#upload-error", ErrorLine).render())
                assert f"cannot reach the wasmdeck admin API at {server.admin_url}" in shown
        finally:
            await client.close()
    assert engine.workers() == []


# -- `wasmdeck console --remote`: refusals are one sentence before the terminal is taken ------------


def test_console_remote_refusals_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("WASMDECK_TOKEN", raising=False)
    monkeypatch.delenv("WASMDECK_ADMIN_TOKEN", raising=False)
    local_db = tmp_path / "local.db"
    monkeypatch.setenv("WASMDECK_DB", str(local_db))
    token_file = tmp_path / "admin-token"
    admin_port = _free_port()
    server = start_server(tmp_path / "w.db", tmp_path, "--no-access-log", "--admin-port", str(admin_port),
                          "--admin-token-file", str(token_file))
    admin = f"http://127.0.0.1:{admin_port}"

    def console(*args: str) -> tuple[int, str]:
        code = wasmdeck_main(["console", "--remote", *args])
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1, captured
        return code, captured.err

    try:
        code, err = console(admin, "--token", "wrong")
        assert code == 1 and err.startswith(f"wasmdeck: the server at {admin} refused the admin token")
        monkeypatch.setenv("WASMDECK_TOKEN", "also-wrong")
        code, err = console(admin)
        assert code == 1 and "refused the admin token" in err
        monkeypatch.setenv("WASMDECK_TOKEN", token_file.read_text().strip())
        code, err = console(admin, "--namespace", "nope")
        assert code == 1 and err == "wasmdeck: namespace 'nope' does not exist\n"
        code, err = console(admin, "--demo")
        assert code == 2 and "cannot be combined with --remote" in err
    finally:
        assert server.stop() == 0
    code, err = console(admin)
    assert code == 1 and err.startswith(f"wasmdeck: cannot reach the wasmdeck admin API at {admin}: ")
    monkeypatch.delenv("WASMDECK_TOKEN")
    code, err = console(admin)
    assert code == 2 and "needs the admin token" in err
    assert not local_db.exists(), "console --remote opened a local database"


# -- the trace of a request behind a dispatch Worker, remote as in-process ---------------------------


async def test_remote_dispatch_finds_the_user_workers_item_and_the_dispatchers(engine: Engine, server: Served) -> None:
    setup_demo_platform(engine)
    client = RemoteClient(server.admin_url, TOKEN)
    local = LocalClient(engine)
    try:
        for url, user, outcome in [
            ("http://trap.demo.local/", "trap", "exception"),
            ("http://logger.demo.local/?lines=2", "logger", "ok"),
            ("http://missing.demo.local/", "missing", "scriptNotFound"),
        ]:
            remote = await client.dispatch(Request(url), "default")
            here = await local.dispatch(Request(url), "default")
            assert remote.status == here.status
            assert remote.trace["scriptName"] == here.trace["scriptName"] == user
            assert remote.outcome == here.outcome == outcome
            assert remote.dispatcher_trace is not None and remote.dispatcher_trace["scriptName"] == "dispatcher"
            if user == "logger":  # (a trap's logs depend on whether the worker trapped before)
                assert [log["message"] for log in remote.trace["logs"]] == [log["message"] for log in here.trace["logs"]]
            for item in (remote.trace, remote.dispatcher_trace):  # the client's own header stays out of sight
                assert REQUEST_ID_HEADER.lower() not in item["event"]["request"]["headers"]
        # the dispatcher answering itself: its item is both
        remote = await client.dispatch(Request("http://any.demo.local/__dispatcher/health"), "default")
        assert remote.status == 200 and remote.trace == remote.dispatcher_trace and remote.trace["scriptName"] == "dispatcher"
    finally:
        await client.close()


async def test_remote_dispatch_without_a_dispatch_worker_has_no_dispatcher_item(engine: Engine, server: Served) -> None:
    engine.deploy("trap", fixture_module("trap"))
    client = RemoteClient(server.admin_url, TOKEN)
    try:
        response = await client.dispatch(Request("http://trap.localhost/"), "default")
        assert response.trace["scriptName"] == "trap" and response.dispatcher_trace is None
        assert response.outcome == "exception"
    finally:
        await client.close()


async def test_remote_requests_tab_shows_the_tenants_trace(engine: Engine, server: Served, app: WasmdeckApp) -> None:
    setup_demo_platform(engine)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        app.action_show_tab("requests")
        await pilot.pause()
        await pilot.press("ctrl+l", *"http://trap.demo.local/", "enter")
        requests = app.query_one(RequestsView)
        await until(lambda: requests.last_response is not None, pilot)
        panel = requests.panel
        assert "exception" in str(panel.border_title) and "Worker     trap v1" in panel.trace_text
        assert "Exceptions (1)" in panel.trace_text and "Worker     dispatcher v1" in panel.dispatcher_text


# -- one edit of tags and vars is one version, over the admin API too -----------------------------


async def test_remote_update_settings_is_one_version(engine: Engine, server: Served) -> None:
    engine.deploy("hello", fixture_module("hello"), tags=["free"])
    client = RemoteClient(server.admin_url, TOKEN)
    try:
        worker = await client.update_settings("hello", "default", tags=["pro", "eu"], vars={"GREETING": "hi"})
        assert (worker.version, worker.tags, worker.vars) == (2, ("pro", "eu"), {"GREETING": "hi"})
        assert engine.versions("hello")[-1].message == "tags and vars changed"
        worker = await client.update_settings("hello", "default", tags=["free"])
        assert (worker.version, worker.tags, worker.vars) == (3, ("free",), {"GREETING": "hi"})
        for bad in ({"tags": ["two words"]}, {"vars": {"REQUEST_METHOD": "x"}}):
            with pytest.raises(WasmdeckError) as refused:
                await client.update_settings("hello", "default", **bad)  # type: ignore[arg-type]
            with pytest.raises(WasmdeckError) as in_process:
                await LocalClient(engine).update_settings("hello", "default", **bad)  # type: ignore[arg-type]
            assert str(refused.value) == str(in_process.value)
        with pytest.raises(NotFound):
            await client.update_settings("ghost", "default", tags=["x"])
        assert engine.worker("hello").version == 3
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 400, "body"),
        ({"tags": None, "vars": None}, 400, "body"),
        ({"tags": "free"}, 400, "tags"),
        ({"tags": ["free"], "color": "red"}, 400, "color"),
        ({"vars": ["A=1"]}, 400, "vars"),
        ({"vars": {"HTTP_HOST": "x"}}, 400, "vars"),
        ([], 400, "body"),
    ],
)
async def test_the_settings_endpoint_refuses_bad_bodies_and_changes_nothing(
    engine: Engine, server: Served, body: Any, status: int, field: str
) -> None:
    engine.deploy("hello", fixture_module("hello"), tags=["free"])
    async with httpx.AsyncClient(base_url=server.admin_url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        answer = await http.patch("/namespaces/default/scripts/hello/settings", json=body)
        assert answer.status_code == status
        error = answer.json()["errors"][0]
        assert error["field"] == field and error["message"].count(".") <= 1
        missing = await http.patch("/namespaces/default/scripts/ghost/settings", json={"tags": ["x"]})
        assert missing.status_code == 404
        unauthorized = await http.patch("/namespaces/default/scripts/hello/settings", json={"tags": ["x"]},
                                        headers={"Authorization": "Bearer wrong"})
        assert unauthorized.status_code == 401
    assert engine.worker("hello").version == 1 and engine.worker("hello").tags == ("free",)


async def test_remote_edit_dialog_makes_one_version(engine: Engine, server: Served, app: WasmdeckApp) -> None:
    engine.deploy("hello", fixture_module("hello"), tags=["free"])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await until(lambda: rows(app, "workers-table") != [], pilot)
        await pilot.press("e")
        await until(lambda: isinstance(app.screen, EditWorkerScreen), pilot)
        app.screen.query_one("#edit-tags", Input).value = "pro"
        app.screen.query_one("#edit-vars", TextArea).text = "GREETING=remote"
        await pilot.click("#edit-save")
        await until(lambda: engine.worker("hello").version > 1, pilot)
        await settle(pilot)
        worker = engine.worker("hello")
        assert (worker.version, worker.tags, worker.vars) == (2, ("pro",), {"GREETING": "remote"})

"""JavaScript Workers in the console: uploaded from a .js file through the Upload dialog, shown
with their language, refused with the runtime's sentence (line and column), and their trace
(logs at their levels, an uncaught exception's name, message and stack) in the Requests tab."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from textual.widgets import Input, TextArea

from wasmdeck.console.widgets.error_line import ErrorLine
from wasmdeck.console.widgets.modals import ConfirmScreen, UploadScreen
from wasmdeck.console.widgets.trace_detail import TraceDetailScreen
from wasmdeck.console.widgets.worker_detail import WorkerDetail
from wasmdeck.engine import Engine, Request

from .conftest import FIXED_CLOCK_MS
from .test_console_app import rows, settle
from .test_console_traps import NARROW, EngineApp, NotedApp, close_engine, request

SIZE = (140, 40)

SCRIPT = """\
export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    console.log("path", url.pathname);
    console.warn("plan", env.PLAN);
    if (url.pathname === "/boom") {
      throw new TypeError("no price for " + url.searchParams.get("sku"));
    }
    return Response.json({ sku: url.searchParams.get("sku"), plan: env.PLAN });
  },
};
"""


def write_script(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


async def upload(pilot: Any, path: Path, name: str | None = None, vars_text: str = "") -> tuple[UploadScreen, str]:
    """Fill the Upload dialog and deploy; the screen and the name the dialog suggested."""
    await pilot.press("u")
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, UploadScreen)
    screen.query_one("#upload-path", Input).value = str(path)
    await pilot.pause()
    suggested = screen.query_one("#upload-name", Input).value
    if name is not None:
        screen.query_one("#upload-name", Input).value = name
    screen.query_one("#upload-vars", TextArea).text = vars_text
    await pilot.click("#upload-deploy")
    for _ in range(200):  # the runtime checks the script off the event loop: up to a few seconds cold
        await settle(pilot, 0.05)
        if pilot.app.screen is not screen or str(screen.query_one("#upload-error", ErrorLine).render()).strip():
            break
    return screen, suggested


async def test_upload_a_javascript_worker_see_its_language_and_its_trace(engine: Engine, tmp_path: Path) -> None:
    script = write_script(tmp_path, "price_list.js", SCRIPT)
    app = NotedApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen, suggested = await upload(pilot, script, vars_text="PLAN=pro")
        assert suggested == "price-list", "the name is suggested from a .js file too"
        assert not isinstance(app.screen, UploadScreen), str(screen.query_one("#upload-error", ErrorLine).render())
        worker = engine.worker("price-list")
        assert worker.abi == "javascript" and worker.vars == {"PLAN": "pro"}
        table = rows(app, "workers-table")
        assert [(row[0], row[2]) for row in table] == [("price-list", "js")]
        detail = str(app.query_one(WorkerDetail).render())
        assert "JavaScript script" in detail

        response = await app.client.dispatch(Request("http://price-list.x/?sku=a1"), "default")
        assert response.status == 200 and response.json() == {"sku": "a1", "plan": "pro"}

        view = await request(pilot, "http://price-list.x/boom?sku=z9")
        await settle(pilot, 0.2)
        assert view.panel.response is not None and view.panel.response.status == 500
        await pilot.press("ctrl+t")
        await settle(pilot)
        trace = view.panel.trace_text
        assert "exception" in trace
        assert "TypeError" in trace and "no price for z9" in trace
        assert "price_list.js" in trace, "the stack names the uploaded file"
        assert "path /boom" in trace and "plan pro" in trace
        assert "warn" in trace


async def test_a_javascript_syntax_error_is_shown_with_line_and_column_and_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    broken = write_script(tmp_path, "broken.js", "export default {\n  fetch(request) {\n    return new Response('x';\n  },\n};\n")
    no_handler = write_script(tmp_path, "quiet.js", "export default { hello() {} };\n")
    importer = write_script(tmp_path, "importer.js", "import x from './x.js';\nexport default { fetch() { return new Response(x); } };\n")
    app = NotedApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for path, needles in [
            (broken, ["syntax error at broken.js:3:"]),
            (no_handler, ["handler"]),
            (importer, ["import", "bundle"]),
        ]:
            screen, _ = await upload(pilot, path)
            assert app.screen is screen, "the dialog stays open on an error"
            error = str(screen.query_one("#upload-error", ErrorLine).render())
            for needle in needles:
                assert needle in error, error
            await pilot.press("escape")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await pilot.pause()
        assert engine.workers() == []
        assert rows(app, "workers-table") == []


def test_snapshot_javascript_worker_trace_at_100x30(snap_compare: Any, tmp_path: Path, wasmer_cache: Path) -> None:
    """A JavaScript Worker's uncaught exception in the Trace tab: logs at their levels, the
    exception's name, message and stack."""
    engine = Engine(tmp_path / "js.db", cache_dir=wasmer_cache, clock=lambda: FIXED_CLOCK_MS)
    engine.deploy("prices", SCRIPT.encode(), vars={"PLAN": "free"}, filename="prices.js")
    app = EngineApp(engine)

    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        await request(pilot, "http://prices.x/boom?sku=b2")
        await pilot.press("ctrl+t", "o")  # the trace item whole
        await settle(pilot)
        assert isinstance(pilot.app.screen, TraceDetailScreen)

    try:
        assert snap_compare(app, terminal_size=NARROW, run_before=run_before)
    finally:
        close_engine(engine)

"""The console's Requests view, driven with Pilot against a real engine and the fixture Workers."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from textual import on
from textual.app import App, ComposeResult
from textual.widgets import DataTable, Input, Select, TabbedContent, TextArea

from wasmdeck.console.screens.requests import RequestsView
from wasmdeck.console.widgets.request_form import RequestDraft, parse_headers
from wasmdeck.console.formatting import elapsed_text, size_text, status_colour, status_label
from wasmdeck.console.widgets.response_panel import ResponsePanel, body_view, hexdump
from wasmdeck.engine import Engine, InvalidInput, Request, Response, WasmdeckError
from wasmdeck.client import LocalClient

from .conftest import fixture_module

SIZE = (140, 45)
FIXED_EPOCH_MS = 1_795_766_400_000


class Host(App[None]):
    """What the console app offers its views (`ConsoleHost`): client, namespace, clock, upload base."""

    def __init__(self, client: Any, clock: Any = time.monotonic, **view_options: Any) -> None:
        super().__init__()
        self.client = client
        self.namespace = "default"
        self.clock = clock
        self.upload_base = Path.cwd()
        self.view_options = view_options
        self.notes: list[tuple[str, str]] = []

    def compose(self) -> ComposeResult:
        yield RequestsView(**self.view_options)

    def notify(self, message: str, *, severity: str = "information", **kwargs: Any) -> None:  # type: ignore[override]
        self.notes.append((severity, message))
        super().notify(message, severity=severity, **kwargs)  # type: ignore[arg-type]


def view_of(app: App[Any]) -> RequestsView:
    return app.query_one(RequestsView)


def fill(
    view: RequestsView, *, method: str | None = None, url: str | None = None, headers: str | None = None, body: str | None = None
) -> None:
    if method is not None:
        view.query_one("#request-method", Select).value = method
    if url is not None:
        view.query_one("#request-url", Input).value = url
    if headers is not None:
        view.query_one("#request-headers", TextArea).load_text(headers)
    if body is not None:
        view.query_one("#request-body", TextArea).load_text(body)


async def settle(pilot: Any) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def send(pilot: Any, key: str = "ctrl+s", **form: Any) -> Response:
    view = view_of(pilot.app)
    fill(view, **form)
    before = view.history[0].id if view.history else 0
    await pilot.press(key)
    await settle(pilot)
    assert view.history and view.history[0].id == before + 1, view.form.error
    assert view.last_response is not None
    return view.last_response


async def send_without_waiting(pilot: Any, **form: Any) -> None:
    fill(view_of(pilot.app), **form)
    await pilot.press("ctrl+s")


def title_of(panel: ResponsePanel) -> str:
    return str(panel.border_title)


@pytest.fixture
def client(engine: Engine) -> LocalClient:
    return LocalClient(engine)


@pytest.fixture
def deployed(deploy: Any) -> None:
    for name in ("hello", "echo", "trap"):
        deploy(name)


# -- flows ------------------------------------------------------------------------------


async def test_get_hello_typed_and_sent_with_enter(engine: Engine, client: LocalClient, deployed: None) -> None:
    app = Host(client)
    async with app.run_test(size=SIZE) as pilot:
        view = view_of(app)
        assert view.query_one("#request-url", Input).value == "http://hello.localhost/"
        await pilot.press("ctrl+l")
        assert app.focused is view.query_one("#request-url", Input)
        await pilot.press("ctrl+u", *"http://hello.localhost/greet", "enter")
        await settle(pilot)

        response = view.last_response
        assert response is not None and response.status == 200
        panel = view.panel
        assert "200 OK" in title_of(panel) and "ok" in title_of(panel)
        assert panel.border_subtitle.startswith("21 B · ") and panel.border_subtitle.endswith(" ms")
        assert panel.body_kind == "text"
        assert panel.body_text == "Hello from wasmdeck!\n"
        headers = panel.query_one("#response-headers", DataTable)
        assert [str(headers.get_row_at(i)[0]) for i in range(headers.row_count)] == [name for name, _ in response.headers]
        assert "Content-Type" in [name for name, _ in response.headers]
        assert "Outcome    ok" in panel.trace_text
        assert "Worker     hello v1" in panel.trace_text
        assert " info  hello served GET /greet" in panel.trace_text

        entry = view.history[0]
        assert (entry.draft.method, entry.draft.url, entry.status, entry.outcome) == ("GET", "http://hello.localhost/greet", 200, "ok")


async def test_post_json_with_headers_to_echo_is_pretty_printed(engine: Engine, client: LocalClient, deployed: None) -> None:
    app = Host(client)
    async with app.run_test(size=SIZE) as pilot:
        response = await send(
            pilot,
            method="POST",
            url="http://echo.localhost/orders?draft=1",
            headers="X-Tenant: acme\n# a comment line is skipped\n\nContent-Type: application/json",
            body='{"order": 42, "items": ["tea"]}',
        )
        panel = view_of(app).panel
        assert response.status == 200
        assert panel.body_kind == "json"
        echoed = response.json()
        assert panel.body_text == json.dumps(echoed, indent=2, ensure_ascii=False)
        assert '    "HTTP_X_TENANT": "acme",' in panel.body_text
        assert '    "REQUEST_METHOD": "POST",' in panel.body_text
        assert '    "CONTENT_TYPE": "application/json",' in panel.body_text
        assert '  "body": "{\\"order\\": 42, \\"items\\": [\\"tea\\"]}",' in panel.body_text
        # the Body tab is rendered with syntax highlighting, not as plain text
        body = panel.query_one("#response-body")
        assert body.content.spans  # type: ignore[attr-defined]
        assert view_of(app).history[0].draft.headers.startswith("X-Tenant: acme")


async def test_trap_shows_500_and_the_exception_in_the_trace(engine: Engine, client: LocalClient, deployed: None) -> None:
    app = Host(client)
    async with app.run_test(size=SIZE) as pilot:
        response = await send(pilot, url="http://trap.localhost/")
        panel = view_of(app).panel
        assert response.status == 500
        assert "500 Internal Server Error" in title_of(panel) and "exception" in title_of(panel)
        assert panel.body_text.startswith("Worker threw an exception")
        panel.show_tab("trace")
        await pilot.pause()
        assert "Outcome    exception" in panel.trace_text
        assert "Exceptions (1)" in panel.trace_text
        assert "WasmTrap: " in panel.trace_text
        assert "explode_on_purpose" in panel.trace_text
        assert view_of(app).history[0].outcome == "exception"


async def test_unknown_worker_is_404_worker_not_found(engine: Engine, client: LocalClient, deployed: None) -> None:
    app = Host(client)
    async with app.run_test(size=SIZE) as pilot:
        response = await send(pilot, url="http://nobody.localhost/")
        panel = view_of(app).panel
        assert response.status == 404
        assert "404 Not Found" in title_of(panel) and "scriptNotFound" in title_of(panel)
        assert panel.body_text.startswith("Worker not found")
        assert "Outcome    scriptNotFound" in panel.trace_text
        assert "Worker     nobody (not found in this namespace)" in panel.trace_text


async def test_cpu_limit_shows_503_exceeded_cpu(engine: Engine, client: LocalClient, deploy: Any) -> None:
    deploy("burn", tags=["free"])
    engine.set_limits("free", cpu_ms=20)
    app = Host(client)
    async with app.run_test(size=SIZE) as pilot:
        # `ms=400` rather than `forever=1`: the limit still cuts it off at 20 ms, but a guest the runtime
        # fails to stop then ends by itself instead of spinning a core for the rest of the test session
        response = await send(pilot, url="http://burn.localhost/?ms=400")
        panel = view_of(app).panel
        assert response.status == 503
        assert "503 Service Unavailable" in title_of(panel) and "exceededCpu" in title_of(panel)
        assert panel.body_kind == "json"
        assert '"limit": "cpuMs"' in panel.body_text and '"value": 20' in panel.body_text
        assert "Outcome    exceededCpu" in panel.trace_text
        assert "ExceededCpu: Worker exceeded its CPU time limit of 20 ms" in panel.trace_text


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"url": "hello.localhost/"}, "is not an http:// or https:// URL with a host"),
        ({"url": "   "}, "type a URL"),
        ({"url": "http://hello.localhost:99999/"}, "bad port"),
        ({"headers": "X-Ok: 1\nthis line has no colon"}, "is not of the form 'Name: value' (headers, line 2)"),
        ({"headers": "Bad Name: 1"}, "is not of the form 'Name: value'"),
    ],
)
async def test_malformed_input_shows_an_error_and_sends_nothing(
    engine: Engine, client: LocalClient, deployed: None, form: dict[str, str], expected: str
) -> None:
    subscription = engine.subscribe()
    app = Host(client)
    async with app.run_test(size=SIZE) as pilot:
        view = view_of(app)
        fill(view, **form)
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert expected in view.form.error
        assert view.query_one("#request-error").display
        assert view.history == [] and view.last_response is None
        assert view.panel.body_kind == "none"
        assert subscription.drain() == []
        # fixing the input sends, and the error goes away
        fill(view, url="http://hello.localhost/", headers="")
        await send(pilot)
        assert view.form.error == ""
        assert not view.query_one("#request-error").display
        assert len(subscription.drain()) == 1


async def test_history_newest_first_fill_back_and_resend(engine: Engine, client: LocalClient, deployed: None) -> None:
    subscription = engine.subscribe()
    app = Host(client)
    async with app.run_test(size=SIZE) as pilot:
        view = view_of(app)
        await send(pilot, url="http://hello.localhost/")
        await send(pilot, method="PUT", url="http://echo.localhost/x", headers="X-One: 1", body="payload")
        await send(pilot, method="GET", url="http://nobody.localhost/", headers="", body="")
        table = view.query_one("#requests-history-table", DataTable)
        rows = [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]
        assert rows == [  # the URLs without their scheme: the whole ones do not fit the column
            ["GET", "nobody.localhost/", "404", "scriptNotFound"],
            ["PUT", "echo.localhost/x", "200", "ok"],
            ["GET", "hello.localhost/", "200", "ok"],
        ]

        # selecting the echo request puts it back in the form
        table.focus()
        await pilot.press("down", "enter")
        await pilot.pause()
        assert view.form.draft == RequestDraft("PUT", "http://echo.localhost/x", "X-One: 1", "payload")

        # ctrl+r resends the highlighted one directly
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert len(view.history) == 4
        newest = view.history[0]
        assert newest.draft == RequestDraft("PUT", "http://echo.localhost/x", "X-One: 1", "payload")
        assert view.last_response is not None and view.last_response.json()["body"] == "payload"
        assert table.cursor_row == 0

        items = subscription.drain()
        assert [(i["event"]["request"]["method"], i["event"]["request"]["url"]) for i in items] == [
            ("GET", "http://hello.localhost/"),
            ("PUT", "http://echo.localhost/x"),
            ("GET", "http://nobody.localhost/"),
            ("PUT", "http://echo.localhost/x"),
        ]


class StallingClient(LocalClient):
    """Holds requests to stall.localhost until released, to have one in flight for as long as a test needs."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.release = asyncio.Event()
        self.stalled = asyncio.Event()
        self.cancelled = False

    async def dispatch(self, request: Request, namespace: str) -> Response:
        if request.host == "stall.localhost":
            self.stalled.set()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        return await super().dispatch(request, namespace)


async def test_a_new_send_replaces_one_in_flight(engine: Engine, deployed: None) -> None:
    client = StallingClient(engine)
    app = Host(client)
    async with app.run_test(size=SIZE) as pilot:
        view = view_of(app)
        await send_without_waiting(pilot, url="http://stall.localhost/")
        await asyncio.wait_for(client.stalled.wait(), 5)
        assert view.panel.loading
        await send(pilot, url="http://hello.localhost/")
        assert client.cancelled
        assert [entry.draft.url for entry in view.history] == ["http://hello.localhost/"]
        assert view.panel.body_text == "Hello from wasmdeck!\n"
        assert not view.panel.loading


async def test_escape_leaves_the_form_for_the_history(client: LocalClient) -> None:
    app = Host(client)
    async with app.run_test(size=SIZE) as pilot:
        view = view_of(app)
        await pilot.press("ctrl+l")
        assert app.focused is view.query_one("#request-url", Input)
        await pilot.press("escape")
        assert app.focused is view.query_one("#requests-history-table", DataTable)
        await pilot.press("escape")  # outside the form escape is left alone
        assert app.focused is view.query_one("#requests-history-table", DataTable)


async def test_switching_response_tabs_stays_inside_the_panel(engine: Engine, client: LocalClient, deployed: None) -> None:
    """The console app moves focus when *its* tabs change; the panel's Body/Headers/Trace must not look like that."""
    seen: list[str] = []

    class Outer(Host):
        @on(TabbedContent.TabActivated)
        def outer_tab(self, event: TabbedContent.TabActivated) -> None:
            seen.append(event.pane.id or "")

    app = Outer(client)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot)
        view_of(app).query_one("#requests-history-table", DataTable).focus()
        await pilot.click("#response-tabs Tab#--content-tab-response-trace-tab")
        await pilot.pause()
        assert view_of(app).query_one("#response-tabs", TabbedContent).active == "response-trace-tab"
        assert app.focused is not None and view_of(app).panel in app.focused.ancestors_with_self
        assert seen == []


async def test_resend_with_no_history_warns(client: LocalClient) -> None:
    app = Host(client)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert view_of(app).history == []
        assert app.notes and app.notes[-1][0] == "warning"


async def test_history_is_bounded(engine: Engine, client: LocalClient, deployed: None) -> None:
    app = Host(client, history_limit=3)
    async with app.run_test(size=SIZE) as pilot:
        for path in ("a", "b", "c", "d"):
            await send(pilot, url=f"http://hello.localhost/{path}")
        view = view_of(app)
        assert [entry.draft.url for entry in view.history] == [f"http://hello.localhost/{p}" for p in ("d", "c", "b")]
        assert view.query_one("#requests-history-table", DataTable).row_count == 3


async def test_elapsed_uses_the_app_clock(engine: Engine, client: LocalClient, deployed: None) -> None:
    ticks = iter([10.0, 10.0042, 20.0, 21.5])
    app = Host(client, clock=lambda: next(ticks))
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot)
        assert view_of(app).panel.border_subtitle == "21 B · 4 ms"
        await send(pilot)
        assert view_of(app).panel.border_subtitle == "21 B · 1.50 s"


class BrokenClient(LocalClient):
    """A transport whose dispatch fails, as a remote engine that went away would."""

    def __init__(self, engine: Engine, error: Exception) -> None:
        super().__init__(engine)
        self.error = error

    async def dispatch(self, request: Request, namespace: str) -> Response:
        raise self.error


@pytest.mark.parametrize("error", [WasmdeckError("the engine is closed"), ConnectionError("connection refused [x]")])
async def test_a_failing_transport_is_a_notification_not_a_crash(engine: Engine, error: Exception) -> None:
    app = Host(BrokenClient(engine, error))
    async with app.run_test(size=SIZE) as pilot:
        view = view_of(app)
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert app.is_running
        assert view.history == [] and view.last_response is None
        assert app.notes[-1][0] == "error" and str(error).split(" [")[0] in app.notes[-1][1]
        assert not view.panel.loading


# -- the pieces ---------------------------------------------------------------------------


def test_parse_headers() -> None:
    assert parse_headers("A: 1\n\n# note\n  B-Two:  two words  \nC:") == [("A", "1"), ("B-Two", "two words"), ("C", "")]
    with pytest.raises(InvalidInput, match=r"line 1\)$"):
        parse_headers("nope")


def test_draft_build() -> None:
    request = RequestDraft("post", "http://echo.localhost/", "X: 1", "héllo").build()
    assert (request.method, request.headers, request.body) == ("POST", [("X", "1")], "héllo".encode())


def test_formatting_helpers() -> None:
    assert [status_colour(code) for code in (200, 301, 404, 503, 99)] == ["green", "cyan", "yellow", "red", "magenta"]
    assert status_label(503) == "503 Service Unavailable" and status_label(599) == "599"
    assert [size_text(n) for n in (0, 1023, 1229, 3 * 2**20 + 2**19)] == ["0 B", "1023 B", "1.2 KiB", "3.5 MiB"]
    assert [elapsed_text(s) for s in (0.0, 0.0031, 1.25, -1.0)] == ["0 ms", "3 ms", "1.25 s", "0 ms"]


def test_body_view_kinds() -> None:
    assert body_view(b"", None)[0] == "empty"
    kind, shown = body_view(b'[1, {"a": null}]', "text/plain")
    assert kind == "json" and shown.plain == '[\n  1,\n  {\n    "a": null\n  }\n]'
    kind, shown = body_view(b"{not json", "application/json")
    assert kind == "text" and shown.plain == "{not json"
    kind, shown = body_view(b"\x00\x01PNG\xff" * 200, "image/png")
    assert kind == "binary"
    assert shown.plain.startswith("1,200 bytes of binary (image/png)")
    assert "00000000  00 01 50 4e 47 ff 00 01 50 4e 47 ff 00 01 50 4e  |..PNG...PNG...PN|" in shown.plain
    assert "688 more bytes" in shown.plain
    assert hexdump(b"abc") == "00000000  61 62 63" + " " * 39 + "  |abc|"


# -- snapshots ----------------------------------------------------------------------------


class FixedClient(LocalClient):
    """Pins the trace fields that vary from run to run, so a picture is the same every time."""

    async def dispatch(self, request: Request, namespace: str) -> Response:
        response = await super().dispatch(request, namespace)
        response.trace["cpuTime"] = response.trace["wallTime"] = 1
        response.trace["eventTimestamp"] = FIXED_EPOCH_MS
        return response


def snapshot_app(tmp_path: Path, wasmer_cache: Path) -> tuple[Host, Engine]:
    engine = Engine(tmp_path / "w.db", cache_dir=wasmer_cache, clock=lambda: FIXED_EPOCH_MS)
    engine.deploy("hello", fixture_module("hello"))
    return Host(FixedClient(engine), clock=lambda: 1_000.0), engine


def test_snapshot_empty_composer(snap_compare: Any, tmp_path: Path, wasmer_cache: Path) -> None:
    app, engine = snapshot_app(tmp_path, wasmer_cache)
    try:
        assert snap_compare(app, terminal_size=SIZE)
    finally:
        asyncio.run(engine.close())


def test_snapshot_after_hello(snap_compare: Any, tmp_path: Path, wasmer_cache: Path) -> None:
    app, engine = snapshot_app(tmp_path, wasmer_cache)

    async def run_before(pilot: Any) -> None:
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert view_of(pilot.app).panel.body_text == "Hello from wasmdeck!\n"

    try:
        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
    finally:
        asyncio.run(engine.close())

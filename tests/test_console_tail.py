"""The console's tail: live panes, follow mode, filters, pane management, the trace detail screen."""

from __future__ import annotations

from datetime import timezone
from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.widgets import Footer, Input, Static

from wasmdeck.console.screens.tail import TailView
from wasmdeck.console.formatting import fit_url, middle_truncate
from wasmdeck.console.widgets.error_line import ErrorLine
from wasmdeck.console.widgets.tail_pane import TailPane, parse_filter
from wasmdeck.console.widgets.trace_log import column_layout
from wasmdeck.console.widgets.trace_detail import TraceDetailScreen
from wasmdeck.engine import Engine
from wasmdeck.client import LocalClient
from wasmdeck.engine.errors import InvalidInput
from wasmdeck.engine.http import Request
from wasmdeck.engine.traces import exception_entry, new_item

from .conftest import fixture_module

T0 = 1_795_766_400_000  # 2026-11-27 08:00:00 UTC
SIZE = (120, 40)


def item(
    n: int,
    *,
    worker: str | None = "hello",
    namespace: str = "default",
    outcome: str = "ok",
    method: str = "GET",
    status: int | None = 200,
    logs: list[dict[str, Any]] | None = None,
    exceptions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Trace item number n, one second after n-1, with a URL that names it."""
    return new_item(
        script_name=worker,
        namespace=namespace,
        outcome=outcome,
        event_timestamp=T0 + n * 1000,
        cpu_time=1,
        wall_time=3 + n % 40,
        url=f"http://{worker or 'nobody'}.example/req/{n}",
        method=method,
        headers=[("accept", "*/*"), ("authorization", "Bearer secret")],
        status=status,
        logs=logs,
        exceptions=exceptions,
    )


def trap_item(n: int) -> dict[str, Any]:
    return item(
        n,
        worker="trap",
        outcome="exception",
        status=500,
        logs=[{"timestamp": T0 + n * 1000, "level": "warn", "message": ["about to explode"]}],
        exceptions=[exception_entry("WasmTrap", "unreachable\n  0: explode_on_purpose\n  1: _start", T0 + n * 1000)],
    )


class TailHost(App[None]):
    """The smallest host the tail view needs: a namespace and the view."""

    namespace = "default"

    def __init__(self, panes: tuple[str, ...] = ("",), **options: Any) -> None:
        super().__init__()
        self.panes = panes
        self.options = options

    def compose(self) -> ComposeResult:
        yield TailView(panes=self.panes, tz=timezone.utc, **self.options)
        yield Footer()


async def settle(pilot) -> None:  # type: ignore[no-untyped-def]
    """Let the border counts catch up: under a flow they repaint at most every LABEL_PERIOD."""
    await pilot.pause(TailPane.LABEL_PERIOD + 0.05)


def visible(pane: TailPane) -> list[str]:
    """The text of the pane's lines on screen, top to bottom."""
    log = pane.log_view
    return [log.render_line(y).text.rstrip() for y in range(log.scrollable_content_region.height)]


def urls(pane: TailPane) -> list[str]:
    return [i["event"]["request"]["url"] for i in pane.items]


# -- pure helpers --------------------------------------------------------------------------


def test_parse_filter_compact_syntax() -> None:
    parsed = parse_filter('worker:hello  status:error method:get,post header:x-id hl:"slow path" disk full')
    f = parsed.trace_filter
    assert (f.worker, f.status, f.method, f.header, f.search) == ("hello", "error", ("GET", "POST"), "x-id", "disk full")
    assert parsed.highlight == "slow path"
    assert parse_filter('"warn: disk"').trace_filter.search == "warn: disk"
    assert not parse_filter("   ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("status:broken", "not one of ok, error, canceled"),
        ("colour:red", "unknown filter 'colour:'"),
        ("worker:", "worker: needs a value"),
        ("worker:a worker:b", "worker: is given twice"),
        ("method:G3T", "is not an HTTP method"),
        ('hl:"open', "never closed"),
    ],
)
def test_parse_filter_errors_are_one_sentence(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_filter(text)


def test_line_layout_fits_every_width() -> None:
    for width in (56, 80, 116, 200):
        layout = dict(column_layout(width))
        assert sum(layout.values()) + len(layout) - 1 == width  # columns plus one space between each
        assert {"time", "url", "status", "outcome", "worker"} <= layout.keys()
    assert dict(column_layout(116))["outcome"] == len("exceededWallTime")
    narrow = dict(column_layout(56))  # a side-by-side pane on a 120-column terminal
    assert narrow["url"] >= 20 and "worker" in narrow and not {"flags", "method", "wall"} & narrow.keys()
    assert middle_truncate("http://hello.example/a/very/long/path/index.html", 20) == "http://hell…dex.html"
    assert fit_url("https://hello.example/req/99", 20) == "hello.example/req/99"


# -- the view with a host app -------------------------------------------------------------


async def test_items_appear_and_follow_keeps_the_bottom_visible() -> None:
    app = TailHost()
    async with app.run_test(size=SIZE) as pilot:
        view = app.query_one(TailView)
        pane = view.panes[0]
        view.add_items([item(n) for n in range(5)], 0)
        await pilot.pause()
        lines = visible(pane)
        assert lines[0].startswith("08:00:00 GET") and "http://hello.example/req/0" in lines[0]
        assert "200 ok" in lines[0] and lines[0].endswith("hello")
        view.add_items([item(n) for n in range(5, 200)], 0)
        await settle(pilot)
        log = pane.log_view
        assert pane.follow and log.scroll_y == log.max_scroll_y > 0
        assert "/req/199" in visible(pane)[-1]
        assert "TAIL" in pane.border_title and "200 lines" in pane.border_subtitle


async def test_moving_up_pauses_follow_counts_new_and_end_resumes() -> None:
    app = TailHost()
    async with app.run_test(size=SIZE) as pilot:
        view = app.query_one(TailView)
        pane = view.panes[0]
        view.add_items([item(n) for n in range(100)], 0)
        await pilot.pause()
        await pilot.press("up", "up")
        assert not pane.follow
        assert pane.log_view.cursor_row.item["eventTimestamp"] == T0 + 97_000
        before = visible(pane)
        view.add_items([item(n) for n in range(100, 107)], 0)
        await settle(pilot)
        assert visible(pane) == before  # the view stays put
        assert pane.new_count == 7 and "PAUSED +7 new" in pane.border_title
        await pilot.press("end")
        assert pane.follow and pane.new_count == 0 and "TAIL" in pane.border_title
        assert "/req/106" in visible(pane)[-1]


async def test_scrolling_up_pauses_f_toggles_and_down_to_the_end_resumes() -> None:
    app = TailHost()
    async with app.run_test(size=SIZE) as pilot:
        view = app.query_one(TailView)
        pane = view.panes[0]
        log = pane.log_view
        view.add_items([item(n) for n in range(100)], 0)
        await pilot.pause()
        log.scroll_to(y=10, animate=False, immediate=True)  # as a mouse wheel or scrollbar drag would
        await pilot.pause()
        assert not pane.follow
        view.add_items([item(100)], 0)
        await pilot.pause()
        assert pane.new_count == 1 and log.scroll_y == 10
        await pilot.press("f")
        assert pane.follow and log.scroll_y == log.max_scroll_y
        await pilot.press("f")
        assert not pane.follow
        await pilot.press("down")  # already on the last line: down resumes
        assert pane.follow


async def test_follow_survives_the_pane_growing_and_shrinking() -> None:
    app = TailHost(panes=("", ""))
    async with app.run_test(size=SIZE) as pilot:
        view = app.query_one(TailView)
        view.add_items([item(n) for n in range(100)], 0)
        await pilot.pause()
        first = view.panes[0]
        for key in ("m", "m", "o"):  # taller, shorter, side by side
            await pilot.press(key)
            await pilot.pause()
            assert first.follow and "req/99" in visible(first)[-1]


async def test_evictions_while_paused_keep_the_cursor_on_its_item_and_are_counted() -> None:
    app = TailHost(capacity=50)
    async with app.run_test(size=SIZE) as pilot:
        view = app.query_one(TailView)
        pane = view.panes[0]
        view.add_items([item(n) for n in range(50)], 0)
        await pilot.pause()
        await pilot.press("up")
        assert pane.log_view.cursor_row.item["eventTimestamp"] == T0 + 48_000
        view.add_items([item(n) for n in range(50, 60)], 3)
        await settle(pilot)
        assert pane.line_count == 50 and pane.evicted == 10 and pane.dropped == 3
        assert pane.log_view.cursor_row.item["eventTimestamp"] == T0 + 48_000
        assert "3 dropped upstream" in pane.border_subtitle and "10 evicted" in pane.border_subtitle


async def test_each_pane_has_its_own_filter() -> None:
    app = TailHost(panes=("worker:hello", "status:error"))
    async with app.run_test(size=SIZE) as pilot:
        view = app.query_one(TailView)
        hello, errors = view.panes
        view.add_items([item(1), trap_item(2), item(3, method="POST"), item(4, worker=None, outcome="scriptNotFound", status=404)], 0)
        await pilot.pause()
        assert urls(hello) == ["http://hello.example/req/1", "http://hello.example/req/3"]
        assert urls(errors) == ["http://trap.example/req/2"]
        assert "status:error" in errors.border_title


async def test_filter_input_applies_rejects_and_clears() -> None:
    app = TailHost()
    async with app.run_test(size=SIZE) as pilot:
        view = app.query_one(TailView)
        pane = view.panes[0]
        view.add_items([item(1), trap_item(2), item(3, method="POST")], 0)
        await pilot.pause()
        await pilot.press("slash")
        field = pane.query_one(".tail-filter", Input)
        assert field.has_focus
        await pilot.press(*"method:post", "enter")
        await pilot.pause()
        assert urls(pane) == ["http://hello.example/req/3"]  # history re-filtered
        assert pane.log_view.has_focus and not field.display
        # bad syntax: an inline error, and nothing changes
        await pilot.press("slash", "ctrl+u", *"colour:red", "enter")
        await pilot.pause()
        error = pane.query_one(ErrorLine)
        assert "unknown filter 'colour:'" in str(error.render())
        assert pane.filter.text == "method:post" and urls(pane) == ["http://hello.example/req/3"]
        # search text looks in logs and exceptions
        await pilot.press("ctrl+u", *"explode", "enter")
        await pilot.pause()
        assert urls(pane) == ["http://trap.example/req/2"] and error.has_class("-empty")
        # esc clears the filter
        await pilot.press("escape")
        await pilot.pause()
        assert not pane.filter and len(pane.items) == 3


async def test_highlight_marks_lines_without_hiding_any() -> None:
    app = TailHost(panes=("hl:trap",))
    async with app.run_test(size=SIZE) as pilot:
        view = app.query_one(TailView)
        pane = view.panes[0]
        view.add_items([item(1), trap_item(2), item(3)], 0)
        await pilot.pause()
        pane.log_view.blur()
        await pilot.pause()
        assert len(pane.items) == 3
        log = pane.log_view
        backgrounds = [{s.style.bgcolor for s in log.render_line(y) if s.style} for y in range(3)]
        assert backgrounds[0] == backgrounds[2] != backgrounds[1]


async def test_add_close_maximise_and_orientation() -> None:
    app = TailHost()
    async with app.run_test(size=SIZE) as pilot:
        view = app.query_one(TailView)
        view.add_items([item(1), trap_item(2)], 0)
        await pilot.pause()
        await pilot.press("a")
        await pilot.pause()
        first, second = view.panes
        assert second.log_view.has_focus and len(second.items) == 2  # starts with the buffered history
        assert first.region.y < second.region.y and first.region.width == second.region.width  # stacked
        await pilot.press("o")
        await pilot.pause()
        assert first.region.x < second.region.x and first.region.y == second.region.y  # side by side
        await pilot.press("m")
        await pilot.pause()
        assert not first.display and second.region.width == view.region.width
        await pilot.press("m")
        await pilot.pause()
        assert first.display and second.display
        await pilot.press("tab")
        assert first.log_view.has_focus
        await pilot.press("x")
        await pilot.pause()
        assert view.panes == [second] and second.log_view.has_focus
        await pilot.press("x")  # never the last pane
        await pilot.pause()
        assert view.panes == [second]
        view.action_add_pane()  # as the app's command palette calls it: synchronously
        await pilot.pause()
        assert len(view.panes) == 2 and view.panes[1].log_view.has_focus
        view.focus_main()  # what the app calls when the tail tab is shown
        assert view.panes[1].log_view.has_focus


async def test_click_selects_a_line_and_double_click_opens_it() -> None:
    app = TailHost()
    async with app.run_test(size=SIZE) as pilot:
        view = app.query_one(TailView)
        pane = view.panes[0]
        view.add_items([item(1), trap_item(2), item(3)], 0)
        await pilot.pause()
        await pilot.click(pane.log_view, offset=(5, 1))
        assert not pane.follow and pane.log_view.cursor_row.item["scriptName"] == "trap"
        await pilot.click(pane.log_view, offset=(5, 1), times=2)
        await pilot.pause()
        assert isinstance(app.screen, TraceDetailScreen) and app.screen.item["scriptName"] == "trap"


async def test_clear_forgets_the_shown_items_but_not_new_ones() -> None:
    app = TailHost()
    async with app.run_test(size=SIZE) as pilot:
        view = app.query_one(TailView)
        pane = view.panes[0]
        view.add_items([item(1), trap_item(2)], 5)
        await pilot.pause()
        await pilot.press("c")
        assert pane.items == [] and pane.dropped == 0 and "0 lines" in pane.border_subtitle
        view.add_items([item(3)], 0)
        await pilot.pause()
        assert urls(pane) == ["http://hello.example/req/3"]
        pane.set_filter("")  # re-filtering history does not bring cleared items back
        await pilot.pause()
        assert urls(pane) == ["http://hello.example/req/3"]


async def test_enter_opens_the_whole_trace_and_esc_closes_it() -> None:
    app = TailHost()
    async with app.run_test(size=SIZE) as pilot:
        view = app.query_one(TailView)
        view.add_items([item(1), trap_item(2)], 0)
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, TraceDetailScreen)
        summary = str(screen.query_one("#trace-summary", Static).render())
        assert "exception" in summary and "500" in summary and "2026-11-27 08:00:02.000 UTC" in summary
        assert "warn  about to explode" in summary
        assert "WasmTrap: unreachable" in summary and "0: explode_on_purpose" in summary
        assert "authorization: REDACTED" in summary
        assert '"scriptName": "trap"' in screen.json_text()
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, TraceDetailScreen)


async def test_history_preload_skips_items_the_stream_already_delivered() -> None:
    app = TailHost(panes=("", "status:error"))
    async with app.run_test(size=SIZE) as pilot:
        view = app.query_one(TailView)
        view.add_items([item(3)], 0)
        view.history([item(1), trap_item(2), item(3)])
        await pilot.pause()
        everything, errors = view.panes
        assert [i["eventTimestamp"] for i in everything.items] == [T0 + 1000, T0 + 2000, T0 + 3000]
        assert urls(errors) == ["http://trap.example/req/2"]


async def test_only_the_current_namespace_is_shown() -> None:
    app = TailHost()
    async with app.run_test(size=SIZE) as pilot:
        view = app.query_one(TailView)
        pane = view.panes[0]
        view.add_items([item(1), item(2, namespace="staging"), item(3)], 0)
        await pilot.pause()
        assert [i["dispatchNamespace"] for i in pane.items] == ["default", "default"]
        view.namespace_changed("staging")
        await pilot.pause()
        assert urls(pane) == ["http://hello.example/req/2"]
        view.add_items([item(4), item(5, namespace="staging")], 0)
        await pilot.pause()
        assert urls(pane) == ["http://hello.example/req/2", "http://hello.example/req/5"]


# -- end to end with a real engine --------------------------------------------------------


async def test_engine_traces_reach_a_pane(tmp_path, wasmer_cache) -> None:
    engine = Engine(tmp_path / "w.db", cache_dir=wasmer_cache)
    engine.deploy("hello", fixture_module("hello"))
    engine.deploy("trap", fixture_module("trap"))
    client = LocalClient(engine)
    stream = client.stream()
    app = TailHost(panes=("", "status:error"))
    try:
        async with app.run_test(size=SIZE) as pilot:
            view = app.query_one(TailView)
            for url in ("http://hello.example/", "http://trap.example/", "http://hello.example/again"):
                await client.dispatch(Request(url), "default")
            await stream.wait(1.0)
            view.add_items(stream.drain(), stream.take_dropped())
            await pilot.pause()
            everything, errors = view.panes
            assert [i["scriptName"] for i in everything.items] == ["hello", "trap", "hello"]
            [line] = [line for line in visible(errors) if line]
            assert "GET" in line and "http://trap.example/" in line and "500 exception" in line and "trap" in line
            await pilot.press("tab", "enter")
            await pilot.pause()
            assert "explode_on_purpose" in str(app.screen.query_one("#trace-summary", Static).render())
    finally:
        stream.close()
        await client.close()


# -- pictures -----------------------------------------------------------------------------


def _busy_tail() -> TailHost:
    return TailHost(panes=("", "status:error hl:trap"), capacity=60)


async def _feed(pilot) -> None:  # type: ignore[no-untyped-def]
    view = pilot.app.query_one(TailView)
    batch = []
    for n in range(40):
        if n % 9 == 4:
            batch.append(trap_item(n))
        elif n % 13 == 7:
            batch.append(item(n, worker=None, outcome="scriptNotFound", status=404, method="POST"))
        else:
            batch.append(item(n, logs=[{"timestamp": T0, "level": "log", "message": ["hi"]}] if n % 5 == 0 else None))
    view.add_items(batch, 0)
    await pilot.pause()


def test_tail_snapshot(snap_compare) -> None:
    """Two stacked panes: everything (paused, cursor up, +N new, drops) and errors with a highlight."""

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _feed(pilot)
        await pilot.press("up", "up", "up")
        view = pilot.app.query_one(TailView)
        view.add_items([item(n) for n in range(40, 64)] + [trap_item(64)], 7)
        await settle(pilot)

    assert snap_compare(_busy_tail(), terminal_size=(120, 36), run_before=run_before)


def test_trace_detail_snapshot(snap_compare) -> None:
    """The detail screen of a trapped request: summary with logs and backtrace, then JSON."""

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _feed(pilot)
        await pilot.press("tab", "end", "enter")
        await pilot.pause()

    assert snap_compare(_busy_tail(), terminal_size=(120, 36), run_before=run_before)



def test_trace_detail_lists_subrequests_and_consumed_events() -> None:
    from wasmdeck.console.widgets.trace_detail import summary
    from wasmdeck.engine.traces import tail_event_item

    item = new_item(
        script_name="shop", namespace="default", outcome="ok", event_timestamp=0, cpu_time=1, wall_time=5,
        url="http://shop.example.com/", method="GET", headers=[], status=200,
        subrequests=[
            {"url": "https://api.example.com/v1", "method": "GET", "status": 200, "durationMs": 3.2, "via": "outbound"},
            {"url": "https://evil.example.com/", "method": "POST", "error": "EgressBlocked: no", "durationMs": 0.0, "via": "refused"},
        ],
    )
    text = summary(item, timezone.utc).plain
    assert "Subrequests (2)" in text
    assert "GET https://api.example.com/v1 200  3.2 ms via outbound" in text
    assert "POST https://evil.example.com/ EgressBlocked: no  0.0 ms via refused" in text
    tail = tail_event_item(
        script_name="audit", script_version=1, script_tags=(), namespace="default", outcome="ok", event_timestamp=0,
        cpu_time=1, wall_time=2, consumed=[item],
    )
    assert "Consumed events (1)\n  shop" in summary(tail, timezone.utc).plain


def test_a_tail_event_line_says_what_it_consumed() -> None:
    from wasmdeck.console.widgets.trace_log import TraceRow
    from wasmdeck.engine.traces import tail_event_item

    consumed = [new_item(script_name=name, namespace="default", outcome="ok", event_timestamp=0, cpu_time=0, wall_time=0,
                         url="http://x/", method="GET", headers=[], status=200) for name in ("shop", "dispatcher", "shop")]
    item = tail_event_item(script_name="audit", script_version=1, script_tags=(), namespace="default", outcome="ok",
                           event_timestamp=0, cpu_time=1, wall_time=2, consumed=consumed)
    row = TraceRow(item, 1, timezone.utc)
    assert (row.method, row.url, row.worker) == ("TAIL", "3 event(s): dispatcher, shop", "audit")


def test_side_by_side_snapshot_at_100x30(snap_compare) -> None:
    """Three panes side by side on a 100x30 terminal: every line keeps its status, outcome and worker."""

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _feed(pilot)
        await pilot.press("tab", "a", "o")
        await settle(pilot)
        for pane in pilot.app.query_one(TailView).panes:
            for line in [line for line in visible(pane) if line]:
                assert any(status in line for status in (" 200 ", " 404 ", " 500 ")), line
                assert any(outcome in line for outcome in ("ok", "scriptNo", "exception")), line

    assert snap_compare(_busy_tail(), terminal_size=(100, 30), run_before=run_before)

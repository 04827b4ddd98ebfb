"""The console's Outbound tab: choose the Outbound Worker, edit its parameters and the egress
policy; changes apply from the next request; refused input changes nothing."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from textual.widgets import DataTable, Input, Select
from textual.widgets.select import InvalidSelectValueError

from wasmdeck.console.widgets.error_line import ErrorLine
from wasmdeck.engine import Engine, Request

from .conftest import fixture_module, protocol_module
from .test_console_app import SIZE, fixed_engine, make_app, rows, settle  # noqa: F401 (fixed_engine is a fixture)


def _platform(engine: Engine) -> None:
    engine.deploy("shop", protocol_module("fetcher"), tags=["pro"])
    engine.deploy("gateway", protocol_module("outbound-logger"))
    engine.deploy("hello", fixture_module("hello"))


async def open_outbound(pilot) -> None:
    await settle(pilot)
    await pilot.press("3")
    await settle(pilot)


async def test_choose_outbound_worker_parameters_and_egress_then_the_next_fetch_uses_them(engine: Engine, origin) -> None:
    _platform(engine)
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await open_outbound(pilot)
        select = app.query_one("#outbound-service", Select)
        with pytest.raises(InvalidSelectValueError):
            select.value = "hello"  # a WCGI Worker is not offered: it cannot receive fetches
        select.value = "gateway"
        await pilot.press("a")
        await pilot.pause()
        app.screen.query_one("#parameter-name", Input).value = "customer_name"
        app.screen.query_one("#parameter-template", Input).value = "{worker}:{tag:pro}"
        await pilot.click("#parameter-ok")
        await settle(pilot)
        assert rows(app, "outbound-parameters") == [["customer_name", "{worker}:{tag:pro}"]]
        app.query_one("#egress-allow", Input).value = f"{origin.netloc}, *.example.com"
        await pilot.click("#outbound-save")
        await settle(pilot)
        namespace = engine.namespace()
        assert namespace.outbound is not None and namespace.outbound.service == "gateway"
        assert [(p.name, p.template) for p in namespace.outbound.parameters] == [("customer_name", "{worker}:{tag:pro}")]
        assert namespace.egress.as_dict() == {"allow": [origin.netloc, "*.example.com"], "block": []}
        response = await app.client.dispatch(Request(f"http://shop.x/?url={quote(origin.url('/p'), safe='')}"), "default")
        assert response.text.startswith("1 200") and response.trace["subrequests"][0]["via"] == "outbound"


async def test_refused_egress_or_parameter_changes_nothing(engine: Engine) -> None:
    _platform(engine)
    engine.set_outbound("gateway", ["customer_name"])
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await open_outbound(pilot)
        assert app.query_one("#outbound-service", Select).value == "gateway"
        assert rows(app, "outbound-parameters") == [["customer_name", "set by the dispatcher"]]
        # a bad template is refused in its dialog
        await pilot.press("a")
        await pilot.pause()
        app.screen.query_one("#parameter-name", Input).value = "url"
        app.screen.query_one("#parameter-template", Input).value = "{request.path}"
        await pilot.click("#parameter-ok")
        await settle(pilot)
        assert "{request.path}" in str(app.screen.query_one("#parameter-error", ErrorLine).render())
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("y")  # discard what was typed in the dialog
        await settle(pilot)
        # a bad egress entry refuses the whole save: the Outbound Worker choice is not half saved
        app.query_one("#outbound-service", Select).clear()
        app.query_one("#outbound-parameters", DataTable).focus()
        await pilot.press("d")
        app.query_one("#egress-block", Input).value = "http://evil.example.com"
        await pilot.click("#outbound-save")
        await settle(pilot)
        assert "without a scheme or path" in str(app.query_one("#outbound-error", ErrorLine).render())
        namespace = engine.namespace()
        assert namespace.outbound is not None and namespace.outbound.service == "gateway"
        assert namespace.egress.as_dict() == {"allow": [], "block": []}
        # revert shows the stored settings again
        await pilot.click("#outbound-revert")
        await settle(pilot)
        assert app.query_one("#egress-block", Input).value == ""
        assert rows(app, "outbound-parameters") == [["customer_name", "set by the dispatcher"]]


def test_snapshot_outbound(snap_compare, fixed_engine: Engine) -> None:
    _platform(fixed_engine)
    fixed_engine.set_outbound("gateway", [("customer_name", None), ("plan", "{tag:pro}")])
    fixed_engine.set_egress(allow=["api.example.com", "*.example.org:443"], block=["evil.example.com"])

    async def run_before(pilot) -> None:
        await open_outbound(pilot)

    assert snap_compare(make_app(fixed_engine), terminal_size=SIZE, run_before=run_before)


def test_snapshot_parameter_form(snap_compare, fixed_engine: Engine) -> None:
    _platform(fixed_engine)
    fixed_engine.set_outbound("gateway", [("plan", "{tag:pro}")])

    async def run_before(pilot) -> None:
        await open_outbound(pilot)
        pilot.app.query_one("#outbound-parameters", DataTable).focus()
        await pilot.press("e")
        await settle(pilot)

    assert snap_compare(make_app(fixed_engine), terminal_size=SIZE, run_before=run_before)

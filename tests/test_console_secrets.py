"""Secrets in the console (issue 13, item 2), on the real app over a real engine, embedded and
remote: names only, set through a masked field, a new value for one, delete after asking; each
change a new version; refusals (a bad name, a clash with a var, a value over 5 KiB, a missing key
file, a secret gone meanwhile) show the engine's sentence in the dialog and change nothing.

A distinctive value is followed everywhere it could leak: the screen at every step, every
notification, every log record, the app's objects once the value is sent, the trace items of the
traffic that uses it (stored, streamed, and the remote client's), and every stored picture."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import secrets
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Button, DataTable, Input

from wasmdeck.client import LocalClient
from wasmdeck.client.remote import RemoteClient
from wasmdeck.console.screens.tail import TailView
from wasmdeck.console.widgets.error_line import ErrorLine
from wasmdeck.console.widgets.modals import ConfirmScreen
from wasmdeck.console.widgets.secrets import SecretFormScreen, SecretsScreen
from wasmdeck.console.widgets.worker_detail import WorkerDetail
from wasmdeck.engine import Engine, WasmdeckError
from wasmdeck.engine.secrets import SecretsUnavailable, default_key_path

from .conftest import FIXED_CLOCK_MS, fixture_module, protocol_module
from .test_console_app import rows, settle
from .test_console_instances import ConsoleApp, select, send, until
from .test_console_traps import EngineApp, PinnedClient, close_engine
from .test_remote_client import TOKEN, served

NARROW = (100, 30)
WIDE = (120, 40)
SNAPSHOTS = Path(__file__).parent / "__snapshots__"
PICTURE_VALUE = "zebra-QX7-ultraviolet-9931"
"""The value typed in the pictures of the form: it must appear in none of them."""


def distinctive() -> str:
    """A value made here and held only by the test's own frame (not by a module's dict, which a
    search of the process's objects would find)."""
    return "sv-" + secrets.token_hex(12) + "-sv"


@pytest.fixture(params=["embedded", "remote"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.asynccontextmanager
async def console_over(engine: Engine, transport: str) -> AsyncIterator[tuple[ConsoleApp, Any]]:
    """The console, and the client a test reads traces through, in this process or over HTTP."""
    if transport == "embedded":
        client = LocalClient(engine, description="wasmdeck.db")
        yield ConsoleApp(client), client
        return
    async with served(engine) as server:
        remote = RemoteClient(server.admin_url, TOKEN)
        try:
            yield ConsoleApp(remote), remote
        finally:
            await remote.close()


def holders(value: str) -> list[Any]:
    """Every live container in this process holding a text or bytes that contains `value`."""
    gc.collect()
    needle = value.encode()
    found = []
    for obj in gc.get_objects():
        if isinstance(obj, dict):
            values: Any = obj.values()
        elif isinstance(obj, (list, tuple, set, frozenset, deque)):
            values = obj
        else:
            continue
        try:
            for item in values:
                if (isinstance(item, str) and value in item) or (isinstance(item, (bytes, bytearray)) and needle in item):
                    found.append(obj)
                    break
        except RuntimeError:  # changed size while read: another thread's container
            continue
    return found


async def open_secrets(pilot: Any, worker: str) -> SecretsScreen:
    app = pilot.app
    await until(pilot, lambda: any(row[0] == worker for row in rows(app, "workers-table")))
    select(app, worker)
    await pilot.press("s")
    await until(pilot, lambda: isinstance(app.screen, SecretsScreen))
    return app.screen


def names_shown(screen: SecretsScreen) -> list[str]:
    table = screen.query_one("#secrets-table", DataTable)
    return [str(table.get_row_at(index)[0]) for index in range(table.row_count)]


async def fill_form(pilot: Any, name: str | None, value: str) -> SecretFormScreen:
    """`a` (a new secret) or enter (a new value for the highlighted one), then type as a user does."""
    app = pilot.app
    await pilot.press("a" if name is not None else "enter")
    await until(pilot, lambda: isinstance(app.screen, SecretFormScreen))
    form = app.screen
    if name is not None:
        assert app.focused is form.query_one("#secret-name"), "the dialog opens on its first field"
        await pilot.press(*name, "tab")
    assert app.focused is form.query_one("#secret-value")
    await pilot.press(*value)
    return form


# -- set, replace, delete ------------------------------------------------------------------------


async def test_set_replace_and_delete_a_secret_without_the_value_ever_showing(
    engine: Engine, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    engine.deploy("warm", protocol_module("proto-warm"))
    engine.deploy("hello", fixture_module("hello"))
    first, second = distinctive(), distinctive()
    screens: list[str] = []
    async with console_over(engine, transport) as (app, client), app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        screen = await open_secrets(pilot, "warm")
        assert names_shown(screen) == [] and "warm has no secrets" in str(screen.query_one("#secrets-empty").render())
        assert isinstance(app.focused, Button) and app.focused.id == "secrets-set"

        form = await fill_form(pilot, "API_TOKEN", first)
        field = form.query_one("#secret-value", Input)
        assert field.password and field.value == first
        assert form.query_one("#secret-dialog").border_subtitle == "● unsaved"
        assert holders(first), "the search below finds a value where one is kept (here: the field)"
        screens.append(app.export_screenshot())
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, SecretsScreen) and names_shown(app.screen) == ["API_TOKEN"])
        assert engine.worker("warm").version == 2 and engine.secret_names("warm") == ["API_TOKEN"]
        assert engine.versions("warm")[-1].message == "secret API_TOKEN set"
        assert "Set secret API_TOKEN of warm: now version 2" in app.toasts
        assert "(v2)" in str(app.screen.query_one("#secrets-title").render())
        await until(pilot, lambda: [row[4] for row in rows(app, "workers-table") if row[0] == "warm"] == ["2"])
        screens.append(app.export_screenshot())
        assert holders(first) == [], "something of the console kept the value after it was sent"

        # enter on the name: a new value for it (the name is fixed, the masked field has the keyboard)
        await fill_form(pilot, None, second)
        screens.append(app.export_screenshot())
        await pilot.press("enter")
        await until(pilot, lambda: engine.worker("warm").version == 3)
        await until(pilot, lambda: isinstance(app.screen, SecretsScreen))
        assert "Set secret API_TOKEN of warm: now version 3" in app.toasts

        # the Worker finds it in its environment; no trace item of that traffic holds it
        answered = await send(app, "http://warm.localhost/?env=API_TOKEN")
        assert answered.text.endswith(f"env {second}\n")
        await pilot.pause(0.5)
        await engine.flush_traces()
        items = [answered.trace, answered.dispatcher_trace, *await client.recent_traces(50)]
        items += [row.item for row in app.query_one(TailView)._recent]
        assert any(item and item.get("scriptName") == "warm" for item in items)
        for secret in (first, second):
            assert secret not in json.dumps(items, default=str), "a trace item holds the secret's value"

        # d asks first; no changes nothing
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        screens.append(app.export_screenshot())
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, SecretsScreen))
        assert engine.worker("warm").version == 3 and engine.secret_names("warm") == ["API_TOKEN"]
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: engine.worker("warm").version == 4)
        await until(pilot, lambda: isinstance(app.screen, SecretsScreen) and names_shown(app.screen) == [])
        assert engine.secret_names("warm") == [] and engine.versions("warm")[-1].message == "secret API_TOKEN deleted"
        assert "Deleted secret API_TOKEN of warm: now version 4" in app.toasts
        await pilot.press("escape")
        await until(pilot, lambda: not app.screen.is_modal)
        await until(pilot, lambda: "Secrets    none" in app.query_one(WorkerDetail).plain)
        screens.append(app.export_screenshot())
        for secret in (first, second):
            assert holders(secret) == [], "something in this process kept a value after it was sent"
    for secret in (first, second):
        assert not any(secret in shot for shot in screens), "a secret's value was on the screen"
        assert not any(secret in toast for toast in app.toasts)
        assert not any(secret in record.getMessage() for record in caplog.records), "a log line holds the value"


async def test_the_secret_names_show_in_the_workers_pane(engine: Engine, transport: str) -> None:
    engine.deploy("warm", protocol_module("proto-warm"))
    engine.put_secret("warm", "DB_URL", distinctive())
    engine.put_secret("warm", "API_TOKEN", distinctive())
    async with console_over(engine, transport) as (app, _), app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        select(app, "warm")
        await until(pilot, lambda: "Secrets    API_TOKEN, DB_URL  (s sets or deletes one)" in app.query_one(WorkerDetail).plain)


# -- a fast typist or a password manager ------------------------------------------------------------


async def test_a_pasted_multi_line_value_is_kept_whole(engine: Engine, transport: str) -> None:
    """A PEM key pasted into the masked field: every line reaches the Worker (a plain Input keeps the first)."""
    from textual import events

    engine.deploy("warm", protocol_module("proto-warm"))
    body = "\n".join(["-----BEGIN PRIVATE KEY-----", distinctive(), distinctive(), "-----END PRIVATE KEY-----"])
    async with console_over(engine, transport) as (app, _), app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await open_secrets(pilot, "warm")
        await fill_form(pilot, "SIGNING_KEY", "")
        app.screen.query_one("#secret-value").post_message(events.Paste(body.replace("\n", "\r\n") + "\r\n"))
        await pilot.pause()
        assert app.screen.query_one("#secret-value", Input).value == body
        assert all(line not in app.export_screenshot() for line in body.splitlines())
        await pilot.press("enter")
        await until(pilot, lambda: engine.secret_names("warm") == ["SIGNING_KEY"])
        answered = await send(app, "http://warm.localhost/?env=SIGNING_KEY")
        assert answered.text.endswith(f"env {body}\n")


async def test_an_empty_value_is_refused_and_sets_nothing(engine: Engine) -> None:
    engine.deploy("warm", protocol_module("proto-warm"))
    app = ConsoleApp(LocalClient(engine))
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await open_secrets(pilot, "warm")
        form = await fill_form(pilot, "API_TOKEN", "")
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen is form
        assert str(form.query_one("#secret-error", ErrorLine).render()) == "The value is empty: type or paste the secret's value."
        assert engine.secret_names("warm") == [] and engine.worker("warm").version == 1


async def test_enter_after_the_name_goes_on_to_the_value_and_sets_nothing(engine: Engine) -> None:
    engine.deploy("warm", protocol_module("proto-warm"))
    app = ConsoleApp(LocalClient(engine))
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await open_secrets(pilot, "warm")
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, SecretFormScreen))
        await pilot.press(*"API_TOKEN", "enter")
        await settle(pilot)
        assert isinstance(app.screen, SecretFormScreen) and app.focused is app.screen.query_one("#secret-value")
        assert engine.secret_names("warm") == [] and engine.worker("warm").version == 1


async def test_a_burst_of_name_tab_value_puts_the_value_in_the_masked_field(engine: Engine) -> None:
    """A password manager types `NAME<TAB>VALUE` in one go: the tab must move on before the value."""
    from textual._xterm_parser import XTermParser

    engine.deploy("warm", protocol_module("proto-warm"))
    value = distinctive()
    app = ConsoleApp(LocalClient(engine))
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await open_secrets(pilot, "warm")
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, SecretFormScreen))
        for key in XTermParser().feed(f"API_TOKEN\t{value}"):
            app.post_message(key)
        await pilot.pause(0.3)
        form = app.screen
        assert form.query_one("#secret-name", Input).value == "API_TOKEN"
        assert form.query_one("#secret-value", Input).value == value
        assert value not in app.export_screenshot()


# -- refusals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "make_value"),
    [
        ("1BAD", lambda value: value),
        ("REQUEST_METHOD", lambda value: value),  # a CGI meta-variable
        ("GREETING", lambda value: value),  # already a var of the worker
        ("BIG", lambda value: value * 300),  # over the 5 KiB of one secret
        ("", lambda value: value),
    ],
    ids=["bad-name", "meta-variable", "clashes-with-a-var", "too-big", "no-name"],
)
async def test_a_refused_secret_shows_the_engine_s_sentence_and_changes_nothing(
    engine: Engine, transport: str, name: str, make_value: Any
) -> None:
    engine.deploy("warm", protocol_module("proto-warm"), vars={"GREETING": "hi"})
    value = make_value(distinctive())
    with pytest.raises(WasmdeckError) as in_process:  # the sentence the engine gives for the same input
        engine.put_secret("warm", name, value)
    async with console_over(engine, transport) as (app, _), app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await open_secrets(pilot, "warm")
        form = await fill_form(pilot, name, "x")
        form.query_one("#secret-value", Input).value = value
        await pilot.click("#secret-save")
        await settle(pilot)
        assert isinstance(app.screen, SecretFormScreen), "the dialog stays open on a refusal"
        shown = str(form.query_one("#secret-error", ErrorLine).render())
        assert str(in_process.value) in shown and value not in shown
        await pilot.press("escape")  # what was typed is not thrown away without asking
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: isinstance(app.screen, SecretsScreen))
        assert not any(value in toast for toast in app.toasts)
    assert engine.worker("warm").version == 1 and engine.secret_names("warm") == []


async def test_a_missing_key_file_is_one_sentence_and_deleting_still_works(
    tmp_path: Path, wasmer_cache: Path, transport: str
) -> None:
    db = tmp_path / "keyless.db"
    first = Engine(db, cache_dir=wasmer_cache)
    first.deploy("warm", protocol_module("proto-warm"))
    first.put_secret("warm", "API_TOKEN", distinctive())
    await first.close()
    default_key_path(db).unlink()  # the key file is lost; the sealed secret stays in the database
    engine = Engine(db, cache_dir=wasmer_cache)
    try:
        with pytest.raises(SecretsUnavailable) as in_process:
            engine.put_secret("warm", "OTHER", "x")
        async with console_over(engine, transport) as (app, _), app.run_test(size=WIDE) as pilot:
            await settle(pilot)
            screen = await open_secrets(pilot, "warm")
            form = await fill_form(pilot, "OTHER", distinctive())
            await pilot.press("enter")
            await settle(pilot)
            assert isinstance(app.screen, SecretFormScreen)
            shown = str(form.query_one("#secret-error", ErrorLine).render())
            assert str(in_process.value) in shown and "is missing" in shown
            assert engine.worker("warm").version == 2 and engine.secret_names("warm") == ["API_TOKEN"]
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await until(pilot, lambda: app.screen is screen)
            await pilot.press("d")  # deleting needs no key
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await until(pilot, lambda: engine.secret_names("warm") == [] and names_shown(screen) == [])
            assert engine.worker("warm").version == 3
    finally:
        await engine.close()


async def test_a_secret_deleted_meanwhile_is_refused_and_the_list_follows(engine: Engine, transport: str) -> None:
    engine.deploy("warm", protocol_module("proto-warm"))
    engine.put_secret("warm", "API_TOKEN", distinctive())
    engine.put_secret("warm", "DB_URL", distinctive())
    async with console_over(engine, transport) as (app, _), app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        screen = await open_secrets(pilot, "warm")
        assert names_shown(screen) == ["API_TOKEN", "DB_URL"]
        engine.delete_secret("warm", "API_TOKEN")  # another operator, from the CLI
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: names_shown(screen) == ["DB_URL"])
        shown = str(screen.query_one("#secrets-error", ErrorLine).render())
        assert shown == "worker 'warm' has no secret named API_TOKEN"
        assert engine.worker("warm").version == 4 and engine.secret_names("warm") == ["DB_URL"]


async def test_the_secrets_key_and_palette_command(engine: Engine) -> None:
    engine.deploy("warm", protocol_module("proto-warm"))
    app = ConsoleApp(LocalClient(engine))
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        assert any(entry[1] == "s" and "secrets" in entry[2].lower() for entry in app.help_entries())
        assert any(group == "secrets" and key == "a" for group, key, _ in app.help_entries())
        await pilot.press("5")  # from another tab, the palette's command goes to the Workers tab first
        commands = {command.title: command for command in app.get_system_commands(app.screen)}
        commands["Worker secrets"].callback()
        await until(pilot, lambda: isinstance(app.screen, SecretsScreen))
        assert app.tabs.active == "workers" and app.screen.worker.name == "warm"


# -- pictures -----------------------------------------------------------------------------------


def _secrets_engine(tmp_path: Path, wasmer_cache: Path) -> Engine:
    engine = Engine(tmp_path / "w.db", cache_dir=wasmer_cache, clock=lambda: FIXED_CLOCK_MS)
    engine.deploy("shop", protocol_module("proto-warm"), tags=["pro"], vars={"CURRENCY": "EUR"})
    engine.deploy("hello", fixture_module("hello"), tags=["free"])
    for name in ("API_TOKEN", "DATABASE_URL", "STRIPE_KEY"):
        engine.put_secret("shop", name, distinctive())
    return engine


def _picture(snap_compare: Any, tmp_path: Path, wasmer_cache: Path, size: tuple[int, int], run_before: Any) -> None:
    engine = _secrets_engine(tmp_path, wasmer_cache)
    app = EngineApp(engine, PinnedClient(engine, description="wasmdeck.db"))
    try:
        assert snap_compare(app, terminal_size=size, run_before=run_before)
    finally:
        close_engine(engine)


@pytest.mark.parametrize("size", [NARROW, WIDE], ids=["100x30", "120x40"])
def test_snapshot_secrets_dialog(snap_compare: Any, tmp_path: Path, wasmer_cache: Path, size: tuple[int, int]) -> None:
    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        await open_secrets(pilot, "shop")
        await pilot.press("down")
        await settle(pilot)

    _picture(snap_compare, tmp_path, wasmer_cache, size, run_before)


@pytest.mark.parametrize("size", [NARROW, WIDE], ids=["100x30", "120x40"])
def test_snapshot_secret_form_with_a_masked_value(snap_compare: Any, tmp_path: Path, wasmer_cache: Path,
                                                  size: tuple[int, int]) -> None:
    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        await open_secrets(pilot, "shop")
        await fill_form(pilot, "WEBHOOK_SECRET", PICTURE_VALUE)
        await pilot.press("tab")  # on to Save: no blinking cursor in the picture
        await settle(pilot)
        assert PICTURE_VALUE not in pilot.app.export_screenshot()

    _picture(snap_compare, tmp_path, wasmer_cache, size, run_before)


def test_no_stored_picture_holds_a_secret_value() -> None:
    pictures = list(SNAPSHOTS.rglob("*.svg"))
    assert any("secret_form" in picture.name for picture in pictures)
    for picture in pictures:
        assert PICTURE_VALUE not in picture.read_text(encoding="utf-8"), picture.name

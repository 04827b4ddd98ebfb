"""Trace items: filters, formats, live subscription, persistence and retention."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from wasmdeck.engine import Engine, InvalidInput, TraceFilter, format_pretty
from wasmdeck.engine.traces import log_entries, new_item, redact_headers, redact_url

from .conftest import fixture_module


def _item(**overrides) -> dict:
    base = dict(
        script_name="hello",
        namespace="default",
        outcome="ok",
        event_timestamp=1_795_766_400_000,
        cpu_time=1,
        wall_time=2,
        url="http://hello.x/",
        method="GET",
        headers=[("X-Env", "prod")],
        status=200,
    )
    base.update(overrides)
    return new_item(**base)


def test_status_groups() -> None:
    error_outcomes = ["exception", "exceededCpu", "exceededMemory", "exceededWallTime", "internalError", "loadShed"]
    for outcome in error_outcomes:
        assert TraceFilter(status="error").matches(_item(outcome=outcome)), outcome
        assert not TraceFilter(status="ok").matches(_item(outcome=outcome))
    assert TraceFilter(status="ok").matches(_item())
    assert TraceFilter(status="canceled").matches(_item(outcome="canceled"))
    assert not TraceFilter(status="error").matches(_item(outcome="scriptNotFound"))


def test_filters() -> None:
    logged = _item(logs=[{"timestamp": 1, "level": "warn", "message": ["Cache MISS for /a"]}])
    assert TraceFilter(search="cache miss").matches(logged)
    assert not TraceFilter(search="hit").matches(logged)
    assert TraceFilter(search="boom").matches(_item(exceptions=[{"timestamp": 1, "name": "WasmTrap", "message": "boom"}]))
    assert TraceFilter(method=("post", "get")).matches(_item())
    assert not TraceFilter(method=("POST",)).matches(_item())
    assert TraceFilter(method="get").matches(_item())
    assert TraceFilter(worker="hello", namespace="default").matches(_item())
    assert not TraceFilter(worker="other").matches(_item())
    assert not TraceFilter(namespace="staging").matches(_item())
    assert TraceFilter(header="x-env").matches(_item())
    assert TraceFilter(header="X-Env: prod").matches(_item())
    assert not TraceFilter(header="X-Env: dev").matches(_item())
    assert not TraceFilter(header="X-Missing").matches(_item())


def test_sampling_rate() -> None:
    with pytest.raises(InvalidInput):
        TraceFilter(sampling_rate=1.0)
    with pytest.raises(InvalidInput):
        TraceFilter(sampling_rate=0)
    with pytest.raises(InvalidInput):
        TraceFilter(status="broken")
    sampled = sum(TraceFilter(sampling_rate=0.25).matches(_item()) for _ in range(4000))
    assert 700 < sampled < 1300


def test_redaction() -> None:
    shown = redact_headers(
        [("Cookie", "a"), ("Set-Cookie", "b"), ("Proxy-Authorization", "c"), ("X-Session-Token", "d"), ("Accept", "e")]
    )
    assert shown == {
        "cookie": "REDACTED",
        "set-cookie": "REDACTED",
        "proxy-authorization": "REDACTED",
        "x-session-token": "REDACTED",
        "accept": "e",
    }


def test_redaction_of_more_secret_headers() -> None:
    names = ["X-Password", "X-Session-Id", "Signature", "X-Credential", "X-Hub-Signature-256", "X-CSRF-Token",
             "X-XSRF", "Passwd", "X-Pwd", "Session"]
    shown = redact_headers([(name, "s3cret") for name in names] + [("X-Request-Id", "r1"), ("Accept-Language", "en")])
    assert {name: value for name, value in shown.items() if value != "REDACTED"} == {"x-request-id": "r1", "accept-language": "en"}


@pytest.mark.parametrize("url, shown", [
    ("http://a.x/p?access_token=abc&page=2", "http://a.x/p?access_token=REDACTED&page=2"),
    ("http://a.x/?X-Amz-Signature=1&X-Amz-Credential=2&X-Amz-Date=3", "http://a.x/?X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED&X-Amz-Date=3"),
    ("http://a.x/?api_key=k&code=c&sig=s&q=shoes#code=frag", "http://a.x/?api_key=REDACTED&code=REDACTED&sig=REDACTED&q=shoes#code=frag"),
    ("http://a.x/?%61ccess_token=x&password=p&session_id=1", "http://a.x/?%61ccess_token=REDACTED&password=REDACTED&session_id=REDACTED"),
    ("https://user:hunter2@a.x/path?q=1", "https://user:REDACTED@a.x/path?q=1"),
    ("http://a.x/token/in/path?flag&secret", "http://a.x/token/in/path?flag&secret"),
    ("http://a.x/", "http://a.x/"),
])
def test_redaction_of_url_query_parameters(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert _item(url=url)["event"]["request"]["url"] == shown


def test_subrequest_urls_and_their_errors_are_redacted() -> None:
    url = "http://api.example.com/v1?access_token=abc123&q=1"
    item = _item(subrequests=[{"url": url, "method": "GET", "via": "refused", "durationMs": 0.1,
                               "error": f"EgressBlocked: the egress policy refused {url}: not allowed"}])
    entry = item["subrequests"][0]
    assert entry["url"] == "http://api.example.com/v1?access_token=REDACTED&q=1"
    assert "abc123" not in entry["error"] and "access_token=REDACTED" in entry["error"]


def test_log_levels_from_prefixes() -> None:
    entries, truncated = log_entries(b"WARN:no space\nError:   spaced\nwarning: old\nplain line\n  info: indented\n", 5)
    assert [(e["level"], e["message"][0]) for e in entries] == [
        ("warn", "no space"),
        ("error", "spaced"),
        ("warn", "old"),
        ("log", "plain line"),
        ("log", "  info: indented"),
    ]
    assert not truncated


def test_pretty_format() -> None:
    text = format_pretty(
        _item(
            logs=[{"timestamp": 1, "level": "info", "message": ["served"]}],
            exceptions=[{"timestamp": 1, "name": "WasmTrap", "message": "RuntimeError: unreachable\n    at f (x.wasm[1]:0x1)"}],
            outcome="exception",
        )
    )
    head, *rest = text.splitlines()
    assert re.fullmatch(r"GET http://hello\.x/ - Exception Thrown @ \d{1,2}/\d{1,2}/\d{4}, \d{1,2}:\d{2}:\d{2} [AP]M", head)
    assert rest[0] == "  (info) served"
    assert rest[1] == "  WasmTrap: RuntimeError: unreachable"
    assert rest[2] == "    at f (x.wasm[1]:0x1)"


async def test_subscribers_get_live_items_with_their_filter(engine: Engine) -> None:
    engine.deploy("hello", fixture_module("hello"))
    engine.deploy("trap", fixture_module("trap"))
    everything = engine.subscribe()
    errors = engine.subscribe(TraceFilter(status="error"))
    await engine.request("http://hello.x/")
    await engine.request("http://trap.x/")
    await engine.request("http://ghost.x/")
    assert [i["outcome"] for i in everything.drain()] == ["ok", "exception", "scriptNotFound"]
    assert [i["scriptName"] for i in errors.drain()] == ["trap"]
    everything.close()
    errors.close()


async def test_a_slow_subscriber_never_slows_dispatch(engine: Engine) -> None:
    engine.deploy("hello", fixture_module("hello"))
    await engine.request("http://hello.x/")
    stuck = engine.subscribe(buffer=5)  # never read
    started = time.perf_counter()
    for _ in range(40):
        assert (await engine.request("http://hello.x/")).status == 200
    elapsed = time.perf_counter() - started
    assert stuck.pending() == 5
    assert stuck.dropped == 35
    assert stuck.take_dropped() == 35 and stuck.dropped == 0
    assert elapsed < 20  # sanity only: dispatch did not block on the full buffer
    stuck.close()


async def test_subscription_is_an_async_iterator(engine: Engine) -> None:
    engine.deploy("hello", fixture_module("hello"))
    received: list[dict] = []

    async def consume() -> None:
        with engine.subscribe(TraceFilter(worker="hello")) as subscription:
            async for item in subscription:
                received.append(item)
                if len(received) == 3:
                    return

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0)
    for _ in range(3):
        await engine.request("http://hello.x/")
    await asyncio.wait_for(consumer, 5)
    assert len(received) == 3


async def test_traces_are_persisted_in_batches_and_retained(db_path, wasmer_cache) -> None:
    async with Engine(db_path, cache_dir=wasmer_cache, trace_retention=25) as engine:
        engine.deploy("hello", fixture_module("hello"))
        for i in range(60):
            await engine.request(f"http://hello.x/?n={i}")
        await engine.flush_traces()
        assert engine.store.trace_count() == 25
        newest = engine.recent_traces(5)
        assert [item["event"]["request"]["url"] for item in newest] == [f"http://hello.x/?n={i}" for i in range(55, 60)]


def test_retention_setting_is_shared(engine: Engine) -> None:
    assert engine.trace_retention() == 10_000
    engine.set_trace_retention(500)
    assert engine.trace_retention() == 500
    with pytest.raises(InvalidInput):
        engine.set_trace_retention(0)


async def test_tail_history_then_live_across_engines(db_path, wasmer_cache) -> None:
    async with Engine(db_path, cache_dir=wasmer_cache) as producer, Engine(db_path, cache_dir=wasmer_cache) as watcher:
        producer.deploy("hello", fixture_module("hello"))
        producer.deploy("trap", fixture_module("trap"))
        await producer.request("http://hello.x/?old=1")
        await producer.request("http://trap.x/?old=2")
        await producer.flush_traces()
        seen: list[str] = []

        async def watch() -> None:
            async for item in watcher.tail(TraceFilter(worker="hello"), history=5, poll_interval=0.05):
                seen.append(item["event"]["request"]["url"])
                if len(seen) == 3:
                    return

        task = asyncio.create_task(watch())
        await asyncio.sleep(0.2)
        await producer.request("http://trap.x/?new=1")
        await producer.request("http://hello.x/?new=2")
        await producer.request("http://hello.x/?new=3")
        await producer.flush_traces()
        await asyncio.wait_for(task, 10)
        assert seen == ["http://hello.x/?old=1", "http://hello.x/?new=2", "http://hello.x/?new=3"]


async def test_tail_without_follow_returns_history_only(engine: Engine) -> None:
    engine.deploy("hello", fixture_module("hello"))
    for i in range(4):
        await engine.request(f"http://hello.x/?n={i}")
    await engine.flush_traces()
    items = [item async for item in engine.tail(history=3, follow=False)]
    assert [i["event"]["request"]["url"][-3:] for i in items] == ["n=1", "n=2", "n=3"]


async def test_flush_ends_under_steady_traffic(tmp_path) -> None:
    import asyncio

    from wasmdeck.engine.store import Store
    from wasmdeck.engine.trace_bus import TraceBus

    store = Store(tmp_path / "bus.db")
    bus = TraceBus(store, "test-origin")

    def item(n: int) -> dict:
        return new_item(script_name="w", namespace="default", outcome="ok", event_timestamp=n, cpu_time=0, wall_time=0,
                        url="http://w.x/", method="GET", headers=[], status=200)

    async def steady() -> None:
        n = 0
        while True:
            bus.publish(item(n))
            n += 1
            await asyncio.sleep(0.001)

    publisher = asyncio.ensure_future(steady())
    await asyncio.sleep(0.3)
    published = bus.published
    await asyncio.wait_for(bus.flush(), 5)  # returns although items keep coming
    assert store.trace_count() >= published
    publisher.cancel()
    await bus.close()
    store.close()

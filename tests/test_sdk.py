"""The guest SDKs (sdk/c/wasmdeck.h, sdk/zig/wasmdeck.zig) and the protocol example Workers,
run from their committed builds under a tiny protocol host (tests/protocol_driver.py): no engine.

Every SDK message is checked for both SDKs through the probe Workers (fixtures/protocol/
sdk-probe.c and sdk-probe-zig.zig, which behave the same); then each example Worker's
behaviour; then the C SDK's own unit tests (sdk/c/tests/json_test.c), built from source when
ziglang is installed. The committed builds are checked byte for byte against their sources
by tests/test_fixtures.py.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from wasmdeck.engine.metering import meter
from wasmdeck.engine.wasm_module import validate_worker_module

from .conftest import ROOT
from .protocol_driver import MAX_BODY, MAX_META, Driver, encode_frame

PROTOCOL = ROOT / "fixtures" / "protocol"
PROBES = {"c": PROTOCOL / "sdk-probe.wasm", "zig": PROTOCOL / "sdk-probe-zig.wasm"}
MARKERS = {1: "wasmdeck_worker_protocol_1", 2: "wasmdeck_worker_protocol_2"}
# version 1: one process per event; version 2: warm instances (docs/worker-protocol.md, section 9)
VERSION_2 = {"fetcher", "outbound-logger", "outbound-allowlist", "outbound-credential", "tail-collector",
             "dispatcher", "greeter", "sdk-probe", "sdk-probe-zig", "proto-hello", "proto-warm"}


class Probe(type(Path())):  # type: ignore[misc]
    """A probe module, and the protocol version the driver talks to it in: the probes are version 2
    builds, and the SDKs serve a version 1 engine (no init, one event) from the same build."""

    protocol_version: int


def module(name: str) -> Path:
    return PROTOCOL / f"{name}.wasm"


@pytest.fixture
async def driver(wasmer_cache: Path):
    instance = Driver(wasmer_cache)
    try:
        yield instance
    finally:
        await instance.close()


@pytest.fixture(params=[f"{sdk}-v{version}" for sdk in sorted(PROBES) for version in (1, 2)])
def probe(request) -> Path:
    sdk, version = request.param.split("-v")
    found = Probe(PROBES[sdk])
    found.protocol_version = int(version)
    return found


def is_zig(probe: Path) -> bool:
    return probe.name.endswith("-zig.wasm")


def result_of(exchange) -> dict:
    """The probe's report of its last call (the x-result header)."""
    return json.loads(exchange.header("x-result"))


def answer(status=200, headers=(), body=b"", **extra):
    def handler(request, request_body):
        return {"type": "fetch_result", "status": status, "headers": [list(h) for h in headers], **extra}, body

    return handler


def fail(name, message):
    def handler(request, request_body):
        return {"type": "fetch_error", "name": name, "message": message}, b""

    return handler


# -- the committed modules ------------------------------------------------------------------


def test_every_protocol_source_has_its_build_and_the_build_is_a_protocol_worker() -> None:
    sources = sorted(p.stem for p in [*PROTOCOL.glob("*.c"), *PROTOCOL.glob("*.zig")])
    builds = sorted(p.stem for p in PROTOCOL.glob("*.wasm"))
    assert sources == builds
    assert {"fetcher", "outbound-logger", "outbound-allowlist", "outbound-credential", "tail-collector",
            "dispatcher", "greeter", "proto-misbehave"} <= set(builds)
    assert VERSION_2 <= set(builds)
    for name in builds:
        data = module(name).read_bytes()
        info = validate_worker_module(data)  # WASI imports only, has _start
        exported = [export.name for export in info.exports]
        version = 2 if name in VERSION_2 else 1
        assert MARKERS[version] in exported and MARKERS[3 - version] not in exported, name
        assert "__stack_pointer" not in [export.name for export in info.exports], name
        meter(data)  # the engine can make it stoppable


# -- every SDK message, both SDKs -----------------------------------------------------------


async def test_fetch_event_round_trips_a_binary_body_and_headers(driver, probe) -> None:
    body = bytes(range(256)) * 64 + b"\0\r\n"
    headers = [
        ("X-Repeat", "one"),
        ("content-type", "application/octet-stream"),
        ("x-repeat", "two"),
        ("X-Ünïcode", "välue ✓ 😀"),
        ("x-quote", 'say "hi" \\ back\\slash\ttab'),
        ("x-empty", ""),
    ]
    exchange = await driver.fetch(
        probe, "PATCH", "https://Shop.Example.com:8443/a/b%20c?case=echo&status=299&q=1&q=%C3%A9+x&q=",
        headers, body, worker="shop", namespace="production",
    )
    assert exchange.frame_error is None and exchange.exit_code == 0, exchange
    assert exchange.final_type == "response" and exchange.response_status == 299
    assert exchange.response_body == body
    assert [tuple(h) for h in exchange.response_headers[: len(headers)]] == headers
    assert exchange.header("x-method") == "PATCH"
    assert exchange.header("x-path") == "/a/b%20c"
    assert exchange.header("x-host") == "shop.example.com"
    assert (exchange.header("x-worker"), exchange.header("x-namespace")) == ("shop", "production")
    assert (exchange.header("x-repeat-first"), exchange.header("x-repeat-second")) == ("one", "two")
    assert exchange.headers_named("x-query") == ["1", "é x", ""]
    assert [meta["type"] for meta, _ in exchange.frames] == ["response"]


async def test_short_reads_and_an_empty_body(driver, probe) -> None:
    body = bytes(range(256)) * 40
    exchange = await driver.fetch(probe, "POST", "https://w.example/?case=echo", [("a", "b")], body, chunk=977)
    assert exchange.response_body == body and exchange.response_status == 200
    exchange = await driver.fetch(probe, "GET", "https://w.example/?case=echo")
    assert exchange.response_body == b"" and exchange.response_status == 200


async def test_logs_at_every_level(driver, probe) -> None:
    exchange = await driver.fetch(probe, url="https://w.example/?case=logs")
    logs = exchange.logs
    assert logs[:5] == [("debug", "a debug line"), ("info", "an info line 42"), ("log", "a log line"),
                        ("warn", "a warn line"), ("error", "an error line")]
    # escapes, a control character, UTF-8 kept, an invalid byte sent as U+FFFD
    assert logs[5] == ("info", 'tricky: "quotes" \\ back\tslash\nnew line \x01 café 😀 bad\ufffd byte')
    assert logs[6] == ("log", "y" * 128 * 1024)  # cut to 128 KiB
    assert exchange.stderr == b"warn: a stderr line\n"  # stderr stays unframed
    assert exchange.final_type == "response" and exchange.response_body == b"logged"


async def test_fetch_call_and_fetch_result(driver, probe) -> None:
    origin_body = bytes(range(255, -1, -1))
    exchange = await driver.fetch(
        probe, "POST", "https://w.example/?case=fetch&n=3&url=https%3A%2F%2Fapi.example.com%2Fv1%3Fx%3D1",
        [("accept", "application/json"), ("X-Ü", "ü")], b"\x00payload\xff",
        on_fetch=answer(201, [("set-cookie", "a=1"), ("Set-Cookie", "b=2"), ("x-ü", "😀")], origin_body),
    )
    assert [meta for meta, _ in exchange.calls] == [
        {"type": "fetch", "id": i, "request": {"method": "POST", "url": "https://api.example.com/v1?x=1",
                                               "headers": [["accept", "application/json"], ["X-Ü", "ü"]]}}
        for i in (1, 2, 3)
    ]
    assert [body for _, body in exchange.calls] == [b"\x00payload\xff"] * 3
    report = result_of(exchange)
    assert report["ok"] is True and report["status"] == 201
    assert report["headers"] == [["set-cookie", "a=1"], ["Set-Cookie", "b=2"], ["x-ü", "😀"]]
    assert report["bodyLength"] == 256 and exchange.response_body == origin_body


async def test_fetch_error_is_an_answer_the_worker_can_handle(driver, probe) -> None:
    exchange = await driver.fetch(
        probe, url="https://w.example/?case=fetch&url=http%3A%2F%2Fo.test%2F",
        on_fetch=fail("TooManySubrequests", "this invocation may make at most 0 subrequests ✓"),
    )
    report = result_of(exchange)
    assert report["ok"] is False
    assert (report["errorName"], report["errorMessage"]) == (
        "TooManySubrequests", "this invocation may make at most 0 subrequests ✓")
    assert exchange.response_status == 200 and exchange.exit_code == 0
    assert exchange.calls[0][0]["request"]["method"] == "GET"


async def test_an_answer_with_the_wrong_id_or_type_is_a_protocol_error(driver, probe) -> None:
    def wrong_id(request, body):
        return {"type": "fetch_result", "id": 99, "status": 200, "headers": []}, b""

    def wrong_type(request, body):
        return {"type": "dispatch_result", "status": 200, "headers": []}, b""

    for handler in (wrong_id, wrong_type):
        exchange = await driver.fetch(probe, url="https://w.example/?case=fetch&url=http://o/", on_fetch=handler)
        report = result_of(exchange)
        assert report["ok"] is False
        assert report["errorName"] == "ProtocolError"


async def test_dispatch_call_shape_and_results(driver, probe) -> None:
    seen = []

    def on_dispatch(call, body):
        seen.append((call, body))
        return {"type": "dispatch_result", "outcome": "exceededCpu", "status": 503,
                "headers": [["content-type", "application/json"]]}, b'{"limit":"cpu"}'

    exchange = await driver.fetch(
        probe, url="https://w.example/?case=dispatch&name=customer-a&cpu=10&sub=5"
                   "&param=customer_name:customer-a&param=plan:pro%20plus",
        on_dispatch=on_dispatch,
    )
    assert seen == [({"type": "dispatch", "id": 1, "name": "customer-a",
                      "options": {"limits": {"cpuMs": 10, "subRequests": 5},
                                  "outbound": {"customer_name": "customer-a", "plan": "pro plus"}}}, b"")]
    report = result_of(exchange)
    assert (report["ok"], report["outcome"], report["status"]) == (True, "exceededCpu", 503)
    assert report["headers"] == [["content-type", "application/json"]]
    assert exchange.response_body == b'{"limit":"cpu"}'

    # no options at all, and a request of its own (its body in the frame body)
    seen.clear()
    exchange = await driver.fetch(probe, url="https://w.example/?case=dispatch&name=b&own=https%3A%2F%2Fb.example%2Fx",
                                  on_dispatch=on_dispatch)
    assert seen == [({"type": "dispatch", "id": 1, "name": "b",
                      "request": {"method": "PUT", "url": "https://b.example/x", "headers": [["x-own", "yes"]]}},
                     b"own body")]

    # only some limits
    seen.clear()
    await driver.fetch(probe, url="https://w.example/?case=dispatch&name=c&sub=0", on_dispatch=on_dispatch)
    assert seen[0][0]["options"] == {"limits": {"subRequests": 0}}

    # a refused call
    def refuse(call, body):
        return {"type": "dispatch_error", "name": "NotAllowed", "message": "only the dispatch Worker may dispatch"}, b""

    exchange = await driver.fetch(probe, url="https://w.example/?case=dispatch&name=c", on_dispatch=refuse)
    report = result_of(exchange)
    assert (report["ok"], report["errorName"], report["errorMessage"]) == (
        False, "NotAllowed", "only the dispatch Worker may dispatch")


TRACE_ITEMS = [
    {
        "scriptName": "shop",
        "outcome": "ok",
        "eventTimestamp": 1795766400000,
        "event": {"request": {"url": "https://shop.example.com/?q=\"x\"", "method": "GET",
                              "headers": {"user-agent": "tést/1.0 😀"}},
                  "response": {"status": 200}},
        "logs": [{"timestamp": 1795766400001, "level": "info",
                  "message": ["line with \"quotes\", \\backslash, tab\t, nl\n, ctl\x01\x1f, é, 😀, \u2028"]}],
        "exceptions": [],
        "subrequests": [{"url": "https://api.example.com/", "method": "GET", "status": 200, "durationMs": 1.5,
                         "via": "network"}],
        "cpuTime": 0.25,
        "truncated": False,
        "scriptTags": None,
    },
    {
        "scriptName": "späti",
        "outcome": "exception",
        "eventTimestamp": 1795766400002,
        "event": {"request": {"url": "https://späti.example.com/", "method": "POST", "headers": {}}},
        "logs": [],
        "exceptions": [{"timestamp": 1795766400003, "name": "TypeError", "message": "x is \"undefined\""}],
        "nested": [[[[{"deep": [1, -2.5, 1e-7, 12345678901234]}]]]],
    },
]


async def test_tail_event_walks_the_items_and_answers_done(driver, probe) -> None:
    exchange = await driver.tail(probe, TRACE_ITEMS)
    assert exchange.final == ({"type": "done"}, b"") and exchange.exit_code == 0
    messages = [message for _, message in exchange.logs]
    assert messages[0] == "count 2 items 2"
    assert messages[1] == ('item 0 shop ok status=200 log=line with "quotes", \\backslash, tab\t, nl\n, '
                           "ctl\x01\x1f, é, 😀, \u2028")
    assert messages[3] == "item 1 späti exception status=-1 log=-"
    # each item serialised back by the SDK is the item that was sent
    round_tripped = [json.loads(m.removeprefix("json ")) for m in messages if m.startswith("json ")]
    assert round_tripped == TRACE_ITEMS
    # the same items sent as raw UTF-8 instead of \u escapes
    raw = json.dumps(TRACE_ITEMS, ensure_ascii=False).encode()
    exchange = await driver.run(probe, {"type": "tail", "protocol": 1, "count": 2}, raw)
    assert [json.loads(m.removeprefix("json ")) for _, m in exchange.logs if m.startswith("json ")] == TRACE_ITEMS


async def test_a_tail_body_that_is_not_json(driver, probe) -> None:
    exchange = await driver.run(probe, {"type": "tail", "protocol": 1, "count": 1}, b"[{not json")
    assert exchange.final_type == "done"
    assert exchange.logs[0][0] == "error" and exchange.logs[0][1].startswith("bad batch: ")


async def test_exception_frame(driver, probe) -> None:
    exchange = await driver.fetch(probe, url="https://w.example/?case=throw")
    thrown = {"type": "exception", "name": "BadThing", "message": 'it broke: café "quoted"'}
    if probe.protocol_version == 2:
        thrown["retire"] = True  # throw exits the process: the instance says it retires
    assert exchange.frames == [(thrown, b"")]
    assert exchange.exit_code == 0


async def test_a_bad_status_becomes_an_exception(driver, probe) -> None:
    exchange = await driver.fetch(probe, url="https://w.example/?case=status")
    assert exchange.final[0]["type"] == "exception" and exchange.final[0]["name"] == "InvalidResponse"
    assert "42" in exchange.final[0]["message"]


async def test_a_zig_handler_error_becomes_an_exception(driver) -> None:
    exchange = await driver.fetch(PROBES["zig"], url="https://w.example/?case=error")
    assert exchange.final[0] == {"type": "exception", "name": "SomethingWrong",
                                 "message": "the fetch handler failed: error.SomethingWrong"}


async def test_the_sdk_never_sends_a_frame_over_the_limits(driver, probe) -> None:
    # a response body of 10 MiB + 1: refused, replaced by an exception
    exchange = await driver.fetch(probe, url="https://w.example/?case=oversize&what=body")
    assert exchange.frame_error is None
    assert [meta["type"] for meta, _ in exchange.frames] == ["exception"]
    assert exchange.final[0]["name"] == "ResponseTooLarge"
    assert f"{MAX_BODY + 1} bytes is over the {MAX_BODY}-byte frame limit" in exchange.final[0]["message"]
    # exactly 10 MiB is allowed
    exchange = await driver.fetch(probe, url="https://w.example/?case=oversize&what=exact")
    assert exchange.response_status == 200 and exchange.response_body == b"z" * MAX_BODY
    # headers that make the meta over 1 MiB
    exchange = await driver.fetch(probe, url="https://w.example/?case=oversize&what=headers")
    assert exchange.frame_error is None and exchange.final[0]["name"] == "ResponseTooLarge"
    assert str(MAX_META) in exchange.final[0]["message"]
    # a fetch whose body is too big: nothing is sent, the Worker gets an error and answers
    exchange = await driver.fetch(probe, url="https://w.example/?case=oversize&what=fetch")
    assert exchange.calls == []
    report = result_of(exchange)
    assert report["ok"] is False
    assert report["errorName"] == ("FrameTooLarge" if is_zig(probe) else "RequestTooLarge")
    # the raw frame writer refuses too
    exchange = await driver.fetch(probe, url="https://w.example/?case=oversize&what=frame")
    assert exchange.response_body in (b"frame error FrameTooLarge",
                                      f"frame rc -2: frame body of {MAX_BODY + 1} bytes is over the "
                                      f"{MAX_BODY}-byte limit".encode())


async def test_nothing_is_sent_after_the_final_frame(driver, probe) -> None:
    exchange = await driver.fetch(probe, url="https://w.example/?case=state")
    assert [meta["type"] for meta, _ in exchange.frames] == ["response"]
    assert exchange.response_status == 201 and exchange.response_body == b"answered early"
    assert exchange.after_final == [] and exchange.calls == []
    stderr = exchange.stderr.decode()
    if is_zig(probe):
        assert stderr.count("error.InvalidState") == 3, stderr
    else:
        assert "respond again -5" in stderr and "log after response -5" in stderr
        assert "fetch after response -5 InvalidState" in stderr


async def test_events_the_worker_cannot_handle(driver, probe) -> None:
    exchange = await driver.run(probe, {"type": "bogus", "protocol": 1})
    assert exchange.final[0]["name"] == "UnknownEvent" and "bogus" in exchange.final[0]["message"]
    # a broken event frame: nothing on stdout, a reason on stderr, exit status 1
    for raw in (encode_frame(b"not json"), encode_frame(b'{"no":"type"}'), b"\0\0\x20\0\0\0\0\0"):
        exchange = await driver.run(probe, {}, raw_event=raw)
        assert exchange.frames == [] and exchange.exit_code == 1, raw
        assert b"could not read the event frame" in exchange.stderr


async def test_a_missing_handler_answers_no_handler(driver) -> None:
    for worker in ("fetcher", "greeter"):
        exchange = await driver.tail(module(worker), [])
        assert exchange.final[0]["type"] == "exception" and exchange.final[0]["name"] == "NoHandler"


JSON_VALID = [
    "plain",
    "",
    'quote " backslash \\ slash / controls \b\f\n\r\t \x00 \x01 \x1f \x7f',
    "é ü ß Ω € ✓ \u2028\u2029 \ufeff \uffff",
    "astral 😀 𝄞 🇩🇪 \U0010ffff",
    "".join(chr(c) for c in range(1, 0x800, 7)),
    "x" * 70_000,
    0, -0.0, 1, -1, 0.5, 1e-7, 1.5e300, -2.25e-300, 12345678901234, 2**53, 3.141592653589793,
    True, False, None,
    [], {}, [[[]]], {"": {"": []}},
    [1, "two", [3.5, {"four": None}], True],
    {"é": "ü", "😀": ["😀"], "a\nb": {"c\"d": "e\\f"}},
    [{"scriptName": "a", "logs": [{"message": ["m"]}]}] * 20,
]

JSON_INVALID = [
    "", " ", "01", "1.", ".5", "-", "+1", "1e", "NaN", "Infinity", "[1,]", "[1 2]", "{\"a\":1,}",
    "{a:1}", "'x'", "\"\\x\"", "\"\\u12\"", "\"tab\there\"", "\"abc", "tru", "nul", "[", "{} {}",
    "[1] x", "{\"a\" 1}",
]


def as_numbers(value):
    """JSON has one number type: compare numbers as doubles (Zig writes 1.5e300 as 15 and 299 zeros)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        return [as_numbers(v) for v in value]
    return {k: as_numbers(v) for k, v in value.items()}


async def test_json_round_trips_through_each_sdk(driver, probe) -> None:
    texts = []
    for value in JSON_VALID:
        texts.append(json.dumps(value).encode())  # \u escapes, surrogate pairs
        texts.append(json.dumps(value, ensure_ascii=False).encode())  # raw UTF-8
    for text in JSON_INVALID:
        texts.append(text.encode())
    body = b"".join(b"%d\n%s" % (len(text), text) for text in texts)
    exchange = await driver.fetch(probe, "POST", "https://w.example/?case=json", body=body)
    lines = exchange.response_body.decode().split("\n")[:-1]
    assert len(lines) == len(texts)
    valid = len(JSON_VALID) * 2
    for index, (text, line) in enumerate(zip(texts, lines)):
        if index < valid:
            assert line.startswith("ok "), (text[:80], line[:200])
            assert as_numbers(json.loads(line[3:])) == as_numbers(json.loads(text)), text[:80]
        else:
            assert line.startswith("error "), (text, line)


async def test_lone_surrogates(driver, probe) -> None:
    text = b'"a\\ud800b\\udc00c"'
    exchange = await driver.fetch(probe, "POST", "https://w.example/?case=json", body=b"%d\n%s" % (len(text), text))
    line = exchange.response_body.decode().rstrip("\n")
    if is_zig(probe):
        assert line.startswith("error ")  # std.json refuses unpaired surrogates
    else:
        assert json.loads(line[3:]) == "a\ufffdb\ufffdc"  # the C SDK reads each as U+FFFD


URL_MATCHES = [  # (url, list, matches, port)
    ("https://api.example.com/x", "api.example.com", 1, 443),
    ("https://API.Example.com/x", "api.EXAMPLE.com", 1, 443),
    ("https://api.example.com.evil/x", "api.example.com", 0, 443),
    ("https://a.b.example.com/", "*.example.com", 1, 443),
    ("https://example.com/", "*.example.com", 0, 443),
    ("https://badexample.com/", "*.example.com", 0, 443),
    ("http://anything.test:81/", "*", 1, 81),
    ("http://127.0.0.1:81/", "*", 1, 81),
    ("http://127.0.0.1/", "*.0.0.1", 0, 80),
    ("https://u:p@api.example.com:8443/", "api.example.com:8443", 1, 8443),
    ("https://api.example.com/", "api.example.com:8443", 0, 443),
    ("https://api.example.com/", "api.example.com:443", 1, 443),
    ("http://[::1]:8080/", "[::1]:8080", 1, 8080),
    ("http://[::1]:8080/", "[::1]:80", 0, 8080),
    ("http://127.0.0.1:5000/", "api.example.com, 127.0.0.1 ,*.trusted.example", 1, 5000),
    ("http://x.trusted.example/", "api.example.com,*.trusted.example", 1, 80),
    ("http://trusted.example/", "api.example.com,*.trusted.example", 0, 80),
    ("http://a/", "", 0, 80),
    ("http://a/", " , ,", 0, 80),
    ("ftp://a/", "a", 1, 0),
    ("not a url", "*", 0, 0),
]


async def test_url_patterns_for_outbound_workers(driver, probe) -> None:
    for url, patterns, matches, port in URL_MATCHES:
        exchange = await driver.fetch(probe, "POST", "https://w.example/?case=match&list=" + quote(patterns, safe=""),
                                      body=url.encode())
        assert exchange.response_body == f"{matches} {port}\n".encode(), (url, patterns)


# -- the example Workers --------------------------------------------------------------------


async def test_fetcher(driver) -> None:
    calls = []

    def on_fetch(request, body):
        calls.append((request, body))
        if len(calls) == 2:
            return {"type": "fetch_error", "name": "TooManySubrequests", "message": "at most 1"}, b""
        return {"type": "fetch_result", "status": 200, "headers": []}, b"origin says hi " + b"x" * 300

    exchange = await driver.fetch(
        module("fetcher"), "PUT",
        "https://f.example/?url=https%3A%2F%2Fo.example%2Fp&count=3&method=POST&header=X-A:1&header=X-B:%20two",
        body=b"payload", on_fetch=on_fetch,
    )
    assert exchange.response_status == 200 and exchange.header("content-type") == "text/plain"
    assert [request for request, _ in calls] == [
        {"method": "POST", "url": "https://o.example/p", "headers": [["X-A", "1"], ["X-B", "two"]]}] * 3
    assert [body for _, body in calls] == [b"payload"] * 3
    lines = exchange.response_body.decode().split("\n")
    assert lines[:3] == ["1 200 315", "2 error TooManySubrequests: at most 1", "3 200 315"]
    assert lines[3] == "body: " + ("origin says hi " + "x" * 300)[:200]
    assert [level for level, _ in exchange.logs] == ["info"] * 3
    assert exchange.logs[1][1] == "fetch 2/3 POST https://o.example/p -> TooManySubrequests: at most 1"

    exchange = await driver.fetch(module("fetcher"), url="https://f.example/")
    assert exchange.response_status == 400 and exchange.calls == []
    exchange = await driver.fetch(module("fetcher"), url="https://f.example/?url=http://o/", on_fetch=answer(204))
    assert exchange.response_body == b"1 204 0\nbody: \n"
    assert exchange.calls[0][0]["request"]["method"] == "GET"
    quiet = await driver.fetch(module("fetcher"), url="https://f.example/?quiet&count=2&url=http://o/", on_fetch=answer(204))
    assert quiet.response_body == b"1 204 0\n2 204 0\nbody: \n" and quiet.logs == [] and len(quiet.calls) == 2


async def test_outbound_logger(driver) -> None:
    exchange = await driver.fetch(
        module("outbound-logger"), "POST", "https://api.example.com/v1?x=1", [("x-h", "v")], b"\x01\x02",
        env={"customer_name": "acme"},
        on_fetch=answer(418, [("x-origin", "1"), ("x-origin", "2")], b"\xff teapot"),
    )
    assert exchange.logs == [("info", "subrequest POST https://api.example.com/v1?x=1 customer=acme")]
    assert exchange.calls == [({"type": "fetch", "id": 1, "request": {
        "method": "POST", "url": "https://api.example.com/v1?x=1", "headers": [["x-h", "v"]]}}, b"\x01\x02")]
    assert exchange.response_status == 418
    assert exchange.response_headers == [["x-origin", "1"], ["x-origin", "2"]]
    assert exchange.response_body == b"\xff teapot"

    exchange = await driver.fetch(module("outbound-logger"), url="https://down.example/",
                                  on_fetch=fail("NetworkError", "connection refused"))
    assert exchange.logs == [("info", "subrequest GET https://down.example/ customer=")]
    assert exchange.response_status == 502 and exchange.response_body == b"NetworkError: connection refused"


async def test_outbound_allowlist(driver) -> None:
    env = {"ALLOWED_HOSTS": "api.example.com, *.trusted.example,127.0.0.1:8080"}
    worker = module("outbound-allowlist")
    for url in ("https://evil.example/x", "https://trusted.example/", "http://127.0.0.1:9090/", "https://API.example.com.evil/"):
        exchange = await driver.fetch(worker, url=url, env=env, on_fetch=answer(200))
        host = url.split("/")[2].split(":")[0].lower()
        assert exchange.response_status == 403 and exchange.calls == [], url
        assert exchange.response_body == f"blocked by outbound allow list: {host}".encode()
        assert exchange.header("content-type") == "text/plain"
    for url in ("https://API.example.com/v1", "https://a.b.trusted.example/", "http://127.0.0.1:8080/x"):
        exchange = await driver.fetch(worker, url=url, env=env, on_fetch=answer(200, body=b"ok"))
        assert exchange.response_status == 200 and exchange.response_body == b"ok", url
        assert exchange.calls[0][0]["request"]["url"] == url
    exchange = await driver.fetch(worker, url="https://api.example.com/", on_fetch=answer(200))
    assert exchange.response_status == 403  # no ALLOWED_HOSTS: nothing is allowed


async def test_outbound_credential(driver) -> None:
    worker = module("outbound-credential")
    env = {"API_TOKEN": "s3cret", "customer_name": "acme", "BLOCKED_HOSTS": "evil.example.com,*.bad.example"}
    exchange = await driver.fetch(
        worker, "POST", "https://api.example.com/v1", [("authorization", "Bearer user-tries"), ("accept", "*/*")],
        b"body", env=env, on_fetch=answer(200, [("content-type", "text/plain")], b"secret data"),
    )
    request = exchange.calls[0][0]["request"]
    assert request["headers"] == [["accept", "*/*"], ["Authorization", "Bearer s3cret"], ["X-Customer", "acme"]]
    assert exchange.calls[0][1] == b"body"
    assert exchange.response_status == 200 and exchange.response_body == b"secret data"
    assert "s3cret" not in json.dumps(exchange.logs) + exchange.response_body.decode()
    for url in ("https://evil.example.com/", "https://x.bad.example/"):
        exchange = await driver.fetch(worker, url=url, env=env, on_fetch=answer(200))
        assert exchange.response_status == 403 and exchange.calls == []
        assert exchange.response_body.startswith(b"blocked by outbound credential policy: ")
    exchange = await driver.fetch(worker, url="https://api.example.com/", on_fetch=answer(200))
    assert exchange.calls[0][0]["request"]["headers"] == []  # no token, no customer: nothing added


async def test_tail_collector(driver) -> None:
    worker = module("tail-collector")
    exchange = await driver.tail(worker, TRACE_ITEMS)
    assert exchange.logs == [("info", "tail shop ok 200"), ("info", "tail späti exception -")]
    assert exchange.final_type == "done" and exchange.calls == []

    exchange = await driver.tail(worker, TRACE_ITEMS, env={"TAIL_SINK_URL": "http://127.0.0.1:9/sink"},
                                 on_fetch=answer(204))
    (call, body), = exchange.calls
    assert call["request"] == {"method": "POST", "url": "http://127.0.0.1:9/sink",
                               "headers": [["content-type", "application/json"]]}
    assert body == json.dumps(TRACE_ITEMS).encode()  # the raw batch, as it came
    assert exchange.logs[-1] == ("info", "sink http://127.0.0.1:9/sink answered 204")

    exchange = await driver.tail(worker, TRACE_ITEMS, env={"TAIL_FAIL": "1"})
    assert len(exchange.logs) == 2
    assert exchange.final[0]["type"] == "exception" and exchange.final[0]["name"] == "TailFailed"

    exchange = await driver.fetch(worker)
    assert exchange.response_status == 200 and exchange.response_body == b"tail collector"


async def test_dispatcher(driver) -> None:
    worker = module("dispatcher")
    exchange = await driver.fetch(worker, url="https://anything.example.com/__dispatcher/health")
    assert (exchange.response_status, exchange.response_body, exchange.calls) == (200, b"dispatcher ok", [])

    def outcome(name, status=200, headers=(), body=b""):
        def handler(call, request_body):
            return {"type": "dispatch_result", "outcome": name, "status": status,
                    "headers": [list(h) for h in headers]}, body
        return handler

    exchange = await driver.fetch(worker, "POST", "https://Tenant-A.example.com/cart", body=b"b",
                                  env={"CPU_MS": "50", "SUB_REQUESTS": "3"},
                                  on_dispatch=outcome("ok", 201, [("content-type", "text/html")], b"<p>hi</p>"))
    assert exchange.calls == [({"type": "dispatch", "id": 1, "name": "tenant-a", "options": {
        "limits": {"cpuMs": 50, "subRequests": 3}, "outbound": {"customer_name": "tenant-a"}}}, b"")]
    assert exchange.response_status == 201 and exchange.response_body == b"<p>hi</p>"
    assert exchange.response_headers == [["content-type", "text/html"], ["X-Dispatched-By", "dispatcher"]]

    exchange = await driver.fetch(worker, url="https://nobody.example.com/",
                                  on_dispatch=outcome("scriptNotFound", 404, body=b"Worker not found"))
    assert exchange.calls[0][0]["options"] == {"outbound": {"customer_name": "nobody"}}  # no limits set
    assert (exchange.response_status, exchange.response_body) == (404, b"no such tenant: nobody")

    for name in ("exceededCpu", "exceededMemory", "exceededWallTime"):
        exchange = await driver.fetch(worker, url="https://spinner.example.com/", on_dispatch=outcome(name, 503))
        assert exchange.response_status == 503 and exchange.header("content-type") == "application/json"
        assert json.loads(exchange.response_body) == {"error": "tenant limit", "outcome": name, "tenant": "spinner"}

    exchange = await driver.fetch(worker, url="https://crash.example.com/", on_dispatch=outcome("exception", 500, body=b"boom"))
    assert exchange.response_status == 500 and exchange.header("x-dispatched-by") == "dispatcher"

    exchange = await driver.fetch(worker, url="https://x.example.com/")  # the driver refuses: NotAllowed
    assert exchange.response_status == 502 and exchange.response_body.startswith(b"dispatch failed: NotAllowed: ")


async def test_greeter(driver) -> None:
    exchange = await driver.fetch(module("greeter"), "DELETE", "https://g.example/some/path?x=1")
    assert exchange.response_status == 200 and exchange.header("content-type") == "text/plain"
    assert exchange.response_body == b"hello from zig: DELETE /some/path"
    assert exchange.logs == [("info", "greeting DELETE /some/path")]
    exchange = await driver.fetch(module("greeter"), url="https://g.example/?fetch=https%3A%2F%2Fo.example%2F",
                                  on_fetch=answer(404))
    assert exchange.response_body == b"hello from zig: GET /\nfetch https://o.example/: 404"
    exchange = await driver.fetch(module("greeter"), url="https://g.example/?fetch=https%3A%2F%2Fo.example%2F",
                                  on_fetch=fail("EgressBlocked", "not allowed"))
    assert exchange.response_body.endswith(b"\nfetch https://o.example/: error EgressBlocked: not allowed")


async def test_proto_misbehave_breaks_the_protocol_as_documented(driver) -> None:
    worker = module("proto-misbehave")

    async def run(mode, **options):
        return await driver.fetch(worker, url=f"https://m.example/?mode={mode}", **options)

    for mode, error in [("garbage", "frame over the limits"), ("oversize-meta", "meta 2097152 bytes"),
                        ("oversize-body", "body 11534336 bytes"), ("bad-json", "not JSON"),
                        ("unknown-type", "unknown frame type 'bogus'")]:
        exchange = await run(mode, timeout=5)
        assert exchange.frame_error and error in exchange.frame_error, (mode, exchange.frame_error)
    exchange = await run("no-final")
    assert (exchange.frames, exchange.exit_code) == ([], 0)
    exchange = await run("close-stdout")
    assert (exchange.frames, exchange.exit_code) == ([], 0)  # stdout ended; it exits once stdin closes
    exchange = await run("log-after-response")
    assert exchange.final_type == "response" and [m["type"] for m, _ in exchange.after_final] == ["log"]
    exchange = await run("exception")
    assert exchange.final[0] == {"type": "exception", "name": "BadThing", "message": "it broke"}
    exchange = await run("exit1")
    assert (exchange.frames, exchange.exit_code) == ([], 1)
    exchange = await run("trap")
    assert exchange.frames == [] and exchange.trap and "EXECUTION_ERROR" in exchange.trap
    exchange = await run("hang", timeout=0.5)
    assert exchange.frames == [] and (exchange.timed_out or exchange.reason == "timeout")
    exchange = await run("many-logs")
    assert len(exchange.logs) == 1000 and exchange.logs[-1] == ("info", "log line 1000 of 1000")
    assert exchange.response_status == 200
    exchange = await run("big-response")
    assert exchange.response_status == 200 and exchange.response_body == b"x" * (5 * 1024 * 1024)
    exchange = await driver.fetch(worker, url="https://m.example/?mode=sleep-fetches&count=2&url=http%3A%2F%2Fo%2F",
                                  on_fetch=answer(200))
    assert len(exchange.calls) == 2 and exchange.response_body == b"1 200\n2 200\n2 fetches\n"
    exchange = await run("nope")
    assert exchange.response_status == 400 and b"modes: garbage" in exchange.response_body


# -- the C SDK's unit tests, built from source ----------------------------------------------


@pytest.mark.timeout(300)  # the first C build on a machine compiles wasi-libc
async def test_c_sdk_unit_tests(tmp_path: Path, wasmer_cache: Path) -> None:
    if importlib.util.find_spec("ziglang") is None:
        pytest.skip("ziglang is not installed (pip install -e '.[dev]')")
    out = tmp_path / "json_test.wasm"
    build = subprocess.run(
        [sys.executable, "-m", "ziglang", "cc", "-target", "wasm32-wasi", "-O2", "-Wall", "-Wextra", "-Werror",
         "-Wpedantic", "-std=c99", "-I..", "-o", str(out), "json_test.c"],
        cwd=ROOT / "sdk" / "c" / "tests", capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr
    from wasmer_sdk import Wasmer

    async with Wasmer(cache_root=wasmer_cache) as wasmer:
        package = await wasmer.packages.load(out.read_bytes())
        sandbox = await wasmer.sandboxes.create(packages=[package])
        try:
            output = await sandbox.command(package).run(timeout=30, check=False)
        finally:
            await sandbox.close()
    text = output.stdout.text()
    assert output.exit_code == 0, text
    assert text.rstrip().endswith(", 0 failed") and int(text.split()[-4]) >= 100, text


# -- version 2: one instance, many events ---------------------------------------------------


@pytest.fixture(params=sorted(PROBES))
def warm_probe(request) -> Path:
    return PROBES[request.param]


async def test_an_instance_answers_init_with_ready_and_serves_event_after_event(driver, warm_probe) -> None:
    instance, ready = await driver.instance(warm_probe, env={"customer_name": "from-the-process"})
    assert ready == ({"type": "ready"}, b"")
    bodies = []
    for number, env in ((1, {"customer_name": "acme"}), (2, {}), (3, {"customer_name": "globex"})):
        exchange = await instance.fetch("https://w.example/?case=instance", env=env)
        assert exchange.final_type == "response" and "retire" not in exchange.final[0], exchange
        bodies.append(exchange.response_body.decode())
    # the invocation number the engine sent; global state (the count of events served) lives on;
    # a per-invocation env value wins over the process environment and is gone after its event
    assert bodies == [
        "invocation 1 served 1 env acme\n",
        "invocation 2 served 2 env from-the-process\n",
        "invocation 3 served 3 env globex\n",
    ]
    assert await instance.close() == (0, "exited")  # end of input: the instance exits 0


async def test_an_instance_that_retires_says_so_in_its_final_frame_and_exits(driver, warm_probe) -> None:
    instance, _ = await driver.instance(warm_probe)
    first = await instance.fetch("https://w.example/?case=instance")
    assert "retire" not in first.final[0]
    last = await instance.fetch("https://w.example/?case=instance&retire=1")
    assert last.final[0]["retire"] is True and last.response_body.startswith(b"invocation 2 served 2")
    assert await instance.wait() == (0, "exited")  # without waiting for stdin to close


async def test_answers_to_calls_of_an_earlier_event_are_skipped(driver, warm_probe) -> None:
    instance, _ = await driver.instance(warm_probe)
    await instance.fetch("https://w.example/?case=instance")
    # an answer to a call that was in flight when the last event ended (section 9.3) arrives first
    await instance.write(encode_frame({"type": "fetch_result", "id": 99, "status": 200, "headers": []}, b"late"))
    await instance.write(encode_frame({"type": "sleep_error", "id": 98, "name": "TooManyCalls", "message": ""}))
    exchange = await instance.fetch("https://w.example/?case=instance")
    assert exchange.response_body.startswith(b"invocation 2 served 2"), exchange
    assert await instance.close() == (0, "exited")


async def test_a_thrown_exception_retires_a_c_instance_and_a_zig_handler_error_does_not(driver) -> None:
    c_instance, _ = await driver.instance(PROBES["c"])
    thrown = await c_instance.fetch("https://w.example/?case=throw")
    assert thrown.final[0]["type"] == "exception" and thrown.final[0]["retire"] is True
    assert await c_instance.wait() == (0, "exited")  # C cannot unwind to the serve loop: it exits
    zig_instance, _ = await driver.instance(PROBES["zig"])
    failed = await zig_instance.fetch("https://w.example/?case=error")
    assert failed.final[0] == {"type": "exception", "name": "SomethingWrong",
                               "message": "the fetch handler failed: error.SomethingWrong"}
    after = await zig_instance.fetch("https://w.example/?case=instance")
    assert after.response_body.startswith(b"invocation 2 served 2")
    assert await zig_instance.close() == (0, "exited")


async def test_an_instance_that_gets_no_init_serves_one_event_as_version_1(driver, warm_probe) -> None:
    exchange = await driver.fetch(warm_probe, url="https://w.example/?case=instance", version=1, env={"customer_name": "v1"})
    assert exchange.response_body == b"invocation 1 served 1 env v1\n" and exchange.exit_code == 0
    assert exchange.init_frames == []


async def test_a_broken_init_or_event_frame_is_refused_on_stderr(driver, warm_probe) -> None:
    instance, ready = await driver.instance(warm_probe)
    await instance.write(encode_frame(b"not json"))
    assert await instance.wait() == (1, "exited")
    assert b"could not read the event frame" in bytes(instance.stderr)

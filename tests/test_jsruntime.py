"""wasmdeck's JavaScript runtime (engine/runtimes/javascript.wasm) on its own, driven over the Worker
protocol version 2 by tests/js_driver.py: init and deploy-time checks, invocations on one warm
instance, calls that overlap, timers through `sleep`, waitUntil, exceptions, bindings, limits."""

from __future__ import annotations

import asyncio
import json
import resource
import time
from pathlib import Path

import pytest

from tests.js_driver import RUNTIME, JsDriver, ProtocolError
from wasmdeck.engine.metering import meter
from wasmdeck.engine.protocol import encode
from wasmdeck.engine.wasm_module import cap_memory, memory_limit_pages, validate_worker_module


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jsruntime-cache")


@pytest.fixture
async def driver(cache_root: Path):
    async with JsDriver(cache_root) as d:
        yield d


def ok_fetch(body: bytes = b"upstream", status: int = 200, headers=(("content-type", "text/plain"),)):
    def handler(request, request_body):
        return {"type": "fetch_result", "status": status, "headers": [list(h) for h in headers]}, body
    return handler


HELLO = "export default { fetch(request) { return new Response('hello ' + new URL(request.url).pathname) } }"


# ---- the module ----

def test_module_is_a_version_2_worker_importing_only_wasi() -> None:
    info = validate_worker_module(RUNTIME.read_bytes())
    exports = {export.name for export in info.exports}
    assert {"_start", "wasmdeck_worker_protocol_2", "memory"} <= exports
    assert {i.module for i in info.imports} == {"wasi_snapshot_preview1"}
    assert [name for name, _ in info.custom_sections] == ["name"]


# ---- init ----

async def test_module_form_is_detected_and_served_many_times(driver: JsDriver) -> None:
    instance = await driver.spawn()
    ready = await instance.init(HELLO)
    assert ready.final == {"type": "ready", "format": "module", "handlers": ["fetch"]}
    for path in ("/a", "/b", "/c"):
        result = await instance.fetch(url=f"https://w.example{path}")
        assert (result.status, result.text) == (200, f"hello {path}")
        assert result.header("content-type") == "text/plain;charset=UTF-8"
    assert await instance.close() == 0


async def test_service_worker_form_is_detected(driver: JsDriver) -> None:
    instance = await driver.spawn()
    ready = await instance.init("addEventListener('fetch', (event) => event.respondWith(new Response('sw')));")
    assert ready.final["format"] == "service-worker"
    assert (await instance.fetch()).text == "sw"


async def test_check_mode_reports_and_exits_without_serving(driver: JsDriver) -> None:
    instance = await driver.spawn()
    result = await instance.init("export default { fetch() {}, tail() {} }", check=True)
    assert result.final == {"type": "ready", "format": "module", "handlers": ["fetch", "tail"], "retire": True}
    assert await instance.wait_exit() == 0


async def test_syntax_error_is_reported_with_line_and_column(driver: JsDriver) -> None:
    instance = await driver.spawn()
    result = await instance.init("export default {\n  fetch() {\n    return new Response(;\n  }\n}", check=True,
                                 filename="shop.js")
    assert result.type == "exception"
    assert result.final["name"] == "SyntaxError"
    assert (result.final["line"], result.final["column"]) == (3, 25)
    assert "shop.js:3:25" in result.final["message"]
    assert result.final["retire"] is True
    assert await instance.wait_exit() == 0


@pytest.mark.parametrize(("source", "reason"), [
    ("export const x = 1;", "it has no default export"),
    ("export default { hello() {} }", "its default export has no fetch() or tail() method"),
    ("const x = 1;", "it never calls addEventListener"),
])
async def test_a_script_with_no_handler_is_refused(driver: JsDriver, source: str, reason: str) -> None:
    instance = await driver.spawn()
    result = await instance.init(source, check=True)
    assert result.type == "exception"
    assert result.final["message"].startswith("The Worker has no handler")
    assert reason in result.final["message"]


async def test_imports_are_refused_with_advice_to_bundle(driver: JsDriver) -> None:
    instance = await driver.spawn()
    result = await instance.init("import { helper } from './helper.js';\nexport default { fetch() { return helper() } }")
    assert result.type == "exception"
    assert result.final["message"].startswith("import of './helper.js' is not supported: a Worker is one file, so bundle")
    assert "esbuild" in result.final["message"]
    dynamic = await driver.start(
        "export default { async fetch() { try { await import('node:fs'); return new Response('imported') }"
        " catch (e) { return new Response(e.message, { status: 500 }) } } }")
    result = await dynamic.fetch()
    assert result.status == 500 and result.text.startswith("import of 'node:fs' is not supported")


async def test_a_script_that_throws_at_top_level_answers_init_with_an_exception(driver: JsDriver) -> None:
    instance = await driver.spawn()
    result = await instance.init("function setup() { throw new RangeError('bad config') }\nsetup();\nexport default { fetch() {} }")
    assert result.type == "exception"
    assert (result.final["name"], result.final["message"]) == ("RangeError", "bad config")
    assert result.final["stack"].startswith("RangeError: bad config\n    at setup (worker.js:1:")
    assert await instance.wait_exit() == 0


async def test_io_and_randomness_at_global_scope_are_refused(driver: JsDriver) -> None:
    for statement in ("await fetch('https://x.example/')", "setTimeout(() => {}, 1)", "crypto.randomUUID()"):
        instance = await driver.spawn()
        result = await instance.init(f"{statement};\nexport default {{ fetch() {{}} }}")
        assert result.type == "exception", statement
        assert result.final["message"].startswith("Disallowed operation called within global scope")


async def test_a_top_level_await_that_never_settles_fails_init(driver: JsDriver) -> None:
    instance = await driver.spawn()
    result = await instance.init("await new Promise(() => {});\nexport default { fetch() {} }")
    assert result.type == "exception"
    assert "can never settle" in result.final["message"]


async def test_source_that_is_not_utf8_or_not_javascript_is_refused(driver: JsDriver) -> None:
    instance = await driver.spawn()
    result = await instance.init(b"export default {}\xff\xfe")
    assert result.final["message"] == "The Worker's source is not valid UTF-8."
    instance = await driver.spawn()
    result = await instance.init(HELLO, language="python")
    assert result.final["message"] == 'This runtime runs JavaScript Workers, not "python".'


# ---- invocations ----

async def test_global_state_lives_on_between_invocations_of_an_instance(driver: JsDriver) -> None:
    instance = await driver.start("let n = 0; export default { fetch() { n++; return new Response(String(n)) } }")
    assert [(await instance.fetch()).text for _ in range(4)] == ["1", "2", "3", "4"]


async def test_env_holds_process_vars_and_the_invocations_env_for_that_invocation_only(driver: JsDriver) -> None:
    source = "export default { fetch(request, env) { return Response.json({ plan: env.PLAN, customer: env.customer_name ?? null }) } }"
    instance = await driver.start(source, env={"PLAN": "pro"})
    assert (await instance.fetch(env={"customer_name": "acme", "PLAN": "override"})).json() == {"plan": "override", "customer": "acme"}
    assert (await instance.fetch()).json() == {"plan": "pro", "customer": None}
    sw = await driver.start("addEventListener('fetch', e => e.respondWith(new Response(PLAN + ' ' + (typeof customer_name))));",
                            env={"PLAN": "free"})
    assert (await sw.fetch(env={"customer_name": "acme"})).text == "free string"
    assert (await sw.fetch()).text == "free undefined"


async def test_the_request_reaches_the_handler_whole(driver: JsDriver) -> None:
    source = """export default { async fetch(request) {
        const bytes = new Uint8Array(await request.arrayBuffer());
        return Response.json({ method: request.method, url: request.url, type: request.headers.get('Content-Type'),
                               repeated: request.headers.get('x-r'), bytes: [...bytes] });
    } }"""
    instance = await driver.start(source)
    result = await instance.fetch("POST", "https://w.example/p?q=1", [("Content-Type", "application/octet-stream"), ("X-R", "1"), ("x-r", "2")],
                                  bytes([0, 255, 10, 13]))
    assert result.json() == {"method": "POST", "url": "https://w.example/p?q=1", "type": "application/octet-stream",
                             "repeated": "1, 2", "bytes": [0, 255, 10, 13]}


async def test_console_methods_become_log_frames_at_their_levels(driver: JsDriver) -> None:
    source = """export default { fetch() {
        console.log('plain', 1, { a: [1, 2] }); console.info('info %s=%d', 'x', 5); console.warn('careful');
        console.error(new TypeError('bad')); console.debug('details');
        return new Response('ok');
    } }"""
    instance = await driver.start(source)
    result = await instance.fetch()
    assert result.logs[:4] == [("log", "plain 1 { a: [ 1, 2 ] }"), ("info", "info x=5"), ("warn", "careful"), ("error", result.logs[3][1])]
    assert result.logs[3][1].startswith("TypeError: bad\n    at fetch (worker.js:")
    assert result.logs[4] == ("debug", "details")


async def test_an_uncaught_exception_ends_the_invocation_with_name_message_and_stack(driver: JsDriver) -> None:
    source = """function explode(cart) { return cart.items.length; }
export default { fetch(request) {
  const path = new URL(request.url).pathname;
  if (path === '/throw') explode(undefined);
  if (path === '/reject') return Promise.reject(new RangeError('rejected'));
  if (path === '/string') throw 'just a string';
  if (path === '/wrong') return 42;
  return new Response('fine');
} }"""
    instance = await driver.start(source)
    thrown = await instance.fetch(url="https://w.example/throw")
    assert thrown.type == "exception" and thrown.final["name"] == "TypeError"
    assert "items" in thrown.final["message"]
    assert thrown.final["stack"].splitlines()[1].strip().startswith("at explode (worker.js:1:")
    assert "wasmdeck:runtime" not in thrown.final["stack"]
    rejected = await instance.fetch(url="https://w.example/reject")
    assert (rejected.final["name"], rejected.final["message"]) == ("RangeError", "rejected")
    string = await instance.fetch(url="https://w.example/string")
    assert (string.final["name"], string.final["message"]) == ("Error", "just a string")
    wrong = await instance.fetch(url="https://w.example/wrong")
    assert wrong.final["message"] == "Incorrect type for Promise: the Promise did not resolve to 'Response'."
    assert (await instance.fetch()).text == "fine"  # the instance serves on after exceptions


async def test_a_handler_that_can_never_respond_is_told_so(driver: JsDriver) -> None:
    instance = await driver.start("export default { fetch() { return new Promise(() => {}) } }")
    result = await instance.fetch()
    assert (result.type, result.final["message"]) == ("exception", "The script will never generate a response.")


# ---- timers ----

async def test_timers_wait_through_sleep_calls_without_spinning(driver: JsDriver) -> None:
    source = """export default { async fetch() {
        const started = Date.now();
        await new Promise((resolve) => setTimeout(resolve, 300));
        return new Response(String(Date.now() - started));
    } }"""
    instance = await driver.start(source)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    result = await instance.fetch()
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    assert [meta["type"] for meta, _ in result.calls] == ["sleep"]
    assert 250 <= result.calls[0][0]["ms"] <= 300
    assert int(result.text) >= 295
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    assert cpu < 0.2, f"{cpu:.2f} s of CPU for a 300 ms wait"


async def test_timers_fire_in_order_and_die_with_their_invocation(driver: JsDriver) -> None:
    source = """let fired = [];
export default { async fetch(request) {
    if (new URL(request.url).pathname === '/leave') {
        setTimeout(() => fired.push('left behind'), 50);
        setInterval(() => fired.push('interval'), 10);
        return new Response('left');
    }
    setTimeout(() => fired.push('b'), 20);
    setTimeout(() => fired.push('a'), 10);
    const cancelled = setTimeout(() => fired.push('cancelled'), 5);
    clearTimeout(cancelled);
    await new Promise((resolve) => setTimeout(resolve, 40));
    const seen = fired; fired = [];
    return Response.json(seen);
} }"""
    instance = await driver.start(source)
    left = await instance.fetch(url="https://w.example/leave")
    assert left.text == "left" and left.calls == []
    await asyncio.sleep(0.1)
    assert (await instance.fetch()).json() == ["a", "b"]


# ---- calls ----

async def test_fetches_overlap_and_their_answers_may_come_in_any_order(driver: JsDriver) -> None:
    async def slow_first(request, body):
        n = int(request["url"].rsplit("/", 1)[1])
        await asyncio.sleep(0.02 * (10 - n))
        return {"type": "fetch_result", "status": 200, "headers": []}, str(n * n).encode()

    source = """export default { async fetch() {
        const answers = await Promise.all([...Array(10).keys()].map((n) => fetch(`https://api.example/${n}`).then((r) => r.text())));
        return Response.json(answers);
    } }"""
    instance = await driver.start(source, on_fetch=slow_first)
    result = await instance.fetch()
    assert result.json() == [str(n * n) for n in range(10)]
    assert result.max_in_flight == 10
    assert len({meta["id"] for meta, _ in result.calls}) == 10


async def test_more_than_64_fetches_are_queued_inside_the_guest(driver: JsDriver) -> None:
    async def answer(request, body):
        await asyncio.sleep(0.05)
        return {"type": "fetch_result", "status": 200, "headers": []}, b"x"

    source = """export default { async fetch() {
        const all = await Promise.all([...Array(150).keys()].map((n) => fetch(`https://api.example/${n}`).then((r) => r.text())));
        return new Response(all.join(''));
    } }"""
    instance = await driver.start(source, on_fetch=answer)
    result = await instance.fetch()
    assert result.text == "x" * 150  # none was refused with TooManyCalls
    assert 48 <= result.max_in_flight <= 64
    assert len(result.calls) == 150


async def test_fetch_sends_method_headers_and_body_and_reads_the_answer(driver: JsDriver) -> None:
    seen = []

    def answer(request, body):
        seen.append((request, body))
        return {"type": "fetch_result", "status": 201, "headers": [["content-type", "application/json"], ["x-up", "1"]]}, b'{"ok":true}'

    source = """export default { async fetch() {
        const response = await fetch('https://api.example/items', { method: 'POST', headers: { 'X-Key': 'k' }, body: JSON.stringify({ a: 1 }) });
        return Response.json({ status: response.status, ok: response.ok, json: await response.json(), up: response.headers.get('x-up'),
                               url: response.url, redirected: response.redirected });
    } }"""
    instance = await driver.start(source, on_fetch=answer)
    result = await instance.fetch()
    assert result.json() == {"status": 201, "ok": True, "json": {"ok": True}, "up": "1", "url": "https://api.example/items", "redirected": False}
    request, body = seen[0]
    assert request["method"] == "POST" and request["url"] == "https://api.example/items"
    assert sorted(map(tuple, request["headers"])) == [("content-type", "text/plain;charset=UTF-8"), ("x-key", "k")]
    assert body == b'{"a":1}'


async def test_fetch_errors_become_exceptions_the_worker_can_catch(driver: JsDriver) -> None:
    def refuse(request, body):
        if "blocked" in request["url"]:
            return {"type": "fetch_error", "name": "EgressBlocked", "message": "fetch to blocked.example is not allowed"}, b""
        return {"type": "fetch_error", "name": "TooManySubrequests", "message": "the limit is 5"}, b""

    source = """export default { async fetch() {
        const out = [];
        for (const url of ['https://blocked.example/', 'https://other.example/']) {
            try { await fetch(url); } catch (e) { out.push([e.name, e.message]); }
        }
        try { await fetch('ftp://files.example/'); } catch (e) { out.push([e.name, e.message]); }
        return Response.json(out);
    } }"""
    instance = await driver.start(source, on_fetch=refuse)
    assert (await instance.fetch()).json() == [
        ["TypeError", "fetch to blocked.example is not allowed"],
        ["Error", "Too many subrequests. the limit is 5"],
        ["TypeError", "Fetch API cannot load: ftp://files.example/"],
    ]


async def test_fetch_follows_redirects_itself_unless_told_not_to(driver: JsDriver) -> None:
    def redirecting(request, body):
        if request["url"].endswith("/old"):
            return {"type": "fetch_result", "status": 302, "headers": [["location", "/new"]]}, b""
        return {"type": "fetch_result", "status": 200, "headers": []}, f"{request['method']} {request['url']} {len(body)}".encode()

    source = """export default { async fetch() {
        const followed = await fetch('https://site.example/old', { method: 'POST', body: 'data' });
        const manual = await fetch('https://site.example/old', { redirect: 'manual' });
        return Response.json({ text: await followed.text(), redirected: followed.redirected, url: followed.url,
                               manual: [manual.status, manual.headers.get('location')] });
    } }"""
    instance = await driver.start(source, on_fetch=redirecting)
    result = await instance.fetch()
    assert result.json() == {"text": "GET https://site.example/new 0", "redirected": True, "url": "https://site.example/new",
                             "manual": [302, "/new"]}
    assert len(result.calls) == 3


async def test_an_aborted_fetch_rejects_and_its_late_answer_is_ignored(driver: JsDriver) -> None:
    async def slow(request, body):
        await asyncio.sleep(2.0)
        return {"type": "fetch_result", "status": 200, "headers": []}, b"late"

    source = """export default { async fetch() {
        const controller = new AbortController();
        setTimeout(() => controller.abort(), 20);
        try { await fetch('https://slow.example/', { signal: controller.signal }); return new Response('not aborted'); }
        catch (e) { return new Response(e.name); }
    } }"""
    instance = await driver.start(source, on_fetch=slow)
    started = time.perf_counter()
    result = await instance.fetch()
    assert result.text == "AbortError"
    assert time.perf_counter() - started < 1.5
    late = encode({"type": "fetch_result", "id": result.calls[0][0]["id"], "status": 200, "headers": []}, b"late")
    await instance.send_raw(late)  # the answer the engine would never send after the final frame, sent anyway
    assert (await instance.fetch()).text == "AbortError"


# ---- waitUntil, passThroughOnException ----

async def test_wait_until_work_runs_after_the_response_within_the_invocation(driver: JsDriver) -> None:
    source = """export default { async fetch(request, env, ctx) {
        ctx.waitUntil((async () => {
            await new Promise((resolve) => setTimeout(resolve, 50));
            await fetch('https://logs.example/', { method: 'POST', body: 'logged' });
            console.log('after the response');
        })());
        return new Response('fast');
    } }"""
    instance = await driver.start(source, on_fetch=ok_fetch())
    result = await instance.fetch()
    kinds = [meta["type"] for meta in result.frames]
    assert kinds == ["response", "sleep", "fetch", "log", "done"]
    assert result.response["waitUntil"] is True and result.text == "fast"
    assert result.final == {"type": "done"}
    plain = await instance.fetch()  # nothing pending: the response is the final frame
    assert plain.text == "fast" and plain.type == "done"


async def test_a_failing_wait_until_is_reported_in_the_done_frame(driver: JsDriver) -> None:
    source = """export default { fetch(request, env, ctx) {
        ctx.waitUntil(new Promise((resolve, reject) => setTimeout(() => reject(new Error('log shipping failed')), 10)));
        return new Response('ok');
    } }"""
    instance = await driver.start(source)
    result = await instance.fetch()
    assert result.status == 200 and result.type == "done"
    assert [(e["name"], e["message"]) for e in result.final["exceptions"]] == [("Error", "log shipping failed")]


async def test_pass_through_on_exception_answers_with_the_origin(driver: JsDriver) -> None:
    seen = []

    def origin(request, body):
        seen.append(request)
        return {"type": "fetch_result", "status": 200, "headers": [["x-origin", "yes"]]}, b"from origin"

    source = "export default { fetch(request, env, ctx) { ctx.passThroughOnException(); throw new Error('worker bug'); } }"
    instance = await driver.start(source, on_fetch=origin)
    result = await instance.fetch("GET", "https://shop.example/page", [("accept", "text/html")])
    assert (result.status, result.text, result.header("x-origin")) == (200, "from origin", "yes")
    assert seen[0]["url"] == "https://shop.example/page" and ["accept", "text/html"] in seen[0]["headers"]
    assert any(level == "error" and "worker bug" in message for level, message in result.logs)


# ---- tail Workers ----

async def test_a_tail_handler_receives_the_trace_items(driver: JsDriver) -> None:
    source = """export default { async tail(events, env, ctx) {
        await fetch('https://collector.example/', { method: 'POST', body: JSON.stringify(events.map((e) => [e.scriptName, e.outcome])) });
    } }"""
    posted = []

    def collector(request, body):
        posted.append(json.loads(body))
        return {"type": "fetch_result", "status": 204, "headers": []}, b""

    instance = await driver.start(source, on_fetch=collector)
    result = await instance.tail([{"scriptName": "shop", "outcome": "ok"}, {"scriptName": "blog", "outcome": "exception"}])
    assert result.final == {"type": "done"}
    assert posted == [[["shop", "ok"], ["blog", "exception"]]]
    missing = await instance.fetch()
    assert missing.final["message"] == "The Worker has no fetch handler."


# ---- dispatch namespace bindings ----

async def test_a_dispatch_binding_runs_user_workers_over_dispatch_calls(driver: JsDriver) -> None:
    calls = []

    def dispatch(call, body):
        calls.append((call, body))
        name = call["name"]
        if name == "missing":
            return {"type": "dispatch_result", "outcome": "scriptNotFound", "status": 404, "headers": []}, b"Worker not found"
        if name == "spinner":
            return {"type": "dispatch_result", "outcome": "exceededCpu", "status": 503, "headers": []}, b""
        return {"type": "dispatch_result", "outcome": "ok", "status": 200, "headers": [["x-user", name]]}, b"from " + name.encode()

    source = """export default { async fetch(request, env) {
        const workerName = new URL(request.url).host.split('.')[0];
        try {
            const worker = env.dispatcher.get(workerName, {}, { outbound: { customer_name: workerName }, limits: { cpuMs: 10, subRequests: 5 } });
            return await worker.fetch(request);
        } catch (e) {
            if (e.message.startsWith('Worker not found')) return new Response(e.message, { status: 404 });
            return new Response(e.message, { status: 500 });
        }
    } }"""
    instance = await driver.start(source, on_dispatch=dispatch, bindings={"dispatcher": {"type": "dispatch_namespace"}})
    ok = await instance.fetch("POST", "https://acme.shop.example/cart", [("x-a", "1")], b"items")
    assert (ok.status, ok.text, ok.header("x-user")) == (200, "from acme", "acme")
    call, body = calls[0]
    assert call["name"] == "acme"
    assert call["options"] == {"limits": {"cpuMs": 10, "subRequests": 5}, "outbound": {"customer_name": "acme"}}
    assert call["request"]["method"] == "POST" and call["request"]["url"] == "https://acme.shop.example/cart"
    assert body == b"items"
    missing = await instance.fetch(url="https://missing.shop.example/")
    assert (missing.status, missing.text) == (404, "Worker not found: missing")
    spinning = await instance.fetch(url="https://spinner.shop.example/")
    assert (spinning.status, spinning.text) == (500, "Worker exceeded CPU time limit.")


async def test_an_unknown_binding_type_fails_init(driver: JsDriver) -> None:
    instance = await driver.spawn()
    result = await instance.init(HELLO, bindings={"db": {"type": "d1"}})
    assert result.final["message"] == 'Binding "db" has an unknown type "d1".'


# ---- limits ----

async def test_a_heap_bomb_ends_as_a_clean_out_of_memory_exception(driver: JsDriver) -> None:
    source = """export default { fetch(request) {
        if (new URL(request.url).pathname === '/small') return new Response('small');
        const hoard = [];
        for (;;) hoard.push('x'.repeat(1 << 16) + hoard.length);
    } }"""
    instance = await driver.start(source, memoryMb=32)
    assert (await instance.fetch(url="https://w.example/small")).text == "small"
    result = await instance.fetch()
    assert result.type == "exception"
    assert result.final["name"] == "RangeError" and result.final["message"].startswith("out of memory")
    assert result.final["retire"] is True
    assert await instance.wait_exit() == 0


async def test_without_a_heap_limit_malloc_failure_at_the_memory_cap_is_also_clean(cache_root: Path) -> None:
    capped = cap_memory(RUNTIME.read_bytes(), memory_limit_pages(24))
    async with JsDriver(cache_root, module=capped) as driver:
        instance = await driver.start("export default { fetch() { const a = []; for (;;) a.push(new Array(10000).fill(a.length)); } }")
        result = await instance.fetch()
        assert result.type == "exception" and result.final["message"].startswith("out of memory")
        assert result.final["retire"] is True


async def test_deep_recursion_is_a_catchable_range_error(driver: JsDriver) -> None:
    source = """export default { fetch() {
        let depth = 0;
        const down = () => { depth++; return down() + 1; };
        try { down(); } catch (e) { return new Response(`${e.name}: ${e.message} after ${depth > 500}`); }
    } }"""
    instance = await driver.start(source)
    assert (await instance.fetch()).text == "RangeError: Maximum call stack size exceeded after true"
    assert (await instance.fetch()).status == 200


async def test_the_metered_module_serves_and_an_endless_loop_is_stopped(cache_root: Path) -> None:
    metered = meter(cap_memory(RUNTIME.read_bytes(), memory_limit_pages(128)))
    async with JsDriver(cache_root, module=metered) as driver:
        instance = await driver.start("""export default { fetch(request) {
            if (request.url.endsWith('/spin')) for (;;) {}
            if (request.url.endsWith('/deep')) { const down = (n) => down(n + 1); try { down(0); } catch (e) { return new Response(e.name); } }
            return new Response('metered');
        } }""")
        assert (await instance.fetch()).text == "metered"
        assert (await instance.fetch(url="https://w.example/deep")).text == "RangeError"
        spinning = asyncio.ensure_future(instance.fetch(url="https://w.example/spin"))
        await asyncio.sleep(0.3)
        await instance.kill()
        with pytest.raises(ProtocolError):
            await asyncio.wait_for(spinning, 5)
        await asyncio.sleep(0.3)
        before = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.sleep(1.0)
        after = resource.getrusage(resource.RUSAGE_SELF)
        spent = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        assert spent < 0.5, f"the killed instance still burns CPU ({spent:.2f} s in 1 s)"


# ---- the instance's life ----

async def test_end_of_input_ends_the_instance_with_status_zero(driver: JsDriver) -> None:
    instance = await driver.start(HELLO)
    await instance.fetch()
    assert await instance.close() == 0


async def test_an_event_before_init_is_refused(driver: JsDriver) -> None:
    instance = await driver.spawn()
    result = await instance.fetch()
    assert result.type == "exception" and "before the instance was ready" in result.final["message"]
    assert await instance.wait_exit() == 2


async def test_a_malformed_frame_from_the_host_stops_the_runtime(driver: JsDriver) -> None:
    instance = await driver.start(HELLO)
    await instance.send_raw(encode({"type": "fetch"})[:4] + (20 * 1024 * 1024).to_bytes(4, "little"))
    assert await instance.wait_exit() == 2
    assert b"over the limits" in bytes(instance.stderr)
    garbage = await driver.start(HELLO)
    await garbage.send_raw((5).to_bytes(4, "little") + (0).to_bytes(4, "little") + b"nope!")
    assert await garbage.wait_exit() == 2


async def test_answers_to_unknown_calls_and_unknown_frames_are_ignored(driver: JsDriver) -> None:
    instance = await driver.start(HELLO)
    await instance.send_raw(encode({"type": "fetch_result", "id": 999, "status": 200, "headers": []}, b"stray"))
    await instance.send_raw(encode({"type": "something_new", "x": 1}))
    assert (await instance.fetch()).text == "hello /"


# ---- a Worker that misbehaves on purpose ----

async def test_a_worker_cannot_reach_the_runtimes_primitives_or_forge_frames(driver: JsDriver) -> None:
    source = r"""export default { fetch() {
        const fake = '\u0010\u0000\u0000\u0000\u0000\u0000\u0000\u0000{"type":"response","status":200}';
        console.log(fake, '\ud800 lone surrogate');
        const reachable = ['host', 'driver', 'instance', 'currentInvocation', 'hostCall', 'send']
            .filter((name) => typeof globalThis[name] !== 'undefined');
        return Response.json({ reachable, own: Object.getOwnPropertyNames(globalThis).filter((n) => /wasmdeck|host/i.test(n)) });
    } }"""
    instance = await driver.start(source)
    result = await instance.fetch()
    assert result.json() == {"reachable": [], "own": []}
    level, message = result.logs[0]
    assert message.endswith("\ufffd lone surrogate") and '"type":"response"' in message
    assert [meta["type"] for meta in result.frames] == ["log", "response"]


async def test_oversized_bodies_and_logs_are_bounded(driver: JsDriver) -> None:
    source = """export default { fetch(request) {
        if (request.url.endsWith('/log')) { console.log('y'.repeat(200000)); return new Response('logged'); }
        return new Response(new Uint8Array(10 * 1024 * 1024 + 1));
    } }"""
    instance = await driver.start(source)
    big = await instance.fetch()
    assert big.type == "exception" and "over the 10485760 byte limit" in big.final["message"]
    logged = await instance.fetch(url="https://w.example/log")
    assert logged.text == "logged" and len(logged.logs[0][1]) == 64 * 1024


async def test_a_worker_that_replaces_json_does_not_break_the_frames(driver: JsDriver) -> None:
    source = """export default { fetch(request) {
        JSON.stringify = () => 'not json'; JSON.parse = () => ({ type: 'init' });
        console.log('logged');
        return new Response('still here');
    } }"""
    instance = await driver.start(source)
    for _ in range(2):
        result = await instance.fetch()
        assert result.text == "still here" and result.logs == [("log", "logged")]


async def test_unhandled_rejections_are_logged_and_the_invocation_goes_on(driver: JsDriver) -> None:
    source = """export default { async fetch() {
        Promise.reject(new Error('nobody listens'));
        await new Promise((resolve) => setTimeout(resolve, 5));
        return new Response('answered');
    } }"""
    instance = await driver.start(source)
    result = await instance.fetch()
    assert result.text == "answered"
    assert ("error", "Uncaught (in promise) Error: nobody listens") in result.logs


async def test_a_class_default_export_is_constructed_with_ctx_and_env(driver: JsDriver) -> None:
    source = """export default class {
        constructor(ctx, env) { this.env = env; this.ctx = ctx; }
        async fetch(request) { this.ctx.waitUntil(Promise.resolve()); return new Response(`${this.env.GREETING} ${request.method}`); }
    }"""
    instance = await driver.start(source, env={"GREETING": "hi"})
    assert (await instance.fetch("PUT")).text == "hi PUT"


async def test_deeply_nested_source_traps_the_instance_without_harming_the_host(driver: JsDriver) -> None:
    instance = await driver.spawn()
    with pytest.raises(ProtocolError):
        await instance.init("export default { fetch() { return new Response(String(" + "(" * 3000 + "1" + ")" * 3000 + ")) } }")
    assert (await driver.start(HELLO)).invocations == 0  # the next instance starts as usual


async def test_a_module_that_only_registers_listeners_is_served_as_a_service_worker(driver: JsDriver) -> None:
    instance = await driver.spawn()
    ready = await instance.init("const greeting = await Promise.resolve('awaited');\n"
                                "addEventListener('fetch', (event) => event.respondWith(new Response(greeting)));")
    assert ready.final["format"] == "service-worker"
    assert (await instance.fetch()).text == "awaited"


async def test_a_second_init_or_an_overlapping_event_is_a_host_error(driver: JsDriver) -> None:
    instance = await driver.start(HELLO)
    result = await instance.init(HELLO)
    assert result.type == "exception" and "a second init frame" in result.final["message"]
    assert await instance.wait_exit() == 2

    async def never(request, body):
        await asyncio.sleep(30)
        return {"type": "fetch_result", "status": 200, "headers": []}, b""

    busy = await driver.start("export default { async fetch() { await fetch('https://slow.example/'); return new Response('x') } }",
                              on_fetch=never)
    first = asyncio.ensure_future(busy.fetch())
    await asyncio.sleep(0.2)
    await busy.send_raw(encode({"type": "fetch", "protocol": 2, "invocation": 2, "request": {"method": "GET", "url": "https://w.example/"}, "env": {}}))
    result = await asyncio.wait_for(first, 5)
    assert result.type == "exception" and "while invocation 1 was still running" in result.final["message"]
    assert await busy.wait_exit() == 2


async def test_the_everyday_proxy_pattern_works(driver: JsDriver) -> None:
    def upstream(request, body):
        return {"type": "fetch_result", "status": 200, "headers": [["content-type", "text/html"], ["set-cookie", "a=1"], ["set-cookie", "b=2"]]}, b"<h1>up</h1>"

    source = """export default { async fetch(request) {
        const url = new URL(request.url);
        url.hostname = 'origin.example';
        const upstream = await fetch(new Request(url, request));
        const response = new Response(upstream.body, upstream);
        response.headers.set('x-proxied', 'yes');
        response.headers.delete('set-cookie');
        return response;
    } }"""
    instance = await driver.start(source, on_fetch=upstream)
    result = await instance.fetch("POST", "https://shop.example/page?x=1", [("content-type", "text/plain")], b"form")
    assert (result.status, result.text) == (200, "<h1>up</h1>")
    assert sorted(map(tuple, result.headers)) == [("content-type", "text/html"), ("x-proxied", "yes")]
    call, body = result.calls[0]
    assert call["request"]["url"] == "https://origin.example/page?x=1" and call["request"]["method"] == "POST"
    assert body == b"form"


async def test_a_webhook_signature_check_agrees_with_python(driver: JsDriver) -> None:
    import hashlib
    import hmac

    source = """const hex = (s) => new Uint8Array(s.match(/../g).map((b) => parseInt(b, 16)));
export default { async fetch(request, env) {
    const body = await request.text();
    const key = await crypto.subtle.importKey('raw', new TextEncoder().encode(env.WEBHOOK_SECRET), { name: 'HMAC', hash: 'SHA-256' }, false, ['verify']);
    const valid = await crypto.subtle.verify('HMAC', key, hex(request.headers.get('x-signature')), new TextEncoder().encode(body));
    return valid ? Response.json({ accepted: JSON.parse(body).event }) : new Response('bad signature', { status: 401 });
} }"""
    instance = await driver.start(source, env={"WEBHOOK_SECRET": "whsec_test"})
    payload = b'{"event":"order.paid","id":7}'
    good = hmac.new(b"whsec_test", payload, hashlib.sha256).hexdigest()
    assert (await instance.fetch("POST", "https://hooks.example/", [("x-signature", good)], payload)).json() == {"accepted": "order.paid"}
    bad = hmac.new(b"other", payload, hashlib.sha256).hexdigest()
    assert (await instance.fetch("POST", "https://hooks.example/", [("x-signature", bad)], payload)).status == 401


async def test_a_response_streamed_from_wait_until_work(driver: JsDriver) -> None:
    source = """export default { fetch(request, env, ctx) {
        const { readable, writable } = new TransformStream();
        const writer = writable.getWriter();
        const encoder = new TextEncoder();
        ctx.waitUntil((async () => {
            for (let i = 0; i < 3; i++) { await writer.write(encoder.encode(`line ${i}\\n`)); await scheduler.wait(5); }
            await writer.close();
        })());
        return new Response(readable, { headers: { 'content-type': 'text/plain' } });
    } }"""
    instance = await driver.start(source)
    result = await instance.fetch()
    assert result.response_body == b"line 0\nline 1\nline 2\n"
    assert result.type in ("response", "done")


async def test_an_outbound_worker_adds_a_credential_and_forwards(driver: JsDriver) -> None:
    seen = []

    def origin(request, body):
        seen.append(request)
        return {"type": "fetch_result", "status": 200, "headers": [["content-type", "application/json"]]}, b'{"ok":1}'

    source = """export default { async fetch(request, env) {
        if (new URL(request.url).hostname === 'blocked.example') return new Response('blocked for ' + env.customer_name, { status: 403 });
        const headers = new Headers(request.headers);
        headers.set('authorization', `Bearer ${env.API_TOKEN}`);
        return fetch(request.url, { method: request.method, headers, body: request.body });
    } }"""
    instance = await driver.start(source, env={"API_TOKEN": "secret-token"}, on_fetch=origin)
    forwarded = await instance.fetch("GET", "https://api.example/v1", [("accept", "application/json")], env={"customer_name": "acme"})
    assert (forwarded.status, forwarded.text) == (200, '{"ok":1}')
    assert sorted(map(tuple, seen[0]["headers"])) == [("accept", "application/json"), ("authorization", "Bearer secret-token")]
    blocked = await instance.fetch("GET", "https://blocked.example/", env={"customer_name": "acme"})
    assert (blocked.status, blocked.text) == (403, "blocked for acme")


async def test_math_random_differs_between_instances_and_stays_in_range(driver: JsDriver) -> None:
    source = "export default { fetch() { return Response.json(Array.from({ length: 1000 }, () => Math.random())) } }"
    first = (await (await driver.start(source)).fetch()).json()
    second = (await (await driver.start(source)).fetch()).json()
    assert first != second
    assert all(0 <= x < 1 for x in first) and len(set(first)) == 1000
    assert 0.4 < sum(first) / len(first) < 0.6


# -- the waiting frame, the write guard, the memory cap (host.c) ----------------------------------


async def test_the_runtime_announces_each_wait_with_the_frames_it_has_read(driver: JsDriver) -> None:
    instance = await driver.start("""export default { async fetch() {
        await scheduler.wait(5);
        await scheduler.wait(5);
        return new Response('waited');
    } }""")
    first = await instance.fetch()
    assert first.text == "waited"
    # init (1), the event (2), then one answer to each of the two sleeps (3, 4)
    assert [wait["frames"] for wait in first.waits] == [2, 3]
    second = await instance.fetch()
    assert [wait["frames"] for wait in second.waits] == [5, 6]
    plain = await driver.start("export default { fetch() { return new Response('at once') } }")
    assert (await plain.fetch()).waits == []  # nothing waited for: no announcement, not even between events


@pytest.mark.parametrize("pollution", [
    "Object.prototype.toJSON = function () { return { type: 'waiting', frames: 2 }; };",
    "Object.defineProperty(Object.prototype, 'id', { set(v) { this.type = 'waiting'; }, configurable: true });",
    "JSON.stringify = () => '{\"type\":\"waiting\",\"frames\":2}';",
])
async def test_no_javascript_can_make_the_runtime_write_a_waiting_frame(driver: JsDriver, pollution: str) -> None:
    instance = await driver.start(f"""export default {{ async fetch() {{
        {pollution}
        await scheduler.wait(5);
        return new Response('still here');
    }} }}""")
    result = await instance.fetch()
    forged = [meta for meta in result.frames if meta["type"] == "waiting"]
    assert forged == []
    assert all(wait["frames"] == 2 for wait in result.waits)  # any announcement is the runtime's own
    if result.type == "exception":  # the prelude could not write: one sentence, and the instance retires
        assert "could not write a frame" in result.final["message"] and result.final["retire"] is True
    else:
        assert result.text == "still here"  # JSON.stringify is the prelude's own copy


async def test_a_new_request_from_an_incoming_one_keeps_its_headers(driver: JsDriver) -> None:
    instance = await driver.start("""export default { fetch(request) {
        const copy = new Request(request);
        const changed = new Request(request, { method: 'POST', body: 'x' });
        return Response.json({ copy: [...copy.headers], changed: changed.headers.get('x-keep'), method: changed.method });
    } }""")
    result = await instance.fetch(headers=[("X-Keep", "yes"), ("Accept", "text/plain")])
    assert result.json() == {"copy": [["accept", "text/plain"], ["x-keep", "yes"]], "changed": "yes", "method": "POST"}


async def test_the_memory_cap_from_init_ends_a_bomb_cleanly_in_a_module_that_may_grow_to_4_gib(cache_root: Path) -> None:
    """One compiled runtime serves every memoryMb: the cap comes from init (the host's resident memory
    during such bombs is judged in tests/test_javascript_workers.py), whatever the allocation pattern."""
    module = cap_memory(RUNTIME.read_bytes(), memory_limit_pages(4096))
    async with JsDriver(cache_root, module=module) as driver:
        for source in (
            "const big = []; export default { fetch() { for (;;) big.push(new ArrayBuffer(4 << 20)); } }",
            "export default { fetch() { let small = []; for (let i = 0; i < 200000; i++) small.push({ i }); small = null;"
            " const big = []; for (;;) big.push(new ArrayBuffer(1 << 22)); } }",
        ):
            instance = await driver.start(source, memoryMb=32)
            probe = await driver.start("export default { fetch() { return new Response('x') } }", memoryMb=32)
            result = await instance.fetch()
            assert result.type == "exception" and result.final["message"].startswith("out of memory")
            assert result.final["retire"] is True
            assert (await probe.fetch()).text == "x"

"""JavaScript Workers through the engine: deploy checks, warm instances of the one runtime module,
env (vars, secrets, outbound parameters), waitUntil, exceptions, limits judged by the host's CPU
time and memory, and attacks on the runtime's own frames."""

from __future__ import annotations

import asyncio
import resource
import time
from pathlib import Path

import pytest

from wasmdeck.engine import Engine, InvalidInput, InvalidModule, Limits
from wasmdeck.engine import javascript
from wasmdeck.engine.traces import TraceFilter

from .conftest import fixture_module, protocol_module

HELLO = b"export default { async fetch(request, env, ctx) { return new Response(`hello ${new URL(request.url).pathname}`) } }"


def snapshot(engine: Engine) -> list:
    return [(w.namespace, w.name, w.version, w.sha256, w.abi, w.tags, w.vars) for w in engine.store.workers()]


def process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def cpu_after(seconds: float = 0.6) -> float:
    """The host process's CPU seconds over the next `seconds` (an idle engine uses next to none)."""
    before = process_cpu_s()
    await asyncio.sleep(seconds)
    return process_cpu_s() - before


# -- deploy -----------------------------------------------------------------------------------


def test_a_module_script_is_detected_checked_and_stored_with_what_the_runtime_reported(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "shop.js"
    path.write_bytes(HELLO)
    worker = engine.deploy("shop", path)
    assert (worker.abi, worker.language) == ("javascript", "javascript")
    assert worker.script == javascript.ScriptInfo("shop.js", "module", ("fetch",))
    assert engine.module_bytes(worker) == HELLO  # the script itself is what is stored
    listed = {w["name"]: w for w in (w.as_dict() for w in engine.workers())}
    assert listed["shop"]["language"] == "javascript" and listed["shop"]["script"]["format"] == "module"
    engine.deploy("plain", protocol_module("proto-hello"))
    assert engine.worker("plain").language == "wasm" and engine.worker("plain").script is None


@pytest.mark.parametrize(("source", "form", "handlers"), [
    (b"addEventListener('fetch', (event) => event.respondWith(new Response('sw')))", "service-worker", ("fetch",)),
    (b"export default class { fetch() { return new Response('class') } tail() {} }", "module", ("fetch", "tail")),
    (b"export default { tail(events) {} }", "module", ("tail",)),
])
def test_every_form_of_worker_is_recognised(engine: Engine, source: bytes, form: str, handlers: tuple[str, ...]) -> None:
    worker = engine.deploy("w", source)
    assert worker.script is not None
    assert (worker.script.format, set(worker.script.handlers)) == (form, set(handlers))


@pytest.mark.parametrize(("source", "needle"), [
    (b"export default { fetch() { return new Response('x' }", "syntax error at worker.js:1:"),
    (b"export const answer = 42;", "has no handler: it has no default export"),
    (b"export default { hello() {} }", "has no handler: its default export has no fetch() or tail() method"),
    (b"addEventListener('scheduled', () => {})", "has no handler"),
    (b"import { x } from './util.js';\nexport default { fetch() { return new Response(x) } }",
     "imports './util.js', and a Worker is one file with no imports: bundle it into one file first, for example: esbuild"),
    (b"import 'node:crypto';\nexport default { fetch() {} }", "imports 'node:crypto'"),
    (b"throw new Error('no config');\nexport default { fetch() {} }", "threw while its top-level code ran: Error: no config"),
    (b"null.x;\nexport default { fetch() {} }", "threw while its top-level code ran: TypeError"),
    (b"while (true) {}\nexport default { fetch() {} }", "ran for more than 2 s"),
    (b"const a = []; for (;;) a.push('x'.repeat(65536) + a.length);\nexport default { fetch() {} }",
     "ran out of memory under its 128 MiB limit while its top-level code ran"),
    (b"await new Promise(() => {});\nexport default { fetch() {} }", "awaits something that can never settle"),
])
def test_scripts_that_cannot_serve_are_refused_with_one_sentence_and_change_nothing(
    engine: Engine, source: bytes, needle: str
) -> None:
    engine.deploy("shop", HELLO)
    before = snapshot(engine)
    with pytest.raises(InvalidModule, match=needle.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")) as error:
        engine.deploy("shop", source)
    assert "\n" not in str(error.value)
    assert snapshot(engine) == before


def test_a_syntax_error_names_line_and_column_in_the_deployed_file(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "cart.mjs"
    path.write_text("export default {\n  async fetch(request) {\n    return new Response('x';\n  }\n};\n")
    with pytest.raises(InvalidModule, match=r"^the script has a syntax error at cart\.mjs:3:\d+: ") as error:
        engine.deploy("cart", path)
    assert "(cart.mjs:" not in str(error.value)  # the location is said once


def test_a_js_file_that_is_not_utf8_is_refused_as_a_script_not_as_webassembly(engine: Engine, tmp_path: Path) -> None:
    for name in ("shop.js", "shop.mjs"):
        path = tmp_path / name
        path.write_bytes(b"export default { fetch() { return new Response('\xe9') } };\n")  # Latin-1, not UTF-8
        with pytest.raises(InvalidModule, match=r"^the script is not valid UTF-8 \(byte \d+ is 0xe9\); save it as UTF-8$"):
            engine.deploy("shop", path)
    with pytest.raises(InvalidModule, match="not valid UTF-8"):
        engine.deploy("shop", b"export \xff default {}", filename="shop.js")
    assert engine.workers() == []
    engine.deploy("hello", fixture_module("hello").read_bytes(), filename="hello.js")  # WebAssembly, whatever its name
    assert engine.worker("hello").abi == "wcgi"


def test_scripts_that_are_not_text_or_too_big_are_refused(engine: Engine) -> None:
    with pytest.raises(InvalidModule, match=r"not valid UTF-8 \(byte 7 is 0xff\)"):
        engine.deploy("shop", b"export \xff default {}", abi="javascript")
    with pytest.raises(InvalidModule, match="is WebAssembly, not JavaScript"):
        engine.deploy("shop", protocol_module("proto-hello").read_bytes(), abi="javascript")
    with pytest.raises(InvalidModule, match="the script is empty"):
        engine.deploy("shop", b"   \n", abi="javascript")
    big = b"export default { fetch() { return new Response('x') } };\n//" + b"x" * (10 * 2**20)
    with pytest.raises(InvalidModule, match=r"over the 10 MiB limit for a JavaScript Worker"):
        engine.deploy("shop", big)
    assert engine.workers() == []


def test_top_level_code_is_checked_with_the_workers_vars_and_its_secrets_names_only(engine: Engine) -> None:
    script = b"if (GREETING !== 'hi') throw new Error('no greeting'); if (typeof TOKEN !== 'string') throw new Error('no token');" \
             b" addEventListener('fetch', e => e.respondWith(new Response(GREETING + TOKEN)))"
    engine.deploy("sw", script, vars={"GREETING": "hi"}, secrets={"TOKEN": "s3cret"})
    engine.deploy("sw", script + b"\n", vars={"GREETING": "hi"})  # a kept secret is there too, by name
    with pytest.raises(InvalidModule, match="Error: no token"):
        engine.deploy("sw", script + b"\n\n", vars={"GREETING": "hi"}, keep_secrets=False)
    # a refusal quotes what the script threw: a secret's value is never in it
    with pytest.raises(InvalidModule) as refused:
        engine.deploy("sw", b"throw new Error('leak: ' + TOKEN);", vars={"GREETING": "hi"})
    assert "threw while its top-level code ran: Error: leak: (at " in str(refused.value)  # the message stripped
    assert "s3cret" not in str(refused.value)


# -- running -----------------------------------------------------------------------------------


async def test_a_module_worker_answers_with_its_env_logs_and_a_warm_instance(engine: Engine) -> None:
    engine.deploy("shop", b"""
        let served = 0;
        export default {
          async fetch(request, env, ctx) {
            served++;
            console.log('log', served); console.info('info'); console.warn('warn'); console.error('error'); console.debug('debug');
            return Response.json({ greeting: env.GREETING, token: env.TOKEN, served, method: request.method,
                                   body: await request.text(), header: request.headers.get('x-test') });
          },
        };""", vars={"GREETING": "hi"}, secrets={"TOKEN": "s3cret"})
    first = await engine.request("http://shop.example.com/", method="POST", body="posted", headers={"X-Test": "yes"})
    assert first.status == 200 and first.header("content-type") == "application/json"
    assert first.json() == {"greeting": "hi", "token": "s3cret", "served": 1, "method": "POST", "body": "posted", "header": "yes"}
    trace = first.trace
    assert trace["outcome"] == "ok" and trace["newInstance"] is True
    assert [(log["level"], log["message"]) for log in trace["logs"]] == [
        ("log", ["log 1"]), ("info", ["info"]), ("warn", ["warn"]), ("error", ["error"]), ("debug", ["debug"])]
    second = await engine.request("http://shop.example.com/")
    assert second.json()["served"] == 2  # the same instance: the script was evaluated once
    assert (second.trace["newInstance"], second.trace["instanceInvocation"]) == (False, 2)
    assert engine.instance_stats()["shop"]["reusedInvocations"] == 1


async def test_every_javascript_worker_runs_on_one_compiled_runtime(engine: Engine) -> None:
    engine.set_limits("small", memory_mb=32)
    engine.deploy("one", HELLO)
    engine.deploy("two", HELLO.replace(b"hello", b"howdy"), tags=["small"])
    assert (await engine.request("http://one.example.com/a")).text == "hello /a"
    assert (await engine.request("http://two.example.com/b")).text == "howdy /b"
    loaded = [key for key in engine.runtime._packages if key[0] == javascript.runtime_sha256()]
    assert loaded == [(javascript.runtime_sha256(), javascript.RUNTIME_PAGES)]  # whatever each Worker's memoryMb
    assert engine.store.metered_module(javascript.runtime_sha256(), "wasmdeck-metering-2") is None  # never tenant data


async def test_a_service_worker_script_sees_its_vars_as_globals(engine: Engine) -> None:
    engine.deploy("sw", b"addEventListener('fetch', (event) => event.respondWith(new Response(`${GREETING} ${event.request.method}`)))",
                  vars={"GREETING": "hey"})
    response = await engine.request("http://sw.example.com/", method="PUT")
    assert (response.status, response.text) == (200, "hey PUT")


async def test_an_uncaught_exception_or_rejection_ends_500_with_name_message_and_stack(engine: Engine) -> None:
    engine.deploy("thrower", b"""export default {
  async fetch(request) {
    const path = new URL(request.url).pathname;
    if (path === '/reject') return Promise.reject(new RangeError('no such cart'));
    function total(cart) { return cart.items.length; }
    return new Response(String(total(undefined)));
  },
};""")
    thrown = await engine.request("http://thrower.example.com/")
    assert thrown.status == 500 and thrown.trace["outcome"] == "exception"
    (exception,) = thrown.trace["exceptions"]
    assert exception["name"] == "TypeError" and "undefined" in exception["message"]
    assert exception["stack"].splitlines()[0] == f"TypeError: {exception['message']}"
    assert "at total (worker.js:5:" in exception["stack"] and "at fetch (worker.js:6:" in exception["stack"]
    rejected = await engine.request("http://thrower.example.com/reject")
    assert rejected.status == 500
    (exception,) = rejected.trace["exceptions"]
    assert (exception["name"], exception["message"]) == ("RangeError", "no such cart")
    assert "at fetch (worker.js:4:" in exception["stack"]
    again = await engine.request("http://thrower.example.com/reject")
    assert again.trace["newInstance"] is False  # an exception is an answer: the instance serves on


async def test_wait_until_work_goes_on_after_the_response_within_the_invocation(engine: Engine, origin) -> None:
    engine.set_egress(allow=["127.0.0.1"])
    engine.deploy("later", f"""export default {{
  async fetch(request, env, ctx) {{
    ctx.waitUntil((async () => {{
      await scheduler.wait(300);
      console.log('after the response');
      await fetch('{origin.url('/after')}');
    }})());
    return new Response('now');
  }},
}};""".encode())
    started = time.perf_counter()
    response = await engine.request("http://later.example.com/")
    answered = time.perf_counter() - started
    assert (response.status, response.text) == (200, "now")
    assert response.finished is not None and not response.finished.done()
    assert response.trace["logs"] == [] and origin.seen == []
    await asyncio.wait_for(response.finished, 10)
    assert time.perf_counter() - started > answered  # the work ended after the answer was given
    assert response.trace["outcome"] == "ok"
    assert [log["message"] for log in response.trace["logs"]] == [["after the response"]]
    assert [s["url"] for s in response.trace["subrequests"]] == [origin.url("/after")]
    assert [seen.path for seen in origin.seen] == ["/after"]
    await engine.flush_traces()
    stored = engine.recent_traces(5, TraceFilter(worker="later"))
    assert len(stored) == 1 and stored[0]["logs"] == response.trace["logs"]  # published once, complete


async def test_wait_until_work_that_fails_is_the_invocations_exception_not_the_clients(engine: Engine) -> None:
    engine.deploy("late", b"export default { fetch(request, env, ctx) { ctx.waitUntil(Promise.reject(new TypeError('late failure'))); return new Response('fine'); } }")
    response = await engine.request("http://late.example.com/")
    assert (response.status, response.text) == (200, "fine")
    if response.finished is not None:
        await response.finished
    assert response.trace["outcome"] == "exception"
    assert [(e["name"], e["message"]) for e in response.trace["exceptions"]] == [("TypeError", "late failure")]


async def test_wait_until_work_is_bounded_by_the_invocations_cpu_limit(engine: Engine) -> None:
    engine.set_limits("free", cpu_ms=50)
    engine.deploy("burner", b"export default { fetch(request, env, ctx) { ctx.waitUntil(scheduler.wait(10).then(() => { for (;;) {} })); return new Response('answered'); } }",
                  tags=["free"])
    response = await engine.request("http://burner.example.com/")
    assert (response.status, response.text) == (200, "answered")
    assert response.finished is not None
    await asyncio.wait_for(response.finished, 10)
    assert response.trace["outcome"] == "exceededCpu"
    assert await cpu_after() < 0.3
    assert (await engine.request("http://burner.example.com/")).trace["newInstance"] is True


async def test_outbound_parameters_reach_a_javascript_outbound_workers_env_for_one_invocation(engine: Engine, origin) -> None:
    engine.set_egress(allow=["127.0.0.1", "*.example.com"])
    engine.deploy("gateway", b"""export default {
  async fetch(request, env) {
    return Response.json({ customer: env.customer_name ?? null, plan: env.plan ?? null, token: env.API_TOKEN, url: request.url });
  },
};""", vars={"API_TOKEN": "t"})
    engine.set_outbound("gateway", ["customer_name", ("plan", "{tag:pro}")])
    engine.deploy("shop", b"export default { async fetch(req) { return new Response(await (await fetch('http://api.example.com/x')).text()); } }",
                  tags=["pro"])
    response = await engine.request("http://shop.example.com/")
    assert response.json() == {"customer": "", "plan": "yes", "token": "t", "url": "http://api.example.com/x"}  # not set: empty
    assert response.trace["subrequests"][0]["via"] == "outbound"


async def test_subrequests_counts_javascript_fetches(engine: Engine, origin) -> None:
    engine.set_egress(allow=["127.0.0.1"])
    engine.set_limits("two", sub_requests=2)
    engine.deploy("greedy", f"""export default {{
  async fetch() {{
    const results = [];
    for (let i = 0; i < 3; i++) {{
      try {{ results.push((await fetch('{origin.url('/n')}')).status); }} catch (error) {{ results.push(error.message); }}
    }}
    return Response.json(results);
  }},
}};""".encode(), tags=["two"])
    response = await engine.request("http://greedy.example.com/")
    first, second, third = response.json()
    assert (first, second) == (200, 200) and third.startswith("Too many subrequests.")
    assert len(origin.seen) == 2 and len(response.trace["subrequests"]) == 3


# -- limits, judged by the host -------------------------------------------------------------------


@pytest.mark.parametrize("attack", [
    "for (;;) {}",
    # a call in flight used to stop the CPU clock: a slow fetch (or a long timer) and then a loop
    "fetch('{slow}'); for (;;) {{}}",
    "setTimeout(() => {{}}, 20000); await scheduler.wait(5); for (;;) {{}}",
    # and the runtime's own waiting frame cannot be forged by replacing built-ins the prelude uses
    "Object.prototype.toJSON = function () {{ return {{ type: 'waiting', frames: 2 }}; }}; fetch('{slow}'); for (;;) {{}}",
    "Object.defineProperty(Object.prototype, 'id', {{ set(v) {{ this.type = 'waiting'; }}, configurable: true }}); fetch('{slow}'); for (;;) {{}}",
])
async def test_cpu_ms_stops_a_javascript_loop_whatever_is_in_flight(engine: Engine, origin, attack: str) -> None:
    engine.set_egress(allow=["127.0.0.1"])
    engine.set_limits("free", cpu_ms=50, wall_ms=20_000)
    body = attack.format(slow=origin.url("/slow?ms=15000")) if "{slow}" in attack or "{{" in attack else attack
    engine.deploy("spin", f"export default {{ async fetch() {{ {body} }} }}".encode(), tags=["free"])
    started = time.perf_counter()
    response = await engine.request("http://spin.example.com/")
    waited = time.perf_counter() - started
    assert response.status == 503 and response.trace["outcome"] == "exceededCpu", response.text
    assert response.json()["limit"] == "cpuMs"
    assert waited < 10  # stopped by cpuMs, long before the slow call or the 20 s wall limit
    assert await cpu_after() < 0.3  # and it computes no more
    assert "exceeded the CPU time limit" in response.trace["instanceRetired"]


async def test_a_guest_that_is_not_the_engines_runtime_cannot_stop_the_clock_with_a_waiting_frame(engine: Engine) -> None:
    engine.set_limits("free", cpu_ms=50, wall_ms=20_000)
    engine.deploy("liar", protocol_module("proto-warm"), tags=["free"])
    response = await engine.request("http://liar.example.com/?mode=fake-waiting")
    assert response.trace["outcome"] == "exceededCpu"
    assert await cpu_after() < 0.3


async def test_waiting_without_computing_uses_no_cpu_time(engine: Engine, origin) -> None:
    engine.set_egress(allow=["127.0.0.1"])
    engine.set_limits("free", cpu_ms=50)
    engine.deploy("patient", f"export default {{ async fetch() {{ await scheduler.wait(400); const r = await fetch('{origin.url('/slow?ms=300')}'); return new Response(await r.text()); }} }}".encode(),
                  tags=["free"])
    response = await engine.request("http://patient.example.com/")
    assert (response.status, response.text, response.trace["outcome"]) == (200, "slow", "ok")
    assert response.trace["cpuTime"] < 50 <= response.trace["wallTime"]


async def test_memory_mb_stops_a_heap_bomb_inside_the_guest(engine: Engine) -> None:
    engine.set_limits("small", memory_mb=32, cpu_ms=10_000)
    engine.deploy("bomb", b"const hoard = []; export default { fetch() { for (;;) hoard.push(new Uint8Array(1 << 20).fill(7)); } }",
                  tags=["small"])
    engine.deploy("strings", b"const hoard = []; export default { fetch() { for (;;) hoard.push('x'.repeat(1 << 16) + Math.random()); } }",
                  tags=["small"])
    await engine.request("http://bomb.example.com/warm-up-the-runtime-is-loaded")
    for name in ("bomb", "strings"):
        before = rss_mb()
        response = await engine.request(f"http://{name}.example.com/")
        assert response.status == 503 and response.trace["outcome"] == "exceededMemory", response.text
        assert response.json()["limit"] == "memoryMb"
        assert "ran out of memory" in response.trace["instanceRetired"] or "its cap" in response.trace["instanceRetired"]
        assert rss_mb() - before < 32 + 48  # the guest's cap, and what the host needs for one more instance
        again = await engine.request(f"http://{name}.example.com/")
        assert again.trace["newInstance"] is True and again.trace["outcome"] == "exceededMemory"


# -- the runtime's primitives are not the tenant's ----------------------------------------------------


async def test_tenant_code_cannot_reach_the_runtimes_host_primitives(engine: Engine) -> None:
    engine.deploy("probe", b"""
export default {
  async fetch() {
    const found = [];
    const seen = new Set();
    const visit = (value, path, depth) => {
      if (value === null || (typeof value !== 'object' && typeof value !== 'function') || seen.has(value) || depth > 3) return;
      seen.add(value);
      for (const key of Reflect.ownKeys(value)) {
        let child;
        try { child = value[key]; } catch { continue; }
        const name = `${path}.${String(key)}`;
        if (['setMemoryLimits', 'utf8Decode', 'randomFill', 'compiles', 'memoryUsage', 'environment'].includes(String(key))) found.push(name);
        visit(child, name, depth + 1);
      }
    };
    visit(globalThis, 'globalThis', 0);
    let caller = 'none';
    try { caller = String((function probe() { return probe.caller; })()); } catch (error) { caller = error.name; }
    return Response.json({ host: typeof host, driver: typeof driver, found, caller });
  },
};""")
    answer = (await engine.request("http://probe.example.com/")).json()
    assert answer["host"] == "undefined" and answer["driver"] == "undefined"
    assert answer["found"] == []
    assert "write" not in answer["caller"]


# -- dispatch namespace bindings ------------------------------------------------------------------------


DISPATCHER = b"""export default {
  async fetch(request, env) {
    const name = new URL(request.url).hostname.split('.')[0];
    try {
      const worker = env.dispatcher.get(name, {}, { outbound: { customer_name: name }, limits: { cpuMs: 250, subRequests: 1 } });
      return await worker.fetch(request);
    } catch (error) {
      if (error.message.startsWith('Worker not found')) return new Response(error.message, { status: 404 });
      return Response.json({ message: error.message, outcome: error.outcome ?? null }, { status: 503 });
    }
  },
};"""


async def test_a_javascript_dispatch_worker_dispatches_with_parameters_and_limits(engine: Engine, origin) -> None:
    engine.set_egress(allow=["127.0.0.1", "*.example.com"])
    engine.deploy("dispatcher", DISPATCHER)
    engine.deploy("gateway", b"export default { fetch(request, env) { return new Response(`gateway saw ${env.customer_name}`); } }")
    engine.deploy("shop", b"export default { async fetch() { const a = await (await fetch('http://api.example.com/')).text(); let b; try { await fetch('http://api.example.com/'); } catch (e) { b = e.message; } return Response.json({ a, b }); } }")
    engine.deploy("spin", b"export default { fetch() { for (;;) {} } }")
    engine.set_outbound("gateway", ["customer_name"])
    engine.set_dispatch_worker("dispatcher")
    shop = await engine.request("http://shop.example.com/")
    answer = shop.json()
    assert answer["a"] == "gateway saw shop"  # the outbound parameter the dispatcher passed
    assert answer["b"].startswith("Too many subrequests.") and "limit from dispatch" in answer["b"]  # subRequests: 1
    assert shop.trace["scriptName"] == "shop" and shop.dispatcher_trace["scriptName"] == "dispatcher"
    spin = await engine.request("http://spin.example.com/")
    assert spin.status == 503 and spin.json() == {"message": "Worker exceeded CPU time limit.", "outcome": "exceededCpu"}
    assert spin.trace["outcome"] == "exceededCpu" and "250 ms (limit from dispatch)" in spin.trace["exceptions"][0]["message"]
    missing = await engine.request("http://nobody.example.com/")
    assert (missing.status, missing.text) == (404, "Worker not found: nobody")
    platform = await engine.request("http://gateway.example.com/")  # a platform Worker is no tenant
    assert platform.status == 404 and platform.text.startswith("Worker not found")


async def test_the_dispatch_binding_name_is_configurable_and_only_the_dispatcher_has_it(engine: Engine) -> None:
    engine.deploy("front", b"export default { async fetch(request, env) { return new Response(`${typeof env.dispatcher} ${typeof env.TENANTS}`); } }")
    engine.deploy("shop", b"export default { fetch(request, env) { return new Response(`shop ${typeof env.dispatcher}`); } }")
    engine.set_dispatch_worker("front")
    assert (await engine.request("http://shop.example.com/")).text == "object undefined"
    engine.set_dispatch_worker("front", binding="TENANTS")
    assert engine.namespace().dispatch_binding == "TENANTS"
    assert (await engine.request("http://shop.example.com/")).text == "undefined object"  # a fresh instance
    engine.set_dispatch_worker(None)
    assert (await engine.request("http://shop.example.com/")).text == "shop undefined"
    with pytest.raises(InvalidInput, match="not a JavaScript identifier"):
        engine.set_dispatch_worker("front", binding="not-an-identifier")


async def test_platform_roles_need_the_handler_they_use(engine: Engine) -> None:
    engine.deploy("tailonly", b"export default { tail(events) {} }")
    engine.deploy("fetchonly", HELLO)
    with pytest.raises(InvalidInput, match="without a fetch\\(\\) handler"):
        engine.set_dispatch_worker("tailonly")
    with pytest.raises(InvalidInput, match="without a tail\\(\\) handler"):
        engine.add_tail_consumer("fetchonly")
    engine.add_tail_consumer("tailonly", worker="fetchonly")


async def test_a_javascript_tail_worker_receives_cloudflare_shaped_trace_items(engine: Engine) -> None:
    engine.deploy("audit", b"""export default {
  async tail(events, env, ctx) {
    for (const item of events) {
      console.log(JSON.stringify({
        scriptName: item.scriptName, outcome: item.outcome, url: item.event.request.url, method: item.event.request.method,
        status: item.event.response.status, logs: item.logs.map((log) => [log.level, ...log.message]),
        exceptions: item.exceptions.map((e) => e.name), timestamp: typeof item.eventTimestamp,
        namespace: item.dispatchNamespace, tags: item.scriptTags, model: item.executionModel,
        diagnostics: item.diagnosticsChannelEvents, truncated: item.truncated,
      }));
    }
  },
};""")
    engine.deploy("shop", b"export default { fetch(request) { console.warn('careful'); if (request.url.endsWith('/boom')) throw new TypeError('boom'); return new Response('ok'); } }")
    engine.add_tail_consumer("audit", worker="shop")
    await engine.request("http://shop.example.com/")
    await engine.request("http://shop.example.com/boom", method="POST")
    await engine.flush_tail_deliveries()
    await engine.flush_traces()
    import json
    seen = [json.loads(log["message"][0]) for item in engine.recent_traces(10, TraceFilter(worker="audit")) for log in item["logs"]]
    shape = {"namespace": "default", "tags": [], "model": "stateless", "diagnostics": [], "truncated": False}
    assert seen == [
        {"scriptName": "shop", "outcome": "ok", "url": "http://shop.example.com/", "method": "GET", "status": 200,
         "logs": [["warn", "careful"]], "exceptions": [], "timestamp": "number", **shape},
        {"scriptName": "shop", "outcome": "exception", "url": "http://shop.example.com/boom", "method": "POST", "status": 500,
         "logs": [["warn", "careful"]], "exceptions": ["TypeError"], "timestamp": "number", **shape},
    ]

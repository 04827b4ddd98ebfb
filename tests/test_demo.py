"""The demo platform (wasmdeck/demo/platform.toml) as `wasmdeck demo` and `console --demo` use it."""

from __future__ import annotations

import json

from wasmdeck.cli.demo import demo_requests, run_demo, setup_demo_platform
from wasmdeck.engine import Engine
from wasmdeck.engine.manifest import apply_manifest
from wasmdeck.demo import demo_manifest
from wasmdeck.engine.traces import TraceFilter


async def test_the_demo_manifest_applies_once_and_then_changes_nothing(engine: Engine):
    lines: list[str] = []
    setup_demo_platform(engine, lines.append)
    assert any("dispatch Worker none -> dispatcher" in line for line in lines)
    with demo_manifest() as manifest:
        assert apply_manifest(engine, manifest) == []
    namespace = engine.namespace()
    assert namespace.dispatch_worker == "dispatcher" and namespace.outbound and namespace.outbound.service == "gateway"
    assert {w.abi for w in engine.workers()} == {"wcgi", "protocol", "javascript"}
    languages = {w.name: w.language for w in engine.workers()}
    assert [name for name, language in sorted(languages.items()) if language == "javascript"] == [
        "audit", "catalog", "dispatcher", "gateway"]  # the platform's own Workers, and one tenant
    assert set(engine.worker("audit").script.handlers) == {"tail", "fetch"}
    assert [c.scope for c in engine.tail_consumers("default")] == ["dispatcher"]


async def test_demo_requests_show_each_platform_feature(engine: Engine):
    setup_demo_platform(engine)
    answers = {}
    for method, url in demo_requests():
        answers[url] = await engine.request(url, method=method, body=b"{}" if method == "POST" else b"")

    def answer(fragment: str):
        (found,) = [response for url, response in answers.items() if fragment in url]
        return found

    prices = answer("/prices")
    assert json.loads(prices.text.split("body: ", 1)[1]) == {
        "path": "/prices", "price_eur": 3, "authorized": True, "customer": "shop"}  # credential added by the gateway
    assert answer("blocked.demo.local").text.startswith("1 403")  # the Outbound Worker blocks it
    assert "1 error EgressBlocked" in answer("internal.demo.local").text  # the egress policy blocks it
    assert json.loads(answer("forever").text) == {"error": "tenant limit", "outcome": "exceededCpu", "tenant": "burn"}
    assert (answer("missing").status, answer("missing").text) == (404, "no such tenant: missing")
    assert answer("greeter").text == "hello from zig: GET /welcome"
    assert answers["http://catalog.demo.local/"].text == "Hello from a JavaScript tenant (GET /)\n"
    quote = answer("/price?api=")
    assert quote.json() == {"tenant": "catalog", "item": "tea", "priceEur": 3, "authorized": True, "customer": "catalog"}
    assert quote.header("x-dispatched-by") == "dispatcher" and len(quote.header("x-signature") or "") == 64
    await quote.finished if quote.finished else None
    assert [log["message"] for log in quote.trace["logs"]] == [["quoted tea at 3 EUR"]]  # logged after the response
    assert quote.trace["subrequests"][0]["via"] == "outbound"
    await engine.flush_tail_deliveries()
    await engine.flush_traces()
    audit = engine.recent_traces(200, TraceFilter(worker="audit"))
    consumed = [e["scriptName"] for item in audit for e in item["event"]["consumedEvents"]]
    assert consumed.count("dispatcher") == len(demo_requests())
    assert "gateway" not in consumed  # the dispatcher's consumer gets the dispatcher's and tenants' items
    lines = [log["message"][0] for item in audit for log in item["logs"]]
    assert "tail catalog ok 200" in lines and "tail burn exceededCpu 503" in lines  # Cloudflare-shaped TraceItems
    gateway = engine.recent_traces(50, TraceFilter(worker="gateway"))
    assert any("credential added for GET http://127.0.0.1" in log["message"][0] and "customer catalog, pro plan" in log["message"][0]
               for item in gateway for log in item["logs"])
    assert any(log["message"][0] == "blocked GET http://blocked.demo.local/" for item in gateway for log in item["logs"])


async def test_wasmdeck_demo_prints_the_platform_and_its_traces(engine: Engine, capsys):
    assert await run_demo(engine) == 0
    out = capsys.readouterr().out
    assert "namespace default: Outbound Worker none -> gateway" in out
    assert "503 GET http://burn.demo.local/?forever=1" in out
    assert '"outcome":"exceededCpu"' in out

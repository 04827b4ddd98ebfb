"""The three platform Workers of Cloudflare's Workers for Platforms docs, in JavaScript, end to end
through `wasmdeck serve` (a real subprocess on 127.0.0.1), set up with the CLI:

- a dispatch Worker: `env.dispatcher.get(workerName, {}, { outbound: { customer_name, url },
  limits: { cpuMs: 10, subRequests: 5 } })`, catching `Worker not found`;
- an Outbound Worker that reads its parameters from env, blocks a host and adds a credential;
- a Tail Worker whose `tail(events)` POSTs the events to a logging endpoint (an origin on 127.0.0.1).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_cli import ok
from .test_server import Server, start_server

DISPATCHER = """\
export default {
  async fetch(request, env) {
    try {
      const workerName = new URL(request.url).host.split('.')[0];
      const userWorker = env.dispatcher.get(workerName, {}, {
        outbound: { customer_name: workerName, url: request.url },
        limits: { cpuMs: 50, subRequests: 5 },
      });
      return await userWorker.fetch(request);
    } catch (e) {
      if (e.message.startsWith('Worker not found')) {
        return new Response('', { status: 404 });
      }
      return new Response(e.message, { status: 500 });
    }
  },
};
"""

OUTBOUND = """\
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.hostname === env.BLOCKED_HOST) {
      return new Response(`blocked for ${env.customer_name}: ${url.hostname}`, { status: 403 });
    }
    const headers = new Headers(request.headers);
    headers.set('Authorization', `Bearer ${env.API_TOKEN}`);
    headers.set('X-Customer', env.customer_name);
    headers.set('X-Dispatched-Url', env.url);
    return fetch(new Request(request, { headers }));
  },
};
"""

TAIL = """\
export default {
  async tail(events, env, ctx) {
    await fetch(env.LOG_ENDPOINT, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(events),
    });
  },
};
"""

TENANT = """\
export default {
  async fetch(request) {
    const target = new URL(request.url).searchParams.get('url');
    if (!target) return new Response('tenant here');
    const answer = await fetch(target, { headers: { authorization: 'tenant tries its own' } });
    return new Response(`${answer.status} ${await answer.text()}`);
  },
};
"""

SPIN = "export default { fetch() { for (;;) {} } };\n"


@pytest.fixture(scope="module")
def origin_server():
    from tests.origin import start_origin

    found, server = start_origin()
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, origin_server) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("seed")
    for name, source in (("dispatcher", DISPATCHER), ("gateway", OUTBOUND), ("logs", TAIL), ("shop", TENANT), ("spin", SPIN)):
        (tmp / f"{name}.js").write_text(source)
    ok(tmp, "deploy", "dispatcher", str(tmp / "dispatcher.js"))
    ok(tmp, "deploy", "gateway", str(tmp / "gateway.js"), "--var", "BLOCKED_HOST=blocked.example.com")
    ok(tmp, "secret", "put", "gateway", "API_TOKEN", input="platform-credential")
    ok(tmp, "deploy", "logs", str(tmp / "logs.js"), "--var", f"LOG_ENDPOINT={origin_server.url('/logs')}")
    ok(tmp, "deploy", "shop", str(tmp / "shop.js"))
    ok(tmp, "deploy", "spin", str(tmp / "spin.js"))
    ok(tmp, "egress", "set", "--allow", "127.0.0.1", "--allow", "blocked.example.com")
    ok(tmp, "outbound", "set", "gateway", "--param", "customer_name", "--param", "url")
    ok(tmp, "tail-consumer", "add", "logs", "--dispatcher")
    assert "JavaScript; the namespace is env.dispatcher" in ok(tmp, "dispatcher", "set", "dispatcher")
    listed = ok(tmp, "list")
    assert listed.splitlines()[0].split()[:5] == ["NAME", "VERSION", "TAGS", "LANGUAGE", "ABI"]
    assert all(" javascript " in line for line in listed.splitlines()[1:])
    server = start_server(tmp / "w.db", tmp)
    try:
        yield server
    finally:
        code = server.stop()
        assert code == 0, server.stderr()
        assert "Traceback" not in server.stderr(), server.stderr()


def test_the_dispatcher_passes_outbound_parameters_and_the_outbound_worker_adds_a_credential(seeded: Server, origin_server) -> None:
    response = seeded.get(f"/?url={origin_server.url('/echo')}", host="shop.example.com")
    assert response.status_code == 200, response.text
    assert response.text.startswith("200 ")
    seen = [s for s in origin_server.seen if s.path == "/echo"][-1]
    assert seen.headers["authorization"] == "Bearer platform-credential"  # replaced: the tenant never had it
    assert seen.headers["x-customer"] == "shop"
    assert seen.headers["x-dispatched-url"] == f"http://shop.example.com/?url={origin_server.url('/echo')}"


def test_a_blocked_host_is_answered_by_the_outbound_worker(seeded: Server) -> None:
    response = seeded.get("/?url=http://blocked.example.com/secrets", host="shop.example.com")
    assert (response.status_code, response.text) == (200, "403 blocked for shop: blocked.example.com")


def test_the_dispatchers_limits_stop_a_tenant_and_a_missing_one_is_404(seeded: Server) -> None:
    started = time.monotonic()
    response = seeded.get("/", host="spin.example.com")
    assert time.monotonic() - started < 10
    assert (response.status_code, response.text) == (500, "Worker exceeded CPU time limit.")
    assert response.headers["x-wasmdeck-outcome"] == "exceededCpu"  # the tenant's, behind the dispatcher
    missing = seeded.get("/", host="nobody.example.com")
    assert (missing.status_code, missing.text) == (404, "")
    assert seeded.get("/", host="shop.example.com").text == "tenant here"


def test_the_tail_worker_posts_the_events_to_its_logging_endpoint(seeded: Server, origin_server) -> None:
    seeded.get("/", host="shop.example.com", headers={"X-Marker": "tail-me"})
    deadline = time.monotonic() + 20
    batches: list[list[dict]] = []
    while time.monotonic() < deadline:
        batches = [json.loads(s.body) for s in origin_server.seen if s.path == "/logs" and s.method == "POST"]
        if any(item["event"]["request"]["headers"].get("x-marker") == "tail-me" for batch in batches for item in batch):
            break
        time.sleep(0.1)
    items = [item for batch in batches for item in batch if item["event"]["request"]["headers"].get("x-marker") == "tail-me"]
    assert {item["scriptName"] for item in items} == {"dispatcher", "shop"}  # the dispatcher's item and the tenant's
    for item in items:
        assert item["outcome"] == "ok" and item["event"]["response"]["status"] == 200
        assert item["dispatchNamespace"] == "default" and isinstance(item["eventTimestamp"], int)
        assert isinstance(item["logs"], list) and isinstance(item["exceptions"], list)

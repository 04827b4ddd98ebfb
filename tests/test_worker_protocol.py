"""The Worker protocol through the Engine: detection, fetch() with egress and subrequest
limits, Outbound Workers, dispatch Workers, Tail Workers, cpuMs accounting and every way a
guest can break the protocol. Guests are the committed fixtures/protocol/*.wasm builds."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import pytest

from wasmdeck.engine import DispatchTarget, Engine, InvalidInput, NotFound
from wasmdeck.engine.traces import TraceFilter, format_pretty

from .conftest import fixture_module, protocol_module


@pytest.fixture
def deploy_protocol(engine: Engine):
    def _deploy(fixture: str, name: str | None = None, **options):
        return engine.deploy(name or fixture, protocol_module(fixture), **options)

    return _deploy


def fetch_url(origin, path: str = "/", **query: str) -> str:
    extra = "".join(f"&{key}={quote(str(value), safe='')}" for key, value in query.items())
    return f"http://fetcher.example.com/?url={quote(origin.url(path), safe='')}{extra}"


async def traces_of(engine: Engine, worker: str) -> list[dict]:
    await engine.flush_tail_deliveries()
    await engine.flush_traces()
    return engine.recent_traces(100, TraceFilter(worker=worker))


# -- detection and settings ------------------------------------------------------------


async def test_deploy_detects_the_protocol_from_the_marker_export(engine, deploy_protocol):
    assert deploy_protocol("fetcher").abi == "protocol"
    assert engine.deploy("hello", fixture_module("hello")).abi == "wcgi"
    assert engine.deploy("forced", protocol_module("fetcher"), abi="wcgi").abi == "wcgi"
    with pytest.raises(InvalidInput, match="ABI 'grpc' is not one of wcgi, protocol"):
        engine.deploy("bad", protocol_module("fetcher"), abi="grpc")
    assert [w.name for w in engine.workers()] == ["fetcher", "forced", "hello"]


async def test_platform_roles_need_protocol_workers_that_exist(engine, deploy_protocol):
    engine.deploy("hello", fixture_module("hello"))
    for call in (
        lambda: engine.set_outbound("hello"),
        lambda: engine.set_dispatch_worker("hello"),
        lambda: engine.add_tail_consumer("hello"),
    ):
        with pytest.raises(InvalidInput, match="is a wcgi Worker; a .* must speak the Worker protocol"):
            call()
    with pytest.raises(NotFound, match="'ghost' does not exist"):
        engine.set_outbound("ghost")
    deploy_protocol("tail-collector")
    with pytest.raises(InvalidInput, match="cannot be its own tail consumer"):
        engine.add_tail_consumer("tail-collector", worker="tail-collector")
    namespace = engine.namespace()
    assert namespace.outbound is None and namespace.dispatch_worker is None
    assert engine.tail_consumers("default") == []


async def test_egress_entries_are_validated(engine):
    for bad in ("http://x.com", "x.com/path", "*x.com", "x.com:99999", "bad_host", "", "*.0.0.1"):
        with pytest.raises(InvalidInput):
            engine.set_egress(allow=[bad])
    namespace = engine.set_egress(allow=["API.example.com:8443", "*.example.org", "[::1]:80"], block=["*"])
    assert namespace.egress.as_dict() == {"allow": ["api.example.com:8443", "*.example.org", "[::1]:80"], "block": ["*"]}


# -- fetch() and egress ----------------------------------------------------------------


async def test_a_new_namespace_allows_no_egress(engine, deploy_protocol, origin):
    deploy_protocol("fetcher")
    response = await engine.request(fetch_url(origin))
    assert response.status == 200
    assert "1 error EgressBlocked:" in response.text
    assert "allows no hosts" in response.text
    assert origin.seen == []
    assert response.trace["subrequests"][0]["via"] == "refused"


async def test_fetch_reaches_an_allowed_origin_and_is_traced(engine, deploy_protocol, origin):
    deploy_protocol("fetcher")
    engine.set_egress(allow=[origin.netloc])
    response = await engine.request(fetch_url(origin, "/hello", count="2"))
    assert response.status == 200, response.text
    assert response.text.splitlines()[:2] == ["1 200 18", "2 200 18"]
    assert "body: origin: GET /hello" in response.text
    assert [seen.path for seen in origin.seen] == ["/hello", "/hello"]
    subrequests = response.trace["subrequests"]
    assert [(s["method"], s["status"], s["via"]) for s in subrequests] == [("GET", 200, "network")] * 2
    assert all(s["url"] == origin.url("/hello") and s["durationMs"] >= 0 for s in subrequests)
    assert response.trace["outcome"] == "ok"


async def test_block_list_wins_and_wildcards_match_subdomains_only(engine, deploy_protocol, origin):
    deploy_protocol("fetcher")
    engine.set_egress(allow=["*"], block=[f"127.0.0.1:{origin.port}"])
    response = await engine.request(fetch_url(origin))
    assert "error EgressBlocked" in response.text and "block list entry 127.0.0.1:" in response.text
    engine.set_egress(allow=["*.example.com"])
    response = await engine.request(fetch_url(origin))
    assert "error EgressBlocked" in response.text and "not on the allow list" in response.text
    engine.set_egress(allow=["127.0.0.1"])  # no port: any port
    response = await engine.request(fetch_url(origin))
    assert response.text.startswith("1 200")


async def test_the_subrequest_over_the_limit_fails_inside_the_guest(engine, deploy_protocol, origin):
    deploy_protocol("fetcher", tags=["free"])
    engine.set_egress(allow=[origin.netloc])
    engine.set_limits("free", sub_requests=2)
    response = await engine.request(fetch_url(origin, count="3"))
    assert response.status == 200
    lines = response.text.splitlines()
    assert lines[0].startswith("1 200") and lines[1].startswith("2 200")
    assert lines[2].startswith("3 error TooManySubrequests: this invocation may make at most 2 subrequests (limit from tag:free)")
    assert len(origin.seen) == 2
    assert [s["via"] for s in response.trace["subrequests"]] == ["network", "network", "refused"]


async def test_fetch_errors_are_answers_not_crashes(engine, deploy_protocol, origin):
    deploy_protocol("fetcher")
    engine.set_egress(allow=["127.0.0.1"])
    origin_port = origin.port
    response = await engine.request(f"http://fetcher.example.com/?url={quote('http://127.0.0.1:1/', safe='')}")
    assert "1 error NetworkError" in response.text
    response = await engine.request(f"http://fetcher.example.com/?url={quote('ftp://127.0.0.1/', safe='')}")
    assert "1 error InvalidRequest" in response.text
    assert response.trace["outcome"] == "ok"
    assert origin_port  # the origin itself was never involved


# -- Outbound Workers ------------------------------------------------------------------


async def test_outbound_worker_logs_every_subrequest_with_its_parameters(engine, deploy_protocol, origin):
    deploy_protocol("fetcher", tags=["pro"])
    deploy_protocol("outbound-logger")
    engine.set_egress(allow=[origin.netloc])
    engine.set_outbound("outbound-logger", [("customer_name", "{worker}/{namespace}/{tag:pro}")])
    response = await engine.request(fetch_url(origin, "/api"))
    assert response.text.startswith("1 200"), response.text
    assert response.trace["subrequests"][0]["via"] == "outbound"
    (hop,) = await traces_of(engine, "outbound-logger")
    assert hop["logs"][0]["message"] == [f"subrequest GET {origin.url('/api')} customer=fetcher/default/yes"]
    assert hop["subrequests"][0]["via"] == "network"  # its own fetch goes out, never back into itself
    assert hop["event"]["request"]["url"] == origin.url("/api")
    assert len(origin.seen) == 1


async def test_the_dispatcher_sets_outbound_parameters(db_path, wasmer_cache, origin):
    async with Engine(
        db_path, cache_dir=wasmer_cache, dispatch_function=lambda request, ns: DispatchTarget("fetcher", outbound={"customer_name": "acme"})
    ) as engine:
        engine.deploy("fetcher", protocol_module("fetcher"))
        engine.deploy("outbound-logger", protocol_module("outbound-logger"))
        engine.set_egress(allow=[origin.netloc])
        engine.set_outbound("outbound-logger", {"customer_name": "{worker}"})
        await engine.request(fetch_url(origin))
        (hop,) = await traces_of(engine, "outbound-logger")
        assert hop["logs"][0]["message"][0].endswith("customer=acme")
    async with Engine(
        db_path, cache_dir=wasmer_cache, dispatch_function=lambda request, ns: DispatchTarget("fetcher", outbound={"nope": "x"})
    ) as engine:
        with pytest.raises(InvalidInput, match="'nope' is not declared by the namespace's Outbound Worker"):
            await engine.request(fetch_url(origin))


async def test_outbound_allow_list_answers_403_itself(engine, deploy_protocol, origin):
    deploy_protocol("fetcher")
    deploy_protocol("outbound-allowlist", vars={"ALLOWED_HOSTS": "api.example.com,*.trusted.example"})
    engine.set_egress(allow=["*", origin.host])  # "*" does not open loopback; naming the address does
    engine.set_outbound("outbound-allowlist")
    response = await engine.request(fetch_url(origin))
    assert response.text.startswith("1 403"), response.text
    assert "body: blocked by outbound allow list: 127.0.0.1" in response.text
    assert origin.seen == []
    engine.set_vars("outbound-allowlist", {"ALLOWED_HOSTS": "api.example.com,127.0.0.1"})
    response = await engine.request(fetch_url(origin))
    assert response.text.startswith("1 200")


async def test_outbound_credential_is_added_where_the_user_worker_cannot_see_it(engine, deploy_protocol, origin):
    deploy_protocol("fetcher")
    deploy_protocol("outbound-credential", vars={"API_TOKEN": "s3cret-token", "BLOCKED_HOSTS": "evil.example.com"})
    engine.set_egress(allow=[origin.netloc, "evil.example.com"])
    engine.set_outbound("outbound-credential", ["customer_name"])
    response = await engine.request(fetch_url(origin, "/status/200"))
    assert response.text.startswith("1 200")
    assert origin.seen[0].headers["authorization"] == "Bearer s3cret-token"
    assert "s3cret-token" not in response.text
    assert "s3cret-token" not in json.dumps(response.trace)
    response = await engine.request(f"http://fetcher.example.com/?url={quote('http://evil.example.com/', safe='')}")
    assert response.text.startswith("1 403")


async def test_missing_failing_or_slow_outbound_workers_fail_the_fetch_clearly(engine, deploy_protocol, origin):
    deploy_protocol("fetcher")
    deploy_protocol("outbound-logger")
    engine.set_egress(allow=[origin.netloc])
    engine.set_outbound("outbound-logger")
    engine.delete("outbound-logger")
    response = await engine.request(fetch_url(origin))
    assert "1 error OutboundError: the namespace's Outbound Worker 'outbound-logger' is not deployed" in response.text

    deploy_protocol("proto-misbehave", "outbound-logger")  # "mode" is missing from the subrequest: it fails
    response = await engine.request(fetch_url(origin, "/?mode=exception"))
    assert "1 error OutboundError: the Outbound Worker 'outbound-logger' failed" in response.text

    deploy_protocol("outbound-logger")
    engine.set_limits("slow", wall_ms=400)
    engine.set_tags("fetcher", ["slow"])
    started = time.perf_counter()
    response = await engine.request(fetch_url(origin, "/slow", ms="3000"))
    assert time.perf_counter() - started < 2.5
    assert response.trace["outcome"] in ("exceededWallTime", "ok")
    assert response.status in (503, 200)


# -- dispatch Workers --------------------------------------------------------------------


@pytest.fixture
def platform(engine: Engine, deploy_protocol, origin):
    deploy_protocol("dispatcher")
    deploy_protocol("fetcher", "shop", tags=["free"])
    deploy_protocol("proto-misbehave", "spinner", tags=["free"])
    engine.deploy("hello", fixture_module("hello"), tags=["pro"])
    engine.set_limits("free", cpu_ms=200, sub_requests=3)
    engine.set_egress(allow=[origin.netloc])
    engine.set_dispatch_worker("dispatcher")
    return engine


async def test_dispatch_worker_answers_itself_or_routes(platform, origin):
    response = await platform.request("http://anything.example.com/__dispatcher/health")
    assert (response.status, response.text) == (200, "dispatcher ok")
    response = await platform.request("http://hello.example.com/")
    assert response.status == 200 and response.text == "Hello from wasmdeck!\n"
    assert response.header("x-dispatched-by") == "dispatcher"
    # the request's trace is the user Worker's; the dispatch Worker's item is beside it
    assert response.trace["scriptName"] == "hello" and response.dispatcher_trace is not None
    assert response.dispatcher_trace["scriptName"] == "dispatcher"
    response = await platform.request("http://anything.example.com/__dispatcher/health")
    assert response.trace["scriptName"] == "dispatcher" and response.dispatcher_trace is response.trace
    response = await platform.request(fetch_url(origin).replace("fetcher.", "shop."))
    assert response.text.startswith("1 200")


async def test_dispatch_worker_catches_worker_not_found(platform):
    response = await platform.request("http://nobody.example.com/")
    assert (response.status, response.text) == (404, "no such tenant: nobody")
    outcomes = {item["scriptName"]: item["outcome"] for item in await traces_of(platform, "")}
    assert outcomes == {"dispatcher": "ok", "nobody": "scriptNotFound"}


async def test_dispatch_worker_tells_limit_outcomes_apart_and_can_only_tighten(platform):
    response = await platform.request("http://spinner.example.com/?mode=spin")
    assert response.status == 503
    assert json.loads(response.text) == {"error": "tenant limit", "outcome": "exceededCpu", "tenant": "spinner"}
    (spin,) = [i for i in await traces_of(platform, "spinner")]
    assert "limit from tag:free" in spin["exceptions"][0]["message"]
    platform.set_vars("dispatcher", {"CPU_MS": "100000"})  # looser than the tag: ignored
    response = await platform.request("http://spinner.example.com/?mode=spin")
    assert json.loads(response.text)["outcome"] == "exceededCpu"
    assert "limit from tag:free" in (await traces_of(platform, "spinner"))[-1]["exceptions"][0]["message"]
    platform.set_vars("dispatcher", {"CPU_MS": "50"})  # tighter: applies
    response = await platform.request("http://spinner.example.com/?mode=spin")
    assert "limit from dispatch" in (await traces_of(platform, "spinner"))[-1]["exceptions"][0]["message"]


async def test_dispatch_worker_cannot_dispatch_to_itself(platform):
    # the dispatch Worker is a platform Worker, no tenant: its dispatch("dispatcher") finds no Worker
    response = await platform.request("http://dispatcher.example.com/")
    assert (response.status, response.text) == (404, "no such tenant: dispatcher")
    items = await traces_of(platform, "dispatcher")
    assert sorted(item["outcome"] for item in items) == ["ok", "scriptNotFound"]  # one invocation of it, no loop


async def test_a_missing_dispatch_worker_is_a_clear_500(platform):
    platform.delete("dispatcher")
    response = await platform.request("http://hello.example.com/")
    assert response.status == 500
    assert "dispatch Worker 'dispatcher' is not deployed" in response.text
    platform.set_dispatch_worker(None)
    assert (await platform.request("http://hello.example.com/")).status == 200


# -- Tail Workers ------------------------------------------------------------------------


async def test_tail_worker_of_one_worker_gets_its_items_after_the_response(engine, deploy_protocol):
    engine.deploy("hello", fixture_module("hello"))
    engine.deploy("other", fixture_module("hello"))
    deploy_protocol("tail-collector")
    engine.add_tail_consumer("tail-collector", worker="hello")
    await engine.request("http://hello.example.com/")
    await engine.request("http://other.example.com/")
    (item,) = await traces_of(engine, "tail-collector")
    assert item["event"]["consumedEvents"] == [{"scriptName": "hello"}]
    assert item["logs"][0]["message"] == ["tail hello ok 200"]
    assert item["outcome"] == "ok"


async def test_namespace_consumer_posts_batches_and_never_gets_its_own_items(engine, deploy_protocol, origin):
    engine.deploy("hello", fixture_module("hello"))
    deploy_protocol("tail-collector", vars={"TAIL_SINK_URL": origin.url("/sink")})
    engine.set_egress(allow=[origin.netloc])
    engine.add_tail_consumer("tail-collector")
    for _ in range(3):
        await engine.request("http://hello.example.com/")
    # a Tail Worker is no tenant: a request for it ends scriptNotFound, and that item is not delivered to it
    assert (await engine.request("http://tail-collector.example.com/")).status == 404
    consumer_items = await traces_of(engine, "tail-collector")
    delivered = [event for item in consumer_items if "consumedEvents" in item["event"] for event in item["event"]["consumedEvents"]]
    assert delivered == [{"scriptName": "hello"}] * 3
    posted = [json.loads(seen.body) for seen in origin.seen if seen.path == "/sink"]
    assert [i["scriptName"] for batch in posted for i in batch] == ["hello"] * 3


async def test_a_failing_tail_worker_never_fails_the_producer(engine, deploy_protocol):
    engine.deploy("hello", fixture_module("hello"))
    deploy_protocol("tail-collector", vars={"TAIL_FAIL": "1"})
    engine.add_tail_consumer("tail-collector", worker="hello")
    response = await engine.request("http://hello.example.com/")
    assert response.status == 200 and response.trace["outcome"] == "ok"
    (item,) = await traces_of(engine, "tail-collector")
    assert item["outcome"] == "exception"
    assert item["exceptions"][0]["name"] == "TailFailed"


async def test_dispatcher_consumer_gets_both_items_of_each_request(platform, deploy_protocol):
    deploy_protocol("tail-collector")
    platform.add_tail_consumer("tail-collector", dispatcher=True)
    await platform.request("http://hello.example.com/")
    (item,) = await traces_of(platform, "tail-collector")
    assert item["event"]["consumedEvents"] == [{"scriptName": "dispatcher"}, {"scriptName": "hello"}]


# -- cpuMs, wall time and broken guests ----------------------------------------------------


async def test_cpu_time_leaves_out_waits_for_fetch_replies(engine, deploy_protocol, origin):
    deploy_protocol("proto-misbehave", tags=["tight"])
    engine.set_egress(allow=[origin.netloc])
    engine.set_limits("tight", cpu_ms=300, wall_ms=10_000)
    url = quote(origin.url("/slow?ms=500"), safe="")
    response = await engine.request(f"http://proto-misbehave.example.com/?mode=sleep-fetches&count=3&url={url}")
    assert response.status == 200, response.text
    assert response.trace["outcome"] == "ok"  # 1.5 s of waiting did not count against 300 ms of CPU
    assert response.trace["wallTime"] >= 1500
    assert response.trace["cpuTime"] < 300


BROKEN = {
    "garbage": ("exception", "wrote text to stdout instead of protocol frames"),
    "oversize-meta": ("exception", "over the 1048576 byte limit"),
    "oversize-body": ("exception", "over the 10485760 byte limit"),
    "bad-json": ("exception", "meta is not JSON"),
    "unknown-type": ("exception", "unknown type 'bogus'"),
    "no-final": ("exception", "exited before sending its final frame"),
    "log-after-response": ("exception", "after its final frame"),
    "exception": ("exception", "it broke"),
    "exit1": ("exception", "exited with status 1"),
    "trap": ("exception", "unreachable"),
}


@pytest.mark.parametrize("mode", sorted(BROKEN))
async def test_a_guest_that_breaks_the_protocol_ends_with_a_clear_exception(engine, deploy_protocol, mode):
    deploy_protocol("proto-misbehave")
    engine.deploy("hello", fixture_module("hello"))
    response = await engine.request(f"http://proto-misbehave.example.com/?mode={mode}")
    outcome, message = BROKEN[mode]
    assert response.trace["outcome"] == outcome
    assert response.status in (500, 502)
    assert any(message in f"{e['name']}: {e['message']}" for e in response.trace["exceptions"]), response.trace["exceptions"]
    assert (await engine.request("http://hello.example.com/")).status == 200  # everyone else is still served


@pytest.mark.parametrize("mode", ["hang", "close-stdout"])
async def test_a_guest_that_never_answers_hits_its_wall_time(engine, deploy_protocol, mode):
    deploy_protocol("proto-misbehave", tags=["short"])
    engine.set_limits("short", wall_ms=300)
    started = time.perf_counter()
    response = await engine.request(f"http://proto-misbehave.example.com/?mode={mode}")
    assert time.perf_counter() - started < 3
    assert response.trace["outcome"] in ("exceededWallTime", "exception")
    assert response.status in (502, 503)


async def test_a_spinning_guest_hits_its_cpu_limit(engine, deploy_protocol):
    deploy_protocol("proto-misbehave", tags=["tight"])
    engine.set_limits("tight", cpu_ms=100)
    response = await engine.request("http://proto-misbehave.example.com/?mode=spin")
    assert response.status == 503 and response.trace["outcome"] == "exceededCpu"


async def test_large_bodies_and_many_logs(engine, deploy_protocol):
    deploy_protocol("proto-misbehave")
    response = await engine.request("http://proto-misbehave.example.com/?mode=big-response")
    assert response.status == 200 and len(response.body) == 5 * 1024 * 1024
    response = await engine.request("http://proto-misbehave.example.com/?mode=many-logs")
    assert response.status == 200 and len(response.trace["logs"]) == 1000


async def test_a_user_worker_cannot_call_dispatch(engine, deploy_protocol):
    deploy_protocol("dispatcher", "not-the-dispatcher")
    engine.deploy("hello", fixture_module("hello"))
    response = await engine.request("http://hello.example.com/", namespace="default")
    assert response.status == 200
    # fronted by nothing, the dispatcher fixture runs as a user Worker: its dispatch call is refused
    response = await engine.request("http://not-the-dispatcher.example.com/")
    assert response.status >= 400
    assert [i["scriptName"] for i in await traces_of(engine, "hello")] == ["hello"]


async def test_an_oversized_origin_response_is_a_fetch_error(engine, deploy_protocol, origin):
    deploy_protocol("fetcher")
    engine.set_egress(allow=[origin.netloc])
    response = await engine.request(fetch_url(origin, "/big?mb=11"))
    assert "1 error ResponseTooLarge: the response from" in response.text
    assert "over the 10 MiB limit" in response.text
    response = await engine.request(fetch_url(origin, "/big?mb=2"))
    assert response.text.startswith(f"1 200 {2 * 1024 * 1024}")


async def test_pretty_traces_show_subrequests_and_tail_events(engine, deploy_protocol, origin):
    deploy_protocol("fetcher")
    deploy_protocol("tail-collector")
    engine.add_tail_consumer("tail-collector", worker="fetcher")
    engine.set_egress(allow=[origin.netloc])
    response = await engine.request(fetch_url(origin, "/x"))
    pretty = format_pretty(response.trace)
    assert f"  -> GET {origin.url('/x')} 200 (" in pretty and "ms via network)" in pretty
    (tail_item,) = await traces_of(engine, "tail-collector")
    assert format_pretty(tail_item).startswith("Tail of 1 event(s) (tail-collector) - Ok @ ")


async def test_dispatch_calls_with_bad_options_are_refused_and_a_given_request_is_sent(engine: Engine, deploy_protocol):
    deploy_protocol("sdk-probe", "probe")
    deploy_protocol("outbound-logger")
    engine.deploy("echo", fixture_module("echo"))
    engine.set_outbound("outbound-logger", ["customer_name"])
    engine.set_dispatch_worker("probe")

    async def dispatched(query: str) -> dict:
        response = await engine.request(f"http://any.example.com/?case=dispatch&{query}")
        return json.loads(response.header("x-result") or response.text)

    for query, message in (
        ("name=Not_A_Label", "is not a DNS label"),
        ("name=echo&cpu=0", "cpuMs must be between 1 and 300000"),
        ("name=echo&param=nope:x", "'nope' is not declared by the namespace's Outbound Worker"),
    ):
        result = await dispatched(query)
        assert result["errorName"] == "InvalidRequest", result
        assert message in result["errorMessage"]
    result = await dispatched(f"name=echo&own={quote('http://echo.example.com/given?x=1', safe='')}")
    assert result["outcome"] == "ok" and result["status"] == 200
    (echo,) = await traces_of(engine, "echo")
    assert echo["event"]["request"]["method"] == "PUT" and echo["event"]["request"]["url"] == "http://echo.example.com/given?x=1"


async def test_concurrent_fetches_through_the_outbound_worker_all_complete(engine: Engine, deploy_protocol, origin):
    import asyncio

    deploy_protocol("fetcher")
    deploy_protocol("outbound-logger")
    engine.set_egress(allow=[origin.netloc])
    engine.set_outbound("outbound-logger", ["customer_name"])
    url = fetch_url(origin, "/c", count="2")
    gate = asyncio.Semaphore(16)

    async def one() -> tuple[int, str]:
        async with gate:
            response = await engine.request(url)
            return response.status, response.text

    answers = await asyncio.gather(*(one() for _ in range(120)))
    assert all(status == 200 and text.startswith("1 200 14\n2 200 14\n") for status, text in answers), answers[:3]
    assert len(origin.seen) == 240
    assert engine.runtime.running == 0 and engine.runtime.waiting == 0


async def test_a_python_dispatch_function_can_tighten_subrequests(db_path, wasmer_cache, origin):
    target = DispatchTarget("fetcher", limits={"subRequests": 1})
    async with Engine(db_path, cache_dir=wasmer_cache, dispatch_function=lambda request, ns: target) as engine:
        engine.deploy("fetcher", protocol_module("fetcher"))
        engine.set_egress(allow=[origin.netloc])
        response = await engine.request(fetch_url(origin, count="2"))
        lines = response.text.splitlines()
        assert lines[0].startswith("1 200")
        assert lines[1].startswith("2 error TooManySubrequests: this invocation may make at most 1 subrequest (limit from dispatch)")

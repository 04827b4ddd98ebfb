"""Dispatch through the Python API: routing, WCGI, outcomes, traces."""

from __future__ import annotations

import json

import pytest

from wasmdeck.engine import DispatchTarget, Engine, Limits, Request, Response

from .conftest import fixture_module


async def test_hello_answers_through_host_routing(engine: Engine, deploy) -> None:
    deploy("hello")
    response = await engine.request("http://hello.example.com/")
    assert response.status == 200
    assert response.text == "Hello from wasmdeck!\n"
    assert response.header("content-type") == "text/plain"
    assert response.trace["outcome"] == "ok"
    assert response.trace["scriptName"] == "hello"
    assert response.trace["logs"][0]["level"] == "info"


async def test_unknown_worker_is_404_script_not_found(engine: Engine) -> None:
    response = await engine.request("http://nobody.example.com/")
    assert response.status == 404
    assert response.text.startswith("Worker not found")
    assert response.trace["outcome"] == "scriptNotFound"
    assert response.trace["scriptName"] == "nobody"


async def test_host_header_wins_over_url_host(engine: Engine, deploy) -> None:
    deploy("hello")
    response = await engine.dispatch(Request("http://127.0.0.1:8787/", headers=[("Host", "hello.tenants.example:8787")]))
    assert response.status == 200


async def test_cgi_environment_and_body(engine: Engine, deploy) -> None:
    deploy("echo", vars={"PLAN": "pro"})
    response = await engine.request(
        "https://echo.example.com:8443/some%20path/x?a=1&b=two",
        method="POST",
        headers=[("Content-Type", "application/json"), ("X-Custom", "yes"), ("X-Custom", "again"), ("Accept", "*/*")],
        body=b'{"hello": "world"}',
    )
    assert response.status == 200
    echoed = response.json()
    env = echoed["env"]
    assert env["REQUEST_METHOD"] == "POST"
    assert env["PATH_INFO"] == "/some path/x"
    assert env["QUERY_STRING"] == "a=1&b=two"
    assert env["SCRIPT_NAME"] == ""
    assert env["SERVER_NAME"] == "echo.example.com"
    assert env["SERVER_PORT"] == "8443"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert env["CONTENT_TYPE"] == "application/json"
    assert env["CONTENT_LENGTH"] == "18"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["HTTPS"] == "on"
    assert env["HTTP_X_CUSTOM"] == "yes, again"
    assert env["HTTP_ACCEPT"] == "*/*"
    assert "HTTP_CONTENT_TYPE" not in env
    assert env["PLAN"] == "pro"
    assert echoed["body"] == '{"hello": "world"}'


async def test_underscore_and_proxy_headers_are_dropped(engine: Engine, deploy) -> None:
    deploy("echo")
    response = await engine.request("http://echo.x/", headers=[("X_Spoof", "1"), ("Proxy", "http://evil")])
    env = response.json()["env"]
    assert "HTTP_X_SPOOF" not in env and "HTTP_PROXY" not in env


async def test_status_location_and_extra_headers(engine: Engine, deploy) -> None:
    deploy("echo")
    deploy("misbehave")
    not_found = await engine.request("http://echo.x/?status=418&header=X-Tea:Earl%20Grey")
    assert not_found.status == 418
    assert not_found.header("x-tea") == "Earl Grey"
    redirect = await engine.request("http://misbehave.x/?mode=redirect")
    assert redirect.status == 302
    assert redirect.header("location") == "/elsewhere"
    assert redirect.trace["outcome"] == "ok"


@pytest.mark.parametrize(
    ("query", "status", "needle"),
    [
        ("mode=noheader", 502, "no CGI header block"),
        ("mode=nocontenttype", 502, "neither a Content-Type nor a Location"),
        ("mode=badstatus", 502, "invalid Status"),
        ("mode=exit", 500, "exited with status 3"),
    ],
)
async def test_bad_guest_output_is_an_exception(engine: Engine, deploy, query: str, status: int, needle: str) -> None:
    deploy("misbehave")
    response = await engine.request(f"http://misbehave.x/?{query}")
    assert response.status == status
    assert needle in response.text
    assert response.trace["outcome"] == "exception"
    assert needle in response.trace["exceptions"][0]["message"]


async def test_trap_is_exception_with_backtrace(engine: Engine, deploy) -> None:
    deploy("trap")
    response = await engine.request("http://trap.x/")
    assert response.status == 500
    assert "trapped" in response.text
    exception = response.trace["exceptions"][0]
    assert exception["name"] == "WasmTrap"
    assert "unreachable" in exception["message"] and "explode_on_purpose" in exception["message"]
    assert response.trace["outcome"] == "exception"


async def test_response_over_size_limit(db_path, wasmer_cache, tmp_path) -> None:
    async with Engine(db_path, cache_dir=wasmer_cache, max_response_bytes=64 * 1024) as engine:
        engine.deploy("misbehave", fixture_module("misbehave"))
        small = await engine.request("http://misbehave.x/?mode=bigbody&kb=32")
        assert small.status == 200 and len(small.body) == 32 * 1024
        big = await engine.request("http://misbehave.x/?mode=bigbody&kb=512")
        assert big.status == 502
        assert "exceeds" in big.text
        assert big.trace["outcome"] == "exception"


async def test_stderr_lines_become_leveled_logs(engine: Engine, deploy) -> None:
    deploy("logger")
    response = await engine.request("http://logger.x/?lines=3")
    levels = [entry["level"] for entry in response.trace["logs"]]
    assert levels[:6] == ["debug", "info", "log", "warn", "error", "log"]
    assert response.trace["logs"][-1]["message"] == ["line 3 of 3"]
    assert all(isinstance(entry["timestamp"], int) for entry in response.trace["logs"])


async def test_log_flood_is_truncated_not_fatal(engine: Engine, deploy) -> None:
    deploy("misbehave")
    response = await engine.request("http://misbehave.x/?mode=stderrflood&lines=5000")
    assert response.status == 200
    assert response.trace["truncated"] is True
    assert len(response.trace["logs"]) <= 1000


async def test_trace_item_shape_and_redaction(engine: Engine, deploy) -> None:
    deploy("hello", tags=["free", "eu"])
    response = await engine.request(
        "http://hello.x/path?q=1",
        headers={
            "Authorization": "Bearer s3cret",
            "Cookie": "a=b",
            "X-Api-Key": "k",
            "X-JWT-Assertion": "j",
            "X-Client-Secret": "s",
            "X-Auth-Token": "t",
            "X-Plain": "visible",
        },
    )
    trace = response.trace
    assert set(trace) >= {
        "scriptName", "scriptTags", "dispatchNamespace", "outcome", "eventTimestamp", "cpuTime", "wallTime",
        "event", "logs", "exceptions", "truncated",
    }
    assert trace["scriptTags"] == ["free", "eu"]
    assert trace["dispatchNamespace"] == "default"
    assert trace["event"]["request"]["url"] == "http://hello.x/path?q=1"
    assert trace["event"]["request"]["method"] == "GET"
    assert trace["event"]["response"] == {"status": 200}
    headers = trace["event"]["request"]["headers"]
    for name in ("authorization", "cookie", "x-api-key", "x-jwt-assertion", "x-client-secret", "x-auth-token"):
        assert headers[name] == "REDACTED", name
    assert headers["x-plain"] == "visible"
    assert trace["wallTime"] >= trace["cpuTime"] >= 0
    json.dumps(trace)  # plain JSON all the way down


async def test_head_has_no_body(engine: Engine, deploy) -> None:
    deploy("hello")
    response = await engine.request("http://hello.x/", method="HEAD")
    assert response.status == 200 and response.body == b""


async def test_path_routing_namespace(engine: Engine) -> None:
    engine.create_namespace("paths", routing="path")
    engine.deploy("echo", fixture_module("echo"), namespace="paths")
    response = await engine.request("http://anything.example/echo/deep/er?x=1", namespace="paths")
    env = response.json()["env"]
    assert env["SCRIPT_NAME"] == "/echo"
    assert env["PATH_INFO"] == "/deep/er"
    assert env["QUERY_STRING"] == "x=1"
    missing = await engine.request("http://anything.example/", namespace="paths")
    assert missing.status == 404 and missing.text.startswith("Worker not found")


async def test_namespaces_are_separate(engine: Engine) -> None:
    engine.create_namespace("staging")
    engine.deploy("hello", fixture_module("hello"), vars={"GREETING": "prod"})
    engine.deploy("hello", fixture_module("hello"), namespace="staging", vars={"GREETING": "staging"})
    assert (await engine.request("http://hello.x/")).text == "prod\n"
    staged = await engine.request("http://hello.x/", namespace="staging")
    assert staged.text == "staging\n"
    assert staged.trace["dispatchNamespace"] == "staging"


async def test_dispatch_function_picks_worker_and_tightens_limits(db_path, wasmer_cache) -> None:
    seen: list[str] = []

    def dispatcher(request: Request, namespace) -> object:
        seen.append(request.url)
        customer = request.header("x-customer")
        if customer == "slow":
            return DispatchTarget("burn", limits={"cpuMs": 30})
        if customer == "loose":
            return DispatchTarget("burn", limits=Limits(cpu_ms=100_000))
        if customer == "self":
            return Response(204, [("X-Answered-By", "dispatcher")])
        return customer

    async with Engine(db_path, cache_dir=wasmer_cache, dispatch_function=dispatcher) as engine:
        engine.deploy("burn", fixture_module("burn"), tags=["free"])
        engine.deploy("hello", fixture_module("hello"))
        engine.set_limits("free", cpu_ms=300)
        assert (await engine.request("http://whatever/", headers={"X-Customer": "hello"})).status == 200
        tight = await engine.request("http://whatever/?ms=150", headers={"X-Customer": "slow"})
        assert tight.status == 503 and tight.trace["outcome"] == "exceededCpu"
        assert "dispatch" in tight.json()["detail"]
        # a dispatcher can only tighten: asking for more than the tag allows keeps the tag's 300 ms
        loose = await engine.request("http://whatever/?ms=600", headers={"X-Customer": "loose"})
        assert loose.status == 503 and "tag:free" in loose.json()["detail"]
        answered = await engine.request("http://whatever/", headers={"X-Customer": "self"})
        assert answered.status == 204 and answered.header("x-answered-by") == "dispatcher"
        missing = await engine.request("http://whatever/", headers={"X-Customer": "ghost"})
        assert missing.status == 404 and missing.trace["outcome"] == "scriptNotFound"
        nothing = await engine.request("http://whatever/")
        assert nothing.status == 404
    assert len(seen) == 6


async def test_async_dispatch_function(db_path, wasmer_cache) -> None:
    async def dispatcher(request: Request, namespace) -> str:
        return request.url.rsplit("/", 1)[-1]

    async with Engine(db_path, cache_dir=wasmer_cache, dispatch_function=dispatcher) as engine:
        engine.deploy("hello", fixture_module("hello"))
        assert (await engine.request("http://x/hello")).status == 200


@pytest.mark.parametrize(
    "bad",
    [
        dict(url="not a url"),
        dict(url="ftp://hello.x/"),
        dict(url="http:///nohost"),
        dict(url="http://hello.x:99999/"),
        dict(url="http://hello.x/", headers=[("Bad Name", "x")]),
        dict(url="http://hello.x/", headers=[("X-Split", "a\r\nInjected: yes")]),
        dict(url="http://hello.x/", method="GE T"),
    ],
)
def test_malformed_requests_are_refused(bad: dict) -> None:
    from wasmdeck.engine import InvalidInput

    with pytest.raises(InvalidInput):
        Request(**bad)


async def test_log_lines_before_a_trap(engine: Engine, deploy) -> None:
    deploy("trap")
    first = await engine.request("http://trap.x/")
    # the fast path keeps nothing a trapping guest wrote: nothing was cut, so nothing is marked
    # truncated, and no log line is made up; the trap's exception says why its lines are missing
    assert first.trace["truncated"] is False and first.trace["logs"] == []
    (trap,) = first.trace["exceptions"]
    assert trap["name"] == "WasmTrap" and trap["message"].startswith("RuntimeError: unreachable")
    assert "first trap" in trap["message"] and "from its next trap on its log lines are" in trap["message"]
    # from the first trap on, the module runs on the path that keeps what it wrote
    second = await engine.request("http://trap.x/")
    assert {"level": "error", "message": ["about to trap in explode_on_purpose"]} in [
        {"level": log["level"], "message": log["message"]} for log in second.trace["logs"]
    ]
    assert second.trace["truncated"] is False and len(second.trace["logs"]) == 1
    assert "first trap" not in second.trace["exceptions"][0]["message"]


async def test_always_keep_trap_logs(db_path, wasmer_cache) -> None:
    async with Engine(db_path, cache_dir=wasmer_cache, always_keep_trap_logs=True) as engine:
        engine.deploy("trap", fixture_module("trap"))
        engine.deploy("echo", fixture_module("echo"))
        first = await engine.request("http://trap.x/")
        assert first.trace["logs"][0]["message"] == ["about to trap in explode_on_purpose"]
        # a trap item with its one log line: nothing was cut
        assert len(first.trace["logs"]) == 1 and first.trace["truncated"] is False
        assert "first trap" not in first.trace["exceptions"][0]["message"]
        # the piped path still carries bodies both ways
        echoed = await engine.request("http://echo.x/", method="POST", body=b"x" * 200_000)
        assert echoed.json()["bodyLength"] == 200_000


async def test_each_request_sees_exactly_its_own_environment(engine: Engine, deploy) -> None:
    deploy("echo", vars={"A": "1", "B": "2"})
    first = (await engine.request("http://echo.x/one?q=1", method="POST", body=b"x", headers={"X-First": "yes"})).json()["env"]
    second = (await engine.request("https://echo.other.host:8443/two")).json()["env"]
    assert (first["REQUEST_METHOD"], first["PATH_INFO"], first["QUERY_STRING"], first["HTTP_X_FIRST"]) == ("POST", "/one", "q=1", "yes")
    assert (second["REQUEST_METHOD"], second["PATH_INFO"], second["QUERY_STRING"]) == ("GET", "/two", "")
    assert (second["SERVER_NAME"], second["SERVER_PORT"], second["HTTPS"]) == ("echo.other.host", "8443", "on")
    assert "HTTP_X_FIRST" not in second and "CONTENT_LENGTH" not in second and "CONTENT_TYPE" not in second
    engine.set_vars("echo", {"B": "3"})
    third = (await engine.request("http://echo.x/")).json()["env"]
    assert third["B"] == "3" and "A" not in third
    assert "HTTPS" not in third

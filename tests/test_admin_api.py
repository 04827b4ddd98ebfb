"""The admin API (`server.admin_app`, `server.auth`): contract tests in-process over httpx's ASGI
transport, plus one test over real loopback HTTP with uvicorn in a subprocess."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from wasmdeck.engine import Engine, Limits
from wasmdeck.server.admin_app import OPENAPI, DispatchListener, create_admin_app
from wasmdeck.server.auth import TokenFileError, default_token_path, load_or_create_token, token_matches

from .conftest import ROOT, fixture_module, protocol_module

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HELLO = fixture_module("hello").read_bytes()


@pytest.fixture
async def client(engine: Engine):
    app = create_admin_app(engine, TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin", headers=AUTH) as c:
        yield c


def upload(metadata: Any = None, module: bytes | None = HELLO, *, raw_metadata: str | None = None,
           part: str = "module") -> dict[str, Any]:
    data = {}
    if raw_metadata is not None:
        data["metadata"] = raw_metadata
    elif metadata is not None:
        data["metadata"] = json.dumps(metadata)
    files = {part: ("w.wasm", module, "application/wasm")} if module is not None else None
    return {"data": data, "files": files} if files else {"data": data, "files": {"other": ("x.txt", b"x", "text/plain")}}


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is True and body["errors"] == []
    return body["result"]


def error(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["result"] is None and len(body["errors"]) == 1
    err = body["errors"][0]
    assert err["message"] and "\n" not in err["message"]  # one sentence
    assert err.get("field") == field, err
    return err


def snapshot(engine: Engine) -> Any:
    return (
        [ns.as_dict() for ns in engine.namespaces()],
        [(w.namespace, w.name, w.version, w.tags) for ns in engine.namespaces() for w in engine.workers(ns.name)],
        {tag: limits.as_dict() for tag, limits in engine.limits().items()},
    )


# --- auth ----------------------------------------------------------------------------

EVERY_CALL = [
    ("GET", "/namespaces", None), ("POST", "/namespaces", {"name": "evil"}),
    ("GET", "/namespaces/default", None), ("DELETE", "/namespaces/other", None),
    ("PATCH", "/namespaces/default", {"routing": "path"}), ("GET", "/namespaces/default/stats", None),
    ("GET", "/namespaces/default/instances", None), ("GET", "/instances", None),
    ("GET", "/namespaces/default/scripts", None), ("DELETE", "/namespaces/default/scripts?tags=free:yes", None),
    ("PUT", "/namespaces/default/scripts/hello", "multipart"), ("GET", "/namespaces/default/scripts/hello", None),
    ("DELETE", "/namespaces/default/scripts/hello", None), ("GET", "/namespaces/default/scripts/hello/content", None),
    ("GET", "/namespaces/default/scripts/hello/tags", None), ("PUT", "/namespaces/default/scripts/hello/tags", ["x"]),
    ("GET", "/namespaces/default/scripts/hello/versions", None),
    ("GET", "/namespaces/default/scripts/hello/secrets", None),
    ("PUT", "/namespaces/default/scripts/hello/secrets/TOKEN", {"value": "v"}),
    ("DELETE", "/namespaces/default/scripts/hello/secrets/TOKEN", None),
    ("GET", "/namespaces/default/scripts/hello/limits", None),
    ("GET", "/namespaces/default/scripts/hello/vars", None), ("PUT", "/namespaces/default/scripts/hello/vars", {"A": "b"}),
    ("PATCH", "/namespaces/default/scripts/hello/settings", {"tags": ["x"]}),
    ("POST", "/namespaces/default/scripts/hello/rollback", {"version": 1}),
    ("GET", "/limits", None), ("PUT", "/limits/free", {"cpuMs": 1}), ("DELETE", "/limits/free", None),
    ("GET", "/traces", None), ("GET", "/server", None),
    ("PUT", "/namespaces/default/dispatcher", {"worker": "hello"}), ("DELETE", "/namespaces/default/dispatcher", None),
    ("PUT", "/namespaces/default/outbound", {"service": "hello"}), ("DELETE", "/namespaces/default/outbound", None),
    ("PUT", "/namespaces/default/egress", {"allow": ["*"]}),
    ("GET", "/namespaces/default/tail-consumers", None), ("POST", "/namespaces/default/tail-consumers", {"consumer": "hello"}),
    ("DELETE", "/namespaces/default/tail-consumers/hello", None),
    ("GET", "/openapi.json", None), ("GET", "/no/such/path", None), ("POST", "/limits", None),
]


def test_every_openapi_path_is_in_the_auth_table() -> None:
    covered = {(m, p.split("?")[0]) for m, p, _ in EVERY_CALL}
    for path, item in OPENAPI["paths"].items():
        concrete = path.replace("{ns}", "default").replace("{name}", "hello").replace("{tag}", "free").replace("{consumer}", "hello")
        concrete = concrete.replace("{secret}", "TOKEN")
        for method in item:
            assert (method.upper(), concrete) in covered or (method.upper(), concrete.replace("default", "other")) in covered


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": TOKEN}])
async def test_every_call_needs_the_token_and_changes_nothing(engine: Engine, headers: dict[str, str]) -> None:
    engine.create_namespace("other")
    engine.deploy("hello", HELLO, tags=["free"])
    engine.set_limits("free", cpu_ms=100)
    before = snapshot(engine)
    app = create_admin_app(engine, TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin") as anonymous:
        for method, path, body in EVERY_CALL:
            kwargs: dict[str, Any] = {"headers": headers}
            if body == "multipart":
                kwargs.update(upload({"tags": ["x"]}))
            elif body is not None:
                kwargs["json"] = body
            response = await anonymous.request(method, path, **kwargs)
            err = error(response, 401)
            assert err["code"] == "unauthorized"
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert snapshot(engine) == before
    assert len(engine.versions("hello")) == 1


def test_token_file_is_created_0600_and_reused(tmp_path: Path) -> None:
    path = default_token_path(tmp_path / "w.db")
    assert path.name == "w.db.admin-token"
    token, created = load_or_create_token(path)
    assert created and len(token) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(path) == (token, False)
    assert [p.name for p in tmp_path.iterdir()] == ["w.db.admin-token"]  # no temporary file left behind
    assert token_matches(token, f"Bearer {token}") and not token_matches(token, f"Bearer {token}x")
    assert not token_matches(token, None) and not token_matches(token, token)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_an_open_token_file_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "t"
    load_or_create_token(path)
    os.chmod(path, mode)
    with pytest.raises(TokenFileError, match="accessible to other users"):
        load_or_create_token(path)


def test_an_empty_token_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.touch(mode=0o600)
    with pytest.raises(TokenFileError, match="empty"):
        load_or_create_token(path)


# --- namespaces ------------------------------------------------------------------------


async def test_namespace_crud(client: httpx.AsyncClient, engine: Engine) -> None:
    created = ok(await client.post("/namespaces", json={"name": "acme", "routing": "path", "defaults": {"cpuMs": 50}}), 201)
    assert created["name"] == "acme" and created["routing"] == "path" and created["defaults"]["cpuMs"] == 50
    assert [ns["name"] for ns in ok(await client.get("/namespaces"))] == ["acme", "default"]
    got = ok(await client.get("/namespaces/acme"))
    assert got["scripts"] == 0 and got["defaults"]["cpuMs"] == 50
    error(await client.post("/namespaces", json={"name": "acme"}), 409, "name")
    error(await client.post("/namespaces", json={"name": "Bad_Name"}), 400, "name")
    error(await client.post("/namespaces", json={"name": "x", "routing": "dns"}), 400, "routing")
    error(await client.post("/namespaces", json={"name": "x", "defaults": {"cpuMs": 0}}), 400, "defaults.cpuMs")
    error(await client.post("/namespaces", json={"name": "x", "extra": 1}), 400, "extra")
    error(await client.post("/namespaces", content=b"{nope", headers={"Content-Type": "application/json"}), 400, "body")
    engine.deploy("hello", HELLO, namespace="acme")
    error(await client.delete("/namespaces/acme"), 409)
    engine.delete("hello", namespace="acme")
    ok(await client.delete("/namespaces/acme"))
    error(await client.get("/namespaces/acme"), 404)
    error(await client.delete("/namespaces/acme"), 404)
    error(await client.delete("/namespaces/default"), 400, "ns")
    assert [ns.name for ns in engine.namespaces()] == ["default"]


# --- scripts ---------------------------------------------------------------------------


async def test_put_script_deploys_and_dispatches(client: httpx.AsyncClient, engine: Engine) -> None:
    meta = {"tags": ["free", "eu"], "vars": {"GREETING": "hi"}, "abi": "wcgi", "message": "first"}
    record = ok(await client.put("/namespaces/default/scripts/hello", **upload(meta)))
    assert record["name"] == "hello" and record["version"] == 1 and record["tags"] == ["free", "eu"]
    assert record["vars"] == {"GREETING": "hi"} and record["message"] == "first"
    response = await engine.request("http://hello.x/")
    assert response.status == 200 and response.body
    got = ok(await client.get("/namespaces/default/scripts/hello"))
    assert got["sha256"] == record["sha256"] and got["limits"]["cpuMs"] == 5000
    content = await client.get("/namespaces/default/scripts/hello/content")
    assert content.status_code == 200 and content.content == HELLO
    assert content.headers["content-type"] == "application/wasm"
    # the module under another part name, named by main_module; the metadata as a file part
    again = await client.put("/namespaces/default/scripts/hello", files={
        "metadata": ("m.json", json.dumps({"main_module": "w.wasm"}).encode(), "application/json"),
        "w.wasm": ("w.wasm", HELLO, "application/wasm")})
    assert ok(again)["version"] == 2 and ok(again)["tags"] == []
    ok(await client.delete("/namespaces/default/scripts/hello"))
    error(await client.get("/namespaces/default/scripts/hello"), 404)
    assert (await engine.request("http://hello.x/")).status == 404


async def test_the_abi_is_detected_or_given(client: httpx.AsyncClient) -> None:
    greeter = (ROOT / "fixtures" / "protocol" / "greeter.wasm").read_bytes()
    assert ok(await client.put("/namespaces/default/scripts/greeter", **upload({}, greeter)))["abi"] == "protocol"
    assert ok(await client.put("/namespaces/default/scripts/hello", **upload({}, HELLO)))["abi"] == "wcgi"
    assert ok(await client.put("/namespaces/default/scripts/hello", **upload({"abi": "wcgi"}, HELLO)))["abi"] == "wcgi"
    given = ok(await client.put("/namespaces/default/scripts/greeter", **upload({"abi": "protocol"}, greeter)))
    assert given["abi"] == "protocol" and given["version"] == 2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (upload({"tags": []}, None), "module"),
        (upload({}, None), "module"),
        (upload(None), "metadata"),
        (upload(raw_metadata="{not json"), "metadata"),
        (upload(raw_metadata="[1, 2]"), "metadata"),
        (upload({"tags": "free"}), "metadata.tags"),
        (upload({"tags": [1]}), "metadata.tags"),
        (upload({"tags": ["a,b"]}), "metadata.tags"),
        (upload({"tags": [f"t{i}" for i in range(9)]}), "metadata.tags"),
        (upload({"vars": ["A"]}), "metadata.vars"),
        (upload({"vars": {"REQUEST_METHOD": "x"}}), "metadata.vars"),
        (upload({"abi": "wasi-http"}), "metadata.abi"),
        (upload({"bindings": []}), "metadata.bindings"),
        (upload({}, b"not wasm at all"), "module"),
        (upload({}, part="mod"), "module"),
        (upload({"main_module": "mod"}), "mod"),
        ({"content": b"raw bytes", "headers": {"Content-Type": "application/wasm"}}, "body"),
        ({"content": b"--x\r\ngarbage", "headers": {"Content-Type": "multipart/form-data"}}, "body"),
    ],
)
async def test_bad_uploads_are_400_naming_the_field(client: httpx.AsyncClient, engine: Engine, kwargs: dict[str, Any],
                                                    field: str) -> None:
    error(await client.put("/namespaces/default/scripts/hello", **kwargs), 400, field)
    assert engine.workers() == []


async def test_bad_script_name_unknown_namespace_and_too_big(client: httpx.AsyncClient, engine: Engine,
                                                             db_path: Path, wasmer_cache: Path) -> None:
    error(await client.put("/namespaces/default/scripts/Bad_Name", **upload({})), 400, "name")
    error(await client.put("/namespaces/nope/scripts/hello", **upload({})), 404)
    for path in ("/namespaces/nope", "/namespaces/nope/scripts", "/namespaces/default/scripts/nope",
                 "/namespaces/default/scripts/nope/tags", "/namespaces/default/scripts/nope/versions",
                 "/namespaces/default/scripts/nope/content"):
        error(await client.get(path), 404)
    error(await client.delete("/namespaces/default/scripts/nope"), 404)
    error(await client.post("/namespaces/default/scripts/nope/rollback", json={"version": 1}), 404)
    error(await client.put("/namespaces/default/scripts/nope/tags", json=["a"]), 404)
    assert engine.workers() == []
    small = Engine(db_path, cache_dir=wasmer_cache, max_module_bytes=1024)
    try:
        app = create_admin_app(small, TOKEN)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a", headers=AUTH) as c:
            err = error(await c.put("/namespaces/default/scripts/hello", **upload({})), 413, "module")
            assert "24668 bytes" in err["message"] and "1024 bytes" in err["message"]
    finally:
        await small.close()
    assert engine.workers() == []


async def test_list_with_tag_filter_and_bulk_delete(client: httpx.AsyncClient, engine: Engine) -> None:
    engine.deploy("a", HELLO, tags=["free", "eu"])
    engine.deploy("b", HELLO, tags=["free"])
    engine.deploy("c", HELLO, tags=["paid"])

    async def names(query: str = "") -> list[str]:
        return [w["name"] for w in ok(await client.get("/namespaces/default/scripts" + query))]

    assert await names() == ["a", "b", "c"]
    assert await names("?tags=free:yes") == ["a", "b"]
    assert await names("?tags=free:yes,eu:no") == ["b"]
    assert await names("?tags=paid:no") == ["a", "b"]
    for bad in ("free", "free:maybe", "a,b:yes", ":yes", "a b:yes"):
        error(await client.get("/namespaces/default/scripts", params={"tags": bad}), 400, "tags")
    error(await client.delete("/namespaces/default/scripts"), 400, "tags")
    error(await client.delete("/namespaces/default/scripts?tags=free"), 400, "tags")
    assert len(engine.workers()) == 3
    assert ok(await client.delete("/namespaces/default/scripts?tags=free:yes,eu:no")) == {"deleted": ["b"]}
    assert ok(await client.delete("/namespaces/default/scripts?tags=nothing:yes")) == {"deleted": []}
    assert [w.name for w in engine.workers()] == ["a", "c"]
    error(await client.get("/namespaces/nope/scripts?tags=free:yes"), 404)


async def test_tags_versions_and_rollback(client: httpx.AsyncClient, engine: Engine) -> None:
    engine.deploy("hello", HELLO, tags=["free"])
    base = "/namespaces/default/scripts/hello"
    assert ok(await client.get(base + "/tags")) == ["free"]
    assert ok(await client.put(base + "/tags", json=["paid", "eu", "paid"])) == ["paid", "eu"]
    assert engine.worker("hello").tags == ("paid", "eu")
    for bad in ({"tags": ["x"]}, ["a,b"], [1], ["x y"]):
        error(await client.put(base + "/tags", json=bad), 400, "tags")
    error(await client.put(base + "/tags", content=b"[", headers={"Content-Type": "application/json"}), 400, "body")
    versions = ok(await client.get(base + "/versions"))
    assert [(v["version"], v["tags"], v["current"]) for v in versions] == [(1, ["free"], False), (2, ["paid", "eu"], True)]
    rolled = ok(await client.post(base + "/rollback", json={"version": 1}))
    assert rolled["version"] == 3 and rolled["tags"] == ["free"]
    for bad in ({}, {"version": "1"}, {"version": 0}, {"version": True}, [1]):
        error(await client.post(base + "/rollback", json=bad), 400, "version")
    error(await client.post(base + "/rollback", json={"version": 9}), 404)
    assert engine.worker("hello").version == 3


async def test_limits_set_clear_delete(client: httpx.AsyncClient, engine: Engine) -> None:
    assert ok(await client.get("/limits")) == {}
    got = ok(await client.put("/limits/free", json={"cpuMs": 50, "wallMs": 1000}))
    assert got == {"cpuMs": 50, "memoryMb": None, "subRequests": None, "wallMs": 1000}
    got = ok(await client.put("/limits/free", json={"memoryMb": 64, "wallMs": None}))
    assert got == {"cpuMs": 50, "memoryMb": 64, "subRequests": None, "wallMs": None}
    assert ok(await client.get("/limits")) == {"free": got}
    engine.deploy("hello", HELLO, tags=["free"])
    limits = ok(await client.get("/namespaces/default/scripts/hello"))["limits"]
    assert limits["cpuMs"] == 50 and limits["sources"]["cpuMs"] == "tag:free"
    error(await client.put("/limits/free", json={"cpuMs": 0}), 400, "cpuMs")
    error(await client.put("/limits/free", json={"cpu": 5}), 400, "cpu")
    error(await client.put("/limits/free", json={"cpuMs": "5"}), 400, "cpuMs")
    error(await client.put("/limits/free", json={}), 400, "body")
    error(await client.put("/limits/a,b", json={"cpuMs": 5}), 400, "tag")
    assert engine.limits()["free"].cpu_ms == 50
    ok(await client.delete("/limits/free"))
    assert ok(await client.get("/limits")) == {}
    error(await client.delete("/limits/free"), 404)


async def test_namespace_update(client: httpx.AsyncClient, engine: Engine) -> None:
    engine.create_namespace("acme", defaults=Limits(cpu_ms=50, wall_ms=900))
    got = ok(await client.patch("/namespaces/acme", json={"routing": "path", "defaults": {"memoryMb": 64, "cpuMs": None}}))
    assert got["routing"] == "path" and got["defaults"] == {"cpuMs": None, "memoryMb": 64, "subRequests": None, "wallMs": 900}
    assert engine.namespace("acme").routing == "path" and engine.namespace("acme").defaults.memory_mb == 64
    assert ok(await client.patch("/namespaces/acme", json={"routing": "host"}))["defaults"]["memoryMb"] == 64
    before = engine.namespace("acme")
    error(await client.patch("/namespaces/acme", json={"routing": "dns"}), 400, "routing")
    error(await client.patch("/namespaces/acme", json={"defaults": {"cpuMs": 0}}), 400, "defaults.cpuMs")
    error(await client.patch("/namespaces/acme", json={"defaults": {"cpu": 5}}), 400, "defaults.cpu")
    error(await client.patch("/namespaces/acme", json={"defaults": [1]}), 400, "defaults")
    error(await client.patch("/namespaces/acme", json={"name": "other"}), 400, "name")
    error(await client.patch("/namespaces/acme", json={}), 400, "body")
    error(await client.patch("/namespaces/acme", json=["path"]), 400, "body")
    error(await client.patch("/namespaces/acme", content=b"{", headers={"Content-Type": "application/json"}), 400, "body")
    error(await client.patch("/namespaces/nope", json={"routing": "path"}), 404)
    assert engine.namespace("acme") == before


async def test_stats_limits_and_vars_of_scripts(client: httpx.AsyncClient, engine: Engine) -> None:
    engine.deploy("hello", HELLO, tags=["free"], vars={"GREETING": "hi"})
    engine.deploy("quiet", HELLO)
    engine.set_limits("free", cpu_ms=40)
    await engine.request("http://hello.x/")
    await engine.request("http://hello.x/")
    await engine.request("http://nope.x/")
    # no flush here: the endpoint stores what was published before answering
    assert ok(await client.get("/namespaces/default/stats")) == {
        "hello": {"requests": 2, "errors": 0, "lastOutcome": "ok"},
        "nope": {"requests": 1, "errors": 0, "lastOutcome": "scriptNotFound"},
    }
    engine.create_namespace("empty")
    assert ok(await client.get("/namespaces/empty/stats")) == {}
    error(await client.get("/namespaces/nope/stats"), 404)

    base = "/namespaces/default/scripts/hello"
    limits = ok(await client.get(base + "/limits"))
    assert limits == engine.effective_limits("hello").as_dict()
    assert limits["cpuMs"] == 40 and limits["sources"]["cpuMs"] == "tag:free" and limits["sources"]["wallMs"] == "engine"
    error(await client.get("/namespaces/default/scripts/nope/limits"), 404)
    error(await client.get("/namespaces/nope/scripts/hello/limits"), 404)

    assert ok(await client.get(base + "/vars")) == {"GREETING": "hi"}
    assert ok(await client.put(base + "/vars", json={"GREETING": "hello", "MODE": "x"})) == {"GREETING": "hello", "MODE": "x"}
    assert engine.worker("hello").vars == {"GREETING": "hello", "MODE": "x"} and engine.worker("hello").version == 2
    assert ok(await client.put(base + "/vars", json={})) == {}
    for bad in (["GREETING"], {"REQUEST_METHOD": "x"}, {"HTTP_HOST": "x"}, {"BAD-NAME": "x"}, {"A": 1}):
        error(await client.put(base + "/vars", json=bad), 400, "vars")
    error(await client.put(base + "/vars", content=b"{", headers={"Content-Type": "application/json"}), 400, "body")
    error(await client.put("/namespaces/default/scripts/nope/vars", json={"A": "b"}), 404)
    error(await client.get("/namespaces/default/scripts/nope/vars"), 404)
    assert engine.worker("hello").version == 3 and engine.worker("hello").vars == {}


async def test_recent_traces_with_filters(client: httpx.AsyncClient, engine: Engine) -> None:
    engine.deploy("hello", HELLO)
    engine.create_namespace("other")
    for path in ("/a", "/b", "/c"):
        await engine.request(f"http://hello.x{path}", headers={"X-Plan": "trial" if path == "/b" else "paid"})
    await engine.request("http://hello.x/d", method="POST", body=b"x")
    await engine.request("http://nope.x/")
    urls = lambda items: [i["event"]["request"]["url"] for i in items]  # noqa: E731
    assert urls(ok(await client.get("/traces"))) == [
        "http://hello.x/a", "http://hello.x/b", "http://hello.x/c", "http://hello.x/d", "http://nope.x/"]
    assert urls(ok(await client.get("/traces?limit=2"))) == ["http://hello.x/d", "http://nope.x/"]
    assert urls(ok(await client.get("/traces?worker=hello&method=POST"))) == ["http://hello.x/d"]
    assert urls(ok(await client.get("/traces", params={"header": "x-plan:trial"}))) == ["http://hello.x/b"]
    assert urls(ok(await client.get("/traces?namespace=default&status=ok&limit=1"))) == ["http://hello.x/d"]
    assert ok(await client.get("/traces?namespace=other")) == []
    assert ok(await client.get("/traces?status=error")) == []
    for query, field in (("limit=0", "limit"), ("limit=x", "limit"), ("limit=10001", "limit"), ("status=weird", "status"),
                         ("sampling_rate=2", "sampling_rate"), ("sampling_rate=x", "sampling_rate"), ("workr=hello", "workr")):
        error(await client.get(f"/traces?{query}"), 400, field)
    error(await client.get("/traces?namespace=nope"), 404)


async def test_server_info(engine: Engine) -> None:
    listener = DispatchListener(url="http://127.0.0.1:8787", namespace="default", max_body_bytes=4096)
    app = create_admin_app(engine, TOKEN, dispatch=listener, tail_options={"per_worker": 2, "total": 5})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a", headers=AUTH) as c:
        info = ok(await c.get("/server"))
    assert info == {
        "dispatch": {"url": "http://127.0.0.1:8787", "namespace": "default", "maxBodyBytes": 4096,
                     "maxHeaderBytes": 32768, "maxHeaders": 100},
        "engineDefaults": {"cpuMs": 5000, "memoryMb": 128, "subRequests": 50, "wallMs": 30000},
        "maxModuleBytes": engine.max_module_bytes,
        "tail": {"perWorker": 2, "total": 5, "clients": 0},
    }
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_admin_app(engine, TOKEN)),
                                 base_url="http://a", headers=AUTH) as c:
        assert ok(await c.get("/server"))["dispatch"] is None


async def test_refused_modules_say_so_in_the_error_code(client: httpx.AsyncClient) -> None:
    """`invalid_module` (not `invalid_input`): a remote client raises InvalidModule, as the engine does."""
    err = error(await client.put("/namespaces/default/scripts/hello", **upload({}, b"not wasm at all")), 400, "module")
    assert err["code"] == "invalid_module"
    err = error(await client.put("/namespaces/default/scripts/hello", **upload({"tags": ["a,b"]})), 400, "metadata.tags")
    assert err["code"] == "invalid_input"
    assert error(await client.get("/namespaces/nope"), 404)["code"] == "not_found"


async def test_openapi_lists_every_route_and_errors_are_enveloped(client: httpx.AsyncClient, engine: Engine) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1") and doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    served = {(m, route.path) for route in create_admin_app(engine, TOKEN).app.routes
              for m in getattr(route, "methods", None) or () if m != "HEAD"}  # /tail is a WebSocket route
    assert documented == served
    assert len(documented) == 39
    error(await client.get("/no/such/path"), 404)
    response = await client.post("/limits")
    error(response, 405)
    assert "GET" in response.headers["allow"]


# --- over real HTTP ----------------------------------------------------------------------

SERVE_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, uvicorn
    from wasmdeck.engine import Engine
    from wasmdeck.server.admin_app import create_admin_app
    from wasmdeck.server.auth import default_token_path, load_or_create_token

    async def main(db, port):
        token, created = load_or_create_token(default_token_path(db))
        if created:
            print(f"admin token: {token}", flush=True)
        async with Engine(db) as engine:
            config = uvicorn.Config(create_admin_app(engine, token), host="127.0.0.1", port=port, log_level="warning")
            await uvicorn.Server(config).serve()

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(db: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = _free_port()
    out = tmp / f"admin-{port}.out"
    with out.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-c", SERVE_SCRIPT, str(db), str(port)], cwd=ROOT,
                                   stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process.poll() is None:
        try:
            httpx.get(base + "/namespaces", timeout=2)
            return process, base, out
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    pytest.fail(f"the admin server did not start: {out.read_text()}")


def test_over_real_http_with_the_token_printed_once(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    process, base, out = _start(db, tmp_path)
    try:
        token_file = default_token_path(db)
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert f"admin token: {token}" in out.read_text()
        denied = httpx.post(base + "/namespaces", json={"name": "acme"}, timeout=10)
        assert denied.status_code == 401 and denied.json()["success"] is False
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.post(base + "/namespaces", json={"name": "acme"}, headers=headers, timeout=10).status_code == 201
        files = {"module": ("hello.wasm", HELLO, "application/wasm")}
        put = httpx.put(base + "/namespaces/acme/scripts/hello", headers=headers, timeout=30,
                        data={"metadata": json.dumps({"tags": ["free"]})}, files=files)
        assert put.status_code == 200 and put.json()["result"]["tags"] == ["free"]
        listed = httpx.get(base + "/namespaces/acme/scripts?tags=free:yes", headers=headers, timeout=10).json()
        assert [w["name"] for w in listed["result"]] == ["hello"]
    finally:
        process.terminate()
        process.wait(timeout=20)
    # a restart reuses the token and prints nothing
    process, base, out = _start(db, tmp_path)
    try:
        assert httpx.get(base + "/namespaces/acme", headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 200
        assert "admin token" not in out.read_text()
    finally:
        process.terminate()
        process.wait(timeout=20)


# --- platform settings (the Worker protocol's dispatch, outbound, egress, tail consumers) ------------


async def test_outbound_egress_dispatcher_and_tail_consumers(client: httpx.AsyncClient, engine: Engine) -> None:
    gateway = protocol_module("outbound-logger").read_bytes()
    engine.deploy("gateway", gateway)
    engine.deploy("audit", protocol_module("tail-collector").read_bytes())
    engine.deploy("hello", HELLO)
    base = "/namespaces/default"
    result = ok(await client.put(base + "/outbound", json={
        "service": "gateway", "parameters": ["customer_name", {"name": "url", "template": "{request.url}"}]}))
    assert result["outbound"] == {"service": "gateway", "parameters": [
        {"name": "customer_name", "template": None}, {"name": "url", "template": "{request.url}"}]}
    assert ok(await client.put(base + "/egress", json={"allow": ["*.example.com"], "block": ["evil.example.com:443"]}))[
        "egress"] == {"allow": ["*.example.com"], "block": ["evil.example.com:443"]}
    assert ok(await client.put(base + "/dispatcher", json={"worker": "gateway"}))["dispatchWorker"] == "gateway"
    assert ok(await client.post(base + "/tail-consumers", json={"consumer": "audit", "worker": "hello"}), 201) == {
        "namespace": "default", "consumer": "audit", "scope": "worker", "worker": "hello"}
    ok(await client.post(base + "/tail-consumers", json={"consumer": "audit", "dispatcher": True}), 201)
    assert [c["scope"] for c in ok(await client.get(base + "/tail-consumers"))] == ["dispatcher", "worker"]
    fetched = ok(await client.get(base))
    assert fetched["dispatchWorker"] == "gateway" and fetched["outbound"]["service"] == "gateway"
    ok(await client.delete(base + "/tail-consumers/audit", params={"worker": "hello"}))
    ok(await client.delete(base + "/tail-consumers/audit", params={"dispatcher": "true"}))
    assert ok(await client.get(base + "/tail-consumers")) == []
    assert ok(await client.delete(base + "/outbound"))["outbound"] is None
    assert ok(await client.delete(base + "/dispatcher"))["dispatchWorker"] is None


async def test_platform_settings_refuse_bad_input_and_change_nothing(client: httpx.AsyncClient, engine: Engine) -> None:
    engine.deploy("gateway", protocol_module("outbound-logger").read_bytes())
    engine.deploy("hello", HELLO)
    before = engine.namespace().as_dict()
    base = "/namespaces/default"
    assert "must speak the Worker protocol" in error(await client.put(base + "/outbound", json={"service": "hello"}), 400, "parameters")["message"]
    error(await client.put(base + "/outbound", json={"service": "gateway", "parameters": ["bad name"]}), 400, "parameters")
    error(await client.put(base + "/outbound", json={"service": "gateway", "parameters": [{"name": "u", "template": "{nope}"}]}), 400, "parameters")
    error(await client.put(base + "/outbound", json={"service": "gateway", "parameters": [3]}), 400, "parameters")
    error(await client.put(base + "/outbound", json={"service": 3}), 400, "service")
    error(await client.put(base + "/outbound", json={"service": "gateway", "extra": 1}), 400, "extra")
    error(await client.put(base + "/outbound", json={"service": "ghost"}), 404)
    error(await client.put(base + "/egress", json={"allow": ["ok.example.com"], "block": ["http://x"]}), 400, "block")
    error(await client.put(base + "/egress", json={"allow": "x.com"}), 400, "allow")
    error(await client.put(base + "/egress", json={"deny": []}), 400, "deny")
    error(await client.put(base + "/dispatcher", json={"worker": "hello"}), 400, "worker")
    error(await client.put(base + "/dispatcher", json={}), 400, "body")
    error(await client.post(base + "/tail-consumers", json={"consumer": "gateway", "worker": "gateway"}), 400, "consumer")
    error(await client.post(base + "/tail-consumers", json={"consumer": "gateway", "dispatcher": "yes"}), 400, "dispatcher")
    error(await client.delete(base + "/tail-consumers/gateway"), 404)
    for path in ("/dispatcher", "/outbound", "/egress"):
        error(await client.put("/namespaces/nope" + path, json={"worker": "x", "service": "x"}), 404)
    error(await client.get("/namespaces/nope/tail-consumers"), 404)
    assert engine.namespace().as_dict() == before
    assert engine.tail_consumers("default") == []


async def test_a_javascript_worker_deploys_lists_its_language_and_can_dispatch_under_a_named_binding(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    front = b"export default { fetch(request, env) { return env.TENANTS.get('shop').fetch(request); } }"
    shop = b"export default { fetch(request, env) { return new Response(`shop ${env.GREETING}`); } }"
    files = {"module": ("front.js", front, "application/javascript+module")}
    record = ok(await client.put("/namespaces/default/scripts/front", data={"metadata": "{}"}, files=files))
    assert record["abi"] == "javascript" and record["language"] == "javascript"
    assert record["script"] == {"filename": "front.js", "format": "module", "handlers": ["fetch"]}
    ok(await client.put("/namespaces/default/scripts/shop", data={"metadata": json.dumps({"vars": {"GREETING": "hi"}})},
                        files={"module": ("shop.js", shop, "application/javascript+module")}))
    listed = {item["name"]: item["language"] for item in ok(await client.get("/namespaces/default/scripts"))}
    assert listed == {"front": "javascript", "shop": "javascript"}
    content = await client.get("/namespaces/default/scripts/front/content")
    assert content.content == front and content.headers["content-type"].startswith("application/javascript+module")
    namespace = ok(await client.put("/namespaces/default/dispatcher", json={"worker": "front", "binding": "TENANTS"}))
    assert namespace["dispatchWorker"] == "front" and namespace["dispatchBinding"] == "TENANTS"
    assert (await engine.request("http://anything.example.com/")).text == "shop hi"
    error(await client.put("/namespaces/default/dispatcher", json={"worker": "front", "binding": "not ok"}), 400, "binding")
    error(await client.put("/namespaces/default/dispatcher", json={"worker": "front", "binding": 7}), 400, "binding")
    assert engine.namespace().dispatch_binding == "TENANTS"
    refused = error(await client.put("/namespaces/default/scripts/broken", data={"metadata": "{}"},
                                     files={"module": ("broken.js", b"export default {", "application/javascript+module")}),
                    400, "module")
    assert refused["message"].startswith("the script has a syntax error at broken.js:1:") and refused["code"] == "invalid_module"

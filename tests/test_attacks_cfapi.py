"""A lying client against Cloudflare's REST paths (`server.cloudflare_api`): names that belong to
the platform, JSON a parser chokes on, text that is not Unicode, deployments of the wrong shape.
Every refusal is Cloudflare's error shape with one sentence, and changes nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from wasmdeck.engine import Engine
from wasmdeck.server.admin_app import create_admin_app

TOKEN = "attack-token-0123456789"
BASE = "/client/v4/accounts/acc/workers"
TENANTS = BASE + "/dispatch/namespaces/default/scripts"
OPERATOR_SECRET = "op-Secret-93c1d7a2"
TENANT_SECRET = "tn-Secret-5b0e44f1"
JS = "application/javascript+module"
TENANT = b"export default { fetch(request, env) { return new Response('tenant sees ' + env.API_KEY); } }"


@pytest.fixture
async def platform(engine: Engine) -> Engine:
    """A namespace fronted by a dispatch Worker, with an Outbound Worker holding the operator's
    credential as a secret, a Tail Worker, and one tenant."""
    engine.deploy("gateway", b"export default { fetch(request, env) { return new Response('gateway'); } }",
                  vars={"PLAN": "x"}, secrets={"API_KEY": OPERATOR_SECRET})
    engine.deploy("dispatcher", b"export default { fetch(request, env) {"
                                b" return env.dispatcher.get(new URL(request.url).hostname.split('.')[0]).fetch(request); } }")
    engine.deploy("audit", b"export default { tail(events) {} }")
    engine.deploy("shop", b"export default { fetch() { return new Response('shop'); } }")
    engine.set_outbound("gateway", [])
    engine.set_dispatch_worker("dispatcher")
    engine.add_tail_consumer("audit")
    return engine


@pytest.fixture
async def cf(engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_admin_app(engine, TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def upload(metadata: Any, source: bytes = TENANT, filename: str = "w.js") -> dict[str, Any]:
    data = metadata if isinstance(metadata, bytes) else json.dumps(metadata).encode()
    return {"files": [("metadata", (None, data, "application/json")), ("files", (filename, source, JS))]}


def state(engine: Engine) -> Any:
    return ([ns.as_dict() for ns in engine.namespaces()],
            [(w.name, w.version, w.sha256, w.tags, w.vars, tuple(engine.secret_names(w.name))) for w in engine.workers()],
            [c.as_dict() for c in engine.tail_consumers()])


def refused(response: httpx.Response, status: int, needle: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["result"] is None
    (error,) = body["errors"]
    assert isinstance(error["code"], int) and needle in error["message"] and "\n" not in error["message"]
    return error["message"]


# -- the platform's own Workers are not tenants ------------------------------------------------------


@pytest.mark.parametrize("target", ["gateway", "dispatcher", "audit"])
async def test_a_tenant_upload_cannot_replace_a_platform_worker_or_inherit_its_secrets(
    platform: Engine, cf: httpx.AsyncClient, target: str
) -> None:
    # The platform's Workers share the namespace with its tenants: an upload through the dispatch
    # namespace path under the Outbound Worker's name used to replace its code, keep the operator's
    # secret for the tenant's code (keep_bindings), and serve every tenant's fetch() with it.
    before = state(platform)
    role = {"gateway": "the Outbound Worker of", "dispatcher": "the dispatch Worker of", "audit": "a Tail Worker in"}[target]
    answers = [
        await cf.put(f"{TENANTS}/{target}", **upload({"main_module": "w.js", "keep_bindings": ["secret_text"]})),
        await cf.put(f"{TENANTS}/{target}/content", **upload({"main_module": "w.js"})),
        await cf.patch(f"{TENANTS}/{target}/settings",
                       files=[("settings", (None, json.dumps({"bindings": [{"type": "plain_text", "name": "X", "text": "y"}]}), "application/json"))]),
        await cf.put(f"{TENANTS}/{target}/secrets", json={"name": "API_KEY", "text": TENANT_SECRET, "type": "secret_text"}),
        await cf.patch(f"{TENANTS}/{target}/secrets-bulk", json={"secrets": {"API_KEY": None}}),
        await cf.delete(f"{TENANTS}/{target}/secrets/API_KEY"),
        await cf.put(f"{TENANTS}/{target}/tags", json=["customer-1"]),
        await cf.put(f"{TENANTS}/{target}/tags/customer-1"),
    ]
    for answer in answers:
        message = refused(answer, 409, f"script '{target}' is {role} namespace 'default', one of the platform's own Workers")
        assert f"/accounts/{{account_id}}/workers/scripts/{target}" in message and TENANT_SECRET not in message
    assert state(platform) == before
    assert (await platform.request("http://shop.example.com/")).text == "shop"  # the dispatcher still dispatches


async def test_the_platform_path_still_changes_platform_workers_in_any_namespace(platform: Engine, cf: httpx.AsyncClient) -> None:
    platform.create_namespace("staging")
    for name, source in [("gw2", b"export default { fetch() { return new Response('gw2'); } }"),
                         ("tail2", b"export default { tail() {} }")]:
        answer = await cf.put(f"{BASE}/dispatch/namespaces/staging/scripts/{name}", **upload({"main_module": "w.js"}, source))
        assert answer.status_code == 200, answer.text  # no role yet: uploaded where the dispatcher will find it
    front = await cf.put(f"{BASE}/scripts/front", **upload({
        "main_module": "w.js", "tail_consumers": [{"service": "tail2"}],
        "bindings": [{"type": "dispatch_namespace", "name": "dispatcher", "namespace": "staging",
                      "outbound": {"worker": {"service": "gw2"}}}]},
        b"export default { fetch(request, env) { return env.dispatcher.get('x').fetch(request); } }"))
    assert front.status_code == 200, front.text
    refused(await cf.put(f"{BASE}/dispatch/namespaces/staging/scripts/gw2", **upload({"main_module": "w.js"})), 409,
            "is the Outbound Worker of namespace 'staging'")
    changed = await cf.put(f"{BASE}/scripts/gw2", **upload({"main_module": "w.js"}, b"export default { fetch() { return new Response('v2'); } }"))
    assert changed.status_code == 200 and changed.json()["result"]["wasmdeck"]["namespace"] == "staging", changed.text
    assert platform.worker("gw2", namespace="staging").version == 2
    secret = await cf.put(f"{BASE}/scripts/tail2/secrets", json={"name": "SINK", "text": OPERATOR_SECRET, "type": "secret_text"})
    assert secret.status_code == 200 and platform.secret_names("tail2", namespace="staging") == ["SINK"]
    assert OPERATOR_SECRET not in secret.text


# -- JSON and text a parser or the store cannot take ---------------------------------------------------


async def test_json_nested_too_deep_is_a_bad_request_not_an_internal_error(platform: Engine, cf: httpx.AsyncClient) -> None:
    before = state(platform)
    refused(await cf.put(f"{TENANTS}/shop/tags", content=b"[" * 60_000), 400, "the request body is not valid JSON")
    refused(await cf.post(f"{BASE}/scripts/dispatcher/deployments", content=b'{"versions": ' + b"[" * 60_000), 400,
            "not valid JSON")
    refused(await cf.put(f"{TENANTS}/shop", **upload(b'{"main_module": "w.js", "x": ' + b"[" * 500_000)), 400,
            "the metadata part is not valid JSON")
    refused(await cf.patch(f"{TENANTS}/shop/settings", files=[("settings", (None, b"[" * 100_000, "application/json"))]), 400,
            "the settings part is not valid JSON")
    assert state(platform) == before


@pytest.mark.parametrize(("path", "method", "body", "needle"), [
    (f"{TENANTS}/shop/secrets", "PUT", b'{"name": "S", "text": "\\ud800' + TENANT_SECRET.encode() + b'", "type": "secret_text"}',
     "secret S is not Unicode text"),
    (f"{TENANTS}/shop/secrets-bulk", "PATCH", b'{"secrets": {"S": {"text": "\\udfff' + TENANT_SECRET.encode() + b'", "type": "secret_text"}}}',
     "secret S is not Unicode text"),
    (f"{TENANTS}/shop/tags", "PUT", b'["\\ud800"]', "is not Unicode text"),
    (f"{BASE}/scripts/dispatcher/script-settings", "PATCH", b'{"tags": ["ok", "\\udc80"]}', "is not Unicode text"),
], ids=["secret", "secrets-bulk", "tags", "script-settings"])
async def test_text_with_a_lone_surrogate_is_refused_before_it_is_stored(
    platform: Engine, cf: httpx.AsyncClient, path: str, method: str, body: bytes, needle: str
) -> None:
    # JSON can spell a lone surrogate ("\ud800"), which no UTF-8 store or answer can hold: a tag so
    # spelled used to be stored and then broke every listing of the namespace (500) for good.
    before = state(platform)
    message = refused(await cf.request(method, path, content=body, headers={"content-type": "application/json"}), 400, needle)
    assert TENANT_SECRET not in message
    assert state(platform) == before
    listed = await cf.get(TENANTS)
    assert listed.status_code == 200 and "shop" in {s["id"] for s in listed.json()["result"]}


@pytest.mark.parametrize(("binding", "needle"), [
    ({"type": "secret_text", "name": "S", "text": "\ud800" + TENANT_SECRET}, "secret S is not Unicode text"),
    ({"type": "plain_text", "name": "V", "text": "\udcff"}, "var V is not Unicode text"),
    ({"type": "json", "name": "J", "json": {"a": "\ud800"}}, "var J is not Unicode text"),
], ids=["secret_text", "plain_text", "json"])
async def test_an_upload_whose_bindings_are_not_unicode_is_refused(
    platform: Engine, cf: httpx.AsyncClient, binding: dict[str, Any], needle: str
) -> None:
    before = state(platform)
    raw = json.dumps({"main_module": "w.js", "bindings": [binding]}).encode()  # ensure_ascii: the surrogate as \\udxxx
    message = refused(await cf.put(f"{TENANTS}/shop", **upload(raw)), 400, needle)
    assert TENANT_SECRET not in message
    assert state(platform) == before


def test_the_engine_refuses_the_same_text_from_any_client(engine: Engine) -> None:
    from wasmdeck.engine import InvalidInput

    source = b"export default { fetch() { return new Response('x'); } }"
    with pytest.raises(InvalidInput, match="var A is not Unicode text"):
        engine.deploy("w", source, vars={"A": "\udcff"})  # what a non-UTF-8 command line argument becomes
    with pytest.raises(InvalidInput, match="is not Unicode text") as error:
        engine.deploy("w", source, secrets={"S": TENANT_SECRET + "\ud800"})
    assert TENANT_SECRET not in str(error.value)
    with pytest.raises(InvalidInput, match="is not Unicode text"):
        engine.deploy("w", source, tags=["\ud800"])
    assert engine.workers() == []


# -- deployments of the wrong shape ------------------------------------------------------------------


async def test_a_deployment_at_nan_percent_is_not_taken_for_a_full_one(platform: Engine, cf: httpx.AsyncClient, tmp_path: Path) -> None:
    platform.deploy("dispatcher", b"export default { fetch() { return new Response('v2'); } }")
    versions = (await cf.get(f"{BASE}/scripts/dispatcher/versions")).json()["result"]["items"]
    first = versions[-1]["id"]
    before = state(platform)
    for percentage in (b"NaN", b"-Infinity", b"Infinity", b"99.9"):
        body = b'{"versions": [{"version_id": "' + first.encode() + b'", "percentage": ' + percentage + b"}]}"
        refused(await cf.post(f"{BASE}/scripts/dispatcher/deployments", content=body), 400, "no gradual rollouts")
    assert state(platform) == before
    # a version of another script is not this script's
    other = (await cf.get(f"{BASE}/scripts/gateway/versions")).json()["result"]["items"][0]["id"]
    refused(await cf.post(f"{BASE}/scripts/dispatcher/deployments", json={"versions": [{"version_id": other, "percentage": 100}]}),
            404, "has no version")
    assert state(platform) == before
    rolled = await cf.post(f"{BASE}/scripts/dispatcher/deployments", json={"versions": [{"version_id": first, "percentage": 100}]})
    assert rolled.status_code == 200 and platform.worker("dispatcher").version == 3


# -- numbers that are digits to str.isdigit() and not to int() ------------------------------------------


@pytest.mark.parametrize("limit", ["²", "١٢", "0", "1001"])
async def test_a_list_limit_that_is_not_an_ascii_number_is_a_bad_request(platform: Engine, cf: httpx.AsyncClient, limit: str) -> None:
    # "²".isdigit() is True and int("²") raises: the listing used to answer 500
    for path in (TENANTS, f"{BASE}/scripts"):
        refused(await cf.get(path, params={"limit": limit}), 400, "limit must be a whole number from 1 to 1000")
    if not limit.isascii():
        traces = await cf.get("/traces", params={"limit": limit})  # the admin API's own list
        assert traces.status_code == 400 and "limit must be a whole number" in traces.json()["errors"][0]["message"]


def test_a_tail_history_that_is_not_an_ascii_number_is_refused() -> None:
    from starlette.datastructures import QueryParams

    from wasmdeck.server.tail_stream import InvalidParameter, parse_query

    for history in ("²", "٣"):
        with pytest.raises(InvalidParameter, match="history must be a whole number"):
            parse_query(QueryParams({"history": history}))
    assert parse_query(QueryParams({"history": "3"}))[1] == 3

"""Cloudflare's Workers for Platforms paths on the admin listener (`server.cloudflare_api`).

The flows use Cloudflare's own Python SDK (`cloudflare` 5.9, unchanged) pointed at a real
`wasmdeck serve` on 127.0.0.1 (`base_url=http://127.0.0.1:PORT/client/v4`, the admin token as the
API token), and check the result where it counts: through the dispatch listener. The refusals run
in-process over httpx's ASGI transport, each checked for Cloudflare's error shape, one sentence,
and an engine left exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudflare
import httpx
import pytest

from wasmdeck.engine import Engine
from wasmdeck.engine.engine import ABIS
from wasmdeck.server import cloudflare_api
from wasmdeck.server.admin_app import DispatchListener, create_admin_app
from wasmdeck.server.auth import default_token_path
from wasmdeck.server.cloudflare_upload import MAX_PARTS

from .conftest import fixture_module, protocol_module
from .test_cli import REPO, _env
from .test_server import HEALTH, _free_port

ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"
SECRET = "cf-Secret-7d41b0e9"  # unlikely to appear anywhere by chance
GATEWAY_TOKEN = "gw-Token-52aa91c3"
START_TIMEOUT = 30.0
ECHO = fixture_module("echo").read_bytes()
HELLO = fixture_module("hello").read_bytes()


# -- a real `wasmdeck serve` --------------------------------------------------------------------


@dataclass
class Serve:
    process: subprocess.Popen[bytes]
    db: Path
    port: int
    admin_port: int
    stderr_path: Path
    token: str = ""
    bodies: list[str] = field(default_factory=list)  # every admin API answer the SDK and the tests received

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def record(self, response: httpx.Response) -> None:
        response.read()
        self.bodies.append(response.text if "wasm" not in response.headers.get("content-type", "") else "")

    def dispatch(self, host: str, path: str = "/") -> httpx.Response:
        """A request through the dispatch listener (its answer is the Worker's, which may show its own env)."""
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", headers={"Host": host}, timeout=30)

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = httpx.request(method, self.admin_url + path, headers={"Authorization": f"Bearer {self.token}"},
                                 timeout=30, **kwargs)
        self.record(response)
        return response

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def start_serve(db: Path, tmp: Path) -> Serve:
    for _ in range(5):
        port, admin_port = _free_port(), _free_port()
        stderr_path = tmp / f"serve-{port}.stderr"
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "wasmdeck.cli.main", "--db", str(db), "serve", "--host", "127.0.0.1",
                 "--port", str(port), "--admin-port", str(admin_port)],
                cwd=REPO, env=_env(None), stdout=subprocess.DEVNULL, stderr=stderr,
            )
        serve = Serve(process, db, port, admin_port, stderr_path)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}{HEALTH}").status_code == 200:
                    serve.token = default_token_path(db).read_text().strip()
                    if httpx.get(serve.admin_url + "/server", headers={"Authorization": f"Bearer {serve.token}"}).status_code == 200:
                        return serve
            except (httpx.TransportError, FileNotFoundError):
                pass
            time.sleep(0.05)
        if process.poll() is None:
            serve.stop()
            pytest.fail(f"wasmdeck serve did not start within {START_TIMEOUT} s: {serve.stderr()}")
        if "cannot listen" not in serve.stderr():
            pytest.fail(f"wasmdeck serve exited {process.returncode} at start: {serve.stderr()}")
    pytest.fail("no free ports found in 5 attempts")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    tmp = tmp_path_factory.mktemp("cloudflare")
    serve = start_serve(tmp / "w.db", tmp)
    try:
        yield serve
    finally:
        code = serve.stop()
        assert code == 0, serve.stderr()
        assert "Traceback" not in serve.stderr(), serve.stderr()


@pytest.fixture(scope="module")
def sdk(served: Serve) -> Iterator[cloudflare.Cloudflare]:
    http = httpx.Client(event_hooks={"response": [served.record]}, timeout=60)
    client = cloudflare.Cloudflare(api_token=served.token, base_url=f"{served.admin_url}/client/v4", http_client=http,
                                   max_retries=0)
    try:
        yield client
    finally:
        client.close()


def assert_hidden(served: Serve, *secrets: str) -> None:
    """No API answer, stored trace item, export or server log line holds any of `secrets`."""
    traces = served.admin("GET", "/traces", params={"limit": "1000"})
    assert traces.status_code == 200 and traces.json()["result"], traces.text
    export = subprocess.run([sys.executable, "-m", "wasmdeck.cli.main", "--db", str(served.db), "export"],
                            capture_output=True, text=True, cwd=REPO, env=_env(None), timeout=60)
    assert export.returncode == 0, export.stderr
    assert len(served.bodies) > 10  # the SDK's answers were recorded
    for secret in secrets:
        assert [body for body in served.bodies if secret in body] == []
        assert secret not in export.stdout and secret not in served.stderr()
        stored = [p for p in served.db.parent.glob("w.db*") if p.is_file() and not p.name.endswith("-key")]
        assert stored and all(secret.encode() not in p.read_bytes() for p in stored)


def raw(sdk: cloudflare.Cloudflare, method: str, path: str, **params: str) -> Any:
    """A path the SDK 5.9 has no method for (listing and bulk-deleting by tag), through its own client."""
    call = sdk.get if method == "GET" else sdk.delete
    return call(f"/accounts/{ACCOUNT}/workers/dispatch/namespaces/{path}", cast_to=object, options={"params": params})


# -- the flows, with Cloudflare's SDK ---------------------------------------------------------------


def test_namespaces_with_the_sdk(sdk: cloudflare.Cloudflare) -> None:
    namespaces = sdk.workers_for_platforms.dispatch.namespaces
    created = namespaces.create(account_id=ACCOUNT, name="staging")
    assert created.namespace_name == "staging" and created.script_count == 0 and created.created_by == ACCOUNT
    assert len(created.namespace_id or "") == 36 and created.created_on is not None and created.trusted_workers is False
    assert {"default", "staging"} <= {ns.namespace_name for ns in namespaces.list(account_id=ACCOUNT)}
    assert namespaces.get("staging", account_id=ACCOUNT).namespace_id == created.namespace_id
    with pytest.raises(cloudflare.ConflictError) as exists:
        namespaces.create(account_id=ACCOUNT, name="staging")
    assert exists.value.body["errors"][0]["code"] == 100120  # type: ignore[index]
    namespaces.scripts.update("doomed", account_id=ACCOUNT, dispatch_namespace="staging", metadata={"main_module": "h.wasm"},
                              files=[("h.wasm", HELLO, "application/wasm")])
    assert namespaces.get("staging", account_id=ACCOUNT).script_count == 1
    namespaces.delete("staging", account_id=ACCOUNT)  # as Cloudflare does, with its scripts
    with pytest.raises(cloudflare.NotFoundError) as missing:
        namespaces.get("staging", account_id=ACCOUNT)
    assert missing.value.body["errors"][0] == {"code": 100119, "message": "dispatch namespace 'staging' does not exist"}  # type: ignore[index]
    with pytest.raises(cloudflare.BadRequestError, match="the default namespace cannot be deleted"):
        namespaces.delete("default", account_id=ACCOUNT)


def test_a_wasm_tenant_with_a_var_and_a_secret(sdk: cloudflare.Cloudflare, served: Serve) -> None:
    scripts = sdk.workers_for_platforms.dispatch.namespaces.scripts
    where = {"account_id": ACCOUNT, "dispatch_namespace": "default"}
    uploaded = scripts.update(
        "tenant-a", **where,
        metadata={
            "main_module": "echo.wasm",
            "bindings": [
                {"type": "plain_text", "name": "GREETING", "text": "hello from the SDK"},
                {"type": "secret_text", "name": "API_KEY", "text": SECRET},
                {"type": "json", "name": "CONFIG", "json": {"plan": "free", "limit": 3}},
            ],
            "tags": ["customer-1", "free"],
            "compatibility_date": "2024-09-01",
            "compatibility_flags": ["nodejs_compat"],
        },
        files=[("echo.wasm", ECHO, "application/wasm")],
    )
    assert uploaded.id == "tenant-a" and uploaded.etag == hashlib.sha256(ECHO).hexdigest()
    assert uploaded.tags == ["customer-1", "free"] and uploaded.compatibility_date == "2024-09-01"
    assert uploaded.compatibility_flags == ["nodejs_compat"] and uploaded.created_on is not None
    env = served.dispatch("tenant-a.example.com").json()["env"]
    assert env["API_KEY"] == SECRET and env["GREETING"] == "hello from the SDK"
    assert json.loads(env["CONFIG"]) == {"plan": "free", "limit": 3}

    scripts.update("tenant-b", **where, metadata={"main_module": "h.wasm", "tags": ["customer-2", "free"]},
                   files=[("h.wasm", HELLO, "application/wasm")])
    scripts.update("tenant-c", **where, metadata={"main_module": "h.wasm", "tags": ["customer-1", "paid"]},
                   files=[("h.wasm", HELLO, "application/wasm")])
    by_tag = raw(sdk, "GET", "default/scripts", tags="customer-1:yes")
    assert [item["id"] for item in by_tag["result"]] == ["tenant-a", "tenant-c"] and by_tag["result_info"]["count"] == 2
    assert [item["id"] for item in raw(sdk, "GET", "default/scripts", tags="free:yes,customer-1:no")["result"]] == ["tenant-b"]

    details = scripts.get("tenant-a", **where)
    assert details.dispatch_namespace == "default" and details.script is not None and details.script.id == "tenant-a"
    assert scripts.content.get("tenant-a", **where).read() == ECHO
    settings = scripts.settings.get("tenant-a", **where)
    assert settings is not None and settings.compatibility_date == "2024-09-01"
    shown = {binding.name: binding.model_dump(exclude_none=True) for binding in settings.bindings or []}
    assert shown["GREETING"] == {"name": "GREETING", "text": "hello from the SDK", "type": "plain_text"}
    assert shown["API_KEY"] == {"name": "API_KEY", "type": "secret_text"}
    assert [(s.name, s.type) for s in scripts.secrets.list("tenant-a", **where)] == [("API_KEY", "secret_text")]
    secret = scripts.secrets.get("API_KEY", script_name="tenant-a", **where)
    assert secret.model_dump() == {"name": "API_KEY", "type": "secret_text"}

    assert list(scripts.tags.update("tenant-a", **where, body=["customer-1", "paid"])) == ["customer-1", "paid"]
    assert list(scripts.tags.list("tenant-a", **where)) == ["customer-1", "paid"]
    scripts.tags.delete("paid", script_name="tenant-a", **where)
    assert list(scripts.tags.list("tenant-a", **where)) == ["customer-1"]

    scripts.secrets.update("tenant-a", **where, name="SECOND", text=SECRET + "-2", type="secret_text")
    assert served.dispatch("tenant-a.example.com").json()["env"]["SECOND"] == SECRET + "-2"
    scripts.secrets.delete("SECOND", script_name="tenant-a", **where)
    scripts.settings.edit("tenant-a", **where, settings={"bindings": [
        {"type": "plain_text", "name": "GREETING", "text": "edited"}, {"type": "secret_text", "name": "API_KEY"}]})
    env = served.dispatch("tenant-a.example.com").json()["env"]
    assert env["GREETING"] == "edited" and env["API_KEY"] == SECRET and "SECOND" not in env and "CONFIG" not in env

    replaced = scripts.content.update("tenant-a", **where, metadata={"main_module": "h.wasm"},
                                      files=[("h.wasm", HELLO, "application/wasm")])
    assert replaced.id == "tenant-a" and replaced.etag == hashlib.sha256(HELLO).hexdigest()
    assert served.dispatch("tenant-a.example.com").text == "edited\n"  # hello answers $GREETING: the settings stayed

    deleted = raw(sdk, "DELETE", "default/scripts", tags="customer-1:yes")
    assert sorted(item["id"] for item in deleted["result"]) == ["tenant-a", "tenant-c"]
    assert served.dispatch("tenant-a.example.com").status_code == 404
    scripts.delete("tenant-b", **where, force=True)
    with pytest.raises(cloudflare.NotFoundError) as gone:
        scripts.get("tenant-b", **where)
    assert gone.value.body["errors"][0]["code"] == 10007  # type: ignore[index]
    assert_hidden(served, SECRET, SECRET + "-2")


def test_a_dispatch_worker_with_outbound_parameters_and_a_tail_worker(
    sdk: cloudflare.Cloudflare, served: Serve, origin: Any
) -> None:
    platform = sdk.workers.scripts
    tenants = sdk.workers_for_platforms.dispatch.namespaces.scripts
    gateway = platform.update(
        "gateway", account_id=ACCOUNT,
        metadata={"main_module": "gw.wasm", "bindings": [{"type": "secret_text", "name": "API_TOKEN", "text": GATEWAY_TOKEN}]},
        files=[("gw.wasm", protocol_module("outbound-credential").read_bytes(), "application/wasm")],
    )
    assert gateway.id == "gateway"
    platform.update("audit", account_id=ACCOUNT, metadata={"main_module": "audit.wasm"},
                    files=[("audit.wasm", protocol_module("tail-collector").read_bytes(), "application/wasm")])
    tenants.update("shop", account_id=ACCOUNT, dispatch_namespace="default", metadata={"main_module": "f.wasm"},
                   files=[("f.wasm", protocol_module("fetcher").read_bytes(), "application/wasm")])
    dispatcher = platform.update(
        "dispatcher", account_id=ACCOUNT,
        metadata={
            "main_module": "dispatcher.wasm",
            "bindings": [{"type": "dispatch_namespace", "name": "DISPATCHER", "namespace": "default",
                          "outbound": {"worker": {"service": "gateway"}, "params": [{"name": "customer_name"}]}}],
            "tail_consumers": [{"service": "audit"}],
        },
        files=[("dispatcher.wasm", protocol_module("dispatcher").read_bytes(), "application/wasm")],
    )
    assert [c.service for c in dispatcher.tail_consumers or []] == ["audit"]
    namespace = served.admin("GET", "/namespaces/default").json()["result"]
    assert namespace["dispatchWorker"] == "dispatcher"
    assert namespace["outbound"] == {"service": "gateway", "parameters": [{"name": "customer_name", "template": None}]}
    assert served.admin("PUT", "/namespaces/default/egress", json={"allow": [origin.netloc]}).status_code == 200

    answer = served.dispatch("shop.example.com", f"/?url={origin.url('/echo')}")
    assert answer.status_code == 200 and answer.headers["x-dispatched-by"] == "dispatcher", answer.text
    assert answer.text.startswith("1 200")
    assert origin.seen[-1].headers["authorization"] == f"Bearer {GATEWAY_TOKEN}"  # the Outbound Worker's secret
    assert origin.seen[-1].headers["x-customer"] == "shop"  # the parameter the dispatch Worker passed
    bindings = {b["type"]: b for b in served.admin("GET", f"/client/v4/accounts/{ACCOUNT}/workers/scripts/dispatcher/settings").json()["result"]["bindings"]}
    assert bindings["dispatch_namespace"]["outbound"] == {"worker": {"service": "gateway"}, "params": [{"name": "customer_name"}]}

    deadline = time.monotonic() + 20
    consumed: list[str] = []
    while time.monotonic() < deadline and "tail shop ok 200" not in consumed:
        items = served.admin("GET", "/traces", params={"worker": "audit", "limit": "100"}).json()["result"]
        consumed = [message for item in items for log in item["logs"] for message in log["message"]]
        time.sleep(0.1)
    assert "tail dispatcher ok 200" in consumed and "tail shop ok 200" in consumed

    platform.update("dispatcher", account_id=ACCOUNT, metadata={"main_module": "d.wasm"},  # no binding: no longer the dispatcher
                    files=[("d.wasm", protocol_module("dispatcher").read_bytes(), "application/wasm")])
    namespace = served.admin("GET", "/namespaces/default").json()["result"]
    assert namespace["dispatchWorker"] is None and namespace["outbound"] is None
    assert "x-dispatched-by" not in served.dispatch("shop.example.com", "/?url=http://x/").headers
    assert_hidden(served, GATEWAY_TOKEN)


# -- in-process: every refusal, and the finer points -----------------------------------------------


TOKEN = "test-token-0123456789"
BASE = f"/client/v4/accounts/{ACCOUNT}/workers"
NS = BASE + "/dispatch/namespaces"
MAX_MODULE = 256 * 1024


@pytest.fixture
async def small_engine(db_path: Path, wasmer_cache: Path) -> AsyncIterator[Engine]:
    engine = Engine(db_path, cache_dir=wasmer_cache, max_module_bytes=MAX_MODULE)
    try:
        yield engine
    finally:
        await engine.close()


@pytest.fixture
async def cf(small_engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_admin_app(small_engine, TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def form(metadata: Any = None, *modules: tuple[str, bytes, str | None], raw_metadata: bytes | None = None) -> dict[str, Any]:
    """A multipart upload as the SDK sends it: `metadata` (JSON) beside `files` parts named by filename."""
    files: list[tuple[str, Any]] = []
    if raw_metadata is not None or metadata is not None:
        data = raw_metadata if raw_metadata is not None else json.dumps(metadata).encode()
        files.append(("metadata", (None, data, "application/json")))
    for name, data, content_type in modules:
        files.append(("files", (name, data, content_type) if content_type else (name, data)))
    return {"files": files}


def wasm(name: str = "w.wasm", data: bytes = HELLO) -> tuple[str, bytes, str]:
    return (name, data, "application/wasm")


def snapshot(engine: Engine) -> Any:
    return (
        [ns.as_dict() for ns in engine.namespaces()],
        [(w.namespace, w.name, w.version, w.tags, w.vars, tuple(engine.secret_names(w.name, namespace=w.namespace)))
         for ns in engine.namespaces() for w in engine.workers(ns.name)],
        [c.as_dict() for c in engine.tail_consumers()],
    )


def refused(response: httpx.Response, status: int, code: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["result"] is None and body["messages"] == [] and len(body["errors"]) == 1
    error = body["errors"][0]
    assert set(error) == {"code", "message"} and error["code"] == code and isinstance(error["code"], int)
    assert error["message"] and "\n" not in error["message"] and fragment in error["message"], error


def platform_setup(engine: Engine) -> None:
    engine.deploy("hello", HELLO, tags=["free"])
    engine.deploy("gateway", protocol_module("outbound-credential"))
    engine.deploy("audit", protocol_module("tail-collector"))
    engine.put_secret("hello", "KEPT", "v")


JS = ("index.js", b"export default { fetch() { return new Response('hi') } }", "application/javascript+module")

REFUSALS: list[tuple[str, str, str, dict[str, Any], int, int, str]] = [
    ("unknown path", "GET", f"/client/v4/accounts/{ACCOUNT}/nothing", {}, 404, 7003, "Could not route to"),
    ("wrong method", "POST", f"{NS}/default/scripts/hello", {}, 405, 10405, "POST is not allowed"),
    ("namespace body not JSON", "POST", NS, {"content": b"{"}, 400, 10001, "not valid JSON"),
    ("namespace without a name", "POST", NS, {"json": {}}, 400, 10001, "name is required"),
    ("namespace name not a label", "POST", NS, {"json": {"name": "Bad_Name"}}, 400, 10001, "is not a DNS label"),
    ("namespace body with more", "POST", NS, {"json": {"name": "x", "other": 1}}, 400, 10001, "the body must be"),
    ("namespace exists", "POST", NS, {"json": {"name": "default"}}, 409, 100120, "already exists"),
    ("namespace missing", "GET", f"{NS}/nope", {}, 404, 100119, "'nope' does not exist"),
    ("delete the default namespace", "DELETE", f"{NS}/default", {}, 400, 10001, "cannot be deleted"),
    ("upload to a missing namespace", "PUT", f"{NS}/nope/scripts/x", form({"main_module": "w.wasm"}, wasm()), 404, 100119, "does not exist"),
    ("script name not a label", "PUT", f"{NS}/default/scripts/Bad%20Name", form({"main_module": "w.wasm"}, wasm()), 400, 10001, "is not a DNS label"),
    ("upload not multipart", "PUT", f"{NS}/default/scripts/x", {"json": {"main_module": "w.wasm"}}, 400, 10001, "must be multipart/form-data"),
    ("no metadata part", "PUT", f"{NS}/default/scripts/x", form(None, wasm()), 400, 10001, "has no metadata part"),
    ("metadata not JSON", "PUT", f"{NS}/default/scripts/x", form(None, wasm(), raw_metadata=b"{oops"), 400, 10001, "not valid JSON"),
    ("metadata not an object", "PUT", f"{NS}/default/scripts/x", form([1], wasm()), 400, 10001, "must be a JSON object"),
    ("no main module named", "PUT", f"{NS}/default/scripts/x", form({}, wasm()), 400, 10001, "must name the Worker's main module"),
    ("main module missing", "PUT", f"{NS}/default/scripts/x", form({"main_module": "other.wasm"}, wasm()), 400, 10001, "no part of the upload is that module"),
    ("both main_module and body_part", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm", "body_part": "w.wasm"}, wasm()), 400, 10001, "both main_module and body_part"),
    ("a module part typed octet-stream", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w"}, ("w", HELLO, None)), 400, 10001, "has Content-Type application/octet-stream; a module part is typed"),
    ("wasm part that is not wasm", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm"}, wasm(data=b"hello")), 400, 10021, "is not a WebAssembly module"),
    ("wasm module that is not a command", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm"}, wasm(data=b"\x00asm\x01\x00\x00\x00")), 400, 10021, "_start"),
    ("empty module", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm"}, wasm(data=b"")), 400, 10021, "is empty"),
    ("two modules", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm"}, wasm(), wasm("b.wasm")), 400, 10021, "bundle them"),
    ("the same module twice", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm"}, wasm(), wasm()), 400, 10001, "are both module"),
    ("main module is a source map", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.map"}, ("w.map", b"{}", "application/source-map")), 400, 10001, "is a source map"),
    ("a JavaScript syntax error", "PUT", f"{NS}/default/scripts/x", form({"main_module": "index.js"}, ("index.js", b"export default { fetch() { return new Response('hi' } }", "application/javascript+module")), 400, 10021, "syntax error at index.js:1:"),
    ("a JavaScript Worker with no handler", "PUT", f"{NS}/default/scripts/x", form({"main_module": "index.js"}, ("index.js", b"export const x = 1;", "application/javascript+module")), 400, 10021, "has no handler"),
    ("JavaScript that is not UTF-8", "PUT", f"{NS}/default/scripts/x", form({"main_module": "i.js"}, ("i.js", b"\xff\xfe", "application/javascript+module")), 400, 10021, "is not UTF-8 text"),
    ("a script named as a module", "PUT", f"{NS}/default/scripts/x", form({"main_module": "i.js"}, ("i.js", b"addEventListener()", "application/javascript")), 400, 10001, "name it in body_part"),
    ("a module named as a script", "PUT", f"{NS}/default/scripts/x", form({"body_part": "index.js"}, JS), 400, 10001, "name it in main_module"),
    ("JavaScript beside another module", "PUT", f"{NS}/default/scripts/x", form({"main_module": "index.js"}, JS, ("util.js", b"export const a = 1", "application/javascript+module")), 400, 10021, "bundle them"),
    ("unknown binding type", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm", "bindings": [{"type": "kv_namespace", "name": "KV", "namespace_id": "x"}]}, wasm()), 400, 10001, "type kv_namespace, which wasmdeck does not provide"),
    ("a binding name used twice", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm", "bindings": [{"type": "plain_text", "name": "A", "text": "1"}, {"type": "secret_text", "name": "A", "text": "2"}]}, wasm()), 400, 10001, "is used twice"),
    ("a reserved var", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm", "bindings": [{"type": "plain_text", "name": "REQUEST_METHOD", "text": "1"}]}, wasm()), 400, 10001, "reserved for a CGI meta-variable"),
    ("plain_text without text", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm", "bindings": [{"type": "plain_text", "name": "A"}]}, wasm()), 400, 10001, "needs its text"),
    ("a secret over 5 KiB", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm", "bindings": [{"type": "secret_text", "name": "S", "text": "x" * 6000}]}, wasm()), 400, 10001, "over the 5120 byte limit"),
    ("a secret to keep that is not there", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm", "bindings": [{"type": "secret_text", "name": "S"}]}, wasm()), 400, 10001, "no such secret to keep"),
    ("bindings not a list", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm", "bindings": {}}, wasm()), 400, 10001, "must be a list of bindings"),
    ("nine tags", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm", "tags": [f"t{i}" for i in range(9)]}, wasm()), 400, 10001, "at most 8 tags"),
    ("a tag with a comma", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm", "tags": ["a,b"]}, wasm()), 400, 10001, "contains ','"),
    ("a missing Tail Worker", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm", "tail_consumers": [{"service": "nope"}]}, wasm()), 400, 10001, "is not a script in namespace"),
    ("a Tail Worker of another namespace", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm", "tail_consumers": [{"service": "audit", "namespace": "other"}]}, wasm()), 400, 10001, "Tail Workers of the same namespace"),
    ("a WCGI Tail Worker", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm", "tail_consumers": [{"service": "hello"}]}, wasm()), 400, 10001, "must speak the Worker protocol"),
    ("limits per upload", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm", "limits": {"cpu_ms": 50}}, wasm()), 400, 10001, "limits per tag"),
    ("an unknown metadata field", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm", "frobnicate": 1}, wasm()), 400, 10001, "unknown field metadata.frobnicate"),
    ("a bad compatibility date", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm", "compatibility_date": "2024-13-01"}, wasm()), 400, 10001, "is not a calendar date"),
    ("a compatibility date in the future", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm", "compatibility_date": "2999-01-01"}, wasm()), 400, 10001, "is in the future"),
    ("a user Worker that dispatches", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm", "bindings": [{"type": "dispatch_namespace", "name": "D", "namespace": "default"}]}, wasm()), 400, 10001, "cannot dispatch"),
    ("a WCGI dispatch Worker", "PUT", f"{BASE}/scripts/front", form({"main_module": "w.wasm", "bindings": [{"type": "dispatch_namespace", "name": "D", "namespace": "default"}]}, wasm()), 400, 10021, "must speak the Worker protocol"),
    ("a dispatch binding to a missing namespace", "PUT", f"{BASE}/scripts/front", form({"main_module": "w.wasm", "bindings": [{"type": "dispatch_namespace", "name": "D", "namespace": "nope"}]}, wasm()), 404, 100119, "'nope' does not exist"),
    ("a missing Outbound Worker", "PUT", f"{BASE}/scripts/front", form({"main_module": "d.wasm", "bindings": [{"type": "dispatch_namespace", "name": "D", "namespace": "default", "outbound": {"worker": {"service": "nope"}}}]}, ("d.wasm", protocol_module("dispatcher").read_bytes(), "application/wasm")), 400, 10001, "Outbound Worker 'nope' is not a script"),
    ("bad outbound params", "PUT", f"{BASE}/scripts/front", form({"main_module": "d.wasm", "bindings": [{"type": "dispatch_namespace", "name": "D", "namespace": "default", "outbound": {"worker": {"service": "gateway"}, "params": [{"name": "not a name"}]}}]}, ("d.wasm", protocol_module("dispatcher").read_bytes(), "application/wasm")), 400, 10001, "outbound params"),
    ("a multipart body without its end", "PUT", f"{NS}/default/scripts/x", {"content": b"--b\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{}", "headers": {"Content-Type": "multipart/form-data; boundary=b"}}, 400, 10001, "ends before its closing boundary"),
    ("a part without a name", "PUT", f"{NS}/default/scripts/x", {"content": b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n", "headers": {"Content-Type": "multipart/form-data; boundary=b"}}, 400, 10001, "needs a Content-Disposition"),
    ("too many parts", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm"}, *[wasm(f"{i}.wasm", b"x") for i in range(MAX_PARTS)]), 400, 10001, f"more than {MAX_PARTS} parts"),
    ("a module over the limit", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm"}, wasm(data=b"\x00asm" + b"x" * (4 * MAX_MODULE))), 413, 10027, "more than the 0.25 MiB"),
    ("an upload over the limit", "PUT", f"{NS}/default/scripts/x", form({"main_module": "w.wasm"}, wasm(data=b"\x00asm" + b"x" * (8 * MAX_MODULE))), 413, 10027, "the upload is 2.0 MiB, over the 1.3 MiB this server accepts"),
    ("an upload declaring too much", "PUT", f"{NS}/default/scripts/x", {"content": b"x", "headers": {"Content-Type": "multipart/form-data; boundary=b", "Content-Length": str(64 * 2**20)}}, 413, 10027, "over the 1.3 MiB this server accepts"),
    ("a secret_key secret", "PUT", f"{NS}/default/scripts/hello/secrets", {"json": {"name": "K", "type": "secret_key", "format": "raw"}}, 400, 10001, "secret_key bindings"),
    ("a secret without text", "PUT", f"{NS}/default/scripts/hello/secrets", {"json": {"name": "K", "type": "secret_text"}}, 400, 10001, "needs the secret's name and its text"),
    ("a reserved secret name", "PUT", f"{NS}/default/scripts/hello/secrets", {"json": {"name": "QUERY_STRING", "text": "x", "type": "secret_text"}}, 400, 10001, "secret QUERY_STRING is reserved"),
    ("a secret for a missing script", "PUT", f"{NS}/default/scripts/nope/secrets", {"json": {"name": "K", "text": "x", "type": "secret_text"}}, 404, 10007, "'nope' does not exist"),
    ("a missing secret", "GET", f"{NS}/default/scripts/hello/secrets/NOPE", {}, 404, 10007, "has no secret named 'NOPE'"),
    ("deleting a missing secret", "DELETE", f"{NS}/default/scripts/hello/secrets/NOPE", {}, 404, 10007, "has no secret named 'NOPE'"),
    ("bulk secrets deleting a missing one", "PATCH", f"{NS}/default/scripts/hello/secrets-bulk", {"json": {"secrets": {"NOPE": None}}}, 404, 10007, "to delete"),
    ("bulk secrets not an object", "PATCH", f"{NS}/default/scripts/hello/secrets-bulk", {"json": []}, 400, 10001, "the body must be"),
    ("tags not a list", "PUT", f"{NS}/default/scripts/hello/tags", {"json": {"a": 1}}, 400, 10001, "JSON list of tags"),
    ("nine tags replacing", "PUT", f"{NS}/default/scripts/hello/tags", {"json": [f"t{i}" for i in range(9)]}, 400, 10001, "at most 8 tags"),
    ("deleting a tag it lacks", "DELETE", f"{NS}/default/scripts/hello/tags/paid", {}, 404, 10007, "has no tag 'paid'"),
    ("settings without a settings part", "PATCH", f"{NS}/default/scripts/hello/settings", form({"tags": []}), 400, 10001, "has no settings part"),
    ("settings with an unknown field", "PATCH", f"{NS}/default/scripts/hello/settings", {"files": [("settings", (None, b'{"main_module": "x"}', "application/json"))]}, 400, 10001, "unknown field settings.main_module"),
    ("settings keeping a missing secret", "PATCH", f"{NS}/default/scripts/hello/settings", {"files": [("settings", (None, b'{"tags": ["a"], "bindings": [{"type": "secret_text", "name": "GONE"}]}', "application/json"))]}, 400, 10001, "no such secret to keep"),
    ("settings making a var shadow a kept secret", "PATCH", f"{NS}/default/scripts/hello/settings", {"files": [("settings", (None, b'{"tags": ["a"], "keep_bindings": ["secret_text"], "bindings": [{"type": "plain_text", "name": "KEPT", "text": "x"}]}', "application/json"))]}, 400, 10001, "both a var and a secret"),
    ("bulk delete without a filter", "DELETE", f"{NS}/default/scripts", {}, 400, 10001, "needs a tag filter"),
    ("a malformed tag filter", "GET", f"{NS}/default/scripts?tags=free:maybe", {}, 400, 10001, "is not of the form tag:yes"),
    ("a bad page size", "GET", f"{NS}/default/scripts?limit=0", {}, 400, 10001, "limit must be"),
    ("deleting an Outbound Worker in use", "DELETE", f"{NS}/default/scripts/gateway", {}, 409, 10001, "is the Outbound Worker of namespace 'default'"),
    ("deleting a Tail Worker in use by tag", "DELETE", f"{NS}/default/scripts?tags=tail:yes", {}, 409, 10001, "a Tail Worker in namespace"),
    ("a bad force flag", "DELETE", f"{NS}/default/scripts/hello?force=perhaps", {}, 400, 10001, "force must be true or false"),
    ("content without a module", "PUT", f"{NS}/default/scripts/hello/content", form({"main_module": "w.wasm"}), 400, 10001, "no part of the upload is that module"),
    ("content changing settings", "PUT", f"{NS}/default/scripts/hello/content", form({"main_module": "w.wasm", "tags": []}, wasm()), 400, 10001, "cannot be changed with the content"),
    ("a missing account-level script", "GET", f"{BASE}/scripts/nope/settings", {}, 404, 10007, "'nope' does not exist"),
]


@pytest.mark.parametrize(("case", "method", "path", "options", "status", "code", "fragment"), REFUSALS, ids=[r[0] for r in REFUSALS])
async def test_every_refusal_is_cloudflare_shaped_and_changes_nothing(
    small_engine: Engine, cf: httpx.AsyncClient, case: str, method: str, path: str, options: dict[str, Any],
    status: int, code: int, fragment: str,
) -> None:
    platform_setup(small_engine)
    small_engine.set_outbound("gateway", ["customer_name"])
    small_engine.deploy("tailed", HELLO, tags=["tail"])
    small_engine.add_tail_consumer("audit", worker="hello")
    small_engine.set_tags("audit", ["tail"])
    before = snapshot(small_engine)
    refused(await cf.request(method, path, **options), status, code, fragment)
    assert snapshot(small_engine) == before


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}])
async def test_cloudflare_paths_need_the_admin_token(small_engine: Engine, headers: dict[str, str]) -> None:
    before = snapshot(small_engine)
    app = create_admin_app(small_engine, TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin", headers=headers) as anonymous:
        for method, path in (("POST", NS), ("GET", NS), ("PUT", f"{NS}/default/scripts/x"), ("GET", f"{BASE}/scripts")):
            response = await anonymous.request(method, path, json={"name": "evil"})
            refused(response, 401, 10000, "Authentication error")
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert snapshot(small_engine) == before


async def test_wasmdecks_own_paths_keep_working_beside_cloudflares(small_engine: Engine, cf: httpx.AsyncClient) -> None:
    assert (await cf.get("/namespaces")).json()["result"][0]["name"] == "default"
    assert (await cf.get("/no/such/path")).json()["errors"][0]["code"] == "not_found"
    assert (await cf.get("/client/v4x")).json()["errors"][0]["code"] == "not_found"  # not a Cloudflare path


async def test_an_oversized_upload_is_refused_before_it_is_read(small_engine: Engine, cf: httpx.AsyncClient) -> None:
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"w.wasm\"\r\nContent-Type: application/wasm\r\n\r\n"
        for _ in range(4096):  # 256 MiB if it were all read
            sent += 1
            yield b"\x00" * 65536

    response = await cf.put(f"{NS}/default/scripts/x", content=body(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    refused(response, 413, 10027, "the most this server accepts")
    assert sent < 64  # stopped just past the limit (1.3 MiB here), not at the end of the body


async def test_uploads_follow_cloudflares_binding_semantics(small_engine: Engine, cf: httpx.AsyncClient) -> None:
    platform_setup(small_engine)
    put = lambda metadata, module=HELLO: cf.put(f"{NS}/default/scripts/hello", **form(metadata, wasm(data=module)))  # noqa: E731
    assert (await put({"main_module": "w.wasm", "bindings": [{"type": "plain_text", "name": "A", "text": "1"}]})).status_code == 200
    hello = small_engine.worker("hello")
    assert hello.vars == {"A": "1"} and hello.tags == ("free",)  # tags left out: kept
    assert small_engine.secret_names("hello") == []  # secrets left out (and not kept): gone, as on Cloudflare
    small_engine.put_secret("hello", "S", "v")
    response = await put({"main_module": "w.wasm", "keep_bindings": ["secret_text", "plain_text"],
                          "bindings": [{"type": "plain_text", "name": "B", "text": "2"}]})
    assert response.status_code == 200
    assert small_engine.worker("hello").vars == {"A": "1", "B": "2"} and small_engine.secret_names("hello") == ["S"]
    response = await cf.put(f"{NS}/default/scripts/hello", **form({"body_part": "w.wasm", "tags": []}, wasm()))
    assert response.status_code == 200 and small_engine.worker("hello").tags == () and small_engine.worker("hello").vars == {}


async def test_content_settings_tags_and_bulk_secrets(small_engine: Engine, cf: httpx.AsyncClient) -> None:
    platform_setup(small_engine)
    script = f"{NS}/default/scripts/hello"
    response = await cf.put(script + "/content", files=[("module", ("e.wasm", ECHO, "application/wasm"))],
                            headers={"CF-WORKER-MAIN-MODULE-PART": "e.wasm"})
    assert response.status_code == 200 and response.json()["result"]["etag"] == hashlib.sha256(ECHO).hexdigest()
    assert small_engine.worker("hello").tags == ("free",) and small_engine.secret_names("hello") == ["KEPT"]
    content = await cf.get(script + "/content")
    assert content.content == ECHO and content.headers["content-type"] == "application/wasm"

    assert (await cf.put(script + "/tags/paid")).json()["result"] == ["free", "paid"]
    assert (await cf.put(script + "/tags", content=b"null")).json()["result"] == []  # the SDK sends null for no tags

    bulk = await cf.patch(script + "/secrets-bulk", json={"secrets": {"KEPT": None, "A": {"text": "1", "type": "secret_text"},
                                                                      "B": {"name": "B", "text": "2", "type": "secret_text"}}})
    assert bulk.json()["result"] == [{"name": "A", "type": "secret_text"}, {"name": "B", "type": "secret_text"}]
    assert small_engine.versions("hello")[-1].message == "secret A set; secret B set; secret KEPT deleted"
    env = json.loads((await small_engine.request("http://hello.example.com/")).body)["env"]
    assert env["A"] == "1" and env["B"] == "2" and "KEPT" not in env

    settings = {"tags": ["x"], "compatibility_date": "2024-01-01", "tail_consumers": [{"service": "audit"}],
                "bindings": [{"type": "plain_text", "name": "P", "text": "p"}, {"type": "secret_text", "name": "A"}]}
    patched = await cf.patch(script + "/settings", files=[("settings", (None, json.dumps(settings).encode(), "application/json"))])
    result = patched.json()["result"]
    assert result["tags"] == ["x"] and result["compatibility_date"] == "2024-01-01" and result["tail_consumers"] == [{"service": "audit"}]
    assert result["bindings"] == [{"type": "plain_text", "name": "P", "text": "p"}, {"type": "secret_text", "name": "A"}]
    assert small_engine.secret_names("hello") == ["A"] and [c.consumer for c in small_engine.tail_consumers()] == ["audit"]
    assert (await cf.get(script + "/bindings")).json()["result"] == result["bindings"]


async def test_listing_pages_and_platform_workers(small_engine: Engine, cf: httpx.AsyncClient) -> None:
    for name in ("a", "b", "c"):
        small_engine.deploy(name, HELLO)
    first = (await cf.get(f"{NS}/default/scripts", params={"limit": "2"})).json()
    assert [s["id"] for s in first["result"]] == ["a", "b"] and first["result_info"]["cursor"] == "b"
    rest = (await cf.get(f"{NS}/default/scripts", params={"limit": "2", "cursor": "b"})).json()
    assert [s["id"] for s in rest["result"]] == ["c"] and rest["result_info"]["cursor"] == ""
    assert [s["id"] for s in (await cf.get(f"{BASE}/scripts")).json()["result"]] == ["a", "b", "c"]
    module = await cf.get(f"{BASE}/scripts/a")
    assert module.content == HELLO


async def test_a_dispatch_worker_for_another_namespace_lives_there(small_engine: Engine, cf: httpx.AsyncClient) -> None:
    small_engine.create_namespace("shop")
    small_engine.deploy("gateway", protocol_module("outbound-logger"), namespace="shop")
    dispatcher = protocol_module("dispatcher").read_bytes()
    metadata = {"main_module": "d.wasm", "bindings": [{"type": "dispatch_namespace", "name": "D", "namespace": "shop",
                                                      "outbound": {"worker": {"service": "gateway"}, "params": [{"name": "customer_name"}]}}]}
    response = await cf.put(f"{BASE}/scripts/front", **form(metadata, ("d.wasm", dispatcher, "application/wasm")))
    assert response.status_code == 200, response.text
    assert "serves namespace 'default'" in response.json()["messages"][0]["message"]
    shop = small_engine.namespace("shop")
    assert shop.dispatch_worker == "front" and shop.outbound is not None and shop.outbound.service == "gateway"
    assert (await cf.get(f"{BASE}/scripts/front/settings")).json()["result"]["bindings"][0]["namespace"] == "shop"
    assert small_engine.workers("default") == []
    refused(await cf.delete(f"{BASE}/scripts/front"), 409, 10001, "is the dispatch Worker of namespace 'shop'")
    assert (await cf.delete(f"{BASE}/scripts/front", params={"force": "true"})).status_code == 200
    assert small_engine.namespace("shop").dispatch_worker is None and small_engine.namespace("shop").outbound is None


async def test_javascript_uploads_reach_the_engine_once_switched_on(
    small_engine: Engine, cf: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`JAVASCRIPT_WORKERS` is the one switch: on, the checked source goes to `Engine.deploy(..., abi="javascript")`."""
    calls: list[tuple[bytes, str | None]] = []
    real_deploy = small_engine.deploy

    def spy(name: str, module: Any, **options: Any) -> Any:
        calls.append((module, options.get("abi")))
        return real_deploy(name, module, **options)

    monkeypatch.setattr(small_engine, "deploy", spy)
    monkeypatch.setattr(cloudflare_api, "JAVASCRIPT_WORKERS", True)
    response = await cf.put(f"{NS}/default/scripts/js", **form({"main_module": "index.js"}, JS))
    assert calls == [(JS[1], "javascript")]
    if "javascript" in ABIS:
        assert response.status_code == 200, response.text
    else:  # the engine of this build says why, in Cloudflare's shape
        refused(response, 400, 10001, "ABI 'javascript' is not one of")


async def test_the_namespace_the_listener_serves_holds_the_platform_workers(small_engine: Engine) -> None:
    small_engine.create_namespace("shop")
    app = create_admin_app(small_engine, TOKEN, dispatch=DispatchListener("http://127.0.0.1:1", "shop", 1024))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        response = await client.put(f"{BASE}/scripts/gateway", **form({"main_module": "g.wasm"}, (
            "g.wasm", protocol_module("outbound-logger").read_bytes(), "application/wasm")))
        assert response.status_code == 200 and response.json()["result"]["wasmdeck"]["namespace"] == "shop"
        assert small_engine.worker("gateway", namespace="shop").abi == "protocol"
        refused(await client.delete(f"{NS}/shop"), 409, 10001, "is the one this server's dispatch listener serves")
    assert small_engine.namespace("shop").name == "shop"


async def test_a_javascript_dispatch_worker_finds_the_namespace_under_its_bindings_name(
    small_engine: Engine, cf: httpx.AsyncClient
) -> None:
    tenant = ("shop.js", b"export default { fetch(request, env) { return new Response(`shop ${env.GREETING}`); } }",
              "application/javascript+module")
    tenant_metadata = {"main_module": "shop.js", "bindings": [{"type": "plain_text", "name": "GREETING", "text": "hi"}]}
    assert (await cf.put(f"{NS}/default/scripts/shop", **form(tenant_metadata, tenant))).status_code == 200
    front = ("front.js", b"""export default {
  async fetch(request, env) {
    try { return await env.TENANTS.get(new URL(request.url).hostname.split('.')[0]).fetch(request); }
    catch (e) { return new Response(e.message, { status: e.message.startsWith('Worker not found') ? 404 : 500 }); }
  },
};""", "application/javascript+module")
    metadata = {"main_module": "front.js", "bindings": [{"type": "dispatch_namespace", "name": "TENANTS", "namespace": "default"}]}
    response = await cf.put(f"{BASE}/scripts/front", **form(metadata, front))
    assert response.status_code == 200, response.text
    assert response.json()["result"]["handlers"] == ["fetch"]
    assert small_engine.namespace().dispatch_worker == "front" and small_engine.namespace().dispatch_binding == "TENANTS"
    bindings = (await cf.get(f"{BASE}/scripts/front/settings")).json()["result"]["bindings"]
    assert [(b["type"], b["name"]) for b in bindings] == [("dispatch_namespace", "TENANTS")]
    answer = await small_engine.request("http://shop.example.com/")
    assert (answer.status, answer.text) == (200, "shop hi")
    missing = await small_engine.request("http://ghost.example.com/")
    assert (missing.status, missing.text) == (404, "Worker not found: ghost")
    content = await cf.get(f"{BASE}/scripts/front/content/v2")
    assert content.content == front[1] and content.headers["content-type"].startswith("application/javascript+module")
    bad = {"main_module": "front.js", "bindings": [{"type": "dispatch_namespace", "name": "not-an-identifier", "namespace": "default"}]}
    before = snapshot(small_engine)
    refused(await cf.put(f"{BASE}/scripts/front", **form(bad, front)), 400, 10001, "not a JavaScript identifier")
    assert snapshot(small_engine) == before


async def test_what_wrangler_asks_before_deploying_a_platform_worker(small_engine: Engine, cf: httpx.AsyncClient) -> None:
    """The service, its deployments and its workers.dev route: Cloudflare's not-found codes for a
    Worker not there yet (wrangler then uploads it as new), answers once it is, and a workers.dev
    route that wasmdeck cannot give refused."""
    refused(await cf.get(f"{BASE}/services/front"), 404, 10090, "does not exist")
    refused(await cf.get(f"{BASE}/scripts/front/deployments"), 404, 10007, "does not exist")
    refused(await cf.get(f"{BASE}/services/Bad_Name"), 400, 10001, "script name")
    small_engine.deploy("front", HELLO)
    small_engine.set_tags("front", ["edge"])  # a second version
    service = (await cf.get(f"{BASE}/services/front")).json()["result"]
    assert service["id"] == "front" and service["default_environment"]["script"]["id"] == "front"
    deployments = (await cf.get(f"{BASE}/scripts/front/deployments")).json()["result"]["deployments"]
    script = (await cf.get(f"{BASE}/scripts/front/settings")).json()
    assert len(deployments) == 2 and [d["versions"][0]["percentage"] for d in deployments] == [100, 100]
    assert deployments[0]["created_on"] >= deployments[1]["created_on"]
    assert len({d["versions"][0]["version_id"] for d in deployments}) == 2 and script["success"]
    assert (await cf.get(f"{BASE}/scripts/front/subdomain")).json()["result"] == {"enabled": False, "previews_enabled": False}
    assert (await cf.post(f"{BASE}/scripts/front/subdomain", json={"enabled": False})).status_code == 200
    refused(await cf.post(f"{BASE}/scripts/front/subdomain", json={"enabled": True}), 400, 10001, "no workers.dev")
    refused(await cf.post(f"{BASE}/scripts/front/subdomain", content=b"{"), 400, 10001, "not valid JSON")
    assert [v.version for v in small_engine.versions("front")] == [1, 2]


async def test_versions_and_deployments_of_a_platform_worker(small_engine: Engine, cf: httpx.AsyncClient) -> None:
    """wrangler's path for a Worker that exists: a version uploaded (it serves at once: wasmdeck
    keeps no version that does not), then deployed at 100 %; an earlier version deployed is a
    rollback; a split between versions, an unknown version or a malformed body changes nothing."""
    small_engine.deploy("front", HELLO)
    uploaded = await cf.post(f"{BASE}/scripts/front/versions",
                             **form({"main_module": "hello.wasm"}, ("hello.wasm", HELLO, "application/wasm")))
    assert uploaded.status_code == 200, uploaded.text
    version = uploaded.json()["result"]
    assert version["number"] == 2 and version["resources"]["script"]["etag"] == small_engine.worker("front").sha256
    assert "serves now" in uploaded.json()["messages"][-1]["message"]
    items = (await cf.get(f"{BASE}/scripts/front/versions")).json()["result"]["items"]
    assert [v["number"] for v in items] == [2, 1]
    assert (await cf.get(f"{BASE}/scripts/front/versions/{items[1]['id']}")).json()["result"]["number"] == 1
    refused(await cf.get(f"{BASE}/scripts/front/versions/nope"), 404, 10220, "has no version")

    current = await cf.post(f"{BASE}/scripts/front/deployments", json={"strategy": "percentage",
                                                                        "versions": [{"version_id": version["id"], "percentage": 100}]})
    assert current.status_code == 200, current.text
    assert [v.version for v in small_engine.versions("front")] == [1, 2], "the current version deployed changes nothing"

    for body, status, code, fragment in [
        ({"versions": [{"version_id": items[0]["id"], "percentage": 50}, {"version_id": items[1]["id"], "percentage": 50}]},
         400, 10001, "no gradual rollouts"),
        ({"versions": [{"version_id": items[1]["id"], "percentage": 10}]}, 400, 10001, "no gradual rollouts"),
        ({"versions": [{"version_id": "0000", "percentage": 100}]}, 404, 10220, "has no version"),
        ({"versions": "all"}, 400, 10001, "exactly one version"),
        ({"strategy": "canary", "versions": [{"version_id": items[1]["id"], "percentage": 100}]}, 400, 10001, "strategy"),
    ]:
        refused(await cf.post(f"{BASE}/scripts/front/deployments", json=body), status, code, fragment)
    assert [v.version for v in small_engine.versions("front")] == [1, 2]
    refused(await cf.post(f"{BASE}/scripts/ghost/deployments", json={"versions": []}), 404, 10007, "does not exist")

    back = await cf.post(f"{BASE}/scripts/front/deployments", json={"versions": [{"version_id": items[1]["id"], "percentage": 100}]})
    assert back.status_code == 200, back.text
    assert small_engine.worker("front").version == 3 and "rollback to version 1" in small_engine.versions("front")[-1].message

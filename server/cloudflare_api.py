"""Cloudflare's Workers for Platforms REST paths on the admin listener, so Cloudflare's own tools
(the `cloudflare` SDK, wrangler) deploy to wasmdeck by changing one base URL:
`base_url=http://127.0.0.1:8788/client/v4` for the SDK, `CLOUDFLARE_API_BASE_URL` for wrangler,
the admin token as the API token, any account id.

Every path maps onto the engine; nothing is stored twice. A dispatch namespace is a wasmdeck
namespace; a script is a worker (`PUT` is a deploy: a new version); `plain_text` and `json`
bindings are vars (json as JSON text), `secret_text` bindings are secrets; tags, tail consumers,
the namespace's dispatch Worker and Outbound Worker are the engine's own. Answers are Cloudflare's
envelope, `{success, errors, messages, result}` (plus `result_info` on lists), with Cloudflare's
field names; a refusal is `{success: false, errors: [{code, message}]}` with Cloudflare's numeric
code where theirs is known and one sentence, and changes nothing.

The platform's own Workers (`/workers/scripts/{name}`, account level in Cloudflare) live in a
wasmdeck namespace too: the one the server's dispatch listener serves (`serve --namespace`),
except a Worker uploaded with a `dispatch_namespace` binding, which lives in the namespace it
fronts (wasmdeck runs a dispatch Worker, its Outbound Worker and its Tail Workers inside that
namespace, so those must be uploaded there, or be account-level Workers of a server serving it).

    /client/v4/accounts/{account_id}/workers/...
    GET    dispatch/namespaces                                  list namespaces
    POST   dispatch/namespaces                                  {"name"}
    GET    dispatch/namespaces/{ns}                             one namespace
    DELETE dispatch/namespaces/{ns}                             delete it and its scripts
    GET    dispatch/namespaces/{ns}/scripts?tags=a:yes,b:no     list scripts (limit, cursor)
    DELETE dispatch/namespaces/{ns}/scripts?tags=a:yes,b:no     delete the scripts matching the filter (force)
    PUT    dispatch/namespaces/{ns}/scripts/{name}              upload (multipart: metadata + module)
    GET    dispatch/namespaces/{ns}/scripts/{name}              script details
    DELETE dispatch/namespaces/{ns}/scripts/{name}?force=true   delete
    GET    dispatch/namespaces/{ns}/scripts/{name}/content      the module
    PUT    dispatch/namespaces/{ns}/scripts/{name}/content      replace the module, keep the settings
    GET    dispatch/namespaces/{ns}/scripts/{name}/settings     bindings, tags, tail consumers, compatibility
    PATCH  dispatch/namespaces/{ns}/scripts/{name}/settings     multipart `settings` part: change what it names
    GET    dispatch/namespaces/{ns}/scripts/{name}/bindings     the bindings (secret values never)
    GET    dispatch/namespaces/{ns}/scripts/{name}/tags         tags
    PUT    dispatch/namespaces/{ns}/scripts/{name}/tags         replace them (a JSON list)
    PUT    dispatch/namespaces/{ns}/scripts/{name}/tags/{tag}   add one
    DELETE dispatch/namespaces/{ns}/scripts/{name}/tags/{tag}   remove one
    PUT    dispatch/namespaces/{ns}/scripts/{name}/secrets      {"name", "text", "type": "secret_text"}
    GET    dispatch/namespaces/{ns}/scripts/{name}/secrets      names and types, never values
    GET    dispatch/namespaces/{ns}/scripts/{name}/secrets/{s}  one name and type (?url_encoded=true)
    DELETE dispatch/namespaces/{ns}/scripts/{name}/secrets/{s}  remove one
    PATCH  dispatch/namespaces/{ns}/scripts/{name}/secrets-bulk {"secrets": {NAME: {...} or null}}: one version
    GET    scripts                                              the platform's own Workers
    PUT    scripts/{name}                                       upload one (a dispatch_namespace binding makes
                                                                it that namespace's dispatch Worker)
    GET    scripts/{name}                                       its module
    DELETE scripts/{name}?force=true                            delete it
    GET    scripts/{name}/content/v2 | PUT scripts/{name}/content
    GET | PATCH scripts/{name}/settings (multipart), GET | PATCH scripts/{name}/script-settings (JSON),
    GET scripts/{name}/bindings
    PUT | GET scripts/{name}/secrets, GET | DELETE scripts/{name}/secrets/{s}, PATCH scripts/{name}/secrets-bulk

JavaScript Workers: module parts typed `application/javascript(+module)` deploy as JavaScript Workers
(checked by the engine's JavaScript runtime first), with the part's file name in their stack traces. A
`dispatch_namespace` binding's `name` is the binding a JavaScript dispatch Worker finds in `env`.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from wasmdeck.engine import DEFAULT_NAMESPACE, Engine, InvalidInput, InvalidModule, NotFound, Worker
from wasmdeck.engine import protocol
from wasmdeck.engine.engine import ABIS
from wasmdeck.engine.javascript import check_binding_name, speaks_protocol
from wasmdeck.engine.outbound import OutboundSetting
from wasmdeck.engine.secrets import SecretsUnavailable
from wasmdeck.engine.store import Namespace, WorkerVersion
from wasmdeck.engine.validation import check_name, check_tag, check_tags
from wasmdeck.engine.wasm_module import validate_worker_module

from .auth import token_matches
from .writer import EngineWriter
from .cloudflare_upload import (
    CODE_BAD_REQUEST, CODE_NAMESPACE_EXISTS, CODE_NAMESPACE_NOT_FOUND, CODE_SCRIPT_NOT_FOUND, CODE_TOO_LARGE,
    CODE_VALIDATION, HONOURED_FIELDS, UPLOAD_SLACK_BYTES, Bindings, DispatchBinding, Module, Part, Settings,
    TailConsumerRef, UploadError, UploadPlan, bad, find_main_module, parse_json_part, parse_settings, read_multipart,
)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

API_PREFIX = "/client/v4"
JAVASCRIPT_ABI = "javascript"
# The switch for JavaScript uploads: on as soon as the engine lists the ABI (Engine.deploy(..., abi="javascript")).
JAVASCRIPT_WORKERS = JAVASCRIPT_ABI in ABIS

CODE_AUTH = 10000
CODE_UNAVAILABLE = 10013
CODE_NO_ROUTE = 7003
CODE_METHOD = 10405
CODE_SERVICE_NOT_FOUND = 10090
CODE_VERSION_NOT_FOUND = 10220
MAX_JSON_BYTES = 64 * 1024
MAX_LIST = 1000
SETTINGS_FIELDS = ("bindings", "tags", "tail_consumers", "compatibility_date", "compatibility_flags", "keep_bindings")

log = logging.getLogger("wasmdeck.server")


def _refused(status: int, code: int, message: str) -> UploadError:
    return UploadError(status, code, message)


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _stable_id(*parts: object) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, "wasmdeck://" + "/".join(str(p) for p in parts))


def envelope(result: Any, status: int = 200, *, result_info: dict[str, Any] | None = None,
             messages: list[dict[str, Any]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"success": True, "errors": [], "messages": messages or [], "result": result}
    if result_info is not None:
        body["result_info"] = result_info
    return JSONResponse(body, status_code=status)


def error_envelope(status: int, code: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"success": False, "errors": [{"code": code, "message": message}], "messages": [], "result": None},
                        status_code=status, headers=headers)


def _list(items: list[Any], cursor: str | None = None) -> JSONResponse:
    info: dict[str, Any] = {"page": 1, "per_page": len(items), "count": len(items), "total_count": len(items), "total_pages": 1}
    if cursor is not None:
        info["cursor"] = cursor
    return envelope(items, result_info=info)


async def _json_body(request: Request) -> Any:
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_JSON_BYTES:
            raise _refused(413, CODE_BAD_REQUEST, f"the JSON body is over the {MAX_JSON_BYTES} byte limit")
    try:
        return json.loads(bytes(body))
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep to read
        raise bad("the request body is not valid JSON") from None


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "false").lower()
    if value not in ("true", "false", "1", "0", ""):
        raise bad(f"query parameter {name} must be true or false")
    return value in ("true", "1")


class CloudflareApi:
    """The handlers; `platform_namespace` holds the platform's own Workers (see the module's notes)."""

    def __init__(self, engine: Engine, platform_namespace: str = DEFAULT_NAMESPACE, writer: EngineWriter | None = None) -> None:
        self.engine = engine
        self.platform_namespace = platform_namespace
        # every change (several engine calls for one request, a deploy that validates and compiles)
        # runs in a writer thread, never on the event loop that serves dispatch
        self._write = writer or EngineWriter()

    # -- lookups ----------------------------------------------------------------------

    def _namespace(self, name: str) -> Namespace:
        try:
            return self.engine.namespace(name)
        except NotFound:
            raise _refused(404, CODE_NAMESPACE_NOT_FOUND, f"dispatch namespace {name!r} does not exist") from None

    def _worker(self, ns: str, name: str) -> Worker:
        try:
            return self.engine.worker(name, namespace=ns)
        except NotFound:
            raise _refused(404, CODE_SCRIPT_NOT_FOUND, f"script {name!r} does not exist in namespace {ns!r}") from None

    def _find(self, ns: str, name: str) -> Worker | None:
        try:
            return self.engine.worker(name, namespace=ns)
        except NotFound:
            return None

    def _script_name(self, name: str) -> str:
        try:
            return check_name(name, "script name")
        except InvalidInput as error:
            raise bad(str(error)) from None

    def _platform_home(self, name: str) -> str:
        """Where an account-level script lives: the namespace it is the dispatch, Outbound or a Tail Worker of, else
        the platform namespace."""
        fronted = [ns.name for ns in self.engine.namespaces() if ns.dispatch_worker == name]
        fronted += [ns.name for ns in self.engine.namespaces() if ns.name not in fronted and self._references(ns.name, name)]
        if self.platform_namespace in fronted or not fronted:
            return self.platform_namespace
        return fronted[0]

    def _dispatch_path(self, request: Request) -> tuple[str, str]:
        ns = request.path_params["ns"]
        self._namespace(ns)
        return ns, self._script_name(request.path_params["name"])

    def _user_worker_path(self, request: Request) -> tuple[str, str]:
        """A dispatch namespace path that changes a script: a user Worker's only. The namespace's own
        dispatch, Outbound and Tail Workers share its wasmdeck namespace, and an upload under one of
        their names would run a tenant's code in the platform's role, with the platform's secrets."""
        ns, name = self._dispatch_path(request)
        roles = self._references(ns, name)
        if roles:
            raise _refused(409, CODE_BAD_REQUEST, f"script {name!r} is {' and '.join(roles)}, one of the platform's own "
                                                  "Workers, and a dispatch namespace path changes user Workers only: "
                                                  f"change it at /accounts/{{account_id}}/workers/scripts/{name}")
        return ns, name

    def _platform_path(self, request: Request) -> tuple[str, str]:
        name = self._script_name(request.path_params["name"])
        return self._platform_home(name), name

    # -- answers ----------------------------------------------------------------------

    def _namespace_result(self, ns: Namespace, account: str) -> dict[str, Any]:
        workers = self.engine.workers(ns.name)
        modified = max([ns.created_at, *(w.created_at for w in workers)])
        return {
            "namespace_id": str(_stable_id("namespace", ns.name, ns.created_at)),
            "namespace_name": ns.name,
            "created_on": _iso(ns.created_at),
            "modified_on": _iso(modified),
            "created_by": account,
            "modified_by": account,
            "script_count": len(workers),
            "trusted_workers": False,
        }

    def _consumers(self, ns: str, name: str) -> list[str]:
        namespace = self.engine.namespace(ns)
        return [
            c.consumer for c in self.engine.tail_consumers(ns)
            if (c.scope == "worker" and c.worker == name) or (c.scope == "dispatcher" and namespace.dispatch_worker == name)
        ]

    def _script_result(self, ns: str, worker: Worker) -> dict[str, Any]:
        date, flags = self.engine.compatibility(worker.name, namespace=ns)
        version_id = _stable_id("version", ns, worker.name, worker.first_deployed_at, worker.version)
        return {
            "id": worker.name,
            "tag": _stable_id("script", ns, worker.name, worker.first_deployed_at).hex,
            "etag": worker.sha256,
            "created_on": _iso(worker.first_deployed_at),
            "modified_on": _iso(worker.created_at),
            "tags": list(worker.tags),
            "tail_consumers": [{"service": consumer} for consumer in self._consumers(ns, worker.name)],
            "compatibility_date": date,
            "compatibility_flags": list(flags),
            "handlers": list(worker.script.handlers) if worker.script is not None else ["fetch"],
            "has_modules": True,
            "has_assets": False,
            "logpush": False,
            "usage_model": "standard",
            "startup_time_ms": 0,
            "deployment_id": str(version_id),
            "last_deployed_from": "api",
            "wasmdeck": {"namespace": ns, "version": worker.version, "abi": worker.abi, "size": worker.size},
        }

    def _bindings(self, ns: str, worker: Worker) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = [{"type": "plain_text", "name": key, "text": value} for key, value in sorted(worker.vars.items())]
        found += [{"type": "secret_text", "name": key} for key in self.engine.secret_names(worker.name, namespace=ns)]
        namespace = self.engine.namespace(ns)
        if namespace.dispatch_worker == worker.name:
            outbound = namespace.outbound
            found.append(DispatchBinding(
                namespace.dispatch_binding, ns, outbound.service if outbound else None,
                tuple(p.name for p in outbound.parameters) if outbound else (),
            ).as_binding())
        return found

    def _settings_result(self, ns: str, worker: Worker) -> dict[str, Any]:
        date, flags = self.engine.compatibility(worker.name, namespace=ns)
        return {
            "bindings": self._bindings(ns, worker),
            "compatibility_date": date,
            "compatibility_flags": list(flags),
            "tags": list(worker.tags),
            "tail_consumers": [{"service": consumer} for consumer in self._consumers(ns, worker.name)],
            "logpush": False,
            "usage_model": "standard",
            "observability": {"enabled": False},
        }

    # -- namespaces -------------------------------------------------------------------

    async def list_namespaces(self, request: Request) -> Response:
        account = request.path_params["account_id"]
        return _list([self._namespace_result(ns, account) for ns in self.engine.namespaces()])

    async def create_namespace(self, request: Request) -> Response:
        body = await _json_body(request)
        if not isinstance(body, dict) or set(body) - {"name"}:
            raise bad("the body must be a JSON object with the namespace's name, {\"name\": \"...\"}")
        name = body.get("name")
        if not isinstance(name, str):
            raise bad("name is required: give the dispatch namespace a name")
        try:
            check_name(name, "namespace name")
        except InvalidInput as error:
            raise bad(str(error)) from None
        if any(ns.name == name for ns in self.engine.namespaces()):
            raise _refused(409, CODE_NAMESPACE_EXISTS, f"dispatch namespace {name!r} already exists")
        ns = await self._write(self.engine.create_namespace, name)
        return envelope(self._namespace_result(ns, request.path_params["account_id"]))

    async def get_namespace(self, request: Request) -> Response:
        ns = self._namespace(request.path_params["ns"])
        return envelope(self._namespace_result(ns, request.path_params["account_id"]))

    async def delete_namespace(self, request: Request) -> Response:
        ns = self._namespace(request.path_params["ns"])
        if ns.name == DEFAULT_NAMESPACE:
            raise bad("the default namespace cannot be deleted")
        if ns.name == self.platform_namespace:
            raise _refused(409, CODE_BAD_REQUEST, f"namespace {ns.name!r} is the one this server's dispatch listener serves; "
                                                  "it cannot be deleted while the server runs")
        await self._write(self._delete_namespace, ns)
        return envelope(None)

    def _delete_namespace(self, ns: Namespace) -> None:
        if ns.dispatch_worker is not None:
            self.engine.set_dispatch_worker(None, namespace=ns.name)
        if ns.outbound is not None:
            self.engine.set_outbound(None, namespace=ns.name)
        for consumer in self.engine.tail_consumers(ns.name):
            self.engine.remove_tail_consumer(consumer.consumer, worker=consumer.worker,
                                             dispatcher=consumer.scope == "dispatcher", namespace=ns.name)
        for worker in self.engine.workers(ns.name):  # Cloudflare deletes a namespace with its scripts
            self.engine.delete(worker.name, namespace=ns.name)
        self.engine.delete_namespace(ns.name)

    # -- listing and bulk deletion by tags -----------------------------------------------

    @staticmethod
    def _tag_filter(text: str | None) -> Callable[[Worker], bool]:
        """`?tags=a:yes,b:no` as a test of a worker's tags."""
        from .admin_app import ApiError, parse_tag_filter  # here: admin_app imports this module

        if not text:
            return lambda worker: True
        try:
            wanted, refused = parse_tag_filter(text)
        except ApiError as error:
            raise bad(error.message) from None
        return lambda w: all(t in w.tags for t in wanted) and not any(t in w.tags for t in refused)

    def _filtered(self, ns: str, text: str | None) -> list[Worker]:
        matches = self._tag_filter(text)
        return [w for w in self.engine.workers(ns) if matches(w)]

    async def list_scripts(self, request: Request) -> Response:
        ns = self._namespace(request.path_params["ns"]).name
        workers = self._filtered(ns, request.query_params.get("tags"))
        return self._page(request, ns, workers)

    def _page(self, request: Request, ns: str | None, workers: list[Worker], homes: dict[str, str] | None = None) -> Response:
        raw_limit = request.query_params.get("limit") or str(MAX_LIST)
        if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= MAX_LIST:  # "²" is a digit int() refuses
            raise bad(f"limit must be a whole number from 1 to {MAX_LIST}")
        after = request.query_params.get("cursor") or ""
        ordered = sorted(workers, key=lambda w: w.name)
        page = [w for w in ordered if w.name > after][: int(raw_limit)]
        more = bool(page) and page[-1].name != ordered[-1].name
        results = [self._script_result(ns or (homes or {})[w.name], w) for w in page]
        return _list(results, page[-1].name if more else "")

    async def bulk_delete(self, request: Request) -> Response:
        ns = self._namespace(request.path_params["ns"]).name
        text = request.query_params.get("tags")
        if not text:
            raise bad("deleting scripts by tag needs a tag filter such as ?tags=customer-123:yes")
        doomed = self._filtered(ns, text)
        force = _flag(request, "force")
        for worker in doomed:  # every refusal before the first deletion
            self._check_unreferenced(ns, worker.name, force)
        for worker in doomed:
            await self._write(self._delete, ns, worker.name)
        return envelope([{"id": worker.name} for worker in doomed])

    # -- one script -------------------------------------------------------------------

    async def get_script(self, request: Request) -> Response:
        ns, name = self._dispatch_path(request)
        worker = self._worker(ns, name)
        return envelope({"created_on": _iso(worker.first_deployed_at), "modified_on": _iso(worker.created_at),
                         "dispatch_namespace": ns, "script": self._script_result(ns, worker)})

    def _references(self, ns: str, name: str) -> list[str]:
        namespace = self.engine.namespace(ns)
        found = []
        if namespace.dispatch_worker == name:
            found.append(f"the dispatch Worker of namespace {ns!r}")
        if namespace.outbound is not None and namespace.outbound.service == name:
            found.append(f"the Outbound Worker of namespace {ns!r}")
        if any(c.consumer == name for c in self.engine.tail_consumers(ns)):
            found.append(f"a Tail Worker in namespace {ns!r}")
        return found

    def _check_unreferenced(self, ns: str, name: str, force: bool) -> None:
        self._worker(ns, name)
        roles = self._references(ns, name)
        if roles and not force:
            raise _refused(409, CODE_BAD_REQUEST, f"script {name!r} is {' and '.join(roles)}; delete it with ?force=true "
                                                  "to remove it from those roles too")

    def _delete(self, ns: str, name: str) -> None:
        namespace = self.engine.namespace(ns)
        if namespace.dispatch_worker == name:
            self.engine.set_dispatch_worker(None, namespace=ns)
            if namespace.outbound is not None:
                self.engine.set_outbound(None, namespace=ns)
        elif namespace.outbound is not None and namespace.outbound.service == name:
            self.engine.set_outbound(None, namespace=ns)
        for consumer in self.engine.tail_consumers(ns):
            if consumer.consumer == name or consumer.worker == name:
                self.engine.remove_tail_consumer(consumer.consumer, worker=consumer.worker,
                                                 dispatcher=consumer.scope == "dispatcher", namespace=ns)
        self.engine.delete(name, namespace=ns)

    async def delete_script(self, request: Request) -> Response:
        ns, name = self._dispatch_path(request)
        self._check_unreferenced(ns, name, _flag(request, "force"))
        await self._write(self._delete, ns, name)
        return envelope(None)

    async def delete_platform_script(self, request: Request) -> Response:
        ns, name = self._platform_path(request)
        self._check_unreferenced(ns, name, _flag(request, "force"))
        await self._write(self._delete, ns, name)
        return envelope(None)

    async def get_service(self, request: Request) -> Response:
        """A platform script as Cloudflare's "service" (what `wrangler deploy` asks first); one that
        does not exist is Cloudflare's 10090, after which wrangler uploads it as new."""
        ns, name = self._platform_path(request)
        worker = self._find(ns, name)
        if worker is None:
            raise _refused(404, CODE_SERVICE_NOT_FOUND, "This Worker does not exist on your account.")
        script = self._script_result(ns, worker)
        return envelope({
            "id": name,
            "default_environment": {
                "environment": "production",
                "created_on": script["created_on"],
                "modified_on": script["modified_on"],
                "script": script,
            },
            "created_on": script["created_on"],
            "modified_on": script["modified_on"],
        })

    async def list_deployments(self, request: Request) -> Response:
        """A platform script's deployments, newest first: each version went out whole (100 %),
        as wasmdeck has no gradual rollouts. A missing script is Cloudflare's 10007, after which
        `wrangler deploy` uploads it as new."""
        ns, name = self._platform_path(request)
        worker = self._worker(ns, name)
        deployments = [
            self._deployment_result(ns, worker, version.version, version.created_at, self._version_id(ns, worker, version.version),
                                    {"workers/message": version.message} if version.message else {})
            for version in sorted(self.engine.versions(name, namespace=ns), key=lambda v: v.version, reverse=True)
        ]
        return envelope({"deployments": deployments})

    def _version_id(self, ns: str, worker: Worker, version: int) -> str:
        return str(_stable_id("version", ns, worker.name, worker.first_deployed_at, version))

    @staticmethod
    def _deployment_result(ns: str, worker: Worker, number: int, created_at: int, version_id: str,
                           annotations: dict[str, str]) -> dict[str, Any]:
        """One deployment in the shape of Cloudflare's Deployments API: one version at 100 %."""
        return {
            "id": str(_stable_id("deployment", ns, worker.name, worker.first_deployed_at, number)),
            "source": "api",
            "strategy": "percentage",
            "author_email": "",
            "created_on": _iso(created_at),
            "annotations": annotations,
            "versions": [{"version_id": version_id, "percentage": 100}],
        }

    def _version_result(self, ns: str, worker: Worker, version: WorkerVersion) -> dict[str, Any]:
        """One version in the shape of Cloudflare's Versions API."""
        return {
            "id": self._version_id(ns, worker, version.version),
            "number": version.version,
            "metadata": {
                "author_email": "",
                "author_id": "",
                "source": "api",
                "created_on": _iso(version.created_at),
                "modified_on": _iso(version.created_at),
            },
            "annotations": {"workers/message": version.message} if version.message else {},
            "resources": {
                "script": {
                    "etag": version.sha256,
                    "handlers": list(version.script.handlers) if version.script is not None else ["fetch"],
                },
                "script_runtime": {"usage_model": "standard"},
            },
            "startup_time_ms": 0,
        }

    async def upload_version(self, request: Request) -> Response:
        """A new version of a platform script. wasmdeck keeps no version that does not serve: the
        upload is deployed at once (the `deployments` call wrangler makes next then finds it current)."""
        name = self._script_name(request.path_params["name"])
        plan = await self._read_upload(request)
        ns, messages = await self._write(self._put_platform_script, name, plan)
        worker = self.engine.worker(name, namespace=ns)
        current = next(v for v in self.engine.versions(name, namespace=ns) if v.version == worker.version)
        messages = [*messages, {"code": 10000, "message": "wasmdeck deploys an uploaded version at once: it serves now"}]
        return envelope(self._version_result(ns, worker, current), messages=messages)

    async def list_versions(self, request: Request) -> Response:
        ns, name = self._platform_path(request)
        worker = self._worker(ns, name)
        versions = sorted(self.engine.versions(name, namespace=ns), key=lambda v: v.version, reverse=True)
        return envelope({"items": [self._version_result(ns, worker, v) for v in versions]})

    async def get_version(self, request: Request) -> Response:
        ns, name = self._platform_path(request)
        worker = self._worker(ns, name)
        version = self._version_by_id(ns, worker, request.path_params["version_id"])
        return envelope(self._version_result(ns, worker, version))

    def _version_by_id(self, ns: str, worker: Worker, version_id: str) -> WorkerVersion:
        for version in self.engine.versions(worker.name, namespace=ns):
            if self._version_id(ns, worker, version.version) == version_id:
                return version
        raise _refused(404, CODE_VERSION_NOT_FOUND, f"script {worker.name!r} has no version {version_id!r}")

    async def create_deployment(self, request: Request) -> Response:
        """Deploy one version to all traffic: the current one (nothing changes) or an earlier one
        (a rollback, which makes a new version as `wasmdeck rollback` does). wasmdeck has no
        gradual rollouts, so a split between versions is refused."""
        ns, name = self._platform_path(request)
        worker = self._worker(ns, name)
        body = await _json_body(request)
        entries = body.get("versions") if isinstance(body, dict) else None
        if (not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict)
                or not isinstance(entries[0].get("version_id"), str)):
            raise bad("a deployment names exactly one version: {\"versions\": [{\"version_id\": ..., \"percentage\": 100}]} "
                      "(wasmdeck has no gradual rollouts)")
        percentage = entries[0].get("percentage", 100)
        if isinstance(percentage, bool) or not isinstance(percentage, (int, float)) or not abs(percentage - 100) <= 1e-3:  # NaN too
            raise bad("wasmdeck has no gradual rollouts: deploy one version at percentage 100")
        if body.get("strategy", "percentage") != "percentage":
            raise bad("the deployment strategy must be 'percentage'")
        wanted = entries[0]["version_id"]
        target = self._version_by_id(ns, worker, wanted)
        if target.version != worker.version:
            await self._write(functools.partial(self.engine.rollback, name, target.version, namespace=ns))
        deployed = self.engine.worker(name, namespace=ns)
        annotations = body.get("annotations") if isinstance(body.get("annotations"), dict) else {}
        strings = {key: value for key, value in annotations.items() if isinstance(value, str)}
        return envelope(self._deployment_result(ns, deployed, deployed.version, deployed.created_at, wanted, strings))

    async def get_subdomain(self, request: Request) -> Response:
        """A script's workers.dev route: wasmdeck has none (its scripts answer through `wasmdeck serve`)."""
        ns, name = self._platform_path(request)
        self._worker(ns, name)
        return envelope({"enabled": False, "previews_enabled": False})

    async def post_subdomain(self, request: Request) -> Response:
        """Turning a script's workers.dev route off is what wasmdeck already is; turning it on is refused."""
        ns, name = self._platform_path(request)
        self._worker(ns, name)
        body = await _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("enabled", False), bool):
            raise bad("the body must be a JSON object with a boolean 'enabled'")
        if body.get("enabled") is True:
            raise bad("wasmdeck has no workers.dev: a script answers through `wasmdeck serve` "
                      "(set workers_dev = false in wrangler.toml)")
        return envelope({"enabled": False, "previews_enabled": False})

    # -- uploads ----------------------------------------------------------------------

    @staticmethod
    async def _multipart(request: Request, max_bytes: int) -> list[Part]:
        """The parts of the body, refused at once when it declares more than `max_bytes`, else as it streams past them."""
        declared = request.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
            raise _refused(413, CODE_TOO_LARGE, f"the upload is {int(declared) / 2**20:.1f} MiB, over the "
                                                f"{max_bytes / 2**20:.1f} MiB this server accepts")
        return await read_multipart(request.stream(), request.headers.get("content-type"), max_bytes=max_bytes)

    async def _read_upload(self, request: Request) -> UploadPlan:
        parts = await self._multipart(request, self.engine.max_module_bytes + UPLOAD_SLACK_BYTES)
        metadata_part = next((p for p in parts if p.name == "metadata"), None)
        metadata = parse_json_part(metadata_part, "metadata")
        settings = parse_settings(metadata, "metadata", allowed=HONOURED_FIELDS)
        main = find_main_module([p for p in parts if p is not metadata_part], metadata,
                                request.headers.get("cf-worker-main-module-part") or request.headers.get("cf-worker-body-part"))
        return UploadPlan(main, settings)

    def _module_for_engine(self, module: Module) -> tuple[bytes, str | None]:
        """The bytes and ABI to deploy (None: detected from the module)."""
        if not module.is_javascript:
            return module.data, None
        if not JAVASCRIPT_WORKERS:
            raise _refused(400, CODE_VALIDATION, f"module {module.name!r} is JavaScript, and JavaScript Workers are not "
                                                 "available in this build of wasmdeck; upload a WebAssembly module "
                                                 "(application/wasm)")
        return module.data, JAVASCRIPT_ABI

    def _check_consumers(self, ns: str, name: str, consumers: tuple[TailConsumerRef, ...]) -> None:
        for consumer_ref in consumers:
            service = consumer_ref.service
            if consumer_ref.namespace is not None and consumer_ref.namespace != ns:
                raise bad(f"tail_consumers: Tail Worker {service!r} is named in namespace {consumer_ref.namespace!r}; "
                          f"wasmdeck delivers trace items to Tail Workers of the same namespace, {ns!r}")
            if service == name:
                raise bad(f"tail_consumers: script {name!r} cannot be its own Tail Worker")
            consumer = self._find(ns, service)
            if consumer is None:
                raise bad(f"tail_consumers: Tail Worker {service!r} is not a script in namespace {ns!r}; upload it there first")
            if not speaks_protocol(consumer.abi):
                raise bad(f"tail_consumers: Tail Worker {service!r} is a {consumer.abi} Worker; a Tail Worker must speak "
                          "the Worker protocol (docs/worker-protocol.md) or be a JavaScript Worker")
            if consumer.script is not None and "tail" not in consumer.script.handlers:
                raise bad(f"tail_consumers: Tail Worker {service!r} is a JavaScript Worker without a tail() handler")

    def _check_dispatch(self, ns: str, name: str, binding: DispatchBinding, module: Module | None) -> None:
        try:
            check_binding_name(binding.name)
        except InvalidInput as error:
            raise bad(f"the dispatch_namespace binding's name: {error}") from None
        if module is not None and not module.is_javascript:
            try:
                exports = {export.name for export in validate_worker_module(module.data).exports}
            except InvalidModule as error:
                raise bad(f"module {module.name!r}: {error}", CODE_VALIDATION) from None
            if not exports & set(protocol.MARKER_EXPORTS):
                raise bad(f"a dispatch Worker must speak the Worker protocol (docs/worker-protocol.md), and module "
                          f"{module.name!r} is a WCGI program", CODE_VALIDATION)
        if binding.outbound_service is None:
            return
        outbound = self._find(ns, binding.outbound_service)
        if outbound is None or outbound.name == name:
            raise bad(f"the dispatch_namespace binding's Outbound Worker {binding.outbound_service!r} is not a script in "
                      f"namespace {ns!r}; upload it there first")
        if not speaks_protocol(outbound.abi):
            raise bad(f"Outbound Worker {outbound.name!r} is a {outbound.abi} Worker; an Outbound Worker must speak the "
                      "Worker protocol (docs/worker-protocol.md) or be a JavaScript Worker")

        try:
            OutboundSetting.parse(outbound.name, list(binding.outbound_params))
        except InvalidInput as error:
            raise bad(f"the dispatch_namespace binding's outbound params: {error}") from None

    def _secret_plan(self, ns: str, name: str, bindings: Bindings, keep: frozenset[str]) -> tuple[dict[str, str], frozenset[str] | None]:
        """Secret values to set, and which stored secrets stay (None: all of them)."""
        values = {key: value for key, value in bindings.secrets.items() if value is not None}
        kept = frozenset(key for key, value in bindings.secrets.items() if value is None)
        existing = set(self.engine.secret_names(name, namespace=ns)) if self._find(ns, name) else set()
        for key in sorted(kept - existing):
            raise bad(f"binding {key} is secret_text without text, and script {name!r} has no such secret to keep")
        if "secret_text" in keep:
            return values, None
        return values, kept

    def _deploy(self, ns: str, name: str, module: Module, settings: Settings, message: str) -> Worker:
        existing = self._find(ns, name)
        bindings = settings.bindings or Bindings()
        variables = dict(bindings.vars)
        if existing is not None and settings.keep_bindings & {"plain_text", "json"}:
            variables = {**existing.vars, **variables}
        secrets, kept = self._secret_plan(ns, name, bindings, settings.keep_bindings)
        tags = settings.tags if settings.tags is not None else (existing.tags if existing else ())
        data, abi = self._module_for_engine(module)
        return self._engine_deploy(name, data, namespace=ns, tags=tags, vars=variables, abi=abi, message=message,
                                   secrets=secrets, keep_secrets=True if kept is None else kept, filename=module.name)

    def _engine_deploy(self, name: str, data: bytes, **options: Any) -> Worker:
        """`Engine.deploy`; a refused module is Cloudflare's 413 (too large) or validation error."""
        try:
            return self.engine.deploy(name, data, **options)
        except InvalidModule as error:
            if len(data) > self.engine.max_module_bytes:
                raise _refused(413, CODE_TOO_LARGE, str(error)) from None
            raise _refused(400, CODE_VALIDATION, str(error)) from None

    def _after_deploy(self, ns: str, name: str, settings: Settings, *, dispatcher: bool, compatibility: bool) -> None:
        if settings.tail_consumers is not None:
            self._sync_consumers(ns, name, settings.tail_consumers, dispatcher)
        if compatibility:
            self.engine.set_compatibility(name, settings.compatibility_date, settings.compatibility_flags or (), namespace=ns)

    def _sync_consumers(self, ns: str, name: str, consumers: tuple[TailConsumerRef, ...], dispatcher: bool) -> None:
        services = [consumer.service for consumer in consumers]
        current = [c for c in self.engine.tail_consumers(ns)
                   if (dispatcher and c.scope == "dispatcher") or (not dispatcher and c.scope == "worker" and c.worker == name)]
        for consumer in current:
            if consumer.consumer not in services:
                self.engine.remove_tail_consumer(consumer.consumer, worker=consumer.worker, dispatcher=dispatcher, namespace=ns)
        present = {c.consumer for c in current}
        for service in services:
            if service not in present:
                self.engine.add_tail_consumer(service, worker=None if dispatcher else name, dispatcher=dispatcher, namespace=ns)

    async def put_script(self, request: Request) -> Response:
        ns, name = self._user_worker_path(request)
        plan = await self._read_upload(request)
        if plan.settings.bindings is not None and plan.settings.bindings.dispatch is not None:
            raise bad("a script in a dispatch namespace is a user Worker and cannot dispatch; upload the dispatch Worker "
                      "as the platform's own Worker (PUT /accounts/{account_id}/workers/scripts/{name})")
        await self._write(self._put_script, ns, name, plan)
        return envelope(self._script_result(ns, self.engine.worker(name, namespace=ns)))

    def _put_script(self, ns: str, name: str, plan: UploadPlan) -> None:
        self._check_consumers(ns, name, plan.settings.tail_consumers or ())
        self._deploy(ns, name, plan.main, plan.settings, f"uploaded through the Cloudflare API ({plan.main.name})")
        self._after_deploy(ns, name, plan.settings, dispatcher=False, compatibility=True)

    async def put_platform_script(self, request: Request) -> Response:
        name = self._script_name(request.path_params["name"])
        plan = await self._read_upload(request)
        ns, messages = await self._write(self._put_platform_script, name, plan)
        return envelope(self._script_result(ns, self.engine.worker(name, namespace=ns)), messages=messages)

    def _put_platform_script(self, name: str, plan: UploadPlan) -> tuple[str, list[dict[str, Any]]]:
        settings = plan.settings
        binding = settings.bindings.dispatch if settings.bindings is not None else None
        home = self._platform_home(name)
        ns = binding.namespace if binding is not None else home
        self._namespace(ns)
        if self._find(home, name) is not None and home != ns:
            raise _refused(409, CODE_BAD_REQUEST, f"script {name!r} already lives in namespace {home!r}; delete it there "
                                                  f"before making it the dispatch Worker of namespace {ns!r}")
        was_dispatcher = self.engine.namespace(ns).dispatch_worker == name
        if binding is not None:
            self._check_dispatch(ns, name, binding, plan.main)
        self._check_consumers(ns, name, settings.tail_consumers or ())
        self._deploy(ns, name, plan.main, settings, f"uploaded through the Cloudflare API ({plan.main.name})")
        messages = self._apply_dispatch(ns, name, binding, was_dispatcher, settings.keep_bindings)
        self._after_deploy(ns, name, settings, dispatcher=binding is not None, compatibility=True)
        return ns, messages

    def _apply_dispatch(self, ns: str, name: str, binding: DispatchBinding | None, was_dispatcher: bool,
                        keep: frozenset[str]) -> list[dict[str, Any]]:
        if binding is None:
            if was_dispatcher and "dispatch_namespace" not in keep:
                self.engine.set_dispatch_worker(None, namespace=ns)
                self.engine.set_outbound(None, namespace=ns)
            return []
        self.engine.set_dispatch_worker(name, namespace=ns, binding=binding.name)
        if binding.outbound_service is not None:
            self.engine.set_outbound(binding.outbound_service, list(binding.outbound_params), namespace=ns)
        else:
            self.engine.set_outbound(None, namespace=ns)
        if ns != self.platform_namespace:
            return [{"code": 10000, "message": f"{name!r} now fronts namespace {ns!r}; this server's dispatch listener "
                                               f"serves namespace {self.platform_namespace!r}, so requests reach it on a "
                                               f"server started with --namespace {ns}"}]
        return []

    # -- content ----------------------------------------------------------------------

    def _content(self, ns: str, name: str) -> Response:
        worker = self._worker(ns, name)
        media = "application/javascript+module" if worker.abi == JAVASCRIPT_ABI else "application/wasm"
        return Response(self.engine.module_bytes(worker), media_type=media, headers={"ETag": f'"{worker.sha256}"'})

    async def get_content(self, request: Request) -> Response:
        return self._content(*self._dispatch_path(request))

    async def get_platform_content(self, request: Request) -> Response:
        return self._content(*self._platform_path(request))

    async def _put_content(self, ns: str, name: str, request: Request) -> Response:
        worker = self._worker(ns, name)
        parts = await self._multipart(request, self.engine.max_module_bytes + UPLOAD_SLACK_BYTES)
        metadata_part = next((p for p in parts if p.name == "metadata"), None)
        metadata = parse_json_part(metadata_part, "metadata") if metadata_part is not None else {}
        for key in metadata:
            if key not in ("main_module", "body_part"):
                raise bad(f"metadata.{key} cannot be changed with the content; use the settings (PATCH .../settings)")
        header = request.headers.get("cf-worker-main-module-part") or request.headers.get("cf-worker-body-part")
        module = find_main_module([p for p in parts if p is not metadata_part], metadata, header)
        namespace = self.engine.namespace(ns)
        if namespace.dispatch_worker == name:
            self._check_dispatch(ns, name, DispatchBinding(namespace.dispatch_binding, ns), module)
        data, abi = self._module_for_engine(module)
        await self._write(self._engine_deploy, name, data, namespace=ns, tags=worker.tags, vars=worker.vars, abi=abi,
                          message=f"content replaced through the Cloudflare API ({module.name})", filename=module.name)
        return envelope(self._script_result(ns, self.engine.worker(name, namespace=ns)))

    async def put_content(self, request: Request) -> Response:
        ns, name = self._user_worker_path(request)
        return await self._put_content(ns, name, request)

    async def put_platform_content(self, request: Request) -> Response:
        ns, name = self._platform_path(request)
        return await self._put_content(ns, name, request)

    async def get_platform_script(self, request: Request) -> Response:
        return self._content(*self._platform_path(request))

    async def list_platform_scripts(self, request: Request) -> Response:
        homes = {w.name: self.platform_namespace for w in self.engine.workers(self.platform_namespace)}
        workers = {w.name: w for w in self.engine.workers(self.platform_namespace)}
        for ns in self.engine.namespaces():
            if ns.dispatch_worker and ns.dispatch_worker not in workers:
                found = self._find(ns.name, ns.dispatch_worker)
                if found is not None:
                    workers[found.name], homes[found.name] = found, ns.name
        matches = self._tag_filter(request.query_params.get("tags"))
        return self._page(request, None, [w for w in workers.values() if matches(w)], homes)

    # -- settings and bindings --------------------------------------------------------

    async def get_settings(self, request: Request) -> Response:
        ns, name = self._dispatch_path(request)
        return envelope(self._settings_result(ns, self._worker(ns, name)))

    async def get_platform_settings(self, request: Request) -> Response:
        ns, name = self._platform_path(request)
        return envelope(self._settings_result(ns, self._worker(ns, name)))

    async def get_bindings(self, request: Request) -> Response:
        ns, name = self._dispatch_path(request)
        return _list(self._bindings(ns, self._worker(ns, name)))

    async def get_platform_bindings(self, request: Request) -> Response:
        ns, name = self._platform_path(request)
        return _list(self._bindings(ns, self._worker(ns, name)))

    async def _settings_part(self, request: Request) -> Settings:
        parts = await self._multipart(request, UPLOAD_SLACK_BYTES)
        settings_part = next((p for p in parts if p.name == "settings"), None)
        return parse_settings(parse_json_part(settings_part, "settings"), "settings", allowed=SETTINGS_FIELDS)

    def _change_settings(self, ns: str, name: str, settings: Settings, *, platform: bool) -> None:
        """Apply what `settings` gives (a PATCH: the rest stays), every check before the first change."""
        worker = self._worker(ns, name)
        namespace = self.engine.namespace(ns)
        binding = settings.bindings.dispatch if settings.bindings is not None else None
        if binding is not None:
            if not platform:
                raise bad("a script in a dispatch namespace is a user Worker and cannot dispatch")
            if binding.namespace != ns:
                raise bad(f"script {name!r} lives in namespace {ns!r} and can only front that namespace; upload it again "
                          f"to make it the dispatch Worker of {binding.namespace!r}")
            self._check_dispatch(ns, name, binding, None)
            if not speaks_protocol(worker.abi):
                raise bad(f"a dispatch Worker must speak the Worker protocol (docs/worker-protocol.md) or be a JavaScript "
                          f"Worker, and script {name!r} is a {worker.abi} Worker", CODE_VALIDATION)
        self._check_consumers(ns, name, settings.tail_consumers or ())
        if settings.bindings is not None:  # first: the engine's own refusals (a var and a secret sharing a name) come before any change
            secrets, kept = self._secret_plan(ns, name, settings.bindings, settings.keep_bindings)
            stored = self.engine.secret_names(name, namespace=ns)
            doomed = [] if kept is None else [key for key in stored if key not in kept and key not in secrets]
            variables = dict(settings.bindings.vars)
            if settings.keep_bindings & {"plain_text", "json"}:
                variables = {**worker.vars, **variables}
            if secrets or doomed or variables != worker.vars:
                self.engine.update_bindings(name, put_secrets=secrets, delete_secrets=doomed, vars=variables, namespace=ns)
            if platform:
                self._apply_dispatch(ns, name, binding, namespace.dispatch_worker == name, settings.keep_bindings)
        if settings.tags is not None and set(settings.tags) != set(worker.tags):
            self.engine.set_tags(name, settings.tags, namespace=ns)
        dispatcher = self.engine.namespace(ns).dispatch_worker == name
        if settings.tail_consumers is not None:
            self._sync_consumers(ns, name, settings.tail_consumers, dispatcher)
        if settings.compatibility_date is not None or settings.compatibility_flags is not None:
            date, flags = self.engine.compatibility(name, namespace=ns)
            self.engine.set_compatibility(
                name, settings.compatibility_date if settings.compatibility_date is not None else date,
                settings.compatibility_flags if settings.compatibility_flags is not None else flags, namespace=ns,
            )

    async def patch_settings(self, request: Request) -> Response:
        ns, name = self._user_worker_path(request)
        self._worker(ns, name)
        settings = await self._settings_part(request)
        await self._write(self._change_settings, ns, name, settings, platform=False)
        return envelope(self._settings_result(ns, self.engine.worker(name, namespace=ns)))

    async def patch_platform_settings(self, request: Request) -> Response:
        ns, name = self._platform_path(request)
        self._worker(ns, name)
        settings = await self._settings_part(request)
        await self._write(self._change_settings, ns, name, settings, platform=True)
        return envelope(self._settings_result(ns, self.engine.worker(name, namespace=ns)))

    def _script_settings_result(self, ns: str, worker: Worker) -> dict[str, Any]:
        full = self._settings_result(ns, worker)
        return {key: full[key] for key in ("logpush", "observability", "tags", "tail_consumers")}

    async def get_platform_script_settings(self, request: Request) -> Response:
        ns, name = self._platform_path(request)
        return envelope(self._script_settings_result(ns, self._worker(ns, name)))

    async def patch_platform_script_settings(self, request: Request) -> Response:
        """The script-level settings, as JSON: tags and tail consumers (logpush and observability have no effect here)."""
        ns, name = self._platform_path(request)
        self._worker(ns, name)
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise bad("the body must be a JSON object of script settings")
        await self._write(self._change_settings, ns, name, parse_settings(body, "body", allowed=("tags", "tail_consumers")), platform=True)
        return envelope(self._script_settings_result(ns, self.engine.worker(name, namespace=ns)))

    # -- tags -------------------------------------------------------------------------

    def _tag(self, request: Request) -> str:
        try:
            return check_tag(request.path_params["tag"])
        except InvalidInput as error:
            raise bad(str(error)) from None

    async def get_tags(self, request: Request) -> Response:
        ns, name = self._dispatch_path(request)
        return _list(list(self._worker(ns, name).tags))

    async def put_tags(self, request: Request) -> Response:
        ns, name = self._user_worker_path(request)
        self._worker(ns, name)
        body = await _json_body(request)
        if body is None:
            body = []
        if not isinstance(body, list) or not all(isinstance(tag, str) for tag in body):
            raise bad("the body must be a JSON list of tags, e.g. [\"customer-123\", \"free\"]")
        try:
            tags = check_tags(body)
        except InvalidInput as error:
            raise bad(str(error)) from None
        return _list(list((await self._write(self.engine.set_tags, name, tags, namespace=ns)).tags))

    async def put_tag(self, request: Request) -> Response:
        ns, name = self._user_worker_path(request)
        worker = self._worker(ns, name)
        tag = self._tag(request)
        if tag not in worker.tags:
            try:
                worker = await self._write(self.engine.set_tags, name, [*worker.tags, tag], namespace=ns)
            except InvalidInput as error:
                raise bad(str(error)) from None
        return _list(list(worker.tags))

    async def delete_tag(self, request: Request) -> Response:
        ns, name = self._user_worker_path(request)
        worker = self._worker(ns, name)
        tag = self._tag(request)
        if tag not in worker.tags:
            raise _refused(404, CODE_SCRIPT_NOT_FOUND, f"script {name!r} has no tag {tag!r}")
        await self._write(self.engine.set_tags, name, [t for t in worker.tags if t != tag], namespace=ns)
        return envelope(None)

    # -- secrets ----------------------------------------------------------------------

    def _secret_location(self, request: Request, *, change: bool = False) -> tuple[str, str]:
        if "ns" in request.path_params:
            ns, name = self._user_worker_path(request) if change else self._dispatch_path(request)
        else:
            ns, name = self._platform_path(request)
        self._worker(ns, name)
        return ns, name

    def _secret_name(self, request: Request) -> str:
        name = request.path_params["secret"]
        return unquote(name) if _flag(request, "url_encoded") else name

    @staticmethod
    def _secret_body(body: Any, where: str) -> tuple[str, str]:
        if not isinstance(body, dict):
            raise bad(f"{where} must be a JSON object {{\"name\", \"text\", \"type\": \"secret_text\"}}")
        kind = body.get("type")
        if kind == "secret_key":
            raise bad(f"{where}: secret_key bindings (CryptoKeys) are not available to wasmdeck Workers; use secret_text")
        if kind != "secret_text":
            raise bad(f"{where}: type must be secret_text")
        unknown = sorted(set(body) - {"name", "text", "type"})
        if unknown:
            raise bad(f"{where}: unknown field {unknown[0]!r}")
        if not isinstance(body.get("name"), str) or not isinstance(body.get("text"), str):
            raise bad(f"{where} needs the secret's name and its text as strings")
        return body["name"], body["text"]

    async def put_secret(self, request: Request) -> Response:
        ns, name = self._secret_location(request, change=True)
        key, text = self._secret_body(await _json_body(request), "the body")
        try:
            await self._write(self.engine.put_secret, name, key, text, namespace=ns)
        except InvalidInput as error:
            raise bad(str(error)) from None
        return envelope({"name": key, "type": "secret_text"})

    async def list_secrets(self, request: Request) -> Response:
        ns, name = self._secret_location(request)
        return _list([{"name": key, "type": "secret_text"} for key in self.engine.secret_names(name, namespace=ns)])

    async def get_secret(self, request: Request) -> Response:
        ns, name = self._secret_location(request)
        key = self._secret_name(request)
        if key not in self.engine.secret_names(name, namespace=ns):
            raise _refused(404, CODE_SCRIPT_NOT_FOUND, f"script {name!r} has no secret named {key!r}")
        return envelope({"name": key, "type": "secret_text"})

    async def delete_secret(self, request: Request) -> Response:
        ns, name = self._secret_location(request, change=True)
        key = self._secret_name(request)
        if key not in self.engine.secret_names(name, namespace=ns):
            raise _refused(404, CODE_SCRIPT_NOT_FOUND, f"script {name!r} has no secret named {key!r}")
        await self._write(self.engine.delete_secret, name, key, namespace=ns)
        return envelope(None)

    async def bulk_secrets(self, request: Request) -> Response:
        ns, name = self._secret_location(request, change=True)
        body = await _json_body(request)
        if not isinstance(body, dict) or set(body) - {"secrets", "version_tags"} or not isinstance(body.get("secrets", {}), dict):
            raise bad("the body must be {\"secrets\": {NAME: {\"name\", \"text\", \"type\"} or null}}")
        put: dict[str, str] = {}
        deleted: list[str] = []
        stored = set(self.engine.secret_names(name, namespace=ns))
        for key, item in body.get("secrets", {}).items():
            if item is None:
                if key not in stored:
                    raise _refused(404, CODE_SCRIPT_NOT_FOUND, f"script {name!r} has no secret named {key!r} to delete")
                deleted.append(key)
                continue
            given, text = self._secret_body({"name": key, **item} if isinstance(item, dict) else item, f"secrets.{key}")
            if given != key:
                raise bad(f"secrets.{key} names another secret, {given!r}")
            put[key] = text
        if put or deleted:
            try:
                await self._write(self.engine.update_bindings, name, put_secrets=put, delete_secrets=deleted, namespace=ns)
            except InvalidInput as error:
                raise bad(str(error)) from None
        return _list([{"name": key, "type": "secret_text"} for key in self.engine.secret_names(name, namespace=ns)])


# -- the ASGI side ------------------------------------------------------------------------------


def _routes(api: CloudflareApi) -> list[Route]:
    base = API_PREFIX + "/accounts/{account_id}/workers"
    ns = base + "/dispatch/namespaces"
    script = ns + "/{ns}/scripts/{name}"
    platform = base + "/scripts/{name}"
    table: list[tuple[str, Callable[[Request], Awaitable[Response]], str]] = [
        (ns, api.list_namespaces, "GET"),
        (ns, api.create_namespace, "POST"),
        (ns + "/{ns}", api.get_namespace, "GET"),
        (ns + "/{ns}", api.delete_namespace, "DELETE"),
        (ns + "/{ns}/scripts", api.list_scripts, "GET"),
        (ns + "/{ns}/scripts", api.bulk_delete, "DELETE"),
        (script, api.put_script, "PUT"),
        (script, api.get_script, "GET"),
        (script, api.delete_script, "DELETE"),
        (script + "/content", api.get_content, "GET"),
        (script + "/content", api.put_content, "PUT"),
        (script + "/settings", api.get_settings, "GET"),
        (script + "/settings", api.patch_settings, "PATCH"),
        (script + "/bindings", api.get_bindings, "GET"),
        (script + "/tags", api.get_tags, "GET"),
        (script + "/tags", api.put_tags, "PUT"),
        (script + "/tags/{tag}", api.put_tag, "PUT"),
        (script + "/tags/{tag}", api.delete_tag, "DELETE"),
        (script + "/secrets", api.put_secret, "PUT"),
        (script + "/secrets", api.list_secrets, "GET"),
        (script + "/secrets/{secret}", api.get_secret, "GET"),
        (script + "/secrets/{secret}", api.delete_secret, "DELETE"),
        (script + "/secrets-bulk", api.bulk_secrets, "PATCH"),
        (base + "/scripts", api.list_platform_scripts, "GET"),
        (base + "/services/{name}", api.get_service, "GET"),
        (platform + "/deployments", api.list_deployments, "GET"),
        (platform + "/deployments", api.create_deployment, "POST"),
        (platform + "/versions", api.upload_version, "POST"),
        (platform + "/versions", api.list_versions, "GET"),
        (platform + "/versions/{version_id}", api.get_version, "GET"),
        (platform + "/subdomain", api.get_subdomain, "GET"),
        (platform + "/subdomain", api.post_subdomain, "POST"),
        (platform, api.put_platform_script, "PUT"),
        (platform, api.get_platform_script, "GET"),
        (platform, api.delete_platform_script, "DELETE"),
        (platform + "/content", api.put_platform_content, "PUT"),
        (platform + "/content/v2", api.get_platform_content, "GET"),
        (platform + "/settings", api.get_platform_settings, "GET"),
        (platform + "/settings", api.patch_platform_settings, "PATCH"),
        (platform + "/bindings", api.get_platform_bindings, "GET"),
        (platform + "/script-settings", api.get_platform_script_settings, "GET"),
        (platform + "/script-settings", api.patch_platform_script_settings, "PATCH"),
        (platform + "/secrets", api.put_secret, "PUT"),
        (platform + "/secrets", api.list_secrets, "GET"),
        (platform + "/secrets/{secret}", api.get_secret, "GET"),
        (platform + "/secrets/{secret}", api.delete_secret, "DELETE"),
        (platform + "/secrets-bulk", api.bulk_secrets, "PATCH"),
    ]
    return [Route(path, handler, methods=[method]) for path, handler, method in table]


async def _upload_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, UploadError)
    return error_envelope(error.status, error.code, error.message)


async def _not_found(request: Request, error: Exception) -> Response:
    return error_envelope(404, CODE_SCRIPT_NOT_FOUND, str(error))


async def _invalid_input(request: Request, error: Exception) -> Response:
    return error_envelope(400, CODE_BAD_REQUEST, str(error))


async def _invalid_module(request: Request, error: Exception) -> Response:
    return error_envelope(400, CODE_VALIDATION, str(error))


async def _secrets_unavailable(request: Request, error: Exception) -> Response:
    return error_envelope(503, CODE_UNAVAILABLE, str(error))


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    if error.status_code == 405:
        return error_envelope(405, CODE_METHOD, f"{request.method} is not allowed on {request.url.path}", error.headers)
    if error.status_code == 404:
        return error_envelope(404, CODE_NO_ROUTE, f"Could not route to {request.url.path}, perhaps your object identifier is invalid?")
    return error_envelope(error.status_code, CODE_BAD_REQUEST, str(error.detail))


async def _internal(request: Request, error: Exception) -> Response:
    return error_envelope(500, CODE_UNAVAILABLE, "internal error in wasmdeck's Cloudflare API; see the server log")


class CloudflarePaths:
    """ASGI: answers `/client/v4/...` with Cloudflare's paths and hands everything else to the
    admin app it wraps (which it stands in for: other attributes are the wrapped app's)."""

    def __init__(self, admin_app: Any, engine: Engine, token: str, platform_namespace: str = DEFAULT_NAMESPACE,
                 writer: EngineWriter | None = None) -> None:
        self.admin_app = admin_app
        self.cloudflare_token = token
        self.cloudflare_api = CloudflareApi(engine, platform_namespace, writer)
        self.cloudflare_router = Starlette(
            routes=_routes(self.cloudflare_api),
            exception_handlers={
                UploadError: _upload_error,
                NotFound: _not_found,
                InvalidModule: _invalid_module,
                InvalidInput: _invalid_input,
                SecretsUnavailable: _secrets_unavailable,
                HTTPException: _http_error,
                Exception: _internal,
            },
        )

    def __getattr__(self, name: str) -> Any:
        if name == "admin_app":  # not set yet: never recurse
            raise AttributeError(name)
        return getattr(self.admin_app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == API_PREFIX or path.startswith(API_PREFIX + "/")):
            await self.admin_app(scope, receive, send)
            return
        authorization = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
        if not token_matches(self.cloudflare_token, authorization):
            response = error_envelope(401, CODE_AUTH, "Authentication error: a valid API token is required "
                                                      "(Authorization: Bearer <the admin token>)",
                                      headers={"WWW-Authenticate": 'Bearer realm="wasmdeck-admin"'})
            await response(scope, receive, send)
            return
        await self.cloudflare_router(scope, receive, send)

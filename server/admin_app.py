"""The admin API: JSON over HTTP on its own listener, shaped after Cloudflare's dispatch namespace API.

Every handler is a thin shell over `Engine`. Every response is Cloudflare's envelope:
`{"success": true, "errors": [], "result": ...}`, or on failure
`{"success": false, "errors": [{"code": "...", "message": "one sentence", "field": "metadata.tags"}], "result": null}`
with 400 (bad input; `field` names what to fix), 401 (no or wrong bearer token: checked before
anything else, so nothing changes), 404 (unknown namespace, script, version, limit or path),
405, 409 (already exists / not empty) or 413 (too large). `code` says which engine error it was:
`invalid_input`, `invalid_module` (the module was refused), `not_found`, `conflict`, `too_large`,
`unauthorized`, so a remote client (`wasmdeck.client.remote`) raises what the engine raises in-process.

Every call, `/openapi.json` included, needs `Authorization: Bearer <token>` (see `server.auth`).

    GET    /namespaces                               list namespaces
    POST   /namespaces                               {"name", "routing"?, "defaults"?}
    GET    /namespaces/{ns}                          one namespace
    PATCH  /namespaces/{ns}                          {"routing"?, "defaults"?}; a null default clears it
    DELETE /namespaces/{ns}                          delete an empty namespace
    GET    /namespaces/{ns}/stats                    per script: stored requests, errors, last outcome
    GET    /namespaces/{ns}/instances                per script: warm instances busy/idle, started, reused, retired
    GET    /instances                                warm instances over the whole engine, and their bounds
    GET    /namespaces/{ns}/scripts?tags=a:yes,b:no  list scripts, optionally filtered by tags
    DELETE /namespaces/{ns}/scripts?tags=a:yes,b:no  bulk delete by the filter (required)
    PUT    /namespaces/{ns}/scripts/{name}           deploy: multipart `metadata` (JSON) + `module` (a .wasm or .js file)
    GET    /namespaces/{ns}/scripts/{name}           the script's record and effective limits
    DELETE /namespaces/{ns}/scripts/{name}           delete it
    GET    /namespaces/{ns}/scripts/{name}/content   the module bytes (application/wasm, or a script as application/javascript+module)
    GET    /namespaces/{ns}/scripts/{name}/limits    its effective limits and where each came from
    GET    /namespaces/{ns}/scripts/{name}/tags      its tags
    PUT    /namespaces/{ns}/scripts/{name}/tags      replace its tags (a JSON list)
    GET    /namespaces/{ns}/scripts/{name}/vars      its vars
    PUT    /namespaces/{ns}/scripts/{name}/vars      replace its vars (a JSON object of strings)
    PATCH  /namespaces/{ns}/scripts/{name}/settings  {"tags"?, "vars"?}: replace either or both in one new version
    GET    /namespaces/{ns}/scripts/{name}/versions  its versions
    GET    /namespaces/{ns}/scripts/{name}/secrets   the names of its secrets (values are never returned)
    PUT    /namespaces/{ns}/scripts/{name}/secrets/{secret}  set one: {"value": "..."} (a new version)
    DELETE /namespaces/{ns}/scripts/{name}/secrets/{secret}  remove one (a new version)
    POST   /namespaces/{ns}/scripts/{name}/rollback  {"version": N}
    GET    /limits                                   limits per tag
    PUT    /limits/{tag}                             merge camelCase fields; null clears one
    DELETE /limits/{tag}                             remove a tag's limits
    GET    /traces?limit=N&worker=...                the newest stored trace items (tail's filters), oldest first
    GET    /server                                   the dispatch listener's URL and namespace, engine defaults, caps
    GET    /openapi.json                             this API as OpenAPI 3.1
    GET    /tail  (WebSocket)                        live trace items; see `server.tail_stream`
    *      /client/v4/accounts/{account}/workers/... Cloudflare's own paths; see `server.cloudflare_api`
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from wasmdeck.engine.egress import EgressPolicy
from wasmdeck.engine import DEFAULT_NAMESPACE, Engine, InvalidInput, InvalidModule, Limits, NotFound, Worker
from wasmdeck.engine.limits import CAMEL, FIELDS
from wasmdeck.engine.secrets import SecretsUnavailable
from wasmdeck.engine.validation import check_name, check_tag, check_tags, check_vars
from wasmdeck.engine.engine import ABIS
from wasmdeck.engine.javascript import check_binding_name
from wasmdeck.engine.store import MAX_VERSION, CorruptModule, DatabaseUnavailable

from .auth import token_matches
from .cloudflare_api import CloudflarePaths
from .envelope import envelope_error, ok
from .http_limits import DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADERS
from .writer import EngineWriter
from .tail_stream import FILTER_PARAMETERS, MAX_HISTORY, InvalidParameter, TailEndpoint, parse_trace_filter

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_JSON_BYTES = 1024 * 1024
DEFAULT_TRACES = 100
# Traces are stored in batches off the request path; /traces first waits for what was published so
# far, but never longer than this (under steady traffic the batch writer is never idle).
TRACE_FLUSH_WAIT_S = 1.0
MULTIPART_SLACK_BYTES = 1024 * 1024  # room for the metadata part and the multipart framing
METADATA_KEYS = ("main_module", "tags", "vars", "abi", "message")
DEFAULT_MODULE_PART = "module"



class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers
        self.code = code


@dataclass(frozen=True)
class DispatchListener:
    """The dispatch listener serving beside this admin API, as `GET /server` reports it."""

    url: str
    namespace: str
    max_body_bytes: int
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_headers: int = DEFAULT_MAX_HEADERS

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "namespace": self.namespace, "maxBodyBytes": self.max_body_bytes,
                "maxHeaderBytes": self.max_header_bytes, "maxHeaders": self.max_headers}




def _checked(field: str, check: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run an engine check; its InvalidInput becomes a 400 naming `field`."""
    try:
        return check(*args, **kwargs)
    except InvalidInput as error:
        raise ApiError(400, str(error), field) from None


def _record(worker: Worker) -> dict[str, Any]:
    return {**worker.as_dict(), "firstDeployedAt": worker.first_deployed_at}


def _only_fields(body: Any, known: tuple[str, ...], what: str) -> dict[str, Any]:
    """`body` as a JSON object holding only `known` fields (at least one); else a 400 naming the culprit."""
    if not isinstance(body, dict) or not body:
        raise ApiError(400, f"the body must be a JSON object with {what}", "body")
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r}; known fields are {', '.join(known)}", unknown[0])
    return body


def _vars_body(body: Any, field: str) -> dict[str, str]:
    if not isinstance(body, dict):
        raise ApiError(400, f"{field} must be an object of strings", field)
    return _checked(field, check_vars, body)


def parse_tag_filter(text: str) -> tuple[list[str], list[str]]:
    """`a:yes,b:no` → (tags required, tags refused); anything else is a 400 naming `tags`."""
    required: list[str] = []
    refused: list[str] = []
    for item in text.split(","):
        tag, sep, wanted = item.rpartition(":")
        if not sep or wanted not in ("yes", "no"):
            raise ApiError(400, f"tag filter {item!r} is not of the form tag:yes or tag:no", "tags")
        _checked("tags", check_tag, tag)
        (required if wanted == "yes" else refused).append(tag)
    return required, refused


# a refused body is not read to its end, so the connection cannot carry another request
_CLOSE = {"Connection": "close"}


def _bounded_body(request: Request, limit: int, refusal: Callable[[], ApiError]) -> Request:
    """The same request, whose body raises `refusal()` as soon as more than `limit` bytes have
    arrived (a chunked body declares no length: it is counted as it streams in)."""
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise refusal()
        return message

    return Request(request.scope, receive)


async def _json_body(request: Request) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_JSON_BYTES:
        raise ApiError(413, f"the JSON body is over the {MAX_JSON_BYTES} byte limit", headers=_CLOSE)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            raise ApiError(413, f"the JSON body is over the {MAX_JSON_BYTES} byte limit", headers=_CLOSE)
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON", "body") from None


class AdminApi:
    """The handlers; `engine` is owned (and closed) by the caller."""

    def __init__(self, engine: Engine, dispatch: DispatchListener | None = None, tail: TailEndpoint | None = None,
                 writer: EngineWriter | None = None) -> None:
        self.engine = engine
        self.dispatch = dispatch
        self.tail = tail
        self._write = writer or EngineWriter()  # every write and deploy runs off the event loop

    async def _delete_worker(self, name: str, namespace: str) -> None:
        await self._write(self.engine.delete, name, namespace=namespace)

    # -- namespaces -----------------------------------------------------------------

    async def list_namespaces(self, request: Request) -> Response:
        return ok([ns.as_dict() for ns in self.engine.namespaces()])

    def _namespace_settings(self, body: dict[str, Any], routing_default: str | None) -> tuple[str | None, Limits, list[str]]:
        """`routing` and `defaults` of a namespace body: (routing, default limits to set, defaults to clear)."""
        routing = body["routing"] if body.get("routing") is not None else routing_default
        if routing is not None and routing not in ("host", "path"):
            raise ApiError(400, f"routing {routing!r} is not one of host, path", "routing")
        defaults_body = body.get("defaults") or {}
        if not isinstance(defaults_body, dict):
            raise ApiError(400, "defaults must be a JSON object of limits", "defaults")
        defaults, clear = self._limits(defaults_body, "defaults.")
        return routing, defaults, clear

    async def create_namespace(self, request: Request) -> Response:
        body = _only_fields(await _json_body(request), ("name", "routing", "defaults"), "a name")
        name: str = _checked("name", check_name, body.get("name"), "namespace name")
        routing, defaults, _ = self._namespace_settings(body, "host")
        if any(ns.name == name for ns in self.engine.namespaces()):
            raise ApiError(409, f"namespace {name!r} already exists", "name")
        return ok((await self._write(self.engine.create_namespace, name, routing=routing or "host", defaults=defaults)).as_dict(), 201)

    async def get_namespace(self, request: Request) -> Response:
        ns = self.engine.namespace(request.path_params["ns"])
        return ok({**ns.as_dict(), "scripts": len(self.engine.workers(ns.name))})

    async def update_namespace(self, request: Request) -> Response:
        name = request.path_params["ns"]
        self.engine.namespace(name)  # 404 before reading the body
        body = _only_fields(await _json_body(request), ("routing", "defaults"), "routing and/or defaults")
        routing, defaults, clear = self._namespace_settings(body, None)
        return ok((await self._write(self.engine.update_namespace, name, routing=routing, defaults=defaults, clear=clear)).as_dict())

    async def namespace_stats(self, request: Request) -> Response:
        name = request.path_params["ns"]
        self.engine.namespace(name)
        await _stored_so_far(self.engine)
        return ok(self.engine.worker_stats(name))

    async def namespace_instances(self, request: Request) -> Response:
        return ok(self.engine.instance_stats(request.path_params["ns"]))

    async def instance_totals(self, request: Request) -> Response:
        return ok(self.engine.instance_totals())

    async def delete_namespace(self, request: Request) -> Response:
        name = request.path_params["ns"]
        workers = self.engine.workers(name)  # NotFound first
        if name == DEFAULT_NAMESPACE:
            raise ApiError(400, "the default namespace cannot be deleted", "ns")
        if workers:
            raise ApiError(409, f"namespace {name!r} still has {len(workers)} script(s); delete them first")
        await self._write(self.engine.delete_namespace, name)
        return ok(None)

    # -- platform settings: dispatch Worker, Outbound Worker, egress, tail consumers ----------

    async def put_dispatcher(self, request: Request) -> Response:
        ns = request.path_params["ns"]
        self.engine.namespace(ns)
        body = _only_fields(await _json_body(request), ("worker", "binding"), "a worker")
        worker = body.get("worker")
        if not isinstance(worker, str):
            raise ApiError(400, "worker must be the name of a Worker-protocol or JavaScript script", "worker")
        binding = body.get("binding")
        if binding is not None:
            if not isinstance(binding, str):
                raise ApiError(400, "binding must be the name of the dispatch namespace binding (a string)", "binding")
            _checked("binding", check_binding_name, binding)
        return ok((await self._write(_checked, "worker", self.engine.set_dispatch_worker, worker, namespace=ns,
                                     binding=binding)).as_dict())

    async def delete_dispatcher(self, request: Request) -> Response:
        return ok((await self._write(self.engine.set_dispatch_worker, None, namespace=request.path_params["ns"])).as_dict())

    async def put_outbound(self, request: Request) -> Response:
        ns = request.path_params["ns"]
        self.engine.namespace(ns)
        body = _only_fields(await _json_body(request), ("service", "parameters"), "a service")
        service = body.get("service")
        if not isinstance(service, str):
            raise ApiError(400, "service must be the name of a Worker-protocol script", "service")
        raw = body.get("parameters") or []
        if not isinstance(raw, list):
            raise ApiError(400, "parameters must be a list of names or {name, template} objects", "parameters")
        parameters: list[tuple[Any, Any]] = []
        for item in raw:
            if isinstance(item, dict) and set(item) <= {"name", "template"}:
                parameters.append((item.get("name"), item.get("template")))
            elif isinstance(item, str):
                parameters.append((item, None))
            else:
                raise ApiError(400, "each parameter must be a name or a {name, template} object", "parameters")
        return ok((await self._write(_checked, "parameters", self.engine.set_outbound, service, parameters, namespace=ns)).as_dict())

    async def delete_outbound(self, request: Request) -> Response:
        return ok((await self._write(self.engine.set_outbound, None, namespace=request.path_params["ns"])).as_dict())

    async def put_egress(self, request: Request) -> Response:
        ns = request.path_params["ns"]
        self.engine.namespace(ns)
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object with allow and block lists", "body")
        _only_fields(body or {"allow": []}, ("allow", "block"), "allow and block lists")
        lists: dict[str, list[str]] = {}
        for field in ("allow", "block"):
            value = body.get(field, [])
            if not isinstance(value, list) or not all(isinstance(entry, str) for entry in value):
                raise ApiError(400, f"{field} must be a list of host strings", field)
            lists[field] = value
        for field in ("allow", "block"):  # name the list that holds the bad entry
            _checked(field, EgressPolicy.parse, **{field: lists[field]})
        return ok((await self._write(self.engine.set_egress, allow=lists["allow"], block=lists["block"], namespace=ns)).as_dict())

    async def list_tail_consumers(self, request: Request) -> Response:
        return ok([c.as_dict() for c in self.engine.tail_consumers(request.path_params["ns"])])

    def _tail_scope(self, data: Any) -> dict[str, Any]:
        worker = data.get("worker")
        dispatcher = data.get("dispatcher", False)
        if dispatcher in ("true", "false"):
            dispatcher = dispatcher == "true"
        if worker is not None and not isinstance(worker, str):
            raise ApiError(400, "worker must be a script name", "worker")
        if not isinstance(dispatcher, bool):
            raise ApiError(400, "dispatcher must be true or false", "dispatcher")
        return {"worker": worker, "dispatcher": dispatcher}

    async def add_tail_consumer(self, request: Request) -> Response:
        ns = request.path_params["ns"]
        self.engine.namespace(ns)
        body = _only_fields(await _json_body(request), ("consumer", "worker", "dispatcher"), "a consumer")
        consumer = body.get("consumer")
        if not isinstance(consumer, str):
            raise ApiError(400, "consumer must be the name of a Worker-protocol script", "consumer")
        added = await self._write(_checked, "consumer", self.engine.add_tail_consumer, consumer, namespace=ns, **self._tail_scope(body))
        return ok(added.as_dict(), 201)

    async def remove_tail_consumer(self, request: Request) -> Response:
        ns = request.path_params["ns"]
        scope = self._tail_scope(request.query_params)
        await self._write(_checked, "consumer", self.engine.remove_tail_consumer, request.path_params["consumer"], namespace=ns, **scope)
        return ok(None)

    # -- scripts --------------------------------------------------------------------

    def _filtered(self, request: Request, *, required: bool) -> list[Worker]:
        ns = request.path_params["ns"]
        text = request.query_params.get("tags")
        if text is None or text == "":
            if required:
                raise ApiError(400, "bulk delete needs a tag filter such as ?tags=free:yes", "tags")
            return self.engine.workers(ns)
        wanted, refused = parse_tag_filter(text)
        return [w for w in self.engine.workers(ns, tags=wanted) if not any(tag in w.tags for tag in refused)]

    async def list_scripts(self, request: Request) -> Response:
        return ok([_record(w) for w in self._filtered(request, required=False)])

    async def bulk_delete_scripts(self, request: Request) -> Response:
        ns = request.path_params["ns"]
        doomed = self._filtered(request, required=True)
        for worker in doomed:
            await self._delete_worker(worker.name, ns)
        return ok({"deleted": [w.name for w in doomed]})

    async def put_script(self, request: Request) -> Response:
        ns, name = request.path_params["ns"], request.path_params["name"]
        self.engine.namespace(ns)  # 404 before reading the body
        _checked("name", check_name, name)
        limit = self.engine.max_module_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit + MULTIPART_SLACK_BYTES:
            raise ApiError(413, f"the request is {int(declared) / 2**20:.1f} MiB, over the {limit / 2**20:.0f} MiB module limit",
                           DEFAULT_MODULE_PART, headers=_CLOSE, code="invalid_module")
        content_type = request.headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            raise ApiError(400, "the body must be multipart/form-data with a metadata part and a module part", "body")
        bounded = _bounded_body(request, limit + MULTIPART_SLACK_BYTES, lambda: ApiError(
            413, f"the request is over the {limit / 2**20:.0f} MiB module limit (refused as it arrived)",
            DEFAULT_MODULE_PART, headers=_CLOSE, code="invalid_module"))
        try:
            form = await bounded.form(max_files=4, max_fields=8, max_part_size=MAX_JSON_BYTES)
        except HTTPException as error:
            raise ApiError(400, f"the multipart body cannot be parsed: {error.detail}", "body") from None
        try:
            return ok(await self._deploy(ns, name, form))
        finally:
            await form.close()

    async def _deploy(self, ns: str, name: str, form: Any) -> dict[str, Any]:
        raw = form.get("metadata")
        if raw is None:
            raise ApiError(400, "the multipart body has no metadata part", "metadata")
        if isinstance(raw, UploadFile):
            raw = await raw.read(MAX_JSON_BYTES + 1)
        try:
            metadata = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "the metadata part is not valid JSON", "metadata") from None
        if not isinstance(metadata, dict):
            raise ApiError(400, "the metadata part must be a JSON object", "metadata")
        for key in metadata:
            if key not in METADATA_KEYS:
                raise ApiError(400, f"unknown metadata field {key!r}; known ones are {', '.join(METADATA_KEYS)}", f"metadata.{key}")
        tags = metadata.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ApiError(400, "metadata.tags must be a list of strings", "metadata.tags")
        tags = _checked("metadata.tags", check_tags, tags)
        variables = _vars_body(metadata.get("vars", {}), "metadata.vars")
        abi = metadata.get("abi")
        if abi is not None and abi not in ABIS:
            raise ApiError(400, f"abi {abi!r} is not one of {', '.join(ABIS)} (leave it out to detect it from the module)",
                           "metadata.abi")
        message = metadata.get("message", "")
        if not isinstance(message, str):
            raise ApiError(400, "metadata.message must be a string", "metadata.message")
        part = metadata.get("main_module", DEFAULT_MODULE_PART)
        if not isinstance(part, str) or not part:
            raise ApiError(400, "metadata.main_module must name the module part", "metadata.main_module")
        upload = form.get(part)
        if upload is None:
            raise ApiError(400, f"the multipart body has no {part!r} part holding the module (.wasm) or script (.js)", part)
        if not isinstance(upload, UploadFile):
            raise ApiError(400, f"the {part!r} part must be a file part (give it a filename)", part)
        data = await upload.read()
        try:
            worker = await self._write(self.engine.deploy, name, data, namespace=ns, tags=tags, vars=variables, message=message,
                                       abi=abi, filename=upload.filename)
        except InvalidModule as error:
            raise ApiError(413 if len(data) > self.engine.max_module_bytes else 400, str(error), part,
                           code="invalid_module") from None
        return _record(worker)

    async def get_script(self, request: Request) -> Response:
        ns, name = request.path_params["ns"], request.path_params["name"]
        worker = self.engine.worker(name, namespace=ns)
        return ok({**_record(worker), "limits": self.engine.effective_limits(name, namespace=ns).as_dict()})

    async def delete_script(self, request: Request) -> Response:
        ns, name = request.path_params["ns"], request.path_params["name"]
        await self._delete_worker(name, ns)
        return ok(None)

    async def get_content(self, request: Request) -> Response:
        worker = self.engine.worker(request.path_params["name"], namespace=request.path_params["ns"])
        data = self.engine.module_bytes(worker)
        media = "application/javascript+module" if worker.language == "javascript" else "application/wasm"
        if worker.script is not None and worker.script.format == "service-worker":
            media = "application/javascript"
        return Response(data, media_type=media, headers={"ETag": f'"{worker.sha256}"'})

    async def get_tags(self, request: Request) -> Response:
        worker = self.engine.worker(request.path_params["name"], namespace=request.path_params["ns"])
        return ok(list(worker.tags))

    async def put_tags(self, request: Request) -> Response:
        ns, name = request.path_params["ns"], request.path_params["name"]
        self.engine.worker(name, namespace=ns)  # 404 before reading the body
        body = await _json_body(request)
        if not isinstance(body, list) or not all(isinstance(t, str) for t in body):
            raise ApiError(400, "the body must be a JSON list of tag strings", "tags")
        tags = _checked("tags", check_tags, body)
        return ok(list((await self._write(self.engine.set_tags, name, tags, namespace=ns)).tags))

    async def get_vars(self, request: Request) -> Response:
        worker = self.engine.worker(request.path_params["name"], namespace=request.path_params["ns"])
        return ok(dict(worker.vars))

    async def put_vars(self, request: Request) -> Response:
        ns, name = request.path_params["ns"], request.path_params["name"]
        self.engine.worker(name, namespace=ns)  # 404 before reading the body
        variables = _vars_body(await _json_body(request), "vars")
        return ok(dict((await self._write(self.engine.set_vars, name, variables, namespace=ns)).vars))

    async def list_secrets(self, request: Request) -> Response:
        return ok(self.engine.secret_names(request.path_params["name"], namespace=request.path_params["ns"]))

    async def put_secret(self, request: Request) -> Response:
        ns, name, key = request.path_params["ns"], request.path_params["name"], request.path_params["secret"]
        self.engine.worker(name, namespace=ns)  # 404 before reading the body
        body = _only_fields(await _json_body(request), ("value",), "the secret's value")
        if not isinstance(body.get("value"), str):
            raise ApiError(400, "value must be the secret as a string", "value")
        await self._write(_checked, "secret", self.engine.put_secret, name, key, body["value"], namespace=ns)
        return ok(self.engine.secret_names(name, namespace=ns))

    async def delete_secret(self, request: Request) -> Response:
        ns, name = request.path_params["ns"], request.path_params["name"]
        await self._write(self.engine.delete_secret, name, request.path_params["secret"], namespace=ns)
        return ok(self.engine.secret_names(name, namespace=ns))

    async def patch_settings(self, request: Request) -> Response:
        ns, name = request.path_params["ns"], request.path_params["name"]
        self.engine.worker(name, namespace=ns)  # 404 before reading the body
        body = _only_fields(await _json_body(request), ("tags", "vars"), "tags and/or vars")
        tags = body.get("tags")
        if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
            raise ApiError(400, "tags must be a JSON list of tag strings", "tags")
        checked_tags = None if tags is None else _checked("tags", check_tags, tags)
        checked_vars = None if body.get("vars") is None else _vars_body(body["vars"], "vars")
        if checked_tags is None and checked_vars is None:
            raise ApiError(400, "give tags, vars or both (null leaves one as it is)", "body")
        return ok(_record(await self._write(self.engine.update_settings, name, tags=checked_tags, vars=checked_vars, namespace=ns)))

    async def script_limits(self, request: Request) -> Response:
        limits = self.engine.effective_limits(request.path_params["name"], namespace=request.path_params["ns"])
        return ok(limits.as_dict())

    async def list_versions(self, request: Request) -> Response:
        versions = self.engine.versions(request.path_params["name"], namespace=request.path_params["ns"])
        return ok([v.as_dict() for v in versions])

    async def rollback(self, request: Request) -> Response:
        ns, name = request.path_params["ns"], request.path_params["name"]
        self.engine.worker(name, namespace=ns)
        body = await _json_body(request)
        version = body.get("version") if isinstance(body, dict) else None
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
            raise ApiError(400, f"the body must be {{\"version\": N}} with N a version number from 1 to {MAX_VERSION}", "version")
        return ok(_record(await self._write(self.engine.rollback, name, version, namespace=ns)))

    # -- limits ---------------------------------------------------------------------

    @staticmethod
    def _limits(body: dict[str, Any], prefix: str = "") -> tuple[Limits, list[str]]:
        """camelCase (or snake_case) fields → (Limits to set, fields to clear); errors name the field."""
        values: dict[str, Any] = {}
        clear: list[str] = []
        for key, value in body.items():
            snake = key if key in FIELDS else next((n for n, c in CAMEL.items() if c == key), None)
            if snake is None:
                raise ApiError(400, f"unknown limit {key!r}; known limits are cpuMs, memoryMb, subRequests, wallMs", prefix + key)
            if value is None:
                clear.append(snake)
                continue
            _checked(prefix + key, Limits, **{snake: value})
            values[snake] = value
        return Limits(**values), clear

    async def list_limits(self, request: Request) -> Response:
        return ok({tag: limits.as_dict() for tag, limits in self.engine.limits().items()})

    async def put_limits(self, request: Request) -> Response:
        tag = request.path_params["tag"]
        _checked("tag", check_tag, tag)
        body = await _json_body(request)
        if not isinstance(body, dict) or not body:
            raise ApiError(400, "the body must be a JSON object such as {\"cpuMs\": 50}", "body")
        limits, clear = self._limits(body)
        return ok((await self._write(self.engine.set_limits, tag, limits, clear=clear)).as_dict())

    async def delete_limits(self, request: Request) -> Response:
        await self._write(self.engine.delete_limits, request.path_params["tag"])
        return ok(None)

    # -- traces and the server ---------------------------------------------------------

    async def recent_traces(self, request: Request) -> Response:
        try:
            trace_filter = parse_trace_filter(request.query_params, also_known=("limit",))
        except InvalidParameter as error:
            raise ApiError(400, str(error), error.parameter) from None
        raw_limit = request.query_params.get("limit") or str(DEFAULT_TRACES)
        if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= MAX_HISTORY:
            raise ApiError(400, f"limit must be a whole number from 1 to {MAX_HISTORY}", "limit")
        if trace_filter.namespace is not None:
            self.engine.namespace(trace_filter.namespace)  # 404 rather than an empty list
        await _stored_so_far(self.engine)
        return ok(self.engine.recent_traces(int(raw_limit), trace_filter))

    async def server(self, request: Request) -> Response:
        tail = self.tail.hub if self.tail is not None else None
        return ok({
            "dispatch": self.dispatch.as_dict() if self.dispatch is not None else None,
            "engineDefaults": self.engine.engine_defaults.as_dict(),
            "maxModuleBytes": self.engine.max_module_bytes,
            "tail": {"perWorker": tail.per_worker, "total": tail.total, "clients": tail.count()} if tail else None,
        })

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(OPENAPI)


async def _stored_so_far(engine: Engine) -> None:
    """Wait until the trace items published so far are stored (at most `TRACE_FLUSH_WAIT_S`)."""
    with contextlib.suppress(asyncio.TimeoutError):
        # shielded: a timeout must not cancel the engine's own flush
        await asyncio.wait_for(asyncio.shield(engine.flush_traces()), TRACE_FLUSH_WAIT_S)


# -- errors -------------------------------------------------------------------------


async def _api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return envelope_error(error.status, error.message, error.field, error.headers, error.code)


async def _not_found(request: Request, error: Exception) -> Response:
    return envelope_error(404, str(error))


async def _invalid_input(request: Request, error: Exception) -> Response:
    return envelope_error(400, str(error))


async def _secrets_unavailable(request: Request, error: Exception) -> Response:
    return envelope_error(503, str(error), code="secrets_unavailable")


async def _invalid_module(request: Request, error: Exception) -> Response:
    return envelope_error(400, str(error), code="invalid_module")


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    message = {404: f"no admin API endpoint at {request.url.path}",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(error.status_code, str(error.detail))
    return envelope_error(error.status_code, message, headers=error.headers)


async def _unavailable(request: Request, error: Exception) -> Response:
    """The database cannot take the write (read-only, locked too long, full): try again later, or fix the file."""
    return envelope_error(503, str(error), code="unavailable")


async def _corrupt(request: Request, error: Exception) -> Response:
    return envelope_error(500, str(error), code="corrupt_module")


async def _internal(request: Request, error: Exception) -> Response:
    return envelope_error(500, "internal error in the admin API; see the server log")


class BearerAuth:
    """ASGI wrapper: every HTTP request must carry the bearer token, checked before routing."""

    def __init__(self, app: Any, token: str) -> None:
        if not token:
            raise InvalidInput("the admin token cannot be empty")
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            value = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
            if not token_matches(self.token, value):
                response = envelope_error(401, "a valid bearer token is required (Authorization: Bearer <token>)",
                                          headers={"WWW-Authenticate": 'Bearer realm="wasmdeck-admin"'})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_admin_app(engine: Engine, token: str, *, dispatch: DispatchListener | None = None,
                     tail_options: dict[str, Any] | None = None) -> CloudflarePaths:
    """The admin ASGI app over `engine` (which the caller owns and closes), guarded by `token`.

    `dispatch` is the dispatch listener serving the same engine, if any (reported by `GET /server`,
    so a remote client needs only the admin URL). `tail_options` go to `TailEndpoint` (per_worker,
    total, queue_size, slow_timeout, poll_interval).
    """
    tail = TailEndpoint(engine, token, **(tail_options or {}))
    writer = EngineWriter()
    api = AdminApi(engine, dispatch, tail, writer)
    script = "/namespaces/{ns}/scripts/{name}"
    routes = [
        Route("/namespaces", api.list_namespaces, methods=["GET"]),
        Route("/namespaces", api.create_namespace, methods=["POST"]),
        Route("/namespaces/{ns}", api.get_namespace, methods=["GET"]),
        Route("/namespaces/{ns}", api.update_namespace, methods=["PATCH"]),
        Route("/namespaces/{ns}", api.delete_namespace, methods=["DELETE"]),
        Route("/namespaces/{ns}/stats", api.namespace_stats, methods=["GET"]),
        Route("/namespaces/{ns}/instances", api.namespace_instances, methods=["GET"]),
        Route("/instances", api.instance_totals, methods=["GET"]),
        Route("/namespaces/{ns}/dispatcher", api.put_dispatcher, methods=["PUT"]),
        Route("/namespaces/{ns}/dispatcher", api.delete_dispatcher, methods=["DELETE"]),
        Route("/namespaces/{ns}/outbound", api.put_outbound, methods=["PUT"]),
        Route("/namespaces/{ns}/outbound", api.delete_outbound, methods=["DELETE"]),
        Route("/namespaces/{ns}/egress", api.put_egress, methods=["PUT"]),
        Route("/namespaces/{ns}/tail-consumers", api.list_tail_consumers, methods=["GET"]),
        Route("/namespaces/{ns}/tail-consumers", api.add_tail_consumer, methods=["POST"]),
        Route("/namespaces/{ns}/tail-consumers/{consumer}", api.remove_tail_consumer, methods=["DELETE"]),
        Route("/namespaces/{ns}/scripts", api.list_scripts, methods=["GET"]),
        Route("/namespaces/{ns}/scripts", api.bulk_delete_scripts, methods=["DELETE"]),
        Route(script, api.put_script, methods=["PUT"]),
        Route(script, api.get_script, methods=["GET"]),
        Route(script, api.delete_script, methods=["DELETE"]),
        Route(script + "/content", api.get_content, methods=["GET"]),
        Route(script + "/limits", api.script_limits, methods=["GET"]),
        Route(script + "/tags", api.get_tags, methods=["GET"]),
        Route(script + "/tags", api.put_tags, methods=["PUT"]),
        Route(script + "/vars", api.get_vars, methods=["GET"]),
        Route(script + "/vars", api.put_vars, methods=["PUT"]),
        Route(script + "/settings", api.patch_settings, methods=["PATCH"]),
        Route(script + "/versions", api.list_versions, methods=["GET"]),
        Route(script + "/secrets", api.list_secrets, methods=["GET"]),
        Route(script + "/secrets/{secret}", api.put_secret, methods=["PUT"]),
        Route(script + "/secrets/{secret}", api.delete_secret, methods=["DELETE"]),
        Route(script + "/rollback", api.rollback, methods=["POST"]),
        Route("/limits", api.list_limits, methods=["GET"]),
        Route("/limits/{tag}", api.put_limits, methods=["PUT"]),
        Route("/limits/{tag}", api.delete_limits, methods=["DELETE"]),
        Route("/traces", api.recent_traces, methods=["GET"]),
        Route("/server", api.server, methods=["GET"]),
        Route("/openapi.json", api.openapi, methods=["GET"]),
        WebSocketRoute("/tail", tail),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            ApiError: _api_error,
            NotFound: _not_found,
            InvalidModule: _invalid_module,
            InvalidInput: _invalid_input,
            SecretsUnavailable: _secrets_unavailable,
            DatabaseUnavailable: _unavailable,
            CorruptModule: _corrupt,
            HTTPException: _http_error,
            Exception: _internal,
        },
    )
    # Cloudflare's own paths under /client/v4, beside wasmdeck's
    return CloudflarePaths(BearerAuth(app, token), engine, token, dispatch.namespace if dispatch else DEFAULT_NAMESPACE, writer)


# -- OpenAPI ------------------------------------------------------------------------


_QUERY_DESCRIPTIONS = {
    "tags": "tag filter: tag:yes,tag:no",
    "limit": f"how many items, 1 to {MAX_HISTORY} (default {DEFAULT_TRACES})",
    "namespace": "only this dispatch namespace",
    "worker": "only this script",
    "status": "ok, error or canceled",
    "method": "only these request methods (repeatable)",
    "search": "text in the logs or exceptions",
    "header": "only requests with this header: NAME or NAME:VALUE",
    "sampling_rate": "keep this fraction of the items, 0 < r < 1",
}


def _op(summary: str, *, params: tuple[str, ...] = (), query: tuple[str, ...] = (), body: dict[str, Any] | None = None,
        ok_status: str = "200", errors: tuple[str, ...] = ("401",)) -> dict[str, Any]:
    responses: dict[str, Any] = {ok_status: {"$ref": "#/components/responses/Ok"}}
    for status in errors:
        responses[status] = {"$ref": "#/components/responses/Error"}
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    parameters = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params]
    parameters += [{"name": q, "in": "query", "required": False, "schema": {"type": "string"},
                    "description": _QUERY_DESCRIPTIONS[q]} for q in query]
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": True, "content": body}
    return operation


_JSON = lambda schema: {"application/json": {"schema": schema}}  # noqa: E731
_LIMITS_SCHEMA = {"type": "object", "additionalProperties": False, "properties": {
    camel: {"type": ["integer", "null"]} for camel in CAMEL.values()}}
_NS, _SC = ("ns",), ("ns", "name")

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "wasmdeck admin API", "version": "0.1.0",
             "description": "Dispatch namespaces, scripts, tags, versions and per-tag limits, after Cloudflare's API."},
    "security": [{"bearer": []}],
    "paths": {
        "/namespaces": {
            "get": _op("List namespaces"),
            "post": _op("Create a namespace", ok_status="201", errors=("400", "401", "409"), body=_JSON({
                "type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string"}, "routing": {"enum": ["host", "path"]}, "defaults": _LIMITS_SCHEMA}})),
        },
        "/namespaces/{ns}": {
            "get": _op("Get a namespace", params=_NS, errors=("401", "404")),
            "patch": _op("Change a namespace's routing or default limits (null clears a default)", params=_NS,
                         errors=("400", "401", "404"), body=_JSON({
                             "type": "object", "minProperties": 1, "additionalProperties": False, "properties": {
                                 "routing": {"enum": ["host", "path"]}, "defaults": _LIMITS_SCHEMA}})),
            "delete": _op("Delete an empty namespace", params=_NS, errors=("400", "401", "404", "409")),
        },
        "/namespaces/{ns}/stats": {
            "get": _op("Per script: stored request count, error count and last outcome", params=_NS,
                       errors=("401", "404")),
        },
        "/namespaces/{ns}/instances": {
            "get": _op("Per script that ran on warm instances (protocol version 2) since the server started: "
                       "busy, idle, starting, started, invocations, reusedInvocations, retired (by reason)",
                       params=_NS, errors=("401", "404")),
        },
        "/instances": {
            "get": _op("Warm instances over the whole engine (busy, idle, started, retired by reason...) and "
                       "their bounds (maxInstances, maxPerWorker, idleTimeoutS, maxInvocations...)"),
        },
        "/namespaces/{ns}/dispatcher": {
            "put": _op("Front the namespace with a dispatch Worker (a Worker-protocol or JavaScript script); a "
                       "JavaScript one finds the namespace as env[binding] (default: dispatcher)", params=_NS,
                       errors=("400", "401", "404"), body=_JSON({
                           "type": "object", "required": ["worker"], "additionalProperties": False,
                           "properties": {"worker": {"type": "string"}, "binding": {"type": "string"}}})),
            "delete": _op("Route by host label or path again", params=_NS, errors=("401", "404")),
        },
        "/namespaces/{ns}/outbound": {
            "put": _op("Set the namespace's Outbound Worker and its parameters", params=_NS,
                       errors=("400", "401", "404"), body=_JSON({
                           "type": "object", "required": ["service"], "additionalProperties": False, "properties": {
                               "service": {"type": "string"},
                               "parameters": {"type": "array", "items": {"oneOf": [
                                   {"type": "string"},
                                   {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
                                       "name": {"type": "string"}, "template": {"type": ["string", "null"],
                                       "description": "{worker} {namespace} {request.url} {request.host} {tag:NAME}"}}},
                               ]}}}})),
            "delete": _op("Send fetches straight to the network (after the egress policy)", params=_NS,
                          errors=("401", "404")),
        },
        "/namespaces/{ns}/egress": {
            "put": _op("Replace the egress policy (a new namespace allows nothing; block wins)", params=_NS,
                       errors=("400", "401", "404"), body=_JSON({
                           "type": "object", "additionalProperties": False, "properties": {
                               "allow": {"type": "array", "items": {"type": "string"}},
                               "block": {"type": "array", "items": {"type": "string"}}}})),
        },
        "/namespaces/{ns}/tail-consumers": {
            "get": _op("List the namespace's tail consumers", params=_NS, errors=("401", "404")),
            "post": _op("Deliver trace items of one script (worker), of the dispatcher (dispatcher: true) or of "
                        "the whole namespace (neither) to a consumer's tail handler", params=_NS, ok_status="201",
                        errors=("400", "401", "404"), body=_JSON({
                            "type": "object", "required": ["consumer"], "additionalProperties": False, "properties": {
                                "consumer": {"type": "string"}, "worker": {"type": "string"},
                                "dispatcher": {"type": "boolean"}}})),
        },
        "/namespaces/{ns}/tail-consumers/{consumer}": {
            "delete": {**_op("Stop a delivery (the same worker / dispatcher scope as when added)",
                             params=("ns", "consumer"), errors=("400", "401", "404")),
                       "parameters": [
                           {"name": "ns", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "consumer", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "worker", "in": "query", "required": False, "schema": {"type": "string"}},
                           {"name": "dispatcher", "in": "query", "required": False, "schema": {"enum": ["true", "false"]}},
                       ]},
        },
        "/namespaces/{ns}/scripts": {
            "get": _op("List scripts, optionally filtered by tags", params=_NS, query=("tags",), errors=("400", "401", "404")),
            "delete": _op("Delete every script matching the tag filter", params=_NS, query=("tags",),
                          errors=("400", "401", "404")),
        },
        "/namespaces/{ns}/scripts/{name}": {
            "put": _op("Upload (deploy) a script", params=_SC, errors=("400", "401", "404", "413"), body={
                "multipart/form-data": {"schema": {"type": "object", "required": ["metadata", "module"], "properties": {
                    "metadata": {"type": "object", "properties": {
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "vars": {"type": "object", "additionalProperties": {"type": "string"}},
                        "abi": {"enum": list(ABIS), "description": "default: detected from the module"},
                        "message": {"type": "string"},
                        "main_module": {"type": "string", "description": "name of the module part (default: module)"}}},
                    "module": {"type": "string", "format": "binary"}}}}}),
            "get": _op("Get a script's record and effective limits", params=_SC, errors=("401", "404")),
            "delete": _op("Delete a script", params=_SC, errors=("401", "404")),
        },
        "/namespaces/{ns}/scripts/{name}/content": {
            "get": {**_op("Download the script's module", params=_SC, errors=("401", "404")),
                    "responses": {"200": {"description": "the module", "content": {"application/wasm": {}}},
                                  "401": {"$ref": "#/components/responses/Error"},
                                  "404": {"$ref": "#/components/responses/Error"}}},
        },
        "/namespaces/{ns}/scripts/{name}/limits": {
            "get": _op("Get a script's effective limits and the source of each", params=_SC, errors=("401", "404")),
        },
        "/namespaces/{ns}/scripts/{name}/tags": {
            "get": _op("Get a script's tags", params=_SC, errors=("401", "404")),
            "put": _op("Replace a script's tags", params=_SC, errors=("400", "401", "404"),
                       body=_JSON({"type": "array", "items": {"type": "string"}})),
        },
        "/namespaces/{ns}/scripts/{name}/vars": {
            "get": _op("Get a script's vars", params=_SC, errors=("401", "404")),
            "put": _op("Replace a script's vars (a new version)", params=_SC, errors=("400", "401", "404"),
                       body=_JSON({"type": "object", "additionalProperties": {"type": "string"}})),
        },
        "/namespaces/{ns}/scripts/{name}/settings": {
            "patch": _op("Replace a script's tags, vars or both as one new version", params=_SC,
                         errors=("400", "401", "404"), body=_JSON({
                             "type": "object", "minProperties": 1, "additionalProperties": False, "properties": {
                                 "tags": {"type": ["array", "null"], "items": {"type": "string"}},
                                 "vars": {"type": ["object", "null"], "additionalProperties": {"type": "string"}}}})),
        },
        "/namespaces/{ns}/scripts/{name}/versions": {
            "get": _op("List a script's versions", params=_SC, errors=("401", "404")),
        },
        "/namespaces/{ns}/scripts/{name}/secrets": {
            "get": _op("List the names of a script's secrets (values are never returned)", params=_SC, errors=("401", "404")),
        },
        "/namespaces/{ns}/scripts/{name}/secrets/{secret}": {
            "put": _op("Set a write-only secret (a new version); answers the secret names", params=_SC + ("secret",),
                       errors=("400", "401", "404", "503"), body=_JSON({
                           "type": "object", "required": ["value"], "additionalProperties": False,
                           "properties": {"value": {"type": "string", "maxLength": 5120}}})),
            "delete": _op("Remove a secret (a new version); answers the secret names", params=_SC + ("secret",),
                          errors=("401", "404")),
        },
        "/namespaces/{ns}/scripts/{name}/rollback": {
            "post": _op("Serve an earlier version again", params=_SC, errors=("400", "401", "404"),
                        body=_JSON({"type": "object", "required": ["version"],
                                    "properties": {"version": {"type": "integer", "minimum": 1, "maximum": MAX_VERSION}}})),
        },
        "/limits": {"get": _op("List limits per tag")},
        "/limits/{tag}": {
            "put": _op("Set a tag's limits (null clears a field)", params=("tag",), errors=("400", "401"),
                       body=_JSON(_LIMITS_SCHEMA)),
            "delete": _op("Remove a tag's limits", params=("tag",), errors=("401", "404")),
        },
        "/traces": {
            "get": _op("The newest stored trace items matching the filters, oldest first",
                       query=("limit", *FILTER_PARAMETERS), errors=("400", "401", "404")),
        },
        "/server": {
            "get": _op("The dispatch listener's URL and namespace (null without one), engine default limits, "
                       "module size limit and tail client caps"),
        },
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {"Envelope": {"type": "object", "required": ["success", "errors", "result"], "properties": {
            "success": {"type": "boolean"},
            "errors": {"type": "array", "items": {"type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}}}},
            "result": {}}}},
        "responses": {
            "Ok": {"description": "success", "content": _JSON({"$ref": "#/components/schemas/Envelope"})},
            "Error": {"description": "failure; errors[0].field names the bad input",
                      "content": _JSON({"$ref": "#/components/schemas/Envelope"})},
        },
    },
}

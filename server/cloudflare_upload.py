"""Cloudflare's Worker upload, read and checked: the multipart body and its `metadata` part.

What the official tools send (measured with the `cloudflare` Python SDK 5.9 and wrangler 3.114):
a `metadata` part (JSON; with or without a Content-Type) naming the main module in `main_module`
(ES modules) or `body_part` (a service-worker script), and one part per module, named either
`files` / `files[]` with the module's name as the filename (the SDK) or by the module's name
itself (wrangler), each typed `application/javascript+module`, `application/javascript` or
`application/wasm` (also `text/javascript(+module)`, and `application/source-map` for source
maps, which are accepted and not kept).

`read_multipart` streams the body through python-multipart and stops as soon as it is over its
byte or part limit, so nothing unbounded is ever held. `parse_upload` turns the parts and the
metadata into an `UploadPlan`, or raises `UploadError` (a status, Cloudflare's numeric code and
one sentence) without changing anything.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from wasmdeck.engine.compatibility import check_compatibility
from wasmdeck.engine.errors import InvalidInput
from wasmdeck.engine.secrets import check_secret
from wasmdeck.engine.validation import check_name, check_tags, check_vars

# Cloudflare's error codes, where theirs are known
CODE_BAD_REQUEST = 10001
CODE_SCRIPT_NOT_FOUND = 10007
CODE_VALIDATION = 10021  # "script content failed validation checks"
CODE_TOO_LARGE = 10027  # "script body was too large"
CODE_NAMESPACE_NOT_FOUND = 100119
CODE_NAMESPACE_EXISTS = 100120

MAX_PARTS = 32
MAX_METADATA_BYTES = 1024 * 1024
UPLOAD_SLACK_BYTES = MAX_METADATA_BYTES + 64 * 1024  # the metadata part and the multipart framing

WASM = "wasm"
ES_MODULE = "esm"
SERVICE_WORKER = "service-worker"
SOURCE_MAP = "source-map"
MODULE_TYPES = {
    "application/wasm": WASM,
    "application/javascript+module": ES_MODULE,
    "text/javascript+module": ES_MODULE,
    "application/javascript": SERVICE_WORKER,
    "text/javascript": SERVICE_WORKER,
    "application/source-map": SOURCE_MAP,
}
SETTINGS_BINDING_TYPES = ("plain_text", "secret_text", "json", "dispatch_namespace")
# metadata fields wasmdeck honours; and those it accepts because the tools send them, with no effect here
HONOURED_FIELDS = ("main_module", "body_part", "bindings", "tags", "tail_consumers", "compatibility_date",
                   "compatibility_flags", "keep_bindings")
ACCEPTED_FIELDS = ("logpush", "observability", "usage_model", "annotations", "keep_assets", "package_dependencies",
                   "capnp_schema", "placement", "cache_options")
REFUSED_FIELDS = {
    "limits": "wasmdeck sets limits per tag (PUT /limits/{tag} on the admin API, `wasmdeck limits set`), not per upload",
    "assets": "wasmdeck serves no static assets; the Worker answers every request",
    "migrations": "wasmdeck has no Durable Objects",
    "exports": "wasmdeck has no Durable Objects or named entrypoints",
    "containers": "wasmdeck runs no containers",
}
_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]{0,127}$")


class UploadError(Exception):
    """A refused upload: HTTP status, Cloudflare error code and one sentence."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def bad(message: str, code: int = CODE_BAD_REQUEST) -> UploadError:
    return UploadError(400, code, message)


# -- the multipart body ------------------------------------------------------------------------


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytearray = field(default_factory=bytearray, repr=False)

    @property
    def module_name(self) -> str:
        """The module's name: the filename the SDK gives it, else the part's name (as wrangler sends)."""
        return self.filename or self.name


def _header_value(value: bytes) -> tuple[str, dict[str, str]]:
    main, params = parse_options_header(value)
    return main.decode("latin-1").lower(), {k.decode("latin-1").lower(): v.decode("utf-8", "replace") for k, v in params.items()}


async def read_multipart(stream: AsyncIterator[bytes], content_type: str | None, *, max_bytes: int,
                         max_parts: int = MAX_PARTS) -> list[Part]:
    """The parts of a multipart/form-data body, refusing it once it is over `max_bytes` or `max_parts`."""
    kind, params = _header_value((content_type or "").encode("latin-1"))
    if kind != "multipart/form-data" or not params.get("boundary"):
        raise bad("the body must be multipart/form-data (with a boundary) holding a metadata part and the Worker's modules")
    parts: list[Part] = []
    headers: dict[str, bytes] = {}
    header_name = bytearray()
    header_value = bytearray()
    ended = False

    def on_part_begin() -> None:
        headers.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(header_name).decode("latin-1").lower()] = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        disposition, options = _header_value(headers.get("content-disposition", b""))
        if disposition != "form-data" or not options.get("name"):
            raise bad("every part of the multipart body needs a Content-Disposition: form-data header with a name")
        if len(parts) >= max_parts:
            raise bad(f"the multipart body has more than {max_parts} parts")
        content = headers.get("content-type")
        parts.append(Part(options["name"], options.get("filename") or None, _header_value(content)[0] if content else None))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data.extend(data[start:end])

    def on_end() -> None:
        nonlocal ended
        ended = True

    parser = MultipartParser(
        params["boundary"],
        {"on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
         "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
         "on_end": on_end},
    )
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > max_bytes:
            raise UploadError(413, CODE_TOO_LARGE, f"the upload is over {max_bytes / 2**20:.1f} MiB, the most this server accepts")
        try:
            parser.write(chunk)
        except MultipartParseError as error:
            raise bad(f"the multipart body is malformed ({str(error).rstrip('.')})") from None
    if not ended:
        raise bad("the multipart body ends before its closing boundary")
    return parts


# -- what an upload says ----------------------------------------------------------------------


@dataclass(frozen=True)
class Module:
    name: str
    kind: str  # WASM, ES_MODULE or SERVICE_WORKER
    data: bytes = field(repr=False)

    @property
    def is_javascript(self) -> bool:
        return self.kind in (ES_MODULE, SERVICE_WORKER)


@dataclass(frozen=True)
class DispatchBinding:
    """A `dispatch_namespace` binding: the Worker becomes that namespace's dispatch Worker, its
    `outbound.worker.service` the namespace's Outbound Worker with `outbound.params` as parameters."""

    name: str
    namespace: str
    outbound_service: str | None = None
    outbound_params: tuple[str, ...] = ()

    def as_binding(self) -> dict[str, Any]:
        binding: dict[str, Any] = {"type": "dispatch_namespace", "name": self.name, "namespace": self.namespace}
        if self.outbound_service is not None:
            binding["outbound"] = {"worker": {"service": self.outbound_service},
                                   "params": [{"name": name} for name in self.outbound_params]}
        return binding


@dataclass(frozen=True)
class Bindings:
    vars: dict[str, str] = field(default_factory=dict)  # plain_text and json (as JSON text)
    secrets: dict[str, str | None] = field(default_factory=dict, repr=False)  # None: keep the stored value
    dispatch: DispatchBinding | None = None


@dataclass(frozen=True)
class Settings:
    """The settings an upload or a settings PATCH gives; None means "not given"."""

    bindings: Bindings | None = None
    tags: tuple[str, ...] | None = None
    tail_consumers: tuple[TailConsumerRef, ...] | None = None
    compatibility_date: str | None = None
    compatibility_flags: tuple[str, ...] | None = None
    keep_bindings: frozenset[str] = frozenset()


@dataclass(frozen=True)
class UploadPlan:
    main: Module
    settings: Settings


def _checked(field: str, check: Any, *args: Any) -> Any:
    try:
        return check(*args)
    except InvalidInput as error:
        raise bad(f"{field}: {error}") from None


def parse_json_part(part: Part | None, what: str) -> dict[str, Any]:
    if part is None:
        raise bad(f"the multipart body has no {what} part")
    if part.filename is not None and part.content_type not in (None, "application/json", "text/plain"):
        raise bad(f"the {what} part must be JSON text")
    if len(part.data) > MAX_METADATA_BYTES:
        raise UploadError(413, CODE_TOO_LARGE, f"the {what} part is over {MAX_METADATA_BYTES} bytes")
    try:
        value = json.loads(bytes(part.data))
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep to read
        raise bad(f"the {what} part is not valid JSON") from None
    if not isinstance(value, dict):
        raise bad(f"the {what} part must be a JSON object")
    return value


def _string_list(value: Any, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise bad(f"{field} must be a list of strings")
    return value


def parse_bindings(raw: Any, field: str = "metadata.bindings") -> Bindings:
    if raw is None:
        return Bindings()
    if not isinstance(raw, list):
        raise bad(f"{field} must be a list of bindings")
    variables: dict[str, str] = {}
    secrets: dict[str, str | None] = {}
    dispatch: DispatchBinding | None = None
    seen: set[str] = set()
    for index, binding in enumerate(raw):
        where = f"{field}[{index}]"
        if not isinstance(binding, dict) or not isinstance(binding.get("type"), str) or not isinstance(binding.get("name"), str):
            raise bad(f"{where} must be an object with a name and a type")
        kind, name = binding["type"], binding["name"]
        if name in seen:
            raise bad(f"{where}: binding name {name} is used twice; binding names must be unique")
        seen.add(name)
        if kind in ("plain_text", "json"):
            if kind == "plain_text":
                if not isinstance(binding.get("text"), str):
                    raise bad(f"{where}: plain_text binding {name} needs its text as a string")
                text = binding["text"]
            else:
                if "json" not in binding:
                    raise bad(f"{where}: json binding {name} needs a json value")
                text = json.dumps(binding["json"], separators=(",", ":"), ensure_ascii=False)
            variables.update(_checked(where, check_vars, {name: text}))
        elif kind == "secret_text":
            text = binding.get("text")
            if text is not None and not isinstance(text, str):
                raise bad(f"{where}: secret_text binding {name} needs its text as a string")
            if text is not None:
                _checked(where, check_secret, name, text)
            else:
                _checked(where, check_vars, {name: ""})
            secrets[name] = text
        elif kind == "dispatch_namespace":
            if dispatch is not None:
                raise bad(f"{where}: a Worker can front one dispatch namespace in wasmdeck, and this upload binds two")
            dispatch = _dispatch_binding(binding, where)
        else:
            raise bad(
                f"{where}: binding {name} has type {kind}, which wasmdeck does not provide; "
                f"it provides {', '.join(SETTINGS_BINDING_TYPES)}"
            )
    return Bindings(variables, secrets, dispatch)


def _dispatch_binding(binding: Mapping[str, Any], where: str) -> DispatchBinding:
    name = binding["name"]
    if not _IDENTIFIER.match(name):
        raise bad(f"{where}: binding name {name!r} is not a JavaScript identifier")
    unknown = sorted(set(binding) - {"type", "name", "namespace", "outbound"})
    if unknown:
        raise bad(f"{where}: unknown field {unknown[0]!r} in dispatch_namespace binding {name}")
    namespace = binding.get("namespace")
    if not isinstance(namespace, str):
        raise bad(f"{where}: dispatch_namespace binding {name} needs the namespace's name")
    _checked(where, check_name, namespace, "namespace name")
    outbound = binding.get("outbound")
    if outbound is None:
        return DispatchBinding(name, namespace)
    if not isinstance(outbound, dict) or set(outbound) - {"worker", "params"}:
        raise bad(f"{where}.outbound must be an object with worker and params")
    worker = outbound.get("worker")
    if not isinstance(worker, dict) or not isinstance(worker.get("service"), str) or set(worker) - {"service", "environment"}:
        raise bad(f"{where}.outbound.worker must be an object naming the Outbound Worker's service")
    service = _checked(f"{where}.outbound.worker.service", check_name, worker["service"], "Outbound Worker name")
    params = outbound.get("params") or []
    if not isinstance(params, list) or not all(isinstance(p, dict) and set(p) == {"name"} and isinstance(p["name"], str) for p in params):
        raise bad(f"{where}.outbound.params must be a list of {{\"name\": ...}} objects")
    return DispatchBinding(name, namespace, service, tuple(p["name"] for p in params))


@dataclass(frozen=True)
class TailConsumerRef:
    service: str
    namespace: str | None = None  # the dispatch namespace it lives in, when given


def parse_tail_consumers(raw: Any, field: str) -> tuple[TailConsumerRef, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise bad(f"{field} must be a list of {{\"service\": ...}} objects")
    found: dict[str, TailConsumerRef] = {}
    for index, item in enumerate(raw):
        where = f"{field}[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("service"), str) or set(item) - {"service", "environment", "namespace"}:
            raise bad(f"{where} must be an object naming the Tail Worker's service")
        namespace = item.get("namespace")
        if namespace is not None and not isinstance(namespace, str):
            raise bad(f"{where}.namespace must be the name of a dispatch namespace")
        service = _checked(where, check_name, item["service"], "Tail Worker name")
        found.setdefault(service, TailConsumerRef(service, namespace))
    return tuple(found.values())


def parse_settings(metadata: Mapping[str, Any], field: str, *, allowed: Iterable[str]) -> Settings:
    """The settings in an upload's metadata or a settings PATCH; unknown or unsupported fields are refused."""
    allowed = tuple(allowed)
    for key in metadata:
        if key in REFUSED_FIELDS:
            if metadata[key] in (None, [], {}, False):
                continue
            raise bad(f"{field}.{key} is not supported: {REFUSED_FIELDS[key]}")
        if key not in allowed and key not in ACCEPTED_FIELDS:
            raise bad(f"unknown field {field}.{key}; wasmdeck reads {', '.join(allowed)}")
    tags = None
    if metadata.get("tags") is not None:
        tags = _checked(f"{field}.tags", check_tags, _string_list(metadata["tags"], f"{field}.tags"))
    tail = None
    if "tail_consumers" in metadata:
        tail = parse_tail_consumers(metadata["tail_consumers"], f"{field}.tail_consumers")
    flags = None
    if metadata.get("compatibility_flags") is not None:
        flags = tuple(_string_list(metadata["compatibility_flags"], f"{field}.compatibility_flags"))
    date = metadata.get("compatibility_date")
    if date is not None or flags is not None:
        date, checked_flags = _checked(f"{field}.compatibility_date", check_compatibility, date, flags or ())
        flags = checked_flags if flags is not None else None
    keep = frozenset(_string_list(metadata.get("keep_bindings") or [], f"{field}.keep_bindings"))
    bindings = parse_bindings(metadata["bindings"], f"{field}.bindings") if "bindings" in metadata else None
    return Settings(bindings, tags, tail, date, flags, keep)


def find_main_module(parts: list[Part], metadata: Mapping[str, Any], main_header: str | None = None) -> Module:
    """The Worker's main module among the parts, checked: its type, its text, and no module beside
    it that it could import (wasmdeck runs a Worker from one module; wrangler bundles into one)."""
    main_module, body_part = metadata.get("main_module"), metadata.get("body_part")
    if main_module is not None and body_part is not None:
        raise bad("metadata names both main_module and body_part; an ES module Worker gives main_module, "
                  "a service-worker script body_part")
    main_name = main_module if main_module is not None else body_part if body_part is not None else main_header
    field = "metadata.main_module" if main_module is not None else "metadata.body_part"
    if not isinstance(main_name, str) or not main_name:
        raise bad("metadata must name the Worker's main module in main_module (or its script in body_part)")
    modules: dict[str, Part] = {}
    for part in parts:
        if part.name == "metadata" and part.filename is None:
            continue
        kind = MODULE_TYPES.get(part.content_type or "")
        if kind is None:
            raise bad(
                f"part {part.module_name!r} has Content-Type {part.content_type or 'none'}; a module part is typed "
                "application/wasm, application/javascript+module or application/javascript"
            )
        if part.module_name in modules:
            raise bad(f"two parts of the upload are both module {part.module_name!r}")
        modules[part.module_name] = part
    main = modules.get(main_name)
    if main is None:
        raise bad(f"{field} names {main_name!r}, but no part of the upload is that module")
    kind = MODULE_TYPES[main.content_type or ""]
    if kind == SOURCE_MAP:
        raise bad(f"{field} names {main_name!r}, which is a source map, not a module")
    if kind == ES_MODULE and body_part is not None:
        raise bad(f"body_part names {main_name!r}, an ES module; name it in main_module instead")
    if kind == SERVICE_WORKER and main_module is not None:
        raise bad(f"main_module names {main_name!r}, typed application/javascript (a service-worker script); "
                  "type it application/javascript+module, or name it in body_part")
    others = [name for name, part in modules.items() if name != main_name and MODULE_TYPES[part.content_type or ""] != SOURCE_MAP]
    if others:
        raise bad(f"the upload has modules beside {main_name!r} ({', '.join(sorted(others))}); wasmdeck runs a Worker "
                  "from one module: bundle them into it (wrangler does by default)", CODE_VALIDATION)
    data = bytes(main.data)
    if not data:
        raise bad(f"module {main_name!r} is empty", CODE_VALIDATION)
    if kind != WASM:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise bad(f"module {main_name!r} is not UTF-8 text, as a JavaScript module must be", CODE_VALIDATION) from None
        if "\x00" in text:
            raise bad(f"module {main_name!r} contains a NUL character, which JavaScript source cannot hold", CODE_VALIDATION)
    elif not data.startswith(b"\x00asm"):
        raise bad(f"module {main_name!r} is typed application/wasm but is not a WebAssembly module", CODE_VALIDATION)
    return Module(main_name, kind, data)


def parse_upload(parts: list[Part], main_header: str | None = None) -> UploadPlan:
    metadata_part = next((p for p in parts if p.name == "metadata"), None)
    metadata = parse_json_part(metadata_part, "metadata")
    settings = parse_settings(metadata, "metadata", allowed=HONOURED_FIELDS)
    return UploadPlan(find_main_module([p for p in parts if p is not metadata_part], metadata, main_header), settings)

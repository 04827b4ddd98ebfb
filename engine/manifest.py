"""Platform manifests: a whole platform (namespaces, Workers, tag limits, dispatch Worker,
Outbound Worker, egress policy, tail consumers) declared in one TOML file.

- `load_manifest(path)` / `parse_manifest(text, base_dir=...)` read and check a manifest on
  its own: unknown keys, bad values, missing or invalid modules (or scripts) are refused with a
  `ManifestError` naming the file, the line (best effort) and the key path.
- `plan_manifest(engine, manifest)` checks it against the platform (every Worker it refers
  to must be declared or deployed) and lists the changes needed, writing nothing.
- `apply_manifest(engine, path_or_manifest)` does all of the above before its first write,
  then makes exactly those changes and returns one human-readable line per change; the
  same file applied twice changes nothing the second time.
- `manifest_text(engine)` is the current platform as a manifest and `export_manifest(engine,
  directory)` writes it as `directory/platform.toml` plus `directory/modules/<ns>/<worker>.wasm`
  (`.js` for a JavaScript Worker's script).

The format is documented in docs/manifest.md.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import tomli_w

from . import javascript, protocol, wcgi
from .egress import EgressPolicy, HostPattern
from .errors import InvalidInput, WasmdeckError
from .limits import CAMEL, FIELDS, Limits
from .metering import meter
from .outbound import OutboundSetting, check_template
from .store import DEFAULT_NAMESPACE, ROUTING_MODES, TailConsumer, Worker
from .validation import check_name, check_tag, check_tags, check_vars
from .wasm_module import DEFAULT_MAX_MODULE_BYTES, validate_worker_module

if TYPE_CHECKING:
    from .engine import Engine

MANIFEST_FILE = "platform.toml"
MODULES_DIR = "modules"
ABIS = (wcgi.ABI, protocol.ABI, javascript.ABI)

KeyPath = tuple[str | int, ...]

_TOP_KEYS = ("limits", "namespaces")
_NAMESPACE_KEYS = ("routing", "defaults", "dispatch_worker", "dispatch_binding", "egress", "outbound", "workers", "tail_consumers")
_WORKER_KEYS = ("module", "tags", "vars", "abi", "secrets")
_EGRESS_KEYS = ("allow", "block")
_OUTBOUND_KEYS = ("service", "parameters")
_PARAMETER_KEYS = ("name", "template")
_TAIL_KEYS = ("consumer", "worker", "dispatcher")
_LIMIT_KEYS = {**{camel: name for name, camel in CAMEL.items()}, **{name: name for name in FIELDS}}
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_END = re.compile(r"\s*\(at end of document\)\s*$")
_TOML_KEY_TUPLE = re.compile(r"\('(?:[^'\\]|\\.)*'(?:, '(?:[^'\\]|\\.)*')*,?\)")


class ManifestError(InvalidInput):
    """A manifest was refused; the message reads `FILE[:LINE[:COLUMN]]: [KEY: ]what is wrong`."""

    def __init__(self, source: str, message: str, *, key: str | None = None, line: int | None = None, column: int | None = None):
        self.source, self.key, self.line, self.column, self.reason = source, key, line, column, message
        where = source + (f":{line}" if line else "") + (f":{column}" if line and column else "")
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


def format_key_path(path: KeyPath) -> str:
    """("namespaces", "default", "tail_consumers", 1, "worker") -> namespaces.default.tail_consumers[1].worker"""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + (part if _BARE_KEY.match(part) else _toml_key(part))
    return text


# -- the model -------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSpec:
    namespace: str
    name: str
    module: str  # as written in the manifest
    path: Path  # where it was read from
    data: bytes = field(repr=False)
    sha256: str
    abi: str  # as given, else detected like a deploy does
    tags: tuple[str, ...]
    vars: dict[str, str]
    key: KeyPath


@dataclass(frozen=True)
class TailSpec:
    consumer: TailConsumer
    key: KeyPath


@dataclass(frozen=True)
class NamespaceSpec:
    """What the manifest says of one namespace; None everywhere means "not mentioned: left alone"."""

    name: str
    key: KeyPath
    routing: str | None = None
    defaults: Limits | None = None
    dispatch_worker: str | Literal[False] | None = None  # False: no dispatch Worker
    dispatch_binding: str | None = None  # the binding a JavaScript dispatch Worker finds in env
    outbound: OutboundSetting | Literal[False] | None = None  # False: no Outbound Worker
    egress: EgressPolicy | None = None
    workers: dict[str, WorkerSpec] = field(default_factory=dict)
    tail_consumers: tuple[TailSpec, ...] | None = None


@dataclass(frozen=True)
class Manifest:
    source: str  # the file name errors start with
    text: str = field(repr=False)
    limits: dict[str, Limits]
    namespaces: dict[str, NamespaceSpec]

    def error(self, path: KeyPath, message: str) -> ManifestError:
        return ManifestError(self.source, message, key=format_key_path(path), line=line_of(self.text, path))


@dataclass(frozen=True)
class Change:
    """One write `apply_manifest` makes, described for a person."""

    description: str
    apply: Callable[[], object] = field(repr=False, compare=False)


# -- reading -----------------------------------------------------------------------------


def load_manifest(
    path: str | os.PathLike[str], *, max_module_bytes: int = DEFAULT_MAX_MODULE_BYTES, source: str | None = None
) -> Manifest:
    """Read and check a manifest file (a directory means its platform.toml); modules are read relative to it."""
    file = Path(path)
    if file.is_dir():
        file = file / MANIFEST_FILE
    name = source or str(file)
    if not file.exists():
        raise ManifestError(name, "the manifest file does not exist")
    if not file.is_file():
        raise ManifestError(name, "the manifest path is not a file")
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ManifestError(name, f"the manifest is not UTF-8 text (byte {error.start} is not valid)") from None
    except OSError as error:
        raise ManifestError(name, f"the manifest cannot be read ({error.strerror})") from None
    return parse_manifest(text, base_dir=file.resolve().parent, source=name, max_module_bytes=max_module_bytes)


def parse_manifest(
    text: str,
    *,
    base_dir: str | os.PathLike[str],
    source: str = MANIFEST_FILE,
    max_module_bytes: int = DEFAULT_MAX_MODULE_BYTES,
) -> Manifest:
    """Check a manifest's text on its own (syntax, keys, values, every module); raises ManifestError."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        position = _TOML_POSITION.search(message)
        line = column = None
        if position:
            line, column = int(position.group(1)), int(position.group(2))
            message = message[: position.start()]
        elif _TOML_END.search(message):
            message = _TOML_END.sub("", message)
            line = max(1, len(text.splitlines()))
        message = _TOML_KEY_TUPLE.sub(lambda m: format_key_path(tuple(re.findall(r"'((?:[^'\\]|\\.)*)'", m.group(0)))), message)
        message = message[:1].lower() + message[1:]
        raise ManifestError(source, f"not valid TOML: {message}", line=line, column=column) from None
    return _Reader(text, Path(base_dir), source, max_module_bytes).read(document)


class _Reader:
    def __init__(self, text: str, base_dir: Path, source: str, max_module_bytes: int) -> None:
        self.text = text
        self.base_dir = base_dir
        self.source = source
        self.max_module_bytes = max_module_bytes
        self.modules: dict[Path, tuple[bytes, str, Any]] = {}

    def fail(self, path: KeyPath, message: str) -> NoReturn:
        raise ManifestError(self.source, message, key=format_key_path(path), line=line_of(self.text, path))

    @contextmanager
    def at(self, path: KeyPath) -> Iterator[None]:
        """Engine validation errors inside become errors at `path`."""
        try:
            yield
        except ManifestError:
            raise
        except WasmdeckError as error:
            self.fail(path, str(error))

    # generic shapes

    def table(self, value: Any, path: KeyPath, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(path, f"must be a table, not {_kind(value)}")
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    self.fail(path + (key,), f"unknown key {key!r}; the keys here are {', '.join(allowed)}")
        return value

    def string(self, value: Any, path: KeyPath) -> str:
        if not isinstance(value, str):
            self.fail(path, f"must be a string, not {_kind(value)}")
        return value

    def string_list(self, value: Any, path: KeyPath) -> list[str]:
        if not isinstance(value, list):
            self.fail(path, f"must be a list of strings, not {_kind(value)}")
        for index, item in enumerate(value):
            self.string(item, path + (index,))
        return value

    # sections

    def read(self, document: dict[str, Any]) -> Manifest:
        self.table(document, (), _TOP_KEYS)
        limits = {
            tag: self.limits(value, ("limits", tag), tag)
            for tag, value in self.table(document.get("limits", {}), ("limits",)).items()
        }
        namespaces = {
            name: self.namespace(name, value)
            for name, value in self.table(document.get("namespaces", {}), ("namespaces",)).items()
        }
        return Manifest(self.source, self.text, limits, namespaces)

    def limits(self, value: Any, path: KeyPath, tag: str | None = None) -> Limits:
        if tag is not None:
            with self.at(path):
                check_tag(tag)
        table = self.table(value, path)
        values: dict[str, Any] = {}
        for key, item in table.items():
            if key not in _LIMIT_KEYS:
                self.fail(path + (key,), f"unknown limit {key!r}; the limits are cpuMs, memoryMb, subRequests and wallMs")
            name = _LIMIT_KEYS[key]
            if name in values:
                self.fail(path + (key,), f"{CAMEL[name]} is given twice")
            with self.at(path + (key,)):
                Limits(**{name: item})
            values[name] = item
        return Limits(**values)

    def namespace(self, name: str, value: Any) -> NamespaceSpec:
        path: KeyPath = ("namespaces", name)
        with self.at(path):
            check_name(name, "namespace name")
        table = self.table(value, path, _NAMESPACE_KEYS)
        spec: dict[str, Any] = {"name": name, "key": path}
        if "routing" in table:
            routing = self.string(table["routing"], path + ("routing",))
            if routing not in ROUTING_MODES:
                self.fail(path + ("routing",), f"routing {routing!r} is not one of {', '.join(ROUTING_MODES)}")
            spec["routing"] = routing
        if "defaults" in table:
            spec["defaults"] = self.limits(table["defaults"], path + ("defaults",))
        if "dispatch_worker" in table:
            spec["dispatch_worker"] = self.worker_reference(table["dispatch_worker"], path + ("dispatch_worker",), "dispatch Worker")
        if "dispatch_binding" in table:
            binding = self.string(table["dispatch_binding"], path + ("dispatch_binding",))
            with self.at(path + ("dispatch_binding",)):
                javascript.check_binding_name(binding)
            spec["dispatch_binding"] = binding
        if "egress" in table:
            spec["egress"] = self.egress(table["egress"], path + ("egress",))
        if "outbound" in table:
            spec["outbound"] = self.outbound(table["outbound"], path + ("outbound",))
        workers = self.table(table.get("workers", {}), path + ("workers",))
        spec["workers"] = {worker: self.worker(name, worker, item) for worker, item in workers.items()}
        if "tail_consumers" in table:
            spec["tail_consumers"] = self.tail_consumers(name, table["tail_consumers"], path + ("tail_consumers",))
        return NamespaceSpec(**spec)

    def worker_reference(self, value: Any, path: KeyPath, role: str) -> str | Literal[False]:
        if value is False:
            return False
        if not isinstance(value, str):
            self.fail(path, f"must be a worker name, or false for none, not {_kind(value)}")
        with self.at(path):
            check_name(value, f"{role} name")
        return value

    def egress(self, value: Any, path: KeyPath) -> EgressPolicy:
        table = self.table(value, path, _EGRESS_KEYS)
        lists: dict[str, list[str]] = {}
        for which in _EGRESS_KEYS:
            entries = self.string_list(table.get(which, []), path + (which,))
            for index, entry in enumerate(entries):
                with self.at(path + (which, index)):
                    HostPattern.parse(entry)
            lists[which] = entries
        with self.at(path):
            return EgressPolicy.parse(lists["allow"], lists["block"])

    def outbound(self, value: Any, path: KeyPath) -> OutboundSetting | Literal[False]:
        if value is False:
            return False
        table = self.table(value, path, _OUTBOUND_KEYS)
        if "service" not in table:
            self.fail(path + ("service",), "is missing: name the Worker that receives the namespace's fetches")
        service = self.string(table["service"], path + ("service",))
        with self.at(path + ("service",)):
            check_name(service, "outbound service name")
        parameters = table.get("parameters", [])
        if not isinstance(parameters, list):
            self.fail(path + ("parameters",), f"must be a list of names or {{ name, template }} tables, not {_kind(parameters)}")
        pairs: list[tuple[str, str | None]] = []
        for index, item in enumerate(parameters):
            where = path + ("parameters", index)
            if isinstance(item, str):
                pair: tuple[str, str | None] = (item, None)
            elif isinstance(item, dict):
                self.table(item, where, _PARAMETER_KEYS)
                if "name" not in item:
                    self.fail(where + ("name",), "is missing: each parameter needs a name")
                template = item.get("template")
                pair = (self.string(item["name"], where + ("name",)), None if template is None else self.string(template, where + ("template",)))
            else:
                self.fail(where, f"must be a parameter name or a {{ name, template }} table, not {_kind(item)}")
            with self.at(where + ("name",) if isinstance(item, dict) else where):
                OutboundSetting.parse(service, [(pair[0], None)])
            if pair[1] is not None:
                with self.at(where + ("template",)):
                    check_template(pair[1], pair[0])
            pairs.append(pair)
        with self.at(path + ("parameters",)):
            return OutboundSetting.parse(service, pairs)

    def worker(self, namespace: str, name: str, value: Any) -> WorkerSpec:
        path: KeyPath = ("namespaces", namespace, "workers", name)
        with self.at(path):
            check_name(name)
        table = self.table(value, path, _WORKER_KEYS)
        if "module" not in table:
            self.fail(path + ("module",), "is missing: give the path of the worker's .wasm or .js file, relative to the manifest")
        module = self.string(table["module"], path + ("module",))
        tags = self.string_list(table.get("tags", []), path + ("tags",))
        with self.at(path + ("tags",)):
            checked_tags = check_tags(tags)
        variables = self.table(table.get("vars", {}), path + ("vars",))
        checked_vars: dict[str, str] = {}
        for key, item in variables.items():
            with self.at(path + ("vars", key)):
                checked_vars.update(check_vars({key: item}))
        for index, secret in enumerate(self.string_list(table.get("secrets", []), path + ("secrets",))):
            with self.at(path + ("secrets", index)):
                check_vars({secret: ""})  # names only: values are set with `wasmdeck secret put`, never in a manifest
        abi = None
        if "abi" in table:
            abi = self.string(table["abi"], path + ("abi",))
            if abi not in ABIS:
                self.fail(path + ("abi",), f"ABI {abi!r} is not one of {', '.join(ABIS)}")
        data, sha256, exports = self.module(module, path + ("module",), abi)
        if abi is None:
            if exports is None:
                abi = javascript.ABI
            else:
                abi = protocol.ABI if any(marker in exports for marker in protocol.MARKER_EXPORTS) else wcgi.ABI
        return WorkerSpec(namespace, name, module, self.base_dir / module, data, sha256, abi, checked_tags, checked_vars, path)

    def module(self, module: str, path: KeyPath, abi: str | None = None) -> tuple[bytes, str, Any]:
        """The module's bytes, sha256 and export names (None for a JavaScript Worker's script, which
        the deploy checks in the JavaScript runtime)."""
        if not module:
            self.fail(path, "the module path is empty")
        file = self.base_dir / module
        if file in self.modules:
            return self.modules[file]
        if not file.exists():
            self.fail(path, f"module file {module} does not exist (looked for {file})")
        if not file.is_file():
            self.fail(path, f"module path {module} is not a file")
        size = file.stat().st_size
        if size > self.max_module_bytes:
            self.fail(path, f"module {module} is {size / 2**20:.1f} MiB, over the {self.max_module_bytes / 2**20:.0f} MiB limit")
        data = file.read_bytes()
        if abi == javascript.ABI or (abi is None and javascript.looks_like_javascript(data)):
            try:
                javascript.check_source(data, min(self.max_module_bytes, javascript.MAX_SCRIPT_BYTES))
            except WasmdeckError as error:
                self.fail(path, f"script {module} is refused: {error}")
            script = (data, hashlib.sha256(data).hexdigest(), None)
            self.modules[file] = script
            return script
        try:
            info = validate_worker_module(data, max_bytes=self.max_module_bytes)
            meter(data)  # a module whose CPU limit could not hold is refused here, as a deploy would
        except WasmdeckError as error:
            self.fail(path, f"module {module} is refused: {error}")
        result = (data, hashlib.sha256(data).hexdigest(), {export.name for export in info.exports})
        self.modules[file] = result
        return result

    def tail_consumers(self, namespace: str, value: Any, path: KeyPath) -> tuple[TailSpec, ...]:
        if not isinstance(value, list):
            self.fail(path, f"must be a list of tables ([[{format_key_path(path)}]]), not {_kind(value)}")
        specs: list[TailSpec] = []
        for index, item in enumerate(value):
            where = path + (index,)
            table = self.table(item, where, _TAIL_KEYS)
            if "consumer" not in table:
                self.fail(where + ("consumer",), "is missing: name the Worker that receives the trace items")
            consumer = self.string(table["consumer"], where + ("consumer",))
            with self.at(where + ("consumer",)):
                check_name(consumer, "tail consumer name")
            worker = None
            if "worker" in table:
                worker = self.string(table["worker"], where + ("worker",))
                with self.at(where + ("worker",)):
                    check_name(worker)
                if worker == consumer:
                    self.fail(where + ("worker",), f"worker {consumer!r} cannot be its own tail consumer")
            dispatcher = table.get("dispatcher", False)
            if not isinstance(dispatcher, bool):
                self.fail(where + ("dispatcher",), f"must be true or false, not {_kind(dispatcher)}")
            if worker is not None and dispatcher:
                self.fail(where, "a tail consumer follows one worker, the dispatcher, or the whole namespace, not several")
            scope = "worker" if worker is not None else "dispatcher" if dispatcher else "namespace"
            entry = TailConsumer(namespace, consumer, scope, worker)
            if any(spec.consumer == entry for spec in specs):
                self.fail(where, f"tail consumer {consumer!r} of that {scope} is listed twice")
            specs.append(TailSpec(entry, where))
        return tuple(specs)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"  # dates and times


# -- line numbers (best effort) ------------------------------------------------------------

_HEADER_LINE = re.compile(r"^\s*(\[\[?)\s*([^\[\]]+?)\s*\]\]?\s*(#.*)?$")


def _split_key(text: str) -> tuple[str, ...]:
    """`a."b.c".d` -> ("a", "b.c", "d"); simple escapes only."""
    parts: list[str] = []
    current, quote, index = "", None, 0
    while index < len(text):
        char = text[index]
        if quote:
            if char == "\\" and quote == '"' and index + 1 < len(text):
                current += text[index + 1]
                index += 1
            elif char == quote:
                quote = None
            else:
                current += char
        elif char in "\"'":
            quote = char
        elif char == ".":
            parts.append(current)
            current = ""
        elif not char.isspace():
            current += char
        index += 1
    parts.append(current)
    return tuple(parts)


def line_of(text: str, path: KeyPath) -> int | None:
    """The line that defines `path` (its key, else the nearest table header above it), or None."""
    lines = text.splitlines()
    headers: list[tuple[int, KeyPath]] = []
    seen: dict[KeyPath, int] = {}
    for number, line in enumerate(lines, 1):
        match = _HEADER_LINE.match(line)
        if not match:
            continue
        parts: KeyPath = _split_key(match.group(2))
        if match.group(1) == "[[":
            index = seen.get(parts, 0)
            seen[parts] = index + 1
            parts = parts + (index,)
        headers.append((number, parts))
    best: tuple[int, KeyPath] | None = None
    for number, parts in headers:
        if path[: len(parts)] == parts and (best is None or len(parts) > len(best[1])):
            best = (number, parts)
    if best is None:
        start, rest = 0, path
    else:
        start, rest = best[0], path[len(best[1]) :]
    end = next((number - 1 for number, _ in headers if number > start), len(lines))
    if rest and isinstance(rest[0], str):
        key = re.escape(rest[0])
        pattern = re.compile(rf"^\s*(?:{key}|\"{key}\"|'{key}')\s*[=.]")
        for number in range(start + 1, end + 1):
            if pattern.match(lines[number - 1]):
                return number
    return best[0] if best else None


# -- planning and applying -----------------------------------------------------------------


def _limits_text(limits: Limits | None) -> str:
    if limits is None or limits.is_empty():
        return "none"
    return ", ".join(f"{key}={value}" for key, value in limits.as_dict().items() if value is not None)


def _egress_text(policy: EgressPolicy) -> str:
    data = policy.as_dict()
    return f"allow {', '.join(data['allow']) or 'nothing'}; block {', '.join(data['block']) or 'nothing'}"


def _outbound_text(setting: OutboundSetting | None) -> str:
    if setting is None:
        return "none"
    names = ", ".join(p.name if p.template is None else f"{p.name}={p.template}" for p in setting.parameters)
    return f"{setting.service} (parameters {names})" if names else f"{setting.service} (no parameters)"


def _tail_text(entry: TailConsumer) -> str:
    target = {"worker": f"worker {entry.worker}", "dispatcher": "the dispatcher", "namespace": "the whole namespace"}[entry.scope]
    return f"{entry.consumer} of {target}"


def plan_manifest(engine: Engine, manifest: Manifest) -> list[Change]:
    """The changes applying `manifest` would make, in order; raises ManifestError (and writes nothing)
    when it refers to a Worker that is neither declared nor deployed, or of the wrong ABI."""
    existing = {ns.name: ns for ns in engine.namespaces()}
    deployed = {name: {w.name: w for w in engine.workers(name)} for name in existing}
    source = manifest.source
    changes: list[Change] = []

    def abi_after(namespace: str, name: str) -> str | None:
        spec = manifest.namespaces[namespace].workers.get(name)
        if spec is not None:
            return spec.abi
        worker = deployed.get(namespace, {}).get(name)
        return worker.abi if worker else None

    def require(namespace: str, name: str, path: KeyPath, role: str, protocol_only: bool) -> None:
        abi = abi_after(namespace, name)
        if abi is None:
            raise manifest.error(
                path,
                f"{role} {name!r} is neither declared under namespaces.{namespace}.workers nor deployed in namespace {namespace!r}",
            )
        if protocol_only and not javascript.speaks_protocol(abi):
            raise manifest.error(
                path, f"{role} {name!r} is a {abi} Worker; a {role} must speak the Worker protocol (see docs/worker-protocol.md) "
                "or be a JavaScript Worker"
            )

    # every reference first, so a refused manifest changes nothing
    for ns in manifest.namespaces.values():
        if isinstance(ns.dispatch_worker, str):
            require(ns.name, ns.dispatch_worker, ns.key + ("dispatch_worker",), "dispatch Worker", True)
        if isinstance(ns.outbound, OutboundSetting):
            require(ns.name, ns.outbound.service, ns.key + ("outbound", "service"), "Outbound Worker", True)
        for tail in ns.tail_consumers or ():
            require(ns.name, tail.consumer.consumer, tail.key + ("consumer",), "tail consumer", True)
            if tail.consumer.worker is not None:
                require(ns.name, tail.consumer.worker, tail.key + ("worker",), "tailed worker", False)

    # 1. namespaces
    for ns in manifest.namespaces.values():
        current = existing.get(ns.name)
        if current is None:
            routing = ns.routing or "host"
            defaults = ns.defaults or Limits()
            detail = f"routing by {routing}" + (f", default limits {_limits_text(defaults)}" if not defaults.is_empty() else "")
            changes.append(Change(
                f"create namespace {ns.name} ({detail})",
                partial(engine.create_namespace, ns.name, routing=routing, defaults=defaults),
            ))
            continue
        if ns.routing is not None and ns.routing != current.routing:
            changes.append(Change(
                f"namespace {ns.name}: routing {current.routing} -> {ns.routing}",
                partial(engine.update_namespace, ns.name, routing=ns.routing),
            ))
        if ns.defaults is not None and ns.defaults != current.defaults:
            clear = [name for name in FIELDS if getattr(ns.defaults, name) is None]
            changes.append(Change(
                f"namespace {ns.name}: default limits {_limits_text(current.defaults)} -> {_limits_text(ns.defaults)}",
                partial(engine.update_namespace, ns.name, defaults=ns.defaults, clear=clear),
            ))

    # 2. workers: a new version only when the module, tags, vars or ABI differ from the serving one
    for ns in manifest.namespaces.values():
        for spec in ns.workers.values():
            worker = deployed.get(ns.name, {}).get(spec.name)
            if worker is None:
                tags = f", tags {','.join(spec.tags)}" if spec.tags else ""
                what = f"new worker ({spec.abi}{tags}, sha256 {spec.sha256[:12]})"
            else:
                differences = []
                if worker.sha256 != spec.sha256:
                    differences.append(f"module {worker.sha256[:12]} -> {spec.sha256[:12]}")
                if set(worker.tags) != set(spec.tags):
                    differences.append(f"tags {','.join(worker.tags) or 'none'} -> {','.join(spec.tags) or 'none'}")
                if worker.vars != spec.vars:
                    names = sorted(k for k in set(worker.vars) | set(spec.vars) if worker.vars.get(k) != spec.vars.get(k))
                    differences.append(f"vars changed ({', '.join(names)})")
                if worker.abi != spec.abi:
                    differences.append(f"ABI {worker.abi} -> {spec.abi}")
                if not differences:
                    continue
                what = "; ".join(differences)
            changes.append(Change(
                f"deploy {spec.name} in namespace {ns.name}: {what}",
                partial(
                    engine.deploy, spec.name, spec.data, namespace=spec.namespace, tags=spec.tags, vars=spec.vars,
                    abi=spec.abi, message=f"applied from {source}",
                    filename=spec.path.name if spec.abi == javascript.ABI else None,
                ),
            ))

    # 3. tag limits
    current_limits = engine.limits()
    for tag, limits in manifest.limits.items():
        current_tag = current_limits.get(tag)
        if limits.is_empty():
            if current_tag is not None:
                changes.append(Change(f"limits for tag {tag}: removed (were {_limits_text(current_tag)})",
                                      partial(engine.delete_limits, tag)))
            continue
        if current_tag != limits:
            clear = [name for name in FIELDS if getattr(limits, name) is None]
            was = "" if current_tag is None else f" (were {_limits_text(current_tag)})"
            changes.append(Change(
                f"limits for tag {tag}: {_limits_text(limits)}{was}",
                partial(engine.set_limits, tag, limits, clear=clear),
            ))

    # 4. dispatch Worker, Outbound Worker, egress, tail consumers
    for ns in manifest.namespaces.values():
        current_ns = existing.get(ns.name)
        if ns.dispatch_worker is not None:
            wanted = ns.dispatch_worker or None
            now = current_ns.dispatch_worker if current_ns else None
            if wanted != now:
                changes.append(Change(
                    f"namespace {ns.name}: dispatch Worker {now or 'none'} -> {wanted or 'none'}",
                    partial(engine.set_dispatch_worker, wanted, namespace=ns.name),
                ))
        if ns.dispatch_binding is not None:
            now_binding = current_ns.dispatch_binding if current_ns else javascript.DEFAULT_DISPATCH_BINDING
            if ns.dispatch_binding != now_binding:
                changes.append(Change(
                    f"namespace {ns.name}: dispatch binding env.{now_binding} -> env.{ns.dispatch_binding}",
                    partial(_set_dispatch_binding, engine, ns.name, ns.dispatch_binding),
                ))
        if ns.outbound is not None:
            setting = ns.outbound or None
            now_outbound = current_ns.outbound if current_ns else None
            if setting != now_outbound:
                changes.append(Change(
                    f"namespace {ns.name}: Outbound Worker {_outbound_text(now_outbound)} -> {_outbound_text(setting)}",
                    partial(
                        engine.set_outbound,
                        setting.service if setting else None,
                        [(p.name, p.template) for p in setting.parameters] if setting else (),
                        namespace=ns.name,
                    ),
                ))
        if ns.egress is not None:
            now_egress = current_ns.egress if current_ns else EgressPolicy()
            if ns.egress != now_egress:
                data = ns.egress.as_dict()
                changes.append(Change(
                    f"namespace {ns.name}: egress {_egress_text(ns.egress)} (was {_egress_text(now_egress)})",
                    partial(engine.set_egress, allow=data["allow"], block=data["block"], namespace=ns.name),
                ))
        if ns.tail_consumers is not None:
            wanted_tails = [tail.consumer for tail in ns.tail_consumers]
            now_tails = engine.tail_consumers(ns.name) if current_ns else []
            for entry in now_tails:
                if entry not in wanted_tails:
                    changes.append(Change(
                        f"namespace {ns.name}: tail consumer {_tail_text(entry)} removed",
                        partial(engine.remove_tail_consumer, entry.consumer, worker=entry.worker,
                                dispatcher=entry.scope == "dispatcher", namespace=entry.namespace),
                    ))
            for entry in wanted_tails:
                if entry not in now_tails:
                    changes.append(Change(
                        f"namespace {ns.name}: tail consumer {_tail_text(entry)} added",
                        partial(engine.add_tail_consumer, entry.consumer, worker=entry.worker,
                                dispatcher=entry.scope == "dispatcher", namespace=entry.namespace),
                    ))
    return changes


def apply_manifest(
    engine: Engine, manifest: Manifest | str | os.PathLike[str], *, dry_run: bool = False
) -> list[str]:
    """Check the whole manifest (modules included) against the platform, then make the changes it
    needs. Returns one line per change (empty: nothing to do). With `dry_run`, writes nothing."""
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest, max_module_bytes=engine.max_module_bytes)
    changes = plan_manifest(engine, manifest)
    if not dry_run:
        for done, change in enumerate(changes):
            try:
                change.apply()
            except WasmdeckError as error:
                raise ManifestError(
                    manifest.source,
                    f"stopped after {done} of {len(changes)} changes, at \"{change.description}\": {error}",
                ) from error
    return [change.description for change in changes]


# -- exporting ---------------------------------------------------------------------------------


def module_path(namespace: str, worker: str, language: str = "wasm") -> str:
    return f"{MODULES_DIR}/{namespace}/{worker}.{'js' if language == 'javascript' else 'wasm'}"


def _set_dispatch_binding(engine: Engine, namespace: str, binding: str) -> None:
    """The namespace's dispatch binding name, its dispatch Worker (if any) left as it is."""
    engine.set_dispatch_worker(engine.namespace(namespace).dispatch_worker, namespace=namespace, binding=binding)


def platform_document(engine: Engine) -> tuple[dict[str, Any], dict[str, Worker]]:
    """The current platform as manifest data, and {module path: worker} for the modules it names."""
    document: dict[str, Any] = {}
    modules: dict[str, Worker] = {}
    limits = {
        tag: {key: value for key, value in limits.as_dict().items() if value is not None}
        for tag, limits in sorted(engine.limits().items())
        if not limits.is_empty()
    }
    if limits:
        document["limits"] = limits
    namespaces: dict[str, Any] = {}
    for ns in sorted(engine.namespaces(), key=lambda n: (n.name != DEFAULT_NAMESPACE, n.name)):
        entry: dict[str, Any] = {"routing": ns.routing}
        if not ns.defaults.is_empty():
            entry["defaults"] = {key: value for key, value in ns.defaults.as_dict().items() if value is not None}
        if ns.dispatch_worker:
            entry["dispatch_worker"] = ns.dispatch_worker
        if ns.dispatch_binding != javascript.DEFAULT_DISPATCH_BINDING:
            entry["dispatch_binding"] = ns.dispatch_binding
        if ns.egress.allow or ns.egress.block:
            entry["egress"] = ns.egress.as_dict()
        if ns.outbound is not None:
            entry["outbound"] = {
                "service": ns.outbound.service,
                "parameters": [
                    p.name if p.template is None else {"name": p.name, "template": p.template} for p in ns.outbound.parameters
                ],
            }
        workers: dict[str, Any] = {}
        for worker in engine.workers(ns.name):
            path = module_path(ns.name, worker.name, worker.language)
            item: dict[str, Any] = {"module": path}
            if worker.tags:
                item["tags"] = list(worker.tags)
            if worker.vars:
                item["vars"] = dict(sorted(worker.vars.items()))
            item["abi"] = worker.abi
            secret_names = engine.secret_names(worker.name, namespace=ns.name)
            if secret_names:
                item["secrets"] = secret_names
            workers[worker.name] = item
            modules[path] = worker
        if workers:
            entry["workers"] = workers
        consumers = []
        for tail in engine.tail_consumers(ns.name):
            consumer: dict[str, Any] = {"consumer": tail.consumer}
            if tail.scope == "worker":
                consumer["worker"] = tail.worker
            elif tail.scope == "dispatcher":
                consumer["dispatcher"] = True
            consumers.append(consumer)
        if consumers:
            entry["tail_consumers"] = consumers
        namespaces[ns.name] = entry
    document["namespaces"] = namespaces
    return document, modules


_PREAMBLE = (
    "# A wasmdeck platform manifest, exported by `wasmdeck export` (format: docs/manifest.md).\n"
    "# Apply it with `wasmdeck apply platform.toml`; module paths are relative to this file.\n"
)
_MAX_LINE = 120


def _toml_key(key: str) -> str:
    return tomli_w.dumps({key: 0})[: -len(" = 0\n")]


def _inline(value: Any) -> str:
    """A value on one line: strings, numbers and booleans by tomli-w, lists and tables inline."""
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_toml_key(k)} = {_inline(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(item) for item in value) + "]"
    return tomli_w.dumps({"v": value})[len("v = ") : -1]


def _section(out: list[str], path: tuple[str, ...], table: Mapping[str, Any], *, array: bool = False) -> None:
    header = ".".join(_toml_key(part) for part in path)
    out.append("")
    out.append(f"[[{header}]]" if array else f"[{header}]")
    deferred: list[tuple[str, dict[str, Any]]] = []
    for key, value in table.items():
        line = f"{_toml_key(key)} = {_inline(value)}"
        if len(line) <= _MAX_LINE:
            out.append(line)
        elif isinstance(value, dict):
            deferred.append((key, value))  # an inline table must fit on one line: a sub-table instead
        elif isinstance(value, list):
            out.append(f"{_toml_key(key)} = [")
            out.extend(f"    {_inline(item)}," for item in value)
            out.append("]")
        else:
            out.append(line)
    for key, value in deferred:
        _section(out, path + (key,), value)


def render_manifest(document: Mapping[str, Any]) -> str:
    """Manifest data as TOML laid out like docs/manifest.md (inline tables where they fit)."""
    out = [_PREAMBLE.rstrip("\n")]
    for tag, limits in document.get("limits", {}).items():
        _section(out, ("limits", tag), limits)
    for name, entry in document.get("namespaces", {}).items():
        _section(out, ("namespaces", name), {k: v for k, v in entry.items() if k not in ("workers", "tail_consumers")})
        for worker, item in entry.get("workers", {}).items():
            _section(out, ("namespaces", name, "workers", worker), item)
            if item.get("secrets"):
                out.append(f"# secret values are never exported: set each with `wasmdeck secret put {worker} NAME "
                           f"--namespace {name}` (the value on stdin)")
        for consumer in entry.get("tail_consumers", []):
            _section(out, ("namespaces", name, "tail_consumers"), consumer, array=True)
    text = "\n".join(out) + "\n"
    if tomllib.loads(text) != document:  # the layout is ours; the meaning must be exactly the data's
        raise WasmdeckError("internal error: the exported manifest does not read back as the platform")
    return text


def manifest_text(engine: Engine) -> str:
    """The current platform as manifest TOML, naming modules as modules/<namespace>/<worker>.wasm (.js for scripts)."""
    return render_manifest(platform_document(engine)[0])


def export_manifest(engine: Engine, directory: str | os.PathLike[str]) -> Path:
    """Write `directory/platform.toml` and each serving module as `directory/modules/<ns>/<worker>.wasm`
    (a JavaScript Worker's script as `.js`)."""
    folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise InvalidInput(f"export directory {folder} is a file")
    document, modules = platform_document(engine)
    text = render_manifest(document)
    folder.mkdir(parents=True, exist_ok=True)
    for relative, worker in modules.items():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(engine.module_bytes(worker))
    manifest = folder / MANIFEST_FILE
    manifest.write_text(text, encoding="utf-8")
    return manifest

"""JavaScript Workers: scripts that run on wasmdeck's own JavaScript runtime module
(`engine/runtimes/javascript.wasm`, QuickJS-ng with the Workers API; sources in `jsruntime/`).

One runtime module serves every JavaScript Worker: it is metered and compiled once (the on-disk
cache keeps the compiled form), and loaded with one memory cap for all of them (the runtime caps
its own memory at the Worker's `memoryMb`, given in `init`). Each warm instance is loaded with
its Worker's script once, in the `init` frame (docs/worker-protocol.md, section 9.2).

This module knows the script side: recognising a script, checking it before anything runs,
the `init` frame's fields, and one sentence for each way a deploy-time check can fail.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import protocol
from .errors import InvalidInput, InvalidModule
from .limits import UPPER_BOUNDS
from .wasm_module import memory_limit_pages

ABI = "javascript"
LANGUAGES = ("wasm", "javascript")
WASM_MAGIC = b"\0asm"
RUNTIME_FILE = Path(__file__).resolve().parent / "runtimes" / "javascript.wasm"
MAX_SCRIPT_BYTES = 10 * 1024 * 1024  # Cloudflare's limit for a Worker's bundle on paid plans
# the runtime caps its own memory at init's memoryMb; the module itself allows the most any limit can
RUNTIME_PAGES = memory_limit_pages(UPPER_BOUNDS["memory_mb"])
DEFAULT_FILENAME = "worker.js"
FORMATS = ("module", "service-worker")
HANDLERS = ("fetch", "tail")
DEFAULT_DISPATCH_BINDING = "dispatcher"
# A script's top-level code at deploy: how long it may run, as the check sees it (Cloudflare gives
# a Worker's start-up about a second).
CHECK_TIMEOUT_S = 2.0

_FILENAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
_BINDING = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]{0,63}$")
_LOCATION_SUFFIX = re.compile(r"\s*\([^()]*:\d+:\d+\)$")
BUNDLE_HINT = "bundle it into one file first, for example: esbuild worker.js --bundle --format=esm --outfile=bundle.js"


@functools.cache
def runtime_module() -> bytes:
    """The runtime module's bytes (package data)."""
    return RUNTIME_FILE.read_bytes()


@functools.cache
def runtime_sha256() -> str:
    return hashlib.sha256(runtime_module()).hexdigest()


def language(abi: str) -> str:
    """The language a Worker is written in, as lists show it: `javascript` or `wasm`."""
    return "javascript" if abi == ABI else "wasm"


def speaks_protocol(abi: str) -> bool:
    """Whether a Worker of this ABI speaks the Worker protocol (and so can be a dispatch, Outbound
    or Tail Worker): protocol modules and JavaScript Workers, whose runtime speaks it."""
    return abi in (protocol.ABI, ABI)


def looks_like_javascript(data: bytes) -> bool:
    """A module that is not WebAssembly and is UTF-8 text is taken for a JavaScript Worker."""
    if data.startswith(WASM_MAGIC) or not data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclass(frozen=True)
class ScriptInfo:
    """What the runtime reported when it checked a script at deploy (its `ready` frame), stored
    beside the script so instances skip detecting its form."""

    filename: str
    format: str  # "module" or "service-worker"
    handlers: tuple[str, ...]  # "fetch", "tail"

    def as_dict(self) -> dict[str, Any]:
        return {"filename": self.filename, "format": self.format, "handlers": list(self.handlers)}


def check_source(data: bytes, max_bytes: int = MAX_SCRIPT_BYTES) -> None:
    """Refuse (InvalidModule, one sentence) what can never be a script: too big, WebAssembly,
    empty, not UTF-8."""
    if len(data) > max_bytes:
        raise InvalidModule(
            f"the script is {len(data) / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit for a JavaScript Worker"
        )
    if data.startswith(WASM_MAGIC):
        raise InvalidModule("the module is WebAssembly, not JavaScript; deploy it without --abi javascript")
    if not data.strip():
        raise InvalidModule("the script is empty")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidModule(
            f"the script is not valid UTF-8 (byte {error.start} is {data[error.start]:#04x}); save it as UTF-8"
        ) from None


def script_filename(path: str | None) -> str:
    """The name stack traces and syntax errors show: the deployed file's name when it is a plain
    one (letters, digits, `_`, `.`, `-`), else `worker.js`."""
    if not path:
        return DEFAULT_FILENAME
    name = Path(str(path)).name
    return name if _FILENAME.match(name) else DEFAULT_FILENAME


def check_binding_name(name: str) -> str:
    """A dispatch namespace binding's name: a JavaScript identifier (it is a property of `env`)."""
    if not isinstance(name, str) or not _BINDING.match(name):
        raise InvalidInput(
            f"binding name {name!r} is not a JavaScript identifier (letters, digits, _ and $, not starting with a "
            "digit, at most 64 characters)"
        )
    return name


def dispatch_bindings(binding: str | None) -> dict[str, dict[str, str]]:
    """The `bindings` init field for a dispatch Worker whose namespace binding is `binding`."""
    return {} if binding is None else {binding: {"type": "dispatch_namespace"}}


def init_meta(
    filename: str, format: str | None, memory_mb: int, bindings: dict[str, dict[str, str]], *, check: bool = False
) -> dict[str, Any]:
    """The fields of a JavaScript Worker's `init` frame beside the protocol's own (section 9.2)."""
    meta: dict[str, Any] = {"language": "javascript", "filename": filename, "memoryMb": memory_mb}
    if format is not None:
        meta["format"] = format
    if bindings:
        meta["bindings"] = bindings
    if check:
        meta["check"] = True
    return meta


def check_frame(name: str, namespace: str, source: bytes, filename: str, memory_mb: int,
                bindings: dict[str, dict[str, str]]) -> bytes:
    """The `init` frame that asks the runtime to check a script: compile, evaluate, report, exit."""
    meta = {"type": "init", "protocol": protocol.VERSION_2, "worker": name, "namespace": namespace, "version": 0,
            **init_meta(filename, None, memory_mb, bindings, check=True)}
    return protocol.encode(meta, source)


def script_info(filename: str, ready: dict[str, Any]) -> ScriptInfo:
    """The runtime's `ready` answer to a check."""
    form = ready.get("format")
    handlers = ready.get("handlers")
    if form not in FORMATS or not isinstance(handlers, list) or not handlers or any(h not in HANDLERS for h in handlers):
        raise InvalidModule(f"the JavaScript runtime answered the check with an unexpected ready frame ({ready!r})")
    return ScriptInfo(filename, form, tuple(handlers))


def refusal(exception: dict[str, Any], filename: str, memory_mb: int) -> str:
    """One sentence for the runtime's `exception` answer to a check."""
    name = str(exception.get("name") or "Error")
    message = str(exception.get("message") or "").strip()
    line, column = exception.get("line"), exception.get("column")
    if name == "SyntaxError" and isinstance(line, int) and isinstance(column, int):
        text = _LOCATION_SUFFIX.sub("", message)
        return f"the script has a syntax error at {filename}:{line}:{column}: {text}"
    if "import of '" in message and "is not supported" in message:
        module = message.split("'")[1]
        return f"the script imports {module!r}, and a Worker is one file with no imports: {BUNDLE_HINT}"
    if message.startswith("The Worker has no handler"):
        return f"the script has no handler: {message.removeprefix('The Worker has no handler: ')}"
    if name == "RangeError" and message.startswith("out of memory"):
        return f"the script ran out of memory under its {memory_mb} MiB limit while its top-level code ran"
    if message.startswith("The Worker's top-level code is waiting"):
        return "the script's top-level code awaits something that can never settle before a request (I/O is only possible inside a handler)"
    where = _first_frame(exception.get("stack"))
    return f"the script threw while its top-level code ran: {name}: {message}{where}"


def runtime_out_of_memory(exception: dict[str, Any]) -> bool:
    """Whether the runtime's `exception` frame says the instance ran out of memory (it then retires)."""
    return (exception.get("retire") is True and exception.get("name") == "RangeError"
            and str(exception.get("message") or "").startswith("out of memory"))


def _first_frame(stack: Any) -> str:
    if not isinstance(stack, str):
        return ""
    for line in stack.splitlines()[1:]:
        line = line.strip()
        if line.startswith("at "):
            return f" ({line})"
    return ""


__all__ = [
    "ABI", "BUNDLE_HINT", "CHECK_TIMEOUT_S", "DEFAULT_DISPATCH_BINDING", "MAX_SCRIPT_BYTES", "RUNTIME_PAGES",
    "ScriptInfo", "check_binding_name", "check_frame", "check_source", "dispatch_bindings", "init_meta", "language",
    "looks_like_javascript", "refusal", "runtime_module", "runtime_out_of_memory", "runtime_sha256", "script_filename", "script_info",
    "speaks_protocol",
]

"""wasmdeck engine: dispatch namespaces of WebAssembly Workers on Wasmer, backed by one SQLite file."""

from .engine import Engine, default_db_path
from .errors import InvalidInput, InvalidModule, NotFound, WasmdeckError
from .http import Request, Response
from .instances import InstanceSettings
from .limits import ENGINE_DEFAULTS, EffectiveLimits, Limits
from .router import DispatchTarget
from .store import DEFAULT_NAMESPACE, Namespace, Worker, WorkerVersion
from .trace_bus import Subscription
from .traces import TraceFilter, format_pretty

__all__ = [
    "DEFAULT_NAMESPACE",
    "DispatchTarget",
    "ENGINE_DEFAULTS",
    "EffectiveLimits",
    "Engine",
    "InstanceSettings",
    "InvalidInput",
    "InvalidModule",
    "Limits",
    "Namespace",
    "NotFound",
    "Request",
    "Response",
    "Subscription",
    "TraceFilter",
    "WasmdeckError",
    "Worker",
    "WorkerVersion",
    "default_db_path",
    "format_pretty",
]

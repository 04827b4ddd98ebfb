"""The engine client interface the console uses, and its two transports: `LocalClient` (an
`Engine` in this process) and `RemoteClient` (a served engine's admin API over HTTP)."""

from .interface import EngineClient, TraceStream, WorkerRow
from .local import LocalClient

__all__ = ["EngineClient", "LocalClient", "TraceStream", "WorkerRow"]

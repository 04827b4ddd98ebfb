"""Which worker a request is for: host label, path segment, or the embedder's dispatch function."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union
from urllib.parse import urlsplit

from .errors import InvalidInput
from .http import Request, Response
from .limits import Limits
from .store import Namespace


@dataclass(frozen=True)
class DispatchTarget:
    """A dispatch function's answer: run `worker`, optionally under tighter `limits`, with values
    for the Outbound Worker's parameters.

    The analog of `env.dispatcher.get(name, {}, {limits: {cpuMs, subRequests}, outbound: {...}})`:
    limits here can only tighten what the worker's tags allow, never loosen it.
    """

    worker: str
    limits: Limits | None = None
    outbound: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.limits, dict):
            object.__setattr__(self, "limits", Limits.from_dict(self.limits))


DispatchResult = Union[str, DispatchTarget, Response, None]
DispatchFunction = Callable[[Request, Namespace], Union[DispatchResult, Awaitable[DispatchResult]]]


@dataclass(frozen=True)
class Route:
    """Where a request goes: the worker's name (None when nothing matched), and the CGI path split."""

    worker: str | None
    limits: Limits | None = None
    script_name: str = ""
    path_info: str | None = None
    response: Response | None = None
    outbound: Mapping[str, str] | None = None


def route_by_namespace(request: Request, namespace: Namespace) -> Route:
    if namespace.routing == "path":
        path = urlsplit(request.url).path or "/"
        segment, _, rest = path.lstrip("/").partition("/")
        if not segment:
            return Route(worker=None)
        return Route(worker=segment.lower(), script_name=f"/{segment}", path_info="/" + rest)
    label = request.host.split(".")[0]
    return Route(worker=label or None)


async def route(request: Request, namespace: Namespace, dispatch_function: DispatchFunction | None) -> Route:
    if dispatch_function is None:
        return route_by_namespace(request, namespace)
    result: Any = dispatch_function(request, namespace)
    if inspect.isawaitable(result):
        result = await result
    if result is None:
        return Route(worker=None)
    if isinstance(result, Response):
        return Route(worker=None, response=result)
    if isinstance(result, str):
        return Route(worker=result)
    if isinstance(result, DispatchTarget):
        return Route(worker=result.worker, limits=result.limits, outbound=result.outbound)
    raise InvalidInput(f"the dispatch function returned {type(result).__name__}; expected a worker name, DispatchTarget, Response or None")

"""wasmdeck's HTTP server: real traffic through `Engine.dispatch` on an ASGI server (uvicorn).

`dispatch_app` holds the ASGI callable (no uvicorn import); `runner` wires it to uvicorn and
is what `wasmdeck serve` calls. Importing this package stays cheap: uvicorn loads only when
the server starts.
"""

from .dispatch_app import DEFAULT_MAX_BODY_BYTES, HEALTH_PATH, RESERVED_PREFIX, DispatchApp

__all__ = ["DEFAULT_MAX_BODY_BYTES", "HEALTH_PATH", "RESERVED_PREFIX", "DispatchApp"]

"""`wasmdeck serve`: the dispatch listener on uvicorn, with graceful shutdown.

`add_serve_arguments` and `cmd_serve` are what `cli/main.py` plugs in; `serve()` is the same
for embedding. uvicorn is imported only when the server starts, so the CLI stays quick.

SIGTERM or SIGINT: stop accepting connections, let in-flight requests finish (up to
`GRACEFUL_SHUTDOWN_S`), then return 0; the caller then closes the engine (`cli.main.run`
does), which stores the pending trace items. A second SIGINT forces the exit.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

from engine import DEFAULT_NAMESPACE, Engine, InvalidInput

from .dispatch_app import DEFAULT_MAX_BODY_BYTES, HEALTH_PATH, DispatchApp

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
GRACEFUL_SHUTDOWN_S = 30.0  # the engine's default wallMs: a request still running after that is cut off

log = logging.getLogger("wasmdeck.server")


def _byte_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of bytes") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"{text} is not a port number (1-65535)")
    return value


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="dispatch namespace to serve (default: default)")
    parser.add_argument(
        "--max-body-bytes", type=_byte_count, default=DEFAULT_MAX_BODY_BYTES,
        help=f"largest request body accepted; larger ones get 413 (default {DEFAULT_MAX_BODY_BYTES})",
    )
    parser.add_argument("--no-access-log", action="store_true", help="do not log one line per request to stderr")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time: the engine swaps it when it moves fd 2
    onto a pipe (see engine.stderr_capture), and a handler bound to the old object would be lost."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


_handler: _StderrHandler | None = None


def configure_logging() -> None:
    """`wasmdeck.*` at INFO and uvicorn's own messages at WARNING, one line each on stderr."""
    global _handler
    if _handler is not None:
        return
    _handler = _StderrHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    for name, level in (("wasmdeck", logging.INFO), ("uvicorn", logging.WARNING)):
        logger = logging.getLogger(name)
        logger.addHandler(_handler)
        logger.setLevel(level)
        logger.propagate = False


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            """uvicorn's own version re-raises the signal after shutdown, which would kill the
            process before the engine is closed; this one only starts the graceful shutdown."""
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            signals = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


async def serve(
    engine: Engine,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    namespace: str = DEFAULT_NAMESPACE,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    access_log: bool = True,
) -> int:
    """Serve until SIGTERM/SIGINT, then return 0 once in-flight requests are done; `InvalidInput`
    when the address cannot be bound. The engine stays open: the caller closes it."""
    import uvicorn

    engine.namespace(namespace)  # NotFound (one sentence) before listening, not on every request
    configure_logging()
    engine.capture_runtime_output()  # now, so guest trap backtraces never land in the log stream
    app = DispatchApp(engine, namespace=namespace, max_body_bytes=max_body_bytes, access_log=access_log)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http="h11",
        lifespan="on",
        access_log=False,  # ours has the outcome and the wall time
        log_config=None,  # logging is configured above
        server_header=False,
        proxy_headers=False,  # X-Forwarded-* from any client would otherwise rewrite REMOTE_ADDR and the scheme
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    server = _server_class()(config)
    shown = f"[{host}]" if ":" in host else host
    listener = _listen(host, port, shown)
    log.info("wasmdeck: serving namespace %s on http://%s:%d (health: %s)", namespace, shown, port, HEALTH_PATH)
    try:
        await server.serve(sockets=[listener])
    finally:
        listener.close()
    log.info("wasmdeck: stopped after %d requests", app.served)
    return 0


def _listen(host: str, port: int, shown: str) -> socket.socket:
    """Bind here rather than in uvicorn, so a busy port is one sentence rather than a sys.exit()."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as error:
        raise InvalidInput(f"cannot listen on {shown}: {error.strerror}") from None
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(2048)
    except OSError as error:
        listener.close()
        raise InvalidInput(f"cannot listen on {shown}:{port}: {error.strerror or error}") from None
    listener.setblocking(False)
    return listener


async def cmd_serve(engine: Engine, args: argparse.Namespace) -> int:
    return await serve(
        engine,
        host=args.host,
        port=args.port,
        namespace=args.namespace,
        max_body_bytes=args.max_body_bytes,
        access_log=not args.no_access_log,
    )

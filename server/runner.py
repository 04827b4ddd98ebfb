"""`wasmdeck serve`: the dispatch listener on uvicorn, with graceful shutdown.

`add_serve_arguments` and `cmd_serve` are what `cli/main.py` plugs in; `serve()` is the same
for embedding. uvicorn is imported only when the server starts, so the CLI stays quick.

SIGTERM or SIGINT: stop accepting connections, let in-flight requests finish (up to
`GRACEFUL_SHUTDOWN_S`), then return 0; the caller then closes the engine (`cli.main.run`
does), which stores the pending trace items. A second SIGINT forces the exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wasmdeck.engine import DEFAULT_NAMESPACE, Engine, InvalidInput
from wasmdeck.engine.instances import (
    DEFAULT_IDLE_TIMEOUT_S, DEFAULT_MAX_INSTANCES, DEFAULT_MAX_INVOCATIONS, DEFAULT_MAX_PER_WORKER, InstanceSettings,
)

from .dispatch_app import DEFAULT_MAX_BODY_BYTES, HEALTH_PATH, MAX_BODY_BYTES_LIMIT, DispatchApp
from .http_limits import (
    DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADERS, MAX_HEADER_BYTES_RANGE, MAX_HEADERS_RANGE, bounded_protocol,
)

if TYPE_CHECKING:
    from .admin_app import DispatchListener

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
DEFAULT_ADMIN_PORT = 8788
MAX_TAIL_CLIENTS = 100_000
ADMIN_WS_MAX_MESSAGE_BYTES = 64 * 1024  # /tail clients send nothing that matters; uvicorn would take 16 MiB
GRACEFUL_SHUTDOWN_S = 30  # the engine's default wallMs: a request still running after that is cut off

log = logging.getLogger("wasmdeck.server")


def whole_number(minimum: int = 0, maximum: int | None = None, noun: str = "whole number") -> Callable[[str], int]:
    """An argparse type: a whole number from `minimum` (to `maximum`), else one sentence saying why not."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {noun}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is negative" if value < 0 else f"{text} is less than {minimum}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{text} is more than {maximum}, the largest {noun} accepted")
        return value

    return parse


_body_bytes = whole_number(0, MAX_BODY_BYTES_LIMIT, noun="whole number of bytes")
_header_bytes = whole_number(*MAX_HEADER_BYTES_RANGE, noun="whole number of bytes")
_header_count = whole_number(*MAX_HEADERS_RANGE, noun="header count")
_tail_clients = whole_number(1, MAX_TAIL_CLIENTS)
_port = whole_number(1, 65535, noun="port number")
# each idle warm instance holds one of wasmer-sdk's guest threads (README, "Warm instances"): past
# about 200 no other guest can run, so the command line allows at most this many
MAX_INSTANCES_LIMIT = 160
_instances = whole_number(1, MAX_INSTANCES_LIMIT, noun="number of instances")
_invocations = whole_number(1, 10_000_000, noun="number of invocations")
_idle_seconds = whole_number(1, 86_400, noun="number of seconds")


def instance_settings(args: argparse.Namespace) -> InstanceSettings:
    """The warm-instance bounds the serve options ask for (the engine's defaults for the rest)."""
    chosen = {
        "max_instances": getattr(args, "max_instances", None),
        "max_per_worker": getattr(args, "max_instances_per_worker", None),
        "idle_timeout_s": getattr(args, "instance_idle_timeout", None),
        "max_invocations": getattr(args, "instance_max_invocations", None),
    }
    settings = InstanceSettings(**{name: value for name, value in chosen.items() if value is not None})
    if settings.max_per_worker > settings.max_instances:
        raise InvalidInput(f"--max-instances-per-worker ({settings.max_per_worker}) is more than --max-instances "
                           f"({settings.max_instances})")
    return settings


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="dispatch namespace to serve (default: default)")
    parser.add_argument(
        "--max-body-bytes", type=_body_bytes, default=DEFAULT_MAX_BODY_BYTES,
        help=f"largest request body accepted; larger ones get 413 (default {DEFAULT_MAX_BODY_BYTES}, at most {MAX_BODY_BYTES_LIMIT})",
    )
    parser.add_argument(
        "--max-header-bytes", type=_header_bytes, default=DEFAULT_MAX_HEADER_BYTES,
        help=f"largest request line and headers together; larger ones get 431 (default {DEFAULT_MAX_HEADER_BYTES})",
    )
    parser.add_argument(
        "--max-headers", type=_header_count, default=DEFAULT_MAX_HEADERS,
        help=f"most header fields in a request; more get 431 (default {DEFAULT_MAX_HEADERS})",
    )
    parser.add_argument("--no-access-log", action="store_true", help="do not log one line per request to stderr")
    parser.add_argument("--admin-host", default=DEFAULT_HOST, help=f"address of the admin API (default {DEFAULT_HOST})")
    parser.add_argument(
        "--admin-port", type=_port, default=None,
        help=f"also serve the admin API (JSON, bearer token) on this port, e.g. {DEFAULT_ADMIN_PORT} (default: no admin API)",
    )
    parser.add_argument(
        "--admin-token-file", type=Path, default=None,
        help="the admin API's bearer token file, created (mode 0600) on first start (default: <db>.admin-token)",
    )
    parser.add_argument(
        "--max-instances", type=_instances, default=None, metavar="N",
        help=f"warm instances at most across all workers (default {DEFAULT_MAX_INSTANCES}, at most {MAX_INSTANCES_LIMIT})",
    )
    parser.add_argument(
        "--max-instances-per-worker", type=_instances, default=None, metavar="N",
        help=f"warm instances at most per worker version (default {DEFAULT_MAX_PER_WORKER})",
    )
    parser.add_argument(
        "--instance-idle-timeout", type=_idle_seconds, default=None, metavar="SECONDS",
        help=f"a warm instance idle this long stops (default {DEFAULT_IDLE_TIMEOUT_S:.0f})",
    )
    parser.add_argument(
        "--instance-max-invocations", type=_invocations, default=None, metavar="N",
        help=f"a warm instance retires after N invocations (default {DEFAULT_MAX_INVOCATIONS})",
    )
    # the defaults live in server.tail_stream, which is not imported before the server starts (it loads Starlette)
    parser.add_argument(
        "--tail-max-per-worker", type=_tail_clients, default=None, metavar="N",
        help="live tail on the admin API: at most N clients at once per worker filter (default 8)",
    )
    parser.add_argument(
        "--tail-max-clients", type=_tail_clients, default=None, metavar="N",
        help="live tail on the admin API: at most N clients at once in all (default 64)",
    )


class _StderrHandler(logging.StreamHandler[Any]):
    """Writes to whatever `sys.stderr` is at the time: the engine swaps it when it moves fd 2
    onto a pipe (see engine.stderr_capture), and a handler bound to the old object would be lost."""

    @property
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


def _server_class(capture: bool = True) -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            """uvicorn's own version re-raises the signal after shutdown, which would kill the
            process before the engine is closed; this one only starts the graceful shutdown.
            A second listener (the admin API) takes no signals: it stops when the first does."""
            if not capture or threading.current_thread() is not threading.main_thread():
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
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    max_headers: int = DEFAULT_MAX_HEADERS,
    access_log: bool = True,
    admin_host: str = DEFAULT_HOST,
    admin_port: int | None = None,
    admin_token_file: str | Path | None = None,
    tail_max_per_worker: int | None = None,
    tail_max_clients: int | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT, then return 0 once in-flight requests are done; `InvalidInput`
    when the address cannot be bound. The engine stays open: the caller closes it.

    With `admin_port` (None: no admin API) the admin API listens too, on `admin_host`; its
    token is read from `admin_token_file` (default `<db>.admin-token`), or created there and
    printed once on stdout. Its live tail takes at most `tail_max_per_worker` clients per
    worker filter and `tail_max_clients` in all (None: `server.tail_stream`'s defaults)."""
    import uvicorn

    from .admin_app import DispatchListener

    engine.namespace(namespace)  # NotFound (one sentence) before listening, not on every request
    configure_logging()
    engine.capture_runtime_output()  # now, so guest trap backtraces never land in the log stream
    await engine.preload()  # the JavaScript runtime, when JavaScript Workers are deployed: loaded before the first request
    app = DispatchApp(
        engine, namespace=namespace, max_body_bytes=max_body_bytes, max_header_bytes=max_header_bytes,
        max_headers=max_headers, access_log=access_log,
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=bounded_protocol(max_header_bytes, max_headers),
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
    admin = None
    if admin_port is not None:
        dispatch = DispatchListener(
            f"http://{shown}:{listener.getsockname()[1]}", namespace, max_body_bytes, max_header_bytes, max_headers
        )
        caps = {"per_worker": tail_max_per_worker, "total": tail_max_clients}
        tail_options = {name: value for name, value in caps.items() if value is not None}
        try:
            admin = _admin_server(engine, admin_host, admin_port, admin_token_file, dispatch, tail_options)
        except BaseException:
            listener.close()
            raise
    log.info("wasmdeck: serving namespace %s on http://%s:%d (health: %s)", namespace, shown, port, HEALTH_PATH)
    try:
        if admin is None:
            await server.serve(sockets=[listener])
        else:
            admin_server, admin_listener = admin
            admin_task = asyncio.create_task(admin_server.serve(sockets=[admin_listener]))
            try:
                await server.serve(sockets=[listener])
            finally:
                admin_server.should_exit = True
                await admin_task
    finally:
        listener.close()
        if admin is not None:
            admin[1].close()
    log.info("wasmdeck: stopped after %d requests", app.served)
    return 0


def _admin_server(
    engine: Engine, host: str, port: int, token_file: str | Path | None, dispatch: DispatchListener, tail_options: dict[str, int]
) -> tuple[Any, socket.socket]:
    """The admin API's uvicorn server and bound socket; creates (and prints once) the token if need be."""
    import uvicorn

    from .admin_app import create_admin_app
    from .auth import default_token_path, load_or_create_token

    path = Path(token_file) if token_file is not None else default_token_path(engine.db_path)
    token, created = load_or_create_token(path)
    shown = f"[{host}]" if ":" in host else host
    listener = _listen(host, port, shown)
    if created:
        print(f"wasmdeck: admin API token (saved to {path} with mode 0600; shown only now): {token}", flush=True)
    app = create_admin_app(engine, token, dispatch=dispatch, tail_options=tail_options)
    config = uvicorn.Config(
        app, host=host, port=port, http="h11", lifespan="off", access_log=False, log_config=None, server_header=False,
        proxy_headers=False, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, ws_max_size=ADMIN_WS_MAX_MESSAGE_BYTES,
    )
    log.info("wasmdeck: admin API on http://%s:%d (bearer token in %s)", shown, port, path)
    return _server_class(capture=False)(config), listener


def _listen(host: str, port: int, shown: str) -> socket.socket:
    """Bind here rather than in uvicorn, so a busy port is one sentence rather than a sys.exit()."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as error:
        raise InvalidInput(f"cannot listen on {shown}: {error.strerror}") from None
    # proto IPPROTO_TCP, not 0: accepted sockets inherit it, and asyncio sets TCP_NODELAY only on sockets
    # that say they are TCP; without it a response's second write waits for the client's delayed ACK (~40 ms)
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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
        max_header_bytes=args.max_header_bytes,
        max_headers=args.max_headers,
        access_log=not args.no_access_log,
        admin_host=args.admin_host,
        admin_port=args.admin_port,
        admin_token_file=args.admin_token_file,
        tail_max_per_worker=args.tail_max_per_worker,
        tail_max_clients=args.tail_max_clients,
    )

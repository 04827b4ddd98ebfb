"""`wasmdeck`: deploy, inspect and exercise Workers from the command line.

Every error is one line on stderr and a non-zero exit: 1 for a refused operation, 2 for
a malformed command line, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sqlite3
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from http import HTTPStatus
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from wasmdeck.engine import Engine, Limits, Request, TraceFilter, WasmdeckError, format_pretty
from wasmdeck.engine.engine import default_db_path
from wasmdeck.engine.errors import InvalidInput
from wasmdeck.engine.http import parse_header_line
from wasmdeck.engine.limits import CAMEL, FIELDS
from wasmdeck.engine.store import MAX_VERSION, TRACE_RETENTION_BYTES_RANGE, TRACE_RETENTION_RANGE
from wasmdeck.engine.validation import parse_var_assignment
from wasmdeck.server.runner import add_serve_arguments, instance_settings, whole_number

from .platform_commands import COMMANDS as PLATFORM_COMMANDS, register as register_platform_commands
from .secret_commands import COMMANDS as SECRET_COMMANDS, register as register_secret_commands


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, no usage dump
        subcommands = next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
        if subcommands is not None and message.endswith(f"required: {subcommands.metavar}"):
            noun = "an action" if subcommands.metavar == "ACTION" else "a command"
            message = f"give {noun}: {', '.join(subcommands.choices)} (`{self.prog} --help` describes each)"
        raise UsageError(f"{self.prog}: {message}")


_positive = whole_number(0)
NO_FOLLOW_HISTORY = 20  # what `tail --no-follow` prints without --history
_version = whole_number(1, MAX_VERSION, noun="version number")
_retention_items = whole_number(*TRACE_RETENTION_RANGE, noun="number of trace items")
_history = whole_number(0, TRACE_RETENTION_RANGE[1], noun="number of trace items")
_SIZE = re.compile(r"^\s*(\d+)\s*(?:([kmg])(?:i?b)?)?\s*$", re.IGNORECASE)


def byte_size(text: str) -> int:
    """An argparse type for trace retention bytes: `1048576`, `64MiB`, `512M`, `2GiB` (K, M and G
    are powers of 1024), within the store's range."""
    match = _SIZE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 1048576, 64MiB or 2GiB")
    value = int(match.group(1)) * 1024 ** (" kmg".index((match.group(2) or " ").lower()))
    low, high = TRACE_RETENTION_BYTES_RANGE
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{text} is not a size from {_size(low)} to {_size(high)}")
    return value


def build_parser() -> Parser:
    parser = Parser(prog="wasmdeck", description="Run other people's Workers (JavaScript or WebAssembly) safely, locally.",
                    epilog="`wasmdeck COMMAND --help` describes a command.")
    parser.add_argument("--db", help=f"database file (default: $WASMDECK_DB, else {default_db_path()})")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True

    deploy = commands.add_parser("deploy", help="deploy a new version of a worker")
    deploy.add_argument("name", help="the worker's name, a DNS label (lowercase letters, digits, hyphens)")
    deploy.add_argument("module", help="a WASI command module (.wasm) or a JavaScript Worker (.js: an ES module or a service-worker script, one file)")
    deploy.add_argument("--namespace", default="default", help="default: default")
    deploy.add_argument("--tag", action="append", default=[], dest="tags", metavar="TAG",
                        help="a tag (repeat for more, at most 8); per-tag limits apply to the worker")
    deploy.add_argument("--var", action="append", default=[], dest="vars", metavar="KEY=VALUE",
                        help="a variable in the worker's environment (repeat for more)")
    deploy.add_argument("--message", default="", help="a note stored with the version")
    deploy.add_argument("--abi", choices=["wcgi", "protocol", "javascript"], default=None,
                        help="the Worker ABI (default: detected: JavaScript for UTF-8 text, else from the module's exports)")

    listing = commands.add_parser("list", help="list workers")
    listing.add_argument("--namespace", default="default")
    listing.add_argument("--tag", action="append", default=[], dest="tags")
    listing.add_argument("--json", action="store_true")

    delete = commands.add_parser("delete", help="delete a worker and all its versions")
    delete.add_argument("name")
    delete.add_argument("--namespace", default="default")

    versions = commands.add_parser("versions", help="list a worker's versions")
    versions.add_argument("name")
    versions.add_argument("--namespace", default="default")
    versions.add_argument("--json", action="store_true")

    rollback = commands.add_parser("rollback", help="serve an earlier version again")
    rollback.add_argument("name")
    rollback.add_argument("version", type=_version)
    rollback.add_argument("--namespace", default="default")

    limits = commands.add_parser("limits", help="per-tag limits")
    limit_commands = limits.add_subparsers(dest="limits_command", metavar="ACTION", parser_class=Parser)
    limit_commands.required = True
    limit_set = limit_commands.add_parser("set", help="set limits for a tag (merged with those already set)")
    limit_set.add_argument("tag")
    _limit_options(limit_set)
    limit_set.add_argument("--clear", action="append", default=[], choices=[CAMEL[f] for f in FIELDS], help="unset a field")
    limit_list = limit_commands.add_parser("list", help="list tag limits")
    limit_list.add_argument("--json", action="store_true")
    limit_delete = limit_commands.add_parser("delete", help="remove a tag's limits")
    limit_delete.add_argument("tag")
    limit_show = limit_commands.add_parser("show", help="a worker's effective limits and where each comes from")
    limit_show.add_argument("name")
    limit_show.add_argument("--namespace", default="default")
    limit_show.add_argument("--json", action="store_true")

    namespace = commands.add_parser("namespace", help="dispatch namespaces")
    ns_commands = namespace.add_subparsers(dest="namespace_command", metavar="ACTION", parser_class=Parser)
    ns_commands.required = True
    ns_create = ns_commands.add_parser("create", help="create a namespace")
    ns_create.add_argument("name")
    ns_create.add_argument("--routing", choices=["host", "path"], default="host")
    _limit_options(ns_create)
    ns_set = ns_commands.add_parser("set", help="change a namespace's routing or default limits")
    ns_set.add_argument("name")
    ns_set.add_argument("--routing", choices=["host", "path"])
    _limit_options(ns_set)
    ns_set.add_argument("--clear", action="append", default=[], choices=[CAMEL[f] for f in FIELDS])
    ns_list = ns_commands.add_parser("list", help="list namespaces")
    ns_list.add_argument("--json", action="store_true")
    ns_delete = ns_commands.add_parser("delete", help="delete an empty namespace")
    ns_delete.add_argument("name")

    request = commands.add_parser("request", help="send a request through dispatch, in-process")
    request.add_argument("url")
    request.add_argument("-X", "--method", default=None)
    request.add_argument("-H", "--header", action="append", default=[], dest="headers", metavar="'Name: value'")
    request.add_argument("-d", "--data", default=None, help="request body; @FILE reads a file, @- stdin")
    request.add_argument("--namespace", default="default")
    request.add_argument("--json", action="store_true", help="print {status, headers, body, trace}")
    request.add_argument("-i", "--include", action="store_true", help="print the status line and headers too")
    request.add_argument("--fail", action="store_true", help="exit 1 (with one line on stderr) when the status is 400 or more")

    tail = commands.add_parser("tail", help="print trace items as they happen")
    tail.add_argument("--namespace", default=None)
    tail.add_argument("--worker", default=None)
    tail.add_argument("--status", choices=["ok", "error", "canceled"])
    tail.add_argument("--method", action="append", default=[])
    tail.add_argument("--search", default=None)
    tail.add_argument("--header", default=None, help="only items with this request header (NAME or NAME:VALUE)")
    tail.add_argument("--sampling-rate", type=float, default=None)
    tail.add_argument("--format", choices=["json", "pretty"], default="pretty")
    tail.add_argument("--history", type=_history, default=None, metavar="N",
                      help=f"first print the N newest stored items that match (default: {NO_FOLLOW_HISTORY} with --no-follow, else none)")
    tail.add_argument("--no-follow", action="store_true",
                      help=f"print the stored history (the {NO_FOLLOW_HISTORY} newest matching items unless --history says) and exit")
    tail.add_argument("--remote", metavar="URL", default=None,
                      help="tail a server's admin listener (e.g. http://127.0.0.1:8788) instead of the local database")
    tail.add_argument("--token", default=None, help="the admin token for --remote (default: $WASMDECK_TOKEN, else $WASMDECK_ADMIN_TOKEN)")

    retention = commands.add_parser("retention", help="show or set how many trace items (and bytes of them) are kept")
    retention.add_argument("items", nargs="?", type=_retention_items, help="keep the newest N items (default 10000)")
    retention.add_argument("--bytes", type=byte_size, default=None, dest="max_bytes", metavar="SIZE",
                           help="and at most SIZE of them, as stored, e.g. 64MiB (default 256MiB)")

    console = commands.add_parser("console", help="open the admin console (Textual) on the database or a served engine")
    console.add_argument("--demo", action="store_true", help="a throwaway copy of the demo platform with generated traffic")
    console.add_argument("--namespace", default="default")
    console.add_argument("--remote", metavar="URL", default=None,
                         help="attach to a server's admin API (e.g. http://127.0.0.1:8788) instead of the local database")
    console.add_argument("--token", default=None,
                         help="the admin token for --remote (default: $WASMDECK_TOKEN, else $WASMDECK_ADMIN_TOKEN)")

    demo = commands.add_parser("demo", help="deploy the example Workers into a database and fire a few requests")
    demo.add_argument("--keep", action="store_true", help="keep the demo database (default: a throwaway one unless --db)")

    serve = commands.add_parser("serve", help="serve HTTP traffic through dispatch (uvicorn); health at /__wasmdeck/health")
    add_serve_arguments(serve)
    register_platform_commands(commands)
    register_secret_commands(commands)
    for command in commands.choices.values():
        _accept_db_after(command)
    return parser


def _accept_db_after(parser: argparse.ArgumentParser) -> None:
    """`wasmdeck list --db w.db` as well as `wasmdeck --db w.db list`, for every command and
    action; a --db given after the command wins over one given before it."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in actions:
        for child in action.choices.values():
            _accept_db_after(child)
    if not actions and "--db" not in parser._option_string_actions:
        parser.add_argument("--db", default=argparse.SUPPRESS, help="database file (as `wasmdeck --db PATH ...`)")


def _limit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cpu-ms", type=_positive)
    parser.add_argument("--memory-mb", type=_positive)
    parser.add_argument("--subrequests", type=_positive, dest="sub_requests")
    parser.add_argument("--wall-ms", type=_positive)


def _limits_from(args: argparse.Namespace) -> Limits:
    return Limits(cpu_ms=args.cpu_ms, memory_mb=args.memory_mb, sub_requests=args.sub_requests, wall_ms=args.wall_ms)


def _clear_fields(names: Sequence[str]) -> tuple[str, ...]:
    by_camel = {camel: name for name, camel in CAMEL.items()}
    return tuple(by_camel[name] for name in names)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size >= 2**30:
        return f"{size / 2**30:.1f} GiB"
    return f"{size / 1024:.1f} KiB" if size < 2**20 else f"{size / 2**20:.1f} MiB"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def _limit_cell(value: int | None) -> str:
    return "-" if value is None else str(value)


async def run(args: argparse.Namespace) -> int:
    # these serve only the requests their user makes, one at a time: keep every trap's log lines
    # (`serve` takes the faster path that keeps them from a module's second trap on)
    instances = instance_settings(args) if args.command == "serve" else None
    engine = Engine(args.db, always_keep_trap_logs=args.command in ("request", "demo", "console"), instances=instances)
    try:
        return await COMMANDS[args.command](engine, args)
    finally:
        await engine.close()


async def cmd_deploy(engine: Engine, args: argparse.Namespace) -> int:
    variables = dict(parse_var_assignment(item) for item in args.vars)
    worker = engine.deploy(args.name, args.module, namespace=args.namespace, tags=args.tags, vars=variables, message=args.message, abi=args.abi)
    what = _size(worker.size)
    if worker.script is not None:
        what = f"JavaScript, {worker.script.format}, {' and '.join(worker.script.handlers)}, {what}"
    print(f"deployed {worker.name} version {worker.version} in namespace {worker.namespace} ({what}, sha256 {worker.sha256[:12]})")
    return 0


async def cmd_list(engine: Engine, args: argparse.Namespace) -> int:
    workers = engine.workers(args.namespace, tags=args.tags)
    if args.json:
        _print_json([w.as_dict() for w in workers])
        return 0
    if not workers:
        print(f"no workers in namespace {args.namespace}" + (f" with tags {', '.join(args.tags)}" if args.tags else ""))
        return 0
    rows = [[w.name, str(w.version), ",".join(w.tags) or "-", w.language, w.abi, _size(w.size), _when(w.created_at)] for w in workers]
    print(_table(rows, ["NAME", "VERSION", "TAGS", "LANGUAGE", "ABI", "SIZE", "DEPLOYED"]))
    return 0


async def cmd_delete(engine: Engine, args: argparse.Namespace) -> int:
    engine.delete(args.name, namespace=args.namespace)
    print(f"deleted {args.name} from namespace {args.namespace}")
    return 0


async def cmd_versions(engine: Engine, args: argparse.Namespace) -> int:
    versions = engine.versions(args.name, namespace=args.namespace)
    if args.json:
        _print_json([v.as_dict() for v in versions])
        return 0
    rows = [
        [("*" if v.current else " ") + str(v.version), v.sha256[:12], ",".join(v.tags) or "-", _size(v.size), _when(v.created_at), v.message]
        for v in versions
    ]
    print(_table(rows, [" VERSION", "SHA256", "TAGS", "SIZE", "CREATED", "MESSAGE"]))
    return 0


async def cmd_rollback(engine: Engine, args: argparse.Namespace) -> int:
    worker = engine.rollback(args.name, args.version, namespace=args.namespace)
    print(f"{worker.name} now serves the module of version {args.version} (as version {worker.version})")
    return 0


async def cmd_limits(engine: Engine, args: argparse.Namespace) -> int:
    action = args.limits_command
    if action == "set":
        limits = _limits_from(args)
        clear = _clear_fields(args.clear)
        if limits.is_empty() and not clear:
            raise InvalidInput("give at least one of --cpu-ms, --memory-mb, --subrequests, --wall-ms or --clear")
        result = engine.set_limits(args.tag, limits, clear=clear)
        shown = ", ".join(f"{k}={v}" for k, v in result.as_dict().items() if v is not None) or "nothing"
        print(f"limits for tag {args.tag}: {shown}")
        return 0
    if action == "delete":
        engine.delete_limits(args.tag)
        print(f"removed the limits of tag {args.tag}")
        return 0
    if action == "show":
        effective = engine.effective_limits(args.name, namespace=args.namespace)
        if args.json:
            _print_json(effective.as_dict())
            return 0
        rows = [[CAMEL[f], str(getattr(effective, f)), effective.sources[CAMEL[f]]] for f in FIELDS]
        print(_table(rows, ["LIMIT", "VALUE", "FROM"]))
        return 0
    tag_limits = engine.limits()
    if args.json:
        _print_json({tag: limits.as_dict() for tag, limits in tag_limits.items()})
        return 0
    if not tag_limits:
        print("no tag limits are set; engine defaults: " + ", ".join(f"{k}={v}" for k, v in engine.engine_defaults.as_dict().items()))
        return 0
    rows = [[tag, *(_limit_cell(getattr(limits, f)) for f in FIELDS)] for tag, limits in tag_limits.items()]
    print(_table(rows, ["TAG", "CPU_MS", "MEMORY_MB", "SUBREQUESTS", "WALL_MS"]))
    return 0


async def cmd_namespace(engine: Engine, args: argparse.Namespace) -> int:
    action = args.namespace_command
    if action == "create":
        ns = engine.create_namespace(args.name, routing=args.routing, defaults=_limits_from(args))
        print(f"created namespace {ns.name} (routing by {ns.routing})")
    elif action == "set":
        ns = engine.update_namespace(args.name, routing=args.routing, defaults=_limits_from(args), clear=_clear_fields(args.clear))
        print(f"namespace {ns.name}: routing by {ns.routing}; defaults " + ", ".join(f"{k}={_limit_cell(v)}" for k, v in ns.defaults.as_dict().items()))
    elif action == "delete":
        engine.delete_namespace(args.name)
        print(f"deleted namespace {args.name}")
    else:
        namespaces = engine.namespaces()
        if args.json:
            _print_json([ns.as_dict() for ns in namespaces])
            return 0
        rows = [[ns.name, ns.routing, *(_limit_cell(getattr(ns.defaults, f)) for f in FIELDS)] for ns in namespaces]
        print(_table(rows, ["NAMESPACE", "ROUTING", "CPU_MS", "MEMORY_MB", "SUBREQUESTS", "WALL_MS"]))
    return 0


def _request_body(data: str | None) -> bytes:
    if data is None:
        return b""
    if data == "@-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        path = Path(data[1:])
        if not path.is_file():
            raise InvalidInput(f"body file {path} does not exist")
        return path.read_bytes()
    return data.encode()


def _check_url(url: str) -> None:
    try:
        urlsplit(url).port
    except ValueError as error:
        raise InvalidInput(f"{url!r} is not a valid URL ({error})") from None


def _status_line(status: int) -> str:
    """`200 OK`, as curl -i shows it; a status without a standard reason phrase stays a number."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


async def cmd_request(engine: Engine, args: argparse.Namespace) -> int:
    _check_url(args.url)
    headers = [parse_header_line(line) for line in args.headers]
    body = _request_body(args.data)
    method = args.method or ("POST" if args.data is not None else "GET")
    response = await engine.dispatch(Request(url=args.url, method=method, headers=headers, body=body), namespace=args.namespace)
    if args.json:
        print(json.dumps(response.as_dict()))
    else:
        if args.include:
            sys.stdout.write(f"HTTP/1.1 {_status_line(response.status)}\n")
            for name, value in response.headers:
                sys.stdout.write(f"{name}: {value}\n")
            sys.stdout.write("\n")
            sys.stdout.flush()
        sys.stdout.buffer.write(response.body)
        sys.stdout.flush()
    if args.fail and response.status >= 400:
        print(f"wasmdeck: {response.status} from {args.url} (outcome {response.outcome})", file=sys.stderr)
        return 1
    return 0


async def cmd_tail(engine: Engine, args: argparse.Namespace) -> int:
    trace_filter = TraceFilter(
        namespace=args.namespace,
        worker=args.worker,
        status=args.status,
        method=tuple(args.method),
        search=args.search,
        header=args.header,
        sampling_rate=args.sampling_rate,
    )

    def dropped(count: int) -> None:
        print(f"wasmdeck: {count} trace items dropped (output too slow)", file=sys.stderr)

    async for item in engine.tail(trace_filter, history=_tail_history(args), follow=not args.no_follow, on_dropped=dropped):
        print(json.dumps(item, separators=(",", ":")) if args.format == "json" else format_pretty(item), flush=True)
    return 0


def _tail_history(args: argparse.Namespace) -> int:
    """--history N, else the newest NO_FOLLOW_HISTORY items with --no-follow (which would print nothing otherwise)."""
    if args.history is not None:
        return int(args.history)
    return NO_FOLLOW_HISTORY if args.no_follow else 0


async def run_remote_tail(args: argparse.Namespace) -> int:
    """`tail --remote`: no local database is opened."""
    from .remote_tail import remote_tail

    token = _admin_token(args)
    if not token:
        print("wasmdeck: --remote needs the admin token (--token or $WASMDECK_TOKEN)", file=sys.stderr)
        return 2
    return await remote_tail(
        args.remote, token, namespace=args.namespace, worker=args.worker, status=args.status, method=tuple(args.method),
        search=args.search, header=args.header, sampling_rate=args.sampling_rate, format=args.format,
        history=_tail_history(args), follow=not args.no_follow,
    )


async def cmd_retention(engine: Engine, args: argparse.Namespace) -> int:
    if args.items is not None or args.max_bytes is not None:
        engine.set_trace_retention(args.items, max_bytes=args.max_bytes)
    print(f"keeping the newest {engine.trace_retention()} trace items, at most {_size(engine.trace_retention_bytes())} of them")
    return 0


async def cmd_console(engine: Engine, args: argparse.Namespace) -> int:
    from wasmdeck.console.app import WasmdeckApp
    from wasmdeck.client import LocalClient

    from .demo import demo_traffic, setup_demo_platform

    engine.namespace(args.namespace)
    if args.demo:
        setup_demo_platform(engine)
    engine.capture_runtime_output()  # before Textual takes the terminal, so a guest trap never scribbles on it
    app = WasmdeckApp(LocalClient(engine), namespace=args.namespace, traffic=demo_traffic if args.demo else None)
    await app.run_async()
    return app.return_code or 0


def _admin_token(args: argparse.Namespace) -> str | None:
    return args.token or os.environ.get("WASMDECK_TOKEN") or os.environ.get("WASMDECK_ADMIN_TOKEN")


async def run_remote_console(args: argparse.Namespace) -> int:
    """`console --remote`: the same console over the admin API; no local database is opened."""
    from wasmdeck.console.app import WasmdeckApp
    from wasmdeck.client.remote import RemoteClient

    if args.demo:
        print("wasmdeck: --demo runs a local throwaway platform and cannot be combined with --remote", file=sys.stderr)
        return 2
    token = _admin_token(args)
    if not token:
        print("wasmdeck: --remote needs the admin token (--token or $WASMDECK_TOKEN)", file=sys.stderr)
        return 2
    client = RemoteClient(args.remote, token)
    try:
        await client.connect()  # an unreachable server or a refused token: one sentence, before the terminal is taken
        await client.namespace(args.namespace)
        app = WasmdeckApp(client, namespace=args.namespace)
        await app.run_async()
        return app.return_code or 0
    finally:
        await client.close()


async def cmd_demo(engine: Engine, args: argparse.Namespace) -> int:
    from .demo import run_demo

    return await run_demo(engine, throwaway=getattr(args, "throwaway", False) and not args.keep)


async def cmd_serve(engine: Engine, args: argparse.Namespace) -> int:
    from wasmdeck.server.runner import cmd_serve as serve  # uvicorn loads only here

    return await serve(engine, args)


COMMANDS = {
    "deploy": cmd_deploy,
    "list": cmd_list,
    "delete": cmd_delete,
    "versions": cmd_versions,
    "rollback": cmd_rollback,
    "limits": cmd_limits,
    "namespace": cmd_namespace,
    "request": cmd_request,
    "tail": cmd_tail,
    "retention": cmd_retention,
    "demo": cmd_demo,
    "console": cmd_console,
    "serve": cmd_serve,
    **PLATFORM_COMMANDS,
    **SECRET_COMMANDS,
}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        print(error, file=sys.stderr)
        return 2
    try:
        if args.command == "console" and args.remote:
            return asyncio.run(run_remote_console(args))
        if (args.command == "demo" or (args.command == "console" and args.demo)) and args.db is None:
            return _throwaway_demo(args)
        if args.command == "tail" and args.remote:
            return asyncio.run(run_remote_tail(args))
        return asyncio.run(run(args))
    except WasmdeckError as error:
        print(f"wasmdeck: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except OSError as error:  # a path the command cannot use: not found, not allowed, read-only, full
        where = f" {error.filename}" if error.filename else ""
        print(f"wasmdeck: cannot use{where}: {error.strerror or error}", file=sys.stderr)
        return 1
    except sqlite3.Error as error:
        print(f"wasmdeck: the database failed: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # never a traceback: one line, and a distinct exit status
        print(f"wasmdeck: internal error: {type(error).__name__}: {error}", file=sys.stderr)
        return 70


def _throwaway_demo(args: argparse.Namespace) -> int:
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="wasmdeck-demo-"))
    args.db = str(folder / "demo.db")
    args.throwaway = True
    try:
        return asyncio.run(run(args))
    finally:
        if getattr(args, "keep", False):
            print(f"demo database kept at {args.db}")
        else:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)


def entry() -> NoReturn:
    """The `wasmdeck` command: `main()`, then an exit that skips the interpreter's finalization.
    wasmer-sdk's Rust threads can still call back into Python (a pending stdio future woken late)
    while the interpreter finalizes; such a thread is then unwound by force through Rust frames,
    which aborts the process ("FATAL: exception not rethrown", exit -6) after all the work was done.
    By now the engine is closed and its traces written; only the standard streams need flushing."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()

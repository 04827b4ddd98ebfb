"""`wasmdeck apply | export | dispatcher | outbound | egress | tail-consumer`: the platform settings
of the Worker protocol, one at a time or all at once from a manifest (docs/manifest.md).

`register(subparsers)` adds the commands to the `wasmdeck` parser; `COMMANDS` maps each to its
handler, which `cli.main` runs like its own (errors are one line on stderr and exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from wasmdeck.engine import Engine
from wasmdeck.engine.errors import InvalidInput
from wasmdeck.engine.manifest import apply_manifest, export_manifest, load_manifest, manifest_text, platform_document
from wasmdeck.engine.store import DEFAULT_NAMESPACE, Namespace, TailConsumer


def _db_option(parser: argparse.ArgumentParser) -> None:
    # also accepted after the command (`wasmdeck apply x.toml --db w.db`); never overrides a --db given before it
    parser.add_argument("--db", default=argparse.SUPPRESS, help="database file (as `wasmdeck --db PATH ...`)")


def _namespace_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE)


def _actions(parser: argparse.ArgumentParser, dest: str) -> Any:
    actions = parser.add_subparsers(dest=dest, metavar="ACTION", parser_class=type(parser))
    actions.required = True
    return actions


def register(subparsers: Any) -> None:
    """Add the platform commands to `wasmdeck`'s subparsers."""
    apply = subparsers.add_parser("apply", help="make the platform match a manifest (docs/manifest.md)")
    apply.add_argument("file", help="the manifest (a directory means its platform.toml)")
    apply.add_argument("--dry-run", action="store_true", help="check the manifest and print the changes, writing nothing")
    _db_option(apply)

    export = subparsers.add_parser("export", help="the current platform as a manifest")
    export.add_argument("directory", nargs="?", help="write DIR/platform.toml and DIR/modules/; without it print the TOML")
    _db_option(export)

    dispatcher = subparsers.add_parser("dispatcher", help="a namespace's dispatch Worker")
    dispatcher_actions = _actions(dispatcher, "dispatcher_command")
    dispatcher_set = dispatcher_actions.add_parser(
        "set", help="front the namespace with a dispatch Worker (a Worker-protocol module or a JavaScript Worker)")
    dispatcher_set.add_argument("name")
    dispatcher_set.add_argument("--binding", default=None, metavar="NAME",
                                help="the dispatch namespace binding a JavaScript dispatch Worker finds in env (default: dispatcher)")
    dispatcher_clear = dispatcher_actions.add_parser("clear", help="route by host label or path again")
    dispatcher_show = dispatcher_actions.add_parser("show", help="show the namespace's dispatch Worker")
    for parser in (dispatcher_set, dispatcher_clear, dispatcher_show):
        _namespace_option(parser)
        _db_option(parser)

    outbound = subparsers.add_parser("outbound", help="a namespace's Outbound Worker and its parameters")
    outbound_actions = _actions(outbound, "outbound_command")
    outbound_set = outbound_actions.add_parser("set", help="send the namespace's user Worker fetches through SERVICE")
    outbound_set.add_argument("service")
    outbound_set.add_argument(
        "--param", action="append", default=[], dest="params", metavar="NAME[=TEMPLATE]",
        help="a parameter the dispatcher sets (NAME) or a template: {worker} {namespace} {request.url} {request.host} {tag:NAME}",
    )
    outbound_clear = outbound_actions.add_parser("clear", help="user Worker fetches go straight to the network again")
    outbound_show = outbound_actions.add_parser("show", help="show the namespace's Outbound Worker")
    outbound_show.add_argument("--json", action="store_true")
    for parser in (outbound_set, outbound_clear, outbound_show):
        _namespace_option(parser)
        _db_option(parser)

    egress = subparsers.add_parser("egress", help="the hosts a namespace's Workers may fetch")
    egress_actions = _actions(egress, "egress_command")
    egress_set = egress_actions.add_parser("set", help="replace the egress policy (no --allow: nothing is allowed)")
    egress_set.add_argument("--allow", action="append", default=[], metavar="HOST[:PORT]", help="host, *.example.com or *")
    egress_set.add_argument("--block", action="append", default=[], metavar="HOST[:PORT]", help="blocked even when allowed")
    egress_show = egress_actions.add_parser("show", help="show the egress policy")
    egress_show.add_argument("--json", action="store_true")
    for parser in (egress_set, egress_show):
        _namespace_option(parser)
        _db_option(parser)

    tail = subparsers.add_parser("tail-consumer", help="Tail Workers: who receives which trace items")
    tail_actions = _actions(tail, "tail_command")
    for action, text in (("add", "deliver trace items to CONSUMER's tail handler"), ("remove", "stop a delivery")):
        parser = tail_actions.add_parser(action, help=text)
        parser.add_argument("consumer")
        scope = parser.add_mutually_exclusive_group()
        scope.add_argument("--worker", default=None, help="the items of this worker (default: every Worker of the namespace)")
        scope.add_argument("--dispatcher", action="store_true", help="the dispatch Worker's items and those of the Workers it calls")
        _namespace_option(parser)
        _db_option(parser)
    tail_list = tail_actions.add_parser("list", help="list the tail consumers")
    tail_list.add_argument("--json", action="store_true")
    _namespace_option(tail_list)
    _db_option(tail_list)


# -- handlers ------------------------------------------------------------------------------


async def cmd_apply(engine: Engine, args: argparse.Namespace) -> int:
    manifest = load_manifest(args.file, max_module_bytes=engine.max_module_bytes)
    changes = apply_manifest(engine, manifest, dry_run=args.dry_run)
    if not changes:
        print(f"{manifest.source}: no changes")
        return 0
    count = f"{len(changes)} change{'s' if len(changes) != 1 else ''}"
    if args.dry_run:
        print(f"{manifest.source}: {count} to make (dry run: nothing was changed)")
        for line in changes:
            print(f"  {line}")
        return 0
    for line in changes:
        print(line)
    print(f"{manifest.source}: {count} made")
    return 0


async def cmd_export(engine: Engine, args: argparse.Namespace) -> int:
    if args.directory is None:
        sys.stdout.write(manifest_text(engine))
        sys.stdout.flush()
        print(
            "wasmdeck: the modules were not written (give a directory, `wasmdeck export DIR`, to write them beside the manifest)",
            file=sys.stderr,
        )
        return 0
    _, modules = platform_document(engine)
    path = export_manifest(engine, args.directory)
    print(f"wrote {path} and {len(modules)} module{'s' if len(modules) != 1 else ''} under {path.parent / 'modules'}")
    return 0


def _dispatcher_line(engine: Engine, ns: Namespace) -> str:
    if ns.dispatch_worker:
        line = f"namespace {ns.name}: dispatch Worker {ns.dispatch_worker}"
        if any(w.name == ns.dispatch_worker and w.language == "javascript" for w in engine.workers(ns.name)):
            line += f" (JavaScript; the namespace is env.{ns.dispatch_binding} in its handler)"
        return line
    return f"namespace {ns.name}: no dispatch Worker (routing by {ns.routing})"


async def cmd_dispatcher(engine: Engine, args: argparse.Namespace) -> int:
    action = args.dispatcher_command
    if action == "set":
        ns = engine.set_dispatch_worker(args.name, namespace=args.namespace, binding=args.binding)
    elif action == "clear":
        ns = engine.set_dispatch_worker(None, namespace=args.namespace)
    else:
        ns = engine.namespace(args.namespace)
    print(_dispatcher_line(engine, ns))
    return 0


def _parameter(text: str) -> tuple[str, str | None]:
    name, sep, template = text.partition("=")
    if not name:
        raise InvalidInput(f"--param {text!r} is not NAME or NAME=TEMPLATE")
    return name, template if sep else None


def _outbound_lines(ns: Namespace) -> list[str]:
    if ns.outbound is None:
        return [f"namespace {ns.name}: no Outbound Worker (user Worker fetches go straight to the network, through the egress policy)"]
    lines = [f"namespace {ns.name}: Outbound Worker {ns.outbound.service}"]
    for parameter in ns.outbound.parameters:
        source = "set by the dispatcher" if parameter.template is None else f"template {parameter.template!r}"
        lines.append(f"  parameter {parameter.name}: {source}")
    if not ns.outbound.parameters:
        lines.append("  no parameters")
    return lines


async def cmd_outbound(engine: Engine, args: argparse.Namespace) -> int:
    action = args.outbound_command
    if action == "set":
        ns = engine.set_outbound(args.service, [_parameter(p) for p in args.params], namespace=args.namespace)
    elif action == "clear":
        ns = engine.set_outbound(None, namespace=args.namespace)
    else:
        ns = engine.namespace(args.namespace)
        if args.json:
            print(json.dumps(ns.outbound.as_dict() if ns.outbound else None, indent=2))
            return 0
    print("\n".join(_outbound_lines(ns)))
    return 0


def _egress_lines(ns: Namespace) -> list[str]:
    policy = ns.egress.as_dict()
    allow = ", ".join(policy["allow"]) or "nothing (egress is opt-in)"
    block = ", ".join(policy["block"]) or "nothing"
    return [f"namespace {ns.name}: egress", f"  allow: {allow}", f"  block: {block}"]


async def cmd_egress(engine: Engine, args: argparse.Namespace) -> int:
    if args.egress_command == "set":
        ns = engine.set_egress(allow=args.allow, block=args.block, namespace=args.namespace)
    else:
        ns = engine.namespace(args.namespace)
        if args.json:
            print(json.dumps(ns.egress.as_dict(), indent=2))
            return 0
    print("\n".join(_egress_lines(ns)))
    return 0


def _scope_text(entry: TailConsumer) -> str:
    if entry.scope == "worker":
        return f"worker {entry.worker}"
    return "the dispatcher" if entry.scope == "dispatcher" else "every Worker of the namespace"


async def cmd_tail_consumer(engine: Engine, args: argparse.Namespace) -> int:
    action = args.tail_command
    if action == "add":
        entry = engine.add_tail_consumer(args.consumer, worker=args.worker, dispatcher=args.dispatcher, namespace=args.namespace)
        print(f"namespace {args.namespace}: {entry.consumer} receives the trace items of {_scope_text(entry)}")
        return 0
    if action == "remove":
        engine.remove_tail_consumer(args.consumer, worker=args.worker, dispatcher=args.dispatcher, namespace=args.namespace)
        scope = f"worker {args.worker}" if args.worker else "the dispatcher" if args.dispatcher else "every Worker of the namespace"
        print(f"namespace {args.namespace}: {args.consumer} no longer receives the trace items of {scope}")
        return 0
    consumers = engine.tail_consumers(args.namespace)
    if args.json:
        print(json.dumps([entry.as_dict() for entry in consumers], indent=2))
        return 0
    if not consumers:
        print(f"no tail consumers in namespace {args.namespace}")
        return 0
    for entry in consumers:
        print(f"{entry.consumer} <- {_scope_text(entry)}")
    return 0


COMMANDS: dict[str, Callable[[Engine, argparse.Namespace], Awaitable[int]]] = {
    "apply": cmd_apply,
    "export": cmd_export,
    "dispatcher": cmd_dispatcher,
    "outbound": cmd_outbound,
    "egress": cmd_egress,
    "tail-consumer": cmd_tail_consumer,
}

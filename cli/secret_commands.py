"""`wasmdeck secret put | list | delete`: a Worker's write-only secrets (see engine.secrets).

A value is read from stdin, never from the command line (where the shell history and `ps`
would keep it): piped (`printf %s "$TOKEN" | wasmdeck secret put api TOKEN`; one trailing
newline is dropped), or typed at a terminal without echo. Nothing here ever prints a value.

`register(subparsers)` adds the command to the `wasmdeck` parser; `COMMANDS` maps it to its
handler, which `cli.main` runs like its own (errors are one line on stderr and exit 1).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO

from wasmdeck.engine import Engine
from wasmdeck.engine.errors import InvalidInput
from wasmdeck.engine.secrets import MAX_SECRET_BYTES
from wasmdeck.engine.store import DEFAULT_NAMESPACE


def register(subparsers: Any) -> None:
    """Add `secret` to `wasmdeck`'s subparsers."""
    secret = subparsers.add_parser("secret", help="a worker's write-only secrets (in its environment, never shown)")
    actions = secret.add_subparsers(dest="secret_command", metavar="ACTION", parser_class=type(secret))
    actions.required = True
    put = actions.add_parser("put", help="set a secret; the value is read from stdin (typed without echo at a terminal)")
    put.add_argument("name", help="the worker")
    put.add_argument("key", help="the secret's name, as the worker finds it in its environment")
    listing = actions.add_parser("list", help="the names of a worker's secrets (values are never shown)")
    listing.add_argument("name", help="the worker")
    listing.add_argument("--json", action="store_true")
    delete = actions.add_parser("delete", help="remove a secret")
    delete.add_argument("name", help="the worker")
    delete.add_argument("key")
    for parser in (put, listing, delete):
        parser.add_argument("--namespace", default=DEFAULT_NAMESPACE)
        # also accepted after the command; never overrides a --db given before it
        parser.add_argument("--db", default=argparse.SUPPRESS, help="database file (as `wasmdeck --db PATH ...`)")


def read_secret_value(stdin: BinaryIO | None = None, *, interactive: bool | None = None) -> str:
    """The value on stdin (one trailing newline dropped), or typed at a terminal without echo."""
    if interactive is None:
        interactive = sys.stdin is not None and sys.stdin.isatty()
    if interactive and stdin is None:
        text = getpass.getpass("Secret value (not echoed): ")
        raw = text.encode("utf-8")
    else:
        source = stdin if stdin is not None else sys.stdin.buffer
        raw = source.read(MAX_SECRET_BYTES + 3)  # room for a trailing CRLF, plus one byte to tell "too long"
        if raw.endswith(b"\r\n"):
            raw = raw[:-2]
        elif raw.endswith(b"\n"):
            raw = raw[:-1]
    if len(raw) > MAX_SECRET_BYTES:
        raise InvalidInput(f"the secret value on stdin is over the {MAX_SECRET_BYTES} byte limit for one secret")
    if not raw:
        raise InvalidInput("the secret value on stdin is empty; pipe the value in, e.g. printf %s \"$VALUE\" | wasmdeck secret put NAME KEY")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the secret value on stdin is not UTF-8 text") from None


async def cmd_secret(engine: Engine, args: argparse.Namespace) -> int:
    if args.secret_command == "put":
        engine.worker(args.name, namespace=args.namespace)  # an unknown worker is refused before reading the value
        worker = engine.put_secret(args.name, args.key, read_secret_value(), namespace=args.namespace)
        print(f"secret {args.key} of worker {args.name} set (version {worker.version}); its value is never shown")
        return 0
    if args.secret_command == "delete":
        worker = engine.delete_secret(args.name, args.key, namespace=args.namespace)
        print(f"secret {args.key} of worker {args.name} deleted (version {worker.version})")
        return 0
    names = engine.secret_names(args.name, namespace=args.namespace)
    if args.json:
        print(json.dumps({"namespace": args.namespace, "worker": args.name, "secrets": names}, indent=2))
    elif names:
        print("\n".join(names))
    else:
        print(f"worker {args.name} has no secrets", file=sys.stderr)
    return 0


COMMANDS: dict[str, Callable[[Engine, argparse.Namespace], Awaitable[int]]] = {"secret": cmd_secret}

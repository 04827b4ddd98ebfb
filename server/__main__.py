"""`python -m wasmdeck.server [--db PATH] [serve options]`: the same as `wasmdeck serve`, without the CLI."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from wasmdeck.engine import Engine, WasmdeckError
from wasmdeck.engine.engine import default_db_path

from .runner import add_serve_arguments, cmd_serve, instance_settings


async def _run(args: argparse.Namespace) -> int:
    engine = Engine(args.db, instances=instance_settings(args))
    try:
        return await cmd_serve(engine, args)
    finally:
        await engine.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wasmdeck.server", description="Serve HTTP traffic through wasmdeck's dispatch.")
    parser.add_argument("--db", help=f"database file (default: $WASMDECK_DB, else {default_db_path()})")
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except WasmdeckError as error:
        print(f"wasmdeck: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # past wasmer-sdk's late callbacks during finalization (see wasmdeck.cli.main.entry)

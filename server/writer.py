"""Engine writes off the event loop.

A write may wait on a database another process holds locked (up to the store's busy timeout),
and a deploy validates, meters and compiles its module: none of that may run on the event loop
that also serves dispatch. The admin API and the Cloudflare paths hand their writes to one
`EngineWriter`, a few threads of its own, each with its own SQLite connection (the store keeps
one connection per thread).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

WRITER_THREADS = 2

P = ParamSpec("P")
T = TypeVar("T")


class EngineWriter:
    def __init__(self, threads: int = WRITER_THREADS) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="wasmdeck-admin-write")

    async def __call__(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`call(*args, **kwargs)` in a writer thread; its result or its exception."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(call, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

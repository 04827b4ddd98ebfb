"""`wasmdeck demo`: a small platform of example tenants, a few requests, and what they traced."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

from engine import Engine, Request, WasmdeckError, format_pretty
from engine.client import EngineClient
from engine.errors import NotFound

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "wcgi"

TENANTS = [
    ("hello", "hello.wasm", ["free"], {"GREETING": "Hello from a free-plan tenant!"}),
    ("echo", "echo.wasm", ["pro"], {}),
    ("logger", "logger.wasm", ["pro"], {}),
    ("burn", "burn.wasm", ["free"], {}),
    ("hog", "hog.wasm", ["free"], {}),
    ("trap", "trap.wasm", ["free"], {}),
]

REQUESTS = [
    ("GET", "http://hello.demo.local/"),
    ("POST", "http://echo.demo.local/orders?id=42"),
    ("GET", "http://logger.demo.local/?lines=2"),
    ("GET", "http://burn.demo.local/?ms=5"),
    ("GET", "http://burn.demo.local/?forever=1"),
    ("GET", "http://hog.demo.local/?mb=64"),
    ("GET", "http://trap.demo.local/"),
    ("GET", "http://missing.demo.local/"),
]


def setup_demo_platform(engine: Engine, report: Callable[[str], None] = lambda _line: None) -> None:
    """Tenants on `free` and `pro` tags with different limits."""
    if not FIXTURES.is_dir():
        raise NotFound(f"the example Workers are not at {FIXTURES}; run the demo from a source checkout (pip install -e .)")
    engine.set_limits("free", cpu_ms=50, memory_mb=32, sub_requests=10)
    engine.set_limits("pro", cpu_ms=500, memory_mb=128, sub_requests=100)
    for name, module, tags, variables in TENANTS:
        worker = engine.deploy(name, FIXTURES / module, tags=tags, vars=variables, message="demo")
        report(f"deployed {worker.name:<7} v{worker.version} tags={','.join(worker.tags)}")


async def demo_traffic(client: EngineClient, namespace: Callable[[], str], interval: float = 0.4) -> None:
    """A trickle of mostly healthy requests with the odd failure, so the console has something to show."""
    chooser = random.Random(7)
    weighted = [(m, u) for m, u in REQUESTS if "missing" not in u and "forever" not in u] * 4 + REQUESTS
    while True:
        method, url = chooser.choice(weighted)
        body = b'{"item": "tea", "quantity": 2}' if method == "POST" else b""
        headers = [("Content-Type", "application/json")] if body else []
        try:
            await client.dispatch(Request(url=url, method=method, headers=headers, body=body), namespace())
        except WasmdeckError:
            pass
        await asyncio.sleep(interval * (0.5 + chooser.random()))


async def run_demo(engine: Engine) -> int:
    print(f"database: {engine.db_path}")
    setup_demo_platform(engine, print)
    print()
    for method, url in REQUESTS:
        body = b'{"item": "tea", "quantity": 2}' if method == "POST" else b""
        headers = [("Content-Type", "application/json"), ("Authorization", "Bearer demo-secret")] if body else []
        response = await engine.request(url, method=method, headers=headers, body=body)
        preview = response.text.strip().replace("\n", " ")
        print(f"{response.status} {method} {url}")
        print(f"    body: {preview[:100]}{'...' if len(preview) > 100 else ''}")
        print("    " + format_pretty(response.trace).replace("\n", "\n    "))
    await engine.flush_traces()
    print()
    print("Try: wasmdeck --db <database> tail --history 20 --no-follow    (with --db to keep a demo database)")
    return 0

"""`wasmdeck demo`: a small platform of example tenants, a few requests, and what they traced."""

from __future__ import annotations

from pathlib import Path

from engine import Engine, format_pretty
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


async def run_demo(engine: Engine) -> int:
    if not FIXTURES.is_dir():
        raise NotFound(f"the example Workers are not at {FIXTURES}; run the demo from a source checkout (pip install -e .)")
    print(f"database: {engine.db_path}")
    engine.set_limits("free", cpu_ms=50, memory_mb=32, sub_requests=10)
    engine.set_limits("pro", cpu_ms=500, memory_mb=128, sub_requests=100)
    for name, module, tags, variables in TENANTS:
        worker = engine.deploy(name, FIXTURES / module, tags=tags, vars=variables, message="demo")
        print(f"deployed {worker.name:<7} v{worker.version} tags={','.join(worker.tags)}")
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

"""`wasmdeck demo` and `console --demo`: the demo platform (`wasmdeck.demo`, package data), a
stand-in upstream API on 127.0.0.1 for its tenants' fetches, and a trickle of traffic."""

from __future__ import annotations

import asyncio
import http.server
import json
import random
import shlex
import threading
from collections.abc import Callable

from wasmdeck.engine import Engine, Request, WasmdeckError, format_pretty
from wasmdeck.client import EngineClient
from wasmdeck.engine.manifest import apply_manifest

from ..demo import demo_manifest



class _UpstreamAPI(http.server.BaseHTTPRequestHandler):
    """What the tenants' fetches reach: says whether the gateway's credential arrived."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.dumps(
            {
                "path": self.path,
                "price_eur": 3,
                "authorized": self.headers.get("authorization") == "Bearer demo-api-token",
                "customer": self.headers.get("x-customer"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


_upstream: http.server.ThreadingHTTPServer | None = None


def upstream_url() -> str:
    """The demo's stand-in API on 127.0.0.1 (started on first use, a daemon thread)."""
    global _upstream
    if _upstream is None:
        _upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _UpstreamAPI)
        _upstream.daemon_threads = True
        threading.Thread(target=_upstream.serve_forever, name="demo-upstream", daemon=True).start()
    return f"http://127.0.0.1:{_upstream.server_address[1]}"


def demo_requests() -> list[tuple[str, str]]:
    api = upstream_url()
    return [
        ("GET", "http://hello.demo.local/"),
        ("POST", "http://echo.demo.local/orders?id=42"),
        ("GET", "http://logger.demo.local/?lines=2"),
        ("GET", f"http://shop.demo.local/?url={api}/prices"),
        ("GET", "http://catalog.demo.local/"),
        ("GET", f"http://catalog.demo.local/price?api={api}"),
        ("GET", "http://greeter.demo.local/welcome"),
        ("GET", "http://burn.demo.local/?ms=5"),
        ("GET", "http://shop.demo.local/?url=http://blocked.demo.local/"),
        ("GET", "http://shop.demo.local/?url=http://db.internal.demo.local/"),
        ("GET", "http://burn.demo.local/?forever=1"),
        ("GET", "http://hog.demo.local/?mb=64"),
        ("GET", "http://trap.demo.local/"),
        ("GET", "http://missing.demo.local/"),
    ]


def setup_demo_platform(engine: Engine, report: Callable[[str], None] = lambda _line: None) -> None:
    """Apply the demo platform (`wasmdeck/demo/platform.toml`): tenants on `free` and `pro`, a
    dispatch Worker, an Outbound Worker, a Tail Worker."""
    with demo_manifest() as manifest:
        for line in apply_manifest(engine, manifest):
            report(line)


def _body_for(method: str) -> tuple[bytes, list[tuple[str, str]]]:
    if method != "POST":
        return b"", []
    return b'{"item": "tea", "quantity": 2}', [("Content-Type", "application/json")]


async def demo_traffic(client: EngineClient, namespace: Callable[[], str], interval: float = 0.4) -> None:
    """A trickle of mostly healthy requests with the odd failure, so the console has something to show."""
    chooser = random.Random(7)
    requests = demo_requests()
    healthy = [(m, u) for m, u in requests if not any(bad in u for bad in ("missing", "forever", "hog", "trap", "internal"))]
    weighted = healthy * 4 + requests
    while True:
        method, url = chooser.choice(weighted)
        body, headers = _body_for(method)
        try:
            await client.dispatch(Request(url=url, method=method, headers=headers, body=body), namespace())
        except WasmdeckError:
            pass
        await asyncio.sleep(interval * (0.5 + chooser.random()))


async def run_demo(engine: Engine, throwaway: bool = False) -> int:
    """Apply the demo platform, send each demo request and print what came back. `throwaway`: the
    database is deleted afterwards, so the closing hint says how to keep one instead."""
    print(f"database: {engine.db_path}")
    setup_demo_platform(engine, print)
    print()
    for method, url in demo_requests():
        body, headers = _body_for(method)
        if body:
            headers.append(("Authorization", "Bearer demo-secret"))
        response = await engine.request(url, method=method, headers=headers, body=body)
        preview = response.text.strip().replace("\n", " ")
        print(f"{response.status} {method} {url}")
        print(f"    body: {preview[:100]}{'...' if len(preview) > 100 else ''}")
        print("    " + format_pretty(response.trace).replace("\n", "\n    "))
        if response.dispatcher_trace is not None and response.dispatcher_trace is not response.trace:
            print("    via " + format_pretty(response.dispatcher_trace).replace("\n", "\n    "))
    await engine.flush_tail_deliveries()
    await engine.flush_traces()
    print()
    if throwaway:
        print("The demo database is deleted now; `wasmdeck demo --keep` keeps it, to look at with `tail`, `list` or `console`.")
    else:
        print(f"Try: wasmdeck --db {shlex.quote(str(engine.db_path))} tail --history 20 --no-follow")
    return 0

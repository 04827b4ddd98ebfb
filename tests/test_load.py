"""A bounded load test of `wasmdeck serve`: 2,000 requests at concurrency 32 through the real HTTP
dispatch listener (a subprocess on a free 127.0.0.1 port) to the hello fixture. Every answer must be
right, and the server's resident memory must stay flat once it is warm."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from wasmdeck.engine import Engine

from .conftest import ROOT, fixture_module
from .test_server import start_server

REQUESTS = 2_000
CONCURRENCY = 32
WARMUP = 300
MAX_RSS_GROWTH_MB = 30


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def fire(port: int, requests: int) -> dict[str, Any]:
    """`requests` GETs to hello over CONCURRENCY keep-alive connections, from bench/http_load.py's load generator
    in its own process (every answer checked: 200, the body, outcome ok); its JSON summary."""
    command = [sys.executable, str(ROOT / "bench" / "http_load.py"), "--generate", "--port", str(port),
               "--concurrency", str(CONCURRENCY), "--requests", str(requests)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_2000_requests_at_concurrency_32_without_errors_or_memory_growth(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    asyncio.run(_deploy_hello(db))
    server = start_server(db, tmp_path, "--no-access-log")
    try:
        warmup = fire(server.port, WARMUP)
        assert warmup["requests"] == WARMUP and warmup["errors"] == 0, warmup
        before = rss_mb(server.process.pid)
        load = fire(server.port, REQUESTS)
        after = rss_mb(server.process.pid)
        health = server.get("/__wasmdeck/health").json()
    finally:
        code = server.stop()
    assert load["requests"] == REQUESTS and load["errors"] == 0, f"{load['errors']} requests failed, e.g. {load['error_sample']}"
    assert health["requests"]["served"] >= WARMUP + REQUESTS and health["guests"]["running"] == 0, health
    assert after - before < MAX_RSS_GROWTH_MB, f"server RSS grew from {before:.0f} MB to {after:.0f} MB"
    assert code == 0, server.stderr()
    assert "Traceback" not in server.stderr(), server.stderr()
    print(f"\n{REQUESTS} requests at c{CONCURRENCY} in {load['elapsed_s']:.1f} s ({REQUESTS / load['elapsed_s']:.0f} req/s, "
          f"p99 {load['latency_ms']['p99']:.0f} ms); server RSS {before:.0f} -> {after:.0f} MB")


async def _deploy_hello(db: Path) -> None:
    async with Engine(db) as engine:
        engine.deploy("hello", fixture_module("hello"))

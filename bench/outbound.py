"""The cost of the Outbound Worker hop: a Worker making three fetches to a loopback origin,
directly and through an Outbound Worker, measured interleaved in one run.

    python bench/outbound.py             # full run (~20-30 s on a 2-core machine)
    python bench/outbound.py --quick     # smoke (< 10 s)
    python bench/outbound.py --json      # one JSON object on stdout

Both sides dispatch `GET http://fetcher.bench/?url=<origin>&count=3` to
`fixtures/protocol/fetcher.wasm` in one engine process. The origin is a threaded HTTP server on
127.0.0.1 started by this script. "direct": the namespace has no Outbound Worker, so each fetch
goes to the network through httpx. "outbound": the namespace's Outbound Worker is
`fixtures/protocol/outbound-logger.wasm`, which logs each subrequest and forwards it with its own
fetch. Reported: median latency of the whole request per side, and the outbound hop's cost per
fetch = (outbound median - direct median) / 3. Rounds alternate the sides (ABBA).
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
if not os.environ.get("PYTHONPATH") and str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from wasmdeck.engine import Engine  # noqa: E402

FETCHES = 3


class _Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = b"origin ok"
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


async def _timed(engine: Engine, url: str, namespace: str, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        response = await engine.request(url, namespace=namespace)
        samples.append((time.perf_counter() - started) * 1000)
        if response.status != 200 or response.text.count(" 200 ") != FETCHES:
            raise SystemExit(f"unexpected answer from the {namespace} side: {response.status} {response.text[:200]!r}")
    return samples


async def run(rounds: int, requests: int) -> dict[str, float]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"127.0.0.1:{server.server_address[1]}"
    url = f"http://fetcher.bench/?count={FETCHES}&url={quote(f'http://{origin}/data', safe='')}"
    with tempfile.TemporaryDirectory() as scratch:
        async with Engine(Path(scratch) / "bench.db", persist_traces=False) as engine:
            for namespace in ("direct", "outbound"):
                engine.create_namespace(namespace)
                engine.deploy("fetcher", ROOT / "fixtures" / "protocol" / "fetcher.wasm", namespace=namespace)
                engine.set_egress(allow=[origin], namespace=namespace)
            engine.deploy("gateway", ROOT / "fixtures" / "protocol" / "outbound-logger.wasm", namespace="outbound")
            engine.set_outbound("gateway", ["customer_name"], namespace="outbound")
            for namespace in ("direct", "outbound"):
                await _timed(engine, url, namespace, 20)  # warm up: compile, connections
            samples: dict[str, list[float]] = {"direct": [], "outbound": []}
            for index in range(rounds):
                order = ("direct", "outbound") if index % 2 == 0 else ("outbound", "direct")
                for namespace in order:
                    samples[namespace] += await _timed(engine, url, namespace, requests)
    server.shutdown()
    direct = statistics.median(samples["direct"])
    outbound = statistics.median(samples["outbound"])
    return {
        "direct_ms": round(direct, 3),
        "outbound_ms": round(outbound, 3),
        "hop_per_fetch_ms": round((outbound - direct) / FETCHES, 3),
        "direct_per_fetch_ms": round(direct / FETCHES, 3),
        "requests_per_side": rounds * requests,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--requests", type=int)
    args = parser.parse_args()
    rounds = args.rounds or (4 if args.quick else 10)
    requests = args.requests or (25 if args.quick else 60)
    result = asyncio.run(run(rounds, requests))
    if args.json:
        print(json.dumps(result))
        return
    print(f"{FETCHES} fetches per request to a loopback origin, {result['requests_per_side']} requests per side")
    print(f"  direct:   {result['direct_ms']:.2f} ms per request ({result['direct_per_fetch_ms']:.2f} ms per fetch)")
    print(f"  outbound: {result['outbound_ms']:.2f} ms per request")
    print(f"  the Outbound Worker hop costs {result['hop_per_fetch_ms']:.2f} ms per fetch")


if __name__ == "__main__":
    main()

"""The cost of a fetch() and of the Outbound Worker hop: a Worker making three fetches to a
loopback origin, directly and through an Outbound Worker, against the origin's own time, all
measured interleaved in one run.

    python bench/outbound.py             # full run (~30 s on a 2-core machine)
    python bench/outbound.py --quick     # smoke (< 10 s)
    python bench/outbound.py --json      # one JSON object on stdout
    python bench/outbound.py --check     # exit 1 if a target is missed (2 if a request failed)

Four sides, in one engine process, rounds in rotating order:
- "origin": the origin's own time, as any HTTP client sees it: `GET /data` with a keep-alive
  httpx client in this process (the floor of a fetch);
- "none": `GET http://fetcher.bench/?quiet&count=0&url=...` to `fixtures/protocol/fetcher.wasm`
  (`quiet`: no log line per fetch, so only the fetch is measured): the invocation without any fetch;
- "direct": the same with `count=3`, in a namespace without an Outbound Worker, so each fetch
  goes to the network through httpx;
- "outbound": `count=3` in a namespace whose Outbound Worker is
  `fixtures/protocol/outbound-logger.wasm`, which logs each subrequest and forwards it with its
  own fetch.

The protocol fixtures are version 2 guests, so the fetcher and the Outbound Worker each run on a
warm instance: the hop is a frame exchange with a running instance, not a new guest process.
Reported (medians): a direct fetch = (direct - none) / 3 and what it adds to the origin's own
time (target: at most 0.5 ms); the hop = (outbound - direct) / 3 (target: at most 1.5 ms).
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

import httpx  # noqa: E402

from wasmdeck.engine import Engine  # noqa: E402

FETCHES = 3
HOP_TARGET_MS = 1.5  # the Outbound Worker hop, per fetch: at most
ADDED_TARGET_MS = 0.5  # what a direct fetch adds to the origin's own time: at most
SIDES = ("origin", "none", "direct", "outbound")


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


class BenchFailed(Exception):
    pass


async def _timed(side: str, engine: Engine, http: httpx.AsyncClient, origin: str, count: int) -> list[float]:
    url = f"http://fetcher.bench/?quiet&count={0 if side == 'none' else FETCHES}&url={quote(f'http://{origin}/data', safe='')}"
    namespace = "outbound" if side == "outbound" else "direct"
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        if side == "origin":
            got = await http.get(f"http://{origin}/data")
            if got.status_code != 200 or got.text != "origin ok":
                raise BenchFailed(f"the origin answered {got.status_code} {got.text[:100]!r}")
        else:
            response = await engine.request(url, namespace=namespace)
            expected = 0 if side == "none" else FETCHES
            if response.status != 200 or response.text.count(" 200 9\n") != expected:
                raise BenchFailed(f"unexpected answer on the {side} side: {response.status} {response.text[:200]!r}")
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def run(rounds: int, requests: int) -> dict[str, object]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"127.0.0.1:{server.server_address[1]}"
    samples: dict[str, list[float]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory() as scratch:
        async with Engine(Path(scratch) / "bench.db", persist_traces=False) as engine, httpx.AsyncClient() as client:
            for namespace in ("direct", "outbound"):
                engine.create_namespace(namespace)
                engine.deploy("fetcher", ROOT / "fixtures" / "protocol" / "fetcher.wasm", namespace=namespace)
                engine.set_egress(allow=[origin], namespace=namespace)
            engine.deploy("gateway", ROOT / "fixtures" / "protocol" / "outbound-logger.wasm", namespace="outbound")
            engine.set_outbound("gateway", ["customer_name"], namespace="outbound")
            for side in SIDES:
                await _timed(side, engine, client, origin, 30)  # warm up: compile, instances, connections
            for index in range(rounds):
                order = SIDES[index % len(SIDES):] + SIDES[: index % len(SIDES)]
                for side in order if index % 2 == 0 else tuple(reversed(order)):
                    samples[side] += await _timed(side, engine, client, origin, requests)
            hop_stats = engine.instance_stats("outbound").get("gateway", {})
    server.shutdown()
    median = {side: statistics.median(values) for side, values in samples.items()}
    direct_fetch = (median["direct"] - median["none"]) / FETCHES
    hop = (median["outbound"] - median["direct"]) / FETCHES
    return {
        "origin_ms": round(median["origin"], 3),
        "none_ms": round(median["none"], 3),
        "direct_ms": round(median["direct"], 3),
        "outbound_ms": round(median["outbound"], 3),
        "direct_fetch_ms": round(direct_fetch, 3),
        "direct_fetch_added_ms": round(direct_fetch - median["origin"], 3),
        "hop_per_fetch_ms": round(hop, 3),
        "hop_target_ms": HOP_TARGET_MS,
        "added_target_ms": ADDED_TARGET_MS,
        "requests_per_side": rounds * requests,
        "outbound_worker_instances": hop_stats,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--requests", type=int)
    args = parser.parse_args()
    rounds = args.rounds or (4 if args.quick else 12)
    requests = args.requests or (25 if args.quick else 60)
    try:
        result = asyncio.run(run(rounds, requests))
    except BenchFailed as failure:
        print(f"outbound.py: {failure}", file=sys.stderr)
        return 2
    met = result["hop_per_fetch_ms"] <= HOP_TARGET_MS and result["direct_fetch_added_ms"] <= ADDED_TARGET_MS  # type: ignore[operator]
    if args.json:
        print(json.dumps({**result, "targets_met": met}))
    else:
        stats = result["outbound_worker_instances"]
        print(f"{FETCHES} fetches per request to a loopback origin, {result['requests_per_side']} requests per side (medians)")
        print(f"  the origin's own time:        {result['origin_ms']:.2f} ms per GET (httpx, keep-alive)")
        print(f"  no fetch:                     {result['none_ms']:.2f} ms per request")
        print(f"  direct:                       {result['direct_ms']:.2f} ms per request")
        print(f"  through the Outbound Worker:  {result['outbound_ms']:.2f} ms per request")
        print(f"  a direct fetch:   {result['direct_fetch_ms']:.2f} ms, {result['direct_fetch_added_ms']:.2f} ms over the origin's "
              f"own time (target <= {ADDED_TARGET_MS})")
        print(f"  the Outbound Worker hop: {result['hop_per_fetch_ms']:.2f} ms per fetch (target <= {HOP_TARGET_MS})")
        print(f"  the Outbound Worker's instances: started {stats.get('started')}, invocations {stats.get('invocations')}, "  # type: ignore[union-attr]
              f"reused {stats.get('reusedInvocations')}")  # type: ignore[union-attr]
        print("targets met" if met else "TARGET MISSED")
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    sys.exit(main())

"""Warm instances against a new guest process per request: the protocol hello Worker on warm
instances and the WCGI hello Worker, through `Engine.dispatch`, interleaved in one run.

    python bench/warm.py            # full run (~40 s on a 2-core machine)
    python bench/warm.py --quick    # smoke (~10 s)
    python bench/warm.py --json     # one JSON object on stdout
    python bench/warm.py --check    # exit 1 if the target is missed (2 if a request failed)

Both sides answer `GET http://<side>.bench/` with `Hello from wasmdeck!\\n` and log one line at
info, in one engine with the engine's defaults (traces persisted, gate of max(16, 4 x cores)):
- "wcgi" (the floor): `fixtures/wcgi/hello.wasm`, a new guest process per request;
- "warm": `fixtures/protocol/proto-hello.wasm`, a protocol version 2 guest: its instances start
  once and then answer request after request (one frame exchange each).

Each round runs both sides at concurrency 1 (latency) and at `--concurrency` (throughput: all
requests / all batch time, each batch ending with its traces stored). The throughput phase
alternates the sides in short batches (`--chunk` requests, ABBA order), so a burst of noise from
other work on a shared machine lands on both alike. Target: warm throughput at concurrency 16 at
least 2.5 times the WCGI floor's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if not os.environ.get("PYTHONPATH") and str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from wasmdeck.engine import Engine  # noqa: E402

MODULES = {"wcgi": ROOT / "fixtures" / "wcgi" / "hello.wasm", "warm": ROOT / "fixtures" / "protocol" / "proto-hello.wasm"}
BODY = b"Hello from wasmdeck!\n"
TARGET = 2.5  # warm / wcgi throughput at concurrency 16: at least


class BenchFailed(Exception):
    pass


def _check(side: str, response) -> None:  # type: ignore[no-untyped-def]
    trace = response.trace or {}
    if response.status != 200 or response.body != BODY or trace.get("outcome") != "ok" or not trace.get("logs"):
        raise BenchFailed(f"{side}: {response.status} {response.body[:100]!r} outcome {trace.get('outcome')}")


async def _latency(engine: Engine, side: str, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        response = await engine.request(f"http://{side}.bench/")
        samples.append((time.perf_counter() - began) * 1000)
        _check(side, response)
    await engine.flush_traces()
    return samples


async def _throughput(engine: Engine, side: str, count: int, concurrency: int) -> tuple[int, float]:
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            _check(side, await engine.request(f"http://{side}.bench/"))

    began = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    await engine.flush_traces()
    return count, time.perf_counter() - began


async def run(rounds: int, requests: int, concurrency: int, chunk: int, quiet: bool) -> dict[str, object]:
    latency: dict[str, list[float]] = {side: [] for side in MODULES}
    done: dict[str, int] = {side: 0 for side in MODULES}
    took: dict[str, float] = {side: 0.0 for side in MODULES}
    per_round: list[float] = []
    with tempfile.TemporaryDirectory() as scratch:
        async with Engine(Path(scratch) / "bench.db") as engine:
            for side, module in MODULES.items():
                engine.deploy(side, module)
                await _latency(engine, side, 50)  # warm up: compile, start instances
                await _throughput(engine, side, 4 * concurrency, concurrency)
            for index in range(rounds):
                order = list(MODULES) if index % 2 == 0 else list(reversed(MODULES))
                for side in order:
                    latency[side] += await _latency(engine, side, requests)
                round_done = {side: 0 for side in MODULES}
                round_took = {side: 0.0 for side in MODULES}
                for batch in range(max(1, 2 * requests // chunk)):
                    for side in (reversed(order) if batch % 2 == 0 else order):
                        count, seconds = await _throughput(engine, side, chunk, concurrency)
                        round_done[side] += count
                        round_took[side] += seconds
                rates = {}
                for side in MODULES:
                    done[side] += round_done[side]
                    took[side] += round_took[side]
                    rates[side] = round_done[side] / round_took[side]
                per_round.append(rates["warm"] / rates["wcgi"])
                if not quiet:
                    print(f"  round {index + 1}: wcgi {rates['wcgi']:.0f} req/s, warm {rates['warm']:.0f} req/s, "
                          f"ratio {per_round[-1]:.2f}", file=sys.stderr)
            stats = engine.instance_stats().get("warm", {})
    throughput = {side: done[side] / took[side] for side in MODULES}
    return {
        "concurrency": concurrency,
        "wcgi_rps": round(throughput["wcgi"], 1),
        "warm_rps": round(throughput["warm"], 1),
        "ratio": round(throughput["warm"] / throughput["wcgi"], 3),
        "round_ratios": [round(r, 3) for r in per_round],
        "target": TARGET,
        "wcgi_c1_median_ms": round(statistics.median(latency["wcgi"]), 3),
        "warm_c1_median_ms": round(statistics.median(latency["warm"]), 3),
        "warm_instances": stats,
        "requests_per_side": done["warm"] + len(latency["warm"]),
        "load_average": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--check", action="store_true", help="exit 1 if the ratio is under the target")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--requests", type=int, help="sequential requests per side and round (twice as many at concurrency)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=160, help="requests per batch in the throughput phase (default 160)")
    args = parser.parse_args()
    rounds = args.rounds or (4 if args.quick else 8)
    requests = args.requests or (200 if args.quick else 500)
    try:
        result = asyncio.run(run(rounds, requests, args.concurrency, args.chunk, args.json))
    except BenchFailed as failure:
        print(f"warm.py: a request failed: {failure}", file=sys.stderr)
        return 2
    met = result["ratio"] >= TARGET  # type: ignore[operator]
    if args.json:
        print(json.dumps({**result, "target_met": met}))
    else:
        stats = result["warm_instances"]
        print(f"hello through Engine.dispatch, {result['requests_per_side']} requests per side, load {result['load_average']}")
        print(f"  concurrency 1 (median): wcgi {result['wcgi_c1_median_ms']:.2f} ms, warm {result['warm_c1_median_ms']:.2f} ms")
        print(f"  concurrency {result['concurrency']}: wcgi {result['wcgi_rps']:.0f} req/s, warm {result['warm_rps']:.0f} req/s, "
              f"ratio {result['ratio']:.2f} (target >= {TARGET}; rounds {min(result['round_ratios'])}-{max(result['round_ratios'])})")  # type: ignore[type-var]
        print(f"  warm instances: started {stats.get('started')}, invocations {stats.get('invocations')}, "  # type: ignore[union-attr]
              f"reused {stats.get('reusedInvocations')}")  # type: ignore[union-attr]
        print("target met" if met else "TARGET MISSED")
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    sys.exit(main())

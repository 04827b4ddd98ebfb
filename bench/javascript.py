"""JavaScript Workers: throughput against the WCGI floor, the first request after a deploy and after
an engine restart, and the resident memory of a warm instance, in one run.

    python bench/javascript.py            # full run (~60 s on a 2-core machine)
    python bench/javascript.py --quick    # smoke (~20 s)
    python bench/javascript.py --json     # one JSON object on stdout
    python bench/javascript.py --check    # exit 1 if a target is missed (2 if a request failed)

Every side answers `GET http://<side>.bench/` with `Hello from wasmdeck!\\n` and logs one line at
info, in one engine with the engine's defaults (traces persisted, CPU metering):
- "wcgi" (the floor): `fixtures/wcgi/hello.wasm`, a new guest process per request;
- "js": the JavaScript hello Worker below, on warm instances of the JavaScript runtime.

1. Throughput at `--concurrency` (16), the sides alternating in short batches (ABBA), and the
   median latency at concurrency 1. Target: js at least the wcgi floor's requests per second.
2. First request after a deploy: a new script version is deployed (checked by the runtime, which
   is compiled already), then one request is timed: its instance starts, loads the script and
   answers. Target: median at most 150 ms.
3. First request after an engine restart (the same database and compile cache): `cold` times a
   new `Engine` and its first request together (the runtime is loaded from the on-disk cache on
   that request's path); `served` starts the engine the way `wasmdeck serve` does
   (`Engine.preload()`, which loads the runtime before the first request) and times the first
   request. Target: `served` median at most 20 ms.
4. Resident memory per warm instance: `--instances` distinct JavaScript Workers get one request
   each (one warm instance each), and the growth of this process's RSS is divided among them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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

BODY = b"Hello from wasmdeck!\n"
JS_HELLO = b"""export default {
  fetch(request, env, ctx) {
    console.info('hello served');
    return new Response('Hello from wasmdeck!\\n');
  },
};
"""
WCGI_HELLO = ROOT / "fixtures" / "wcgi" / "hello.wasm"
TARGET_RATIO = 1.0  # js / wcgi throughput at concurrency 16: at least
TARGET_AFTER_DEPLOY_MS = 150.0
TARGET_AFTER_RESTART_MS = 20.0


class BenchFailed(Exception):
    pass


def _check(side: str, response) -> None:  # type: ignore[no-untyped-def]
    trace = response.trace or {}
    if response.status != 200 or response.body != BODY or trace.get("outcome") != "ok" or not trace.get("logs"):
        raise BenchFailed(f"{side}: {response.status} {response.body[:200]!r} outcome {trace.get('outcome')}")


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


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


async def throughput(db: Path, cache: Path, rounds: int, requests: int, concurrency: int, chunk: int,
                     quiet: bool) -> dict[str, object]:
    sides = ("wcgi", "js")
    latency: dict[str, list[float]] = {side: [] for side in sides}
    done = {side: 0 for side in sides}
    took = {side: 0.0 for side in sides}
    per_round = []
    async with Engine(db, cache_dir=cache) as engine:
        engine.deploy("wcgi", WCGI_HELLO)
        engine.deploy("js", JS_HELLO, filename="hello.js")
        for side in sides:
            await _latency(engine, side, 50)
            await _throughput(engine, side, 4 * concurrency, concurrency)
        for index in range(rounds):
            order = list(sides) if index % 2 == 0 else list(reversed(sides))
            for side in order:
                latency[side] += await _latency(engine, side, requests)
            round_done = {side: 0 for side in sides}
            round_took = {side: 0.0 for side in sides}
            for batch in range(max(1, 2 * requests // chunk)):
                for side in (reversed(order) if batch % 2 == 0 else order):
                    count, seconds = await _throughput(engine, side, chunk, concurrency)
                    round_done[side] += count
                    round_took[side] += seconds
            rates = {side: round_done[side] / round_took[side] for side in sides}
            for side in sides:
                done[side] += round_done[side]
                took[side] += round_took[side]
            per_round.append(rates["js"] / rates["wcgi"])
            if not quiet:
                print(f"  round {index + 1}: wcgi {rates['wcgi']:.0f} req/s, js {rates['js']:.0f} req/s, "
                      f"ratio {per_round[-1]:.2f}", file=sys.stderr)
        stats = engine.instance_stats().get("js", {})
    rps = {side: done[side] / took[side] for side in sides}
    return {
        "concurrency": concurrency,
        "wcgi_rps": round(rps["wcgi"], 1),
        "js_rps": round(rps["js"], 1),
        "ratio": round(rps["js"] / rps["wcgi"], 3),
        "round_ratios": [round(r, 3) for r in per_round],
        "wcgi_c1_median_ms": round(statistics.median(latency["wcgi"]), 3),
        "js_c1_median_ms": round(statistics.median(latency["js"]), 3),
        "js_instances": stats,
    }


async def after_deploy(db: Path, cache: Path, count: int) -> list[float]:
    samples = []
    async with Engine(db, cache_dir=cache) as engine:
        for index in range(count):
            script = JS_HELLO + f"// version {index}\n".encode()
            engine.deploy("fresh", script, filename="fresh.js")
            began = time.perf_counter()
            response = await engine.request("http://fresh.bench/")
            samples.append((time.perf_counter() - began) * 1000)
            _check("fresh", response)
            if not response.trace.get("newInstance"):
                raise BenchFailed("the first request after a deploy did not start a new instance")
    return samples


async def after_restart(db: Path, cache: Path, count: int) -> dict[str, list[float]]:
    """`cold`: a new Engine and its first request, timed together; `served`: started as `serve` does."""
    samples: dict[str, list[float]] = {"cold": [], "served": []}
    async with Engine(db, cache_dir=cache) as engine:
        engine.deploy("restart", JS_HELLO, filename="restart.js")
        _check("restart", await engine.request("http://restart.bench/"))
    for index in range(count):
        for kind in (("cold", "served") if index % 2 == 0 else ("served", "cold")):
            gc.collect()
            began = time.perf_counter()
            engine = Engine(db, cache_dir=cache)
            try:
                if kind == "served":
                    await engine.preload()
                    began = time.perf_counter()
                response = await engine.request("http://restart.bench/")
                samples[kind].append((time.perf_counter() - began) * 1000)
                _check("restart", response)
            finally:
                await engine.close()
    return samples


async def instance_memory(db: Path, cache: Path, instances: int) -> dict[str, float]:
    async with Engine(db, cache_dir=cache) as engine:
        for index in range(instances):
            engine.deploy(f"w{index}", JS_HELLO + f"// worker {index}\n".encode())
        _check("w0", await engine.request("http://w0.bench/"))  # the runtime loaded, one instance warm
        await engine.flush_traces()
        gc.collect()
        await asyncio.sleep(0.5)
        before = rss_mb()
        for index in range(1, instances):
            _check(f"w{index}", await engine.request(f"http://w{index}.bench/"))
        await engine.flush_traces()
        gc.collect()
        await asyncio.sleep(0.5)
        after = rss_mb()
        warm = engine.instance_totals()["idle"]
    return {"instances": warm, "rss_before_mb": round(before, 1), "rss_after_mb": round(after, 1),
            "per_instance_mb": round((after - before) / max(1, instances - 1), 2)}


async def run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as scratch:
        cache = Path(scratch) / "cache"
        result: dict[str, object] = {}
        result["throughput"] = await throughput(Path(scratch) / "tp.db", cache, args.rounds, args.requests,
                                                args.concurrency, args.chunk, args.json)
        deploy_samples = await after_deploy(Path(scratch) / "deploy.db", cache, args.samples)
        result["after_deploy_ms"] = {"median": round(statistics.median(deploy_samples), 1),
                                     "max": round(max(deploy_samples), 1), "samples": len(deploy_samples)}
        restarts = await after_restart(Path(scratch) / "restart.db", cache, args.samples)
        result["after_restart_ms"] = {
            kind: {"median": round(statistics.median(values), 1), "max": round(max(values), 1), "samples": len(values)}
            for kind, values in restarts.items()
        }
        result["instance_memory"] = await instance_memory(Path(scratch) / "memory.db", cache, args.instances)
    result["load_average"] = os.getloadavg()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--requests", type=int, help="sequential requests per side and round (twice as many at concurrency)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=160)
    parser.add_argument("--samples", type=int, help="first requests timed after a deploy, and after a restart (each kind)")
    parser.add_argument("--instances", type=int, default=24, help="warm instances for the memory figure")
    args = parser.parse_args()
    args.rounds = args.rounds or (3 if args.quick else 6)
    args.requests = args.requests or (200 if args.quick else 500)
    args.samples = args.samples or (5 if args.quick else 15)
    try:
        result = asyncio.run(run(args))
    except BenchFailed as failure:
        print(f"javascript.py: a request failed: {failure}", file=sys.stderr)
        return 2
    tp = result["throughput"]
    deploy = result["after_deploy_ms"]
    restart = result["after_restart_ms"]
    memory = result["instance_memory"]
    met = {
        "throughput": tp["ratio"] >= TARGET_RATIO,  # type: ignore[index]
        "after_deploy": deploy["median"] <= TARGET_AFTER_DEPLOY_MS,  # type: ignore[index]
        "after_restart": restart["served"]["median"] <= TARGET_AFTER_RESTART_MS,  # type: ignore[index]
    }
    if args.json:
        print(json.dumps({**result, "targets_met": met}))
    else:
        print(f"throughput at c{tp['concurrency']}: js {tp['js_rps']:.0f} req/s, wcgi {tp['wcgi_rps']:.0f} req/s, "  # type: ignore[index]
              f"ratio {tp['ratio']:.2f} (target >= {TARGET_RATIO}) {'ok' if met['throughput'] else 'MISSED'}")  # type: ignore[index]
        print(f"latency at c1 (median): js {tp['js_c1_median_ms']} ms, wcgi {tp['wcgi_c1_median_ms']} ms")  # type: ignore[index]
        print(f"first request after a deploy: median {deploy['median']} ms, max {deploy['max']} ms "  # type: ignore[index]
              f"(target <= {TARGET_AFTER_DEPLOY_MS:.0f}) {'ok' if met['after_deploy'] else 'MISSED'}")
        print(f"first request after a restart: served {restart['served']['median']} ms (max {restart['served']['max']}), "  # type: ignore[index]
              f"cold {restart['cold']['median']} ms (max {restart['cold']['max']}) "  # type: ignore[index]
              f"(target: served <= {TARGET_AFTER_RESTART_MS:.0f}) {'ok' if met['after_restart'] else 'MISSED'}")
        print(f"resident memory per warm instance: {memory['per_instance_mb']} MiB "  # type: ignore[index]
              f"({memory['instances']} idle instances; RSS {memory['rss_before_mb']} -> {memory['rss_after_mb']} MiB)")  # type: ignore[index]
        print(f"load average {', '.join(f'{v:.1f}' for v in result['load_average'])}")  # type: ignore[union-attr]
    return 0 if not args.check or all(met.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

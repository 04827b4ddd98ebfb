#!/usr/bin/env python3
"""Measure the JavaScript runtime under wasmer-sdk, driven by tests/js_driver.py (no engine):

    python jsruntime/measure.py [--requests N] [--instances N]

prints the module's size; the first compile (a fresh wasmer cache) and a cached load; instance
start (init to ready); per-request time for a hello Worker on one warm instance at concurrency 1,
unmetered and metered (wasmdeck.engine.metering.meter); resident memory per warm instance.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.js_driver import RUNTIME, JsDriver  # noqa: E402
from wasmdeck.engine.metering import meter  # noqa: E402
from wasmdeck.engine.wasm_module import cap_memory, memory_limit_pages  # noqa: E402

HELLO = "export default { fetch(request) { return new Response('Hello from JavaScript!') } }"


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def timed_requests(instance, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        result = await instance.fetch(url="https://hello.example/")
        times.append(time.perf_counter() - started)
        assert result.status == 200
    return times


async def measure(requests: int, instances: int) -> None:
    module = RUNTIME.read_bytes()
    print(f"module: {len(module):,} bytes ({RUNTIME.relative_to(ROOT)})")
    with tempfile.TemporaryDirectory(prefix="wasmdeck-measure-") as tmp:
        cache = Path(tmp)
        driver = JsDriver(cache, module=module)
        started = time.perf_counter()
        await driver.package()
        instance = await driver.spawn()
        first_compile = time.perf_counter() - started
        started = time.perf_counter()
        await instance.init(HELLO)
        first_init = time.perf_counter() - started
        print(f"first compile and spawn (fresh cache): {first_compile * 1000:.0f} ms; then init to ready: {first_init * 1000:.1f} ms")
        await driver.close()

        driver = JsDriver(cache, module=module)
        started = time.perf_counter()
        await driver.package()
        await (await driver.spawn()).init(HELLO)
        print(f"cached load, spawn and init (a restarted process): {(time.perf_counter() - started) * 1000:.1f} ms")
        starts = []
        for _ in range(10):
            spawned = time.perf_counter()
            fresh = await driver.spawn()
            ready = time.perf_counter()
            await fresh.init(HELLO)
            starts.append((ready - spawned, time.perf_counter() - ready))
            await fresh.close()
        print(f"instance start, median of 10: spawn {statistics.median(s for s, _ in starts) * 1000:.1f} ms, "
              f"init to ready {statistics.median(i for _, i in starts) * 1000:.1f} ms")

        instance = await driver.start(HELLO)
        await timed_requests(instance, 200)
        times = await timed_requests(instance, requests)
        print(f"hello, warm instance, c1, unmetered: median {statistics.median(times) * 1000:.3f} ms, "
              f"mean {statistics.mean(times) * 1000:.3f} ms ({len(times) / sum(times):,.0f} req/s)")
        await driver.close()

        metered = meter(cap_memory(module, memory_limit_pages(128)))
        driver = JsDriver(cache, module=metered)
        instance = await driver.start(HELLO)
        await timed_requests(instance, 200)
        times = await timed_requests(instance, requests)
        print(f"hello, warm instance, c1, metered:   median {statistics.median(times) * 1000:.3f} ms, "
              f"mean {statistics.mean(times) * 1000:.3f} ms ({len(times) / sum(times):,.0f} req/s)")

        warm = []
        for _ in range(3):
            warm.append(await driver.start(HELLO))
            await warm[-1].fetch()
        before = rss_bytes()
        for _ in range(instances):
            warm.append(await driver.start(HELLO))
            await timed_requests(warm[-1], 5)
        after = rss_bytes()
        print(f"resident memory per warm instance (metered module, {instances} instances): "
              f"{(after - before) / instances / 2**20:.2f} MiB")
        await driver.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--instances", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(measure(args.requests, args.instances))
    return 0


if __name__ == "__main__":
    sys.exit(main())

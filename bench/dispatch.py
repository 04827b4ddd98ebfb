"""Engine dispatch overhead against the bare wasmer-sdk floor, measured interleaved in one run.

    python bench/dispatch.py              # full run (~30-50 s on a 2-core machine)
    python bench/dispatch.py --quick      # CI smoke (< 20 s)
    python bench/dispatch.py --json       # one JSON object on stdout
    python bench/dispatch.py --check      # exit 1 if a target is missed

Floor: one `Wasmer(cache_root=<tmp>)`, `fixtures/wcgi/hello.wasm` loaded once, one sandbox
reused, a new guest process per request with the same CGI environment the engine builds for
`GET http://hello.bench/`. Nothing is parsed: the floor is pure guest execution.

Engine: `Engine(<tmp db>)` with hello deployed, `await engine.dispatch(Request(...))`, traces
persisted (the default). Every response must be 200 with the expected body, or the run aborts.

Rounds alternate floor and engine (ABBA order) so the noise of a shared 2-core machine falls on
both sides alike. See bench/README.md for what the numbers mean.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Measure the checkout this file lives in (`python bench/dispatch.py`), unless PYTHONPATH says
# otherwise (e.g. `PYTHONPATH=/tmp/patched python bench/dispatch.py` to try an engine change).
if not os.environ.get("PYTHONPATH") and str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from wasmer_sdk import ExitReason, Wasmer  # noqa: E402

import wasmdeck.engine as engine_package  # noqa: E402
from wasmdeck.engine import Engine  # noqa: E402
from wasmdeck.engine import wcgi  # noqa: E402
from wasmdeck.engine.engine import default_concurrency  # noqa: E402
from wasmdeck.engine.http import Request  # noqa: E402

HELLO = ROOT / "fixtures" / "wcgi" / "hello.wasm"
URL = "http://hello.bench/"
EXPECTED_STDOUT = b"Content-Type: text/plain\r\n\r\nHello from wasmdeck!\n"
EXPECTED_STDERR = b"info: hello served GET /\n"
EXPECTED_BODY = b"Hello from wasmdeck!\n"
EXPECTED_LOGS = [("info", ["hello served GET /"])]  # the stderr line, as the trace item carries it
C1_TARGET = 1.15  # engine/floor median latency at concurrency 1: at most this
CN_TARGET = 0.85  # engine/floor throughput at concurrency N: at least this


class BenchError(Exception):
    """A run produced a wrong answer: the numbers would be meaningless."""


# -- the two sides ---------------------------------------------------------------------


class Floor:
    """Bare wasmer-sdk: one client, the package loaded once, one sandbox, a process per request."""

    def __init__(self, cache_root: Path, timeout_s: float) -> None:
        self.cache_root = cache_root
        self.timeout_s = timeout_s
        # Exactly the environment the engine builds for this request (hello has no vars).
        self.env = wcgi.environment(Request(URL), script_name="", path_info=None, variables={})

    async def start(self) -> None:
        self.wasmer = Wasmer(cache_root=self.cache_root)
        self.package = await self.wasmer.packages.load(HELLO.read_bytes())
        self.sandbox = await self.wasmer.sandboxes.create(packages=[self.package], network="disabled")

    async def one(self) -> None:
        output = await self.sandbox.command(self.package, env=self.env).run(stdin=b"", check=False, timeout=self.timeout_s)
        # A byte comparison, not a parse: keeps the floor honest (a failing guest is fast).
        if (
            output.reason is not ExitReason.EXITED
            or output.exit_code != 0
            or output.stdout.bytes != EXPECTED_STDOUT
            or output.stderr.bytes != EXPECTED_STDERR
        ):
            raise BenchError(
                f"floor: guest ended {output.reason.value} with status {output.exit_code}, "
                f"stdout {output.stdout.bytes[:120]!r}, stderr {output.stderr.bytes[:200]!r}"
            )

    async def settle(self) -> None:
        """Nothing is left over after a floor request."""

    async def close(self) -> None:
        await self.sandbox.close()
        await self.wasmer.close()


class EngineSide:
    """`Engine.dispatch` with hello deployed and traces persisted."""

    def __init__(self, db: Path, max_concurrency: int | None, persist_traces: bool) -> None:
        self.persist_traces = persist_traces
        self.engine = Engine(db, max_concurrency=max_concurrency, persist_traces=persist_traces)
        self.engine.deploy("hello", HELLO)
        self.dispatched = 0

    async def one(self) -> None:
        response = await self.engine.dispatch(Request(URL))
        self.dispatched += 1
        trace = response.trace
        logs = [(log.get("level"), log.get("message")) for log in trace.get("logs", ())]
        if response.status != 200 or response.body != EXPECTED_BODY or trace.get("outcome") != "ok" or logs != EXPECTED_LOGS:
            raise BenchError(
                f"engine: status {response.status}, body {response.body[:200]!r}, outcome {trace.get('outcome')!r}, "
                f"logs {trace.get('logs')!r}, exceptions {trace.get('exceptions')!r}"
            )

    async def settle(self) -> None:
        """Store every trace published so far (the writer otherwise does it within 100 ms)."""
        await self.engine.flush_traces()

    async def close(self, check: bool = True) -> dict[str, object]:
        """Flush traces, check they were all stored, close; returns the trace bookkeeping."""
        if not check:
            await self.engine.close()
            return {}
        await self.engine.flush_traces()
        bus = self.engine.traces
        stored = self.engine.store.trace_count()
        retention = self.engine.trace_retention()
        info = {
            "published": bus.published,
            "stored": stored,
            "write_dropped": bus.write_dropped,
            "retention": retention,
            "load_shed": self.engine.runtime.shed,
        }
        await self.engine.close()
        expected = min(bus.published, retention) if self.persist_traces else 0
        if bus.write_dropped or stored != expected:
            raise BenchError(f"engine: traces were not all persisted: {info}")
        if info["load_shed"]:
            raise BenchError(f"engine: {info['load_shed']} requests were load-shed")
        return info


# -- measurement -----------------------------------------------------------------------


async def sequential(one: Callable[[], Awaitable[None]], n: int) -> list[float]:
    """Per-request latency (s) of n requests, one at a time."""
    latencies = []
    clock = time.perf_counter
    for _ in range(n):
        started = clock()
        await one()
        latencies.append(clock() - started)
    return latencies


async def concurrent(
    one: Callable[[], Awaitable[None]], n: int, workers: int, settle: Callable[[], Awaitable[None]]
) -> tuple[float, list[float]]:
    """n requests by `workers` coroutines pulling from a shared counter, then `settle()` (finish any
    deferred work, i.e. the engine's trace writes, so a batch pays for all it caused): (elapsed s, latencies s)."""
    latencies: list[float] = []
    remaining = n
    clock = time.perf_counter

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = clock()
            await one()
            latencies.append(clock() - started)

    started = clock()
    await asyncio.gather(*(worker() for _ in range(workers)))
    await settle()
    return clock() - started, latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Samples:
    c1: list[float] = field(default_factory=list)  # per-request latency, s
    c1_round_medians: list[float] = field(default_factory=list)
    cn_latency: list[float] = field(default_factory=list)
    cn_elapsed: list[float] = field(default_factory=list)  # per round, s
    cn_requests: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        throughput_rounds = [n / t for n, t in zip(self.cn_requests, self.cn_elapsed)]
        return {
            "c1_median_ms": statistics.median(self.c1) * 1000,
            "c1_p95_ms": percentile(self.c1, 0.95) * 1000,
            "c1_mean_ms": statistics.fmean(self.c1) * 1000,
            "c1_round_medians_ms": [m * 1000 for m in self.c1_round_medians],
            "cn_throughput_rps": sum(self.cn_requests) / sum(self.cn_elapsed),
            "cn_round_throughput_rps": throughput_rounds,
            "cn_median_latency_ms": statistics.median(self.cn_latency) * 1000,
            "cn_p95_latency_ms": percentile(self.cn_latency, 0.95) * 1000,
        }


async def run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="wasmdeck-bench-", ignore_cleanup_errors=True) as tmp:
        return await measure(Path(tmp), args)


async def measure(tmp: Path, args: argparse.Namespace) -> dict[str, object]:
    timeout_s = 5.0  # the engine's budget for hello: min(cpu_ms, wall_ms) of the engine defaults
    floor = Floor(tmp / "floor-cache", timeout_s)
    await floor.start()
    side = EngineSide(tmp / "bench.db", args.engine_max_concurrency, not args.no_persist_traces)
    engine_gate = side.engine.runtime.max_concurrency
    sides = {"floor": floor.one, "engine": side.one}
    settles = {"floor": floor.settle, "engine": side.settle}
    samples = {"floor": Samples(), "engine": Samples()}
    load_before = os.getloadavg()
    started = time.perf_counter()
    engine_info: dict[str, object] = {}
    profile_text = None
    failed = True
    try:
        # Warm-up: the first run compiles (each side has its own fresh cache); exclude it and
        # let allocators, thread pools and the trace writer reach a steady state.
        for name, one in sides.items():
            await sequential(one, args.warmup)
            await concurrent(one, max(args.warmup, 2 * args.concurrency), args.concurrency, settles[name])

        for index in range(args.rounds):
            order = ["floor", "engine"] if index % 2 == 0 else ["engine", "floor"]
            # Concurrency 1: the round's requests go in chunks, alternating sides chunk by chunk,
            # so a burst of noise from the machine lands on both sides rather than on one.
            round_c1: dict[str, list[float]] = {"floor": [], "engine": []}
            done = 0
            while done < args.requests:
                chunk = min(args.chunk, args.requests - done)
                for name in order if (done // args.chunk) % 2 == 0 else reversed(order):
                    round_c1[name].extend(await sequential(sides[name], chunk))
                done += chunk
            for name, latencies in round_c1.items():
                samples[name].c1.extend(latencies)
                samples[name].c1_round_medians.append(statistics.median(latencies))
            # The writer stores traces every 100 ms off the request path, overlapping both sides'
            # chunks alike; flush what is left (untimed) so it does not spill into the next phase.
            await side.settle()
            # Concurrency N: one batch per side per round, ABBA across rounds. The engine's batch
            # includes flushing its last traces: throughput counts requests fully processed.
            for name in reversed(order):
                elapsed, latencies = await concurrent(sides[name], args.concurrent_requests, args.concurrency, settles[name])
                samples[name].cn_elapsed.append(elapsed)
                samples[name].cn_requests.append(args.concurrent_requests)
                samples[name].cn_latency.extend(latencies)
            if not args.json and not args.quiet:
                f, e = samples["floor"], samples["engine"]
                print(
                    f"  round {index + 1}/{args.rounds}: c1 median floor {f.c1_round_medians[-1] * 1000:.3f} ms, "
                    f"engine {e.c1_round_medians[-1] * 1000:.3f} ms; c{args.concurrency} "
                    f"floor {f.cn_requests[-1] / f.cn_elapsed[-1]:.0f} req/s, "
                    f"engine {e.cn_requests[-1] / e.cn_elapsed[-1]:.0f} req/s",
                    flush=True,
                )

        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            await sequential(side.one, args.profile)
            profiler.disable()
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats(r"/engine/", 30)
            profile_text = out.getvalue()
        failed = False
    finally:
        elapsed_total = time.perf_counter() - started
        await floor.close()
        engine_info = await side.close(check=not failed)

    floor_summary = samples["floor"].summary()
    engine_summary = samples["engine"].summary()
    c1_ratio = engine_summary["c1_median_ms"] / floor_summary["c1_median_ms"]  # type: ignore[operator]
    cn_ratio = engine_summary["cn_throughput_rps"] / floor_summary["cn_throughput_rps"]  # type: ignore[operator]
    c1_round_ratios = [e / f for e, f in zip(samples["engine"].c1_round_medians, samples["floor"].c1_round_medians)]
    cn_round_ratios = [
        e / f for e, f in zip(engine_summary["cn_round_throughput_rps"], floor_summary["cn_round_throughput_rps"])  # type: ignore[arg-type]
    ]
    result: dict[str, object] = {
        "benchmark": "wasmdeck.dispatch",
        "worker": "fixtures/wcgi/hello.wasm",
        "url": URL,
        "rounds": args.rounds,
        "requests_c1_per_round": args.requests,
        "requests_cn_per_round": args.concurrent_requests,
        "concurrency": args.concurrency,
        "chunk_c1": args.chunk,
        "warmup": args.warmup,
        "quick": args.quick,
        "engine_max_concurrency": engine_gate,
        "engine_max_concurrency_default": default_concurrency(),
        "persist_traces": not args.no_persist_traces,
        "floor": floor_summary,
        "engine": engine_summary,
        "c1_ratio": c1_ratio,
        "c1_round_ratios": c1_round_ratios,
        "c1_target": C1_TARGET,
        "c1_pass": c1_ratio <= C1_TARGET,
        "cn_ratio": cn_ratio,
        "cn_round_ratios": cn_round_ratios,
        "cn_target": CN_TARGET,
        "cn_pass": cn_ratio >= CN_TARGET,
        "pass": c1_ratio <= C1_TARGET and cn_ratio >= CN_TARGET,
        "traces": engine_info,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "engine_path": str(Path(engine_package.__file__).resolve().parent),
        "python": platform.python_version(),
        "wasmer_sdk": package_version("wasmer-sdk"),
        "elapsed_s": elapsed_total,
    }
    if profile_text is not None:
        result["profile"] = profile_text
    return result


# -- reporting -------------------------------------------------------------------------


def table(r: dict[str, object]) -> str:
    f, e = r["floor"], r["engine"]
    c = r["concurrency"]
    verdict = lambda ok: "PASS" if ok else "FAIL"  # noqa: E731
    spread = lambda xs: f"{min(xs):.3f} .. {max(xs):.3f}"  # noqa: E731
    m = r["machine"]
    lines = [
        f"wasmdeck dispatch benchmark: hello.wasm, GET {r['url']}",
        f"  {m['cpu_count']} CPUs, load {m['loadavg_before'][0]:.2f} -> {m['loadavg_after'][0]:.2f}, "
        f"Python {r['python']}, wasmer-sdk {r['wasmer_sdk']}, engine from {r['engine_path']}",
        f"  {r['rounds']} rounds alternating floor/engine; c1 {r['requests_c1_per_round']} req/round, "
        f"c{c} {r['requests_cn_per_round']} req/round; engine max_concurrency {r['engine_max_concurrency']} "
        f"(default {r['engine_max_concurrency_default']}); traces {'persisted' if r['persist_traces'] else 'not persisted'} "
        f"({r['traces']['stored']} stored); {r['elapsed_s']:.1f} s",
        "",
        f"  {'':<24}{'floor':>12}{'engine':>12}{'ratio':>9}{'target':>10}  result",
        f"  {'c1 median latency':<24}{f['c1_median_ms']:>9.3f} ms{e['c1_median_ms']:>9.3f} ms"
        f"{r['c1_ratio']:>9.3f}{'<= ' + format(r['c1_target'], '.2f'):>10}  {verdict(r['c1_pass'])}",
        f"  {'c1 p95 latency':<24}{f['c1_p95_ms']:>9.3f} ms{e['c1_p95_ms']:>9.3f} ms{e['c1_p95_ms'] / f['c1_p95_ms']:>9.3f}",
        f"  {'c1 mean latency':<24}{f['c1_mean_ms']:>9.3f} ms{e['c1_mean_ms']:>9.3f} ms{e['c1_mean_ms'] / f['c1_mean_ms']:>9.3f}",
        f"  {f'c{c} throughput':<24}{f['cn_throughput_rps']:>6.0f} req/s{e['cn_throughput_rps']:>6.0f} req/s"
        f"{r['cn_ratio']:>9.3f}{'>= ' + format(r['cn_target'], '.2f'):>10}  {verdict(r['cn_pass'])}",
        f"  {f'c{c} median latency':<24}{f['cn_median_latency_ms']:>9.3f} ms{e['cn_median_latency_ms']:>9.3f} ms",
        f"  {f'c{c} p95 latency':<24}{f['cn_p95_latency_ms']:>9.3f} ms{e['cn_p95_latency_ms']:>9.3f} ms",
        "",
        f"  per-round ratios: c1 {spread(r['c1_round_ratios'])}, c{c} {spread(r['cn_round_ratios'])}",
        f"  overall: {verdict(r['pass'])}",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, help="alternating floor/engine rounds (default 12; quick 6)")
    parser.add_argument("--requests", type=int, help="sequential requests per side per round at concurrency 1 (default 300; quick 150)")
    parser.add_argument(
        "--concurrent-requests", type=int, help="requests per side per round at --concurrency (default 2 x --requests)"
    )
    parser.add_argument(
        "--chunk", type=int, default=20, help="at concurrency 1, sides alternate every CHUNK requests within a round (default 20)"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent requests in the throughput phase (default 16)")
    parser.add_argument("--warmup", type=int, help="warm-up requests per side, excluded (default 50; quick 20)")
    parser.add_argument(
        "--engine-max-concurrency", type=int, default=None,
        help=f"the engine's guest-process gate (default: the engine's own, max(8, 4*cpu) = {default_concurrency()} here)",
    )
    parser.add_argument("--no-persist-traces", action="store_true", help="run the engine with persist_traces=False (diagnosis only)")
    parser.add_argument("--quick", action="store_true", help="a small run for CI smoke (under ~20 s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with every number instead of the table")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--quiet", action="store_true", help="no per-round progress lines")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N",
        help="afterwards, cProfile N sequential engine dispatches and print the top functions",
    )
    args = parser.parse_args(argv)
    defaults = {"rounds": 6, "requests": 150, "warmup": 20} if args.quick else {"rounds": 12, "requests": 300, "warmup": 50}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.concurrent_requests is None:
        args.concurrent_requests = 2 * args.requests
    for name in ("rounds", "requests", "concurrent_requests", "concurrency", "chunk"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.json and not args.quiet:
        print(
            f"warming up, then {args.rounds} rounds (c1 x{args.requests}, c{args.concurrency} x{args.concurrent_requests}) ...",
            flush=True,
        )
    try:
        result = asyncio.run(run(args))
    except BenchError as error:
        print(f"benchmark aborted, a request failed: {error}", file=sys.stderr)
        return 2
    profile = result.pop("profile", None) if not args.json else None
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(table(result))
        if profile:
            print("\ncProfile of engine dispatch at concurrency 1:\n" + profile)
    if args.check and not result["pass"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tail panes under a live trace flood: items per second kept up with, and key latency meanwhile.

    python bench/tail_pane.py              # 10 s at 1,000 items/s, then a ramp to the max (~1 min)
    python bench/tail_pane.py --quick      # CI smoke (~15 s)
    python bench/tail_pane.py --json       # one JSON object on stdout
    python bench/tail_pane.py --check      # exit 1 if the 1,000 items/s target is missed

The host app does what console/app.py does with a TailView: every 50 ms (a Textual interval
timer) it hands the items that arrived since the last tick to `TailView.add_items()`. Items
arrive at a fixed rate into a simulated upstream buffer of 10,000 (like `client.stream()`), so
a console that falls behind loses items, and the run counts them. Each pane's buffer is filled
to capacity first, so every batch also evicts: the steady state of a long-running console.

Meanwhile keys are pressed one at a time, 50-150 ms apart: up, up, up, end (scroll back, then
resume following). Each is timed from the moment it is posted (as the terminal driver posts
input) to (a) its action running in the focused pane and (b) the next frame painted after that.
Headless Textual composes every frame but skips encoding it; the host encodes each frame to
terminal bytes, so what a real terminal costs is counted too.

A rate is sustained when at least 95 % of the offered items were delivered, none was dropped,
and the p95 of key -> painted stayed under 100 ms.

Full (generation 2) garbage collections stop the loop, and with tens of thousands of live rows
they are the longest pauses; the run reports their count and total. `--gc-tuned` measures the
process-wide setting an app may choose (`gc.freeze()` after start-up and
`gc.set_threshold(10_000, 20, 20)`). Latencies include whatever else the machine is running:
the header shows the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import platform
import random
import statistics
import sys
import time
from datetime import timezone
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if not os.environ.get("PYTHONPATH") and str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from textual import events  # noqa: E402
from textual._compositor import CompositorUpdate  # noqa: E402  (the frame headless mode leaves unencoded)
from textual.app import App, ComposeResult  # noqa: E402

from wasmdeck.console.screens.tail import TailView  # noqa: E402
from wasmdeck.console.widgets.trace_log import DEFAULT_CAPACITY, TraceLog  # noqa: E402
from wasmdeck.engine.traces import exception_entry, new_item  # noqa: E402

TICK_S = 0.05
UPSTREAM_BUFFER = 10_000
TARGET_RATE = 1_000
LATENCY_TARGET_MS = 100.0
DELIVERY_TARGET = 0.95
KEYS = ("up", "up", "up", "end")
T0 = 1_795_766_400_000


def item_pool(size: int = 2_000, seed: int = 7) -> list[dict[str, Any]]:
    """Varied items: 6 workers, 4 methods, ~15 % errors, ~30 % with logs, a few not found."""
    rng = random.Random(seed)
    workers = ["hello", "shop-eu", "shop-us", "graphql", "auth", "images"]
    pool = []
    for n in range(size):
        worker = rng.choice(workers)
        roll = rng.random()
        outcome, status = ("ok", 200)
        if roll < 0.10:
            outcome, status = ("exception", 500)
        elif roll < 0.15:
            outcome, status = ("exceededCpu", 503)
        elif roll < 0.17:
            outcome, status = ("scriptNotFound", 404)
        logs = None
        if rng.random() < 0.3:
            logs = [{"timestamp": T0 + n, "level": rng.choice(["log", "warn", "info"]), "message": [f"step {i}"]} for i in range(3)]
        exceptions = [exception_entry("WasmTrap", "unreachable\n  0: handler\n  1: _start", T0 + n)] if outcome == "exception" else None
        pool.append(
            new_item(
                script_name=None if outcome == "scriptNotFound" else worker,
                namespace="default",
                outcome=outcome,
                event_timestamp=T0 + n * 3,
                cpu_time=rng.randint(0, 5),
                wall_time=rng.randint(1, 80),
                url=f"https://{worker}.example.com/api/v1/items/{rng.randint(1, 99_999)}?page={rng.randint(1, 9)}",
                method=rng.choice(["GET", "GET", "GET", "POST", "PUT", "DELETE"]),
                headers=[("accept", "application/json"), ("user-agent", "bench")],
                status=status,
                logs=logs,
                exceptions=exceptions,
            )
        )
    return pool


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Probe:
    """When the last key's action ran and when the next frame after it was painted."""

    def __init__(self) -> None:
        self.handled = asyncio.Event()
        self.painted = asyncio.Event()
        self.handled_at = 0.0
        self.painted_at = 0.0
        self.frames = 0

    def arm(self) -> None:
        self.handled.clear()
        self.painted.clear()

    def on_action(self) -> None:
        self.handled_at = time.perf_counter()
        self.handled.set()

    def on_frame(self) -> None:
        self.frames += 1
        if self.handled.is_set() and not self.painted.is_set():
            self.painted_at = time.perf_counter()
            self.painted.set()


PROBE: Probe | None = None


class FullCollections:
    """Generation-2 collections while measuring: how many, and how long they stopped the loop."""

    def __init__(self) -> None:
        self.pauses_ms: list[float] = []
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.pauses_ms.append((time.perf_counter() - self._began) * 1000)

    def __enter__(self) -> FullCollections:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def _timed(action):  # type: ignore[no-untyped-def]
    def run(self: TraceLog) -> None:
        action(self)
        if PROBE is not None:
            PROBE.on_action()

    return run


# The bench's one intrusion: the actions the keys trigger report when they have run.
for _name in ("action_cursor_up", "action_follow"):
    setattr(TraceLog, _name, _timed(getattr(TraceLog, _name)))


class BenchHost(App[None]):
    """A TailView and nothing else, as the console's tail tab holds it."""

    namespace = "default"

    def __init__(self, panes: tuple[str, ...]) -> None:
        super().__init__()
        self.pane_filters = panes

    def compose(self) -> ComposeResult:
        yield TailView(panes=self.pane_filters, tz=timezone.utc)

    def _display(self, screen, renderable) -> None:  # type: ignore[no-untyped-def]
        super()._display(screen, renderable)
        if isinstance(renderable, CompositorUpdate):
            renderable.render_segments(self.console)  # what writing to a terminal would cost
            if PROBE is not None:
                PROBE.on_frame()


async def measure_rate(rate: int, seconds: float, args: argparse.Namespace, pool: list[dict[str, Any]]) -> dict[str, Any]:
    """Offer `rate` items/s for `seconds` while pressing keys; return what happened."""
    global PROBE
    PROBE = probe = Probe()
    rng = random.Random(rate)
    app = BenchHost(tuple(args.panes))
    async with app.run_test(size=(args.width, args.height)) as pilot:
        view = app.query_one(TailView)
        source = itertools.cycle(pool)
        for _ in range(DEFAULT_CAPACITY // 1_000):  # full buffers: every later batch evicts
            view.add_items(list(itertools.islice(source, 1_000)), 0)
        await pilot.pause()
        view.focus_pane(view.panes[0])
        await pilot.pause()
        if args.gc_tuned:
            gc.collect()
            gc.freeze()

        offered = delivered = dropped = 0
        batch_ms: list[float] = []
        batch_sizes: list[int] = []
        start = time.perf_counter()
        stop = start + seconds
        last_tick = start

        def pump() -> None:
            nonlocal offered, delivered, dropped, last_tick
            now = time.perf_counter()
            if now > stop:
                return
            last_tick = now
            owed = int((now - start) * rate) - offered
            if owed <= 0:
                return
            offered += owed
            take = min(owed, UPSTREAM_BUFFER)
            lost = owed - take
            began = time.perf_counter()
            view.add_items(list(itertools.islice(source, take)), lost)
            batch_ms.append((time.perf_counter() - began) * 1000)
            batch_sizes.append(take)
            delivered += take
            dropped += lost

        frames_before = probe.frames
        cpu_before = time.process_time()
        to_action: list[float] = []
        to_paint: list[float] = []
        unanswered = 0
        with FullCollections() as collections:
            timer = app.set_interval(TICK_S, pump)
            for key in itertools.cycle(KEYS):
                await asyncio.sleep(rng.uniform(0.05, 0.15))
                if time.perf_counter() >= stop:
                    break
                probe.arm()
                sent = time.perf_counter()
                app._driver.send_message(events.Key(key, None))  # as the terminal driver posts input
                try:
                    await asyncio.wait_for(probe.painted.wait(), timeout=2.0)
                except asyncio.TimeoutError:
                    unanswered += 1
                    continue
                to_action.append((probe.handled_at - sent) * 1000)
                to_paint.append((probe.painted_at - sent) * 1000)
            timer.stop()
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_before
        if args.gc_tuned:
            gc.unfreeze()
        frames = probe.frames - frames_before
        pane = view.panes[0]
        evicted = pane.evicted
    PROBE = None

    p95_paint = percentile(to_paint, 0.95)
    pumped_s = max(last_tick - start, TICK_S)
    delivered_share = delivered / (rate * pumped_s)
    return {
        "rate": rate,
        "seconds": round(pumped_s, 2),
        "offered": offered,
        "delivered": delivered,
        "dropped": dropped,
        "delivered_per_s": delivered / pumped_s,
        "keys": len(to_paint),
        "keys_unanswered": unanswered,
        "key_to_action_ms": {"p50": percentile(to_action, 0.5), "p95": percentile(to_action, 0.95), "max": max(to_action, default=float("nan"))},
        "key_to_paint_ms": {"p50": percentile(to_paint, 0.5), "p95": p95_paint, "max": max(to_paint, default=float("nan"))},
        "batch_ms": {"mean": statistics.fmean(batch_ms) if batch_ms else 0.0, "p95": percentile(batch_ms, 0.95), "max": max(batch_ms, default=0.0)},
        "batch_items_mean": statistics.fmean(batch_sizes) if batch_sizes else 0.0,
        "frames_per_s": frames / elapsed,
        "cpu_share": cpu / elapsed,
        "cpu_ms_per_1000_items": cpu / delivered * 1_000_000 if delivered else float("nan"),
        "full_gc": {"count": len(collections.pauses_ms), "total_ms": sum(collections.pauses_ms), "max_ms": max(collections.pauses_ms, default=0.0)},
        "first_pane_evicted": evicted,
        "sustained": bool(
            offered and delivered_share >= DELIVERY_TARGET and dropped == 0 and unanswered == 0 and p95_paint <= LATENCY_TARGET_MS
        ),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    pool = item_pool()
    started = time.perf_counter()
    load_before = os.getloadavg()
    if args.gc_tuned:
        gc.set_threshold(10_000, 20, 20)
    target = await measure_rate(TARGET_RATE, args.seconds, args, pool)
    ramp: list[dict[str, Any]] = []
    for rate in args.ramp:
        if not args.json:
            print(f"  ramp: {rate:,} items/s for {args.ramp_seconds:g} s ...", file=sys.stderr, flush=True)
        result = await measure_rate(rate, args.ramp_seconds, args, pool)
        ramp.append(result)
        if not result["sustained"]:
            break
    sustained = [r["rate"] for r in [target, *ramp] if r["sustained"]]
    return {
        "python": platform.python_version(),
        "textual": package_version("textual"),
        "cpu_count": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "gc": "tuned: freeze() after start-up, set_threshold(10_000, 20, 20)" if args.gc_tuned else "Python defaults",
        "terminal": [args.width, args.height],
        "panes": list(args.panes),
        "pane_capacity": DEFAULT_CAPACITY,
        "tick_ms": TICK_S * 1000,
        "latency_target_ms": LATENCY_TARGET_MS,
        "target": target,
        "ramp": ramp,
        "max_sustained_rate": max(sustained, default=0),
        "ramp_capped": bool(ramp) and ramp[-1]["sustained"],
        "pass": target["sustained"],
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


# -- reporting -------------------------------------------------------------------------


def _ms(values: dict[str, float]) -> str:
    return f"p50 {values['p50']:.1f} ms, p95 {values['p95']:.1f} ms, max {values['max']:.1f} ms"


def table(r: dict[str, Any]) -> str:
    t = r["target"]
    panes = ", ".join(repr(p) if p else "'' (all)" for p in r["panes"])
    lines = [
        f"wasmdeck tail pane benchmark: {len(r['panes'])} panes ({panes}), {r['terminal'][0]}x{r['terminal'][1]} headless, "
        f"frames encoded",
        f"  {r['cpu_count']} CPUs, load {r['loadavg_before'][0]:.2f} -> {r['loadavg_after'][0]:.2f}, Python {r['python']}, "
        f"textual {r['textual']}, gc {r['gc']}",
        f"  first pane's buffer full ({r['pane_capacity']:,} rows: every batch evicts); batches every {r['tick_ms']:.0f} ms; "
        f"{r['elapsed_s']:.0f} s in all",
        "",
        f"  {t['rate']:,} items/s for {t['seconds']:.0f} s: delivered {t['delivered']:,} ({t['delivered_per_s']:,.0f}/s), "
        f"dropped {t['dropped']:,}",
        f"    key -> action   {_ms(t['key_to_action_ms'])}  ({t['keys']} keys)",
        f"    key -> painted  {_ms(t['key_to_paint_ms'])}",
        f"    add_items per batch of {t['batch_items_mean']:.0f}: mean {t['batch_ms']['mean']:.2f} ms, p95 {t['batch_ms']['p95']:.2f} ms; "
        f"{t['frames_per_s']:.0f} frames/s; CPU {t['cpu_share']:.0%} of one core "
        f"({t['cpu_ms_per_1000_items']:.0f} ms per 1,000 items, rendering included)",
        f"    full garbage collections: {t['full_gc']['count']}, {t['full_gc']['total_ms']:.0f} ms in all, "
        f"longest {t['full_gc']['max_ms']:.0f} ms",
        f"    result: {'PASS' if r['pass'] else 'FAIL'} (>= {DELIVERY_TARGET:.0%} delivered, none dropped, "
        f"key -> painted p95 < {r['latency_target_ms']:.0f} ms)",
    ]
    if r["ramp"]:
        lines += [
            "",
            "  ramp:   offered  delivered   dropped   key->painted p50 / p95   batch p95      CPU   full GC   sustained",
        ]
        for x in r["ramp"]:
            paint = x["key_to_paint_ms"]
            lines.append(
                f"       {x['rate']:>9,}/s {x['delivered_per_s']:>8,.0f}/s {x['dropped']:>9,}   "
                f"{paint['p50']:>8.1f} / {paint['p95']:>6.1f} ms {x['batch_ms']['p95']:>9.1f} ms {x['cpu_share']:>7.0%} "
                f"{x['full_gc']['total_ms']:>7.0f} ms   {'yes' if x['sustained'] else 'no'}"
            )
        capped = " (the highest rate tried)" if r["ramp_capped"] else ""
        lines.append(f"  max sustained: {r['max_sustained_rate']:,} items/s{capped}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, help="duration at the 1,000 items/s target (default 10; quick 4)")
    parser.add_argument("--ramp", type=lambda s: [int(x) for x in s.split(",")], help="rates to try, comma separated (default 2000,5000,10000,20000,40000; quick 5000,20000)")
    parser.add_argument("--ramp-seconds", type=float, help="duration of each ramp rate (default 5; quick 3)")
    parser.add_argument("--panes", nargs="*", default=["", "status:error"], help="filter text of each pane (default: all, status:error)")
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=50)
    parser.add_argument("--gc-tuned", action="store_true", help="gc.freeze() after start-up and gc.set_threshold(10_000, 20, 20)")
    parser.add_argument("--quick", action="store_true", help="a small run for CI smoke")
    parser.add_argument("--json", action="store_true", help="print one JSON object with every number instead of the table")
    parser.add_argument("--check", action="store_true", help="exit 1 if the 1,000 items/s target is missed")
    args = parser.parse_args(argv)
    defaults = {"seconds": 4.0, "ramp": [5_000, 20_000], "ramp_seconds": 3.0} if args.quick else {
        "seconds": 10.0, "ramp": [2_000, 5_000, 10_000, 20_000, 40_000], "ramp_seconds": 5.0,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not args.panes:
        parser.error("--panes needs at least one filter ('' shows everything)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.json:
        print(f"  {TARGET_RATE:,} items/s for {args.seconds:g} s ...", file=sys.stderr, flush=True)
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 1 if args.check and not result["pass"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""The cost of metering, and how soon a metered guest stops, measured in one run.

    python bench/metering.py              # full run (about 1-2 min on a 2-core machine)
    python bench/metering.py --quick      # a short run
    python bench/metering.py --json       # one JSON object on stdout
    python bench/metering.py --check      # exit 1 if the burn kernel's ratio is over 1.15

1. Cost. ``bench/guests/compute.wasm`` (source beside it) runs a fixed amount of work per
   kernel: ``burn`` (fixtures/wcgi/burn.c's loop, bounded), ``hash``, ``sieve``, ``fib``,
   ``qsort``, ``matmul``, ``strings``, ``calls``, and ``mix`` (all of them in one run). Plain
   and metered modules run in one wasmer-sdk client, one sandbox each, alternating (ABBA) in
   every round; each run's cost is the CPU time of this process over the run
   (``time.process_time()``: wasmer-sdk's threads included), which a busy machine distorts
   less than wall time. Reported: best-of-rounds CPU per side and their ratio (metered / plain),
   and the median of the rounds' ratios. Both runs must print the same checksum.
2. Stopping. Guests that never finish run metered with a deadline; reported is how long after
   the deadline the run returned (the last stretch before a stop point, plus wasmer-sdk's own
   reaction, which the baseline, a guest that does nothing but make stop calls, shows alone)
   and the CPU the process used in the half second after (must be ~0): a dependent
   load chain missing every cache over 64 MiB (the slowest work per unit of the metering's cost
   model), a short loop around a long body called for ever, bulk memory of 100 MiB a call,
   throws unwinding 500 frames, and plain recursion.
3. Metering time for the compute guest and for the fixtures.
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

from wasmer_sdk import ExitReason, Wasmer  # noqa: E402

from wasmdeck.engine.metering import BOUND_UNITS, meter  # noqa: E402
from tests.wasm_builder import wat  # noqa: E402

COMPUTE = ROOT / "bench" / "guests" / "compute.wasm"
KERNELS = {"burn": 20, "hash": 3, "sieve": 10, "fib": 20, "qsort": 2, "matmul": 20, "strings": 4, "calls": 10, "mix": 1}
TARGET = 1.15  # metered / plain CPU for the burn kernel: at most this

CHASE = wat("""(module (memory (export "memory") 1030)
  (func (export "_start") (local $i i32) (local $p i32)
    ;; m[i] = (i * 1103515245 + 12345) mod 2**24: one cycle through 16 M slots (Hull-Dobell)
    (loop (i32.store (i32.shl (local.get $i) (i32.const 2))
            (i32.and (i32.add (i32.mul (local.get $i) (i32.const 1103515245)) (i32.const 12345)) (i32.const 16777215)))
          (br_if 0 (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (i32.const 16777216))))
    (loop (local.set $p (i32.load (i32.shl (local.get $p) (i32.const 2)))) (br 0))))""")


def _bypass() -> bytes:
    body = "(local.set 1 (i64.add (i64.mul (local.get 1) (i64.const 6364136223846793005)) (i64.const 1)))\n" * 700
    return wat(f"""(module (memory (export "memory") 1)
      (func $short (local i32 i64)
        (loop {body} (br_if 0 (i32.lt_u (local.tee 0 (i32.add (local.get 0) (i32.const 1))) (i32.const 200)))))
      (func (export "_start") (loop (call $short) (br 0))))""")


BULK = wat("""(module (memory (export "memory") 1700)
  (func (export "_start") (loop
    (memory.fill (i32.const 0) (i32.const 1) (i32.const 104857600))
    (memory.copy (i32.const 1024) (i32.const 0) (i32.const 104857600)) (br 0))))""")

THROWS = wat("""(module (memory (export "memory") 1) (tag $e)
  (func $deep (param i32) (if (i32.eqz (local.get 0)) (then (throw $e))) (call $deep (i32.sub (local.get 0) (i32.const 1))))
  (func (export "_start") (loop (block $c (try_table (catch $e $c) (call $deep (i32.const 500)))) (br 0))))""")

RECURSION = wat("""(module (memory (export "memory") 1)
  (func $rec (param i32) (if (i32.eqz (local.get 0)) (then return))
    (call $rec (i32.sub (local.get 0) (i32.const 1))) (call $rec (i32.sub (local.get 0) (i32.const 1))))
  (func (export "_start") (call $rec (i32.const 60))))""")

AT_STOP_POINTS = wat("""(module
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (loop (drop (call $clock (i32.const 99) (i64.const 0) (i32.const -1))) (br 0))))""")

STOPPERS = {"baseline: stop points only": (AT_STOP_POINTS, 0.05), "pointer chase": (CHASE, 0.6), "short loop, long body": (_bypass(), 0.05), "bulk memory": (BULK, 0.05),
            "throws through 500 frames": (THROWS, 0.05), "recursion": (RECURSION, 0.05)}


def cpu() -> float:
    return time.process_time()


async def cost(wasmer: Wasmer, rounds: int, kernels: dict[str, int], quiet: bool) -> dict:
    plain = COMPUTE.read_bytes()
    started = time.perf_counter()
    metered = meter(plain)
    metering_ms = (time.perf_counter() - started) * 1000
    sides = {}
    for label, data in (("plain", plain), ("metered", metered)):
        package = await wasmer.packages.load(data)
        sides[label] = (package, await wasmer.sandboxes.create(packages=[package]))

    async def once(label: str, kernel: str, n: int) -> tuple[float, bytes]:
        package, sandbox = sides[label]
        query = "" if kernel == "mix" else f"kernel={kernel}&n={n}"
        before = cpu()
        out = await sandbox.command(package, env={"QUERY_STRING": query}).run(check=False, timeout=120)
        spent = cpu() - before
        if out.reason is not ExitReason.EXITED or out.exit_code != 0:
            raise SystemExit(f"the {label} {kernel} run failed: {out.reason.value} {out.exit_code}")
        return spent, out.stdout.bytes

    results = {}
    for kernel, n in kernels.items():
        await once("plain", kernel, n)  # compile and warm up both
        await once("metered", kernel, n)
        samples = {"plain": [], "metered": []}
        for r in range(rounds):
            order = ("plain", "metered") if r % 2 == 0 else ("metered", "plain")
            outputs = {}
            for label in order:
                spent, outputs[label] = await once(label, kernel, n)
                samples[label].append(spent)
            if outputs["plain"] != outputs["metered"]:
                raise SystemExit(f"{kernel}: the metered run printed {outputs['metered']!r}, the plain one {outputs['plain']!r}")
        best = {label: min(values) for label, values in samples.items()}
        ratios = [m / p for m, p in zip(samples["metered"], samples["plain"])]
        results[kernel] = {
            "plain_ms": round(best["plain"] * 1000, 1), "metered_ms": round(best["metered"] * 1000, 1),
            "ratio": round(best["metered"] / best["plain"], 3), "median_round_ratio": round(statistics.median(ratios), 3),
        }
        if not quiet:
            row = results[kernel]
            print(f"  {kernel:8s} plain {row['plain_ms']:8.1f} ms  metered {row['metered_ms']:8.1f} ms  "
                  f"ratio {row['ratio']:.3f} (rounds' median {row['median_round_ratio']:.3f})", file=sys.stderr, flush=True)
    for _, sandbox in sides.values():
        await sandbox.close()
    return {"kernels": results, "metering_ms": round(metering_ms, 1), "module_bytes": len(plain), "metered_bytes": len(metered)}


async def stopping(wasmer: Wasmer, quiet: bool) -> dict:
    results = {}
    for label, (data, deadline) in STOPPERS.items():
        package = await wasmer.packages.load(meter(data))
        sandbox = await wasmer.sandboxes.create(packages=[package])
        await sandbox.command(package).run(check=False, timeout=0.01)  # compile first
        started = time.perf_counter()
        out = await sandbox.command(package).run(check=False, timeout=deadline)
        overshoot = time.perf_counter() - started - deadline
        before = cpu()
        await asyncio.sleep(0.5)
        after = cpu() - before
        await sandbox.close()
        results[label] = {"reason": out.reason.value, "overshoot_ms": round(overshoot * 1000, 1), "cpu_after_s": round(after, 3)}
        if not quiet:
            print(f"  {label:26s} {out.reason.value:8s} stopped {overshoot * 1000:6.1f} ms after its deadline, "
                  f"{after:.3f} s CPU in the 0.5 s after", file=sys.stderr, flush=True)
    return results


def fixtures_metering() -> dict:
    out = {}
    for path in sorted((ROOT / "fixtures").glob("*/*.wasm")):
        data = path.read_bytes()
        started = time.perf_counter()
        meter(data)
        out[path.name] = {"bytes": len(data), "ms": round((time.perf_counter() - started) * 1000, 1)}
    return out


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--kernel", action="append", choices=list(KERNELS), help="only these kernels")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 7)
    kernels = {k: n for k, n in KERNELS.items() if not args.kernel or k in args.kernel}
    quiet = args.json
    with tempfile.TemporaryDirectory() as cache:
        async with Wasmer(cache_root=cache) as wasmer:
            if not quiet:
                print(f"cost, metered / plain CPU, best of {rounds} rounds:", file=sys.stderr)
            report = {"cost": await cost(wasmer, rounds, kernels, quiet)}
            if not quiet:
                print("stopping (metered, deadline then 0.5 s of quiet):", file=sys.stderr)
            report["stopping"] = await stopping(wasmer, quiet)
    report["fixtures_metering"] = fixtures_metering()
    report["bound_units"] = BOUND_UNITS
    report["load_average"] = os.getloadavg()
    burn = report["cost"]["kernels"].get("burn")
    report["target"] = {"burn_ratio_at_most": TARGET, "met": burn is None or burn["ratio"] <= TARGET}
    stopped = all(r["reason"] == "timeout" and r["cpu_after_s"] < 0.05 for r in report["stopping"].values())
    report["all_stopped"] = stopped
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        cost_ = report["cost"]
        print(f"metering the compute guest ({cost_['module_bytes']:,} bytes -> {cost_['metered_bytes']:,}): "
              f"{cost_['metering_ms']} ms; load average {report['load_average'][0]:.1f}", file=sys.stderr)
        if burn:
            print(f"burn: {burn['ratio']:.3f} (target <= {TARGET}): {'met' if report['target']['met'] else 'MISSED'}",
                  file=sys.stderr)
    if not stopped:
        return 2
    return 1 if args.check and not report["target"]["met"] else 0


if __name__ == "__main__":
    code = asyncio.run(main())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # a guest still running would keep the interpreter from exiting

"""How many idle warm instances wasmer-sdk can hold before no other guest can run.

    python bench/idle_instances.py              # up to 400 idle instances, 10 at a time
    python bench/idle_instances.py --step 1     # find the exact number (slower)
    python bench/idle_instances.py --json

An idle warm instance is a guest blocked reading its stdin, and such a guest holds one of
wasmer-sdk's guest threads. This script starts `fixtures/protocol/proto-hello.wasm` instances
the way the engine does (metered, stdio on pipes, `init` answered with `ready`, then idle), and
after every `--step` of them runs `fixtures/wcgi/hello.wasm` once as a probe: the first count at
which the probe does not finish within `--probe-timeout` seconds is where other guests stop
running. The engine's default bound on live instances (`InstanceSettings.max_instances`, 128)
comes from this figure: it leaves room for the per-request guests (`max(16, 4 x cores)`) and
the hops they make. Measured with wasmer-sdk 0.5.0 on 2 cores: 199 idle instances leave one
thread (other guests run, one at a time); at 200, no other guest runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if not os.environ.get("PYTHONPATH") and str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from wasmer_sdk import Wasmer  # noqa: E402

from wasmdeck.engine.metering import meter  # noqa: E402

INIT = json.dumps({"type": "init", "protocol": 2, "worker": "idle", "namespace": "bench", "version": 1}).encode()


async def measure(limit: int, step: int, probe_timeout: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as scratch:
        wasmer = Wasmer(cache_root=scratch)
        warm = await wasmer.packages.load(meter((ROOT / "fixtures/protocol/proto-hello.wasm").read_bytes()))
        probe = await wasmer.packages.load(meter((ROOT / "fixtures/wcgi/hello.wasm").read_bytes()))
        idle_box = await wasmer.sandboxes.create(packages=[warm], network="disabled")
        probe_box = await wasmer.sandboxes.create(packages=[probe], network="disabled", env={"REQUEST_METHOD": "GET"})
        held = []
        last_ok = 0
        stuck_at = None
        while len(held) < limit:
            for _ in range(step):
                process = await idle_box.command(warm).spawn(stdin="pipe", stdout="pipe", stderr="pipe")
                await process.stdin.write(struct.pack("<II", len(INIT), 0) + INIT)
                chunks = process.stdout.__aiter__()
                ready = b""
                while len(ready) < 8 + len(b'{"type":"ready"}'):
                    ready += await asyncio.wait_for(chunks.__anext__(), 10)
                if b'"ready"' not in ready:
                    raise SystemExit(f"an instance answered init with {ready[:100]!r}")
                held.append(process)
            try:
                output = await asyncio.wait_for(probe_box.command(probe).run(timeout=5, check=False), probe_timeout)
            except asyncio.TimeoutError:
                stuck_at = len(held)
                break
            if output.exit_code != 0:
                raise SystemExit(f"the probe failed with {len(held)} idle instances: {output.stderr.bytes[-300:]!r}")
            last_ok = len(held)
            print(f"  {len(held)} idle instances: another guest still runs", file=sys.stderr, flush=True)
        for process in held:
            await process.kill()
    return {"idle_instances_with_other_guests_running": last_ok, "no_other_guest_runs_at": stuck_at,
            "step": step, "threads_in_process": len(os.listdir("/proc/self/task")), "cpu_count": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=400, help="stop after this many idle instances")
    parser.add_argument("--step", type=int, default=10, help="instances started between two probes")
    parser.add_argument("--probe-timeout", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(measure(args.limit, args.step, args.probe_timeout))
    if args.json:
        print(json.dumps(result))
    elif result["no_other_guest_runs_at"] is None:
        print(f"{result['idle_instances_with_other_guests_running']} idle instances, and other guests still run")
    else:
        print(f"other guests run beside {result['idle_instances_with_other_guests_running']} idle instances; "
              f"with {result['no_other_guest_runs_at']} none does (step {result['step']})")
    sys.stdout.flush()
    os._exit(0)  # a probe stuck in wasmer-sdk would keep the interpreter from exiting


if __name__ == "__main__":
    main()

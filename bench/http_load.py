"""HTTP throughput and latency of `wasmdeck serve` on loopback, beside `Engine.dispatch` in-process, in one run.

    python bench/http_load.py                      # full run (~45 s on a 2-core machine)
    python bench/http_load.py --quick              # a short run (~15 s)
    python bench/http_load.py --json               # one JSON object on stdout
    python bench/http_load.py --generator python   # the Python load generator even when wrk is on PATH
    python bench/http_load.py --generate --port P --requests N   # only the load generator (tests/test_load.py uses it)

HTTP: the real `wasmdeck serve` (uvicorn, traces persisted, no access log) in a subprocess on a free
127.0.0.1 port, `fixtures/wcgi/hello.wasm` deployed as `hello`, and a load generator in another
process sending `GET /` with `Host: hello.bench` over keep-alive connections, one per concurrent
request: `wrk` when it is on PATH, else this file's own generator (`--generate`: raw asyncio
sockets, HTTP/1.1, every response checked byte for byte).

In-process: `Engine.dispatch(Request("http://hello.bench/"))` in this process at the same
concurrency, traces persisted, every response checked (bench/dispatch.py's `EngineSide`).

Each round runs both sides for `--seconds` at concurrency 1 and at `--concurrency`, alternating
which goes first (ABBA), so a burst of noise on the shared machine lands on both alike. The
server's trace store is checked afterwards: any outcome other than `ok` aborts the run.

Exit status: 0, or 1 when HTTP throughput / in-process throughput at `--concurrency` is below
the floor (0.70), or 2 when a request failed (the numbers would be meaningless).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

if not os.environ.get("PYTHONPATH") and str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HOST_HEADER = "hello.bench"
EXPECTED_BODY = b"Hello from wasmdeck!\n"
RATIO_FLOOR = 0.70
START_TIMEOUT_S = 30.0


class BenchError(Exception):
    """A request failed or the server misbehaved: the numbers would be meaningless."""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# -- the Python load generator (runs in its own process: `--generate`) ------------------------


async def generate(port: int, concurrency: int, seconds: float, requests: int | None = None) -> dict[str, Any]:
    """GET / with `Host: hello.bench` over `concurrency` keep-alive connections for `seconds`, or until
    `requests` have been sent; every answer must be 200 `Hello from wasmdeck!` with outcome ok."""
    request = f"GET / HTTP/1.1\r\nHost: {HOST_HEADER}\r\n\r\n".encode()
    expected_head = b"HTTP/1.1 200 "
    latencies: list[float] = []
    errors: list[str] = []
    clock = time.perf_counter
    deadline = clock() + seconds if requests is None else float("inf")
    remaining = requests if requests is not None else -1

    async def connection() -> None:
        nonlocal remaining
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while clock() < deadline and remaining != 0:
                remaining -= 1
                started = clock()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
                body = await reader.readexactly(int(length.group(1))) if length else b""
                latencies.append(clock() - started)
                if not head.startswith(expected_head) or body != EXPECTED_BODY or b"x-wasmdeck-outcome: ok" not in head.lower():
                    errors.append(f"{head[:200]!r} {body[:100]!r}")
        finally:
            writer.close()

    started = clock()
    results = await asyncio.gather(*(connection() for _ in range(concurrency)), return_exceptions=True)
    elapsed = clock() - started
    errors += [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    return {
        "requests": len(latencies), "errors": len(errors), "error_sample": errors[:3], "elapsed_s": elapsed,
        "latency_ms": {"p50": percentile(latencies, 0.5) * 1000, "p90": percentile(latencies, 0.9) * 1000,
                       "p99": percentile(latencies, 0.99) * 1000} if latencies else None,
    }


class PythonGenerator:
    name = "python (raw asyncio sockets, keep-alive)"

    def run(self, port: int, concurrency: int, seconds: float) -> dict[str, Any]:
        command = [sys.executable, __file__, "--generate", "--port", str(port), "--concurrency", str(concurrency),
                   "--seconds", str(seconds)]  # its own process: the server and the load do not share an interpreter
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
        if done.returncode != 0:
            raise BenchError(f"the load generator failed: {done.stderr.strip()[-500:]}")
        return json.loads(done.stdout)


class WrkGenerator:
    name = "wrk"

    def __init__(self, path: str) -> None:
        self.path = path

    def run(self, port: int, concurrency: int, seconds: float) -> dict[str, Any]:
        threads = min(2, concurrency)
        command = [self.path, f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency",
                   "-H", f"Host: {HOST_HEADER}", f"http://127.0.0.1:{port}/"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
        if done.returncode != 0:
            raise BenchError(f"wrk failed: {done.stderr.strip()[-500:]}")
        return parse_wrk(done.stdout)


def parse_wrk(out: str) -> dict[str, Any]:
    """The numbers of `wrk --latency` output; non-2xx answers and socket errors count as errors."""
    requests = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if requests is None:
        raise BenchError(f"cannot read wrk's output: {out[-500:]}")
    elapsed = float(requests.group(2)) / (1000 if requests.group(3) == "ms" else 1)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    errors += sum(int(n) for n in socket_errors.groups()) if socket_errors else 0

    def latency(label: str) -> float:
        found = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if found is None:
            raise BenchError(f"wrk printed no {label}% latency: {out[-500:]}")
        return float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]

    return {"requests": int(requests.group(1)), "errors": errors, "error_sample": [out.strip()[-300:]] if errors else [],
            "elapsed_s": elapsed, "latency_ms": {"p50": latency("50"), "p90": latency("90"), "p99": latency("99")}}


# -- the two sides -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class HttpSide:
    """`wasmdeck serve` in a subprocess, driven by a load generator in another."""

    def __init__(self, db: Path, generator: PythonGenerator | WrkGenerator) -> None:
        self.db = db
        self.generator = generator
        self.port = _free_port()
        self.log = db.with_suffix(".serve.log")
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "wasmdeck.cli.main", "--db", str(db), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--no-access-log"],
                cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
            )
        self._wait_until_healthy()

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"wasmdeck serve exited at start: {self.log.read_text()[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                    probe.sendall(b"GET /__wasmdeck/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if probe.recv(12).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                time.sleep(0.05)
        raise BenchError(f"wasmdeck serve did not answer within {START_TIMEOUT_S} s: {self.log.read_text()[-500:]}")

    async def run(self, concurrency: int, seconds: float) -> dict[str, Any]:
        cpu_before = _cpu_seconds(self.process.pid)
        result = await asyncio.to_thread(self.generator.run, self.port, concurrency, seconds)
        if result["errors"]:
            raise BenchError(f"HTTP: {result['errors']} of {result['requests']} requests failed, e.g. {result['error_sample']}")
        result["server_cpu_ms_per_request"] = (_cpu_seconds(self.process.pid) - cpu_before) * 1000 / max(1, result["requests"])
        return result

    def close(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.log.read_text(errors="replace")


class InProcessSide:
    """`Engine.dispatch` in this process (bench/dispatch.py's `EngineSide`: every answer checked, traces persisted)."""

    def __init__(self, db: Path) -> None:
        spec = importlib.util.spec_from_file_location("wasmdeck_bench_dispatch", BENCH / "dispatch.py")
        assert spec is not None and spec.loader is not None
        dispatch_bench = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(dispatch_bench)  # bench/dispatch.py, beside this file (loaded by path: bench/ is not a package)
        self.side = dispatch_bench.EngineSide(db, max_concurrency=None, persist_traces=True)

    async def run(self, concurrency: int, seconds: float) -> dict[str, Any]:
        latencies: list[float] = []
        clock = time.perf_counter
        deadline = clock() + seconds

        async def worker() -> None:
            while clock() < deadline:
                started = clock()
                await self.side.one()
                latencies.append(clock() - started)

        usage = resource.getrusage(resource.RUSAGE_SELF)
        started = clock()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await self.side.settle()  # the trace writes this batch caused count in its time, as in bench/dispatch.py
        elapsed = clock() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime + after.ru_stime) - (usage.ru_utime + usage.ru_stime)
        return {"requests": len(latencies), "errors": 0, "elapsed_s": elapsed, "cpu_ms_per_request": cpu * 1000 / len(latencies),
                "latency_ms": {"p50": percentile(latencies, 0.5) * 1000, "p90": percentile(latencies, 0.9) * 1000,
                               "p99": percentile(latencies, 0.99) * 1000}}

    async def close(self) -> dict[str, object]:
        return await self.side.close()


# -- measurement -------------------------------------------------------------------------------


@dataclass
class Totals:
    """One side's rounds at one concurrency."""

    requests: int = 0
    elapsed_s: float = 0.0
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    round_rps: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)

    def add(self, result: dict[str, Any]) -> None:
        self.requests += result["requests"]
        self.elapsed_s += result["elapsed_s"]
        self.p50_ms.append(result["latency_ms"]["p50"])
        self.p99_ms.append(result["latency_ms"]["p99"])
        self.round_rps.append(result["requests"] / result["elapsed_s"])
        self.cpu_ms.append(result.get("server_cpu_ms_per_request") or result.get("cpu_ms_per_request") or 0.0)

    def summary(self) -> dict[str, Any]:
        return {"throughput_rps": self.requests / self.elapsed_s, "round_throughput_rps": self.round_rps,
                "median_p50_ms": statistics.median(self.p50_ms), "median_p99_ms": statistics.median(self.p99_ms),
                "cpu_ms_per_request": statistics.median(self.cpu_ms), "requests": self.requests}


async def _server_outcomes(db: Path) -> dict[str, Any]:
    """What the server stored: request and error counts per worker (read as another process would)."""
    from wasmdeck.engine import Engine

    async with Engine(db, capture_runtime_stderr=False) as engine:
        return engine.worker_stats()


async def measure(tmp: Path, args: argparse.Namespace, generator: PythonGenerator | WrkGenerator) -> dict[str, Any]:
    from wasmdeck.engine import Engine

    async with Engine(tmp / "serve.db") as setup:
        setup.deploy("hello", ROOT / "fixtures" / "wcgi" / "hello.wasm")
    http = HttpSide(tmp / "serve.db", generator)
    local = InProcessSide(tmp / "local.db")
    sides = {"http": http, "in-process": local}
    totals = {(name, c): Totals() for name in sides for c in (1, args.concurrency)}
    load_before = os.getloadavg()
    started = time.perf_counter()
    failed = True
    try:
        for side in sides.values():  # the first runs compile; warm both up and leave it out
            await side.run(args.concurrency, args.warmup)
        for index in range(args.rounds):
            order = ["http", "in-process"] if index % 2 == 0 else ["in-process", "http"]
            for concurrency, names in ((1, order), (args.concurrency, list(reversed(order)))):
                for name in names:
                    totals[(name, concurrency)].add(await sides[name].run(concurrency, args.seconds))
            if not args.json:
                h, i = totals[("http", args.concurrency)], totals[("in-process", args.concurrency)]
                print(f"  round {index + 1}/{args.rounds}: c{args.concurrency} http {h.round_rps[-1]:.0f} req/s, "
                      f"in-process {i.round_rps[-1]:.0f} req/s", flush=True)
        failed = False
    finally:
        server_log = http.close()
        local_traces = await local.close() if not failed else {}
    if "Traceback" in server_log:
        raise BenchError(f"the server logged a traceback: {server_log[-1000:]}")
    stored = await _server_outcomes(tmp / "serve.db")
    if set(stored) != {"hello"} or stored["hello"]["errors"]:
        raise BenchError(f"the server stored outcomes other than ok: {stored}")

    c = args.concurrency
    result: dict[str, Any] = {
        "benchmark": "wasmdeck.http",
        "worker": "fixtures/wcgi/hello.wasm",
        "generator": generator.name,
        "concurrency": c,
        "rounds": args.rounds,
        "seconds_per_phase": args.seconds,
        "http": {f"c{n}": totals[("http", n)].summary() for n in (1, c)},
        "in_process": {f"c{n}": totals[("in-process", n)].summary() for n in (1, c)},
        "server_stored": stored["hello"],
        "in_process_traces": local_traces,
    }
    http_cn, local_cn = result["http"][f"c{c}"], result["in_process"][f"c{c}"]
    result["throughput_ratio"] = http_cn["throughput_rps"] / local_cn["throughput_rps"]
    result["round_ratios"] = [h / i for h, i in zip(http_cn["round_throughput_rps"], local_cn["round_throughput_rps"])]
    result["c1_latency_ratio"] = result["http"]["c1"]["median_p50_ms"] / result["in_process"]["c1"]["median_p50_ms"]
    result["ratio_floor"] = RATIO_FLOOR
    result["pass"] = result["throughput_ratio"] >= RATIO_FLOOR
    result["machine"] = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "loadavg_before": load_before,
                         "loadavg_after": os.getloadavg()}
    result["python"] = platform.python_version()
    result["uvicorn"] = package_version("uvicorn")
    result["elapsed_s"] = time.perf_counter() - started
    return result


# -- reporting ---------------------------------------------------------------------------------


def table(r: dict[str, Any]) -> str:
    c = r["concurrency"]
    m = r["machine"]
    rows = []
    for key in ("c1", f"c{c}"):
        h, i = r["http"][key], r["in_process"][key]
        rows.append(f"  {key + ' throughput':<22}{h['throughput_rps']:>8.0f} req/s{i['throughput_rps']:>8.0f} req/s"
                    f"{h['throughput_rps'] / i['throughput_rps']:>9.2f}"
                    + (f"   >= {r['ratio_floor']:.2f}  {'PASS' if r['pass'] else 'FAIL'}" if key != "c1" else ""))
        rows.append(f"  {key + ' latency p50':<22}{h['median_p50_ms']:>8.2f} ms   {i['median_p50_ms']:>8.2f} ms   "
                    f"{h['median_p50_ms'] / i['median_p50_ms']:>9.2f}")
        rows.append(f"  {key + ' latency p99':<22}{h['median_p99_ms']:>8.2f} ms   {i['median_p99_ms']:>8.2f} ms")
        rows.append(f"  {key + ' CPU per request':<22}{h['cpu_ms_per_request']:>8.2f} ms   {i['cpu_ms_per_request']:>8.2f} ms"
                    "   (server process / this process)")
    ratios = r["round_ratios"]
    return "\n".join([
        f"wasmdeck HTTP benchmark: hello.wasm behind `wasmdeck serve` on 127.0.0.1, load from {r['generator']}",
        f"  {m['cpu_count']} CPUs, load {m['loadavg_before'][0]:.2f} -> {m['loadavg_after'][0]:.2f}, Python {r['python']}, "
        f"uvicorn {r['uvicorn']}; {r['rounds']} rounds x {r['seconds_per_phase']:g} s per side and concurrency; "
        f"{r['elapsed_s']:.0f} s",
        "",
        f"  {'':<22}{'HTTP':>14}{'in-process':>14}{'ratio':>9}",
        *rows,
        "",
        f"  c{c} throughput ratio per round: {min(ratios):.2f} .. {max(ratios):.2f}; overall {r['throughput_ratio']:.2f} "
        f"(floor {r['ratio_floor']:.2f}): {'PASS' if r['pass'] else 'FAIL'}",
    ])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent requests in the throughput phase (default 32)")
    parser.add_argument("--rounds", type=int, help="rounds, each side alternating first (default 4; quick 2)")
    parser.add_argument("--seconds", type=float, help="seconds per side, concurrency and round (default 2.5; quick 1.5)")
    parser.add_argument("--warmup", type=float, default=1.5, help="seconds of warm-up per side, left out (default 1.5)")
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto",
                        help="load generator: wrk if on PATH (auto, the default), or the Python one")
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--json", action="store_true", help="one JSON object with every number instead of the table")
    parser.add_argument("--generate", action="store_true",
                        help="be the Python load generator: load 127.0.0.1:PORT at --concurrency for --seconds "
                             "(or --requests), print one JSON object")
    parser.add_argument("--port", type=int, help="with --generate: the dispatch listener's port")
    parser.add_argument("--requests", type=int, help="with --generate: stop after this many requests")
    args = parser.parse_args(argv)
    quick = {"rounds": 2, "seconds": 1.5}
    full = {"rounds": 4, "seconds": 2.5}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.generate and args.port is None:
        parser.error("--generate needs --port")
    if args.concurrency < 1 or args.rounds < 1 or args.seconds <= 0:
        parser.error("--concurrency and --rounds must be at least 1 and --seconds more than 0")
    return args


def choose_generator(wanted: str) -> PythonGenerator | WrkGenerator:
    wrk = shutil.which("wrk")
    if wanted == "wrk" and wrk is None:
        raise BenchError("--generator wrk: wrk is not on PATH (Debian: apt-get install wrk)")
    return WrkGenerator(wrk) if wrk and wanted != "python" else PythonGenerator()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.generate:
        print(json.dumps(asyncio.run(generate(args.port, args.concurrency, args.seconds, args.requests))))
        return 0
    try:
        generator = choose_generator(args.generator)
        if not args.json:
            print(f"warming up, then {args.rounds} rounds of {args.seconds:g} s per side at c1 and c{args.concurrency} "
                  f"(load: {generator.name}) ...", flush=True)
        with tempfile.TemporaryDirectory(prefix="wasmdeck-bench-http-", ignore_cleanup_errors=True) as tmp:
            result = asyncio.run(measure(Path(tmp), args, generator))
    except BenchError as error:
        print(f"benchmark aborted: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())

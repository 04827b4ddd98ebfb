"""Over HTTP at concurrency 16, in one run: the same JavaScript hello Worker behind `wasmdeck serve`
(a JavaScript Worker on warm instances of wasmdeck's runtime) and behind workerd (Cloudflare's
open-source Workers runtime), and the protocol hello Worker (C) behind `wasmdeck serve`.

    python bench/http_workerd.py                          # full run (~60 s)
    python bench/http_workerd.py --quick                  # a short run
    python bench/http_workerd.py --workerd PATH           # workerd's binary (else $WORKERD, PATH, ./node_modules/.bin)
    python bench/http_workerd.py --json                   # one JSON object on stdout
    python bench/http_workerd.py --check                  # exit 1 when JavaScript is under a quarter of workerd's req/s

workerd ships as an npm package: `npm install workerd` in a scratch folder puts the binary at
`node_modules/.bin/workerd` (or `node_modules/@cloudflare/workerd-<platform>/bin/workerd`). Without
it the script measures `wasmdeck serve` alone, says that workerd was not found, and exits 0.

- wasmdeck-js: the real `wasmdeck serve --no-access-log` in a subprocess (traces persisted) with
  `HELLO_JS` below deployed as `hello` (bench/http_load.py's `HttpSide`);
- wasmdeck: the same with `fixtures/protocol/proto-hello.wasm` (a protocol version 2 module);
- workerd: `workerd serve` in a subprocess with a config written here: `HELLO_JS` as its one
  ES-module Worker;
- load: `wrk -t2 -c16` (bench/http_load.py's generators: wrk when on PATH, else its Python
  generator), `GET /` with `Host: hello.bench`, keep-alive connections, one per concurrent
  request, rounds alternating which side goes first.

Reported: requests per second of each side and each side's share of workerd's. Target: the
JavaScript hello behind `wasmdeck serve` at least a quarter of workerd's requests per second.
Exit status 2 when a request failed (or a wasmdeck server stored an outcome other than ok).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if not os.environ.get("PYTHONPATH") and str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HELLO_JS = """export default {
  async fetch(request) {
    return new Response("Hello from wasmdeck!\\n", { headers: { "content-type": "text/plain" } });
  },
};
"""

TARGET_JS_SHARE = 0.25  # wasmdeck-js / workerd requests per second: at least

WORKERD_CONFIG = """using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [ (name = "hello", worker = .hello) ],
  sockets = [ (name = "http", address = "127.0.0.1:{port}", http = (), service = "hello") ],
);

const hello :Workerd.Worker = (
  modules = [ (name = "hello.js", esModule = embed "hello.js") ],
  compatibilityDate = "2024-09-23",
);
"""


def _http_load() -> Any:
    """bench/http_load.py, beside this file (loaded by path: bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("wasmdeck_bench_http_load", BENCH / "http_load.py")
    assert spec is not None and spec.loader is not None
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def find_workerd(given: str | None) -> str | None:
    for candidate in (given, os.environ.get("WORKERD"), shutil.which("workerd"), "node_modules/.bin/workerd",
                      *sorted(str(p) for p in Path("node_modules/@cloudflare").glob("workerd-*/bin/workerd"))):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(Path(candidate).resolve())
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(port: int) -> bytes:
    """One GET, read to the end of its response (by its length: newer workerd keeps the connection open)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: hello.bench\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if not sep:
                continue
            fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
            length = {k.strip().lower(): v.strip() for k, v in fields.items()}.get(b"content-length")
            if length is not None and len(body) >= int(length):
                break
            if length is None and body.endswith(b"0\r\n\r\n"):
                break
    return data


class WorkerdSide:
    def __init__(self, binary: str, folder: Path, generator: Any, bench_error: type[Exception]) -> None:
        self.generator = generator
        self.port = _free_port()
        (folder / "hello.js").write_text(HELLO_JS)
        (folder / "config.capnp").write_text(WORKERD_CONFIG.replace("{port}", str(self.port)))
        self.log = folder / "workerd.log"
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen([binary, "serve", str(folder / "config.capnp")], cwd=folder, stdout=sink,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise bench_error(f"workerd exited at start: {self.log.read_text()[-500:]}")
            try:
                answer = _get(self.port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise bench_error(f"workerd did not answer within 30 s: {self.log.read_text()[-500:]}") from None
                time.sleep(0.05)
        if not answer.startswith(b"HTTP/1.1 200") or b"Hello from wasmdeck!\n" not in answer:
            raise bench_error(f"workerd answered {answer[:300]!r}")

    async def run(self, concurrency: int, seconds: float) -> dict[str, Any]:
        return await asyncio.to_thread(self.generator.run, self.port, concurrency, seconds)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


async def measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from wasmdeck.engine import Engine

    http_load = _http_load()
    generator = http_load.choose_generator(args.generator)
    databases = {"wasmdeck-js": tmp / "serve-js.db", "wasmdeck": tmp / "serve.db"}
    async with Engine(databases["wasmdeck-js"]) as setup:  # each serve compiles into <db>.wasmer-cache
        setup.deploy("hello", HELLO_JS.encode(), filename="hello.js")
    async with Engine(databases["wasmdeck"]) as setup:
        setup.deploy("hello", ROOT / "fixtures" / "protocol" / "proto-hello.wasm")
    sides: dict[str, Any] = {}
    binary = find_workerd(args.workerd)
    try:
        for name, db in databases.items():
            sides[name] = http_load.HttpSide(db, generator)
        if binary is not None:
            (tmp / "workerd").mkdir()
            sides["workerd"] = WorkerdSide(binary, tmp / "workerd", generator, http_load.BenchError)
        for side in sides.values():
            await side.run(args.concurrency, args.warmup)
        done = {name: 0 for name in sides}
        took = {name: 0.0 for name in sides}
        rounds: list[dict[str, float]] = []
        for index in range(args.rounds):
            order = list(sides) if index % 2 == 0 else list(reversed(sides))
            rates = {}
            for name in order:
                result = await sides[name].run(args.concurrency, args.seconds)
                if result["errors"]:
                    raise http_load.BenchError(f"{name}: {result['errors']} requests failed, e.g. {result['error_sample']}")
                done[name] += result["requests"]
                took[name] += result["elapsed_s"]
                rates[name] = result["requests"] / result["elapsed_s"]
            rounds.append(rates)
            if not args.json:
                print("  round " + str(index + 1) + ": " + ", ".join(f"{n} {r:.0f} req/s" for n, r in rates.items()), flush=True)
    finally:
        server_logs = [side.close() for name, side in sides.items() if name != "workerd"]
        if "workerd" in sides:
            sides["workerd"].close()
    for server_log in server_logs:
        if "Traceback" in server_log:
            raise http_load.BenchError(f"wasmdeck serve logged a traceback: {server_log[-1000:]}")
    for name, db in databases.items():
        async with Engine(db, capture_runtime_stderr=False) as reader:
            stored = reader.worker_stats()
        if set(stored) != {"hello"} or stored["hello"]["errors"]:
            raise http_load.BenchError(f"{name}: wasmdeck serve stored outcomes other than ok: {stored}")
    throughput = {name: done[name] / took[name] for name in done}
    workerd = throughput.get("workerd")
    return {
        "benchmark": "wasmdeck.http_vs_workerd",
        "generator": generator.name,
        "concurrency": args.concurrency,
        "workerd": binary,
        "wasmdeck_js_rps": round(throughput["wasmdeck-js"], 1),
        "wasmdeck_rps": round(throughput["wasmdeck"], 1),
        "workerd_rps": round(workerd, 1) if workerd else None,
        "js_share_of_workerd": round(throughput["wasmdeck-js"] / workerd, 3) if workerd else None,
        "protocol_share_of_workerd": round(throughput["wasmdeck"] / workerd, 3) if workerd else None,
        "target_js_share": TARGET_JS_SHARE,
        "rounds": rounds,
        "loadavg": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workerd", help="workerd's binary (default: $WORKERD, PATH, ./node_modules/.bin/workerd)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--check", action="store_true", help="exit 1 when the JavaScript share of workerd's req/s is under the target")
    args = parser.parse_args()
    args.rounds = args.rounds or (2 if args.quick else 4)
    args.seconds = args.seconds or (2.0 if args.quick else 4.0)
    with tempfile.TemporaryDirectory(prefix="wasmdeck-workerd-") as scratch:
        try:
            result = asyncio.run(measure(args, Path(scratch)))
        except Exception as error:
            if type(error).__name__ == "BenchError":
                print(f"http_workerd.py: {error}", file=sys.stderr)
                return 2
            raise
    met = result["js_share_of_workerd"] is None or result["js_share_of_workerd"] >= TARGET_JS_SHARE
    if args.json:
        print(json.dumps({**result, "target_met": met}))
        return 0 if met or not args.check else 1
    print(f"hello over HTTP at c{result['concurrency']} ({result['generator']}), load {result['loadavg'][0]:.2f}")
    print(f"  wasmdeck serve, JavaScript hello (warm instances): {result['wasmdeck_js_rps']:.0f} req/s")
    print(f"  wasmdeck serve, protocol hello (C, warm):          {result['wasmdeck_rps']:.0f} req/s")
    if result["workerd"] is None:
        print("  workerd: not found (npm install workerd in a scratch folder, then --workerd PATH); measured wasmdeck only")
        return 0
    print(f"  workerd, JavaScript hello:                         {result['workerd_rps']:.0f} req/s")
    print(f"  JavaScript on wasmdeck / workerd: {result['js_share_of_workerd']:.2f} (target >= {TARGET_JS_SHARE}) "
          f"{'ok' if met else 'MISSED'}; protocol hello / workerd: {result['protocol_share_of_workerd']:.2f}")
    return 0 if met or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())

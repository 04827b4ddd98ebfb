#!/usr/bin/env python3
"""Record Cloudflare workerd's answers to the golden Workers, for tests/test_jsruntime_golden.py.

    python jsruntime/record_golden.py                 npm-install workerd in a temp folder and record
    python jsruntime/record_golden.py --workerd BIN   use this workerd binary
    python jsruntime/record_golden.py headers url     record only these Workers

Each Worker is tests/golden/workers/NAME.js; its first line lists the requests to send
(`// requests: [{"method", "path", "headers", "body"}, ...]`, method defaulting to GET). The
script writes a workerd config that serves every Worker on its own port of 127.0.0.1, sends each
request with `Host: golden.example` (so the Worker sees `http://golden.example/PATH`), and writes
status, headers and body per request to tests/golden/answers/NAME.json. CI never needs workerd:
the answers are committed, and the test compares wasmdeck's runtime with them.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
WORKERS = GOLDEN / "workers"
ANSWERS = GOLDEN / "answers"
HOST = "golden.example"
COMPATIBILITY_DATE = "2024-09-23"
# hop-by-hop and framing headers belong to the HTTP server, not to the Worker
SKIPPED_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive", "date", "server"}
REQUESTS_LINE = re.compile(r"^// requests: (.*)$", re.MULTILINE)


def requests_of(source: str, name: str) -> list[dict]:
    match = REQUESTS_LINE.search(source)
    if not match:
        raise SystemExit(f"record_golden.py: {name}.js has no `// requests: [...]` line")
    requests = json.loads(match.group(1))
    for request in requests:
        request.setdefault("method", "GET")
        request.setdefault("headers", {})
        request.setdefault("body", None)
    return requests


def workers(names: list[str]) -> dict[str, Path]:
    found = {path.stem: path for path in sorted(WORKERS.glob("*.js"))}
    if names:
        unknown = [name for name in names if name not in found]
        if unknown:
            raise SystemExit(f"record_golden.py: no such golden Worker: {', '.join(unknown)} (have: {', '.join(found)})")
        return {name: found[name] for name in names}
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_name(name: str) -> str:
    return "w" + "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", name))


def config(chosen: dict[str, Path], ports: dict[str, int], folder: Path) -> str:
    services, sockets, definitions = [], [], []
    for name, path in chosen.items():
        service = service_name(name)
        copy = folder / f"{name}.js"
        shutil.copyfile(path, copy)
        services.append(f'(name = "{service}", worker = .{service})')
        sockets.append(f'(name = "{service}", address = "127.0.0.1:{ports[name]}", http = (), service = "{service}")')
        source = path.read_text()
        module = "esModule" if re.search(r"^\s*export\s+default", source, re.MULTILINE) else None
        if module:
            worker = f'modules = [(name = "{name}.js", esModule = embed "{name}.js")]'
        else:
            worker = f'serviceWorkerScript = embed "{name}.js"'
        definitions.append(f'const {service} :Workerd.Worker = ({worker}, compatibilityDate = "{COMPATIBILITY_DATE}");')
    return "\n".join([
        'using Workerd = import "/workerd/workerd.capnp";',
        "const config :Workerd.Config = (",
        f"  services = [{', '.join(services)}],",
        f"  sockets = [{', '.join(sockets)}],",
        ");",
        *definitions,
        "",
    ])


def wait_for(port: int, process: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode("utf-8", "replace") if process.stdout else ""
            raise SystemExit(f"record_golden.py: workerd exited with status {process.returncode}:\n{output[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"record_golden.py: workerd did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def body_record(data: bytes) -> dict:
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


def send(port: int, request: dict) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = request["body"].encode() if request["body"] is not None else None
    headers = {"Host": HOST, "Accept-Encoding": "identity", **request["headers"]}
    connection.request(request["method"], request["path"], body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    kept = [[key.lower(), value] for key, value in response.getheaders() if key.lower() not in SKIPPED_HEADERS]
    return {"request": request, "status": response.status, "headers": kept, "body": body_record(data)}


def install_workerd(folder: Path) -> Path:
    result = subprocess.run(["npm", "install", "workerd", "--no-audit", "--no-fund", "--silent"], cwd=folder,
                            capture_output=True, text=True)
    binary = folder / "node_modules" / ".bin" / "workerd"
    if result.returncode != 0 or not binary.exists():
        raise SystemExit(f"record_golden.py: `npm install workerd` failed: {result.stderr.strip()[:500]}")
    return binary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="golden Workers to record (default: all)")
    parser.add_argument("--show-log", action="store_true", help="print workerd's own output (uncaught exceptions) at the end")
    parser.add_argument("--workerd", type=Path, help="a workerd binary (default: npm install workerd in a temp folder)")
    args = parser.parse_args(argv)
    chosen = workers(args.names)
    requests = {name: requests_of(path.read_text(), name) for name, path in chosen.items()}
    with tempfile.TemporaryDirectory(prefix="wasmdeck-golden-") as tmp:
        folder = Path(tmp)
        binary = args.workerd or install_workerd(folder)
        version = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout.strip()
        ports = {name: free_port() for name in chosen}
        (folder / "config.capnp").write_text(config(chosen, ports, folder))
        process = subprocess.Popen([str(binary), "serve", "config.capnp"], cwd=folder,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            for name in chosen:
                wait_for(ports[name], process)
            ANSWERS.mkdir(parents=True, exist_ok=True)
            for name in chosen:
                answers = [send(ports[name], request) for request in requests[name]]
                record = {"worker": f"{name}.js", "recordedWith": version, "compatibilityDate": COMPATIBILITY_DATE,
                          "answers": answers}
                (ANSWERS / f"{name}.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
                print(f"{name}: {len(answers)} answers ({', '.join(str(a['status']) for a in answers)})")
        finally:
            process.terminate()
            try:
                output, _ = process.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                output, _ = process.communicate()
            if args.show_log:
                print(output.decode("utf-8", "replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`wasmdeck apply | export | dispatcher | outbound | egress | tail-consumer` and `deploy --abi`.

Most calls go through `cli.main.main(argv)` in this process (a subprocess costs ~0.35 s each);
one test runs the real entry point as a subprocess. Refusals: one line on stderr, exit 1 (2 for a
malformed command line), and nothing changed.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wasmdeck.cli.main import main
from wasmdeck.engine import Engine

from .conftest import ROOT, fixture_module
from .test_manifest import protocol_module, write_platform


class CLI:
    def __init__(self, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.db, self.capsys = db, capsys

    def run(self, *args: str) -> tuple[int, str, str]:
        code = main(["--db", str(self.db), *args])
        captured = self.capsys.readouterr()
        assert "Traceback" not in captured.err, captured.err
        return code, captured.out, captured.err

    def ok(self, *args: str) -> str:
        code, out, err = self.run(*args)
        assert code == 0, f"`wasmdeck {' '.join(args)}` exited {code}: {err}"
        return out

    def refused(self, *args: str, code: int = 1, mentions: str = "") -> str:
        before = self.state()
        status, out, err = self.run(*args)
        lines = err.strip().splitlines()
        assert status == code, f"`wasmdeck {' '.join(args)}` exited {status}, expected {code}: {err}"
        assert len(lines) == 1 and lines[0].startswith("wasmdeck"), f"expected one line on stderr: {err!r}"
        assert mentions in lines[0], f"{lines[0]!r} does not mention {mentions!r}"
        assert self.state() == before, f"`wasmdeck {' '.join(args)}` was refused but changed the platform"
        return lines[0]

    def state(self) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            async with Engine(self.db) as engine:
                return {
                    "config": engine.store.config_version(),
                    "namespaces": [ns.as_dict() for ns in engine.namespaces()],
                    "workers": [w.as_dict() for w in engine.store.workers()],
                    "limits": engine.limits(),
                    "tails": engine.tail_consumers(),
                }

        return asyncio.run(read())


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> CLI:
    return CLI(tmp_path / "w.db", capsys)


@pytest.fixture
def protocol_file(tmp_path: Path) -> Path:
    path = tmp_path / "proto.wasm"
    path.write_bytes(protocol_module(b"cli"))
    return path


def test_apply_dry_run_then_apply_then_no_changes(cli: CLI, tmp_path: Path) -> None:
    manifest = write_platform(tmp_path / "repo")
    out = cli.ok("apply", str(manifest), "--dry-run")
    assert out.startswith(f"{manifest}: ") and "dry run: nothing was changed" in out
    assert "  deploy shop in namespace default: new worker (wcgi, tags free" in out
    assert cli.state()["workers"] == []

    out = cli.ok("apply", str(manifest))
    lines = out.splitlines()
    assert "create namespace staging (routing by path, default limits wallMs=2000)" in lines
    assert lines[-1] == f"{manifest}: {len(lines) - 1} changes made"
    assert cli.ok("apply", str(manifest)) == f"{manifest}: no changes\n"
    # --db may also follow the command
    code = main(["apply", str(manifest), "--db", str(cli.db)])
    assert code == 0 and cli.capsys.readouterr().out == f"{manifest}: no changes\n"


def test_apply_refuses_a_bad_manifest_whole(cli: CLI, tmp_path: Path) -> None:
    manifest = write_platform(tmp_path / "repo")
    cli.ok("apply", str(manifest))
    manifest.write_text(manifest.read_text().replace('tags = ["free"]', 'tags = ["a,b"]').replace('"hi"', '"changed"'))
    line = cli.refused("apply", str(manifest), mentions=f"{manifest}:18: namespaces.default.workers.shop.tags: tag 'a,b'")
    assert line.startswith("wasmdeck: ")
    cli.refused("apply", str(tmp_path / "missing.toml"), mentions="missing.toml: the manifest file does not exist")
    manifest.write_text("[namespaces.default\n")
    cli.refused("apply", str(manifest), mentions=":1:")
    cli.refused("apply", code=2, mentions="required")


def test_export_prints_or_writes_and_round_trips(cli: CLI, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_platform(tmp_path / "repo")
    cli.ok("apply", str(manifest))
    code, out, err = cli.run("export")
    assert code == 0 and out.startswith("# A wasmdeck platform manifest")
    assert 'module = "modules/default/shop.wasm"' in out
    assert "modules were not written" in err and len(err.strip().splitlines()) == 1

    folder = tmp_path / "exported"
    written = cli.ok("export", str(folder))
    assert written == f"wrote {folder / 'platform.toml'} and 6 modules under {folder / 'modules'}\n"
    assert (folder / "platform.toml").read_text() == out
    assert (folder / "modules" / "staging" / "echo.wasm").read_bytes() == fixture_module("echo").read_bytes()

    other = CLI(tmp_path / "other.db", capsys)
    assert other.ok("apply", str(folder)).endswith("changes made\n")
    assert other.ok("export") == out
    (tmp_path / "a-file").write_text("")
    cli.refused("export", str(tmp_path / "a-file"), mentions="is a file")


def test_dispatcher_set_show_clear(cli: CLI, protocol_file: Path) -> None:
    cli.ok("deploy", "router", str(protocol_file))
    cli.ok("deploy", "hello", str(fixture_module("hello")))
    cli.ok("namespace", "create", "paths", "--routing", "path")
    assert cli.ok("dispatcher", "show") == "namespace default: no dispatch Worker (routing by host)\n"
    assert cli.ok("dispatcher", "set", "router") == "namespace default: dispatch Worker router\n"
    assert cli.state()["namespaces"][0]["dispatchWorker"] == "router"
    cli.refused("dispatcher", "set", "hello", mentions="dispatch Worker 'hello' is a wcgi Worker")
    cli.refused("dispatcher", "set", "ghost", mentions="'ghost'")
    cli.refused("dispatcher", "set", "router", "--namespace", "paths", mentions="'router'")
    cli.refused("dispatcher", "set", "router", "--namespace", "nowhere", mentions="namespace 'nowhere' does not exist")
    cli.refused("dispatcher", "set", "Bad_Name", mentions="DNS label")
    cli.refused("dispatcher", code=2)
    assert cli.ok("dispatcher", "clear") == "namespace default: no dispatch Worker (routing by host)\n"
    assert cli.ok("dispatcher", "show", "--namespace", "paths") == "namespace paths: no dispatch Worker (routing by path)\n"


def test_a_javascript_dispatcher_and_its_binding_name(cli: CLI, tmp_path: Path) -> None:
    front = tmp_path / "front.js"
    front.write_text("export default { fetch(request, env) { return env.TENANTS.get('x').fetch(request); } }\n")
    tail = tmp_path / "tail.js"
    tail.write_text("export default { tail(events) {} }\n")
    deployed = cli.ok("deploy", "front", str(front))
    assert deployed.startswith("deployed front version 1 in namespace default (JavaScript, module, fetch, ")
    cli.ok("deploy", "logs", str(tail))
    assert cli.ok("dispatcher", "set", "front", "--binding", "TENANTS") == (
        "namespace default: dispatch Worker front (JavaScript; the namespace is env.TENANTS in its handler)\n")
    assert cli.state()["namespaces"][0]["dispatchBinding"] == "TENANTS"
    cli.refused("dispatcher", "set", "front", "--binding", "no-dashes", mentions="is not a JavaScript identifier")
    cli.refused("dispatcher", "set", "logs", mentions="dispatch Worker 'logs' is a JavaScript Worker without a fetch() handler")
    assert cli.state()["namespaces"][0]["dispatchBinding"] == "TENANTS"
    listed = cli.ok("list")
    assert "LANGUAGE" in listed.splitlines()[0] and all("javascript" in line for line in listed.splitlines()[1:])


def test_outbound_set_show_clear(cli: CLI, protocol_file: Path) -> None:
    cli.ok("deploy", "gateway", str(protocol_file))
    cli.ok("deploy", "hello", str(fixture_module("hello")))
    assert cli.ok("outbound", "show").startswith("namespace default: no Outbound Worker")
    out = cli.ok("outbound", "set", "gateway", "--param", "customer", "--param", "url={request.url}", "--param", "plan=tier-{tag:pro}")
    assert out.splitlines() == [
        "namespace default: Outbound Worker gateway",
        "  parameter customer: set by the dispatcher",
        "  parameter url: template '{request.url}'",
        "  parameter plan: template 'tier-{tag:pro}'",
    ]
    shown = json.loads(cli.ok("outbound", "show", "--json"))
    assert shown == {"service": "gateway", "parameters": [
        {"name": "customer", "template": None}, {"name": "url", "template": "{request.url}"},
        {"name": "plan", "template": "tier-{tag:pro}"}]}
    cli.refused("outbound", "set", "gateway", "--param", "url={request.body}", mentions="{request.body}")
    cli.refused("outbound", "set", "gateway", "--param", "url={request.url", mentions="unmatched")
    cli.refused("outbound", "set", "gateway", "--param", "a-b", mentions="not an environment variable name")
    cli.refused("outbound", "set", "gateway", "--param", "=x", mentions="not NAME or NAME=TEMPLATE")
    cli.refused("outbound", "set", "gateway", "--param", "x", "--param", "x", mentions="listed twice")
    cli.refused("outbound", "set", "hello", mentions="is a wcgi Worker")
    cli.refused("outbound", "set", "ghost", mentions="'ghost'")
    assert cli.ok("outbound", "clear").startswith("namespace default: no Outbound Worker")
    assert json.loads(cli.ok("outbound", "show", "--json")) is None


def test_egress_set_show(cli: CLI) -> None:
    assert cli.ok("egress", "show").splitlines() == [
        "namespace default: egress", "  allow: nothing (egress is opt-in)", "  block: nothing"]
    out = cli.ok("egress", "set", "--allow", "*.example.com", "--allow", "127.0.0.1:8080", "--block", "evil.example.com")
    assert out.splitlines()[1:] == ["  allow: *.example.com, 127.0.0.1:8080", "  block: evil.example.com"]
    assert json.loads(cli.ok("egress", "show", "--json")) == {
        "allow": ["*.example.com", "127.0.0.1:8080"], "block": ["evil.example.com"]}
    for bad, words in (("http://x.com", "without a scheme"), ("x.com:0", "port"), ("bad_host!", "not a hostname"), ("", "empty")):
        cli.refused("egress", "set", "--allow", bad, mentions=words)
    cli.refused("egress", "set", "--allow", "x.com", "--namespace", "nowhere", mentions="namespace 'nowhere' does not exist")
    assert cli.ok("egress", "set").splitlines()[1] == "  allow: nothing (egress is opt-in)"


def test_tail_consumer_add_list_remove(cli: CLI, protocol_file: Path) -> None:
    cli.ok("deploy", "audit", str(protocol_file))
    cli.ok("deploy", "shop", str(fixture_module("hello")))
    assert cli.ok("tail-consumer", "list") == "no tail consumers in namespace default\n"
    assert cli.ok("tail-consumer", "add", "audit", "--worker", "shop") == (
        "namespace default: audit receives the trace items of worker shop\n")
    cli.ok("tail-consumer", "add", "audit", "--dispatcher")
    cli.ok("tail-consumer", "add", "audit")
    cli.ok("tail-consumer", "add", "audit")  # adding twice is harmless
    assert cli.ok("tail-consumer", "list").splitlines() == [
        "audit <- the dispatcher", "audit <- every Worker of the namespace", "audit <- worker shop"]
    assert [entry["scope"] for entry in json.loads(cli.ok("tail-consumer", "list", "--json"))] == [
        "dispatcher", "namespace", "worker"]
    cli.refused("tail-consumer", "add", "shop", mentions="tail consumer 'shop' is a wcgi Worker")
    cli.refused("tail-consumer", "add", "audit", "--worker", "audit", mentions="its own tail consumer")
    cli.refused("tail-consumer", "add", "audit", "--worker", "ghost", mentions="'ghost'")
    cli.refused("tail-consumer", "add", "audit", "--worker", "shop", "--dispatcher", code=2, mentions="not allowed with")
    cli.refused("tail-consumer", "remove", "audit", "--worker", "ghost", mentions="is not a tail consumer")
    assert cli.ok("tail-consumer", "remove", "audit", "--dispatcher") == (
        "namespace default: audit no longer receives the trace items of the dispatcher\n")
    cli.ok("tail-consumer", "remove", "audit")
    assert cli.ok("tail-consumer", "list") == "audit <- worker shop\n"


def test_deploy_abi(cli: CLI) -> None:
    cli.ok("deploy", "interp", str(fixture_module("hello")), "--abi", "protocol")
    cli.ok("deploy", "plain", str(fixture_module("hello")))
    abis = {w["name"]: w["abi"] for w in json.loads(cli.ok("list", "--json"))}
    assert abis == {"interp": "protocol", "plain": "wcgi"}
    cli.ok("dispatcher", "set", "interp")  # an explicitly protocol Worker may front the namespace
    cli.refused("deploy", "x", str(fixture_module("hello")), "--abi", "wasi", code=2, mentions="invalid choice")


def test_the_entry_point_as_a_subprocess(tmp_path: Path) -> None:
    manifest = write_platform(tmp_path / "repo")
    db = tmp_path / "sub.db"
    command = [sys.executable, "-m", "wasmdeck.cli.main", "apply", str(manifest), "--db", str(db)]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0 and first.stdout.endswith("changes made\n"), first.stderr
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (again.returncode, again.stdout, again.stderr) == (0, f"{manifest}: no changes\n", "")

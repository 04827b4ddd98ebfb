"""Platform manifests (engine/manifest.py): apply, re-apply, export round trip, and bad manifests
refused whole with the key named and nothing changed. No Worker runs here, so these are quick."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wasmdeck.engine import Engine, Limits
from wasmdeck.engine.errors import InvalidInput
from wasmdeck.engine.manifest import (
    ManifestError,
    apply_manifest,
    export_manifest,
    line_of,
    load_manifest,
    manifest_text,
    parse_manifest,
)
from wasmdeck.engine.store import TailConsumer

from .conftest import fixture_module
from .wasm_builder import custom, functype, module, name, section, uleb, vec


def protocol_module(variant: bytes = b"") -> bytes:
    """The smallest Worker-protocol module that can run: a WASI command with a memory, exporting the
    protocol marker. `variant` goes into a custom section, so variants have distinct sha256s."""
    return module(
        section(1, vec([functype()])),
        section(3, vec([uleb(0)])),
        section(5, vec([b"\x00\x01"])),
        section(7, vec([name("_start") + b"\x00" + uleb(0), name("wasmdeck_worker_protocol_1") + b"\x00" + uleb(0),
                        name("memory") + b"\x02" + uleb(0)])),
        section(10, vec([uleb(2) + b"\x00\x0b"])),
        *([custom("wasmdeck-test", variant)] if variant else []),
    )


PLATFORM = """\
[limits.free]            # per-tag limits
cpuMs = 10
subRequests = 5

[limits.pro]
cpuMs = 200
memoryMb = 64

[namespaces.default]
routing = "host"
defaults = { cpuMs = 100 }
dispatch_worker = "dispatcher"
egress = { allow = ["127.0.0.1", "*.example.com:443"], block = ["evil.example.com"] }
outbound = { service = "gateway", parameters = ["customer_name", { name = "url", template = "{request.url}" }] }

[namespaces.default.workers.shop]
module = "workers/hello.wasm"
tags = ["free"]
vars = { GREETING = "hi" }

[namespaces.default.workers.dispatcher]
module = "workers/dispatcher.wasm"

[namespaces.default.workers.gateway]
module = "workers/gateway.wasm"
abi = "protocol"

[namespaces.default.workers.audit]
module = "workers/audit.wasm"

[[namespaces.default.tail_consumers]]
consumer = "audit"
worker = "shop"

[[namespaces.default.tail_consumers]]
consumer = "audit"
dispatcher = true

[namespaces.staging]
routing = "path"
defaults = { wallMs = 2000 }

[namespaces.staging.workers.echo]
module = "workers/echo.wasm"
tags = ["pro", "beta"]
abi = "wcgi"

[[namespaces.staging.tail_consumers]]
consumer = "watch"

[namespaces.staging.workers.watch]
module = "workers/audit.wasm"
"""


def write_platform(folder: Path, text: str = PLATFORM) -> Path:
    workers = folder / "workers"
    workers.mkdir(parents=True, exist_ok=True)
    shutil.copy(fixture_module("hello"), workers / "hello.wasm")
    shutil.copy(fixture_module("echo"), workers / "echo.wasm")
    for variant in ("dispatcher", "gateway", "audit"):
        (workers / f"{variant}.wasm").write_bytes(protocol_module(variant.encode()))
    path = folder / "platform.toml"
    path.write_text(text)
    return path


@pytest.fixture
def platform(tmp_path: Path) -> Path:
    return write_platform(tmp_path / "repo")


def state(engine: Engine) -> dict[str, Any]:
    """Everything a manifest can change, plus the config counter every config write bumps."""
    return {
        "config_version": engine.store.config_version(),
        "namespaces": [{k: v for k, v in ns.as_dict().items() if k != "createdAt"} for ns in engine.namespaces()],
        "workers": [(w.namespace, w.name, w.version, w.sha256, w.abi, w.tags, w.vars) for w in engine.store.workers()],
        "limits": engine.limits(),
        "tails": engine.tail_consumers(),
    }


def versions(engine: Engine) -> dict[tuple[str, str], int]:
    return {(w.namespace, w.name): len(engine.versions(w.name, namespace=w.namespace)) for w in engine.store.workers()}


# -- applying ---------------------------------------------------------------------------------


def test_apply_builds_the_whole_platform(engine: Engine, platform: Path) -> None:
    changes = apply_manifest(engine, platform)
    assert changes and all(isinstance(line, str) and "\n" not in line for line in changes)
    # the documented order: namespaces, workers, limits, then the platform settings
    kinds = [line.split()[0] for line in changes]
    assert kinds.index("create") < kinds.index("deploy") < kinds.index("limits")
    assert max(i for i, k in enumerate(kinds) if k == "limits") < changes.index(
        "namespace default: dispatch Worker none -> dispatcher")

    default, staging = engine.namespace("default"), engine.namespace("staging")
    assert (default.routing, default.defaults) == ("host", Limits(cpu_ms=100))
    assert (staging.routing, staging.defaults) == ("path", Limits(wall_ms=2000))
    assert default.dispatch_worker == "dispatcher"
    assert default.egress.as_dict() == {"allow": ["127.0.0.1", "*.example.com:443"], "block": ["evil.example.com"]}
    assert default.outbound is not None and default.outbound.as_dict() == {
        "service": "gateway",
        "parameters": [{"name": "customer_name", "template": None}, {"name": "url", "template": "{request.url}"}],
    }
    assert engine.limits() == {"free": Limits(cpu_ms=10, sub_requests=5), "pro": Limits(cpu_ms=200, memory_mb=64)}

    shop = engine.worker("shop")
    assert (shop.tags, shop.vars, shop.abi) == (("free",), {"GREETING": "hi"}, "wcgi")
    assert shop.sha256 == engine.worker("shop").sha256 and engine.store.module_bytes(shop.sha256) == fixture_module("hello").read_bytes()
    assert {w.name: w.abi for w in engine.workers("default")} == {
        "audit": "protocol", "dispatcher": "protocol", "gateway": "protocol", "shop": "wcgi"}  # detected or given
    echo = engine.worker("echo", namespace="staging")
    assert (echo.tags, echo.abi) == (("pro", "beta"), "wcgi")
    assert set(engine.tail_consumers("default")) == {
        TailConsumer("default", "audit", "worker", "shop"), TailConsumer("default", "audit", "dispatcher", None)}
    assert engine.tail_consumers("staging") == [TailConsumer("staging", "watch", "namespace", None)]
    assert engine.effective_limits("shop").cpu_ms == 10
    assert engine.effective_limits("echo", namespace="staging").sources["wallMs"] == "namespace"


def test_applying_the_same_file_again_changes_nothing(engine: Engine, platform: Path) -> None:
    apply_manifest(engine, platform)
    before, counts = state(engine), versions(engine)
    assert apply_manifest(engine, platform) == []
    assert apply_manifest(engine, platform, dry_run=True) == []
    assert state(engine) == before, "a second apply wrote something"
    assert versions(engine) == counts and set(counts.values()) == {1}, "a second apply made new versions"


def test_only_what_differs_is_changed(engine: Engine, platform: Path) -> None:
    apply_manifest(engine, platform)
    text = platform.read_text()

    # tags in another order are the same tags
    platform.write_text(text.replace('tags = ["pro", "beta"]', 'tags = ["beta", "pro"]'))
    assert apply_manifest(engine, platform) == []

    # one worker's tags: one change, one new version, nothing else touched
    platform.write_text(text.replace('tags = ["free"]', 'tags = ["pro"]'))
    before = versions(engine)
    assert apply_manifest(engine, platform) == ["deploy shop in namespace default: tags free -> pro"]
    after = versions(engine)
    assert after.pop(("default", "shop")) == 2 and before.pop(("default", "shop")) == 1 and after == before
    assert engine.worker("shop").tags == ("pro",) and engine.worker("shop").vars == {"GREETING": "hi"}

    # a new module file; a changed var (its value is never printed); a limit
    (platform.parent / "workers" / "hello.wasm").write_bytes(fixture_module("logger").read_bytes())
    platform.write_text(
        text.replace('tags = ["free"]', 'tags = ["pro"]').replace('"hi"', '"secret-value"').replace("cpuMs = 200", "cpuMs = 300")
    )
    changes = apply_manifest(engine, platform)
    assert len(changes) == 2, changes
    assert changes[0].startswith("deploy shop in namespace default: module ") and "vars changed (GREETING)" in changes[0]
    assert "secret-value" not in " ".join(changes)
    assert changes[1] == "limits for tag pro: cpuMs=300, memoryMb=64 (were cpuMs=200, memoryMb=64)"
    assert engine.worker("shop").version == 3
    assert engine.store.module_bytes(engine.worker("shop").sha256) == fixture_module("logger").read_bytes()

    # an explicit ABI different from the serving one redeploys
    platform.write_text(platform.read_text().replace('module = "workers/audit.wasm"\n', 'module = "workers/audit.wasm"\nabi = "protocol"\n', 1))
    assert apply_manifest(engine, platform) == []
    platform.write_text(platform.read_text().replace('abi = "wcgi"', 'abi = "protocol"'))
    assert apply_manifest(engine, platform) == ["deploy echo in namespace staging: ABI wcgi -> protocol"]


def test_dry_run_lists_the_changes_and_writes_nothing(engine: Engine, platform: Path) -> None:
    before = state(engine)
    planned = apply_manifest(engine, platform, dry_run=True)
    assert state(engine) == before and engine.workers() == []
    assert apply_manifest(engine, platform) == planned


def test_what_the_file_does_not_mention_is_left_alone(engine: Engine, platform: Path) -> None:
    engine.create_namespace("other")
    engine.deploy("extra", fixture_module("hello"), tags=["free"])
    engine.set_limits("gold", cpu_ms=999)
    apply_manifest(engine, platform)
    assert engine.worker("extra").version == 1
    assert engine.limits()["gold"] == Limits(cpu_ms=999)
    assert engine.namespace("other").routing == "host"

    # a namespace whose table leaves a setting out keeps its current value
    engine.set_egress(allow=["api.example.com"], namespace="staging")
    engine.set_outbound("watch", ["who"], namespace="staging")
    assert apply_manifest(engine, platform) == []
    assert engine.namespace("staging").egress.as_dict()["allow"] == ["api.example.com"]

    # clearing is said explicitly
    text = platform.read_text()
    cleared = text.replace('dispatch_worker = "dispatcher"', "dispatch_worker = false").replace(
        'routing = "path"\n', 'routing = "path"\noutbound = false\negress = {}\n')
    cleared = cleared.replace('[[namespaces.default.tail_consumers]]\nconsumer = "audit"\nworker = "shop"\n\n', "")
    cleared = cleared.replace('[[namespaces.default.tail_consumers]]\nconsumer = "audit"\ndispatcher = true\n',
                              "[namespaces.default.workers.extra]\nmodule = \"workers/hello.wasm\"\ntags = [\"free\"]\n")
    cleared = cleared.replace('outbound = { service', 'tail_consumers = []\noutbound = { service')
    platform.write_text(cleared)
    changes = apply_manifest(engine, platform)
    assert "namespace default: dispatch Worker dispatcher -> none" in changes
    assert "namespace staging: Outbound Worker watch (parameters who) -> none" in changes
    assert any(line.startswith("namespace staging: egress allow nothing; block nothing") for line in changes)
    assert sum("tail consumer" in line and "removed" in line for line in changes) == 2
    assert not any("extra" in line for line in changes), "a worker identical to its serving version was redeployed"
    assert engine.namespace().dispatch_worker is None and engine.namespace("staging").outbound is None
    assert engine.tail_consumers("default") == [] and len(engine.tail_consumers("staging")) == 1
    assert apply_manifest(engine, platform) == []


def test_empty_limit_tables_and_defaults_clear(engine: Engine, platform: Path) -> None:
    apply_manifest(engine, platform)
    text = platform.read_text().replace("cpuMs = 10\nsubRequests = 5\n", "").replace("defaults = { cpuMs = 100 }", "defaults = {}")
    platform.write_text(text)
    changes = apply_manifest(engine, platform)
    assert "limits for tag free: removed (were cpuMs=10, subRequests=5)" in changes
    assert "namespace default: default limits cpuMs=100 -> none" in changes
    assert "free" not in engine.limits() and engine.namespace().defaults == Limits()
    assert apply_manifest(engine, platform) == []


def test_a_directory_means_its_platform_toml_and_modules_are_relative_to_the_file(engine: Engine, platform: Path, monkeypatch) -> None:
    monkeypatch.chdir(platform.parent.parent)  # somewhere else: the paths in the file still resolve
    assert apply_manifest(engine, platform.parent)
    assert engine.worker("shop").size == fixture_module("hello").stat().st_size


# -- export -----------------------------------------------------------------------------------


def test_export_round_trip(engine: Engine, platform: Path, tmp_path: Path, wasmer_cache: Path) -> None:
    apply_manifest(engine, platform)
    engine.set_limits("empty-tag", cpu_ms=5, clear=())
    engine.set_limits("empty-tag", clear=("cpu_ms",))  # a tag row with nothing set is not exported
    first = export_manifest(engine, tmp_path / "one")
    assert first == tmp_path / "one" / "platform.toml"
    text = first.read_text()
    assert text == manifest_text(engine)
    assert 'module = "modules/default/shop.wasm"' in text and "empty-tag" not in text
    assert (tmp_path / "one" / "modules" / "default" / "shop.wasm").read_bytes() == fixture_module("hello").read_bytes()
    assert (tmp_path / "one" / "modules" / "staging" / "echo.wasm").read_bytes() == fixture_module("echo").read_bytes()
    # the manifest reads back as itself, layout as documented
    assert "[[namespaces.default.tail_consumers]]" in text and "defaults = { cpuMs = 100 }" in text
    assert parse_manifest(text, base_dir=tmp_path / "one").namespaces["default"].workers["shop"].tags == ("free",)

    fresh = Engine(tmp_path / "fresh.db", cache_dir=wasmer_cache)
    try:
        assert apply_manifest(fresh, first)
        assert apply_manifest(fresh, first) == []
        second = export_manifest(fresh, tmp_path / "two")
        assert second.read_text() == text, "export -> apply -> export is not the identity"
        for module_file in (tmp_path / "one" / "modules").rglob("*.wasm"):
            relative = module_file.relative_to(tmp_path / "one")
            assert (tmp_path / "two" / relative).read_bytes() == module_file.read_bytes()
        assert state(fresh)["namespaces"] == state(engine)["namespaces"]
    finally:
        fresh.store.close()


def test_export_of_a_fresh_platform_and_awkward_values(engine: Engine, tmp_path: Path, wasmer_cache: Path) -> None:
    assert manifest_text(engine).endswith('[namespaces.default]\nrouting = "host"\n')
    engine.deploy("odd", fixture_module("hello"), tags=["a.b", "x=y"],
                  vars={"QUOTE": 'say "hi"\nand \\ bye', "EMPTY": "", **{f"V{i}": "x" * 20 for i in range(8)}})
    engine.set_limits("a.b", memory_mb=16)
    engine.set_egress(allow=[f"host{i}.example.com" for i in range(12)], block=["[::1]:8080"])
    folder = tmp_path / "odd"
    export_manifest(engine, folder)
    text = (folder / "platform.toml").read_text()
    assert '[limits."a.b"]' in text
    fresh = Engine(tmp_path / "fresh.db", cache_dir=wasmer_cache)
    try:
        apply_manifest(fresh, folder)
        odd = fresh.worker("odd")
        assert odd.vars == engine.worker("odd").vars and odd.tags == ("a.b", "x=y")
        assert fresh.namespace().egress == engine.namespace().egress
        assert manifest_text(fresh) == text
    finally:
        fresh.store.close()


def test_export_refuses_a_file_as_its_directory(engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInput, match="is a file"):
        export_manifest(engine, tmp_path / "file")


# -- bad manifests ----------------------------------------------------------------------------

Edit = Callable[[Path], None]


def replace(old: str, new: str, count: int = 1) -> Edit:
    def edit(path: Path) -> None:
        text = path.read_text()
        assert old in text, old
        path.write_text(text.replace(old, new, count))

    return edit


def corrupt_module(path: Path) -> None:
    (path.parent / "workers" / "hello.wasm").write_bytes(fixture_module("hello").read_bytes()[:200])


def new_worker_then(edit: Edit) -> Edit:
    """Declare a brand-new worker first, so a refusal must also keep it from being deployed."""

    def both(path: Path) -> None:
        path.write_text(path.read_text() + '\n[namespaces.default.workers.newbie]\nmodule = "workers/echo.wasm"\n')
        edit(path)

    return both


BAD = [
    # (id, edit, key path named, words in the message, line)
    ("unknown-key", replace('vars = { GREETING = "hi" }', 'vars = { GREETING = "hi" }\ncolour = "red"'),
     "namespaces.default.workers.shop.colour", "unknown key 'colour'", 20),
    ("unknown-top-key", replace("[limits.free]", 'version = 2\n\n[limits.free]'), "version", "unknown key", 1),
    ("unknown-namespace-key", replace('routing = "path"', 'routing = "path"\nrouter = "x"'),
     "namespaces.staging.router", "unknown key 'router'", 41),
    ("bad-tag", replace('tags = ["free"]', 'tags = ["a,b"]'), "namespaces.default.workers.shop.tags", "tag 'a,b' contains ','", 18),
    ("too-many-tags", replace('tags = ["free"]', f"tags = {[f't{i}' for i in range(9)]}".replace("'", '"')),
     "namespaces.default.workers.shop.tags", "at most 8 tags", 18),
    ("bad-limit-value", replace("cpuMs = 10\n", "cpuMs = 0\n"), "limits.free.cpuMs", "cpuMs must be between 1 and", 2),
    ("limit-not-a-number", replace("subRequests = 5", 'subRequests = "5"'), "limits.free.subRequests", "whole number", 3),
    ("unknown-limit", replace("memoryMb = 64", "memoryMB = 64"), "limits.pro.memoryMB", "unknown limit", 7),
    ("bad-default-limit", replace("defaults = { cpuMs = 100 }", "defaults = { cpuMs = 1.5 }"),
     "namespaces.default.defaults.cpuMs", "whole number", 11),
    ("bad-routing", replace('routing = "path"', 'routing = "dns"'), "namespaces.staging.routing", "not one of host, path", 40),
    ("bad-abi", replace('abi = "wcgi"', 'abi = "wasi"'), "namespaces.staging.workers.echo.abi", "'wasi' is not one of", 46),
    ("bad-worker-name", replace("[namespaces.default.workers.gateway]", "[namespaces.default.workers.Gate_way]"),
     "namespaces.default.workers.Gate_way", "not a DNS label", 24),
    ("reserved-var", replace('GREETING = "hi"', 'HTTP_HOST = "x"'), "namespaces.default.workers.shop.vars.HTTP_HOST", "reserved", 19),
    ("var-not-text", replace('GREETING = "hi"', "GREETING = 42"), "namespaces.default.workers.shop.vars.GREETING", "must be text", 19),
    ("missing-module-file", replace("workers/hello.wasm", "workers/nope.wasm"),
     "namespaces.default.workers.shop.module", "workers/nope.wasm does not exist", 17),
    ("missing-module-key", replace('module = "workers/echo.wasm"\n', ""), "namespaces.staging.workers.echo.module", "is missing", 43),
    ("corrupt-module", corrupt_module, "namespaces.default.workers.shop.module", "workers/hello.wasm is refused", 17),
    ("wcgi-module-not-a-command", lambda p: (p.parent / "workers" / "echo.wasm").write_bytes(b"\0asm\x01\0\0\0"),
     "namespaces.staging.workers.echo.module", "_start", 44),
    ("unknown-dispatch-worker", new_worker_then(replace('dispatch_worker = "dispatcher"', 'dispatch_worker = "ghost"')),
     "namespaces.default.dispatch_worker", "'ghost' is neither declared", 12),
    ("unknown-outbound-service", new_worker_then(replace('service = "gateway"', 'service = "nobody"')),
     "namespaces.default.outbound.service", "'nobody' is neither declared", 14),
    ("unknown-tailed-worker", new_worker_then(replace('worker = "shop"', 'worker = "ghost"')),
     "namespaces.default.tail_consumers[0].worker", "'ghost' is neither declared", 33),
    ("unknown-tail-consumer", new_worker_then(replace('consumer = "watch"', 'consumer = "nobody"')),
     "namespaces.staging.tail_consumers[0].consumer", "'nobody' is neither declared", 49),
    ("wcgi-dispatch-worker", new_worker_then(replace('dispatch_worker = "dispatcher"', 'dispatch_worker = "shop"')),
     "namespaces.default.dispatch_worker", "a dispatch Worker must speak the Worker protocol", 12),
    ("tail-consumer-of-itself", replace('worker = "shop"', 'worker = "audit"'),
     "namespaces.default.tail_consumers[0].worker", "its own tail consumer", 33),
    ("tail-consumer-two-scopes", replace('worker = "shop"', 'worker = "shop"\ndispatcher = true'),
     "namespaces.default.tail_consumers[0]", "not several", 31),
    ("bad-egress-entry", replace('"evil.example.com"', '"https://evil.example.com/x"'),
     "namespaces.default.egress.block[0]", "without a scheme or path", 13),
    ("bad-egress-port", replace('"*.example.com:443"', '"*.example.com:99999"'),
     "namespaces.default.egress.allow[1]", "port", 13),
    ("egress-not-a-list", replace('block = ["evil.example.com"]', 'block = "evil.example.com"'),
     "namespaces.default.egress.block", "must be a list of strings", 13),
    ("bad-outbound-template", replace("{request.url}", "{request.body}"),
     "namespaces.default.outbound.parameters[1].template", "{request.body}", 14),
    ("unbalanced-outbound-template", replace("{request.url}", "{request.url"),
     "namespaces.default.outbound.parameters[1].template", "unmatched", 14),
    ("bad-outbound-parameter-name", replace('"customer_name"', '"customer-name"'),
     "namespaces.default.outbound.parameters[0]", "not an environment variable name", 14),
    ("duplicate-tail-consumer", replace("[namespaces.staging]\n", '[[namespaces.default.tail_consumers]]\nconsumer = "audit"\ndispatcher = true\n\n[namespaces.staging]\n'),
     "namespaces.default.tail_consumers[2]", "listed twice", 39),
]


@pytest.mark.parametrize(("edit", "key", "words", "line"), [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_a_bad_manifest_is_refused_whole_and_changes_nothing(
    engine: Engine, platform: Path, edit: Edit, key: str, words: str, line: int
) -> None:
    engine.deploy("extra", fixture_module("hello"))
    before = state(engine)
    edit(platform)
    with pytest.raises(ManifestError) as refused:
        apply_manifest(engine, platform)
    message = str(refused.value)
    assert message.startswith(f"{platform}:{line}: {key}: "), message
    assert words in message, message
    assert "\n" not in message
    assert state(engine) == before, "a refused manifest changed the platform"
    with pytest.raises(ManifestError):
        apply_manifest(engine, platform, dry_run=True)


def test_a_refused_manifest_after_a_good_one_changes_nothing(engine: Engine, platform: Path) -> None:
    apply_manifest(engine, platform)
    before = state(engine)
    text = platform.read_text()
    platform.write_text(text.replace('tags = ["free"]', 'tags = ["pro"]').replace('worker = "shop"', 'worker = "ghost"'))
    with pytest.raises(ManifestError, match="ghost"):
        apply_manifest(engine, platform)
    assert state(engine) == before


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ('[namespaces.default]\nrouting = host\n', ":2:11: ", "not valid TOML: invalid value"),
        ('[namespaces.default]\n[namespaces.default]\n', ":2:", "cannot declare namespaces.default twice"),
        ('[namespaces.default\n', ":1:", "not valid TOML"),
        ('[limits.free]\ncpuMs = 1\n[limits', ":3", "not valid TOML"),
    ],
)
def test_toml_syntax_errors_carry_the_line(engine: Engine, tmp_path: Path, text: str, where: str, words: str) -> None:
    path = tmp_path / "platform.toml"
    path.write_text(text)
    before = state(engine)
    with pytest.raises(ManifestError) as refused:
        apply_manifest(engine, path)
    assert str(refused.value).startswith(f"{path}{where}") and words in str(refused.value), str(refused.value)
    assert refused.value.line is not None
    assert state(engine) == before


def test_file_problems(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="nope.toml: the manifest file does not exist"):
        apply_manifest(engine, tmp_path / "nope.toml")
    with pytest.raises(ManifestError, match="does not exist"):
        apply_manifest(engine, tmp_path)  # a directory without platform.toml
    (tmp_path / "latin1.toml").write_bytes(b'# caf\xe9\n')
    with pytest.raises(ManifestError, match="not UTF-8"):
        load_manifest(tmp_path / "latin1.toml")
    (tmp_path / "empty.toml").write_text("")
    assert apply_manifest(engine, tmp_path / "empty.toml") == []


def test_module_size_limit_applies(tmp_path: Path, wasmer_cache: Path) -> None:
    folder = tmp_path / "repo"
    path = write_platform(folder)
    small = Engine(tmp_path / "small.db", cache_dir=wasmer_cache, max_module_bytes=16 * 1024)
    try:
        with pytest.raises(ManifestError, match=r"namespaces\.default\.workers\.shop\.module: module workers/hello\.wasm is .* over the"):
            apply_manifest(small, path)
        assert small.workers() == []
    finally:
        small.store.close()


def test_line_of_is_best_effort_but_follows_tables_keys_and_arrays() -> None:
    text = PLATFORM
    assert line_of(text, ("limits", "pro", "memoryMb")) == 7
    assert line_of(text, ("namespaces", "default", "egress", "allow", 0)) == 13
    assert line_of(text, ("namespaces", "default", "tail_consumers", 1, "dispatcher")) == 37
    assert line_of(text, ("namespaces", "default", "workers", "shop", "missing")) == 16  # the table's header
    assert line_of(text, ("namespaces", "staging", "workers", "watch")) == 51
    assert line_of('a = 1\n"b c" = 2\n', ("b c",)) == 2
    assert line_of("x = 1\n", ("nothing", "here")) is None


JS_PLATFORM = """
[namespaces.default]
dispatch_worker = "front"
dispatch_binding = "TENANTS"

[namespaces.default.workers.front]
module = "workers/front.js"

[namespaces.default.workers.shop]
module = "workers/shop.mjs"
vars = { GREETING = "hi" }
"""


def _js_platform(folder: Path) -> Path:
    (folder / "workers").mkdir(parents=True)
    (folder / "workers" / "front.js").write_text(
        "export default { fetch(request, env) { return env.TENANTS.get('shop').fetch(request); } }\n")
    (folder / "workers" / "shop.mjs").write_text(
        "export default { fetch(request, env) { return new Response(`${env.GREETING} ${new Error('x').stack.split('at ')[1]}`); } }\n")
    (folder / "platform.toml").write_text(JS_PLATFORM)
    return folder / "platform.toml"


async def test_javascript_workers_apply_and_export_as_scripts(engine: Engine, tmp_path: Path, wasmer_cache: Path) -> None:
    lines = apply_manifest(engine, _js_platform(tmp_path / "repo"))
    assert "namespace default: dispatch binding env.dispatcher -> env.TENANTS" in lines
    assert {w.name: w.abi for w in engine.workers()} == {"front": "javascript", "shop": "javascript"}
    answer = await engine.request("http://shop.example.com/")
    assert answer.text.startswith("hi fetch (shop.mjs:1:")  # the file name the manifest named, in its stack
    assert apply_manifest(engine, tmp_path / "repo" / "platform.toml") == []
    exported = export_manifest(engine, tmp_path / "out")
    text = exported.read_text()
    assert 'module = "modules/default/shop.js"' in text and 'dispatch_binding = "TENANTS"' in text and 'abi = "javascript"' in text
    assert (tmp_path / "out" / "modules" / "default" / "shop.js").read_bytes() == (tmp_path / "repo" / "workers" / "shop.mjs").read_bytes()
    fresh = Engine(tmp_path / "fresh.db", cache_dir=wasmer_cache)
    try:
        apply_manifest(fresh, exported)
        assert manifest_text(fresh) == text
        assert fresh.namespace().dispatch_binding == "TENANTS"
    finally:
        await fresh.close()


def test_a_script_that_is_not_text_is_refused_before_anything_is_written(engine: Engine, tmp_path: Path) -> None:
    manifest = _js_platform(tmp_path / "repo")
    (tmp_path / "repo" / "workers" / "shop.mjs").write_bytes(b"export \xff {}")
    manifest.write_text(JS_PLATFORM.replace('module = "workers/shop.mjs"', 'module = "workers/shop.mjs"\nabi = "javascript"'))
    with pytest.raises(ManifestError, match=r"namespaces\.default\.workers\.shop\.module: script workers/shop\.mjs is refused: the script is not valid UTF-8"):
        apply_manifest(engine, manifest)
    manifest.write_text(JS_PLATFORM.replace('dispatch_binding = "TENANTS"', 'dispatch_binding = "not-ok"'))
    with pytest.raises(ManifestError, match="not a JavaScript identifier"):
        apply_manifest(engine, manifest)
    assert engine.workers() == []

"""The JavaScript runtime module is built reproducibly from its sources and shipped as package data."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "jsruntime" / "build.py"


def _build_module():
    spec = importlib.util.spec_from_file_location("jsruntime_build", BUILD)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_the_module_ships_inside_the_installed_package() -> None:
    shipped = resources.files("wasmdeck.engine").joinpath("runtimes/javascript.wasm").read_bytes()
    assert shipped == (ROOT / "engine" / "runtimes" / "javascript.wasm").read_bytes()


def test_the_build_pins_the_quickjs_sdist_and_strips_custom_sections() -> None:
    build = _build_module()
    assert build.QUICKJS_REQUIREMENT == "quickjs-ng==0.17.0.2"
    assert len(build.QUICKJS_SHA256) == 64
    def custom(name: bytes) -> bytes:
        return b"\x00" + bytes([len(name) + 1, len(name)]) + name
    header = b"\0asm\x01\0\0\0"
    with_debug = header + custom(b".debug_info") + custom(b"name") + custom(b"producers")
    assert build.strip_custom_sections(with_debug) == header + custom(b"name")
    prelude = build.prelude()
    assert prelude.startswith(b"(function (host) {") and prelude.rstrip().endswith(b"})")
    for name in build.PRELUDE_FILES:
        assert (ROOT / "jsruntime" / "js" / name).exists()


def test_a_tampered_sdist_is_refused(tmp_path: Path) -> None:
    build = _build_module()
    (tmp_path / build.QUICKJS_SDIST).write_bytes(b"not the real sdist")
    with pytest.raises(SystemExit, match="expected " + build.QUICKJS_SHA256):
        build.sdist(tmp_path)


@pytest.mark.timeout(900)
@pytest.mark.skipif(importlib.util.find_spec("ziglang") is None, reason="ziglang (dev extras) is not installed")
def test_build_check_reproduces_the_committed_module() -> None:
    result = subprocess.run([sys.executable, str(BUILD), "--check"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "identical" in result.stdout

"""The committed example Workers (fixtures/wcgi and fixtures/protocol) are exactly what their sources build to."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from .conftest import ROOT


@pytest.mark.timeout(600)  # the first build on a machine compiles wasi-libc (about 30 s)
def test_fixture_builds_are_reproducible() -> None:
    if importlib.util.find_spec("ziglang") is None:
        pytest.skip("ziglang is not installed (pip install -e '.[dev]')")
    result = subprocess.run(
        [sys.executable, str(ROOT / "fixtures" / "build.py"), "--check"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # every WCGI Worker (C) and every protocol Worker (C with sdk/c/wasmdeck.h, Zig with sdk/zig/wasmdeck.zig)
    sources = [
        *(ROOT / "fixtures" / "wcgi").glob("*.c"),
        *(ROOT / "fixtures" / "protocol").glob("*.c"),
        *(ROOT / "fixtures" / "protocol").glob("*.zig"),
    ]
    assert result.stdout.count(": identical") == len(sources)
    assert any(source.suffix == ".zig" for source in sources)

"""The package as a user installs it: a wheel with every module and data file, importable and
runnable from outside the checkout (no editable install, no source tree on the path)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT

SOURCE_PACKAGES = {"engine": "engine", "client": "client", "cli": "cli", "server": "server", "console": "console"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (found,) = out.glob("wasmdeck-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed (without its dependencies, which this venv has) into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return target


def _run_from_wheel(installed: Path, cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(installed), "WASMDECK_DB": str(cwd / "w.db"), "PYTHONSAFEPATH": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _source_modules() -> set[str]:
    """Every module the checkout has, by its import name."""
    names = {"wasmdeck", "wasmdeck.__main__", "wasmdeck.demo"}
    for package, folder in SOURCE_PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.add(".".join(("wasmdeck", package, *parts)))
    return names


def test_the_wheel_has_one_top_level_package_with_every_module_and_data_file(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"wasmdeck"}, "only the wasmdeck package goes into site-packages"
    modules = set()
    for name in names:
        if name.endswith(".py"):
            parts = name.removesuffix(".py").split("/")
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules.add(".".join(parts))
    assert _source_modules() <= modules, sorted(_source_modules() - modules)
    tcss = {p.relative_to(ROOT).as_posix() for p in (ROOT / "console").rglob("*.tcss")}
    assert {"wasmdeck/" + name for name in tcss} <= set(names)
    assert "wasmdeck/demo/platform.toml" in names and "wasmdeck/py.typed" in names
    demo_modules = {p.name for p in (ROOT / "wasmdeck" / "demo" / "workers").glob("*.wasm")}
    assert demo_modules and {f"wasmdeck/demo/workers/{n}" for n in demo_modules} <= set(names)
    demo_scripts = {p.name for p in (ROOT / "wasmdeck" / "demo" / "workers").glob("*.js")}
    assert {"dispatcher.js", "gateway.js", "audit.js", "catalog.js"} <= demo_scripts  # the demo's JavaScript Workers
    assert {f"wasmdeck/demo/workers/{n}" for n in demo_scripts} <= set(names)
    assert "wasmdeck/engine/runtimes/javascript.wasm" in names  # the JavaScript runtime every JS Worker runs on


def test_every_module_imports_from_the_installed_wheel(installed: Path, tmp_path: Path):
    modules = sorted(_source_modules() - {"wasmdeck.__main__"})
    script = (
        "import importlib, sys\n"
        f"root = {str(installed)!r}\n"
        f"for name in {modules!r}:\n"
        "    module = importlib.import_module(name)\n"
        "    assert module.__file__.startswith(root), (name, module.__file__)\n"
        "print('imported', len(" + repr(modules) + "))\n"
    )
    result = _run_from_wheel(installed, tmp_path, "-c", script)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"imported {len(modules)}" in result.stdout


def test_the_demo_runs_from_the_installed_wheel_in_another_folder(installed: Path, tmp_path: Path):
    result = _run_from_wheel(installed, tmp_path, "-m", "wasmdeck", "--db", str(tmp_path / "demo.db"), "demo", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "200 GET http://hello.demo.local/" in result.stdout
    assert "exception" in result.stdout  # the trap tenant's own outcome, seen through the dispatch Worker


def test_the_console_starts_from_the_installed_wheel(installed: Path, tmp_path: Path):
    """The console's screens, widgets and styles load from the wheel and it draws the demo platform."""
    script = """
import asyncio
from wasmdeck.client import LocalClient
from wasmdeck.cli.demo import setup_demo_platform
from wasmdeck.console.app import WasmdeckApp
from wasmdeck.engine import Engine

async def main():
    engine = Engine("console.db")
    setup_demo_platform(engine)
    app = WasmdeckApp(LocalClient(engine), namespace="default")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        for key in "123456":
            await pilot.press(key)
            await pilot.pause()
        await pilot.press("1")
        await pilot.pause()
        rows = app.query_one("#workers-table").row_count
    await engine.close()
    print("workers shown:", rows)

asyncio.run(main())
"""
    result = _run_from_wheel(installed, tmp_path, "-c", script, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "workers shown: 12" in result.stdout  # the demo platform's Workers, the JavaScript ones included

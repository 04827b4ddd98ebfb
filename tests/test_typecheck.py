"""The whole package type-checks clean under mypy (configured in pyproject.toml, `[tool.mypy]`).

mypy cannot follow setuptools' package-dir mapping in an editable install, so the test lays the
package out as it is installed: `<tmp>/wasmdeck/` holds copies of `wasmdeck/*.py` and links to
the checkout's `engine/`, `client/`, `cli/`, `server/`, `console/` and `demo/` folders.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SUBPACKAGES = ("engine", "client", "cli", "server", "console")


def _installed_layout(root: Path) -> Path:
    package = root / "wasmdeck"
    package.mkdir()
    for source in (REPO / "wasmdeck").iterdir():
        if source.suffix == ".py" or source.name == "py.typed":
            shutil.copy2(source, package / source.name)
    (package / "demo").symlink_to(REPO / "wasmdeck" / "demo", target_is_directory=True)
    for name in SUBPACKAGES:
        (package / name).symlink_to(REPO / name, target_is_directory=True)
    return package


def test_mypy_finds_no_errors_in_the_package(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="mypy is in the dev extras: pip install -e '.[dev]'")
    _installed_layout(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
         "--cache-dir", str(tmp_path / ".mypy_cache"), "-p", "wasmdeck"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, f"mypy found errors:\n{result.stdout}{result.stderr}"
    assert "Success: no issues found" in result.stdout, result.stdout

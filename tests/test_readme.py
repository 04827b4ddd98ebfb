"""The README's Python example runs as printed, and its CLI forms exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_python_example_runs(tmp_path: Path) -> None:
    section = README.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "fixtures").symlink_to(ROOT / "fixtures")
    (tmp_path / "example.py").write_text(code)
    result = subprocess.run(
        [sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "200 Hi! ok"
    assert lines[1] == "['exceededCpu']"
    assert lines[2].startswith("[1] {'cpuMs': 'tag:free'")  # camelCase, like every name the API shows
    assert lines[3] == "200 Hi!"
    assert lines[4] == "1 403 55 outbound"  # the Outbound Worker blocked the host
    assert lines[5] == "1 error EgressBlocked refused"  # the egress policy did
    assert lines[6] == "['tail shop ok 200', 'tail shop ok 200']"  # the Tail Worker saw both
    assert result.stderr == ""


def test_quick_start_commands_are_the_ones_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install --quiet -e '.[dev]'" in ci and ".venv/bin/python -m pytest" in ci
    assert ".venv/bin/pip install -e '.[dev]' && .venv/bin/python -m pytest" in README
    assert ".venv/bin/wasmdeck console --demo" in README

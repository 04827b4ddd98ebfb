"""The demo platform: `platform.toml` and the modules it names (in `workers/`), shipped as package data."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path


@contextmanager
def demo_manifest() -> Iterator[Path]:
    """The demo's `platform.toml` as a file on disk, with its modules beside it, for as long as
    the block runs (the installed package's own file, or a temporary copy when the package is
    not on a file system, such as inside a zip)."""
    folder = resources.files(__name__)
    if isinstance(folder, Path):
        yield folder / "platform.toml"
        return
    with tempfile.TemporaryDirectory(prefix="wasmdeck-demo-") as tmp:
        target = Path(tmp)
        (target / "platform.toml").write_bytes(folder.joinpath("platform.toml").read_bytes())
        (target / "workers").mkdir()
        for entry in folder.joinpath("workers").iterdir():
            (target / "workers" / entry.name).write_bytes(entry.read_bytes())
        yield target / "platform.toml"


__all__ = ["demo_manifest"]

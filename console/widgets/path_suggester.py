"""Completes file paths as they are typed (accept with the right arrow key)."""

from __future__ import annotations

import os
from pathlib import Path

from textual.suggester import Suggester

UPLOADABLE = (".wasm", ".js", ".mjs")


class PathSuggester(Suggester):
    def __init__(self, base: Path | None = None) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.base = base or Path.cwd()

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        expanded = Path(os.path.expanduser(value))
        folder_text, _, prefix = value.rpartition("/")
        folder = expanded.parent if not value.endswith("/") else expanded
        if not folder.is_absolute():
            folder = self.base / folder
        if value.endswith("/"):
            prefix = ""
        try:
            names = sorted(entry.name for entry in os.scandir(folder) if entry.name.startswith(prefix))
        except OSError:
            return None
        names = [name for name in names if not name.startswith(".") or prefix.startswith(".")]
        if not names:
            return None
        # prefer modules, scripts and folders, the things an upload wants
        names.sort(key=lambda name: (not (name.endswith(UPLOADABLE) or (folder / name).is_dir()), name))
        choice = names[0]
        suffix = "/" if (folder / choice).is_dir() else ""
        head = value[: len(value) - len(prefix)] if prefix else value
        return head + choice + suffix

"""The console's styling convention: every styled widget or screen keeps its rules in a `.tcss`
file beside its module (`requests.py` → `requests.tcss`), loaded as the class's DEFAULT_CSS with
`stylesheet(__name__)`, so each widget carries its own look wherever it is mounted. A module holds
at most one styled class. The app's own frame is `app.tcss`, loaded the same way as the app's CSS.
No CSS lives in Python strings."""

from __future__ import annotations

from importlib import resources


def stylesheet(module: str) -> str:
    """The rules in `<module>.tcss`, read from the installed package."""
    package, _, name = module.rpartition(".")
    return resources.files(package).joinpath(f"{name}.tcss").read_text(encoding="utf-8")

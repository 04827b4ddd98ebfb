"""What every screen and dialog of the console needs from the app it runs in, typed.

Widgets reach the engine only through `ConsoleHost.client` (an `EngineClient`), never through
the app's class, so a view also runs inside a small test app that offers the same four things.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from textual.dom import DOMNode

from wasmdeck.client import EngineClient


@runtime_checkable
class ConsoleHost(Protocol):
    client: EngineClient
    """The engine, in this process or remote."""
    namespace: str
    """The namespace the console shows."""
    clock: Callable[[], float]
    """Seconds, for elapsed times and rates (pinned in tests)."""
    upload_base: Path
    """Where relative module paths in the upload dialog start."""


def host_of(node: DOMNode) -> ConsoleHost:
    """The console app `node` is mounted in; TypeError in an app that does not offer what a view needs."""
    app = node.app
    if not isinstance(app, ConsoleHost):
        raise TypeError(f"{type(node).__name__} must run in an app with client, namespace, clock and upload_base")
    return app


class UsesConsole:
    """Mixin for the console's widgets and screens: `self.host` is the console app, typed."""

    @property
    def host(self) -> ConsoleHost:
        assert isinstance(self, DOMNode), "UsesConsole is for widgets and screens"
        return host_of(self)


@runtime_checkable
class SaveStep(Protocol):
    """A view or form whose edits apply only when saved: the app asks before they are left behind."""

    def unsaved_changes(self) -> str | None:
        """What is edited and not saved ("the Outbound settings of namespace default"), or None."""

    async def save_changes(self) -> bool:
        """Save; False (with the reason shown where the edits are) when it was refused."""

    def discard_changes(self) -> None:
        """Forget the edits: show what is saved again."""

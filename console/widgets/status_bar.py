"""The status line: namespace, request rate, error rate and p50 latency of recent traffic."""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable
from typing import Any

from textual.markup import escape
from textual.reactive import reactive
from textual.widgets import Static

from wasmdeck.engine.traces import ERROR_OUTCOMES, is_instance_event

from ..formatting import error_rate_style
from ..styles import stylesheet

WINDOW_S = 10.0


class StatusBar(Static):
    DEFAULT_CSS = stylesheet(__name__)

    namespace: reactive[str] = reactive("default")

    def __init__(self, clock: Callable[[], float], source: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._clock = clock
        self._source = source
        self._recent: deque[tuple[float, bool, int]] = deque()

    def on_mount(self) -> None:
        self.refresh_text()

    def record(self, items: list[dict[str, Any]]) -> None:
        """Count traffic of the shown namespace, as it arrives."""
        now = self._clock()
        for item in items:
            # an instance that failed while idle is no request: it counts in no rate
            if item.get("dispatchNamespace") != self.namespace or is_instance_event(item):
                continue
            self._recent.append((now, item.get("outcome") in ERROR_OUTCOMES, int(item.get("wallTime") or 0)))
        self.refresh_text()

    def watch_namespace(self, _namespace: str) -> None:
        self._recent.clear()
        self.refresh_text()

    def numbers(self) -> tuple[float, float, int | None]:
        horizon = self._clock() - WINDOW_S
        while self._recent and self._recent[0][0] < horizon:
            self._recent.popleft()
        count = len(self._recent)
        rate = count / WINDOW_S
        errors = sum(1 for _, failed, _ in self._recent if failed) / count if count else 0.0
        p50 = int(statistics.median(wall for _, _, wall in self._recent)) if count else None
        return rate, errors, p50

    def refresh_text(self) -> None:
        rate, errors, p50 = self.numbers()
        error_style = error_rate_style(errors)
        latency = f"{p50} ms" if p50 is not None else "-"
        self.update(
            f"[b]namespace[/b] {escape(self.namespace)}  [dim]│[/dim]  {rate:.1f} req/s  [dim]│[/dim]  "
            f"errors [{error_style}]{errors:.0%}[/]  [dim]│[/dim]  p50 {latency}  [dim]│[/dim]  [dim]{escape(self._source)}[/dim]"
        )

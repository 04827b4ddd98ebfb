"""The worker selected in the Workers table, in a few lines under it: its module and version, its
warm instances now and since the engine started, their retirements by reason, and the names
of its secrets (never a value: no API returns one)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.text import Text
from textual.widgets import Static

from wasmdeck.client import WorkerRow

from ..formatting import date_time, reuse_share, retirements_text, size_text
from ..styles import stylesheet

LABEL_WIDTH = 11


def detail_text(row: WorkerRow | None, stats: Mapping[str, Any] | None, secrets: Sequence[str] | None) -> Text:
    """The pane's lines for `row` with its instance numbers (`stats`, None when none ran) and its
    secrets' names (`secrets`, None while they are being read)."""
    if row is None:
        return Text("No worker selected.", style="dim")
    worker = row.worker
    text = Text(end="")

    def line(label: str, body: Text) -> None:
        if text:
            text.append("\n")
        text.append(f"{label:<{LABEL_WIDTH}}", "bold")
        text.append_text(body)

    kind = "JavaScript script" if worker.language == "javascript" else f"WebAssembly module, {worker.abi}"
    line(
        "Module",
        Text.assemble(
            kind, (" · ", "dim"), size_text(worker.size), (" · ", "dim"), f"sha256 {worker.sha256[:12]}",
            (" · ", "dim"), f"v{worker.version} since {date_time(worker.created_at)}",
        ),
    )
    if stats:
        now = Text.assemble(f"now {stats.get('busy', 0)} busy, {stats.get('idle', 0)} idle")
        if stats.get("starting"):
            now.append(f", {stats['starting']} starting")
        invocations = int(stats.get("invocations") or 0)
        now.append(" · ", "dim")
        now.append(f"started {stats.get('started', 0)}")
        now.append(" · ", "dim")
        now.append(f"{invocations} invocation{'' if invocations == 1 else 's'}")
        share = reuse_share(stats)
        if share is not None:
            now.append(f", {share:.0%} on a warm instance")
        line("Instances", now)
        line("Retired", retirements_text(stats.get("retired")))
    elif worker.abi == "wcgi":
        line("Instances", Text("none: a WCGI Worker runs a new process for each request", style="dim"))
        line("Retired", Text("-", style="dim"))
    else:
        line("Instances", Text("none since the engine started (the first request starts one)", style="dim"))
        line("Retired", Text("none", style="dim"))
    if secrets is None:
        names = Text("…", style="dim")
    elif not secrets:
        names = Text.assemble(("none", "dim"), ("  (s sets one)", "dim"))
    else:
        names = Text.assemble(", ".join(secrets), ("  (s sets or deletes one)", "dim"))
    line("Secrets", names)
    return text


class WorkerDetail(Static):
    """Shows one worker; the Workers view calls `show()` when the selection or its numbers change."""

    DEFAULT_CSS = stylesheet(__name__)

    plain = ""
    """What the pane shows, without styles."""

    def show(self, row: WorkerRow | None, stats: Mapping[str, Any] | None, secrets: Sequence[str] | None) -> None:
        self.border_title = f"{row.worker.name} v{row.worker.version}" if row is not None else "Worker"
        text = detail_text(row, stats, secrets)
        self.plain = text.plain
        self.update(text)

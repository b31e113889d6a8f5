"""How a local run looks on a terminal and as JSON."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from braid.api.common import human_size
from braid.api.reasons import EventReason
from braid.api.run import StepPhase, StepStatus, TaskStatus, WorkflowRunStatus
from braid.engine import RecordEvent, StartAttempt

_ICONS: dict[str, str] = {
    EventReason.STEP_SUCCEEDED: "[green]✓[/]",
    EventReason.STEP_FAILED: "[red]✗[/]",
    EventReason.ITEM_FAILED: "[red]✗[/]",
    EventReason.STEP_RETRYING: "[yellow]↻[/]",
    EventReason.STEP_SKIPPED: "[dim]-[/]",
    EventReason.APPROVAL_REQUESTED: "[yellow]?[/]",
    EventReason.APPROVED: "[green]✓[/]",
    EventReason.APPROVAL_REJECTED: "[red]✗[/]",
    EventReason.APPROVAL_REFUSED: "[red]![/]",
    EventReason.RUN_SUCCEEDED: "[bold green]✓[/]",
    EventReason.RUN_FAILED: "[bold red]✗[/]",
    EventReason.RUN_CANCELLED: "[bold red]✗[/]",
    EventReason.SLA_BREACHED: "[red]⏰[/]",
}
_PHASE_STYLE = {
    StepPhase.SUCCEEDED: "green",
    StepPhase.FAILED: "red",
    StepPhase.CANCELLED: "red",
    StepPhase.SKIPPED: "dim",
}


class ProgressPrinter:
    """Prints each event as one line, with the seconds since the run began."""

    def __init__(self, console: Console, *, live: bool = False) -> None:
        self.console = console
        self.began = time.monotonic()
        self.rejected: set[str] = set()
        self.labels: dict[str, str] = {}  # attempt -> how lines name it
        self.live = live  # a live view shows what runs: fewer lines

    def _prefix(self) -> str:
        return f"[dim]{time.monotonic() - self.began:7.1f}s[/]"

    def event(self, event: RecordEvent, _now: datetime) -> None:
        if event.reason == EventReason.APPROVAL_REJECTED:
            self.rejected.add(event.step or "")
        elif event.reason == EventReason.STEP_FAILED and (event.step or "") in self.rejected:
            return  # the rejection line said it: "rejected by carol: too risky"
        icon = _ICONS.get(event.reason, "[blue]•[/]" if event.type == "Normal" else "[red]![/]")
        self.console.print(
            f"{self._prefix()} {icon} {escape(event.message)}",
            soft_wrap=True,
            markup=True,
            highlight=False,
        )

    def output(self, attempt: str, line: str) -> None:
        """braid run --follow: a line a step wrote, prefixed by its step (and item)."""
        label = self.labels.get(attempt, attempt)
        self.console.print(
            f"[dim]{escape(label)} |[/] {escape(line)}",
            soft_wrap=True,
            markup=True,
            highlight=False,
        )

    def start(self, action: StartAttempt) -> None:
        what = self.label(action)
        self.labels[action.name] = what
        if self.live and action.labels.item is not None:
            return  # the live view counts a fan-out's items
        attempt = f" attempt {action.labels.attempt}" if action.labels.attempt > 1 else ""
        attempt += f" → {action.candidate}" if action.candidate else ""
        if action.child is not None:
            attempt += f" → child run {action.name} ({action.child.workflow or 'inline workflow'})"
        self.console.print(
            f"{self._prefix()} [blue]▶[/] {escape(what)}{attempt}", markup=True, highlight=False
        )

    @staticmethod
    def label(action: StartAttempt) -> str:
        what = action.labels.step
        if action.labels.body_step is not None:
            what += f"#{action.labels.iteration}/{action.labels.body_step}"
        if action.labels.item is not None:
            what += f"[{action.labels.item}]"
        if action.labels.role != "step":
            what += f" ({action.labels.role})"
        return what


def _duration(task: TaskStatus) -> str:
    if task.start_time and task.completion_time:
        return f"{(task.completion_time - task.start_time).total_seconds():.1f}s"
    return ""


def summary_table(status: WorkflowRunStatus, width: int = 120) -> Table:
    """One row a step, readable at 80 columns: the detail takes what is left of ``width``
    (cut with …)."""
    table = Table(
        title=f"{status.phase.value}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False
    )
    names = [st.name for st in [*status.steps, *(status.finally_ or [])]]
    step_width = min(28, max([4, *(len(n) for n in names)]))
    room = max(16, width - (step_width + 9 + 5 + 6 + 12))
    table.add_column("step", no_wrap=True, width=step_width, overflow="ellipsis")
    table.add_column("phase", no_wrap=True, min_width=9)
    table.add_column("tries", no_wrap=True, justify="right", min_width=5)
    table.add_column("time", no_wrap=True, justify="right", min_width=6)
    table.add_column("detail", no_wrap=True, overflow="ellipsis", max_width=room)
    for st in [*status.steps, *(status.finally_ or [])]:
        style = _PHASE_STYLE.get(st.phase, "")
        detail = st.message or (json.dumps(st.outputs)[:room] if st.outputs else "")
        table.add_row(
            st.name,
            f"[{style}]{st.phase.value}[/]" if style else st.phase.value,
            str(st.attempts),
            _duration(st),
            detail,
        )
        if st.route is not None:
            table.add_row("", "", "", "", f"[dim]route[/] {st.route.candidate}: {st.route.reason}")
        for name, artifact in (st.artifacts or {}).items():
            table.add_row("", "", "", "", f"[dim]artifact[/] {name} {human_size(artifact.size)}")
        if st.compensation is not None:
            c = st.compensation
            table.add_row(
                "  ↳ compensation", c.phase.value, str(c.attempts), _duration(c), c.message or ""
            )
    return table


def _step_document(st: StepStatus) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": st.name,
        "kind": st.kind,
        "phase": st.phase.value,
        "reason": st.reason,
        "attempts": st.attempts,
        "outputs": st.outputs,
        "message": st.message,
    }
    if st.route is not None:
        doc["route"] = st.route.wire()
    if st.approvals:
        doc["approvals"] = [a.wire() for a in st.approvals]
    if st.artifacts:
        doc["artifacts"] = {k: a.wire() for k, a in st.artifacts.items()}
    if st.compensation is not None:
        doc["compensation"] = {
            "phase": st.compensation.phase.value,
            "attempts": st.compensation.attempts,
        }
    if st.iterations is not None:
        doc["iterations"] = len(st.iterations)
    if st.item_count is not None:
        doc["items"] = st.item_count
    return doc


def run_document(name: str, status: WorkflowRunStatus, workdir: Path | None) -> dict[str, Any]:
    cond = status.condition("Succeeded")
    return {
        "run": name,
        "succeeded": status.succeeded is True,
        "phase": status.phase.value,
        "reason": cond.reason if cond else None,
        "message": cond.message if cond else None,
        "outputs": status.outputs or {},
        "steps": [_step_document(s) for s in status.steps],
        "finally": [_step_document(s) for s in status.finally_ or []],
        "conditions": [c.wire() for c in status.conditions],
        "logs": str(workdir) if workdir else None,
    }

"""Deadlines as facts: when an attempt, a run, an SLA target or a retry is due, and the
earliest of them (when the driver must wake the engine). Pure: RunState applies what is due.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from braid.api.reasons import SLAReason
from braid.api.run import StepStatus, WorkflowRunStatus
from braid.api.workflow import SLASpec


def after(start: datetime | None, seconds: float | None) -> datetime | None:
    if start is None or not seconds:
        return None
    return start + timedelta(seconds=seconds)


def attempt(timeout_seconds: int | None, attempt_start: datetime | None) -> datetime | None:
    """When a running attempt times out."""
    return after(attempt_start, timeout_seconds)


def run_sla(sla: SLASpec | None, start: datetime | None, breached: bool) -> datetime | None:
    """When the run becomes late, unless it already is."""
    if sla is None or breached:
        return None
    return after(start, sla.max_duration_seconds)


def step_sla(seconds: int | None, start: datetime | None, breached: bool) -> datetime | None:
    return None if breached else after(start, seconds)


def due(deadlines: Iterable[tuple[str | None, datetime | None]], now: datetime) -> list[str | None]:
    """The keys whose deadline has come."""
    return [key for key, at in deadlines if at is not None and now >= at]


def earliest(times: Iterable[datetime | None]) -> datetime | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def sla_breach(
    step: str | None, run_target: int | None, step_target: int | None
) -> tuple[SLAReason, str]:
    """What a breach of the run's (``step`` None) or a step's SLA says."""
    if step is None:
        return (
            SLAReason.RUN_DEADLINE_EXCEEDED,
            f"the run has been running longer than its SLA of {run_target or 0}s",
        )
    return (
        SLAReason.STEP_DEADLINE_EXCEEDED,
        f"step {step} has been running longer than its SLA of {step_target}s",
    )


@dataclass(frozen=True)
class SLATargets:
    """The run's SLA and each step's target (None: the step has none)."""

    run: SLASpec | None
    steps: Mapping[str, int | None]

    def deadlines(
        self,
        status: WorkflowRunStatus,
        steps: Mapping[str, StepStatus],
        running: Iterable[str],
        finished: bool,
    ) -> list[tuple[str | None, datetime | None]]:
        """When the run (key None) and each running step with a target become late."""
        out: list[tuple[str | None, datetime | None]] = []
        if not finished:
            out.append((None, run_sla(self.run, status.start_time, bool(status.sla_breached))))
        for name in sorted({n for n in running if self.steps.get(n)}):
            st = steps[name]
            out.append((name, step_sla(self.steps[name], st.start_time, bool(st.sla_breached))))
        return out

    def breach(self, step: str | None) -> tuple[SLAReason, str]:
        return sla_breach(
            step,
            self.run.max_duration_seconds if self.run else None,
            self.steps.get(step) if step else None,
        )

"""Deadlines as facts: when an attempt, a run, an SLA target or a retry is due, and the
earliest of them (when the driver must wake the engine). Pure: RunState applies what is due.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from braid.api.reasons import SLAReason
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

"""WorkflowSchedules as decisions over facts: which time is due, whether a run starts for it
(concurrencyPolicy, startingDeadlineSeconds, suspend), which runs go (Replace, history
limits) and when to look again. Pure: the time is an argument, so missed and overlapping
times are tested on a fake clock; the controller lists the runs and carries it out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from braid.api.schedule import ConcurrencyPolicy, WorkflowScheduleSpec

if TYPE_CHECKING:
    from croniter import croniter

MAX_MISSED = 100  # due times looked at per schedule; more missed than that: the latest only
NAME_MAX = 52  # a schedule name in its runs' names, which also are label values


@dataclass(frozen=True)
class ScheduledRun:
    name: str
    phase: str  # Pending, Running, ..., Succeeded, Failed, Cancelled
    created: str  # RFC 3339, for history order

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed", "Cancelled")


@dataclass(frozen=True)
class ScheduleDecision:
    start: tuple[str, datetime] | None = None  # the run to create and the time it is for
    cancel: tuple[str, ...] = ()  # Replace: the running ones
    delete: tuple[str, ...] = ()  # finished runs past the history limits
    last_schedule_time: datetime | None = None
    next_schedule_time: datetime | None = None
    message: str | None = None
    active: list[str] = field(default_factory=list)


def _iter(expr: str, start: datetime) -> croniter:
    from croniter import croniter  # noqa: PLC0415 - loaded by schedules only, not every start

    return croniter(expr, start, second_at_beginning=len(expr.split()) == 6)


def due_times(spec: WorkflowScheduleSpec, after: datetime, now: datetime) -> list[datetime]:
    """Every time in (after, now] any schedule gives, in order (at most MAX_MISSED each)."""
    zone = ZoneInfo(spec.timezone)
    times: set[datetime] = set()
    for expr in spec.schedules:
        it = _iter(expr, after.astimezone(zone))
        for _ in range(MAX_MISSED):
            t = it.get_next(datetime)
            if t > now:
                break
            times.add(t)
    return sorted(times)


def next_time(spec: WorkflowScheduleSpec, after: datetime) -> datetime:
    zone = ZoneInfo(spec.timezone)
    times: list[datetime] = [
        _iter(e, after.astimezone(zone)).get_next(datetime) for e in spec.schedules
    ]
    return min(times)


def run_name(schedule: str, due: datetime) -> str:
    """Deterministic: deciding again for the same time never starts a second run."""
    return f"{schedule[:NAME_MAX]}-{int(due.timestamp())}"


def _history(runs: Sequence[ScheduledRun], spec: WorkflowScheduleSpec) -> tuple[str, ...]:
    done = sorted((r for r in runs if r.finished), key=lambda r: r.created, reverse=True)
    ok = [r.name for r in done if r.phase == "Succeeded"]
    failed = [r.name for r in done if r.phase != "Succeeded"]
    return (
        *ok[spec.successful_runs_history_limit :],
        *failed[spec.failed_runs_history_limit :],
    )


def decide(
    name: str,
    spec: WorkflowScheduleSpec,
    last: datetime | None,
    created: datetime,
    runs: Sequence[ScheduledRun],
    now: datetime,
) -> ScheduleDecision:
    """``last``: the schedule's lastScheduleTime (None: never; times count from ``created``)."""
    active = [r.name for r in runs if not r.finished]
    delete = _history(runs, spec)
    if spec.suspend:
        return ScheduleDecision(
            delete=delete, last_schedule_time=last, message="suspended", active=active
        )
    due = due_times(spec, last or created, now)
    upcoming = next_time(spec, now)
    if not due:
        return ScheduleDecision(
            delete=delete, last_schedule_time=last, next_schedule_time=upcoming, active=active
        )
    latest = due[-1]
    missed = f"; {len(due) - 1} earlier missed time(s) skipped" if len(due) > 1 else ""
    base = ScheduleDecision(
        delete=delete, last_schedule_time=latest, next_schedule_time=upcoming, active=active
    )
    deadline = spec.starting_deadline_seconds
    if deadline is not None and now - latest > timedelta(seconds=deadline):
        said = f"skipped {latest.isoformat()}: missed by more than {deadline}s{missed}"
        return _with(base, message=said)
    if active and spec.concurrency_policy == ConcurrencyPolicy.FORBID:
        said = f"skipped {latest.isoformat()}: {active[0]} is still running (Forbid){missed}"
        return _with(base, message=said)
    cancel = tuple(active) if spec.concurrency_policy == ConcurrencyPolicy.REPLACE else ()
    said = f"started {run_name(name, latest)} for {latest.isoformat()}{missed}"
    if cancel:
        said += f"; cancelled {', '.join(cancel)} (Replace)"
    return _with(base, start=(run_name(name, latest), latest), cancel=cancel, message=said)


def _with(d: ScheduleDecision, **changes: object) -> ScheduleDecision:
    return replace(d, **changes)  # type: ignore[arg-type]

"""Sleep steps (Argo's suspend with a duration): when one wakes, and the sleeping tasks of a
run. Pure: the scheduler asks for wake-ups through its wake_at, so the operator requeues the
run and the local runner waits, and nothing polls."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from braid.engine.plan import SleepPlan
from braid.engine.tasks import Task
from braid.expressions import ExpressionError


def wake_time(
    plan: SleepPlan, context: Callable[[], dict[str, Any]], now: datetime
) -> datetime | str:
    """When the step wakes, or why that cannot be said (the field path and what is valid)."""
    if plan.spec.duration_seconds is not None:
        return now + timedelta(seconds=plan.spec.duration_seconds)
    assert plan.until is not None
    try:
        text = plan.until.render(context()).strip()
    except ExpressionError as exc:
        return str(exc)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        return (
            f"{plan.until.path}: {text!r} is not an RFC 3339 time with an offset "
            "(e.g. 2026-12-24T18:00:00Z)"
        )
    return max(when, now)


def woke(st_start: datetime | None, wake: datetime) -> dict[str, Any]:
    """A sleep step's outputs."""
    slept = (wake - st_start).total_seconds() if st_start else 0.0
    return {"sleptSeconds": round(slept, 3), "until": wake.isoformat()}


@dataclass
class Sleepers:
    """The run's sleeping tasks."""

    sleeping: list[Task] = field(default_factory=list)

    def add(self, task: Task) -> None:
        self.sleeping.append(task)

    def due(self, now: datetime) -> list[Task]:
        """The tasks whose time has come; they stop sleeping."""
        done = [t for t in self.sleeping if t.status.wake_time and t.status.wake_time <= now]
        self.sleeping = [t for t in self.sleeping if t not in done]
        return done

    def deadlines(self) -> list[datetime | None]:
        return [t.status.wake_time for t in self.sleeping]

    def take_all(self) -> list[Task]:
        taken, self.sleeping = self.sleeping, []
        return taken

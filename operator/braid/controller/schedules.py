"""WorkflowSchedules in the cluster: one loop per schedule (started by its watch events, no
finalizer, so deleting a schedule or its namespace is never held up) that reads the schedule
and its runs, lets engine/schedules.py decide, and carries the decision out: create the run
for a due time (its name is the time's, so a second try is a 409), cancel what Replace
replaces, delete finished runs past the history limits, write the status; then sleeps until
the next time (at most POLL_SECONDS, so edits such as suspend are seen)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import ValidationError

from braid.api.common import GROUP, VERSION
from braid.api.schedule import WorkflowScheduleSpec
from braid.engine import schedules
from braid.kube.client import KubeCluster

log = structlog.get_logger("braid.controller")

LABEL_SCHEDULE = "braid.dev/schedule"
SCHEDULED_TIME = "braid.dev/scheduled-time"
POLL_SECONDS = 30.0
Key = tuple[str, str]


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    return datetime.fromisoformat(text)


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z") if t else None


def run_for(
    schedule: dict[str, Any], spec: WorkflowScheduleSpec, name: str, due: datetime
) -> dict[str, Any]:
    meta = schedule["metadata"]
    template = spec.run_template
    labels = dict((template.metadata.labels if template.metadata else None) or {})
    annotations = dict((template.metadata.annotations if template.metadata else None) or {})
    labels[LABEL_SCHEDULE] = meta["name"][:63]
    annotations[SCHEDULED_TIME] = _iso(due) or ""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "WorkflowRun",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "WorkflowSchedule",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": template.spec.wire(),
    }


@dataclass
class ScheduleController:
    cluster: KubeCluster
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    loops: dict[Key, asyncio.Task[None]] = field(default_factory=dict)
    nudges: dict[Key, asyncio.Event] = field(default_factory=dict)

    def changed(self, key: Key) -> None:
        """A watch event: make sure the schedule's loop runs, and look again now."""
        self.nudges.setdefault(key, asyncio.Event()).set()
        if key not in self.loops or self.loops[key].done():
            self.loops[key] = asyncio.create_task(self._loop(key))

    def known(self) -> list[Key]:
        """The schedules with a loop running."""
        return list(self.loops)

    def deleted(self, key: Key) -> None:
        if (task := self.loops.pop(key, None)) is not None:
            task.cancel()
        self.nudges.pop(key, None)

    async def close(self) -> None:
        for task in self.loops.values():
            task.cancel()
        for task in list(self.loops.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self, key: Key) -> None:
        nudge = self.nudges.setdefault(key, asyncio.Event())
        while True:
            nudge.clear()
            try:
                delay = await self.reconcile(*key)
            except Exception:
                log.exception(
                    "Schedule pass failed; trying again", namespace=key[0], schedule=key[1]
                )
                delay = 10.0
            if delay is None:
                self.loops.pop(key, None)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(nudge.wait(), timeout=min(delay, POLL_SECONDS))

    async def reconcile(self, namespace: str, name: str) -> float | None:
        """One pass; the seconds until the next (None: the schedule is gone)."""
        schedule = await self.cluster.get_schedule(namespace, name)
        if schedule is None or schedule["metadata"].get("deletionTimestamp"):
            return None
        old = schedule.get("status") or {}
        try:
            spec = WorkflowScheduleSpec.model_validate(schedule.get("spec") or {})
        except ValidationError as exc:
            said = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            await self._write(schedule, {**old, "message": f"invalid: {said}"[:1024]})
            return POLL_SECONDS
        runs = [
            r
            for r in await self.cluster.list_runs(namespace)
            if (r["metadata"].get("labels") or {}).get(LABEL_SCHEDULE) == name[:63]
        ]
        facts = [
            schedules.ScheduledRun(
                r["metadata"]["name"],
                (r.get("status") or {}).get("phase") or "Pending",
                r["metadata"].get("creationTimestamp") or "",
            )
            for r in runs
        ]
        now = self.clock()
        created = _time(schedule["metadata"].get("creationTimestamp")) or now
        decision = schedules.decide(
            name, spec, _time(old.get("lastScheduleTime")), created, facts, now
        )
        for run in decision.cancel:
            await self.cluster.cancel_run(namespace, run)
        started = None
        if decision.start is not None:
            run_name, due = decision.start
            if await self.cluster.create_run(run_for(schedule, spec, run_name, due)):
                started = run_name
                log.info(
                    "Started a scheduled run", namespace=namespace, schedule=name, run=run_name
                )
        uids = {r["metadata"]["name"]: r["metadata"].get("uid", "") for r in runs}
        for run in decision.delete:
            await self.cluster.delete_run(namespace, run, uids.get(run, ""))
        succeeded = [r for r in runs if (r.get("status") or {}).get("phase") == "Succeeded"]
        last_ok = max((r["status"].get("completionTime") or "" for r in succeeded), default=None)
        active = [*decision.active, *([started] if started else [])]
        status = {
            "lastScheduleTime": _iso(decision.last_schedule_time),
            "nextScheduleTime": _iso(decision.next_schedule_time),
            "lastRun": started or old.get("lastRun"),
            "active": [a for a in active if a not in decision.cancel] or None,
            "lastSuccessfulTime": last_ok or old.get("lastSuccessfulTime"),
            "message": decision.message or old.get("message"),
        }
        status = {k: v for k, v in status.items() if v is not None}
        if status != old:
            await self._write(schedule, status)
        if decision.next_schedule_time is None:
            return POLL_SECONDS
        return max(0.2, (decision.next_schedule_time - self.clock()).total_seconds())

    async def _write(self, schedule: dict[str, Any], status: dict[str, Any]) -> None:
        await self.cluster.replace_schedule_status(schedule, status)

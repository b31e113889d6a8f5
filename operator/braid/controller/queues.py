"""Run queues (``spec.concurrency`` of a workflow): which runs of a namespace hold each key,
which wait, and in what order. In memory, like the pools; the first time a namespace's queue
is consulted its runs are listed once, so an operator that restarts knows which runs already
hold a key before it starts another. Asyncio makes each ``place`` atomic: between the check
and the hold nothing else runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from braid.controller.apply import RunKey
from braid.kube.client import Cluster

QueueKey = tuple[str, str]  # (namespace, key)
_FINISHED = ("Succeeded", "Failed", "Cancelled")


@dataclass
class _Entry:
    priority: int
    created: str
    holding: bool = False


@dataclass
class Queues:
    queues: dict[QueueKey, dict[str, _Entry]] = field(default_factory=dict)
    seeded: set[str] = field(default_factory=set)

    async def seed(self, cluster: Cluster, namespace: str) -> None:
        """Learn, once, which runs of the namespace hold or wait for a key."""
        if namespace in self.seeded:
            return
        runs = await cluster.list_runs(namespace)
        if namespace in self.seeded:  # another reconcile seeded it meanwhile
            return
        self.seeded.add(namespace)
        for run in runs:
            status = run.get("status") or {}
            spec = status.get("workflowSpec") or (run.get("spec") or {}).get("workflow") or {}
            queue = spec.get("concurrency")
            phase = status.get("phase") or "Pending"
            if not isinstance(queue, dict) or "key" not in queue or phase in _FINISHED:
                continue
            entry = self._entry(namespace, str(queue["key"]), run, int(queue.get("priority", 0)))
            entry.holding = phase != "Pending"

    def _entry(self, namespace: str, key: str, run: dict[str, Any], priority: int) -> _Entry:
        meta = run["metadata"]
        q = self.queues.setdefault((namespace, key), {})
        return q.setdefault(meta["name"], _Entry(priority, meta.get("creationTimestamp") or ""))

    def hold(self, namespace: str, key: str, run: dict[str, Any]) -> None:
        """A run that started holds its key (whatever the queue says now)."""
        self._entry(namespace, key, run, 0).holding = True

    def place(
        self, namespace: str, key: str, limit: int, run: dict[str, Any], priority: int
    ) -> tuple[int, int] | None:
        """None: the run may start, and now holds the key. Else its place among the runs
        waiting (from 1) and how many wait: higher priority first, then older, then by name."""
        entry = self._entry(namespace, key, run, priority)
        if entry.holding:
            return None
        entry.priority = priority
        q = self.queues[(namespace, key)]
        free = limit - sum(e.holding for e in q.values())
        waiting = sorted(
            (n for n, e in q.items() if not e.holding),
            key=lambda n: (-q[n].priority, q[n].created, n),
        )
        position = waiting.index(run["metadata"]["name"]) + 1
        if position <= free:
            entry.holding = True
            return None
        return position, len(waiting)

    def release(self, key: RunKey) -> set[RunKey]:
        """The run finished or went: the runs waiting for what it held, to be woken."""
        namespace, name = key
        wake: set[RunKey] = set()
        for (ns, _), q in self.queues.items():
            if ns == namespace and q.pop(name, None) is not None:
                wake |= {(ns, n) for n, e in q.items() if not e.holding}
        return wake

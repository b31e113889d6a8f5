"""Concurrency pools shared by every run this operator drives.

Each reconcile reports the slots its run holds (the engine's ``Decision.held``); the others'
total is what the next decision of any run must leave room for. Counts are also taken from the
step pods themselves (their ``braid.dev/concurrency-key`` label), so an operator that has just
restarted does not admit more than the limit before every run has been reconciled once.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

RunKey = tuple[str, str]  # (namespace, name)
FINISHED = ("Succeeded", "Failed")


@dataclass
class Pools:
    """Decisions (in the engine thread), forgetting deleted runs (on the event loop) and
    metrics scrapes (in the metrics server's thread) all reach these counts: one lock."""

    held: dict[RunKey, Mapping[str, int]] = field(default_factory=dict)
    waiters: dict[str, set[RunKey]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def elsewhere(
        self, run: RunKey, pods: Iterable[tuple[RunKey, str, str | None]]
    ) -> dict[str, int]:
        """Attempts holding each key in runs other than ``run``: the larger of what the
        reconciles reported and what the live pods say (``pods``: run, key, phase)."""
        reported: Counter[str] = Counter()
        with self.lock:
            for other, held in self.held.items():
                if other != run:
                    reported.update(held)
        seen: Counter[str] = Counter()
        for other, key, phase in pods:
            if other != run and phase not in FINISHED:
                seen[key] += 1
        return {k: max(reported[k], seen[k]) for k in reported.keys() | seen.keys()}

    def update(
        self, run: RunKey, held: Mapping[str, int], waiting_for: Iterable[str]
    ) -> set[RunKey]:
        """Record a decision; return the runs waiting for a key this run just let go of."""
        with self.lock:
            return self._update(run, held, waiting_for)

    def _update(
        self, run: RunKey, held: Mapping[str, int], waiting_for: Iterable[str]
    ) -> set[RunKey]:
        before = self.held.get(run, {})
        if held:
            self.held[run] = dict(held)
        else:
            self.held.pop(run, None)
        for key in waiting_for:
            self.waiters.setdefault(key, set()).add(run)
        freed = [k for k, n in before.items() if held.get(k, 0) < n]
        wake: set[RunKey] = set()
        for key in freed:
            wake |= self.waiters.pop(key, set())
        wake.discard(run)
        return wake

    def forget(self, run: RunKey) -> set[RunKey]:
        return self.update(run, {}, ())

    def in_use(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        with self.lock:
            for held in self.held.values():
                total.update(held)
        return dict(total)

"""The operator's runtime: one lock and one wake-up timer per run, and what a reconcile's
Result asks for (come back later, wake the runs waiting for a slot this one freed). No kopf
here: the run watch (or, in a hot standby, kopf's) feeds it runs, the pod watch pods, and it
drives the Reconciler.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import structlog

from braid.controller.apply import RunKey
from braid.controller.reconcile import Deferred, PodView, Reconciler, Result
from braid.kube.podwatch import PodIndex

log = structlog.get_logger("braid.controller")

# After a reconcile raised (the API server away, say): try that run again this much later.
RETRY_AFTER_ERROR = 5.0
# Reconciles running at once: about the API client's connections (kube/rest.py), which is as
# many as can be waiting on the API server anyway.
RECONCILES_IN_FLIGHT = 100


class KeptRuns:
    """Each going run's object as last seen, kept as compact JSON: a parsed run costs about
    26 KiB of Python objects, its JSON about 4 KiB, and with thousands of runs waiting on
    long steps that was most of what the operator held (bench/README.md, active runs). The
    price is a dump per keep and a parse per reconcile, ~60 µs together for a 4 KB run."""

    def __init__(self) -> None:
        self.by_key: dict[RunKey, tuple[int | None, bytes]] = {}

    def get(self, key: RunKey) -> dict[str, Any] | None:
        kept = self.by_key.get(key)
        return None if kept is None else dict(json.loads(kept[1]))

    def __contains__(self, key: object) -> bool:
        return key in self.by_key

    def __len__(self) -> int:
        return len(self.by_key)

    def pop(self, key: RunKey) -> None:
        self.by_key.pop(key, None)

    def holds(self, key: RunKey, run: dict[str, Any]) -> bool:
        """Whether what is kept is ``run``'s version or newer (both versions integers)."""
        kept, new = self.by_key.get(key), _revision(run)
        return kept is not None and kept[0] is not None and new is not None and new <= kept[0]

    def keep(self, key: RunKey, run: dict[str, Any] | None) -> None:
        """Keep ``run`` as the run's latest, unless what is kept is known to be newer (a
        reconcile that read version 4 ends after the watch brought version 5: 5 stays). The
        API server's resourceVersions are etcd revisions, integers that grow; were they not
        integers, nothing is kept and every reconcile reads the run (as it would anyway)."""
        if run is None:
            self.by_key.pop(key, None)
            return
        new = _revision(run)
        kept = self.by_key.get(key)
        if kept is not None:
            if kept[0] is None or new is None:
                self.by_key.pop(key, None)
                return
            if new < kept[0]:
                return
        self.by_key[key] = (new, json.dumps(run, separators=(",", ":"), default=str).encode())


class Runtime:
    def __init__(self, reconciler: Reconciler, pods: PodIndex | None = None) -> None:
        self.reconciler = reconciler
        self.pods = pods  # the step pods, by run and by name (kube/podwatch.py)
        # Each going run's object as last seen (its watch event, or the answer to the status
        # write of its last reconcile): a reconcile starts from it instead of a GET.
        self.runs = KeptRuns()
        # New runs' first statuses held back (Result.deferred), by run.
        self.deferred: dict[RunKey, Deferred] = {}
        self.locks: dict[RunKey, asyncio.Lock] = {}
        self.timers: dict[RunKey, asyncio.TimerHandle] = {}
        self.tasks: set[asyncio.Task[None]] = set()  # reconciles started by timers
        # Reconciles in flight at once; the others wait holding nothing but their key (their
        # runs are kept compact), so a burst of thousands of runs does not parse them all.
        self.slots = asyncio.Semaphore(RECONCILES_IN_FLIGHT)
        # A webhook result, or any news in the inbox, means the run has something to decide.
        reconciler.inbox.notify = lambda key: self.wake(key, 0.0)

    def seen(self, run: dict[str, Any]) -> None:
        """A watch event's run object: what the next reconcile of that run starts from."""
        meta = run["metadata"]
        self.keep((meta["namespace"], meta["name"]), run)

    def run_changed(self, run: dict[str, Any]) -> None:
        """A run added or changed (a watch event, or a listing): kept, and its reconcile
        queued — unless it is nothing new: the echo of this operator's own status write, or
        a version no newer than the one kept (the echo of an earlier write that arrives
        after the next one: a write succeeds only on the version it read, so what it
        answered already holds every change before it)."""
        meta = run["metadata"]
        key = (meta["namespace"], meta["name"])
        if self.reconciler.written.get(key) == meta.get("resourceVersion"):
            return
        if self.runs.holds(key, run):
            return
        self.keep(key, run)
        self.wake(key, 0.0)

    def run_gone(self, key: RunKey, run: dict[str, Any] | None) -> None:
        """A run deleted (``run``: its last object; None when it went while nobody watched,
        and then the last one kept here stands for it). A child run's parent is told."""
        last = run if run is not None else self.runs.get(key)
        if last is not None:
            self.reconciler.child_gone(last)
        self.forget(key)

    def known_runs(self) -> set[RunKey]:
        """The runs this operator keeps anything of."""
        return set(self.locks) | set(self.runs.by_key)

    def keep(self, key: RunKey, run: dict[str, Any] | None) -> None:
        self.runs.keep(key, run)

    def knows(self, key: RunKey) -> bool:
        """Whether the run has been reconciled here (pods of runs this operator has not seen
        through its run watch — another replica's, while this one stands by — wake nothing)."""
        return key in self.locks

    def pod_news(self, namespace: str, run: str, pod: str, *, lost: bool) -> None:
        """A step pod finished, or was deleted (``lost``: before it finished): its run is
        reconciled at once."""
        key = (namespace, run)
        if not self.knows(key):
            return
        if lost:
            self.lost(key, pod)
            log.info("Observed a pod deleted before it finished", run=run, pod=pod)
        self.wake(key, 0.0)

    async def trigger(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        lock = self.locks.setdefault(key, asyncio.Lock())
        if self.pods is not None and not self.pods.synced.is_set():
            await self.pods.synced.wait()  # no decision before every step pod is known
        async with lock, self.slots:
            metrics = self.reconciler.metrics
            began = time.perf_counter()
            held = self.deferred.pop(key, None)
            try:
                result = await self.reconciler.reconcile(
                    namespace, name, self.pod_view(key), self.runs.get(key), held
                )
                if result.run is None:
                    self.runs.pop(key)
                else:
                    self.keep(key, result.run)
                if result.deferred is not None:
                    self.deferred[key] = result.deferred
            except Exception:
                self.runs.pop(key)
                if held is not None:  # written or not, the next reconcile tells
                    self.deferred[key] = held
                if metrics is not None:
                    metrics.reconcile_errors.inc()
                log.exception("Reconcile failed; retrying", namespace=namespace, run=name)
                result = Result(RETRY_AFTER_ERROR)
            finally:
                if metrics is not None:
                    metrics.reconcile_duration.observe(time.perf_counter() - began)
        self.follow(key, result)

    def follow(self, key: RunKey, result: Result) -> None:
        if result.requeue_after is not None:
            self.wake(key, result.requeue_after)
        for other in result.wake:
            self.wake(other, 0.0)

    def pod_view(self, key: RunKey) -> PodView:
        if self.pods is None:
            return PodView()
        namespace, pods = key[0], self.pods

        def lookup(pod: str) -> dict[str, Any] | None:
            found = pods.lookup(namespace, pod)
            # A Job's attempt may have had a Pod replaced (evicted): the live one counts.
            return next((p for p in found if not p.get("deleting")), found[0] if found else None)

        return PodView(lookup=lookup, every=lambda: pods.of_run(key))

    def wake(self, key: RunKey, delay: float) -> None:
        """Reconcile the run no later than ``delay`` seconds from now. The earliest wake-up
        wins: a reconcile ending (asking to come back in a minute) must not push back one
        that news asked for meanwhile (a webhook result, say), or the news waits that long."""
        loop = asyncio.get_running_loop()
        old = self.timers.get(key)
        if old is not None:
            if old.when() <= loop.time() + delay:
                return
            old.cancel()

        def fire() -> None:
            self.timers.pop(key, None)
            task = loop.create_task(self.trigger(*key))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

        self.timers[key] = loop.call_later(delay, fire)

    async def close(self) -> None:
        """The operator stops: no more wake-ups, and the reconciles they started end before
        the API client closes (they would fail on a closed session, and retry, until the
        process is gone). What they did not finish the next operator does: every decision
        is level-based."""
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.reconciler.close()

    def lost(self, key: RunKey, pod: str) -> None:
        """A pod was deleted before it finished: its attempt is told so on the next
        reconcile (the inbox keeps it until then)."""
        self.reconciler.inbox.lose(key, pod)

    def forget(self, key: RunKey) -> None:
        """The run is gone: drop everything kept for it."""
        self.reconciler.written.pop(key, None)
        self.reconciler.children_checked.pop(key, None)
        for other in self.reconciler.pools.forget(key) | self.reconciler.queues.release(key):
            self.wake(other, 0.0)
        if self.reconciler.metrics is not None:
            self.reconciler.metrics.forget(*key)
        if (timer := self.timers.pop(key, None)) is not None:
            timer.cancel()
        self.locks.pop(key, None)
        self.runs.pop(key)
        self.deferred.pop(key, None)
        self.reconciler.inbox.forget(key)


def _revision(run: dict[str, Any]) -> int | None:
    version = str(run["metadata"].get("resourceVersion") or "")
    return int(version) if version.isdigit() else None

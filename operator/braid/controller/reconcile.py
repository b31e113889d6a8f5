"""One level-based reconcile of a WorkflowRun behind every trigger: read the run, its pods
and its inbox; ask the engine; apply what it decided (apply.py); write the status; return a
Result saying when to come back and which other runs to wake (controller-runtime's
``Result{RequeueAfter}``). It never branches on what triggered it.

What a run may say is bounded before it costs the operator anything: the engine's work
(status parsing, expressions, decisions) runs in one worker thread, so the event loop keeps
serving every other run and the liveness probe; a Pod the API server refuses, a pod of that
name that belongs to someone else, a webhook that raises, or a status that outgrows the
object size limit each ends as a clear failure of that attempt or run, never as a reconcile
that fails forever.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog

from braid.api.errors import InvalidSpecError
from braid.api.podtemplate import PodPolicy
from braid.api.reasons import EventReason
from braid.api.run import RunPhase, WorkflowRunStatus
from braid.api.workflow import PodGCStrategy
from braid.controller.admission import Admission, workflow_name
from braid.controller.apply import Applier, Inbox, RunKey, conflict
from braid.controller.cache import ClusterCache
from braid.controller.pools import Pools
from braid.controller.queues import Queues
from braid.engine import Action, AttemptResult, Decision, Observations, RunState, children
from braid.engine.actions import CacheEntry, RecordEvent, StartAttempt
from braid.engine.breakers import BreakerBoard
from braid.kube import child_runs
from braid.kube.annotations import decisions_from
from braid.kube.artifact_pods import FINALIZER, ArtifactSettings
from braid.kube.child_runs import parent_of
from braid.kube.client import Cluster
from braid.kube.pods import controller, controller_uid, result_of
from braid.kube.selectors import Matcher
from braid.metrics import Before, Metrics
from braid.webhook import WebhookPolicy

log = structlog.get_logger("braid.controller")

Clock = Callable[[], datetime]
T = TypeVar("T")
PoolPods = list[tuple[RunKey, str, str | None]]

# A container attempt whose pod has not been seen for this long after it was created is lost
# (its deletion happened while the operator was not watching).
LOST_AFTER = 60.0
# The whole run object as the operator writes it may not pass this (etcd refuses requests over
# 1.5 MiB; the API server adds managed fields): a run that would is failed StatusTooLarge.
MAX_OBJECT_BYTES = 1_000_000
# How long the operator lets a new run's first status (admitted, its first pods started) wait
# to be written (Reconciler.first_write_after): when its first step ends sooner, one write
# says both. Pods are found by name, so nothing is lost if the operator stops in between: the
# run is admitted again and finds its pod.
FIRST_WRITE_AFTER = 2.0
# Rounds of "start, refused at once, decide again" in one reconcile (each round fails attempts,
# so retries with backoff end it; the bound only keeps a pathological spec from spinning).
MAX_ROUNDS = 8


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Result:
    """What a reconcile asks of the runtime: come back after this long (None: only when
    something happens), and wake these other runs (they wait for a slot this one freed).
    ``run``: the run object as it stands after this reconcile, when that is known (the answer
    to its own status write, or the object it read and left as it was) and the run goes on;
    the next reconcile may start from it instead of reading the run again. None: not known
    (a conflict, say) or not worth keeping (finished, gone)."""

    requeue_after: float | None = None
    wake: frozenset[RunKey] = frozenset()
    run: dict[str, Any] | None = None
    deferred: Deferred | None = None  # a new run's first status, not written yet


@dataclass(frozen=True)
class Deferred:
    """A new run's first status, held back for first_write_after (its pods are started): the
    next reconcile of the run decides from it and writes it, with whatever it decides, or on
    its own when nothing new happened. What it says (the RunStarted Event, metrics) is
    recorded with that write."""

    status: dict[str, Any]
    actions: list[Action]
    before: Before


class PodView:
    """A run's step pods: looked up by name (what a reconcile mostly needs: the attempts the
    engine waits for), or all of them (pod GC). Lookups stay O(1) however many finished pods a
    huge fan-out leaves behind."""

    def __init__(
        self,
        pods: Iterable[dict[str, Any]] = (),
        *,
        lookup: Callable[[str], dict[str, Any] | None] | None = None,
        every: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        if lookup is None or every is None:
            listed = list(pods)
            by_name = {p["metadata"]["name"]: p for p in listed}
            lookup, every = by_name.get, lambda: listed
        self.get: Callable[[str], dict[str, Any] | None] = lookup
        self.all: Callable[[], list[dict[str, Any]]] = every


class EngineThread:
    """Runs the engine's work (status parsing, expressions, decisions) in one worker thread:
    the event loop is left to I/O, so a run with a costly status or expression slows itself,
    not the others. One thread also serialises every decision, which is what makes the shared
    pools' reservations atomic."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="braid-engine")

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)


@dataclass
class Reconciler:
    cluster: Cluster
    clock: Clock = _utcnow
    metrics: Metrics | None = None
    # Where webhook steps may send requests, what podTemplates may ask for, whether the
    # approval admission policy is enforced (approver names are the API server's word).
    webhook_policy: WebhookPolicy = field(default_factory=WebhookPolicy)
    pods: PodPolicy = field(default_factory=PodPolicy)
    approvals_verified: bool = False
    artifacts: ArtifactSettings | None = None  # the artifact repository, when configured
    step_cache: bool = False  # keep and reuse successes of cached steps (ConfigMap braid-cache)
    # A shard reconciles only the runs whose labels match (--selector), and gives their pods
    # the labels its selector reads, so it can watch just those pods too.
    shard: Matcher = lambda _labels: True
    shard_keys: frozenset[str] = frozenset()
    # Shared by every run: concurrency pools and circuit breakers (in memory; breakers start
    # closed when the operator starts), and every indexed pod holding a concurrency key.
    pools: Pools = field(default_factory=Pools)
    queues: Queues = field(default_factory=Queues)  # run queues (spec.concurrency)
    job_owners: dict[str, str] = field(default_factory=dict)  # runAs: Job, read once each
    breakers: BreakerBoard = field(default_factory=BreakerBoard)
    pool_pods: Callable[[], PoolPods] = list
    inbox: Inbox = field(default_factory=Inbox)
    engine: EngineThread = field(default_factory=EngineThread)
    # The resourceVersion of each run's last status write: the watch event it causes carries
    # nothing new, so the handler can skip it.
    written: dict[RunKey, str] = field(default_factory=dict)
    # Per parent run: the child runs this process has read once (their ends come by inbox).
    children_checked: dict[RunKey, set[str]] = field(default_factory=dict)
    # Hold a new run's first status back this long (Result.deferred); 0: write it at once.
    first_write_after: float = 0.0

    def __post_init__(self) -> None:
        self.apply = Applier(
            self.cluster,
            self.inbox,
            self.pods,
            self.webhook_policy,
            self.shard_keys,
            self.artifacts,
            ClusterCache(self.cluster) if self.step_cache else None,
        )
        self.admission = Admission(self.cluster, self.engine, self.pods)

    async def _deleted(self, run: dict[str, Any]) -> Result:
        """A run being deleted: only its artifacts are left to let go."""
        held = FINALIZER in (run["metadata"].get("finalizers") or [])
        if held and self.apply.keeper is not None:
            return Result(await self.apply.keeper.release(run))
        return Result()

    async def reconcile(
        self,
        namespace: str,
        name: str,
        pods: Iterable[dict[str, Any]] | PodView = (),
        run: dict[str, Any] | None = None,
        deferred: Deferred | None = None,
    ) -> Result:
        """``pods``: the run's step pods as indexed. ``run``: the run object as last seen (its
        watch event, or the Result.run of the reconcile before), when the caller has it: no
        GET then. A stale one costs nothing but a retry: the status write is guarded by its
        resourceVersion, and a conflict reads the run again. ``deferred``: the first status
        the reconcile before held back (Result.deferred)."""
        view = pods if isinstance(pods, PodView) else PodView(pods)
        if run is None:
            run = await self.cluster.get_run(namespace, name)
        if run is None or not self.shard(run["metadata"].get("labels") or {}):
            return Result()  # gone, or another shard's run
        if run["metadata"].get("deletionTimestamp"):
            return await self._deleted(run)
        self.inbox.gone.pop((namespace, name), None)  # a run of that name exists (again)
        run, deferred = _with_deferred(run, deferred)
        fresh = not (run.get("status") or {}).get("workflowSpec")
        status = await self.engine(_parse_status, run.get("status") or {})
        if status.succeeded is not None:  # finished runs are history
            return await self._finished(run, status, view)
        return await self._going(run, status, view, deferred, fresh=fresh)

    async def _going(
        self,
        run: dict[str, Any],
        status: WorkflowRunStatus,
        view: PodView,
        deferred: Deferred | None,
        *,
        fresh: bool,
    ) -> Result:
        """A run that has not finished: admit it when new, decide, write."""
        namespace, name = run["metadata"]["namespace"], run["metadata"]["name"]
        log_ = log.bind(namespace=namespace, run=name, workflow=workflow_name(run) or name)
        loaded = await self._load(run, status, log_)
        if loaded is None:
            return Result()
        state, before = loaded
        key = (namespace, name)
        queued = await self._queue(run, state)
        results, lost = self.inbox.take(key)
        results += self.inbox.take_children(key, run["metadata"]["uid"])
        try:
            outcome = await self._decide(run, state, view, results, lost, log_, queued)
            may_hold = fresh and self.first_write_after > 0 and not results and not lost
            if may_hold and _may_defer(state, outcome):
                return self._hold(run, before, outcome)
            if deferred is not None:
                before = deferred.before
                outcome.absorb(deferred)
            current: dict[str, Any] | None = run
            if outcome.body is not None:
                current = await self._write(run, state, before, outcome, log_)
        except BaseException:
            self.inbox.put_back(key, results, lost)
            raise
        if current is None:
            # Results held only in memory must survive until a status write records them.
            self.inbox.put_back(key, results, lost)
            log_.info("Status changed underneath; reconciling again")
            return Result(0.0, outcome.wake)
        return await self._done(run, current, state, view, outcome)

    async def _finished(
        self, run: dict[str, Any], status: WorkflowRunStatus, view: PodView
    ) -> Result:
        meta = run["metadata"]
        after = await self.apply.after_finish(run, status, view.all(), self.clock())
        wake = self.queues.release((meta["namespace"], meta["name"])) | self._tell_parent(
            run, status
        )
        return Result(after, frozenset(wake))

    def _hold(self, run: dict[str, Any], before: Before, outcome: _Outcome) -> Result:
        """Hold a new run's first status back (first_write_after, or sooner when the run
        has a deadline to keep)."""
        assert outcome.body is not None
        held = Deferred(outcome.body, outcome.actions, before)
        after = self.first_write_after
        if outcome.decision.wake_at is not None:
            after = min(after, (outcome.decision.wake_at - self.clock()).total_seconds())
        return Result(max(0.0, after), outcome.wake, run, held)

    async def _done(
        self,
        run: dict[str, Any],
        current: dict[str, Any],
        state: RunState,
        view: PodView,
        outcome: _Outcome,
    ) -> Result:
        """After the status is written (or was unchanged): collect pods, and say when to
        come back."""
        key = (run["metadata"]["namespace"], run["metadata"]["name"])
        gc = state.plan.spec.pod_gc
        if gc is not None and gc.strategy == PodGCStrategy.ON_POD_COMPLETION:
            # Results are in the status now (written above, or unchanged): the pods can go.
            await self.apply.collect_pods(run, view.all(), set(state.active))
        decision = outcome.decision
        if decision.finished:
            after = await self.apply.after_finish(run, state.status, view.all(), self.clock())
            outcome.wake |= self.queues.release(key) | self._tell_parent(run, state.status)
        elif decision.wake_at is not None:
            after = max(0.0, (decision.wake_at - self.clock()).total_seconds())
        else:
            after = None
        return Result(after, outcome.wake, None if decision.finished else current)

    async def _queue(
        self, run: dict[str, Any], state: RunState
    ) -> tuple[int, int, str, int] | None:
        """A run of a queued workflow: None when it may go on (it holds its key), else its
        place in the queue."""
        queue = state.plan.spec.concurrency
        if queue is None:
            return None
        namespace = run["metadata"]["namespace"]
        await self.queues.seed(self.cluster, namespace)
        if state.status.phase != RunPhase.PENDING:
            self.queues.hold(namespace, queue.key, run)
            return None
        priority = (run.get("spec") or {}).get("priority")
        priority = queue.priority if not isinstance(priority, int) else priority
        placed = self.queues.place(namespace, queue.key, queue.limit, run, priority)
        return None if placed is None else (*placed, queue.key, queue.limit)

    async def _load(
        self, run: dict[str, Any], status: WorkflowRunStatus, log_: Any
    ) -> tuple[RunState, Before] | None:
        """The run's state for the engine (and what its status was, for the metrics); None
        when a new run was refused as invalid."""
        meta = run["metadata"]
        if status.workflow_spec is None:
            try:
                status, spec, params = await self.admission.admit(
                    run, status, approvals_verified=self.approvals_verified
                )
            except InvalidSpecError as exc:
                await self.apply.reject(run, status, exc.errors, self.clock(), log_)
                return None
        else:
            # A started run follows its snapshot; of its live spec only `cancelled` matters,
            # so no later edit of the spec can fail it with its pods left running.
            spec, params = status.workflow_spec, status.params or {}
        if status.parent is None:
            status.parent = parent_of(run)  # a sub-workflow's run: linked to its parent
        before = Before.of(status)
        state: RunState = await self.engine(
            RunState.load,
            meta["name"],
            spec,
            status,
            params,
            meta.get("generation"),
            meta["uid"],
            self.apply.item_lists,
        )
        return state, before

    async def _write(
        self,
        run: dict[str, Any],
        state: RunState,
        before: Before,
        outcome: _Outcome,
        log_: Any,
    ) -> dict[str, Any] | None:
        """Write the status, then what it says (Events, log lines, metrics): the run as
        written; None when it changed since it was read."""
        assert outcome.body is not None
        updated = await self.apply.write(run, outcome.body)
        if updated is None:
            return None
        meta = run["metadata"]
        self.written[(meta["namespace"], meta["name"])] = updated["metadata"]["resourceVersion"]
        if self.metrics is not None:
            workflow = workflow_name(run) or meta["name"]
            self.metrics.record(
                meta["namespace"],
                workflow,
                meta["name"],
                before,
                state.status,
                outcome.actions,
                self.clock(),
            )
        await self.apply.record(updated, outcome.actions, log_)
        return updated

    async def _decide(
        self,
        run: dict[str, Any],
        state: RunState,
        view: PodView,
        results: list[AttemptResult],
        lost: set[str],
        log_: Any,
        queued: tuple[int, int, str, int] | None = None,
    ) -> _Outcome:
        """Decide, start what was decided (deciding again on attempts refused at once), and
        make the status fit the object size limit."""
        meta = run["metadata"]
        key, now = (meta["namespace"], meta["name"]), self.clock()
        pool_pods = self.pool_pods() if state.plan.pools else []
        outcome = _Outcome()

        async def decide(observations: Observations) -> None:
            decision, wake = await self.engine(
                self._decide_reserving, state, observations, now, key, pool_pods
            )
            outcome.add(decision, wake)

        jobs = job_pods(state, view)
        owners = (
            await self.apply.job_owners(meta["namespace"], jobs, self.job_owners) if jobs else {}
        )
        seen = await self.apply.secrets.mask(
            meta["namespace"], observed(state, view, meta["uid"], owners), view.get
        )
        if state.plan.has_children:
            seen += await self._children(state, meta, now)
        seen += await self._jobs_gone(state, view, meta["namespace"])
        cache = self.apply.cache
        if cache is not None and state.plan.cached:
            outcome.cache = await cache.view(meta["namespace"])
        await decide(
            self._observe(
                outcome,
                results=seen + results + lost_pods(state, view, lost, now),
                queued=queued,
                decisions=decisions_from(
                    meta.get("annotations") or {}, verified=self.approvals_verified
                ),
                cancel=(run.get("spec") or {}).get("cancelled") is True,
            )
        )
        workflow = workflow_name(run) or meta["name"]
        refused = await self.apply.start(outcome.decision.actions, run, workflow, log_)
        for _ in range(MAX_ROUNDS):
            if not refused:
                break
            await decide(self._observe(outcome, results=refused))
            refused = await self.apply.start(outcome.decision.actions, run, workflow, log_)
        body, size = await self.engine(_wire, run, state)
        for level in (1, 2):
            if size <= MAX_OBJECT_BYTES:
                break
            # Too large to write: the run fails, shedding what made it large (outputs.shed).
            message = (
                f"the run object reached {size} bytes, over the operator's budget of "
                f"{MAX_OBJECT_BYTES} (the API server refuses objects over 1.5 MiB); keep large "
                "data out of step outputs and pass a reference to it instead"
            )
            await decide(self._observe(outcome, oversized=(message, level)))
            outcome.changed = True
            await self.apply.start(outcome.decision.actions, run, workflow, log_)
            body, size = await self.engine(_wire, run, state)
        outcome.body = body if outcome.changed else None
        return outcome

    async def _jobs_gone(
        self, state: RunState, view: PodView, namespace: str
    ) -> list[AttemptResult]:
        """Job attempts whose Job was deleted: a Job may wait long without a Pod (a queue
        such as Kueue admits it later), so a Job attempt without a Pod is looked up (one GET
        per reconcile) and lost only when the Job itself is gone."""
        out = []
        for attempt, task in state.active.items():
            if not task.is_job or view.get(attempt) is not None:
                continue
            if await self.cluster.get_job(namespace, attempt) is None:
                error = "the Job was deleted before the step finished"
                out.append(AttemptResult(attempt, error=error, lost=True))
        return out

    def _tell_parent(self, run: dict[str, Any], status: WorkflowRunStatus) -> set[RunKey]:
        """A child run that finished tells its parent how (through the inbox: the parent
        reads no child back, so a fan-out of a thousand children costs no GETs per
        reconcile); returns the parent, to wake."""
        parent, told = parent_of(run), child_runs.told(run)
        ended = children.outcome_of(status)
        if parent is None or told is None or ended is None:
            return set()
        key = (run["metadata"]["namespace"], parent.run)
        self.inbox.deliver_child(key, told[0], AttemptResult(told[1], child=ended))
        return {key}

    def child_gone(self, run: dict[str, Any]) -> None:
        """A child run deleted before it finished: its attempt is lost."""
        parent, told = parent_of(run), child_runs.told(run)
        status = (run.get("status") or {}).get("phase")
        if parent is None or told is None or status in ("Succeeded", "Failed", "Cancelled"):
            return
        error = "the child run was deleted before it finished"
        result = AttemptResult(told[1], error=error, lost=True)
        self.inbox.deliver_child((run["metadata"]["namespace"], parent.run), told[0], result)

    async def _children(
        self, state: RunState, meta: dict[str, Any], now: datetime
    ) -> list[AttemptResult]:
        """Child runs the engine waits for that this process has not looked at yet (after a
        restart, say): one GET each, once; later their ends come through the inbox. A child
        run this run does not own is a conflict; one gone (or going) is lost."""
        out = []
        key = (meta["namespace"], meta["name"])
        checked = self.children_checked.setdefault(key, set())
        for attempt, task in state.active.items():
            if not task.is_child or attempt in checked:
                continue
            child = await self.cluster.get_run(meta["namespace"], children.run_name(attempt))
            if child is None or child["metadata"].get("deletionTimestamp"):
                started = task.status.attempt_start_time
                if child is not None or (
                    started is not None and (now - started).total_seconds() > LOST_AFTER
                ):
                    error = "the child run was deleted before it finished"
                    out.append(AttemptResult(attempt, error=error, lost=True))
                continue
            owner = controller_uid(child)
            if owner != meta["uid"]:
                out.append(conflict(attempt, owner, "WorkflowRun"))
                continue
            checked.add(attempt)  # it is there and ours: its end will be told
            status = await self.engine(_parse_status, child.get("status") or {})
            ended = children.outcome_of(status)
            if ended is not None:
                out.append(AttemptResult(attempt, child=ended))
        return out

    def _observe(self, outcome: _Outcome, **kwargs: Any) -> Observations:
        return Observations(
            breakers=self.breakers,
            approvals_verified=self.approvals_verified,
            item_lists=self.apply.item_lists,
            cache=outcome.cache,
            **kwargs,
        )

    def _decide_reserving(
        self,
        state: RunState,
        observations: Observations,
        now: datetime,
        key: RunKey,
        pool_pods: PoolPods,
    ) -> tuple[Decision, set[RunKey]]:
        """In the engine thread: decide, and reserve the slots the decision took before any
        other run decides (one thread serialises both). Returns the runs to wake: those
        waiting for a slot this run let go of."""
        if state.plan.pools:
            observations.elsewhere = self.pools.elsewhere(key, pool_pods)
        decision = state.decide(observations, now)
        return decision, self.pools.update(key, decision.held, decision.waiting_for)

    async def close(self) -> None:
        await self.apply.close()


@dataclass
class _Outcome:
    """The decisions of one reconcile, put together."""

    actions: list[Action] = field(default_factory=list)
    changed: bool = False
    wake: frozenset[RunKey] = frozenset()
    body: dict[str, Any] | None = None  # the status to write, when something changed
    last: Decision | None = None
    cache: Mapping[str, CacheEntry] | None = None  # the namespace's cached successes

    def add(self, decision: Decision, wake: set[RunKey]) -> None:
        self.actions += decision.actions
        self.changed |= decision.changed
        self.wake |= wake
        self.last = decision

    def absorb(self, deferred: Deferred) -> None:
        """The first status held back: written now, with what was decided since (its
        RunStarted Event only when nothing was: a run that started and moved on at once
        keeps the start in its history and its conditions, not as one more Event)."""
        if self.body is None:
            self.body, self.actions = deferred.status, deferred.actions + self.actions
            return
        quiet = [
            replace(a, progress=True)
            if isinstance(a, RecordEvent) and a.reason == EventReason.RUN_STARTED
            else a
            for a in deferred.actions
        ]
        self.actions = quiet + self.actions

    @property
    def decision(self) -> Decision:
        assert self.last is not None
        return self.last


def _with_deferred(
    run: dict[str, Any], deferred: Deferred | None
) -> tuple[dict[str, Any], Deferred | None]:
    """The run with the first status held back for it. Only the operator writes a run's
    status, so a newer version of the run (a user cancelled it, or annotated it) still has
    none, and the held status goes on it: what it records (the pods started) must not be
    forgotten, or a cancel would leave them running. A run that has a status already was
    written meanwhile (by another replica, say): the held status is dropped."""
    if deferred is None or (run.get("status") or {}).get("workflowSpec"):
        return run, None
    return {**run, "status": deferred.status}, deferred


def _may_defer(state: RunState, outcome: _Outcome) -> bool:
    """A new run's first status may wait (first_write_after) when all it says is that the
    run started its first pods: not when it finished, waits for anything else (approvals,
    child runs, Jobs, webhooks), holds a place in a queue other operators count from
    statuses, or has anything to say besides RunStarted."""
    if outcome.body is None or outcome.decision.finished or state.plan.spec.concurrency:
        return False
    started = False
    for action in outcome.actions:
        if isinstance(action, StartAttempt):
            if action.container is None or action.container.job:
                return False
            started = True
        elif isinstance(action, RecordEvent):
            if not action.progress and action.reason != EventReason.RUN_STARTED:
                return False
        else:
            return False
    return started


def job_pods(state: RunState, view: PodView) -> dict[str, str]:
    """Attempts whose Pod a Job controls: attempt -> that Job's uid."""
    out = {}
    for attempt in state.active:
        pod = view.get(attempt)
        ref = controller(pod) if pod is not None else None
        if ref is not None and ref.get("kind") == "Job":
            out[attempt] = str(ref.get("uid"))
    return out


def observed(
    state: RunState, view: PodView, uid: str, job_owners: Mapping[str, str] | None = None
) -> list[AttemptResult]:
    """Results of the attempts the engine waits for, from their pods (a pod of an attempt's
    name that the run does not own is a conflict, never a result). A Job's Pod counts when
    the Job is the run's (``job_owners``: Job uid -> its owner's uid)."""
    out = []
    for attempt in state.active:
        pod = view.get(attempt)
        if pod is None:
            continue
        owner = controller_uid(pod)
        ref = controller(pod)
        if ref is not None and ref.get("kind") == "Job":
            owner = (job_owners or {}).get(str(ref.get("uid")))
            if owner is None:
                continue  # not known to be the run's yet: never taken as its result
        if owner is not None and owner != uid:
            out.append(conflict(attempt, owner))
        elif (result := result_of(pod)) is not None:
            out.append(replace(result, name=attempt))  # a Job's Pod has a name of its own
    return out


def lost_pods(
    state: RunState, view: PodView, deleted: set[str], now: datetime
) -> list[AttemptResult]:
    """Container attempts whose pod went away before it finished: seen deleted, or not there
    at all a while after it was created (the operator was down when it went)."""
    out = []
    for attempt, task in state.active.items():
        pod = view.get(attempt)
        if task.action.container is None or (pod is not None and not pod.get("deleting")):
            continue
        if task.is_job:
            # A Job may wait in a queue (Kueue) with no Pod for long, and replaces a Pod
            # that was evicted: its attempt is bounded by its timeout, not by its Pod.
            continue
        started = task.status.attempt_start_time
        missing_long = started is not None and (now - started).total_seconds() > LOST_AFTER
        if attempt in deleted or missing_long:
            error = "the pod was deleted before the step finished"
            out.append(AttemptResult(attempt, error=error, lost=True))
    return out


def _wire(run: dict[str, Any], state: RunState) -> tuple[dict[str, Any], int]:
    """The status to write, and the size of the whole run object with it, as JSON."""
    status = state.status.wire()
    return status, len(json.dumps({**run, "status": status}, separators=(",", ":")))


def _parse_status(raw: dict[str, Any]) -> WorkflowRunStatus:
    return WorkflowRunStatus.model_validate(raw) if raw else WorkflowRunStatus()

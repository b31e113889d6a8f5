"""Everything a reconcile does to the world, in the order that makes a crash at any point safe:
Pods are created before the status that records them (a repeated create of the same
deterministic name is a 409, never a duplicate), and Events and log lines come after the
status write they describe.

Also the inbox: what the engine hears about a run from outside its object — the results of
webhook calls the operator made, and pods seen deleted before they finished — held until a
status write has recorded them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from braid.api.errors import FieldError
from braid.api.podtemplate import PodPolicy
from braid.api.reasons import EventReason, RunReason
from braid.api.run import ApprovalRecord, WorkflowRunStatus
from braid.api.workflow import PodGCStrategy
from braid.artifacts.lists import read_sized
from braid.controller.artifacts import ArtifactKeeper
from braid.controller.cache import ClusterCache
from braid.controller.secrets import SecretAccess
from braid.engine import (
    Action,
    AttemptResult,
    CancelAttempt,
    RecordDecision,
    RecordEvent,
    StartAttempt,
    children,
)
from braid.engine.actions import LoadItems, StoreCache
from braid.kube.artifact_pods import ArtifactSettings, uses_artifacts
from braid.kube.child_runs import child_run_for
from braid.kube.client import Cluster, ConflictError, PodRejectedError
from braid.kube.pods import (
    JOB_NAME_MAX,
    PodTemplateRefusedError,
    controller_uid,
    job_for,
    pod_for,
    result_of,
)
from braid.webhook import SecretReader, WebhookPolicy, call_webhook

if TYPE_CHECKING:
    import httpx

log = structlog.get_logger("braid.controller")

# Item lists (fanOut.itemsFrom) kept in memory, by the bytes of their JSON; the newest stays
# whatever its size, so its fan-out can go on.
ITEM_LIST_BYTES = 32 << 20
NO_REPOSITORY = (
    "the step reads input artifacts, but the operator has no artifact repository: install "
    "the chart with artifacts.endpoint and artifacts.bucket (or give braid operator "
    "--artifact-endpoint and --artifact-bucket)"
)

RunKey = tuple[str, str]  # (namespace, name)
GONE_KEPT = 10_000  # deleted runs remembered, so their children's late news is dropped


@dataclass
class Inbox:
    """Per run: webhook results and pods lost, until a reconcile has recorded them.
    ``notify`` is told which run has news (the runtime reconciles it)."""

    results: dict[RunKey, list[AttemptResult]] = field(default_factory=dict)
    lost: dict[RunKey, set[str]] = field(default_factory=dict)
    # How child runs (sub-workflow attempts) ended, told by their own reconciles: (the uid of
    # the run that owns the child, the result). The parent takes those its uid owns.
    children: dict[RunKey, list[tuple[str, AttemptResult]]] = field(default_factory=dict)
    gone: dict[RunKey, None] = field(default_factory=dict)  # runs deleted lately, oldest first
    notify: Callable[[RunKey], None] = lambda _key: None

    def deliver(self, key: RunKey, result: AttemptResult) -> None:
        self.results.setdefault(key, []).append(result)
        self.notify(key)

    def deliver_child(self, parent: RunKey, owner_uid: str, result: AttemptResult) -> None:
        if parent in self.gone:
            return  # its parent was deleted first (the garbage collector deletes both)
        self.children.setdefault(parent, []).append((owner_uid, result))
        self.notify(parent)

    def take_children(self, key: RunKey, uid: str) -> list[AttemptResult]:
        """The ends of this run's children (owned by ``uid``: not a namesake's)."""
        return [r for owner, r in self.children.pop(key, []) if owner == uid]

    def lose(self, key: RunKey, pod: str) -> None:
        self.lost.setdefault(key, set()).add(pod)

    def take(self, key: RunKey) -> tuple[list[AttemptResult], set[str]]:
        return self.results.pop(key, []), self.lost.pop(key, set())

    def put_back(self, key: RunKey, results: list[AttemptResult], lost: set[str]) -> None:
        """A reconcile that did not record them (a conflict, an error): keep them."""
        if results:
            self.results.setdefault(key, [])[:0] = results
        if lost:
            self.lost.setdefault(key, set()).update(lost)

    def forget(self, key: RunKey) -> None:
        self.results.pop(key, None)
        self.lost.pop(key, None)
        self.children.pop(key, None)
        self.gone[key] = None
        while len(self.gone) > GONE_KEPT:
            self.gone.pop(next(iter(self.gone)))


@dataclass
class Applier:
    cluster: Cluster
    inbox: Inbox
    pods: PodPolicy = field(default_factory=PodPolicy)
    webhook_policy: WebhookPolicy = field(default_factory=WebhookPolicy)
    shard_keys: frozenset[str] = frozenset()
    artifacts: ArtifactSettings | None = None  # the artifact repository, when configured
    cache: ClusterCache | None = None  # successes of cached steps (--step-cache)
    http: httpx.AsyncClient | None = None  # shared by every webhook call; made on first use
    # Webhook calls in flight: the event loop keeps only weak references to tasks.
    calls: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.secrets = SecretAccess(self.cluster)
        # fanOut.itemsFrom lists, by uri, shared by every run (the engine reads them through
        # Observations); the least recently used go first past ITEM_LIST_BYTES.
        self.item_lists: OrderedDict[str, list[Any] | str] = OrderedDict()
        self.item_bytes: dict[str, int] = {}
        self.loading: set[str] = set()
        self.keeper = (
            ArtifactKeeper(self.cluster, self.artifacts) if self.artifacts is not None else None
        )

    async def start(
        self, actions: list[Action], run: dict[str, Any], workflow: str, log_: Any
    ) -> list[AttemptResult]:
        """Carry out a decision's starts and cancels; attempts refused at once (a podTemplate
        not admitted, a Pod the API server rejects, a pod of that name owned by something else)
        come back as results for the engine to decide on."""
        namespace, name = run["metadata"]["namespace"], run["metadata"]["name"]
        refused: list[AttemptResult] = []
        for action in actions:
            if isinstance(action, StartAttempt):
                failure = await self._start(action, run, workflow, log_)
                if failure is not None:
                    refused.append(failure)
            elif isinstance(action, CancelAttempt):
                await self._cancel(namespace, action, log_)
            elif isinstance(action, LoadItems):
                self._load_items((namespace, name), action)
            elif isinstance(action, StoreCache) and self.cache is not None:
                await self.cache.put(namespace, action.entry)
        return refused

    async def _create_pod(
        self, action: StartAttempt, run: dict[str, Any], workflow: str
    ) -> AttemptResult | None:
        meta = run["metadata"]
        missing = await self.secrets.missing(action, meta["namespace"])
        if missing is not None:
            return AttemptResult(action.name, error=f"cannot start the step: {missing}")
        if uses_artifacts(action):
            if self.keeper is None:
                if action.container is not None and action.container.inputs:
                    return AttemptResult(action.name, artifact_error=NO_REPOSITORY)
            else:
                await self.keeper.hold(run)  # its artifacts go when the run goes
        pod = self._pod(action, meta, workflow)
        if isinstance(pod, AttemptResult):
            return pod
        if action.container is not None and action.container.job:
            return await self._create_job(action, pod, meta["uid"])
        return await self._create_plain_pod(action, pod, meta["uid"])

    async def _start(
        self, action: StartAttempt, run: dict[str, Any], workflow: str, log_: Any
    ) -> AttemptResult | None:
        namespace, name = run["metadata"]["namespace"], run["metadata"]["name"]
        if action.container is not None:
            failure = await self._create_pod(action, run, workflow)
            if failure is not None:
                log_.warning(
                    "Refused step pod",
                    pod=action.name,
                    step=action.labels.step,
                    reason=failure.error,
                )
                return failure
            log_.info(
                "Created step pod",
                pod=action.name,
                step=action.labels.step,
                attempt=action.labels.attempt,
            )
        elif action.child is not None:
            failure = await self._create_child(action, run)
            if failure is not None:
                log_.warning("Refused child run", child=action.name, reason=failure.error)
                return failure
            log_.info("Created child run", child=action.name, step=action.labels.step)
        else:
            hook = action.webhook
            if hook is not None and hook.model_call and self.keeper is not None:
                await self.keeper.hold(run)  # its exchange is kept until the run goes
            self._call_webhook((namespace, name), action, self.secrets.reader(namespace))
        return None

    async def _cancel(self, namespace: str, action: CancelAttempt, log_: Any) -> None:
        if action.child:
            child = children.run_name(action.name)
            await self.cluster.cancel_run(namespace, child)
            log_.info("Cancelled child run", child=child, reason=action.reason)
        elif action.job:
            await self.cluster.delete_job(namespace, action.name)
            log_.info("Deleted step job", job=action.name, reason=action.reason)
        else:
            await self.cluster.delete_pod(namespace, action.name)
            log_.info("Deleted step pod", pod=action.name, reason=action.reason)

    async def _create_child(
        self, action: StartAttempt, run: dict[str, Any]
    ) -> AttemptResult | None:
        """A sub-workflow's attempt: its child run (one of that name not owned by this run is
        a conflict, never taken for the child)."""
        meta = run["metadata"]
        inherited = {k: v for k, v in (meta.get("labels") or {}).items() if k in self.shard_keys}
        body = child_run_for(action, run, inherited)
        child = body["metadata"]["name"]
        return await _created(
            action.name,
            "WorkflowRun",
            lambda: self.cluster.create_run(body),
            lambda: self.cluster.get_run(meta["namespace"], child),
            meta["uid"],
        )

    async def _create_plain_pod(
        self, action: StartAttempt, pod: dict[str, Any], run_uid: str
    ) -> AttemptResult | None:
        namespace = pod["metadata"]["namespace"]
        return await _created(
            action.name,
            "Pod",
            lambda: self.cluster.create_pod(pod),
            lambda: self.cluster.get_pod(namespace, action.name),
            run_uid,
        )

    def _pod(
        self, action: StartAttempt, meta: dict[str, Any], workflow: str
    ) -> dict[str, Any] | AttemptResult:
        """The attempt's Pod, or why its podTemplate is not admitted."""
        try:
            return pod_for(
                action,
                namespace=meta["namespace"],
                run_name=meta["name"],
                run_uid=meta["uid"],
                workflow=workflow,
                inherited={
                    k: v for k, v in (meta.get("labels") or {}).items() if k in self.shard_keys
                },
                policy=self.pods,
                artifacts=self.artifacts,
            )
        except PodTemplateRefusedError as exc:
            return AttemptResult(action.name, error=f"podTemplate not admitted: {exc}")

    async def _create_job(
        self, action: StartAttempt, pod: dict[str, Any], run_uid: str
    ) -> AttemptResult | None:
        """runAs: Job. A Job of the attempt's name that is not the run's is a conflict."""
        if len(action.name) > JOB_NAME_MAX:
            return AttemptResult(
                action.name,
                error=f"runAs: Job needs an attempt name of at most {JOB_NAME_MAX} characters "
                f"({action.name!r} has {len(action.name)}); shorten the run or step names",
            )
        namespace = pod["metadata"]["namespace"]
        return await _created(
            action.name,
            "Job",
            lambda: self.cluster.create_job(job_for(pod)),
            lambda: self.cluster.get_job(namespace, action.name),
            run_uid,
        )

    async def job_owners(
        self, namespace: str, jobs: dict[str, str], known: dict[str, str]
    ) -> dict[str, str]:
        """The runs owning the Jobs whose Pods stand for attempts: {job uid: owner uid}, read
        once per Job (``jobs``: attempt -> the uid of the Job its Pod says it belongs to)."""
        for attempt, job_uid in jobs.items():
            if job_uid in known:
                continue
            job = await self.cluster.get_job(namespace, attempt)
            if job is not None and job["metadata"].get("uid") == job_uid:
                known[job_uid] = controller_uid(job) or ""
        return known

    def _load_items(self, key: RunKey, action: LoadItems) -> None:
        """Fetch a fan-out's item list in the background; the run decides again once it is
        in ``item_lists``."""
        if action.uri in self.item_lists:
            self.item_lists.move_to_end(action.uri)
            self.inbox.notify(key)
            return
        if action.uri in self.loading:
            return
        self.loading.add(action.uri)

        async def load() -> None:
            try:
                got: tuple[list[Any] | str, int] = ("no artifact repository is configured", 0)
                if self.keeper is not None:
                    store = self.keeper.store_for(key[0])
                    got = await asyncio.to_thread(read_sized, store, action.uri, action.sha256)
            finally:
                self.loading.discard(action.uri)
            self.item_lists[action.uri], self.item_bytes[action.uri] = got
            while len(self.item_lists) > 1 and sum(self.item_bytes.values()) > ITEM_LIST_BYTES:
                oldest, _ = self.item_lists.popitem(last=False)
                self.item_bytes.pop(oldest, None)
            self.inbox.notify(key)

        task = asyncio.ensure_future(load())
        self.calls.add(task)
        task.add_done_callback(self.calls.discard)

    def _call_webhook(self, key: RunKey, action: StartAttempt, secrets: SecretReader) -> None:
        """Webhook steps run in the operator process with async I/O; the result reaches the
        inbox. (An operator restart mid-call leaves the attempt to its deadline, which every
        webhook attempt has.)"""

        async def call() -> None:
            try:
                result = await call_webhook(self.client(), action, self.webhook_policy, secrets)
                if result.exchange is not None and self.keeper is not None:
                    result = await self.keeper.keep(key, action, result)
            except Exception as exc:  # noqa: BLE001 - call_webhook catches; this is the backstop
                result = AttemptResult(action.name, error=f"webhook call failed: {exc!r}"[:1000])
            self.inbox.deliver(key, result)

        task = asyncio.get_running_loop().create_task(call())
        self.calls.add(task)
        task.add_done_callback(self.calls.discard)

    def client(self) -> httpx.AsyncClient:
        """One connection pool for every webhook call (a client costs ~1 MiB). No
        redirects: a permitted host must not bounce the call somewhere denied."""
        if self.http is None:
            import httpx  # noqa: PLC0415 - loaded by the first webhook call, not at every start

            self.http = httpx.AsyncClient(
                follow_redirects=False,
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            )
        return self.http

    async def close(self) -> None:
        for task in list(self.calls):
            task.cancel()
        if self.http is not None:
            await self.http.aclose()

    async def write(self, run: dict[str, Any], status: dict[str, Any]) -> dict[str, Any] | None:
        """The status, guarded by the resourceVersion read; None when it changed meanwhile."""
        try:
            return await self.cluster.replace_run_status(run, status)
        except ConflictError:
            return None

    async def record(self, updated: dict[str, Any], actions: list[Action], log_: Any) -> None:
        """After the status write: Events, log lines, and one audit line per approval
        decision (the status and Events do not outlive the run; a log pipeline can)."""
        uid = updated["metadata"].get("uid")
        for action in actions:
            if isinstance(action, RecordEvent):
                if not action.progress:
                    await self.cluster.record_event(updated, action)
                log_.info(action.message, reason=action.reason, step=action.step)
            elif isinstance(action, RecordDecision):
                log_.info(
                    "Recorded approval decision",
                    audit="approval",
                    run_uid=uid,
                    gate=action.gate,
                    iteration=action.iteration,
                    user=action.user,
                    decision=action.decision,
                    digest=action.digest,
                    reason=action.reason,
                    verified=action.verified,
                )

    async def collect_pods(
        self, run: dict[str, Any], pods: list[dict[str, Any]], active: set[str]
    ) -> None:
        """Pod GC OnPodCompletion: every finished pod of the run whose result is recorded."""
        meta = run["metadata"]
        for pod in pods:
            name = pod["metadata"]["name"]
            if (
                result_of(pod) is not None
                and name not in active
                and not pod.get("deleting")
                and controller_uid(pod) == meta["uid"]
            ):
                await self.cluster.delete_pod(meta["namespace"], name)

    async def after_finish(
        self,
        run: dict[str, Any],
        status: WorkflowRunStatus,
        pods: list[dict[str, Any]],
        now: datetime,
    ) -> float | None:
        """Pod GC on completion, and the run's own deletion once its TTL has passed; returns
        how long until then, when it has not."""
        spec = status.workflow_spec
        if spec is None or status.completion_time is None:
            return None
        meta = run["metadata"]
        gc = spec.pod_gc.strategy if spec.pod_gc else PodGCStrategy.NEVER
        for pod in pods:
            # Only pods the run controls: anyone may label a pod with a run's name, and such
            # a pod is not the operator's to stop or collect.
            if pod.get("deleting") or controller_uid(pod) != meta["uid"]:
                continue
            # A finished run leaves nothing of its own running: a pod its status never
            # recorded (started just before the operator stopped, say) goes whatever the
            # podGC strategy.
            running = (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            if running or gc != PodGCStrategy.NEVER:
                await self.cluster.delete_pod(meta["namespace"], pod["metadata"]["name"])
        ttl = spec.ttl_strategy.seconds(bool(status.succeeded)) if spec.ttl_strategy else None
        if ttl is None:
            return None
        due = (status.completion_time - now).total_seconds() + ttl
        if due > 0:
            return due
        await self.cluster.delete_run(meta["namespace"], meta["name"], meta["uid"])
        log.info(
            "Deleted finished run (TTL)",
            namespace=meta["namespace"],
            run=meta["name"],
            run_uid=meta["uid"],
            audit="deletion",
            succeeded=status.succeeded,
            approvals=approval_summary(status),
        )
        return None

    async def reject(
        self,
        run: dict[str, Any],
        status: WorkflowRunStatus,
        errors: list[FieldError],
        now: datetime,
        log_: Any,
    ) -> None:
        """An invalid run fails at once, saying every problem with its field path. Only runs
        that have not started come here: nothing of theirs is running."""
        message = "; ".join(str(e) for e in errors)
        generation = run["metadata"].get("generation")
        status.mark_failed(RunReason.INVALID_SPEC, message[:4000], now, generation)
        with contextlib.suppress(ConflictError):
            updated = await self.cluster.replace_run_status(run, status.wire())
            event = RecordEvent("Warning", EventReason.INVALID_SPEC, f"Run rejected: {message}")
            await self.cluster.record_event(updated, replace_message(event, 1024))
        log_.warning("Rejected invalid run", problems=message[:4000])


async def _created(
    attempt: str,
    kind: str,
    create: Callable[[], Awaitable[bool]],
    read: Callable[[], Awaitable[dict[str, Any] | None]],
    run_uid: str,
) -> AttemptResult | None:
    """Create an attempt's Pod or Job. One of that name existing already is ours from an
    earlier try of this very decision, or someone else's under our attempt's name, whose
    result must never be taken: a conflict."""
    try:
        if await create():
            return None
    except PodRejectedError as exc:
        return AttemptResult(attempt, error=f"the API server refused the {kind}: {exc}")
    existing = await read()
    owner = controller_uid(existing) if existing is not None else run_uid
    return None if owner == run_uid else conflict(attempt, owner, kind)


def replace_message(event: RecordEvent, limit: int) -> RecordEvent:
    return RecordEvent(event.type, event.reason, event.message[:limit], event.step)


def conflict(attempt: str, owner: str | None, kind: str = "pod") -> AttemptResult:
    return AttemptResult(
        attempt,
        error=f"a {kind.lower()} named {attempt} already exists and belongs to another object "
        f"(uid {owner}); its result is not this run's",
        conflict=True,
    )


def approval_summary(status: WorkflowRunStatus) -> list[dict[str, Any]]:
    """Every recorded decision of a run, for the line logged when its TTL deletes it."""
    out: list[dict[str, Any]] = []
    for step in status.steps:
        records: list[tuple[int | None, ApprovalRecord]] = [(None, r) for r in step.approvals or []]
        for it in step.iterations or []:
            records += [(it.iteration, r) for b in it.steps for r in b.approvals or []]
        out += [
            {
                "step": step.name,
                "iteration": iteration,
                "user": r.user,
                "decision": r.decision,
                "digest": r.digest,
                "verified": r.verified,
            }
            for iteration, r in records
        ]
    budget = status.budget.approvals if status.budget is not None else None
    out += [{"step": "budget", "user": r.user, "decision": r.decision} for r in budget or []]
    return out

"""One level-based reconcile of a WorkflowRun behind every trigger.

Read the run and its pods, ask the engine, apply its actions, write status. The order makes a
crash at any point safe: Pods are created before the status that records them (a repeated
create of the same deterministic name is a 409, not a duplicate), and Events are emitted only
after the status write that they describe succeeded.

What a run may say is bounded before it costs the operator anything: the engine's work (status
parsing, expressions, decisions) runs in one worker thread, so the event loop keeps serving
every other run and the liveness probe; a Pod the API server refuses, a pod of that name that
belongs to someone else, a webhook that raises, or a status that outgrows the object size
limit each ends as a clear failure of that attempt or run, never as a reconcile that fails
forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import structlog
from pydantic import ValidationError

from braid.api.errors import FieldError, InvalidSpecError, from_validation_error
from braid.api.manifests import check_depth
from braid.api.podtemplate import PodPolicy
from braid.api.reasons import RunReason
from braid.api.run import (
    ApprovalRecord,
    WorkflowRunSpec,
    WorkflowRunStatus,
)
from braid.api.workflow import PodGCStrategy, WorkflowSpec
from braid.controller.pools import Pools
from braid.engine import (
    DIGEST_LENGTH,
    Action,
    ApprovalDecision,
    AttemptResult,
    CancelAttempt,
    Decision,
    Observations,
    RecordDecision,
    RecordEvent,
    RunState,
    StartAttempt,
    resolve_params,
)
from braid.engine.breakers import BreakerBoard
from braid.engine.retry import seed_status
from braid.engine.validate import validate_workflow
from braid.kube.client import Cluster, ConflictError, PodRejectedError
from braid.kube.pods import PodTemplateRefusedError, controller_uid, pod_for, result_of
from braid.kube.selectors import Matcher
from braid.metrics import Before, Metrics
from braid.webhook import WebhookPolicy, call_webhook

log = structlog.get_logger("braid.controller")

APPROVE_PREFIX = "approve.braid.dev/"
REJECT_PREFIX = "reject.braid.dev/"
# Who asked for a retry (kubectl braid retry writes it; the approval policy checks it names the
# requester), so a retry reuses only that person's own approvals.
REQUESTED_BY = "braid.dev/requested-by"

Clock = Callable[[], datetime]
T = TypeVar("T")


def _utcnow() -> datetime:
    return datetime.now(UTC)


_DIGEST_SUFFIX = re.compile(rf"^(?P<user>.+):(?P<digest>[0-9a-f]{{{DIGEST_LENGTH}}})$")


def _entry(raw: str) -> tuple[str, str | None]:
    """``alice`` or ``alice:<digest>`` (approving the inputs with that digest). User names may
    hold colons (``system:serviceaccount:ns:bot``, ``oidc:alice``): only a final ``:`` followed
    by a whole digest is one."""
    match = _DIGEST_SUFFIX.match(raw)
    return (match["user"], match["digest"]) if match else (raw, None)


def decisions_from(annotations: dict[str, str], *, verified: bool) -> list[ApprovalDecision]:
    """Approval annotations on the run.

    ``approve.braid.dev/<step>: alice,bob:<digest>`` — each approver adds their own entry;
    ``reject.braid.dev/<step>: "carol: too risky"`` — who rejected, then ``": "``, then why.
    ``verified``: the admission policy (charts/braid/templates/approval-policy.yaml) is
    enforced, so each entry names the person who wrote it and they may decide the gate,
    including through their groups, which only the API server knows.
    """
    out = []
    for key, value in annotations.items():
        if key.startswith(APPROVE_PREFIX):
            step = key[len(APPROVE_PREFIX) :]
            for raw in filter(None, (e.strip() for e in value.split(","))):
                user, digest = _entry(raw)
                out.append(
                    ApprovalDecision(step, user, approve=True, digest=digest, admitted=verified)
                )
        elif key.startswith(REJECT_PREFIX):
            # The user name ends at the first ": " (colon and space), so names with colons
            # keep them whole.
            user, sep, reason = value.partition(": ")
            if not sep:
                user, reason = value.removesuffix(":"), ""
            out.append(
                ApprovalDecision(
                    key[len(REJECT_PREFIX) :],
                    user.strip(),
                    approve=False,
                    reason=reason.strip() or "no reason given",
                    admitted=verified,
                )
            )
    return out


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


# A container attempt whose pod has not been seen for this long after it was created is lost
# (its deletion happened while the operator was not watching).
LOST_AFTER = 60.0
# The whole run object as the operator writes it may not pass this (etcd refuses requests over
# 1.5 MiB; the API server adds managed fields): a run that would is failed StatusTooLarge.
MAX_OBJECT_BYTES = 1_000_000
# Rounds of "start, refused at once, decide again" in one reconcile (each round fails attempts,
# so retries with backoff end it; the bound only keeps a pathological spec from spinning).
MAX_ROUNDS = 8


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
    http: httpx.AsyncClient | None = None  # shared by every webhook call; made on first use
    webhook_results: dict[tuple[str, str], list[AttemptResult]] = field(default_factory=dict)
    on_wake: Callable[[str, str, float], None] = lambda _ns, _name, _delay: None
    metrics: Metrics | None = None
    # The resourceVersion of each run's last status write: the watch event it causes carries
    # nothing new, so the handler can skip it.
    written: dict[tuple[str, str], str] = field(default_factory=dict)
    # Shared by every run: concurrency pools and circuit breakers (in memory; breakers start
    # closed when the operator starts).
    pools: Pools = field(default_factory=Pools)
    breakers: BreakerBoard = field(default_factory=BreakerBoard)
    # Every indexed step pod holding a concurrency key, as (run, key, phase); read only for
    # runs whose steps use a pool.
    pool_pods: Callable[[], list[tuple[tuple[str, str], str, str | None]]] = list
    # Where webhook steps may send requests (the operator's --webhook-allow/--webhook-deny).
    webhook_policy: WebhookPolicy = field(default_factory=WebhookPolicy)
    # What podTemplates may ask for (--pod-security, --pod-service-account).
    pods: PodPolicy = field(default_factory=PodPolicy)
    # The approval admission policy is installed and enforced (checked at start): approver
    # names are the API server's word, and approvals through groups can count.
    approvals_verified: bool = False
    # A shard reconciles only the runs whose labels match (--selector), and gives their pods
    # the labels its selector reads, so it can watch just those pods too.
    shard: Matcher = lambda _labels: True
    shard_keys: frozenset[str] = frozenset()
    engine: EngineThread = field(default_factory=EngineThread)
    # Webhook calls in flight: the event loop keeps only weak references to tasks.
    calls: set[asyncio.Task[None]] = field(default_factory=set)

    async def reconcile(
        self,
        namespace: str,
        name: str,
        pods: Iterable[dict[str, Any]] | PodView,
        lost: Iterable[str] = (),
    ) -> None:
        """``pods``: the run's step pods as indexed; ``lost``: pods seen deleted before they
        finished."""
        view = pods if isinstance(pods, PodView) else PodView(pods)
        run = await self.cluster.get_run(namespace, name)
        if run is None or run["metadata"].get("deletionTimestamp"):
            return
        if not self.shard(run["metadata"].get("labels") or {}):
            return  # another shard's run
        raw_status = run.get("status") or {}
        status = await self.engine(_parse_status, raw_status)
        if status.succeeded is not None:
            await self._after_finish(run, status, view)  # finished runs are history
            return
        log_ = log.bind(namespace=namespace, run=name)
        if status.workflow_spec is None:
            try:
                status, spec, params = await self._admit(run, status)
            except InvalidSpecError as exc:
                await self._reject(run, status, exc.errors, log_)
                return
        else:
            # A started run follows its snapshot; of its live spec only `cancelled` matters,
            # so no later edit of the spec can fail it with its pods left running.
            spec, params = status.workflow_spec, status.params or {}
        meta = run["metadata"]
        workflow = _workflow_name(run) or name
        log_ = log_.bind(workflow=workflow)
        before = Before.of(status)
        state = await self.engine(
            RunState.load, name, spec, status, params, meta.get("generation"), meta["uid"]
        )
        key = (namespace, name)
        webhook_results = self.webhook_results.pop(key, [])
        now = self.clock()
        observations = Observations(
            # Only pods the engine waits for: a huge fan-out's finished pods cost nothing.
            results=self._pod_results(state, view, meta["uid"])
            + webhook_results
            + self._lost(state, view, set(lost), now),
            decisions=decisions_from(
                meta.get("annotations") or {}, verified=self.approvals_verified
            ),
            cancel=(run.get("spec") or {}).get("cancelled") is True,
            breakers=self.breakers,
            approvals_verified=self.approvals_verified,
        )
        pool_pods = self.pool_pods() if state.plan.pools else []

        async def decide(obs: Observations) -> Decision:
            decision, wake = await self.engine(self._decide, state, obs, now, key, pool_pods)
            for other in wake:
                self.on_wake(*other, 0.0)
            return decision

        decision = await decide(observations)
        actions: list[Action] = []
        changed = False
        for _ in range(MAX_ROUNDS):
            actions += decision.actions
            changed |= decision.changed
            refused = await self._apply(decision.actions, run, workflow, log_)
            if not refused:
                break
            decision = await decide(self._observe(results=refused))
        body = await self.engine(_wire, run, state)
        for level in (1, 2):
            if body.size <= MAX_OBJECT_BYTES:
                break
            # Too large to write: the run fails, shedding what made it large (RunState.shed).
            message = (
                f"the run object reached {body.size} bytes, over the operator's budget of "
                f"{MAX_OBJECT_BYTES} (the API server refuses objects over 1.5 MiB); keep large "
                "data out of step outputs and pass a reference to it instead"
            )
            decision = await decide(self._observe(oversized=(message, level)))
            actions += decision.actions
            changed = True
            await self._apply(decision.actions, run, workflow, log_)
            body = await self.engine(_wire, run, state)
        if changed:
            try:
                updated = await self.cluster.replace_run_status(run, body.status)
            except ConflictError:
                # Results held only in memory must survive until a status write records them.
                self.webhook_results.setdefault(key, []).extend(webhook_results)
                log_.info("Status changed underneath; reconciling again")
                self.on_wake(namespace, name, 0.0)
                return
            self.written[key] = updated["metadata"]["resourceVersion"]
            if self.metrics is not None:
                self.metrics.record(
                    namespace, workflow, name, before, state.status, actions, self.clock()
                )
            await self._record(updated, actions, log_)
        spec_gc = state.plan.spec.pod_gc
        if spec_gc is not None and spec_gc.strategy == PodGCStrategy.ON_POD_COMPLETION:
            # Results are in the status now (written above, or unchanged): the pods can go.
            for pod in view.all():
                pod_name = pod["metadata"]["name"]
                if (
                    result_of(pod) is not None
                    and pod_name not in state.active
                    and not pod.get("deleting")
                    and controller_uid(pod) in (None, meta["uid"])
                ):
                    await self.cluster.delete_pod(namespace, pod_name)
        if decision.finished:
            await self._after_finish(run, state.status, view)
        elif decision.wake_at is not None:
            delay = max(0.0, (decision.wake_at - self.clock()).total_seconds())
            self.on_wake(namespace, name, delay)

    def _observe(self, **kwargs: Any) -> Observations:
        return Observations(
            breakers=self.breakers, approvals_verified=self.approvals_verified, **kwargs
        )

    def _decide(
        self,
        state: RunState,
        observations: Observations,
        now: datetime,
        key: tuple[str, str],
        pool_pods: list[tuple[tuple[str, str], str, str | None]],
    ) -> tuple[Decision, set[tuple[str, str]]]:
        """In the engine thread: decide, and reserve the slots the decision took before any
        other run decides (one thread serialises both). Returns the runs to wake: those
        waiting for a slot this run let go of."""
        if state.plan.pools:
            observations.elsewhere = self.pools.elsewhere(key, pool_pods)
        decision = state.decide(observations, now)
        return decision, self.pools.update(key, decision.held, decision.waiting_for)

    def _pod_results(self, state: RunState, view: PodView, uid: str) -> list[AttemptResult]:
        out = []
        for attempt in state.active:
            pod = view.get(attempt)
            if pod is None:
                continue
            owner = controller_uid(pod)
            if owner is not None and owner != uid:
                out.append(_conflict(attempt, owner))
            elif (result := result_of(pod)) is not None:
                out.append(result)
        return out

    async def _apply(
        self, actions: list[Action], run: dict[str, Any], workflow: str, log_: Any
    ) -> list[AttemptResult]:
        """Carry out the decision's starts and cancels; attempts refused at once (a podTemplate
        not admitted, a Pod the API server rejects, a pod of that name owned by something else)
        come back as results for the engine to decide on."""
        namespace, name = run["metadata"]["namespace"], run["metadata"]["name"]
        refused: list[AttemptResult] = []
        for action in actions:
            if isinstance(action, StartAttempt) and action.container is not None:
                failure = await self._create_pod(action, run, workflow)
                if failure is not None:
                    refused.append(failure)
                    log_.warning(
                        "Refused step pod",
                        pod=action.name,
                        step=action.labels.step,
                        reason=failure.error,
                    )
                    continue
                log_.info(
                    "Created step pod",
                    pod=action.name,
                    step=action.labels.step,
                    attempt=action.labels.attempt,
                )
            elif isinstance(action, StartAttempt):
                self._call_webhook(namespace, name, action)
            elif isinstance(action, CancelAttempt):
                await self.cluster.delete_pod(namespace, action.name)
                log_.info("Deleted step pod", pod=action.name, reason=action.reason)
        return refused

    async def _create_pod(
        self, action: StartAttempt, run: dict[str, Any], workflow: str
    ) -> AttemptResult | None:
        meta = run["metadata"]
        try:
            pod = pod_for(
                action,
                namespace=meta["namespace"],
                run_name=meta["name"],
                run_uid=meta["uid"],
                workflow=workflow,
                inherited={
                    k: v for k, v in (meta.get("labels") or {}).items() if k in self.shard_keys
                },
                policy=self.pods,
            )
        except PodTemplateRefusedError as exc:
            return AttemptResult(action.name, error=f"podTemplate not admitted: {exc}")
        try:
            created = await self.cluster.create_pod(pod)
        except PodRejectedError as exc:
            return AttemptResult(action.name, error=f"the API server refused the Pod: {exc}")
        if created:
            return None
        # A pod of that name exists: ours from an earlier try of this very decision, or a
        # pod someone else made under our attempt's name, whose result must never be taken.
        existing = await self.cluster.get_pod(meta["namespace"], action.name)
        owner = controller_uid(existing) if existing is not None else meta["uid"]
        if owner != meta["uid"]:
            return _conflict(action.name, owner)
        return None

    async def _record(self, updated: dict[str, Any], actions: list[Action], log_: Any) -> None:
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

    def _lost(
        self, state: RunState, pods: PodView, deleted: set[str], now: datetime
    ) -> list[AttemptResult]:
        """Container attempts whose pod went away before it finished: seen deleted, or not
        there at all a while after it was created (the operator was down when it went)."""
        out = []
        for attempt, task in state.active.items():
            pod = pods.get(attempt)
            if task.action.container is None or (pod is not None and not pod.get("deleting")):
                continue
            started = task.status.attempt_start_time
            missing_long = started is not None and (now - started).total_seconds() > LOST_AFTER
            if attempt in deleted or missing_long:
                out.append(
                    AttemptResult(
                        attempt, error="the pod was deleted before the step finished", lost=True
                    )
                )
        return out

    async def _after_finish(
        self, run: dict[str, Any], status: WorkflowRunStatus, pods: PodView
    ) -> None:
        """Pod GC on completion, and the run's own deletion once its TTL has passed."""
        spec = status.workflow_spec
        if spec is None or status.completion_time is None:
            return
        meta = run["metadata"]
        gc = spec.pod_gc.strategy if spec.pod_gc else PodGCStrategy.NEVER
        if gc != PodGCStrategy.NEVER:
            for pod in pods.all():
                if not pod.get("deleting") and controller_uid(pod) in (None, meta["uid"]):
                    await self.cluster.delete_pod(meta["namespace"], pod["metadata"]["name"])
        ttl = spec.ttl_strategy.seconds(bool(status.succeeded)) if spec.ttl_strategy else None
        if ttl is None:
            return
        due = (status.completion_time - self.clock()).total_seconds() + ttl
        if due <= 0:
            await self.cluster.delete_run(meta["namespace"], meta["name"], meta["uid"])
            log.info(
                "Deleted finished run (TTL)",
                namespace=meta["namespace"],
                run=meta["name"],
                run_uid=meta["uid"],
                audit="deletion",
                succeeded=status.succeeded,
                approvals=_approval_summary(status),
            )
        else:
            self.on_wake(meta["namespace"], meta["name"], due)

    async def _admit(
        self, run: dict[str, Any], status: WorkflowRunStatus
    ) -> tuple[WorkflowRunStatus, WorkflowSpec, dict[str, Any]]:
        """A run that has not started: its spec parsed, its workflow resolved (or its retry
        seeded), validated under the operator's pod policy, its params checked."""
        namespace = run["metadata"]["namespace"]
        try:
            check_depth(run.get("spec"), "spec.")
            parsed = await self.engine(WorkflowRunSpec.model_validate, run.get("spec") or {})
        except ValidationError as exc:
            raise from_validation_error(exc, "spec") from None
        if parsed.retry_of is not None:
            status = await self._seed_retry(run, parsed)
        spec = status.workflow_spec or await self._resolve_spec(parsed, namespace)
        errors = await self.engine(validate_workflow, spec, self.pods, namespace)
        if errors:
            raise InvalidSpecError(errors)
        params = (
            status.params
            if status.params is not None
            else resolve_params(spec, parsed.params, "spec.params")
        )
        return status, spec, params

    async def _seed_retry(self, run: dict[str, Any], parsed: WorkflowRunSpec) -> WorkflowRunStatus:
        retry = parsed.retry_of
        assert retry is not None
        namespace = run["metadata"]["namespace"]
        old = await self.cluster.get_run(namespace, retry.name)
        if old is None or not old.get("status"):
            raise InvalidSpecError(
                [
                    FieldError(
                        "spec.retryOf.name", f"no started run named {retry.name!r} in {namespace!r}"
                    )
                ]
            )
        previous = WorkflowRunStatus.model_validate(old["status"])
        if previous.workflow_spec is None:
            raise InvalidSpecError(
                [FieldError("spec.retryOf.name", f"run {retry.name!r} never started")]
            )
        _same_workflow(parsed, old, previous)
        # Approvals are reused only for the person who gave them, as the API server vouches.
        annotations = run["metadata"].get("annotations") or {}
        requester = annotations.get(REQUESTED_BY) if self.approvals_verified else None
        return seed_status(previous, retry.name, retry.from_step, requester)

    async def _resolve_spec(self, run: WorkflowRunSpec, namespace: str) -> WorkflowSpec:
        if run.workflow is not None:
            return run.workflow
        assert run.workflow_ref is not None
        ref = run.workflow_ref.name
        obj = await self.cluster.get_workflow(namespace, ref)
        if obj is None:
            raise InvalidSpecError(
                [
                    FieldError(
                        "spec.workflowRef.name",
                        f"no Workflow named {ref!r} in namespace {namespace!r}",
                    )
                ]
            )
        try:
            check_depth(obj.get("spec"), f"Workflow {ref}: spec.")
            return await self.engine(WorkflowSpec.model_validate, obj.get("spec") or {})
        except ValidationError as exc:
            raise from_validation_error(exc, f"Workflow {ref}: spec") from None

    async def _reject(
        self, run: dict[str, Any], status: WorkflowRunStatus, errors: list[FieldError], log_: Any
    ) -> None:
        """An invalid run fails at once, saying every problem with its field path. Only runs
        that have not started come here: nothing of theirs is running."""
        now = self.clock()
        message = "; ".join(str(e) for e in errors)
        status.mark_failed(
            RunReason.INVALID_SPEC, message[:4000], now, run["metadata"].get("generation")
        )
        with contextlib.suppress(ConflictError):
            updated = await self.cluster.replace_run_status(run, status.wire())
            await self.cluster.record_event(
                updated, RecordEvent("Warning", "InvalidSpec", f"Run rejected: {message}"[:1024])
            )
        log_.warning("Rejected invalid run", problems=message[:4000])

    def client(self) -> httpx.AsyncClient:
        """One connection pool for every webhook call (a client costs ~1 MiB). No
        redirects: a permitted host must not bounce the call somewhere denied."""
        if self.http is None:
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

    def _call_webhook(self, namespace: str, name: str, action: StartAttempt) -> None:
        """Webhook steps run in the operator process with async I/O; the result is observed on
        the next reconcile. (An operator restart mid-call leaves the attempt to its deadline,
        which every webhook attempt has.)"""

        async def call() -> None:
            try:
                result = await call_webhook(self.client(), action, self.webhook_policy)
            except Exception as exc:  # noqa: BLE001 - call_webhook catches; this is the backstop
                result = AttemptResult(action.name, error=f"webhook call failed: {exc!r}"[:1000])
            self.webhook_results.setdefault((namespace, name), []).append(result)
            self.on_wake(namespace, name, 0.0)

        task = asyncio.get_running_loop().create_task(call())
        self.calls.add(task)
        task.add_done_callback(self.calls.discard)


@dataclass
class _Body:
    status: dict[str, Any]
    size: int  # of the whole run object with this status, as JSON


def _wire(run: dict[str, Any], state: RunState) -> _Body:
    status = state.status.wire()
    return _Body(status, len(json.dumps({**run, "status": status}, separators=(",", ":"))))


def _parse_status(raw: dict[str, Any]) -> WorkflowRunStatus:
    return WorkflowRunStatus.model_validate(raw) if raw else WorkflowRunStatus()


def _workflow_name(run: dict[str, Any]) -> str | None:
    ref = (run.get("spec") or {}).get("workflowRef")
    name = ref.get("name") if isinstance(ref, dict) else None
    return name if isinstance(name, str) else None


def _conflict(attempt: str, owner: str | None) -> AttemptResult:
    return AttemptResult(
        attempt,
        error=f"a pod named {attempt} already exists and belongs to another object (uid "
        f"{owner}); its result is not this run's",
        conflict=True,
    )


def _same_workflow(
    parsed: WorkflowRunSpec, old: dict[str, Any], previous: WorkflowRunStatus
) -> None:
    """A retry runs the workflow of the run it retries, with that run's params."""
    old_ref = _workflow_name(old)
    name = old["metadata"]["name"]
    assert previous.workflow_spec is not None
    if parsed.workflow_ref is not None and parsed.workflow_ref.name != old_ref:
        ran = f"Workflow {old_ref!r}" if old_ref else "an inline workflow"
        raise InvalidSpecError(
            [
                FieldError(
                    "spec.workflowRef.name",
                    f"a retry runs the workflow of the run it retries: {name!r} ran {ran}",
                )
            ]
        )
    if parsed.workflow is not None and parsed.workflow.wire() != previous.workflow_spec.wire():
        raise InvalidSpecError(
            [
                FieldError(
                    "spec.workflow",
                    f"a retry runs the workflow of the run it retries: set it to {name!r}'s "
                    "status.workflowSpec (kubectl braid retry does)",
                )
            ]
        )
    if parsed.params is not None and parsed.params != (previous.params or {}):
        raise InvalidSpecError(
            [
                FieldError(
                    "spec.params",
                    f"a retry runs with the params of {name!r}; leave them out or copy them",
                )
            ]
        )


def _approval_summary(status: WorkflowRunStatus) -> list[dict[str, Any]]:
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

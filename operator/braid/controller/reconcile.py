"""One level-based reconcile of a WorkflowRun behind every trigger.

Read the run and its pods, ask the engine, apply its actions, write status. The order makes a
crash at any point safe: Pods are created before the status that records them (a repeated
create of the same deterministic name is a 409, not a duplicate), and Events are emitted only
after the status write that they describe succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
from pydantic import ValidationError

from braid.api.common import ConditionStatus
from braid.api.errors import FieldError, InvalidSpecError, from_validation_error
from braid.api.manifests import check_depth
from braid.api.run import (
    CONDITION_SUCCEEDED,
    RunPhase,
    WorkflowRun,
    WorkflowRunSpec,
    WorkflowRunStatus,
)
from braid.api.workflow import PodGCStrategy, WorkflowSpec
from braid.controller.pools import Pools
from braid.engine import (
    DIGEST_LENGTH,
    ApprovalDecision,
    AttemptResult,
    CancelAttempt,
    Observations,
    RecordEvent,
    RunState,
    StartAttempt,
    resolve_params,
)
from braid.engine.breakers import BreakerBoard
from braid.engine.retry import seed_status
from braid.engine.validate import validate_workflow
from braid.kube.client import Cluster, ConflictError
from braid.kube.pods import pod_for, result_of
from braid.kube.selectors import Matcher
from braid.metrics import Before, Metrics
from braid.webhook import WebhookPolicy, call_webhook

log = structlog.get_logger("braid.controller")

APPROVE_PREFIX = "approve.braid.dev/"
REJECT_PREFIX = "reject.braid.dev/"

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


_DIGEST_SUFFIX = re.compile(rf"^(?P<user>.+):(?P<digest>[0-9a-f]{{{DIGEST_LENGTH}}})$")


def _entry(raw: str) -> tuple[str, str | None]:
    """``alice`` or ``alice:1a2b3c4d`` (approving the inputs with that digest)."""
    match = _DIGEST_SUFFIX.match(raw)
    return (match["user"], match["digest"]) if match else (raw, None)


def decisions_from(annotations: dict[str, str]) -> list[ApprovalDecision]:
    """Approval annotations on the run.

    ``approve.braid.dev/<step>: alice,bob:1a2b3c4d`` — each approver adds their own entry;
    ``reject.braid.dev/<step>: "carol: too risky"`` — who rejected, and why. The admission
    policy (charts/braid/templates/approval-policy.yaml) guarantees each entry names the person
    who wrote it and that they may decide the gate, including through their groups, which only
    the API server knows.
    """
    out = []
    for key, value in annotations.items():
        if key.startswith(APPROVE_PREFIX):
            step = key[len(APPROVE_PREFIX) :]
            for raw in filter(None, (e.strip() for e in value.split(","))):
                user, digest = _entry(raw)
                out.append(ApprovalDecision(step, user, approve=True, digest=digest, admitted=True))
        elif key.startswith(REJECT_PREFIX):
            user, _, reason = value.partition(":")
            out.append(
                ApprovalDecision(
                    key[len(REJECT_PREFIX) :],
                    user.strip(),
                    approve=False,
                    reason=reason.strip() or "no reason given",
                    admitted=True,
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


@dataclass
class Reconciler:
    cluster: Cluster
    clock: Clock = _utcnow
    http: httpx.AsyncClient | None = None
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
    # A shard reconciles only the runs whose labels match (--selector), and gives their pods
    # the labels its selector reads, so it can watch just those pods too.
    shard: Matcher = lambda _labels: True
    shard_keys: frozenset[str] = frozenset()

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
        status = WorkflowRunStatus.model_validate(raw_status) if raw_status else WorkflowRunStatus()
        if status.succeeded is not None:
            await self._after_finish(run, status, view)  # finished runs are history
            return
        log_ = log.bind(namespace=namespace, run=name)
        try:
            check_depth(run.get("spec"), "spec.")
            # Only the spec: the status was parsed above, and parsing it twice costs the most.
            parsed = WorkflowRun(
                metadata=run["metadata"], spec=WorkflowRunSpec.model_validate(run["spec"])
            )
            if parsed.spec.retry_of is not None and status.workflow_spec is None:
                status = await self._seed_retry(parsed, namespace)
            spec = status.workflow_spec or await self._resolve_spec(parsed, namespace)
            params = (
                status.params
                if status.params is not None
                else resolve_params(spec, parsed.spec.params, "spec.params")
            )
        except InvalidSpecError as exc:
            await self._reject(run, status, exc.errors, log_)
            return
        except ValidationError as exc:
            await self._reject(run, status, from_validation_error(exc).errors, log_)
            return
        before = Before.of(status)
        state = RunState.load(name, spec, status, params, run["metadata"].get("generation"))
        webhook_results = self.webhook_results.pop((namespace, name), [])
        key = (namespace, name)
        now = self.clock()
        observations = Observations(
            # Only pods the engine waits for: a huge fan-out's finished pods cost nothing.
            results=[
                r
                for r in (result_of(p) for p in map(view.get, state.active) if p is not None)
                if r is not None
            ]
            + webhook_results
            + self._lost(state, view, set(lost), now),
            decisions=decisions_from(run["metadata"].get("annotations") or {}),
            cancel=bool(parsed.spec.cancelled),
            elsewhere=self.pools.elsewhere(key, self.pool_pods()) if state.plan.pools else {},
            breakers=self.breakers,
        )
        decision = state.decide(observations, now)
        # Reserved before any await, so two runs reconciled at once cannot both take a slot.
        for other in self.pools.update(key, decision.held, decision.waiting_for):
            self.on_wake(*other, 0.0)
        workflow = parsed.spec.workflow_ref.name if parsed.spec.workflow_ref else name
        log_ = log_.bind(workflow=workflow)
        for action in decision.actions:
            if isinstance(action, StartAttempt) and action.container is not None:
                pod = pod_for(
                    action,
                    namespace=namespace,
                    run_name=name,
                    run_uid=run["metadata"]["uid"],
                    workflow=workflow,
                    inherited={
                        k: v
                        for k, v in (run["metadata"].get("labels") or {}).items()
                        if k in self.shard_keys
                    },
                )
                created = await self.cluster.create_pod(pod)
                log_.info(
                    "Created step pod" if created else "Found step pod",
                    pod=action.name,
                    step=action.labels.step,
                    attempt=action.labels.attempt,
                )
            elif isinstance(action, StartAttempt):
                self._call_webhook(namespace, name, action)
            elif isinstance(action, CancelAttempt):
                await self.cluster.delete_pod(namespace, action.name)
                log_.info("Deleted step pod", pod=action.name, reason=action.reason)
        if decision.changed:
            try:
                updated = await self.cluster.replace_run_status(run, state.status.wire())
            except ConflictError:
                # Results held only in memory must survive until a status write records them.
                self.webhook_results.setdefault((namespace, name), []).extend(webhook_results)
                log_.info("Status changed underneath; reconciling again")
                self.on_wake(namespace, name, 0.0)
                return
            self.written[(namespace, name)] = updated["metadata"]["resourceVersion"]
            if self.metrics is not None:
                self.metrics.record(
                    namespace, workflow, name, before, state.status, decision.actions, self.clock()
                )
            for action in decision.actions:
                if isinstance(action, RecordEvent):
                    if not action.progress:
                        await self.cluster.record_event(updated, action)
                    log_.info(action.message, reason=action.reason, step=action.step)
        spec_gc = state.plan.spec.pod_gc
        if spec_gc is not None and spec_gc.strategy == PodGCStrategy.ON_POD_COMPLETION:
            # Results are in the status now (written above, or unchanged): the pods can go.
            for pod in view.all():
                pod_name = pod["metadata"]["name"]
                if (
                    result_of(pod) is not None
                    and pod_name not in state.active
                    and not pod.get("deleting")
                ):
                    await self.cluster.delete_pod(namespace, pod_name)
        if decision.finished:
            await self._after_finish(run, state.status, view)
        elif decision.wake_at is not None:
            delay = max(0.0, (decision.wake_at - self.clock()).total_seconds())
            self.on_wake(namespace, name, delay)

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
                if not pod.get("deleting"):
                    await self.cluster.delete_pod(meta["namespace"], pod["metadata"]["name"])
        ttl = spec.ttl_strategy.seconds(bool(status.succeeded)) if spec.ttl_strategy else None
        if ttl is None:
            return
        due = (status.completion_time - self.clock()).total_seconds() + ttl
        if due <= 0:
            await self.cluster.delete_run(meta["namespace"], meta["name"], meta["uid"])
            log.info("Deleted finished run (TTL)", namespace=meta["namespace"], run=meta["name"])
        else:
            self.on_wake(meta["namespace"], meta["name"], due)

    async def _seed_retry(self, run: WorkflowRun, namespace: str) -> WorkflowRunStatus:
        retry = run.spec.retry_of
        assert retry is not None
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
        return seed_status(previous, retry.name, retry.from_step)

    async def _resolve_spec(self, run: WorkflowRun, namespace: str) -> WorkflowSpec:
        if run.spec.workflow is not None:
            spec = run.spec.workflow
        else:
            assert run.spec.workflow_ref is not None
            ref = run.spec.workflow_ref.name
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
                spec = WorkflowSpec.model_validate(obj.get("spec") or {})
            except ValidationError as exc:
                raise from_validation_error(exc, f"Workflow {ref}: spec") from None
        errors = validate_workflow(spec)
        if errors:
            raise InvalidSpecError(errors)
        return spec

    async def _reject(
        self, run: dict[str, Any], status: WorkflowRunStatus, errors: list[FieldError], log_: Any
    ) -> None:
        """An invalid run fails at once, saying every problem with its field path."""
        now = self.clock()
        message = "; ".join(str(e) for e in errors)
        status.phase = RunPhase.FAILED
        status.start_time = status.start_time or now
        status.completion_time = now
        status.set_condition(
            CONDITION_SUCCEEDED,
            ConditionStatus.FALSE,
            "InvalidSpec",
            message[:4000],
            now,
            run["metadata"].get("generation"),
        )
        with contextlib.suppress(ConflictError):
            updated = await self.cluster.replace_run_status(run, status.wire())
            await self.cluster.record_event(
                updated, RecordEvent("Warning", "InvalidSpec", f"Run rejected: {message}"[:1024])
            )
        log_.warning("Rejected invalid run", problems=message)

    def _call_webhook(self, namespace: str, name: str, action: StartAttempt) -> None:
        """Webhook steps run in the operator process with async I/O; the result is observed on
        the next reconcile. (An operator restart mid-call leaves the attempt to its timeout.)"""

        async def call() -> None:
            if self.http is not None:
                result = await call_webhook(self.http, action, self.webhook_policy)
            else:
                # No redirects: a permitted host must not bounce the call somewhere denied.
                async with httpx.AsyncClient(follow_redirects=False) as client:
                    result = await call_webhook(client, action, self.webhook_policy)
            self.webhook_results.setdefault((namespace, name), []).append(result)
            self.on_wake(namespace, name, 0.0)

        asyncio.get_running_loop().create_task(call())

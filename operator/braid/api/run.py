"""The WorkflowRun kind: one execution of a workflow, and everything observed about it."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from braid.api.common import Condition, ConditionStatus, Model, ObjectMeta
from braid.api.reasons import (
    REQUESTED_BY,
    ApprovalReason,
    ConditionType,
    DecisionKind,
    RunReason,
    SLAReason,
    StepReason,
)
from braid.api.workflow import JSON, BudgetSpec, WorkflowSpec


def _unchanged(name: str) -> str:
    """CEL: the field is absent in both, or equal in both."""
    return (
        f"(has(self.{name}) ? has(oldSelf.{name}) && self.{name} == oldSelf.{name}"
        f" : !has(oldSelf.{name}))"
    )


class WorkflowRef(Model):
    """Reference to a Workflow in the run's namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the Workflow.")


class RetryOf(Model):
    """A retry of an earlier run: its workflow snapshot and params, reusing the steps that
    succeeded."""

    name: str = Field(min_length=1, max_length=253, description="The run being retried.")
    from_step: str | None = Field(
        default=None,
        description="Re-run this step and everything after it; default: every step that did "
        "not succeed, and what depends on it.",
    )


class WorkflowRunSpec(Model):
    """What to run: a workflow (by reference or inline) and its params."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.workflowRef) != has(self.workflow)",
                    "message": "set exactly one of workflowRef or workflow",
                },
                {
                    # Whoever may patch a run (approvers need patch for their annotations) must
                    # not change what it runs: only cancelling is a change of spec.
                    "rule": " && ".join(
                        (
                            *(
                                _unchanged(f)
                                for f in ("workflowRef", "params", "retryOf", "budget")
                            ),
                            "has(self.workflow) == has(oldSelf.workflow)",
                        )
                    ),
                    "message": "a run's spec cannot change once the run exists (only "
                    "spec.cancelled can be set); create a new run",
                },
                {
                    "rule": "!(has(oldSelf.cancelled) && oldSelf.cancelled)"
                    " || (has(self.cancelled) && self.cancelled)",
                    "message": "a cancelled run stays cancelled",
                },
            ]
        }
    )

    workflow_ref: WorkflowRef | None = Field(
        default=None, description="The Workflow to run; its spec is snapshotted at start."
    )
    workflow: WorkflowSpec | None = Field(
        default=None,
        description="An inline workflow spec; it cannot change once the run exists.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self == oldSelf",
                    "message": "a run's inline workflow cannot change once the run exists",
                }
            ]
        },
    )
    params: dict[str, JSON] | None = Field(
        default=None, description="Param values by name, validated against their schemas."
    )
    cancelled: bool | None = Field(
        default=None,
        description="Set to true to cancel: running steps stop, compensation and finally run. "
        "The only field of a run's spec that may change after it is created.",
    )
    retry_of: RetryOf | None = Field(
        default=None, description="Retry an earlier run of the same workflow (kubectl braid retry)."
    )
    priority: int | None = Field(
        default=None,
        ge=-1000,
        le=1000,
        description="Queue priority of this run (spec.concurrency); default the workflow's.",
    )
    budget: BudgetSpec | None = Field(
        default=None,
        description="Caps the workflow's budget for this run: the lower of each limit "
        "applies (a sub-workflow's run gets what its parent has left).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> WorkflowRunSpec:
        if (self.workflow_ref is None) == (self.workflow is None):
            raise ValueError("set exactly one of workflowRef or workflow")
        return self


class StepPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    WAITING = "Waiting"  # approval gates
    RETRYING = "Retrying"  # between attempts, in backoff
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    CANCELLED = "Cancelled"

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({StepPhase.SUCCEEDED, StepPhase.FAILED, StepPhase.SKIPPED, StepPhase.CANCELLED})


class RunPhase(StrEnum):
    """Where the run is; the Succeeded condition is the summary users and tools read."""

    PENDING = "Pending"
    RUNNING = "Running"
    COMPENSATING = "Compensating"
    FINALIZING = "Finalizing"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


class Artifact(Model):
    """A file a step attempt wrote under $BRAID_ARTIFACTS, kept in the artifact store."""

    size: int = Field(ge=0, description="Bytes.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the content, hex.")
    uri: str = Field(
        max_length=2048,
        description="Where it is: s3://bucket/key in a cluster, file:///... locally.",
    )


class Usage(Model):
    """Tokens and cost reported by steps in their outputs (``outputs.usage``)."""

    tokens: int = Field(default=0, ge=0, description="Tokens used.")
    cost: float = Field(default=0.0, ge=0, description="Cost incurred.")

    def add(self, other: Usage) -> Usage:
        return Usage(tokens=self.tokens + other.tokens, cost=round(self.cost + other.cost, 9))


class BudgetStatus(Model):
    """Where the run stands against spec.budget."""

    state: Literal["Exceeded", "Approved", "Rejected"] = Field(
        description="Exceeded (paused or stopped), Approved (going on past it) or Rejected."
    )
    time: datetime | None = Field(default=None, description="When the budget was exceeded.")
    usage: Usage | None = Field(default=None, description="Usage when it was exceeded.")
    approvals: list[ApprovalRecord] | None = Field(
        default=None, description="Decisions on going over budget (on Pause)."
    )
    digest: str | None = Field(default=None, description="Digest to approve with.")


class ItemsSummary(Model):
    """Fan-out items folded out of the per-item list to keep the run object small."""

    succeeded: int = Field(default=0, description="Succeeded items not listed.")
    failed: int = Field(default=0, description="Failed or cancelled items not listed.")


class BreakerStatus(Model):
    """A circuit breaker this run's steps go through, as the operator saw it last."""

    key: str = Field(description="The breaker's key.")
    state: Literal["Closed", "Open", "HalfOpen"] = Field(description="Closed, Open or HalfOpen.")
    failures: int = Field(default=0, description="Consecutive failures counted.")
    retry_at: datetime | None = Field(
        default=None, description="When an open breaker lets one attempt probe."
    )

    @classmethod
    def of(cls, key: str, breaker: Any) -> BreakerStatus:
        return cls(
            key=key, state=breaker.state, failures=breaker.failures, retry_at=breaker.retry_at
        )


class RouteStatus(Model):
    """Where the last attempt of a routed call went, and why."""

    candidate: str = Field(description="The candidate chosen.")
    reason: str = Field(description="Why it was chosen (the strategy's figures).")
    failed: list[str] | None = Field(
        default=None, description="Candidates that failed earlier attempts of this step."
    )


class TaskStatus(Model):
    """Status of one unit of execution: a step, a fan-out item or a loop body step."""

    phase: StepPhase = Field(default=StepPhase.PENDING, description="Current phase.")
    reason: str | None = Field(default=None, description="CamelCase reason of the phase.")
    message: str | None = Field(default=None, description="Human-readable detail.")
    attempts: int = Field(default=0, description="Attempts started so far.")
    attempt_name: str | None = Field(
        default=None, description="Deterministic name of the current or last attempt."
    )
    start_time: datetime | None = Field(default=None, description="When the first attempt began.")
    attempt_start_time: datetime | None = Field(
        default=None, description="When the current attempt began."
    )
    completion_time: datetime | None = Field(default=None, description="When it finished.")
    retry_time: datetime | None = Field(
        default=None, description="When the next attempt starts (phase Retrying)."
    )
    exit_code: int | None = Field(default=None, description="Exit code of the last attempt.")
    outputs: dict[str, JSON] | None = Field(default=None, description="Outputs (JSON object).")
    usage: Usage | None = Field(
        default=None, description="Tokens and cost reported (summed over items for a fan-out)."
    )
    artifacts: dict[str, Artifact] | None = Field(
        default=None,
        description="Files the last attempt wrote under $BRAID_ARTIFACTS, by name (its path "
        "there): size, sha256 and uri. The run keeps references only.",
    )
    fallback: bool | None = Field(
        default=None, description="The last attempt ran the circuit breaker's fallback."
    )
    route: RouteStatus | None = Field(
        default=None, description="A routed call: the candidate chosen, and why."
    )
    wake_time: datetime | None = Field(default=None, description="A sleep step: when it wakes.")
    cache_key: str | None = Field(
        default=None, description="cache: the key digest of the last attempt (or the hit)."
    )
    child_run: str | None = Field(
        default=None,
        description="A workflow step: the child WorkflowRun of the last attempt (same "
        "namespace; labelled braid.dev/parent-run).",
    )

    # The only ways the engine changes a task's phase: each sets phase, reason and message
    # together, so no transition leaves a stale reason behind.

    def mark_running(self, attempt: str, now: datetime) -> None:
        self.phase = StepPhase.RUNNING
        if self.reason == StepReason.WAITING_FOR_CONCURRENCY:
            self.reason = self.message = None
        self.attempt_name, self.attempt_start_time = attempt, now
        self.start_time = self.start_time or now
        self.retry_time = None

    def mark_sleeping(self, wake: datetime, now: datetime) -> None:
        self.phase, self.reason = StepPhase.RUNNING, StepReason.SLEEPING
        self.message = f"sleeping until {wake.isoformat()}"
        self.start_time, self.wake_time = now, wake

    def mark_waiting(self, message: str, now: datetime) -> None:
        self.phase, self.reason, self.message = (
            StepPhase.WAITING,
            StepReason.APPROVAL_PENDING,
            message,
        )
        self.start_time = now

    def mark_succeeded(
        self,
        outputs: dict[str, Any] | None,
        now: datetime,
        reason: str = StepReason.SUCCEEDED,
        message: str | None = None,
    ) -> None:
        self.phase, self.reason, self.message = StepPhase.SUCCEEDED, reason, message
        self.outputs = outputs
        self.completion_time, self.retry_time = now, None

    def mark_failed(self, reason: str, message: str | None, now: datetime) -> None:
        self.phase, self.reason, self.message = StepPhase.FAILED, reason, message
        self.completion_time, self.retry_time = now, None

    def mark_retrying(self, reason: str, message: str, at: datetime) -> None:
        self.phase, self.reason, self.message = StepPhase.RETRYING, reason, message
        self.retry_time = at

    def mark_cancelled(self, reason: str, message: str | None, now: datetime) -> None:
        self.phase, self.reason, self.message = StepPhase.CANCELLED, reason, message
        self.completion_time, self.retry_time = now, None

    def mark_skipped(self, reason: str, message: str | None, now: datetime) -> None:
        self.phase, self.reason, self.message = StepPhase.SKIPPED, reason, message
        self.completion_time, self.retry_time = now, None

    def mark_waiting_for_slot(self, message: str) -> bool:
        """Say why a ready task has not started; True when that changed."""
        if (self.reason, self.message) == (StepReason.WAITING_FOR_CONCURRENCY, message):
            return False
        self.reason, self.message = StepReason.WAITING_FOR_CONCURRENCY, message
        return True


class ItemStatus(TaskStatus):
    """Status of one fan-out item."""

    index: int = Field(description="Position of the item in the item list.")


class ApprovalRecord(Model):
    """One decision on an approval gate: the audit trail."""

    user: str = Field(description="Who decided.")
    decision: DecisionKind = Field(
        description="Approved, Rejected, or Refused: the person is not an allowed approver and "
        "the decision was not counted (kept for the audit trail)."
    )
    time: datetime | None = Field(default=None, description="When the operator recorded it.")
    reason: str | None = Field(default=None, description="Reason given (rejections).")
    digest: str | None = Field(
        default=None,
        description="Digest of the gate's inputs the decision was counted for (128 bits, bound "
        "to the run, the gate and its opening).",
    )
    bound: bool | None = Field(
        default=None,
        description="The decision named the digest (user:digest); otherwise it binds to the "
        "digest in effect when first recorded.",
    )
    verified: bool | None = Field(
        default=None,
        description="The API server's approval admission policy checked that this person made "
        "the decision (false: the operator did not find the policy installed, so the name is "
        "only what the annotation says).",
    )


class HistoryEntry(Model):
    """One transition of the run: the audit trail kept with the run (bounded to the last 100;
    the operator's log has one structured line per approval decision, and Events expire)."""

    time: datetime = Field(description="When it happened.")
    type: Literal["Normal", "Warning"] = Field(description="Normal or Warning.")
    reason: str = Field(description="CamelCase reason, as on the Event.")
    message: str = Field(description="What happened.")
    step: str | None = Field(default=None, description="The step concerned, if any.")


class PendingApproval(Model):
    """A gate waiting for decisions. The approval admission policy reads this list to decide
    who may annotate the run."""

    step: str = Field(description="The name decisions use (the body step name inside loops).")
    iteration: int | None = Field(default=None, description="Loop iteration, for loop gates.")
    users: list[str] | None = Field(default=None, description="Users who may decide.")
    groups: list[str] | None = Field(default=None, description="Groups whose members may decide.")
    required: int = Field(description="Approvals needed.")
    approved_by: list[str] | None = Field(default=None, description="Approvals counted so far.")
    digest: str = Field(description="Digest of the gate's inputs; approve with <user>:<digest>.")
    deadline: datetime | None = Field(default=None, description="When the gate times out.")


class FannedStatus(TaskStatus):
    """A task that may fan out: a step, or a loop body step."""

    items: list[ItemStatus] | None = Field(default=None, description="Fan-out items.")
    item_count: int | None = Field(default=None, description="Number of fan-out items.")
    items_started: int | None = Field(
        default=None, description="Fan-out items started so far (the next one is this index)."
    )
    items_summary: ItemsSummary | None = Field(
        default=None,
        description="Large fan-outs (over 200 items): items no longer listed in items — every "
        "success, and failures beyond the 50 most recent — counted here instead.",
    )


class IterationStatus(Model):
    """One iteration of a loop."""

    iteration: int = Field(description="Index of the iteration, from 0.")
    steps: list[LoopTaskStatus] = Field(default_factory=list, description="Body steps.")


class LoopTaskStatus(FannedStatus):
    """Status of one body step within one loop iteration."""

    name: str = Field(description="Body step name.")
    approvals: list[ApprovalRecord] | None = Field(default=None, description="Decisions.")
    approval_deadline: datetime | None = Field(default=None, description="Approval deadline.")
    approval_digest: str | None = Field(default=None, description="Digest of the gate's inputs.")


class StepStatus(FannedStatus):
    """Status of one step of the workflow."""

    name: str = Field(description="Step name.")
    kind: str = Field(description="container, webhook, approval, fanOut, loop or finally.")
    iterations: list[IterationStatus] | None = Field(default=None, description="Loop iterations.")
    approvals: list[ApprovalRecord] | None = Field(
        default=None, description="Decisions recorded on this approval gate."
    )
    approval_deadline: datetime | None = Field(
        default=None, description="When an approval gate times out."
    )
    approval_digest: str | None = Field(
        default=None,
        description="Digest of the gate's inputs (upstream outputs and the message); approvals "
        "count only for the inputs they were given for.",
    )
    compensation: TaskStatus | None = Field(
        default=None, description="Status of this step's compensation, once it ran."
    )
    sla_breached: bool | None = Field(default=None, description="The step exceeded its SLA.")


class ParentLink(Model):
    """The run that started this one as a sub-workflow step."""

    run: str = Field(description="The parent WorkflowRun (same namespace; it owns this run).")
    step: str = Field(description="The parent's step (or item/iteration) this run is.")
    depth: int = Field(ge=1, description="Nesting depth: 1 for a child of a top-level run.")


class WorkflowRunStatus(Model):
    """Everything observed about the run. Written by the operator (or the local runner)."""

    observed_generation: int | None = Field(default=None, description="Last reconciled generation.")
    phase: RunPhase = Field(default=RunPhase.PENDING, description="Coarse phase of the run.")
    conditions: list[Condition] = Field(
        default_factory=list, description="Succeeded, ApprovalPending, SLABreached, ..."
    )
    start_time: datetime | None = Field(default=None, description="When the run started.")
    completion_time: datetime | None = Field(default=None, description="When the run finished.")
    progress: str | None = Field(default=None, description="Finished steps / all steps.")
    duration: str | None = Field(default=None, description="Duration at the last status write.")
    params: dict[str, JSON] | None = Field(default=None, description="Resolved params.")
    workflow_spec: WorkflowSpec | None = Field(
        default=None, description="The workflow spec snapshotted when the run started."
    )
    steps: list[StepStatus] = Field(
        default_factory=list,
        description="Per-step status.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    finally_: list[StepStatus] | None = Field(
        default=None, alias="finally", description="Status of the finally steps."
    )
    outputs: dict[str, JSON] | None = Field(default=None, description="Run outputs.")
    sla_breached: bool | None = Field(
        default=None, description="The run exceeded spec.sla.maxDurationSeconds."
    )
    parent: ParentLink | None = Field(
        default=None, description="A sub-workflow's run: its parent run and step."
    )
    usage: Usage | None = Field(default=None, description="Tokens and cost used so far.")
    artifact_bytes: int | None = Field(
        default=None, description="Bytes of the artifacts the run's steps hold now."
    )
    budget: BudgetStatus | None = Field(
        default=None, description="Set once the run went over spec.budget."
    )
    circuit_breakers: list[BreakerStatus] | None = Field(
        default=None, description="The shared circuit breakers this run's steps go through."
    )
    pending_approvals: list[PendingApproval] | None = Field(
        default=None, description="Approval gates waiting now, with who may decide."
    )
    history: list[HistoryEntry] | None = Field(
        default=None,
        max_length=100,
        description="The last 100 transitions (started, retried, approved by whom, rejected, "
        "compensated, SLA breached, cancelled, ...). Events on the run say the same but expire "
        "(the API server's --event-ttl, 1 h by default); each approval decision is also one "
        "structured line of the operator's log, which outlives the run.",
    )

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    # Run-level transitions: phase and conditions set together (Tekton's MarkSucceeded,
    # MarkFailed, MarkRunning on the status type). Each returns whether anything changed.

    def shape(
        self,
        spec: WorkflowSpec,
        params: dict[str, Any],
        steps: list[tuple[str, str]],
        finally_steps: list[str],
    ) -> None:
        """Keep the run's snapshot and params, and list every step (name, kind) and finally
        step in order, keeping the statuses already recorded."""
        self.workflow_spec = self.workflow_spec or spec
        self.params = params if self.params is None else self.params
        by_name = {s.name: s for s in self.steps}
        self.steps = [by_name.get(n) or StepStatus(name=n, kind=kind) for n, kind in steps]
        if self.finally_ is None and finally_steps:
            self.finally_ = [StepStatus(name=n, kind="finally") for n in finally_steps]

    def mark_started(self, now: datetime, generation: int | None) -> None:
        self.phase, self.start_time, self.observed_generation = RunPhase.RUNNING, now, generation

    def mark_progressing(
        self, reason: RunReason | str, message: str, now: datetime, generation: int | None
    ) -> bool:
        """Still going on: Succeeded is Unknown, with why (Running, AwaitingApproval, or the
        failure being handled while compensation and finally steps run)."""
        return self.set_condition(
            ConditionType.SUCCEEDED, ConditionStatus.UNKNOWN, reason, message, now, generation
        )

    def mark_succeeded(self, message: str, now: datetime, generation: int | None) -> None:
        self.phase, self.completion_time = RunPhase.SUCCEEDED, now
        self.set_condition(
            ConditionType.SUCCEEDED,
            ConditionStatus.TRUE,
            RunReason.SUCCEEDED,
            message,
            now,
            generation,
        )

    def mark_failed(
        self,
        reason: RunReason | str,
        message: str,
        now: datetime,
        generation: int | None,
        *,
        cancelled: bool = False,
    ) -> None:
        self.phase = RunPhase.CANCELLED if cancelled else RunPhase.FAILED
        self.start_time = self.start_time or now
        self.completion_time = now
        self.set_condition(
            ConditionType.SUCCEEDED, ConditionStatus.FALSE, reason, message, now, generation
        )

    def mark_approval_pending(
        self, reason: ApprovalReason, message: str, now: datetime, generation: int | None
    ) -> bool:
        return self.set_condition(
            ConditionType.APPROVAL_PENDING, ConditionStatus.TRUE, reason, message, now, generation
        )

    def mark_no_approval_pending(self, now: datetime, generation: int | None) -> bool:
        if self.condition(ConditionType.APPROVAL_PENDING) is None:
            return False
        return self.set_condition(
            ConditionType.APPROVAL_PENDING,
            ConditionStatus.FALSE,
            ApprovalReason.NO_APPROVAL_PENDING,
            "",
            now,
            generation,
        )

    def mark_sla_breached(
        self, reason: SLAReason, message: str, now: datetime, generation: int | None
    ) -> bool:
        return self.set_condition(
            ConditionType.SLA_BREACHED, ConditionStatus.TRUE, reason, message, now, generation
        )

    def mark_within_sla(self, now: datetime, generation: int | None) -> bool:
        if self.condition(ConditionType.SLA_BREACHED) is not None:
            return False
        return self.set_condition(
            ConditionType.SLA_BREACHED,
            ConditionStatus.FALSE,
            SLAReason.WITHIN_SLA,
            "",
            now,
            generation,
        )

    def mark_progress(self, done: int, total: int, now: datetime) -> None:
        """``progress`` (finished steps / all) and ``duration`` as of ``now``."""
        self.progress = f"{done}/{total}"
        if self.start_time is not None:
            self.duration = format_duration((self.completion_time or now) - self.start_time)

    def record_history(self, entries: list[HistoryEntry], limit: int) -> bool:
        if not entries:
            return False
        self.history = [*(self.history or []), *entries][-limit:]
        return True

    @property
    def failure(self) -> tuple[str, str] | None:
        """The failure being handled by an unfinished run (its Succeeded condition's reason
        and message while Unknown with anything but an in-progress reason)."""
        cond = self.condition(ConditionType.SUCCEEDED)
        if cond is None or cond.status != ConditionStatus.UNKNOWN:
            return None
        try:
            if RunReason(cond.reason).in_progress:
                return None
        except ValueError:
            pass
        return cond.reason, cond.message

    def set_condition(
        self,
        type_: str,
        status: ConditionStatus,
        reason: str,
        message: str,
        now: datetime,
        generation: int | None = None,
    ) -> bool:
        """Set a condition; the transition time moves only when the status changes.

        Returns whether anything changed, so callers can skip a no-op status write.
        """
        current = self.condition(type_)
        if current is None:
            self.conditions.append(
                Condition(
                    type=type_,
                    status=status,
                    reason=reason,
                    message=message,
                    last_transition_time=now,
                    observed_generation=generation,
                )
            )
            return True
        changed = (current.status, current.reason, current.message) != (status, reason, message)
        if current.status != status:
            current.last_transition_time = now
        current.status, current.reason, current.message = status, reason, message
        if generation is not None and current.observed_generation != generation:
            current.observed_generation = generation
            changed = True
        return changed

    @property
    def succeeded(self) -> bool | None:
        """True or False once finished, None while the run goes on."""
        cond = self.condition(ConditionType.SUCCEEDED)
        if cond is None or cond.status == ConditionStatus.UNKNOWN:
            return None
        return cond.status == ConditionStatus.TRUE


def format_duration(delta: timedelta, *, tenths: bool = False) -> str:
    """5s, 2m5s, 1h2m5s; ``tenths``: 1.3s under a minute (what a person reads: a one-second
    run did not take "0s")."""
    if tenths and delta.total_seconds() < 60:
        return f"{max(0.0, delta.total_seconds()):.1f}s"
    seconds = int(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


class WorkflowRun(Model):
    """One execution of a workflow."""

    api_version: Literal["braid.dev/v1alpha1"] = "braid.dev/v1alpha1"
    kind: Literal["WorkflowRun"] = "WorkflowRun"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: WorkflowRunSpec
    status: WorkflowRunStatus | None = None


IterationStatus.model_rebuild()
BudgetStatus.model_rebuild()


def retry_run(old: dict[str, Any], requested_by: str, from_step: str | None = None) -> WorkflowRun:
    """A new run of ``old``'s workflow snapshot and params that reuses what succeeded (from
    ``from_step`` on, everything runs again). ``requested_by``: who asks — the approval policy
    checks it is them, and the retry reuses only approvals they gave themselves. ValueError
    when ``old`` never started (it has no snapshot to repeat)."""
    name = old["metadata"]["name"]
    status = old.get("status") or {}
    if not status.get("workflowSpec"):
        raise ValueError(f"run {name!r} has not started; nothing to retry")
    return WorkflowRun(
        metadata=ObjectMeta(
            generateName=f"{name[:50]}-retry-", annotations={REQUESTED_BY: requested_by}
        ),
        spec=WorkflowRunSpec(
            workflow=WorkflowSpec.model_validate(status["workflowSpec"]),
            params=status.get("params") or None,
            retry_of=RetryOf(name=name, from_step=from_step),
        ),
    )

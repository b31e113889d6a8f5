"""The end of a run as decisions over facts: which steps are compensated and in what order,
whether compensation runs at all, and what the run's outcome is. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from braid.api.reasons import EventReason, RunReason, StepReason
from braid.api.run import (
    PendingApproval,
    StepPhase,
    StepStatus,
    TaskStatus,
    WorkflowRunStatus,
    format_duration,
)
from braid.api.workflow import BudgetSpec, CompensationPolicy
from braid.engine import approvals, budget, dag
from braid.engine.actions import RecordEvent
from braid.engine.outputs import depth_failure
from braid.engine.plan import FinallyPlan, Plan
from braid.engine.tasks import Task, compensation_task
from braid.expressions import Expression, ExpressionError

_NEVER = datetime.min.replace(tzinfo=UTC)


def compensation_order(plan: Plan, steps: Mapping[str, StepStatus]) -> list[str]:
    """Succeeded steps that have a compensation, last finished first."""
    done = [
        plan.steps[n]
        for n in plan.order
        if plan.steps[n].compensation is not None and steps[n].phase == StepPhase.SUCCEEDED
    ]
    return [
        p.name
        for p in dag.reverse_completion_order(
            done, lambda p: (steps[p.name].completion_time or _NEVER, p.index)
        )
    ]


def to_compensate(
    plan: Plan, steps: Mapping[str, StepStatus], failure: str, cancelled: bool
) -> list[str]:
    """The steps to compensate, in order, once the run failed for ``failure`` (none when
    the workflow does not compensate that failure)."""
    spec = plan.spec
    order = compensation_order(plan, steps)
    if order and compensates(spec.compensation, failure, cancelled, spec.budget):
        return order
    return []


def next_compensation(run_name: str, plan: Plan, steps: Mapping[str, StepStatus]) -> Task | None:
    """The compensation to run or wait for now (one at a time, last finished first); None
    when every one has finished."""
    for name in compensation_order(plan, steps):
        task = compensation_task(run_name, plan.steps[name], steps[name])
        if not task.status.phase.final:
            return task
    return None


def compensates(
    policy: CompensationPolicy | None,
    failure: str,
    cancelled: bool,
    spec_budget: BudgetSpec | None,
) -> bool:
    """Whether the failed (or cancelled) run compensates what it did."""
    if policy is not None and not (policy.enabled and (policy.on_cancel or not cancelled)):
        return False
    return budget.compensates(spec_budget, failure)


def finally_ready(
    plans: Sequence[FinallyPlan], statuses: Sequence[StepStatus]
) -> list[tuple[FinallyPlan, StepStatus]]:
    """Pending finally steps whose finally dependencies have finished (whatever their
    outcome: finally steps clean up after each other too)."""
    by_name = {p.name: st for p, st in zip(plans, statuses, strict=True)}
    return [
        (p, st)
        for p, st in zip(plans, statuses, strict=True)
        if st.phase == StepPhase.PENDING and all(by_name[d].phase.final for d in p.deps)
    ]


def finally_failure(finally_steps: Sequence[StepStatus]) -> tuple[RunReason, str] | None:
    """A run whose steps succeeded fails when a finally step failed."""
    failed = [s.name for s in finally_steps if s.phase == StepPhase.FAILED]
    if not failed:
        return None
    return RunReason.FINALLY_FAILED, f"finally step(s) failed: {', '.join(failed)}"


def sweep(steps: Sequence[StepStatus], cancelled: bool, now: datetime) -> int:
    """When a failing run's last attempt ended, whatever did not finish never will: cancelled
    if it started, skipped if not. Returns how many steps this finished."""
    reason = StepReason.RUN_CANCELLED if cancelled else StepReason.RUN_FAILED
    finished = 0
    for st in steps:
        subtasks: list[TaskStatus] = [*(st.items or [])]
        for it in st.iterations or []:
            for body in it.steps:
                subtasks += [body, *(body.items or [])]
        for sub in subtasks:
            if not sub.phase.final:
                sub.phase, sub.reason, sub.completion_time = StepPhase.CANCELLED, reason, now
        if not st.phase.final:
            st.phase = StepPhase.CANCELLED if st.start_time is not None else StepPhase.SKIPPED
            st.reason, st.completion_time = reason, now
            finished += 1
    return finished


def progress(
    failing: tuple[str, str] | None,
    paused: bool,
    waiting: bool,
    moving: bool,
    done: int,
    total: int,
) -> tuple[str, str]:
    """The reason and message of an unfinished run's Succeeded condition."""
    if failing is not None:
        return failing
    if paused and not moving:
        return RunReason.AWAITING_APPROVAL, "over budget: waiting for approval to go on"
    if waiting and not moving:
        # Nothing else is moving: the printer column says why the run stands still.
        return RunReason.AWAITING_APPROVAL, "waiting for approval"
    return RunReason.RUNNING, f"{done}/{total} steps finished"


def set_run_outputs(
    status: WorkflowRunStatus, outputs: Mapping[str, Expression], context: dict[str, Any]
) -> tuple[RunReason, str] | None:
    """Set the run's outputs (spec.outputs); or say why they cannot be had."""
    try:
        values = {k: e.evaluate(context) for k, e in outputs.items()}
    except ExpressionError as exc:
        return RunReason.OUTPUTS_ERROR, str(exc)
    deep = depth_failure(values, "spec.outputs")
    if deep is not None:
        return RunReason.OUTPUTS_ERROR, deep.message or ""
    status.outputs = values
    return None


def end(
    status: WorkflowRunStatus,
    failing: tuple[str, str, bool] | None,
    now: datetime,
    generation: int | None,
) -> RecordEvent:
    """Mark the run's outcome: succeeded, or failed (cancelled) with ``failing``'s reason
    and message; the Event that says so."""
    if failing is None:
        status.mark_succeeded("all steps finished", now, generation)
        took = format_duration(now - (status.start_time or now), tenths=True)
        return RecordEvent("Normal", EventReason.RUN_SUCCEEDED, f"Run succeeded in {took}")
    reason, message, cancelled = failing
    status.mark_failed(reason, message, now, generation, cancelled=cancelled)
    event = EventReason.RUN_CANCELLED if cancelled else EventReason.RUN_FAILED
    return RecordEvent("Warning", event, f"Run ended: {message}")


def update_conditions(
    status: WorkflowRunStatus,
    plan: Plan,
    now: datetime,
    generation: int | None,
    *,
    progress: tuple[str, str] | None,
    pending: list[PendingApproval],
    paused: bool,
    verified: bool | None,
) -> bool:
    """Set the run's conditions and pending approvals from the facts; True when anything
    changed. ``progress``: the Succeeded condition's reason and message while unfinished."""
    changed = False
    if progress is not None:
        changed |= status.mark_progressing(*progress, now, generation)
    spec_budget = plan.spec.budget
    if paused and spec_budget is not None and status.budget is not None:
        pending.append(approvals.budget_pending(spec_budget.approvers, status.budget.digest or ""))
    if (pending or None) != status.pending_approvals:
        status.pending_approvals = pending or None
        changed = True
    if pending:
        reason, message = approvals.pending_condition(pending, verified)
        changed |= status.mark_approval_pending(reason, message, now, generation)
    else:
        changed |= status.mark_no_approval_pending(now, generation)
    if plan.has_sla:
        changed |= status.mark_within_sla(now, generation)
    return changed

"""The end of a run as decisions over facts: which steps are compensated and in what order,
whether compensation runs at all, and what the run's outcome is. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from braid.api.reasons import RunReason, StepReason
from braid.api.run import StepPhase, StepStatus, TaskStatus
from braid.api.workflow import BudgetSpec, CompensationPolicy
from braid.engine import budget, dag
from braid.engine.outputs import depth_failure
from braid.engine.plan import Plan
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
            subtasks.extend(it.steps)
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


def run_outputs(
    outputs: Mapping[str, Expression], context: dict[str, Any]
) -> dict[str, Any] | tuple[RunReason, str]:
    """The run's outputs (spec.outputs), or why they cannot be had."""
    try:
        values = {k: e.evaluate(context) for k, e in outputs.items()}
    except ExpressionError as exc:
        return RunReason.OUTPUTS_ERROR, str(exc)
    deep = depth_failure(values, "spec.outputs")
    if deep is not None:
        return RunReason.OUTPUTS_ERROR, deep.message or ""
    return values

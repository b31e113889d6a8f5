"""Token and cost budgets as decisions over facts: whether the run's usage passed its budget
and what that means, and what a decision on going over budget means. Pure: verdicts only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from braid.api.reasons import EventReason, RunReason
from braid.api.run import ApprovalRecord, BudgetStatus, TaskStatus, Usage, WorkflowRunStatus
from braid.api.workflow import BUDGET_GATE, BudgetAction, BudgetSpec
from braid.engine import approvals
from braid.engine.actions import ApprovalDecision, RecordEvent


def add_usage(used: Usage, *counters: TaskStatus | WorkflowRunStatus | None) -> Usage:
    """Add a task's reported usage to each of ``counters`` (the task, its fan-out or loop,
    the run); returns the last one's new total."""
    total = used
    for counter in counters:
        if counter is not None:
            counter.usage = total = (counter.usage or Usage()).add(used)
    return total


def overage(budget: BudgetSpec, total: Usage) -> list[str]:
    """What of the budget the usage passed, said for people; empty when within it."""
    over = []
    if budget.tokens is not None and total.tokens > budget.tokens:
        over.append(f"{total.tokens} tokens > {budget.tokens}")
    if budget.cost is not None and total.cost > budget.cost:
        over.append(f"cost {total.cost:g} > {budget.cost:g}")
    return over


@dataclass(frozen=True)
class BudgetVerdict:
    """The run went over budget: what to record, what to say, and whether to stop now."""

    status: BudgetStatus
    events: tuple[RecordEvent, ...]
    stop: tuple[RunReason, str] | None  # Fail and Compensate stop (running steps cancelled)


def judge_usage(
    budget: BudgetSpec, total: Usage, after: str, *, run_uid: str, now: datetime
) -> BudgetVerdict | None:
    """``total``: the run's usage once ``after`` (a task) reported its own."""
    over = overage(budget, total)
    if not over:
        return None
    message = f"over budget after step {after}: {', '.join(over)}"
    record = BudgetStatus(
        state="Exceeded",
        time=now,
        usage=total,
        digest=approvals.digest(
            {"run": run_uid, "gate": BUDGET_GATE, "opened": now, "usage": total.wire()}
        ),
    )
    if budget.on_exceeded == BudgetAction.PAUSE:
        who = approvals.approvers_text(budget.approvers)
        events = (
            RecordEvent(
                "Warning",
                EventReason.BUDGET_EXCEEDED,
                f"Paused {message}; waiting for approval from {who} to go on "
                f"(approve.braid.dev/{BUDGET_GATE})",
                gate=BUDGET_GATE,
            ),
            RecordEvent(
                "Normal",
                EventReason.APPROVAL_REQUESTED,
                f"Going over budget awaits 1 approval from {who}: {message}",
                gate=BUDGET_GATE,
            ),
        )
        return BudgetVerdict(record, events, None)
    stop = RecordEvent("Warning", EventReason.BUDGET_EXCEEDED, f"Stopping: {message}")
    return BudgetVerdict(record, (stop,), (RunReason.BUDGET_EXCEEDED, message))


def compensates(budget: BudgetSpec | None, failure: str) -> bool:
    """Whether compensation runs after the run stopped for ``failure``: Fail means stop as
    it is, Compensate is the other choice."""
    return not (
        failure == RunReason.BUDGET_EXCEEDED
        and budget is not None
        and budget.on_exceeded == BudgetAction.FAIL
    )


@dataclass(frozen=True)
class DecisionVerdict:
    state: Literal["Approved", "Rejected"] | None  # None: refused, nothing changes
    event: RecordEvent
    stop: tuple[RunReason, str] | None = None


def judge_decision(decision: ApprovalDecision, refused: str | None) -> DecisionVerdict:
    """A decision on going over budget (already checked to be new and for this digest)."""
    if refused is not None:
        return DecisionVerdict(
            None,
            RecordEvent(
                "Warning",
                EventReason.APPROVAL_REFUSED,
                f"Ignored budget decision by {decision.user}: {refused}",
            ),
        )
    if decision.approve:
        return DecisionVerdict(
            "Approved",
            RecordEvent(
                "Normal",
                EventReason.BUDGET_APPROVED,
                f"Going over budget approved by {decision.user}",
            ),
        )
    why = decision.reason or "no reason given"
    return DecisionVerdict(
        "Rejected",
        RecordEvent(
            "Warning",
            EventReason.BUDGET_REJECTED,
            f"Going over budget rejected by {decision.user}: {why}",
        ),
        (RunReason.BUDGET_REJECTED, f"over budget, rejected by {decision.user}: {why}"),
    )


def decided(
    spec: BudgetSpec | None,
    record: BudgetStatus | None,
    paused: bool,
    decision: ApprovalDecision,
    now: datetime,
) -> tuple[ApprovalRecord, DecisionVerdict] | None:
    """A new decision on the paused budget's gate: the record to keep and what it means;
    None when it is not for this gate's opening, or was already recorded."""
    if spec is None or record is None or not paused:
        return None
    if decision.digest is not None and decision.digest != record.digest:
        return None
    refused = approvals.refusal(spec.approvers, decision)
    entry = approvals.record_of(decision, refused, record.digest, now)
    if approvals.already_recorded(record.approvals or [], entry):
        return None
    return entry, judge_decision(decision, refused)

"""Approval gates as decisions over facts: what one person's decision means for a waiting
gate, what a timeout means, what a waiting gate shows. Pure: each function returns a verdict
and RunState alone applies it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from braid.api.reasons import ApprovalReason, DecisionKind, EventReason, StepReason
from braid.api.run import ApprovalRecord, LoopTaskStatus, PendingApproval, StepStatus
from braid.api.workflow import BUDGET_GATE, ApprovalSpec, ApprovalTimeoutAction, Approvers
from braid.engine.actions import ApprovalDecision

DIGEST_LENGTH = 32  # hex: 128 bits, bound to the run, the gate and when it opened


def _as_stored(value: Any) -> Any:
    """A value as the API server gives it back: JSON does not keep 8.0 apart from 8, so a
    digest taken of 8.0 could not be checked by anyone reading the recorded status."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _as_stored(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_stored(v) for v in value]
    return value


def digest(inputs: dict[str, Any]) -> str:
    """Of the inputs as recorded: the same digest from the operator's values and from the
    status anyone reads back (the web UI checks that what it shows is what is approved)."""
    canonical = json.dumps(_as_stored(inputs), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:DIGEST_LENGTH]


def gate_digest(
    inputs: dict[str, Any],
    message: str,
    *,
    run_uid: str,
    step: str,
    body: str | None,
    iteration: int | None,
    opened: datetime | None,
) -> str:
    """What the approvers see — the upstream outputs the gated step builds on, and the
    question — bound to this run, this gate and this opening of it: a digest approved once
    cannot be replayed in another run or a later iteration with inputs crafted to match."""
    return digest(
        {
            **inputs,
            "message": message,
            "gate": {
                "run": run_uid,
                "step": step,
                "body": body,
                "iteration": iteration,
                "opened": opened,
            },
        }
    )


def approvers_text(approvers: Approvers | None) -> str:
    if approvers is None or (not approvers.users and not approvers.groups):
        return "anyone allowed to annotate the run"
    names = list(approvers.users or []) + [f"group:{g}" for g in approvers.groups or []]
    return ", ".join(names)


def refusal(approvers: Approvers | None, decision: ApprovalDecision) -> str | None:
    """Why a decision does not count, or None when it does. Defence in depth: listed users are
    checked here too; group membership is known only to the API server, so an approval through
    a group counts only when its admission policy checked it."""
    if decision.trusted or approvers is None or (not approvers.users and not approvers.groups):
        return None
    if decision.user in (approvers.users or []):
        return None
    if set(decision.groups) & set(approvers.groups or []):
        return None
    if approvers.groups and decision.admitted:
        return None
    if approvers.groups:
        return (
            f"not a listed user, and membership of {', '.join(approvers.groups)} cannot be "
            "checked: the operator did not find the approval admission policy installed"
        )
    return f"not an allowed approver ({approvers_text(approvers)})"


def record_of(
    decision: ApprovalDecision, refused: str | None, digest: str | None, now: datetime
) -> ApprovalRecord:
    verdict = (
        (DecisionKind.APPROVED if decision.approve else DecisionKind.REJECTED)
        if refused is None
        else DecisionKind.REFUSED
    )
    return ApprovalRecord(
        user=decision.user,
        decision=verdict,
        time=now,
        reason=decision.reason if refused is None else refused,
        digest=digest,
        bound=decision.digest is not None,
        verified=None if decision.trusted else decision.admitted,
    )


def already_recorded(records: Sequence[ApprovalRecord], record: ApprovalRecord) -> bool:
    """Level-based: the same annotation is observed on every reconcile."""
    return any(r.user == record.user and r.decision == record.decision for r in records)


def approvers_of(records: Sequence[ApprovalRecord] | None) -> list[str]:
    return [r.user for r in records or [] if r.decision == DecisionKind.APPROVED]


EventFact = tuple[Literal["Normal", "Warning"], EventReason, str]


@dataclass(frozen=True)
class GateVerdict:
    """What a gate does with a decision: the record to add (None: ignore the decision), an
    Event, and whether the gate closes, how, and why."""

    record: ApprovalRecord | None = None
    event: EventFact | None = None
    close: Literal["approved", "rejected"] | None = None
    reason: str = ""
    message: str = ""


IGNORE = GateVerdict()


def judge(  # noqa: PLR0911 - a decision table: one return per outcome
    spec: ApprovalSpec,
    records: Sequence[ApprovalRecord],
    decision: ApprovalDecision,
    *,
    current: str | None,
    earlier: str | None,
    display: str,
    now: datetime,
) -> GateVerdict:
    """One person's decision on a waiting gate. ``current``: the gate's digest; ``earlier``:
    the digest a bare (digest-less) decision by this person was first counted for."""
    if not decision.trusted:
        if decision.digest is not None and decision.digest != current:
            return IGNORE  # given for other inputs
        if decision.digest is None and earlier is not None and earlier != current:
            return IGNORE  # counted before for inputs that have since changed
    refused = refusal(spec.approvers, decision)
    record = record_of(decision, refused, current, now)
    if already_recorded(records, record):
        return IGNORE
    if refused is not None:
        return GateVerdict(
            record,
            (
                "Warning",
                EventReason.APPROVAL_REFUSED,
                f"Ignored decision by {decision.user} on step {display}: {refused}",
            ),
        )
    if not decision.approve:
        why = decision.reason or "no reason given"
        return GateVerdict(
            record,
            (
                "Warning",
                EventReason.APPROVAL_REJECTED,
                f"Step {display} rejected by {decision.user}: {why}",
            ),
            "rejected",
            StepReason.REJECTED,
            f"rejected by {decision.user}: {why}",
        )
    approved = [*approvers_of(records), decision.user]
    event: EventFact = (
        "Normal",
        EventReason.APPROVED,
        f"Step {display} approved by {decision.user}",
    )
    if decision.trusted or len(approved) >= spec.required:
        return GateVerdict(
            record, event, "approved", StepReason.APPROVED, f"approved by {', '.join(approved)}"
        )
    return GateVerdict(record, event)


def on_timeout(spec: ApprovalSpec, display: str) -> GateVerdict:
    """A gate whose deadline passed closes as its onTimeout says."""
    event: EventFact = (
        "Warning",
        EventReason.APPROVAL_TIMED_OUT,
        f"Approval of step {display} timed out ({spec.on_timeout.value})",
    )
    if spec.on_timeout == ApprovalTimeoutAction.APPROVE:
        return GateVerdict(
            None,
            event,
            "approved",
            StepReason.APPROVAL_TIMED_OUT,
            "approved automatically on timeout",
        )
    return GateVerdict(
        None,
        event,
        "rejected",
        StepReason.APPROVAL_TIMED_OUT,
        "no decision before the deadline",
    )


def who(pending: PendingApproval) -> str:
    names = list(pending.users or []) + [f"group:{g}" for g in pending.groups or []]
    return ", ".join(names) or "anyone allowed to annotate the run"


def pending_condition(
    pending: Sequence[PendingApproval], verified: bool | None
) -> tuple[ApprovalReason, str]:
    """The ApprovalPending condition's reason and message for the gates waiting now."""
    parts = [
        f"step {p.step} needs {p.required - len(p.approved_by or [])} more approval(s) "
        f"from {who(p)}; approve as <user>:{p.digest}"
        + (f" until {p.deadline.isoformat()}" if p.deadline else "")
        for p in pending
    ]
    reason = ApprovalReason.AWAITING_APPROVAL
    if verified is False:
        # Without the admission policy nobody checked who wrote an annotation.
        reason = ApprovalReason.AWAITING_UNVERIFIED_APPROVAL
        parts.append(
            "approver identity is not verified: the operator did not find the approval "
            "admission policy installed, so approvals through groups are not counted"
        )
    return reason, "; ".join(parts)


def earlier_bare_digest(openings: Iterable[StepStatus | LoopTaskStatus], user: str) -> str | None:
    """The digest a bare (digest-less) decision by ``user`` was first counted for, in any
    opening of the gate (each loop iteration opens it anew)."""
    for st in openings:
        for record in st.approvals or []:
            if record.user == user and record.bound is False and record.digest:
                return record.digest
    return None


def pending_of(
    spec: ApprovalSpec, gate: str, iteration: int | None, st: StepStatus | LoopTaskStatus
) -> PendingApproval:
    """What a waiting gate shows (status.pendingApprovals: the admission policy reads it)."""
    approvers = spec.approvers
    return PendingApproval(
        step=gate,
        iteration=iteration,
        users=(approvers.users or None) if approvers else None,
        groups=(approvers.groups or None) if approvers else None,
        required=spec.required,
        approved_by=approvers_of(st.approvals) or None,
        digest=st.approval_digest or "",
        deadline=st.approval_deadline,
    )


def budget_pending(approvers: Approvers | None, digest: str) -> PendingApproval:
    """The budget's gate, while a Pause budget waits for someone to let the run go on."""
    return PendingApproval(
        step=BUDGET_GATE,
        users=(approvers.users or None) if approvers else None,
        groups=(approvers.groups or None) if approvers else None,
        required=1,
        digest=digest,
    )

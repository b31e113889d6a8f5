"""The approval gates of one run that wait for people: opening one, matching decisions to
the gates they are for, deadlines, and what waiting gates show. It decides nothing itself —
approvals.py judges each decision — and never calls back into RunState: it returns the
(gate, verdict) pairs for RunState to apply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from braid.api.reasons import EventReason
from braid.api.run import LoopTaskStatus, PendingApproval, StepPhase, StepStatus
from braid.engine import approvals, deadlines
from braid.engine.actions import ApprovalDecision, RecordEvent
from braid.engine.approvals import GateVerdict
from braid.engine.tasks import Task

GateStatus = StepStatus | LoopTaskStatus


def status_of(task: Task) -> GateStatus:
    st = task.status
    assert isinstance(st, StepStatus | LoopTaskStatus)
    return st


@dataclass
class Gates:
    waiting: list[Task] = field(default_factory=list)

    def opened(
        self, task: Task, text: str, inputs: dict[str, Any], *, run_uid: str, now: datetime
    ) -> RecordEvent:
        """The gate waits for decisions on exactly these inputs and this question; returns
        the ApprovalRequested event (drivers prompt people, or wait for annotations)."""
        approval = task.action.approval
        assert approval is not None
        st, spec = status_of(task), approval.spec
        who = approvals.approvers_text(spec.approvers)
        st.mark_waiting(text or f"waiting for {spec.required} approval(s) from {who}", now)
        st.approval_digest = approvals.gate_digest(
            inputs,
            text,
            run_uid=run_uid,
            step=task.step,
            body=task.body,
            iteration=task.iteration,
            opened=st.start_time,
        )
        st.approval_deadline = deadlines.after(now, spec.timeout_seconds)
        self.waiting.append(task)
        ask = f": {text}" if text else ""
        return RecordEvent(
            "Normal",
            EventReason.APPROVAL_REQUESTED,
            f"Step {task.display} awaits {spec.required} approval(s) from {who}{ask}",
            task.step,
            gate=task.body or task.step,
            iteration=task.iteration,
            deadline=st.approval_deadline,
        )

    def decided(
        self,
        decision: ApprovalDecision,
        openings: Callable[[Task], Iterable[GateStatus]],
        now: datetime,
    ) -> list[tuple[Task, GateVerdict]]:
        """What one decision means for each waiting gate it names. ``openings``: every
        opening of a task's gate (a loop's body step opens anew each iteration)."""
        out = []
        for task in list(self.waiting):
            if (task.body or task.step) != decision.step or task.status.phase != StepPhase.WAITING:
                continue
            if decision.iteration is not None and decision.iteration != task.iteration:
                continue
            st = status_of(task)
            assert task.action.approval is not None
            verdict = approvals.judge(
                task.action.approval.spec,
                st.approvals or [],
                decision,
                current=st.approval_digest,
                earlier=approvals.earlier_bare_digest(openings(task), decision.user),
                display=task.display,
                now=now,
            )
            out.append((task, verdict))
        return out

    def timed_out(self, now: datetime) -> list[tuple[Task, GateVerdict]]:
        out = []
        for task in list(self.waiting):
            end = status_of(task).approval_deadline
            if end is not None and now >= end and task.status.phase == StepPhase.WAITING:
                assert task.action.approval is not None
                out.append((task, approvals.on_timeout(task.action.approval.spec, task.display)))
        return out

    def close(self, task: Task) -> None:
        self.waiting.remove(task)

    def pending(self) -> list[PendingApproval]:
        """What the waiting gates show (status.pendingApprovals: the admission policy reads
        it to decide who may annotate the run)."""
        out = []
        for task in self.waiting:
            if task.status.phase == StepPhase.WAITING:
                assert task.action.approval is not None
                spec = task.action.approval.spec
                gate = task.body or task.step
                out.append(approvals.pending_of(spec, gate, task.iteration, status_of(task)))
        return out

    def deadlines(self) -> list[datetime | None]:
        return [status_of(t).approval_deadline for t in self.waiting]


def inputs_of(task: Task, deps: Iterable[str], steps: Mapping[str, StepStatus]) -> dict[str, Any]:
    """What a gated step builds on: its dependencies' outputs (inside a loop: the previous
    iteration's and this iteration's body steps before it)."""
    if task.role != "body":
        return {"steps": {d: steps[d].outputs or {} for d in deps}}
    iterations = steps[task.step].iterations
    assert iterations
    before = {}
    for body in iterations[-1].steps:
        if body is task.status:
            break
        before[body.name] = body.outputs or {}
    return {"previous": task.scope.get("previous", {}), "body": before}

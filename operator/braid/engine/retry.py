"""Retrying a finished run: a new run that reuses what the old one already did.

Pure: from the old run's status, the status a retry starts with. Steps that are re-run are
the chosen step (or, by default, every step that did not succeed), every step whose work
compensation undid, and everything downstream of them; every other step keeps its outputs,
marked as reused.
"""

from __future__ import annotations

from braid.api.errors import FieldError, InvalidSpecError
from braid.api.reasons import DecisionKind, StepReason
from braid.api.run import StepPhase, StepStatus, WorkflowRunStatus
from braid.engine import dag


def seed_status(
    previous: WorkflowRunStatus,
    old_run: str,
    from_step: str | None,
    requester: str | None = None,
) -> WorkflowRunStatus:
    """``requester``: who asked for the retry, as the API server verified it (None: unknown).
    Approvals belong to the people who gave them: a gate is reused only when its approvals are
    all the requester's own; otherwise it asks again, and what follows it runs again."""
    spec = previous.workflow_spec
    if spec is None:
        raise InvalidSpecError([FieldError("spec.retryOf.name", f"run {old_run!r} never started")])
    graph = dag.build(spec)[0]
    kinds = {s.name: s.kind for s in spec.steps}
    old = {s.name: s for s in previous.steps}
    if from_step is not None and from_step not in graph.deps:
        raise InvalidSpecError(
            [
                FieldError(
                    "spec.retryOf.fromStep",
                    f"no step {from_step!r}; steps: {', '.join(graph.order)}",
                )
            ]
        )
    # A step whose work was undone by compensation cannot be reused: it runs again.
    undone = {n for n, st in old.items() if st.compensation is not None}
    undone |= {n for n, st in old.items() if _approved_by_others(st, requester)}
    roots = undone | (
        {from_step}
        if from_step is not None
        else {n for n in graph.order if n not in old or not _done(old[n])}
    )
    rerun = dag.downstream(graph, roots)
    steps = []
    for name in graph.order:
        kept = old.get(name)
        if (
            name in rerun
            or kept is None
            or kept.phase not in (StepPhase.SUCCEEDED, StepPhase.SKIPPED)
        ):
            steps.append(StepStatus(name=name, kind=kinds[name]))
            continue
        reused = kept.model_copy(deep=True)
        reused.message = f"reused from run {old_run}"
        steps.append(reused)
    return WorkflowRunStatus(workflow_spec=spec, params=previous.params, steps=steps)


def _approved_by_others(step: StepStatus, requester: str | None) -> bool:
    records = list(step.approvals or [])
    for iteration in step.iterations or []:
        for body in iteration.steps:
            records += body.approvals or []
    approvers = {r.user for r in records if r.decision == DecisionKind.APPROVED}
    return bool(approvers) and approvers != {requester}


def _done(step: StepStatus) -> bool:
    """Finished for good: succeeded, or skipped by routing (not because the run stopped)."""
    if step.phase == StepPhase.SUCCEEDED:
        return True
    return step.phase == StepPhase.SKIPPED and step.reason in (
        StepReason.WHEN_FALSE,
        StepReason.UPSTREAM_SKIPPED,
    )

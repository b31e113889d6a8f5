"""Loops as decisions over facts: what a loop does after a body step moved, and after an
iteration ended; what it outputs. Pure: RunState applies the verdicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from braid.api.reasons import FailureReason, StepReason
from braid.api.run import StepPhase, StepStatus
from braid.api.workflow import LoopSpec, MaxIterationsAction
from braid.engine.plan import StepPlan
from braid.engine.tasks import Task


@dataclass(frozen=True)
class BodyMove:
    """Where an iteration stands: a body step failed, one is next to begin, one is still
    going, or every one is done."""

    kind: Literal["failed", "begin", "wait", "done"]
    index: int = -1


def next_in_body(phases: Sequence[StepPhase], goes_on: Sequence[bool] = ()) -> BodyMove:
    """Body steps run in order: the first that is not final decides. ``goes_on``: which body
    steps' failures are branches (continueOn.failed), not the loop's failure."""
    for i, phase in enumerate(phases):
        if phase == StepPhase.FAILED and not (i < len(goes_on) and goes_on[i]):
            return BodyMove("failed", i)
        if phase.final:
            continue
        return BodyMove("begin" if phase == StepPhase.PENDING else "wait", i)
    return BodyMove("done")


@dataclass(frozen=True)
class LoopVerdict:
    """The loop ends, and how."""

    phase: StepPhase
    reason: str
    message: str
    converged: bool = False


def after_iteration(spec: LoopSpec, iteration: int, until: bool | str) -> LoopVerdict | None:
    """``until``: its value after iteration ``iteration``, or the message of its error.
    None: go on with the next iteration."""
    if isinstance(until, str):
        return LoopVerdict(StepPhase.FAILED, FailureReason.EXPRESSION_ERROR, until)
    if until:
        return LoopVerdict(
            StepPhase.SUCCEEDED,
            StepReason.CONVERGED,
            f"until held after iteration {iteration}",
            converged=True,
        )
    if iteration + 1 < spec.max_iterations:
        return None
    count = iteration + 1
    if spec.on_max_iterations == MaxIterationsAction.SUCCEED:
        return LoopVerdict(
            StepPhase.SUCCEEDED,
            StepReason.MAX_ITERATIONS_REACHED,
            f"stopped after {count} iterations",
        )
    return LoopVerdict(
        StepPhase.FAILED,
        StepReason.MAX_ITERATIONS_REACHED,
        f"until still false after {count} iterations",
    )


def body_failed(iteration: int, body: str, message: str | None) -> LoopVerdict:
    return LoopVerdict(
        StepPhase.FAILED,
        StepReason.BODY_STEP_FAILED,
        f"iteration {iteration} step {body} failed: {message}",
    )


def iteration_outputs(st: StepStatus, index: int) -> dict[str, Any]:
    """One iteration's outputs by body step (``previous`` in the next iteration)."""
    if index < 0 or not st.iterations or index >= len(st.iterations):
        return {}
    return {b.name: b.outputs or {} for b in st.iterations[index].steps}


def outputs(st: StepStatus, converged: bool) -> dict[str, Any]:
    history = [iteration_outputs(st, i) for i in range(len(st.iterations or []))]
    return {
        "iterations": history,
        "last": history[-1] if history else {},
        "count": len(history),
        "converged": converged,
    }


def body_tasks(run_name: str, plan: StepPlan, st: StepStatus) -> list[Task]:
    """The tasks of the current iteration of a loop, with ``iteration``, ``previous`` and
    ``iterations`` (every earlier iteration's outputs: a conversation's history)."""
    assert plan.loop is not None
    if not st.iterations:
        return []
    it = st.iterations[-1]
    scope = {
        "iteration": it.iteration,
        "previous": iteration_outputs(st, it.iteration - 1),
        "iterations": [iteration_outputs(st, i) for i in range(it.iteration)],
    }
    return [
        Task(
            body_status,
            body.action,
            "body",
            plan.name,
            f"{run_name}-{plan.name}--{it.iteration}-{body.name}",
            iteration=it.iteration,
            body=body.name,
            scope=scope,
        )
        for body, body_status in zip(plan.loop.body, it.steps, strict=True)
    ]

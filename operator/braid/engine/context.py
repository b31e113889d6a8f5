"""What an expression sees: params, the steps it reads, the run, and the task's own scope
(item, iteration, previous, lastRetry). Pure: built from statuses, only for the steps an
expression names, so a 10,000-step run does not copy 10,000 outputs per evaluation.

A step reads as ``phase``, ``reason``, ``message``, ``exitCode``, ``attempts`` and
``outputs``; a fan-out also as ``items`` (each listed item the same way, with its ``index``),
a loop as ``iterations`` (each with its ``iteration`` and its body ``steps`` by name).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from braid.api.run import RunPhase, StepStatus, TaskStatus, WorkflowRunStatus
from braid.engine import artifacts
from braid.engine.tasks import Task
from braid.expressions import Expression


@dataclass(frozen=True)
class RunView:
    """What ``run`` says: the outcome so far and how long the run has taken."""

    name: str
    phase: str  # Running; in compensation and finally: Succeeded, Failed or Cancelled
    failure: str | None  # the reason the run is failing, None while it succeeds
    duration_seconds: float = 0.0
    failures: Sequence[StepStatus] = field(default_factory=tuple)

    @classmethod
    def of(
        cls,
        name: str,
        status: WorkflowRunStatus,
        failing: tuple[str, bool] | None,
        now: datetime | None,
        failures: Sequence[StepStatus],
    ) -> RunView:
        """``failing``: the reason the run is failing and whether it was cancelled."""
        phase = RunPhase.RUNNING
        if failing is not None:
            phase = RunPhase.CANCELLED if failing[1] else RunPhase.FAILED
        elif status.phase in (RunPhase.COMPENSATING, RunPhase.FINALIZING):
            phase = RunPhase.SUCCEEDED
        start = status.start_time
        took = (now - start).total_seconds() if start and now else 0.0
        return cls(name, phase.value, failing[0] if failing else None, took, failures)

    def wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "phase": self.phase,
            "succeeded": self.failure is None,
            "reason": self.failure or "",
            "durationSeconds": self.duration_seconds,
            "failures": [
                {"step": s.name, "reason": s.reason or "", "message": s.message or ""}
                for s in self.failures
            ],
        }


def expression_context(
    *,
    run: RunView,
    params: dict[str, Any],
    steps: Mapping[str, StepStatus],
    expressions: Iterable[Expression] = (),
    body: Iterable[TaskStatus] | None = None,
    scope: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``body``: the current iteration's body steps, seen by name inside a loop."""
    names: set[str] = set()
    everything = False
    for e in expressions:
        names |= e.steps.names
        everything |= e.steps.whole
    view = {n: step_view(steps[n]) for n in (steps if everything else names) if n in steps}
    for st in body or ():
        view[getattr(st, "name", "")] = task_view(st)
    ctx: dict[str, Any] = {"params": params, "steps": view, "run": run.wire()}
    ctx.update(scope or {})
    return ctx


def task_context(
    run: RunView,
    params: dict[str, Any],
    steps: Mapping[str, StepStatus],
    finally_steps: Mapping[str, StepStatus],
    task: Task | None,
    expressions: Iterable[Expression] = (),
) -> dict[str, Any]:
    """What a task's expressions see (``task`` None: the run's own, e.g. outputs): a loop
    body sees its iteration's body steps by name, a finally step the finally steps too."""
    body = None
    if task is not None and task.body is not None:  # a body step, or an item of one
        iterations = steps[task.step].iterations
        body = iterations[-1].steps if iterations else None
    if task is not None and task.role == "finally" and finally_steps:
        steps = _Overlay(finally_steps, steps)
    scope = task.scope if task is not None else None
    return expression_context(
        run=run, params=params, steps=steps, expressions=expressions, body=body, scope=scope
    )


class _Overlay(Mapping[str, StepStatus]):
    """Finally steps over the steps (names never clash), without copying either."""

    def __init__(self, top: Mapping[str, StepStatus], rest: Mapping[str, StepStatus]) -> None:
        self.top, self.rest = top, rest

    def __getitem__(self, name: str) -> StepStatus:
        return self.top[name] if name in self.top else self.rest[name]

    def __iter__(self) -> Iterator[str]:
        yield from self.top
        yield from self.rest

    def __len__(self) -> int:
        return len(self.top) + len(self.rest)


def task_view(st: TaskStatus) -> dict[str, Any]:
    return {
        "phase": st.phase.value,
        "reason": st.reason or "",
        "message": st.message or "",
        "exitCode": st.exit_code,
        "attempts": st.attempts,
        "outputs": st.outputs or {},
        "artifacts": artifacts.view(st.artifacts),
    }


def step_view(st: StepStatus) -> dict[str, Any]:
    view = task_view(st)
    if st.items is not None:
        view["items"] = [{"index": i.index, **task_view(i)} for i in st.items]
    if st.iterations is not None:
        view["iterations"] = [
            {"iteration": it.iteration, "steps": {b.name: task_view(b) for b in it.steps}}
            for it in st.iterations
        ]
    return view

"""What an expression sees: params, the steps it reads, the run, and the task's own scope
(item, iteration, previous). Pure: built from statuses, only for the steps an expression
names, so a 10,000-step run does not copy 10,000 outputs per evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from braid.api.run import StepStatus, TaskStatus
from braid.expressions import Expression


def expression_context(
    *,
    run_name: str,
    params: dict[str, Any],
    failure: str | None,
    steps: Mapping[str, StepStatus],
    expressions: Iterable[Expression] = (),
    body: Iterable[TaskStatus] | None = None,
    scope: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``failure``: the reason the run is failing, None while it succeeds; ``body``: the
    current iteration's body steps, seen by name inside a loop."""
    names: set[str] = set()
    everything = False
    for e in expressions:
        names |= e.steps.names
        everything |= e.steps.whole
    view = {n: _view(steps[n]) for n in (steps if everything else names) if n in steps}
    for st in body or ():
        view[getattr(st, "name", "")] = _view(st)
    ctx: dict[str, Any] = {
        "params": params,
        "steps": view,
        "run": {"name": run_name, "succeeded": failure is None, "reason": failure or ""},
    }
    ctx.update(scope or {})
    return ctx


def _view(st: TaskStatus) -> dict[str, Any]:
    return {"phase": st.phase.value, "outputs": st.outputs or {}}

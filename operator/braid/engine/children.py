"""Sub-workflows (a `workflow:` step): what a child run is asked to run, how deep runs may nest,
what budget a child gets, and what its end means for the step. Pure: the drivers create the
child runs (a WorkflowRun owned by the parent in a cluster, a nested local run) and report
how they ended as ChildOutcome.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from braid.api.errors import FieldError, InvalidSpecError, from_validation_error
from braid.api.manifests import check_depth
from braid.api.reasons import ConditionType, FailureReason
from braid.api.run import ParentLink, Usage, WorkflowRunStatus
from braid.api.workflow import BudgetSpec, FanOutSpec, SubWorkflowSpec, WorkflowSpec
from braid.engine.actions import ChildOutcome, ChildRunRequest
from braid.engine.plan import ChildPlan

# Runs nest at most this deep (a top-level run is depth 0): a recursive workflow whose `when`
# never stops it fails SubWorkflowTooDeep here instead of creating runs without end.
MAX_DEPTH = 8
# A child run's name fits a label value (braid.dev/run on its pods, braid.dev/parent-run on
# its own children): longer attempt names are cut and made unique by a digest.
RUN_NAME_MAX = 63


def run_name(attempt: str) -> str:
    """The child run of an attempt: named as the attempt, or cut to RUN_NAME_MAX with a digest
    of the whole name (deterministic, so a repeated create is a 409, never a second run)."""
    if len(attempt) <= RUN_NAME_MAX:
        return attempt
    digest = hashlib.sha256(attempt.encode()).hexdigest()[:10]
    return f"{attempt[: RUN_NAME_MAX - 11].rstrip('-.')}-{digest}"


def inline_spec(raw: dict[str, Any], path: str) -> tuple[WorkflowSpec | None, list[FieldError]]:
    """An inline workflow spec, validated; errors are named under ``path``."""
    try:
        check_depth(raw, f"{path}.")
        return WorkflowSpec.model_validate(raw), []
    except InvalidSpecError as exc:
        return None, exc.errors
    except ValidationError as exc:
        return None, from_validation_error(exc, path, WorkflowSpec).errors


def nested_errors(errors: list[FieldError], path: str) -> list[FieldError]:
    """Errors of compiling an inline spec, renamed from ``spec.…`` to ``<path>.…``."""
    out = []
    for e in errors:
        rest = e.path.removeprefix("spec")
        out.append(FieldError(f"{path}{rest}", e.message))
    return out


def too_deep(parent: ParentLink | None) -> str | None:
    """Why this run may not start a child (the child would pass MAX_DEPTH), or None."""
    depth = parent.depth if parent is not None else 0
    if depth + 1 > MAX_DEPTH:
        return (
            f"a child run would be {depth + 1} levels deep; runs nest at most {MAX_DEPTH} "
            "deep (a recursive workflow needs a `when` that ends it)"
        )
    return None


def remaining(budget: BudgetSpec | None, status: WorkflowRunStatus) -> BudgetSpec | None:
    """What of the run's budget is left, as the child's cap (its action and approvers are the
    parent's); None when the run has no budget, or went over it with approval."""
    if budget is None or (status.budget is not None and status.budget.state == "Approved"):
        return None
    used = status.usage or Usage()
    tokens = max(1, budget.tokens - used.tokens) if budget.tokens is not None else None
    cost = max(1e-9, budget.cost - used.cost) if budget.cost is not None else None
    return budget.model_copy(update={"tokens": tokens, "cost": cost})


def capped(spec: WorkflowSpec, cap: BudgetSpec | None) -> WorkflowSpec:
    """The spec a run follows under a run-level budget cap: the lower of each limit."""
    if cap is None:
        return spec
    own = spec.budget
    if own is None:
        return spec.model_copy(update={"budget": cap})

    def lower(a: Any, b: Any) -> Any:
        return b if a is None else a if b is None else min(a, b)

    merged = own.model_copy(
        update={"tokens": lower(own.tokens, cap.tokens), "cost": lower(own.cost, cap.cost)}
    )
    return spec.model_copy(update={"budget": merged})


def request(
    plan: ChildPlan,
    attempt: str,
    context: dict[str, Any],
    parent: ParentLink,
    budget: BudgetSpec | None,
) -> ChildRunRequest:
    """The child run to create; raises ExpressionError from the params."""
    params = plan.params.render(context)
    return ChildRunRequest(
        run_name=run_name(attempt),
        workflow=plan.spec.name,
        spec=plan.inline,
        params=params if isinstance(params, dict) else {},
        parent=parent,
        budget=budget,
    )


def judge(
    name: str, outcome: ChildOutcome
) -> tuple[dict[str, Any] | None, FailureReason | None, str | None]:
    """The step's outputs (the child's outputs, with its usage so the parent counts it), or
    why it failed."""
    outputs = dict(outcome.outputs or {})
    if outcome.usage:
        outputs["usage"] = dict(outcome.usage)
    if outcome.phase == "Succeeded":
        return outputs, None, None
    how = "was cancelled" if outcome.phase == "Cancelled" else "failed"
    detail = f" ({outcome.reason})" if outcome.reason else ""
    said = f": {outcome.message}" if outcome.message else ""
    return (
        outputs or None,
        FailureReason.SUB_WORKFLOW_FAILED,
        f"child run {name} {how}{detail}{said}",
    )


def outcome_of(status: WorkflowRunStatus) -> ChildOutcome | None:
    """How a child run ended, from its status; None while it goes on."""
    if status.succeeded is None:
        return None
    condition = status.condition(ConditionType.SUCCEEDED)
    files = {
        f"{st.name}/{path}": art
        for st in status.steps
        for path, art in (st.artifacts or {}).items()
    }
    used = status.usage
    return ChildOutcome(
        phase=status.phase.value,
        outputs=status.outputs,
        reason=condition.reason if condition is not None else None,
        message=condition.message if condition is not None else None,
        usage={"tokens": used.tokens, "cost": used.cost} if used is not None else None,
        artifacts=files or None,
        steps=status.progress,
    )


@dataclass(frozen=True)
class Reference:
    """A workflow step naming another workflow: where, which, and whether something on the
    way may keep it from running (a `when`, a fan-out whose items may be none)."""

    path: str
    name: str
    guarded: bool


def references(spec: WorkflowSpec, path: str = "spec") -> list[Reference]:
    """Every `workflow.name` a spec's steps name, inline specs included."""
    out: list[Reference] = []
    for i, step in enumerate(spec.steps):
        where, guarded = f"{path}.steps[{i}]", step.when is not None
        out += _named(step.workflow, where, guarded=guarded)
        out += _fanned(step.fan_out, where, guarded=guarded)
        for j, body in enumerate(step.loop.steps if step.loop else []):
            bwhere, bguarded = f"{where}.loop.steps[{j}]", guarded or body.when is not None
            out += _named(body.workflow, bwhere, guarded=bguarded)
            out += _fanned(body.fan_out, bwhere, guarded=bguarded)
    return out


def _named(sub: SubWorkflowSpec | None, where: str, *, guarded: bool) -> list[Reference]:
    if sub is None:
        return []
    if sub.name is not None:
        return [Reference(f"{where}.workflow.name", sub.name, guarded)]
    inline, _ = inline_spec(sub.spec or {}, f"{where}.workflow.spec")
    if inline is None:
        return []
    found = references(inline, f"{where}.workflow.spec")
    return [replace(r, guarded=r.guarded or guarded) for r in found]


def _fanned(fan: FanOutSpec | None, where: str, *, guarded: bool) -> list[Reference]:
    if fan is None:
        return []
    guarded = guarded or not fan.items  # computed items may be none
    out = _named(fan.workflow, f"{where}.fanOut", guarded=guarded)
    for i, case in enumerate(fan.cases or []):
        out += _named(case.workflow, f"{where}.fanOut.cases[{i}]", guarded=True)
    return out


def endless(workflows: dict[str, WorkflowSpec]) -> list[tuple[str, FieldError]]:
    """Recursion that nothing can end: a cycle of workflows naming each other where no step
    on the way has a `when` (every run would nest until MAX_DEPTH). The workflow and the error
    at the first reference of each such cycle."""
    edges = {
        name: [r for r in references(spec) if not r.guarded and r.name in workflows]
        for name, spec in workflows.items()
    }
    found: list[tuple[str, FieldError]] = []
    reported: set[frozenset[str]] = set()

    def walk(name: str, trail: list[tuple[str, Reference]]) -> None:
        for ref in edges[name]:
            here = [*trail, (name, ref)]
            names = [n for n, _ in here]
            if ref.name not in names:
                walk(ref.name, here)
                continue
            cycle = here[names.index(ref.name) :]
            key = frozenset(n for n, _ in cycle)
            if key in reported:
                continue
            reported.add(key)
            start, first = cycle[0]
            shown = " -> ".join([*(n for n, _ in cycle), ref.name])
            message = (
                f"recursion without end: {shown}; no step on the way has a `when`, so every "
                f"run would nest {MAX_DEPTH} deep and fail SubWorkflowTooDeep (guard the step "
                "with a `when` that ends it)"
            )
            found.append((start, FieldError(first.path, message)))

    for name in workflows:
        walk(name, [])
    return found

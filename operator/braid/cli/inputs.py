"""What `braid run` is told on its command line, checked against the workflow before anything
runs: `-p` values typed by the param's schema, `--approve`/`--reject` naming gates that exist
(with a "did you mean"), not both for one gate, and only by a user the gate lists."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from braid.api.errors import FieldError, InvalidSpecError, did_you_mean
from braid.api.workflow import BUDGET_GATE, ApprovalSpec, WorkflowSpec
from braid.engine import ApprovalDecision
from braid.engine.children import inline_spec


def parse_params(values: list[str], spec: WorkflowSpec) -> dict[str, Any]:
    """`-p KEY=VALUE`: a value is JSON (numbers, booleans, lists, objects) unless the param's
    schema says it is a string (then `-p year=2024` is the text "2024")."""
    declared = {p.name: p for p in spec.param_specs()}
    params: dict[str, Any] = {}
    errors = []
    for raw in values:
        key, sep, value = raw.partition("=")
        if not sep or not key:
            errors.append(FieldError(f"-p {raw}", "expected KEY=VALUE, e.g. -p topic=cats"))
            continue
        if key not in declared:
            errors.append(
                FieldError(
                    f"-p {key}",
                    "the workflow has no such param" + did_you_mean(key, declared, "params"),
                )
            )
            continue
        schema = declared[key].schema_ or {}
        if isinstance(schema, Mapping) and schema.get("type") == "string":
            params[key] = value
            continue
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    if errors:
        raise InvalidSpecError(errors)
    return params


@dataclass(frozen=True)
class Gate:
    name: str
    approvers_users: tuple[str, ...]
    approvers_groups: tuple[str, ...]
    where: str  # the workflow it is in


def gates(spec: WorkflowSpec, workflow: str, others: Mapping[str, WorkflowSpec]) -> list[Gate]:
    """The gates decisions may name: the run's, its loop bodies', `budget`, and those of the
    sub-workflows it may run (inline, or among the workflows given)."""
    out: list[Gate] = []
    seen: set[str] = set()

    def visit(s: WorkflowSpec, where: str) -> None:
        if s.budget is not None:
            users = s.budget.approvers.users if s.budget.approvers else None
            groups = s.budget.approvers.groups if s.budget.approvers else None
            out.append(Gate(BUDGET_GATE, tuple(users or ()), tuple(groups or ()), where))
        for name, approval, sub in _steps(s):
            if approval is not None:
                users = approval.approvers.users if approval.approvers else None
                groups = approval.approvers.groups if approval.approvers else None
                out.append(Gate(name, tuple(users or ()), tuple(groups or ()), where))
            if sub is None:
                continue
            inline, named = sub
            if inline is not None:
                visit(inline, f"{where} > {name}")
            elif named in others and named not in seen:
                seen.add(named)
                visit(others[named], named)

    visit(spec, workflow)
    return out


def _steps(
    spec: WorkflowSpec,
) -> Iterator[tuple[str, ApprovalSpec | None, tuple[WorkflowSpec | None, str] | None]]:
    def sub_of(workflow: Any) -> tuple[WorkflowSpec | None, str] | None:
        if workflow is None:
            return None
        if workflow.spec is not None:
            return inline_spec(workflow.spec, "")[0], ""
        return None, workflow.name or ""

    for step in spec.steps:
        yield step.name, step.approval, sub_of(step.workflow)
        if step.fan_out is not None:
            yield step.name, None, sub_of(step.fan_out.workflow)
        for body in step.loop.steps if step.loop else []:
            yield body.name, body.approval, sub_of(body.workflow)


def check_decisions(decisions: list[ApprovalDecision], known: list[Gate]) -> list[str]:
    """Why the decisions given cannot be what was meant (errors), or nothing."""
    names = sorted({g.name for g in known})
    errors = []
    decided: dict[str, str] = {}
    for d in decisions:
        flag = "--approve" if d.approve else "--reject"
        if d.step not in names:
            hint = did_you_mean(d.step, names, "gates")
            errors.append(f"{flag} {d.step}: no approval gate of that name{hint}")
            continue
        other = decided.get(d.step)
        if other is not None and other != flag:
            errors.append(f"{d.step}: given to both --approve and --reject; choose one")
        decided[d.step] = flag
        if not d.approve:
            continue
        listed = [
            g for g in known if g.name == d.step and (g.approvers_users or g.approvers_groups)
        ]
        for gate in listed:
            if d.user in gate.approvers_users:
                continue
            if gate.approvers_groups:
                continue  # membership of groups is not known locally: the person vouches
            who = ", ".join(gate.approvers_users)
            errors.append(
                f"--approve {d.step}={d.user}: {d.user} may not decide {d.step} (in {gate.where} "
                f"its approvers are {who}); name one of them: --approve {d.step}=<user>"
            )
    return errors

"""Checks of a workflow's compiled expressions against the names and steps that exist where
each one runs. Pure: each check takes the expressions and the facts, and returns problems.

An expression is checked with its owner (the step it belongs to, None for run outputs and
finally steps) and the extra names in scope where it runs (``item``, ``iteration``,
``response``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from braid.api.errors import FieldError
from braid.api.workflow import Step
from braid.engine import dag
from braid.engine.plan import COMPACT_ABOVE
from braid.expressions import Expression, ExpressionError, clip

# Names bound only where they make sense (the compiler adds them to an expression's scope).
SCOPED = frozenset({"item", "index", "iteration", "previous", "response"})
ALWAYS = frozenset({"params", "steps", "run"})


@dataclass(frozen=True)
class Scoped:
    """A compiled expression with where it stands."""

    expression: Expression
    owner: str | None
    extra: frozenset[str]


def expression_errors(
    expressions: Iterable[Scoped],
    declared: frozenset[str],
    graph: dag.Graph,
    body_of: Mapping[str, Sequence[str]],
) -> list[FieldError]:
    """Every problem of every expression, expression by expression: params that are not
    declared, names not in scope where it runs, steps that do not exist or are not upstream
    of its owner, and type errors of constant expressions."""
    upstream: dict[str, set[str]] = {}  # computed only for owners whose expressions need it
    out: list[FieldError] = []
    for s in expressions:
        out += unknown_params(s, declared)
        out += names_out_of_scope(s)
        out += step_references(s, graph, body_of, upstream)
        out += constant_errors(s)
    return out


def unknown_params(s: Scoped, declared: frozenset[str]) -> list[FieldError]:
    e = s.expression
    return [
        FieldError(
            e.path,
            f"unknown param {name!r} in {clip(e.source)!r}; declared: "
            f"{', '.join(sorted(declared)) or 'none'}",
        )
        for name in sorted(e.params.names - declared)
    ]


def names_out_of_scope(s: Scoped) -> list[FieldError]:
    e = s.expression
    unknown = e.unknown_names() - s.extra
    return [
        FieldError(
            e.path,
            f"unknown name {name!r} in {clip(e.source)!r}; in scope here: "
            f"{', '.join(sorted(ALWAYS | s.extra))}",
        )
        for name in sorted(unknown | (e.variables & (SCOPED - s.extra)))
    ]


def step_references(
    s: Scoped,
    graph: dag.Graph,
    body_of: Mapping[str, Sequence[str]],
    upstream: dict[str, set[str]],
) -> list[FieldError]:
    """Every step the expression names exists and is upstream of the step that owns it (or
    is a body step of the loop that owns it). ``upstream`` caches ancestors by owner."""
    e = s.expression
    out = []
    for ref in sorted(e.steps.names):
        if ref in body_of.get(s.owner or "", ()):
            continue
        if ref not in graph.deps:
            out.append(
                FieldError(
                    e.path,
                    f"unknown step {ref!r} in {clip(e.source)!r}; steps whose names "
                    """contain '-' are written steps["the-name"]""",
                )
            )
            continue
        if s.owner is None or ref == s.owner:
            continue
        if s.owner not in upstream:
            upstream[s.owner] = dag.upstream(graph, s.owner)
        if ref not in upstream[s.owner]:
            out.append(
                FieldError(
                    e.path,
                    f"step {ref!r} is not upstream of step {s.owner!r}, so its outputs are "
                    f"not available; add it to dependsOn (directly or transitively)",
                )
            )
    return out


def constant_errors(s: Scoped) -> list[FieldError]:
    """Type errors that do not depend on run-time data: evaluate constant expressions."""
    if s.expression.variables:
        return []
    try:
        s.expression.evaluate({})
    except ExpressionError as exc:
        return [exc.field_error()]
    return []


def gathering(expressions: Iterable[Scoped], steps: Sequence[Step]) -> list[FieldError]:
    """A literal fan-out over COMPACT_ABOVE items has no outputs.items to read."""
    large = [
        s.name
        for s in steps
        if s.fan_out is not None and len(s.fan_out.items or []) > COMPACT_ABOVE
    ]
    out = []
    listed = list(expressions)
    for name in large:
        pattern = re.compile(
            rf"steps(\.{re.escape(name)}|\[\s*['\"]{re.escape(name)}['\"]\s*\])\.outputs\.items\b"
        )
        out += [
            FieldError(
                s.expression.path,
                f"{name} fans out over more than {COMPACT_ABOVE} items, so its outputs carry "
                "succeeded/failed/total but not items; have the items write their results "
                "somewhere a later step reads them",
            )
            for s in listed
            if pattern.search(s.expression.source)
        ]
    return out

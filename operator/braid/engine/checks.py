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

from braid.api.errors import FieldError, did_you_mean
from braid.api.workflow import Step
from braid.engine import dag
from braid.engine.plan import COMPACT_ABOVE
from braid.expressions import Expression, ExpressionError, clip
from braid.expressions.core import STRING_LITERAL

# The attributes of steps.<name> (engine/context.py builds them): anything else is a typo.
STEP_ATTRIBUTES = frozenset(
    {
        "phase",
        "reason",
        "message",
        "exitCode",
        "attempts",
        "outputs",
        "artifacts",
        "items",
        "iterations",
    }
)
# Names bound only where they make sense (the compiler adds them to an expression's scope).
SCOPED = frozenset({"item", "index", "iteration", "previous", "iterations", "response"})
ALWAYS = frozenset({"params", "steps", "run"})


@dataclass(frozen=True)
class Scoped:
    """A compiled expression with where it stands: its owner step, the names in scope besides
    params/steps/run, and steps it may read besides its owner's upstream."""

    expression: Expression
    owner: str | None
    extra: frozenset[str]
    reads: frozenset[str] = frozenset()


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
        out += step_attributes(s)
        out += constant_errors(s)
    return out


def unknown_params(s: Scoped, declared: frozenset[str]) -> list[FieldError]:
    e = s.expression
    return [
        FieldError(
            e.path,
            f"unknown param {name!r} in {clip(e.source)!r}"
            + did_you_mean(name, declared, "declared"),
        )
        for name in sorted(e.params.names - declared)
    ]


def _close_step(ref: str, steps: Iterable[str]) -> str:
    close = did_you_mean(ref, steps)
    return close if close.startswith(" (") else ""


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
        if ref in body_of.get(s.owner or "", ()) or ref in s.reads:
            continue
        if ref not in graph.deps:
            out.append(
                FieldError(
                    e.path,
                    f"unknown step {ref!r} in {clip(e.source)!r}"
                    + _close_step(ref, graph.deps)
                    + """; steps whose names contain '-' are written steps["the-name"]""",
                )
            )
            continue
        if s.owner is None:
            continue
        if ref == s.owner:
            out.append(
                FieldError(
                    e.path,
                    f"step {ref!r} reads its own status or outputs in {clip(e.source)!r}, which "
                    "do not exist until it has finished (a cycle); read them in a later step, "
                    "or in its compensation",
                )
            )
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


_INDEXED = re.compile(r"steps\s*\[\s*(['\"])([^'\"]+)\1\s*\]")
_ATTRIBUTE = re.compile(r"steps\s*(?:\.\s*([A-Za-z_]\w*)|\[\x00(\d+)\x00\])\s*\.\s*([A-Za-z_]\w*)")


def attribute_reads(source: str) -> list[tuple[str, str]]:
    """(step, attribute) for every steps.<name>.<attribute> and steps["name"].<attribute>;
    text inside other string literals is data."""
    keys: list[str] = []

    def keep(m: re.Match[str]) -> str:
        keys.append(m.group(2))
        return f"steps[\x00{len(keys) - 1}\x00]"

    code = STRING_LITERAL.sub('""', _INDEXED.sub(keep, source))
    return [(m.group(1) or keys[int(m.group(2))], m.group(3)) for m in _ATTRIBUTE.finditer(code)]


def step_attributes(s: Scoped) -> list[FieldError]:
    """steps.<name>.<attribute>: only the documented attributes exist."""
    e = s.expression
    return [
        FieldError(
            e.path,
            f"steps.{step}.{attr} in {clip(e.source)!r}: a step has no {attr!r}; it has "
            f"{', '.join(sorted(STEP_ATTRIBUTES))} (outputs.<name> for what it wrote)",
        )
        for step, attr in dict.fromkeys(attribute_reads(e.source))
        if attr not in STEP_ATTRIBUTES
    ]


def unguarded_reads(
    expressions: Iterable[Scoped], conditional: Mapping[str, str], whens: Mapping[str, str]
) -> list[FieldError]:
    """Warnings: reads of steps.x.outputs.<name> where x may be skipped (``conditional``:
    step -> why), in an expression that does not test x first (its phase or reason, or
    has()), nor does the `when` of the step it belongs to (``whens``: step -> source)."""
    out = []
    for s in expressions:
        e = s.expression
        reads = {step for step, attr in attribute_reads(e.source) if attr == "outputs"}
        reads = {step for step in reads if _reads_into_outputs(e.source, step)}
        guard = f"{e.source} {whens.get(s.owner or '', '')}"
        tested = {step for step, attr in attribute_reads(guard) if attr in ("phase", "reason")}
        for step in sorted(reads & conditional.keys()):
            if step == s.owner or step in s.reads or step in tested:
                continue
            if re.search(rf"has\(\s*steps\s*(\.\s*{re.escape(step)}\b|\[)", guard):
                continue
            out.append(
                FieldError(
                    e.path,
                    f"reads steps.{step}.outputs, but {step} {conditional[step]}, so its "
                    f"outputs may be empty; test steps.{step}.phase == 'Succeeded' first, or "
                    f"use has(steps.{step}.outputs.<name>)",
                )
            )
    return out


def _reads_into_outputs(source: str, step: str) -> bool:
    """steps.<step>.outputs.<name> (or [...]): a key that is missing when the step did not
    succeed. The whole map (steps.<step>.outputs) is {} then, which is safe to read."""
    name = re.escape(step)
    where = rf"steps\s*(\.\s*{name}\b|\[\s*['\"]{name}['\"]\s*\])\s*\.\s*outputs\s*[.\[]"
    return re.search(where, source) is not None


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

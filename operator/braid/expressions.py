"""CEL expressions and ``${{ <CEL> }}`` templates, compiled once, evaluated many times.

Pure: compiling and evaluating touch no I/O and no clock. Every error carries the field path
of the expression and the expression's text, so a user can find and fix it.

Names in scope (a name is only bound where it makes sense; lint reports the others):

``params``     the run's resolved params                                  everywhere
``steps``      ``steps.<name>.outputs`` / ``.phase`` of upstream steps       everywhere
``item``       the current fan-out item, ``index`` its position          fan-out actions
``iteration``  the loop iteration (from 0); ``previous`` the previous
               iteration's body outputs by step name                     loop bodies, until
``response``   ``status``, ``headers``, ``body`` of an HTTP response      webhook success/output
``run``        ``name``, ``succeeded``, ``reason``                       everywhere
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import cel

from braid.api.errors import FieldError

CONTEXT_NAMES = frozenset(
    {"params", "steps", "item", "index", "iteration", "previous", "response", "run"}
)

_TEMPLATE = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
_STRING_LITERAL = re.compile(r"'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\"")
_MACRO_VAR = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")


# Comprehension macros: all/exists/exists_one visit each element once; map and filter copy their
# accumulator on every element in this CEL implementation, so they cost the square of the list's
# length (3,000 elements: about a second; bench/README.md). Costs are in microseconds as
# measured on a 2-core machine, and an evaluation may spend at most COST_BUDGET of them: the
# operator evaluates every run's expressions, so one run must not be able to stall the others.
_MACRO_CALL = re.compile(r"\.\s*(all|exists_one|exists|map|filter)\s*$")
_QUADRATIC = frozenset({"map", "filter"})
LINEAR_COST = 1.0  # per element visited
QUADRATIC_COST = 0.12  # per element squared (map, filter)
COST_BUDGET = 500_000.0
MAX_NESTING = 3


@dataclass(frozen=True)
class Comprehension:
    """One comprehension macro in an expression, with the ones nested in its body."""

    macro: str
    inner: tuple[Comprehension, ...] = ()

    def cost(self, n: int) -> float:
        """Worst case over lists of at most ``n`` elements."""
        body = 1.0 + sum(c.cost(n) for c in self.inner)
        quadratic = QUADRATIC_COST * n * n if self.macro in _QUADRATIC else 0.0
        return n * body * LINEAR_COST + quadratic

    @property
    def depth(self) -> int:
        return 1 + max((c.depth for c in self.inner), default=0)


def comprehensions(source: str) -> tuple[tuple[Comprehension, ...], int]:
    """The comprehension macros of an expression as a forest, and an upper bound on the
    length of any list or map literal in it (its commas + 1). Text inside string literals is
    data, not code."""
    code = _STRING_LITERAL.sub('""', source)
    # Each open parenthesis: the macro it calls (None for any other call or group) and the
    # comprehensions found inside it so far.
    stack: list[tuple[str | None, list[Comprehension]]] = [(None, [])]
    for i, ch in enumerate(code):
        if ch == "(":
            m = _MACRO_CALL.search(code, 0, i)
            stack.append((m.group(1) if m else None, []))
        elif ch == ")" and len(stack) > 1:
            macro, found = stack.pop()
            nodes = [Comprehension(macro, tuple(found))] if macro else found
            stack[-1][1].extend(nodes)
    while len(stack) > 1:  # unbalanced: the compiler reports it; keep what was seen
        macro, found = stack.pop()
        stack[-1][1].extend([Comprehension(macro, tuple(found))] if macro else found)
    return tuple(stack[0][1]), code.count(",") + 1


def largest_collection(value: Any, limit: int = 64) -> int:
    """The length of the longest list or map anywhere in ``value``."""
    best = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list) and depth <= limit:
            best = max(best, len(node))
            values = node.values() if isinstance(node, dict) else node
            stack.extend((v, depth + 1) for v in values if isinstance(v, dict | list))
    return best


class ExpressionError(Exception):
    """An expression failed to compile or evaluate."""

    def __init__(self, path: str, source: str, message: str) -> None:
        self.path = path
        self.source = source
        self.message = message
        super().__init__(f"{path}: {message} (in expression {clip(source)!r})")

    def field_error(self) -> FieldError:
        return FieldError(self.path, f"{self.message} (in expression {clip(self.source)!r})")


def clip(source: str, limit: int = 200) -> str:
    """An expression as quoted in an error: whole when short, its start when not."""
    if len(source) <= limit:
        return source
    return f"{source[:limit]}… ({len(source)} characters)"


MAX_SOURCE = 10_000


@lru_cache(maxsize=4096)
def _compile(source: str) -> Any:
    return cel.compile(source)


def _short(message: str) -> str:
    lines = message.strip().splitlines()
    # The parser's first line repeats the expression; its ERROR line says where and what.
    line = next((ln for ln in lines if "ERROR:" in ln), lines[0] if lines else "invalid")
    line = line.split("ERROR: <input>:", 1)[-1]
    return line.split(" expecting {", 1)[0].strip()


@dataclass(frozen=True)
class Refs:
    """Which members of ``steps`` (or ``params``) an expression reads; ``whole`` when it
    reads the map as a whole (``steps[x]`` with a computed key, ``size(params)``, ...)."""

    names: frozenset[str] = frozenset()
    whole: bool = False


def _refs(source: str, variables: frozenset[str], root: str) -> Refs:
    if root not in variables:
        return Refs()
    dot = re.compile(rf"\b{root}\s*\.\s*([A-Za-z_]\w*)(?!\w)(?!\s*\()")
    index = re.compile(rf"\b{root}\s*\[\s*(['\"])([^'\"]+)\1\s*\]")
    # Names inside string literals are data, except as a subscript key, which is matched first.
    indexed = {m.group(2) for m in index.finditer(source)}
    stripped = _STRING_LITERAL.sub('""', source)
    dotted = {m.group(1) for m in dot.finditer(stripped)}
    uses = len(re.findall(rf"\b{root}\b", stripped))
    named_uses = len(dot.findall(stripped)) + len(index.findall(source))
    return Refs(frozenset(dotted | indexed), whole=uses > named_uses)


@dataclass(frozen=True)
class Expression:
    """A compiled CEL expression bound to the field it came from."""

    source: str
    path: str
    variables: frozenset[str]
    steps: Refs
    params: Refs
    _program: Any = field(repr=False, compare=False)
    comprehensions: tuple[Comprehension, ...] = ()
    literal_size: int = 1

    def cost(self, n: int) -> float:
        """Worst-case cost (see COST_BUDGET) over data whose lists are at most ``n`` long."""
        return sum(c.cost(max(n, self.literal_size)) for c in self.comprehensions)

    def check_cost(self, context: dict[str, Any]) -> None:
        """Refuse an evaluation that could stall the operator, before it starts."""
        if not self.comprehensions:
            return
        n = largest_collection([self._reads(name, context) for name in self.variables])
        cost = self.cost(n)
        if cost > COST_BUDGET:
            raise ExpressionError(
                self.path,
                self.source,
                f"too expensive to evaluate: comprehensions (all, exists, map, filter) over "
                f"lists of up to {max(n, self.literal_size)} elements could cost "
                f"{cost / 1e6:.1f} s, over the budget of {COST_BUDGET / 1e6:.1f} s; nest them "
                "less, filter less data, or fan out over the list instead",
            )

    def _reads(self, name: str, context: dict[str, Any]) -> Any:
        value = context.get(name)
        if name == "params" and isinstance(value, dict) and not self.params.whole:
            return {k: value[k] for k in self.params.names if k in value}
        return value

    def evaluate(self, context: dict[str, Any]) -> Any:
        self.check_cost(context)
        try:
            return to_json(self._program.execute(context))
        except Exception as exc:  # noqa: BLE001 - any failure of a user's expression is theirs
            raise ExpressionError(self.path, self.source, _runtime_message(exc)) from None

    def evaluate_bool(self, context: dict[str, Any]) -> bool:
        value = self.evaluate(context)
        if not isinstance(value, bool):
            raise ExpressionError(
                self.path, self.source, f"must evaluate to a bool, got {type_name(value)}"
            )
        return value

    def unknown_names(self) -> set[str]:
        """Top-level names that are neither context names nor bound by a macro."""
        bound = set(_MACRO_VAR.findall(self.source))
        return {v for v in self.variables if v not in CONTEXT_NAMES and v not in bound}


def _runtime_message(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"no such key: {exc.args[0]!r} (use has() to test optional fields)"
    if isinstance(exc, IndexError):
        return f"{exc} (check size() before indexing)"
    return _short(str(exc))


def compile_expression(source: str, path: str) -> Expression:
    """Compile once; raises ExpressionError naming ``path`` on a syntax error."""
    if len(source) > MAX_SOURCE:
        raise ExpressionError(path, source, f"longer than {MAX_SOURCE} characters")
    try:
        program = _compile(source)
    except (ValueError, RuntimeError) as exc:
        raise ExpressionError(path, source, f"invalid CEL: {_short(str(exc))}") from None
    variables = frozenset(program.variables())
    forest, literal = comprehensions(source)
    expression = Expression(
        source,
        path,
        variables,
        _refs(source, variables, "steps"),
        _refs(source, variables, "params"),
        program,
        forest,
        literal,
    )
    depth = max((c.depth for c in forest), default=0)
    if depth > MAX_NESTING:
        raise ExpressionError(
            path, source, f"comprehensions nested {depth} deep; at most {MAX_NESTING} are allowed"
        )
    if expression.cost(0) > COST_BUDGET:
        # The literals alone are too much, whatever the data: refuse before any run.
        raise ExpressionError(
            path,
            source,
            f"too expensive to evaluate: its comprehensions over its own literals could cost "
            f"{expression.cost(0) / 1e6:.1f} s, over the budget of {COST_BUDGET / 1e6:.1f} s",
        )
    return expression


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "bool",
        int: "int",
        float: "double",
        str: "string",
        list: "list",
        dict: "map",
    }.get(type(value), type(value).__name__)


def to_json(value: Any) -> Any:
    """CEL results as JSON values (timestamps as RFC 3339, durations as seconds)."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def render_scalar(value: Any) -> str:
    """How an interpolated value appears inside a string: strings as is, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class Template:
    """A string with ``${{ <CEL> }}`` parts. Literal-only templates cost nothing to render."""

    source: str
    path: str
    parts: tuple[str | Expression, ...]

    @property
    def expressions(self) -> tuple[Expression, ...]:
        return tuple(p for p in self.parts if isinstance(p, Expression))

    def render(self, context: dict[str, Any]) -> str:
        return "".join(
            p if isinstance(p, str) else render_scalar(p.evaluate(context)) for p in self.parts
        )

    def render_value(self, context: dict[str, Any]) -> Any:
        """A template that is exactly one expression keeps the value's own type."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Expression):
            return self.parts[0].evaluate(context)
        return self.render(context)


def compile_template(source: str, path: str) -> Template:
    parts: list[str | Expression] = []
    pos = 0
    for match in _TEMPLATE.finditer(source):
        if match.start() > pos:
            parts.append(source[pos : match.start()])
        inner = match.group(1).strip()
        if not inner:
            raise ExpressionError(path, source, "empty ${{ }} interpolation")
        parts.append(compile_expression(inner, path))
        pos = match.end()
    if pos < len(source):
        parts.append(source[pos:])
    if "${{" in "".join(p for p in parts if isinstance(p, str)):
        raise ExpressionError(path, source, "unterminated ${{ interpolation; close it with }}")
    return Template(source, path, tuple(parts))


@dataclass(frozen=True)
class ValueTemplate:
    """A JSON value whose string leaves are templates (webhook bodies)."""

    value: Any
    templates: dict[tuple[str | int, ...], Template]

    @property
    def expressions(self) -> tuple[Expression, ...]:
        return tuple(e for t in self.templates.values() for e in t.expressions)

    def render(self, context: dict[str, Any]) -> Any:
        return self._render(self.value, (), context)

    def _render(self, value: Any, at: tuple[str | int, ...], context: dict[str, Any]) -> Any:
        if isinstance(value, dict):
            return {k: self._render(v, (*at, k), context) for k, v in value.items()}
        if isinstance(value, list):
            return [self._render(v, (*at, i), context) for i, v in enumerate(value)]
        template = self.templates.get(at)
        return template.render_value(context) if template else value


def compile_value_template(value: Any, path: str) -> ValueTemplate:
    templates: dict[tuple[str | int, ...], Template] = {}

    def walk(node: Any, at: tuple[str | int, ...], where: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, (*at, k), f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, (*at, i), f"{where}[{i}]")
        elif isinstance(node, str) and "${{" in node:
            templates[at] = compile_template(node, where)

    walk(value, (), path)
    return ValueTemplate(value, templates)

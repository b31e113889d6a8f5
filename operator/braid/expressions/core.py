"""CEL expressions, compiled once, evaluated many times, within a cost budget.

Pure: compiling and evaluating touch no I/O and no clock. Every error carries the field path
of the expression and the expression's text, so a user can find and fix it.

Names in scope (a name is only bound where it makes sense; lint reports the others):

``params``     the run's resolved params                                  everywhere
``steps``      ``steps.<name>.phase / reason / message / exitCode / attempts / outputs``
               (``items`` of a fan-out, ``iterations`` of a loop)         everywhere
``item``       the current fan-out item, ``index`` its position          fan-out actions
``iteration``  the loop iteration (from 0); ``previous`` the previous
               iteration's body outputs by step name                     loop bodies, until
``response``   ``status``, ``headers``, ``body`` of an HTTP response      webhook success/output
``lastRetry``  ``exitCode``, ``reason``, ``message``, ``outputs``, ``attempt``,
               ``durationSeconds`` of the attempt that just failed        retry.expression
``run``        ``name``, ``phase``, ``succeeded``, ``reason``, ``failures``,
               ``durationSeconds``                                       everywhere
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from braid.api.errors import FieldError
from braid.expressions import functions
from braid.expressions.values import to_json, type_name

if TYPE_CHECKING:
    import cel
else:
    from braid.expressions.library import cel

CONTEXT_NAMES = frozenset(
    {"params", "steps", "item", "index", "iteration", "previous", "response", "run", "lastRetry"}
)

STRING_LITERAL = re.compile(r"'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\"")
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
    code = STRING_LITERAL.sub('""', source)
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
    stripped = STRING_LITERAL.sub('""', source)
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
    # the extension functions it calls (functions.py), registered only for it
    functions: tuple[tuple[str, Callable[..., Any]], ...] = field(default=(), compare=False)

    def cost(self, n: int) -> float:
        """Worst-case cost (see COST_BUDGET) over data whose lists are at most ``n`` long."""
        return sum(c.cost(max(n, self.literal_size)) for c in self.comprehensions)

    def check_cost(self, context: dict[str, Any]) -> None:
        """Refuse an evaluation that could stall the operator, before it starts."""
        if not self.comprehensions:
            return
        n = largest_collection([self._reads(name, context) for name in self.variables])
        message = self._too_expensive(n)
        if message is not None:
            raise ExpressionError(self.path, self.source, message)

    def _too_expensive(self, n: int) -> str | None:
        cost = self.cost(n)
        if cost <= COST_BUDGET:
            return None
        return (
            f"too expensive to evaluate: comprehensions (all, exists, map, filter) over "
            f"lists of up to {max(n, self.literal_size)} elements could cost "
            f"{cost / 1e6:.1f} s, over the budget of {COST_BUDGET / 1e6:.1f} s; nest them "
            "less, filter less data, or fan out over the list instead"
        )

    def _check_produced(self, n: int) -> None:
        """A function made a list of ``n`` elements: may the comprehensions walk it?"""
        message = self._too_expensive(n) if self.comprehensions else None
        if message is not None:
            raise functions.FunctionError(message)

    def _reads(self, name: str, context: dict[str, Any]) -> Any:
        value = context.get(name)
        if name == "params" and isinstance(value, dict) and not self.params.whole:
            return {k: value[k] for k in self.params.names if k in value}
        return value

    def evaluate(self, context: dict[str, Any]) -> Any:
        self.check_cost(context)
        token = functions.produced.set(self._check_produced) if self.functions else None
        try:
            return to_json(self._program.execute(self._bind(context)))
        except Exception as exc:  # noqa: BLE001 - any failure of a user's expression is theirs
            raise ExpressionError(self.path, self.source, _runtime_message(exc)) from None
        finally:
            if token is not None:
                functions.produced.reset(token)

    def _bind(self, context: dict[str, Any]) -> dict[str, Any] | cel.Context:
        """A plain dict, or a context with the extension functions this expression calls."""
        if not self.functions:
            return context
        bound = cel.Context()
        for name, fn in self.functions:
            bound.add_function(name, fn)
        for name in self.variables:
            if name in context:
                bound.add_variable(name, context[name])
        return bound

    def evaluate_bool(self, context: dict[str, Any]) -> bool:
        value = self.evaluate(context)
        if not isinstance(value, bool):
            raise ExpressionError(
                self.path, self.source, f"must evaluate to a bool, got {type_name(value)}"
            )
        return value

    def unknown_names(self) -> set[str]:
        """Top-level names that are neither context names, nor bound by a macro, nor the
        namespace of an extension function (math.greatest, lists.range, ...)."""
        bound = set(_MACRO_VAR.findall(self.source))
        namespaces = {n for n in functions.NAMESPACES if re.search(rf"\b{n}\s*\.", self.source)}
        return {
            v
            for v in self.variables
            if v not in CONTEXT_NAMES and v not in bound and v not in namespaces
        }


_CALLBACK_FAILED = re.compile(
    r"Function '([^']+)' error: Python function call failed: \w+: (.*?)\.? Check function "
    r"arguments and their types\.?$",
    re.DOTALL,
)


def _runtime_message(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"no such key: {exc.args[0]!r} (use has() to test optional fields)"
    if isinstance(exc, IndexError):
        return f"{exc} (check size() before indexing)"
    failed = _CALLBACK_FAILED.search(str(exc))
    if failed is not None:
        name, why = failed.groups()
        return why if why.startswith((name, "too expensive")) else f"{name}(): {why}"
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
    calls = program.functions()
    unknown = functions.unknown(calls)
    if unknown:
        raise ExpressionError(
            path,
            source,
            f"unknown function {unknown[0]!r}; CEL's own functions and these extensions are "
            f"available: {', '.join(functions.documented())}",
        )
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
        functions.used(calls),
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

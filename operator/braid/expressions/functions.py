"""The functions CEL expressions may call beyond the core language: cel-go's string, list,
math, set and encoder extensions (as Kubernetes and Argo users know them) and ``format``.

They run as Python callbacks of the Rust evaluator, so each one is bounded here: no string
result longer than MAX_STRING, no list longer than MAX_LIST, and a list a function makes
(``lists.range``, ``split``, ``flatten``) counts against the evaluating expression's cost
budget before any comprehension can walk it. An expression registers only the functions it
calls, so expressions that call none keep the plain (faster) evaluation path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from braid.expressions.values import render_scalar

if TYPE_CHECKING:
    from cel import stdlib
else:
    from braid.expressions.library import cel

    stdlib = cel.stdlib

MAX_STRING = 256 * 1024
MAX_LIST = 100_000

# The evaluating expression's check of a list a function is about to hand back: raises when
# walking that many elements would cost more than the budget (see core.Expression).
produced: ContextVar[Callable[[int], None] | None] = ContextVar("produced", default=None)


class FunctionError(ValueError):
    """A function refused its arguments; the message says why, for the user."""


_FORMAT_VERB = re.compile(r"%(?:\.(\d+))?(.?)", re.DOTALL)
_VERBS = "sdfeEboxX%"


def format_string(template: str, args: list[Any]) -> str:
    """cel-go's ``'<template>'.format([args])``: %s %d %f %e %b %o %x %X, a precision as in
    %.2f, and %% for a percent sign. Lists and maps under %s read as JSON."""
    if not isinstance(args, list):
        raise FunctionError("format() takes a list of arguments, e.g. '%s-%d'.format([a, 1])")
    out: list[str] = []
    pos = used = 0
    for m in _FORMAT_VERB.finditer(template):
        out.append(template[pos : m.start()])
        pos = m.end()
        precision, verb = m.group(1), m.group(2)
        if not verb or verb not in _VERBS:
            raise FunctionError(
                f"format(): {m.group(0)!r} is not a verb; use %s %d %f %e %b %o %x %X, a "
                "precision as in %.2f, or %% for a percent sign"
            )
        if verb == "%":
            out.append("%")
            continue
        if used >= len(args):
            raise FunctionError(
                f"format(): {template!r} has more verbs than the {len(args)} argument(s) given"
            )
        out.append(_verb(verb, precision, args[used]))
        used += 1
    out.append(template[pos:])
    if used != len(args):
        raise FunctionError(f"format(): {len(args)} arguments given, {used} used by {template!r}")
    return "".join(out)


def _verb(verb: str, precision: str | None, value: Any) -> str:
    if verb == "s":
        return render_scalar(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FunctionError(f"format(): %{verb} needs a number, got {type(value).__name__}")
    if verb in "fe" or verb == "E":
        digits = int(precision) if precision is not None else 6
        return f"{float(value):.{digits}{verb}}"
    if not isinstance(value, int):
        raise FunctionError(f"format(): %{verb} needs an int, got a double")
    spec = {"d": "d", "b": "b", "o": "o", "x": "x", "X": "X"}[verb]
    return format(value, spec)


def lists_range(n: int) -> list[int]:
    """cel-go's ``lists.range(n)``: [0, 1, ..., n-1] (Argo's withSequence count)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise FunctionError(f"lists.range() takes an int, got {type(n).__name__}")
    if n < 0 or n > MAX_LIST:
        raise FunctionError(f"lists.range({n}): n must be between 0 and {MAX_LIST}")
    return list(range(n))


def _bounded(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        result = fn(*args)
        if isinstance(result, str) and len(result) > MAX_STRING:
            raise FunctionError(f"{name}() would make a string over {MAX_STRING} characters")
        if isinstance(result, list | tuple):
            if len(result) > MAX_LIST:
                raise FunctionError(f"{name}() would make a list over {MAX_LIST} elements")
            check = produced.get()
            if check is not None:
                check(len(result))
        return result

    call.__name__ = name
    return call


# The core language's own functions (cel-rust): known, and not registered here.
BUILTIN = frozenset(
    {
        "size", "contains", "startsWith", "endsWith", "matches", "int", "uint", "double",
        "string", "bytes", "duration", "timestamp", "dyn", "type", "getDate", "getDayOfMonth",
        "getDayOfWeek", "getDayOfYear", "getFullYear", "getHours", "getMilliseconds",
        "getMinutes", "getMonth", "getSeconds", "of", "none", "ofNonZeroValue", "orValue",
        "hasValue", "value", "or",
    }
)  # fmt: skip

_EXCLUDED = frozenset({"contains"})  # the native string contains() stays native

EXTENSIONS: Mapping[str, Callable[..., Any]] = {
    **{
        name: _bounded(name, fn)
        for name, fn in stdlib.STDLIB_FUNCTIONS.items()
        if name not in _EXCLUDED
    },
    "format": _bounded("format", format_string),
    "lists.range": _bounded("lists.range", lists_range),
}
NAMESPACES = frozenset(name.split(".", 1)[0] for name in EXTENSIONS if "." in name)
# What the parser reports for a call: the last part of a namespaced name (math.greatest ->
# greatest); a name may stand for several functions (reverse: strings and lists).
_BY_CALL: dict[str, tuple[str, ...]] = {}
for _name in EXTENSIONS:
    _BY_CALL[_name.rsplit(".", 1)[-1]] = (*_BY_CALL.get(_name.rsplit(".", 1)[-1], ()), _name)


def used(calls: list[str]) -> tuple[tuple[str, Callable[..., Any]], ...]:
    """The extension functions a program calls (by the names the parser reports)."""
    return tuple((full, EXTENSIONS[full]) for call in calls for full in _BY_CALL.get(call, ()))


def unknown(calls: list[str]) -> list[str]:
    """Called names that are neither CEL's own nor an extension (operators excluded)."""
    return [
        c
        for c in calls
        if re.fullmatch(r"[A-Za-z_]\w*", c) and c not in BUILTIN and c not in _BY_CALL
    ]


def documented() -> list[str]:
    """Every extension function, for error messages and the README."""
    return sorted(EXTENSIONS)

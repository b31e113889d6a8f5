"""``${{ <CEL> }}`` templates: strings with expressions in them, and JSON values whose string
leaves are templates (webhook bodies).

An interpolation ends at the first ``}}`` outside the expression's own string literals and
braces, so ``${{ {'a': {'b': 1}} }}`` and ``${{ 'a }} b' }}`` are one expression each. ``$${{``
is a literal ``${{`` (nothing is evaluated).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from braid.expressions.core import Expression, ExpressionError, compile_expression
from braid.expressions.values import render_scalar

OPEN, ESCAPED_OPEN, CLOSE = "${{", "$${{", "}}"


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
    """Split ``source`` into literal text and compiled expressions; raises ExpressionError
    naming ``path`` for an empty or unterminated interpolation or an invalid expression."""
    parts: list[str | Expression] = []
    text: list[str] = []
    pos = 0
    while (found := source.find(OPEN, pos)) >= 0:
        if found > 0 and source[found - 1] == "$":  # $${{ is a literal ${{
            text.append(source[pos : found - 1] + OPEN)
            pos = found + len(OPEN)
            continue
        text.append(source[pos:found])
        end = expression_end(source, found + len(OPEN))
        if end is None:
            raise ExpressionError(
                path,
                source,
                "unterminated ${{ interpolation; close it with }} (or write $${{ "
                "for a literal ${{)",
            )
        inner = source[found + len(OPEN) : end].strip()
        if not inner:
            raise ExpressionError(path, source, "empty ${{ }} interpolation")
        if "".join(text):
            parts.append("".join(text))
        text = []
        parts.append(compile_expression(inner, path))
        pos = end + len(CLOSE)
    text.append(source[pos:])
    if "".join(text):
        parts.append("".join(text))
    return Template(source, path, tuple(parts))


def expression_end(source: str, start: int) -> int | None:
    """Where the ``}}`` closing an interpolation stands: the first outside the expression's
    string literals and its own (map literal) braces. None when there is none."""
    depth, i, n = 0, start, len(source)
    while i < n:
        ch = source[i]
        if ch in "'\"":
            i = _string_end(source, i, _raw(source, i, start))
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            if depth == 0 and source.startswith(CLOSE, i):
                return i
            depth = max(depth - 1, 0)
        i += 1
    return None


def _raw(source: str, quote: int, start: int) -> bool:
    """A string literal prefixed r or R (possibly with b): backslashes are not escapes."""
    prefix = source[max(start, quote - 2) : quote]
    return "r" in prefix.lower()


def _string_end(source: str, i: int, raw: bool) -> int:
    quote = source[i]
    delimiter = quote * 3 if source.startswith(quote * 3, i) else quote
    j, n = i + len(delimiter), len(source)
    while j < n:
        if not raw and source[j] == "\\":
            j += 2
            continue
        if source.startswith(delimiter, j):
            return j + len(delimiter)
        j += 1
    return n  # unterminated string: the interpolation is unterminated too


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

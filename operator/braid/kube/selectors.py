"""Equality-based label selectors, as a shard of the operator uses them: ``k=v``, ``k==v``,
``k!=v``, ``k`` (exists) and ``!k`` (does not), joined by commas."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

_KEY = r"([A-Za-z0-9][-A-Za-z0-9_./]*)"
_TERM = re.compile(rf"^\s*(!?){_KEY}\s*(?:(==|=|!=)\s*([-A-Za-z0-9_.]*))?\s*$")

Matcher = Callable[[Mapping[str, str]], bool]


def selector_keys(text: str) -> frozenset[str]:
    """The label keys a selector reads (runs pass these on to their pods)."""
    parse_selector(text)
    return frozenset(
        m.group(2) for term in text.split(",") if (m := _TERM.match(term)) and text.strip()
    )


def parse_selector(text: str) -> Matcher:
    """A predicate on labels; raises ValueError naming the term it cannot read."""
    tests: list[Matcher] = []
    for term in text.split(",") if text.strip() else []:
        m = _TERM.match(term)
        if m is None or (m.group(1) and m.group(3)):
            raise ValueError(
                f"--selector: cannot read {term.strip()!r}; use key=value, key!=value, key or !key"
            )
        tests.append(_test(bool(m.group(1)), m.group(2), m.group(3), m.group(4)))
    return lambda labels: all(test(labels) for test in tests)


def _test(negate: bool, key: str, op: str | None, value: str | None) -> Matcher:
    def test(labels: Mapping[str, str]) -> bool:
        if op in ("=", "=="):
            return labels.get(key) == value
        if op == "!=":
            return labels.get(key) != value
        return (key in labels) != negate

    return test

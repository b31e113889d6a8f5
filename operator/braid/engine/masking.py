"""Secret values kept out of what Braid shows: the drivers (operator, local runner, webhook
calls) mask every value they read from a Secret in an attempt's result before the engine sees
it, so it never reaches a status, an Event, a log line, an analysis or ``braid run``'s output.
As CI systems do: each occurrence becomes ``***``. Values shorter than MIN_MASKED are not
masked (masking "1" everywhere would hide everything and protect nothing); each line of a
multi-line value is masked on its own too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from braid.engine.actions import AttemptResult, HTTPResponse

MASK = "***"
MIN_MASKED = 4


@dataclass(frozen=True)
class Masker:
    values: tuple[str, ...] = ()

    @classmethod
    def of(cls, secrets: Iterable[str]) -> Masker:
        found: set[str] = set()
        for value in secrets:
            for part in (value, *value.splitlines()):
                # As written, and as it reads inside JSON text (quotes, newlines escaped).
                for form in (part.strip("\r"), json.dumps(part)[1:-1]):
                    if len(form) >= MIN_MASKED:
                        found.add(form)
        # Longest first: a value containing another is masked whole.
        return cls(tuple(sorted(found, key=len, reverse=True)))

    def __bool__(self) -> bool:
        return bool(self.values)

    def text(self, text: str | None) -> str | None:
        if text is None or not self.values:
            return text
        for value in self.values:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def json(self, value: Any) -> Any:
        """Every string in a JSON value (keys too) masked."""
        if not self.values:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.json(v) for v in value]
        if isinstance(value, dict):
            return {self.text(str(k)): self.json(v) for k, v in value.items()}
        return value

    def result(self, result: AttemptResult) -> AttemptResult:
        """An attempt's result with the values masked wherever they could show."""
        if not self.values:
            return result
        response = result.response
        if response is not None:
            response = HTTPResponse(
                response.status,
                {k: self.text(v) or "" for k, v in response.headers.items()},
                self.json(response.body),
            )
        return replace(
            result,
            output=self.text(result.output),
            message=self.text(result.message),
            error=self.text(result.error),
            response=response,
        )

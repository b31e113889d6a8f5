"""Errors that name the field path and say what would be valid."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError


@dataclass(frozen=True)
class FieldError:
    """One problem with one field, e.g. ``spec.steps[3].when: ...``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidSpecError(ValueError):
    """A manifest or run input is invalid; carries every problem found, not just the first."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


def join_path(prefix: str, loc: Iterable[str | int]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else part
    return path


_PATTERN_HINTS = {
    "^[a-z][a-z0-9]*(-[a-z0-9]+)*$": "must be a lowercase DNS label: a-z, 0-9 and single '-', "
    "starting with a letter and not ending with '-' (e.g. fetch-data)",
    "^[A-Za-z_][A-Za-z0-9_]*$": "must be an identifier: letters, digits and '_', not starting "
    "with a digit (e.g. max_items)",
}


def _describe(err: dict[str, object]) -> str:
    kind = str(err.get("type", ""))
    msg = str(err.get("msg", "invalid value"))
    if kind == "extra_forbidden":
        return "unknown field; check the spelling against `kubectl explain` or the README"
    if kind == "missing":
        return "required field is missing"
    if kind in {"literal_error", "enum"}:
        return msg.replace("Input should be", "must be")
    if kind == "string_pattern_mismatch":
        pattern = str(dict(err.get("ctx") or {}).get("pattern", ""))  # type: ignore[call-overload]
        return _PATTERN_HINTS.get(pattern, f"must match the pattern {pattern}")
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    return msg.replace("Input should be", "must be")


def from_validation_error(exc: ValidationError, prefix: str = "") -> InvalidSpecError:
    """Turn pydantic's error list into field-path errors users can act on."""
    errors: list[FieldError] = []
    for err in exc.errors():
        # Tagged-union style locations ("function-after[...]") are internal, not field names.
        loc = [p for p in err["loc"] if not (isinstance(p, str) and "[" in p)]
        errors.append(FieldError(join_path(prefix, loc), _describe(dict(err))))
    return InvalidSpecError(errors)

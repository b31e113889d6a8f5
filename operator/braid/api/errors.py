"""Errors that name the field path and say what would be valid."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError


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


def from_validation_error(
    exc: ValidationError, prefix: str = "", model: type[BaseModel] | None = None
) -> InvalidSpecError:
    """Turn pydantic's error list into field-path errors users can act on; with the
    ``model`` validated, an unknown field gets a "did you mean" from the fields there."""
    errors: list[FieldError] = []
    for err in exc.errors():
        # Tagged-union style locations ("function-after[...]") are internal, not field names.
        loc = [p for p in err["loc"] if not (isinstance(p, str) and "[" in p)]
        message = _describe(dict(err))
        if err["type"] == "extra_forbidden" and model is not None and loc:
            known = known_fields(model, loc[:-1])
            if known:
                message = f"unknown field{did_you_mean(str(loc[-1]), known, 'fields here')}"
        errors.append(FieldError(join_path(prefix, loc), message))
    return InvalidSpecError(errors)


def did_you_mean(given: str, known: Iterable[str], listing: str = "known") -> str:
    """' (did you mean "x"?)' when one of ``known`` is close, else '; <listing>: a, b'."""
    names = sorted(set(known))
    close = difflib.get_close_matches(given, names, n=1, cutoff=0.6)
    if close:
        return f' (did you mean "{close[0]}"?)'
    return f"; {listing}: {', '.join(names) or 'none'}"


def known_fields(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The field names (as written in YAML) of the object at ``loc`` inside ``model``."""
    kind: Any = model
    for part in loc:
        kind = _unwrapped(kind)
        origin = typing.get_origin(kind)
        if isinstance(part, int) and origin is list:
            kind = typing.get_args(kind)[0]
        elif origin is dict:
            kind = typing.get_args(kind)[1]
        elif isinstance(kind, type) and issubclass(kind, BaseModel):
            field = next((f for n, f in kind.model_fields.items() if part in (n, f.alias)), None)
            if field is None:
                return []
            kind = field.annotation
        else:
            return []
    kind = _unwrapped(kind)
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return [f.alias or n for n, f in kind.model_fields.items()]
    return []


def _unwrapped(kind: Any) -> Any:
    """X from X | None and Annotated[X, ...]."""
    while True:
        origin = typing.get_origin(kind)
        if origin is typing.Annotated:
            kind = typing.get_args(kind)[0]
        elif origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(kind) if a is not type(None)]
            if len(options) != 1:
                return kind
            kind = options[0]
        else:
            return kind

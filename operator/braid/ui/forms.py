"""The start-a-run form, generated from the workflow's params and their JSON Schemas, and the
params read back from what was typed. Pure. The values are judged by the same
``resolve_params`` the operator and ``braid run`` use, so the form shows the operator's own
words, naming the param (``params.count: 0 is less than the minimum of 1 …``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from braid.api.errors import InvalidSpecError
from braid.api.workflow import ParamSpec, WorkflowSpec
from braid.engine.params import resolve_params


@dataclass(frozen=True)
class Field:
    name: str
    widget: str  # text | number | integer | boolean | select | json
    label: str
    help: str
    required: bool
    default: str  # shown as the placeholder
    choices: tuple[str, ...] = ()
    value: str = ""
    error: str = ""


def _type(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    return kind if isinstance(kind, str) else ""


def _widget(param: ParamSpec) -> tuple[str, tuple[str, ...]]:
    schema = param.schema_ or {}
    if isinstance(schema.get("enum"), list) and all(
        isinstance(v, str | int | float | bool) for v in schema["enum"]
    ):
        return "select", tuple(
            json.dumps(v) if not isinstance(v, str) else v for v in schema["enum"]
        )
    kind = _type(schema)
    if kind in ("integer", "number", "boolean"):
        return kind, ()
    if kind == "string" or (not kind and isinstance(param.default, str)):
        return "text", ()
    return "json", ()


def _shown(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def fields(
    spec: WorkflowSpec, typed: dict[str, str] | None = None, errors: dict[str, str] | None = None
) -> list[Field]:
    typed, errors = typed or {}, errors or {}
    out = []
    for param in spec.param_specs():
        widget, choices = _widget(param)
        schema = param.schema_ or {}
        hints = [
            param.description or "",
            *(f"{k}: {v}" for k, v in schema.items() if k not in ("type", "description", "enum")),
        ]
        out.append(
            Field(
                name=param.name,
                widget=widget,
                label=param.name + (f" ({_type(schema)})" if _type(schema) else ""),
                help="; ".join(h for h in hints if h),
                required=param.default is None,
                default=_shown(param.default),
                choices=choices,
                value=typed.get(param.name, ""),
                error=errors.get(param.name, ""),
            )
        )
    return out


def _choice(schema: dict[str, Any], raw: str) -> Any:
    for v in schema["enum"]:
        if (v if isinstance(v, str) else json.dumps(v)) == raw:
            return v
    raise ValueError(f"{raw!r} is not one of {', '.join(map(json.dumps, schema['enum']))}")


def _integer(_: dict[str, Any], raw: str) -> Any:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not an integer") from None


def _number(_: dict[str, Any], raw: str) -> Any:
    try:
        number = float(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a number") from None
    return int(number) if number.is_integer() and "." not in raw else number


def _boolean(_: dict[str, Any], raw: str) -> Any:
    if raw in ("true", "false"):
        return raw == "true"
    raise ValueError(f"{raw!r} is not true or false")


def _json(_: dict[str, Any], raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None


_READERS = {
    "text": lambda _, raw: raw,
    "select": _choice,
    "integer": _integer,
    "number": _number,
    "boolean": _boolean,
    "json": _json,
}


def _value(param: ParamSpec, raw: str) -> Any:
    """What was typed, as the JSON value the schema judges. Raises ValueError naming why."""
    widget, _ = _widget(param)
    return _READERS[widget](param.schema_ or {}, raw)


def params_from(spec: WorkflowSpec, typed: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The params a run is created with (an empty field: the default applies) and, per
    param, what is wrong with what was typed. Both empty: a run with all defaults."""
    given: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for param in spec.param_specs():
        raw = typed.get(param.name, "").strip()
        if raw == "":
            continue
        try:
            given[param.name] = _value(param, raw)
        except ValueError as exc:
            errors[param.name] = f"params.{param.name}: {exc}"
    if errors:
        return given, errors
    try:
        resolve_params(spec, given, where="params")
    except InvalidSpecError as exc:
        for err in exc.errors:
            name = err.path.removeprefix("params.").split(".")[0].split("[")[0]
            errors.setdefault(name, "")
            errors[name] = "; ".join(e for e in (errors[name], f"{err.path}: {err.message}") if e)
    return given, errors

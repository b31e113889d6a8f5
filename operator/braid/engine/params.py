"""Resolving a run's params against the workflow's declarations."""

from __future__ import annotations

from typing import Any

from braid.api.errors import FieldError, InvalidSpecError
from braid.api.workflow import WorkflowSpec


def check_param_schemas(spec: WorkflowSpec) -> list[FieldError]:
    """Declared schemas must themselves be valid JSON Schema, and defaults must satisfy them."""
    errors: list[FieldError] = []
    for i, param in enumerate(spec.param_specs()):
        if param.schema_ is None:
            continue
        import jsonschema  # noqa: PLC0415 - loaded when a schema is checked, not at every start

        try:
            jsonschema.Draft202012Validator.check_schema(param.schema_)
        except jsonschema.SchemaError as exc:
            errors.append(
                FieldError(f"spec.params[{i}].schema", f"not a valid JSON Schema: {exc.message}")
            )
            continue
        if param.default is not None:
            errors.extend(
                FieldError(
                    f"spec.params[{i}].default", f"does not satisfy the param's schema: {e.message}"
                )
                for e in jsonschema.Draft202012Validator(param.schema_).iter_errors(param.default)
            )
    return errors


def resolve_params(
    spec: WorkflowSpec, given: dict[str, Any] | None, where: str = "spec.params"
) -> dict[str, Any]:
    """Defaults applied, every value checked; raises InvalidSpecError naming ``<where>.<name>``."""
    given = dict(given or {})
    errors: list[FieldError] = []
    declared = {p.name: p for p in spec.param_specs()}
    resolved: dict[str, Any] = {}
    for name in sorted(set(given) - set(declared)):
        valid = ", ".join(sorted(declared)) or "none are declared"
        errors.append(FieldError(f"{where}.{name}", f"unknown param; declared params: {valid}"))
    for name, param in declared.items():
        if name in given:
            value = given[name]
        elif param.default is not None:
            value = param.default
        else:
            hint = f" ({param.description})" if param.description else ""
            errors.append(FieldError(f"{where}.{name}", f"required param is missing{hint}"))
            continue
        if param.schema_ is not None:
            import jsonschema  # noqa: PLC0415 - loaded when a schema is checked, not at every start

            for err in sorted(
                jsonschema.Draft202012Validator(param.schema_).iter_errors(value), key=str
            ):
                sub = "".join(
                    f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path
                )
                errors.append(
                    FieldError(
                        f"{where}.{name}{sub}", f"{err.message} (schema: {_brief(err.schema)})"
                    )
                )
        resolved[name] = value
    if errors:
        raise InvalidSpecError(errors)
    return resolved


def _brief(schema: Any) -> str:
    if isinstance(schema, dict):
        return ", ".join(f"{k}={v}" for k, v in schema.items() if k != "description")
    return str(schema)

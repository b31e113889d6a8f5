"""Reading Workflow and WorkflowRun manifests from YAML text."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import ValidationError

from braid.api.errors import FieldError, InvalidSpecError, from_validation_error
from braid.api.run import WorkflowRun
from braid.api.workflow import Workflow

Manifest = Workflow | WorkflowRun

_KINDS: dict[str, type[Workflow | WorkflowRun]] = {
    "Workflow": Workflow,
    "WorkflowRun": WorkflowRun,
}


def parse_object(obj: Any, where: str = "") -> Manifest:
    """Validate one decoded manifest; errors carry paths such as ``spec.steps[2].when``."""
    if not isinstance(obj, dict):
        raise InvalidSpecError([FieldError(where, "a manifest must be a YAML mapping")])
    kind = obj.get("kind")
    model = _KINDS.get(str(kind))
    if model is None:
        raise InvalidSpecError(
            [FieldError(f"{where}kind", f"must be Workflow or WorkflowRun, got {kind!r}")]
        )
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise from_validation_error(exc, where.rstrip(".")) from None


def parse_documents(text: str) -> list[Manifest]:
    """Every manifest in a (multi-document) YAML text."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise InvalidSpecError([FieldError("", f"not valid YAML: {exc}")]) from None
    if not docs:
        raise InvalidSpecError([FieldError("", "no manifest found")])
    errors: list[FieldError] = []
    out: list[Manifest] = []
    for i, doc in enumerate(docs):
        where = f"document[{i}]." if len(docs) > 1 else ""
        try:
            out.append(parse_object(doc, where))
        except InvalidSpecError as exc:
            errors.extend(exc.errors)
    if errors:
        raise InvalidSpecError(errors)
    return out

"""Reading Workflow and WorkflowRun manifests from YAML text."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from pydantic import ValidationError

from braid.api.errors import FieldError, InvalidSpecError, from_validation_error
from braid.api.run import WorkflowRun
from braid.api.schedule import WorkflowSchedule
from braid.api.workflow import Workflow

Manifest = Workflow | WorkflowRun | WorkflowSchedule

_KINDS: dict[str, type[Workflow | WorkflowRun | WorkflowSchedule]] = {
    "Workflow": Workflow,
    "WorkflowRun": WorkflowRun,
    "WorkflowSchedule": WorkflowSchedule,
}


MAX_DEPTH = 64


def too_deep(obj: Any, limit: int = MAX_DEPTH) -> str | None:
    """The path of the first value nested deeper than ``limit`` (hostile input), if any."""
    stack: list[tuple[Any, str, int]] = [(obj, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > limit:
            return path
        if isinstance(value, dict):
            stack.extend(
                (v, f"{path}.{k}" if path else str(k), depth + 1) for k, v in value.items()
            )
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value))
    return None


def check_depth(obj: Any, where: str = "") -> None:
    """Refuse hostile nesting before anything recursive (validation, JSON encoding) sees it."""
    deep = too_deep(obj)
    if deep is not None:
        head = ".".join(deep.split(".")[:4])
        raise InvalidSpecError(
            [FieldError(f"{where}{head}", f"nested deeper than {MAX_DEPTH} levels")]
        )


def parse_object(obj: Any, where: str = "") -> Manifest:
    """Validate one decoded manifest; errors carry paths such as ``spec.steps[2].when``."""
    if not isinstance(obj, dict):
        raise InvalidSpecError([FieldError(where, "a manifest must be a YAML mapping")])
    check_depth(obj, where)
    kind = obj.get("kind")
    model = _KINDS.get(str(kind))
    if model is None:
        got = "it is missing" if kind is None else f"got {kind!r}"
        raise InvalidSpecError(
            [
                FieldError(
                    f"{where}kind", f"must be Workflow, WorkflowRun or WorkflowSchedule; {got}"
                )
            ]
        )
    errors = _identity_errors(obj, str(kind), where)
    if errors:
        raise InvalidSpecError(errors)
    try:
        # Strict JSON mode, as the API server types values: true is not an integer and "5" is
        # not a number (lax mode would take both).
        return model.model_validate_json(json.dumps(obj, default=str), strict=True)
    except ValidationError as exc:
        raise from_validation_error(exc, where.rstrip("."), model) from None


API_VERSION = "braid.dev/v1alpha1"
# A DNS-1123 subdomain, as the API server requires of every object's name.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# A run's pods are named <run>-<loop>--<iteration>-<body>-<attempt> at the longest: step names
# take up to 2 x 40 characters, so a run name over this leaves no room in 253.
RUN_NAME_MAX = 160


def _identity_errors(obj: dict[str, Any], kind: str, where: str) -> list[FieldError]:
    """apiVersion and metadata.name, checked before the API server (or a pod name) would."""
    errors = []
    version = obj.get("apiVersion")
    if version != API_VERSION:
        got = "it is missing" if version is None else f"got {version!r}"
        errors.append(FieldError(f"{where}apiVersion", f"must be {API_VERSION}; {got}"))
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    name = meta.get("name")
    limit = RUN_NAME_MAX if kind == "WorkflowRun" else 253
    if name is None or name == "":
        if kind == "Workflow" or not meta.get("generateName"):
            also = " (or metadata.generateName)" if kind == "WorkflowRun" else ""
            errors.append(FieldError(f"{where}metadata.name", f"required{also}"))
    elif not isinstance(name, str) or not _NAME.match(name) or len(name) > limit:
        errors.append(
            FieldError(
                f"{where}metadata.name",
                f"{name!r} is not a valid name: lowercase letters, digits, '-' and '.', "
                f"starting and ending with a letter or digit, at most {limit} characters",
            )
        )
    return errors


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

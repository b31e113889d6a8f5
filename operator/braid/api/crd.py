"""CustomResourceDefinitions rendered from the models, so the API server and ``kubectl explain``
say exactly what the models say.

The pydantic JSON Schema is turned into a structural OpenAPI v3 schema: references inlined,
nullable unions collapsed, free-form JSON marked ``x-kubernetes-preserve-unknown-fields``, and
the models' ``x-kubernetes-validations`` (CEL) carried over.
"""

from __future__ import annotations

from typing import Any

import yaml

from braid.api.analysis import WorkflowStatus
from braid.api.common import GROUP, VERSION
from braid.api.run import WorkflowRunSpec, WorkflowRunStatus
from braid.api.schedule import WorkflowScheduleSpec, WorkflowScheduleStatus
from braid.api.workflow import WorkflowSpec

_DROP = {"title", "default", "examples"}
# The API server multiplies a CEL rule's cost by the maxItems of every list around it, and
# refuses a schema whose rules cost too much in total. Rules nested in more lists than this
# (e.g. the env of a loop body's fan-out case) are left to lint and the operator's admission,
# which check every rule of the models anyway.
MAX_RULE_LIST_DEPTH = 2


def _inline(node: Any, defs: dict[str, Any], stack: tuple[str, ...] = ()) -> Any:
    if isinstance(node, list):
        return [_inline(n, defs, stack) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        if name in stack:
            raise ValueError(f"recursive schema through {name}: structural schemas cannot recurse")
        target = _inline(defs[name], defs, (*stack, name))
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return {**target, **extra}
    return {k: _inline(v, defs, stack) for k, v in node.items() if k != "$defs"}


def _structural(node: Any) -> Any:
    """Rewrite one inlined JSON Schema node into the Kubernetes structural dialect."""
    if not isinstance(node, dict):
        return node
    node = {k: v for k, v in node.items() if k not in _DROP}
    if "anyOf" in node:
        return _collapse(node)
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_keyword(key, value))
    return _typed(out)


def _collapse(node: dict[str, Any]) -> Any:
    """``X | None`` is X (absent means null); any other union is free-form JSON."""
    options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
    if len(options) == 1:
        merged = {**options[0], **node}
        if "description" in node:
            merged["description"] = node["description"]
        return _structural(merged)
    return _structural({**node, "x-kubernetes-preserve-unknown-fields": True})


def _keyword(key: str, value: Any) -> dict[str, Any]:  # noqa: PLR0911 - one return per keyword
    """One JSON Schema keyword as the structural dialect says it."""
    if key == "properties":
        return {key: {k: _structural(v) for k, v in value.items()}}
    if key == "items":
        return {key: _structural(value)}
    if key == "additionalProperties":
        if value is True or value == {}:
            return {"x-kubernetes-preserve-unknown-fields": True}
        return {key: _structural(value)} if value is not False else {}
    if key == "exclusiveMinimum":
        return {"minimum": value, "exclusiveMinimum": True}
    if key == "exclusiveMaximum":
        return {"maximum": value, "exclusiveMaximum": True}
    if key == "const":
        return {"enum": [value]}
    return {key: value}


def _typed(out: dict[str, Any]) -> dict[str, Any]:
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "type" not in out and "x-kubernetes-preserve-unknown-fields" not in out:
        # A field typed Any: any JSON value, kept as written.
        out["x-kubernetes-preserve-unknown-fields"] = True
    if (
        out.get("type") == "object"
        and "properties" not in out
        and "additionalProperties" not in out
    ):
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def schema_of(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    result: dict[str, Any] = _affordable(_structural(_inline(raw, defs)))
    return result


def _affordable(node: Any, lists: int = 0) -> Any:
    """The schema without the CEL rules nested deeper than MAX_RULE_LIST_DEPTH lists."""
    if isinstance(node, list):
        return [_affordable(n, lists) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "x-kubernetes-validations" and lists > MAX_RULE_LIST_DEPTH:
            continue
        out[key] = _affordable(value, lists + (key == "items"))
    return out


def _free_form(description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "x-kubernetes-preserve-unknown-fields": True,
    }


def _crd(
    kind: str,
    plural: str,
    short_names: list[str],
    description: str,
    spec: dict[str, Any],
    status: dict[str, Any],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "braid"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["braid"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {
                                    "type": "string",
                                    "description": "braid.dev/v1alpha1",
                                },
                                "kind": {"type": "string", "description": kind},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def workflow_crd() -> dict[str, Any]:
    return _crd(
        "Workflow",
        "workflows",
        ["bwf", "braidwf"],
        "A reusable agentic workflow: steps, their order and the rules they run under. "
        "Start it by creating a WorkflowRun.",
        schema_of(WorkflowSpec),
        schema_of(WorkflowStatus),
        [
            {
                "name": "Description",
                "type": "string",
                "jsonPath": ".spec.description",
                "priority": 1,
            },
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def workflow_run_crd() -> dict[str, Any]:
    status = schema_of(WorkflowRunStatus)
    # The snapshot is a copy of a spec the API server already validated; keeping it free-form
    # halves the CRD's size (kubectl apply stores the CRD in an annotation of at most 256 KiB).
    status["properties"]["workflowSpec"] = _free_form(
        "The workflow spec snapshotted when the run started; later edits of the Workflow do not "
        "change a running run."
    )
    return _crd(
        "WorkflowRun",
        "workflowruns",
        ["bwr", "braidrun"],
        "One execution of a workflow. Its status says what happened: conditions (Succeeded, "
        "ApprovalPending, SLABreached), per-step status and outputs.",
        schema_of(WorkflowRunSpec),
        status,
        [
            {"name": "Workflow", "type": "string", "jsonPath": ".spec.workflowRef.name"},
            {
                "name": "Succeeded",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Succeeded")].status',
            },
            {
                "name": "Reason",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Succeeded")].reason',
            },
            {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
            {"name": "Start", "type": "date", "jsonPath": ".status.startTime"},
            {"name": "Duration", "type": "string", "jsonPath": ".status.duration"},
            {
                "name": "Approval",
                "type": "string",
                "priority": 1,
                "jsonPath": '.status.conditions[?(@.type=="ApprovalPending")].message',
            },
            {"name": "Parent", "type": "string", "priority": 1, "jsonPath": ".status.parent.run"},
        ],
    )


def workflow_schedule_crd() -> dict[str, Any]:
    return _crd(
        "WorkflowSchedule",
        "workflowschedules",
        ["bws", "braidws"],
        "Runs of a workflow started on cron schedules (Argo's CronWorkflow).",
        schema_of(WorkflowScheduleSpec),
        schema_of(WorkflowScheduleStatus),
        [
            {"name": "Schedules", "type": "string", "jsonPath": ".spec.schedules"},
            {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend"},
            {"name": "Last", "type": "date", "jsonPath": ".status.lastScheduleTime"},
            {"name": "Next", "type": "string", "jsonPath": ".status.nextScheduleTime"},
            {"name": "Last Run", "type": "string", "jsonPath": ".status.lastRun"},
            {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
        ],
    )


def render_crds() -> dict[str, str]:
    """File name -> YAML text of every CRD."""
    out = {}
    for crd in (workflow_crd(), workflow_run_crd(), workflow_schedule_crd()):
        text = yaml.safe_dump(crd, sort_keys=False, width=100, allow_unicode=True)
        out[f"{crd['metadata']['name']}.yaml"] = (
            "# Generated by `braid crds`; do not edit.\n" + text
        )
    return out


def iter_validations(schema: Any, path: str = "") -> list[tuple[str, dict[str, str]]]:
    """Every x-kubernetes-validations rule in a schema, with where it sits (for tests)."""
    found: list[tuple[str, dict[str, str]]] = []
    if isinstance(schema, dict):
        found.extend((path, rule) for rule in schema.get("x-kubernetes-validations", []))
        for key, value in schema.items():
            if key == "properties":
                for name, sub in value.items():
                    found.extend(iter_validations(sub, f"{path}.{name}"))
            elif key in ("items", "additionalProperties"):
                found.extend(iter_validations(value, f"{path}[]"))
    return found

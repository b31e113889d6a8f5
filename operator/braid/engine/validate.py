"""Whole-manifest validation, shared by ``braid lint``, ``braid run`` and the operator."""

from __future__ import annotations

from collections.abc import Sequence

from braid.api.errors import FieldError, InvalidSpecError
from braid.api.manifests import Manifest
from braid.api.run import WorkflowRun
from braid.api.workflow import Workflow, WorkflowSpec
from braid.engine.params import check_param_schemas, resolve_params
from braid.engine.plan import compile_plan


def validate_workflow(spec: WorkflowSpec) -> list[FieldError]:
    """Every problem with a workflow spec; paths start at ``spec``."""
    errors = check_param_schemas(spec)
    try:
        compile_plan(spec)
    except InvalidSpecError as exc:
        errors.extend(exc.errors)
    return errors


def resolve_run_spec(run: WorkflowRun, workflows: Sequence[Workflow]) -> WorkflowSpec:
    """The workflow a run would start with: inline, or the referenced Workflow's spec."""
    if run.spec.workflow is not None:
        return run.spec.workflow
    assert run.spec.workflow_ref is not None
    name = run.spec.workflow_ref.name
    for wf in workflows:
        if wf.metadata.name == name:
            return wf.spec
    known = ", ".join(w.metadata.name for w in workflows) or "none given"
    raise InvalidSpecError(
        [FieldError("spec.workflowRef.name", f"no Workflow named {name!r} (known: {known})")]
    )


def validate_manifests(manifests: Sequence[Manifest]) -> list[FieldError]:
    """Every problem in a set of manifests; runs are checked against the Workflows given."""
    workflows = [m for m in manifests if isinstance(m, Workflow)]
    errors: list[FieldError] = []
    for i, manifest in enumerate(manifests):
        where = f"document[{i}]." if len(manifests) > 1 else ""
        if isinstance(manifest, Workflow):
            errors.extend(_place(e, where) for e in validate_workflow(manifest.spec))
            continue
        try:
            spec = resolve_run_spec(manifest, workflows)
        except InvalidSpecError as exc:
            if not workflows:
                continue  # the Workflow lives in a cluster; nothing here to check against
            errors.extend(_place(e, where) for e in exc.errors)
            continue
        if manifest.spec.workflow is not None:
            errors.extend(_place(e, where, inline=True) for e in validate_workflow(spec))
        try:
            resolve_params(spec, manifest.spec.params, "spec.params")
        except InvalidSpecError as exc:
            errors.extend(_place(e, where) for e in exc.errors)
    return errors


def _place(error: FieldError, where: str, *, inline: bool = False) -> FieldError:
    path = error.path
    if inline and (path == "spec" or path.startswith(("spec.", "spec["))):
        path = "spec.workflow" + path[len("spec") :]
    return FieldError(where + path, error.message)

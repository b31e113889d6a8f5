"""A run that has not started: its spec parsed, its workflow resolved (or its retry seeded from
the run it retries), validated under the operator's pod policy, its params checked. Raises
InvalidSpecError naming every problem; the run then fails before anything of it exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from braid.api.errors import FieldError, InvalidSpecError, from_validation_error
from braid.api.manifests import check_depth
from braid.api.podtemplate import PodPolicy
from braid.api.reasons import REQUESTED_BY
from braid.api.run import WorkflowRunSpec, WorkflowRunStatus
from braid.api.workflow import WorkflowSpec
from braid.engine import children, resolve_params
from braid.engine.retry import seed_status
from braid.engine.validate import validate_workflow
from braid.kube.client import Cluster

Offload = Callable[..., Any]  # runs a function in the engine's thread (EngineThread)


@dataclass
class Admission:
    cluster: Cluster
    engine: Offload
    pods: PodPolicy

    async def admit(
        self, run: dict[str, Any], status: WorkflowRunStatus, *, approvals_verified: bool
    ) -> tuple[WorkflowRunStatus, WorkflowSpec, dict[str, Any]]:
        """``approvals_verified``: the admission policy is enforced, so a retry's
        ``braid.dev/requested-by`` is the API server's word."""
        namespace = run["metadata"]["namespace"]
        try:
            check_depth(run.get("spec"), "spec.")
            parsed = await self.engine(WorkflowRunSpec.model_validate, run.get("spec") or {})
        except ValidationError as exc:
            raise from_validation_error(exc, "spec", WorkflowRunSpec) from None
        if parsed.retry_of is not None:
            status = await self._seed_retry(run, parsed, approvals_verified)
        spec = status.workflow_spec or await self._resolve(parsed, namespace)
        spec = children.capped(spec, parsed.budget)  # a sub-workflow: its parent's budget left
        errors = await self.engine(validate_workflow, spec, self.pods, namespace)
        if errors:
            raise InvalidSpecError(errors)
        params = (
            status.params
            if status.params is not None
            else resolve_params(spec, parsed.params, "spec.params")
        )
        return status, spec, params

    async def _seed_retry(
        self, run: dict[str, Any], parsed: WorkflowRunSpec, verified: bool
    ) -> WorkflowRunStatus:
        retry = parsed.retry_of
        assert retry is not None
        namespace = run["metadata"]["namespace"]
        old = await self.cluster.get_run(namespace, retry.name)
        if old is None or not old.get("status"):
            raise _invalid(
                "spec.retryOf.name", f"no started run named {retry.name!r} in {namespace!r}"
            )
        previous = WorkflowRunStatus.model_validate(old["status"])
        if previous.workflow_spec is None:
            raise _invalid("spec.retryOf.name", f"run {retry.name!r} never started")
        same_workflow(parsed, old, previous)
        # Approvals are reused only for the person who gave them, as the API server vouches.
        annotations = run["metadata"].get("annotations") or {}
        requester = annotations.get(REQUESTED_BY) if verified else None
        return seed_status(previous, retry.name, retry.from_step, requester)

    async def _resolve(self, run: WorkflowRunSpec, namespace: str) -> WorkflowSpec:
        if run.workflow is not None:
            return run.workflow
        assert run.workflow_ref is not None
        ref = run.workflow_ref.name
        obj = await self.cluster.get_workflow(namespace, ref)
        if obj is None:
            raise _invalid(
                "spec.workflowRef.name", f"no Workflow named {ref!r} in namespace {namespace!r}"
            )
        try:
            check_depth(obj.get("spec"), f"Workflow {ref}: spec.")
            spec: WorkflowSpec = await self.engine(
                WorkflowSpec.model_validate, obj.get("spec") or {}
            )
        except ValidationError as exc:
            raise from_validation_error(exc, f"Workflow {ref}: spec", WorkflowSpec) from None
        return spec


def _invalid(path: str, message: str) -> InvalidSpecError:
    return InvalidSpecError([FieldError(path, message)])


def workflow_name(run: dict[str, Any]) -> str | None:
    ref = (run.get("spec") or {}).get("workflowRef")
    name = ref.get("name") if isinstance(ref, dict) else None
    return name if isinstance(name, str) else None


def same_workflow(
    parsed: WorkflowRunSpec, old: dict[str, Any], previous: WorkflowRunStatus
) -> None:
    """A retry runs the workflow of the run it retries, with that run's params."""
    old_ref = workflow_name(old)
    name = old["metadata"]["name"]
    assert previous.workflow_spec is not None
    if parsed.workflow_ref is not None and parsed.workflow_ref.name != old_ref:
        ran = f"Workflow {old_ref!r}" if old_ref else "an inline workflow"
        raise _invalid(
            "spec.workflowRef.name",
            f"a retry runs the workflow of the run it retries: {name!r} ran {ran}",
        )
    if parsed.workflow is not None and parsed.workflow.wire() != previous.workflow_spec.wire():
        raise _invalid(
            "spec.workflow",
            f"a retry runs the workflow of the run it retries: set it to {name!r}'s "
            "status.workflowSpec (kubectl braid retry does)",
        )
    if parsed.params is not None and parsed.params != (previous.params or {}):
        raise _invalid(
            "spec.params", f"a retry runs with the params of {name!r}; leave them out or copy them"
        )

"""Whole-manifest validation, shared by ``braid lint``, ``braid run`` and the operator."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import cast

from braid.api.errors import FieldError, InvalidSpecError
from braid.api.manifests import Manifest
from braid.api.podtemplate import PodPolicy, check_pod_template
from braid.api.run import WorkflowRun, WorkflowRunSpec
from braid.api.schedule import WorkflowSchedule
from braid.api.workflow import (
    ContainerSpec,
    LoopStep,
    Step,
    StepAction,
    SubWorkflowSpec,
    Workflow,
    WorkflowSpec,
)
from braid.engine import children
from braid.engine.compile import plan_for
from braid.engine.params import check_param_schemas, resolve_params


def validate_workflow(
    spec: WorkflowSpec, pods: PodPolicy | None = None, namespace: str | None = None
) -> list[FieldError]:
    """Every problem with a workflow spec; paths start at ``spec``. ``pods``: what the
    operator admits in podTemplates (default: restricted, no service accounts)."""
    errors = check_param_schemas(spec)
    try:
        plan_for(spec)  # cached: the operator validates every run it starts
    except InvalidSpecError as exc:
        errors.extend(exc.errors)
    errors.extend(pod_template_errors(spec, pods or PodPolicy(), namespace))
    return errors


def pod_template_errors(
    spec: WorkflowSpec, pods: PodPolicy, namespace: str | None = None
) -> list[FieldError]:
    """Every podTemplate of the workflow checked against the operator's pod policy."""
    errors: list[FieldError] = []
    for path, container in containers_of(spec):
        if container.pod_template is not None:
            errors += check_pod_template(
                container.pod_template, f"{path}.podTemplate", pods, namespace
            )
    return errors


def containers_of(spec: WorkflowSpec, root: str = "spec") -> Iterator[tuple[str, ContainerSpec]]:
    """Every container a run of ``spec`` may start, with its field path: fan-out cases, loop
    bodies and inline sub-workflows included."""
    for i, step in enumerate(spec.steps):
        path = f"{root}.steps[{i}]"
        yield from _own(step, path)
        yield from _action(step.compensation, f"{path}.compensation")
        for j, body in enumerate(step.loop.steps if step.loop else []):
            yield from _own(body, f"{path}.loop.steps[{j}]")
    for i, fin in enumerate(spec.finally_ or []):
        yield from _action(fin, f"{root}.finally[{i}]")


def _own(step: Step | LoopStep, path: str) -> Iterator[tuple[str, ContainerSpec]]:
    """A step's (or body step's) containers: its own, its fan-out's (and cases'), its
    circuit breaker's fallback's, and those of an inline sub-workflow."""
    if step.container is not None:
        yield f"{path}.container", step.container
    if step.circuit_breaker is not None:
        yield from _action(step.circuit_breaker.fallback, f"{path}.circuitBreaker.fallback")
    fan = step.fan_out
    if fan is not None:
        if fan.container is not None:
            yield f"{path}.fanOut.container", fan.container
        yield from _inline(fan.workflow, f"{path}.fanOut")
        for k, case in enumerate(fan.cases or []):
            if case.container is not None:
                yield f"{path}.fanOut.cases[{k}].container", case.container
            yield from _inline(case.workflow, f"{path}.fanOut.cases[{k}]")
    yield from _inline(step.workflow, path)


def _inline(sub: SubWorkflowSpec | None, path: str) -> Iterator[tuple[str, ContainerSpec]]:
    if sub is None or sub.spec is None:
        return
    where = f"{path}.workflow.spec"
    inline, _ = children.inline_spec(sub.spec, where)
    if inline is not None:
        yield from containers_of(inline, where)


def _action(a: StepAction | None, path: str) -> Iterator[tuple[str, ContainerSpec]]:
    if a is not None and a.container is not None:
        yield f"{path}.container", a.container


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


def validate_manifests(
    manifests: Sequence[Manifest], pods: PodPolicy | None = None
) -> list[FieldError]:
    """Every problem in a set of manifests; runs are checked against the Workflows given."""
    workflows = [m for m in manifests if isinstance(m, Workflow)]
    errors: list[FieldError] = []
    for i, given in enumerate(manifests):
        where = f"document[{i}]." if len(manifests) > 1 else ""
        if isinstance(given, Workflow):
            errors.extend(_place(e, where) for e in validate_workflow(given.spec, pods))
            continue
        if isinstance(given, WorkflowSchedule):
            # Its runs are checked as the run it makes (a schedule's errors say runTemplate).
            template = given.spec.run_template.spec
            manifest = WorkflowRun(spec=WorkflowRunSpec.model_validate(template.wire()))
            where += "spec.runTemplate."
        else:
            manifest = given
        try:
            spec = resolve_run_spec(manifest, workflows)
        except InvalidSpecError as exc:
            if not workflows:
                continue  # the Workflow lives in a cluster; nothing here to check against
            errors.extend(_place(e, where) for e in exc.errors)
            continue
        if manifest.spec.workflow is not None:
            errors.extend(_place(e, where, inline=True) for e in validate_workflow(spec, pods))
        try:
            resolve_params(spec, manifest.spec.params, "spec.params")
        except InvalidSpecError as exc:
            errors.extend(_place(e, where) for e in exc.errors)
    errors += _endless(manifests)
    return errors


def _endless(manifests: Sequence[Manifest]) -> list[FieldError]:
    """Sub-workflows recursing without end among the Workflows given (static references)."""
    index = {
        m.metadata.name: i
        for i, m in enumerate(manifests)
        if isinstance(m, Workflow) and m.metadata.name
    }
    named = {name: cast("Workflow", manifests[i]).spec for name, i in index.items()}
    out = []
    for name, error in children.endless(named):
        where = f"document[{index[name]}]." if len(manifests) > 1 else ""
        out.append(_place(error, where))
    return out


def manifest_warnings(manifests: Sequence[Manifest]) -> list[FieldError]:
    """What lint warns about in valid manifests (it runs, but may not do what was meant)."""
    out: list[FieldError] = []
    for i, manifest in enumerate(manifests):
        where = f"document[{i}]." if len(manifests) > 1 else ""
        if isinstance(manifest, WorkflowSchedule):
            spec = manifest.spec.run_template.spec.workflow
        else:
            spec = manifest.spec if isinstance(manifest, Workflow) else manifest.spec.workflow
        if spec is None:
            continue
        try:
            warnings = plan_for(spec).warnings
        except InvalidSpecError:
            continue  # reported as errors
        inline = not isinstance(manifest, Workflow)
        out += [_place(w, where, inline=inline) for w in warnings]
    return out


def _place(error: FieldError, where: str, *, inline: bool = False) -> FieldError:
    path = error.path
    if inline and (path == "spec" or path.startswith(("spec.", "spec["))):
        path = "spec.workflow" + path[len("spec") :]
    return FieldError(where + path, error.message)

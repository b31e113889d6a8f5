"""Step attempts as Pods, and Pods back as attempt results. Pure translation, no I/O."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from braid.api.common import API_VERSION
from braid.api.errors import FieldError
from braid.api.podtemplate import BRAID_LABEL_PREFIX, PodPolicy, check_pod_template
from braid.engine import AttemptResult, ContainerRequest, StartAttempt
from braid.kube.artifact_pods import (
    ArtifactSettings,
    add_artifacts,
    uses_artifacts,
    with_artifacts,
)

LABEL_WORKFLOW = "braid.dev/workflow"
LABEL_RUN = "braid.dev/run"
LABEL_STEP = "braid.dev/step"
LABEL_ATTEMPT = "braid.dev/attempt"
LABEL_ITEM = "braid.dev/item"
LABEL_ITERATION = "braid.dev/iteration"
LABEL_BODY_STEP = "braid.dev/body-step"
LABEL_ROLE = "braid.dev/role"
LABEL_CONCURRENCY_KEY = "braid.dev/concurrency-key"
TERMINATION_LOG = "/dev/termination-log"
CONTAINER = "step"

# Compatible with the "restricted" Pod Security Standard; a step's podTemplate may change these
# only as far as the operator's pod policy admits (braid.api.podtemplate).
_POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
_CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


class PodTemplateRefusedError(Exception):
    """The step's podTemplate is not admitted by the operator's pod policy."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep merge where ``override`` wins; lists are replaced, not concatenated."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def pod_for(
    request: StartAttempt,
    *,
    namespace: str,
    run_name: str,
    run_uid: str,
    workflow: str,
    inherited: dict[str, str] | None = None,
    policy: PodPolicy | None = None,
    artifacts: ArtifactSettings | None = None,
) -> dict[str, Any]:
    """The Pod of one container attempt: deterministic name, owned by the run. ``inherited``:
    run labels the pod carries too (a shard's selector keys, so it watches only its pods).

    Raises PodTemplateRefusedError when the step's podTemplate is not admitted by ``policy``
    (default: restricted, no service accounts); what is admitted is merged in, and Braid's own
    metadata wins whatever the template says."""
    container = request.container
    assert container is not None
    labels = _labels(request, run_name, workflow, inherited)
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": copy.deepcopy(_POD_SECURITY),
        "automountServiceAccountToken": False,
        "containers": [_main(container, run_name)],
    }
    if request.timeout_seconds:
        spec["activeDeadlineSeconds"] = request.timeout_seconds
    meta: dict[str, Any] = {"name": request.name, "namespace": namespace, "labels": labels}
    template = container.pod_template
    if template:
        errors = check_pod_template(template, "podTemplate", policy or PodPolicy(), namespace)
        if errors:
            raise PodTemplateRefusedError(errors)
        _apply_template(meta, spec, template)
    # Braid's own metadata wins, whatever a template said: name, namespace, labels, owner.
    meta.update(name=request.name, namespace=namespace)
    meta["labels"].update(labels)
    meta["ownerReferences"] = [
        {
            "apiVersion": API_VERSION,
            "kind": "WorkflowRun",
            "name": run_name,
            "uid": run_uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
    if artifacts is not None and uses_artifacts(request):
        add_artifacts(pod, request, artifacts, run_name)
    return pod


def _labels(
    request: StartAttempt, run_name: str, workflow: str, inherited: dict[str, str] | None
) -> dict[str, str]:
    labels = {
        **(inherited or {}),
        LABEL_WORKFLOW: workflow[:63],
        LABEL_RUN: run_name[:63],
        LABEL_STEP: request.labels.step,
        LABEL_ATTEMPT: str(request.labels.attempt),
        LABEL_ROLE: request.labels.role,
    }
    optional = {
        LABEL_ITEM: request.labels.item,
        LABEL_ITERATION: request.labels.iteration,
        LABEL_BODY_STEP: request.labels.body_step,
        LABEL_CONCURRENCY_KEY: request.concurrency_key,
    }
    labels.update({k: str(v) for k, v in optional.items() if v is not None})
    return labels


def _main(container: ContainerRequest, run_name: str) -> dict[str, Any]:
    """The step's container: its command, and the outputs contract (the termination log)."""
    env = [{"name": k, "value": v} for k, v in container.env.items()]
    env += [e.wire() for e in container.env_refs]  # valueFrom: the kubelet reads them
    env += [
        {"name": "BRAID_RUN", "value": run_name},
        {"name": "BRAID_OUTPUT", "value": TERMINATION_LOG},
    ]
    main: dict[str, Any] = {
        "name": CONTAINER,
        "image": container.image,
        "env": env,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "securityContext": copy.deepcopy(_CONTAINER_SECURITY),
    }
    optional = {
        "command": container.command,
        "args": container.args,
        "workingDir": container.working_dir,
        "resources": container.resources,
        "envFrom": [e.wire() for e in container.env_from],
    }
    main.update({k: v for k, v in optional.items() if v})
    return main


def secret_refs(pod: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """The Secrets (name, key; key None for a whole Secret) a step Pod's container reads,
    as env valueFrom and envFrom: their values are masked in the attempt's result."""
    out: list[tuple[str, str | None]] = []
    for c in (pod.get("spec") or {}).get("containers") or []:
        for e in c.get("env") or []:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref and ref.get("name"):
                out.append((str(ref["name"]), str(ref.get("key", ""))))
        for e in c.get("envFrom") or []:
            ref = e.get("secretRef")
            if ref and ref.get("name"):
                out.append((str(ref["name"]), None))
    return out


# Lists a template adds to rather than replaces: Braid's own entries (BRAID_OUTPUT, ...) stay.
_APPENDED = frozenset({"env", "envFrom", "volumeMounts", "volumes"})


def _apply_template(meta: dict[str, Any], spec: dict[str, Any], template: dict[str, Any]) -> None:
    """Merge an admitted template: mappings deep-merged, Braid's lists extended, the rest set."""
    tmeta = template.get("metadata") or {}
    for kind in ("labels", "annotations"):
        values = {
            k: v
            for k, v in (tmeta.get(kind) or {}).items()
            if not (kind == "labels" and k.startswith(BRAID_LABEL_PREFIX))
        }
        if values:
            meta[kind] = {**values, **(meta.get(kind) or {})}
    for key, value in (template.get("spec") or {}).items():
        if key == "containers":
            if value:
                _merge_into(spec["containers"][0], value[0])
        else:
            _merge_into(spec, {key: value})


def _merge_into(target: dict[str, Any], override: dict[str, Any]) -> None:
    for key, value in override.items():
        if key in _APPENDED and isinstance(value, list):
            target[key] = [*target.get(key, []), *copy.deepcopy(value)]
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            target[key] = merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
JOB_NAME_MAX = 63  # the Job controller puts the name in a label of its Pod


def job_for(pod: dict[str, Any]) -> dict[str, Any]:
    """A Job running exactly the attempt's Pod: named and owned like it, carrying its labels
    (a queue's, such as Kueue's kueue.x-k8s.io/queue-name, included). backoffLimit 0: a failed
    Pod fails the Job, and Braid's retry policy decides as for a Pod; a Pod disrupted
    (evicted, preempted) is replaced instead of counted."""
    meta = pod["metadata"]
    template_meta = {k: v for k, v in meta.items() if k in ("labels", "annotations")}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": dict(meta.get("labels") or {}),
            "ownerReferences": meta["ownerReferences"],
        },
        "spec": {
            "backoffLimit": 0,
            "podFailurePolicy": {
                "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]
            },
            "template": {"metadata": template_meta, "spec": pod["spec"]},
        },
    }


def controller(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The controlling owner reference of an object."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def controller_uid(pod: dict[str, Any]) -> str | None:
    """The uid of the object that controls the Pod (for a step Pod: its run)."""
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def result_of(pod: dict[str, Any]) -> AttemptResult | None:
    """The attempt's result once the Pod has terminated (with what its artifact containers
    reported); None while it runs."""
    result = _result_of(pod)
    return with_artifacts(pod, result) if result is not None else None


def _result_of(pod: dict[str, Any]) -> AttemptResult | None:
    status = pod.get("status") or {}
    phase = status.get("phase")
    name = pod["metadata"]["name"]
    if phase not in ("Succeeded", "Failed"):
        return None
    terminated = None
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") == CONTAINER:
            terminated = (cs.get("state") or {}).get("terminated")
    if terminated is None:
        # Failed before the container ran (evicted, deadline exceeded, image never pulled).
        reason = status.get("reason") or "PodFailed"
        if reason == "DeadlineExceeded":
            return AttemptResult(name, timed_out=True, message=status.get("message"))
        if reason in ("Evicted", "Preempting", "Terminated", "NodeLost", "Shutdown"):
            detail = status.get("message") or "the node let it go"
            return AttemptResult(name, error=f"the pod was {reason.lower()}: {detail}", lost=True)
        return AttemptResult(name, error=f"{reason}: {status.get('message') or 'the pod failed'}")
    code = terminated.get("exitCode")
    message = terminated.get("message")
    if code == 0:
        return AttemptResult(name, exit_code=0, output=message)
    detail = terminated.get("reason") or ""
    return AttemptResult(name, exit_code=code, output=message, message=detail or None)

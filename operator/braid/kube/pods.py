"""Step attempts as Pods, and Pods back as attempt results. Pure translation, no I/O."""

from __future__ import annotations

import copy
from typing import Any

from braid.api.common import API_VERSION
from braid.engine import AttemptResult, StartAttempt

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

# Compatible with the "restricted" Pod Security Standard; a step's podTemplate may override.
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
) -> dict[str, Any]:
    """The Pod of one container attempt: deterministic name, owned by the run. ``inherited``:
    run labels the pod carries too (a shard's selector keys, so it watches only its pods)."""
    container = request.container
    assert container is not None
    labels = {
        **(inherited or {}),
        LABEL_WORKFLOW: workflow[:63],
        LABEL_RUN: run_name[:63],
        LABEL_STEP: request.labels.step,
        LABEL_ATTEMPT: str(request.labels.attempt),
        LABEL_ROLE: request.labels.role,
    }
    if request.labels.item is not None:
        labels[LABEL_ITEM] = str(request.labels.item)
    if request.labels.iteration is not None:
        labels[LABEL_ITERATION] = str(request.labels.iteration)
    if request.labels.body_step is not None:
        labels[LABEL_BODY_STEP] = request.labels.body_step
    if request.concurrency_key is not None:
        labels[LABEL_CONCURRENCY_KEY] = request.concurrency_key
    env = [{"name": k, "value": v} for k, v in container.env.items()]
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
        "securityContext": _CONTAINER_SECURITY,
    }
    if container.command:
        main["command"] = container.command
    if container.args:
        main["args"] = container.args
    if container.working_dir:
        main["workingDir"] = container.working_dir
    if container.resources:
        main["resources"] = container.resources
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": _POD_SECURITY,
        "automountServiceAccountToken": False,
        "containers": [main],
    }
    if request.timeout_seconds:
        spec["activeDeadlineSeconds"] = request.timeout_seconds
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": request.name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "WorkflowRun",
                    "name": run_name,
                    "uid": run_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }
    template = container.pod_template or {}
    if template:
        pod["metadata"] = merge(pod["metadata"], template.get("metadata") or {})
        pod["metadata"]["labels"].update(labels)  # Braid's labels are how it finds its pods
        spec_override = dict(template.get("spec") or {})
        overrides = spec_override.pop("containers", None)
        pod["spec"] = merge(pod["spec"], spec_override)
        if overrides:
            pod["spec"]["containers"][0] = merge(pod["spec"]["containers"][0], overrides[0])
    return pod


def result_of(pod: dict[str, Any]) -> AttemptResult | None:
    """The attempt's result once the Pod has terminated; None while it runs."""
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

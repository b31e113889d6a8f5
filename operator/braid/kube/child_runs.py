"""A sub-workflow's child WorkflowRun as the API server stores it: named as the attempt,
owned by the parent run (deleted with it), labelled with the parent's name and the depth, and
running the named Workflow or the inline spec with the rendered params and the parent's
remaining budget as its cap."""

from __future__ import annotations

from typing import Any

from braid.api.common import GROUP, VERSION
from braid.api.run import ParentLink
from braid.engine import StartAttempt
from braid.kube.pods import LABEL_STEP

LABEL_PARENT_RUN = "braid.dev/parent-run"
LABEL_DEPTH = "braid.dev/depth"
PARENT_STEP = "braid.dev/parent-step"  # annotation: the step (item, iteration) it is
PARENT_ATTEMPT = "braid.dev/parent-attempt"  # annotation: the parent's attempt it is


def child_run_for(
    action: StartAttempt, parent: dict[str, Any], inherited: dict[str, str]
) -> dict[str, Any]:
    child = action.child
    assert child is not None
    meta = parent["metadata"]
    spec: dict[str, Any] = {"params": child.params}
    if child.spec is not None:
        spec["workflow"] = child.spec.wire()
    else:
        spec["workflowRef"] = {"name": child.workflow}
    if child.budget is not None:
        spec["budget"] = child.budget.wire()
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "WorkflowRun",
        "metadata": {
            "name": child.run_name,
            "namespace": meta["namespace"],
            "labels": {
                **inherited,  # a shard's selector labels: the child is the same shard's
                LABEL_PARENT_RUN: meta["name"][:63],
                LABEL_STEP: action.labels.step,
                LABEL_DEPTH: str(child.parent.depth),
            },
            "annotations": {PARENT_STEP: child.parent.step, PARENT_ATTEMPT: action.name},
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "WorkflowRun",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


def told(run: dict[str, Any]) -> tuple[str, str] | None:
    """(the owner's uid, the parent's attempt) of a child run, to tell its parent how it
    ended; None for a run that is nobody's child."""
    meta = run["metadata"]
    attempt = (meta.get("annotations") or {}).get(PARENT_ATTEMPT)
    owners = [
        r
        for r in meta.get("ownerReferences") or []
        if r.get("controller") and r.get("kind") == "WorkflowRun"
    ]
    if not attempt or not owners or not (meta.get("labels") or {}).get(LABEL_PARENT_RUN):
        return None
    return str(owners[0].get("uid") or ""), str(attempt)


def parent_of(run: dict[str, Any]) -> ParentLink | None:
    """The parent a child run names, when a run owns it (labels alone make no child: the
    owner reference is what the parent checks, and what deletes the child with it)."""
    meta = run["metadata"]
    labels = meta.get("labels") or {}
    parent = labels.get(LABEL_PARENT_RUN)
    owners = [
        r
        for r in meta.get("ownerReferences") or []
        if r.get("controller") and r.get("kind") == "WorkflowRun"
    ]
    if not parent or not owners:
        return None
    try:
        depth = max(1, int(labels.get(LABEL_DEPTH, "1")))
    except ValueError:
        depth = 1
    step = (meta.get("annotations") or {}).get(PARENT_STEP) or labels.get(LABEL_STEP) or ""
    return ParentLink(run=str(owners[0].get("name") or parent), step=str(step)[:253], depth=depth)

"""The reconciler against what a hostile run (or a run's hostile neighbour) can do: pods under
its attempts' names, Pods the API server refuses, statuses that outgrow the object limit, spec
edits after start, retries of other runs, webhooks that raise. Each ends as a clear failure of
that attempt or run, never as a reconcile that raises forever."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest

from braid.controller import apply as apply_module
from braid.controller.reconcile import MAX_OBJECT_BYTES, Reconciler
from braid.kube.memory import MemoryCluster
from tests.unit.test_reconcile import finish, reconcile, setup


def status(cluster: MemoryCluster, run: str = "r") -> dict[str, Any]:
    return cluster.runs[run]["status"]


def cond(cluster: MemoryCluster, run: str = "r") -> dict[str, Any]:
    return next(c for c in status(cluster, run)["conditions"] if c["type"] == "Succeeded")


def foreign_pod(name: str, output: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "ownerReferences": [{"uid": "attacker-uid", "controller": True}],
        },
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {"name": "step", "state": {"terminated": {"exitCode": 0, "message": output}}}
            ],
        },
    }


def test_a_pod_made_under_an_attempts_name_by_someone_else_is_a_conflict_not_a_result():
    cluster, reconciler = setup()
    cluster.pods["r-a-1"] = foreign_pod("r-a-1", '{"forged": true}')
    reconcile(cluster, reconciler)
    step = status(cluster)["steps"][0]
    assert (step["phase"], step["reason"]) == ("Failed", "PodConflict")
    assert "belongs to another object" in step["message"]
    assert "outputs" not in step
    assert cond(cluster)["status"] == "False"
    assert "r-a-1" in cluster.pods  # not ours to delete
    assert "r-b-1" not in cluster.pods


def test_a_pod_replaced_under_a_running_attempt_is_a_conflict_too():
    cluster, reconciler = setup()
    reconcile(cluster, reconciler)
    cluster.pods["r-a-1"] = foreign_pod("r-a-1", '{"forged": true}')
    reconcile(cluster, reconciler)
    step = status(cluster)["steps"][0]
    assert (step["phase"], step["reason"]) == ("Failed", "PodConflict")


def test_a_pod_the_api_server_refuses_fails_the_attempt_instead_of_wedging_the_run():
    cluster, reconciler = setup()
    cluster.refuse_pods = 'Pod "r-a-1" is invalid: spec.nodeSelector: Invalid value: "bad value!"'
    reconcile(cluster, reconciler)
    step = status(cluster)["steps"][0]
    assert (step["phase"], step["reason"]) == ("Failed", "StartFailed")
    assert "the API server refused the Pod" in step["message"]
    assert "bad value!" in step["message"]
    assert cond(cluster)["status"] == "False"


def test_a_refused_pod_is_retried_like_any_failed_attempt():
    cluster, reconciler = setup()
    cluster.workflows["wf"]["spec"]["steps"][0]["retry"] = {"limit": 2}
    cluster.refuse_pods = "exceeded quota: pods=10"
    reconcile(cluster, reconciler)
    step = status(cluster)["steps"][0]
    assert (step["phase"], step["reason"]) == ("Retrying", "StartFailed")
    assert cluster.requests["POST pods"] == 1


def test_a_pod_template_the_operator_does_not_admit_fails_the_run_before_anything_runs():
    cluster, reconciler = setup()
    cluster.workflows["wf"]["spec"]["steps"][1]["container"]["podTemplate"] = {
        "metadata": {"namespace": "kube-system"},
        "spec": {"containers": [{"securityContext": {"privileged": True}}]},
    }
    reconcile(cluster, reconciler)
    c = cond(cluster)
    assert (c["status"], c["reason"]) == ("False", "InvalidSpec")
    assert "spec.steps[1].container.podTemplate.metadata.namespace" in c["message"]
    assert "securityContext.privileged" in c["message"]
    assert cluster.pods == {}


def big_fan_out(cluster: MemoryCluster, reconciler: Reconciler, per_round: int) -> None:
    """180 items of 4 KB outputs each: more than a run object can hold."""
    item = {
        "name": "f",
        "fanOut": {"items": list(range(180)), "parallelism": 180, "container": {"image": "x"}},
    }
    cluster.workflows["wf"]["spec"]["steps"] = [item]
    big = json.dumps({"text": "x" * 4000})
    reconcile(cluster, reconciler)
    while cond(cluster)["status"] == "Unknown":
        for name in [n for n, p in cluster.pods.items() if not p.get("status")][:per_round]:
            finish(cluster, name, big)
        reconcile(cluster, reconciler)


def test_a_status_that_would_pass_the_object_limit_fails_the_run_and_still_fits():
    cluster, reconciler = setup()
    body = {"name": "think", "container": {"image": "x"}}
    cluster.workflows["wf"]["spec"]["steps"] = [
        {"name": "l", "loop": {"steps": [body], "until": "false", "maxIterations": 1000}}
    ]
    big = json.dumps({"text": "x" * 4000})
    reconcile(cluster, reconciler)
    for _ in range(400):
        if cond(cluster)["status"] != "Unknown":
            break
        for name in [n for n, p in cluster.pods.items() if not p.get("status")]:
            finish(cluster, name, big)
        reconcile(cluster, reconciler)
    c = cond(cluster)
    assert (c["status"], c["reason"]) == ("False", "StatusTooLarge"), c
    assert "keep large data out of step outputs" in c["message"]
    assert len(json.dumps(cluster.runs["r"])) < MAX_OBJECT_BYTES
    assert not [p for p in cluster.pods.values() if not p.get("status")]  # nothing left running
    assert "StatusTooLarge" in [e.reason for e in cluster.events]


def test_a_run_that_finishes_too_large_keeps_its_outcome_and_sheds_outputs():
    cluster, reconciler = setup()
    big_fan_out(cluster, reconciler, per_round=180)
    assert cond(cluster)["status"] == "True"
    step = status(cluster)["steps"][0]
    assert "outputs dropped" in step["message"]
    assert step["outputs"] == {"succeeded": 180, "failed": 0, "total": 180}
    assert len(json.dumps(cluster.runs["r"])) < MAX_OBJECT_BYTES


def test_a_spec_edited_after_start_changes_nothing_and_never_fails_the_run_as_invalid():
    cluster, reconciler = setup()
    reconcile(cluster, reconciler)
    cluster.runs["r"]["spec"] = {"workflowRef": {"name": 7}, "params": "not a map"}
    finish(cluster, "r-a-1")
    reconcile(cluster, reconciler)
    assert status(cluster)["steps"][1]["phase"] == "Running"
    finish(cluster, "r-b-1")
    reconcile(cluster, reconciler)
    assert cond(cluster)["status"] == "True"


def retry_of(cluster: MemoryCluster, spec: dict[str, Any], **annotations: str) -> None:
    cluster.runs["r2"] = {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {
            "name": "r2",
            "namespace": "ns",
            "uid": "u2",
            "resourceVersion": "1",
            "annotations": annotations,
        },
        "spec": {**spec, "retryOf": {"name": "r"}},
    }


def failed_run() -> tuple[MemoryCluster, Reconciler]:
    cluster, reconciler = setup()
    reconcile(cluster, reconciler)
    finish(cluster, "r-a-1", '{"a": 1}')
    reconcile(cluster, reconciler)
    cluster.pods["r-b-1"]["status"] = {"phase": "Failed", "reason": "Error", "message": "x"}
    reconcile(cluster, reconciler)
    return cluster, reconciler


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"workflowRef": {"name": "other"}}, "spec.workflowRef.name"),
        ({"workflow": {"steps": [{"name": "z", "container": {"image": "x"}}]}}, "spec.workflow"),
        ({"workflowRef": {"name": "wf"}, "params": {"n": 99}}, "spec.params"),
    ],
)
def test_a_retry_must_be_of_the_same_workflow_with_the_same_params(spec, path):
    cluster, reconciler = failed_run()
    cluster.workflows["other"] = copy.deepcopy(cluster.workflows["wf"])
    retry_of(cluster, spec)
    asyncio.run(reconciler.reconcile("ns", "r2", []))
    c = cond(cluster, "r2")
    assert (c["status"], c["reason"]) == ("False", "InvalidSpec")
    assert c["message"].startswith(path), c["message"]
    assert not [p for p in cluster.pods if p.startswith("r2-")]


GATED = {
    "spec": {
        "steps": [
            {"name": "gate", "approval": {"approvers": {"users": ["alice", "bob"]}}},
            {"name": "deploy", "container": {"image": "x"}},
        ]
    }
}


@pytest.mark.parametrize(
    ("requester", "verified", "gate_reused"),
    [
        ("alice", True, True),  # the approver retries their own approved run
        ("mallory", True, False),  # someone else: the gate asks again
        ("alice", False, False),  # nobody vouches for the name: the gate asks again
    ],
)
def test_a_retry_reuses_an_approval_only_for_the_person_who_gave_it(
    requester, verified, gate_reused
):
    cluster, reconciler = setup()
    reconciler.approvals_verified = verified
    cluster.workflows["wf"] = copy.deepcopy(GATED)
    cluster.runs["r"]["spec"].pop("params")
    reconcile(cluster, reconciler)
    digest = status(cluster)["pendingApprovals"][0]["digest"]
    cluster.runs["r"]["metadata"]["annotations"] = {"approve.braid.dev/gate": f"alice:{digest}"}
    reconcile(cluster, reconciler)
    cluster.pods["r-deploy-1"]["status"] = {"phase": "Failed", "reason": "Error", "message": "x"}
    reconcile(cluster, reconciler)
    assert status(cluster)["phase"] == "Failed"
    retry_of(cluster, {"workflowRef": {"name": "wf"}}, **{"braid.dev/requested-by": requester})
    asyncio.run(reconciler.reconcile("ns", "r2", []))
    gate = status(cluster, "r2")["steps"][0]
    if gate_reused:
        assert gate["phase"] == "Succeeded"
        assert "r2-deploy-1" in cluster.pods
    else:
        assert gate["phase"] == "Waiting"
        assert "r2-deploy-1" not in cluster.pods


def test_group_approvals_count_only_when_the_admission_policy_is_known_to_be_enforced():
    cluster, reconciler = setup()
    cluster.workflows["wf"] = {
        "spec": {
            "steps": [
                {"name": "gate", "approval": {"approvers": {"groups": ["sre"]}}},
                {"name": "deploy", "container": {"image": "x"}},
            ]
        }
    }
    cluster.runs["r"]["spec"].pop("params")
    reconcile(cluster, reconciler)
    c = next(c for c in status(cluster)["conditions"] if c["type"] == "ApprovalPending")
    assert c["reason"] == "AwaitingUnverifiedApproval"
    assert "approver identity is not verified" in c["message"]
    cluster.runs["r"]["metadata"]["annotations"] = {"approve.braid.dev/gate": "mallory"}
    reconcile(cluster, reconciler)
    gate = status(cluster)["steps"][0]
    assert gate["phase"] == "Waiting"
    [record] = gate["approvals"]
    assert (record["user"], record["decision"], record["verified"]) == ("mallory", "Refused", False)
    assert "approval admission policy" in record["reason"]
    reconciler.approvals_verified = True  # the policy would have checked mallory's groups
    cluster.runs["r"]["metadata"]["annotations"] = {"approve.braid.dev/gate": "dave"}
    reconcile(cluster, reconciler)
    assert status(cluster)["steps"][0]["phase"] == "Succeeded"


def test_a_webhook_call_that_raises_fails_its_attempt(monkeypatch):
    cluster, reconciler = setup()
    cluster.workflows["wf"]["spec"]["steps"] = [
        {"name": "hook", "webhook": {"url": "http://api.invalid/"}}
    ]

    async def explode(*args: Any, **kwargs: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(apply_module, "call_webhook", explode)

    async def go() -> None:
        await reconciler.reconcile("ns", "r", [])
        await asyncio.gather(*reconciler.apply.calls)
        await reconciler.reconcile("ns", "r", [])

    asyncio.run(go())
    step = status(cluster)["steps"][0]
    assert (step["phase"], step["reason"]) == ("Failed", "WebhookFailed")
    assert "RecursionError" in step["message"]


def test_every_webhook_attempt_has_a_deadline():
    cluster, reconciler = setup()
    cluster.workflows["wf"]["spec"]["steps"] = [
        {"name": "hook", "webhook": {"url": "http://api.invalid/", "timeoutSeconds": 5}}
    ]

    async def never(*args: Any, **kwargs: Any) -> Any:
        await asyncio.Event().wait()

    apply_module.call_webhook, saved = never, apply_module.call_webhook  # type: ignore[assignment]
    try:
        result = reconcile(cluster, reconciler)
    finally:
        apply_module.call_webhook = saved
    assert result.requeue_after is not None
    assert 0 < result.requeue_after <= 15  # the call's timeout plus the grace

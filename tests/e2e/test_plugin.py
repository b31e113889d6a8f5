"""`kubectl braid` against the real API server, with the approval policy installed."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.e2e.conftest import ROOT, Kube, Operator
from tests.e2e.test_approvals import gated_workflow, start
from tests.e2e.test_lifecycle import run_of, scripted_workflow


def braid(kube: Kube, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "braid.cli", *args, "-n", str(kube.namespace)],
        capture_output=True,
        text=True,
        env=kube.env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_plugin_approve_status_list(people: Kube, operator: Operator) -> None:
    kube = people
    kube.apply(gated_workflow("plug", required=2))
    run = start(kube, "plug")
    digest = kube.run_status(run)["pendingApprovals"][0]["digest"]
    first = braid(kube, "approve", run, "review", "--as=alice")
    assert first.returncode == 0, first.stderr
    assert f"approved review of {run} as alice (inputs {digest})" in first.stdout
    denied = braid(kube, "approve", run, "review", "--as=mallory")
    assert denied.returncode == 1
    assert "mallory may not decide review" in denied.stderr
    second = braid(kube, "approve", run, "review", "--as=bob")
    assert second.returncode == 0, second.stderr
    annotations = kube.json("get", "workflowrun", run)["metadata"]["annotations"]
    assert (
        annotations["approve.braid.dev/review"] == f"alice:{digest},bob:{digest}"
    )  # same as plain kubectl
    status = kube.wait_finished(run)
    assert next(c for c in status["conditions"] if c["type"] == "Succeeded")["status"] == "True"
    tree = braid(kube, "status", run)
    assert tree.returncode == 0
    assert "approved by alice" in tree.stdout
    assert "approved by bob" in tree.stdout
    listing = braid(kube, "list")
    assert run in listing.stdout
    assert "plug" in listing.stdout


def test_plugin_reject_then_retry_from_a_step(people: Kube, operator: Operator) -> None:
    kube = people
    kube.apply(gated_workflow("again", required=1))
    run = start(kube, "again")
    rejected = braid(kube, "reject", run, "review", "--reason", "not now", "--as=carol")
    assert rejected.returncode == 0, rejected.stderr
    old = kube.wait_finished(run)
    assert (
        "rejected by carol: not now"
        in next(c for c in old["conditions"] if c["type"] == "Succeeded")["message"]
    )
    retried = braid(kube, "retry", run, "--from", "review")
    assert retried.returncode == 0, retried.stderr
    new = retried.stdout.split()[0]
    kube.wait_for(
        "the retry's gate", lambda: kube.run_status(new).get("pendingApprovals"), timeout=60
    )
    steps = {s["name"]: s for s in kube.run_status(new)["steps"]}
    # prep's work was undone by compensation after the rejection, so the retry ran it again
    assert steps["prep"]["attempts"] == 1
    assert steps["prep"].get("message") != f"reused from run {run}"
    assert braid(kube, "approve", new, "review", "--as=alice").returncode == 0
    status = kube.wait_finished(new)
    assert next(c for c in status["conditions"] if c["type"] == "Succeeded")["status"] == "True"


def test_plugin_cancel(kube: Kube, operator: Operator) -> None:
    kube.apply(scripted_workflow("slow", 2, delay="600s"))
    run = kube.create(run_of("slow"))
    kube.wait_for(
        "the first pod", lambda: kube.json("get", "pods", "-l", f"braid.dev/run={run}")["items"]
    )
    assert braid(kube, "cancel", run).returncode == 0
    status = kube.wait_finished(run)
    cond = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert (cond["status"], cond["reason"]) == ("False", "Cancelled")
    kube.wait_for(
        "the pod to go", lambda: not kube.json("get", "pods", "-l", f"braid.dev/run={run}")["items"]
    )


def test_plugin_retry_reuses_successes(kube: Kube, operator: Operator) -> None:
    failing = json.loads(scripted_workflow("flaky", 3, delay="0s"))
    failing["spec"]["steps"][2]["container"]["podTemplate"]["metadata"]["annotations"][
        "braid.dev/test-exit-code"
    ] = "1"
    kube.apply(json.dumps(failing))
    run = kube.create(run_of("flaky"))
    assert (
        next(c for c in kube.wait_finished(run)["conditions"] if c["type"] == "Succeeded")["status"]
        == "False"
    )
    retried = braid(kube, "retry", run)
    assert retried.returncode == 0, retried.stderr
    new = retried.stdout.split()[0]
    kube.wait_finished(new)
    steps = {s["name"]: s for s in kube.run_status(new)["steps"]}
    assert steps["s0"]["message"] == f"reused from run {run}"
    assert steps["s1"]["message"] == f"reused from run {run}"
    assert steps["s2"]["attempts"] == 1  # ran again (and fails again: the script says so)
    assert not kube.json("get", "pods", "-l", f"braid.dev/run={new},braid.dev/step=s0")["items"]


def test_approving_a_gate_of_a_sub_workflow_through_its_parent(
    people: Kube, operator: Operator
) -> None:
    kube = people
    child = {
        "steps": [
            {"name": "sign-off", "approval": {"approvers": {"users": ["alice"]}, "message": "ok?"}}
        ]
    }
    parent = {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {"generateName": "nest-"},
        "spec": {"workflow": {"steps": [{"name": "inner", "workflow": {"spec": child}}]}},
    }
    run = kube.create(json.dumps(parent))
    kid = f"{run}-inner-1"
    kube.wait_for(
        "the child's gate",
        lambda: (
            kube.run("get", "workflowrun", kid, check=False).returncode == 0
            and kube.run_status(kid).get("pendingApprovals")
        ),
        timeout=90,
    )
    denied = braid(kube, "approve", run, "sign-off", "--as=mallory")
    assert denied.returncode != 0  # the admission policy judges the child's annotation
    done = braid(kube, "approve", run, "sign-off", "--as=alice")
    assert done.returncode == 0, done.stderr
    assert f"child run {kid} of {run}" in " ".join(done.stdout.split())
    status = kube.wait_finished(run, timeout=60)
    assert status["phase"] == "Succeeded", operator.log()[-3000:]
    gate = kube.run_status(kid)["steps"][0]
    assert gate["approvals"][0]["user"] == "alice"
    assert gate["approvals"][0]["verified"] is True

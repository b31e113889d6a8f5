"""Approvals bound to Kubernetes identity: the API server admits only decisions that name
the requester, by allowed approvers, without touching anyone else's. Users are impersonated
(kubectl --as/--as-group) with RBAC that lets them annotate runs."""

from __future__ import annotations

import json

from tests.e2e.conftest import Kube, Operator


def gated_workflow(name: str, required: int) -> str:
    scripted = {
        "braid.dev/test-exit-code": "0",
        "braid.dev/test-output": json.dumps({"plan": "v2"}),
    }
    undo = {
        "container": {
            "image": "busybox",
            "command": ["true"],
            "podTemplate": {"metadata": {"annotations": {"braid.dev/test-exit-code": "0"}}},
        }
    }
    return json.dumps(
        {
            "apiVersion": "braid.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": name},
            "spec": {
                "steps": [
                    {
                        "name": "prep",
                        "container": {
                            "image": "busybox",
                            "command": ["true"],
                            "podTemplate": {"metadata": {"annotations": scripted}},
                        },
                        "compensation": undo,
                    },
                    {
                        "name": "review",
                        "approval": {
                            "message": "ship ${{ steps.prep.outputs.plan }}?",
                            "approvers": {"users": ["alice", "bob", "carol"], "groups": ["sre"]},
                            "required": required,
                        },
                    },
                    {
                        "name": "ship",
                        "container": {
                            "image": "busybox",
                            "command": ["true"],
                            "podTemplate": {"metadata": {"annotations": scripted}},
                        },
                    },
                ]
            },
        }
    )


def start(kube: Kube, workflow: str) -> str:
    name = kube.create(
        json.dumps(
            {
                "apiVersion": "braid.dev/v1alpha1",
                "kind": "WorkflowRun",
                "metadata": {"generateName": f"{workflow}-"},
                "spec": {"workflowRef": {"name": workflow}},
            }
        )
    )
    kube.wait_for(
        "the gate to open", lambda: kube.run_status(name).get("pendingApprovals"), timeout=60
    )
    return name


def annotate(
    kube: Kube,
    run: str,
    who: str,
    value: str,
    key: str = "approve.braid.dev/review",
    groups: tuple[str, ...] = (),
):
    args = [
        "annotate",
        "--overwrite",
        f"--as={who}",
        *[f"--as-group={g}" for g in groups],
        "workflowrun",
        run,
        f"{key}={value}",
    ]
    return kube.run(*args, check=False)


def test_identity_is_enforced_and_quorum_counts_people(people: Kube, operator: Operator) -> None:
    kube = people
    kube.apply(gated_workflow("quorum", required=2))
    run = start(kube, "quorum")
    gate = kube.run_status(run)["pendingApprovals"][0]
    assert (gate["step"], gate["required"], gate["users"], gate["groups"]) == (
        "review",
        2,
        ["alice", "bob", "carol"],
        ["sre"],
    )

    refused = annotate(kube, run, "mallory", "mallory")
    assert refused.returncode != 0
    assert "mallory may not decide review: not an allowed approver" in refused.stderr

    forged = annotate(kube, run, "bob", "alice")
    assert forged.returncode != 0
    assert "an approval must name you: add bob" in forged.stderr

    assert annotate(kube, run, "alice", "alice").returncode == 0
    kube.wait_for(
        "alice's approval to count",
        lambda: kube.run_status(run)["pendingApprovals"][0].get("approvedBy") == ["alice"],
    )

    replaced = annotate(kube, run, "bob", "bob")
    assert replaced.returncode != 0
    assert "cannot change or remove someone else's approval" in replaced.stderr
    removed = kube.run(
        "annotate", "--as=bob", "workflowrun", run, "approve.braid.dev/review-", check=False
    )
    assert removed.returncode != 0
    assert "approvals and rejections cannot be removed" in removed.stderr

    # dave is not listed by name, but is in group sre
    assert annotate(kube, run, "dave", "alice,dave", groups=("sre",)).returncode == 0
    status = kube.wait_finished(run)
    assert next(c for c in status["conditions"] if c["type"] == "Succeeded")["status"] == "True", (
        operator.log()[-2000:]
    )
    review = next(s for s in status["steps"] if s["name"] == "review")
    assert [(a["user"], a["decision"]) for a in review["approvals"]] == [
        ("alice", "Approved"),
        ("dave", "Approved"),
    ]
    assert review["outputs"]["approvedBy"] == ["alice", "dave"]
    events = kube.json("get", "events", "--field-selector", f"involvedObject.name={run}")["items"]
    assert {"Approved by alice", "Approved by dave"} <= {
        e["message"].replace("Step review approved by ", "Approved by ") for e in events
    }


def test_rejection_names_its_author_fails_the_step_and_compensates(
    people: Kube, operator: Operator
) -> None:
    kube = people
    kube.apply(gated_workflow("reject", required=1))
    run = start(kube, "reject")
    impostor = annotate(kube, run, "bob", "carol: no", key="reject.braid.dev/review")
    assert impostor.returncode != 0
    assert "a rejection must start with your user name: bob: <reason>" in impostor.stderr
    assert (
        annotate(
            kube, run, "carol", "carol: the plan is wrong", key="reject.braid.dev/review"
        ).returncode
        == 0
    )
    status = kube.wait_finished(run)
    cond = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert cond["status"] == "False"
    assert "rejected by carol: the plan is wrong" in cond["message"]
    prep = next(s for s in status["steps"] if s["name"] == "prep")
    assert prep["compensation"]["phase"] == "Succeeded"
    changed = annotate(kube, run, "carol", "carol: never mind", key="reject.braid.dev/review")
    assert changed.returncode != 0


def test_approving_a_step_that_is_not_waiting_is_refused(people: Kube, operator: Operator) -> None:
    kube = people
    kube.apply(gated_workflow("early", required=1))
    run = start(kube, "early")
    early = annotate(kube, run, "alice", "alice", key="approve.braid.dev/ship")
    assert early.returncode != 0
    assert "alice may not decide ship" in early.stderr


def test_a_gate_that_times_out_rejects_and_compensates(people: Kube, operator: Operator) -> None:
    kube = people
    spec = json.loads(gated_workflow("late", required=1))
    spec["spec"]["steps"][1]["approval"]["timeoutSeconds"] = 2
    kube.apply(json.dumps(spec))
    run = start(kube, "late")
    status = kube.wait_finished(run, timeout=60)
    review = next(s for s in status["steps"] if s["name"] == "review")
    assert (review["phase"], review["reason"]) == ("Failed", "ApprovalTimedOut")
    assert (
        next(s for s in status["steps"] if s["name"] == "prep")["compensation"]["phase"]
        == "Succeeded"
    )


def test_changed_inputs_invalidate_an_approval(people: Kube, operator: Operator) -> None:
    """A human reviews each draft of a loop: an approval given for one draft does not carry
    over to the next, because the gate's inputs (its digest) changed."""
    kube = people
    draft = {"braid.dev/test-exit-code": "0", "braid.dev/test-output": '{"text": "draft"}'}
    kube.apply(
        json.dumps(
            {
                "apiVersion": "braid.dev/v1alpha1",
                "kind": "Workflow",
                "metadata": {"name": "drafts"},
                "spec": {
                    "steps": [
                        {
                            "name": "write",
                            "loop": {
                                "maxIterations": 2,
                                "until": "iteration >= 1",
                                "steps": [
                                    {
                                        "name": "draft",
                                        "container": {
                                            "image": "busybox",
                                            "command": ["true"],
                                            "podTemplate": {"metadata": {"annotations": draft}},
                                        },
                                    },
                                    {
                                        "name": "review",
                                        "approval": {
                                            "approvers": {"users": ["alice"]},
                                            "message": "iteration ${{ iteration }} ok?",
                                        },
                                    },
                                ],
                            },
                        }
                    ]
                },
            }
        )
    )
    run = start(kube, "drafts")
    first = kube.run_status(run)["pendingApprovals"][0]
    assert first["iteration"] == 0
    assert annotate(kube, run, "alice", "alice").returncode == 0  # plain kubectl, no digest
    second = kube.wait_for(
        "the next iteration's gate",
        lambda: next(
            (g for g in kube.run_status(run).get("pendingApprovals") or [] if g["iteration"] == 1),
            None,
        ),
        timeout=60,
    )
    assert second["digest"] != first["digest"]
    # the same annotation is still there, and is not counted for the new inputs
    kube.wait_for(
        "the gate to stay open",
        lambda: kube.run_status(run)["pendingApprovals"][0]["iteration"] == 1,
    )
    assert annotate(kube, run, "alice", f"alice,alice:{second['digest']}").returncode == 0
    status = kube.wait_finished(run)
    assert next(c for c in status["conditions"] if c["type"] == "Succeeded")["status"] == "True"
    records = status["steps"][0]["iterations"][1]["steps"][1]["approvals"]
    assert [(r["user"], r["digest"], r["bound"]) for r in records] == [
        ("alice", second["digest"], True)
    ]

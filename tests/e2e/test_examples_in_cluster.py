"""Every example applied with kubectl and driven to its expected result by the operator."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import example_api_server
from tests.e2e.conftest import ROOT, Executor, Kube, Operator

EXAMPLES = ROOT / "examples"


def create_run(
    kube: Kube, folder: str, params: dict | None = None, annotations: dict | None = None
) -> str:
    run = yaml.safe_load((EXAMPLES / folder / "run.yaml").read_text())
    if params:
        run["spec"]["params"] = {**(run["spec"].get("params") or {}), **params}
    if annotations:
        run["metadata"]["annotations"] = annotations
    return kube.create(yaml.safe_dump(run))


def steps(status: dict) -> dict[str, dict]:
    return {s["name"]: s for s in status["steps"]}


def succeeded(status: dict) -> str:
    return next(c["status"] for c in status["conditions"] if c["type"] == "Succeeded")


CASES = {
    "01-sequential": (
        {},
        "True",
        {
            "brief": "Brief on cats: Section on cats fact 1; Section on cats fact 2; Section on cats fact 3",
            "words": 18,
        },
    ),
    "02-parallel-threshold": ({}, "True", {"answer": "Paris", "votes": 3, "answered": 3}),
    "03-orchestrator-worker": ({}, "True", None),
    "04-routing": ({}, "True", {"team": "technical", "reply": "The technical team is on it."}),
    "05-react-loop": ({"target": 81}, "True", {"answer": 81, "iterations": 4}),
    "06-maker-checker": (
        {},
        "True",
        {"draft": "Launch note +audience +date +price", "score": 1.0, "revisions": 3},
    ),
    "08-retry-compensation": ({}, "False", None),
    "11-document-processing": ({}, "True", {"type": "invoice", "extracted": 3, "reviewed": False}),
}


@pytest.mark.parametrize("folder", sorted(CASES))
def test_example_runs_in_cluster(
    kube: Kube, operator: Operator, executor: Executor, folder: str
) -> None:
    params, outcome, outputs = CASES[folder]
    kube.apply(EXAMPLES / folder / "workflow.yaml")
    name = create_run(kube, folder, params)
    status = kube.wait_finished(name, timeout=120)
    assert succeeded(status) == outcome, operator.log()[-3000:]
    if outputs is not None:
        assert status["outputs"] == outputs
    if folder == "03-orchestrator-worker":
        assert status["outputs"]["parts"] == 4
    if folder == "08-retry-compensation":
        s = steps(status)
        assert s["charge"]["attempts"] == 3
        assert s["charge"]["compensation"]["phase"] == "Succeeded"
        assert s["reserve"]["compensation"]["phase"] == "Succeeded"
        assert status["finally"][0]["outputs"] == {"notified": True, "succeeded": False}
    # every pod the operator created is owned by the run and labelled for it
    pods = kube.json("get", "pods", "-l", f"braid.dev/run={name}")["items"]
    assert pods
    for pod in pods:
        assert pod["metadata"]["ownerReferences"][0]["name"] == name
        assert pod["spec"]["restartPolicy"] == "Never"
        assert pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
    assert kube.run("get", "workflowrun", name).stdout.split("\n")[1].split()[2] in (
        "True",
        "False",
    )


def test_07_approval_by_annotation(kube: Kube, operator: Operator, executor: Executor) -> None:
    kube.apply(EXAMPLES / "07-approval" / "workflow.yaml")
    name = create_run(kube, "07-approval")
    kube.wait_for(
        "the approval gate",
        lambda: any(
            c["type"] == "ApprovalPending" and c["status"] == "True"
            for c in kube.run_status(name).get("conditions", [])
        ),
    )
    assert "Waiting" in [s["phase"] for s in kube.run_status(name)["steps"]]
    # As alice (the approval policy, when installed, admits only one's own name); the masters
    # group stands in for the RBAC a real approver would be granted.
    kube.run(
        "annotate",
        "--as=alice",
        "--as-group=system:masters",
        "workflowrun",
        name,
        "approve.braid.dev/review=alice",
    )
    status = kube.wait_finished(name)
    assert succeeded(status) == "True"
    assert status["outputs"]["approvedBy"] == ["alice"]
    assert steps(status)["review"]["approvals"][0]["user"] == "alice"


def test_09_webhook_runs_in_the_operator(
    kube: Kube, operator: Operator, executor: Executor
) -> None:
    kube.apply(EXAMPLES / "09-webhook" / "workflow.yaml")
    with example_api_server() as url:
        name = create_run(kube, "09-webhook", {"baseUrl": url})
        status = kube.wait_finished(name)
    assert succeeded(status) == "True", operator.log()[-3000:]
    assert status["outputs"] == {"label": "urgent", "tokens": 7}


def test_10_secrets_in_the_cluster(kube: Kube, operator: Operator, executor: Executor) -> None:
    kube.apply(EXAMPLES / "10-secrets" / "secrets.yaml")
    kube.apply(EXAMPLES / "10-secrets" / "workflow.yaml")
    with example_api_server() as url:
        name = create_run(kube, "10-secrets", {"baseUrl": url})
        status = kube.wait_finished(name)
    assert succeeded(status) == "True", operator.log()[-3000:]
    assert status["outputs"] == {"label": "urgent", "model": "demo-model-1", "keyLength": 24}
    assert steps(status)["answer"]["outputs"]["oops"] == "***"
    assert "sk-demo" not in kube.run("get", "workflowrun", name, "-o", "json").stdout


def test_11_the_human_fallback_in_the_cluster(
    kube: Kube, operator: Operator, executor: Executor
) -> None:
    kube.apply(EXAMPLES / "11-document-processing" / "workflow.yaml")
    name = create_run(kube, "11-document-processing", {"unreadablePage": 1})
    kube.wait_for(
        "the review gate",
        lambda: (
            steps({"steps": [], **kube.run_status(name)}).get("human-review", {}).get("phase")
            == "Waiting"
        ),
        timeout=90,
    )
    kube.run(
        "annotate",
        "--as=alice",
        "--as-group=system:masters",
        "workflowrun",
        name,
        "approve.braid.dev/human-review=alice",
    )
    status = kube.wait_finished(name)
    assert succeeded(status) == "True", operator.log()[-3000:]
    assert status["outputs"] == {"type": "invoice", "extracted": 2, "reviewed": True}


def test_13_llm_the_operator_calls_the_model(
    kube: Kube, operator: Operator, executor: Executor
) -> None:
    kube.apply(EXAMPLES / "13-llm" / "secrets.yaml")
    kube.apply(EXAMPLES / "13-llm" / "workflow.yaml")
    with example_api_server("13-llm") as url:
        name = create_run(kube, "13-llm", {"baseURL": f"{url}/v1"})
        status = kube.wait_finished(name)
    assert succeeded(status) == "True", operator.log()[-3000:]
    assert status["outputs"]["label"] == "billing"
    assert status["usage"]["tokens"] == status["outputs"]["tokens"]
    # the model call made no Pod; only the routed handler did
    pods = kube.json("get", "pods", "-l", f"braid.dev/run={name}")["items"]
    assert [p["metadata"]["labels"]["braid.dev/step"] for p in pods] == ["billing"]

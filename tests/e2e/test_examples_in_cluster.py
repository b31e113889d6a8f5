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


MODEL_CASES = {
    "03-orchestrator-worker": {
        "plan": ["RESEARCH done", "MESSAGING done", "TIMELINE done", "BUDGET done"],
        "parts": 4,
    },
    "04-routing": {
        "team": "technical",
        "reply": "The technical team is on it.",
        "confidence": 0.9,
    },
    "05-react-loop": {
        "answer": "Brest has the higher tide today, by 3.7 m.",
        "iterations": 3,
        "toolCalls": 3,
    },
    "06-maker-checker": {
        "draft": "Launch note +audience +date +price",
        "score": 1.0,
        "revisions": 3,
    },
}


@pytest.mark.parametrize("folder", sorted(MODEL_CASES))
def test_model_examples_in_cluster(
    kube: Kube, operator: Operator, executor: Executor, folder: str
) -> None:
    """The operator makes the model calls (and the ReAct example's webhook tool calls)
    itself; only containers become Pods."""
    kube.apply(EXAMPLES / "model-api.yaml")
    kube.apply(EXAMPLES / folder / "workflow.yaml")
    with example_api_server("model") as url:
        params = {"baseURL": f"{url}/v1", "toolsURL": f"{url}/tools"}
        if folder != "05-react-loop":
            del params["toolsURL"]
        name = create_run(kube, folder, params)
        status = kube.wait_finished(name, timeout=120)
    assert succeeded(status) == "True", operator.log()[-3000:]
    outputs = dict(status["outputs"])
    outputs.pop("tokens", None)
    assert outputs == MODEL_CASES[folder]
    assert status["usage"]["tokens"] > 0
    pods = kube.json("get", "pods", "-l", f"braid.dev/run={name}")["items"]
    made = sorted(p["metadata"]["labels"]["braid.dev/step"] for p in pods)
    expected = {
        "03-orchestrator-worker": ["synthesize"],
        "04-routing": ["respond", "technical"],
        "05-react-loop": ["agent"],  # the calculator; the tide lookups are webhooks
        "06-maker-checker": [],
    }
    assert made == expected[folder]


def test_13_llm_fails_over_and_opens_the_preferred_models_breaker_for_every_run(
    kube: Kube, operator: Operator, executor: Executor
) -> None:
    kube.apply(EXAMPLES / "model-api.yaml")
    kube.apply(EXAMPLES / "13-llm" / "workflow.yaml")
    routes = []
    with example_api_server("model") as url:
        for _ in range(3):
            name = create_run(kube, "13-llm", {"baseURL": f"{url}/v1"})
            status = kube.wait_finished(name)
            assert succeeded(status) == "True", operator.log()[-3000:]
            routes.append(
                (steps(status)["classify"]["attempts"], steps(status)["classify"]["route"])
            )
    assert status["outputs"]["label"] == "billing"
    assert status["usage"]["tokens"] == status["outputs"]["tokens"]
    assert status["usage"]["cost"] == pytest.approx(status["outputs"]["cost"])
    # runs 1 and 2 tried the overloaded model first; two failures opened its breaker, so
    # run 3 went straight to the other
    assert [a for a, _ in routes] == [2, 2, 1]
    assert all(r["candidate"] == "small" for _, r in routes)
    assert "passed over large (breaker open)" in routes[2][1]["reason"]
    assert {"key": "ticket-classifier/large", "state": "Open"}.items() <= next(
        b for b in status["circuitBreakers"] if b["key"] == "ticket-classifier/large"
    ).items()
    metrics = operator.metrics()
    chosen = {k: v for k, v in metrics.items() if k.startswith("braid_route_selected_total")}
    assert chosen['braid_route_selected_total{candidate="small",key="ticket-classifier"}'] == 3
    assert chosen['braid_route_selected_total{candidate="large",key="ticket-classifier"}'] == 2
    # the model calls made no Pod
    assert kube.json("get", "pods", "-l", f"braid.dev/run={name}")["items"] == []

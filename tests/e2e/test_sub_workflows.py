"""Sub-workflows on the real control plane: child WorkflowRuns owned by their parent, a
recursive workflow, cancel and budget passed down, and the garbage collector deleting the
children with their parent."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.e2e.conftest import Executor, Kube, Operator

EXAMPLE = Path(__file__).parents[2] / "examples" / "15-sub-workflows"


def children_of(kube: Kube, run: str) -> list[dict]:
    return kube.json("get", "workflowruns", "-l", f"braid.dev/parent-run={run}")["items"]


def test_a_report_nests_a_recursive_workflow_as_child_runs_owned_by_their_parent(
    kube: Kube, operator: Operator, executor: Executor
) -> None:
    kube.apply(EXAMPLE / "workflow.yaml")
    kube.apply(EXAMPLE / "report.yaml")
    run = {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {"generateName": "report-"},
        "spec": {"workflowRef": {"name": "sorted-report"}, "params": {"batches": [[3, 1], [2]]}},
    }
    name = kube.create(yaml.safe_dump(run))
    status = kube.wait_finished(name, timeout=120)
    assert status["phase"] == "Succeeded", operator.log()[-3000:]
    assert status["outputs"] == {
        "batches": [[1, 3], [2]],
        "summary": "2 batches; lowest of each: [1, 2]",
    }
    kids = {k["metadata"]["name"]: k for k in children_of(kube, name)}
    assert sorted(kids) == [f"{name}-sort--0-1", f"{name}-sort--1-1", f"{name}-summary-1"]
    uid = kube.json("get", "workflowrun", name)["metadata"]["uid"]
    for kid in kids.values():
        owner = kid["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("WorkflowRun", uid, True)
        assert kid["status"]["parent"]["run"] == name
        assert kid["status"]["phase"] == "Succeeded"
    first = kids[f"{name}-sort--0-1"]
    assert first["spec"]["workflowRef"] == {"name": "merge-sort"}
    # [3, 1] recursed once more: its halves are grandchildren, two levels deep
    grand = children_of(kube, f"{name}-sort--0-1")
    assert len(grand) == 2
    assert {g["metadata"]["labels"]["braid.dev/depth"] for g in grand} == {"2"}
    items = status["steps"][0]["items"]
    assert [i["childRun"] for i in items] == [f"{name}-sort--0-1", f"{name}-sort--1-1"]
    wide = kube.run("get", "bwr", "-l", f"braid.dev/parent-run={name}").stdout
    assert "Succeeded" in wide
    # the garbage collector deletes the children (and theirs) with the parent
    kube.run("delete", "workflowrun", name, "--wait=true", timeout=60)
    kube.wait_for(
        "the children to be collected",
        lambda: not children_of(kube, name) and not children_of(kube, f"{name}-sort--0-1"),
        timeout=60,
    )


def test_cancelling_the_parent_cancels_its_child_and_the_child_gets_the_budget_left(
    kube: Kube, operator: Operator, executor: Executor
) -> None:
    spend = {
        "image": "python:3.12-slim",
        "command": [
            "python3",
            "-c",
            (
                "import json,os; open(os.environ['BRAID_OUTPUT'],'w')"
                ".write(json.dumps({'usage': {'tokens': 30}}))"
            ),
        ],
    }
    run = {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {"generateName": "parent-"},
        "spec": {
            "workflow": {
                "budget": {"tokens": 100},
                "steps": [
                    {"name": "spend", "container": spend},
                    {
                        "name": "wait",
                        "workflow": {
                            "spec": {"steps": [{"name": "nap", "sleep": {"durationSeconds": 300}}]}
                        },
                    },
                ],
            }
        },
    }
    name = kube.create(yaml.safe_dump(run))
    child = f"{name}-wait-1"
    kube.wait_for(
        "the child asleep",
        lambda: (
            (kube.run_status(child).get("steps") or [{}])[0].get("reason") == "Sleeping"
            if child in {k["metadata"]["name"] for k in children_of(kube, name)}
            else False
        ),
        timeout=90,
    )
    spec = kube.json("get", "workflowrun", child)["spec"]
    assert spec["budget"]["tokens"] == 70  # what the parent had left
    assert kube.run_status(child)["workflowSpec"]["budget"]["tokens"] == 70
    kube.run("patch", "workflowrun", name, "--type=merge", "-p", '{"spec":{"cancelled":true}}')
    status = kube.wait_finished(name, timeout=60)
    assert status["phase"] == "Cancelled", operator.log()[-3000:]
    assert kube.json("get", "workflowrun", child)["spec"]["cancelled"] is True
    assert kube.wait_finished(child, timeout=30)["phase"] == "Cancelled"

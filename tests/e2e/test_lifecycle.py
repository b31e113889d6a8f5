"""Snapshots, crash-restarts, admission-time validation and deletion on the real API server."""

from __future__ import annotations

import json
import textwrap
import time

import pytest

from tests.e2e.conftest import Kube, Operator


def scripted_workflow(
    name: str, steps: int, delay: str = "1s", arg: str = "v1", params: list | None = None
) -> str:
    """A chain whose pods complete on their own (kwok), each after `delay`, outputting {"v": arg}."""
    annotations = {
        "braid.dev/test-exit-code": "0",
        "braid.dev/test-delay": delay,
        "braid.dev/test-output": json.dumps({"v": arg}),
    }
    spec: dict = {
        "steps": [
            {
                "name": f"s{i}",
                "container": {
                    "image": "busybox",
                    "command": ["sh", "-c", f"echo {arg}"],
                    "podTemplate": {"metadata": {"annotations": annotations}},
                },
            }
            for i in range(steps)
        ],
        "outputs": {"last": f"steps.s{steps - 1}.outputs.v"},
    }
    if params:
        spec["params"] = params
    return json.dumps(
        {
            "apiVersion": "braid.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def run_of(workflow: str, name: str = "", params: dict | None = None) -> str:
    meta = f"name: {name}" if name else f"generateName: {workflow}-"
    return textwrap.dedent(f"""
    apiVersion: braid.dev/v1alpha1
    kind: WorkflowRun
    metadata: {{{meta}}}
    spec:
      workflowRef: {{name: {workflow}}}
      params: {json.dumps(params or {})}
    """)


def test_editing_the_workflow_does_not_change_a_running_run(kube: Kube, operator: Operator) -> None:
    kube.apply(scripted_workflow("edit-me", 3, delay="2s", arg="before"))
    name = kube.create(run_of("edit-me"))
    kube.wait_for("the first step to start", lambda: kube.run_status(name).get("steps"))
    kube.apply(scripted_workflow("edit-me", 1, delay="0s", arg="after"))
    status = kube.wait_finished(name)
    assert status["outputs"] == {"last": "before"}
    assert [s["name"] for s in status["steps"]] == ["s0", "s1", "s2"]
    assert len(status["workflowSpec"]["steps"]) == 3
    later = kube.wait_finished(kube.create(run_of("edit-me")))
    assert later["outputs"] == {"last": "after"}


def test_sigkill_mid_run_then_restart_completes_without_duplicate_pods(
    kube: Kube, operator: Operator
) -> None:
    kube.apply(scripted_workflow("crashy", 5, delay="1s"))
    name = kube.create(run_of("crashy"))
    kube.wait_for(
        "two steps to have pods",
        lambda: len(kube.json("get", "pods", "-l", f"braid.dev/run={name}")["items"]) >= 2,
        timeout=60,
    )
    operator.kill()  # SIGKILL: no cleanup, no goodbye
    time.sleep(2)  # pods keep completing while no operator runs
    operator.start()
    status = kube.wait_finished(name, timeout=120)
    assert status["outputs"] == {"last": "v1"}, operator.log()[-3000:]
    assert [s["attempts"] for s in status["steps"]] == [1] * 5
    pods = kube.json("get", "pods", "-l", f"braid.dev/run={name}")["items"]
    names = sorted(p["metadata"]["name"] for p in pods)
    assert names == [f"{name}-s{i}-1" for i in range(5)]
    # each pod was created exactly once: its creation is its only "Created step pod" line
    creations = [line for line in operator.log().splitlines() if '"Created step pod"' in line]
    assert sorted(json.loads(line)["pod"] for line in creations) == names
    # Kubernetes-style structured lines: the object named, with workflow/run/step/attempt
    assert {(json.loads(line)["workflow"], json.loads(line)["run"]) for line in creations} == {
        ("crashy", name)
    }


def test_deleting_a_run_deletes_its_pods(kube: Kube, operator: Operator) -> None:
    kube.apply(scripted_workflow("long", 1, delay="600s"))
    name = kube.create(run_of("long"))
    kube.wait_for(
        "the pod", lambda: kube.json("get", "pods", "-l", f"braid.dev/run={name}")["items"]
    )
    kube.run("delete", "workflowrun", name, "--wait=true")
    kube.wait_for(
        "garbage collection of the run's pods",
        lambda: not kube.json("get", "pods", "-l", f"braid.dev/run={name}")["items"],
        timeout=60,
    )


def test_a_run_with_bad_params_fails_naming_the_field(kube: Kube, operator: Operator) -> None:
    kube.apply(scripted_workflow("typed", 1, params=[{"name": "n", "schema": {"type": "integer"}}]))
    name = kube.create(run_of("typed", params={"n": "three"}))
    status = kube.wait_finished(name)
    cond = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert cond["reason"] == "InvalidSpec"
    assert "spec.params.n: 'three' is not of type 'integer'" in cond["message"]
    assert not kube.json("get", "pods", "-l", f"braid.dev/run={name}")["items"]


BAD = [
    (
        "two kinds in one step",
        "steps:\n    - {name: a, container: {image: x}, approval: {}}",
        "set exactly one of container, webhook, llm, approval, sleep, workflow, fanOut, loop",
    ),
    (
        "a step named with capitals",
        "steps:\n    - {name: Bad, container: {image: x}}",
        "spec.steps[0].name",
    ),
    (
        "an unknown field",
        "steps:\n    - {name: a, container: {image: x, comand: [a]}}",
        'unknown field "spec.steps[0].container.comand"',
    ),
    (
        "a missing image",
        "steps:\n    - {name: a, container: {command: [a]}}",
        "spec.steps[0].container.image: Required value",
    ),
    (
        "duplicate step names",
        "steps:\n    - {name: a, container: {image: x}}\n    - {name: a, container: {image: z}}",
        'spec.steps[1]: Duplicate value: {"name":"a"}',
    ),
    (
        "a self dependency",
        "steps:\n    - {name: a, dependsOn: [a], container: {image: x}}",
        "a step cannot depend on itself",
    ),
    (
        "an unreachable quorum",
        "steps:\n    - {name: a, approval: {approvers: {users: [al]}, required: 2}}",
        "required is larger than the number of approvers",
    ),
    (
        "a negative retry limit",
        "steps:\n    - {name: a, retry: {limit: -1}, container: {image: x}}",
        "spec.steps[0].retry.limit: Invalid value: -1",
    ),
]


@pytest.mark.parametrize(("what", "spec", "message"), BAD, ids=[b[0] for b in BAD])
def test_invalid_workflows_are_rejected_by_kubectl_apply(
    kube: Kube, what: str, spec: str, message: str
) -> None:
    manifest = f"apiVersion: braid.dev/v1alpha1\nkind: Workflow\nmetadata: {{name: bad}}\nspec:\n  {spec}\n"
    result = kube.run("apply", "-f", "-", stdin=manifest, check=False)
    assert result.returncode != 0, what
    assert message in result.stderr, result.stderr


def test_run_params_are_immutable(kube: Kube) -> None:
    kube.apply(scripted_workflow("imm", 1))
    kube.create(run_of("imm", name="imm-1", params={"a": 1}))
    result = kube.run(
        "patch",
        "workflowrun",
        "imm-1",
        "--type=merge",
        "-p",
        '{"spec": {"params": {"a": 2}}}',
        check=False,
    )
    assert result.returncode != 0
    assert "a run's spec cannot change once the run exists" in result.stderr


def test_kubectl_explain_documents_the_fields(kube: Kube) -> None:
    # The API server publishes a new CRD's OpenAPI schema a moment after it is Established.
    out = kube.wait_for(
        "the published schema",
        lambda: (
            (
                r := kube.run("explain", "workflow.spec.steps.fanOut.successThreshold", check=False)
            ).returncode
            == 0
            and "Items that must succeed" in r.stdout
            and r.stdout
        ),
        timeout=60,
    )
    assert "Items that must succeed; default all." in out
    assert "fraction" in out
    assert "Fraction of the items, rounded up." in out
    out = kube.run("explain", "workflowrun.status.conditions").stdout
    assert "Succeeded, ApprovalPending, SLABreached" in out


def test_a_pod_deleted_under_a_running_step_is_retried_and_says_why(
    kube: Kube, operator: Operator
) -> None:
    spec = json.loads(scripted_workflow("victim", 1, delay="600s"))
    spec["spec"]["steps"][0]["retry"] = {"limit": 1, "backoff": {"initialDelaySeconds": 0}}
    kube.apply(json.dumps(spec))
    run = kube.create(run_of("victim"))
    first = f"{run}-s0-1"
    kube.wait_for(
        "the first attempt", lambda: kube.run("get", "pod", first, check=False).returncode == 0
    )
    kube.run("delete", "pod", first, "--grace-period=0", "--force")
    kube.wait_for(
        "the retry", lambda: kube.run("get", "pod", f"{run}-s0-2", check=False).returncode == 0
    )
    history = kube.run_status(run)["history"]
    retried = next(h for h in history if h["reason"] == "StepRetrying")
    assert "PodLost" in retried["message"]
    assert "deleted before the step finished" in retried["message"]


def test_pod_gc_deletes_pods_once_their_results_are_recorded(
    kube: Kube, operator: Operator
) -> None:
    spec = json.loads(scripted_workflow("tidy", 2, delay="0s", arg="kept"))
    spec["spec"]["podGC"] = {"strategy": "OnPodCompletion"}
    kube.apply(json.dumps(spec))
    run = kube.create(run_of("tidy"))
    status = kube.wait_finished(run)
    assert status["outputs"] == {"last": "kept"}
    kube.wait_for(
        "the pods to be collected",
        lambda: not kube.json("get", "pods", "-l", f"braid.dev/run={run}")["items"],
    )

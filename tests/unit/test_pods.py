"""Step attempts as Pods, and terminated Pods back as results (pure translation)."""

from __future__ import annotations

from braid.engine import AttemptLabels, ContainerRequest, StartAttempt
from braid.kube.pods import pod_for, result_of


def request(**container) -> StartAttempt:
    base = {
        "image": "python:3.12-slim",
        "command": ["python"],
        "args": ["-c", "pass"],
        "env": {"A": "1"},
        "working_dir": None,
        "resources": None,
        "pod_template": None,
    }
    return StartAttempt(
        name="r-fan--3-2",
        labels=AttemptLabels(step="fan", attempt=2, item=3),
        timeout_seconds=30,
        container=ContainerRequest(**{**base, **container}),
    )


def test_pod_is_named_labelled_owned_and_restricted():
    pod = pod_for(request(), namespace="ns", run_name="r", run_uid="uid-1", workflow="wf")
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["name"] == "r-fan--3-2"
    assert meta["labels"] == {
        "braid.dev/workflow": "wf",
        "braid.dev/run": "r",
        "braid.dev/step": "fan",
        "braid.dev/attempt": "2",
        "braid.dev/role": "step",
        "braid.dev/item": "3",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "braid.dev/v1alpha1",
            "kind": "WorkflowRun",
            "name": "r",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 30
    container = spec["containers"][0]
    assert {"name": "BRAID_OUTPUT", "value": "/dev/termination-log"} in container["env"]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert spec["securityContext"]["runAsNonRoot"] is True


def test_pod_template_overrides_but_keeps_braid_labels():
    template = {
        "metadata": {
            "labels": {"team": "ai", "braid.dev/run": "spoofed"},
            "annotations": {"a": "b"},
        },
        "spec": {
            "nodeSelector": {"gpu": "true"},
            "securityContext": {"runAsUser": 1000},
            "containers": [{"securityContext": {"runAsNonRoot": False}}],
        },
    }
    pod = pod_for(
        request(pod_template=template), namespace="ns", run_name="r", run_uid="u", workflow="wf"
    )
    assert pod["metadata"]["labels"]["team"] == "ai"
    assert pod["metadata"]["labels"]["braid.dev/run"] == "r"
    assert pod["metadata"]["annotations"] == {"a": "b"}
    assert pod["spec"]["nodeSelector"] == {"gpu": "true"}
    assert pod["spec"]["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] is False
    assert pod["spec"]["containers"][0]["image"] == "python:3.12-slim"


def pod(phase, terminated=None, **status):
    cs = [{"name": "step", "state": {"terminated": terminated}}] if terminated else []
    return {
        "metadata": {"name": "p-1"},
        "status": {"phase": phase, "containerStatuses": cs, **status},
    }


def test_results_from_pods():
    assert result_of(pod("Running")) is None
    ok = result_of(pod("Succeeded", {"exitCode": 0, "message": '{"x": 1}'}))
    assert (ok.exit_code, ok.output) == (0, '{"x": 1}')
    failed = result_of(pod("Failed", {"exitCode": 3, "reason": "Error"}))
    assert (failed.exit_code, failed.message) == (3, "Error")
    deadline = result_of(pod("Failed", reason="DeadlineExceeded", message="too slow"))
    assert deadline.timed_out
    evicted = result_of(pod("Failed", reason="Evicted", message="node pressure"))
    assert evicted.error == "the pod was evicted: node pressure"
    assert evicted.lost

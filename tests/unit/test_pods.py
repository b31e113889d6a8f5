"""Step attempts as Pods, and terminated Pods back as results (pure translation)."""

from __future__ import annotations

import pytest

from braid.api.podtemplate import PodPolicy
from braid.engine import AttemptLabels, ContainerRequest, StartAttempt
from braid.kube.pods import PodTemplateRefusedError, pod_for, result_of


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


def build(template, policy=None, namespace="ns"):
    return pod_for(
        request(pod_template=template),
        namespace=namespace,
        run_name="r",
        run_uid="u",
        workflow="wf",
        policy=policy,
    )


def test_an_admitted_pod_template_is_merged_and_braid_keeps_its_own_entries():
    template = {
        "metadata": {"labels": {"team": "ai"}, "annotations": {"a": "b"}},
        "spec": {
            "nodeSelector": {"gpu": "true"},
            "securityContext": {"runAsUser": 1000, "fsGroup": 2000},
            "volumes": [{"name": "scratch", "emptyDir": {}}],
            "containers": [
                {
                    "env": [{"name": "MODE", "value": "fast"}],
                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                    "resources": {"limits": {"memory": "1Gi"}},
                }
            ],
        },
    }
    pod = build(template)
    assert pod["metadata"]["labels"]["team"] == "ai"
    assert pod["metadata"]["labels"]["braid.dev/run"] == "r"
    assert pod["metadata"]["annotations"] == {"a": "b"}
    assert pod["spec"]["nodeSelector"] == {"gpu": "true"}
    assert pod["spec"]["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "fsGroup": 2000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    main = pod["spec"]["containers"][0]
    names = [e["name"] for e in main["env"]]
    # The template's env adds to Braid's: the outputs contract still works.
    assert names[-1] == "MODE"
    assert "BRAID_OUTPUT" in names
    assert main["volumeMounts"] == [{"name": "scratch", "mountPath": "/scratch"}]
    assert main["image"] == "python:3.12-slim"
    assert main["securityContext"]["capabilities"] == {"drop": ["ALL"]}


ESCAPES = {
    "namespace": {"metadata": {"namespace": "kube-system"}},
    "name": {"metadata": {"name": "victim-a-1"}},
    "generateName": {"metadata": {"generateName": "x-"}},
    "ownerReferences": {"metadata": {"ownerReferences": [{"uid": "other"}]}},
    "braid label": {"metadata": {"labels": {"braid.dev/run": "other"}}},
    "service account": {"spec": {"serviceAccountName": "admin"}},
    "token": {"spec": {"automountServiceAccountToken": True}},
    "hostNetwork": {"spec": {"hostNetwork": True}},
    "hostPID": {"spec": {"hostPID": True}},
    "hostIPC": {"spec": {"hostIPC": True}},
    "hostPath": {"spec": {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}},
    "privileged": {"spec": {"containers": [{"securityContext": {"privileged": True}}]}},
    "capabilities": {
        "spec": {"containers": [{"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}
    },
    "init container": {"spec": {"initContainers": [{"name": "x", "image": "evil"}]}},
    "ephemeral container": {"spec": {"ephemeralContainers": [{"name": "x", "image": "evil"}]}},
    "second container": {"spec": {"containers": [{}, {"name": "side", "image": "evil"}]}},
    "nodeName": {"spec": {"nodeName": "control-plane"}},
    "root": {"spec": {"securityContext": {"runAsUser": 0}}},
    "escalation": {
        "spec": {"containers": [{"securityContext": {"allowPrivilegeEscalation": True}}]}
    },
    "unconfined": {"spec": {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}},
    "image": {"spec": {"containers": [{"image": "evil"}]}},
    "restartPolicy": {"spec": {"restartPolicy": "Always"}},
    "hostPort": {"spec": {"containers": [{"ports": [{"containerPort": 80, "hostPort": 80}]}]}},
    "sysctl": {"spec": {"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}}},
    "projected token": {
        "spec": {
            "volumes": [
                {
                    "name": "t",
                    "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]},
                }
            ]
        }
    },
}


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_a_template_that_escapes_the_run_is_refused_by_default(case):
    with pytest.raises(PodTemplateRefusedError) as refused:
        build(ESCAPES[case])
    assert all(e.path.startswith("podTemplate.") for e in refused.value.errors), refused.value


def test_braid_metadata_wins_even_at_the_privileged_level():
    privileged = PodPolicy.parse("privileged", ["ns/bot"])
    template = {
        "spec": {
            "hostNetwork": True,
            "serviceAccountName": "bot",
            "automountServiceAccountToken": True,
            "containers": [{"securityContext": {"privileged": True}}],
        }
    }
    pod = build(template, privileged)
    assert pod["spec"]["hostNetwork"] is True
    assert pod["spec"]["serviceAccountName"] == "bot"
    assert pod["spec"]["containers"][0]["securityContext"]["privileged"] is True
    for owned in ESCAPES["namespace"], ESCAPES["ownerReferences"], ESCAPES["braid label"]:
        with pytest.raises(PodTemplateRefusedError):
            build(owned, privileged)


def test_service_accounts_come_from_the_admins_list_per_namespace():
    policy = PodPolicy.parse("restricted", ["team-a/bot", "*/reader"])
    assert build({"spec": {"serviceAccountName": "bot"}}, policy, "team-a")
    assert build({"spec": {"serviceAccountName": "reader"}}, policy, "team-b")
    with pytest.raises(PodTemplateRefusedError, match="not one the operator lets"):
        build({"spec": {"serviceAccountName": "bot"}}, policy, "team-b")


def test_baseline_admits_root_but_not_the_host():
    baseline = PodPolicy.parse("baseline")
    pod = build({"spec": {"securityContext": {"runAsUser": 0, "runAsNonRoot": False}}}, baseline)
    assert pod["spec"]["securityContext"]["runAsUser"] == 0
    with pytest.raises(PodTemplateRefusedError, match="hostPath"):
        build(ESCAPES["hostPath"], baseline)


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

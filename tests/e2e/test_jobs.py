"""runAs: Job on the real control plane (the controller-manager's Job controller makes the
Pods): the attempt is a Job with backoffLimit 0 carrying the queue label a podTemplate gives,
Braid retries a failed attempt with a new Job, and cancelling deletes the Job."""

from __future__ import annotations

import yaml

from tests.e2e.conftest import Executor, Kube, Operator

QUEUE = {"kueue.x-k8s.io/queue-name": "team-a"}


def job_step(name: str, code: str, **extra: object) -> dict:
    return {
        "name": name,
        "container": {
            "image": "python:3.12-slim",
            "runAs": "Job",
            "command": ["python3", "-c", code],
            "podTemplate": {"metadata": {"labels": QUEUE}},
        },
        **extra,
    }


def create(kube: Kube, steps: list[dict]) -> str:
    return kube.create(
        yaml.safe_dump(
            {
                "apiVersion": "braid.dev/v1alpha1",
                "kind": "WorkflowRun",
                "metadata": {"generateName": "job-"},
                "spec": {"workflow": {"steps": steps}},
            }
        )
    )


def test_job_attempts_succeed_are_retried_by_braid_and_carry_the_queue_label(
    kube: Kube, operator: Operator, executor: Executor
) -> None:
    ok = "import json, os; json.dump({'v': 1}, open(os.environ['BRAID_OUTPUT'], 'w'))"
    flaky = "import os, sys; sys.exit(0 if os.environ['BRAID_ATTEMPT'] == '2' else 3)"
    name = create(
        kube,
        [
            job_step("first", ok),
            job_step("second", flaky, retry={"limit": 1, "backoff": {"initialDelaySeconds": 0}}),
        ],
    )
    status = kube.wait_finished(name, timeout=90)
    assert status["phase"] == "Succeeded", operator.log()[-3000:]
    first, second = status["steps"]
    assert first["outputs"] == {"v": 1}
    assert (second["attempts"], second["phase"]) == (2, "Succeeded")
    jobs = {j["metadata"]["name"]: j for j in kube.json("get", "jobs")["items"]}
    assert set(jobs) >= {f"{name}-first-1", f"{name}-second-1", f"{name}-second-2"}
    job = jobs[f"{name}-second-1"]
    assert job["spec"]["backoffLimit"] == 0
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert (
        job["metadata"]["ownerReferences"][0]["uid"]
        == kube.json("get", "workflowrun", name)["metadata"]["uid"]
    )
    # the Job failed its one Pod: Braid's retry made a new Job, not the Job controller
    assert job["status"].get("failed") == 1


def test_cancelling_a_run_deletes_its_running_job(
    kube: Kube, operator: Operator, executor: Executor
) -> None:
    name = create(kube, [job_step("slow", "import time; time.sleep(600)")])
    kube.wait_for(
        "the job's pod",
        lambda: kube.json("get", "pods", "-l", f"batch.kubernetes.io/job-name={name}-slow-1")[
            "items"
        ],
        timeout=60,
    )
    kube.run("patch", "workflowrun", name, "--type=merge", "-p", '{"spec": {"cancelled": true}}')
    status = kube.wait_finished(name, timeout=60)
    assert status["phase"] == "Cancelled", operator.log()[-3000:]
    kube.wait_for(
        "the job to go",
        lambda: kube.run("get", "job", f"{name}-slow-1", check=False).returncode != 0,
        timeout=60,
    )

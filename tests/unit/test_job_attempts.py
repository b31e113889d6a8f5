"""runAs: Job in the operator's own terms: the Job wraps the attempt's Pod, and a Job's Pod
counts for its attempt only when the Job is known to be the run's."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from braid.api.run import WorkflowRunStatus
from braid.controller.reconcile import PodView, Reconciler, job_pods, observed
from braid.engine import Observations, RunState
from braid.engine.simulate import EPOCH
from braid.kube.memory import MemoryCluster
from braid.kube.pods import job_for
from tests.conftest import workflow

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "r-a-1",
        "namespace": "ns",
        "labels": {"braid.dev/run": "r", "kueue.x-k8s.io/queue-name": "q"},
        "annotations": {"x": "y"},
        "ownerReferences": [{"kind": "WorkflowRun", "uid": "run-uid", "controller": True}],
    },
    "spec": {"restartPolicy": "Never", "containers": [{"name": "step", "image": "x"}]},
}


def test_the_job_wraps_the_pod_with_its_labels_owner_and_no_retries_of_its_own():
    job = job_for(POD)
    assert job["metadata"]["name"] == "r-a-1"
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "q"
    assert job["metadata"]["ownerReferences"] == POD["metadata"]["ownerReferences"]
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["podFailurePolicy"]["rules"][0]["action"] == "Ignore"
    assert job["spec"]["template"]["metadata"] == {
        "labels": POD["metadata"]["labels"],
        "annotations": {"x": "y"},
    }
    assert job["spec"]["template"]["spec"] == POD["spec"]


def job_pod(job_uid: str) -> dict:
    return {
        "metadata": {
            "name": "r-a-1-x7k2p",
            "ownerReferences": [{"kind": "Job", "uid": job_uid, "controller": True}],
        },
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {"name": "step", "state": {"terminated": {"exitCode": 0, "message": "{}"}}}
            ],
        },
    }


def test_a_jobs_pod_counts_only_once_the_job_is_known_to_be_the_runs():
    spec = workflow([{"name": "a", "container": {"image": "x", "runAs": "Job"}}])
    state = RunState.load("r", spec, WorkflowRunStatus(), {})
    state.decide(Observations(), EPOCH)
    view = PodView(lookup=lambda name: job_pod("job-uid") if name == "r-a-1" else None, every=list)
    assert job_pods(state, view) == {"r-a-1": "job-uid"}
    assert observed(state, view, "run-uid", {}) == []  # not known yet: never taken
    (result,) = observed(state, view, "run-uid", {"job-uid": "run-uid"})
    assert (result.name, result.exit_code) == ("r-a-1", 0)  # the attempt's, not the Pod's name
    (refused,) = observed(state, view, "run-uid", {"job-uid": "someone-else"})
    assert refused.conflict


def test_a_job_deleted_under_its_attempt_is_lost_and_one_waiting_for_admission_is_not():
    cluster = MemoryCluster()
    cluster.runs["r"] = {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {"name": "r", "namespace": "ns", "uid": "u1", "resourceVersion": "1"},
        "spec": {
            "workflow": {"steps": [{"name": "a", "container": {"image": "x", "runAs": "Job"}}]}
        },
    }
    clock = iter(EPOCH + timedelta(seconds=i) for i in range(100))
    reconciler = Reconciler(cluster, clock=lambda: next(clock))

    def reconcile() -> dict:
        asyncio.run(reconciler.reconcile("ns", "r", []))  # no Pod yet: queued, or gone
        return cluster.runs["r"]["status"]["steps"][0]

    reconcile()
    assert list(cluster.jobs) == ["r-a-1"]
    assert reconcile()["phase"] == "Running"  # the Job is there, waiting: not lost
    del cluster.jobs["r-a-1"]
    step = reconcile()
    assert (step["phase"], step["reason"]) == ("Failed", "PodLost")
    assert "the Job was deleted" in step["message"]

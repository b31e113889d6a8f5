"""The reconciler against an in-memory Cluster: crash-safety and level-based behaviour."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from braid.api.run import PendingApproval, RunPhase, WorkflowRunStatus
from braid.controller.reconcile import LOST_AFTER, Reconciler, Result
from braid.kube.annotations import decisions_from
from braid.kube.memory import MemoryCluster
from braid.kube.pods import result_of
from braid.metrics import Before, Metrics

WORKFLOW = {
    "spec": {
        "params": [{"name": "n", "schema": {"type": "integer"}}],
        "steps": [
            {"name": "a", "container": {"image": "x", "command": ["a"]}},
            {"name": "b", "container": {"image": "x", "command": ["b"]}},
        ],
    }
}


def setup(params: dict[str, Any] | None = None) -> tuple[MemoryCluster, Reconciler]:
    cluster = MemoryCluster()
    cluster.workflows["wf"] = copy.deepcopy(WORKFLOW)
    cluster.runs["r"] = {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {
            "name": "r",
            "namespace": "ns",
            "uid": "u1",
            "resourceVersion": "1",
            "generation": 1,
        },
        "spec": {
            "workflowRef": {"name": "wf"},
            "params": params if params is not None else {"n": 1},
        },
    }
    clock = iter(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i) for i in range(1000))
    return cluster, Reconciler(cluster, clock=lambda: next(clock))


def finish(cluster: MemoryCluster, name: str, output: str = "{}") -> None:
    cluster.finish_pod(name, output)


def reconcile(cluster: MemoryCluster, reconciler: Reconciler, run: str = "r") -> Result:
    return asyncio.run(reconciler.reconcile("ns", run, list(cluster.pods.values())))


def test_first_reconcile_snapshots_the_workflow_and_creates_the_first_pod():
    cluster, reconciler = setup()
    reconcile(cluster, reconciler)
    assert list(cluster.pods) == ["r-a-1"]
    status = cluster.runs["r"]["status"]
    assert status["workflowSpec"]["steps"][0]["name"] == "a"
    assert status["params"] == {"n": 1}
    assert [e.reason for e in cluster.events] == ["RunStarted"]
    # nothing changed: a second reconcile writes nothing
    writes = cluster.requests["PUT workflowruns/status"]
    reconcile(cluster, reconciler)
    assert cluster.requests["PUT workflowruns/status"] == writes
    assert list(cluster.pods) == ["r-a-1"]


def test_a_reconcile_handed_the_run_reads_nothing_and_hands_back_what_it_wrote():
    cluster, reconciler = setup()
    first = reconcile(cluster, reconciler)
    assert first.run is not None
    assert first.run["status"]["workflowSpec"]["steps"][0]["name"] == "a"
    reads = cluster.requests["GET workflowruns"]
    finish(cluster, "r-a-1")
    pods = list(cluster.pods.values())
    second = asyncio.run(reconciler.reconcile("ns", "r", pods, first.run))
    assert cluster.requests["GET workflowruns"] == reads
    assert "r-b-1" in cluster.pods
    assert second.run is not None
    assert (
        second.run["metadata"]["resourceVersion"]
        == cluster.runs["r"]["metadata"]["resourceVersion"]
    )


def test_a_stale_run_handed_in_ends_in_a_conflict_and_nothing_is_kept():
    cluster, reconciler = setup()
    first = reconcile(cluster, reconciler)
    assert first.run is not None
    finish(cluster, "r-a-1")
    reconcile(cluster, reconciler)  # moves on to b: the run's version passes first.run's
    finish(cluster, "r-b-1")
    stale = asyncio.run(reconciler.reconcile("ns", "r", list(cluster.pods.values()), first.run))
    assert stale.run is None
    assert stale.requeue_after == 0.0
    again = reconcile(cluster, reconciler)  # read afresh: the run finishes
    assert cluster.runs["r"]["status"]["phase"] == "Succeeded"
    assert again.run is None  # finished runs are not kept


def test_crash_between_pod_create_and_status_write_creates_no_duplicate():
    cluster, reconciler = setup()
    reconcile(cluster, reconciler)
    finish(cluster, "r-a-1")
    cluster.fail_next_status_write = ConnectionError("operator died here")
    with pytest.raises(ConnectionError):
        reconcile(cluster, reconciler)
    assert "r-b-1" in cluster.pods  # created before the status that records it
    assert cluster.runs["r"]["status"]["steps"][1]["phase"] == "Pending"
    reconcile(cluster, reconciler)  # the restarted operator decides the same attempt again
    assert sorted(cluster.pods) == ["r-a-1", "r-b-1"]
    assert cluster.runs["r"]["status"]["steps"][1]["phase"] == "Running"
    finish(cluster, "r-b-1")
    cluster.fail_next_status_write = ConnectionError("operator died here")
    with pytest.raises(ConnectionError):
        reconcile(cluster, reconciler)
    assert [e.reason for e in cluster.events] == ["RunStarted"]  # nothing for an unrecorded end
    reconcile(cluster, reconciler)
    assert [e.reason for e in cluster.events] == ["RunStarted", "RunSucceeded"]
    cond = next(c for c in cluster.runs["r"]["status"]["conditions"] if c["type"] == "Succeeded")
    assert cond["status"] == "True"


def test_editing_the_workflow_after_start_changes_nothing():
    cluster, reconciler = setup()
    reconcile(cluster, reconciler)
    cluster.workflows["wf"]["spec"]["steps"] = [
        {"name": "z", "container": {"image": "x", "command": ["z"]}}
    ]
    finish(cluster, "r-a-1")
    reconcile(cluster, reconciler)
    assert sorted(cluster.pods) == ["r-a-1", "r-b-1"]


def test_invalid_params_fail_the_run_with_the_field_path():
    cluster, reconciler = setup(params={"n": "one"})
    reconcile(cluster, reconciler)
    cond = next(c for c in cluster.runs["r"]["status"]["conditions"] if c["type"] == "Succeeded")
    assert (cond["status"], cond["reason"]) == ("False", "InvalidSpec")
    assert "spec.params.n: 'one' is not of type 'integer'" in cond["message"]
    assert cluster.pods == {}


def test_missing_workflow_fails_the_run():
    cluster, reconciler = setup()
    del cluster.workflows["wf"]
    reconcile(cluster, reconciler)
    cond = next(c for c in cluster.runs["r"]["status"]["conditions"] if c["type"] == "Succeeded")
    assert "spec.workflowRef.name: no Workflow named 'wf'" in cond["message"]


def test_cancel_deletes_running_pods():
    cluster, reconciler = setup()
    reconcile(cluster, reconciler)
    cluster.runs["r"]["spec"]["cancelled"] = True
    reconcile(cluster, reconciler)
    assert cluster.pods == {}
    assert cluster.runs["r"]["status"]["phase"] == "Cancelled"


DIGEST = "0123456789abcdef0123456789abcdef"


def test_approval_annotations_parse_into_decisions():
    decisions = decisions_from(
        {
            "approve.braid.dev/review": f"alice, bob:{DIGEST},system:serviceaccount:ns:bot",
            "reject.braid.dev/deploy": "carol: too risky: see ticket 7",
            "unrelated/key": "x",
        },
        verified=True,
    )
    assert [(d.step, d.user, d.approve, d.digest, d.reason) for d in decisions] == [
        ("review", "alice", True, None, None),
        ("review", "bob", True, DIGEST, None),
        ("review", "system:serviceaccount:ns:bot", True, None, None),
        ("deploy", "carol", False, None, "too risky: see ticket 7"),
    ]
    assert all(d.admitted for d in decisions)
    assert not any(d.admitted for d in decisions_from({"approve.braid.dev/x": "a"}, verified=False))


@pytest.mark.parametrize(
    ("value", "user", "reason"),
    [
        ("carol: too risky", "carol", "too risky"),
        ("system:serviceaccount:ns:bot: not today", "system:serviceaccount:ns:bot", "not today"),
        ("oidc:alice: plan is wrong: see #7", "oidc:alice", "plan is wrong: see #7"),
        ("arn:aws:iam::123456789012:user/dee: nope", "arn:aws:iam::123456789012:user/dee", "nope"),
        ("oidc:alice", "oidc:alice", "no reason given"),
        ("dave:", "dave", "no reason given"),
    ],
)
def test_rejections_keep_user_names_with_colons_whole(value, user, reason):
    [decision] = decisions_from({"reject.braid.dev/x": value}, verified=True)
    assert (decision.user, decision.reason) == (user, reason)


@pytest.mark.parametrize(
    ("entry", "user", "digest"),
    [
        (f"system:serviceaccount:ns:bot:{DIGEST}", "system:serviceaccount:ns:bot", DIGEST),
        ("oidc:alice", "oidc:alice", None),
        ("team:cafebabe", "team:cafebabe", None),  # 8 hex digits are a name, not a digest
        (f"arn:aws:iam::1:role/x:{DIGEST}", "arn:aws:iam::1:role/x", DIGEST),
    ],
)
def test_approvals_keep_user_names_with_colons_whole(entry, user, digest):
    [decision] = decisions_from({"approve.braid.dev/x": entry}, verified=True)
    assert (decision.user, decision.digest) == (user, digest)


def test_a_retry_run_reuses_the_old_runs_successes():
    cluster, reconciler = setup()
    reconcile(cluster, reconciler)
    cluster.pods["r-a-1"]["status"] = {
        "phase": "Succeeded",
        "containerStatuses": [
            {"name": "step", "state": {"terminated": {"exitCode": 0, "message": '{"a": 1}'}}}
        ],
    }
    reconcile(cluster, reconciler)
    cluster.pods["r-b-1"]["status"] = {
        "phase": "Failed",
        "containerStatuses": [{"name": "step", "state": {"terminated": {"exitCode": 2}}}],
    }
    reconcile(cluster, reconciler)
    assert cluster.runs["r"]["status"]["phase"] == "Failed"
    cluster.runs["r2"] = {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {"name": "r2", "namespace": "ns", "uid": "u2", "resourceVersion": "1"},
        "spec": {"workflowRef": {"name": "wf"}, "retryOf": {"name": "r"}},
    }
    asyncio.run(reconciler.reconcile("ns", "r2", []))
    assert "r2-a-1" not in cluster.pods
    assert "r2-b-1" in cluster.pods
    steps = cluster.runs["r2"]["status"]["steps"]
    assert (steps[0]["phase"], steps[0]["outputs"], steps[0]["message"]) == (
        "Succeeded",
        {"a": 1},
        "reused from run r",
    )
    assert cluster.runs["r2"]["status"]["params"] == {"n": 1}


def test_metrics_follow_the_runs_transitions():
    metrics = Metrics()
    cluster, reconciler = setup()
    reconciler.metrics = metrics
    labels = {"namespace": "ns", "workflow": "wf"}

    def value(name: str, **extra: str) -> float | None:
        return metrics.registry.get_sample_value(name, {**labels, **extra})

    reconcile(cluster, reconciler)
    assert value("braid_runs_started_total") == 1
    assert value("braid_active_runs") == 1
    finish(cluster, "r-a-1")
    reconcile(cluster, reconciler)
    reconcile(cluster, reconciler)  # nothing new: nothing counted twice
    assert value("braid_step_duration_seconds_count", step="a", result="Succeeded") == 1
    cluster.pods["r-b-1"]["status"] = {
        "phase": "Failed",
        "containerStatuses": [{"name": "step", "state": {"terminated": {"exitCode": 3}}}],
    }
    reconcile(cluster, reconciler)
    assert value("braid_step_failures_total", step="b", reason="Error") == 1
    assert value("braid_runs_finished_total", result="Failed") == 1
    assert value("braid_run_duration_seconds_count", result="Failed") == 1
    assert metrics.registry.get_sample_value("braid_active_runs", labels) is None  # no runs left


def with_spec(**extra: Any) -> tuple[MemoryCluster, Reconciler]:
    cluster, reconciler = setup()
    cluster.workflows["wf"]["spec"].update(extra)
    return cluster, reconciler


def test_a_pod_deleted_under_a_running_step_is_retried_with_the_reason():
    cluster, reconciler = with_spec()
    cluster.workflows["wf"]["spec"]["steps"][0]["retry"] = {"limit": 1}
    reconcile(cluster, reconciler)
    del cluster.pods["r-a-1"]  # kubectl delete pod, or the node went away
    reconciler.inbox.lose(("ns", "r"), "r-a-1")
    asyncio.run(reconciler.reconcile("ns", "r", []))
    step = cluster.runs["r"]["status"]["steps"][0]
    assert (step["phase"], step["reason"]) == ("Retrying", "PodLost")
    assert "deleted before the step finished" in step["message"]


def test_a_pod_missing_long_after_it_started_is_lost_even_without_the_deletion_event():
    cluster, reconciler = with_spec()
    reconcile(cluster, reconciler)
    del cluster.pods["r-a-1"]
    reconcile(cluster, reconciler)  # a second later: maybe not indexed yet, so not lost
    assert cluster.runs["r"]["status"]["steps"][0]["phase"] == "Running"
    later = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=LOST_AFTER + 5)
    reconciler.clock = lambda: later
    reconcile(cluster, reconciler)
    step = cluster.runs["r"]["status"]["steps"][0]
    assert (step["phase"], step["reason"]) == ("Failed", "PodLost")


def test_an_evicted_pod_is_lost_not_an_error_of_the_step():
    result = result_of(
        {
            "metadata": {"name": "p"},
            "status": {"phase": "Failed", "reason": "Evicted", "message": "low on memory"},
        }
    )
    assert result is not None
    assert result.lost
    assert result.error == "the pod was evicted: low on memory"


def test_pod_gc_on_pod_completion_deletes_a_pod_once_its_result_is_recorded():
    cluster, reconciler = with_spec(podGC={"strategy": "OnPodCompletion"})
    reconcile(cluster, reconciler)
    finish(cluster, "r-a-1", '{"x": 1}')
    reconcile(cluster, reconciler)
    assert list(cluster.pods) == ["r-b-1"]
    assert cluster.runs["r"]["status"]["steps"][0]["outputs"] == {"x": 1}


def test_pod_gc_on_run_completion_and_ttl_delete_after_the_run_finishes():
    cluster, reconciler = with_spec(
        podGC={"strategy": "OnRunCompletion"}, ttlStrategy={"secondsAfterSuccess": 30}
    )
    reconcile(cluster, reconciler)
    finish(cluster, "r-a-1")
    reconcile(cluster, reconciler)
    assert sorted(cluster.pods) == ["r-a-1", "r-b-1"]  # still running: kept
    finish(cluster, "r-b-1")
    result = reconcile(cluster, reconciler)
    assert cluster.runs["r"]["status"]["phase"] == "Succeeded"
    assert cluster.pods == {}
    assert result.requeue_after is not None
    assert 25 < result.requeue_after <= 30  # come back when the TTL is due
    reconciler.clock = lambda: datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=60)
    reconcile(cluster, reconciler)
    assert "r" not in cluster.runs


def test_ttl_after_failure_uses_its_own_seconds():
    cluster, reconciler = with_spec(
        ttlStrategy={"secondsAfterCompletion": 1000, "secondsAfterFailure": 0}
    )
    reconcile(cluster, reconciler)
    cluster.pods["r-a-1"]["status"] = {"phase": "Failed", "reason": "Error", "message": "x"}
    reconcile(cluster, reconciler)
    assert "r" not in cluster.runs


def test_a_shard_leaves_other_shards_runs_alone():
    cluster, reconciler = setup()
    reconciler.shard = lambda labels: labels.get("shard") == "a"
    reconcile(cluster, reconciler)
    assert cluster.pods == {}
    assert "status" not in cluster.runs["r"]
    cluster.runs["r"]["metadata"]["labels"] = {"shard": "a"}
    reconcile(cluster, reconciler)
    assert list(cluster.pods) == ["r-a-1"]


def held_setup() -> tuple[MemoryCluster, Reconciler, Result]:
    """A reconciler that holds a new run's first status back, after the first reconcile."""
    cluster, reconciler = setup()
    reconciler.first_write_after = 2.0
    first = reconcile(cluster, reconciler)
    return cluster, reconciler, first


def test_a_new_runs_first_status_waits_and_is_written_with_its_first_steps_end():
    cluster, reconciler, first = held_setup()
    assert list(cluster.pods) == ["r-a-1"]
    assert cluster.requests["PUT workflowruns/status"] == 0
    assert "status" not in cluster.runs["r"]
    assert cluster.events == []
    assert first.deferred is not None
    assert first.requeue_after == 2.0
    finish(cluster, "r-a-1")
    pods = list(cluster.pods.values())
    second = asyncio.run(reconciler.reconcile("ns", "r", pods, first.run, first.deferred))
    assert cluster.requests["PUT workflowruns/status"] == 1
    status = cluster.runs["r"]["status"]
    assert status["workflowSpec"]["steps"][0]["name"] == "a"
    assert [s["phase"] for s in status["steps"]] == ["Succeeded", "Running"]
    assert "r-b-1" in cluster.pods
    # the start is in the history and the conditions, not one more Event
    assert status["history"][0]["reason"] == "RunStarted"
    assert [e.reason for e in cluster.events] == []
    assert second.deferred is None


def test_a_held_first_status_is_written_on_its_own_when_nothing_happens_meanwhile():
    cluster, reconciler, first = held_setup()
    pods = list(cluster.pods.values())
    again = asyncio.run(reconciler.reconcile("ns", "r", pods, first.run, first.deferred))
    assert cluster.requests["PUT workflowruns/status"] == 1
    assert cluster.runs["r"]["status"]["phase"] == "Running"
    assert [e.reason for e in cluster.events] == ["RunStarted"]
    assert again.deferred is None
    assert list(cluster.pods) == ["r-a-1"]


def test_a_held_first_status_lost_with_the_operator_is_decided_again_without_a_second_pod():
    cluster, reconciler, _ = held_setup()
    reconciler.first_write_after = 0.0  # a new operator, nothing held: decides afresh
    finish(cluster, "r-a-1")
    reconcile(cluster, reconciler)
    assert list(cluster.pods) == ["r-a-1"]
    reconcile(cluster, reconciler)  # the pod found by name: its result counts
    assert "r-b-1" in cluster.pods
    assert cluster.requests["POST pods"] == 3  # a-1, a-1 again (it exists: taken), b-1


def test_a_held_first_status_goes_on_a_newer_version_a_cancel_deletes_the_pod_it_started():
    cluster, reconciler, first = held_setup()
    cluster.runs["r"]["spec"]["cancelled"] = True  # the user's change: a new version
    cluster.runs["r"]["metadata"]["resourceVersion"] = "7"
    pods = list(cluster.pods.values())
    again = asyncio.run(reconciler.reconcile("ns", "r", pods, None, first.deferred))
    assert again.deferred is None
    assert cluster.runs["r"]["status"]["phase"] == "Cancelled"
    assert "r-a-1" not in cluster.pods or cluster.pods["r-a-1"].get("deleting")


def test_a_held_first_status_is_dropped_when_the_run_has_a_status_already():
    cluster, reconciler, first = held_setup()
    other, _ = setup()
    asyncio.run(Reconciler(other).reconcile("ns", "r", []))  # another replica wrote one
    cluster.runs["r"] = other.runs["r"]
    pods = list(cluster.pods.values())
    again = asyncio.run(reconciler.reconcile("ns", "r", pods, None, first.deferred))
    assert again.deferred is None
    assert cluster.requests["PUT workflowruns/status"] == 0  # nothing of its own to write


def test_a_finished_run_leaves_no_pod_running_even_one_its_status_never_recorded():
    cluster, reconciler, _ = held_setup()
    # a new operator (the held status gone with the old one) and a cancel
    reconciler = Reconciler(cluster)
    cluster.runs["r"]["spec"]["cancelled"] = True
    reconcile(cluster, reconciler)
    assert cluster.runs["r"]["status"]["phase"] == "Cancelled"
    reconcile(cluster, reconciler)  # the finished run's own reconcile (its watch event)
    assert "r-a-1" not in cluster.pods or cluster.pods["r-a-1"].get("deleting")


def test_a_running_pod_someone_labelled_with_a_finished_runs_name_is_left_alone():
    cluster, reconciler = setup()
    cluster.runs["r"]["spec"]["cancelled"] = True
    stranger = {
        "metadata": {"name": "not-ours", "labels": {"braid.dev/run": "r"}},
        "status": {"phase": "Running"},
    }
    cluster.pods["not-ours"] = stranger
    reconcile(cluster, reconciler)
    reconcile(cluster, reconciler)
    assert cluster.runs["r"]["status"]["phase"] == "Cancelled"
    assert cluster.pods["not-ours"] is stranger
    assert not stranger.get("deleting")


@pytest.mark.parametrize("strategy", ["OnPodCompletion", "OnRunCompletion"])
def test_pod_gc_collects_only_pods_the_run_controls(strategy: str):
    cluster, reconciler = setup()
    cluster.workflows["wf"]["spec"]["podGC"] = {"strategy": strategy}
    stranger = {
        "metadata": {"name": "not-ours", "labels": {"braid.dev/run": "r"}},
        "status": {"phase": "Succeeded"},
    }
    cluster.pods["not-ours"] = stranger
    reconcile(cluster, reconciler)
    for pod in ("r-a-1", "r-b-1"):
        finish(cluster, pod)
        reconcile(cluster, reconciler)
    reconcile(cluster, reconciler)
    assert cluster.runs["r"]["status"]["phase"] == "Succeeded"
    assert "r-a-1" not in cluster.pods or cluster.pods["r-a-1"].get("deleting")
    assert cluster.pods["not-ours"] is stranger
    assert not stranger.get("deleting")


def test_a_first_status_that_says_more_than_a_start_is_written_at_once():
    cluster, reconciler = setup(params={"n": "not a number"})
    reconciler.first_write_after = 2.0
    result = reconcile(cluster, reconciler)
    assert cluster.runs["r"]["status"]["phase"] == "Failed"
    assert result.deferred is None


def test_active_runs_and_their_waiting_gates_are_counted_when_scraped():
    metrics = Metrics()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    pending = WorkflowRunStatus(phase=RunPhase.PENDING)
    gate = PendingApproval(step="review", required=1, digest="d")
    for run, workflow, gates in (("r1", "wf", [gate]), ("r2", "wf", []), ("r3", "other", [])):
        status = WorkflowRunStatus(phase=RunPhase.RUNNING, pending_approvals=gates)
        metrics.record("ns", workflow, run, Before.of(pending), status, [], now)

    def value(name: str, workflow: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"namespace": "ns", "workflow": workflow})

    assert value("braid_active_runs", "wf") == 2
    assert value("braid_approvals_pending", "wf") == 1
    assert value("braid_active_runs", "other") == 1
    assert value("braid_approvals_pending", "other") == 0
    metrics.forget("ns", "r3")
    assert value("braid_active_runs", "other") is None

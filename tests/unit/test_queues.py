"""Run queues (spec.concurrency): at most `limit` runs of a namespace hold a key; the rest
wait Pending with reason Queued and their place, and start in priority, then creation order,
as runs holding the key finish."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from braid.controller.reconcile import Reconciler, Result
from braid.kube.memory import MemoryCluster

WORKFLOW = {
    "spec": {
        "concurrency": {"key": "deploy", "limit": 1},
        "steps": [{"name": "a", "container": {"image": "x", "command": ["a"]}}],
    }
}


def add_run(cluster: MemoryCluster, name: str, created: int, priority: int | None = None) -> None:
    spec: dict[str, Any] = {"workflowRef": {"name": "wf"}}
    if priority is not None:
        spec["priority"] = priority
    cluster.runs[name] = {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"u-{name}",
            "resourceVersion": "1",
            "generation": 1,
            "creationTimestamp": f"2026-01-01T00:00:{created:02d}Z",
        },
        "spec": spec,
    }


def setup() -> tuple[MemoryCluster, Reconciler]:
    cluster = MemoryCluster()
    cluster.workflows["wf"] = copy.deepcopy(WORKFLOW)
    clock = iter(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i) for i in range(1000))
    return cluster, Reconciler(cluster, clock=lambda: next(clock))


def reconcile(cluster: MemoryCluster, reconciler: Reconciler, run: str) -> Result:
    return asyncio.run(reconciler.reconcile("ns", run, list(cluster.pods.values())))


def succeeded(cluster: MemoryCluster, run: str) -> tuple[str, str]:
    status = cluster.runs[run].get("status") or {}
    cond = next(c for c in status.get("conditions", []) if c["type"] == "Succeeded")
    return cond["reason"], cond["message"]


def test_runs_beyond_the_limit_wait_in_priority_then_creation_order():
    cluster, reconciler = setup()
    add_run(cluster, "first", 1)
    add_run(cluster, "old", 2)
    add_run(cluster, "urgent", 3, priority=5)
    for run in ("first", "old", "urgent"):
        reconcile(cluster, reconciler, run)
    assert list(cluster.pods) == ["first-a-1"]
    assert cluster.runs["old"]["status"]["phase"] == "Pending"
    # urgent was created later but outranks old
    assert succeeded(cluster, "urgent") == (
        "Queued",
        "queued: 1 of 2 waiting for key deploy (1 may run)",
    )
    reconcile(cluster, reconciler, "old")
    assert succeeded(cluster, "old")[1] == "queued: 2 of 2 waiting for key deploy (1 may run)"
    # first finishes: the waiting runs are woken, and urgent starts, not old
    cluster.finish_pod("first-a-1", "{}")
    result = reconcile(cluster, reconciler, "first")
    assert cluster.runs["first"]["status"]["phase"] == "Succeeded"
    assert result.wake == {("ns", "old"), ("ns", "urgent")}
    reconcile(cluster, reconciler, "old")
    reconcile(cluster, reconciler, "urgent")
    assert sorted(cluster.pods) == ["first-a-1", "urgent-a-1"]
    assert cluster.runs["old"]["status"]["phase"] == "Pending"


def test_a_restarted_operator_knows_which_runs_hold_the_key_before_starting_another():
    cluster, reconciler = setup()
    add_run(cluster, "first", 1)
    add_run(cluster, "second", 2)
    reconcile(cluster, reconciler, "first")
    _, restarted = setup()
    restarted.cluster = cluster  # a new operator, the same cluster
    restarted.apply.cluster = cluster
    reconcile(cluster, restarted, "second")  # reconciled before `first` after the restart
    assert list(cluster.pods) == ["first-a-1"]
    assert succeeded(cluster, "second")[0] == "Queued"
    assert cluster.requests["LIST workflowruns"] == 2  # once per operator, per namespace


def test_a_queued_run_cancelled_ends_without_starting():
    cluster, reconciler = setup()
    add_run(cluster, "first", 1)
    add_run(cluster, "second", 2)
    reconcile(cluster, reconciler, "first")
    reconcile(cluster, reconciler, "second")
    cluster.runs["second"]["spec"]["cancelled"] = True
    reconcile(cluster, reconciler, "second")
    assert cluster.runs["second"]["status"]["phase"] == "Cancelled"
    assert "second-a-1" not in cluster.pods

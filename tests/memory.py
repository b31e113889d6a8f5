"""One WorkflowRun of a workflow in the in-memory cluster, and a clock that ticks a second per
reading: the reconciler's unit tests start from here."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from braid.kube.memory import MemoryCluster


def cluster_with_run(workflow: dict[str, Any], namespace: str = "ns") -> MemoryCluster:
    cluster = MemoryCluster()
    cluster.workflows["wf"] = copy.deepcopy(workflow)
    cluster.runs["r"] = {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {"name": "r", "namespace": namespace, "uid": "u1", "resourceVersion": "1"},
        "spec": {"workflowRef": {"name": "wf"}},
    }
    return cluster


def ticking_clock() -> Callable[[], datetime]:
    ticks = iter(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i) for i in range(10_000))
    return lambda: next(ticks)

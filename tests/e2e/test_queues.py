"""Run queues on the real control plane: with limit 1, runs of the namespace go one at a
time, the waiting ones Pending with reason Queued and their place, in priority order."""

from __future__ import annotations

import itertools

import yaml

from tests.e2e.conftest import Executor, Kube, Operator

WORKFLOW = {
    "apiVersion": "braid.dev/v1alpha1",
    "kind": "Workflow",
    "metadata": {"name": "deploy"},
    "spec": {
        "concurrency": {"key": "prod", "limit": 1},
        "steps": [
            # Long enough that a busy machine still sees the others wait while one runs.
            {"name": "nap", "sleep": {"durationSeconds": 6}},
            {
                "name": "ship",
                "container": {"image": "python:3.12-slim", "command": ["python3", "-c", "1"]},
            },
        ],
    },
}


def condition(kube: Kube, name: str) -> dict:
    status = kube.run_status(name)
    return next((c for c in status.get("conditions", []) if c["type"] == "Succeeded"), {})


def test_runs_of_a_queue_go_one_at_a_time_in_priority_order(
    kube: Kube, operator: Operator, executor: Executor
) -> None:
    kube.apply(yaml.safe_dump(WORKFLOW))
    names = []
    for priority in (0, 0, 9):
        run = {
            "apiVersion": "braid.dev/v1alpha1",
            "kind": "WorkflowRun",
            "metadata": {"generateName": "deploy-"},
            "spec": {"workflowRef": {"name": "deploy"}, "priority": priority},
        }
        names.append(kube.create(yaml.safe_dump(run)))
        if not priority:
            kube.wait_for("the run to be seen", lambda n=names[-1]: condition(kube, n))
    first, second, urgent = names
    kube.wait_for(
        "the queue", lambda: condition(kube, urgent).get("reason") == "Queued", timeout=60
    )
    assert condition(kube, second)["reason"] == "Queued"
    assert condition(kube, urgent)["message"].startswith("queued: 1 of 2")
    done = {n: kube.wait_finished(n, timeout=120) for n in names}
    assert all(s["phase"] == "Succeeded" for s in done.values()), operator.log()[-3000:]
    # one at a time: each started after the one before it completed, urgent before second
    order = sorted(names, key=lambda n: done[n]["startTime"])
    assert order == [first, urgent, second]
    for before, after in itertools.pairwise(order):
        assert done[after]["startTime"] >= done[before]["completionTime"]

"""Faults on the real control plane: the operator SIGKILLed at random moments across a batch of
runs, and etcd and the API server crashing under running workflows. Every run must end with
the right result, no step attempt may start twice, and no approval may be lost."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import CLUSTER, Kube, Operator
from tests.e2e.test_lifecycle import run_of

STEPS = ["fetch", "draft", "review", "publish"]


def workflow(delay: str) -> str:
    scripted = {
        "braid.dev/test-exit-code": "0",
        "braid.dev/test-delay": delay,
        "braid.dev/test-output": json.dumps({"ok": True}),
    }

    def step(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "container": {
                "image": "agent",
                "podTemplate": {"metadata": {"annotations": scripted}},
            },
        }

    return json.dumps(
        {
            "apiVersion": "braid.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": "faulty"},
            "spec": {
                "steps": [
                    step("fetch"),
                    step("draft"),
                    {"name": "review", "approval": {"message": "publish?"}},
                    step("publish"),
                ]
            },
        }
    )


def statuses(kube: Kube, runs: list[str]) -> dict[str, dict[str, Any]]:
    """Each run's status, or nothing for runs the API server cannot tell about right now."""
    got = {}
    for run in runs:
        result = kube.run("get", "workflowrun", run, "-o", "json", check=False)
        if result.returncode == 0:
            got[run] = json.loads(result.stdout).get("status") or {}
    return got


def approve_waiting(kube: Kube, runs: list[str], approved: set[str]) -> None:
    for run, status in statuses(kube, runs).items():
        if run not in approved and any(
            p["step"] == "review" for p in status.get("pendingApprovals") or []
        ):
            # As alice: with the chart's approval policy installed, an approval names its author.
            done = kube.run(
                "annotate",
                "workflowrun",
                run,
                "approve.braid.dev/review=alice",
                "--as=alice",
                "--as-group=system:masters",
                check=False,
            )
            if done.returncode == 0:
                approved.add(run)


def finished(status: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Succeeded" and c["status"] != "Unknown" for c in status.get("conditions", [])
    )


def wait_all(kube: Kube, runs: list[str], approved: set[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        approve_waiting(kube, runs, approved)
        last = statuses(kube, runs)
        if len(last) == len(runs) and all(finished(s) for s in last.values()):
            return last
        time.sleep(0.5)
    raise AssertionError(f"runs did not finish: {json.dumps(last)[:3000]}")


def assert_exactly_once(kube: Kube, final: dict[str, dict[str, Any]]) -> None:
    for run, status in final.items():
        cond = next(c for c in status["conditions"] if c["type"] == "Succeeded")
        assert (cond["status"], cond["reason"]) == ("True", "Succeeded"), (run, cond)
        attempts = {s["name"]: s["attempts"] for s in status["steps"]}
        assert attempts == dict.fromkeys(STEPS, 1), (run, attempts)
        review = next(s for s in status["steps"] if s["name"] == "review")
        assert [(a["user"], a["decision"]) for a in review["approvals"]] == [("alice", "Approved")]
        pods = kube.json("get", "pods", "-l", f"braid.dev/run={run}")["items"]
        names = sorted(p["metadata"]["name"] for p in pods)
        assert names == sorted(f"{run}-{s}-1" for s in STEPS if s != "review"), names


@pytest.mark.timeout(180)
def test_sigkill_at_random_moments_across_a_batch_of_runs(kube: Kube, tmp_path: Path) -> None:
    rng = random.Random(20261125)
    kube.apply(workflow("1s"))
    runs = [kube.create(run_of("faulty")) for _ in range(5)]
    approved: set[str] = set()
    operator = Operator(kube, tmp_path)
    kills = 0
    for _ in range(8):
        operator.start()
        time.sleep(rng.uniform(0.5, 3.0))
        operator.kill()  # SIGKILL: no cleanup, whatever it was doing
        kills += 1
        approve_waiting(kube, runs, approved)
    operator.start()
    try:
        final = wait_all(kube, runs, approved, timeout=75)
    finally:
        operator.stop()
    assert kills == 8
    assert_exactly_once(kube, final)


def restart(*components: str) -> None:
    subprocess.run(
        [sys.executable, str(CLUSTER), "restart", *components],
        check=True,
        timeout=100,
        capture_output=True,
    )


@pytest.mark.timeout(180)
def test_etcd_and_the_api_server_crash_mid_run(kube: Kube, operator: Operator) -> None:
    kube.apply(workflow("2s"))
    runs = [kube.create(run_of("faulty")) for _ in range(3)]
    kube.wait_for(
        "the first pods", lambda: kube.json("get", "pods", "-l", "braid.dev/run")["items"]
    )
    restart("etcd", "kube-apiserver")
    approved: set[str] = set()
    final = wait_all(kube, runs, approved, timeout=80)
    assert_exactly_once(kube, final)
    assert operator.process is not None
    assert operator.process.poll() is None, "the operator must ride out the outage"

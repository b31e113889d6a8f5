"""Concurrency pools and circuit breakers across runs, on the real control plane."""

from __future__ import annotations

import json
import time

from tests.e2e.conftest import Kube, Operator
from tests.e2e.test_lifecycle import run_of


def scripted(name: str, exit_code: int, delay: str, **step: object) -> str:
    annotations = {
        "braid.dev/test-exit-code": str(exit_code),
        "braid.dev/test-delay": delay,
        "braid.dev/test-output": json.dumps({"ok": exit_code == 0}),
    }
    return json.dumps(
        {
            "apiVersion": "braid.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": name},
            "spec": {
                "steps": [
                    {
                        "name": "call",
                        "container": {
                            "image": "model-client",
                            "podTemplate": {"metadata": {"annotations": annotations}},
                        },
                        **step,
                    }
                ]
            },
        }
    )


def test_a_pool_admits_one_attempt_at_a_time_across_runs(kube: Kube, operator: Operator) -> None:
    kube.apply(scripted("pooled", 0, "2s", concurrency={"key": "slow-model", "limit": 1}))
    runs = [kube.create(run_of("pooled")) for _ in range(3)]
    most, waiting_seen = 0, False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pods = kube.json("get", "pods", "-l", "braid.dev/concurrency-key=slow-model")["items"]
        live = [p for p in pods if p["status"].get("phase") not in ("Succeeded", "Failed")]
        most = max(most, len(live))
        statuses = [kube.run_status(r) for r in runs]
        steps = [s for st in statuses for s in st.get("steps", [])]
        waiting_seen |= any(s.get("reason") == "WaitingForConcurrency" for s in steps)
        done = [
            c
            for st in statuses
            for c in st.get("conditions", [])
            if c["type"] == "Succeeded" and c["status"] == "True"
        ]
        if len(done) == 3:
            break
        time.sleep(0.2)
    assert len(done) == 3, statuses
    assert most == 1
    assert waiting_seen
    metrics = operator.metrics()
    assert metrics.get('braid_concurrency_in_use{key="slow-model"}', 0) == 0


def test_a_breaker_opens_across_runs_and_is_visible(kube: Kube, operator: Operator) -> None:
    breaker = {"key": "flaky-api", "failureThreshold": 2, "coolDownSeconds": 600}
    kube.apply(scripted("flaky", 1, "0s", circuitBreaker=breaker))
    for _ in range(2):
        kube.wait_finished(kube.create(run_of("flaky")))
    third = kube.create(run_of("flaky"))
    status = kube.wait_finished(third)
    step = status["steps"][0]
    assert step["reason"] == "CircuitOpen", step
    assert step.get("attemptName")
    pods = kube.json("get", "pods", "-l", f"braid.dev/run={third}")["items"]
    assert not pods, "an open breaker starts no pod"
    assert status["circuitBreakers"][0]["state"] == "Open"
    assert operator.metrics()['braid_circuit_breaker_state{key="flaky-api"}'] == 1

"""Sleep steps on the real control plane: the operator requeues the run for its wake-up (no
Pod, no polling), and a restart while it sleeps loses nothing."""

from __future__ import annotations

import yaml

from tests.e2e.conftest import Executor, Kube, Operator


def test_a_run_sleeps_through_an_operator_restart_and_goes_on(
    kube: Kube, operator: Operator, executor: Executor
) -> None:
    name = kube.create(
        yaml.safe_dump(
            {
                "apiVersion": "braid.dev/v1alpha1",
                "kind": "WorkflowRun",
                "metadata": {"generateName": "nap-"},
                "spec": {
                    "workflow": {
                        "steps": [
                            {"name": "nap", "sleep": {"durationSeconds": 4}},
                            {
                                "name": "after",
                                "container": {
                                    "image": "python:3.12-slim",
                                    "command": ["python3", "-c", "print('up')"],
                                },
                            },
                        ]
                    }
                },
            }
        )
    )
    kube.wait_for(
        "the sleep",
        lambda: (kube.run_status(name).get("steps") or [{}])[0].get("reason") == "Sleeping",
    )
    operator.kill()
    operator.start()
    status = kube.wait_finished(name, timeout=60)
    assert status["phase"] == "Succeeded", operator.log()[-3000:]
    nap = status["steps"][0]
    assert nap["reason"] == "Woke"
    assert nap["outputs"]["sleptSeconds"] == 4.0
    pods = kube.json("get", "pods", "-l", f"braid.dev/run={name}")["items"]
    assert [p["metadata"]["labels"]["braid.dev/step"] for p in pods] == ["after"]

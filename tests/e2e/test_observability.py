"""Metrics move as runs progress; SLA breaches show while the run is still running."""

from __future__ import annotations

import json

from tests.e2e.conftest import Kube, Operator
from tests.e2e.test_lifecycle import run_of, scripted_workflow


def sample(metrics: dict[str, float], name: str, **labels: str) -> float:
    """The value of the first sample of `name` carrying these labels; 0 when absent."""
    for key, value in metrics.items():
        metric, _, rest = key.partition("{")
        if metric == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            return value
    return 0.0


def test_metrics_move_and_sla_breaches_while_running(kube: Kube, operator: Operator) -> None:
    workflow = json.loads(scripted_workflow("slow", 2, delay="6s"))
    workflow["spec"]["sla"] = {"maxDurationSeconds": 3}
    kube.apply(json.dumps(workflow))
    ns = str(kube.namespace)
    kube.wait_for("the metrics endpoint", lambda: _try(operator))
    before = operator.metrics()
    assert sample(before, "braid_runs_started_total", namespace=ns, workflow="slow") == 0
    run = kube.create(run_of("slow"))

    def breached() -> bool:
        status = kube.run_status(run)
        cond = next((c for c in status.get("conditions", []) if c["type"] == "SLABreached"), None)
        running = status.get("phase") == "Running"
        return bool(cond and cond["status"] == "True" and running)

    kube.wait_for("SLABreached while the run is still running", breached, timeout=30)
    during = operator.metrics()
    assert sample(during, "braid_runs_started_total", namespace=ns, workflow="slow") == 1
    assert sample(during, "braid_active_runs", namespace=ns, workflow="slow") == 1
    assert (
        sample(during, "braid_sla_breaches_total", namespace=ns, workflow="slow", scope="run") == 1
    )
    events = kube.json(
        "get", "events", "--field-selector", f"involvedObject.name={run},reason=SLABreached"
    )["items"]
    assert events
    assert events[0]["type"] == "Warning"
    kube.wait_finished(run, timeout=60)
    after = kube.wait_for(
        "the finished run in the metrics",
        lambda: (
            (m := operator.metrics())
            and sample(
                m, "braid_runs_finished_total", namespace=ns, workflow="slow", result="Succeeded"
            )
            == 1
            and m
        ),
    )
    assert sample(after, "braid_active_runs", namespace=ns, workflow="slow") == 0
    assert (
        sample(
            after,
            "braid_step_duration_seconds_count",
            namespace=ns,
            workflow="slow",
            step="s0",
            result="Succeeded",
        )
        == 1
    )
    assert sample(after, "braid_api_requests_total", verb="POST", resource="pods") >= 2
    assert sample(after, "braid_reconcile_duration_seconds_count") > 0
    history = [h["reason"] for h in kube.run_status(run)["history"]]
    assert history[0] == "RunStarted"
    assert "SLABreached" in history
    assert history[-1] == "RunSucceeded"


def _try(operator: Operator) -> bool:
    try:
        operator.metrics()
    except OSError:
        return False
    return True

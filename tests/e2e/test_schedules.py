"""WorkflowSchedules on the real control plane, at the finest granularity croniter allows
(seconds): runs start on time, an overlapping time is skipped under Forbid, finished runs
past the history limit go, suspend stops it, and `kubectl get bws` shows the times."""

from __future__ import annotations

import time

import yaml

from tests.e2e.conftest import Executor, Kube, Operator

WORKFLOW = {
    "apiVersion": "braid.dev/v1alpha1",
    "kind": "Workflow",
    "metadata": {"name": "report"},
    "spec": {
        "params": [{"name": "who", "default": "nobody"}],
        "steps": [{"name": "nap", "sleep": {"durationSeconds": 3}}],
        "outputs": {"who": "params.who"},
    },
}


def scheduled(kube: Kube) -> list[dict]:
    return kube.json("get", "workflowruns", "-l", "braid.dev/schedule=every-2s")["items"]


def test_a_schedule_starts_runs_forbids_overlaps_and_keeps_its_history(
    kube: Kube, operator: Operator, executor: Executor
) -> None:
    kube.apply(yaml.safe_dump(WORKFLOW))
    kube.apply(
        yaml.safe_dump(
            {
                "apiVersion": "braid.dev/v1alpha1",
                "kind": "WorkflowSchedule",
                "metadata": {"name": "every-2s"},
                "spec": {
                    "schedules": ["*/2 * * * * *"],
                    "concurrencyPolicy": "Forbid",
                    "successfulRunsHistoryLimit": 1,
                    "runTemplate": {
                        "metadata": {"labels": {"team": "ops"}},
                        "spec": {"workflowRef": {"name": "report"}, "params": {"who": "cron"}},
                    },
                },
            }
        )
    )

    def status() -> dict:
        return kube.json("get", "workflowschedule", "every-2s").get("status") or {}

    kube.wait_for(
        "a skipped overlap", lambda: "(Forbid)" in status().get("message", ""), timeout=30
    )
    kube.wait_for(
        "a run to have succeeded",
        lambda: (
            len([r for r in scheduled(kube) if (r.get("status") or {}).get("phase") == "Succeeded"])
            >= 1
            and status().get("lastSuccessfulTime")
        ),
        timeout=30,
    )
    runs = scheduled(kube)
    first = runs[0]
    assert first["metadata"]["labels"]["team"] == "ops"
    assert first["metadata"]["ownerReferences"][0]["kind"] == "WorkflowSchedule"
    assert first["spec"]["params"] == {"who": "cron"}
    assert first["metadata"]["annotations"]["braid.dev/scheduled-time"].endswith("Z")
    # Forbid: never two at once
    running = [r for r in runs if (r.get("status") or {}).get("phase") != "Succeeded"]
    assert len(running) <= 1
    s = status()
    assert s["nextScheduleTime"] > s["lastScheduleTime"]
    table = kube.run("get", "bws", "every-2s").stdout
    assert "*/2 * * * * *" in table
    assert "every-2s" in table
    # history: at most one successful run is kept
    kube.wait_for(
        "the history to be trimmed",
        lambda: (
            len([r for r in scheduled(kube) if (r.get("status") or {}).get("phase") == "Succeeded"])
            == 1
        ),
        timeout=30,
    )
    kube.run(
        "patch", "workflowschedule", "every-2s", "--type=merge", "-p", '{"spec": {"suspend": true}}'
    )
    kube.wait_for("suspend to be seen", lambda: status().get("message") == "suspended", timeout=40)
    before = {r["metadata"]["name"] for r in scheduled(kube)}
    time.sleep(4)  # two due times pass while suspended
    assert {r["metadata"]["name"] for r in scheduled(kube)} <= before

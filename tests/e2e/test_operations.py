"""Operating Braid: shards by label selector, and the webhook policy of the operator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Kube, Operator
from tests.e2e.test_lifecycle import scripted_workflow


def labelled_run(workflow: str, shard: str) -> str:
    return json.dumps(
        {
            "apiVersion": "braid.dev/v1alpha1",
            "kind": "WorkflowRun",
            "metadata": {"generateName": f"{workflow}-{shard}-", "labels": {"shard": shard}},
            "spec": {"workflowRef": {"name": workflow}},
        }
    )


def test_two_shards_split_the_runs_by_label(kube: Kube, tmp_path: Path) -> None:
    shards = {
        s: Operator(kube, tmp_path, args=(f"--selector=shard={s}",), name=f"shard-{s}")
        for s in ("a", "b")
    }
    for op in shards.values():
        op.start()
    try:
        kube.apply(scripted_workflow("sharded", 2, delay="0s"))
        runs = {s: [kube.create(labelled_run("sharded", s)) for _ in range(3)] for s in shards}
        for names in runs.values():
            for name in names:
                kube.wait_finished(name)
        for name in runs["a"]:
            pods = kube.json("get", "pods", "-l", f"braid.dev/run={name}")["items"]
            assert all(p["metadata"]["labels"]["shard"] == "a" for p in pods)
        for s, op in shards.items():
            other = "b" if s == "a" else "a"
            log = op.log()
            assert all(name in log for name in runs[s]), log
            assert not any(name in log for name in runs[other]), log
    finally:
        for op in shards.values():
            op.stop()


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://127.0.0.2:1/"])
def test_the_operator_refuses_webhooks_to_denied_addresses(
    kube: Kube, tmp_path: Path, url: str
) -> None:
    op = Operator(kube, tmp_path, webhook_allow=())
    op.start()
    try:
        kube.apply(
            json.dumps(
                {
                    "apiVersion": "braid.dev/v1alpha1",
                    "kind": "Workflow",
                    "metadata": {"name": "sneaky"},
                    "spec": {"steps": [{"name": "steal", "webhook": {"url": url}}]},
                }
            )
        )
        run = kube.create(
            json.dumps(
                {
                    "apiVersion": "braid.dev/v1alpha1",
                    "kind": "WorkflowRun",
                    "metadata": {"generateName": "sneaky-"},
                    "spec": {"workflowRef": {"name": "sneaky"}},
                }
            )
        )
        status = kube.wait_finished(run)
        step = status["steps"][0]
        assert step["reason"] == "WebhookFailed"
        assert "refused" in step["message"]
        assert "webhook policy denies" in step["message"]
    finally:
        op.stop()

"""The step cache on the real control plane: a success kept in the namespace's braid-cache
ConfigMap is reused by a later run, across an operator restart, without a Pod."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml

from tests.e2e.conftest import Executor, Kube, Operator

WORKFLOW = {
    "apiVersion": "braid.dev/v1alpha1",
    "kind": "Workflow",
    "metadata": {"name": "memo"},
    "spec": {
        "params": [{"name": "url", "default": "https://example.com/a"}],
        "steps": [
            {
                "name": "fetch",
                "cache": {"key": "'fetch:' + params.url", "maxAgeSeconds": 3600},
                "container": {
                    "image": "python:3.12-slim",
                    "command": ["python3", "-c"],
                    "args": [
                        (
                            "import json, os, sys; json.dump({'body': 'page ' + sys.argv[1]}, "
                            "open(os.environ['BRAID_OUTPUT'], 'w'))"
                        ),
                        "${{ params.url }}",
                    ],
                },
            }
        ],
        "outputs": {"body": "steps.fetch.outputs.body"},
    },
}


@pytest.fixture
def caching_operator(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    op = Operator(kube, tmp_path_factory.mktemp("operator"), args=("--step-cache",))
    op.start()
    yield op
    op.stop()


def run_once(kube: Kube) -> dict:
    name = kube.create(
        yaml.safe_dump(
            {
                "apiVersion": "braid.dev/v1alpha1",
                "kind": "WorkflowRun",
                "metadata": {"generateName": "memo-"},
                "spec": {"workflowRef": {"name": "memo"}},
            }
        )
    )
    status = kube.wait_finished(name, timeout=60)
    return {"name": name, **status}


def test_a_cached_success_is_reused_by_a_later_run_across_a_restart(
    kube: Kube, caching_operator: Operator, executor: Executor
) -> None:
    kube.apply(yaml.safe_dump(WORKFLOW))
    first = run_once(kube)
    assert first["phase"] == "Succeeded", caching_operator.log()[-3000:]
    assert first["steps"][0]["reason"] == "Succeeded"
    stored = kube.json("get", "configmap", "braid-cache")
    assert stored["metadata"]["labels"]["braid.dev/cache"] == "true"
    (entry,) = [json.loads(v) for v in stored["data"].values()]
    assert (entry["run"], entry["outputs"]) == (
        first["name"],
        {"body": "page https://example.com/a"},
    )
    caching_operator.kill()  # the cache is the ConfigMap, not the operator's memory
    caching_operator.start()
    second = run_once(kube)
    assert second["phase"] == "Succeeded", caching_operator.log()[-3000:]
    fetch = second["steps"][0]
    assert (fetch["reason"], fetch["attempts"]) == ("Cached", 0)
    assert first["name"] in fetch["message"]
    assert second["outputs"] == {"body": "page https://example.com/a"}
    pods = kube.json("get", "pods", "-l", f"braid.dev/run={second['name']}")["items"]
    assert pods == []

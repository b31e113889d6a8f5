"""The hostile corpus against the real API server and operator: each manifest is refused by
`kubectl apply` (schema, CEL rules) or, if the API server takes it, a run of it fails at once
as InvalidSpec naming the field; the operator neither crashes nor wedges."""

from __future__ import annotations

import json

import pytest

from tests.corpus import CASES
from tests.e2e.conftest import Kube, Operator


def leaf(path: str) -> str:
    """The last field name of a path: what both kubectl and Braid name in their errors."""
    return path.replace("]", "").split(".")[-1].split("[")[0]


@pytest.mark.timeout(300)
def test_every_hostile_manifest_is_refused_at_apply_or_fails_its_run(
    kube: Kube, operator: Operator
) -> None:
    admitted: dict[str, str] = {}
    refused = 0
    for i, case in enumerate(CASES):
        manifest = json.loads(json.dumps(case.manifest))
        manifest["metadata"]["name"] = f"hostile-{i}"
        result = kube.run("apply", "-f", "-", stdin=json.dumps(manifest), check=False, timeout=60)
        if result.returncode != 0:
            refused += 1
            # The field is named, or the request was too large to look at (over 3 MiB).
            named = leaf(case.path) in result.stderr or "spec" in result.stderr
            assert named or "too large" in result.stderr, (
                case.id,
                result.stderr[:500],
            )
            continue
        run = {
            "apiVersion": "braid.dev/v1alpha1",
            "kind": "WorkflowRun",
            "metadata": {"name": f"hostile-{i}"},
            "spec": {"workflowRef": {"name": f"hostile-{i}"}},
        }
        kube.create(json.dumps(run))
        admitted[case.id] = f"hostile-{i}"
    assert refused >= len(CASES) // 2, "most of the corpus never gets past the API server"
    for case_id, run in admitted.items():
        case = next(c for c in CASES if c.id == case_id)
        status = kube.wait_finished(run, timeout=60)
        cond = next(c for c in status["conditions"] if c["type"] == "Succeeded")
        assert (cond["status"], cond["reason"]) == ("False", "InvalidSpec"), (case_id, cond)
        assert case.path in cond["message"], (case_id, cond["message"][:500])
    # Still healthy: a good run goes through.
    assert operator.process is not None
    assert operator.process.poll() is None
    kube.apply(
        json.dumps(
            {
                "apiVersion": "braid.dev/v1alpha1",
                "kind": "Workflow",
                "metadata": {"name": "fine"},
                "spec": {
                    "steps": [
                        {
                            "name": "a",
                            "container": {
                                "image": "x",
                                "podTemplate": {
                                    "metadata": {"annotations": {"braid.dev/test-exit-code": "0"}}
                                },
                            },
                        }
                    ]
                },
            }
        )
    )
    good = kube.create(
        json.dumps(
            {
                "apiVersion": "braid.dev/v1alpha1",
                "kind": "WorkflowRun",
                "metadata": {"generateName": "fine-"},
                "spec": {"workflowRef": {"name": "fine"}},
            }
        )
    )
    cond = next(c for c in kube.wait_finished(good)["conditions"] if c["type"] == "Succeeded")
    assert cond["status"] == "True"

"""Artifacts on the real control plane with a real S3 server (versitygw on loopback): the
operator gives step Pods Braid's init container and sidecar; the test's executor runs the very
commands those containers name (as the kubelet would, with the sidecar told by SIGTERM that
the step ended). A step writes 5 MiB, the next reads it with the same sha256, the run object
stays small; a retried attempt writes beside the first; deleting the run deletes its objects."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Executor, Kube, Operator
from tests.s3 import S3

PY = sys.executable
MiB = 1 << 20


@pytest.fixture
def artifact_operator(
    kube: Kube, s3: S3, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    kube.apply(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "braid-artifacts"},
                "stringData": {"accessKey": s3.access_key, "secretKey": s3.secret_key},
            }
        )
    )
    op = Operator(
        kube,
        tmp_path_factory.mktemp("operator"),
        args=(
            f"--artifact-endpoint={s3.endpoint}",
            f"--artifact-bucket={s3.bucket}",
            "--artifact-prefix=e2e",
            "--artifact-secret=braid-artifacts",
            "--artifact-image=braid:test",
        ),
        env=s3.env,
    )
    op.start()
    yield op
    op.stop()


def run_of(kube: Kube, spec: dict[str, Any]) -> str:
    return kube.create(
        yaml.safe_dump(
            {
                "apiVersion": "braid.dev/v1alpha1",
                "kind": "WorkflowRun",
                "metadata": {"generateName": "art-"},
                "spec": {"workflow": spec},
            }
        )
    )


def step(name: str, script: str, **container: Any) -> dict[str, Any]:
    return {
        "name": name,
        "container": {"image": "python", "command": [PY, "-c", script], **container},
    }


WRITE = (
    "import os, sys\n"
    "n = int(os.environ['BRAID_ATTEMPT'])\n"
    "open(os.path.join(os.environ['BRAID_ARTIFACTS'], 'blob.bin'), 'wb').write("
    "bytes(range(256)) * (5 * 4096) + bytes([n]))\n"
    "sys.exit(1 if n == 1 else 0)\n"
)
READ = (
    "import hashlib, json, os\n"
    "data = open(os.path.join(os.environ['BRAID_INPUTS'], 'in', 'blob.bin'), 'rb').read()\n"
    "json.dump({'sha256': hashlib.sha256(data).hexdigest(), 'size': len(data)},"
    " open(os.environ['BRAID_OUTPUT'], 'w'))\n"
)


def test_a_5_mib_artifact_passes_between_steps_retried_and_collected_with_the_run(
    kube: Kube, s3: S3, artifact_operator: Operator, executor: Executor, tmp_path: Path
) -> None:
    name = run_of(
        kube,
        {
            "steps": [
                {
                    **step("write", WRITE),
                    "retry": {"limit": 1, "backoff": {"initialDelaySeconds": 0}},
                },
                step(
                    "read",
                    READ,
                    inputs={
                        "artifacts": [
                            {"from": "steps.write.artifacts['blob.bin']", "path": "in/blob.bin"}
                        ]
                    },
                    artifactLimits={"maxFiles": 0},
                ),
            ]
        },
    )
    status = kube.wait_finished(name, timeout=180)
    assert status["phase"] == "Succeeded", artifact_operator.log()[-3000:]
    steps = {s["name"]: s for s in status["steps"]}
    blob = steps["write"]["artifacts"]["blob.bin"]
    expected = bytes(range(256)) * (5 * 4096) + bytes([2])
    assert blob["size"] == 5 * MiB + 1
    assert blob["sha256"] == hashlib.sha256(expected).hexdigest()
    assert blob["uri"] == f"s3://braid/e2e/{kube.namespace}/{name}/{name}-write-2/blob.bin"
    assert steps["read"]["outputs"] == {"sha256": blob["sha256"], "size": 5 * MiB + 1}
    # references only: the run object stays small
    run = kube.json("get", "workflowrun", name)
    assert len(json.dumps(run)) < 16 * 1024
    assert run["metadata"]["finalizers"] == ["braid.dev/artifacts"]
    # the failed first attempt wrote beside the second, not over it
    prefix = f"e2e/{kube.namespace}/{name}/"
    assert s3.keys(prefix) == [
        f"{prefix}{name}-write-1/blob.bin",
        f"{prefix}{name}-write-2/blob.bin",
    ]
    # the Pods: Braid's containers in Braid's image, credentials only there
    pod = kube.json("get", "pod", f"{name}-read-1")
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["braid-inputs"]
    assert "AWS_SECRET_ACCESS_KEY" not in json.dumps(pod["spec"]["containers"])
    # kubectl braid artifacts lists them and fetches one from the bucket, checking its digest
    env = {
        **kube.env,
        **s3.env,
        "BRAID_ARTIFACT_ENDPOINT": s3.endpoint,
        "BRAID_ARTIFACT_BUCKET": s3.bucket,
    }
    listed = subprocess.run(
        [PY, "-m", "braid.cli", "artifacts", name, "-n", str(kube.namespace)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert "blob.bin" in listed.stdout
    assert "5.0 MiB" in listed.stdout
    target = tmp_path / "blob.bin"
    got = subprocess.run(
        [PY, "-m", "braid.cli", "artifacts", name, "write", "--get", "blob.bin", "-o", str(target),
         "-n", str(kube.namespace)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert target.read_bytes() == expected
    # deleting the run deletes its objects, then the run
    kube.run("delete", "workflowrun", name, "--wait=true", "--timeout=60s")
    assert s3.keys(prefix) == []


def test_too_much_fails_the_step_with_artifact_too_large(
    kube: Kube, s3: S3, artifact_operator: Operator, executor: Executor
) -> None:
    big = (
        "import os; open(os.path.join(os.environ['BRAID_ARTIFACTS'], 'x'), 'wb').write(b'x' * 5000)"
    )
    name = run_of(kube, {"steps": [step("big", big, artifactLimits={"maxBytes": 1000})]})
    status = kube.wait_finished(name, timeout=120)
    s = status["steps"][0]
    assert (status["phase"], s["reason"]) == ("Failed", "ArtifactTooLarge"), (
        artifact_operator.log()[-2000:]
    )
    assert "the limit is 1000 bytes" in s["message"]
    assert s3.keys(f"e2e/{kube.namespace}/{name}/") == []


def test_a_fan_out_iterates_over_a_list_kept_in_an_artifact(
    kube: Kube, s3: S3, artifact_operator: Operator, executor: Executor
) -> None:
    plan = (
        "import json, os\n"
        "json.dump([{'n': i} for i in range(12)],"
        " open(os.path.join(os.environ['BRAID_ARTIFACTS'], 'items.json'), 'w'))\n"
    )
    work = "import json, os, sys; json.dump({'sq': int(sys.argv[1]) ** 2}, open(os.environ['BRAID_OUTPUT'], 'w'))"
    name = run_of(
        kube,
        {
            "steps": [
                step("plan", plan),
                {
                    "name": "work",
                    "fanOut": {
                        "itemsFrom": "steps.plan.artifacts['items.json']",
                        "parallelism": 4,
                        "container": {
                            "image": "python",
                            "command": [PY, "-c", work, "${{ string(item.n) }}"],
                            "artifactLimits": {"maxFiles": 0},
                        },
                    },
                },
            ],
            "outputs": {"total": "steps.work.outputs.items.map(i, i.sq).sum()"},
        },
    )
    status = kube.wait_finished(name, timeout=180)
    assert status["phase"] == "Succeeded", artifact_operator.log()[-3000:]
    assert status["outputs"] == {"total": sum(i * i for i in range(12))}
    assert status["steps"][1]["itemCount"] == 12
    # the list is in the bucket, not in the run's spec or status
    run = json.dumps(kube.json("get", "workflowrun", name))
    assert '"n": 11' not in run


def test_example_12_runs_in_the_cluster(
    kube: Kube, s3: S3, artifact_operator: Operator, executor: Executor
) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples" / "12-artifacts"
    kube.apply(examples / "workflow.yaml")
    name = kube.create(examples / "run.yaml")
    status = kube.wait_finished(name, timeout=120)
    assert status["phase"] == "Succeeded", artifact_operator.log()[-3000:]
    outputs = status["outputs"]
    assert (outputs["sources"], outputs["notesBytes"]) == (2000, 169780)
    assert outputs["summary"] == (
        f"s3://braid/e2e/{kube.namespace}/{name}/{name}-summarize-1/summary.md"
    )
    # publish writes none: its Pod has the inputs container and no sidecar
    pod = kube.json("get", "pod", f"{name}-publish-1")
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["braid-inputs"]

"""Artifacts against a real S3 server (versitygw on loopback) and a real directory: the store,
the in-Pod agent (the init container's and the sidecar's code, run with the environment the
operator gives them), limits, hostile files, and local runs end to end."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from braid.api.run import RunPhase
from braid.api.workflow import WorkflowSpec
from braid.artifacts import agent
from braid.artifacts.files import ArtifactError, collect
from braid.artifacts.store import LocalStore, Repository, S3Store, attempt_prefix
from braid.artifacts.transfer import download, upload
from braid.engine.actions import InputArtifact
from braid.local.runner import LocalRun
from tests.s3 import S3

MiB = 1 << 20


def repo(s3: S3, prefix: str = "braid") -> Repository:
    return Repository(s3.endpoint, s3.bucket, prefix)


def test_s3_store_puts_gets_and_deletes_a_runs_prefix(s3: S3, tmp_path: Path):
    store = S3Store(repo(s3), s3.env)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(5 * MiB))
    out = tmp_path / "out"
    out.mkdir()
    (out / "big.bin").write_bytes(src.read_bytes())
    (out / "sub").mkdir()
    (out / "sub" / "a.txt").write_text("hello")
    prefix = attempt_prefix("braid", "ns", "run-1", "run-1-a-1")
    stored = upload(store, out, prefix, 10 * MiB, 10)
    assert set(stored) == {"big.bin", "sub/a.txt"}
    assert stored["big.bin"].sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert stored["big.bin"].uri == f"s3://braid/{prefix}big.bin"
    back = tmp_path / "back"
    download(
        store.get,
        [InputArtifact("x/big.bin", stored["big.bin"].uri, stored["big.bin"].sha256)],
        back,
    )
    assert (back / "x" / "big.bin").read_bytes() == src.read_bytes()
    # a tampered object is refused by its sha256
    with pytest.raises(ArtifactError, match="sha256 differs"):
        download(store.get, [InputArtifact("y", stored["sub/a.txt"].uri, "0" * 64)], back)
    assert store.delete_prefix("braid/ns/run-1/") == 2
    assert s3.keys("braid/ns/run-1/") == []


def test_inputs_are_read_only_from_the_namespaces_own_prefix(s3: S3, tmp_path: Path):
    store = S3Store(repo(s3), s3.env)
    (tmp_path / "f").write_text("other tenant")
    store.put("braid/other-ns/run/att/f", tmp_path / "f")
    for uri in (
        "s3://braid/braid/other-ns/run/att/f",
        "s3://braid/braid/ns/../other-ns/run/att/f",
        "s3://another-bucket/braid/ns/x",
        "https://example.com/x",
    ):
        with pytest.raises(ArtifactError, match="not an artifact"):
            store.get(uri, tmp_path / "x", scope="braid/ns/")


def test_wrong_credentials_fail_with_the_stores_reason(s3: S3, tmp_path: Path):
    store = S3Store(
        repo(s3), {"AWS_ACCESS_KEY_ID": "nobody", "AWS_SECRET_ACCESS_KEY": "wrong-secret"}
    )
    (tmp_path / "f").write_text("x")
    with pytest.raises(ArtifactError, match="storing braid/f"):
        store.put("braid/f", tmp_path / "f")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: (d / "link").symlink_to("/etc/passwd"), "a symbolic link"),
        (lambda d: os.mkfifo(d / "fifo"), "not a regular file"),
        (lambda d: (d / ".env").write_text("x"), "artifact names are paths"),
        (lambda d: (d / "bad name!").write_text("x"), "artifact names are paths"),
    ],
)
def test_hostile_files_are_refused_before_anything_is_stored(tmp_path: Path, make, message):
    make(tmp_path)
    with pytest.raises(ArtifactError, match=message):
        collect(tmp_path, MiB, 10)


def test_limits_are_checked_before_reading(tmp_path: Path):
    for i in range(3):
        (tmp_path / f"f{i}").write_bytes(b"x" * 1000)
    with pytest.raises(ArtifactError, match="more than 2 artifact file"):
        collect(tmp_path, MiB, 2)
    with pytest.raises(ArtifactError, match="pass 2500 bytes") as info:
        collect(tmp_path, 2500, 10)
    assert info.value.too_large


def pod_env(s3: S3, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **s3.env,
        agent.REPOSITORY: repo(s3).wire(),
        agent.TERMINATION_LOG: str(tmp_path / "termination-log"),
        **extra,
    }


def _wait_until_ready(ready: Path, timeout: float = 30) -> None:
    """Until the sidecar says it waits (the file its startupProbe looks for): on a busy
    machine its start-up can take longer than any fixed sleep, and an early SIGTERM would
    kill it before it blocks the signal."""
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if time.monotonic() > deadline:
            raise AssertionError("the agent never said it was ready")
        time.sleep(0.05)


def test_the_sidecar_stores_when_told_the_step_ended_and_reports_in_4_kib(s3: S3, tmp_path: Path):
    """The real command, as the kubelet runs it: SIGTERM once the step's container exited."""
    out = tmp_path / "artifacts"
    out.mkdir()
    env = pod_env(
        s3, tmp_path,
        **{agent.ARTIFACTS: str(out), agent.KEY_PREFIX: "braid/ns/r/r-a-1/",
           agent.MAX_BYTES: str(MiB), agent.MAX_FILES: "5",
           agent.READY: str(tmp_path / "ready")},
    )  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "braid.cli", "pod-agent", "store-outputs"],
        env={**os.environ, **env},
    )
    _wait_until_ready(tmp_path / "ready")  # the step runs meanwhile
    (out / "answer.md").write_text("# 42\n")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    report = (tmp_path / "termination-log").read_text()
    found, error, _ = agent.parse_report(report, "s3://braid/braid/ns/r/r-a-1/")
    assert error is None
    assert found == {
        "answer.md": {
            "size": 5,
            "sha256": hashlib.sha256(b"# 42\n").hexdigest(),
            "uri": "s3://braid/braid/ns/r/r-a-1/answer.md",
        }
    }
    assert s3.keys("braid/ns/r/") == ["braid/ns/r/r-a-1/answer.md"]
    # too much: nothing stored, and the report says why
    (out / "big").write_bytes(b"x" * (MiB + 1))
    agent.store_outputs({**env, agent.KEY_PREFIX: "braid/ns/r/r-a-2/"}, wait=False)
    _, error, too_large = agent.parse_report((tmp_path / "termination-log").read_text(), "")
    assert too_large
    assert "the limit is 1048576 bytes" in error
    assert s3.keys("braid/ns/r/r-a-2/") == []


def test_too_many_names_for_a_termination_message_are_too_large(s3: S3, tmp_path: Path):
    out = tmp_path / "artifacts"
    out.mkdir()
    for i in range(40):
        (out / f"{'n' * 60}-{i}").write_text("x")
    env = pod_env(
        s3, tmp_path,
        **{agent.ARTIFACTS: str(out), agent.KEY_PREFIX: "braid/ns/r/many/",
           agent.MAX_BYTES: str(MiB), agent.MAX_FILES: "40"},
    )  # fmt: skip
    agent.store_outputs(env, wait=False)
    _, error, too_large = agent.parse_report((tmp_path / "termination-log").read_text(), "")
    assert too_large
    assert "do not fit in the 4 KiB" in error


def test_the_init_container_fetches_inputs_or_says_which_failed(s3: S3, tmp_path: Path):
    store = S3Store(repo(s3), s3.env)
    (tmp_path / "src").write_text("input data")
    uri = store.put("braid/ns/r/r-a-1/data.txt", tmp_path / "src")
    inputs = tmp_path / "inputs"
    listed = [{"path": "in/data.txt", "uri": uri, "sha256": None}]
    env = pod_env(
        s3, tmp_path,
        **{agent.INPUTS: str(inputs), agent.INPUT_LIST: json.dumps(listed),
           agent.SCOPE: "braid/ns/"},
    )  # fmt: skip
    assert agent.fetch_inputs(env) == 0
    assert (inputs / "in" / "data.txt").read_text() == "input data"
    missing = [{"path": "x", "uri": "s3://braid/braid/ns/r/none", "sha256": None}]
    assert agent.fetch_inputs({**env, agent.INPUT_LIST: json.dumps(missing)}) == 1
    report = json.loads((tmp_path / "termination-log").read_text())
    assert report["error"].startswith("input artifacts: fetching s3://braid/braid/ns/r/none")


def test_a_local_run_passes_a_5_mib_artifact_and_a_retry_writes_beside_the_first(tmp_path: Path):
    script = (
        "import os, sys, json\n"
        "n = int(os.environ['BRAID_ATTEMPT'])\n"
        "open(os.path.join(os.environ['BRAID_ARTIFACTS'], 'blob.bin'), 'wb').write("
        "bytes([n]) * (5 << 20))\n"
        "sys.exit(1 if n == 1 else 0)\n"
    )
    read = (
        "import hashlib, json, os\n"
        "data = open(os.path.join(os.environ['BRAID_INPUTS'], 'blob.bin'), 'rb').read()\n"
        "json.dump({'sha256': hashlib.sha256(data).hexdigest(), 'size': len(data)},"
        " open(os.environ['BRAID_OUTPUT'], 'w'))\n"
    )
    spec = WorkflowSpec.model_validate(
        {
            "steps": [
                {
                    "name": "write",
                    "retry": {"limit": 1, "backoff": {"initialDelaySeconds": 0}},
                    "container": {"image": "x", "command": [sys.executable, "-c", script]},
                },
                {
                    "name": "read",
                    "container": {
                        "image": "x",
                        "command": [sys.executable, "-c", read],
                        "inputs": {
                            "artifacts": [
                                {"from": "steps.write.artifacts['blob.bin']", "path": "blob.bin"}
                            ]
                        },
                    },
                },
            ]
        }
    )
    store = tmp_path / "store"
    run = LocalRun("r", spec, {}, workdir=tmp_path / "work", artifacts_dir=store)
    status = asyncio.run(run.execute())
    assert status.phase == RunPhase.SUCCEEDED, status
    steps = {s.name: s for s in status.steps}
    blob = steps["write"].artifacts["blob.bin"]
    assert steps["read"].outputs == {"sha256": blob.sha256, "size": 5 << 20}
    assert blob.sha256 == hashlib.sha256(bytes([2]) * (5 << 20)).hexdigest()
    # each attempt has its own keys: the failed first attempt's file is beside, not under
    assert sorted(p.relative_to(store).as_posix() for p in store.rglob("*.bin")) == [
        "r/r-write-1/blob.bin",
        "r/r-write-2/blob.bin",
    ]
    assert blob.uri == (store / "r" / "r-write-2" / "blob.bin").resolve().as_uri()
    assert len(status.model_dump_json()) < 16 * 1024
    assert status.artifact_bytes == 5 << 20
    assert LocalStore(store).delete_prefix("r/") == 2


def test_a_local_fan_out_iterates_over_a_list_kept_in_an_artifact(tmp_path: Path):
    plan = (
        "import json, os\n"
        "json.dump([{'n': i} for i in range(6)],"
        " open(os.path.join(os.environ['BRAID_ARTIFACTS'], 'items.json'), 'w'))\n"
    )
    work = "import json, os, sys; json.dump({'sq': int(sys.argv[1]) ** 2}, open(os.environ['BRAID_OUTPUT'], 'w'))"
    spec = WorkflowSpec.model_validate(
        {
            "steps": [
                {
                    "name": "plan",
                    "container": {"image": "x", "command": [sys.executable, "-c", plan]},
                },
                {
                    "name": "work",
                    "fanOut": {
                        "itemsFrom": "steps.plan.artifacts['items.json']",
                        "container": {
                            "image": "x",
                            "command": [sys.executable, "-c", work, "${{ string(item.n) }}"],
                        },
                    },
                },
            ],
            "outputs": {"total": "steps.work.outputs.items.map(i, i.sq).sum()"},
        }
    )
    run = LocalRun("r", spec, {}, workdir=tmp_path / "work", artifacts_dir=tmp_path / "store")
    status = asyncio.run(run.execute())
    assert status.phase == RunPhase.SUCCEEDED, status
    assert status.outputs == {"total": 55}
    # a list that is not JSON fails the step, naming the field
    (tmp_path / "bad.py").write_text(
        "import os; open(os.path.join(os.environ['BRAID_ARTIFACTS'], 'items.json'), 'w').write('{oops')"
    )
    spec.steps[0].container.command = [sys.executable, str(tmp_path / "bad.py")]  # type: ignore[union-attr]
    status = asyncio.run(
        LocalRun(
            "r2", spec, {}, workdir=tmp_path / "w2", artifacts_dir=tmp_path / "store"
        ).execute()
    )
    work_status = status.steps[1]
    assert work_status.reason == "ExpressionError"
    assert "spec.steps[1].fanOut.itemsFrom: the item list is not JSON" in (
        work_status.message or ""
    )

"""kubectl braid's pure helpers, and its kubectl calls through a fake kubectl on PATH."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from braid.cli.plugin import KubectlError, approval_value, pending_gate

ROOT = Path(__file__).resolve().parents[2]


def test_approval_value_appends_the_users_entry_once():
    assert approval_value("", "alice", "1a2b3c4d") == "alice:1a2b3c4d"
    assert approval_value("alice", "bob", "1a2b3c4d") == "alice,bob:1a2b3c4d"
    assert approval_value("alice,bob:1a2b3c4d", "bob", "1a2b3c4d") == "alice,bob:1a2b3c4d"


def test_pending_gate_says_what_is_waiting():
    run = {"status": {"pendingApprovals": [{"step": "review", "digest": "d"}]}}
    assert pending_gate(run, "review")["digest"] == "d"
    with pytest.raises(
        KubectlError, match="step 'ship' is not waiting for approval \\(waiting: review\\)"
    ):
        pending_gate(run, "ship")


def fake_kubectl(tmp_path: Path, pods: list[dict]) -> Path:
    """A kubectl that answers `get pods` from a fixture and records every call."""
    script = tmp_path / "kubectl"
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        f"open({str(tmp_path / 'calls.jsonl')!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "if 'logs' in sys.argv:\n"
        "    print('log of ' + sys.argv[sys.argv.index('logs') + 1])\n"
        "else:\n"
        f"    print(json.dumps({{'items': {pods!r}}}))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return tmp_path


def pod(attempt: int) -> dict:
    return {"metadata": {"name": f"r-s-{attempt}", "labels": {"braid.dev/attempt": str(attempt)}}}


@pytest.mark.parametrize(("extra", "expected"), [([], "r-s-3"), (["--attempt", "2"], "r-s-2")])
def test_logs_reads_the_latest_or_the_chosen_attempt(tmp_path, extra, expected):
    bin_dir = fake_kubectl(tmp_path, [pod(1), pod(3), pod(2)])
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run(
        [sys.executable, "-m", "braid.cli", "logs", "r", "s", "-n", "ns", *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"log of {expected}\n"
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert calls[0] == [
        "-n",
        "ns",
        "-o",
        "json",
        "get",
        "pods",
        "-l",
        "braid.dev/run=r,braid.dev/step=s",
    ]
    assert calls[1] == ["-n", "ns", "logs", expected, "-c", "step"]


class ListingKubectl:
    """Answers `get workflowruns -l ...` with the runs given, whatever the selector."""

    def __init__(self, runs: list[dict]) -> None:
        self.runs = runs

    def json(self, *args: str) -> dict:
        assert args[:2] == ("get", "workflowruns")
        return {"items": self.runs}


def test_a_gate_of_a_child_run_is_found_only_in_children_the_parent_status_names():
    from braid.cli.plugin import gate_holder  # noqa: PLC0415

    gate = {"pendingApprovals": [{"step": "deploy", "digest": "d1"}]}
    real = {"metadata": {"name": "p-sub-1"}, "status": gate}
    forged = {"metadata": {"name": "evil"}, "status": {**gate, "pendingApprovals": [
        {"step": "deploy", "digest": "d2"}]}}  # fmt: skip
    parent = {
        "metadata": {"name": "p"},
        "status": {"steps": [{"name": "sub", "items": [{"index": 0, "childRun": "p-sub-1"}]}]},
    }
    holder, found = gate_holder(ListingKubectl([forged, real]), parent, "deploy")  # type: ignore[arg-type]
    assert holder["metadata"]["name"] == "p-sub-1"
    assert found["digest"] == "d1"
    with pytest.raises(KubectlError, match="not waiting for approval"):
        gate_holder(ListingKubectl([forged]), parent, "deploy")  # type: ignore[arg-type]

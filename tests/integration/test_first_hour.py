"""What a new user hit in their first hour with `braid run`, driven through the CLI (a
pseudo-terminal where a terminal matters): typed -p values, approvals that name a gate that
exists, invalid input as exit 2 (and as JSON with -o json), Ctrl-C at the prompt, a summary
that fits 80 columns, logs that do not pile up."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPROVAL = str(ROOT / "examples/07-approval/workflow.yaml")
GATED = """
apiVersion: braid.dev/v1alpha1
kind: Workflow
metadata: {name: gated}
spec:
  params:
    - {name: year, schema: {type: string}}
    - {name: count, default: 1}
  steps:
    - name: ship
      approval: {approvers: {users: [alice]}}
  outputs: {year: params.year, count: params.count}
"""


def braid(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "braid.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
        cwd=cwd,
    )


def gated(tmp_path: Path) -> str:
    path = tmp_path / "gated.yaml"
    path.write_text(GATED)
    return str(path)


def test_p_values_follow_the_params_schema(tmp_path):
    done = braid("run", gated(tmp_path), "-p", "year=2024", "-p", "count=3", "--approve",
                 "ship=alice", "-o", "json", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outputs"] == {"year": "2024", "count": 3}
    wrong = braid("run", gated(tmp_path), "-p", "yeer=2024", cwd=tmp_path)
    assert wrong.returncode == 2
    assert 'no such param (did you mean "year"?)' in wrong.stderr


def test_approvals_must_name_a_gate_once_and_a_listed_approver(tmp_path):
    typo = braid("run", APPROVAL, "--approve", "reveiw=alice", cwd=tmp_path)
    assert typo.returncode == 2
    assert 'no approval gate of that name (did you mean "review"?)' in typo.stderr
    both = braid("run", APPROVAL, "--approve", "review=alice", "--reject", "review", cwd=tmp_path)
    assert both.returncode == 2
    assert "given to both --approve and --reject" in both.stderr
    stranger = braid("run", gated(tmp_path), "-p", "year=1", "--approve", "ship=mallory",
                     cwd=tmp_path)  # fmt: skip
    assert stranger.returncode == 2
    assert "mallory may not decide ship" in stranger.stderr
    assert "its approvers are alice" in stranger.stderr


def test_invalid_input_exits_2_and_says_so_as_json_with_o_json(tmp_path):
    missing = braid("run", str(tmp_path / "nope.yaml"), "-o", "json", cwd=tmp_path)
    assert missing.returncode == 2
    doc = json.loads(missing.stdout)
    assert doc["valid"] is False
    assert doc["errors"][0]["file"].endswith("nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(GATED.replace("approval:", "aproval:"))
    invalid = braid("run", str(bad), "-o", "json", cwd=tmp_path)
    assert invalid.returncode == 2
    paths = [e["path"] for e in json.loads(invalid.stdout)["errors"]]
    assert any(p.startswith("spec.steps[0]") for p in paths), paths
    record = braid("run", gated(tmp_path), "-p", "year=1", "--approve", "ship=alice",
                   "--record", str(tmp_path / "no-such-dir" / "run.json"), cwd=tmp_path)  # fmt: skip
    assert record.returncode == 2
    assert "is not a directory; create it first" in record.stderr
    assert "Started run" not in record.stderr  # refused before anything ran


def test_local_run_logs_live_under_dot_braid_and_old_ones_go(tmp_path):
    runs = tmp_path / ".braid" / "runs"
    runs.mkdir(parents=True)
    for i in range(25):
        old = runs / f"old-{i:02d}"
        old.mkdir()
        os.utime(old, (1_000_000 + i, 1_000_000 + i))
    done = braid("run", gated(tmp_path), "-p", "year=1", "--approve", "ship=alice", "-o",
                 "json", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    logs = json.loads(done.stdout)["logs"]
    assert logs.startswith(".braid/runs/gated-")
    kept = sorted(p.name for p in runs.iterdir())
    assert len(kept) == 20
    assert "old-00" not in kept
    assert "old-24" in kept


def _on_a_terminal(args: list[str], cwd: Path, until: bytes | None = None, timeout: float = 30):
    """Run braid on an 80-column pseudo-terminal; Ctrl-C once ``until`` is shown. Returns
    the screen text, the exit code and the seconds from Ctrl-C to exit."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.chdir(cwd)
        os.environ.update(COLUMNS="80", LINES="40")
        os.execv(sys.executable, [sys.executable, "-m", "braid.cli", *args])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 80, 0, 0))
    out, began, interrupted = b"", time.monotonic(), None
    try:
        while time.monotonic() - began < timeout:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            if until is not None and interrupted is None and until in out:
                time.sleep(0.3)
                os.write(fd, b"\x03")  # the terminal turns it into SIGINT
                interrupted = time.monotonic()
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    screen = re.sub(rb"\x1b\[[0-9;?]*[a-zA-Z]", b"", out).decode(errors="replace")
    took = time.monotonic() - interrupted if interrupted is not None else None
    return screen, os.waitstatus_to_exitcode(status), took


def test_ctrl_c_at_the_approval_prompt_cancels_at_once(tmp_path):
    screen, code, took = _on_a_terminal(["run", APPROVAL], tmp_path, until=b"Approve review?")
    assert code == 130, screen
    assert took is not None
    assert took < 10, screen  # it used to hang until Enter
    assert "the run was cancelled" in screen
    assert screen.count("awaits 1 approval") == 1  # asked once, not said twice


def test_the_summary_fits_80_columns_and_says_a_rejection_once(tmp_path):
    screen, code, _ = _on_a_terminal(["run", APPROVAL, "--reject", "review=too risky"], tmp_path)
    assert code == 1, screen
    lines = screen.replace("\r", "").splitlines()
    table = [ln for ln in lines if ln.startswith((" propose", " review", " apply"))]
    assert len(table) == 3, screen
    header = [ln for ln in lines if ln.startswith(" step ")]
    assert all(len(ln.rstrip()) <= 80 for ln in [*header, *table]), screen
    assert sum("too risky" in ln for ln in lines if "Step review" in ln) == 1, screen


TYPOS = """apiVersion: braid.dev/v1alpha1
kind: Workflow
metadata: {name: typos}
spec:
  steps:
    - name: fetch
      container: {image: x}
    - name: use
      dependOn: [fetch]
      container: {image: x}
"""
MISREAD = TYPOS.replace("      dependOn: [fetch]\n", "      when: steps.fecth.outputs.ok\n")


def test_errors_carry_file_line_column_and_a_did_you_mean(tmp_path):
    typos = tmp_path / "typos.yaml"
    typos.write_text(TYPOS)
    lint = braid("lint", str(typos), cwd=tmp_path)
    assert lint.returncode == 1
    assert (
        f'{typos}:9:7: error: spec.steps[1].dependOn: unknown field (did you mean "dependsOn"?)'
        in lint.stderr
    )
    misread = tmp_path / "misread.yaml"
    misread.write_text(MISREAD)
    lint = braid("lint", str(misread), cwd=tmp_path)
    assert f"{misread}:9:7: error: spec.steps[1].when: unknown step 'fecth'" in lint.stderr
    assert '(did you mean "fetch"?)' in lint.stderr
    # two files: the error names the file (and line) the bad manifest is in
    run = braid("run", gated(tmp_path), str(misread), "-o", "json", cwd=tmp_path)
    assert run.returncode == 2
    (error,) = json.loads(run.stdout)["errors"]
    assert (error["file"], error["line"], error["column"]) == (str(misread), 9, 7)
    assert error["path"] == "spec.steps[1].when"


def test_graph_and_analyze_say_no_such_file_instead_of_asking_kubectl(tmp_path):
    for args in (["graph", "wrkflow.yaml"], ["analyze", "examples/nope/workflow.yaml"]):
        done = braid(*args, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert "no such file" in done.stderr
        assert "kubectl" not in done.stderr


def test_analyze_takes_run_globs_and_leaves_out_runs_of_other_workflows(tmp_path):
    sequential = str(ROOT / "examples/01-sequential/workflow.yaml")
    for name in ("run1.json", "run2.json"):
        assert braid("run", sequential, "--record", name, cwd=tmp_path).returncode == 0
    other = str(ROOT / "examples/02-parallel-threshold/workflow.yaml")
    assert braid("run", other, "--record", "other.json", cwd=tmp_path).returncode == 0
    recorded = json.loads((tmp_path / "run1.json").read_text())
    assert recorded["metadata"]["labels"]["braid.dev/workflow"] == "research-brief"
    for runs in (["--runs", "run*.json"], ["--runs", "run1.json", "run2.json"], ["--runs", "."]):
        done = braid("analyze", sequential, *runs, "-o", "json", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["runs"] == 2, runs
    mixed = braid("analyze", sequential, "--runs", ".", cwd=tmp_path)
    assert "left out 1 run(s) of other workflows" in mixed.stderr


def test_braid_crds_prints_to_stdout_unless_given_a_directory(tmp_path):
    printed = braid("crds", cwd=tmp_path)
    assert printed.returncode == 0
    assert printed.stdout.count("kind: CustomResourceDefinition") == 3
    assert list(tmp_path.iterdir()) == []  # nothing written where it was run
    written = braid("crds", "--dir", "out", cwd=tmp_path)
    assert written.returncode == 0
    assert len(list((tmp_path / "out").iterdir())) == 3


SLOW = """apiVersion: braid.dev/v1alpha1
kind: Workflow
metadata: {name: slow}
spec:
  steps:
    - name: think
      container:
        image: x
        command: [python3, -c, "import time; [print('tick', i, flush=True) or time.sleep(0.6) for i in range(4)]"]
    - name: many
      dependsOn: []
      fanOut:
        items: [1, 2, 3, 4, 5, 6]
        parallelism: 2
        container: {image: x, command: [python3, -c, "import time; time.sleep(0.8)"]}
"""


def test_a_terminal_shows_what_runs_live_and_follow_streams_step_output(tmp_path):
    slow = tmp_path / "slow.yaml"
    slow.write_text(SLOW)
    screen, code, _ = _on_a_terminal(["run", str(slow), "--follow"], tmp_path)
    assert code == 0, screen
    assert "think | tick 0" in screen
    assert "think | tick 3" in screen
    assert re.search(r"think running \d+\.\ds", screen), screen  # elapsed, live
    assert "running of 6" in screen  # the fan-out's counters
    assert "many[3]" not in screen  # no line per item on a terminal: the view counts them
    piped = braid("run", str(slow), "--follow", cwd=tmp_path)
    assert piped.returncode == 0
    assert "think | tick 2" in piped.stderr
    assert "running of" not in piped.stderr  # a pipe gets plain lines only


def test_braid_test_runs_every_examples_tests_and_shows_what_differs(tmp_path):
    done = braid("test", str(ROOT / "examples"), "-o", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout
    doc = json.loads(done.stdout)
    assert doc["failed"] == 0
    files = {Path(c["file"]).parent.name for c in doc["cases"]}
    examples = {p.name for p in (ROOT / "examples").iterdir() if p.is_dir()}
    assert files == examples  # every example ships its tests
    wrong = tmp_path / "wrong.test.yaml"
    wrong.write_text(
        f"apiVersion: braid.dev/v1alpha1\nkind: WorkflowTest\nmetadata: {{name: w}}\nspec:\n"
        f"  workflow: {APPROVAL}\n  cases:\n    - name: expects bob\n"
        "      decisions: {review: {approve: alice}}\n"
        "      stubs: {propose: {outputs: {summary: s, risk: low}}, nope: {}}\n"
        "      expect: {phase: Succeeded}\n"
        "    - name: approvedBy differs\n"
        "      decisions: {review: {approve: alice}}\n"
        "      stubs: {propose: {outputs: {summary: s, risk: low}}, apply: {outputs: {applied: s}}}\n"
        "      expect: {outputs: {approvedBy: [bob]}, ran: [propose, apply]}\n"
    )
    failed = braid("test", str(wrong), cwd=tmp_path)
    assert failed.returncode == 1
    assert "stubs.nope: no step, body step or finally step of that name" in failed.stderr
    assert 'outputs.approvedBy: expected ["bob"], got ["alice"]' in failed.stderr
    assert 'ran: expected ["propose", "apply"], got ["propose", "review", "apply"]' in failed.stderr
    broken = tmp_path / "broken.test.yaml"
    broken.write_text("kind: WorkflowTest\nspec: {cases: [{name: x, expekt: {}}]}\n")
    invalid = braid("test", str(broken), cwd=tmp_path)
    assert invalid.returncode == 2
    assert "expekt: unknown field" in invalid.stderr


def test_lint_takes_directories_and_stdin_and_speaks_json_and_github(tmp_path):
    every = braid("lint", str(ROOT / "examples"), cwd=tmp_path)
    assert every.returncode == 0, every.stderr  # Secrets and ConfigMaps beside them are skipped
    assert every.stderr.count("ok: ") >= 15
    typos = tmp_path / "typos.yaml"
    typos.write_text(TYPOS)
    (tmp_path / "also.yaml").write_text(MISREAD)
    both = braid("lint", str(tmp_path), "-o", "json", cwd=tmp_path)
    assert both.returncode == 1
    doc = json.loads(both.stdout)
    assert doc["valid"] is False
    assert {(Path(p["file"]).name, p["line"]) for p in doc["problems"]} == {
        ("typos.yaml", 9),
        ("also.yaml", 9),
    }  # every file, every problem, at once
    github = braid("lint", str(typos), "-o", "github", cwd=tmp_path)
    assert github.stdout.startswith(f"::error file={typos},line=9,col=7::spec.steps[1].dependOn")
    piped = subprocess.run(
        [sys.executable, "-m", "braid.cli", "lint", "-"],
        input=TYPOS,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert piped.returncode == 1
    assert "-:9:7: error: spec.steps[1].dependOn" in piped.stderr


def test_the_editor_schema_accepts_every_example_and_catches_a_typo(tmp_path):
    import jsonschema  # noqa: PLC0415 - a dependency of Braid's already
    import yaml  # noqa: PLC0415

    done = braid("schema", "--out", "braid.schema.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    validator = jsonschema.Draft202012Validator(
        json.loads((tmp_path / "braid.schema.json").read_text())
    )
    checked = 0
    for path in sorted((ROOT / "examples").glob("*/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("braid.dev/"):
                assert not list(validator.iter_errors(doc)), path
                checked += 1
    assert checked >= 30  # workflows, runs, schedules and their tests
    typo = yaml.safe_load(TYPOS)
    assert any("dependOn" in e.message for e in validator.iter_errors(typo))

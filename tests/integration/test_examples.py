"""Every example runs through `braid run` and produces its documented outputs."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import example_api_server

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def braid(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "braid.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
        cwd=ROOT,
    )


def run_json(*args: str) -> tuple[int, dict]:
    result = braid("run", *args, "-o", "json")
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def steps(doc: dict) -> dict[str, dict]:
    return {s["name"]: s for s in doc["steps"]}


def test_every_example_has_a_readme_workflow_and_run():
    folders = sorted(p for p in EXAMPLES.iterdir() if p.is_dir())
    assert [p.name[:2] for p in folders] == [f"{i:02d}" for i in range(1, 16)]
    for folder in folders:
        assert (folder / "README.md").exists(), folder
        assert (folder / "workflow.yaml").exists(), folder
        assert (folder / "run.yaml").exists(), folder
        assert (
            braid("lint", str(folder / "workflow.yaml"), str(folder / "run.yaml")).returncode == 0
        )


def test_01_sequential_passes_context():
    code, doc = run_json("examples/01-sequential/workflow.yaml", "examples/01-sequential/run.yaml")
    assert code == 0
    assert (
        doc["outputs"]["brief"]
        == "Brief on cats: Section on cats fact 1; Section on cats fact 2; Section on cats fact 3"
    )
    assert [s["phase"] for s in doc["steps"]] == ["Succeeded"] * 3


def test_02_parallel_threshold_goes_on_after_three_answers():
    code, doc = run_json("examples/02-parallel-threshold/workflow.yaml")
    assert code == 0
    assert doc["outputs"] == {"answer": "Paris", "votes": 3, "answered": 3}
    assert steps(doc)["ask"]["outputs"]["failed"] == 1


SECRETS = ("--secrets", "examples/model-api.yaml")


@pytest.fixture(scope="module")
def model_api():
    """The examples' stand-in model API (and the ReAct example's tool API)."""
    with example_api_server("model") as url:
        yield url


def run_model_example(example: str, url: str, *args: str) -> tuple[int, dict]:
    return run_json(f"examples/{example}/workflow.yaml", "-p", f"baseURL={url}/v1", *SECRETS, *args)


def test_03_orchestrator_worker_fans_out_over_the_models_plan(model_api):
    code, doc = run_model_example("03-orchestrator-worker", model_api)
    assert code == 0, doc
    assert doc["outputs"]["plan"] == [
        "RESEARCH done",
        "MESSAGING done",
        "TIMELINE done",
        "BUDGET done",
    ]
    assert steps(doc)["work"]["items"] == 4
    assert doc["outputs"]["tokens"] > 0


@pytest.mark.parametrize(
    ("ticket", "team", "skipped"),
    [
        ("I was charged twice", "billing", {"technical", "general"}),
        ("The app shows an error when I log in", "technical", {"billing", "general"}),
        ("Do you ship to Norway?", "general", {"billing", "technical"}),
    ],
)
def test_04_routing_sends_each_ticket_to_one_handler(model_api, ticket, team, skipped):
    code, doc = run_model_example("04-routing", model_api, "-p", f"ticket={ticket}")
    assert code == 0, doc
    assert doc["outputs"]["team"] == team
    assert {n for n, s in steps(doc).items() if s["phase"] == "Skipped"} == skipped
    assert all(steps(doc)[n]["reason"] == "WhenFalse" for n in skipped)


def test_05_react_loop_calls_tools_until_the_model_answers(model_api):
    code, doc = run_model_example("05-react-loop", model_api, "-p", f"toolsURL={model_api}/tools")
    assert code == 0, doc
    assert doc["outputs"] == {
        "answer": "Brest has the higher tide today, by 3.7 m.",
        "iterations": 3,
        "toolCalls": 3,  # two tide lookups at once (a webhook), then the calculator (a container)
    }
    # a tool the model names wrongly is not run: the item fails NoCaseMatched
    code, doc = run_model_example(
        "05-react-loop", model_api, "-p", "toolsURL=http://127.0.0.1:9/tools", "-p", "model=nope"
    )
    assert code == 1
    assert "does not exist" in steps(doc)["agent"]["message"]


@pytest.mark.parametrize(
    ("param", "message"),
    [
        (
            "unknown=1",
            "-p unknown: the workflow has no such param; params: baseURL, checker, maker, passScore",
        ),
        ("passScore=5", "params.passScore: 5 is greater than the maximum of 1"),
        ("passScore=abc", "params.passScore: 'abc' is not of type 'number'"),
    ],
)
def test_bad_params_are_rejected_before_anything_runs(param, message):
    result = braid("run", "examples/06-maker-checker/workflow.yaml", "-p", param, "-o", "json")
    assert result.returncode == 2  # invalid input
    doc = json.loads(result.stdout)  # -o json says so as JSON
    assert doc["valid"] is False
    said = [f"{e['path']}: {e['message']}" for e in doc["errors"]]
    assert any(m.startswith(message) for m in said), said


def test_06_maker_checker_iterates_until_the_score_passes(model_api):
    code, doc = run_model_example("06-maker-checker", model_api)
    assert code == 0, doc
    assert doc["outputs"] == {
        "draft": "Launch note +audience +date +price",
        "score": 1.0,
        "revisions": 3,
    }


def test_07_approval_approved_records_the_approver():
    code, doc = run_json("examples/07-approval/workflow.yaml", "--approve", "review=alice")
    assert code == 0
    assert doc["outputs"]["approvedBy"] == ["alice"]
    assert steps(doc)["review"]["approvals"][0]["user"] == "alice"


def test_07_approval_rejected_fails_with_the_reason():
    code, doc = run_json("examples/07-approval/workflow.yaml", "--reject", "review=too risky")
    assert code == 1
    assert steps(doc)["review"]["reason"] == "Rejected"
    assert "too risky" in doc["message"]
    assert steps(doc)["apply"]["phase"] == "Skipped"


def test_08_retry_then_compensate_in_reverse_order():
    code, doc = run_json("examples/08-retry-compensation/workflow.yaml")
    assert code == 1
    s = steps(doc)
    assert s["charge"]["attempts"] == 3
    assert s["ship"]["reason"] == "Error"
    assert s["charge"]["compensation"]["phase"] == "Succeeded"
    assert s["reserve"]["compensation"]["phase"] == "Succeeded"
    assert doc["finally"][0]["outputs"] == {"notified": True, "succeeded": False}


def test_08_succeeds_when_shipping_works():
    code, doc = run_json("examples/08-retry-compensation/workflow.yaml", "-p", "shippingWorks=true")
    assert code == 0
    assert "compensation" not in steps(doc)["charge"]
    assert doc["finally"][0]["outputs"] == {"notified": True, "succeeded": True}


@pytest.fixture
def api_server():
    with example_api_server() as url:
        yield url


def test_09_webhook_calls_the_api_and_routes_on_its_answer(api_server):
    code, doc = run_json("examples/09-webhook/workflow.yaml", "-p", f"baseUrl={api_server}")
    assert code == 0, doc
    assert doc["outputs"] == {"label": "urgent", "tokens": 7}
    assert steps(doc)["page-oncall"]["phase"] == "Succeeded"
    code, doc = run_json(
        "examples/09-webhook/workflow.yaml", "-p", f"baseUrl={api_server}", "-p", "text=hello there"
    )
    assert doc["outputs"]["label"] == "normal"
    assert steps(doc)["page-oncall"]["phase"] == "Skipped"


def test_09_webhook_failure_is_retried_then_reported(api_server):
    code, doc = run_json("examples/09-webhook/workflow.yaml", "-p", f"baseUrl={api_server}/nowhere")
    assert code == 1
    classify = steps(doc)["classify"]
    assert classify["attempts"] == 3
    assert classify["reason"] == "WebhookFailed"
    assert "HTTP 403" in classify["message"]


def test_10_secrets_reach_the_steps_and_are_masked(api_server):
    secrets = "examples/10-secrets/secrets.yaml"
    args = ("examples/10-secrets/workflow.yaml", "-p", f"baseUrl={api_server}")
    code, doc = run_json(*args, "--secrets", secrets)
    assert code == 0, doc
    assert doc["outputs"] == {"label": "urgent", "model": "demo-model-1", "keyLength": 24}
    assert steps(doc)["answer"]["outputs"]["oops"] == "***"
    assert "sk-demo" not in json.dumps(doc)
    # without the Secret: the step fails before it starts, saying how to give it
    code, doc = run_json(*args)
    assert code == 1
    assert (
        "Secret 'model-api' key 'authorization' is not given" in steps(doc)["classify"]["message"]
    )


def test_10_secrets_from_environment_variables(api_server):
    env = {
        "MODEL_API_AUTHORIZATION": "Bearer demo-token",
        "MODEL_API_API_KEY": "sk-demo-0123456789abcdef",
        "MODEL_SETTINGS_MODEL": "demo-model-1",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "braid.cli",
            "run",
            "examples/10-secrets/workflow.yaml",
            "-p",
            f"baseUrl={api_server}",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
    )
    doc = json.loads(result.stdout)
    # envFrom needs the whole ConfigMap, which only a --secrets file can give
    assert "ConfigMap 'model-settings' (envFrom) is not given" in steps(doc)["answer"]["message"]
    assert steps(doc)["classify"]["phase"] == "Succeeded"


def test_11_document_processing_every_path():
    wf = "examples/11-document-processing/workflow.yaml"
    code, doc = run_json(wf)
    assert code == 0, doc
    assert doc["outputs"] == {"type": "invoice", "extracted": 3, "reviewed": False}
    assert steps(doc)["human-review"]["phase"] == "Skipped"
    assert steps(doc)["validate"]["attempts"] == 2
    code, doc = run_json(wf, "-p", "unreadablePage=1", "--approve", "human-review=alice")
    assert code == 0, doc
    assert doc["outputs"] == {"type": "invoice", "extracted": 2, "reviewed": True}
    pages = steps(doc)["pages"]
    assert (pages["phase"], pages["reason"]) == ("Failed", "ThresholdUnreachable")
    assert doc["finally"][0]["outputs"] == {"phase": "Succeeded", "failures": ["pages"]}
    code, doc = run_json(wf, "-p", "unreadablePage=1", "--reject", "human-review=page 1 matters")
    assert code == 1
    assert "page 1 matters" in doc["message"]
    assert steps(doc)["validate"]["phase"] == "Skipped"
    assert doc["finally"][0]["outputs"]["phase"] == "Failed"
    code, doc = run_json(wf, "-p", "document=Service agreement|Term: 2 years")
    assert code == 0, doc
    assert doc["outputs"]["type"] == "contract"
    assert steps(doc)["invoice"]["phase"] == "Skipped"


def test_12_artifacts_pass_between_steps_and_are_listed(tmp_path):
    record = tmp_path / "run.json"
    store = tmp_path / "arts"
    code, doc = run_json(
        "examples/12-artifacts/workflow.yaml", "--artifacts", str(store), "--record", str(record)
    )
    assert code == 0, doc
    assert doc["outputs"]["sources"] == 2000
    assert doc["outputs"]["notesBytes"] == 169780
    research = steps(doc)["research"]["artifacts"]
    assert set(research) == {"notes.md", "data/sources.json"}
    assert research["notes.md"]["size"] == 169780
    assert doc["outputs"]["summary"].startswith(store.resolve().as_uri())
    assert "artifacts" not in steps(doc)["publish"]
    listed = braid("artifacts", str(record))
    assert listed.returncode == 0, listed.stderr
    assert "notes.md" in listed.stdout
    assert "165.8 KiB" in listed.stdout
    got = braid(
        "artifacts", str(record), "summarize", "--get", "summary.md", "-o", str(tmp_path / "s.md")
    )
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "s.md").read_text().startswith("# Summary")
    missing = braid("artifacts", str(record), "--get", "nope.md")
    assert missing.returncode == 1
    assert "no step has an artifact 'nope.md'" in missing.stderr


def test_04_routing_keeps_the_model_exchange_and_needs_the_key(model_api, tmp_path):
    arts = ("--artifacts", str(tmp_path))
    code, doc = run_model_example("04-routing", model_api, *arts)
    assert code == 0, doc
    assert doc["outputs"]["confidence"] == 0.9
    assert set(steps(doc)["classify"]["artifacts"]) == {"request.json", "response.json"}
    # without the key: a clear failure, nothing routed
    code, doc = run_json(
        "examples/04-routing/workflow.yaml", "-p", f"baseURL={model_api}/v1", *arts
    )
    assert code == 1
    assert "Secret 'model-api' key 'api-key' is not given" in steps(doc)["classify"]["message"]


def test_13_llm_fails_over_to_the_next_candidate_and_prices_the_call(model_api):
    code, doc = run_model_example("13-llm", model_api)
    assert code == 0, doc
    assert (doc["outputs"]["label"], doc["outputs"]["confidence"]) == ("billing", 0.9)
    classify = steps(doc)["classify"]
    assert classify["attempts"] == 2  # the overloaded model, then the other
    assert classify["route"]["candidate"] == "small"
    assert classify["route"]["failed"] == ["large"]
    assert "passed over large (failed here)" in classify["route"]["reason"]
    usage = classify["outputs"]["usage"]
    assert doc["outputs"]["cost"] == pytest.approx(
        usage["inputTokens"] * 0.0000005 + usage["outputTokens"] * 0.0000015
    )
    # a preferred model that answers is taken first
    code, doc = run_model_example("13-llm", model_api, "-p", "preferred=demo-classifier")
    assert steps(doc)["classify"]["route"]["candidate"] == "large"
    assert steps(doc)["classify"]["attempts"] == 1


def test_ctrl_c_cancels_and_runs_compensation(tmp_path):
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        """
apiVersion: braid.dev/v1alpha1
kind: Workflow
metadata: {name: slow}
spec:
  steps:
    - name: book
      container: {image: x, command: [python, -c, "print('booked')"]}
      compensation:
        container: {image: x, command: [python, -c, "import json,os; json.dump({'undone': True}, open(os.environ['BRAID_OUTPUT'], 'w'))"]}
    - name: wait
      container: {image: x, command: [python, -c, "import time; time.sleep(60)"]}
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "braid.cli", "run", str(wf), "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 30
    assert proc.stderr is not None
    for line in proc.stderr:
        if "▶ wait" in line or time.monotonic() > deadline:
            break
    proc.send_signal(2)  # SIGINT, as Ctrl-C sends
    out, _ = proc.communicate(timeout=30)
    doc = json.loads(out)
    assert proc.returncode == 130
    assert doc["phase"] == "Cancelled"
    assert steps(doc)["wait"]["phase"] == "Cancelled"
    assert steps(doc)["book"]["compensation"]["phase"] == "Succeeded"


def test_approval_prompt_on_a_terminal():
    """With a terminal, a gate asks the person running `braid run` and records the answer."""
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "braid.cli",
            "run",
            "examples/07-approval/workflow.yaml",
            "-o",
            "json",
        ],
        stdin=child_fd,
        stdout=subprocess.PIPE,
        stderr=child_fd,
        cwd=ROOT,
    )
    os.close(child_fd)
    seen = b""
    deadline = time.monotonic() + 30
    while b"Approve review?" not in seen and time.monotonic() < deadline:
        if select.select([main_fd], [], [], 0.5)[0]:
            seen += os.read(main_fd, 4096)
    assert b"Approve review?" in seen
    os.write(main_fd, b"y\n")
    out, _ = proc.communicate(timeout=30)
    os.close(main_fd)
    doc = json.loads(out)
    assert proc.returncode == 0
    assert doc["outputs"]["applied"] == "raise the rate limit to 200 rps"
    assert steps(doc)["review"]["approvals"][0]["decision"] == "Approved"


def test_local_run_records_feed_analyze_and_graph(tmp_path):
    example = "examples/01-sequential"
    records = []
    for i in range(3):
        record = tmp_path / f"run{i}.json"
        result = braid(
            "run", f"{example}/workflow.yaml", f"{example}/run.yaml", "--record", str(record)
        )
        assert result.returncode == 0, result.stderr
        records.append(record)
    doc = json.loads(records[0].read_text())
    assert (doc["kind"], doc["status"]["phase"]) == ("WorkflowRun", "Succeeded")
    runs = [a for r in records for a in ("--runs", str(r))]
    report = braid("analyze", f"{example}/workflow.yaml", *runs)
    assert report.returncode == 0, report.stderr
    assert "3 finished runs (3 succeeded)" in report.stdout
    for step in ("research", "outline", "write"):
        assert step in report.stdout
    drawn = braid("graph", str(records[0]))
    assert "classDef Succeeded" in drawn.stdout


@pytest.mark.parametrize(
    ("gate", "code", "phase", "reason"),
    [
        # no one to ask, but the gate times out: it waits and decides then, as in a cluster
        ({"timeoutSeconds": 1, "onTimeout": "Approve"}, 0, "Succeeded", "ApprovalTimedOut"),
        ({"timeoutSeconds": 1, "onTimeout": "Reject"}, 1, "Failed", "ApprovalTimedOut"),
        # nothing would ever decide it: refused at once, saying why
        ({}, 1, "Failed", "Rejected"),
    ],
)
def test_a_gate_without_anyone_to_ask_behaves_as_in_a_cluster(tmp_path, gate, code, phase, reason):
    wf = tmp_path / "gate.yaml"
    wf.write_text(
        json.dumps(
            {
                "apiVersion": "braid.dev/v1alpha1",
                "kind": "Workflow",
                "metadata": {"name": "gate"},
                "spec": {
                    "steps": [
                        {"name": "nap", "sleep": {"durationSeconds": 1}},
                        {"name": "review", "approval": gate},
                    ]
                },
            }
        )
    )
    started = time.monotonic()
    got, doc = run_json(str(wf))
    took = time.monotonic() - started
    review = steps(doc)["review"]
    assert (got, review["phase"]) == (code, phase), doc
    assert review["reason"] == reason
    assert steps(doc)["nap"]["outputs"]["sleptSeconds"] == 1.0
    if gate:
        assert took >= 2  # slept, then waited for the gate's deadline
    else:
        assert "no one to ask" in review["message"]


def test_14_nightly_reuses_the_cached_fetch_and_lints_its_schedule(tmp_path):
    wf = "examples/14-nightly/workflow.yaml"
    cache = ("--cache", str(tmp_path / "cache"))
    code, doc = run_json(wf, *cache)
    assert code == 0, doc
    assert doc["outputs"] == {"digest": "example.org: 12 pages summarised", "fetched": "Succeeded"}
    assert steps(doc)["pause"]["outputs"]["sleptSeconds"] == 2.0
    code, doc = run_json(wf, *cache)
    assert doc["outputs"]["fetched"] == "Cached"
    assert steps(doc)["fetch"]["attempts"] == 0
    code, doc = run_json(wf, *cache, "--no-cache")
    assert doc["outputs"]["fetched"] == "Succeeded"
    code, doc = run_json(wf, *cache, "-p", "site=example.com")
    assert doc["outputs"]["fetched"] == "Succeeded"  # another key
    assert braid("lint", "examples/14-nightly/schedule.yaml", wf).returncode == 0


def test_15_sub_workflows_recurse_nest_and_say_which_file_is_missing(tmp_path):
    wf, report = "examples/15-sub-workflows/workflow.yaml", "examples/15-sub-workflows/report.yaml"
    code, doc = run_json(wf, "-p", "items=[5, 3, 8, 1, 9]")
    assert code == 0, doc
    assert doc["outputs"] == {"sorted": [1, 3, 5, 8, 9]}
    halves = steps(doc)["halves"]
    assert halves["outputs"]["total"] == 2
    code, doc = run_json(wf, "examples/15-sub-workflows/run.yaml")
    assert doc["outputs"] == {"sorted": [1, 2, 3, 5, 8, 9]}
    code, doc = run_json(report, wf)
    assert code == 0, doc
    assert doc["outputs"] == {
        "batches": [[1, 2, 3], [7, 9], [4]],
        "summary": "3 batches; lowest of each: [1, 7, 4]",
    }
    code, doc = run_json(report)  # merge-sort's file not given
    assert code == 1
    message = steps(doc)["sort"]["message"]
    assert "no workflow named 'merge-sort' was given" in message
    assert "braid run" in message
    endless = tmp_path / "endless.yaml"
    endless.write_text(
        "apiVersion: braid.dev/v1alpha1\nkind: Workflow\nmetadata: {name: again}\n"
        "spec:\n  steps:\n    - name: more\n      workflow: {name: again}\n"
    )
    lint = braid("lint", str(endless))
    assert lint.returncode == 1
    assert "recursion without end: again -> again" in lint.stdout + lint.stderr
    assert "spec.steps[0].workflow.name" in lint.stdout + lint.stderr

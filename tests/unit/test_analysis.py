"""`braid analyze` over recorded run histories whose bottlenecks and recommendations are known,
and the Gantt chart of a run."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import timedelta

from braid.analysis.gantt import gantt_svg, rows
from braid.analysis.stats import analyze, critical_path
from braid.engine.actions import HTTPResponse
from braid.engine.simulate import EPOCH, Outcome, simulate
from tests.conftest import ok, workflow
from tests.model_server import reply

SVG = "{http://www.w3.org/2000/svg}"
C = {"image": "x", "command": ["true"]}


def spec():
    return workflow(
        [
            {"name": "fetch", "container": C},
            {
                "name": "summarize",
                "container": {**C, "args": ["${{ steps.fetch.outputs.doc }}"]},
                "timeoutSeconds": 12,
            },
            {"name": "translate", "container": C},  # no dependsOn, reads nothing of summarize
            {
                "name": "publish",
                "dependsOn": ["summarize", "translate"],
                "container": C,
                "retry": {"limit": 2, "backoff": {"initialDelaySeconds": 1, "jitter": 0}},
            },
        ],
        sla={"maxDurationSeconds": 10},
    )


def history(n: int = 5):
    runs = []
    for i in range(n):

        def script(a, i=i):
            step = a.labels.step
            if step == "fetch":
                return ok({"doc": "same", "usage": {"tokens": 100}}, seconds=2)
            if step == "summarize":
                return ok({"summary": f"s{i}"}, seconds=8 + i)
            if step == "translate":
                return ok({"fr": f"t{i}"}, seconds=3)
            if i == n - 1:
                return Outcome(seconds=2, exit_code=1)  # the last run's publish keeps failing
            return ok(seconds=1)

        result = simulate(spec(), script, start=EPOCH + timedelta(hours=i), run_name=f"r{i}")
        runs.append(result)
    return runs


def test_statistics_per_step():
    runs = history()
    a = analyze(spec(), [r.status for r in runs], EPOCH)
    assert (a.runs, a.succeeded) == (5, 4)
    stats = {s.step: s for s in a.steps}
    assert stats["summarize"].p50 == 10
    assert stats["summarize"].p95 == 12
    assert stats["summarize"].mean == 10
    assert stats["summarize"].stdev > 1.4
    assert stats["fetch"].tokens == 100
    assert stats["publish"].error_rate == 0.2
    assert stats["publish"].retry_rate == 0.2
    assert stats["publish"].retry_waste > 0
    # Nothing queued for pools or pods here: each step started as its dependencies finished.
    assert all(s.waiting == 0 for s in a.steps)
    assert a.critical_path == ["fetch", "summarize", "translate", "publish"]


def test_each_run_has_its_critical_path_and_stragglers_are_named():
    runs = history()
    a = analyze(spec(), [r.status for r in runs], EPOCH, [f"r{i}" for i in range(5)])
    assert [p.run for p in a.run_paths] == ["r0", "r1", "r2", "r3", "r4"]
    assert a.run_paths[0].critical_path == ["fetch", "summarize", "translate", "publish"]
    assert a.run_paths[0].duration == 2 + 8 + 3 + 1
    # publish takes 1 s in four runs and several failing attempts in the last one
    assert [(s.run, s.step) for s in a.stragglers] == [("r4", "publish")]


def test_the_critical_path_follows_the_last_finisher():
    run = history(1)[0]
    assert critical_path(spec(), run.status) == ["fetch", "summarize", "translate", "publish"]


def test_bottlenecks_and_ranked_recommendations_are_the_known_ones():
    a = analyze(spec(), [r.status for r in history()], EPOCH)
    # summarize is slow; publish is variable (1 s, except the run where it failed 3 times).
    assert [(b.step, b.why) for b in a.bottlenecks] == [
        ("summarize", "Slow"),
        ("publish", "Variable"),
    ]
    kinds = [(r.kind, r.steps) for r in a.recommendations]
    assert ("Parallelize", ["summarize", "translate"]) in kinds
    assert ("Cache", ["fetch"]) in kinds
    cache = next(r for r in a.recommendations if r.kind == "Cache")
    assert cache.message.endswith("add to it `cache: {key: \"'fetch'\"}`")  # it reads nothing
    assert ("RaiseTimeout", ["summarize"]) in kinds
    assert ("LowerRetries", ["publish"]) in kinds
    assert ("RelaxSLA", []) in kinds
    gains = [r.gain_seconds for r in a.recommendations]
    assert gains == sorted(gains, reverse=True)
    parallel = next(r for r in a.recommendations if r.kind == "Parallelize")
    assert parallel.gain_seconds == 3
    assert "reads no output of summarize" in parallel.evidence
    # summarize reads fetch: not a parallelization candidate
    assert ("Parallelize", ["fetch", "summarize"]) not in kinds


def test_the_gantt_chart_is_well_formed_and_has_every_step():
    run = history(1)[0]
    names = ["fetch", "summarize", "translate", "publish"]
    assert [r.label for r in rows(run.status, set())] == names
    root = ET.fromstring(gantt_svg(run.status, title="r0"))
    texts = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert all(name in texts for name in names)  # text stays text: searchable, accessible
    assert "seconds since the run started" in texts
    assert "critical path" in texts


def test_the_cli_analyses_recorded_runs_and_draws_the_slowest(tmp_path):
    runs = history()
    wf = {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "brief"},
        "spec": spec().wire(),
    }
    (tmp_path / "wf.json").write_text(json.dumps(wf))
    items = [
        {
            "apiVersion": "braid.dev/v1alpha1",
            "kind": "WorkflowRun",
            "metadata": {"name": f"r{i}"},
            "spec": {"workflowRef": {"name": "brief"}},
            "status": r.status.wire(),
        }
        for i, r in enumerate(runs)
    ]
    (tmp_path / "runs.json").write_text(
        json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    )
    base = [
        sys.executable,
        "-m",
        "braid.cli",
        "analyze",
        str(tmp_path / "wf.json"),
        "--runs",
        str(tmp_path / "runs.json"),
    ]
    text = subprocess.run(
        [*base, "--gantt", str(tmp_path / "g.svg")], capture_output=True, text=True, check=True
    ).stdout
    assert "5 finished runs (4 succeeded)" in text
    assert "[Parallelize] run translate alongside summarize" in text
    assert "summarize: Slow" in text
    ET.parse(tmp_path / "g.svg")
    data = json.loads(
        subprocess.run([*base, "-o", "json"], capture_output=True, text=True, check=True).stdout
    )
    assert data["recommendations"][0]["gainSeconds"] >= data["recommendations"][-1]["gainSeconds"]


def test_the_gantt_chart_as_png():
    import io  # noqa: PLC0415

    from PIL import Image  # noqa: PLC0415

    from braid.analysis.gantt import gantt_png  # noqa: PLC0415

    image = Image.open(io.BytesIO(gantt_png(history(1)[0].status, title="r0")))
    assert image.format == "PNG"
    assert image.size[1] > 4 * 24


def test_model_calls_are_summarised_and_replies_cut_at_max_tokens_are_flagged():
    spec = workflow(
        [
            {
                "name": "write",
                "llm": {
                    "endpoint": {"baseURL": "http://m/v1"},
                    "model": "m",
                    "maxTokens": 50,
                    "messages": [{"role": "user", "content": "go"}],
                },
            }
        ]
    )

    def cut(_a):
        body = reply("half a sent", prompt_tokens=40, completion_tokens=50)
        body["choices"][0]["finish_reason"] = "length"
        return Outcome(response=HTTPResponse(200, {}, body))

    runs = [simulate(spec, cut, run_name=f"r{i}").status for i in range(3)]
    a = analyze(spec, runs, EPOCH)
    (calls,) = a.model_calls
    assert (calls.step, calls.calls, calls.models) == ("write", 3, {"test-model": 3})
    assert (calls.input_tokens, calls.output_tokens) == (40, 50)
    assert calls.finish_reasons == {"length": 3}
    (raise_it,) = [r for r in a.recommendations if r.kind == "RaiseMaxTokens"]
    assert raise_it.message == "Raise llm.maxTokens of write: its replies stop at maxTokens 50"
    assert "3 of 3 replies" in raise_it.evidence

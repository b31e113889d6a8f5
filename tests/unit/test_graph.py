"""`braid graph`: every example drawn as Mermaid and SVG with all its steps, fan-outs and loops
shown as such, and a run's nodes coloured by phase with attempts and durations."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from braid.analysis.graph import COLOURS, graph_of, mermaid, svg
from braid.api.run import Artifact
from braid.api.workflow import Workflow
from braid.engine import ApprovalDecision
from braid.engine.simulate import Outcome, simulate
from tests.conftest import container, ok, workflow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*/workflow.yaml"))
SVG = "{http://www.w3.org/2000/svg}"


def spec_of(path: Path):
    doc = next(d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "Workflow")
    return Workflow.model_validate(doc).spec


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_every_example_is_drawn_with_all_its_steps(path):
    spec = spec_of(path)
    drawn = graph_of(spec)
    names = [s.name for s in spec.steps] + [f.name for f in spec.finally_ or []]
    undo = [f"{s.name} (undo)" for s in spec.steps if s.compensation is not None]
    text = mermaid(drawn)
    assert text.startswith("flowchart TD\n")
    for name in names:
        assert f"n_{name.replace('-', '_')}" in text
    root = ET.fromstring(svg(drawn, title=path.parent.name))
    drawn_steps = [g.get("data-step") for g in root.iter(f"{SVG}g")]
    assert sorted(drawn_steps) == sorted(names + undo)
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert all(name in texts for name in names)
    edges = [p for p in root.iter(f"{SVG}path") if "edge" in (p.get("class") or "")]
    assert len(edges) == len(drawn.arrows)
    # finally steps are joined to the run, never floating on their own
    for fin in spec.finally_ or []:
        assert any(a.target == fin.name and a.kind == "finally" for a in drawn.arrows)


def test_boxes_do_not_overlap_and_edges_are_labelled_with_their_when():
    spec = spec_of(ROOT / "examples" / "11-document-processing" / "workflow.yaml")
    drawn = graph_of(spec)
    svg(drawn)  # lays it out
    boxes = list(drawn.positions.values())
    for i, (x, y, w, h) in enumerate(boxes):
        for x2, y2, w2, h2 in boxes[i + 1 :]:
            assert x + w <= x2 or x2 + w2 <= x or y + h <= y2 or y2 + h2 <= y
    labels = {a.target: a.label for a in drawn.arrows if a.label}
    assert labels["invoice"] == 'metadata.type == "invoice"'
    assert labels["human-review"] == 'pages.phase == "Failed"'
    trip = graph_of(spec_of(ROOT / "examples" / "08-retry-compensation" / "workflow.yaml"))
    kinds = {(a.source, a.target): a.kind for a in trip.arrows}
    assert kinds[("charge", "charge (undo)")] == "compensation"
    root = ET.fromstring(svg(trip))
    dashed = [p for p in root.iter(f"{SVG}path") if "compensation" in (p.get("class") or "")]
    assert dashed
    assert all(p.get("stroke-dasharray") for p in dashed)
    legend = [t.text for t in root.iter(f"{SVG}text")]
    assert "- - compensation" in legend


def test_fan_outs_and_loops_have_shapes_of_their_own():
    spec = spec_of(ROOT / "examples" / "03-orchestrator-worker" / "workflow.yaml")
    assert "n_work[[" in mermaid(graph_of(spec))
    loop = spec_of(ROOT / "examples" / "05-react-loop" / "workflow.yaml")
    text = mermaid(graph_of(loop))
    assert "n_agent{{" in text
    assert "loop (at most 6): think → act" in text


def test_a_run_is_coloured_by_phase_with_attempts_reasons_and_decisions():
    spec = workflow(
        [
            container("fetch"),
            {"name": "review", "approval": {"approvers": {"users": ["alice"]}}},
            container("publish", retry={"limit": 1}),
        ]
    )

    def script(a):
        return Outcome(seconds=3, exit_code=1) if a.labels.step == "publish" else ok(seconds=2)

    decide = [ApprovalDecision("review", "alice", approve=True, trusted=True)]
    run = simulate(spec, script, standing=decide)
    drawn = graph_of(spec, run.status)
    publish = drawn.boxes["publish"]
    assert publish.phase == "Failed"
    assert "2 tries" in publish.badges
    assert "Failed: Error" in publish.lines
    assert "exited with code 1" in publish.tooltip
    assert "✓ alice" in drawn.boxes["review"].badges
    text = mermaid(drawn)
    assert f"classDef Failed fill:{COLOURS['Failed'][0]}" in text
    root = ET.fromstring(svg(drawn))
    fills = {r.get("fill") for r in root.iter(f"{SVG}rect")}
    assert COLOURS["Failed"][0] in fills
    tips = [t.text for t in root.iter(f"{SVG}title")]
    assert any("exited with code 1" in (t or "") for t in tips)


def test_the_cli_draws_a_file_and_a_run_object(tmp_path):
    example = ROOT / "examples" / "01-sequential" / "workflow.yaml"
    out = subprocess.run(
        [sys.executable, "-m", "braid.cli", "graph", str(example)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("flowchart TD")
    spec = spec_of(example)
    status = simulate(spec, lambda a: ok({"brief": "x", "notes": "n", "draft": "d"})).status
    run = {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {"name": "r1"},
        "spec": {"workflowRef": {"name": "x"}},
        "status": status.wire(),
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    target = tmp_path / "run.svg"
    subprocess.run(
        [sys.executable, "-m", "braid.cli", "graph", str(path), "--out", str(target)],
        capture_output=True,
        text=True,
        check=True,
    )
    root = ET.parse(target).getroot()
    assert next(t.text for t in root.iter(f"{SVG}text")) == "r1"
    bad = subprocess.run(
        [sys.executable, "-m", "braid.cli", "graph", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "no such file" in bad.stderr


def test_png_pictures_are_real_images_in_the_phase_colours(tmp_path):
    from PIL import Image  # noqa: PLC0415

    spec = workflow([container("fetch"), container("publish")])
    run = simulate(spec, lambda a: ok())
    target = tmp_path / "run.png"
    doc = {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {"name": "r"},
        "spec": {"workflow": spec.wire()},
        "status": run.status.wire(),
    }
    (tmp_path / "run.json").write_text(json.dumps(doc))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "braid.cli",
            "graph",
            str(tmp_path / "run.json"),
            "--out",
            str(target),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(target).convert("RGB")
    green = tuple(int(COLOURS["Succeeded"][0][i : i + 2], 16) for i in (1, 3, 5))
    assert green in {c for _, c in image.getcolors(maxcolors=100_000)}
    assert image.size[0] >= 400
    assert image.size[1] >= 2 * 100


def test_a_runs_artifacts_are_drawn_with_their_sizes_and_boxes_grow_for_them():
    spec = workflow([container("write"), container("read")])
    art = Artifact(size=3 * 1024 * 1024, sha256="0" * 64, uri="s3://b/k")
    r = simulate(
        spec,
        lambda a: (
            Outcome(artifacts={f"f{i}.bin": art for i in range(5)})
            if a.labels.step == "write"
            else ok()
        ),
    )
    text = mermaid(graph_of(spec, r.status))
    assert "f0.bin (3.0 MiB)<br/>f1.bin (3.0 MiB)<br/>f2.bin (3.0 MiB)<br/>+2 artifacts" in text
    root = ET.fromstring(svg(graph_of(spec, r.status)))
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "f2.bin (3.0 MiB)" in texts

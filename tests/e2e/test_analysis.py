"""`braid analyze` and `braid graph` against runs in the cluster: the analysis is written back
to the Workflow's status as data, and a run is drawn coloured by phase."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from tests.e2e.conftest import Kube, Operator
from tests.e2e.test_lifecycle import run_of, scripted_workflow
from tests.e2e.test_plugin import braid


def test_analyze_writes_back_and_graph_draws_a_run(kube: Kube, operator: Operator) -> None:
    kube.apply(scripted_workflow("chain", 3, delay="1s"))
    runs = [kube.create(run_of("chain")) for _ in range(3)]
    for run in runs:
        kube.wait_finished(run)
    result = braid(kube, "analyze", "chain", "--write")
    assert result.returncode == 0, result.stderr
    assert "3 finished runs (3 succeeded)" in result.stdout
    analysis = kube.json("get", "workflow", "chain")["status"]["analysis"]
    assert analysis["runs"] == 3
    assert [s["step"] for s in analysis["steps"]] == ["s0", "s1", "s2"]
    assert analysis["criticalPath"] == ["s0", "s1", "s2"]
    assert any(r["kind"] == "Parallelize" for r in analysis["recommendations"])
    drawn = braid(kube, "graph", runs[0], "--format", "svg")
    assert drawn.returncode == 0, drawn.stderr
    root = ET.fromstring(drawn.stdout)
    ns = "{http://www.w3.org/2000/svg}"
    assert [g.get("data-step") for g in root.iter(f"{ns}g")] == ["s0", "s1", "s2"]
    assert "#d4edda" in {r.get("fill") for r in root.iter(f"{ns}rect")}  # Succeeded
    assert json.loads(kube.run("get", "workflow", "chain", "-o", "json").stdout)["spec"]

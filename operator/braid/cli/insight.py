"""`braid graph` and `braid analyze`: pictures of a workflow or a run, and what its past
runs say."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console

from braid.analysis.graph import graph_of, mermaid, png, svg
from braid.analysis.report import analysis_report
from braid.analysis.stats import analyze as analyze_runs
from braid.analysis.stats import gantt_png, gantt_svg
from braid.api.manifests import parse_documents
from braid.api.run import WorkflowRunSpec, WorkflowRunStatus
from braid.api.workflow import Workflow
from braid.cli.kubectl import Kubectl, KubectlError
from braid.cli.output import OutputFormat

err = Console(stderr=True, highlight=False)


class GraphFormat(StrEnum):
    MERMAID = "mermaid"
    SVG = "svg"
    PNG = "png"


def graph(
    source: str = typer.Argument(
        ...,
        help="A Workflow or WorkflowRun manifest (a run with its status is coloured), "
        "or the name of a WorkflowRun in the cluster.",
    ),
    namespace: str | None = typer.Option(None, "--namespace", "-n", help="The run's namespace."),
    fmt: GraphFormat | None = typer.Option(
        None, "--format", "-f", help="mermaid, svg or png; default from --out, else mermaid."
    ),
    out: Path | None = typer.Option(None, "--out", help="Write here instead of stdout."),
) -> None:
    """Draw a workflow's DAG (fan-outs and loops as such), or a run's, coloured by phase."""
    path = Path(source)
    try:
        if path.exists():
            documents = list(yaml.safe_load_all(path.read_text()))
        else:
            try:
                documents = [Kubectl(namespace).json("get", "workflowrun", source)]
            except KubectlError as exc:
                err.print(f"[red]error[/]: {source}: no such file, and {exc}")
                raise typer.Exit(1) from None
        doc = next(d for d in documents if isinstance(d, dict))
        status = WorkflowRunStatus.model_validate(doc["status"]) if doc.get("status") else None
        if doc.get("kind") == "WorkflowRun":
            spec = status.workflow_spec if status and status.workflow_spec else None
            if spec is None:
                spec = WorkflowRunSpec.model_validate(doc.get("spec") or {}).workflow
            if spec is None:
                err.print("[red]error[/]: the run has no workflow snapshot yet; graph its Workflow")
                raise typer.Exit(1)
        else:
            spec = Workflow.model_validate(doc).spec
            status = None
    except (StopIteration, ValidationError, yaml.YAMLError, json.JSONDecodeError) as exc:
        err.print(f"[red]error[/]: {source}: not a Workflow or WorkflowRun: {exc}")
        raise typer.Exit(1) from None
    by_suffix = {".svg": GraphFormat.SVG, ".png": GraphFormat.PNG}
    chosen = fmt or by_suffix.get(out.suffix if out else "", GraphFormat.MERMAID)
    name = str((doc.get("metadata") or {}).get("name") or "")
    drawn = graph_of(spec, status)
    if chosen == GraphFormat.PNG:
        if out is None:
            err.print("[red]error[/]: a PNG needs --out FILE")
            raise typer.Exit(1)
        out.write_bytes(png(drawn, title=name))
        err.print(f"wrote {out}")
        return
    text = svg(drawn, title=name) if chosen == GraphFormat.SVG else mermaid(drawn)
    if out:
        out.write_text(text)
        err.print(f"wrote {out}")
    else:
        sys.stdout.write(text)


def _kubectl_json(namespace: str | None, *args: str) -> Any:
    try:
        return Kubectl(namespace).json(*args)
    except KubectlError as exc:
        err.print(f"[red]error[/]: kubectl {' '.join(args)}: {exc}")
        raise typer.Exit(1) from None


def _run_objects(paths: list[Path]) -> list[dict[str, Any]]:
    """WorkflowRun objects (with status) from files: single objects, Lists, several docs."""
    out: list[dict[str, Any]] = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict):
                out += doc.get("items", []) if doc.get("kind", "").endswith("List") else [doc]
    return [d for d in out if d.get("kind") == "WorkflowRun" and d.get("status")]


def analyze(
    workflow: str = typer.Argument(..., help="The Workflow: a name in the cluster, or a file."),
    runs: list[Path] = typer.Option(
        [],
        "--runs",
        help="Files of finished WorkflowRuns (kubectl get -o yaml/json, or "
        "`braid run --record`); without it the runs come from the cluster.",
    ),
    namespace: str | None = typer.Option(None, "--namespace", "-n"),
    output: OutputFormat = typer.Option(OutputFormat.TEXT, "--output", "-o", help="text or json"),
    write: bool = typer.Option(
        False, "--write", help="Write the analysis to the Workflow's status.analysis."
    ),
    gantt: Path | None = typer.Option(
        None, "--gantt", help="Draw the slowest run here (.svg, or .png)."
    ),
) -> None:
    """Per-step statistics over a workflow's finished runs, its critical path, bottlenecks and
    ranked recommendations; optionally written back to the Workflow as data."""
    if Path(workflow).exists():
        manifests = [
            m for m in parse_documents(Path(workflow).read_text()) if isinstance(m, Workflow)
        ]
        if not manifests:
            err.print(f"[red]error[/]: {workflow} holds no Workflow")
            raise typer.Exit(1)
        wf = manifests[0]
    else:
        wf = Workflow.model_validate(_kubectl_json(namespace, "get", "workflow", workflow))
    name = wf.metadata.name or workflow
    if runs:
        objects = _run_objects(runs)
    else:
        listed = _kubectl_json(namespace, "get", "workflowruns")["items"]
        objects = [
            r
            for r in listed
            if (r.get("spec", {}).get("workflowRef") or {}).get("name") == name and r.get("status")
        ]
    statuses = [WorkflowRunStatus.model_validate(o["status"]) for o in objects]
    finished = [(o, s) for o, s in zip(objects, statuses, strict=True) if s.succeeded is not None]
    if not finished:
        err.print(f"[red]error[/]: no finished runs of {name} to analyse")
        raise typer.Exit(1)
    result = analyze_runs(
        wf.spec,
        [s for _, s in finished],
        datetime.now(UTC),
        [str(o["metadata"].get("name", "")) for o, _ in finished],
    )
    if gantt is not None:
        # The analysis measured every run already: draw the one that took longest.
        longest = max(result.run_paths, key=lambda r: r.duration).run
        slowest = next(p for p in finished if p[0]["metadata"].get("name", "") == longest)
        title = str(slowest[0]["metadata"].get("name", ""))
        if gantt.suffix == ".png":
            gantt.write_bytes(gantt_png(slowest[1], title=title))
        else:
            gantt.write_text(gantt_svg(slowest[1], title=title))
        err.print(f"wrote {gantt}")
    if write:
        patch = json.dumps({"status": {"analysis": result.wire()}})
        try:
            Kubectl(namespace)(
                "patch", "workflow", name, "--subresource=status", "--type=merge", "-p", patch
            )
        except KubectlError as exc:
            err.print(f"[red]error[/]: writing the analysis: {exc}")
            raise typer.Exit(1) from None
        err.print(f"wrote status.analysis of workflow {name}")
    if output == OutputFormat.JSON:
        print(json.dumps(result.wire(), indent=2))
        return
    print(analysis_report(name, result))


def register(app: typer.Typer) -> None:
    app.command()(graph)
    app.command()(analyze)

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

from braid.analysis.report import analysis_report
from braid.analysis.stats import analyze as analyze_runs
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
    # The drawing libraries (grandalf, Pillow) load only to draw: the operator, which shares
    # this command line, never pays their memory.
    from braid.analysis.graph import graph_of, mermaid, png, svg  # noqa: PLC0415

    path = Path(source)
    _no_such_file(source)
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


def _looks_like_a_file(source: str) -> bool:
    return "/" in source or source.endswith((".yaml", ".yml", ".json"))


def _no_such_file(source: str) -> None:
    """A file name that is not there is a typo, not a run in the cluster: say so (exit 2)
    instead of asking kubectl and printing its connection errors."""
    if _looks_like_a_file(source) and not Path(source).exists():
        err.print(f"[red]error[/]: {source}: no such file")
        raise typer.Exit(2)


def _expand(paths: list[Path]) -> list[Path]:
    """Run files as given: files, directories (their .json/.yaml files) and glob patterns
    (quoted, so the shell left them alone)."""
    out: list[Path] = []
    for path in paths:
        text = str(path)
        if any(ch in text for ch in "*?["):
            found = (
                sorted(Path().glob(text))
                if not path.is_absolute()
                else sorted(Path(path.anchor).glob(str(path.relative_to(path.anchor))))
            )
            if not found:
                err.print(f"[red]error[/]: --runs {text}: no file matches")
                raise typer.Exit(2)
            out += found
        elif path.is_dir():
            out += sorted(
                p for p in path.iterdir() if p.suffix in (".json", ".yaml", ".yml") and p.is_file()
            )
        elif not path.exists():
            err.print(f"[red]error[/]: --runs {text}: no such file")
            raise typer.Exit(2)
        else:
            out.append(path)
    return out


def _of_workflow(run: dict[str, Any], name: str, spec: Any) -> bool:
    """The run ran this workflow: by reference, by label (braid run --record), or its
    snapshot is this very spec."""
    if ((run.get("spec") or {}).get("workflowRef") or {}).get("name") == name:
        return True
    if ((run.get("metadata") or {}).get("labels") or {}).get("braid.dev/workflow") == name:
        return True
    snapshot = (run.get("status") or {}).get("workflowSpec") or (run.get("spec") or {}).get(
        "workflow"
    )
    return snapshot is not None and snapshot == spec


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


def _workflow(workflow: str, namespace: str | None) -> Workflow:
    _no_such_file(workflow)
    if Path(workflow).exists():
        manifests = [
            m for m in parse_documents(Path(workflow).read_text()) if isinstance(m, Workflow)
        ]
        if not manifests:
            err.print(f"[red]error[/]: {workflow} holds no Workflow")
            raise typer.Exit(1)
        return manifests[0]
    return Workflow.model_validate(_kubectl_json(namespace, "get", "workflow", workflow))


def _runs_of(
    name: str, wf: Workflow, given: list[Path], namespace: str | None
) -> list[dict[str, Any]]:
    """The workflow's runs: from the files given (runs of other workflows left out, and
    said), else from the cluster."""
    if not given:
        listed = _kubectl_json(namespace, "get", "workflowruns")["items"]
        return [
            r
            for r in listed
            if (r.get("spec", {}).get("workflowRef") or {}).get("name") == name and r.get("status")
        ]
    objects = _run_objects(_expand(given))
    spec = wf.spec.wire()
    others = [o for o in objects if not _of_workflow(o, name, spec)]
    if others:
        shown = ", ".join(str(o["metadata"].get("name", "?")) for o in others[:5])
        err.print(f"[yellow]note[/]: left out {len(others)} run(s) of other workflows: {shown}")
    return [o for o in objects if _of_workflow(o, name, spec)]


def analyze(
    workflow: str = typer.Argument(..., help="The Workflow: a name in the cluster, or a file."),
    more_runs: list[Path] = typer.Argument(
        None, help="More run files (what the shell made of --runs 'run*.json' unquoted)."
    ),
    runs: list[Path] = typer.Option(
        [],
        "--runs",
        help="Files of finished WorkflowRuns (kubectl get -o yaml/json, or `braid run "
        "--record`), directories of them, or glob patterns; without it the runs come from the "
        "cluster. Runs of other workflows are left out.",
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
    wf = _workflow(workflow, namespace)
    name = wf.metadata.name or workflow
    objects = _runs_of(name, wf, [*runs, *(more_runs or [])], namespace)
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
        # matplotlib is imported only to draw: every other command (pod-agent runs in each
        # step Pod) starts without it.
        from braid.analysis.gantt import gantt_png, gantt_svg  # noqa: PLC0415

        if gantt.suffix == ".png":
            gantt.write_bytes(gantt_png(slowest[1], title=title, spec=wf.spec))
        else:
            gantt.write_text(gantt_svg(slowest[1], title=title, spec=wf.spec))
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

"""The ``braid`` command: thin wrappers over the library."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import re
import socket
import subprocess
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console

from braid import __version__
from braid.analysis.graph import graph_of, mermaid, png, svg
from braid.analysis.report import analysis_report
from braid.analysis.stats import analyze as analyze_runs
from braid.analysis.stats import gantt_png, gantt_svg
from braid.api.crd import render_crds
from braid.api.errors import FieldError, InvalidSpecError
from braid.api.manifests import Manifest, parse_documents
from braid.api.podtemplate import PodPolicy
from braid.api.run import RunPhase, WorkflowRun, WorkflowRunSpec, WorkflowRunStatus
from braid.api.workflow import Workflow
from braid.cli.operator import LogFormat, configure_logging, resolve_priority, run_operator
from braid.cli.plugin import register as register_plugin
from braid.cli.report import ProgressPrinter, run_document, summary_table
from braid.engine import ApprovalDecision, RecordEvent, resolve_params
from braid.engine.validate import resolve_run_spec, validate_manifests
from braid.kube.selectors import parse_selector
from braid.local.runner import LocalRun, stdin_is_terminal
from braid.webhook import WebhookPolicy

app = typer.Typer(
    name="braid",
    help="Agentic workflows as Kubernetes resources; `braid run` runs them locally.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False)
if not err.is_terminal:
    err.width = max(err.width, 120)  # logs and CI: do not squeeze the summary table

EXIT_INVALID = 2
EXIT_CANCELLED = 130


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def _load(paths: list[Path]) -> list[tuple[Path, list[Manifest]]]:
    loaded = []
    for path in paths:
        try:
            text = path.read_text()
        except OSError as exc:
            err.print(f"[red]error[/]: {path}: {exc.strerror}")
            raise typer.Exit(EXIT_INVALID) from None
        try:
            loaded.append((path, parse_documents(text)))
        except InvalidSpecError as exc:
            _print_errors(path, exc.errors)
            raise typer.Exit(1) from None
    return loaded


def _print_errors(path: Path, errors: list[FieldError]) -> None:
    for e in errors:
        err.print(f"[red]error[/]: {path}: {e}", markup=True, soft_wrap=True)


POD_SECURITY_HELP = (
    "What podTemplates may ask for, as the operator you target admits it: restricted "
    "(default), baseline or privileged (the Pod Security Standards)."
)
POD_SA_HELP = "A service account step Pods may run as: NAMESPACE/NAME or */NAME (repeatable)."


def _pod_policy(level: str, service_accounts: list[str]) -> PodPolicy:
    try:
        return PodPolicy.parse(level, service_accounts)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command()
def lint(
    files: list[Path] = typer.Argument(..., help="Manifest files to check."),
    pod_security: str = typer.Option("restricted", "--pod-security", help=POD_SECURITY_HELP),
    pod_service_account: list[str] = typer.Option([], "--pod-service-account", help=POD_SA_HELP),
) -> None:
    """Check Workflow and WorkflowRun manifests; exit 1 when any is invalid."""
    pods = _pod_policy(pod_security, pod_service_account)
    failed = False
    all_manifests = _load(files)
    every = [m for _, ms in all_manifests for m in ms]
    for path, manifests in all_manifests:
        # Runs may reference Workflows defined in any of the files given together.
        others = [m for m in every if isinstance(m, Workflow) and m not in manifests]
        errors = validate_manifests([*manifests, *others], pods)
        errors = [e for e in errors if not _about_other(e, len(manifests))]
        if errors:
            failed = True
            _print_errors(path, errors)
        else:
            err.print(f"[green]ok[/]: {path}: {len(manifests)} manifest(s) valid")
    raise typer.Exit(1 if failed else 0)


def _about_other(error: FieldError, own: int) -> bool:
    match = re.match(r"document\[(\d+)\]", error.path)
    return match is not None and int(match.group(1)) >= own


CRD_DIRS = [Path("crds"), Path("charts/braid/files/crds")]


@app.command()
def crds(
    directories: list[Path] = typer.Option(
        CRD_DIRS,
        "--dir",
        help="Where the CRD files live (repeatable): kubectl's copy and the Helm chart's.",
    ),
    check: bool = typer.Option(False, "--check", help="Exit 1 if the files are stale."),
) -> None:
    """Write the CustomResourceDefinitions rendered from the API models."""
    stale = []
    for directory in directories:
        for name, text in render_crds().items():
            target = directory / name
            current = target.read_text() if target.exists() else None
            if current == text:
                continue
            stale.append(target)
            if not check:
                directory.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
                err.print(f"wrote {target}")
    if check and stale:
        for target in stale:
            err.print(f"[red]stale[/]: {target} differs from the API models; run `braid crds`")
        raise typer.Exit(1)
    if check:
        shown = ", ".join(str(d) for d in directories)
        err.print(f"[green]ok[/]: {shown} match the API models")


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


def _parse_params(values: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for raw in values:
        key, sep, value = raw.partition("=")
        if not sep or not key:
            err.print(f"[red]error[/]: -p {raw!r}: expected KEY=VALUE, e.g. -p topic=cats")
            raise typer.Exit(EXIT_INVALID)
        try:
            params[key] = json.loads(value)  # numbers, booleans, lists, objects
        except json.JSONDecodeError:
            params[key] = value
    return params


def _decisions(approve: list[str], reject: list[str]) -> list[ApprovalDecision]:
    user = _local_user()
    out = []
    for raw in approve:
        step, _, who = raw.partition("=")
        out.append(ApprovalDecision(step, who or user, approve=True, trusted=True))
    for raw in reject:
        step, _, reason = raw.partition("=")
        out.append(
            ApprovalDecision(step, user, approve=False, reason=reason or "rejected", trusted=True)
        )
    return out


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local-user"


def _prompt(event: RecordEvent, gate: str) -> ApprovalDecision:
    err.print(f"\n[bold yellow]? approval[/] {event.message}")
    # The question goes to stderr with the progress lines: stdout may be a JSON document.
    err.print(f"  Approve {gate}? [y/N, or a reason to reject] ", end="", markup=False)
    answer = sys.stdin.readline().strip()
    if answer.lower() in ("y", "yes"):
        return ApprovalDecision(
            gate, _local_user(), approve=True, iteration=event.iteration, trusted=True
        )
    reason = answer if answer.lower() not in ("", "n", "no") else "rejected at the prompt"
    return ApprovalDecision(
        gate, _local_user(), approve=False, reason=reason, iteration=event.iteration, trusted=True
    )


def _select(manifests: list[Manifest]) -> tuple[str, Any, dict[str, Any]]:
    """The workflow to run, its name, and the params a WorkflowRun (if given) sets."""
    workflows = [m for m in manifests if isinstance(m, Workflow)]
    runs = [m for m in manifests if isinstance(m, WorkflowRun)]
    if runs:
        run = runs[0]
        spec = resolve_run_spec(run, workflows)
        name = run.metadata.name or (run.spec.workflow_ref.name if run.spec.workflow_ref else "run")
        return name, spec, dict(run.spec.params or {})
    if len(workflows) != 1:
        raise InvalidSpecError(
            [FieldError("", f"expected one Workflow (or a WorkflowRun), found {len(workflows)}")]
        )
    return workflows[0].metadata.name or "workflow", workflows[0].spec, {}


@app.command()
def run(
    files: list[Path] = typer.Argument(..., help="Workflow and/or WorkflowRun manifests."),
    param: list[str] = typer.Option([], "--param", "-p", help="KEY=VALUE (JSON or text)."),
    approve: list[str] = typer.Option([], "--approve", help="Approve gate STEP (or STEP=USER)."),
    reject: list[str] = typer.Option([], "--reject", help="Reject gate STEP (or STEP=REASON)."),
    output: OutputFormat = typer.Option(OutputFormat.TEXT, "--output", "-o", help="text or json"),
    workdir: Path | None = typer.Option(None, help="Where attempt logs and outputs are kept."),
    record: Path | None = typer.Option(
        None,
        "--record",
        help="Also write the finished run as a WorkflowRun object with its status (input for "
        "`braid analyze --runs` and `braid graph`).",
    ),
    pod_security: str = typer.Option("restricted", "--pod-security", help=POD_SECURITY_HELP),
    pod_service_account: list[str] = typer.Option([], "--pod-service-account", help=POD_SA_HELP),
) -> None:
    """Run a workflow locally: container steps as processes, webhooks as HTTP calls."""
    pods = _pod_policy(pod_security, pod_service_account)
    manifests = [m for _, ms in _load(files) for m in ms]
    errors = validate_manifests(manifests, pods)
    if errors:
        _print_errors(files[0], errors)
        raise typer.Exit(1)
    try:
        name, spec, run_params = _select(manifests)
        params = resolve_params(spec, {**run_params, **_parse_params(param)}, "params")
    except InvalidSpecError as exc:
        _print_errors(files[0], exc.errors)
        raise typer.Exit(1) from None
    run_name = f"{name}-{datetime.now().strftime('%H%M%S')}"  # noqa: DTZ005 - display only
    printer = ProgressPrinter(err)
    local = LocalRun(
        run_name=run_name,
        spec=spec,
        params=params,
        decisions=_decisions(approve, reject),
        prompt=_prompt if stdin_is_terminal() else None,
        on_event=printer.event,
        on_start=printer.start,
        workdir=workdir,
    )
    if any(s.container for s in spec.steps) or any(
        s.fan_out and s.fan_out.container for s in spec.steps
    ):
        err.print("[dim]note: container images are ignored locally; commands run as processes[/]")
    err.print(f"[bold]run[/] {run_name} ({len(spec.steps)} steps)")
    try:
        status = asyncio.run(local.execute())
    except KeyboardInterrupt:
        err.print("[red]interrupted twice: stopped without finishing compensation[/]")
        raise typer.Exit(EXIT_CANCELLED) from None
    document = run_document(run_name, status, local.workdir)
    if record is not None:
        record.write_text(
            json.dumps(
                {
                    "apiVersion": "braid.dev/v1alpha1",
                    "kind": "WorkflowRun",
                    "metadata": {"name": run_name},
                    "spec": {"workflow": spec.wire()},
                    "status": status.wire(),
                },
                indent=2,
            )
        )
    if output == OutputFormat.JSON:
        sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    else:
        err.print(summary_table(status))
        if status.outputs:
            err.print(f"[bold]outputs[/] {json.dumps(status.outputs)}")
        err.print(f"[dim]logs: {local.workdir}[/]")
    if status.phase == RunPhase.SUCCEEDED:
        return
    raise typer.Exit(EXIT_CANCELLED if status.phase == RunPhase.CANCELLED else 1)


@app.command()
def operator(
    namespace: list[str] = typer.Option(
        [], "--namespace", "-n", help="Watch only these namespaces (repeatable); default all."
    ),
    log_format: LogFormat = typer.Option(
        LogFormat.AUTO, "--log-format", help="auto (JSON unless on a terminal), json or console."
    ),
    health_port: int | None = typer.Option(
        None, help="Serve /healthz (liveness and readiness) on this port; off by default."
    ),
    health_address: str = typer.Option(
        "127.0.0.1", help="Address for /healthz; 0.0.0.0 in a pod, so the kubelet reaches it."
    ),
    peering: str = typer.Option(
        "",
        help="kopf peering name for a hot standby: of the operators sharing it, only the one "
        "with the highest priority works. Empty: standalone, no peering objects used.",
    ),
    priority: str = typer.Option(
        "0",
        help="Peering priority: an integer, or 'auto' for a stable one derived from the pod "
        "name ($POD_NAME, else the host name), distinct per replica.",
    ),
    metrics_port: int | None = typer.Option(
        8080, help="Serve Prometheus /metrics on this port; 0 turns it off."
    ),
    webhook_allow: list[str] = typer.Option(
        [],
        "--webhook-allow",
        help="Networks, addresses or host names webhook steps may call (repeatable); when "
        "given, nothing else is reachable, and they win over --webhook-deny.",
    ),
    webhook_deny: list[str] = typer.Option(
        [],
        "--webhook-deny",
        help="Networks webhook steps may not call (repeatable); replaces the default, which is "
        "everything but the public internet (loopback, link-local and cloud metadata, RFC 1918, "
        "CGNAT, ULA, multicast, reserved); 'none' for no deny list.",
    ),
    selector: str = typer.Option(
        "",
        "--selector",
        help="Shard: only runs whose labels match this selector (k=v, k!=v, k, !k; "
        "comma-separated), watched with a server-side label selector.",
    ),
    pod_security: str = typer.Option(
        "restricted",
        "--pod-security",
        help="The Pod Security Standard step Pods must meet, whatever their podTemplate asks: "
        "restricted (default), baseline, or privileged (host namespaces, hostPath, privileged "
        "containers, init containers: whoever may create runs may then run anything).",
    ),
    pod_service_account: list[str] = typer.Option(
        [],
        "--pod-service-account",
        help="A service account step Pods may run as (podTemplate.spec.serviceAccountName): "
        "NAMESPACE/NAME, or */NAME in every namespace (repeatable). Default: none.",
    ),
    approval_policy: str = typer.Option(
        "",
        "--approval-policy",
        help="Name of the ValidatingAdmissionPolicy (and its binding) that checks approval "
        "annotations (the chart's braid-approvals). Checked at start: only when it is "
        "enforced are approver names trusted and approvals through groups counted.",
    ),
    metrics_address: str = typer.Option("0.0.0.0", help="Address to serve metrics on."),  # noqa: S104
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the operator against the current kubeconfig (or in-cluster credentials)."""
    configure_logging(log_format, verbose)
    try:
        rank = resolve_priority(priority, os.environ.get("POD_NAME") or socket.gethostname())
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--priority") from None
    deny = None if not webhook_deny else [d for d in webhook_deny if d != "none"]
    own_ports = [p for p in (metrics_port, health_port) if p]
    try:
        policy = WebhookPolicy.parse(webhook_allow, deny, own_ports)
        parse_selector(selector)
        pods = PodPolicy.parse(pod_security, pod_service_account)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    run_operator(
        namespace,
        health_port,
        health_address,
        metrics_port or None,
        metrics_address,
        peering=peering or None,
        priority=rank,
        webhook_policy=policy,
        selector=selector or None,
        pod_policy=pods,
        approval_policy=approval_policy or None,
    )


class GraphFormat(StrEnum):
    MERMAID = "mermaid"
    SVG = "svg"
    PNG = "png"


@app.command()
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
            args = ["kubectl", "get", "workflowrun", source, "-o", "json"]
            args += ["-n", namespace] if namespace else []
            got = subprocess.run(args, capture_output=True, text=True, check=False)
            if got.returncode != 0:
                err.print(f"[red]error[/]: {source}: no such file, and {got.stderr.strip()}")
                raise typer.Exit(1)
            documents = [json.loads(got.stdout)]
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


def _kubectl_json(*args: str) -> Any:
    got = subprocess.run(
        ["kubectl", *args, "-o", "json"], capture_output=True, text=True, check=False
    )
    if got.returncode != 0:
        err.print(f"[red]error[/]: kubectl {' '.join(args)}: {got.stderr.strip()}")
        raise typer.Exit(1)
    return json.loads(got.stdout)


def _run_objects(paths: list[Path]) -> list[dict[str, Any]]:
    """WorkflowRun objects (with status) from files: single objects, Lists, several docs."""
    out: list[dict[str, Any]] = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict):
                out += doc.get("items", []) if doc.get("kind", "").endswith("List") else [doc]
    return [d for d in out if d.get("kind") == "WorkflowRun" and d.get("status")]


@app.command()
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
    ns = ["-n", namespace] if namespace else []
    if Path(workflow).exists():
        manifests = [
            m for m in parse_documents(Path(workflow).read_text()) if isinstance(m, Workflow)
        ]
        if not manifests:
            err.print(f"[red]error[/]: {workflow} holds no Workflow")
            raise typer.Exit(1)
        wf = manifests[0]
    else:
        wf = Workflow.model_validate(_kubectl_json("get", "workflow", workflow, *ns))
    name = wf.metadata.name or workflow
    if runs:
        objects = _run_objects(runs)
    else:
        listed = _kubectl_json("get", "workflowruns", *ns)["items"]
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
        got = subprocess.run(
            [
                "kubectl",
                "patch",
                "workflow",
                name,
                *ns,
                "--subresource=status",
                "--type=merge",
                "-p",
                patch,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if got.returncode != 0:
            err.print(f"[red]error[/]: writing the analysis: {got.stderr.strip()}")
            raise typer.Exit(1)
        err.print(f"wrote status.analysis of workflow {name}")
    if output == OutputFormat.JSON:
        print(json.dumps(result.wire(), indent=2))
        return
    print(analysis_report(name, result))


register_plugin(app)


def main() -> None:  # pragma: no cover - console entry point
    app()

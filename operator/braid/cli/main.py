"""The ``braid`` command: thin wrappers over the library."""

from __future__ import annotations

import asyncio
import getpass
import json
import re
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from secrets import token_hex as secrets_token
from typing import Any, NoReturn

import typer
import yaml
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape

from braid import __version__
from braid.api.common import ObjectMeta
from braid.api.crd import render_crds
from braid.api.errors import FieldError, InvalidSpecError
from braid.api.manifests import Manifest, parse_documents
from braid.api.podtemplate import PodPolicy
from braid.api.positions import documents, locate
from braid.api.run import RunPhase, WorkflowRun, WorkflowRunSpec
from braid.api.schedule import WorkflowSchedule
from braid.api.workflow import Workflow, WorkflowSpec
from braid.api.workflowtest import WorkflowTest
from braid.cli import artifacts, inputs, insight, live, operator, plugin, testing, ui
from braid.cli.output import OutputFormat
from braid.cli.report import ProgressPrinter, run_document, summary_table
from braid.engine import ApprovalDecision, RecordEvent, resolve_params
from braid.engine.validate import manifest_warnings, resolve_run_spec, validate_manifests
from braid.local.data import LocalData
from braid.local.runner import LocalRun, stdin_is_terminal

app = typer.Typer(
    name="braid",
    help="Agentic workflows as Kubernetes resources; `braid run` runs them locally.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False)


def _print_version(given: bool) -> None:
    if given:
        print(__version__)
        raise typer.Exit


@app.callback()
def _options(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """Agentic workflows as Kubernetes resources; `braid run` runs them locally."""


if not err.is_terminal:
    err.width = max(err.width, 120)  # logs and CI: do not squeeze the summary table

EXIT_INVALID = 2
EXIT_CANCELLED = 130


@dataclass(frozen=True)
class _Origin:
    """Where a manifest came from: its file, its index there, and its YAML node."""

    path: Path
    index: int
    of: int  # documents in the file
    node: yaml.Node | None


_ORIGINS: list[_Origin] = []  # of the manifests loaded, in order (one CLI command a process)


class _LoadError(Exception):
    def __init__(self, errors: list[FieldError], origins: list[_Origin] | None) -> None:
        super().__init__("does not parse")
        self.errors, self.origins = errors, origins


def _load(
    paths: list[Path],
    *,
    as_json: bool = False,
    invalid: int = EXIT_INVALID,
    collect: bool = False,
) -> list[tuple[Path, list[Manifest]]]:
    """Every file parsed ('-' is stdin); a file missing is invalid input (exit 2), one that
    does not parse exits ``invalid`` (or, ``collect``, raises _LoadError). Remembers where
    each manifest came from, for errors' line:col."""
    loaded = []
    for path in paths:
        try:
            text = sys.stdin.read() if str(path) == "-" else path.read_text()
        except OSError as exc:
            _invalid(path, [FieldError("", str(exc.strerror))], as_json=as_json)
        nodes = documents(text)
        own = [_Origin(path, i, len(nodes), n) for i, n in enumerate(nodes)]
        try:
            manifests = parse_documents(text)
        except InvalidSpecError as exc:
            if collect:
                raise _LoadError(exc.errors, own or None) from None
            _invalid(path, exc.errors, as_json=as_json, code=invalid, origins=own or None)
        _ORIGINS.extend(own if len(own) == len(manifests) else [_Origin(path, 0, 1, None)])
        loaded.append((path, manifests))
    return loaded


def _place(error: FieldError, path: Path, origins: list[_Origin] | None) -> tuple[str, FieldError]:
    """``file:line:col`` of an error and the error with its path as that file has it: an
    error about ``document[i]`` of several files names the file manifest i came from."""
    if not origins:
        return str(path), error
    rest, origin = error.path, origins[0]
    match = re.match(r"document\[(\d+)\]\.?(.*)", error.path)
    if match is not None:
        index = int(match.group(1))
        origin = origins[index] if index < len(origins) else origin
        rest = match.group(2)
    shown = f"document[{origin.index}].{rest}" if origin.of > 1 and rest else rest
    if origin.node is None:
        return str(origin.path), FieldError(shown, error.message)
    at = locate(origin.node, rest)
    return f"{origin.path}:{at.line}:{at.column}", FieldError(shown, error.message)


def _invalid(
    path: Path,
    errors: list[FieldError],
    *,
    as_json: bool,
    files: bool = True,
    code: int = EXIT_INVALID,
    origins: list[_Origin] | None = None,
) -> NoReturn:
    """Invalid input: every error (as one JSON document with -o json), then exit 2."""
    if as_json:
        listed: list[dict[str, Any]] = []
        for e in errors:
            where, shown = _place(e, path, origins) if files else ("", e)
            item: dict[str, Any] = {"path": shown.path, "message": shown.message}
            if files:
                file, _, line_col = where.partition(":")
                item = {"file": file, **item}
                if line_col:
                    line, _, column = line_col.partition(":")
                    item.update(line=int(line), column=int(column))
            listed.append(item)
        sys.stdout.write(json.dumps({"valid": False, "errors": listed}, indent=2) + "\n")
    elif files:
        _print_errors(path, errors, origins)
    else:
        for e in errors:
            err.print(f"[red]error[/]: {e}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def _print_errors(
    path: Path, errors: list[FieldError], origins: list[_Origin] | None = None
) -> None:
    for e in errors:
        where, shown = _place(e, path, origins)
        err.print(f"{where}: [red]error[/]: {shown}", markup=True, soft_wrap=True)


def _print_warnings(
    path: Path, warnings: list[FieldError], origins: list[_Origin] | None = None
) -> None:
    for w in warnings:
        where, shown = _place(w, path, origins)
        err.print(f"{where}: [yellow]warning[/]: {shown}", markup=True, soft_wrap=True)


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


class LintFormat(StrEnum):
    TEXT = "text"
    JSON = "json"
    GITHUB = "github"


def _lint_paths(given: list[Path]) -> list[Path]:
    """Files as given; directories give their *.yaml/*.yml (not *.test.yaml); '-' is stdin."""
    out: list[Path] = []
    for path in given:
        if path.is_dir():
            found = sorted({*path.rglob("*.yaml"), *path.rglob("*.yml")})
            out += [p for p in found if not p.name.endswith(".test.yaml") and _braids(p)]
        else:
            out.append(path)
    return out


def _braids(path: Path) -> bool:
    """A file of a directory that holds Braid's kinds (Secrets and the like are skipped)."""
    try:
        return "braid.dev/" in path.read_text(errors="replace")
    except OSError:
        return False


def _lint_load(paths: list[Path]) -> tuple[list[tuple[Path, list[Manifest]]], list[_Problem]]:
    """Every file parsed that parses; the problems of those that do not (lint goes on)."""
    loaded, problems = [], []
    for path in paths:
        try:
            loaded += _load([path], invalid=1, collect=True)
        except _LoadError as failed:
            problems += [_problem(e, path, failed.origins, "error") for e in failed.errors]
    return loaded, problems


@dataclass(frozen=True)
class _Problem:
    level: str  # error or warning
    file: str
    line: int | None
    column: int | None
    path: str
    message: str

    def wire(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _problem(e: FieldError, path: Path, origins: list[_Origin] | None, level: str) -> _Problem:
    where, shown = _place(e, path, origins)
    file, _, rest = where.partition(":") if where != "-" else ("-", "", "")
    line, _, column = rest.partition(":")
    return _Problem(
        level,
        file,
        int(line) if line else None,
        int(column) if column else None,
        shown.path,
        shown.message,
    )


@app.command()
def lint(
    files: list[Path] = typer.Argument(
        ..., help="Manifest files, directories (their *.yaml), or - for stdin."
    ),
    output: LintFormat = typer.Option(
        LintFormat.TEXT, "--output", "-o", help="text, json, or github (Actions annotations)."
    ),
    pod_security: str = typer.Option("restricted", "--pod-security", help=POD_SECURITY_HELP),
    pod_service_account: list[str] = typer.Option([], "--pod-service-account", help=POD_SA_HELP),
) -> None:
    """Check Workflow, WorkflowRun and WorkflowSchedule manifests, every file and every
    problem at once; exit 1 when any is invalid (2 when a file is missing)."""
    pods = _pod_policy(pod_security, pod_service_account)
    paths = _lint_paths(files)
    all_manifests, problems = _lint_load(paths)
    every = [m for _, ms in all_manifests for m in ms]
    valid: list[tuple[Path, int, int]] = []
    for path, manifests in all_manifests:
        # Runs may reference Workflows defined in any of the files given together.
        others = [m for m in every if isinstance(m, Workflow) and m not in manifests]
        errors = validate_manifests([*manifests, *others], pods)
        errors = [e for e in errors if not _about_other(e, len(manifests))]
        own = [o for o in _ORIGINS if o.path == path] or None
        problems += [_problem(e, path, own, "error") for e in errors]
        if not errors:
            warnings = manifest_warnings(manifests)
            problems += [_problem(w, path, own, "warning") for w in warnings]
            valid.append((path, len(manifests), len(warnings)))
    failed = any(p.level == "error" for p in problems)
    if output == LintFormat.JSON:
        doc = {"valid": not failed, "files": len(paths), "problems": [p.wire() for p in problems]}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    elif output == LintFormat.GITHUB:
        for p in problems:
            at = f"file={p.file}" + (f",line={p.line},col={p.column}" if p.line else "")
            sys.stdout.write(f"::{p.level} {at}::{p.path}: {p.message}\n".replace("%", "%25"))
    else:
        for p in problems:
            where = f"{p.file}:{p.line}:{p.column}" if p.line else p.file
            colour = "red" if p.level == "error" else "yellow"
            text = f"{where}: [{colour}]{p.level}[/]: {escape(p.path)}: {escape(p.message)}"
            err.print(text.replace(": : ", ": "), markup=True, soft_wrap=True)
        for path, count, warned in valid:
            also = f" ({warned} warning(s))" if warned else ""
            err.print(f"[green]ok[/]: {path}: {count} manifest(s) valid{also}")
    raise typer.Exit(1 if failed else 0)


def _about_other(error: FieldError, own: int) -> bool:
    match = re.match(r"document\[(\d+)\]", error.path)
    return match is not None and int(match.group(1)) >= own


CRD_DIRS = [Path("crds"), Path("charts/braid/files/crds")]  # this repository's copies


@app.command()
def crds(
    directories: list[Path] = typer.Option(
        [],
        "--dir",
        help="Write the CRD files here (repeatable). Without it they go to stdout as one "
        "YAML stream (braid crds | kubectl apply -f -); with --check, this repository's "
        "crds/ and charts/braid/files/crds.",
    ),
    check: bool = typer.Option(False, "--check", help="Exit 1 if the files are stale."),
) -> None:
    """Print (or write) the CustomResourceDefinitions rendered from the API models."""
    rendered = render_crds()
    if not directories and not check:
        sys.stdout.write("".join(f"---\n{text}" for text in rendered.values()))
        return
    stale = []
    for directory in directories or CRD_DIRS:
        for name, text in rendered.items():
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
            err.print(
                f"[red]stale[/]: {target} differs from the API models; run `braid crds "
                "--dir crds --dir charts/braid/files/crds`"
            )
        raise typer.Exit(1)
    if check:
        shown = ", ".join(str(d) for d in directories or CRD_DIRS)
        err.print(f"[green]ok[/]: {shown} match the API models")


def editor_schema() -> dict[str, Any]:
    """One JSON Schema for every file kind Braid reads, chosen by `kind` — for editors
    (yaml-language-server, VS Code's YAML extension, JetBrains)."""
    kinds: dict[str, type[BaseModel]] = {
        "Workflow": Workflow,
        "WorkflowRun": WorkflowRun,
        "WorkflowSchedule": WorkflowSchedule,
        "WorkflowTest": WorkflowTest,
    }
    defs: dict[str, Any] = {}
    branches = []
    for kind, model in kinds.items():
        schema = model.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
        defs.update(schema.pop("$defs", {}))
        defs[f"{kind}Manifest"] = schema
        branches.append(
            {
                "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
                "then": {"$ref": f"#/$defs/{kind}Manifest"},
            }
        )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Braid manifests (braid.dev/v1alpha1)",
        "type": "object",
        "required": ["apiVersion", "kind"],
        "properties": {"kind": {"enum": list(kinds)}},
        "allOf": branches,
        "$defs": defs,
    }


@app.command()
def schema(
    out: Path | None = typer.Option(None, "--out", help="Write it here instead of stdout."),
) -> None:
    """Print the JSON Schema of Braid's files for editors: save it and point the YAML
    language server at it (# yaml-language-server: $schema=<path>)."""
    text = json.dumps(editor_schema(), indent=1) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    out.write_text(text)
    err.print(f"wrote {out}")


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


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
    # The question goes to stderr with the progress lines: stdout may be a JSON document.
    # The line above it (ApprovalRequested) already said what is asked and by whom.
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
    if not workflows:
        raise InvalidSpecError(
            [FieldError("", "expected a Workflow (or a WorkflowRun), found none")]
        )
    # Several Workflows: the first runs; the others are there for its sub-workflow steps.
    return workflows[0].metadata.name or "workflow", workflows[0].spec, {}


RUNS_DIR = Path(".braid/runs")
KEEP_RUNS = 20


def _fresh_workdir(runs: Path, run_name: str) -> Path:
    """A run's own directory under ``runs``, the oldest beyond KEEP_RUNS removed (logs of
    local runs do not pile up in /tmp)."""
    runs.mkdir(parents=True, exist_ok=True)
    old = sorted((p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for stale in old[: max(0, len(old) - (KEEP_RUNS - 1))]:
        shutil.rmtree(stale, ignore_errors=True)
    return runs / run_name


@dataclass(frozen=True)
class _Given:
    name: str
    spec: WorkflowSpec
    params: dict[str, Any]
    data: LocalData
    decisions: list[ApprovalDecision]
    workflows: dict[str, WorkflowSpec]


def _prepare(
    files: list[Path],
    param: list[str],
    approve: list[str],
    reject: list[str],
    secrets: list[Path],
    record: Path | None,
    pods: PodPolicy,
    *,
    as_json: bool,
) -> _Given:
    """Everything `braid run` was given, checked before anything runs (exit 2 if invalid)."""
    manifests = [m for _, ms in _load(files, as_json=as_json) for m in ms]
    errors = validate_manifests(manifests, pods)
    if errors:
        _invalid(files[0], errors, as_json=as_json, origins=_ORIGINS)
    _print_warnings(files[0], manifest_warnings(manifests), _ORIGINS)
    workflows = {
        m.metadata.name: m.spec for m in manifests if isinstance(m, Workflow) and m.metadata.name
    }
    try:
        name, spec, run_params = _select(manifests)
        params = resolve_params(spec, {**run_params, **inputs.parse_params(param, spec)}, "params")
        data = LocalData.load(secrets)
    except InvalidSpecError as exc:
        _invalid(files[0], exc.errors, as_json=as_json)
    decisions = _decisions(approve, reject)
    wrong = inputs.check_decisions(decisions, inputs.gates(spec, name, workflows))
    if record is not None and not record.parent.is_dir():
        wrong.append(f"--record {record}: {record.parent} is not a directory; create it first")
    if wrong:
        _invalid(files[0], [FieldError("", w) for w in wrong], as_json=as_json, files=False)
    return _Given(name, spec, params, data, decisions, workflows)


@app.command()
def run(
    files: list[Path] = typer.Argument(..., help="Workflow and/or WorkflowRun manifests."),
    param: list[str] = typer.Option([], "--param", "-p", help="KEY=VALUE (JSON or text)."),
    approve: list[str] = typer.Option([], "--approve", help="Approve gate STEP (or STEP=USER)."),
    reject: list[str] = typer.Option([], "--reject", help="Reject gate STEP (or STEP=REASON)."),
    output: OutputFormat = typer.Option(OutputFormat.TEXT, "--output", "-o", help="text or json"),
    workdir: Path | None = typer.Option(
        None,
        help="Where attempt logs and outputs are kept. Default: .braid/runs/<run> (the newest "
        f"{KEEP_RUNS} runs are kept there; older ones are removed).",
    ),
    record: Path | None = typer.Option(
        None,
        "--record",
        help="Also write the finished run as a WorkflowRun object with its status (input for "
        "`braid analyze --runs` and `braid graph`).",
    ),
    pod_security: str = typer.Option("restricted", "--pod-security", help=POD_SECURITY_HELP),
    pod_service_account: list[str] = typer.Option([], "--pod-service-account", help=POD_SA_HELP),
    secrets: list[Path] = typer.Option(
        [],
        "--secrets",
        help="A file of Secret and ConfigMap manifests the steps read (repeatable). Keys not "
        "found there are read from environment variables named <NAME>_<KEY> (upper case, '_' "
        "for other characters): Secret openai key api-key is OPENAI_API_KEY.",
    ),
    artifacts_dir: Path = typer.Option(
        Path(".braid/artifacts"),
        "--artifacts",
        help="Where step artifacts are kept, as <run>/<attempt>/<file> (a cluster keeps them "
        "in its S3 bucket with the same keys).",
    ),
    cache_dir: Path = typer.Option(
        Path(".braid/cache"),
        "--cache",
        help="Where successes of steps with `cache` are kept for later runs to reuse.",
    ),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Neither reuse nor keep cached successes (run everything)."
    ),
    follow: bool = typer.Option(
        False,
        "--follow",
        "-f",
        help="Stream what each step writes, prefixed by its step (and item), as it writes it.",
    ),
    inherit_env: bool = typer.Option(
        False,
        "--inherit-env",
        help="Give step processes this whole environment. Default: only what the manifest "
        "declares plus PATH, HOME, LANG and TMPDIR, as a Pod would see it.",
    ),
) -> None:
    """Run a workflow locally: container steps as processes, webhooks as HTTP calls."""
    pods = _pod_policy(pod_security, pod_service_account)
    as_json = output == OutputFormat.JSON
    given = _prepare(files, param, approve, reject, secrets, record, pods, as_json=as_json)
    name, spec, params, data = given.name, given.spec, given.params, given.data
    # The time says when; the suffix keeps two runs started in the same second apart.
    stamp = datetime.now().strftime("%H%M%S")  # noqa: DTZ005 - display only
    run_name = f"{name}-{stamp}-{secrets_token(2)}"
    if workdir is None:
        workdir = _fresh_workdir(RUNS_DIR, run_name)
    live_view = err.is_terminal and not as_json
    printer = ProgressPrinter(err, live=live_view)
    local = LocalRun(
        run_name=run_name,
        spec=spec,
        params=params,
        decisions=given.decisions,
        prompt=_prompt if stdin_is_terminal() else None,
        on_event=printer.event,
        on_start=printer.start,
        on_output=printer.output if follow else None,
        workdir=workdir,
        data=data,
        inherit_env=inherit_env,
        artifacts_dir=artifacts_dir,
        cache_dir=None if no_cache else cache_dir,
        workflows=given.workflows,
    )
    if any(s.container for s in spec.steps) or any(
        s.fan_out and s.fan_out.container for s in spec.steps
    ):
        err.print("[dim]note: container images are ignored locally; commands run as processes[/]")
    err.print(f"[bold]run[/] {run_name} ({len(spec.steps)} steps)")
    try:
        status = asyncio.run(live.drive(local, err) if live_view else local.execute())
    except KeyboardInterrupt:
        err.print("[red]interrupted twice: stopped without finishing compensation[/]")
        raise typer.Exit(EXIT_CANCELLED) from None
    document = run_document(run_name, status, local.workdir)
    if record is not None:
        recorded = WorkflowRun(
            metadata=ObjectMeta(name=run_name, labels={"braid.dev/workflow": name[:63]}),
            spec=WorkflowRunSpec(workflow=spec),
            status=status,
        )
        record.write_text(json.dumps(recorded.wire(), indent=2))
    if output == OutputFormat.JSON:
        sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    else:
        err.print(summary_table(status, err.width))
        if status.outputs:
            err.print(f"[bold]outputs[/] {json.dumps(status.outputs)}")
        err.print(f"[dim]logs: {local.workdir}[/]")
    if status.phase == RunPhase.SUCCEEDED:
        return
    raise typer.Exit(EXIT_CANCELLED if status.phase == RunPhase.CANCELLED else 1)


plugin.register(app)
operator.register(app)
insight.register(app)
artifacts.register(app)
testing.register(app)
ui.register(app)


def main() -> None:  # pragma: no cover - console entry point
    app()

"""`braid artifacts` (also `kubectl braid artifacts`): a run's artifacts, and one fetched; and
`braid pod-agent`, which runs inside step Pods to move them (not for people)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import typer
from rich.console import Console
from rich.table import Table

from braid.api.common import human_size
from braid.artifacts import agent
from braid.artifacts.files import ArtifactError, sha256_of
from braid.artifacts.store import Repository, S3Store
from braid.cli.kubectl import Kubectl, KubectlError

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

pod_agent = typer.Typer(
    hidden=True, help="Runs inside step Pods: moves artifacts (set up by the operator)."
)


@pod_agent.command("fetch-inputs")
def fetch_inputs() -> None:
    """The init container: the step's input artifacts into $BRAID_INPUTS."""
    raise typer.Exit(agent.fetch_inputs(os.environ))


@pod_agent.command("store-outputs")
def store_outputs() -> None:
    """The sidecar: once the step has ended (SIGTERM), store $BRAID_ARTIFACTS."""
    raise typer.Exit(agent.store_outputs(os.environ))


def listing(status: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(step, artifact name, artifact) for every artifact a run's status references."""
    rows = []
    for step in [*status.get("steps", []), *(status.get("finally") or [])]:
        for name, a in (step.get("artifacts") or {}).items():
            rows.append((step["name"], name, a))
        for item in step.get("items") or []:
            for name, a in (item.get("artifacts") or {}).items():
                rows.append((f"{step['name']}[{item.get('index')}]", name, a))
        for iteration in step.get("iterations") or []:
            for body in iteration.get("steps") or []:
                where = f"{step['name']}#{iteration.get('iteration')}/{body['name']}"
                for name, a in (body.get("artifacts") or {}).items():
                    rows.append((where, name, a))
    return rows


def repository_from_env() -> Repository:
    endpoint = os.environ.get("BRAID_ARTIFACT_ENDPOINT", "")
    bucket = os.environ.get("BRAID_ARTIFACT_BUCKET", "")
    if not endpoint or not bucket:
        raise ArtifactError(
            "set BRAID_ARTIFACT_ENDPOINT and BRAID_ARTIFACT_BUCKET (and AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY) to fetch from the artifact repository"
        )
    region = os.environ.get("BRAID_ARTIFACT_REGION", "us-east-1")
    return Repository.parse(Repository(endpoint, bucket, region=region).wire())


def fetch(artifact: dict[str, Any], target: Path) -> None:
    uri = str(artifact.get("uri", ""))
    parts = urlsplit(uri)
    if parts.scheme == "file":
        shutil.copyfile(unquote(parts.path), target)
    elif parts.scheme == "s3":
        S3Store(repository_from_env()).get(uri, target)
    else:
        raise ArtifactError(f"{uri[:200]}: not an artifact uri")
    if sha256_of(target) != artifact.get("sha256"):
        raise ArtifactError(f"{target}: sha256 differs from the one recorded")


def artifacts(
    run: str = typer.Argument(..., help="A run's name, or a file (braid run --record)."),
    step: str | None = typer.Argument(None, help="Only this step's artifacts."),
    get: str | None = typer.Option(None, "--get", help="Fetch this artifact."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Where --get writes it (default: its name, here)."
    ),
    namespace: str | None = typer.Option(None, "--namespace", "-n", help="Namespace of the run."),
    context: str | None = typer.Option(None, "--context", help="kubeconfig context."),
) -> None:
    """List a run's artifacts (step, name, size, sha256, uri), or fetch one with --get."""
    try:
        path = Path(run)
        if run.endswith(".json") and path.is_file():
            obj = json.loads(path.read_text())
        else:
            obj = Kubectl(namespace, context).json("get", "workflowrun", run)
    except (KubectlError, OSError, ValueError) as exc:
        err.print(f"[red]error[/]: {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    rows = [r for r in listing(obj.get("status") or {}) if step is None or r[0] == step]
    if get is None:
        table = Table("step", "artifact", "size", "sha256", "uri", box=None)
        for where, name, a in rows:
            table.add_row(
                where,
                name,
                human_size(int(a.get("size", 0))),
                a.get("sha256", "")[:12],
                a.get("uri", ""),
            )
        out.print(table if rows else "no artifacts")
        return
    found = [r for r in rows if r[1] == get]
    if len(found) != 1:
        names = ", ".join(sorted({f"{w}:{n}" for w, n, _ in rows})) or "none"
        which = "several steps have" if found else "no step has"
        err.print(f"[red]error[/]: {which} an artifact {get!r} (give STEP); artifacts: {names}")
        raise typer.Exit(1)
    target = output or Path(Path(get).name)
    try:
        fetch(found[0][2], target)
    except (ArtifactError, OSError) as exc:
        err.print(f"[red]error[/]: {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    out.print(f"wrote {target} ({human_size(target.stat().st_size)}, sha256 verified)")


def register(app: typer.Typer) -> None:
    app.command()(artifacts)
    app.add_typer(pod_agent, name="pod-agent")

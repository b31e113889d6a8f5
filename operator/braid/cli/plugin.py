"""`kubectl braid` (also `braid`): approve, reject, status, list, logs, cancel, retry.

Every command goes through kubectl, so the kubeconfig, context and impersonation a user has
apply unchanged, and what it writes is exactly what plain `kubectl annotate` would write.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from braid.api.common import human_age, human_size
from braid.api.reasons import APPROVE_PREFIX as APPROVE
from braid.api.reasons import REJECT_PREFIX as REJECT
from braid.api.run import retry_run
from braid.cli.kubectl import Kubectl, KubectlError
from braid.kube.annotations import approval_value
from braid.kube.pods import LABEL_ATTEMPT, LABEL_RUN, LABEL_STEP

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def pending_gate(run: dict[str, Any], step: str) -> dict[str, Any]:
    gates = (run.get("status") or {}).get("pendingApprovals") or []
    for gate in gates:
        if gate["step"] == step:
            return dict(gate)
    waiting = ", ".join(g["step"] for g in gates) or "none"
    raise KubectlError(f"step {step!r} is not waiting for approval (waiting: {waiting})")


def _duration(step: dict[str, Any]) -> str:
    start, end = step.get("startTime"), step.get("completionTime")
    if not start or not end:
        return ""
    delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    return f"{delta.total_seconds():.1f}s"


_STYLE = {
    "Succeeded": "green",
    "Failed": "red",
    "Cancelled": "red",
    "Skipped": "dim",
    "Waiting": "yellow",
    "Running": "blue",
    "Retrying": "yellow",
}


def status_tree(run: dict[str, Any]) -> Tree:
    status = run.get("status") or {}
    cond: dict[str, Any] = next(
        (c for c in status.get("conditions", []) if c["type"] == "Succeeded"), {}
    )
    tree = Tree(
        f"[bold]{run['metadata']['name']}[/] {status.get('phase', 'Pending')} "
        f"({cond.get('reason', '')}) {status.get('progress', '')} {status.get('duration', '')}"
    )
    for step in [*status.get("steps", []), *(status.get("finally") or [])]:
        phase = step.get("phase", "Pending")
        style = _STYLE.get(phase, "")
        label = f"{step['name']} [{style}]{phase}[/]" if style else f"{step['name']} {phase}"
        label += f"  attempts={step.get('attempts', 0)} {_duration(step)}"
        if step.get("message"):
            label += f"  [dim]{step['message'][:100]}[/]"
        node = tree.add(label)
        for name, artifact in (step.get("artifacts") or {}).items():
            node.add(f"artifact {name} {human_size(int(artifact.get('size', 0)))}")
        for approval in step.get("approvals") or []:
            node.add(
                f"{approval['decision'].lower()} by {approval['user']} "
                f"at {approval.get('time', '')}"
                + (f": {approval['reason']}" if approval.get("reason") else "")
            )
        if step.get("itemCount") is not None:
            items = step.get("items") or []
            done = sum(i.get("phase") == "Succeeded" for i in items)
            node.add(f"{done}/{step['itemCount']} items succeeded")
        for iteration in step.get("iterations") or []:
            body = ", ".join(
                f"{b['name']} {b.get('phase', '')}" for b in iteration.get("steps", [])
            )
            node.add(f"iteration {iteration['iteration']}: {body}")
        if step.get("compensation"):
            node.add(f"compensation {step['compensation'].get('phase', '')}")
    for gate in status.get("pendingApprovals") or []:
        tree.add(
            f"[yellow]awaiting[/] {gate['step']}: {gate['required']} approval(s), digest "
            f"{gate['digest']} — kubectl braid approve {run['metadata']['name']} {gate['step']}"
        )
    return tree


def kubectl_for(
    namespace: str | None, context: str | None, as_user: str | None, as_group: list[str]
) -> Kubectl:
    return Kubectl(namespace, context, as_user, list(as_group))


ns_opt = typer.Option(None, "--namespace", "-n", help="Namespace of the run.")
ctx_opt = typer.Option(None, "--context", help="kubeconfig context.")
as_opt = typer.Option(None, "--as", help="Impersonate this user.")
group_opt = typer.Option([], "--as-group", help="Impersonate this group (repeatable).")


def fail(exc: Exception) -> typer.Exit:
    err.print(f"[red]error[/]: {exc}", markup=True, soft_wrap=True)
    return typer.Exit(1)


def _child_runs(status: Any) -> set[str]:
    """Every childRun a run's status records (steps, items, iterations)."""
    if isinstance(status, dict):
        out = {str(status["childRun"])} if status.get("childRun") else set()
        for value in status.values():
            if isinstance(value, dict | list):
                out |= _child_runs(value)
        return out
    if isinstance(status, list):
        return set().union(*(_child_runs(v) for v in status)) if status else set()
    return set()


def gate_holder(
    k: Kubectl, obj: dict[str, Any], step: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run whose gate ``step`` waits: this one, or one of its sub-workflows' child runs
    (a decision is always made on the run that holds the gate, where the approval admission
    policy checks who makes it). Several children waiting on a gate of that name: an error
    naming them."""
    try:
        return obj, pending_gate(obj, step)
    except KubectlError as missing:
        found: list[tuple[dict[str, Any], dict[str, Any]]] = []
        parents = [obj]
        for _ in range(8):  # runs nest at most 8 deep
            names = ",".join(p["metadata"]["name"][:63] for p in parents)
            selector = f"braid.dev/parent-run in ({names})"
            # Only the children the parents' statuses name (the operator writes those): a run
            # anyone labelled as a child is never offered for approval in its stead.
            theirs = {c for p in parents for c in _child_runs(p.get("status") or {})}
            listed = k.json("get", "workflowruns", "-l", selector).get("items", [])
            parents = [c for c in listed if c["metadata"]["name"] in theirs]
            for child in parents:
                gates = (child.get("status") or {}).get("pendingApprovals") or []
                found += [(child, dict(g)) for g in gates if g["step"] == step]
            if found or not parents:
                break
        if len(found) == 1:
            return found[0]
        if found:
            shown = ", ".join(c["metadata"]["name"] for c, _ in found)
            raise KubectlError(
                f"child runs {shown} each wait on {step!r}: name the one you mean "
                f"(kubectl braid approve <child-run> {step})"
            ) from None
        raise missing from None


def approve(
    run: str,
    step: str,
    namespace: str | None = ns_opt,
    context: str | None = ctx_opt,
    as_user: str | None = as_opt,
    as_group: list[str] = group_opt,
) -> None:
    """Approve STEP of RUN, for exactly the inputs it is waiting on."""
    k = kubectl_for(namespace, context, as_user, as_group)
    try:
        obj, gate = gate_holder(k, k.json("get", "workflowrun", run), step)
        holder = obj["metadata"]["name"]
        user = k.whoami()
        existing = (obj["metadata"].get("annotations") or {}).get(APPROVE + step, "")
        value = approval_value(existing, user, gate["digest"])
        k(
            "annotate",
            "--overwrite",
            f"--resource-version={obj['metadata']['resourceVersion']}",
            "workflowrun",
            holder,
            f"{APPROVE}{step}={value}",
        )
    except KubectlError as exc:
        raise fail(exc) from None
    via = f" (child run {holder} of {run})" if holder != run else ""
    out.print(f"approved {step} of {holder}{via} as {user} (inputs {gate['digest']})")


def reject(
    run: str,
    step: str,
    reason: str = typer.Option(..., "--reason", help="Why."),
    namespace: str | None = ns_opt,
    context: str | None = ctx_opt,
    as_user: str | None = as_opt,
    as_group: list[str] = group_opt,
) -> None:
    """Reject STEP of RUN with a reason; the step fails and compensation runs."""
    k = kubectl_for(namespace, context, as_user, as_group)
    try:
        obj, _ = gate_holder(k, k.json("get", "workflowrun", run), step)
        holder = obj["metadata"]["name"]
        user = k.whoami()
        k("annotate", "workflowrun", holder, f"{REJECT}{step}={user}: {reason}")
    except KubectlError as exc:
        raise fail(exc) from None
    via = f" (child run {holder} of {run})" if holder != run else ""
    out.print(f"rejected {step} of {holder}{via} as {user}: {reason}")


def status(
    run: str,
    namespace: str | None = ns_opt,
    context: str | None = ctx_opt,
    output: str = typer.Option("tree", "--output", "-o", help="tree or json"),
) -> None:
    """A tree of the run's steps: phases, attempts, durations, who approved."""
    try:
        obj = Kubectl(namespace, context).json("get", "workflowrun", run)
    except KubectlError as exc:
        raise fail(exc) from None
    if output == "json":
        print(json.dumps(obj.get("status") or {}, indent=2))
    else:
        out.print(status_tree(obj))


def list_runs(
    namespace: str | None = ns_opt,
    context: str | None = ctx_opt,
    all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A"),
) -> None:
    """Runs with their workflow, outcome, progress and age."""
    try:
        args = ["get", "workflowruns"] + (["--all-namespaces"] if all_namespaces else [])
        items = Kubectl(namespace, context).json(*args).get("items", [])
    except KubectlError as exc:
        raise fail(exc) from None
    now = datetime.now(UTC)
    table = Table(box=None)
    for col in ("NAMESPACE", "NAME", "WORKFLOW", "SUCCEEDED", "REASON", "PROGRESS", "AGE"):
        table.add_column(col)
    for item in items:
        st = item.get("status") or {}
        cond: dict[str, Any] = next(
            (c for c in st.get("conditions", []) if c["type"] == "Succeeded"), {}
        )
        ref = (item["spec"].get("workflowRef") or {}).get("name", "(inline)")
        table.add_row(
            item["metadata"]["namespace"],
            item["metadata"]["name"],
            ref,
            cond.get("status", ""),
            cond.get("reason", ""),
            st.get("progress", ""),
            human_age(item["metadata"].get("creationTimestamp"), now),
        )
    out.print(table)


def logs(
    run: str,
    step: str,
    namespace: str | None = ns_opt,
    context: str | None = ctx_opt,
    attempt: int | None = typer.Option(None, help="Attempt number; default the latest."),
) -> None:
    """Logs of the latest (or a given) attempt of STEP."""
    k = Kubectl(namespace, context)
    try:
        pods = k.json("get", "pods", "-l", f"{LABEL_RUN}={run},{LABEL_STEP}={step}")["items"]
        if attempt is not None:
            pods = [p for p in pods if p["metadata"]["labels"].get(LABEL_ATTEMPT) == str(attempt)]
        if not pods:
            raise KubectlError(f"no pods for step {step!r} of run {run!r}")
        latest = max(pods, key=lambda p: int(p["metadata"]["labels"].get(LABEL_ATTEMPT, "0")))
        print(k("logs", latest["metadata"]["name"], "-c", "step"), end="")
    except KubectlError as exc:
        raise fail(exc) from None


def cancel(run: str, namespace: str | None = ns_opt, context: str | None = ctx_opt) -> None:
    """Cancel RUN: running steps stop, compensation and finally steps run."""
    try:
        Kubectl(namespace, context)(
            "patch", "workflowrun", run, "--type=merge", "-p", '{"spec": {"cancelled": true}}'
        )
    except KubectlError as exc:
        raise fail(exc) from None
    out.print(f"cancelling {run}")


def retry(
    run: str,
    from_step: str | None = typer.Option(None, "--from", help="Re-run from this step."),
    namespace: str | None = ns_opt,
    context: str | None = ctx_opt,
) -> None:
    """Start a new run of RUN's workflow snapshot and params, reusing what succeeded."""
    k = Kubectl(namespace, context)
    try:
        try:
            manifest = retry_run(k.json("get", "workflowrun", run), k.whoami(), from_step)
        except ValueError as exc:
            raise KubectlError(str(exc)) from None
        created = k("create", "-o", "name", "-f", "-", stdin=json.dumps(manifest.wire()))
        created = created.strip()
    except KubectlError as exc:
        raise fail(exc) from None
    out.print(
        f"{created.rsplit('/', 1)[-1]} retries {run}" + (f" from {from_step}" if from_step else "")
    )


def register(app: typer.Typer) -> None:
    """Add the plugin commands to the `braid` app (also `kubectl braid`)."""
    for command in (approve, reject, status, logs, cancel, retry):
        app.command()(command)
    app.command("list")(list_runs)

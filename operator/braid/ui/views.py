"""What the pages show, from the objects the API server returned: rows of runs, a run's
picture and steps, one step's whole record, and the approval gates a person may decide.
Pure: no I/O, no clock (``now`` is passed in)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from braid.analysis.graph import graph_of
from braid.analysis.graph import svg as graph_svg
from braid.api.common import human_age
from braid.api.run import LoopTaskStatus, PendingApproval, StepStatus, WorkflowRunStatus
from braid.api.workflow import Approvers, FinallyStep, Step, WorkflowSpec
from braid.engine import dag
from braid.engine.approvals import gate_digest
from braid.kube.userapi import Identity

PHASES = ("Pending", "Running", "Compensating", "Finalizing", "Succeeded", "Failed", "Cancelled")
FINISHED = frozenset({"Succeeded", "Failed", "Cancelled"})


@dataclass(frozen=True)
class RunRow:
    namespace: str
    name: str
    workflow: str
    phase: str
    reason: str
    progress: str
    age: str
    waiting: int  # approval gates open
    parent: str


def workflow_of(run: dict[str, Any]) -> str:
    ref = (run.get("spec") or {}).get("workflowRef") or {}
    labels = (run.get("metadata") or {}).get("labels") or {}
    return str(ref.get("name") or labels.get("braid.dev/workflow") or "(inline)")


def run_row(run: dict[str, Any], now: datetime) -> RunRow:
    meta, status = run.get("metadata") or {}, run.get("status") or {}
    succeeded: dict[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Succeeded"), {}
    )
    return RunRow(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        workflow=workflow_of(run),
        phase=status.get("phase") or "Pending",
        reason=succeeded.get("reason", ""),
        progress=status.get("progress") or "",
        age=human_age(meta.get("creationTimestamp"), now),
        waiting=len(status.get("pendingApprovals") or []),
        parent=(status.get("parent") or {}).get("run", ""),
    )


def rows(
    runs: list[dict[str, Any]], now: datetime, *, workflow: str = "", phase: str = ""
) -> list[RunRow]:
    """Newest first, filtered by workflow and phase (empty: all)."""
    out = [run_row(r, now) for r in runs]
    out = [r for r in out if (not workflow or r.workflow == workflow)]
    out = [r for r in out if (not phase or r.phase == phase)]
    stamps = {
        (r["metadata"].get("namespace"), r["metadata"]["name"]): r["metadata"].get(
            "creationTimestamp", ""
        )
        for r in runs
    }
    return sorted(out, key=lambda r: (stamps[(r.namespace, r.name)], r.name), reverse=True)


def status_of(run: dict[str, Any]) -> WorkflowRunStatus | None:
    """The run's status as the models read it; None before the operator wrote one (or when
    it cannot be read, which the page says rather than failing)."""
    try:
        return WorkflowRunStatus.model_validate(run.get("status") or {})
    except ValidationError:
        return None


def spec_of(run: dict[str, Any], workflow: dict[str, Any] | None = None) -> WorkflowSpec | None:
    """The spec the run follows: its snapshot once started, else its inline workflow, else
    the referenced Workflow as it is now."""
    for raw in (
        (run.get("status") or {}).get("workflowSpec"),
        (run.get("spec") or {}).get("workflow"),
        (workflow or {}).get("spec"),
    ):
        if raw:
            try:
                return WorkflowSpec.model_validate(raw)
            except ValidationError:
                continue
    return None


def picture(spec: WorkflowSpec | None, status: WorkflowRunStatus | None) -> str:
    """The DAG as `braid graph` draws it, each box coloured by its step's phase."""
    if spec is None:
        return ""
    return graph_svg(graph_of(spec, status))


@dataclass(frozen=True)
class StepRow:
    name: str
    kind: str
    phase: str
    attempts: int
    started: str
    duration: str
    detail: str


def _seconds(start: datetime | None, end: datetime | None, now: datetime) -> str:
    if start is None:
        return ""
    seconds = ((end or now) - start).total_seconds()
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m{int(seconds % 60)}s"


def step_rows(status: WorkflowRunStatus | None, now: datetime) -> list[StepRow]:
    if status is None:
        return []
    return [
        StepRow(
            st.name,
            st.kind,
            st.phase.value,
            st.attempts,
            st.start_time.strftime("%H:%M:%S") if st.start_time else "",
            _seconds(st.start_time, st.completion_time, now),
            "; ".join(t for t in (st.reason, st.message) if t),
        )
        for st in [*status.steps, *(status.finally_ or [])]
    ]


@dataclass
class StepDetail:
    """Everything recorded of one step: its definition, each attempt's pod, what went in and
    came out, artifacts, a model call's messages and reply, usage, decisions."""

    name: str
    status: dict[str, Any]
    definition: dict[str, Any]
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    artifacts: dict[str, Any]
    usage: dict[str, Any]
    prompt: list[dict[str, Any]] = field(default_factory=list)
    reply: dict[str, Any] = field(default_factory=dict)
    approvals: list[dict[str, Any]] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)


def _find(spec: WorkflowSpec, name: str) -> Step | FinallyStep | None:
    found: list[Step | FinallyStep] = [s for s in spec.steps if s.name == name]
    found += [s for s in spec.finally_ or [] if s.name == name]
    return found[0] if found else None


def step_detail(
    spec: WorkflowSpec | None, status: WorkflowRunStatus | None, name: str
) -> StepDetail | None:
    steps = {
        s.name: s
        for s in [*(status.steps if status else []), *((status.finally_ or []) if status else [])]
    }
    step = _find(spec, name) if spec else None
    st = steps.get(name)
    if step is None and st is None:
        return None
    wire = st.model_dump(by_alias=True, exclude_none=True, mode="json") if st else {}
    definition = step.model_dump(by_alias=True, exclude_none=True, mode="json") if step else {}
    deps = dag.build(spec)[0].deps.get(name, ()) if spec else ()
    inputs = {d: steps[d].outputs or {} for d in deps if d in steps}
    outputs = dict(wire.get("outputs") or {})
    detail = StepDetail(
        name=name,
        status={
            k: v
            for k, v in wire.items()
            if k not in ("outputs", "artifacts", "usage", "items", "approvals", "iterations")
        },
        definition=definition,
        inputs=inputs,
        outputs=outputs,
        artifacts=dict(wire.get("artifacts") or {}),
        usage=dict(wire.get("usage") or {}),
        approvals=list(wire.get("approvals") or []),
        items=list(wire.get("items") or [])[:50],
    )
    llm = definition.get("llm")
    if isinstance(llm, dict):
        detail.prompt = list(llm.get("messages") or [])
        detail.reply = {
            k: outputs[k]
            for k in ("content", "json", "toolCalls", "finishReason", "model", "usage")
            if k in outputs
        }
    return detail


@dataclass(frozen=True)
class Attempt:
    pod: str
    attempt: int
    phase: str
    exit_code: int | None
    reason: str
    started: str
    finished: str


def attempts_of(pods: list[dict[str, Any]], run_uid: str, attempt_label: str) -> list[Attempt]:
    """The step's attempt pods, oldest first: only pods the run controls (anyone may label a
    pod with a run's name; the operator's own ownerReference says which are its)."""
    out = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        owners = meta.get("ownerReferences") or []
        if not any(o.get("controller") and o.get("uid") == run_uid for o in owners):
            continue
        status = pod.get("status") or {}
        states = [
            (c.get("state") or {}).get("terminated") or {}
            for c in status.get("containerStatuses") or []
            if c.get("name") == "step"
        ]
        ended = states[0] if states else {}
        try:
            number = int((meta.get("labels") or {}).get(attempt_label, "0"))
        except ValueError:
            number = 0
        out.append(
            Attempt(
                pod=meta.get("name", ""),
                attempt=number,
                phase=status.get("phase", ""),
                exit_code=ended.get("exitCode"),
                reason=ended.get("reason") or status.get("reason") or "",
                started=ended.get("startedAt") or status.get("startTime") or "",
                finished=ended.get("finishedAt") or "",
            )
        )
    return sorted(out, key=lambda a: (a.attempt, a.pod))


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


# --- approval gates ------------------------------------------------------------------------


def may_decide(who: Identity, gate: PendingApproval) -> bool:
    """The admission policy's rule: a listed user, a member of a listed group, or anyone who
    may annotate the run when nobody is listed. The API server decides; the page only says
    in advance what it will say."""
    if not gate.users and not gate.groups:
        return True
    return who.user in (gate.users or []) or bool(set(who.groups) & set(gate.groups or []))


@dataclass
class Gate:
    namespace: str
    run: str
    step: str
    iteration: int | None
    message: str
    required: int
    approved_by: list[str]
    approvers: str
    deadline: datetime | None
    digest: str
    inputs: dict[str, Any]
    confirmed: bool  # the inputs shown hash, with the message, to the gate's digest
    allowed: bool
    resource_version: str
    approvals: list[dict[str, Any]]
    existing: str  # the approval annotation as it stands


def _opening(
    status: WorkflowRunStatus, gate: PendingApproval
) -> StepStatus | LoopTaskStatus | None:
    for st in status.steps:
        if st.name == gate.step and gate.iteration is None:
            return st
        for it in st.iterations or []:
            if it.iteration == gate.iteration:
                body = next((b for b in it.steps if b.name == gate.step), None)
                if body is not None:
                    return body
    return None


def _gate_inputs(
    spec: WorkflowSpec | None, status: WorkflowRunStatus, gate: PendingApproval
) -> dict[str, Any]:
    """What the gate's digest covers: the outputs of the steps it builds on (inside a loop:
    the body steps before it in this iteration)."""
    steps = {s.name: s for s in status.steps}
    if gate.iteration is None and spec is not None and gate.step in steps:
        deps = dag.build(spec)[0].deps.get(gate.step, ())
        return {"steps": {d: steps[d].outputs or {} for d in deps if d in steps}}
    for st in status.steps:
        for it in st.iterations or []:
            if it.iteration != gate.iteration:
                continue
            before: dict[str, Any] = {}
            for body in it.steps:
                if body.name == gate.step:
                    return {"body": before}
                before[body.name] = body.outputs or {}
    return {}


def gates(runs: list[dict[str, Any]], who: Identity, annotation_prefix: str) -> list[Gate]:
    """The open gates of these runs, each saying whether ``who`` may decide it."""
    out = []
    for run in runs:
        status = status_of(run)
        if status is None or not status.pending_approvals:
            continue
        meta = run["metadata"]
        spec = spec_of(run)
        for gate in status.pending_approvals:
            opening = _opening(status, gate)
            inputs = _gate_inputs(spec, status, gate)
            message = (opening.message or "") if opening else ""
            out.append(
                Gate(
                    namespace=meta["namespace"],
                    run=meta["name"],
                    step=gate.step,
                    iteration=gate.iteration,
                    message=message,
                    required=gate.required,
                    approved_by=list(gate.approved_by or []),
                    approvers=", ".join(
                        [*(gate.users or []), *(f"group:{g}" for g in gate.groups or [])]
                    )
                    or "anyone who may annotate the run",
                    deadline=gate.deadline,
                    digest=gate.digest,
                    inputs=inputs,
                    confirmed=_confirmed(spec, meta, gate, opening, inputs),
                    allowed=may_decide(who, gate),
                    resource_version=meta.get("resourceVersion", ""),
                    approvals=[
                        a.model_dump(by_alias=True, exclude_none=True, mode="json")
                        for a in (opening.approvals or [])
                    ]
                    if opening
                    else [],
                    existing=(meta.get("annotations") or {}).get(annotation_prefix + gate.step, ""),
                )
            )
    return out


def _confirmed(
    spec: WorkflowSpec | None,
    meta: dict[str, Any],
    gate: PendingApproval,
    opening: StepStatus | LoopTaskStatus | None,
    inputs: dict[str, Any],
) -> bool:
    """Recompute the digest from what the page shows: true when the inputs and the message
    on screen are exactly what an approval binds to."""
    if opening is None or spec is None or gate.iteration is not None:
        return False
    step = _find(spec, gate.step)
    approval = step.approval if isinstance(step, Step) else None
    if approval is None:
        return False
    text = (opening.message or "") if approval.message else ""
    return (
        gate_digest(
            inputs,
            text,
            run_uid=meta.get("uid", ""),
            step=gate.step,
            body=None,
            iteration=None,
            opened=opening.start_time,
        )
        == gate.digest
    )


def approvers_of(spec: Approvers | None) -> str:
    if spec is None or (not spec.users and not spec.groups):
        return "anyone who may annotate the run"
    return ", ".join([*(spec.users or []), *(f"group:{g}" for g in spec.groups or [])])

"""`braid test`: a WorkflowTest's cases run on the engine's virtual clock — stubs decide how
each attempt ends, nothing runs — and what happened is compared with what each case expects.
Milliseconds a case. Pure: the CLI reads the files and prints the verdicts.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

from braid.api.run import Artifact, RunPhase, StepPhase, StepStatus, WorkflowRunStatus
from braid.api.workflow import WorkflowSpec
from braid.api.workflowtest import Expectation, Stub, TestCase
from braid.engine.actions import (
    ApprovalDecision,
    ChildOutcome,
    HTTPResponse,
    StartAttempt,
)
from braid.engine.params import resolve_params
from braid.engine.simulate import EPOCH, Outcome, SimulationResult, simulate

# Runs longer than this (decisions) are stopped: a loop no stub ends, say.
MAX_DECISIONS = 100_000


@dataclass
class CaseResult:
    name: str
    failures: list[str] = field(default_factory=list)
    status: WorkflowRunStatus | None = None

    @property
    def passed(self) -> bool:
        return not self.failures


def run_case(spec: WorkflowSpec, case: TestCase) -> CaseResult:
    """One case: simulate the run with the case's stubs and decisions, then check it."""
    result = CaseResult(case.name)
    stubs = case.stubs or {}
    known = _names(spec)
    for name in stubs:
        if name not in known:
            result.failures.append(f"stubs.{name}: no step, body step or finally step of that name")
    if result.failures:
        return result
    try:
        params = resolve_params(spec, case.params, "params")
    except ValueError as exc:
        result.failures.append(f"params: {exc}")
        return result
    decisions = [
        ApprovalDecision(
            gate,
            d.approve or "braid-test",
            approve=d.approve is not None,
            reason=d.reject,
            trusted=True,
        )
        for gate, d in (case.decisions or {}).items()
    ]
    try:
        sim = simulate(
            spec,
            lambda action: outcome(action, stubs),
            params=params,
            standing=decisions,
            cancel_at=case.cancel_at_seconds,
            run_name="test",
            max_decisions=MAX_DECISIONS,
        )
    except AssertionError as exc:
        result.failures.append(f"the run did not finish: {exc}")
        return result
    result.status = sim.status
    result.failures = check(case.expect, sim)
    return result


def _names(spec: WorkflowSpec) -> set[str]:
    names = {s.name for s in spec.steps} | {f.name for f in spec.finally_ or []}
    for step in spec.steps:
        names |= {b.name for b in (step.loop.steps if step.loop else [])}
    return names


def _chosen(action: StartAttempt, stubs: dict[str, Stub]) -> Stub | None:
    """The stub for an attempt: its body step's or step's, then narrowed by iteration, item
    and attempt number; a compensation takes its step's stub's compensation."""
    labels = action.labels
    stub = stubs.get(labels.body_step or labels.step)
    if stub is None:
        return None
    if labels.role == "compensation":
        return stub.compensation
    if stub.iterations and labels.iteration is not None:
        stub = stub.iterations[min(labels.iteration, len(stub.iterations) - 1)]
    if stub.items and labels.item is not None and str(labels.item) in stub.items:
        stub = stub.items[str(labels.item)]
    if stub.candidates and action.candidate in stub.candidates:
        stub = stub.candidates[action.candidate]
    if stub.attempts:
        stub = stub.attempts[min(labels.attempt, len(stub.attempts)) - 1]
    return stub


def _artifacts(stub: Stub) -> dict[str, Artifact] | None:
    if not stub.artifacts:
        return None
    return {
        name: Artifact(size=a.size, sha256="0" * 64, uri=a.uri or f"file:///stub/{name}")
        for name, a in stub.artifacts.items()
    }


def outcome(action: StartAttempt, stubs: dict[str, Stub]) -> Outcome:
    """How the attempt ends, as its stub says (or the default: success after a second)."""
    stub = _chosen(action, stubs) or Stub()
    if stub.error is not None:
        return Outcome(seconds=stub.seconds, error=stub.error)
    if action.child is not None:
        child = stub.child
        ended = ChildOutcome(
            phase=child.phase if child else "Succeeded",
            outputs=(child.outputs if child else None) or stub.outputs,
            reason=child.reason if child else None,
            message=child.message if child else None,
        )
        return Outcome(seconds=stub.seconds, child=ended)
    if action.webhook is not None and action.webhook.model_call and stub.response is None:
        return Outcome(seconds=stub.seconds, response=_model_reply(stub))
    if action.webhook is not None:  # a model answering with an error is its raw response
        r = stub.response
        body = r.body if r is not None else (stub.outputs or {})
        response = HTTPResponse(
            r.status if r else 200,
            dict(r.headers or {}) if r else {},
            body if body is not None else {},
        )
        return Outcome(seconds=stub.seconds, response=response)
    return Outcome(
        seconds=stub.seconds,
        exit_code=stub.exit_code,
        output=json.dumps(stub.outputs) if stub.outputs is not None else None,
        message=stub.stderr,
        artifacts=_artifacts(stub),
    )


def _model_reply(stub: Stub) -> HTTPResponse:
    reply = stub.reply
    content = reply.content if reply is not None else "ok"
    calls = (reply.tool_calls if reply is not None else None) or []
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for i, c in enumerate(calls)
        ]
    finish = (reply.finish_reason if reply else None) or ("tool_calls" if calls else "stop")
    used = (reply.input_tokens, reply.output_tokens) if reply else (0, 0)
    body = {
        "model": "stub",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": used[0],
            "completion_tokens": used[1],
            "total_tokens": sum(used),
        },
    }
    return HTTPResponse(200, {"content-type": "application/json"}, body)


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _differ(where: str, expected: Any, got: Any) -> str | None:
    """None when equal; else one line, or for large values a unified diff of their JSON."""
    if expected == got:
        return None
    line = f"{where}: expected {_show(expected)}, got {_show(got)}"
    if len(line) <= 160:
        return line
    want = json.dumps(expected, indent=2, sort_keys=True, default=str).splitlines()
    have = json.dumps(got, indent=2, sort_keys=True, default=str).splitlines()
    diff = difflib.unified_diff(want, have, "expected", "got", lineterm="", n=2)
    return f"{where}:\n" + "\n".join(diff)


def check(expect: Expectation, sim: SimulationResult) -> list[str]:
    """Every way the run differs from what the case expects."""
    status = sim.status
    out = _run_level(expect, status)
    by_name = {s.name: s for s in [*status.steps, *(status.finally_ or [])]}
    for name, want in (expect.steps or {}).items():
        st = by_name.get(name)
        out += _step(name, want, st) if st is not None else [f"steps.{name}: no such step"]
    ran = _ran(status)
    if expect.ran is not None:
        out.append(_differ("ran", expect.ran, ran))
    out += [f"notRan: {n} ran ({by_name[n].phase.value})" for n in expect.not_ran or [] if n in ran]
    if expect.compensated is not None:
        out.append(_differ("compensated", expect.compensated, _compensated(status)))
    if expect.duration_seconds is not None:
        took = (sim.end - EPOCH).total_seconds()
        out.append(_differ("durationSeconds", expect.duration_seconds, took))
    return [o for o in out if o is not None]


def _run_level(expect: Expectation, status: WorkflowRunStatus) -> list[str | None]:
    out: list[str | None] = []
    condition = next((c for c in status.conditions if c.type == "Succeeded"), None)
    if expect.phase is not None and status.phase.value != expect.phase:
        said = f" ({condition.reason}: {condition.message})" if condition else ""
        out.append(f"phase: expected {expect.phase}, got {status.phase.value}{said}")
    if expect.reason is not None:
        out.append(_differ("reason", expect.reason, condition.reason if condition else None))
    for key, value in (expect.outputs or {}).items():
        out.append(_differ(f"outputs.{key}", value, (status.outputs or {}).get(key, "<missing>")))
    used = status.usage
    for key, value in (expect.usage or {}).items():
        got = getattr(used, key, None) if used is not None else 0
        out.append(_differ(f"usage.{key}", value, got))
    return out


def _step(name: str, want: Any, st: StepStatus) -> list[str | None]:
    out: list[str | None] = []
    if want.phase is not None and want.phase != st.phase.value:
        said = f" ({st.reason}: {st.message})" if st.reason else ""
        out.append(f"steps.{name}.phase: expected {want.phase}, got {st.phase.value}{said}")
    if want.reason is not None:
        out.append(_differ(f"steps.{name}.reason", want.reason, st.reason))
    if want.attempts is not None:
        out.append(_differ(f"steps.{name}.attempts", want.attempts, st.attempts))
    for key, value in (want.outputs or {}).items():
        got = (st.outputs or {}).get(key, "<missing>")
        out.append(_differ(f"steps.{name}.outputs.{key}", value, got))
    if want.message_contains is not None and want.message_contains not in (st.message or ""):
        out.append(
            f"steps.{name}.message: expected it to contain {want.message_contains!r}, "
            f"got {st.message!r}"
        )
    return out


def _ran(status: WorkflowRunStatus) -> list[str]:
    steps = [s for s in status.steps if s.start_time is not None and s.phase != StepPhase.SKIPPED]
    order = {s.name: i for i, s in enumerate(status.steps)}
    steps.sort(key=lambda s: (s.start_time, order[s.name]))
    return [s.name for s in steps]


def _compensated(status: WorkflowRunStatus) -> list[str]:
    done = [s for s in status.steps if s.compensation is not None and s.compensation.start_time]
    done.sort(key=lambda s: (s.compensation.start_time if s.compensation else None) or EPOCH)
    return [s.name for s in done]


def ended(result: CaseResult) -> str:
    """The run's end in a few words, for the line a case prints."""
    if result.status is None:
        return "did not run"
    phase = result.status.phase
    return phase.value if phase != RunPhase.PENDING else "Pending"

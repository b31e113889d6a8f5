"""A 10,000-item fan-out: it completes, and the run's status stays small the whole way (items
folded into a summary, failures kept), including across a resume from the written status."""

from __future__ import annotations

import json

import pytest

from braid.api.errors import InvalidSpecError
from braid.api.run import RunPhase, StepPhase, WorkflowRunStatus
from braid.engine import AttemptResult, Observations, RunState, StartAttempt
from braid.engine.compile import compile_plan
from braid.engine.fanout import KEEP_FAILED
from braid.engine.plan import COMPACT_ABOVE
from braid.engine.simulate import EPOCH, Outcome, simulate
from tests.conftest import ok, workflow

N = 10_000


def huge(n: int = N, **fan):
    return workflow(
        [
            {
                "name": "fan",
                "fanOut": {
                    "items": list(range(n)),
                    "parallelism": 100,
                    "container": {"image": "x", "command": ["work"]},
                    **fan,
                },
            }
        ]
    )


def test_ten_thousand_items_complete_with_a_small_status():
    failing = set(range(0, N, 97))  # 104 failures
    spec = huge(successThreshold={"fraction": 0.98}, onThresholdReached="WaitForAll")

    def script(a):
        if a.labels.item in failing:
            return Outcome(seconds=1, exit_code=3)
        return ok({"n": a.labels.item}, seconds=1)

    r = simulate(spec, script)
    assert r.status.phase == RunPhase.SUCCEEDED
    step = r.step("fan")
    assert step.outputs == {"succeeded": N - len(failing), "failed": len(failing), "total": N}
    assert step.items_summary.succeeded == N - len(failing)
    assert step.items_summary.failed == len(failing) - KEEP_FAILED
    assert len(step.items) == KEEP_FAILED  # the most recent failures, with their reasons
    assert all(i.phase == StepPhase.FAILED and i.exit_code == 3 for i in step.items)
    # The API server takes objects up to 1.5 MB; the snapshot of the spec (its 10,000 literal
    # items) is most of what is left.
    wire = r.status.wire()
    assert len(json.dumps(wire)) < 100_000
    assert len(json.dumps(wire["steps"])) < 30_000
    assert r.max_running == 100


def test_small_fan_outs_still_gather_every_item():
    r = simulate(huge(COMPACT_ABOVE), lambda a: ok({"n": a.labels.item}))
    outputs = r.step("fan").outputs
    assert len(outputs["items"]) == COMPACT_ABOVE
    assert r.step("fan").items_summary is None


def test_a_huge_fan_out_resumes_from_its_compacted_status():
    spec = huge(2_000)
    state = RunState.load("r", spec, WorkflowRunStatus(), {})
    now = EPOCH
    pending = [
        a.name for a in state.decide(Observations(), now).actions if isinstance(a, StartAttempt)
    ]
    sizes = []
    finished = 0
    while pending:
        # Half-way, the operator restarts: a new RunState from the written status.
        if finished >= 1_000 and finished < 1_100:
            state = RunState.load(
                "r", spec, WorkflowRunStatus.model_validate(state.status.wire()), {}
            )
        batch, pending = pending[:50], pending[50:]
        decision = state.decide(
            Observations(results=[AttemptResult(n, exit_code=0, output="{}") for n in batch]), now
        )
        finished += len(batch)
        pending += [a.name for a in decision.actions if isinstance(a, StartAttempt)]
        sizes.append(len(json.dumps(state.status.wire())))
    assert state.status.phase == RunPhase.SUCCEEDED
    assert state.steps["fan"].outputs["succeeded"] == 2_000
    assert max(sizes) < 40_000
    started = state.steps["fan"].items_started
    assert started == 2_000


def test_reading_items_of_a_large_fan_out_is_refused_at_lint_time():
    reader = {
        "name": "sum",
        "container": {"image": "x", "args": ["${{ steps.fan.outputs.items }}"]},
    }
    spec = huge(COMPACT_ABOVE + 1)
    spec.steps.append(workflow([reader]).steps[0])
    with pytest.raises(InvalidSpecError, match=r"spec.steps\[1\].container.args\[0\]: fan "):
        compile_plan(spec)
    small = huge(COMPACT_ABOVE)
    small.steps.append(workflow([reader]).steps[0])
    compile_plan(small)

"""Sleep steps: they wait on the engine's clock (no polling, no attempt), survive a resume,
are cancelled with their run, and report what they slept."""

from __future__ import annotations

from datetime import timedelta

import pytest

from braid.api.errors import InvalidSpecError
from braid.api.run import RunPhase, StepPhase, WorkflowRunStatus
from braid.engine import Observations, RunState
from braid.engine.compile import compile_plan
from braid.engine.simulate import EPOCH, simulate
from tests.conftest import container, ok, workflow


def test_a_sleep_waits_on_the_clock_then_the_next_step_runs():
    spec = workflow([{"name": "nap", "sleep": {"durationSeconds": 90}}, container("after")])
    r = simulate(spec, lambda a: ok())
    assert r.status.phase == RunPhase.SUCCEEDED
    nap = r.step("nap")
    assert (nap.reason, nap.outputs["sleptSeconds"]) == ("Woke", 90.0)
    assert r.start_times["run-after-1"] == EPOCH + timedelta(seconds=90)
    assert not [a for a in r.started if a.labels.step == "nap"]  # no attempt, no pod
    assert r.decisions <= 6  # woken by wake_at, not by polling


def test_until_a_time_from_a_param_and_a_time_past_does_not_wait():
    at = (EPOCH + timedelta(hours=2)).isoformat()
    spec = workflow(
        [{"name": "nap", "sleep": {"until": "${{ params.at }}"}}],
        params=[{"name": "at"}],
    )
    r = simulate(spec, lambda a: ok(), params={"at": at})
    assert r.end == EPOCH + timedelta(hours=2)
    assert r.step("nap").outputs["until"] == at
    r = simulate(spec, lambda a: ok(), params={"at": "2000-01-01T00:00:00Z"})
    assert r.end == EPOCH


@pytest.mark.parametrize("at", ["tomorrow", "2026-12-24T18:00:00"])
def test_until_that_is_not_a_time_with_an_offset_fails_naming_the_field(at):
    spec = workflow(
        [{"name": "nap", "sleep": {"until": "${{ params.at }}"}}], params=[{"name": "at"}]
    )
    r = simulate(spec, lambda a: ok(), params={"at": at})
    nap = r.step("nap")
    assert nap.phase == StepPhase.FAILED
    assert nap.message.startswith("spec.steps[0].sleep.until: ")
    assert "RFC 3339" in nap.message


def test_a_sleeping_run_resumes_asleep_and_wakes_on_time():
    spec = workflow([{"name": "nap", "sleep": {"durationSeconds": 60}}, container("after")])
    state = RunState.load("r", spec, WorkflowRunStatus(), {})
    d = state.decide(Observations(), EPOCH)
    assert d.wake_at == EPOCH + timedelta(seconds=60)
    saved = WorkflowRunStatus.model_validate_json(state.status.model_dump_json(by_alias=True))
    resumed = RunState.load("r", spec, saved, {})
    d = resumed.decide(Observations(), EPOCH + timedelta(seconds=30))
    assert d.wake_at == EPOCH + timedelta(seconds=60)
    assert resumed.status.steps[0].reason == "Sleeping"
    d = resumed.decide(Observations(), EPOCH + timedelta(seconds=60))
    assert resumed.status.steps[0].phase == StepPhase.SUCCEEDED
    assert [a.name for a in d.actions if hasattr(a, "container")] == ["r-after-1"]


def test_cancelling_a_sleeping_run_ends_it_at_once():
    spec = workflow([{"name": "nap", "sleep": {"durationSeconds": 3600}}])
    r = simulate(spec, lambda a: ok(), cancel_at=5)
    assert r.status.phase == RunPhase.CANCELLED
    assert r.end == EPOCH + timedelta(seconds=5)
    assert r.step("nap").phase == StepPhase.CANCELLED


def test_a_loop_can_sleep_between_polls():
    spec = workflow(
        [
            {
                "name": "poll",
                "loop": {
                    "maxIterations": 5,
                    "until": "steps.check.outputs.ready",
                    "steps": [
                        {
                            "name": "check",
                            "container": {"image": "x", "command": ["true"]},
                        },
                        {
                            "name": "wait",
                            "when": "!steps.check.outputs.ready",
                            "sleep": {"durationSeconds": 10},
                        },
                    ],
                },
            }
        ]
    )
    r = simulate(spec, lambda a: ok({"ready": a.labels.iteration == 2}, seconds=1))
    assert r.status.phase == RunPhase.SUCCEEDED
    assert r.step("poll").outputs["count"] == 3
    assert r.end == EPOCH + timedelta(seconds=3 + 20)


@pytest.mark.parametrize(
    ("sleep", "says"),
    [
        ({}, "set exactly one of durationSeconds or until"),
        ({"durationSeconds": 1, "until": "x"}, "set exactly one of durationSeconds or until"),
        ({"durationSeconds": -1}, "greater than or equal to 0"),
    ],
)
def test_lint_refuses_a_sleep_that_says_not_how_long(sleep, says):
    with pytest.raises((InvalidSpecError, ValueError)) as err:
        compile_plan(workflow([{"name": "nap", "sleep": sleep}]))
    assert says in str(err.value)

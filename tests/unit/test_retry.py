"""Retrying a run reuses what succeeded and re-runs the rest."""

from __future__ import annotations

import pytest

from braid.api.errors import InvalidSpecError
from braid.api.run import RunPhase, StepPhase
from braid.engine import AttemptResult, Observations, RunState
from braid.engine.retry import seed_status
from braid.engine.simulate import EPOCH, Outcome, simulate
from tests.conftest import container, ok, workflow

UNDO = {"container": {"image": "x", "command": ["undo"]}}


def failed_run():
    spec = workflow(
        [container("a"), container("b", compensation=UNDO), container("c"), container("d")]
    )
    return simulate(
        spec,
        lambda act: Outcome(exit_code=1) if act.labels.step == "c" else ok({"s": act.labels.step}),
    )


def phases(status):
    return {s.name: s.phase.value for s in status.steps}


def test_default_retry_reruns_failed_and_compensated_steps_and_what_follows():
    old = failed_run()
    assert old.status.phase == RunPhase.FAILED
    seeded = seed_status(old.status, "old", None)
    # b was compensated after c failed, so its work is undone: it runs again, and so does c, d
    assert phases(seeded) == {"a": "Succeeded", "b": "Pending", "c": "Pending", "d": "Pending"}
    assert seeded.steps[0].message == "reused from run old"
    assert seeded.steps[0].outputs == {"s": "a"}


def test_retry_from_a_step_and_run_to_the_end():
    old = failed_run()
    seeded = seed_status(old.status, "old", "d")
    assert phases(seeded)["a"] == "Succeeded"
    state = RunState.load("new", old.status.workflow_spec, seeded, old.status.params or {})
    d = state.decide(Observations(), EPOCH)
    started = [a.name for a in d.actions if hasattr(a, "container")]
    assert started == ["new-b-1"]  # b was compensated, so it is not reusable
    for step in ("b", "c", "d"):
        d = state.decide(
            Observations(results=[AttemptResult(f"new-{step}-1", exit_code=0, output="{}")]), EPOCH
        )
    assert state.status.phase == RunPhase.SUCCEEDED
    assert state.steps["a"].attempts == 1  # reused, not run again


def test_retry_from_an_unknown_step_names_the_field():
    with pytest.raises(InvalidSpecError) as exc:
        seed_status(failed_run().status, "old", "nope")
    assert str(exc.value).startswith("spec.retryOf.fromStep: no step 'nope'; steps: a, b, c, d")


def test_skipped_branches_are_reused_as_skipped():
    spec = workflow([container("a"), container("b", when="false"), container("c", dependsOn=["a"])])
    old = simulate(spec, lambda act: Outcome(exit_code=1) if act.labels.step == "c" else ok())
    seeded = seed_status(old.status, "old", None)
    assert phases(seeded) == {"a": "Succeeded", "b": "Skipped", "c": "Pending"}
    assert StepPhase.PENDING.value == "Pending"

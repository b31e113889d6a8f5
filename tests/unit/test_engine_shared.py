"""What runs share: concurrency pools (at most N attempts holding a key across runs) and
circuit breakers (consecutive failures open them; fail fast or fall back; half-open probes)."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from braid.api.errors import InvalidSpecError
from braid.api.run import RunPhase, StepPhase, WorkflowRunStatus
from braid.api.workflow import SuccessThreshold
from braid.controller.pools import Pools
from braid.engine import AttemptResult, Observations, RunState
from braid.engine.breakers import BreakerBoard
from braid.engine.compile import compile_plan
from braid.engine.simulate import EPOCH, Outcome, simulate
from tests.conftest import container, ok, workflow

POOL = {"key": "gpt-4", "limit": 2}
NAMES = itertools.count()


def run(*args, **kwargs):
    """simulate() with a run name of its own: attempt names are unique across runs, as in a
    cluster, and breakers count each attempt once."""
    return simulate(*args, run_name=f"run{next(NAMES)}", **kwargs)


def fan(n: int, **step):
    return {"name": "fan", "fanOut": {"items": list(range(n)), "container": {"image": "x"}}, **step}


# ------------------------------------------------------------------ concurrency


def test_a_pool_caps_attempts_within_a_run():
    r = run(workflow([fan(6, concurrency=POOL)]), lambda a: ok(seconds=3))
    assert r.status.phase == RunPhase.SUCCEEDED
    assert r.max_running == 2
    assert all(a.concurrency_key == "gpt-4" for a in r.started)


def test_slots_held_by_other_runs_count():
    r = run(workflow([fan(4, concurrency=POOL)]), lambda a: ok(seconds=1), elsewhere={"gpt-4": 1})
    assert r.max_running == 1


def test_a_waiting_step_says_why_and_the_decision_names_the_key():
    spec = workflow(
        [container("a", concurrency=POOL), container("b", concurrency=POOL, dependsOn=[])]
    )
    state = RunState.load("r", spec, WorkflowRunStatus(), {})
    decision = state.decide(Observations(elsewhere={"gpt-4": 2}), EPOCH)
    assert not [a for a in decision.actions if hasattr(a, "labels")]
    assert decision.waiting_for == {"gpt-4"}
    a = state.steps["a"]
    assert (a.phase, a.reason) == (StepPhase.PENDING, "WaitingForConcurrency")
    assert a.message == "waiting for a slot of concurrency key gpt-4 (2/2 in use)"
    # One slot frees elsewhere: the first in line starts, the second keeps waiting.
    decision = state.decide(Observations(elsewhere={"gpt-4": 1}), EPOCH + timedelta(seconds=1))
    started = [x.name for x in decision.actions if hasattr(x, "labels")]
    assert started == ["r-a-1"]
    assert decision.held == {"gpt-4": 1}
    assert state.steps["a"].reason is None
    assert state.steps["b"].reason == "WaitingForConcurrency"
    # Resumed from its status, the run still counts the slot it holds.
    again = RunState.load("r", spec, state.status, {})
    assert again.decide(Observations(elsewhere={"gpt-4": 1}), EPOCH).held == {"gpt-4": 1}


def test_pools_are_only_for_steps_that_run_something():
    gate = {"name": "g", "approval": {}, "concurrency": POOL}
    with pytest.raises(InvalidSpecError, match=r"spec.steps\[0\].concurrency: only container"):
        compile_plan(workflow([gate]))
    loop = {
        "name": "l",
        "concurrency": POOL,
        "loop": {"steps": [container("b")], "until": "true", "maxIterations": 2},
    }
    with pytest.raises(InvalidSpecError, match=r"spec.steps\[0\].concurrency: set it on the loop"):
        compile_plan(workflow([loop]))


# ------------------------------------------------------------------ circuit breakers

BREAKER = {"key": "model-api", "failureThreshold": 3, "coolDownSeconds": 60}


def flaky(spec_extra=None):
    return workflow(
        [container("call", circuitBreaker={**BREAKER, **(spec_extra or {})}, retry={"limit": 5})]
    )


def failing(a):
    return Outcome(seconds=1, exit_code=1)


def test_consecutive_failures_open_the_breaker_and_later_runs_fail_fast():
    board = BreakerBoard()
    first = run(flaky(), failing, breakers=board)
    call = first.step("call")
    assert call.phase == StepPhase.FAILED
    # Three real attempts failed, then the open breaker failed the rest without starting them.
    assert len(first.started) == 3
    assert call.reason == "CircuitOpen"
    assert "circuit breaker model-api is open until" in call.message
    assert board.get("model-api").state == "Open"
    assert [(b.key, b.state, b.failures) for b in first.status.circuit_breakers] == [
        ("model-api", "Open", 3)
    ]

    second = run(
        workflow([container("call", circuitBreaker=BREAKER)]),
        failing,
        breakers=board,
        start=first.end,
    )
    assert second.started == []
    assert second.step("call").reason == "CircuitOpen"


def test_open_breaker_takes_the_declared_fallback():
    board = BreakerBoard()
    run(flaky(), failing, breakers=board)
    cheap = {"container": {"image": "cheap-model"}}
    spec = workflow(
        [container("call", circuitBreaker={**BREAKER, "fallback": cheap})],
        outputs={"answer": "steps.call.outputs.model"},
    )
    r = run(
        spec,
        lambda a: ok({"model": "cheap"}) if a.container.image == "cheap-model" else failing(a),
        breakers=board,
        start=EPOCH + timedelta(seconds=10),
    )
    assert r.status.phase == RunPhase.SUCCEEDED
    assert r.status.outputs == {"answer": "cheap"}
    assert r.step("call").fallback is True
    assert "CircuitOpenFallback" in [e.reason for e in r.events]
    assert board.get("model-api").state == "Open"  # fallback results do not count


def test_after_the_cool_down_one_probe_closes_or_reopens_it():
    board = BreakerBoard()
    run(flaky(), failing, breakers=board)
    opened = board.get("model-api").opened_at
    later = opened + timedelta(seconds=61)
    # A failed probe reopens it at once (no need for three more failures).
    r = run(
        workflow([container("call", circuitBreaker=BREAKER)]), failing, breakers=board, start=later
    )
    assert len(r.started) == 1
    assert board.get("model-api").state == "Open"
    assert board.get("model-api").opened_at == later + timedelta(seconds=1)
    # A successful probe after the next cool-down closes it.
    r = run(
        workflow([container("call", circuitBreaker=BREAKER)]),
        lambda a: ok(),
        breakers=board,
        start=later + timedelta(seconds=62),
    )
    assert r.status.phase == RunPhase.SUCCEEDED
    assert (board.get("model-api").state, board.get("model-api").failures) == ("Closed", 0)


def test_while_half_open_only_the_probe_goes_through():
    board = BreakerBoard()
    run(flaky(), failing, breakers=board)
    later = board.get("model-api").opened_at + timedelta(seconds=61)
    spec = workflow([fan(3, circuitBreaker=BREAKER)])
    spec.steps[0].fan_out.success_threshold = SuccessThreshold(count=1)
    r = run(spec, lambda a: ok(seconds=5), breakers=board, start=later)
    assert len(r.started) == 1  # the probe; the other two items failed fast
    items = r.step("fan").items
    assert sorted(i.reason for i in items) == ["CircuitOpen", "CircuitOpen", "Succeeded"]


def test_a_cancelled_probe_lets_the_next_attempt_probe():
    board = BreakerBoard()
    run(flaky(), failing, breakers=board)
    later = board.get("model-api").opened_at + timedelta(seconds=61)
    spec = workflow([container("call", circuitBreaker=BREAKER)])
    state = RunState.load("r", spec, WorkflowRunStatus(), {})
    state.decide(Observations(breakers=board), later)
    assert board.get("model-api").state == "HalfOpen"
    state.decide(Observations(breakers=board, cancel=True), later)
    assert board.get("model-api").state == "Open"
    assert board.admit("model-api", "someone-else", later)


def test_breaker_results_count_across_runs_only_with_a_board():
    # Without a board (a driver that shares nothing) breakers do nothing.
    r = run(flaky(), failing)
    assert len(r.started) == 6
    assert r.step("call").reason == "Error"
    assert r.status.circuit_breakers is None
    state = RunState.load("x", flaky(), WorkflowRunStatus(), {})
    state.decide(Observations(results=[AttemptResult("nope", exit_code=0)]), EPOCH)


def test_the_same_failure_seen_twice_counts_once():
    board = BreakerBoard()
    for _ in range(3):
        board.record("k", "run-a-1", ok=False, now=EPOCH, threshold=2, cool_down_seconds=5)
    assert (board.get("k").state, board.get("k").failures) == ("Closed", 1)


# ------------------------------------------------------------------ the operator's pools


def test_pools_count_other_runs_from_reports_and_live_pods():
    pools = Pools()
    a, b, c = ("ns", "a"), ("ns", "b"), ("ns", "c")
    assert pools.update(a, {"gpt-4": 2}, ()) == set()
    assert pools.update(b, {}, {"gpt-4"}) == set()
    assert pools.elsewhere(b, []) == {"gpt-4": 2}
    assert pools.elsewhere(a, []) == {}
    # Right after a restart nothing is reported yet, but the pods say what is running.
    pods = [(c, "gpt-4", "Running"), (c, "gpt-4", "Succeeded"), (a, "gpt-4", "Running")]
    assert Pools().elsewhere(b, pods) == {"gpt-4": 2}
    # a lets one go: b, waiting for that key, is to be woken; a is not.
    assert pools.update(a, {"gpt-4": 1}, ()) == {b}
    assert pools.in_use() == {"gpt-4": 1}
    assert pools.forget(a) == set()  # nobody waits any more
    assert pools.in_use() == {}

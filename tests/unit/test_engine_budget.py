"""Token and cost budgets: usage adds up from step outputs; past the budget the run stops,
compensates or pauses for approval, as declared."""

from __future__ import annotations

import pytest

from braid.api.errors import InvalidSpecError
from braid.api.run import RunPhase, StepPhase, WorkflowRunStatus
from braid.engine import ApprovalDecision, AttemptResult, Observations, RunState
from braid.engine.compile import compile_plan
from braid.engine.outputs import usage_of
from braid.engine.simulate import EPOCH, simulate
from tests.conftest import container, ok, workflow

UNDO = {"container": {"image": "x", "command": ["undo"]}}


def chain(n: int, **spec):
    steps = [container(f"s{i}", compensation=UNDO) for i in range(n)]
    for i in range(1, n):
        steps[i]["dependsOn"] = [f"s{i - 1}"]
    return workflow(steps, **spec)


def spends(tokens: int, cost: float):
    return lambda a: ok({"usage": {"tokens": tokens, "cost": cost}, "who": a.labels.step})


def test_usage_adds_up_per_step_and_per_run_without_a_budget():
    r = simulate(chain(3), spends(100, 0.25))
    assert r.status.phase == RunPhase.SUCCEEDED
    assert (r.status.usage.tokens, r.status.usage.cost) == (300, 0.75)
    assert r.step("s1").usage.tokens == 100
    assert r.status.budget is None


def test_fan_out_usage_is_summed_on_the_step():
    spec = workflow([{"name": "fan", "fanOut": {"items": [1, 2, 3], "container": {"image": "x"}}}])
    r = simulate(spec, lambda a: ok({"usage": {"inputTokens": 10, "outputTokens": 5}}))
    assert r.step("fan").usage.tokens == 45
    assert r.status.usage.tokens == 45


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        ({"usage": {"tokens": 7}}, (7, 0.0)),
        ({"usage": {"cost": 0.5}}, (0, 0.5)),
        ({"usage": {"inputTokens": 3, "outputTokens": 4, "cost": 1}}, (7, 1.0)),
        ({"usage": {"tokens": -1, "cost": "free"}}, None),
        ({"usage": {"tokens": True}}, None),
        ({"usage": "lots"}, None),
        ({}, None),
    ],
)
def test_usage_of_reads_the_reported_shape_and_ignores_nonsense(outputs, expected):
    got = usage_of(outputs)
    assert (None if got is None else (got.tokens, got.cost)) == expected


def test_fail_stops_at_once_without_compensation():
    r = simulate(chain(4, budget={"tokens": 250}), spends(100, 0))
    assert r.status.phase == RunPhase.FAILED
    cond = r.status.conditions[0]
    assert cond.reason == "BudgetExceeded"
    assert "300 tokens > 250" in cond.message
    assert "after step s2" in cond.message
    assert [s.phase for s in r.status.steps] == [
        StepPhase.SUCCEEDED,
        StepPhase.SUCCEEDED,
        StepPhase.SUCCEEDED,
        StepPhase.SKIPPED,
    ]
    assert not [a for a in r.started if a.labels.role == "compensation"]
    assert r.status.budget.state == "Exceeded"


def test_compensate_stops_and_undoes_in_reverse():
    spec = chain(4, budget={"cost": 0.5, "onExceeded": "Compensate"})
    r = simulate(spec, spends(0, 0.2))
    assert r.status.phase == RunPhase.FAILED
    assert r.status.conditions[0].reason == "BudgetExceeded"
    undone = [a.labels.step for a in r.started if a.labels.role == "compensation"]
    assert undone == ["s2", "s1", "s0"]


def test_pause_waits_for_approval_then_goes_on_past_the_budget():
    spec = chain(
        4, budget={"tokens": 150, "onExceeded": "Pause", "approvers": {"users": ["alice"]}}
    )
    decisions = [
        (50, ApprovalDecision("budget", "mallory", approve=True)),  # not listed: refused
        (100, ApprovalDecision("budget", "alice", approve=True)),
    ]
    r = simulate(spec, spends(100, 0), decisions=decisions)
    assert r.status.phase == RunPhase.SUCCEEDED
    assert r.status.usage.tokens == 400
    # s2 waited for the approval at t=100 (s1 ended at t=2, over budget)
    assert (r.start_times["run-s2-1"] - r.start_times["run-s1-1"]).total_seconds() == 99
    assert r.status.budget.state == "Approved"
    assert [(a.user, a.decision) for a in r.status.budget.approvals] == [
        ("mallory", "Refused"),
        ("alice", "Approved"),
    ]
    reasons = [e.reason for e in r.events]
    assert "BudgetExceeded" in reasons
    assert "BudgetApproved" in reasons


def test_pause_shows_a_pending_approval_and_rejection_compensates():
    spec = chain(3, budget={"tokens": 50, "onExceeded": "Pause"})
    r = simulate(
        spec,
        lambda a: ok({"usage": {"tokens": 100}}),
        decisions=[(10, ApprovalDecision("budget", "carol", approve=False, reason="too dear"))],
    )
    assert r.status.pending_approvals is None  # closed at the end
    assert r.status.phase == RunPhase.FAILED
    assert r.status.conditions[0].reason == "BudgetRejected"
    assert "too dear" in r.status.conditions[0].message
    assert [a.labels.step for a in r.started if a.labels.role == "compensation"] == ["s0"]


def test_while_paused_the_gate_is_listed_for_the_admission_policy():
    spec = chain(2, budget={"tokens": 10, "onExceeded": "Pause", "approvers": {"groups": ["fin"]}})
    state = RunState.load("r", spec, WorkflowRunStatus(), {})
    first = state.decide(Observations(), EPOCH).actions
    name = next(a.name for a in first if hasattr(a, "labels"))
    state.decide(
        Observations(results=[AttemptResult(name, exit_code=0, output='{"usage":{"tokens":11}}')]),
        EPOCH,
    )
    pending = state.status.pending_approvals
    assert [(p.step, p.groups, p.required) for p in pending] == [("budget", ["fin"], 1)]
    assert pending[0].digest == state.status.budget.digest
    assert state.status.conditions[0].reason == "AwaitingApproval"
    # Resumed from its status (operator restart), it is still paused.
    again = RunState.load("r", spec, state.status, {})
    assert again.paused
    assert not [a for a in again.decide(Observations(), EPOCH).actions if hasattr(a, "labels")]


def test_a_step_named_budget_is_refused_when_a_budget_is_set():
    with pytest.raises(InvalidSpecError, match=r"spec.steps\[0\].name: 'budget' is the name"):
        compile_plan(workflow([container("budget")], budget={"tokens": 5}))
    compile_plan(workflow([container("budget")]))


def test_a_budget_needs_a_limit():
    with pytest.raises(ValueError, match="a budget needs tokens, cost or both"):
        workflow([container("a")], budget={"onExceeded": "Pause"})

"""Fan-out, loops, retries, timeouts, approvals, compensation, cancellation, SLA, resume."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from braid.api.run import RunPhase, StepPhase, WorkflowRunStatus
from braid.engine import ApprovalDecision, AttemptResult, Observations, RunState
from braid.engine.simulate import EPOCH, Outcome, simulate
from tests.conftest import container, ok, workflow

CMD = {"image": "x", "command": ["true"]}


def fan(items, **extra):
    return {"name": "fan", "fanOut": {"items": items, "container": CMD, **extra}}


# ---------------------------------------------------------------- fan-out


def test_fan_out_gathers_outputs_in_item_order_and_respects_parallelism():
    spec = workflow(
        [fan(list(range(6)), parallelism=2), container("sum")],
        outputs={"got": "steps.fan.outputs.items"},
    )

    def script(a):
        if a.labels.item is None:
            return ok()
        return ok({"i": a.labels.item}, seconds=6 - a.labels.item)  # later items finish first

    r = simulate(spec, script)
    assert r.status.phase == RunPhase.SUCCEEDED
    assert r.status.outputs == {"got": [{"i": i} for i in range(6)]}
    assert r.max_running == 2
    assert r.step("fan").item_count == 6


@pytest.mark.parametrize(
    ("threshold", "failing", "on_reached", "phase", "reason", "cancelled"),
    [
        ({"count": 3}, {1}, "CancelRemaining", "Succeeded", "Succeeded", 1),  # 3 of 5 then cancel
        ({"fraction": 0.5}, {0, 1}, "CancelRemaining", "Succeeded", "Succeeded", 0),
        (
            {"count": 4},
            {0, 1},
            "CancelRemaining",
            "Failed",
            "ThresholdUnreachable",
            3,
        ),  # fails fast
        ({"count": 3}, {1}, "WaitForAll", "Succeeded", "Succeeded", 0),
        (None, {4}, "CancelRemaining", "Failed", "ThresholdUnreachable", 0),
    ],
)
def test_fan_out_success_threshold(threshold, failing, on_reached, phase, reason, cancelled):
    extra = {"onThresholdReached": on_reached}
    if threshold:
        extra["successThreshold"] = threshold
    spec = workflow([fan(list(range(5)), **extra)])

    def script(a):
        seconds = a.labels.item + 1  # item i ends at second i+1
        if a.labels.item in failing:
            return Outcome(seconds=seconds, exit_code=1)
        return ok({"i": a.labels.item}, seconds=seconds)

    r = simulate(spec, script)
    step = r.step("fan")
    assert (step.phase.value, step.reason) == (phase, reason)
    assert len(r.cancelled) == cancelled
    gathered = step.outputs["items"]
    assert len(gathered) == 5
    assert all(gathered[i] is None for i in failing)


def test_fan_out_over_an_upstream_list_is_orchestrator_worker():
    spec = workflow(
        [
            container("plan"),
            {
                "name": "work",
                "fanOut": {
                    "itemsExpression": "steps.plan.outputs.tasks",
                    "container": {
                        "image": "x",
                        "command": ["${{ item.name }}", "${{ string(index) }}"],
                    },
                },
            },
        ]
    )

    def script(a):
        if a.labels.step == "plan":
            return ok({"tasks": [{"name": "a"}, {"name": "b"}]})
        return ok({"did": a.container.command})

    r = simulate(spec, script)
    assert r.step("work").outputs["items"] == [{"did": ["a", "0"]}, {"did": ["b", "1"]}]


def test_fan_out_items_expression_must_yield_a_list():
    spec = workflow(
        [
            container("plan"),
            {
                "name": "work",
                "fanOut": {"itemsExpression": "steps.plan.outputs.n", "container": CMD},
            },
        ]
    )
    r = simulate(spec, lambda a: ok({"n": 3}))
    work = r.step("work")
    assert work.phase == StepPhase.FAILED
    assert "spec.steps[1].fanOut.itemsExpression: must evaluate to a list, got int" in work.message


def test_fan_out_of_zero_items_succeeds_with_an_empty_list():
    r = simulate(workflow([fan([])]), lambda a: ok())
    assert r.step("fan").phase == StepPhase.SUCCEEDED
    assert r.step("fan").outputs == {"items": [], "succeeded": 0, "failed": 0, "total": 0}


# ---------------------------------------------------------------- loops


def loop_spec(max_iterations=5, on_max="Fail"):
    return workflow(
        [
            {
                "name": "refine",
                "loop": {
                    "maxIterations": max_iterations,
                    "onMaxIterations": on_max,
                    "until": "steps.check.outputs.score >= 3",
                    "steps": [
                        {
                            "name": "make",
                            "container": {
                                "image": "x",
                                "command": ["${{ string(iteration) }}", "${{ previous }}"],
                            },
                        },
                        container("check"),
                    ],
                },
            }
        ]
    )


def loop_script(a):
    if a.labels.body_step == "make":
        return ok({"draft": a.container.command[0], "saw": json.loads(a.container.command[1])})
    return ok({"score": a.labels.iteration + 1})


def test_loop_runs_until_condition_and_keeps_each_iteration():
    r = simulate(loop_spec(), loop_script)
    step = r.step("refine")
    assert (step.phase, step.reason) == (StepPhase.SUCCEEDED, "Converged")
    assert step.outputs["count"] == 3
    assert step.outputs["converged"] is True
    assert [it["check"]["score"] for it in step.outputs["iterations"]] == [1, 2, 3]
    # each iteration sees the previous iteration's outputs
    assert step.outputs["iterations"][1]["make"]["saw"] == {
        "make": {"draft": "0", "saw": {}},
        "check": {"score": 1},
    }


@pytest.mark.parametrize(
    ("on_max", "phase"), [("Fail", StepPhase.FAILED), ("Succeed", StepPhase.SUCCEEDED)]
)
def test_loop_stops_at_max_iterations(on_max, phase):
    r = simulate(loop_spec(max_iterations=2, on_max=on_max), loop_script)
    step = r.step("refine")
    assert (step.phase, step.reason) == (phase, "MaxIterationsReached")
    assert step.outputs["count"] == 2
    assert step.outputs["converged"] is False


def test_failed_body_step_fails_the_loop():
    r = simulate(
        loop_spec(), lambda a: Outcome(exit_code=2) if a.labels.body_step == "check" else ok()
    )
    step = r.step("refine")
    assert (step.phase, step.reason) == (StepPhase.FAILED, "BodyStepFailed")
    assert "iteration 0 step check failed" in step.message


# ---------------------------------------------------------------- retries and timeouts


def test_retries_use_exponential_backoff_with_cap():
    spec = workflow(
        [
            container(
                "a",
                retry={
                    "limit": 4,
                    "backoff": {
                        "initialDelaySeconds": 10,
                        "factor": 2,
                        "maxDelaySeconds": 25,
                        "jitter": 0,
                    },
                },
            )
        ]
    )
    starts = []

    def script(a):
        starts.append(a)
        return Outcome(seconds=1, exit_code=1) if a.labels.attempt < 5 else ok()

    r = simulate(spec, script)
    assert r.step("a").phase == StepPhase.SUCCEEDED
    assert r.step("a").attempts == 5
    # attempt k ends 1s after it starts; delays 10, 20, 25 (capped), 25
    assert [a.name for a in starts] == [f"run-a-{i}" for i in range(1, 6)]
    assert (r.end - EPOCH).total_seconds() == 5 + 10 + 20 + 25 + 25


def test_jitter_is_deterministic_and_bounded():
    spec = workflow(
        [container("a", retry={"limit": 1, "backoff": {"initialDelaySeconds": 100, "jitter": 0.5}})]
    )
    ends = {
        simulate(spec, lambda a: Outcome(exit_code=1) if a.labels.attempt == 1 else ok()).end
        for _ in range(2)
    }
    assert len(ends) == 1
    delay = (ends.pop() - EPOCH).total_seconds() - 2
    assert 50 <= delay <= 150


@pytest.mark.parametrize(
    ("retry_on", "exit_code", "attempts"),
    [
        ({"exitCodes": [75]}, 75, 3),
        ({"exitCodes": [75]}, 1, 1),
        ({"reasons": ["TimedOut"]}, 1, 1),
        (None, 1, 3),
    ],
)
def test_only_retryable_failures_are_retried(retry_on, exit_code, attempts):
    retry = {"limit": 2, "backoff": {"initialDelaySeconds": 1}}
    if retry_on:
        retry["retryOn"] = retry_on
    r = simulate(workflow([container("a", retry=retry)]), lambda a: Outcome(exit_code=exit_code))
    assert r.step("a").attempts == attempts
    assert r.step("a").phase == StepPhase.FAILED


def test_attempt_timeout_cancels_and_retries():
    spec = workflow(
        [
            container(
                "a",
                timeoutSeconds=5,
                retry={"limit": 1, "backoff": {"initialDelaySeconds": 1, "jitter": 0}},
            )
        ]
    )
    r = simulate(spec, lambda a: Outcome(seconds=100) if a.labels.attempt == 1 else ok())
    assert r.cancelled == ["run-a-1"]
    assert r.step("a").phase == StepPhase.SUCCEEDED
    assert r.step("a").attempts == 2
    assert any(e.reason == "StepRetrying" and "TimedOut" in e.message for e in r.events)


def test_run_timeout_cancels_running_steps_and_fails():
    spec = workflow([container("a"), container("b")], timeoutSeconds=10)
    r = simulate(spec, lambda a: ok(seconds=8))
    assert r.status.phase == RunPhase.FAILED
    assert r.status.condition("Succeeded").reason == "TimedOut"
    assert r.cancelled == ["run-b-1"]
    assert r.step("b").phase == StepPhase.CANCELLED
    assert (r.end - EPOCH).total_seconds() == 10


# ---------------------------------------------------------------- approvals


def gate(**approval):
    return workflow([container("prep"), {"name": "gate", "approval": approval}, container("go")])


@pytest.mark.parametrize(
    ("approval", "decisions", "phase", "reason"),
    [
        ({"approvers": {"users": ["alice"]}}, [("alice", True, ())], "Succeeded", "Approved"),
        (
            {"approvers": {"users": ["alice"]}},
            [("mallory", True, ())],
            "Failed",
            "ApprovalTimedOut",
        ),
        ({"approvers": {"groups": ["sre"]}}, [("carol", True, ("sre",))], "Succeeded", "Approved"),
        (
            {"approvers": {"users": ["a", "b", "c"]}, "required": 2},
            [("a", True, ()), ("a", True, ())],
            "Failed",
            "ApprovalTimedOut",
        ),
        (
            {"approvers": {"users": ["a", "b", "c"]}, "required": 2},
            [("a", True, ()), ("c", True, ())],
            "Succeeded",
            "Approved",
        ),
        ({"approvers": {"users": ["a", "b"]}}, [("b", False, ())], "Failed", "Rejected"),
        ({"onTimeout": "Approve"}, [], "Succeeded", "ApprovalTimedOut"),
    ],
)
def test_approval_gate(approval, decisions, phase, reason):
    spec = gate(timeoutSeconds=100, **approval)
    timed = [
        (10 + i, ApprovalDecision("gate", u, ok_, groups=g, reason="no"))
        for i, (u, ok_, g) in enumerate(decisions)
    ]
    r = simulate(spec, lambda a: ok(), decisions=timed)
    step = r.step("gate")
    assert (step.phase.value, step.reason) == (phase, reason)
    assert r.step("go").phase == (
        StepPhase.SUCCEEDED if phase == "Succeeded" else StepPhase.SKIPPED
    )


def test_approval_records_who_decided_and_refused_attempts():
    spec = gate(approvers={"users": ["alice"]}, timeoutSeconds=100)
    r = simulate(
        spec,
        lambda a: ok(),
        decisions=[
            (5, ApprovalDecision("gate", "mallory", approve=True)),
            (6, ApprovalDecision("gate", "alice", approve=True)),
        ],
    )
    records = [(a.user, a.decision) for a in r.step("gate").approvals]
    assert records == [("mallory", "Refused"), ("alice", "Approved")]
    assert r.step("gate").outputs == {"approved": True, "approvedBy": ["alice"]}
    assert [e.reason for e in r.events if "Approv" in e.reason] == [
        "ApprovalRequested",
        "ApprovalRefused",
        "Approved",
    ]


def test_pending_approval_sets_condition_while_waiting():
    spec = gate(approvers={"users": ["alice"]}, message="ship ${{ steps.prep.outputs.v }}?")
    state = RunState.load("r", spec, WorkflowRunStatus(), {})
    state.decide(Observations(), EPOCH)
    state.decide(
        Observations(results=[AttemptResult("r-prep-1", exit_code=0, output='{"v": "1.2"}')]), EPOCH
    )
    cond = state.status.condition("ApprovalPending")
    assert (cond.status, cond.reason) == ("True", "AwaitingApproval")
    assert "step gate needs 1 more approval(s) from alice" in cond.message
    assert state.steps["gate"].message == "ship 1.2?"
    state.decide(Observations(decisions=[ApprovalDecision("gate", "alice", approve=True)]), EPOCH)
    assert state.status.condition("ApprovalPending").status == "False"


# ---------------------------------------------------------------- compensation, finally, cancel


def saga():
    undo = {"container": {"image": "x", "command": ["undo"]}}
    return workflow(
        [
            container("a", compensation=undo),
            container("b", compensation=undo),
            container("no-undo"),
            container("c", compensation=undo),
        ],
        **{
            "finally": [
                {"name": "report", "container": {"image": "x", "command": ["${{ run.succeeded }}"]}}
            ]
        },
    )


def test_compensation_runs_in_reverse_completion_order_then_finally():
    r = simulate(saga(), lambda a: Outcome(exit_code=1) if a.labels.step == "c" else ok())
    roles = [(a.labels.step, a.labels.role) for a in r.started]
    assert roles == [
        ("a", "step"),
        ("b", "step"),
        ("no-undo", "step"),
        ("c", "step"),
        ("b", "compensation"),
        ("a", "compensation"),
        ("report", "finally"),
    ]
    assert r.started[-1].container.command == ["false"]
    assert r.status.phase == RunPhase.FAILED
    assert r.step("a").compensation.phase == StepPhase.SUCCEEDED


def test_successful_run_compensates_nothing_and_finally_sees_success():
    r = simulate(saga(), lambda a: ok())
    assert [a.labels.role for a in r.started].count("compensation") == 0
    assert r.started[-1].container.command == ["true"]
    assert r.status.phase == RunPhase.SUCCEEDED


def test_cancel_stops_running_steps_compensates_and_ends_cancelled():
    r = simulate(saga(), lambda a: ok(seconds=10), cancel_at=15)
    assert r.cancelled == ["run-b-1"]
    assert r.status.phase == RunPhase.CANCELLED
    assert r.status.condition("Succeeded").reason == "Cancelled"
    assert [(a.labels.step, a.labels.role) for a in r.started][-2:] == [
        ("a", "compensation"),
        ("report", "finally"),
    ]
    assert {s.name: s.phase.value for s in r.status.steps} == {
        "a": "Succeeded",
        "b": "Cancelled",
        "no-undo": "Skipped",
        "c": "Skipped",
    }


def test_failing_finally_step_fails_an_otherwise_successful_run():
    r = simulate(saga(), lambda a: Outcome(exit_code=1) if a.labels.role == "finally" else ok())
    assert r.status.phase == RunPhase.FAILED
    assert r.status.condition("Succeeded").reason == "FinallyFailed"


# ---------------------------------------------------------------- SLA


def test_sla_breach_is_reported_while_the_run_is_still_running():
    spec = workflow(
        [container("slow", sla={"maxDurationSeconds": 30}), container("next")],
        sla={"maxDurationSeconds": 50},
    )
    state = RunState.load("r", spec, WorkflowRunStatus(), {})
    d = state.decide(Observations(), EPOCH)
    assert state.status.condition("SLABreached").status == "False"
    assert d.wake_at == EPOCH + timedelta(seconds=30)  # the engine asks to be woken at the deadline
    state.decide(Observations(), EPOCH + timedelta(seconds=31))
    cond = state.status.condition("SLABreached")
    assert (cond.status, cond.reason) == ("True", "StepDeadlineExceeded")
    assert state.status.phase == RunPhase.RUNNING
    d = state.decide(Observations(), EPOCH + timedelta(seconds=51))
    assert state.status.condition("SLABreached").reason == "RunDeadlineExceeded"
    assert [e.reason for e in d.actions if hasattr(e, "reason") and e.reason == "SLABreached"] == [
        "SLABreached"
    ]
    # a later decision does not report the same breach again
    d = state.decide(Observations(), EPOCH + timedelta(seconds=60))
    assert not [a for a in d.actions if getattr(a, "reason", "") == "SLABreached"]


# ---------------------------------------------------------------- resume


def test_resuming_from_a_status_copy_never_restarts_a_running_attempt():
    spec = workflow([container("a"), fan([1, 2, 3], parallelism=2), container("b")])
    state = RunState.load("r", spec, WorkflowRunStatus(), {})
    state.decide(Observations(), EPOCH)
    state.decide(Observations(results=[AttemptResult("r-a-1", exit_code=0, output="{}")]), EPOCH)
    assert set(state.active) == {"r-fan--0-1", "r-fan--1-1"}
    # the operator restarts: only the persisted status survives
    saved = WorkflowRunStatus.model_validate_json(state.status.model_dump_json(by_alias=True))
    resumed = RunState.load("r", spec, saved, {})
    d = resumed.decide(Observations(), EPOCH + timedelta(seconds=1))
    assert not [a for a in d.actions if hasattr(a, "container")]
    d = resumed.decide(
        Observations(
            results=[
                AttemptResult("r-fan--0-1", exit_code=0, output="{}"),
                AttemptResult("r-a-1", exit_code=0, output="{}"),
            ]
        ),
        EPOCH + timedelta(seconds=2),
    )
    assert [a.name for a in d.actions if hasattr(a, "container")] == ["r-fan--2-1"]


def test_unknown_or_repeated_results_change_nothing():
    spec = workflow([container("a"), container("b")])
    state = RunState.load("r", spec, WorkflowRunStatus(), {})
    state.decide(Observations(), EPOCH)
    result = AttemptResult("r-a-1", exit_code=0, output='{"x": 1}')
    state.decide(Observations(results=[result]), EPOCH)
    before = state.status.model_dump_json()
    d = state.decide(
        Observations(results=[result, AttemptResult("someone-else-1", exit_code=1)]), EPOCH
    )
    assert d.actions == []
    assert not d.changed
    assert state.status.model_dump_json() == before


# ---------------------------------------------------------------- approvals bound to inputs


def human_review_loop():
    return workflow(
        [
            {
                "name": "refine",
                "loop": {
                    "maxIterations": 3,
                    "until": "iteration >= 2",
                    "steps": [
                        {
                            "name": "draft",
                            "container": {"image": "x", "command": ["${{ string(iteration) }}"]},
                        },
                        {
                            "name": "check",
                            "approval": {"approvers": {"users": ["alice"]}, "message": "ok?"},
                        },
                    ],
                },
            }
        ]
    )


def pending(state):
    return state.status.pending_approvals or []


def draft_done(state, now):
    name = next(n for n in state.active if "-draft-" in n)
    iteration = name.split("--")[1].split("-")[0]
    return state.decide(
        Observations(
            results=[AttemptResult(name, exit_code=0, output=json.dumps({"v": iteration}))]
        ),
        now,
    )


def test_a_digest_less_approval_binds_to_the_inputs_it_was_first_counted_for():
    state = RunState.load("r", human_review_loop(), WorkflowRunStatus(), {})
    state.decide(Observations(), EPOCH)
    draft_done(state, EPOCH)
    first = pending(state)[0]
    assert (first.step, first.iteration, first.users, first.required) == ("check", 0, ["alice"], 1)
    assert len(first.digest) == 32  # 128 bits
    assert state.status.condition("Succeeded").reason == "AwaitingApproval"
    bare = ApprovalDecision("check", "alice", approve=True, admitted=True)
    state.decide(Observations(decisions=[bare]), EPOCH)  # iteration 0 approved
    draft_done(state, EPOCH)  # iteration 1: a new draft, so new inputs
    second = pending(state)[0]
    assert second.iteration == 1
    assert second.digest != first.digest
    state.decide(Observations(decisions=[bare]), EPOCH)  # the same annotation, seen again
    assert pending(state)[0].iteration == 1  # it does not count for the new inputs
    stale = ApprovalDecision("check", "alice", approve=True, digest=first.digest, admitted=True)
    state.decide(Observations(decisions=[bare, stale]), EPOCH)
    assert pending(state)[0].iteration == 1
    fresh = ApprovalDecision("check", "alice", approve=True, digest=second.digest, admitted=True)
    state.decide(Observations(decisions=[bare, stale, fresh]), EPOCH)
    assert not pending(state) or pending(state)[0].iteration == 2
    records = state.steps["refine"].iterations[1].steps[1].approvals
    assert [(r.user, r.digest, r.bound) for r in records] == [("alice", second.digest, True)]


def test_group_approvals_count_only_when_admission_checked_them():
    spec = gate(approvers={"groups": ["sre"]})
    state = RunState.load("r", spec, WorkflowRunStatus(), {})
    state.decide(Observations(), EPOCH)
    state.decide(Observations(results=[AttemptResult("r-prep-1", exit_code=0, output="{}")]), EPOCH)
    state.decide(Observations(decisions=[ApprovalDecision("gate", "dave", approve=True)]), EPOCH)
    assert state.steps["gate"].phase == StepPhase.WAITING
    assert state.steps["gate"].approvals[0].decision == "Refused"
    state.decide(
        Observations(decisions=[ApprovalDecision("gate", "erin", approve=True, admitted=True)]),
        EPOCH,
    )
    assert state.steps["gate"].phase == StepPhase.SUCCEEDED


@pytest.mark.parametrize(
    ("approve", "phase"), [(True, RunPhase.SUCCEEDED), (False, RunPhase.FAILED)]
)
def test_a_run_resumed_while_awaiting_approval_goes_on_normally(approve, phase):
    spec = gate(approvers={"users": ["alice"]})
    state = RunState.load("r", spec, WorkflowRunStatus(), {})
    state.decide(Observations(), EPOCH)
    state.decide(Observations(results=[AttemptResult("r-prep-1", exit_code=0, output="{}")]), EPOCH)
    assert state.status.condition("Succeeded").reason == "AwaitingApproval"
    saved = WorkflowRunStatus.model_validate_json(state.status.model_dump_json(by_alias=True))
    resumed = RunState.load("r", spec, saved, {})
    decision = ApprovalDecision("gate", "alice", approve=approve, reason="no")
    d = resumed.decide(Observations(decisions=[decision]), EPOCH)
    if approve:
        resumed.decide(
            Observations(
                results=[
                    AttemptResult(a.name, exit_code=0, output="{}")
                    for a in d.actions
                    if hasattr(a, "container")
                ]
            ),
            EPOCH,
        )
    assert resumed.status.phase == phase
    if not approve:
        assert (
            resumed.status.condition("Succeeded").message
            == "step gate failed (Rejected): rejected by alice: no"
        )


def test_history_keeps_the_audit_trail_bounded():
    spec = workflow(
        [container("a", retry={"limit": 100, "backoff": {"initialDelaySeconds": 1, "jitter": 0}})]
    )
    r = simulate(spec, lambda act: Outcome(exit_code=1) if act.labels.attempt <= 100 else ok())
    history = r.status.history
    assert len(history) == 100
    assert history[-1].reason == "RunSucceeded"
    assert sum(h.reason == "StepRetrying" for h in history) == 99
    assert all(h.reason != "StepSucceeded" for h in history)  # routine progress is not audit
    early = simulate(spec, lambda act: ok()).status.history
    assert [h.reason for h in early] == ["RunStarted", "RunSucceeded"]


def test_compensations_that_fail_at_once_do_not_stall_the_run():
    """A compensation whose template cannot render fails without starting; the next one must
    still be started in the same decision (a pass that queued, failed and queued again used to
    look like no progress and leave the run with queued work and nothing to wake it)."""
    undo = {"container": {"image": "x", "command": ["undo", "${{ steps.a.outputs.missing }}"]}}
    spec = workflow(
        [
            container("a", compensation=undo),
            container("b", compensation=undo),
            container("c"),
        ],
        **{"finally": [{"name": "tell", "container": CMD}]},
    )
    r = simulate(spec, lambda a: Outcome(exit_code=1) if a.labels.step == "c" else ok())
    assert r.status.phase == RunPhase.FAILED
    comps = [s.compensation.phase for s in r.status.steps[:2]]
    assert comps == [StepPhase.FAILED, StepPhase.FAILED]
    assert r.status.finally_[0].phase == StepPhase.SUCCEEDED

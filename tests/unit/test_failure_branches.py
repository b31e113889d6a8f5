"""Failure as a branch: continueOn, failFast on the workflow and on fan-outs, what
expressions read of a failure, finally steps with conditions and order, retry control.
Each case is "these outcomes -> this run", on the engine alone (the virtual clock)."""

from __future__ import annotations

import itertools
import json

import pytest

from braid.api.errors import InvalidSpecError
from braid.api.run import RunPhase
from braid.engine.compile import compile_plan
from braid.engine.simulate import Outcome, simulate
from tests.conftest import ok, workflow


def c(name: str, **extra: object) -> dict[str, object]:
    return {"name": name, "container": {"image": "x", "command": [name]}, **extra}


def phases(result) -> dict[str, str]:
    return {s.name: s.phase.value for s in result.status.steps}


def fin_phases(result) -> dict[str, str]:
    return {s.name: s.phase.value for s in result.status.finally_ or []}


def started(result) -> list[str]:
    return [a.labels.step for a in result.started]


def fail(code: int = 1, output: dict | None = None, seconds: float = 1.0) -> Outcome:
    return Outcome(seconds=seconds, exit_code=code, output=json.dumps(output) if output else None)


# Failure as a branch (continueOn)


def test_continue_on_failed_routes_to_a_fallback_and_the_run_succeeds():
    spec = workflow(
        [
            c("model", continueOn={"failed": True}),
            c("use", dependsOn=["model"], when="steps.model.phase == 'Succeeded'"),
            {
                "name": "review",
                "dependsOn": ["model"],
                "when": "steps.model.phase == 'Failed'",
                "container": {
                    "image": "x",
                    "command": [
                        "review",
                        "${{ steps.model.reason }}",
                        "${{ string(steps.model.exitCode) }}",
                        "${{ steps.model.outputs.error }}",
                        "${{ steps.model.message }}",
                    ],
                },
            },
        ]
    )

    def script(a):
        if a.labels.step == "model":
            return fail(3, {"error": "rate limited"})
        return ok()

    r = simulate(spec, script)
    assert r.status.phase == RunPhase.SUCCEEDED
    assert phases(r) == {"model": "Failed", "use": "Skipped", "review": "Succeeded"}
    review = next(a for a in r.started if a.labels.step == "review")
    assert review.container.command[1:4] == ["Error", "3", "rate limited"]
    assert "exited with code 3" in review.container.command[4]
    assert any("the run goes on (continueOn.failed)" in e.message for e in r.events)


def test_without_continue_on_the_same_failure_fails_the_run():
    spec = workflow([c("model"), c("after")])
    r = simulate(spec, lambda a: fail() if a.labels.step == "model" else ok())
    assert r.status.phase == RunPhase.FAILED
    assert phases(r) == {"model": "Failed", "after": "Skipped"}


def test_continue_on_in_a_loop_body_lets_the_iteration_go_on():
    spec = workflow(
        [
            {
                "name": "loop",
                "loop": {
                    "steps": [
                        c("try", continueOn={"failed": True}),
                        c("check"),
                    ],
                    "until": "steps.try.phase == 'Succeeded'",
                    "maxIterations": 3,
                },
            }
        ]
    )
    calls = {"try": 0}

    def script(a):
        if a.labels.body_step == "try":
            calls["try"] += 1
            return fail() if calls["try"] < 2 else ok()
        return ok()

    r = simulate(spec, script)
    assert r.status.phase == RunPhase.SUCCEEDED
    assert len(r.step("loop").iterations) == 2


# What a failure stops (failFast)


def test_fail_fast_lets_running_siblings_and_their_retries_finish_and_starts_nothing_new():
    spec = workflow(
        [
            c("a", dependsOn=[]),
            c("b", dependsOn=[], retry={"limit": 2, "backoff": {"initialDelaySeconds": 1}}),
            c("after-a", dependsOn=["a"]),
        ]
    )
    attempts = {"b": 0}

    def script(a):
        if a.labels.step == "a":
            return fail(seconds=1)
        attempts["b"] += 1
        return fail(seconds=2) if attempts["b"] < 3 else ok(seconds=2)

    r = simulate(spec, script)
    assert r.status.phase == RunPhase.FAILED
    # b failed twice after a had already failed, and was retried both times
    assert attempts["b"] == 3
    assert phases(r) == {"a": "Failed", "b": "Succeeded", "after-a": "Skipped"}
    assert "after-a" not in started(r)


def test_fail_fast_false_keeps_independent_work_going_and_fails_at_the_end():
    spec = workflow(
        [
            c("a", dependsOn=[]),
            c("after-a", dependsOn=["a"]),
            c("after-after-a", dependsOn=["after-a"]),
            c("slow", dependsOn=[]),
            c("after-slow", dependsOn=["slow"]),
        ],
        failFast=False,
    )

    def script(a):
        if a.labels.step == "a":
            return fail(seconds=1)
        return ok(seconds=5)

    r = simulate(spec, script)
    assert r.status.phase == RunPhase.FAILED
    assert phases(r) == {
        "a": "Failed",
        "after-a": "Skipped",
        "after-after-a": "Skipped",
        "slow": "Succeeded",
        "after-slow": "Succeeded",  # started after a had failed
    }
    assert r.step("after-a").reason == "UpstreamFailed"
    assert r.step("after-after-a").reason == "UpstreamFailed"
    cond = next(x for x in r.status.conditions if x.type == "Succeeded")
    assert cond.reason == "StepFailed"
    assert "step a failed (Error)" in cond.message


def test_fail_fast_false_names_every_failed_step():
    spec = workflow([c("a", dependsOn=[]), c("b", dependsOn=[])], failFast=False)
    r = simulate(spec, lambda a: fail())
    cond = next(x for x in r.status.conditions if x.type == "Succeeded")
    assert cond.message == "2 steps failed: a (Error), b (Error)"


def test_a_join_after_a_continued_failure_runs():
    spec = workflow(
        [
            c("a", dependsOn=[], continueOn={"failed": True}),
            c("b", dependsOn=[]),
            c("join", dependsOn=["a", "b"]),
        ]
    )
    r = simulate(spec, lambda a: fail() if a.labels.step == "a" else ok())
    assert r.status.phase == RunPhase.SUCCEEDED
    assert phases(r)["join"] == "Succeeded"


@pytest.mark.parametrize(("fail_fast", "expected_started"), [(True, 2), (False, 6)])
def test_fan_out_fail_fast(fail_fast, expected_started):
    spec = workflow(
        [
            {
                "name": "fan",
                "fanOut": {
                    "items": list(range(6)),
                    "parallelism": 2,
                    "failFast": fail_fast,
                    "container": {"image": "x", "command": ["w", "${{ string(item) }}"]},
                },
            }
        ]
    )
    r = simulate(spec, lambda a: fail() if a.container.command[1] == "0" else ok())
    assert r.status.phase == RunPhase.FAILED
    assert len(r.started) == expected_started
    fan = r.step("fan")
    assert fan.reason == "ThresholdUnreachable"
    if not fail_fast:
        assert fan.outputs["succeeded"] == 5
        assert [i["phase"] for i in [{"phase": it.phase.value} for it in fan.items]].count(
            "Succeeded"
        ) == 5


def test_expressions_read_fan_out_items_and_loop_iterations():
    spec = workflow(
        [
            {
                "name": "fan",
                "continueOn": {"failed": True},
                "fanOut": {
                    "items": ["a", "b"],
                    "container": {"image": "x", "command": ["w", "${{ item }}"]},
                },
            },
            {
                "name": "report",
                "container": {
                    "image": "x",
                    "command": [
                        "r",
                        "${{ steps.fan.items.filter(i, i.phase == 'Failed').map(i, i.index) }}",
                    ],
                },
            },
        ]
    )
    r = simulate(spec, lambda a: fail() if a.container.command[1:] == ["b"] else ok())
    report = next(a for a in r.started if a.labels.step == "report")
    assert report.container.command[1] == "[1]"


# Finally steps with conditions and order


def test_finally_when_and_order_and_run_scope():
    spec = workflow(
        [c("work")],
        **{
            "finally": [
                {
                    "name": "notify-failure",
                    "when": "run.phase == 'Failed'",
                    "container": {
                        "image": "x",
                        "command": [
                            "n",
                            "${{ run.failures.map(f, f.step + ':' + f.reason).join(',') }}",
                            "${{ string(run.durationSeconds) }}",
                        ],
                    },
                },
                {
                    "name": "notify-success",
                    "when": "run.phase == 'Succeeded'",
                    "container": {"image": "x", "command": ["s"]},
                },
                {
                    "name": "cleanup",
                    "dependsOn": ["notify-failure", "notify-success"],
                    "container": {
                        "image": "x",
                        "command": ["c", "${{ steps['notify-failure'].phase }}"],
                    },
                },
            ]
        },
    )
    r = simulate(spec, lambda a: fail(seconds=4) if a.labels.step == "work" else ok())
    assert r.status.phase == RunPhase.FAILED
    assert fin_phases(r) == {
        "notify-failure": "Succeeded",
        "notify-success": "Skipped",
        "cleanup": "Succeeded",
    }
    order = started(r)
    assert order.index("cleanup") > order.index("notify-failure")
    notify = next(a for a in r.started if a.labels.step == "notify-failure")
    assert notify.container.command[1] == "work:Error"
    assert float(notify.container.command[2]) == pytest.approx(4.0)
    cleanup = next(a for a in r.started if a.labels.step == "cleanup")
    assert cleanup.container.command[1] == "Succeeded"

    r = simulate(spec, lambda a: ok())
    assert r.status.phase == RunPhase.SUCCEEDED
    assert fin_phases(r)["notify-failure"] == "Skipped"
    assert fin_phases(r)["notify-success"] == "Succeeded"


def test_finally_dependencies_run_after_a_failed_finally_step():
    spec = workflow(
        [c("work")],
        **{"finally": [c("first"), c("second", dependsOn=["first"])]},
    )
    r = simulate(spec, lambda a: fail() if a.labels.step == "first" else ok())
    assert fin_phases(r) == {"first": "Failed", "second": "Succeeded"}
    assert r.status.phase == RunPhase.FAILED  # a failed finally step fails the run


@pytest.mark.parametrize(
    ("finally_", "fragment"),
    [
        ([c("a", dependsOn=["a"])], "not itself"),
        ([c("a", dependsOn=["work"])], "not 'work', not a finally step"),
        ([c("a", dependsOn=["b"]), c("b", dependsOn=["a"])], "dependency cycle: a -> b -> a"),
        ([c("a", when="steps.b.phase == 'Failed'"), c("b")], "unknown step 'b'"),
    ],
)
def test_finally_dependency_errors(finally_, fragment):
    with pytest.raises(InvalidSpecError) as exc:
        compile_plan(workflow([c("work")], **{"finally": finally_}))
    assert fragment in str(exc.value)


# Retry control


def test_retry_expression_decides_from_the_last_attempt():
    spec = workflow(
        [
            c(
                "call",
                retry={
                    "limit": 5,
                    "backoff": {"initialDelaySeconds": 0},
                    "expression": "lastRetry.exitCode == 75 && lastRetry.attempt < 3 "
                    "&& !has(lastRetry.outputs.fatal)",
                },
            )
        ]
    )
    codes = iter([75, 75, 75, 75])
    r = simulate(spec, lambda a: fail(next(codes)))
    assert len(r.started) == 3  # attempt 3 failed with 75 but attempt < 3 is false
    assert "retry.expression" in r.step("call").message

    codes2 = iter([75, 1])
    r = simulate(spec, lambda a: fail(next(codes2)))
    assert len(r.started) == 2  # exit code 1 is not retried
    r = simulate(spec, lambda a: fail(75, {"fatal": True}))
    assert len(r.started) == 1


def test_retry_max_duration_stops_retries():
    spec = workflow(
        [
            c(
                "call",
                retry={
                    "limit": 10,
                    "backoff": {"initialDelaySeconds": 10, "factor": 1, "jitter": 0},
                    "maxDurationSeconds": 35,
                },
            )
        ]
    )
    r = simulate(spec, lambda a: fail(seconds=1))
    # attempts start at 0, 11, 22, 33; the next would start at 44 > 35
    assert len(r.started) == 4
    assert "maxDurationSeconds=35" in r.step("call").message


def test_retry_expression_errors_fail_the_step_with_the_reason():
    spec = workflow([c("call", retry={"limit": 2, "expression": "lastRetry.outputs.code > 1"})])
    r = simulate(spec, lambda a: fail())
    assert len(r.started) == 1
    assert "not retried" in r.step("call").message
    assert "no such key" in r.step("call").message


def test_default_backoff_is_one_second_doubling():
    spec = workflow([c("call", retry={"limit": 3})])
    r = simulate(spec, lambda a: fail(seconds=0))
    starts = sorted(r.start_times.values())
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert [round(g) for g in gaps] == [1, 2, 4]


# Templates in images


def test_image_takes_templates():
    spec = workflow(
        [
            {
                "name": "a",
                "container": {"image": "registry/model:${{ params.tag }}", "command": ["x"]},
            }
        ],
        params=[{"name": "tag", "default": "v2"}],
    )
    r = simulate(spec, lambda a: ok())
    assert r.started[0].container.image == "registry/model:v2"
    r = simulate(spec, lambda a: ok(), params={"tag": "v2 --privileged"})
    assert r.status.phase == RunPhase.FAILED
    assert "not an image name" in r.step("a").message

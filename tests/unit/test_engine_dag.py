"""The engine's DAG decisions: state in -> decisions out, with cases known from Argo and Tekton."""

from __future__ import annotations

import json

import pytest

from braid.api.run import RunPhase, StepPhase
from braid.engine.simulate import Outcome, simulate
from tests.conftest import container, ok, workflow


def phases(result) -> dict[str, str]:
    return {s.name: s.phase.value for s in result.status.steps}


def start_order(result) -> list[str]:
    return [a.labels.step for a in result.started]


def test_sequential_steps_pass_outputs_in_order():
    spec = workflow(
        [
            {"name": "a", "container": {"image": "x", "command": ["echo"]}},
            {
                "name": "b",
                "container": {"image": "x", "command": ["echo", "${{ steps.a.outputs.n + 1 }}"]},
            },
        ],
        outputs={"n": "steps.b.outputs.n"},
    )

    def script(a):
        if a.labels.step == "a":
            return ok({"n": 1})
        return ok({"n": int(a.container.command[1])})

    r = simulate(spec, script)
    assert r.status.phase == RunPhase.SUCCEEDED
    assert start_order(r) == ["a", "b"]
    assert r.status.outputs == {"n": 2}
    assert r.status.progress == "2/2"


@pytest.mark.parametrize(
    ("steps", "expected_waves"),
    [
        # diamond: a -> (b, c) -> d
        (
            [
                container("a"),
                container("b", dependsOn=["a"]),
                container("c", dependsOn=["a"]),
                container("d", dependsOn=["b", "c"]),
            ],
            [{"a"}, {"b", "c"}, {"d"}],
        ),
        # independent roots start together
        (
            [
                container("a", dependsOn=[]),
                container("b", dependsOn=[]),
                container("c", dependsOn=["a"]),
            ],
            [{"a", "b"}, {"c"}],
        ),
        # fan-in of three
        (
            [
                container("a", dependsOn=[]),
                container("b", dependsOn=[]),
                container("c", dependsOn=[]),
                container("z", dependsOn=["a", "b", "c"]),
            ],
            [{"a", "b", "c"}, {"z"}],
        ),
    ],
)
def test_dag_waves(steps, expected_waves):
    r = simulate(workflow(steps), lambda a: ok(seconds=1))
    assert r.status.phase == RunPhase.SUCCEEDED
    waves: dict[int, set[str]] = {}
    for st in r.status.steps:
        waves.setdefault(int((st.start_time - r.status.start_time).total_seconds()), set()).add(
            st.name
        )
    assert [waves[k] for k in sorted(waves)] == expected_waves


def test_when_false_skips_step_and_what_depends_only_on_it():
    spec = workflow(
        [
            container("route", dependsOn=[]),
            container("left", dependsOn=["route"], when='steps.route.outputs.go == "left"'),
            container("right", dependsOn=["route"], when='steps.route.outputs.go == "right"'),
            container("after-right", dependsOn=["right"]),
            container("join", dependsOn=["left", "right"]),
        ]
    )
    r = simulate(spec, lambda a: ok({"go": "left"}))
    assert phases(r) == {
        "route": "Succeeded",
        "left": "Succeeded",
        "right": "Skipped",
        "after-right": "Skipped",
        "join": "Succeeded",
    }
    steps = {s.name: s for s in r.status.steps}
    assert steps["right"].reason == "WhenFalse"
    assert steps["after-right"].reason == "UpstreamSkipped"
    assert r.status.phase == RunPhase.SUCCEEDED


def test_failure_in_one_branch_lets_running_siblings_finish_and_starts_nothing_new():
    spec = workflow(
        [
            container("a", dependsOn=[]),
            container("slow", dependsOn=[]),
            container("after-a", dependsOn=["a"]),
            container("after-slow", dependsOn=["slow"]),
        ]
    )

    def script(act):
        if act.labels.step == "a":
            return Outcome(seconds=1, exit_code=3)
        return ok(seconds=5)

    r = simulate(spec, script)
    assert r.status.phase == RunPhase.FAILED
    assert phases(r) == {
        "a": "Failed",
        "slow": "Succeeded",
        "after-a": "Skipped",
        "after-slow": "Skipped",
    }
    assert "after-slow" not in start_order(r)
    cond = r.status.condition("Succeeded")
    assert (cond.status, cond.reason) == ("False", "StepFailed")
    assert "step a failed (Error): exited with code 3" in cond.message


def test_max_parallel_bounds_running_attempts():
    steps = [container(f"s{i}", dependsOn=[]) for i in range(10)]
    r = simulate(workflow(steps, maxParallel=3), lambda a: ok())
    assert r.max_running == 3
    assert r.status.phase == RunPhase.SUCCEEDED
    assert r.end.timestamp() - r.status.start_time.timestamp() == 4  # ceil(10/3) waves of 1s


def test_attempt_names_are_deterministic_and_distinct():
    spec = workflow(
        [
            container("a"),
            {
                "name": "a-1",
                "fanOut": {"items": [1, 2], "container": {"image": "x", "command": ["true"]}},
            },
            {
                "name": "l",
                "loop": {
                    "maxIterations": 2,
                    "until": "false",
                    "onMaxIterations": "Succeed",
                    "steps": [container("b")],
                },
            },
        ]
    )
    first = simulate(spec, lambda a: ok(), run_name="r")
    second = simulate(spec, lambda a: ok(), run_name="r")
    names = [a.name for a in first.started]
    assert names == [a.name for a in second.started]
    assert names == ["r-a-1", "r-a-1--0-1", "r-a-1--1-1", "r-l--0-b-1", "r-l--1-b-1"]
    assert len(set(names)) == len(names)


def test_run_outputs_error_fails_the_run_with_the_field_path():
    spec = workflow([container("a")], outputs={"x": "steps.a.outputs.missing"})
    r = simulate(spec, lambda a: ok({}))
    cond = r.status.condition("Succeeded")
    assert r.status.phase == RunPhase.FAILED
    assert cond.reason == "OutputsError"
    assert "spec.outputs.x" in cond.message


def test_when_expression_error_fails_the_step_naming_the_field():
    spec = workflow([container("a"), container("b", when="steps.a.outputs.nope > 1")])
    r = simulate(spec, lambda a: ok({}))
    b = r.step("b")
    assert b.phase == StepPhase.FAILED
    assert b.reason == "ExpressionError"
    assert "spec.steps[1].when" in b.message
    assert "nope" in b.message


@pytest.mark.parametrize(
    ("output", "reason", "fragment"),
    [
        ("x" * 5000, "OutputTooLarge", "limit is 4096 bytes"),
        ("{not json", "OutputInvalid", "not valid JSON"),
        ("[1, 2]", "OutputInvalid", "must be a JSON object"),
    ],
)
def test_outputs_contract(output, reason, fragment):
    r = simulate(workflow([container("a")]), lambda a: Outcome(output=output))
    a = r.step("a")
    assert (a.phase, a.reason) == (StepPhase.FAILED, reason)
    assert fragment in a.message


def test_exactly_4096_bytes_of_output_is_accepted():
    payload = json.dumps({"k": "v" * (4096 - 9)})
    assert len(payload) == 4096
    r = simulate(workflow([container("a")]), lambda a: Outcome(output=payload))
    assert r.step("a").phase == StepPhase.SUCCEEDED

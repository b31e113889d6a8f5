"""Artifacts in the engine: references recorded per attempt, read by later steps as
steps.x.artifacts['name'] and as input artifacts, limits per step and per run, a run total
that follows retries. No store here: the drivers' side is tested with a real one."""

from __future__ import annotations

import hashlib

import pytest

from braid.api.errors import InvalidSpecError
from braid.api.run import Artifact, RunPhase
from braid.engine import AttemptResult, Observations, RunState
from braid.engine.actions import ArtifactRoom, InputArtifact, LoadItems
from braid.engine.compile import compile_plan
from braid.engine.simulate import Outcome, simulate
from tests.conftest import ok, workflow

MiB = 1 << 20


def art(name: str, size: int, run: str = "r") -> Artifact:
    sha = hashlib.sha256(name.encode()).hexdigest()
    return Artifact(size=size, sha256=sha, uri=f"s3://b/{run}/{name}")


def c(name: str, **container: object) -> dict:
    return {"name": name, "container": {"image": "x", "command": [name], **container}}


def test_a_later_step_reads_an_artifact_and_gets_it_as_an_input():
    spec = workflow(
        [
            c("write"),
            c(
                "read",
                args=["${{ steps.write.artifacts['report.md'].size }}"],
                inputs={
                    "artifacts": [{"from": "steps.write.artifacts['report.md']", "path": "in/r.md"}]
                },
            ),
        ]
    )
    report = art("report.md", 5 * MiB)

    def script(a):
        return Outcome(artifacts={"report.md": report}) if a.labels.step == "write" else ok()

    r = simulate(spec, script)
    assert r.status.phase == RunPhase.SUCCEEDED
    assert r.step("write").artifacts == {"report.md": report}
    read = next(a for a in r.started if a.labels.step == "read")
    assert read.container.args == [str(5 * MiB)]
    assert read.container.inputs == (InputArtifact("in/r.md", report.uri, report.sha256),)
    assert r.status.artifact_bytes == 5 * MiB
    # references only: nothing of the content, a few hundred bytes in the status
    assert len(r.status.model_dump_json()) < 16 * 1024


def test_limits_reach_the_attempt_and_the_run_total_shrinks_what_is_left():
    spec = workflow(
        [
            c("a"),
            c("b", artifactLimits={"maxBytes": 8 * MiB, "maxFiles": 3}),
            c("none", artifactLimits={"maxFiles": 0}),
        ],
        artifactLimits={"maxBytesPerRun": 10 * MiB, "maxFilesPerStep": 7},
    )

    def script(a):
        return Outcome(artifacts={"x": art("x", 4 * MiB)}) if a.labels.step == "a" else ok()

    r = simulate(spec, script)
    rooms = {a.labels.step: a.container.artifacts for a in r.started}
    assert rooms == {
        "a": ArtifactRoom(10 * MiB, 7),
        "b": ArtifactRoom(6 * MiB, 3),  # what the run has left is less than the step's own
        "none": None,  # no sidecar, nothing to write
    }


def test_too_many_bytes_fail_the_attempt_with_artifact_too_large_and_retry_replaces_them():
    spec = workflow(
        [c("a", artifactLimits={"maxBytes": MiB}), c("b")],
    )
    spec.steps[0].retry = None
    r = simulate(
        spec,
        lambda a: Outcome(artifacts={"big": art("big", 2 * MiB)}) if a.labels.step == "a" else ok(),
    )
    a = r.step("a")
    assert (r.status.phase, a.reason) == (RunPhase.FAILED, "ArtifactTooLarge")
    assert "the limit is 20 files, 1048576 bytes" in a.message
    # the driver's own refusal (the sidecar stopped before uploading) says the same reason
    r = simulate(
        workflow([c("a")]),
        lambda a: Outcome(
            artifact_error="artifacts: 3 GiB over the 1 GiB limit", artifact_too_large=True
        ),
    )
    assert r.step("a").reason == "ArtifactTooLarge"
    r = simulate(workflow([c("a")]), lambda a: Outcome(artifact_error="input in/x: 404"))
    assert r.step("a").reason == "ArtifactFailed"


def test_a_retried_attempt_replaces_the_artifacts_of_the_one_before():
    spec = workflow(
        [
            c(
                "a",
            )
            | {"retry": {"limit": 1, "backoff": {"initialDelaySeconds": 0}}}
        ]
    )
    sizes = iter([3 * MiB, MiB])

    def script(a):
        size = next(sizes)
        return Outcome(
            exit_code=1 if a.labels.attempt == 1 else 0,
            artifacts={"f": art(f"f{a.labels.attempt}", size)},
        )

    r = simulate(spec, script)
    assert r.status.phase == RunPhase.SUCCEEDED
    assert r.step("a").artifacts["f"].uri.endswith("f2")
    assert r.status.artifact_bytes == MiB


def test_fan_out_items_keep_their_own_artifacts_and_inputs_see_the_item():
    spec = workflow(
        [
            {
                "name": "fan",
                "fanOut": {
                    "items": ["a", "b"],
                    "container": {"image": "x", "command": ["w", "${{ item }}"]},
                },
            },
            c(
                "gather",
                args=["${{ steps.fan.items.map(i, i.artifacts['out.txt'].size) }}"],
            ),
        ]
    )

    def script(a):
        if a.labels.step == "fan":
            return Outcome(
                artifacts={"out.txt": art(a.container.command[1], len(a.container.command[1]) * 10)}
            )
        return ok()

    r = simulate(spec, script)
    assert r.status.phase == RunPhase.SUCCEEDED, r.status
    gather = next(a for a in r.started if a.labels.step == "gather")
    assert gather.container.args == ["[10,10]"]
    assert r.status.artifact_bytes == 20


def test_an_input_from_something_that_is_not_an_artifact_is_a_clear_failure():
    spec = workflow(
        [c("a"), c("b", inputs={"artifacts": [{"from": "steps.a.outputs", "path": "x"}]})]
    )
    r = simulate(spec, lambda a: ok())
    b = r.step("b")
    assert b.reason == "ExpressionError"
    assert "spec.steps[1].container.inputs.artifacts[0].from" in b.message
    assert "not an artifact" in b.message


@pytest.mark.parametrize(
    ("path", "fragment"),
    [("../etc/passwd", "path"), ("/abs", "path"), ("a/./b", "path"), ("", "path")],
)
def test_input_paths_stay_under_the_inputs_directory(path, fragment):
    with pytest.raises(Exception) as info:
        workflow(
            [
                c("a"),
                c("b", inputs={"artifacts": [{"from": "steps.a.artifacts['x']", "path": path}]}),
            ]
        )
    assert "inputs.artifacts.0.path" in str(info.value) or "path" in str(info.value)


def test_an_input_from_a_step_that_is_not_upstream_is_refused_at_lint():
    with pytest.raises(InvalidSpecError) as info:
        compile_plan(
            workflow(
                [
                    c("a", inputs={"artifacts": [{"from": "steps.b.artifacts['x']", "path": "x"}]}),
                    c("b"),
                ]
            )
        )
    assert "spec.steps[0].container.inputs.artifacts[0].from" in str(info.value)


def fan_from(**fan: object) -> dict:
    return {
        "name": "fan",
        "fanOut": {"container": {"image": "x", "command": ["w", "${{ string(item.n) }}"]}, **fan},
    }


def test_a_fan_out_iterates_over_a_json_list_kept_in_an_artifact_not_in_the_run():
    items = [{"n": i} for i in range(5000)]
    lst = art("items.json", 300_000)
    spec = workflow(
        [c("plan"), fan_from(itemsFrom="steps.plan.artifacts['items.json']", parallelism=500)]
    )
    r = simulate(
        spec,
        lambda a: Outcome(artifacts={"items.json": lst}) if a.labels.step == "plan" else ok(),
        stored_lists={lst.uri: items},
    )
    assert r.status.phase == RunPhase.SUCCEEDED, r.status
    assert r.loads == [lst.uri]  # asked for once, when the step became ready
    fan = r.step("fan")
    assert fan.item_count == 5000
    assert sorted(int(a.container.command[1]) for a in r.started if a.labels.step == "fan") == list(
        range(5000)
    )
    # the list itself is nowhere in the run object
    assert len(r.status.model_dump_json()) < 64 * 1024


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        ("no such artifact", "no such artifact"),
        ({"not": "a list"}, "must evaluate to a list"),
    ],
)
def test_an_item_list_that_cannot_be_had_fails_the_step_naming_the_field(stored, message):
    lst = art("items.json", 10)
    spec = workflow([c("plan"), fan_from(itemsFrom="steps.plan.artifacts['items.json']")])
    lists = {lst.uri: stored} if stored != "no such artifact" else {}
    r = simulate(
        spec,
        lambda a: Outcome(artifacts={"items.json": lst}) if a.labels.step == "plan" else ok(),
        stored_lists=lists,
    )
    fan = r.step("fan")
    assert (fan.phase.value, fan.reason) == ("Failed", "ExpressionError")
    assert "spec.steps[1].fanOut.itemsFrom" in fan.message
    assert message in fan.message


def test_a_resumed_run_loads_the_list_again_before_its_items_go_on():
    """As after an operator restart: the engine rebuilt from the status asks for the list,
    and the running items are resumed once it is given."""
    lst = art("items.json", 10)
    spec = workflow(
        [c("plan"), fan_from(itemsFrom="steps.plan.artifacts['items.json']", parallelism=1)]
    )
    state = RunState.load(
        "r", spec, __import__("braid.api.run", fromlist=["x"]).WorkflowRunStatus(), {}
    )
    t0 = __import__("datetime").datetime(2026, 1, 1, tzinfo=__import__("datetime").UTC)
    state.decide(Observations(), t0)
    d = state.decide(
        Observations(
            results=[AttemptResult("r-plan-1", exit_code=0, artifacts={"items.json": lst})]
        ),
        t0,
    )
    assert [a for a in d.actions if isinstance(a, LoadItems)] == [
        LoadItems("fan", lst.uri, lst.sha256)
    ]
    d = state.decide(Observations(item_lists={lst.uri: [{"n": 1}, {"n": 2}]}), t0)
    assert [a.name for a in d.actions if hasattr(a, "container") and a.container] == ["r-fan--0-1"]
    resumed = RunState.load("r", spec, state.status, {})
    d = resumed.decide(Observations(results=[AttemptResult("r-fan--0-1", exit_code=0)]), t0)
    assert [a for a in d.actions if isinstance(a, LoadItems)] == [
        LoadItems("fan", lst.uri, lst.sha256)
    ]
    assert resumed.status.steps[1].items[0].phase.value == "Running"  # not recorded until loaded
    d = resumed.decide(
        Observations(
            results=[AttemptResult("r-fan--0-1", exit_code=0)],
            item_lists={lst.uri: [{"n": 1}, {"n": 2}]},
        ),
        t0,
    )
    assert resumed.status.steps[1].items[0].phase.value == "Succeeded"
    assert [a.name for a in d.actions if hasattr(a, "container") and a.container] == ["r-fan--1-1"]

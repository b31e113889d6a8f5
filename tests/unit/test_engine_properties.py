"""Properties that hold for every valid workflow, explored with hypothesis."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from braid.api.run import StepPhase
from braid.api.workflow import WorkflowSpec
from braid.engine.simulate import Outcome, simulate

CMD = {"image": "x", "command": ["true"]}


@st.composite
def workflows(draw):
    n = draw(st.integers(1, 12))
    steps = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else []
        step = {"name": f"s{i}", "dependsOn": [f"s{d}" for d in deps]}
        kind = draw(st.sampled_from(["container", "container", "fanOut", "loop"]))
        if kind == "container":
            step["container"] = CMD
        elif kind == "fanOut":
            k = draw(st.integers(0, 4))
            step["fanOut"] = {
                "items": list(range(k)),
                "container": CMD,
                "parallelism": draw(st.integers(1, 3)),
            }
            if k and draw(st.booleans()):
                step["fanOut"]["successThreshold"] = {"count": draw(st.integers(0, k))}
        else:
            step["loop"] = {
                "maxIterations": draw(st.integers(1, 3)),
                "until": draw(st.sampled_from(["true", "false", "iteration >= 1"])),
                "onMaxIterations": draw(st.sampled_from(["Fail", "Succeed"])),
                "steps": [{"name": f"s{i}b", "container": CMD}],
            }
        if draw(st.booleans()) and deps:
            step["when"] = draw(
                st.sampled_from(["true", "false", f'steps.s{deps[0]}.phase == "Succeeded"'])
            )
        if draw(st.booleans()):
            step["retry"] = {
                "limit": draw(st.integers(0, 2)),
                "backoff": {"initialDelaySeconds": draw(st.integers(0, 5))},
            }
        if draw(st.booleans()):
            step["compensation"] = {"container": CMD}
        steps.append(step)
    spec = {"steps": steps, "maxParallel": draw(st.integers(1, 4))}
    if draw(st.booleans()):
        spec["finally"] = [{"name": "fin", "container": CMD}]
    return WorkflowSpec.model_validate(spec)


@st.composite
def scripts(draw):
    names = [f"s{i}" for i in range(12)] + [f"s{i}b" for i in range(12)]
    failures = draw(st.sets(st.sampled_from(names), max_size=4))
    persistent = draw(st.booleans())  # fail every attempt, or only the first
    durations = draw(st.lists(st.integers(1, 9), min_size=1, max_size=5))

    def script(action):
        seconds = durations[hash(action.name) % len(durations)]
        fail = action.labels.step in failures or (action.labels.body_step or "") in failures
        return Outcome(
            seconds=seconds,
            exit_code=1 if fail and (persistent or action.labels.attempt == 1) else 0,
            output="{}",
        )

    return script


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workflows(), scripts(), st.one_of(st.none(), st.integers(0, 30)))
def test_every_run_finishes_in_order_within_limits(spec, script, cancel_at):
    result = simulate(
        spec, script, cancel_at=cancel_at
    )  # raises if an attempt starts twice or the run sticks
    status = result.status
    assert status.succeeded is not None
    assert all(s.phase.final for s in status.steps)
    for s in status.steps:
        for item in s.items or []:
            assert item.phase.final
        for it in s.iterations or []:
            assert all(b.phase.final for b in it.steps)
    assert result.max_running <= spec.max_parallel
    # never start a step before its dependencies finished
    finished = {s.name: s.completion_time for s in status.steps}
    deps = {s.name: s.depends_on for s in spec.steps}
    for action in result.started:
        if action.labels.role != "step":
            continue
        started = result.start_times[action.name]
        for dep in deps[action.labels.step] or []:
            assert finished[dep] is not None, (action.name, dep)
            assert finished[dep] <= started, (action.name, dep)
    # compensation only for steps that succeeded, and only when the run did not succeed
    compensated = {a.labels.step for a in result.started if a.labels.role == "compensation"}
    if status.succeeded:
        assert not compensated
    phase = {s.name: s.phase for s in status.steps}
    assert all(phase[name] == StepPhase.SUCCEEDED for name in compensated)

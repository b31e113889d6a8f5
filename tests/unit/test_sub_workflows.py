"""Sub-workflows (`workflow:` steps): the engine asks for a child run per attempt and takes
its end; the reconciler creates it owned by the parent and reads it back; lint finds
recursion nothing ends. No cluster: the engine on its virtual clock, the reconciler on the
in-memory Cluster."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from braid.api.errors import InvalidSpecError
from braid.api.manifests import parse_documents
from braid.api.podtemplate import PodPolicy
from braid.api.run import ParentLink, RunPhase, StepPhase, Usage, WorkflowRunStatus
from braid.api.workflow import BudgetSpec
from braid.controller.reconcile import Reconciler
from braid.engine import Observations, RunState, StartAttempt
from braid.engine.actions import CancelAttempt, ChildOutcome
from braid.engine.children import MAX_DEPTH, capped, remaining
from braid.engine.compile import compile_plan
from braid.engine.simulate import Outcome, simulate
from braid.engine.validate import validate_manifests, validate_workflow
from braid.kube.memory import MemoryCluster
from tests.conftest import container, ok, workflow


def child(phase: str = "Succeeded", **kw: Any) -> Outcome:
    return Outcome(seconds=5, child=ChildOutcome(phase=phase, **kw))


def answer(outcome: Outcome):
    return lambda a: outcome if a.child is not None else ok({"n": 3})


def test_a_workflow_step_starts_a_child_run_and_takes_its_outputs_and_usage():
    spec = workflow(
        [
            container("plan"),
            {
                "name": "review",
                "workflow": {
                    "name": "review-flow",
                    "params": {"n": "${{ steps.plan.outputs.n }}", "mode": "strict"},
                },
            },
        ],
        outputs={"verdict": "steps.review.outputs.verdict"},
    )
    ended = child(outputs={"verdict": "ok"}, usage={"tokens": 40, "cost": 0.5}, steps="2/2")
    r = simulate(spec, answer(ended))
    assert r.status.phase == RunPhase.SUCCEEDED
    asked = next(a for a in r.started if a.child is not None)
    assert asked.name == "run-review-1"  # deterministic: the child run's name
    assert asked.child.workflow == "review-flow"
    assert asked.child.params == {"n": 3, "mode": "strict"}
    assert asked.child.parent == ParentLink(run="run", step="review", depth=1)
    review = r.step("review")
    assert review.child_run == "run-review-1"
    assert review.outputs["verdict"] == "ok"
    assert r.status.outputs == {"verdict": "ok"}
    assert r.status.usage == Usage(tokens=40, cost=0.5)  # the child's usage is the parent's


def test_a_failed_child_fails_the_step_with_its_reason_and_is_retried_like_any_attempt():
    spec = workflow(
        [{"name": "sub", "workflow": {"name": "w"}, "retry": {"limit": 1}}],
    )
    ended = child("Failed", reason="StepFailed", message="step x failed (Error): exit 1")
    r = simulate(spec, answer(ended))
    sub = r.step("sub")
    assert (sub.phase, sub.reason, sub.attempts) == (StepPhase.FAILED, "SubWorkflowFailed", 2)
    assert sub.message.startswith("child run run-sub-2 failed (StepFailed): step x failed")
    assert [a.name for a in r.started] == ["run-sub-1", "run-sub-2"]


def test_a_fan_out_of_sub_workflows_names_each_child_and_gathers_their_outputs():
    spec = workflow(
        [
            {
                "name": "each",
                "fanOut": {
                    "items": ["a", "b", "c"],
                    "workflow": {"name": "w", "params": {"topic": "${{ item }}"}},
                },
            }
        ]
    )

    def script(a: StartAttempt) -> Outcome:
        return child(outputs={"topic": a.child.params["topic"].upper()})

    r = simulate(spec, script)
    assert sorted(a.name for a in r.started) == [
        "run-each--0-1",
        "run-each--1-1",
        "run-each--2-1",
    ]
    assert [i["topic"] for i in r.step("each").outputs["items"]] == ["A", "B", "C"]
    assert {a.child.parent.step for a in r.started} == {"each[0]", "each[1]", "each[2]"}


def test_a_loop_body_runs_a_sub_workflow_per_iteration_until_it_converges():
    spec = workflow(
        [
            {
                "name": "refine",
                "loop": {
                    "maxIterations": 5,
                    "until": "steps.draft.outputs.score >= 3",
                    "steps": [
                        {
                            "name": "draft",
                            "workflow": {"name": "w", "params": {"round": "${{ iteration }}"}},
                        }
                    ],
                },
            }
        ]
    )
    r = simulate(spec, lambda a: child(outputs={"score": a.child.params["round"] + 1}))
    assert r.status.phase == RunPhase.SUCCEEDED
    assert r.step("refine").outputs["count"] == 3


def test_runs_nest_at_most_max_depth_and_the_deepest_fails_without_retrying():
    spec = workflow([{"name": "again", "workflow": {"name": "w"}, "retry": {"limit": 3}}])
    deep = ParentLink(run="p", step="again", depth=MAX_DEPTH)
    r = simulate(spec, answer(child()), parent=deep)
    again = r.step("again")
    assert (again.phase, again.reason, again.attempts) == (
        StepPhase.FAILED,
        "SubWorkflowTooDeep",
        1,
    )
    assert f"at most {MAX_DEPTH} deep" in again.message
    assert not r.started
    shallower = ParentLink(run="p", step="again", depth=MAX_DEPTH - 1)
    r = simulate(spec, answer(child()), parent=shallower)
    assert r.started[0].child.parent.depth == MAX_DEPTH


def test_a_child_gets_what_is_left_of_the_parents_budget_as_its_cap():
    budget = BudgetSpec(tokens=100, cost=2.0, onExceeded="Pause")
    status = WorkflowRunStatus(usage=Usage(tokens=30, cost=0.5))
    left = remaining(budget, status)
    assert (left.tokens, left.cost, left.on_exceeded) == (70, 1.5, "Pause")
    own = workflow([container("a")], budget={"tokens": 50})
    assert capped(own, left).budget.tokens == 50  # the lower of each limit
    assert capped(own, left).budget.cost == 1.5
    assert capped(workflow([container("a")]), left).budget == left
    spec = workflow(
        [container("first"), {"name": "sub", "workflow": {"name": "w"}}],
        budget={"tokens": 100},
    )
    r = simulate(spec, lambda a: child() if a.child else ok({"usage": {"tokens": 30}}))
    assert r.started[1].child.budget.tokens == 70


def test_cancelling_the_parent_cancels_the_child_run():
    spec = workflow([{"name": "sub", "workflow": {"name": "w"}}])
    r = simulate(spec, lambda a: Outcome(seconds=100, child=ChildOutcome("Succeeded")), cancel_at=3)
    assert r.status.phase == RunPhase.CANCELLED
    assert r.cancelled == ["run-sub-1"]
    state = RunState.load("run", spec, WorkflowRunStatus(), {})
    d = state.decide(Observations(), datetime(2026, 1, 1, tzinfo=UTC))
    assert [a.name for a in d.actions if isinstance(a, StartAttempt)] == ["run-sub-1"]
    d = state.decide(Observations(cancel=True), datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC))
    cancels = [a for a in d.actions if isinstance(a, CancelAttempt)]
    assert [c.child for c in cancels] == [True]  # the driver cancels the run, not a pod


def test_an_inline_spec_is_validated_with_errors_named_under_the_step():
    spec = workflow(
        [
            {
                "name": "sub",
                "workflow": {
                    "spec": {
                        "steps": [
                            {"name": "x", "container": {"image": "i"}, "dependsOn": ["nope"]},
                            {"name": "y", "when": "steps.x.outputs.(", "container": {"image": "i"}},
                        ]
                    }
                },
            }
        ]
    )
    with pytest.raises(InvalidSpecError) as caught:
        compile_plan(spec)
    paths = [e.path for e in caught.value.errors]
    assert "spec.steps[0].workflow.spec.steps[0].dependsOn[0]" in paths
    unknown = workflow([{"name": "sub", "workflow": {"spec": {"steps": [], "bogus": 1}}}])
    with pytest.raises(InvalidSpecError) as caught:
        compile_plan(unknown)
    assert any(e.path.startswith("spec.steps[0].workflow.spec") for e in caught.value.errors)
    both = {"name": "sub", "workflow": {"name": "w", "spec": {"steps": []}}}
    with pytest.raises(ValueError, match="exactly one of name or spec"):
        workflow([both])


def test_an_inline_sub_workflow_cannot_smuggle_a_pod_template_past_the_policy():
    hostile = {"spec": {"hostNetwork": True, "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}}
    inner = {"name": "x", "container": {"image": "i", "podTemplate": hostile}}
    case = {"name": "c", "when": "true", "container": {"image": "i", "podTemplate": hostile}}
    spec = workflow(
        [
            {"name": "sub", "workflow": {"spec": {"steps": [inner]}}},
            {"name": "fan", "fanOut": {"items": [1], "cases": [case]}},
        ]
    )
    paths = [e.path for e in validate_workflow(spec, PodPolicy())]
    assert any(
        p.startswith("spec.steps[0].workflow.spec.steps[0].container.podTemplate") for p in paths
    )
    assert any(p.startswith("spec.steps[1].fanOut.cases[0].container.podTemplate") for p in paths)


def _workflows(*docs: str) -> list[Any]:
    return [m for d in docs for m in parse_documents(d)]


RECURSIVE = """
apiVersion: braid.dev/v1alpha1
kind: Workflow
metadata: {name: %s}
spec:
  steps:
    - name: again
      %s
      workflow: {name: %s}
"""


def test_lint_finds_recursion_that_nothing_ends_and_allows_recursion_a_when_ends():
    errors = validate_manifests(_workflows(RECURSIVE % ("a", "", "b"), RECURSIVE % ("b", "", "a")))
    assert len(errors) == 1
    assert errors[0].path == "document[0].spec.steps[0].workflow.name"
    assert "recursion without end: a -> b -> a" in errors[0].message
    itself = validate_manifests(_workflows(RECURSIVE % ("a", "", "a")))
    assert "a -> a" in itself[0].message
    guarded = RECURSIVE % ("flip", 'when: "1 < 3"', "flip")
    assert validate_manifests(_workflows(guarded)) == []


# ---------------------------------------------------------------- the reconciler


PARENT = {
    "spec": {
        "steps": [
            {"name": "sub", "workflow": {"name": "child", "params": {"x": 2}}},
        ],
        "outputs": {"y": "steps.sub.outputs.y"},
    }
}
CHILD = {
    "spec": {
        "params": [{"name": "x"}],
        "steps": [{"name": "work", "container": {"image": "i", "command": ["w"]}}],
        "outputs": {"y": "params.x * 10"},
    }
}


def setup() -> tuple[MemoryCluster, Reconciler]:
    cluster = MemoryCluster()
    cluster.workflows["parent"] = copy.deepcopy(PARENT)
    cluster.workflows["child"] = copy.deepcopy(CHILD)
    cluster.runs["p"] = {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "resourceVersion": "1"},
        "spec": {"workflowRef": {"name": "parent"}},
    }
    clock = iter(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i) for i in range(1000))
    return cluster, Reconciler(cluster, clock=lambda: next(clock))


def reconcile(cluster: MemoryCluster, reconciler: Reconciler, run: str):
    return asyncio.run(reconciler.reconcile("ns", run, list(cluster.pods.values())))


def test_the_reconciler_creates_the_child_owned_by_the_parent_and_takes_its_end():
    cluster, reconciler = setup()
    reconcile(cluster, reconciler, "p")
    made = cluster.runs["p-sub-1"]
    assert made["spec"] == {"workflowRef": {"name": "child"}, "params": {"x": 2}}
    meta = made["metadata"]
    assert meta["labels"]["braid.dev/parent-run"] == "p"
    assert meta["labels"]["braid.dev/depth"] == "1"
    assert meta["ownerReferences"][0]["uid"] == "u1"
    assert meta["ownerReferences"][0]["controller"] is True
    assert cluster.runs["p"]["status"]["steps"][0]["childRun"] == "p-sub-1"
    reconcile(cluster, reconciler, "p-sub-1")
    assert cluster.runs["p-sub-1"]["status"]["parent"] == {"run": "p", "step": "sub", "depth": 1}
    cluster.finish_pod("p-sub-1-work-1", "{}")
    done = reconcile(cluster, reconciler, "p-sub-1")
    assert ("ns", "p") in done.wake  # the parent is told its child finished
    reconcile(cluster, reconciler, "p")
    status = cluster.runs["p"]["status"]
    assert status["phase"] == "Succeeded", status
    assert status["outputs"] == {"y": 20}


def test_a_run_squatting_on_the_childs_name_is_a_conflict_never_its_result():
    cluster, reconciler = setup()
    cluster.runs["p-sub-1"] = {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {"name": "p-sub-1", "namespace": "ns", "uid": "evil", "resourceVersion": "1"},
        "spec": {"workflowRef": {"name": "child"}},
        "status": {
            "phase": "Succeeded",
            "outputs": {"y": 666},
            "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded"}],
        },
    }
    reconcile(cluster, reconciler, "p")
    step = cluster.runs["p"]["status"]["steps"][0]
    assert step["phase"] == "Failed"
    assert step["reason"] == "PodConflict"
    assert "belongs to another object" in step["message"]
    assert cluster.runs["p-sub-1"]["status"]["outputs"] == {"y": 666}  # left alone


def test_cancelling_the_parent_sets_the_child_cancelled():
    cluster, reconciler = setup()
    reconcile(cluster, reconciler, "p")
    reconcile(cluster, reconciler, "p-sub-1")
    cluster.runs["p"]["spec"]["cancelled"] = True
    reconcile(cluster, reconciler, "p")
    assert cluster.runs["p-sub-1"]["spec"]["cancelled"] is True
    reconcile(cluster, reconciler, "p-sub-1")
    assert cluster.runs["p-sub-1"]["status"]["phase"] == "Cancelled"
    reconcile(cluster, reconciler, "p")
    assert cluster.runs["p"]["status"]["phase"] == "Cancelled"


FANNED = {
    "spec": {
        "steps": [
            {
                "name": "each",
                "fanOut": {
                    "items": list(range(20)),
                    "workflow": {"name": "child", "params": {"x": 1}},
                },
            }
        ]
    }
}


def test_children_tell_their_parent_how_they_ended_so_it_reads_none_back():
    cluster, reconciler = setup()
    cluster.workflows["parent"] = copy.deepcopy(FANNED)
    reconcile(cluster, reconciler, "p")
    kids = sorted(n for n in cluster.runs if n.startswith("p-each--"))
    assert len(kids) == 20
    for kid in kids:
        reconcile(cluster, reconciler, kid)
    reconcile(cluster, reconciler, "p")  # reads each child once (it may have missed news)
    reads = cluster.requests["GET workflowruns"]
    for kid in kids:
        cluster.finish_pod(f"{kid}-work-1", "{}")
        reconcile(cluster, reconciler, kid)
        reconcile(cluster, reconciler, "p")
    # each parent reconcile reads only itself: no GET per child per reconcile
    assert cluster.requests["GET workflowruns"] - reads == 2 * len(kids)
    status = cluster.runs["p"]["status"]
    assert status["phase"] == "Succeeded", status
    assert status["steps"][0]["outputs"]["succeeded"] == 20


def test_a_child_run_deleted_before_it_finished_fails_its_attempt():
    cluster, reconciler = setup()
    reconcile(cluster, reconciler, "p")
    reconcile(cluster, reconciler, "p-sub-1")
    reconcile(cluster, reconciler, "p")
    gone = cluster.runs.pop("p-sub-1")
    reconciler.child_gone(gone)  # what the watch's DELETED event does
    reconcile(cluster, reconciler, "p")
    step = cluster.runs["p"]["status"]["steps"][0]
    assert (step["phase"], step["reason"]) == ("Failed", "PodLost")
    assert "child run was deleted" in step["message"]

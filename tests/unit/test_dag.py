"""The DAG leaf on its own: "these done -> these ready" tables, as Tekton tests its
``GetCandidateTasks``, plus cycles, downstream and upstream. No CEL, no status, no scheduler."""

from __future__ import annotations

import pytest

from braid.engine import dag
from tests.conftest import workflow

#   a   b   c
#   | \ / \ |
#   |  x   y
#   |  |   |
#   |  z   |
#    \ | \ |
#      w   q
GRAPH = dag.of(
    ["a", "b", "c", "x", "y", "z", "w", "q"],
    {
        "x": ["a", "b"],
        "y": ["b", "c"],
        "z": ["x"],
        "w": ["a", "z"],
        "q": ["z", "y"],
    },
)


@pytest.mark.parametrize(
    ("done", "started", "expected"),
    [
        ((), (), ["a", "b", "c"]),
        (("a",), (), ["b", "c"]),
        (("a",), ("b",), ["c"]),
        (("a", "b"), (), ["c", "x"]),
        (("b", "c"), (), ["a", "y"]),
        (("a", "b", "c"), (), ["x", "y"]),
        (("a", "b", "c"), ("x",), ["y"]),
        (("a", "b", "c", "x"), (), ["y", "z"]),
        (("a", "b", "x", "z"), (), ["c", "w"]),  # q still waits for y
        (("a", "b", "c", "x", "y", "z"), (), ["w", "q"]),
        (("a", "b", "c", "x", "y", "z"), ("w", "q"), []),
        (("a", "b", "c", "x", "y", "z", "w", "q"), (), []),
        # done in any order, even if an upstream step is not (a cancelled run resumed)
        (("z",), (), ["a", "b", "c"]),
        # names outside the graph change nothing
        (("nope",), ("also-nope",), ["a", "b", "c"]),
    ],
    ids=lambda v: ",".join(v) if isinstance(v, tuple) else None,
)
def test_ready_when_these_are_done(done, started, expected):
    assert dag.ready(GRAPH, set(done), set(started)) == expected


def test_ready_keeps_declaration_order_not_completion_order():
    graph = dag.of(["late", "early", "join"], {"join": ["late", "early"]})
    assert dag.ready(graph, {"early"}) == ["late"]
    assert dag.ready(graph, ["early", "late"]) == ["join"]


@pytest.mark.parametrize(
    ("roots", "expected"),
    [
        (["a"], {"a", "x", "z", "w", "q"}),
        (["c"], {"c", "y", "q"}),
        (["z"], {"z", "w", "q"}),
        (["w", "q"], {"w", "q"}),
        ([], set()),
    ],
)
def test_downstream(roots, expected):
    assert dag.downstream(GRAPH, roots) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a", set()),
        ("x", {"a", "b"}),
        ("w", {"a", "b", "x", "z"}),
        ("q", {"a", "b", "c", "x", "y", "z"}),
    ],
)
def test_upstream(name, expected):
    assert dag.upstream(GRAPH, name) == expected


def test_roots_and_dependents():
    assert GRAPH.roots() == ["a", "b", "c"]
    assert GRAPH.dependents["b"] == ("x", "y")
    assert GRAPH.dependents["q"] == ()


def test_build_defaults_to_the_step_before_and_keeps_explicit_roots():
    spec = workflow(
        [
            {"name": "one", "container": {"image": "x"}},
            {"name": "two", "container": {"image": "x"}},
            {"name": "three", "dependsOn": [], "container": {"image": "x"}},
            {"name": "four", "dependsOn": ["one", "one", "three"], "container": {"image": "x"}},
        ]
    )
    graph, errors = dag.build(spec)
    assert errors == []
    assert graph.deps == {"one": (), "two": ("one",), "three": (), "four": ("one", "three")}
    assert dag.ready(graph, ()) == ["one", "three"]


@pytest.mark.parametrize(
    ("steps", "path", "fragment"),
    [
        (
            [("a", ["b"]), ("b", ["a"])],
            "spec.steps[0].dependsOn",
            "dependency cycle: a -> b -> a",
        ),
        (
            [("a", []), ("b", ["a", "d"]), ("c", ["b"]), ("d", ["c"])],
            "spec.steps[1].dependsOn",
            "dependency cycle: b -> d -> c -> b",
        ),
        ([("a", ["a"])], "spec.steps[0].dependsOn[0]", "cannot depend on itself"),
        (
            [("a", []), ("b", ["zz"])],
            "spec.steps[1].dependsOn[0]",
            "unknown step 'zz'; must be one of: a, b",
        ),
    ],
)
def test_build_reports_bad_dependencies_with_field_paths(steps, path, fragment):
    spec = workflow([{"name": n, "dependsOn": d, "container": {"image": "x"}} for n, d in steps])
    _, errors = dag.build(spec)
    assert [(e.path, fragment in e.message) for e in errors] == [(path, True)]


def test_find_cycle_is_none_for_a_dag():
    assert dag.find_cycle(GRAPH) is None


def test_a_graph_with_an_unknown_dependency_still_draws():
    spec = workflow(
        [
            {"name": "a", "container": {"image": "x"}},
            {"name": "b", "dependsOn": ["a", "ghost"], "container": {"image": "x"}},
        ]
    )
    graph, errors = dag.build(spec)
    assert len(errors) == 1
    assert graph.deps["b"] == ("a",)
    assert dag.ready(graph, {"a"}) == ["b"]


def test_all_parents_skipped_and_reverse_completion_order():
    skipped = {"x", "y"}.__contains__
    assert dag.skipped_because_all_parents_skipped(GRAPH, "z", skipped)
    assert not dag.skipped_because_all_parents_skipped(GRAPH, "q", skipped)
    assert not dag.skipped_because_all_parents_skipped(GRAPH, "a", skipped)  # a root runs
    finished = [("a", (3, 0)), ("b", (1, 1)), ("c", (3, 2))]
    assert [n for n, _ in dag.reverse_completion_order(finished, lambda f: f[1])] == ["c", "a", "b"]

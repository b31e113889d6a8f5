"""Memoization: a success is kept under its cache key and reused, with where it came from,
by later attempts with the same key; keys, ages and failures decide what is reused."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from braid.api.errors import InvalidSpecError
from braid.api.run import RunPhase, StepPhase
from braid.engine.actions import CacheEntry, StartAttempt
from braid.engine.compile import compile_plan
from braid.engine.simulate import EPOCH, Outcome, simulate
from tests.conftest import ok, workflow


def spec(**cache: Any):
    return workflow(
        [
            {
                "name": "fetch",
                "cache": {"key": "'fetch:' + params.url", **cache},
                "container": {"image": "x", "args": ["${{ params.url }}"]},
            },
            {
                "name": "use",
                "container": {"image": "x", "args": ["${{ steps.fetch.outputs.body }}"]},
            },
        ],
        params=[{"name": "url", "default": "a"}],
    )


def fetcher(started: list[StartAttempt]):
    def script(a: StartAttempt) -> Outcome:
        started.append(a)
        assert a.container is not None
        return ok({"body": f"page {a.container.args[0]}"}, seconds=5)

    return script


def test_a_second_run_with_the_same_key_reuses_the_outputs_and_says_from_where():
    cache: dict[str, CacheEntry] = {}
    started: list[StartAttempt] = []
    first = simulate(spec(), fetcher(started), cache=cache, run_name="r1")
    assert first.step("fetch").reason == "Succeeded"
    second = simulate(spec(), fetcher(started), cache=cache, run_name="r2")
    assert second.status.phase == RunPhase.SUCCEEDED
    fetch = second.step("fetch")
    assert (fetch.phase, fetch.reason, fetch.attempts) == (StepPhase.SUCCEEDED, "Cached", 0)
    assert fetch.outputs == {"body": "page a"}
    assert fetch.message.startswith("cached: the outputs of fetch in run r1 at ")
    assert [a.labels.step for a in started] == ["fetch", "use", "use"]  # fetch ran once
    assert second.end == EPOCH + timedelta(seconds=5)  # only `use` took time
    # another key runs again
    simulate(spec(), fetcher(started), cache=cache, params={"url": "b"}, run_name="r3")
    assert [a.labels.step for a in started].count("fetch") == 2


def test_an_entry_older_than_max_age_is_not_reused():
    cache: dict[str, CacheEntry] = {}
    started: list[StartAttempt] = []
    simulate(spec(maxAgeSeconds=60), fetcher(started), cache=cache, run_name="r1")
    later = EPOCH + timedelta(seconds=5 + 61)  # the entry is from when fetch ended, at 5 s
    r = simulate(spec(maxAgeSeconds=60), fetcher(started), cache=cache, run_name="r2", start=later)
    assert r.step("fetch").reason == "Succeeded"
    assert [a.labels.step for a in started].count("fetch") == 2


def test_failures_are_not_cached_and_a_key_that_cannot_be_computed_fails_the_step():
    cache: dict[str, CacheEntry] = {}
    simulate(spec(), lambda a: Outcome(exit_code=1), cache=cache)
    assert cache == {}
    bad = workflow(
        [{"name": "fetch", "cache": {"key": "params.nope.x"}, "container": {"image": "x"}}],
        params=[{"name": "nope", "default": 1}],
    )
    r = simulate(bad, lambda a: ok(), cache=cache)
    fetch = r.step("fetch")
    assert (fetch.phase, fetch.reason) == (StepPhase.FAILED, "ExpressionError")
    assert "spec.steps[0].cache.key" in fetch.message


def test_fan_out_items_are_cached_one_by_one():
    wf = workflow(
        [
            {
                "name": "work",
                "cache": {"key": "'work:' + string(item)"},
                "fanOut": {"itemsExpression": "params.items", "container": {"image": "x"}},
            }
        ],
        params=[{"name": "items", "default": [1, 2]}],
    )
    cache: dict[str, CacheEntry] = {}
    started: list[StartAttempt] = []
    simulate(wf, lambda a: (started.append(a), ok({"i": a.labels.item}))[1], cache=cache)
    r = simulate(
        wf,
        lambda a: (started.append(a), ok({"i": a.labels.item}))[1],
        cache=cache,
        params={"items": [2, 3, 1]},
        run_name="r2",
    )
    assert len(started) == 3  # 1 and 2 once each, then only 3
    work = r.step("work")
    assert [i.reason for i in sorted(work.items, key=lambda i: i.index)] == [
        "Cached",
        "Succeeded",
        "Cached",
    ]


@pytest.mark.parametrize(
    ("step", "path"),
    [
        ({"name": "g", "approval": {}, "cache": {"key": "1"}}, "spec.steps[0].cache"),
        (
            {
                "name": "l",
                "cache": {"key": "1"},
                "loop": {
                    "maxIterations": 1,
                    "until": "true",
                    "steps": [{"name": "b", "container": {"image": "x"}}],
                },
            },
            "spec.steps[0].cache",
        ),
    ],
)
def test_lint_refuses_a_cache_on_what_cannot_be_cached(step, path):
    with pytest.raises(InvalidSpecError) as err:
        compile_plan(workflow([step]))
    assert path in {e.path for e in err.value.errors}

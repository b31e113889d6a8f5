"""Adaptive routing (engine/routing.py): each attempt of a routed llm or webhook call goes to
one candidate, chosen from statistics shared by every run routing with the same key."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from braid.api.errors import InvalidSpecError
from braid.api.run import RunPhase, StepPhase, WorkflowRunStatus
from braid.engine import AttemptResult, Observations, RunState
from braid.engine.actions import HTTPResponse, StartAttempt
from braid.engine.breakers import BreakerBoard
from braid.engine.compile import compile_plan
from braid.engine.simulate import EPOCH, Outcome, simulate
from tests.conftest import workflow
from tests.model_server import reply

KEY = {"valueFrom": {"secretKeyRef": {"name": "k", "key": "a"}}}


def routed(
    strategy: str = "Ordered",
    candidates: list[dict[str, Any]] | None = None,
    budget: dict[str, Any] | None = None,
    **llm: Any,
):
    return workflow(
        [
            {
                "name": "ask",
                "retry": {"limit": 3, "backoff": {"initialDelaySeconds": 0}},
                "llm": {
                    "endpoint": {"baseURL": "http://main/v1", "apiKey": KEY},
                    "model": "m",
                    "messages": [{"role": "user", "content": "hi"}],
                    "candidates": candidates
                    or [
                        {"name": "a", "model": "model-a"},
                        {
                            "name": "b",
                            "endpoint": {"baseURL": "http://other/v1"},
                            "model": "model-b",
                        },
                    ],
                    "routing": {"key": "ask", "strategy": strategy, "failureThreshold": 2},
                    **llm,
                },
            }
        ],
        **({"budget": budget} if budget else {}),
    )


def models(healthy: dict[str, float], seen: list[StartAttempt]):
    """Each model answers after its latency, or fails (HTTP 503) when it is not healthy."""

    def script(a: StartAttempt) -> Outcome:
        seen.append(a)
        assert a.webhook is not None
        model = a.webhook.body["model"]
        if model not in healthy:
            return Outcome(response=HTTPResponse(503, {}, {"error": {"message": "down"}}))
        body = reply("ok", model=model, prompt_tokens=100, completion_tokens=50)
        return Outcome(seconds=healthy[model], response=HTTPResponse(200, {}, body))

    return script


def test_ordered_fails_over_to_the_next_candidate_with_its_own_url_and_key():
    seen: list[StartAttempt] = []
    r = simulate(routed(), models({"model-b": 1}, seen))
    assert r.status.phase == RunPhase.SUCCEEDED
    first, second = seen
    assert (first.candidate, first.webhook.url) == ("a", "http://main/v1/chat/completions")
    assert first.webhook.headers["authorization"].value_from.secret_key_ref.name == "k"
    assert (second.candidate, second.webhook.url) == ("b", "http://other/v1/chat/completions")
    assert "authorization" not in second.webhook.headers  # b names an endpoint without a key
    route = r.step("ask").route
    assert (route.candidate, route.failed) == ("b", ["a"])
    assert route.reason == "Ordered: first available in order; passed over a (failed here)"


def test_a_candidates_breaker_is_shared_by_every_run_and_opens_per_candidate():
    board = BreakerBoard()
    seen: list[StartAttempt] = []
    for i in range(3):
        simulate(routed(), models({"model-b": 1}, seen), breakers=board, run_name=f"r{i}")
    # runs 1 and 2 tried a first; its breaker opened after two failures, run 3 went to b
    assert [a.candidate for a in seen] == ["a", "b", "a", "b", "b"]
    assert board.get("ask/a").state == "Open"
    assert board.get("ask/b").state == "Closed"
    assert board.routes["ask/b"].selected == 3


def test_every_breaker_open_fails_fast_naming_them():
    board = BreakerBoard()
    seen: list[StartAttempt] = []
    first = simulate(routed(), models({}, seen), breakers=board, run_name="r1")
    assert first.step("ask").reason == "ModelCallFailed"
    assert [a.candidate for a in seen] == ["a", "b", "a", "b"]  # two failures each: both open
    r = simulate(routed(), models({}, seen), breakers=board, run_name="r2")
    assert r.status.phase == RunPhase.FAILED
    step = r.step("ask")
    assert step.reason == "CircuitOpen"
    assert "every candidate's circuit breaker is open (a, b)" in step.message
    assert len(seen) == 4  # the second run called nothing


def test_lowest_latency_measures_each_then_prefers_the_fastest():
    board = BreakerBoard()
    seen: list[StartAttempt] = []
    for _ in range(4):
        simulate(
            routed("LowestLatency"), models({"model-a": 3, "model-b": 1}, seen), breakers=board
        )
    assert [a.candidate for a in seen] == ["a", "b", "b", "b"]
    stats = board.routes
    assert stats["ask/a"].latency == pytest.approx(3)
    assert stats["ask/b"].latency == pytest.approx(1)


def test_highest_success_prefers_the_candidate_that_succeeds():
    board = BreakerBoard()
    seen: list[StartAttempt] = []
    for _ in range(4):
        simulate(routed("HighestSuccess"), models({"model-b": 1}, seen), breakers=board)
    # a is tried first (unmeasured), fails, b succeeds; from then on b is chosen first
    assert [a.candidate for a in seen[:2]] == ["a", "b"]
    assert seen[2].candidate == "b"
    assert board.routes["ask/b"].success == 1.0
    assert board.routes["ask/a"].success == 0.0


def test_cheapest_picks_the_lowest_price_and_the_budget_counts_the_cost():
    candidates = [
        {"name": "big", "model": "model-a", "costPerInputToken": 0.01, "costPerOutputToken": 0.03},
        {"name": "small", "model": "model-b", "costPerInputToken": 0.001},
    ]
    seen: list[StartAttempt] = []
    spec = routed("Cheapest", candidates, budget={"cost": 0.05, "onExceeded": "Fail"})
    r = simulate(spec, models({"model-a": 1, "model-b": 1}, seen))
    assert seen[0].candidate == "small"
    assert r.step("ask").outputs["usage"]["cost"] == pytest.approx(100 * 0.001)
    # 0.1 is over the run's cost budget of 0.05: the reported usage alone stops the run
    assert r.status.phase == RunPhase.FAILED
    assert r.status.condition("Succeeded").reason == "BudgetExceeded"
    assert r.status.usage.cost == pytest.approx(0.1)


def test_a_retry_after_every_candidate_failed_starts_again_from_the_first():
    seen: list[StartAttempt] = []
    calls = {"n": 0}

    def flaky(a: StartAttempt) -> Outcome:
        calls["n"] += 1
        if calls["n"] <= 2:
            return Outcome(response=HTTPResponse(500, {}, "boom"))
        return models({"model-a": 1, "model-b": 1}, seen)(a)

    r = simulate(routed(), flaky, breakers=BreakerBoard())
    assert r.status.phase == RunPhase.SUCCEEDED
    assert r.step("ask").route.candidate == "a"
    assert r.step("ask").attempts == 3


def test_a_resumed_attempt_is_judged_against_the_candidate_it_went_to():
    spec = routed()
    board = BreakerBoard()
    state = RunState.load("r", spec, WorkflowRunStatus(), {})
    d = state.decide(Observations(breakers=board), EPOCH)
    (a,) = [x for x in d.actions if isinstance(x, StartAttempt)]
    saved = WorkflowRunStatus.model_validate_json(state.status.model_dump_json(by_alias=True))
    resumed = RunState.load("r", spec, saved, {})
    ok = AttemptResult(a.name, response=HTTPResponse(200, {}, reply("fine")))
    resumed.decide(Observations(results=[ok], breakers=board), EPOCH + timedelta(seconds=2))
    step = resumed.status.steps[0]
    assert step.phase == StepPhase.SUCCEEDED
    assert step.route.candidate == "a"
    assert board.routes["ask/a"].latency == pytest.approx(2)


@pytest.mark.parametrize(
    ("edit", "path", "says"),
    [
        ({"routing": None}, "spec.steps[0].llm.routing", "required with candidates"),
        (
            {"candidates": [{"name": "a", "url": "http://x"}]},
            "spec.steps[0].llm.candidates[0].url",
            "not url",
        ),
        (
            {"candidates": [{"name": "a"}, {"name": "a"}]},
            "spec.steps[0].llm.candidates[1].name",
            "duplicate candidate 'a'",
        ),
        (
            {"routing": {"key": "k", "strategy": "Cheapest"}},
            "spec.steps[0].llm.routing.strategy",
            "Cheapest needs costs",
        ),
    ],
)
def test_lint_names_the_field_of_a_bad_route(edit, path, says):
    spec = routed().wire()
    llm = spec["steps"][0]["llm"]
    llm.update(edit)
    for k in [k for k, v in llm.items() if v is None]:
        del llm[k]
    with pytest.raises(InvalidSpecError) as err:
        compile_plan(workflow(spec["steps"]))
    found = {e.path: e.message for e in err.value.errors}
    assert path in found, found
    assert says in found[path]


def test_a_webhook_candidate_needs_a_url():
    step = {
        "name": "call",
        "webhook": {
            "url": "http://main",
            "candidates": [{"name": "a", "model": "m"}],
            "routing": {"key": "k"},
        },
    }
    with pytest.raises(InvalidSpecError) as err:
        compile_plan(workflow([step]))
    found = {e.path: e.message for e in err.value.errors}
    assert "url" in found["spec.steps[0].webhook.candidates[0].url"]
    assert "url and costPerCall only" in found["spec.steps[0].webhook.candidates[0].model"]

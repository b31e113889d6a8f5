"""Tool-calling ReAct with the engine's own primitives: a loop whose body is an llm step
proposing tool calls, then a fan-out over them whose cases pick the tool by name, the
observations carried into the next iteration's messages through ``iterations``."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from braid.api.errors import InvalidSpecError
from braid.api.run import RunPhase, StepPhase, WorkflowRunStatus
from braid.engine import AttemptResult, Observations, RunState
from braid.engine.actions import HTTPResponse, StartAttempt
from braid.engine.compile import compile_plan
from braid.engine.simulate import EPOCH, Outcome, simulate
from tests.conftest import ok, workflow
from tests.model_server import reply

MESSAGES = (
    "${{ [{'role': 'user', 'content': params.question}] + "
    "iterations.map(it, [it.think.message] + it.act.items.filter(o, o != null)).flatten() }}"
)
TOOLS = [
    {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
    for n in ("search", "calc")
]


def react(cases: list[dict[str, Any]] | None = None, **act: Any) -> dict[str, Any]:
    cases = cases or [
        {
            "name": "search",
            "when": "item.name == 'search'",
            "webhook": {
                "url": "http://tools/search",
                "body": {"q": "${{ item.arguments.q }}"},
                "output": "{'role': 'tool', 'tool_call_id': item.id, 'content': response.body}",
            },
        },
        {
            "name": "calc",
            "when": "item.name == 'calc'",
            "container": {
                "image": "calc",
                "args": ["${{ item.arguments.expr }}", "${{ item.id }}"],
            },
        },
    ]
    return {
        "name": "agent",
        "loop": {
            "maxIterations": 4,
            "until": "size(steps.think.outputs.toolCalls) == 0",
            "steps": [
                {
                    "name": "think",
                    "llm": {
                        "endpoint": {"baseURL": "http://model/v1"},
                        "model": "m",
                        "messages": MESSAGES,
                        "tools": TOOLS,
                    },
                },
                {
                    "name": "act",
                    "fanOut": {
                        "itemsExpression": "steps.think.outputs.toolCalls",
                        "cases": cases,
                        **act,
                    },
                },
            ],
        },
    }


def spec(**act: Any):
    return workflow(
        [react(**act)],
        params=[{"name": "question", "default": "tide at noon, times two?"}],
        outputs={"answer": "steps.agent.outputs.last.think.content"},
    )


def model_then_tools(turns: list[dict[str, Any]], requests: list[Any]):
    """The model's replies in turn; search answers 'high', calc echoes its tool message."""

    def script(a: StartAttempt) -> Outcome:
        if a.webhook is not None and a.webhook.url.startswith("http://model"):
            requests.append(a.webhook.body)
            return Outcome(response=HTTPResponse(200, {}, turns[len(requests) - 1]))
        if a.webhook is not None:
            return Outcome(response=HTTPResponse(200, {}, "high"))
        assert a.container is not None
        expr, call = a.container.args
        said = {"role": "tool", "tool_call_id": call, "content": f"{expr}=4"}
        return ok(said)

    return script


def test_a_react_loop_runs_each_tool_call_by_name_and_feeds_the_observations_back():
    requests: list[Any] = []
    turns = [
        reply(None, [("search", {"q": "tide"}), ("calc", {"expr": "2*2"})]),
        reply("High tide, and 4."),
    ]
    r = simulate(spec(), model_then_tools(turns, requests))
    assert r.status.phase == RunPhase.SUCCEEDED, r.status.conditions
    assert r.status.outputs == {"answer": "High tide, and 4."}
    # the second call carries the first reply and both observations, in tool-call order
    second = requests[1]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "tool", "tool"]
    assert second[1]["tool_calls"][0]["function"] == {
        "name": "search",
        "arguments": json.dumps({"q": "tide"}),
    }
    assert second[2] == {"role": "tool", "tool_call_id": "call_0", "content": "high"}
    assert second[3] == {"role": "tool", "tool_call_id": "call_1", "content": "2*2=4"}
    agent = r.step("agent")
    assert agent.outputs["count"] == 2
    act = agent.iterations[0].steps[1]
    assert (act.phase, act.item_count) == (StepPhase.SUCCEEDED, 2)
    # the tools ran as what their cases say: a webhook and a container, named by iteration
    names = sorted(a.name for a in r.started if a.labels.body_step == "act")
    assert names == ["run-agent--0-act--0-1", "run-agent--0-act--1-1"]
    assert agent.iterations[1].steps[1].item_count == 0  # no tool calls: nothing to run


def test_a_tool_no_case_runs_fails_its_item_without_retrying_and_names_the_cases():
    requests: list[Any] = []
    turns = [reply(None, [("shell", {"cmd": "rm -rf /"})])]
    r = simulate(
        workflow(
            [{**react(), "retry": {"limit": 3}}],
            params=[{"name": "question", "default": "q"}],
        ),
        model_then_tools(turns, requests),
    )
    item = r.step("agent").iterations[0].steps[1].items[0]
    assert (item.phase, item.reason, item.attempts) == (StepPhase.FAILED, "NoCaseMatched", 1)
    assert "search: item.name == 'search'" in item.message
    assert r.status.phase == RunPhase.FAILED
    assert "iteration 0 step act failed" in r.step("agent").message


def test_a_tool_failure_can_be_an_observation_with_a_threshold():
    requests: list[Any] = []
    turns = [reply(None, [("search", {"q": "a"}), ("calc", {"expr": "1/0"})]), reply("done")]

    def script(a: StartAttempt) -> Outcome:
        if a.container is not None:
            return Outcome(exit_code=1)
        return model_then_tools(turns, requests)(a)

    r = simulate(spec(successThreshold={"count": 0}, onThresholdReached="WaitForAll"), script)
    assert r.status.phase == RunPhase.SUCCEEDED
    act = r.step("agent").iterations[0].steps[1]
    assert act.outputs["items"][1] is None  # the failed tool gathers as null ...
    second = requests[1]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "tool"]  # ... filtered out


def test_a_resumed_run_picks_the_same_case_for_a_running_tool():
    s = spec()
    state = RunState.load("r", s, WorkflowRunStatus(), {"question": "q"})
    d = state.decide(Observations(), EPOCH)
    (think,) = [a for a in d.actions if isinstance(a, StartAttempt)]
    body = reply(None, [("calc", {"expr": "1+1"}), ("search", {"q": "x"})])
    result = AttemptResult(think.name, response=HTTPResponse(200, {}, body))
    d = state.decide(Observations(results=[result]), EPOCH)
    started = {a.name: a for a in d.actions if isinstance(a, StartAttempt)}
    assert started["r-agent--0-act--0-1"].container is not None
    assert started["r-agent--0-act--1-1"].webhook is not None
    saved = WorkflowRunStatus.model_validate_json(state.status.model_dump_json(by_alias=True))
    resumed = RunState.load("r", s, saved, {"question": "q"})
    later = EPOCH + timedelta(seconds=1)
    d = resumed.decide(
        Observations(
            results=[
                AttemptResult("r-agent--0-act--0-1", exit_code=0, output='{"content": "2"}'),
                AttemptResult("r-agent--0-act--1-1", response=HTTPResponse(200, {}, "found")),
            ]
        ),
        later,
    )
    act = resumed.status.steps[0].iterations[0].steps[1]
    assert act.phase == StepPhase.SUCCEEDED
    assert act.outputs["items"][1]["content"] == "found"  # judged as the webhook it is
    (nxt,) = [a for a in d.actions if isinstance(a, StartAttempt)]
    assert nxt.name == "r-agent--1-think-1"


@pytest.mark.parametrize(
    ("edit", "path", "says"),
    [
        (
            {"itemsFrom": "steps.think.artifacts['x']", "itemsExpression": None},
            "spec.steps[0].loop.steps[1].fanOut.itemsFrom",
            "not itemsFrom",
        ),
        (
            {"cases": [{"name": "a", "when": "item.nme == 1", "container": {"image": "x"}}] * 2},
            "spec.steps[0].loop.steps[1].fanOut.cases[1].name",
            "duplicate case 'a'",
        ),
        (
            {"cases": [{"name": "a", "when": "itm.name == 'a'", "container": {"image": "x"}}]},
            "spec.steps[0].loop.steps[1].fanOut.cases[0].when",
            "itm",
        ),
    ],
)
def test_lint_names_the_field_of_a_bad_body_fan_out(edit, path, says):
    step = react()
    fan = step["loop"]["steps"][1]["fanOut"]
    fan.update(edit)
    for k in [k for k, v in fan.items() if v is None]:
        del fan[k]
    with pytest.raises(InvalidSpecError) as err:
        compile_plan(workflow([step]))
    found = {e.path: e.message for e in err.value.errors}
    assert path in found, found
    assert says in found[path]

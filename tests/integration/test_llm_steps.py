"""llm steps run by `braid run`'s engine and drivers against a real OpenAI-compatible server on
loopback: the key from a Secret, tools and tool calls, a schema-invalid reply retried, 429
with Retry-After retried inside the attempt, usage counted by the budget, the request and the
reply kept as artifacts with the key masked."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from braid.api.run import RunPhase
from braid.api.workflow import WorkflowSpec
from braid.local.data import LocalData
from braid.local.runner import LocalRun
from tests.model_server import ModelServer, model_server, reply

KEY_REF = {"valueFrom": {"secretKeyRef": {"name": "openai", "key": "api-key"}}}


def llm(server: ModelServer, **extra: Any) -> dict[str, Any]:
    return {
        "endpoint": {"baseURL": server.url, "apiKey": KEY_REF},
        "model": "test-model",
        "messages": [{"role": "user", "content": "classify: ${{ params.text }}"}],
        **extra,
    }


def run(server: ModelServer, spec: dict[str, Any], tmp_path: Path, key: str | None = None):
    data = LocalData(objects={("Secret", "openai"): {"api-key": key or server.key}}, environ={})
    local = LocalRun(
        "r",
        WorkflowSpec.model_validate(spec),
        {"text": "the site is down"},
        workdir=tmp_path / "work",
        data=data,
        artifacts_dir=tmp_path / "store",
    )
    return asyncio.run(local.execute())


def test_an_llm_step_calls_the_model_with_its_key_and_keeps_the_exchange(tmp_path: Path):
    tools = [{"type": "function", "function": {"name": "page", "parameters": {"type": "object"}}}]
    with model_server() as server:
        server.then(reply("urgent", [("page", {"team": "sre"})], prompt_tokens=12))
        status = run(
            server,
            {
                "params": [{"name": "text"}],
                "steps": [{"name": "ask", "llm": llm(server, tools=tools, temperature=0)}],
                "outputs": {"label": "steps.ask.outputs.content"},
            },
            tmp_path,
        )
    assert status.phase == RunPhase.SUCCEEDED, status
    request = server.requests[0]
    assert request["auth"] == f"Bearer {server.key}"
    assert request["body"]["messages"] == [
        {"role": "user", "content": "classify: the site is down"}
    ]
    assert request["body"]["tools"] == tools
    step = status.steps[0]
    assert step.outputs["toolCalls"] == [
        {"id": "call_0", "name": "page", "arguments": {"team": "sre"}}
    ]
    assert step.outputs["usage"] == {"inputTokens": 12, "outputTokens": 5, "tokens": 17}
    assert status.usage is not None
    assert status.usage.tokens == 17
    assert set(step.artifacts or {}) == {"request.json", "response.json"}
    kept = Path((step.artifacts or {})["request.json"].uri.removeprefix("file://")).read_text()
    assert json.loads(kept)["messages"][0]["content"] == "classify: the site is down"
    assert server.key not in json.dumps(status.model_dump(mode="json")) + kept


def test_a_schema_invalid_reply_fails_invalid_response_and_is_retried(tmp_path: Path):
    schema = {
        "type": "object",
        "properties": {"label": {"enum": ["urgent", "normal"]}},
        "required": ["label"],
    }
    with model_server() as server:
        server.then(reply('{"label": "panic"}')).then(reply('{"label": "urgent"}'))
        status = run(
            server,
            {
                "params": [{"name": "text"}],
                "steps": [
                    {
                        "name": "ask",
                        "retry": {"limit": 2, "backoff": {"initialDelaySeconds": 0}},
                        "llm": llm(server, responseSchema=schema),
                    }
                ],
            },
            tmp_path,
        )
    step = status.steps[0]
    assert status.phase == RunPhase.SUCCEEDED, status
    assert step.attempts == 2
    assert step.outputs["json"] == {"label": "urgent"}
    assert server.requests[0]["body"]["response_format"]["json_schema"]["schema"] == schema
    history = [h.message for h in status.history or []]
    assert any(
        "InvalidResponse" in m and "does not match responseSchema at label" in m for m in history
    )


def test_429_with_retry_after_is_retried_inside_the_attempt(tmp_path: Path):
    with model_server() as server:
        server.then({"error": {"message": "slow down"}}, 429, retry_after="0.2")
        server.then(reply("ok"))
        status = run(
            server,
            {"params": [{"name": "text"}], "steps": [{"name": "ask", "llm": llm(server)}]},
            tmp_path,
        )
    assert status.phase == RunPhase.SUCCEEDED, status
    assert status.steps[0].attempts == 1
    assert len(server.requests) == 2


def test_a_wrong_key_is_a_clear_failure_and_the_usage_counts_against_the_budget(tmp_path: Path):
    with model_server() as server:
        spec = {"params": [{"name": "text"}], "steps": [{"name": "ask", "llm": llm(server)}]}
        status = run(server, spec, tmp_path, key="sk-another-key-9999")
        step = status.steps[0]
        assert (status.phase, step.reason) == (RunPhase.FAILED, "ModelCallFailed")
        assert "HTTP 401: Incorrect API key provided" in (step.message or "")
    with model_server() as server:
        server.then(reply("a", prompt_tokens=900, completion_tokens=200)).then(reply("b"))
        status = run(
            server,
            {
                "params": [{"name": "text"}],
                "budget": {"tokens": 1000, "onExceeded": "Fail"},
                "steps": [
                    {"name": "first", "llm": llm(server)},
                    {"name": "second", "llm": llm(server)},
                ],
            },
            tmp_path,
        )
    assert status.phase == RunPhase.FAILED
    cond = status.condition("Succeeded")
    assert cond is not None
    assert cond.reason == "BudgetExceeded"
    assert len(server.requests) == 1  # the second call was never made

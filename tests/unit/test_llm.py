"""Model replies judged (engine/llm.py), and llm steps compiled into the call they are."""

from __future__ import annotations

import pytest

from braid.api.errors import InvalidSpecError
from braid.api.run import Artifact
from braid.api.workflow import LLMSpec, SecretValue
from braid.engine.compile import compile_plan
from braid.engine.llm import judge_reply
from tests.conftest import workflow
from tests.model_server import reply

SPEC = LLMSpec.model_validate(
    {
        "endpoint": {"baseURL": "http://m/v1"},
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
    }
)
SCHEMA = {"type": "object", "properties": {"label": {"enum": ["a", "b"]}}, "required": ["label"]}


def test_a_reply_becomes_content_tool_calls_usage_and_the_finish_reason():
    outputs, failure, _ = judge_reply(
        SPEC, 200, reply("thinking", [("search", {"q": "tides"})], prompt_tokens=7), None
    )
    assert failure is None
    assert outputs == {
        "content": "thinking",
        "toolCalls": [{"id": "call_0", "name": "search", "arguments": {"q": "tides"}}],
        "message": {
            "role": "assistant",
            "content": "thinking",
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "search", "arguments": '{"q": "tides"}'},
                }
            ],
        },
        "finishReason": "tool_calls",
        "model": "test-model",
        "usage": {"inputTokens": 7, "outputTokens": 5, "tokens": 12},
    }


@pytest.mark.parametrize(
    ("status", "body", "reason", "message"),
    [
        (
            401,
            {"error": {"message": "Incorrect API key"}},
            "ModelCallFailed",
            "HTTP 401: Incorrect API key",
        ),
        (500, "upstream down", "ModelCallFailed", "HTTP 500: upstream down"),
        (200, {"choices": []}, "InvalidResponse", "no choices"),
        (200, {"choices": [{"message": "x"}]}, "InvalidResponse", "no message"),
        (200, {"choices": [{"message": {"content": 3}}]}, "InvalidResponse", "not text"),
        (
            200,
            {
                "choices": [
                    {
                        "message": {
                            "content": None,
                            "tool_calls": [{"function": {"name": "f", "arguments": "{bad"}}],
                        }
                    }
                ]
            },
            "InvalidResponse",
            "tool_calls[0] (f): arguments are not JSON",
        ),
    ],
)
def test_failed_calls_and_malformed_replies_say_why(status, body, reason, message):
    outputs, failure, said = judge_reply(SPEC, status, body, None)
    assert outputs is None
    assert failure == reason
    assert message in said


def test_a_response_schema_is_enforced():
    spec = SPEC.model_copy(update={"response_schema": SCHEMA})
    outputs, failure, _ = judge_reply(spec, 200, reply('```json\n{"label": "a"}\n```'), None)
    assert failure is None
    assert outputs["json"] == {"label": "a"}
    _, failure, said = judge_reply(spec, 200, reply('{"label": "c"}'), None)
    assert failure == "InvalidResponse"
    assert "does not match responseSchema at label" in said
    _, failure, said = judge_reply(spec, 200, reply("sure! the label is a"), None)
    assert "not JSON" in said


def test_a_long_reply_keeps_its_start_and_points_at_the_artifact():
    long = "x" * 20_000
    kept = {"response.json": Artifact(size=21_000, sha256="0" * 64, uri="s3://b/k/response.json")}
    outputs, failure, _ = judge_reply(SPEC, 200, reply(long), kept)
    assert failure is None
    assert outputs["contentTruncated"] is True
    assert outputs["contentArtifact"] == "response.json"
    assert len(outputs["content"]) == 1500
    _, failure, said = judge_reply(SPEC, 200, reply(long), None)
    assert failure == "OutputTooLarge"
    assert "configure an artifact repository" in said


def test_an_llm_step_is_the_chat_completions_call_with_a_bearer_key_from_its_secret():
    plan = compile_plan(
        workflow(
            [
                {
                    "name": "ask",
                    "llm": {
                        "endpoint": {
                            "baseURL": "${{ params.base }}/",
                            "apiKey": {
                                "valueFrom": {"secretKeyRef": {"name": "openai", "key": "key"}}
                            },
                        },
                        "model": "gpt-test",
                        "messages": [{"role": "user", "content": "say ${{ params.word }}"}],
                        "tools": [
                            {"type": "function", "function": {"name": "f", "parameters": {}}}
                        ],
                        "responseSchema": SCHEMA,
                        "temperature": 0,
                        "maxTokens": 50,
                    },
                }
            ],
            params=[{"name": "base"}, {"name": "word"}],
        )
    )
    hook = plan.steps["ask"].action.webhook
    assert hook.llm is not None
    assert hook.url.source == "${{ params.base }}/chat/completions"
    auth = dict(hook.headers)["authorization"]
    assert isinstance(auth, SecretValue)
    assert auth.prefix == "Bearer "
    body = hook.spec.body
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA
    assert (body["temperature"], body["max_tokens"], body["model"]) == (0, 50, "gpt-test")
    assert plan.steps["ask"].action.kind == "llm"


def test_errors_in_an_llm_step_name_its_own_fields():
    with pytest.raises(InvalidSpecError) as info:
        compile_plan(
            workflow(
                [
                    {
                        "name": "ask",
                        "llm": {
                            "endpoint": {"baseURL": "http://m/v1"},
                            "model": "m",
                            "messages": [
                                {"role": "user", "content": "${{ steps.nope.outputs.x }}"}
                            ],
                        },
                    }
                ]
            )
        )
    assert "spec.steps[0].llm.messages[0].content" in str(info.value)

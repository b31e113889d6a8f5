"""A model's reply (OpenAI Chat Completions), judged: the step's outputs, or why the attempt
failed. Pure: the driver made the call (as a webhook, with the destination policy, the key
from its Secret and masking) and hands over the status and body.

Outputs: ``content``, ``json`` (the reply parsed and validated against responseSchema),
``toolCalls`` [{id, name, arguments}], ``message`` (the reply as the assistant message to
append to a conversation: a ReAct loop's next ``messages``), ``finishReason``, ``model`` and
``usage``
{inputTokens, outputTokens, tokens}, which budgets count like any reported usage. A reply too
large for the 4 KiB outputs keeps a prefix of its content in the outputs and the whole reply
in the attempt's artifact ``response.json`` (where the driver keeps artifacts).
"""

from __future__ import annotations

import json
from typing import Any

from braid.api.reasons import FailureReason
from braid.api.run import Artifact
from braid.api.workflow import LLMSpec
from braid.engine.outputs import MAX_OUTPUT_BYTES, depth_failure

Judged = tuple[dict[str, Any] | None, FailureReason | None, str | None]
KEPT_CONTENT = 1500  # characters of a long reply kept in the outputs
REPLY_ARTIFACT = "response.json"


def judge_reply(  # noqa: PLR0911 - a decision table: one return per way a reply fails
    spec: LLMSpec, status: int, body: Any, artifacts: dict[str, Artifact] | None
) -> Judged:
    if status != 200:
        return None, FailureReason.MODEL_CALL_FAILED, f"HTTP {status}: {_error_of(body)}"
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices:
        return None, FailureReason.INVALID_RESPONSE, "the reply has no choices"
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        return None, FailureReason.INVALID_RESPONSE, "the reply's first choice has no message"
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        return None, FailureReason.INVALID_RESPONSE, "the reply's content is not text"
    calls = _tool_calls(message.get("tool_calls"))
    if isinstance(calls, str):
        return None, FailureReason.INVALID_RESPONSE, calls
    said: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        said["tool_calls"] = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
            }
            for c in calls
        ]
    outputs: dict[str, Any] = {
        "content": content,
        "toolCalls": calls,
        "message": said,
        "finishReason": choice.get("finish_reason"),
        "model": body.get("model") if isinstance(body.get("model"), str) else None,
    }
    usage = _usage(body.get("usage"))
    if usage:
        outputs["usage"] = usage
    if spec.response_schema is not None:
        parsed = _structured(content, spec.response_schema)
        if isinstance(parsed, str):
            return None, FailureReason.INVALID_RESPONSE, parsed
        outputs["json"] = parsed[0]
    return _fitted(outputs, artifacts)


def _error_of(body: Any) -> str:
    """The API's own words: OpenAI-style {error: {message}}, else the body's start."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", ""))[:300]
    text = body if isinstance(body, str) else json.dumps(body)
    return text[:300]


def _tool_calls(raw: Any) -> list[dict[str, Any]] | str:
    if raw is None:
        return []
    if not isinstance(raw, list):
        return "the reply's tool_calls is not a list"
    calls = []
    for i, call in enumerate(raw):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return f"tool_calls[{i}] has no function name"
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                return f"tool_calls[{i}] ({function['name']}): arguments are not JSON"
        calls.append({"id": call.get("id"), "name": function["name"], "arguments": arguments})
    return calls


def _usage(raw: Any) -> dict[str, int]:
    if not isinstance(raw, dict):
        return {}
    usage = {}
    for ours, theirs in (
        ("inputTokens", "prompt_tokens"),
        ("outputTokens", "completion_tokens"),
        ("tokens", "total_tokens"),
    ):
        value = raw.get(theirs)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            usage[ours] = value
    return usage


def _structured(content: str | None, schema: dict[str, Any]) -> tuple[Any] | str:
    """The reply as JSON, valid against the schema: (value,), or why not."""
    text = (content or "").strip()
    if text.startswith("```"):  # some servers fence JSON in markdown
        text = text.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(text)
    except ValueError:
        return f"the reply is not JSON, as responseSchema asks: {text[:120]!r}"
    import jsonschema  # noqa: PLC0415 - loaded when a schema is checked, not at every start

    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(value)
    )
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(the reply)"
        return f"the reply does not match responseSchema at {where}: {error.message[:200]}"
    return (value,)


def _fitted(outputs: dict[str, Any], artifacts: dict[str, Artifact] | None) -> Judged:
    """The outputs within 4 KiB: a long content keeps its start here and the whole reply
    stays in the response.json artifact."""
    deep = depth_failure(outputs)
    if deep is not None:
        return None, deep.failure, deep.message
    if len(json.dumps(outputs).encode()) <= MAX_OUTPUT_BYTES:
        return outputs, None, None
    content = outputs.get("content")
    if isinstance(content, str) and artifacts and REPLY_ARTIFACT in artifacts:
        kept = content[:KEPT_CONTENT]
        outputs = {
            **outputs,
            "content": kept,
            "message": {**outputs["message"], "content": kept},
            "contentTruncated": True,
            "contentArtifact": REPLY_ARTIFACT,
        }
        if len(json.dumps(outputs).encode()) > MAX_OUTPUT_BYTES:
            outputs.pop("json", None)
        if len(json.dumps(outputs).encode()) <= MAX_OUTPUT_BYTES:
            return outputs, None, None
    return (
        None,
        FailureReason.OUTPUT_TOO_LARGE,
        (
            f"the reply's outputs are over {MAX_OUTPUT_BYTES} bytes and no artifact store "
            "keeps the whole reply (configure an artifact repository, or lower maxTokens)"
        ),
    )

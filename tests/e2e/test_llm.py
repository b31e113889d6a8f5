"""llm steps on the real control plane: the operator calls the loopback OpenAI-compatible
server itself (no Pod), with the key from a Secret; usage reaches status.usage; the request
and the reply are kept in the bucket; the key is nowhere in the run, its Events or the log."""

from __future__ import annotations

import json

import yaml

from tests.e2e.conftest import Kube, Operator
from tests.e2e.test_artifacts import artifact_operator  # noqa: F401 - the fixture
from tests.model_server import model_server, reply
from tests.s3 import S3


def test_the_operator_calls_the_model_and_keeps_the_exchange(
    kube: Kube,
    s3: S3,
    artifact_operator: Operator,  # noqa: F811 - the fixture
) -> None:
    with model_server() as server:
        kube.apply(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "openai"},
                    "stringData": {"api-key": server.key},
                }
            )
        )
        schema = {
            "type": "object",
            "properties": {"label": {"type": "string"}},
            "required": ["label"],
        }
        server.then({"error": {"message": "busy"}}, 503, retry_after="0")
        server.then(reply('{"label": "bad"'))  # invalid JSON: retried as InvalidResponse
        server.then(reply('{"label": "urgent"}', prompt_tokens=30, completion_tokens=4))
        name = kube.create(
            yaml.safe_dump(
                {
                    "apiVersion": "braid.dev/v1alpha1",
                    "kind": "WorkflowRun",
                    "metadata": {"generateName": "llm-"},
                    "spec": {
                        "workflow": {
                            "steps": [
                                {
                                    "name": "classify",
                                    "retry": {"limit": 2, "backoff": {"initialDelaySeconds": 0}},
                                    "llm": {
                                        "endpoint": {
                                            "baseURL": server.url,
                                            "apiKey": {
                                                "valueFrom": {
                                                    "secretKeyRef": {
                                                        "name": "openai",
                                                        "key": "api-key",
                                                    }
                                                }
                                            },
                                        },
                                        "model": "test-model",
                                        "messages": [
                                            {"role": "user", "content": "the site is down"}
                                        ],
                                        "responseSchema": schema,
                                    },
                                }
                            ],
                            "outputs": {"label": "steps.classify.outputs.json.label"},
                        }
                    },
                }
            )
        )
        status = kube.wait_finished(name, timeout=120)
    assert status["phase"] == "Succeeded", artifact_operator.log()[-3000:]
    assert status["outputs"] == {"label": "urgent"}
    step = status["steps"][0]
    assert step["attempts"] == 2  # 503 retried inside attempt 1, then its reply was invalid
    assert status["usage"]["tokens"] == 34
    assert [r["auth"] for r in server.requests] == [f"Bearer {server.key}"] * 3
    prefix = f"e2e/{kube.namespace}/{name}/{name}-classify-2/"
    assert s3.keys(prefix) == [f"{prefix}request.json", f"{prefix}response.json"]
    assert set(step["artifacts"]) == {"request.json", "response.json"}
    # no Pod was made for it
    assert not kube.json("get", "pods", "-l", f"braid.dev/run={name}")["items"]
    run = json.dumps(kube.json("get", "workflowrun", name))
    events = json.dumps(
        kube.json("get", "events", "--field-selector", f"involvedObject.name={name}")
    )
    for text in (run, events, artifact_operator.log()):
        assert server.key not in text


def test_the_usage_a_model_reports_exceeds_the_budget_and_stops_the_run(
    kube: Kube, operator: Operator
) -> None:
    """Nobody reports usage by hand: the reply's usage is counted, and the first reply over
    the run's token budget stops it before the next model call."""
    with model_server() as server:
        server.then(reply("a long answer", prompt_tokens=900, completion_tokens=300))
        secret = {"name": "budget-key", "key": "api-key"}
        kube.apply(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": secret["name"]},
                    "stringData": {"api-key": server.key},
                }
            )
        )
        llm = {
            "endpoint": {
                "baseURL": server.url,
                "apiKey": {"valueFrom": {"secretKeyRef": secret}},
            },
            "model": "test-model",
            "messages": [{"role": "user", "content": "write at length"}],
        }
        name = kube.create(
            yaml.safe_dump(
                {
                    "apiVersion": "braid.dev/v1alpha1",
                    "kind": "WorkflowRun",
                    "metadata": {"generateName": "llm-budget-"},
                    "spec": {
                        "workflow": {
                            "budget": {"tokens": 1000, "onExceeded": "Fail"},
                            "steps": [
                                {"name": "draft", "llm": llm},
                                {"name": "polish", "llm": llm},
                            ],
                        }
                    },
                }
            )
        )
        status = kube.wait_finished(name, timeout=120)
    cond = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert (cond["status"], cond["reason"]) == ("False", "BudgetExceeded"), operator.log()[-3000:]
    assert status["usage"]["tokens"] == 1200
    assert status["budget"]["state"] == "Exceeded"
    assert [s["phase"] for s in status["steps"]] == ["Succeeded", "Skipped"]
    assert len(server.requests) == 1  # polish never called the model

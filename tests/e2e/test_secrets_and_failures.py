"""Secrets on the real API server, and failure as a branch driven by the real operator.

Secrets: a Secret and a ConfigMap in the run's namespace; a step Pod reading them through
secretKeyRef, configMapKeyRef, fieldRef and envFrom (the test's executor resolves them as the
kubelet does); a webhook whose header comes from the Secret, against a loopback server that
echoes what it got. Nothing of the value may reach the run object, its Events or the operator's
log. Failures: continueOn, a fan-out that does not fail fast, retry.expression, finally steps
with when/dependsOn reading run.*."""

from __future__ import annotations

import contextlib
import http.server
import json
import sys
import uuid
from collections.abc import Iterator
from typing import ClassVar

import yaml

from tests.e2e.conftest import Executor, Kube, Operator
from tests.loopback import serve

PY = sys.executable


class Echo(http.server.BaseHTTPRequestHandler):
    """A model API that checks the key and, carelessly, says it back."""

    expected = ""
    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        got = str(self.headers.get("authorization"))
        type(self).seen.append(got)
        ok = got == type(self).expected
        payload = json.dumps({"ok": ok, "you-sent": got}).encode()
        self.send_response(200 if ok else 401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def echo(expected: str) -> Iterator[str]:
    Echo.expected, Echo.seen = expected, []
    with serve(Echo) as url:
        yield url


def step(name: str, script: str, **container: object) -> dict:
    return {
        "name": name,
        "container": {"image": "python", "command": [PY, "-c", script], **container},
    }


def steps(status: dict) -> dict[str, dict]:
    return {s["name"]: s for s in status["steps"]}


def secret_ref(name: str, key: str) -> dict:
    return {"valueFrom": {"secretKeyRef": {"name": name, "key": key}}}


def test_secrets_reach_the_step_and_the_webhook_and_nothing_else(
    kube: Kube, operator: Operator, executor: Executor
) -> None:
    token = f"Bearer sk-e2e-{uuid.uuid4().hex}"
    kube.apply(
        yaml.safe_dump_all(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "model-api"},
                    "stringData": {"token": token},
                },
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "model-config"},
                    "data": {"model": "demo-1"},
                },
            ]
        )
    )
    leak = (
        "import json, os; print('using', os.environ['T']);"
        "json.dump({'t': os.environ['T'], 'm': os.environ['M'], 'pod': os.environ['P'],"
        " 'whole': os.environ['S_token']}, open(os.environ['BRAID_OUTPUT'], 'w'))"
    )
    with echo(token) as url:
        workflow = {
            "apiVersion": "braid.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": "secrets"},
            "spec": {
                "steps": [
                    {
                        "name": "call",
                        "webhook": {
                            "url": f"{url}/v1/chat",
                            "headers": {"authorization": secret_ref("model-api", "token")},
                            "body": {"text": "hi"},
                            "successCondition": "response.status == 200",
                            "output": "response.body",
                            "timeoutSeconds": 10,
                        },
                    },
                    step(
                        "use",
                        leak,
                        env=[
                            {"name": "T", **secret_ref("model-api", "token")},
                            {
                                "name": "M",
                                "valueFrom": {
                                    "configMapKeyRef": {"name": "model-config", "key": "model"}
                                },
                            },
                            {
                                "name": "P",
                                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                            },
                        ],
                        envFrom=[{"prefix": "S_", "secretRef": {"name": "model-api"}}],
                    ),
                ]
            },
        }
        kube.apply(yaml.safe_dump(workflow))
        name = kube.create(
            yaml.safe_dump(
                {
                    "apiVersion": "braid.dev/v1alpha1",
                    "kind": "WorkflowRun",
                    "metadata": {"generateName": "secrets-"},
                    "spec": {"workflowRef": {"name": "secrets"}},
                }
            )
        )
        status = kube.wait_finished(name)
    assert status["phase"] == "Succeeded", operator.log()[-3000:]
    # the real value went where it was meant to
    assert Echo.seen == [token]
    s = steps(status)
    assert s["call"]["outputs"] == {"ok": True, "you-sent": "***"}
    assert s["use"]["outputs"] == {
        "t": "***",
        "m": "demo-1",
        "pod": f"{name}-use-1",
        "whole": "***",
    }
    # the Pod's spec names its Secret, never the value (its status holds what the step wrote,
    # as a termination message would)
    pod = kube.json("get", "pod", f"{name}-use-1")
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["T"]["valueFrom"]["secretKeyRef"] == {"name": "model-api", "key": "token"}
    secret_part = token.split()[1]
    assert secret_part not in json.dumps(pod["spec"])
    # nothing of it in the run object, its Events or the operator's log
    assert secret_part not in json.dumps(kube.json("get", "workflowrun", name))
    events = kube.json("get", "events", "--field-selector", f"involvedObject.name={name}")
    assert events["items"]
    assert secret_part not in json.dumps(events)
    assert secret_part not in operator.log()


def test_a_missing_secret_fails_the_step_before_a_pod_is_made(
    kube: Kube, operator: Operator, executor: Executor
) -> None:
    kube.apply(
        yaml.safe_dump(
            {
                "apiVersion": "braid.dev/v1alpha1",
                "kind": "Workflow",
                "metadata": {"name": "no-secret"},
                "spec": {
                    "steps": [step("use", "pass", env=[{"name": "T", **secret_ref("absent", "k")}])]
                },
            }
        )
    )
    name = kube.create(
        yaml.safe_dump(
            {
                "apiVersion": "braid.dev/v1alpha1",
                "kind": "WorkflowRun",
                "metadata": {"generateName": "no-secret-"},
                "spec": {"workflowRef": {"name": "no-secret"}},
            }
        )
    )
    status = kube.wait_finished(name)
    use = steps(status)["use"]
    assert (status["phase"], use["reason"]) == ("Failed", "StartFailed")
    assert f"Secret 'absent' (env T) not found in namespace {kube.namespace}" in use["message"]
    assert not kube.json("get", "pods", "-l", f"braid.dev/run={name}")["items"]


FAIL = "import sys; sys.exit(3)"
OUT = "import json, os, sys; json.dump({'v': sys.argv[1]}, open(os.environ['BRAID_OUTPUT'], 'w'))"


def test_failure_routes_to_a_fallback_and_finally_steps_read_the_run(
    kube: Kube, operator: Operator, executor: Executor
) -> None:
    spec = {
        "failFast": False,
        "steps": [
            {
                **step("model", FAIL),
                "continueOn": {"failed": True},
                # exit code 3 is not worth retrying: one attempt only
                "retry": {"limit": 3, "expression": "lastRetry.exitCode != 3"},
            },
            {
                "name": "review",
                "dependsOn": ["model"],
                "when": "steps.model.phase == 'Failed' && steps.model.exitCode == 3",
                "container": {
                    # templates in the image, with the extension functions
                    "image": "registry.local/${{ ['py', 'thon'].join('') }}:"
                    "${{ '%d.%d'.format([3, 12]) }}",
                    "command": [PY, "-c", OUT, "${{ steps.model.reason }} $${{ literal }}"],
                },
            },
            {
                "name": "pages",
                "continueOn": {"failed": True},
                "fanOut": {
                    "itemsExpression": "lists.range(4)",
                    "failFast": False,
                    "parallelism": 1,
                    "container": {
                        "image": "python",
                        "command": [
                            PY,
                            "-c",
                            "import sys; sys.exit(1 if sys.argv[1] == '1' else 0)",
                            "${{ string(item) }}",
                        ],
                    },
                },
            },
        ],
        "finally": [
            {
                "name": "report",
                "when": "run.phase == 'Succeeded'",
                "container": {
                    "image": "python",
                    "command": [
                        PY,
                        "-c",
                        OUT,
                        "${{ run.failures.map(f, f.step + ':' + f.reason).join(',') }}",
                    ],
                },
            },
            {
                "name": "cleanup",
                "dependsOn": ["report"],
                "container": {
                    "image": "python",
                    "command": [PY, "-c", OUT, "${{ steps.report.phase }}"],
                },
            },
        ],
    }
    kube.apply(
        yaml.safe_dump(
            {
                "apiVersion": "braid.dev/v1alpha1",
                "kind": "Workflow",
                "metadata": {"name": "branches"},
                "spec": spec,
            }
        )
    )
    name = kube.create(
        yaml.safe_dump(
            {
                "apiVersion": "braid.dev/v1alpha1",
                "kind": "WorkflowRun",
                "metadata": {"generateName": "branches-"},
                "spec": {"workflowRef": {"name": "branches"}},
            }
        )
    )
    status = kube.wait_finished(name, timeout=120)
    assert status["phase"] == "Succeeded", operator.log()[-3000:]
    s = steps(status)
    assert (s["model"]["phase"], s["model"]["attempts"]) == ("Failed", 1)
    assert s["review"]["outputs"] == {"v": "Error ${{ literal }}"}
    pod = kube.json("get", "pod", f"{name}-review-1")
    assert pod["spec"]["containers"][0]["image"] == "registry.local/python:3.12"
    # every page was tried although page 1 failed
    assert [i["phase"] for i in s["pages"]["items"]] == [
        "Succeeded",
        "Failed",
        "Succeeded",
        "Succeeded",
    ]
    fin = {f["name"]: f for f in status["finally"]}
    assert fin["report"]["outputs"]["v"].split(",") == ["model:Error", "pages:ThresholdUnreachable"]
    assert fin["cleanup"]["outputs"] == {"v": "Succeeded"}


def test_what_lint_refuses_fails_the_run_as_invalid_spec_naming_the_field(
    kube: Kube, operator: Operator
) -> None:
    """The operator runs the same checks as lint: a step reading its own outputs, or an
    attribute no step has, never starts a pod."""
    for i, (expression, message) in enumerate(
        [
            ("steps.a.outputs.x", "reads its own status or outputs"),
            ("steps.b.output", "a step has no 'output'"),
        ]
    ):
        spec = {
            "steps": [
                {"name": "b", "container": {"image": "x", "command": ["true"]}},
                {"name": "a", "when": expression, "container": {"image": "x", "command": ["true"]}},
            ]
        }
        name = kube.create(
            yaml.safe_dump(
                {
                    "apiVersion": "braid.dev/v1alpha1",
                    "kind": "WorkflowRun",
                    "metadata": {"name": f"lint-{i}"},
                    "spec": {"workflow": spec},
                }
            )
        )
        status = kube.wait_finished(name)
        condition = next(c for c in status["conditions"] if c["type"] == "Succeeded")
        assert condition["reason"] == "InvalidSpec", status
        assert "spec.steps[1].when" in condition["message"]
        assert message in condition["message"]
        assert not kube.json("get", "pods", "-l", f"braid.dev/run={name}")["items"]

"""The runtime hostile corpus, on the real control plane: what someone who may create runs (or
only approve them) can send through step outputs, webhook responses, expressions, pod
templates, annotations and spec edits. Each attack ends harmlessly — refused by the API server,
or a clear failure of its own run naming why — while a bystander run goes through and the
operator stays healthy. (tests/corpus.py is the static counterpart: manifests refused at
apply or lint.)"""

from __future__ import annotations

import contextlib
import http.server
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.e2e.conftest import Kube, Operator
from tests.loopback import serve

SCRIPTED = "braid.dev/test-exit-code"


def scripted(output: str = "{}", code: int = 0, delay: str = "0s") -> dict[str, Any]:
    annotations = {
        SCRIPTED: str(code),
        "braid.dev/test-output": output,
        "braid.dev/test-delay": delay,
    }
    return {"metadata": {"annotations": annotations}}


def container(name: str, output: str = "{}", **extra: Any) -> dict[str, Any]:
    body = {"image": "busybox", "command": ["true"], "podTemplate": scripted(output)}
    body.update(extra)
    return {"name": name, "container": body}


def hook(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "webhook": {"method": "GET", "url": url, **extra}}


@dataclass
class Attack:
    """One attack: a workflow (and the run's params), what its run must end as, and
    optionally what is done to the run once it exists (as someone else)."""

    id: str
    via: str
    steps: list[dict[str, Any]]
    expect: tuple[str, str]  # the Succeeded condition's status and reason
    says: str = ""  # in the condition's message (or the step's)
    params: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    then: Callable[[Kube, str], None] | None = None
    name: str = ""


DEEP_OUTPUT = '{"a":' * 300 + "1" + "}" * 300


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


class Hostile(http.server.BaseHTTPRequestHandler):
    """A webhook endpoint that answers with what breaks naive clients."""

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        kind = "application/json"
        if path == "/deep":
            body = b"[" * 10000 + b"]" * 10000
        elif path == "/nested":
            body = json.dumps(nested(60)).encode()
        elif path == "/huge":
            body = b"x" * (5 * 1024 * 1024)
            kind = "text/plain"
        elif path == "/slow":
            time.sleep(8)
            body = b"{}"
        elif path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        elif path == "/badjson":
            body = b"{not json"
        elif path == "/page":
            body = json.dumps({"text": "x" * 3900}).encode()
        else:
            body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hostile() -> Iterator[str]:
    with serve(Hostile) as url:
        yield url


def attacks(base: str, metrics_port: int) -> list[Attack]:
    fail = "False"
    return [
        # -- through step outputs
        Attack(
            "deep-output",
            "outputs",
            [container("a", DEEP_OUTPUT)],
            (fail, "StepFailed"),
            "nested deeper than 32 levels",
        ),
        Attack(
            "not-json",
            "outputs",
            [container("a", "not json")],
            (fail, "StepFailed"),
            "OutputInvalid",
        ),
        Attack(
            "array-output",
            "outputs",
            [container("a", "[1, 2]")],
            (fail, "StepFailed"),
            "must be a JSON object",
        ),
        Attack(
            "huge-output",
            "outputs",
            [container("a", json.dumps({"x": "y" * 5000}))],
            (fail, "StepFailed"),
            "OutputTooLarge",
        ),
        Attack(
            "nonsense-usage",
            "outputs",
            [container("a", '{"usage": {"tokens": -5, "cost": "lots"}}')],
            ("True", "Succeeded"),
        ),
        Attack(
            "template-in-output",
            "outputs",
            [
                container("a", json.dumps({"cmd": "${{ params.secret }}"})),
                {
                    "name": "b",
                    "container": {
                        "image": "busybox",
                        "command": ["echo"],
                        "args": ["${{ steps.a.outputs.cmd }}"],
                        "podTemplate": scripted(),
                    },
                },
            ],
            ("True", "Succeeded"),
            spec={"params": [{"name": "secret", "default": "s3cr3t"}]},
        ),
        Attack(
            "loop-outgrows-object",
            "outputs",
            [
                {
                    "name": "l",
                    "loop": {
                        "steps": [hook("think", f"{base}/page")],
                        "until": "false",
                        "maxIterations": 1000,
                    },
                }
            ],
            (fail, "StatusTooLarge"),
            "keep large data out of step outputs",
        ),
        # -- through webhook responses
        Attack(
            "deep-json-response",
            "webhook",
            [hook("h", f"{base}/deep")],
            (fail, "StepFailed"),
            "nested deeper than 64 levels",
        ),
        Attack(
            "huge-response",
            "webhook",
            [hook("h", f"{base}/huge")],
            (fail, "StepFailed"),
            "larger than",
        ),
        Attack(
            "slow-response",
            "webhook",
            [hook("h", f"{base}/slow", timeoutSeconds=2)],
            (fail, "StepFailed"),
            "TimedOut",
        ),
        Attack(
            "redirect-to-metadata",
            "webhook",
            [hook("h", f"{base}/redirect")],
            (fail, "StepFailed"),
            "HTTP 302",
        ),
        Attack(
            "mapped-metadata-url",
            "webhook",
            [hook("h", "${{ params.url }}")],
            (fail, "StepFailed"),
            "refused",
            params={"url": "http://[::ffff:169.254.169.254]/latest/meta-data/"},
            spec={"params": [{"name": "url"}]},
        ),
        Attack(
            "nat64-metadata-url",
            "webhook",
            [hook("h", "${{ params.url }}")],
            (fail, "StepFailed"),
            "refused",
            params={"url": "http://[64:ff9b::a9fe:a9fe]/"},
            spec={"params": [{"name": "url"}]},
        ),
        Attack(
            "bad-port-from-param",
            "webhook",
            [hook("h", "http://127.0.0.1:${{ params.port }}/")],
            (fail, "StepFailed"),
            "WebhookFailed",
            params={"port": "99999"},
            spec={"params": [{"name": "port"}]},
        ),
        Attack(
            "operators-own-metrics",
            "webhook",
            [hook("h", f"http://127.0.0.1:{metrics_port}/metrics")],
            (fail, "StepFailed"),
            "operator's own",
        ),
        Attack(
            "header-injection",
            "webhook",
            [hook("h", f"{base}/ok", headers={"X-Tag": "${{ params.tag }}"})],
            (fail, "StepFailed"),
            "WebhookFailed",
            params={"tag": "x\r\nX-Evil: 1"},
            spec={"params": [{"name": "tag"}]},
        ),
        Attack(
            "deep-webhook-outputs",
            "webhook",
            [hook("h", f"{base}/nested", output="{'a': response.body}")],
            (fail, "StepFailed"),
            "nested deeper than 32 levels",
        ),
        Attack(
            "invalid-json-body",
            "webhook",
            [hook("h", f"{base}/badjson", output="{'x': response.body.x}")],
            (fail, "StepFailed"),
            "ExpressionError",
        ),
        # -- through expressions
        Attack(
            "costly-when",
            "expression",
            [container("a") | {"when": costly_literal_expression()}],
            (fail, "InvalidSpec"),
            "nested 5 deep",
        ),
        Attack(
            "costly-map-at-run-time",
            "expression",
            [container("a") | {"when": "params.xs.map(x, x * 2).size() > 0"}],
            (fail, "StepFailed"),
            "too expensive to evaluate",
            params={"xs": list(range(3000))},
            spec={"params": [{"name": "xs"}]},
        ),
        Attack(
            "division-by-zero",
            "expression",
            [container("a") | {"when": "params.n / params.zero > 1"}],
            (fail, "StepFailed"),
            "ExpressionError",
            params={"n": 1, "zero": 0},
            spec={"params": [{"name": "n"}, {"name": "zero"}]},
        ),
        Attack(
            "items-beyond-max",
            "expression",
            [
                {
                    "name": "f",
                    "fanOut": {
                        "itemsExpression": "params.xs",
                        "container": {"image": "busybox", "podTemplate": scripted()},
                    },
                }
            ],
            (fail, "StepFailed"),
            "exceed maxItems",
            params={"xs": list(range(10001))},
            spec={"params": [{"name": "xs"}]},
        ),
        Attack(
            "template-injection-in-param",
            "expression",
            [
                {
                    "name": "a",
                    "container": {
                        "image": "busybox",
                        "command": ["echo"],
                        "args": ["${{ params.text }}"],
                        "podTemplate": scripted(),
                    },
                }
            ],
            ("True", "Succeeded"),
            params={"text": "${{ params.secret }}"},
            spec={"params": [{"name": "text"}, {"name": "secret", "default": "s3cr3t"}]},
        ),
        Attack(
            "deep-literal",
            "expression",
            [container("a") | {"when": "[" * 120 + "]" * 120 + " == []"}],
            (fail, "InvalidSpec"),
            "invalid CEL",
        ),
        # -- through pod templates
        *[
            Attack(
                f"pod-{case}",
                "podTemplate",
                [{"name": "a", "container": {"image": "busybox", "podTemplate": template}}],
                (fail, "InvalidSpec"),
                f"podTemplate.{where}",
            )
            for case, template, where in POD_TEMPLATE_ESCAPES
        ],
        Attack(
            "pod-rejected-by-api-server",
            "podTemplate",
            [
                {
                    "name": "a",
                    "container": {
                        "image": "busybox",
                        "podTemplate": {
                            **scripted(),
                            "spec": {"nodeSelector": {"zone": "not a valid value!"}},
                        },
                    },
                }
            ],
            (fail, "StepFailed"),
            "the API server refused the Pod",
        ),
    ]


def costly_literal_expression() -> str:
    items = "[" + ",".join(str(i) for i in range(20)) + "]"
    expr = "true"
    for depth in range(5):
        expr = f"{items}.all(x{depth}, {expr})"
    return expr


POD_TEMPLATE_ESCAPES = [
    ("namespace", {"metadata": {"namespace": "kube-system"}}, "metadata.namespace"),
    ("name", {"metadata": {"name": "victim-a-1"}}, "metadata.name"),
    ("owner", {"metadata": {"ownerReferences": [{"uid": "x"}]}}, "metadata.ownerReferences"),
    ("run-label", {"metadata": {"labels": {"braid.dev/run": "victim"}}}, "metadata.labels"),
    (
        "hostpath",
        {"spec": {"volumes": [{"name": "r", "hostPath": {"path": "/"}}]}},
        "spec.volumes[0].hostPath",
    ),
    (
        "privileged",
        {"spec": {"containers": [{"securityContext": {"privileged": True}}]}},
        "spec.containers[0].securityContext.privileged",
    ),
    ("host-network", {"spec": {"hostNetwork": True}}, "spec.hostNetwork"),
    ("service-account", {"spec": {"serviceAccountName": "default"}}, "spec.serviceAccountName"),
    (
        "token",
        {"spec": {"automountServiceAccountToken": True}},
        "spec.automountServiceAccountToken",
    ),
    (
        "init-container",
        {"spec": {"initContainers": [{"name": "i", "image": "evil"}]}},
        "spec.initContainers",
    ),
]


def manifests(attack: Attack, name: str) -> tuple[str, str]:
    workflow = {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {**attack.spec, "steps": attack.steps},
    }
    run = {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {"name": name},
        "spec": {
            "workflowRef": {"name": name},
            **({"params": attack.params} if attack.params else {}),
        },
    }
    return json.dumps(workflow), json.dumps(run)


def condition(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status.get("conditions", []) if c["type"] == "Succeeded")


def messages(status: dict[str, Any]) -> str:
    """Everything the run says about itself: the condition and every step's message."""
    parts = [condition(status).get("message", "")]
    for step in status.get("steps", []):
        parts += [str(step.get("reason", "")), str(step.get("message", ""))]
        for it in step.get("iterations") or []:
            parts += [str(b.get("message", "")) for b in it.get("steps", [])]
    return " ".join(parts)


def healthy(operator: Operator) -> None:
    assert operator.process is not None
    assert operator.process.poll() is None, operator.log()[-3000:]
    with urllib.request.urlopen(
        f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5
    ) as response:
        assert response.status == 200


def bystander(kube: Kube, name: str) -> str:
    steps = [container(f"s{i}", json.dumps({"i": i})) for i in range(3)]
    kube.apply(
        json.dumps(
            {
                "apiVersion": "braid.dev/v1alpha1",
                "kind": "Workflow",
                "metadata": {"name": name},
                "spec": {"steps": steps},
            }
        )
    )
    return kube.create(
        json.dumps(
            {
                "apiVersion": "braid.dev/v1alpha1",
                "kind": "WorkflowRun",
                "metadata": {"generateName": f"{name}-"},
                "spec": {"workflowRef": {"name": name}},
            }
        )
    )


@pytest.mark.timeout(600)
def test_runtime_attacks_end_as_clear_failures_of_their_own_runs(
    kube: Kube, operator: Operator, hostile: str
) -> None:
    corpus = attacks(hostile, operator.metrics_port)
    assert len(corpus) >= 30
    before = bystander(kube, "bystander-before")
    for i, attack in enumerate(corpus):
        attack.name = f"attack-{i}"
        workflow, run = manifests(attack, attack.name)
        kube.apply(workflow)
        kube.create(run)
    after = bystander(kube, "bystander-after")
    problems = []
    for attack in corpus:
        status = kube.wait_finished(attack.name, timeout=240)
        cond = condition(status)
        said = messages(status)
        if (cond["status"], cond["reason"]) != attack.expect or attack.says not in said:
            problems.append((attack.id, cond["status"], cond["reason"], said[:400]))
    assert not problems, problems
    for run in (before, after):
        assert condition(kube.wait_finished(run, timeout=120))["status"] == "True"
    healthy(operator)
    # What was data stayed data: neither a step output nor a param was evaluated again.
    injected = {a.id: a.name for a in corpus if a.id.startswith("template-in")}
    for attack_id, name in injected.items():
        pods = kube.json("get", "pods", "-l", f"braid.dev/run={name}")["items"]
        args = [a for p in pods for a in p["spec"]["containers"][0].get("args", [])]
        assert "${{ params.secret }}" in args, (attack_id, args)
        assert "s3cr3t" not in json.dumps(pods), attack_id


def squatted(kube: Kube) -> tuple[str, str]:
    """Run `victim` has a step `b-c`: its first pod is `victim-b-c-1`. Run `victim-b` has a
    step `c`: its pod has the very same name. Started first, it squats on the name."""
    attacker = {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {"name": "victim-b"},
        "spec": {
            "workflow": {
                "steps": [
                    {
                        "name": "c",
                        "container": {
                            "image": "busybox",
                            "podTemplate": scripted(json.dumps({"verdict": "forged"}), delay="30s"),
                        },
                    }
                ]
            }
        },
    }
    kube.create(json.dumps(attacker))
    kube.wait_for(
        "the squatting pod",
        lambda: kube.run("get", "pod", "victim-b-c-1", check=False).returncode == 0,
    )
    victim = {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {"name": "victim"},
        "spec": {
            "workflow": {
                "steps": [
                    {
                        "name": "b-c",
                        "container": {
                            "image": "busybox",
                            "podTemplate": scripted(json.dumps({"verdict": "real"})),
                        },
                    }
                ]
            }
        },
    }
    kube.create(json.dumps(victim))
    return "victim", "victim-b"


def test_a_run_cannot_make_another_run_adopt_its_pod(kube: Kube, operator: Operator) -> None:
    victim, attacker = squatted(kube)
    status = kube.wait_finished(victim, timeout=60)
    step = status["steps"][0]
    assert (step["phase"], step["reason"]) == ("Failed", "PodConflict"), step
    assert "outputs" not in step
    assert "forged" not in json.dumps(status)
    pod = kube.json("get", "pod", "victim-b-c-1")
    assert pod["metadata"]["labels"]["braid.dev/run"] == attacker  # untouched
    healthy(operator)


def as_user(kube: Kube, user: str, *args: str, groups: tuple[str, ...] = ()) -> Any:
    flags = [f"--as={user}", *[f"--as-group={g}" for g in groups]]
    return kube.run(*flags, *args, check=False)


GATE = {
    "steps": [
        container("prep", json.dumps({"plan": "v2"})),
        {
            "name": "review",
            "approval": {
                "message": "ship?",
                "approvers": {"users": ["alice", "bob", "system:serviceaccount:ops:bot"]},
            },
        },
        container("ship"),
    ]
}


def gated_run(kube: Kube, name: str) -> str:
    run = {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {"name": name, "labels": {"shard": "a"}},
        "spec": {"workflow": GATE},
    }
    kube.create(json.dumps(run))
    kube.wait_for(
        f"{name} to wait for approval", lambda: kube.run_status(name).get("pendingApprovals")
    )
    return name


def test_annotation_and_spec_edit_attacks_are_refused_by_the_api_server(
    people: Kube, operator: Operator
) -> None:
    kube = people
    bot = "system:serviceaccount:ops:bot"
    kube.apply(
        json.dumps(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "bot-approves"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "braid-approve",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": "ops"}],
            }
        )
    )
    run = gated_run(kube, "gated")
    refused = {
        # approvals: not listed, in someone else's name, a short digest, a gate not waiting
        "mallory approves": as_user(
            kube, "mallory", "annotate", "workflowrun", run, "approve.braid.dev/review=mallory"
        ),
        "forged name": as_user(
            kube, "mallory", "annotate", "workflowrun", run, "approve.braid.dev/review=alice"
        ),
        "short digest": as_user(
            kube, "alice", "annotate", "workflowrun", run, "approve.braid.dev/review=alice:deadbeef"
        ),
        "gate not waiting": as_user(
            kube, "alice", "annotate", "workflowrun", run, "approve.braid.dev/ship=alice"
        ),
        "rejection in another name": as_user(
            kube, "mallory", "annotate", "workflowrun", run, "reject.braid.dev/review=alice: no"
        ),
        # spec edits by someone who may patch (approvers may)
        "add params": as_user(
            kube,
            "alice",
            "patch",
            "workflowrun",
            run,
            "--type=merge",
            "-p",
            '{"spec": {"params": {"x": 1}}}',
        ),
        "change workflow": as_user(
            kube,
            "alice",
            "patch",
            "workflowrun",
            run,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"workflow": {"steps": [container("evil")]}}}),
        ),
        "point elsewhere": as_user(
            kube,
            "alice",
            "patch",
            "workflowrun",
            run,
            "--type=merge",
            "-p",
            '{"spec": {"retryOf": {"name": "other"}}}',
        ),
        "move off its shard": as_user(
            kube, "alice", "label", "workflowrun", run, "shard=b", "--overwrite"
        ),
    }
    accepted = {k: r.stdout for k, r in refused.items() if r.returncode == 0}
    assert not accepted, accepted
    for what, result in refused.items():
        assert "denied" in result.stderr or "invalid" in result.stderr, (what, result.stderr)
    # 100 KB of unrelated annotation: accepted, ignored, nothing breaks.
    assert (
        as_user(
            kube, "alice", "annotate", "workflowrun", run, f"notes.example.com/blob={'z' * 100_000}"
        ).returncode
        == 0
    )
    # The listed bot, whose name holds colons, rejects with a reason that holds colons.
    result = as_user(
        kube,
        bot,
        "annotate",
        "workflowrun",
        run,
        f"reject.braid.dev/review={bot}: not now: see ticket 7",
    )
    assert result.returncode == 0, result.stderr
    status = kube.wait_finished(run)
    review = status["steps"][1]
    record = next(r for r in review["approvals"] if r["decision"] == "Rejected")
    assert (record["user"], record["reason"], record["verified"]) == (
        bot,
        "not now: see ticket 7",
        True,
    )
    assert condition(status)["reason"] == "StepFailed"
    # A cancelled run cannot be resumed.
    kube.run("patch", "workflowrun", run, "--type=merge", "-p", '{"spec": {"cancelled": true}}')
    again = kube.run(
        "patch",
        "workflowrun",
        run,
        "--type=merge",
        "-p",
        '{"spec": {"cancelled": false}}',
        check=False,
    )
    assert again.returncode != 0
    assert "stays cancelled" in again.stderr
    healthy(operator)


def test_a_retry_reuses_only_the_requesters_own_approvals(people: Kube, operator: Operator) -> None:
    kube = people
    run = gated_run(kube, "approved")
    digest = kube.run_status(run)["pendingApprovals"][0]["digest"]
    ok = as_user(
        kube, "alice", "annotate", "workflowrun", run, f"approve.braid.dev/review=alice:{digest}"
    )
    assert ok.returncode == 0, ok.stderr
    assert condition(kube.wait_finished(run))["status"] == "True"
    me = kube.run("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout
    status = kube.run_status(run)

    def retry(name: str, requested_by: str | None, spec: dict[str, Any]) -> Any:
        meta: dict[str, Any] = {"name": name}
        if requested_by is not None:
            meta["annotations"] = {"braid.dev/requested-by": requested_by}
        body = {
            "apiVersion": "braid.dev/v1alpha1",
            "kind": "WorkflowRun",
            "metadata": meta,
            "spec": {**spec, "retryOf": {"name": run, "fromStep": "ship"}},
        }
        return kube.run("create", "-f", "-", stdin=json.dumps(body), check=False)

    same = {"workflow": status["workflowSpec"]}
    assert "braid.dev/requested-by" in retry("no-requester", None, same).stderr
    assert "braid.dev/requested-by" in retry("in-alices-name", "alice", same).stderr
    assert retry("by-me", me, same).returncode == 0
    kube.wait_for("the retry to wait", lambda: kube.run_status("by-me").get("pendingApprovals"))
    review = kube.run_status("by-me")["steps"][1]
    assert review["phase"] == "Waiting", "alice's approval was reused for someone else's retry"
    other = {"workflow": {"steps": [container("evil")]}}
    assert retry("other-workflow", me, other).returncode == 0
    cond = condition(kube.wait_finished("other-workflow"))
    assert (cond["reason"], cond["message"].split(":")[0]) == ("InvalidSpec", "spec.workflow")
    healthy(operator)

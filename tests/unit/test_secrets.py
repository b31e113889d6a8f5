"""Secrets and ConfigMaps: the Kubernetes EnvVar shape, webhook values read from Secrets at call
time, masking wherever a value could show, and the same manifests locally."""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from braid.api.errors import InvalidSpecError
from braid.api.run import RunPhase
from braid.api.workflow import EnvFromSource, EnvVar, KeySelector, SecretValue, WorkflowSpec
from braid.controller.reconcile import Reconciler
from braid.controller.secrets import SecretAccess, references
from braid.engine import (
    AttemptLabels,
    AttemptResult,
    ContainerRequest,
    HTTPResponse,
    StartAttempt,
    WebhookRequest,
)
from braid.engine.compile import compile_plan
from braid.engine.masking import MASK, Masker
from braid.kube.memory import MemoryCluster
from braid.kube.pods import pod_for, secret_refs
from braid.local.data import BASE_ENV, LocalData, MissingDataError, env_name, step_env
from braid.local.runner import LocalRun
from braid.webhook import SecretUnavailableError, call_webhook
from tests.loopback import serve
from tests.memory import cluster_with_run, ticking_clock

KEY = "sk-live-0123456789abcdef"


# -- masking -------------------------------------------------------------------------------


def test_every_occurrence_is_masked_in_every_field_of_a_result():
    masker = Masker.of([KEY])
    result = masker.result(
        AttemptResult(
            "a",
            output=json.dumps({"echo": KEY, KEY: 1}),
            message=f"stderr: bad key {KEY}!",
            error=f"{KEY}{KEY}",
            response=HTTPResponse(200, {"x-echo": KEY}, {"nested": [KEY, {"k": f"<{KEY}>"}]}),
        )
    )
    text = repr(result)
    assert KEY not in text
    assert result.output == json.dumps({"echo": MASK, MASK: 1})
    assert result.message == f"stderr: bad key {MASK}!"
    assert result.error == MASK * 2
    assert result.response is not None
    assert result.response.headers == {"x-echo": MASK}
    assert result.response.body == {"nested": [MASK, {"k": f"<{MASK}>"}]}


def test_multi_line_and_json_escaped_forms_are_masked_and_tiny_values_are_not():
    pem = "-----BEGIN KEY-----\nMIIBOgIBAAJBAK\n-----END KEY-----"
    masker = Masker.of([pem, "abc", 'quo"te-value'])
    # each line on its own (a step printing it line by line), and as JSON text writes it
    assert "MIIBOgIBAAJBAK" not in (masker.text("line: MIIBOgIBAAJBAK") or "")
    assert masker.text(json.dumps({"k": pem})) == json.dumps({"k": MASK})
    assert masker.text(json.dumps({"k": 'quo"te-value'})) == json.dumps({"k": MASK})
    # three characters would mask every "abc" in every log and hide nothing worth hiding
    assert masker.text("abc") == "abc"
    assert not Masker.of(["", "ab"])


# -- the local side ------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "secrets.yaml"
    path.write_text(text)
    return path


def test_local_data_reads_secret_and_configmap_manifests(tmp_path: Path):
    encoded = base64.b64encode(KEY.encode()).decode()
    path = write(
        tmp_path,
        f"""
apiVersion: v1
kind: Secret
metadata: {{name: openai}}
data: {{api-key: {encoded}}}
stringData: {{org: acme}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings}}
data: {{model: gpt-test}}
""",
    )
    data = LocalData.load([path], environ={})
    assert data.key("Secret", KeySelector(name="openai", key="api-key")) == KEY
    assert data.key("Secret", KeySelector(name="openai", key="org")) == "acme"
    assert data.key("ConfigMap", KeySelector(name="settings", key="model")) == "gpt-test"
    assert data.whole("Secret", "openai", optional=False) == {"api-key": KEY, "org": "acme"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: Pod\nmetadata: {name: x}\n", "kind: must be Secret or ConfigMap, got 'Pod'"),
        ("kind: Secret\nmetadata: {}\n", "metadata.name: required"),
        ("kind: Secret\nmetadata: {name: s}\ndata: {k: '%%%'}\n", "data.k: not base64"),
        ("[1, 2]\n", "got 'list'"),
        ("kind: Secret\n  bad: [\n", "cannot read"),
    ],
)
def test_bad_secrets_files_are_named_with_the_field(tmp_path: Path, text: str, message: str):
    path = write(tmp_path, text)
    with pytest.raises(InvalidSpecError) as info:
        LocalData.load([path], environ={})
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_a_key_not_in_the_files_comes_from_the_environment_or_says_how_to_give_it():
    data = LocalData(environ={"OPENAI_API_KEY": KEY})
    assert env_name("openai", "api-key") == "OPENAI_API_KEY"
    assert data.key("Secret", KeySelector(name="openai", key="api-key")) == KEY
    with pytest.raises(MissingDataError) as info:
        data.key("Secret", KeySelector(name="anthropic", key="token"))
    assert "--secrets FILE" in str(info.value)
    assert "ANTHROPIC_TOKEN" in str(info.value)
    assert data.key("Secret", KeySelector(name="anthropic", key="token", optional=True)) is None


def attempt(container: ContainerRequest, name: str = "r-a-1") -> StartAttempt:
    return StartAttempt(name, AttemptLabels("a", 1), 60, container=container)


def request(**kw: Any) -> ContainerRequest:
    base: dict[str, Any] = {
        "image": "x",
        "command": ["true"],
        "args": [],
        "env": {},
        "working_dir": None,
        "resources": None,
        "pod_template": None,
    }
    return ContainerRequest(**{**base, **kw})


def env_var(name: str, **source: Any) -> EnvVar:
    return EnvVar.model_validate({"name": name, "valueFrom": source})


def test_a_step_process_sees_the_declared_env_and_the_base_only():
    environ = {"PATH": "/bin", "HOME": "/h", "LANG": "C", "TMPDIR": "/t", "AWS_SECRET": "leak"}
    data = LocalData(
        objects={
            ("Secret", "s"): {"token": KEY, "other": "o-value"},
            ("ConfigMap", "c"): {"m": "1"},
        },
        environ=environ,
    )
    container = request(
        env={"PLAIN": "p", "TOKEN": "overridden-below"},
        env_refs=(
            env_var("TOKEN", secretKeyRef={"name": "s", "key": "token"}),
            env_var("MODEL", configMapKeyRef={"name": "c", "key": "m"}),
            env_var("POD", fieldRef={"fieldPath": "metadata.name"}),
            env_var("STEP", fieldRef={"fieldPath": "metadata.labels['braid.dev/step']"}),
            env_var("UID", fieldRef={"fieldPath": "metadata.uid"}),
            env_var("NOPE", secretKeyRef={"name": "gone", "key": "k", "optional": True}),
        ),
        env_from=(EnvFromSource.model_validate({"prefix": "S_", "secretRef": {"name": "s"}}),),
    )
    got = step_env(attempt(container), data, inherit=False, run_uid="u-1")
    assert got.env == {
        **{k: environ[k] for k in BASE_ENV},
        "PLAIN": "p",
        "TOKEN": KEY,
        "MODEL": "1",
        "POD": "r-a-1",
        "STEP": "a",
        "UID": "u-1",
        "S_token": KEY,
        "S_other": "o-value",
    }
    assert set(got.secrets) == {KEY, "o-value"}
    # --inherit-env: the whole environment, the declared env on top
    inherited = step_env(attempt(container), data, inherit=True).env
    assert inherited["AWS_SECRET"] == "leak"
    assert inherited["TOKEN"] == KEY


def test_a_missing_secret_stops_the_step_before_it_starts():
    container = request(env_refs=(env_var("T", secretKeyRef={"name": "gone", "key": "k"}),))
    with pytest.raises(MissingDataError, match="Secret 'gone' key 'k' is not given"):
        step_env(attempt(container), LocalData(environ={}), inherit=False)
    whole = request(env_from=(EnvFromSource.model_validate({"secretRef": {"name": "gone"}}),))
    with pytest.raises(MissingDataError, match="envFrom"):
        step_env(attempt(whole), LocalData(environ={}), inherit=False)


# -- the manifest --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            "set value or valueFrom, not both",
        ),
        ({"name": "A", "valueFrom": {}}, "set exactly one of secretKeyRef"),
        (
            {
                "name": "A",
                "valueFrom": {
                    "secretKeyRef": {"name": "s", "key": "k"},
                    "fieldRef": {"fieldPath": "metadata.name"},
                },
            },
            "set exactly one of secretKeyRef",
        ),
        ({"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.containers"}}}, "fieldPath"),
        ({"name": "A", "valueFrom": {"secretKeyRef": {"name": "Bad_Name", "key": "k"}}}, "name"),
        ({"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k/../x"}}}, "key"),
    ],
)
def test_bad_env_sources_are_refused_naming_the_field(env: dict, message: str):
    with pytest.raises(Exception) as info:
        WorkflowSpec.model_validate(
            {"steps": [{"name": "a", "container": {"image": "x", "env": [env]}}]}
        )
    assert message in str(info.value)
    assert "env" in str(info.value)


def plan_of(webhook: dict[str, Any], params: list[dict[str, Any]] | None = None) -> Any:
    spec = WorkflowSpec.model_validate(
        {"params": params or [], "steps": [{"name": "call", "webhook": webhook}]}
    )
    return compile_plan(spec)


def test_only_literal_body_leaves_can_name_a_secret():
    plan = plan_of(
        {
            "url": "http://127.0.0.1/",
            "headers": {
                "authorization": {"valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                "plain": "x-${{ params.p.valueFrom }}",
            },
            "body": {"key": {"valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}},
        },
        params=[{"name": "p", "default": {"valueFrom": 1}}],
    )
    headers = dict(plan.steps["call"].action.webhook.headers)
    assert isinstance(headers["authorization"], SecretValue)
    assert not isinstance(headers["plain"], SecretValue)


def test_a_malformed_secret_leaf_in_a_body_is_named():
    with pytest.raises(InvalidSpecError) as info:
        plan_of(
            {
                "url": "http://127.0.0.1/",
                "body": {"key": {"valueFrom": {"secretKeyRef": {"name": "s"}}}},
            }
        )
    assert "body.key" in str(info.value)


# -- webhooks ------------------------------------------------------------------------------


class Echo(http.server.BaseHTTPRequestHandler):
    """Says back what it got: the request's headers and body (as a leaky API might)."""

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        got = {
            "authorization": self.headers.get("authorization"),
            "path": self.path,
            "body": json.loads(self.rfile.read(length) or b"null"),
        }
        payload = json.dumps(got).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("x-echo", str(self.headers.get("authorization")))
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[str]:
    with serve(Echo) as url:
        yield url


def secret(name: str = "s", key: str = "k", optional: bool | None = None) -> SecretValue:
    return SecretValue.model_validate(
        {"valueFrom": {"secretKeyRef": {"name": name, "key": key, "optional": optional}}}
    )


def call(hook: WebhookRequest, reader: Any) -> AttemptResult:
    async def go() -> AttemptResult:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            return await call_webhook(
                client,
                StartAttempt("r-call-1", AttemptLabels("call", 1), 5, webhook=hook),
                secrets=reader,
            )

    return asyncio.run(go())


def reader_of(values: dict[tuple[str, str], str]) -> Any:
    async def read(ref: KeySelector) -> str | None:
        return values.get((ref.name, ref.key))

    return read


def test_a_webhook_sends_the_secret_and_masks_it_in_what_comes_back(echo: str):
    hook = WebhookRequest(
        "POST",
        f"{echo}/x",
        {"authorization": secret()},
        {"token": secret(), "computed": {"valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}},
    )
    result = call(hook, reader_of({("s", "k"): f"Bearer {KEY}"}))
    assert result.error is None, result.error
    assert result.response is not None
    body = result.response.body
    # the server got the value; the result shows only the mask
    assert body["authorization"] == MASK
    assert body["body"]["token"] == MASK
    assert result.response.headers["x-echo"] == MASK
    # a dict a run computed is sent as the data it is, never read as a Secret reference
    assert body["body"]["computed"] == {"valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    assert KEY not in repr(result)


def test_a_url_from_a_secret_is_never_shown(echo: str):
    hook = WebhookRequest("POST", secret("endpoint", "url"), {}, None)
    result = call(hook, reader_of({("endpoint", "url"): f"{echo}/private-path-{KEY}"}))
    assert result.error is None
    assert KEY not in repr(result)
    assert hook.shown_url == "the URL in Secret endpoint"
    # a refused host is not named either
    bad = call(hook, reader_of({("endpoint", "url"): "http://no-such-host.invalid:1/"}))
    assert bad.error is not None
    assert "no-such-host.invalid" not in bad.error


def test_a_missing_or_unreadable_secret_fails_the_attempt_saying_which(echo: str):
    missing = call(WebhookRequest("POST", echo, {"a": secret("gone", "k")}, None), reader_of({}))
    assert missing.error == "Secret 'gone' has no key 'k'"

    async def forbidden(ref: KeySelector) -> str | None:
        raise SecretUnavailableError(f"Secret {ref.name!r}: may not be read")

    refused = call(WebhookRequest("POST", echo, {"a": secret()}, None), forbidden)
    assert refused.error == "Secret 's': may not be read"
    optional = call(
        WebhookRequest("POST", echo, {"a": secret("gone", "k", optional=True)}, None),
        reader_of({}),
    )
    assert optional.error is None


# -- the operator ----------------------------------------------------------------------------

WORKFLOW = {
    "spec": {
        "steps": [
            {
                "name": "a",
                "container": {
                    "image": "x",
                    "command": ["a"],
                    "env": [
                        {"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                        {"name": "M", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "m"}}},
                    ],
                },
            },
        ]
    }
}


def setup() -> tuple[MemoryCluster, Reconciler]:
    cluster = cluster_with_run(WORKFLOW)
    return cluster, Reconciler(cluster, clock=ticking_clock())


def reconcile(cluster: MemoryCluster, reconciler: Reconciler) -> None:
    asyncio.run(reconciler.reconcile("ns", "r", list(cluster.pods.values())))


def test_the_pod_reads_its_env_from_the_secret_and_its_leaked_value_is_masked():
    cluster, reconciler = setup()
    cluster.data[("Secret", "s")] = {"k": KEY}
    cluster.data[("ConfigMap", "c")] = {"m": "model-1"}
    reconcile(cluster, reconciler)
    pod = cluster.pods["r-a-1"]
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["T"]["valueFrom"] == {"secretKeyRef": {"name": "s", "key": "k"}}
    assert env["M"]["valueFrom"] == {"configMapKeyRef": {"name": "c", "key": "m"}}
    assert KEY not in json.dumps(pod)
    assert secret_refs(pod) == [("s", "k")]
    cluster.finish_pod("r-a-1", json.dumps({"leak": KEY}))
    reconcile(cluster, reconciler)
    run = cluster.runs["r"]
    assert run["status"]["steps"][0]["outputs"] == {"leak": MASK}
    assert KEY not in json.dumps(run) + repr(cluster.events)


def test_a_missing_secret_fails_the_attempt_before_a_pod_exists():
    cluster, reconciler = setup()
    cluster.data[("ConfigMap", "c")] = {"m": "model-1"}
    reconcile(cluster, reconciler)
    assert "r-a-1" not in cluster.pods
    step = cluster.runs["r"]["status"]["steps"][0]
    assert step["reason"] == "StartFailed"
    assert "Secret 's' (env T) not found in namespace ns" in step["message"]


def test_without_rights_to_read_secrets_the_pod_is_still_created():
    cluster, reconciler = setup()
    cluster.forbidden = {"Secret", "ConfigMap"}
    reconcile(cluster, reconciler)
    assert "r-a-1" in cluster.pods


def test_references_list_what_a_pod_needs_to_start():
    container = request(
        env_refs=(
            env_var("T", secretKeyRef={"name": "s", "key": "k"}),
            env_var("O", secretKeyRef={"name": "o", "key": "k", "optional": True}),
            env_var("P", fieldRef={"fieldPath": "metadata.name"}),
        ),
        env_from=(EnvFromSource.model_validate({"configMapRef": {"name": "c"}}),),
    )
    assert references(container) == [
        ("Secret", "s", "k", "env T"),
        ("ConfigMap", "c", None, "envFrom"),
    ]
    assert asyncio.run(SecretAccess(MemoryCluster()).missing(attempt(container), "ns")) == (
        "Secret 's' (env T) not found in namespace ns"
    )
    pod = pod_for(attempt(container), namespace="ns", run_name="r", run_uid="u", workflow="wf")
    assert pod["spec"]["containers"][0]["envFrom"] == [{"configMapRef": {"name": "c"}}]


# -- the whole local run ---------------------------------------------------------------------


def test_a_local_run_reads_secrets_masks_them_and_never_resolves_computed_values(
    echo: str, tmp_path: Path
):
    """Compile, render and call: a param shaped like a Secret reference stays data."""
    spec = WorkflowSpec.model_validate(
        {
            "params": [
                {"name": "p", "default": {"valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}}
            ],
            "steps": [
                {
                    "name": "call",
                    "webhook": {
                        "url": f"{echo}/x",
                        "headers": {
                            "authorization": {
                                "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}
                            }
                        },
                        "body": {
                            "literal": {"valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                            "computed": "${{ params.p }}",
                        },
                        "output": "response.body",
                    },
                },
                {
                    "name": "leak",
                    "container": {
                        "image": "python",
                        "command": [
                            sys.executable,
                            "-c",
                            (
                                "import json, os; print('key is', os.environ['T']);"
                                " json.dump({'k': os.environ['T'], 'home': 'HOME' in os.environ,"
                                " 'extra': 'BRAID_TEST_EXTRA' in os.environ},"
                                " open(os.environ['BRAID_OUTPUT'], 'w'))"
                            ),
                        ],
                        "env": [
                            {"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
                        ],
                    },
                },
            ],
        }
    )
    data = LocalData(
        objects={("Secret", "s"): {"k": KEY}},
        environ={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "BRAID_TEST_EXTRA": "1"},
    )
    params = {"p": {"valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}}
    run = LocalRun("r", spec, params, workdir=tmp_path / "work", data=data)
    status = asyncio.run(run.execute())
    assert status.phase == RunPhase.SUCCEEDED, status
    steps = {s.name: s for s in status.steps}
    body = steps["call"].outputs
    assert body["authorization"] == MASK
    assert body["body"]["literal"] == MASK
    assert body["body"]["computed"] == {"valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    assert steps["leak"].outputs == {"k": MASK, "home": True, "extra": False}
    assert KEY not in status.model_dump_json()
    log = (tmp_path / "work" / "r-leak-1.log").read_text()
    assert log.strip() == f"key is {MASK}"

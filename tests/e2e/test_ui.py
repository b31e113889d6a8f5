"""The web UI in a real browser (Debian's Chromium, driven through its chromedriver) against the
real control plane: a run's page moves while the run does; an allowed approver decides from
the inbox and the run goes on; someone not listed sees the gate read only and the API server
refuses the approval they forge; a param that breaks its schema is named on the form. Every
request the UI makes is made as the person at the browser: the identities here are service
accounts whose tokens the test asks for, one used through a kubeconfig (``braid ui`` on a
laptop), one signed in with its bearer token (the chart's mode)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.e2e.conftest import ROOT, Kube, Operator
from tests.model_server import model_server, reply

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCRIPTED = {"braid.dev/test-exit-code": "0", "braid.dev/test-output": json.dumps({"plan": "v2"})}
# A container step kwok completes at once with outputs {"plan": "v2"}.
PREP = {
    "name": "prep",
    "container": {
        "image": "busybox",
        "command": ["true"],
        "podTemplate": {"metadata": {"annotations": SCRIPTED}},
    },
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class UiServer:
    """`braid ui` in its own process, on a free loopback port."""

    def __init__(self, log: Path, *args: str, env: dict[str, str]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "braid.cli", "ui", f"--port={self.port}", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2):
                    return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"braid ui did not start: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _browser(profile: str) -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        # this machine's network is closed: no background fetches, no updates, no sync
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    assert not missing, f"{missing} missing: scripts/test installs Debian's chromium packages"
    profile = tempfile.mkdtemp(prefix="braid-chromium-")
    driver = _browser(profile)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def start_ui(tmp_path: Path) -> Iterator[Callable[..., UiServer]]:
    started: list[UiServer] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HTTP_PROXY", "HTTPS_PROXY"))}
    env["PYTHONPATH"] = str(ROOT / "operator")

    def start(*args: str, kubeconfig: str | None = None) -> UiServer:
        server = UiServer(
            tmp_path / f"ui-{len(started)}.log",
            *args,
            env={**env, **({"KUBECONFIG": kubeconfig} if kubeconfig else {})},
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
    for server in started:  # nothing the UI logged may hold a token
        text = server.log.read_text()
        assert "eyJ" not in text, f"a token reached the UI's log: {server.log}"


def until(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception:  # noqa: BLE001 - the page is mid-swap: look again
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def token_for(kube: Kube, account: str) -> str:
    kube.run("create", "serviceaccount", account)
    return kube.run("create", "token", account, "--duration=1h").stdout.strip()


def approvers(kube: Kube, *accounts: str) -> None:
    """The accounts get the chart's braid-approve role in the namespace (read and annotate runs)."""
    for account in accounts:
        kube.run(
            "create",
            "rolebinding",
            f"approve-{account}",
            "--clusterrole=braid-approve",
            f"--serviceaccount={kube.namespace}:{account}",
        )


def kubeconfig_for(kube: Kube, token: str, path: Path) -> str:
    """A kubeconfig as a person would have it: the cluster, their token, their namespace."""
    admin = yaml.safe_load(Path(kube.kubeconfig).read_text())
    cluster = admin["clusters"][0]["cluster"]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "braid", "cluster": cluster}],
                "users": [{"name": "me", "user": {"token": token}}],
                "contexts": [
                    {
                        "name": "me",
                        "context": {"cluster": "braid", "user": "me", "namespace": kube.namespace},
                    }
                ],
                "current-context": "me",
            }
        )
    )
    return str(path)


def gated(kube: Kube, name: str, approver: str) -> None:
    kube.apply(
        json.dumps(
            {
                "apiVersion": "braid.dev/v1alpha1",
                "kind": "Workflow",
                "metadata": {"name": name},
                "spec": {
                    "steps": [
                        PREP,
                        {
                            "name": "review",
                            "dependsOn": ["prep"],
                            "approval": {
                                "message": "ship plan ${{ steps.prep.outputs.plan }}?",
                                "approvers": {"users": [approver]},
                            },
                        },
                        {"name": "ship", "dependsOn": ["review"], "sleep": {"durationSeconds": 0}},
                    ]
                },
            }
        )
    )


def inline_run(kube: Kube, prefix: str, workflow: dict[str, Any]) -> str:
    return kube.create(
        json.dumps(
            {
                "apiVersion": "braid.dev/v1alpha1",
                "kind": "WorkflowRun",
                "metadata": {"generateName": f"{prefix}-"},
                "spec": {"workflow": workflow},
            }
        )
    )


def start_run(kube: Kube, workflow: str) -> str:
    return kube.create(
        json.dumps(
            {
                "apiVersion": "braid.dev/v1alpha1",
                "kind": "WorkflowRun",
                "metadata": {"generateName": f"{workflow}-"},
                "spec": {"workflowRef": {"name": workflow}},
            }
        )
    )


def test_a_runs_page_moves_with_the_run(
    kube: Kube, operator: Operator, browser: WebDriver, start_ui: Callable[..., UiServer]
) -> None:
    ui = start_ui(kubeconfig=kube.kubeconfig)
    with model_server() as model:
        model.then(reply("Ship it on Friday.", prompt_tokens=21, completion_tokens=5))
        kube.apply(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "model-key"},
                    "stringData": {"api-key": model.key},
                }
            )
        )
        llm = {
            "endpoint": {
                "baseURL": model.url,
                "apiKey": {"valueFrom": {"secretKeyRef": {"name": "model-key", "key": "api-key"}}},
            },
            "model": "test-model",
            "messages": [
                {"role": "system", "content": "You plan releases."},
                {"role": "user", "content": "When do we ship plan ${{ steps.prep.outputs.plan }}?"},
            ],
        }
        run = inline_run(
            kube,
            "live",
            {
                "steps": [
                    PREP,
                    {"name": "think", "dependsOn": ["prep"], "llm": llm},
                    {
                        "name": "nap",
                        "dependsOn": ["think"],
                        "sleep": {"durationSeconds": 6},
                    },
                    {
                        "name": "done",
                        "dependsOn": ["nap"],
                        "sleep": {"durationSeconds": 0},
                    },
                ]
            },
        )
        browser.get(f"{ui.url}/runs?namespace={kube.namespace}")
        until(
            "the run in the list",
            lambda: browser.find_element(By.CSS_SELECTOR, f'tr[data-run="{run}"]'),
        )
        browser.get(f"{ui.url}/runs/{kube.namespace}/{run}")
        browser.execute_script("window.braidMarker = 'not reloaded'")

        def fill(step: str) -> str:
            rect = browser.find_element(By.CSS_SELECTOR, f'#dag g[data-step="{step}"] rect')
            return str(rect.get_attribute("fill"))

        until("nap to be drawn running (blue)", lambda: fill("nap") == "#cce5ff")
        assert browser.find_element(By.ID, "run-phase").text == "Running"
        assert fill("done") == "#ffffff"  # pending
        until(
            "the run to finish on the page",
            lambda: browser.find_element(By.ID, "run-phase").text == "Succeeded",
        )
    assert fill("nap") == "#d4edda"  # green: succeeded
    assert fill("done") == "#d4edda"
    assert browser.execute_script("return window.braidMarker") == "not reloaded"
    assert browser.find_element(By.ID, "run-progress").text == "4/4"
    until(
        "the timeline",
        lambda: (
            browser.find_element(By.CSS_SELECTOR, "#gantt img").get_attribute("naturalWidth")
            not in (None, "0")
        ),
    )

    browser.find_element(By.CSS_SELECTOR, '#dag g[data-step="think"]').click()
    panel = until(
        "the model step's panel",
        lambda: (
            "Step think" in browser.find_element(By.ID, "step-panel").text
            and browser.find_element(By.ID, "step-panel")
        ),
    )
    assert "You plan releases." in panel.text  # the messages as written
    assert "Ship it on Friday." in panel.text  # the reply
    assert "26 tokens" in panel.text  # its usage
    assert '"plan": "v2"' in panel.text  # the outputs of the step it builds on
    browser.find_element(By.CSS_SELECTOR, '[data-step-link="prep"]').click()
    until("prep's panel", lambda: "Step prep" in browser.find_element(By.ID, "step-panel").text)

    # Retry from the page: a new run of the same snapshot, reusing what succeeded.
    browser.find_element(By.ID, "retry").click()
    until("the retry's page", lambda: f"/runs/{kube.namespace}/{run}-retry-" in browser.current_url)
    until(
        "the retry to finish on its page",
        lambda: browser.find_element(By.ID, "run-phase").text == "Succeeded",
        timeout=60,
    )
    retried = browser.current_url.rsplit("/", 1)[-1]
    assert kube.json("get", "workflowrun", retried)["spec"]["retryOf"] == {"name": run}

    # The list is live too, and filters by phase.
    browser.get(f"{ui.url}/runs?namespace={kube.namespace}&phase=Succeeded")
    until(
        "both finished runs in the filtered list",
        lambda: len(browser.find_elements(By.CSS_SELECTOR, 'tr[data-phase="Succeeded"]')) == 2,
    )


def test_cancel_from_a_runs_page_stops_it(
    kube: Kube, operator: Operator, browser: WebDriver, start_ui: Callable[..., UiServer]
) -> None:
    ui = start_ui(kubeconfig=kube.kubeconfig)
    run = inline_run(kube, "long", {"steps": [{"name": "nap", "sleep": {"durationSeconds": 600}}]})
    browser.get(f"{ui.url}/runs/{kube.namespace}/{run}")
    until("nap running", lambda: browser.find_element(By.ID, "run-phase").text == "Running")
    browser.find_element(By.ID, "cancel").click()
    until("the run cancelled", lambda: browser.find_element(By.ID, "run-phase").text == "Cancelled")
    assert kube.json("get", "workflowrun", run)["spec"]["cancelled"] is True


def test_an_approver_decides_from_the_inbox_and_the_run_goes_on(
    people: Kube,
    operator: Operator,
    browser: WebDriver,
    start_ui: Callable[..., UiServer],
    tmp_path: Path,
) -> None:
    kube = people
    token = token_for(kube, "alice")
    approvers(kube, "alice")
    alice = f"system:serviceaccount:{kube.namespace}:alice"
    gated(kube, "ship", alice)
    run = start_run(kube, "ship")
    kube.wait_for("the gate", lambda: kube.run_status(run).get("pendingApprovals"), timeout=60)
    ui = start_ui(kubeconfig=kubeconfig_for(kube, token, tmp_path / "alice.kubeconfig"))

    browser.get(f"{ui.url}/approvals")  # the kubeconfig's namespace is the one shown
    card = until(
        "the gate in the inbox",
        lambda: browser.find_element(By.CSS_SELECTOR, f'article.gate[data-run="{run}"]'),
    )
    assert browser.find_element(By.ID, "whoami").text == alice
    assert "ship plan v2?" in card.text  # the question, rendered
    assert '"plan": "v2"' in card.text  # the inputs the decision covers
    digest = kube.run_status(run)["pendingApprovals"][0]["digest"]
    assert digest in card.text
    assert "✓ the inputs below" in card.text  # what is shown is what the digest covers
    assert "so far: none" in card.text
    card.find_element(By.CSS_SELECTOR, "button.approve").click()
    said = until("the confirmation", lambda: browser.find_element(By.ID, "said"))
    assert said.text == f"approved review of {run} as {alice}"

    status = kube.wait_finished(run, timeout=60)
    assert status["phase"] == "Succeeded"
    review = next(s for s in status["steps"] if s["name"] == "review")
    assert [(a["user"], a["decision"]) for a in review["approvals"]] == [(alice, "Approved")]
    annotations = kube.json("get", "workflowrun", run)["metadata"]["annotations"]
    assert annotations["approve.braid.dev/review"] == f"{alice}:{digest}"
    browser.refresh()
    until("an empty inbox", lambda: browser.find_element(By.ID, "no-gates"))

    # A rejection needs a reason, and fails the step with it.
    second = start_run(kube, "ship")
    kube.wait_for("the gate", lambda: kube.run_status(second).get("pendingApprovals"), timeout=60)
    browser.refresh()
    card = until(
        "the second gate",
        lambda: browser.find_element(By.CSS_SELECTOR, f'article.gate[data-run="{second}"]'),
    )
    card.find_element(By.NAME, "reason").send_keys("the plan skips the canary")
    card.find_element(By.CSS_SELECTOR, "button.reject").click()
    # The page still shows the approval's confirmation (its URL carries it) until the
    # rejection's answer replaces the page: wait for that one, not the first #said found.
    said = until(
        "the rejection's confirmation",
        lambda: (e := browser.find_element(By.ID, "said")).text.startswith("rejected") and e,
    )
    assert said.text == f"rejected review of {second} as {alice}"
    status = kube.wait_finished(second, timeout=60)
    assert status["phase"] == "Failed"
    review = next(s for s in status["steps"] if s["name"] == "review")
    assert [(a["user"], a["decision"], a.get("reason")) for a in review["approvals"]] == [
        (alice, "Rejected", "the plan skips the canary")
    ]


def test_someone_not_listed_sees_the_gate_read_only_and_a_forged_approval_is_refused(
    people: Kube, operator: Operator, browser: WebDriver, start_ui: Callable[..., UiServer]
) -> None:
    kube = people
    token = token_for(kube, "mallory")
    approvers(kube, "mallory")  # may annotate runs, but is not this gate's approver
    gated(kube, "ship", f"system:serviceaccount:{kube.namespace}:alice")
    run = start_run(kube, "ship")
    kube.wait_for("the gate", lambda: kube.run_status(run).get("pendingApprovals"), timeout=60)
    ui = start_ui(
        "--auth=token",
        f"--server={_server(kube)}",
        f"--certificate-authority={_ca(kube)}",
        f"--namespace={kube.namespace}",
        kubeconfig="/nonexistent",
    )

    browser.get(f"{ui.url}/approvals")
    until("the sign-in page", lambda: browser.find_element(By.ID, "token"))
    browser.find_element(By.ID, "token").send_keys("not-a-token")
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()
    assert (
        "did not accept"
        in until("the refusal", lambda: browser.find_element(By.ID, "login-error")).text
    )
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()
    mallory = f"system:serviceaccount:{kube.namespace}:mallory"
    until("signed in", lambda: browser.find_element(By.ID, "whoami").text == mallory)
    cookie = browser.get_cookie("braid_session")
    assert cookie is not None
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    assert token not in json.dumps(browser.get_cookies())
    assert token not in browser.current_url

    browser.get(f"{ui.url}/approvals")
    card = until(
        "the gate", lambda: browser.find_element(By.CSS_SELECTOR, f'article.gate[data-run="{run}"]')
    )
    assert "readonly" in str(card.get_attribute("class"))
    assert "read only" in card.text
    assert not card.find_elements(By.CSS_SELECTOR, "button")
    digest = kube.run_status(run)["pendingApprovals"][0]["digest"]

    # Forge what the page would have sent had it offered a button (with this session's own
    # CSRF token, as script on the page could): the API server's policy says no.
    browser.execute_script(
        """
        const csrf = JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token'];
        const form = document.createElement('form');
        form.method = 'post';
        form.action = arguments[0];
        for (const [k, v] of [['csrf', csrf], ['digest', arguments[1]], ['decision', 'approve']]) {
          const input = document.createElement('input');
          input.type = 'hidden'; input.name = k; input.value = v; form.appendChild(input);
        }
        document.body.appendChild(form);
        form.submit();
        """,
        f"/approvals/{kube.namespace}/{run}/review",
        digest,
    )
    said = until("the refusal", lambda: browser.find_element(By.ID, "said"))
    assert said.text.startswith("The API server refused:")
    assert f"{mallory} may not decide review: not an allowed approver" in said.text
    assert "approve.braid.dev/review" not in (
        kube.json("get", "workflowrun", run)["metadata"].get("annotations") or {}
    )
    assert kube.run_status(run)["pendingApprovals"][0]["step"] == "review"

    # Without the session's CSRF token, or from another origin, nothing is even sent.
    assert (
        _post(
            ui.url,
            f"/approvals/{kube.namespace}/{run}/review",
            {"decision": "approve"},
            cookie["value"],
        )
        == 403
    )
    assert (
        _post(
            ui.url,
            f"/approvals/{kube.namespace}/{run}/review",
            {"decision": "approve"},
            cookie["value"],
            origin="https://evil.example",
        )
        == 403
    )
    # A page on another name for this address (DNS rebinding) is not served.
    assert _get(ui.url, "/approvals", host="evil.example") == 400


def test_a_param_that_breaks_its_schema_is_named_on_the_form(
    kube: Kube, operator: Operator, browser: WebDriver, start_ui: Callable[..., UiServer]
) -> None:
    kube.apply(
        json.dumps(
            {
                "apiVersion": "braid.dev/v1alpha1",
                "kind": "Workflow",
                "metadata": {"name": "drafts"},
                "spec": {
                    "params": [
                        {
                            "name": "count",
                            "description": "How many drafts",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 5},
                        },
                        {
                            "name": "tone",
                            "default": "formal",
                            "schema": {"type": "string", "enum": ["formal", "casual"]},
                        },
                    ],
                    "steps": [{"name": "write", "sleep": {"durationSeconds": 0}}],
                },
            }
        )
    )
    ui = start_ui(kubeconfig=kube.kubeconfig)
    browser.get(f"{ui.url}/workflows/{kube.namespace}/drafts")
    field = until("the count field", lambda: browser.find_element(By.ID, "param-count"))
    assert "How many drafts" in browser.find_element(By.ID, "start-form").text
    field.send_keys("0")
    browser.find_element(By.ID, "start").click()
    error = until(
        "the schema error",
        lambda: browser.find_element(By.CSS_SELECTOR, '.field-error[data-param="count"]'),
    )
    assert "params.count: 0 is less than the minimum of 1" in error.text
    assert browser.find_element(By.ID, "param-count").get_attribute("value") == "0"  # kept
    assert kube.json("get", "workflowruns")["items"] == []  # nothing was created

    field = browser.find_element(By.ID, "param-count")
    field.clear()
    field.send_keys("three")
    browser.find_element(By.ID, "start").click()
    until(
        "the type error",
        lambda: (
            "params.count: 'three' is not an integer"
            in browser.find_element(By.CSS_SELECTOR, '.field-error[data-param="count"]').text
        ),
    )

    field = browser.find_element(By.ID, "param-count")
    field.clear()
    field.send_keys("3")
    browser.find_element(By.ID, "start").click()
    until("the new run's page", lambda: "/runs/" in browser.current_url)
    created = kube.json("get", "workflowruns")["items"]
    assert [r["spec"]["params"] for r in created] == [{"count": 3}]
    until(
        "the run to finish on its page",
        lambda: browser.find_element(By.ID, "run-phase").text == "Succeeded",
    )


def _server(kube: Kube) -> str:
    admin = yaml.safe_load(Path(kube.kubeconfig).read_text())
    return str(admin["clusters"][0]["cluster"]["server"])


def _ca(kube: Kube) -> str:
    cluster = yaml.safe_load(Path(kube.kubeconfig).read_text())["clusters"][0]["cluster"]
    if "certificate-authority" in cluster:
        return str(cluster["certificate-authority"])
    path = Path(tempfile.mkdtemp()) / "ca.crt"
    path.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    return str(path)


def _post(
    base: str, path: str, form: dict[str, str], session: str, origin: str | None = None
) -> int:
    body = "&".join(f"{k}={v}" for k, v in form.items()).encode()
    request = urllib.request.Request(f"{base}{path}", data=body, method="POST")
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    request.add_header("Cookie", f"braid_session={session}")
    if origin:
        request.add_header("Origin", origin)
    return _status(request)


def _get(base: str, path: str, host: str) -> int:
    request = urllib.request.Request(f"{base}{path}")
    request.add_header("Host", host)
    return _status(request)


def _status(request: urllib.request.Request) -> int:
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code

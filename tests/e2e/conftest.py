"""Fixtures for e2e tests on the real local control plane (tests/cluster/).

The cluster is started once per session (built first if needed) unless BRAID_KUBECONFIG points
at a running one; each test gets its own namespace and its own operator process.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chart import CHART, helm

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "tests" / "cluster" / "cluster.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


class Kube:
    def __init__(self, kubeconfig: str, namespace: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.env = {**os.environ, "KUBECONFIG": kubeconfig}

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        ns = ["-n", self.namespace] if self.namespace else []
        result = subprocess.run(
            ["kubectl", *ns, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def apply(self, manifest: str | Path) -> str:
        if isinstance(manifest, Path):
            return self.run("apply", "-f", str(manifest)).stdout
        return self.run("apply", "-f", "-", stdin=manifest).stdout

    def create(self, manifest: str | Path) -> str:
        args = ["create", "-o", "name", "-f", str(manifest) if isinstance(manifest, Path) else "-"]
        out = self.run(*args, stdin=None if isinstance(manifest, Path) else manifest).stdout
        return out.strip().rsplit("/", 1)[-1]

    def run_status(self, name: str) -> dict[str, Any]:
        return self.json("get", "workflowrun", name).get("status") or {}

    def wait_finished(self, name: str, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.run_status(name)
            cond = next((c for c in status.get("conditions", []) if c["type"] == "Succeeded"), None)
            if cond and cond["status"] != "Unknown":
                return status
            time.sleep(0.5)
        raise AssertionError(
            f"run {name} did not finish in {timeout}s: {json.dumps(status)[:3000]}"
        )

    def wait_for(self, what: str, check: Any, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}")


def install_crds(kubeconfig: str) -> None:
    admin = Kube(kubeconfig)
    admin.run("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    # Poll rather than `kubectl wait`: that errors out when a just-created CRD has no
    # status.conditions yet, instead of waiting for them.
    jsonpath = '{.status.conditions[?(@.type=="Established")].status}'
    for crd in ("workflows.braid.dev", "workflowruns.braid.dev", "workflowschedules.braid.dev"):
        admin.wait_for(
            f"{crd} to be established",
            lambda crd=crd: (
                admin.run("get", "crd", crd, "-o", f"jsonpath={jsonpath}", check=False).stdout
                == "True"
            ),
            timeout=60,
        )


@pytest.fixture(scope="session")
def kubeconfig() -> Iterator[str]:
    """A running cluster with the current CRDs: BRAID_KUBECONFIG's, or one started here."""
    given = os.environ.get("BRAID_KUBECONFIG")
    if given:
        install_crds(given)
        yield given
        return
    up = subprocess.run(
        [sys.executable, str(CLUSTER), "up"],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
        timeout=3600,
    )
    path = up.stdout.strip().splitlines()[-1]
    try:
        install_crds(path)
        yield path
    finally:
        if not os.environ.get("BRAID_KEEP_CLUSTER"):
            subprocess.run([sys.executable, str(CLUSTER), "down"], check=False, timeout=120)


@pytest.fixture
def kube(kubeconfig: str) -> Iterator[Kube]:
    namespace = f"e2e-{uuid.uuid4().hex[:8]}"
    Kube(kubeconfig).run("create", "namespace", namespace)
    k = Kube(kubeconfig, namespace)
    k.wait_for(
        "the default ServiceAccount",
        lambda: k.run("get", "serviceaccount", "default", check=False).returncode == 0,
    )
    yield k
    Kube(kubeconfig).run("delete", "namespace", namespace, "--wait=false", check=False)


class Operator:
    """`braid operator` as a real process, watching the test's namespace (by default) or the
    given namespaces (none: the whole cluster), with the kube's credentials or `kubeconfig`."""

    def __init__(
        self,
        kube: Kube,
        log_dir: Path,
        *,
        namespaces: list[str] | None = None,
        kubeconfig: str | None = None,
        args: tuple[str, ...] = (),
        name: str = "operator",
        env: dict[str, str] | None = None,
        webhook_allow: tuple[str, ...] = ("127.0.0.1",),
        approval_policy: str = "braid-approvals",
    ) -> None:
        self.kube = kube
        self.namespaces = [str(kube.namespace)] if namespaces is None else namespaces
        self.env = {**kube.env, "KUBECONFIG": kubeconfig or kube.kubeconfig, **(env or {})}
        # The examples' webhook servers listen on loopback, which the operator denies by default.
        # The approval policy is the one the `policy` fixture installs from the chart: when a
        # test installed it, the operator trusts approver names (as with the chart).
        self.args = (
            *[f"--webhook-allow={a}" for a in webhook_allow],
            *([f"--approval-policy={approval_policy}"] if approval_policy else []),
            *args,
        )
        self.log_path = log_dir / f"{name}-{kube.namespace}.log"
        self.process: subprocess.Popen[bytes] | None = None
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.metrics_port = sock.getsockname()[1]

    def metrics(self) -> dict[str, float]:
        """The operator's /metrics as {'name{labels}': value}."""
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as r:
            text = r.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                samples[key] = float(value)
        return samples

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "braid.cli",
                "operator",
                *[f"--namespace={ns}" for ns in self.namespaces],
                *self.args,
                "--log-format",
                "json",
                "--metrics-port",
                str(self.metrics_port),
                "--metrics-address",
                "127.0.0.1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=ROOT,
        )

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def operator(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    op = Operator(kube, tmp_path_factory.mktemp("operator"))
    op.start()
    yield op
    op.stop()


class Executor(threading.Thread):
    """Plays the container runtime: runs each step Pod's command locally (the image is not
    pulled) and writes its exit code and $BRAID_OUTPUT into the Pod's annotations, which the
    kwok stage turns into the terminated state. Pods whose podTemplate already scripts an
    outcome are left to kwok."""

    def __init__(self, kube: Kube) -> None:
        super().__init__(daemon=True)
        self.kube = kube
        self.stopping = threading.Event()
        self.done: set[str] = set()
        self.executed: list[str] = []

    def run(self) -> None:
        while not self.stopping.is_set():
            pods = self.kube.json("get", "pods", "-l", "braid.dev/run").get("items", [])
            for pod in pods:
                name = pod["metadata"]["name"]
                annotations = pod["metadata"].get("annotations") or {}
                if (
                    name in self.done
                    or "braid.dev/test-exit-code" in annotations
                    or pod["metadata"].get("deletionTimestamp")
                ):
                    continue
                self.done.add(name)
                self.execute(pod)
            self.stopping.wait(0.3)

    def data(self, kind: str, name: str) -> dict[str, str]:
        """A Secret's (decoded) or ConfigMap's data, read as the kubelet reads it."""
        found = self.kube.run("get", kind, name, "-o", "json", check=False)
        if found.returncode != 0:
            return {}
        data = json.loads(found.stdout).get("data") or {}
        if kind == "secret":
            return {k: base64.b64decode(v).decode() for k, v in data.items()}
        return dict(data)

    def environment(self, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
        """The container's environment: envFrom, then env with valueFrom resolved."""
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            kind = "secret" if "secretRef" in source else "configmap"
            ref = source.get("secretRef") or source.get("configMapRef")
            values = self.data(kind, ref["name"])
            env.update({f"{source.get('prefix', '')}{k}": v for k, v in values.items()})
        for var in container.get("env") or []:
            source = var.get("valueFrom")
            if source is None:
                env[var["name"]] = var.get("value", "")
            elif "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                env[var["name"]] = str(pod["metadata"].get(path.removeprefix("metadata."), ""))
            else:
                kind = "secret" if "secretKeyRef" in source else "configmap"
                ref = source.get("secretKeyRef") or source.get("configMapKeyRef")
                env[var["name"]] = self.data(kind, ref["name"]).get(ref["key"], "")
        return env

    def execute(self, pod: dict[str, Any]) -> None:
        """As a kubelet would: Braid's init container fetches the inputs, its sidecar waits
        (ready file), the step runs, the sidecar is sent SIGTERM and stores the artifacts —
        the same commands the Pod names, with its directories mapped to a temporary one."""
        container = pod["spec"]["containers"][0]
        init = {c["name"]: c for c in pod["spec"].get("initContainers") or []}
        with tempfile.TemporaryDirectory(prefix="braid-pod-") as tmp:
            mapped = {
                "/braid/artifacts": f"{tmp}/artifacts",
                "/braid/inputs": f"{tmp}/inputs",
                "/braid/agent/ready": f"{tmp}/ready",
            }
            Path(mapped["/braid/artifacts"]).mkdir(parents=True)

            def env_of(c: dict[str, Any], log: str = "") -> dict[str, str]:
                env = {k: mapped.get(v, v) for k, v in self.environment(pod, c).items()}
                return {**os.environ, **env, "BRAID_TERMINATION_LOG": log or f"{tmp}/log"}

            def argv_of(c: dict[str, Any]) -> list[str]:
                argv = [*(c.get("command") or []), *(c.get("args") or [])]
                return (
                    [sys.executable, "-m", "braid.cli", *argv[1:]]
                    if argv[:1] == ["braid"]
                    else argv
                )

            annotations: dict[str, str] = {}
            code = 0
            if "braid-inputs" in init:
                c = init["braid-inputs"]
                code = subprocess.run(
                    argv_of(c), env=env_of(c), timeout=120, check=False
                ).returncode
            sidecar = None
            if "braid-artifacts" in init and code == 0:
                c = init["braid-artifacts"]
                sidecar = subprocess.Popen(argv_of(c), env=env_of(c, f"{tmp}/sidecar-log"))
                deadline = time.monotonic() + 60
                while (
                    not Path(mapped["/braid/agent/ready"]).exists() and time.monotonic() < deadline
                ):
                    time.sleep(0.05)
            with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
                env = {**env_of(container), "BRAID_OUTPUT": out.name}
                if code == 0:
                    try:
                        code = subprocess.run(
                            argv_of(container),
                            env=env,
                            capture_output=True,
                            timeout=60,
                            check=False,
                        ).returncode
                    except (OSError, subprocess.TimeoutExpired):
                        code = 127
                output = Path(out.name).read_text()[:4096]
            if sidecar is not None:
                sidecar.send_signal(signal.SIGTERM)
                sidecar.wait(timeout=120)
                log = Path(f"{tmp}/sidecar-log")
                annotations["braid.dev/test-artifacts"] = log.read_text() if log.exists() else ""
        self.executed.append(pod["metadata"]["name"])
        self.kube.run(
            "annotate",
            "pod",
            pod["metadata"]["name"],
            "--overwrite",
            *[f"{k}={v}" for k, v in annotations.items()],
            f"braid.dev/test-output={output}",
            f"braid.dev/test-exit-code={code}",
            check=False,
        )


@pytest.fixture
def executor(kube: Kube) -> Iterator[Executor]:
    ex = Executor(kube)
    ex.start()
    yield ex
    ex.stopping.set()
    ex.join(timeout=10)


USERS = ["alice", "bob", "carol", "mallory", "dave"]


@pytest.fixture(scope="session")
def policy(kubeconfig: str) -> None:
    """The chart's approval policy and user roles, as `helm install` would create them."""
    admin = Kube(kubeconfig)
    admin.apply(
        helm(
            "template",
            "braid",
            str(CHART),
            "--show-only=templates/approval-policy.yaml",
            "--show-only=templates/user-roles.yaml",
            # as a sharded installation would: runs cannot be moved off their shard
            "--set=approvalPolicy.immutableLabels[0]=shard",
        )
    )

    def processed() -> bool:
        vap = admin.json("get", "validatingadmissionpolicy", "braid-approvals")
        return bool(
            (vap.get("status") or {}).get("observedGeneration") == vap["metadata"]["generation"]
        )

    admin.wait_for("the approval policy to be type-checked", processed, timeout=60)
    time.sleep(2)  # and for the API server's admission plugin to pick it up


@pytest.fixture
def people(kube: Kube, policy: None) -> Kube:
    """The test users (and group sre) are approvers in the namespace: the chart's braid-approve
    ClusterRole, bound as the chart's README says."""
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "approvers"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "braid-approve",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": u} for u in USERS
        ]
        + [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "sre"}],
    }
    kube.apply(json.dumps(binding))
    return kube

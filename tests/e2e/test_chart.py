"""The Helm chart on the real control plane: its manifests pass server-side dry-run, and once
installed, the operator running out-of-cluster as the chart's ServiceAccount (a TokenRequest
token) completes runs — so the RBAC is enough — while the API server's audit log shows it used
every permission it was granted and nothing else."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from braid.cli.operator import priority_from_name
from tests.chart import CHART, built, helm, operator_rules, render
from tests.e2e.conftest import ROOT, Kube, Operator
from tests.e2e.test_lifecycle import run_of, scripted_workflow


@pytest.fixture(scope="session")
def monitoring_crds(kubeconfig: str) -> None:
    """The Prometheus Operator's own CRDs (from its Go module), so ServiceMonitor and
    PrometheusRule are validated against their real schemas."""
    directory = Path(built("monitoring-crds"))
    admin = Kube(kubeconfig)
    for name in ("servicemonitors", "prometheusrules"):
        admin.run(
            "apply", "--server-side", "-f", str(directory / f"monitoring.coreos.com_{name}.yaml")
        )
    for name in ("servicemonitors", "prometheusrules"):
        established(admin, f"{name}.monitoring.coreos.com")


def established(admin: Kube, crd: str) -> None:
    jsonpath = '{.status.conditions[?(@.type=="Established")].status}'
    admin.wait_for(
        f"{crd} to be established",
        lambda: (
            admin.run("get", "crd", crd, "-o", f"jsonpath={jsonpath}", check=False).stdout == "True"
        ),
    )


def as_list(docs: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"watch.namespaces[0]": "{ns}"},
        {"watch.namespaces[0]": "{ns}", "ha.enabled": "true"},
        {"ha.enabled": "true"},
        {
            "metrics.serviceMonitor.enabled": "true",
            "prometheusRule.enabled": "true",
            "grafanaDashboard.enabled": "true",
        },
    ],
    ids=["default", "one-namespace", "namespace-ha", "cluster-ha", "monitoring"],
)
def test_rendered_manifests_pass_server_side_dry_run(
    kube: Kube, monitoring_crds: None, values: dict[str, str]
) -> None:
    ns = str(kube.namespace)
    # A release name of its own: cluster-scoped names must not collide with other tests'.
    release = f"dry-{uuid.uuid4().hex[:6]}"
    docs = render(
        {k: v.replace("{ns}", ns) for k, v in values.items()},
        namespace=ns,
        release=release,
        extra=("--include-crds",),
    )
    admin = Kube(kube.kubeconfig)
    # Custom resources of a kind the same request defines cannot be dry-run: the kopf peering
    # CRDs (Helm's crds/ folder, which Helm installs first) go in for real beforehand.
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    for crd in crds:
        if crd["spec"]["group"] == "kopf.dev":
            admin.apply(json.dumps(crd))
            established(admin, crd["metadata"]["name"])
    out = admin.run("apply", "--server-side", "--dry-run=server", "-f", "-", stdin=as_list(docs))
    assert out.returncode == 0
    lines = out.stdout.strip().splitlines()
    assert len(lines) == len(docs), out.stdout
    assert all("(server dry run)" in line for line in lines), out.stdout


class Install:
    """The chart installed for real in a test namespace, and a kubeconfig for its
    ServiceAccount holding a token from the TokenRequest API."""

    def __init__(self, kube: Kube, values: dict[str, str], tmp: Path) -> None:
        self.kube = kube
        self.namespace = str(kube.namespace)
        self.release = f"braid-{uuid.uuid4().hex[:6]}"
        self.values = values
        self.env = kube.env
        self.kubeconfig = str(tmp / "sa.kubeconfig")

    def install(self) -> list[dict[str, Any]]:
        args = [a for k, v in self.values.items() for a in ("--set", f"{k}={v}")]
        helm(
            "install",
            self.release,
            str(CHART),
            "--namespace",
            self.namespace,
            "--kubeconfig",
            self.kube.kubeconfig,
            # The session installed the CRDs already; another owner may not take them over.
            "--set",
            "crds.install=false",
            "--set",
            "approvalPolicy.enabled=false",
            "--set",
            "rbac.userRoles=false",
            *args,
            env=self.env,
        )
        return render(
            {**self.values, "crds.install": "false"}, namespace=self.namespace, release=self.release
        )

    def prepare(self) -> tuple[list[dict[str, Any]], str, str]:
        """Install with the test's namespace filled in; the rendered objects, the operator's
        ServiceAccount and a kubeconfig holding a token for it."""
        self.values = {k: v.replace("{ns}", self.namespace) for k, v in self.values.items()}
        docs = self.install()
        account = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
        return docs, account, self.service_account_kubeconfig(account)

    def service_account_kubeconfig(self, name: str) -> str:
        token = self.kube.run("create", "token", name, "--duration=1h").stdout.strip()
        admin = yaml.safe_load(Path(self.kube.kubeconfig).read_text())
        cluster = admin["clusters"][0]["cluster"]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "braid", "cluster": cluster}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "braid", "user": name}}],
            "current-context": "sa",
        }
        Path(self.kubeconfig).write_text(yaml.safe_dump(config))
        return self.kubeconfig

    def upgrade(self, values: dict[str, str]) -> None:
        helm(
            "upgrade",
            self.release,
            str(CHART),
            "--namespace",
            self.namespace,
            "--kubeconfig",
            self.kube.kubeconfig,
            "--reuse-values",
            *[a for k, v in values.items() for a in ("--set", f"{k}={v}")],
            env=self.env,
        )

    def uninstall(self) -> None:
        helm(
            "uninstall",
            self.release,
            "--namespace",
            self.namespace,
            "--kubeconfig",
            self.kube.kubeconfig,
            check=False,
            env=self.env,
        )


def audited(kube: Kube, username: str) -> list[dict[str, Any]]:
    """The audit events of one user (each test's ServiceAccount is in a namespace of its own)."""
    log = Path(kube.kubeconfig).parent / "logs" / "audit.log"
    assert log.exists(), f"{log}: the test cluster (tests/cluster/cluster.py) writes an audit log"
    events = []
    with log.open() as f:
        for line in f:
            event = json.loads(line)
            if event["user"]["username"] == username:
                events.append(event)
    return events


def used(events: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource[/subresource], verb) of the resource requests in the audit events;
    discovery (non-resource URLs, allowed to everyone) is left out."""
    found = set()
    for event in events:
        ref = event.get("objectRef")
        if not ref:
            continue
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        found.add((ref.get("apiGroup", ""), resource, event["verb"]))
    return found


@pytest.fixture
def installed(
    kube: Kube, executor: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Install]:
    inst = Install(kube, request.param, tmp_path)
    yield inst
    inst.uninstall()


def exercise(kube: Kube) -> None:
    """Every kind of request the operator makes: a run that completes (pods, events, status,
    the workflow) and a cancelled one (the running pod is deleted)."""
    kube.apply(ROOT / "examples" / "01-sequential" / "workflow.yaml")
    run = kube.create(ROOT / "examples" / "01-sequential" / "run.yaml")
    status = kube.wait_finished(run, timeout=90)
    assert status["outputs"]["brief"], status
    cond = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert cond["status"] == "True", status

    kube.apply(scripted_workflow("slow", 2, delay="600s"))
    slow = kube.create(run_of("slow"))
    kube.wait_for(
        "the first pod", lambda: kube.json("get", "pods", "-l", f"braid.dev/run={slow}")["items"]
    )
    kube.run("patch", "workflowrun", slow, "--type=merge", "-p", '{"spec": {"cancelled": true}}')
    cond = next(c for c in kube.wait_finished(slow)["conditions"] if c["type"] == "Succeeded")
    assert cond["reason"] == "Cancelled"
    kube.wait_for(
        "the pod to go",
        lambda: not kube.json("get", "pods", "-l", f"braid.dev/run={slow}")["items"],
    )
    events = kube.json("get", "events", "--field-selector", f"involvedObject.name={run}")
    assert events["items"], "the operator recorded no events"

    # A pod squatting on an attempt's name: the operator reads whose it is (get pods), and the
    # attempt fails PodConflict instead of taking the squatter's result.
    kube.apply(scripted_workflow("squatted", 1, delay="0s"))
    kube.apply(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "squat-s0-1"},
                "spec": {"containers": [{"name": "step", "image": "x"}]},
            }
        )
    )
    kube.create(run_of("squatted", name="squat"))
    cond = next(c for c in kube.wait_finished("squat")["conditions"] if c["type"] == "Succeeded")
    assert "PodConflict" in cond["message"], cond

    spec = json.loads(scripted_workflow("brief", 1, delay="0s"))
    spec["spec"]["ttlStrategy"] = {"secondsAfterCompletion": 0}
    kube.apply(json.dumps(spec))
    gone = kube.create(run_of("brief"))
    kube.wait_for(
        "the finished run to be deleted (TTL)",
        lambda: kube.run("get", "workflowrun", gone, check=False).returncode != 0,
    )

    # runAs: Job: the operator creates the attempt's Job, reads whose it is once, and
    # deletes it when the run is cancelled.
    job_step = {
        "name": "j",
        "container": {"image": "x", "runAs": "Job", "command": ["sleep", "600"]},
    }
    jobbed = kube.create(
        json.dumps(
            {
                "apiVersion": "braid.dev/v1alpha1",
                "kind": "WorkflowRun",
                "metadata": {"generateName": "jobbed-"},
                "spec": {"workflow": {"steps": [job_step]}},
            }
        )
    )
    kube.wait_for(
        "the job's pod",
        lambda: kube.json("get", "pods", "-l", f"batch.kubernetes.io/job-name={jobbed}-j-1")[
            "items"
        ],
        timeout=60,
    )
    kube.run("patch", "workflowrun", jobbed, "--type=merge", "-p", '{"spec": {"cancelled": true}}')
    kube.wait_finished(jobbed, timeout=60)

    # A schedule every two seconds that replaces its running run: it reads and watches
    # schedules, writes their status, creates runs and cancels (patches) the one replaced.
    kube.apply(
        json.dumps(
            {
                "apiVersion": "braid.dev/v1alpha1",
                "kind": "WorkflowSchedule",
                "metadata": {"name": "tick"},
                "spec": {
                    "schedules": ["*/2 * * * * *"],
                    "concurrencyPolicy": "Replace",
                    "runTemplate": {"spec": {"workflowRef": {"name": "slow"}}},
                },
            }
        )
    )
    kube.wait_for(
        "a scheduled run to be replaced",
        lambda: any(
            (r.get("spec") or {}).get("cancelled")
            for r in kube.json("get", "workflowruns", "-l", "braid.dev/schedule=tick")["items"]
        ),
        timeout=60,
    )
    kube.run("delete", "workflowschedule", "tick")


@pytest.mark.parametrize(
    "installed",
    [
        # Both check the approval policy the session installed (a read of it, by name).
        {"watch.namespaces[0]": "{ns}", "approvalPolicy.name": "braid-approvals"},
        {"approvalPolicy.name": "braid-approvals"},
    ],
    ids=["one-namespace", "cluster-wide"],
    indirect=True,
)
def test_the_operator_runs_as_the_charts_service_account_with_exactly_its_rights(
    kube: Kube, installed: Install, tmp_path: Path
) -> None:
    ns = installed.namespace
    docs, account, kubeconfig = installed.prepare()
    granted = operator_rules(docs)
    clusterwide = "watch.namespaces[0]" not in installed.values
    operator = Operator(
        kube,
        tmp_path,
        namespaces=[] if clusterwide else [ns],
        kubeconfig=kubeconfig,
        name="sa-operator",
    )
    operator.start()
    try:
        exercise(kube)
    finally:
        operator.stop()

    events = audited(kube, f"system:serviceaccount:{ns}:{account}")
    # Cluster-wide, the operator also sees other tests' namespaces, where a namespace being
    # deleted refuses new objects with a 403 of its own: only this namespace's requests and
    # cluster-scoped ones must all have been allowed.
    mine = [e for e in events if (e.get("objectRef") or {}).get("namespace") in (None, ns)]
    denied = [e for e in mine if e.get("responseStatus", {}).get("code") == 403]
    assert not denied, [(e["verb"], e["requestURI"]) for e in denied]
    if not clusterwide:
        assert mine == events, {e["requestURI"] for e in events} - {e["requestURI"] for e in mine}
    requests = used(events)
    assert requests <= granted, f"used but not granted: {sorted(requests - granted)}"
    assert granted <= requests, f"granted but never used: {sorted(granted - requests)}"

    # An upgrade keeps the release's values and changes what it is told to.
    installed.upgrade({"ha.enabled": "true"})
    deployment = kube.json("get", "deployment", installed.release)
    assert deployment["spec"]["replicas"] == 2
    assert "--peering=braid" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]


@pytest.mark.parametrize(
    "installed",
    [
        {
            "watch.namespaces[0]": "{ns}",
            "ha.enabled": "true",
            "approvalPolicy.name": "braid-approvals",
        }
    ],
    ids=["namespace-ha"],
    indirect=True,
)
def test_hot_standby_two_replicas_one_works_then_the_other_takes_over(
    kube: Kube, installed: Install, tmp_path: Path
) -> None:
    ns = installed.namespace
    docs, account, kubeconfig = installed.prepare()
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    args = tuple(
        a
        for a in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        if a.startswith(("--peering", "--priority"))
    )
    replicas = [
        Operator(
            kube,
            tmp_path,
            namespaces=[ns],
            kubeconfig=kubeconfig,
            args=args,
            name=f"replica-{i}",
            env={"POD_NAME": f"{installed.release}-7d9f-{i}"},
        )
        for i in range(2)
    ]
    for replica in replicas:
        replica.start()
    try:
        peers = kube.wait_for(
            "both replicas in the peering object",
            lambda: (
                len(status := kube.json("get", "kopfpeering", "braid").get("status") or {}) == 2
                and status
            ),
        )
        priorities = sorted(peer["priority"] for peer in peers.values())
        assert priorities[0] != priorities[1], peers
        exercise(kube)
        # Only the replica with the higher priority worked; the other stood by.
        working = [r for r in replicas if "Created step pod" in r.log()]
        assert len(working) == 1, [r.log() for r in replicas]
        leader = working[0]
        standby = next(r for r in replicas if r is not leader)
        ranks = {priority_from_name(r.env["POD_NAME"]): r for r in replicas}
        assert set(ranks) == set(priorities)
        assert ranks[max(ranks)] is leader

        leader.stop()  # a graceful stop leaves the peering object: the standby resumes
        run = kube.create(run_of("slow"))
        kube.wait_for(
            "the standby to start the run",
            lambda: kube.json("get", "pods", "-l", f"braid.dev/run={run}")["items"],
            timeout=60,
        )
        assert "Created step pod" in standby.log()
    finally:
        for replica in replicas:
            replica.stop()
    events = audited(kube, f"system:serviceaccount:{ns}:{account}")
    assert not [e for e in events if e.get("responseStatus", {}).get("code") == 403]
    assert used(events) == operator_rules(docs)

"""Braid, Argo Workflows and Tekton side by side on the same local control plane: the same
shapes at the same concurrency, one system at a time, every request counted the same way.

    python tests/cluster/cluster.py up        # builds the control plane when missing
    export KUBECONFIG=~/.cache/braid/cluster/admin.kubeconfig
    kubectl apply --server-side -f crds/      # Braid's CRDs (Argo's and Tekton's: installed here)
    python bench/peers/compare.py             # everything: 5 systems x 3 shapes x 10/100/500
    python bench/peers/compare.py --systems braid,tekton --shapes chain3 --sizes 100

The peers are built from the Go module proxy into ~/.cache/braid/bin/peers when missing
(`bench/peers/build.sh`; Argo ~9 min, Tekton ~2-8 min cold). Results: one JSON line per
measurement on stdout and appended to /tmp/braid-peers.jsonl; unless `--no-write`, also to
bench/peers/rows.jsonl (every measurement kept, in the repository), and the table between the
`peers-bench` markers of bench/README.md is written from that file: the last measurement of
each cell. `--from FILE` only tabulates. `--limit S` (default 1500) ends a measurement after S
seconds: the runs that finished count, the row says how many.

Systems: ``braid`` (the operator, as `braid operator`), ``argo`` (v3.7.18 defaults: requeue
10 s, QPS 20/30, 32 workers), ``argo-tuned`` (CNOE's best single controller: requeue 1 s, QPS
60/70, 128 workers), ``argo-executor`` (tuned, with the writes Argo's `wait` sidecar makes per
step simulated: POST, PATCH, PATCH of a WorkflowTaskResult before the pod completes) and
``tekton`` (v1.15.0 defaults). Shapes: ``chain3`` (3 sequential steps), ``fanout`` (1 -> 20
parallel -> 1, 22 steps) and ``chain10``. Every step is a pod kwok completes at once (the
unchanged tests/cluster/stages.yaml), so what is measured is the controller, not step work.

How each figure is measured, the same for every system:

- requests: each controller runs with its own ServiceAccount token (cluster-admin), and the
  API server's audit log (tests/cluster's policy logs every service account's request) is
  counted by user: writes = create/update/patch/delete, reads = get/list (watches apart). The
  executor simulator has its own ServiceAccount, reported apart (in a real cluster that work
  is done by the pods);
- transition: a watch of the pods (local receive times): a step's pod appearing, minus the
  moment the last of the pods it waits for was seen Succeeded;
- first step: a watch of the runs: the run appearing, to its first pod appearing;
- runs/min: from the create of all runs (one List) to the last run seen finished;
- CPU seconds and peak RSS of the controller process from /proc: CPU per step with start-up
  included; "past start-up", the CPU between creating the runs and the last one finished per
  step; "start-up CPU", what the process used before the first run was created (its start,
  the initial listing, 6.5 s idle).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from braid.kube import rest
from braid.kube.rest import ApiError, Rest
from results import kubectl, operator_command, proc_stats, write_results

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = Path(os.environ.get("BRAID_CACHE", Path.home() / ".cache" / "braid"))
AUDIT = CACHE / "cluster" / "logs" / "audit.log"
ROWS = HERE / "rows.jsonl"  # every measurement of the table in bench/README.md
ACCOUNTS_NS = "bench-peers"
COMPLETE = {"braid.dev/test-exit-code": "0", "braid.dev/test-output": "{}"}
WRITES = {"create", "update", "patch", "delete", "deletecollection"}
READS = {"get", "list"}


# ---- shapes: the steps and what each waits for ------------------------------------------


def shape_steps(shape: str) -> dict[str, list[str]]:
    """step -> the steps it waits for."""
    if shape.startswith("chain"):
        n = int(shape.removeprefix("chain"))
        return {f"s{i}": [f"s{i - 1}"] if i else [] for i in range(n)}
    if shape == "fanout":
        middle = [f"p{i}" for i in range(20)]
        return {"s0": [], **{p: ["s0"] for p in middle}, "s1": middle}
    raise SystemExit(f"unknown shape {shape!r}: chain3, chain10 or fanout")


# ---- the systems -------------------------------------------------------------------------


@dataclass
class System:
    name: str
    run_label: str  # the pod label naming the run
    step_label: str  # the pod label naming the step
    group: str
    version: str
    plural: str
    kind: str
    env: dict[str, str] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    executor: bool = False  # simulate Argo's wait sidecar

    def definitions(self, shape: str) -> list[dict[str, Any]]:
        steps = shape_steps(shape)
        if self.name == "braid":
            return [braid_workflow(steps)]
        if self.name.startswith("argo"):
            return [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "workflow-controller-configmap"},
                    "data": {"metricsConfig": "port: 9090\nsecure: false\n"},
                },
                argo_template(steps, complete=not self.executor),
            ]
        return tekton_definitions(steps)

    def run(self, name: str) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name}
        if self.name == "braid":
            spec: dict[str, Any] = {"workflowRef": {"name": "bench"}}
        elif self.name.startswith("argo"):
            spec = {"workflowTemplateRef": {"name": "bench"}}
        else:  # annotations reach the TaskRuns and their pods: kwok completes them
            meta["annotations"] = dict(COMPLETE, **{"braid.dev/test-output": ""})
            spec = {"pipelineRef": {"name": "bench"}}
        return {
            "apiVersion": f"{self.group}/{self.version}",
            "kind": self.kind,
            "metadata": meta,
            "spec": spec,
        }

    def finished(self, obj: dict[str, Any]) -> str | None:
        """'ok', 'failed', or None while it runs."""
        status = obj.get("status") or {}
        if self.name == "tekton":
            for c in status.get("conditions") or []:
                if c.get("type") == "Succeeded" and c.get("status") in ("True", "False"):
                    return "ok" if c["status"] == "True" else "failed"
            return None
        phase = status.get("phase")
        if phase == "Succeeded":
            return "ok"
        return "failed" if phase in ("Failed", "Error", "Cancelled") else None

    def command(self, namespace: str, kubeconfig: str) -> list[str]:
        if self.name == "braid":
            return operator_command(namespace)
        if self.name.startswith("argo"):
            return [
                build("argo"),
                "--kubeconfig",
                kubeconfig,
                "-n",
                namespace,
                "--namespaced",
                "--managed-namespace",
                namespace,
                "--executor-image",
                "quay.io/argoproj/argoexec:v3.7.18",
                "--loglevel",
                "warn",
                "--log-format",
                "json",
                *self.flags,
            ]
        images = [
            "-entrypoint-image",
            "-nop-image",
            "-sidecarlogresults-image",
            "-workingdirinit-image",
            "-shell-image",
            "-shell-image-win",
        ]
        return [
            build("tekton"),
            "-kubeconfig",
            kubeconfig,
            "-namespace",
            namespace,
            "-disable-ha",
            *[x for flag in images for x in (flag, "bench.invalid/none")],
        ]


SYSTEMS = {
    "braid": System(
        "braid",
        "braid.dev/run",
        "braid.dev/step",
        "braid.dev",
        "v1alpha1",
        "workflowruns",
        "WorkflowRun",
    ),
    "argo": System(
        "argo",
        "workflows.argoproj.io/workflow",
        "braid.dev/step",
        "argoproj.io",
        "v1alpha1",
        "workflows",
        "Workflow",
        env={"DEFAULT_REQUEUE_TIME": "10s"},
    ),
    "tekton": System(
        "tekton",
        "tekton.dev/pipelineRun",
        "tekton.dev/pipelineTask",
        "tekton.dev",
        "v1",
        "pipelineruns",
        "PipelineRun",
        env={
            "SYSTEM_NAMESPACE": "tekton-pipelines",
            "CONFIG_DEFAULTS_NAME": "config-defaults",
            "CONFIG_LOGGING_NAME": "config-logging",
            "CONFIG_OBSERVABILITY_NAME": "config-observability",
            "CONFIG_FEATURE_FLAGS_NAME": "feature-flags",
            "CONFIG_LEADERELECTION_NAME": "config-leader-election-controller",
            "CONFIG_SPIRE": "config-spire",
            "METRICS_DOMAIN": "tekton.dev/pipeline",
            "KUBERNETES_MIN_VERSION": "v1.28.0",
        },
    ),
}
SYSTEMS["argo-tuned"] = replace(
    SYSTEMS["argo"],
    name="argo-tuned",
    env={"DEFAULT_REQUEUE_TIME": "1s"},
    flags=[
        "--qps",
        "60",
        "--burst",
        "70",
        "--workflow-workers",
        "128",
        "--pod-cleanup-workers",
        "32",
    ],
)
SYSTEMS["argo-executor"] = replace(SYSTEMS["argo-tuned"], name="argo-executor", executor=True)


def braid_workflow(steps: dict[str, list[str]]) -> dict[str, Any]:
    return {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "bench"},
        "spec": {
            "steps": [
                {
                    "name": s,
                    "dependsOn": after,
                    "container": {
                        "image": "busybox",
                        "command": ["true"],
                        "podTemplate": {"metadata": {"annotations": COMPLETE}},
                    },
                }
                for s, after in steps.items()
            ]
        },
    }


def argo_template(steps: dict[str, list[str]], *, complete: bool) -> dict[str, Any]:
    """Argo `steps` groups (each group runs in parallel, groups in sequence), one template
    per step so its pods carry the step's name."""
    groups: list[list[str]] = []
    for s, after in steps.items():  # consecutive steps waiting for the same ones: a group
        if groups and steps[groups[-1][0]] == after:
            groups[-1].append(s)
        else:
            groups.append([s])
    annotations = COMPLETE if complete else {}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "bench"},
        "spec": {
            "entrypoint": "main",
            "templates": [
                {
                    "name": "main",
                    "steps": [[{"name": s, "template": s} for s in g] for g in groups],
                },
                *[
                    {
                        "name": s,
                        "metadata": {"labels": {"braid.dev/step": s}, "annotations": annotations},
                        "container": {"image": "busybox", "command": ["true"]},
                    }
                    for s in steps
                ],
            ],
        },
    }


def tekton_definitions(steps: dict[str, list[str]]) -> list[dict[str, Any]]:
    task = {
        "apiVersion": "tekton.dev/v1",
        "kind": "Task",
        "metadata": {"name": "step"},
        "spec": {"steps": [{"name": "run", "image": "busybox", "command": ["true"]}]},
    }
    pipeline = {
        "apiVersion": "tekton.dev/v1",
        "kind": "Pipeline",
        "metadata": {"name": "bench"},
        "spec": {
            "tasks": [
                {"name": s, "taskRef": {"name": "step"}, **({"runAfter": after} if after else {})}
                for s, after in steps.items()
            ]
        },
    }
    return [task, pipeline]


def build(peer: str) -> str:
    return subprocess.run(
        ["bash", str(HERE / "build.sh"), peer], capture_output=True, text=True, check=True
    ).stdout.strip()


def source(peer: str) -> Path:
    return Path(
        subprocess.run(
            ["bash", str(HERE / "build.sh"), "source", peer],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )


def install(system: System) -> None:
    if system.name.startswith("argo"):
        kubectl("apply", "--server-side", "-k", f"{source('argo')}/manifests/base/crds/minimal")
    elif system.name == "tekton":
        src = source("tekton") / "config"
        for crd in sorted((src / "300-crds").glob("*.yaml")):
            kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
        for crd in kubectl("get", "crd", "-o", "name").split():
            if crd.endswith("tekton.dev"):  # no conversion webhook here; all store v1
                kubectl(
                    "patch",
                    crd,
                    "--type=merge",
                    "-p",
                    '{"spec":{"conversion":{"strategy":"None","webhook":null}}}',
                )
        if kubectl("get", "namespace", "tekton-pipelines", "--ignore-not-found").strip() == "":
            kubectl("create", "namespace", "tekton-pipelines")
        for cm in sorted(src.glob("config-*.yaml")):
            kubectl("apply", "-n", "tekton-pipelines", "-f", str(cm))


# ---- identities and the audit log -------------------------------------------------------


def account_kubeconfig(account: str) -> str:
    """A kubeconfig for ServiceAccount ``account`` (cluster-admin), so the audit log names
    every request it makes."""
    if kubectl("get", "namespace", ACCOUNTS_NS, "--ignore-not-found").strip() == "":
        kubectl("create", "namespace", ACCOUNTS_NS)
    if kubectl("-n", ACCOUNTS_NS, "get", "sa", account, "--ignore-not-found").strip() == "":
        kubectl("-n", ACCOUNTS_NS, "create", "sa", account)
        kubectl(
            "create",
            "clusterrolebinding",
            f"bench-peers-{account}",
            "--clusterrole=cluster-admin",
            f"--serviceaccount={ACCOUNTS_NS}:{account}",
        )
    token = kubectl("-n", ACCOUNTS_NS, "create", "token", account, "--duration=6h").strip()
    admin = json.loads(kubectl("config", "view", "--raw", "-o", "json"))
    cluster = admin["clusters"][0]
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": cluster["name"], "user": account}}],
        "current-context": account,
    }
    path = Path(tempfile.gettempdir()) / f"braid-peers-{account}.kubeconfig"
    path.write_text(json.dumps(cfg))
    path.chmod(0o600)
    return str(path)


class AuditCounter:
    """Requests per ServiceAccount between two marks of the audit log (rotations followed)."""

    def __init__(self) -> None:
        self.offset = AUDIT.stat().st_size if AUDIT.exists() else 0
        self.inode = AUDIT.stat().st_ino if AUDIT.exists() else 0

    def count(self, account: str) -> dict[str, int]:
        user = f"system:serviceaccount:{ACCOUNTS_NS}:{account}"
        files: list[tuple[Path, int]] = []
        if AUDIT.stat().st_ino != self.inode:  # rotated: the rest of the old file, then all
            rotated = sorted(AUDIT.parent.glob("audit-*.log"), key=lambda p: p.stat().st_mtime)
            files += [(p, self.offset if i == 0 else 0) for i, p in enumerate(rotated[-1:])]
            files.append((AUDIT, 0))
        else:
            files.append((AUDIT, self.offset))
        counts: dict[str, int] = defaultdict(int)
        needle = f'"username":"{user}"'.encode()
        for path, start in files:
            with path.open("rb") as f:
                f.seek(start)
                for line in f:
                    if needle not in line:
                        continue
                    event = json.loads(line)
                    if event.get("stage") != "ResponseComplete":
                        continue
                    ref = event.get("objectRef") or {}
                    resource = ref.get("resource", "?") + (
                        "/" + ref["subresource"] if ref.get("subresource") else ""
                    )
                    counts[f"{event['verb']} {resource}"] += 1
        return dict(counts)


# ---- the executor simulator (Argo's wait sidecar, as far as the API server sees it) -----


async def patiently(api: Rest, method: str, path: str, **kwargs: Any) -> None:
    """As client-go does (the executor's client): a 429 (the API server's max-inflight,
    hit when hundreds of pods report at once) or a 5xx is tried again after a backoff;
    a result that was already created (a retried POST) is fine."""
    for attempt in range(30):
        try:
            await api.json(method, path, **kwargs)
        except ApiError as exc:
            if method == "POST" and exc.status == 409:
                return
            if (exc.status != 429 and exc.status < 500) or attempt == 29:
                raise
        else:
            return
        await asyncio.sleep(min(0.2 * 2**attempt, 5.0))


async def simulate_executor(api: Rest, namespace: str, stop: asyncio.Event) -> None:
    """For each Argo pod seen Running: POST its WorkflowTaskResult (incomplete), PATCH the
    outputs, PATCH it complete, then let kwok finish the pod (one annotation)."""
    done: set[str] = set()
    results = f"/apis/argoproj.io/v1alpha1/namespaces/{namespace}/workflowtaskresults"
    merge = "application/merge-patch+json"

    async def finish(pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        node = (meta.get("annotations") or {}).get("workflows.argoproj.io/node-id", meta["name"])
        wf = meta["labels"]["workflows.argoproj.io/workflow"]
        owner = next(r for r in meta.get("ownerReferences") or [] if r["kind"] == "Workflow")
        label = "workflows.argoproj.io/report-outputs-completed"
        body = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "WorkflowTaskResult",
            "metadata": {
                "name": node,
                "labels": {"workflows.argoproj.io/workflow": wf, label: "false"},
                "ownerReferences": [
                    {
                        "apiVersion": "argoproj.io/v1alpha1",
                        "kind": "Workflow",
                        "name": owner["name"],
                        "uid": owner["uid"],
                    }
                ],
            },
        }
        await patiently(api, "POST", results, body=body)
        await patiently(api, "PATCH", f"{results}/{node}", body={"outputs": {}}, content_type=merge)
        await patiently(
            api,
            "PATCH",
            f"{results}/{node}",
            body={"metadata": {"labels": {label: "true"}}},
            content_type=merge,
        )
        await patiently(
            api,
            "PATCH",
            f"/api/v1/namespaces/{namespace}/pods/{meta['name']}",
            body={"metadata": {"annotations": COMPLETE}},
            content_type="application/strategic-merge-patch+json",
        )

    tasks: set[asyncio.Task[None]] = set()
    async for event in api.watch(f"/api/v1/namespaces/{namespace}/pods", seconds=1800):
        if stop.is_set():
            break
        pod = event["object"]
        name = pod["metadata"]["name"]
        if (pod.get("status") or {}).get("phase") == "Running" and name not in done:
            done.add(name)
            task = asyncio.create_task(finish(pod))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks, return_exceptions=True)


# ---- one measurement --------------------------------------------------------------------


async def observe(  # noqa: C901, PLR0915 - one measurement, read top to bottom
    system: System,
    shape: str,
    n: int,
    namespace: str,
    executor_kubeconfig: str | None,
    controller: int,
    limit: float,
) -> dict[str, Any]:
    api = Rest(rest.load())
    steps = shape_steps(shape)
    created: dict[tuple[str, str], float] = {}  # (run, step) -> first pod seen
    succeeded: dict[tuple[str, str], float] = {}
    run_seen: dict[str, float] = {}
    ended: dict[str, str] = {}
    all_done = asyncio.Event()

    async def follow(path: str, query: list[tuple[str, str]], on: Any) -> None:
        """Watch until every run is seen finished: a watch the API server ends (its timeout,
        a compaction) is started again; its replay of every object covers what it missed."""
        while not all_done.is_set():
            async for event in api.watch(path, query, seconds=120):
                if event["type"] == "ERROR":
                    break  # 410 Gone: watch again from a new listing
                on(time.monotonic(), event["object"])
                if all_done.is_set():
                    return

    def pod_event(now: float, pod: dict[str, Any]) -> None:
        labels = pod["metadata"].get("labels") or {}
        key = (labels.get(system.run_label, ""), labels.get(system.step_label, ""))
        created.setdefault(key, now)
        if (pod.get("status") or {}).get("phase") == "Succeeded":
            succeeded.setdefault(key, now)

    def run_event(now: float, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        run_seen.setdefault(name, now)
        verdict = system.finished(obj)
        if verdict is not None and name not in ended:
            ended[name] = verdict
            if verdict == "failed":
                raise SystemExit(f"{system.name}: run {name} failed")
            if len(ended) >= n:
                all_done.set()

    def pods() -> Any:
        return follow(
            f"/api/v1/namespaces/{namespace}/pods", [("labelSelector", system.run_label)], pod_event
        )

    def runs() -> Any:
        path = f"/apis/{system.group}/{system.version}/namespaces/{namespace}/{system.plural}"
        return follow(path, [], run_event)

    watchers = [asyncio.create_task(pods()), asyncio.create_task(runs())]
    stop_executor = asyncio.Event()
    if executor_kubeconfig:
        exec_api = Rest(rest.from_kubeconfig(executor_kubeconfig))
        watchers.append(asyncio.create_task(simulate_executor(exec_api, namespace, stop_executor)))
    await asyncio.sleep(1.5)
    audit = AuditCounter()
    cpu_before, _ = proc_stats(controller)  # start-up and the idle wait, before any run
    start = time.monotonic()
    items = [system.run(f"r{i}") for i in range(n)]
    await asyncio.to_thread(
        kubectl,
        "-n",
        namespace,
        "create",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
    )
    try:
        await asyncio.wait_for(all_done.wait(), timeout=limit)
    except TimeoutError:
        pass  # reported as the runs that finished within the limit
    finally:
        elapsed = time.monotonic() - start
        stop_executor.set()
        for t in watchers:
            t.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await api.close()
        if executor_kubeconfig:
            await exec_api.close()
    transitions, first = [], []
    for i in range(n):
        run = f"r{i}"
        for step, after in steps.items():
            if not after:
                if (run, step) in created and run in run_seen:
                    first.append(created[run, step] - run_seen[run])
                continue
            if (run, step) in created and all((run, a) in succeeded for a in after):
                transitions.append(created[run, step] - max(succeeded[run, a] for a in after))
    return {
        "elapsed": elapsed,
        "finished": len(ended),
        "steps_done": len(succeeded),
        "cpu_before": cpu_before,
        "transitions": sorted(transitions),
        "first": sorted(first),
        "audit": audit,
    }


def pct(values: list[float], q: float) -> int | None:
    """The q-quantile in ms; None when nothing was seen (a cell cut off before any
    transition), which the table shows as "—"."""
    if not values:
        return None
    return round(values[min(len(values) - 1, int(len(values) * q))] * 1000)


def measure(
    system: System,
    shape: str,
    n: int,
    controller_kc: str,
    executor_kc: str | None,
    limit: float = 1500,
) -> dict[str, Any]:
    namespace = f"peer-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    for obj in system.definitions(shape):
        kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(obj))
    log = Path(tempfile.gettempdir()) / f"braid-peers-{system.name}-{shape}-{n}.log"
    env = {
        **os.environ,
        "LEADER_ELECTION_DISABLE": "true",
        **system.env,
        "KUBECONFIG": controller_kc,
        "PROBES_PORT": "18080",
    }
    proc = subprocess.Popen(
        system.command(namespace, controller_kc),
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        time.sleep(5)  # informers / the operator's watches: the initial listing
        if proc.poll() is not None:
            raise SystemExit(f"{system.name} exited at start; see {log}")
        seen = asyncio.run(observe(system, shape, n, namespace, executor_kc, proc.pid, limit))
        cpu, rss = proc_stats(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        kubectl("delete", "namespace", namespace, "--wait=false")
    finished = seen["finished"] >= n
    # Runs cut off by the time limit: per step of the steps that did complete; with none
    # completed there is nothing to divide by, and the totals say what was spent.
    steps = n * len(shape_steps(shape)) if finished else seen["steps_done"]

    def per(value: float, scale: float = 1, digits: int = 2) -> float | None:
        return round(value / steps * scale, digits) if steps else None

    own = seen["audit"].count("controller")
    sim = seen["audit"].count("executor") if executor_kc else {}
    writes = sum(v for k, v in own.items() if k.split()[0] in WRITES)
    reads = sum(v for k, v in own.items() if k.split()[0] in READS)
    return {
        "system": system.name,
        "shape": shape,
        "runs": n,
        "steps": steps,
        "runs_per_minute": round(seen["finished"] / seen["elapsed"] * 60, 1),
        "finished": seen["finished"],
        "transition_p50_ms": pct(seen["transitions"], 0.5),
        "transition_p99_ms": pct(seen["transitions"], 0.99),
        "first_step_p50_ms": pct(seen["first"], 0.5),
        "first_step_p99_ms": pct(seen["first"], 0.99),
        "writes_per_step": per(writes),
        "reads_per_step": per(reads),
        "executor_writes_per_step": per(
            sum(v for k, v in sim.items() if "workflowtaskresults" in k)
        ),
        "cpu_ms_per_step": per(cpu, 1000, 1),
        "start_cpu_ms": round(seen["cpu_before"] * 1000),
        "cpu_ms_per_step_past_start": per(cpu - seen["cpu_before"], 1000, 1),
        "peak_rss_mib": round(rss / 2**20),
        "requests_per_step": {k: per(v) for k, v in sorted(own.items())},
        "totals": {"cpu_s": round(cpu, 1), "writes": writes, "reads": reads},
        "seconds": round(seen["elapsed"], 1),
        "date": time.strftime("%Y-%m-%d"),
        "at": time.strftime("%H:%M", time.gmtime()),  # UTC: pairs measured together
    }


def table(rows: list[dict[str, Any]]) -> str:
    """The side-by-side, one row per (shape, size, system): its last measurement, with its
    ratios to Braid's row of the same shape and size and the day each was measured (a
    ratio between rows of different days carries the machine's day-to-day drift)."""
    out = [
        (
            "| shape | runs | system | runs/min | transition p50 | p99 | first step p50 "
            "| writes/step | reads/step | CPU/step | past start-up | start-up CPU | peak RSS "
            "| measured |"
        ),
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    base = {(r["shape"], r["runs"]): r for r in rows if r["system"] == "braid"}

    def ratio(r: dict[str, Any], key: str) -> str:
        b = base.get((r["shape"], r["runs"]))
        if r["system"] == "braid" or b is None or not b.get(key) or r.get(key) is None:
            return ""
        x = r[key] / b[key]
        return f" ({x:.0f}x)" if x >= 10 else f" ({x:.2g}x)"

    def cell(r: dict[str, Any], key: str, unit: str, digits: int = 0) -> str:
        """A figure and its ratio to Braid's; "—" where the row predates the figure."""
        if r.get(key) is None:
            return "—"
        return f"{r[key]:.{digits}f}{unit}{ratio(r, key)}"

    for r in sorted(rows, key=lambda r: (r["shape"], r["runs"], list(SYSTEMS).index(r["system"]))):
        extra = f" +{r['executor_writes_per_step']} exec" if r["executor_writes_per_step"] else ""
        writes = "—" if r["writes_per_step"] is None else f"{r['writes_per_step']:.2f}{extra}"
        cut = (
            ""
            if r.get("finished", r["runs"]) >= r["runs"]
            else f", cut off at {r['seconds']:.0f} s: {r['finished']} done"
        )
        if r.get("steps") == 0 and r.get("totals"):
            t = r["totals"]
            cut += (
                f", no step done: {t['cpu_s']} s CPU, {t['writes']:,} writes,"
                f" {t['reads']:,} reads in all"
            )
        out.append(
            f"| {r['shape']} | {r['runs']} | {r['system']} | {cell(r, 'runs_per_minute', '')}"
            f"{cut} | {cell(r, 'transition_p50_ms', ' ms')} | {cell(r, 'transition_p99_ms', ' ms')}"
            f" | {cell(r, 'first_step_p50_ms', ' ms')} | {writes}"
            f"{ratio(r, 'writes_per_step')} | {cell(r, 'reads_per_step', '', 2)}"
            f" | {cell(r, 'cpu_ms_per_step', ' ms', 1)}"
            f" | {cell(r, 'cpu_ms_per_step_past_start', ' ms', 1)}"
            f" | {cell(r, 'start_cpu_ms', ' ms')} | {cell(r, 'peak_rss_mib', ' MiB')}"
            f" | {r.get('date', '—')}{' ' + r['at'] if r.get('at') else ''} |"
        )
    return "\n".join(out)


def last_of_each(lines: list[str]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The last measurement of each (system, shape, size) in JSON lines."""
    rows = {}
    for line in lines:
        if line.strip():
            row = json.loads(line)
            rows[row["system"], row["shape"], row["runs"]] = row
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--shapes", default="chain3,fanout,chain10")
    parser.add_argument("--sizes", default="10,100,500")
    parser.add_argument("--no-write", action="store_true", help="leave bench/README.md as is")
    parser.add_argument(
        "--from", dest="previous", help="measure nothing: tabulate these JSON lines"
    )
    parser.add_argument(
        "--limit",
        type=float,
        default=1500,
        help="seconds per measurement; runs not finished by then are reported as cut off",
    )
    args = parser.parse_args()
    if args.previous:
        rows = last_of_each(Path(args.previous).read_text().splitlines())
    else:
        measured = run_all(args)  # each also appended to ROWS unless --no-write
        # Written: the table shows the last measurement of each cell.
        rows = measured if args.no_write else last_of_each(ROWS.read_text().splitlines())
    text = table(list(rows.values()))
    print(text)
    if not args.no_write:
        write_results("peers-bench", text)


def run_all(args: argparse.Namespace) -> dict[tuple[str, str, int], dict[str, Any]]:
    systems = [SYSTEMS[s] for s in args.systems.split(",")]
    controller_kc = account_kubeconfig("controller")
    executor_kc = account_kubeconfig("executor")
    for system in systems:
        install(system)
    rows = {}
    for shape in args.shapes.split(","):
        for n in (int(s) for s in args.sizes.split(",")):
            for system in systems:
                try:
                    row = measure(
                        system,
                        shape,
                        n,
                        controller_kc,
                        executor_kc if system.executor else None,
                        args.limit,
                    )
                except (Exception, SystemExit) as exc:  # noqa: BLE001 - one cell, not the table
                    print(f"{system.name} {shape} {n}: not measured: {exc!r}", flush=True)
                    continue
                rows[system.name, shape, n] = row
                line = json.dumps(row)
                print(line, flush=True)
                kept = [Path(tempfile.gettempdir()) / "braid-peers.jsonl"]
                for path in kept if args.no_write else [*kept, ROWS]:
                    with path.open("a") as f:
                        f.write(line + "\n")
    return rows


if __name__ == "__main__":
    main()

"""N concurrent 3-step runs on the local control plane: how fast and how cheaply the operator
moves runs along.

    python tests/cluster/cluster.py up                 # builds the control plane if missing
    export KUBECONFIG=~/.cache/braid/cluster/admin.kubeconfig
    kubectl apply --server-side -f crds/               # the Workflow and WorkflowRun CRDs
    python bench/cluster_throughput.py 10 100 500
    BRAID_BENCH_SHARDS=2 ... python bench/cluster_throughput.py 100 500   # K sharded operators

Step pods complete on their own through kwok (scripted annotations, no delay), so what is
measured is the operator, the API server and kwok, not step work.

- transition latency: one watch sees pod k of a run turn Succeeded and pod k+1 appear; the
  difference between the two local receive times (same watcher, same delivery path);
- API requests per completed step by verb and resource, from the API server's own
  ``apiserver_request_total`` (workflowruns, pods create/delete and events are the operator's;
  kwok's pod status patches are listed apart);
- operator CPU seconds and peak RSS from /proc; runs per minute.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from braid.kube import rest
from braid.kube.rest import Rest
from results import kubectl, operator_command, proc_stats, write_results

ROOT = Path(__file__).resolve().parents[1]
SHARDS = int(os.environ.get("BRAID_BENCH_SHARDS", "1"))
STEPS = 3

WORKFLOW = {
    "apiVersion": "braid.dev/v1alpha1",
    "kind": "Workflow",
    "metadata": {"name": "bench"},
    "spec": {
        "steps": [
            {
                "name": f"s{i}",
                "container": {
                    "image": "busybox",
                    "command": ["true"],
                    "podTemplate": {
                        "metadata": {
                            "annotations": {
                                "braid.dev/test-exit-code": "0",
                                "braid.dev/test-output": "{}",
                            }
                        }
                    },
                },
            }
            for i in range(STEPS)
        ]
    },
}


def write_counts(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
) -> tuple[float, float]:
    """Writes between two request_counts(): all of them, and kwok's pod status patches."""
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    writes = sum(v for (verb, _), v in delta.items() if verb in ("POST", "PUT", "PATCH", "DELETE"))
    kwok = sum(v for (verb, res), v in delta.items() if res == "pods/status" and verb == "PATCH")
    return writes, kwok


def request_counts() -> dict[tuple[str, str], float]:
    raw = kubectl("get", "--raw", "/metrics")
    counts: dict[tuple[str, str], float] = {}
    for line in raw.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        key = (
            labels.get("verb", ""),
            labels.get("resource", "")
            + ("/" + labels["subresource"] if labels.get("subresource") else ""),
        )
        counts[key] = counts.get(key, 0) + float(line.rsplit(" ", 1)[1])
    return counts


async def measure(n: int, namespace: str) -> dict[str, object]:  # noqa: C901 - one measurement, read top to bottom
    api = Rest(rest.load())
    seen_done: dict[str, float] = {}
    created: dict[str, float] = {}
    finished_runs: set[str] = set()

    async def watch_pods() -> None:
        path = f"/api/v1/namespaces/{namespace}/pods"
        async for event in api.watch(path, [("labelSelector", "braid.dev/run")], seconds=600):
            now = time.monotonic()
            pod = event["object"]
            name, labels = pod["metadata"]["name"], pod["metadata"].get("labels") or {}
            if event["type"] == "ADDED":
                created.setdefault(name, now)
            if (pod.get("status") or {}).get("phase") == "Succeeded":
                seen_done.setdefault(name, now)
                if labels.get("braid.dev/step") == f"s{STEPS - 1}":
                    finished_runs.add(labels["braid.dev/run"])
            if len(finished_runs) >= n:
                return

    watcher = asyncio.create_task(watch_pods())
    await asyncio.sleep(1)
    before = request_counts()
    start = time.monotonic()
    runs = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {
                    "apiVersion": "braid.dev/v1alpha1",
                    "kind": "WorkflowRun",
                    "metadata": {"name": f"r{i}", "labels": {"shard": str(i % SHARDS)}},
                    "spec": {"workflowRef": {"name": "bench"}},
                }
                for i in range(n)
            ],
        }
    )
    kubectl("-n", namespace, "create", "-f", "-", stdin=runs)
    await asyncio.wait_for(watcher, timeout=900)
    # the last status writes land just after the last pod completes
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        out = kubectl(
            "-n", namespace, "get", "workflowruns", "-o", "jsonpath={.items[*].status.phase}"
        )
        if out.split().count("Succeeded") == n:
            break
        await asyncio.sleep(0.5)
    elapsed = time.monotonic() - start
    after = request_counts()
    await api.close()
    latencies = []
    for i in range(n):
        for k in range(STEPS - 1):
            done, nxt = f"r{i}-s{k}-1", f"r{i}-s{k + 1}-1"
            if done in seen_done and nxt in created:
                latencies.append(created[nxt] - seen_done[done])
    latencies.sort()
    steps = n * STEPS
    writes, kwok = write_counts(before, after)
    return {
        "runs": n,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
        "kwok_patches_per_step": kwok / steps,
        "cluster_writes_per_step": writes / steps,
        "runs_per_minute": n / elapsed * 60,
        "seconds": elapsed,
    }


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [10, 100, 500]
    rows = []
    for n in sizes:
        namespace = f"bench-{uuid.uuid4().hex[:6]}"
        kubectl("create", "namespace", namespace)
        kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(WORKFLOW))
        logs = [Path(f"/tmp/braid-bench-operator-{n}-{k}.log") for k in range(SHARDS)]
        operators = [
            subprocess.Popen(
                operator_command(namespace, *([f"--selector=shard={k}"] if SHARDS > 1 else [])),
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
            for k, log in enumerate(logs)
        ]
        try:
            time.sleep(4)  # the operator's first listings
            result = asyncio.run(measure(n, namespace))
            stats = [proc_stats(op.pid) for op in operators]
            cpu, rss = sum(c for c, _ in stats), max(r for _, r in stats)
        finally:
            for op in operators:
                op.terminate()
                op.wait(timeout=30)
            kubectl("delete", "namespace", namespace, "--wait=false")
        # The operators' own client-side counts, logged as they stop: exact attribution.
        own: dict[str, int] = {}
        for log in logs:
            stopped = [
                json.loads(line)
                for line in log.read_text().splitlines()
                if '"Stopped operator"' in line
            ]
            for key, value in (stopped[-1]["requests"] if stopped else {}).items():
                own[key] = own.get(key, 0) + value
        steps = n * STEPS
        result["per_step"] = {k: round(v / steps, 2) for k, v in sorted(own.items())}
        result["writes_per_step"] = (
            sum(v for k, v in own.items() if not k.startswith("GET")) / steps
        )
        result["cpu_s"], result["rss_mb"] = cpu, rss / 2**20
        rows.append(result)
        print(json.dumps(result), flush=True)
    table = [
        f"{SHARDS} operator(s); CPU is their sum, RSS the largest.\n" if SHARDS > 1 else "",
        "| concurrent runs | transition p50 | p99 | operator writes / step | operator requests / step | all API writes / step (kwok, scheduler, ...) | operator CPU | peak RSS | runs / min |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        verbs = ", ".join(f"{k}: {v}" for k, v in r["per_step"].items())  # type: ignore[attr-defined]
        table.append(
            f"| {r['runs']} | {r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms | {r['writes_per_step']:.2f} | {verbs} | "
            f"{r['cluster_writes_per_step']:.1f} | {r['cpu_s']:.1f} s | {r['rss_mb']:.0f} MiB | {r['runs_per_minute']:.0f} |"
        )
    text = "\n".join(line for line in table if line)
    print(text)
    write_results("cluster-bench" if SHARDS == 1 else "shard-bench", text)


if __name__ == "__main__":
    main()

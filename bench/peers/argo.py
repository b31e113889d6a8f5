"""Argo Workflows beside Braid on the same local control plane: N concurrent 3-step runs of
the same shape, one system at a time, Argo in pod-only mode (kwok completes its pods as it
completes Braid's; no task results — Argo's lower bound on writes, see
../shared/research/peer-bench.md §2).

    python tests/cluster/cluster.py up
    export KUBECONFIG=~/.cache/braid/cluster/admin.kubeconfig
    bash bench/peers/build.sh argo            # once: the workflow-controller, into the cache
    python bench/peers/argo.py 100            # Argo defaults, then tuned (CNOE's settings)

Measured the same way as bench/cluster_throughput.py measures Braid: runs per minute from
the List create until the last run Succeeded, API requests per step from the API server's
``apiserver_request_total`` (every client's; kwok's pod status patches listed apart), the
controller's CPU seconds and peak RSS from /proc. The controller is stopped after each size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cluster_throughput import request_counts, write_counts
from results import kubectl, proc_stats

HERE = Path(__file__).resolve().parent
STEPS = 3
MODES = {
    "defaults": ({"DEFAULT_REQUEUE_TIME": "10s"}, []),
    "tuned": (
        {"DEFAULT_REQUEUE_TIME": "1s"},
        [
            "--qps",
            "60",
            "--burst",
            "70",
            "--workflow-workers",
            "128",
            "--pod-cleanup-workers",
            "32",
        ],
    ),
}


def template() -> dict[str, object]:
    """Three sequential steps; kwok completes each pod (the same annotations as Braid's)."""
    step = {
        "metadata": {
            "annotations": {"braid.dev/test-exit-code": "0", "braid.dev/test-output": "{}"}
        },
        "container": {"image": "busybox", "command": ["true"]},
    }
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "bench"},
        "spec": {
            "entrypoint": "main",
            "templates": [
                {
                    "name": "main",
                    "steps": [[{"name": f"s{i}", "template": "step"}] for i in range(STEPS)],
                },
                {"name": "step", **step},
            ],
        },
    }


def install_crds() -> None:
    source = subprocess.run(
        ["bash", str(HERE / "build.sh"), "source", "argo"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    kubectl("apply", "--server-side", "-k", f"{source}/manifests/base/crds/minimal")


def phases(namespace: str) -> list[str]:
    out = kubectl(
        "-n", namespace, "get", "workflows.argoproj.io", "-o", "jsonpath={.items[*].status.phase}"
    )
    return out.split()


def measure(n: int, mode: str, controller: str) -> dict[str, object]:
    namespace = f"argo-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "workflow-controller-configmap"},
        "data": {"metricsConfig": "port: 9090\nsecure: false\n"},
    }
    kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(config))
    kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(template()))
    env, flags = MODES[mode]
    log = Path(f"/tmp/braid-bench-argo-{mode}-{n}.log")
    proc = subprocess.Popen(
        [
            controller,
            "--kubeconfig",
            os.environ["KUBECONFIG"],
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
            *flags,
        ],
        env={**os.environ, "LEADER_ELECTION_DISABLE": "true", **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(5)  # informers: the initial listing
        before = request_counts()
        start = time.monotonic()
        runs = {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "Workflow",
                    "metadata": {"name": f"r{i}"},
                    "spec": {"workflowTemplateRef": {"name": "bench"}},
                }
                for i in range(n)
            ],
        }
        kubectl("-n", namespace, "create", "-f", "-", stdin=json.dumps(runs))
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            seen = phases(namespace)
            if seen.count("Succeeded") == n:
                break
            if "Failed" in seen or "Error" in seen:
                raise SystemExit(f"an Argo workflow failed; see {log}")
            time.sleep(0.5)
        else:
            raise SystemExit(f"timed out; see {log}")
        elapsed = time.monotonic() - start
        after = request_counts()
        cpu, rss = proc_stats(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        kubectl("delete", "namespace", namespace, "--wait=false")
    steps = n * STEPS
    writes, kwok = write_counts(before, after)
    return {
        "mode": mode,
        "runs": n,
        "runs_per_minute": round(n / elapsed * 60, 1),
        "writes_per_step_excluding_kwok": round((writes - kwok) / steps, 2),
        "cpu_ms_per_step": round(cpu / steps * 1000, 1),
        "peak_rss_mib": round(rss / 2**20),
        "seconds": round(elapsed, 1),
    }


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [100]
    controller = subprocess.run(
        ["bash", str(HERE / "build.sh"), "argo"], capture_output=True, text=True, check=True
    ).stdout.strip()
    install_crds()
    for n in sizes:
        for mode in MODES:
            print(json.dumps(measure(n, mode, controller)), flush=True)


if __name__ == "__main__":
    main()

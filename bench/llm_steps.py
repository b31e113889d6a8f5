"""1,000 llm steps through the operator against the loopback OpenAI-compatible server, each
reply 50 ms late: steps per second, operator CPU per call and peak RSS.

    python tests/cluster/cluster.py up
    export KUBECONFIG=~/.cache/braid/cluster/admin.kubeconfig
    kubectl apply --server-side -f crds/
    python bench/llm_steps.py 1000

100 runs of 10 sequential llm steps each, created at once: the operator makes every call
itself with async I/O (no Pod per call), so what is measured is the operator, the API server
and the HTTP calls.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from tests.model_server import model_server  # noqa: E402

from results import kubectl, proc_stats, wait_succeeded, write_results  # noqa: E402

STEPS_PER_RUN = 10
LATENCY = 0.05


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    runs = max(1, steps // STEPS_PER_RUN)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    with model_server() as server:
        server.delay = LATENCY
        kubectl("create", "namespace", namespace)
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "openai"},
            "stringData": {"api-key": server.key},
        }
        key = {"valueFrom": {"secretKeyRef": {"name": "openai", "key": "api-key"}}}
        workflow = {
            "apiVersion": "braid.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": "bench-llm"},
            "spec": {
                "steps": [
                    {
                        "name": f"s{i}",
                        "llm": {
                            "endpoint": {"baseURL": server.url, "apiKey": key},
                            "model": "test-model",
                            "messages": [{"role": "user", "content": f"step {i}"}],
                        },
                    }
                    for i in range(STEPS_PER_RUN)
                ]
            },
        }
        for doc in (secret, workflow):
            kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(doc))
        log = Path("/tmp/braid-bench-llm.log")
        op = subprocess.Popen(
            [sys.executable, "-m", "braid.cli", "operator", "-n", namespace, "--log-format",
             "json", "--metrics-port", "0", "--webhook-allow=127.0.0.1"],
            stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT / "operator")},
        )  # fmt: skip
        try:
            time.sleep(4)
            cpu0, _ = proc_stats(op.pid)
            start = time.monotonic()
            items = [
                {
                    "apiVersion": "braid.dev/v1alpha1",
                    "kind": "WorkflowRun",
                    "metadata": {"name": f"r{i}"},
                    "spec": {"workflowRef": {"name": "bench-llm"}},
                }
                for i in range(runs)
            ]
            kubectl(
                "-n",
                namespace,
                "create",
                "-f",
                "-",
                stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
            )
            wait_succeeded(namespace, runs, log)
            elapsed = time.monotonic() - start
            cpu1, rss = proc_stats(op.pid)
        finally:
            op.terminate()
            op.wait(timeout=60)
            kubectl("delete", "namespace", namespace, "--wait=false")
    calls = len(server.requests)
    row = {
        "steps": runs * STEPS_PER_RUN,
        "calls": calls,
        "seconds": round(elapsed, 1),
        "steps_per_s": round(runs * STEPS_PER_RUN / elapsed, 1),
        "cpu_ms_per_call": round((cpu1 - cpu0) / calls * 1000, 1),
        "rss_mib": round(rss / 2**20),
    }
    print(json.dumps(row))
    text = "\n".join(
        [
            "| llm steps | runs x steps | reply latency | wall time | steps / s | operator CPU / call | peak RSS |",
            "|---:|---|---:|---:|---:|---:|---:|",
            (
                f"| {row['steps']} | {runs} x {STEPS_PER_RUN} | {int(LATENCY * 1000)} ms | {row['seconds']} s | "
                f"{row['steps_per_s']} | {row['cpu_ms_per_call']} ms | {row['rss_mib']} MiB |"
            ),
        ]
    )
    print(text)
    write_results("llm-bench", text)


if __name__ == "__main__":
    main()

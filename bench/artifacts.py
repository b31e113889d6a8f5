"""100 runs passing a 1 MiB artifact through 3 steps, against the same runs without artifacts,
on the local control plane with a real S3 server (versitygw on loopback).

    python tests/cluster/cluster.py up
    export KUBECONFIG=~/.cache/braid/cluster/admin.kubeconfig
    kubectl apply --server-side -f crds/
    python bench/artifacts.py 100

Nothing runs a kubelet here, so this script plays it for the step Pods, in one process with a
pool of threads: for each Pod it runs Braid's own artifact code as the Pod's containers would
(``agent.fetch_inputs``, then the step — which writes or copies 1 MiB — then
``agent.store_outputs``), with the Pod's environment, and writes the outcome the kwok stage
turns into the terminated state. Python's start-up per container is left out (it is the same
with or without artifacts in this stand-in; in a real cluster the sidecar's start is paid once
per Pod, in parallel with the step). Measured: runs per minute and the bytes moved through the
store per second, for both shapes; the operator's CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from tests.s3 import s3_server  # noqa: E402

from braid.artifacts import agent  # noqa: E402
from results import kubectl, proc_stats, wait_succeeded, write_results  # noqa: E402

MiB = 1 << 20
STEPS = 3


def workflow(artifacts: bool) -> dict[str, Any]:
    steps = []
    for i in range(STEPS):
        container: dict[str, Any] = {"image": "busybox", "command": ["bench-step"]}
        if artifacts and i:
            container["inputs"] = {
                "artifacts": [{"from": f"steps.s{i - 1}.artifacts['data.bin']", "path": "data.bin"}]
            }
        if not artifacts or i == STEPS - 1:
            container["artifactLimits"] = {"maxFiles": 0}
        steps.append({"name": f"s{i}", "container": container})
    name = "bench-artifacts" if artifacts else "bench-plain"
    return {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"steps": steps},
    }


class Kubelet:
    """Runs each new step Pod's containers (Braid's artifact code in-process, the step as a
    1 MiB write or copy) and reports the outcome through the kwok annotations."""

    def __init__(self, namespace: str, s3_env: dict[str, str], workers: int = 8) -> None:
        self.namespace = namespace
        self.env = s3_env
        self.pool = ThreadPoolExecutor(workers)
        self.seen: set[str] = set()
        self.moved = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        while not self.stop.is_set():
            pods = json.loads(
                kubectl("-n", self.namespace, "get", "pods", "-l", "braid.dev/run", "-o", "json")
            )["items"]
            for pod in pods:
                name = pod["metadata"]["name"]
                if name not in self.seen and pod.get("status", {}).get("phase") == "Running":
                    self.seen.add(name)
                    self.pool.submit(self.run, pod)
            self.stop.wait(0.2)

    def run(self, pod: dict[str, Any]) -> None:
        init = {c["name"]: c for c in pod["spec"].get("initContainers") or []}
        with tempfile.TemporaryDirectory() as tmp:
            dirs = {"/braid/artifacts": f"{tmp}/a", "/braid/inputs": f"{tmp}/i"}
            Path(dirs["/braid/artifacts"]).mkdir(parents=True)

            def env(c: dict[str, Any]) -> dict[str, str]:
                values = {
                    e["name"]: dirs.get(e.get("value", ""), e.get("value", ""))
                    for e in c.get("env", [])
                    if "value" in e
                }
                return {**values, **self.env, agent.TERMINATION_LOG: f"{tmp}/log"}

            moved = 0
            if "braid-inputs" in init:
                assert agent.fetch_inputs(env(init["braid-inputs"])) == 0
                moved += MiB
            out = Path(dirs["/braid/artifacts"]) / "data.bin"
            if "braid-artifacts" in init:
                source = Path(dirs["/braid/inputs"]) / "data.bin"
                if source.exists():
                    shutil.copyfile(source, out)
                else:
                    out.write_bytes(os.urandom(MiB))
                agent.store_outputs(env(init["braid-artifacts"]), wait=False)
                moved += MiB
                report = Path(f"{tmp}/log").read_text()
            else:
                report = ""
        with self.lock:
            self.moved += moved
        kubectl(
            "-n", self.namespace, "annotate", "pod", pod["metadata"]["name"], "--overwrite",
            f"braid.dev/test-artifacts={report}", "braid.dev/test-output={}",
            "braid.dev/test-exit-code=0",
        )  # fmt: skip


def measure(n: int, artifacts: bool, s3: Any) -> dict[str, Any]:
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    wf = workflow(artifacts)
    kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(wf))
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s3"},
        "stringData": {"accessKey": s3.access_key, "secretKey": s3.secret_key},
    }
    kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(secret))
    log = Path(f"/tmp/braid-bench-artifacts-{n}-{int(artifacts)}.log")
    op = subprocess.Popen(
        [
            sys.executable, "-m", "braid.cli", "operator", "-n", namespace, "--log-format", "json",
            "--metrics-port", "0", f"--artifact-endpoint={s3.endpoint}",
            f"--artifact-bucket={s3.bucket}", "--artifact-secret=s3", "--artifact-image=braid:bench",
        ],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT,
        env={**os.environ, **s3.env, "PYTHONPATH": str(ROOT / "operator")},
    )  # fmt: skip
    kubelet = Kubelet(namespace, s3.env)
    kubelet.thread.start()
    try:
        time.sleep(4)  # the operator's first listings
        start = time.monotonic()
        runs = {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {
                    "apiVersion": "braid.dev/v1alpha1",
                    "kind": "WorkflowRun",
                    "metadata": {"name": f"r{i}"},
                    "spec": {"workflowRef": {"name": wf["metadata"]["name"]}},
                }
                for i in range(n)
            ],
        }
        kubectl("-n", namespace, "create", "-f", "-", stdin=json.dumps(runs))
        wait_succeeded(namespace, n, log)
        elapsed = time.monotonic() - start
        sizes = [
            len(line)
            for line in kubectl("-n", namespace, "get", "workflowruns", "-o", "json").splitlines()
        ]
        cpu, _ = proc_stats(op.pid)
    finally:
        kubelet.stop.set()
        kubelet.thread.join(timeout=10)
        kubelet.pool.shutdown(wait=True)
        op.terminate()
        op.wait(timeout=60)
        kubectl("delete", "namespace", namespace, "--wait=false")
    return {
        "runs": n,
        "artifacts": artifacts,
        "seconds": round(elapsed, 1),
        "runs_per_minute": round(n / elapsed * 60, 1),
        "store_mib_per_s": round(kubelet.moved / MiB / elapsed, 1),
        "moved_mib": kubelet.moved // MiB,
        "operator_cpu_s": round(cpu, 1),
        "list_bytes": sum(sizes),
    }


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    rows = []
    with s3_server() as s3:
        for artifacts in (False, True):
            row = measure(n, artifacts, s3)
            print(json.dumps(row), flush=True)
            rows.append(row)
    plain, arts = rows
    table = [
        "| shape | runs | wall time | runs / min | moved through the store | store throughput | operator CPU |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        shape = "1 MiB artifact through 3 steps" if r["artifacts"] else "same 3 steps, no artifacts"
        table.append(
            f"| {shape} | {r['runs']} | {r['seconds']} s | {r['runs_per_minute']} | "
            f"{r['moved_mib']} MiB | {r['store_mib_per_s']} MiB/s | {r['operator_cpu_s']} s |"
        )
    table.append(
        f"\nWith artifacts: {arts['runs_per_minute'] / plain['runs_per_minute']:.2f}x the runs per "
        f"minute, {arts['operator_cpu_s'] / max(plain['operator_cpu_s'], 0.1):.2f}x the operator CPU."
    )
    text = "\n".join(table)
    print(text)
    write_results("artifacts-bench", text)


if __name__ == "__main__":
    main()

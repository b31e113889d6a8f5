"""The operator's memory with N runs active at once (default 5,000): every run's first step
is a pod that keeps running (kwok completes only pods carrying braid.dev/test-exit-code), so
the operator holds all N runs, their pods and their timers at the same time.

    python tests/cluster/cluster.py up                 # a fresh control plane (builds if missing)
    export KUBECONFIG=~/.cache/braid/cluster/admin.kubeconfig
    kubectl apply --server-side -f crds/               # the Workflow and WorkflowRun CRDs
    python bench/active_runs.py 5000                   # ~10 minutes on 2 cores

Reports the operator's peak RSS (VmHWM) and its RSS once all N are active and it has settled,
per active run, the CPU it spends per second holding them idle, and how long the N took to
become active; writes the `active-runs` section of bench/README.md. The operator restarts once
at the end with all N still active (what an upgrade or a failover does): the time until it has
listed everything again and its RSS after.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

from braid.kube import rest
from braid.kube.rest import Rest
from results import kubectl, operator_command, proc_stats, write_results

ROOT = Path(__file__).resolve().parents[1]
CREATE_IN_FLIGHT = 16
SETTLE_SECONDS = 60.0
QUIET = 0.05  # of a core: settled

WORKFLOW = {
    "apiVersion": "braid.dev/v1alpha1",
    "kind": "Workflow",
    "metadata": {"name": "hold"},
    "spec": {
        "steps": [
            # no test-exit-code annotation: kwok keeps this pod Running
            {"name": "wait", "container": {"image": "busybox", "command": ["sleep", "inf"]}},
            {"name": "after", "dependsOn": ["wait"], "sleep": {"durationSeconds": 0}},
        ]
    },
}


def rss_now(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def create_runs(namespace: str, n: int) -> float:
    api = Rest(rest.load())
    try:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            queue.put_nowait(i)
        started = time.monotonic()

        async def creator() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                body = {
                    "apiVersion": "braid.dev/v1alpha1",
                    "kind": "WorkflowRun",
                    "metadata": {"name": f"hold-{i:05d}"},
                    "spec": {"workflowRef": {"name": "hold"}},
                }
                await api.json(
                    "POST",
                    f"/apis/braid.dev/v1alpha1/namespaces/{namespace}/workflowruns",
                    body=body,
                )

        await asyncio.gather(*(creator() for _ in range(CREATE_IN_FLIGHT)))
        return time.monotonic() - started
    finally:
        await api.close()


def running_pods(namespace: str) -> int:
    out = kubectl(
        "-n",
        namespace,
        "get",
        "pods",
        "-l",
        "braid.dev/run",
        "--field-selector=status.phase=Running",
        "-o",
        "name",
    )
    return len(out.split())


def wait_active(namespace: str, n: int, operator: subprocess.Popen[bytes], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if operator.poll() is not None:
            raise SystemExit(f"the operator exited with {operator.returncode}")
        if running_pods(namespace) >= n:
            return time.monotonic() - started
        time.sleep(5)
    raise SystemExit(f"not all {n} runs became active within {timeout:.0f}s")


def settle(pid: int, seconds: float) -> tuple[int, float]:
    """RSS after ``seconds`` with nothing happening, and CPU seconds per second meanwhile."""
    cpu0, _ = proc_stats(pid)
    time.sleep(seconds)
    cpu1, _ = proc_stats(pid)
    return rss_now(pid), (cpu1 - cpu0) / seconds


def wait_quiet(pid: int, timeout: float) -> float:
    """When the process has used under QUIET of a core over two 5-second spans in a row."""
    started, calm = time.monotonic(), 0
    while time.monotonic() - started < timeout:
        cpu0, _ = proc_stats(pid)
        time.sleep(5)
        cpu1, _ = proc_stats(pid)
        calm = calm + 1 if (cpu1 - cpu0) / 5 < QUIET else 0
        if calm == 2:
            return time.monotonic() - 10
    raise SystemExit(f"the operator did not settle within {timeout:.0f}s of its restart")


def start_operator(namespace: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            operator_command(namespace), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    namespace = f"bench-active-{uuid.uuid4().hex[:6]}"
    log = Path(f"/tmp/{namespace}-operator.log")
    kubectl("create", "namespace", namespace)
    kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(WORKFLOW))
    operator = start_operator(namespace, log)
    try:
        time.sleep(5)
        idle = rss_now(operator.pid)
        created = asyncio.run(create_runs(namespace, n))
        active = wait_active(namespace, n, operator, timeout=1800)
        rss, idle_cpu = settle(operator.pid, SETTLE_SECONDS)
        _, peak = proc_stats(operator.pid)
        stop(operator)
        # a restart with all N active: list everything, reconcile each run once
        restart_at = time.monotonic()
        operator = start_operator(namespace, log)
        resumed = wait_quiet(operator.pid, timeout=900) - restart_at
        rss_after, idle_after = settle(operator.pid, SETTLE_SECONDS)
        _, peak_after = proc_stats(operator.pid)
    finally:
        stop(operator)
        subprocess.run(
            ["kubectl", "delete", "namespace", namespace, "--wait=false"],
            capture_output=True,
            check=False,
        )
    mib = 1024 * 1024
    text = "\n".join(
        [
            (
                f"{n:,} runs active at once (each holding a Running pod), one operator, a fresh "
                "control plane, 2 cores:"
            ),
            "",
            "| figure | value |",
            "|---|---|",
            f"| runs created in | {created:.0f} s ({n / created * 60:,.0f}/min) |",
            f"| all {n:,} active (pod Running) after | {active:.0f} s |",
            f"| RSS with all active, after {SETTLE_SECONDS:.0f} s idle | {rss / mib:.0f} MiB |",
            f"| peak RSS (VmHWM) | {peak / mib:.0f} MiB |",
            f"| RSS of the operator with no run | {idle / mib:.0f} MiB |",
            f"| RSS per active run (above that) | {(rss - idle) / n / 1024:.1f} KiB |",
            f"| CPU while holding them idle | {idle_cpu * 1000:.0f} ms/s |",
            f"| after a restart: RSS, peak | {rss_after / mib:.0f} MiB, {peak_after / mib:.0f} MiB |",
            f"| after a restart: CPU idle | {idle_after * 1000:.0f} ms/s |",
            f"| restart to settled (listing and reconciling all) | {max(resumed, 0):.0f} s |",
        ]
    )
    print(text)
    write_results("active-runs", text)


if __name__ == "__main__":
    main()

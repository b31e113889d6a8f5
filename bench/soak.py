"""A soak: runs arriving at a steady rate for a long while, the operator restarted every few
minutes, and what must hold throughout: memory flat, no run lost or stuck, latency stable.

    python tests/cluster/cluster.py up                 # builds the control plane if missing
    export KUBECONFIG=~/.cache/braid/cluster/admin.kubeconfig
    kubectl apply --server-side -f crds/               # Braid's CRDs
    python bench/soak.py                               # 30 min at 80 % of --max, restarts every 5 min
    python bench/soak.py --minutes 3 --restart-every 60 --no-write   # a short look

Runs are the 3-step chain of bench/peers/compare.py (kwok completes each pod at once), with
``podGC: OnRunCompletion`` and ``ttlStrategy.secondsAfterCompletion`` so the cluster holds a
bounded number of objects however long the soak lasts: the operator deletes each run's pods
when it finishes and the run a little later, which is part of the load. ``--max`` is the
measured maximum sustained rate: the highest at which two minutes without restarts on a
freshly started control plane (``--minutes 2 --restart-every 1000 --window 30 --rate R``)
keep run durations flat — 640 runs/min on this 2-core machine (2026-12-02; at 800 they grew
by 5 s every 30 s). The arrival rate is ``--load`` (0.8) of it unless ``--rate`` is given.

What is reported (JSON lines on stdout, appended to /tmp/braid-soak.jsonl; the table between
the `soak` markers of bench/README.md unless ``--no-write``):

- per window of ``--window`` seconds (by when runs were created): runs created, finished,
  run duration p50/p99 (create request sent -> the watch sees it Succeeded; includes the
  restarts that fall in the window), and the operator's RSS last sampled by the window's end
  (with ``--restart-every`` longer than the soak: one process's RSS over time);
- per operator process (one per restart interval): its RSS one minute after start (warm) and
  at its end, and its peak; growth = end - warm;
- at the end: runs created, succeeded, failed, and lost (never seen finished within
  ``--drain`` seconds after the last was created); the process exits 1 when any run failed or
  was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from braid.kube import rest
from braid.kube.rest import Rest
from results import kubectl, operator_command, write_results

ROOT = Path(__file__).resolve().parents[1]
GROUP, VERSION = "braid.dev", "v1alpha1"
COMPLETE = {"braid.dev/test-exit-code": "0", "braid.dev/test-output": "{}"}


def workflow(ttl: int) -> dict[str, Any]:
    step = {"image": "busybox", "command": ["true"], "podTemplate": {"metadata": {}}}
    step["podTemplate"]["metadata"]["annotations"] = COMPLETE
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Workflow",
        "metadata": {"name": "soak"},
        "spec": {
            "podGC": {"strategy": "OnRunCompletion"},
            "ttlStrategy": {"secondsAfterCompletion": ttl},
            "steps": [
                {"name": f"s{i}", "container": step, **({"dependsOn": [f"s{i - 1}"]} if i else {})}
                for i in range(3)
            ],
        },
    }


def rss_now(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 2)


class Operator:
    """`braid operator` on the soak's namespace, started again on every restart(); the RSS of
    each process sampled until it ends."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.proc: subprocess.Popen[bytes] | None = None
        self.processes: list[dict[str, Any]] = []
        self.logs = Path(tempfile.gettempdir()) / f"braid-soak-{namespace}"
        self.logs.mkdir(exist_ok=True)

    def start(self, now: float) -> None:
        log = self.logs / f"operator-{len(self.processes)}.log"
        self.proc = subprocess.Popen(
            operator_command(self.namespace),
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        self.processes.append(
            {"pid": self.proc.pid, "started": now, "samples": [], "log": str(log)}
        )

    def sample(self, now: float) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        current = self.processes[-1]
        current["samples"].append((now - current["started"], rss_now(self.proc.pid)))

    def stop(self, now: float) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.processes[-1]["ended"] = now
        self.processes[-1]["exit"] = self.proc.returncode
        self.proc = None


async def soak(args: argparse.Namespace, namespace: str, operator: Operator) -> dict[str, Any]:  # noqa: C901, PLR0915 - one measurement, read top to bottom
    api = Rest(rest.load())
    runs = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/workflowruns"
    created: dict[str, float] = {}
    finished: dict[str, tuple[float, str]] = {}
    done, arrived, drained = asyncio.Event(), asyncio.Event(), asyncio.Event()

    def check_drained() -> None:
        if arrived.is_set() and len(finished) >= len(created):
            drained.set()

    def on_run(now: float, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        phase = (obj.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed") and name not in finished:
            finished[name] = (now, phase)
            check_drained()

    async def follow() -> None:
        """The runs' watch, started again whenever the API server ends it."""
        while not done.is_set():
            # No resourceVersion: every run is replayed as ADDED first, then the changes.
            async for event in api.watch(runs, seconds=120):
                if event["type"] == "ERROR":
                    break  # 410 Gone: watch again from a new listing
                if event["type"] != "DELETED":
                    on_run(time.monotonic(), event["object"])
                if done.is_set():
                    return

    async def create(name: str) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "WorkflowRun",
            "metadata": {"name": name},
            "spec": {"workflowRef": {"name": "soak"}},
        }
        created[name] = time.monotonic()
        await api.json("POST", runs, body=body)

    async def arrive(start: float, end: float) -> None:
        interval, i, pending = 60.0 / args.rate, 0, set()
        while (now := time.monotonic()) < end:
            due = start + i * interval
            if due > now:
                await asyncio.sleep(due - now)
            task = asyncio.create_task(create(f"soak-{i:06d}"))
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1
        await asyncio.gather(*pending)

    async def restarts(start: float, end: float) -> None:
        k = 1
        while start + k * args.restart_every < end:
            await asyncio.sleep(start + k * args.restart_every - time.monotonic())
            now = time.monotonic()
            await asyncio.to_thread(operator.stop, now)
            operator.start(time.monotonic())
            k += 1

    async def sampler() -> None:
        while not done.is_set():
            operator.sample(time.monotonic())
            await asyncio.sleep(5)

    watcher = asyncio.create_task(follow())
    sampling = asyncio.create_task(sampler())
    await asyncio.sleep(2)
    start = time.monotonic()
    end = start + args.minutes * 60
    await asyncio.gather(arrive(start, end), restarts(start, end))
    arrived.set()
    check_drained()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(drained.wait(), args.drain)
    done.set()
    watcher.cancel()
    sampling.cancel()
    await asyncio.gather(watcher, sampling, return_exceptions=True)
    await api.close()
    return {"start": start, "created": created, "finished": finished}


def rss_at(operator: Operator, moment: float) -> int | None:
    """The operator's RSS (MiB) last sampled by ``moment``, whichever process it was."""
    samples = [(p["started"] + age, rss) for p in operator.processes for age, rss in p["samples"]]
    before = [rss for t, rss in samples if t <= moment]  # processes and samples in time order
    return round(before[-1] / 2**20) if before else None


def report(args: argparse.Namespace, seen: dict[str, Any], operator: Operator) -> dict[str, Any]:
    start, created, finished = seen["start"], seen["created"], seen["finished"]
    windows = []
    n_windows = int(args.minutes * 60 // args.window) + (args.minutes * 60 % args.window > 0)
    for w in range(n_windows):
        lo, hi = start + w * args.window, start + (w + 1) * args.window
        names = [n for n, t in created.items() if lo <= t < hi]
        durations = [finished[n][0] - created[n] for n in names if n in finished]
        restarts = sum(1 for p in operator.processes[1:] if lo <= p["started"] < hi)
        windows.append(
            {
                "minute": round((lo - start) / 60, 1),
                "created": len(names),
                "finished": len(durations),
                "p50_s": pct(durations, 0.5),
                "p99_s": pct(durations, 0.99),
                "restarts": restarts,
                "rss_mib": rss_at(operator, hi),
            }
        )
    processes = []
    for p in operator.processes:
        samples = p["samples"]
        warm = next((rss for age, rss in samples if age >= 60), None)
        last = samples[-1][1] if samples else None
        processes.append(
            {
                "process": len(processes),
                "lived_s": round(p.get("ended", time.monotonic()) - p["started"]),
                "rss_warm_mib": round(warm / 2**20) if warm else None,
                "rss_end_mib": round(last / 2**20) if last else None,
                "rss_peak_mib": round(max(r for _, r in samples) / 2**20) if samples else None,
                "exit": p.get("exit"),
            }
        )
    phases = [phase for _, phase in finished.values()]
    lost = sorted(set(created) - set(finished))
    durations = [finished[n][0] - created[n] for n in created if n in finished]
    return {
        "minutes": args.minutes,
        "rate_per_min": round(args.rate, 1),
        "restart_every_s": args.restart_every,
        "created": len(created),
        "succeeded": phases.count("Succeeded"),
        "failed": phases.count("Failed"),
        "lost": len(lost),
        "lost_names": lost[:20],
        "p50_s": pct(durations, 0.5),
        "p99_s": pct(durations, 0.99),
        "max_s": round(max(durations), 2) if durations else None,
        "windows": windows,
        "processes": processes,
    }


def table(result: dict[str, Any]) -> str:
    summary = (
        f"{result['minutes']} min at {result['rate_per_min']} runs/min (3-step chains), the "
        f"operator restarted every {result['restart_every_s']} s: {result['created']} runs "
        f"created, {result['succeeded']} succeeded, {result['failed']} failed, "
        f"{result['lost']} lost; run duration p50 {result['p50_s']} s, p99 {result['p99_s']} s, "
        f"max {result['max_s']} s."
    )
    lines = [
        summary,
        "",
        "| window (min) | runs created | finished | duration p50 | p99 | restarts | RSS at its end |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {w['minute']} | {w['created']} | {w['finished']} | {w['p50_s']} s | "
        f"{w['p99_s']} s | {w['restarts']} | {w.get('rss_mib')} MiB |"
        for w in result["windows"]
    ]
    lines += [
        "",
        "| operator process | lived | RSS at 1 min | RSS at its end | peak RSS |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {p['process']} | {p['lived_s']} s | {p['rss_warm_mib']} MiB | "
        f"{p['rss_end_mib']} MiB | {p['rss_peak_mib']} MiB |"
        for p in result["processes"]
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--max", type=float, default=640, help="measured maximum, runs/min")
    parser.add_argument("--load", type=float, default=0.8, help="fraction of --max")
    parser.add_argument("--rate", type=float, help="runs/min (default: --load x --max)")
    parser.add_argument("--restart-every", type=float, default=300, help="seconds")
    parser.add_argument("--window", type=float, default=300, help="seconds per reported window")
    parser.add_argument("--drain", type=float, default=180, help="seconds to wait at the end")
    parser.add_argument("--ttl", type=int, default=20, help="runs deleted this long after")
    parser.add_argument("--no-write", action="store_true", help="leave bench/README.md alone")
    args = parser.parse_args()
    args.rate = args.rate or args.load * args.max
    namespace = f"soak-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(workflow(args.ttl)))
    operator = Operator(namespace)
    operator.start(time.monotonic())
    try:
        time.sleep(5)
        if operator.proc is None or operator.proc.poll() is not None:
            raise SystemExit(f"the operator exited at start; see {operator.logs}")
        seen = asyncio.run(soak(args, namespace, operator))
    finally:
        operator.stop(time.monotonic())
        kubectl("delete", "namespace", namespace, "--wait=false")
    result = report(args, seen, operator)
    line = json.dumps(result)
    print(line)
    with Path(tempfile.gettempdir(), "braid-soak.jsonl").open("a") as out:
        out.write(line + "\n")
    print(table(result))
    if not args.no_write:
        write_results("soak", table(result))
    if result["failed"] or result["lost"]:
        raise SystemExit(f"{result['failed']} failed, {result['lost']} lost; logs: {operator.logs}")


if __name__ == "__main__":
    main()

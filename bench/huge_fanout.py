"""A 10,000-item fan-out through the operator's reconciler, against an in-memory API server.

Every pod completion is one event and one full reconcile, as in a cluster: read the run, parse
its status, decide, create pods, write the status. Measures, along the run, the wall time of
each reconcile and the size of the run object the API server would store (its limit is
1.5 MB), so "flat per-event cost" and "well under the limit" are numbers, not hopes.

    python bench/huge_fanout.py            # 10,000 items; writes the table into bench/README.md
    python bench/huge_fanout.py --items 2000 --quick   # prints only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from braid.controller.reconcile import PodView, Reconciler
from braid.kube.memory import MemoryCluster
from results import write_results


def succeed(pod: dict[str, Any]) -> None:
    pod["status"] = {
        "phase": "Succeeded",
        "containerStatuses": [
            {"name": "step", "state": {"terminated": {"exitCode": 0, "message": "{}"}}}
        ],
    }


async def drive(items: int, parallelism: int) -> list[tuple[int, float, int]]:
    cluster = MemoryCluster()
    cluster.workflows["wide"] = {
        "spec": {
            "steps": [
                {
                    "name": "fan",
                    "fanOut": {
                        "items": list(range(items)),
                        "parallelism": parallelism,
                        "container": {"image": "x", "command": ["work", "${{ item }}"]},
                    },
                }
            ]
        }
    }
    cluster.runs["r"] = {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {"name": "r", "namespace": "ns", "uid": "u", "resourceVersion": "1"},
        "spec": {"workflowRef": {"name": "wide"}},
    }
    clock = datetime(2026, 1, 1, tzinfo=UTC)
    ticks = iter(clock + timedelta(milliseconds=i) for i in range(10**9))
    reconciler = Reconciler(cluster, clock=lambda: next(ticks))
    samples: list[tuple[int, float, int]] = []
    finished = 0
    # As the operator's pod indexes do: by name, and all of them only when asked.
    pods = PodView(lookup=cluster.pods.get, every=lambda: list(cluster.pods.values()))
    await reconciler.reconcile("ns", "r", pods)
    done: set[str] = set()
    while True:
        running = next((n for n in cluster.pods if n not in done), None)
        if running is None:
            break
        succeed(cluster.pods[running])  # one pod finishes: one event
        done.add(running)
        finished += 1
        began = time.perf_counter()
        await reconciler.reconcile("ns", "r", pods)
        elapsed = time.perf_counter() - began
        size = len(json.dumps(cluster.runs["r"]))
        samples.append((finished, elapsed, size))
    status = cluster.runs["r"]["status"]
    assert status["phase"] == "Succeeded", status["conditions"]
    return samples


def table(samples: list[tuple[int, float, int]], items: int) -> str:
    rows = ["| items finished | reconcile p50 | reconcile p95 | run object |", "|---|---|---|---|"]
    for decile in range(1, 11):
        upto = items * decile // 10
        window = [s for s in samples if upto - items // 10 < s[0] <= upto]
        times = sorted(t for _, t, _ in window)
        p50 = statistics.median(times) * 1000
        p95 = times[int(len(times) * 0.95) - 1] * 1000
        size = max(sz for _, _, sz in window)
        rows.append(f"| {upto:,} | {p50:.1f} ms | {p95:.1f} ms | {size / 1024:.0f} KiB |")
    return "\n".join(rows)


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--parallelism", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="print only")
    args = parser.parse_args()
    began = time.perf_counter()
    samples = asyncio.run(drive(args.items, args.parallelism))
    total = time.perf_counter() - began
    text = (
        f"{args.items:,} items, parallelism {args.parallelism}, one reconcile per pod completion "
        f"({len(samples):,} reconciles, {total:.0f} s in all):\n\n" + table(samples, args.items)
    )
    print(text)
    if not args.quick:
        write_results("huge-fanout", text)


if __name__ == "__main__":
    main()

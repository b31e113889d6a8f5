"""How the cost of one engine decision grows with the size of the run.

For each shape, drive a run to its end by reporting one finished attempt per decision (the
worst case: one decision per event) and time every ``decide`` call; also time ``RunState.load``
of a half-finished status, which the operator pays once per reconcile.

    python bench/engine_decisions.py            # writes the table into bench/README.md
    python bench/engine_decisions.py --quick    # smaller sizes, prints only
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import deque
from datetime import timedelta
from typing import Any

from braid.api.run import WorkflowRunStatus
from braid.api.workflow import WorkflowSpec
from braid.engine import AttemptResult, Observations, RunState, StartAttempt
from braid.engine.simulate import EPOCH
from results import write_results

CMD = {"image": "x", "command": ["true"], "args": ["${{ params.p }}"]}


def chain(n: int) -> WorkflowSpec:
    return WorkflowSpec.model_validate(
        {
            "params": [{"name": "p", "default": 1}],
            "steps": [{"name": f"s{i}", "container": CMD} for i in range(n)],
        }
    )


def wide(n: int) -> WorkflowSpec:
    steps: list[dict[str, Any]] = [{"name": "root", "container": CMD}]
    steps += [{"name": f"s{i}", "dependsOn": ["root"], "container": CMD} for i in range(n - 2)]
    steps.append(
        {"name": "join", "dependsOn": [f"s{i}" for i in range(min(n - 2, 100))], "container": CMD}
    )
    return WorkflowSpec.model_validate(
        {"params": [{"name": "p", "default": 1}], "maxParallel": 50, "steps": steps}
    )


def fan_out(n: int) -> WorkflowSpec:
    return WorkflowSpec.model_validate(
        {
            "params": [{"name": "p", "default": 1}],
            "steps": [
                {
                    "name": "fan",
                    "fanOut": {"items": list(range(n)), "parallelism": 100, "container": CMD},
                },
                {"name": "after", "container": CMD},
            ],
        }
    )


def drive(spec: WorkflowSpec) -> tuple[list[float], float, float]:
    """Per-decision seconds, and parse/load seconds of a half-done status."""
    state = RunState.load("bench", spec, WorkflowRunStatus(), {"p": 1})
    now = EPOCH
    running: deque[str] = deque()
    timings: list[float] = []
    obs = Observations()
    started = 0
    load_seconds = parse_seconds = 0.0
    half = _size(spec) // 2
    while True:
        t0 = time.perf_counter()
        decision = state.decide(obs, now)
        timings.append(time.perf_counter() - t0)
        for action in decision.actions:
            if isinstance(action, StartAttempt):
                running.append(action.name)
                started += 1
        if decision.finished:
            return timings, parse_seconds, load_seconds
        if not load_seconds and len(timings) > 2 and started >= half:
            saved = state.status.model_dump(by_alias=True, mode="json")
            t0 = time.perf_counter()
            parsed = WorkflowRunStatus.model_validate(saved)
            parse_seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
            RunState.load("bench", spec, parsed, {"p": 1})
            load_seconds = time.perf_counter() - t0
        now += timedelta(seconds=1)
        obs = Observations(
            results=[AttemptResult(running.popleft(), exit_code=0, output='{"ok": true}')]
        )


def _size(spec: WorkflowSpec) -> int:
    return sum(len(s.fan_out.items or []) if s.fan_out else 1 for s in spec.steps)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = [10, 100, 1000] if args.quick else [10, 1000, 10000]
    rows = []
    for shape, build in (
        ("chain", chain),
        ("wide (maxParallel 50)", wide),
        ("fan-out (parallelism 100)", fan_out),
    ):
        for n in sizes:
            spec = build(n)
            t0 = time.perf_counter()
            timings, parse, load = drive(spec)
            total = time.perf_counter() - t0
            steady = sorted(timings[1:])  # the first decision also creates every step's status
            rows.append(
                (
                    shape,
                    n,
                    len(timings),
                    statistics.median(steady) * 1e6,
                    steady[int(len(steady) * 0.99) - 1] * 1e6,
                    timings[0] * 1e3,
                    parse * 1e3,
                    load * 1e3,
                    total,
                )
            )
            print(
                f"{shape:28} n={n:>6} decisions={len(timings):>6} p50={rows[-1][3]:8.1f}us p99={rows[-1][4]:8.1f}us first={rows[-1][5]:7.1f}ms parse={rows[-1][6]:7.1f}ms load={rows[-1][7]:7.1f}ms total={total:6.2f}s",
                flush=True,
            )
    table = [
        "| shape | attempts | decisions | p50 decide | p99 decide | first decide | parse half-done status | load it | whole run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    table += [
        f"| {s} | {n:,} | {d:,} | {p50:.0f} µs | {p99:.0f} µs | {first:.1f} ms | {parse:.0f} ms | {load:.0f} ms | {tot:.2f} s |"
        for s, n, d, p50, p99, first, parse, load, tot in rows
    ]
    text = "\n".join(table)
    print(text)
    if not args.quick:
        write_results("engine-bench", text)
        print("wrote bench/README.md", file=sys.stderr)


if __name__ == "__main__":
    main()

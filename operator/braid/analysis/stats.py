"""Performance analysis of a workflow's finished runs: per-step statistics, critical paths,
bottlenecks and recommendations ranked by expected gain. Pure: runs in, data out."""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

from braid.analysis import models
from braid.api.analysis import (
    Bottleneck,
    Recommendation,
    RunPath,
    StepStats,
    Straggler,
    WorkflowAnalysis,
)
from braid.api.reasons import FailureReason
from braid.api.run import StepPhase, StepStatus, WorkflowRunStatus
from braid.api.workflow import Step, WorkflowSpec
from braid.engine import dag

_EPOCH = datetime.min.replace(tzinfo=UTC)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start) / timedelta(seconds=1))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def critical_path(spec: WorkflowSpec, status: WorkflowRunStatus) -> list[str]:
    """Walk back from the step that finished last through the dependency that finished last."""
    deps = dag.build(spec)[0].deps
    steps = {s.name: s for s in status.steps if s.completion_time and s.start_time}
    if not steps:
        return []
    current: str | None = max(steps, key=lambda n: steps[n].completion_time or _EPOCH)
    path: list[str] = []
    while current is not None:
        path.append(current)
        done = [d for d in deps.get(current, ()) if d in steps]
        current = max(done, key=lambda n: steps[n].completion_time or _EPOCH) if done else None
    return list(reversed(path))


def _reads(step: Step, other: str) -> bool:
    text = json.dumps(step.wire())
    return bool(
        re.search(rf"steps(\.{re.escape(other)}\b|\[\\?[\"']{re.escape(other)}\\?[\"']\])", text)
    )


def _waiting(st: StepStatus, deps_done: datetime | None, run_start: datetime | None) -> float:
    if st.kind == "approval":
        return _seconds(st.start_time, st.completion_time) or 0.0
    return _seconds(deps_done or run_start, st.start_time) or 0.0


def analyze(
    spec: WorkflowSpec,
    runs: list[WorkflowRunStatus],
    now: datetime,
    names: list[str] | None = None,
) -> WorkflowAnalysis:
    """``names``: the runs' names, in the order of ``runs`` (for per-run results)."""
    labelled = list(zip(names or [f"run-{i}" for i in range(len(runs))], runs, strict=True))
    kept = [(n, r) for n, r in labelled if r.succeeded is not None and r.start_time is not None]
    finished = [r for _, r in kept]
    graph = dag.build(spec)[0]
    durations: dict[str, list[float]] = defaultdict(list)
    phases: dict[str, list[StepPhase]] = defaultdict(list)
    retried: Counter[str] = Counter()
    waste: dict[str, float] = defaultdict(float)
    waits: dict[str, float] = defaultdict(float)
    tokens: dict[str, float] = defaultdict(float)
    cost: dict[str, float] = defaultdict(float)
    reported: set[str] = set()
    on_path: Counter[str] = Counter()
    paths: Counter[tuple[str, ...]] = Counter()
    run_durations: list[float] = []
    timed_out: Counter[str] = Counter()
    run_paths: list[RunPath] = []
    for run_name, run in kept:
        by_name = {s.name: s for s in run.steps}
        run_durations.append(_seconds(run.start_time, run.completion_time) or 0.0)
        path = critical_path(spec, run)
        run_paths.append(RunPath(run=run_name, duration=run_durations[-1], critical_path=path))
        paths[tuple(path)] += 1
        on_path.update(path)
        for name in graph.order:
            st = by_name.get(name)
            if st is None or st.phase == StepPhase.SKIPPED or st.start_time is None:
                continue
            phases[name].append(st.phase)
            seconds = _seconds(st.start_time, st.completion_time)
            if seconds is not None:
                durations[name].append(seconds)
            if st.attempts > 1:
                retried[name] += 1
                waste[name] += _seconds(st.start_time, st.attempt_start_time) or 0.0
            if st.reason == FailureReason.TIMED_OUT:
                timed_out[name] += 1
            dep_times = [
                by_name[d].completion_time
                for d in graph.deps[name]
                if d in by_name and by_name[d].completion_time
            ]
            waits[name] += _waiting(st, max(dep_times) if dep_times else None, run.start_time)  # type: ignore[type-var]
            if st.usage is not None:
                reported.add(name)
                tokens[name] += st.usage.tokens
                cost[name] += st.usage.cost
    n = len(finished)
    stats: list[StepStats] = []
    for name in graph.order:
        ran = phases.get(name, [])
        times = durations.get(name) or [0.0]
        if not ran:
            continue
        k = len(ran)
        stats.append(
            StepStats(
                step=name,
                runs=k,
                p50=round(percentile(times, 50), 3),
                p95=round(percentile(times, 95), 3),
                mean=round(statistics.fmean(times), 3),
                stdev=round(statistics.pstdev(times), 3) if len(times) > 1 else 0.0,
                success_rate=round(sum(p == StepPhase.SUCCEEDED for p in ran) / k, 3),
                error_rate=round(sum(p == StepPhase.FAILED for p in ran) / k, 3),
                retry_rate=round(retried[name] / k, 3),
                retry_waste=round(waste[name] / n, 3),
                waiting=round(waits[name] / n, 3),
                on_critical_path=round(on_path[name] / n, 3) if n else 0.0,
                tokens=round(tokens[name] / n, 3) if name in reported else None,
                cost=round(cost[name] / n, 6) if name in reported else None,
            )
        )
    return WorkflowAnalysis(
        generated_at=now,
        runs=n,
        succeeded=sum(r.succeeded is True for r in finished),
        duration_p50=round(percentile(run_durations, 50), 3) if run_durations else 0.0,
        duration_p95=round(percentile(run_durations, 95), 3) if run_durations else 0.0,
        critical_path=list(paths.most_common(1)[0][0]) if paths else [],
        run_paths=run_paths[-50:],
        stragglers=_stragglers(kept, stats),
        steps=stats,
        model_calls=(calls := models.model_calls(spec, finished)),
        bottlenecks=_bottlenecks(stats),
        recommendations=sorted(
            [
                *_recommend(spec, finished, stats, timed_out, run_durations),
                *models.recommend(spec, calls),
            ],
            key=lambda r: r.gain_seconds,
            reverse=True,
        ),
    )


def _stragglers(
    runs: list[tuple[str, WorkflowRunStatus]], stats: list[StepStats]
) -> list[Straggler]:
    medians = {s.step: s.p50 for s in stats}
    out = []
    for name, run in runs:
        for st in run.steps:
            seconds = _seconds(st.start_time, st.completion_time)
            p50 = medians.get(st.name)
            if seconds is not None and p50 is not None and seconds > max(2 * p50, 1.0):
                out.append(Straggler(run=name, step=st.name, seconds=seconds, p50=p50))
    return sorted(out, key=lambda s: s.seconds / max(s.p50, 1e-9), reverse=True)[:20]


def _bottlenecks(stats: list[StepStats]) -> list[Bottleneck]:
    if not stats:
        return []
    means = [s.mean for s in stats]
    m = statistics.fmean(means)
    sd = statistics.pstdev(means) if len(means) > 1 else 0.0
    out = []
    for s in stats:
        if len(stats) > 1 and s.mean > m + sd:
            out.append(
                Bottleneck(
                    step=s.step,
                    why="Slow",
                    evidence=f"mean {s.mean:.1f}s > {m:.1f}s + {sd:.1f}s (all steps' mean + 1 sd)",
                )
            )
        if s.runs >= 3 and s.mean > 0 and s.stdev / s.mean > 0.5:
            out.append(
                Bottleneck(
                    step=s.step,
                    why="Variable",
                    evidence=f"stdev {s.stdev:.1f}s is {s.stdev / s.mean:.0%} of its mean "
                    f"{s.mean:.1f}s",
                )
            )
    return out


def _recommend(
    spec: WorkflowSpec,
    runs: list[WorkflowRunStatus],
    stats: list[StepStats],
    timed_out: Counter[str],
    run_durations: list[float],
) -> list[Recommendation]:
    """Every recommendation the runs support, the largest expected gain first."""
    by_step = {s.step: s for s in stats}
    out = [
        *_parallelize(spec, by_step),
        *_cache(spec, runs, by_step),
        *_timeouts_and_retries(spec, runs, by_step, timed_out),
        *_relax_sla(spec, run_durations),
    ]
    return sorted(out, key=lambda r: r.gain_seconds, reverse=True)


def _parallelize(spec: WorkflowSpec, by_step: dict[str, StepStats]) -> list[Recommendation]:
    """Sequential only because dependsOn was omitted, with no data passing between them."""
    out = []
    for prev, step in zip(spec.steps, spec.steps[1:], strict=False):
        if step.depends_on is not None or _reads(step, prev.name):
            continue
        a, b = by_step.get(prev.name), by_step.get(step.name)
        if a is None or b is None:
            continue
        out.append(
            Recommendation(
                kind="Parallelize",
                steps=[prev.name, step.name],
                gain_seconds=round(min(a.mean, b.mean), 3),
                message=f"run {step.name} alongside {prev.name}: set its dependsOn to "
                f"{list(prev.depends_on or [])} (or what it really needs)",
                evidence=f"{step.name} reads no output of {prev.name} and runs after it only "
                f"because dependsOn is omitted; means {a.mean:.1f}s and {b.mean:.1f}s",
            )
        )
    return out


def _cache(
    spec: WorkflowSpec, runs: list[WorkflowRunStatus], by_step: dict[str, StepStats]
) -> list[Recommendation]:
    """Same params, same outputs: the work repeats."""
    steps = {s.name: s for s in spec.steps}
    groups: dict[str, list[WorkflowRunStatus]] = defaultdict(list)
    for run in runs:
        groups[json.dumps(run.params or {}, sort_keys=True)].append(run)
    out = []
    for name, st in by_step.items():
        repeats = 0
        for group in groups.values():
            outputs = [
                json.dumps(s.outputs, sort_keys=True)
                for r in group
                for s in r.steps
                if s.name == name and s.phase == StepPhase.SUCCEEDED and s.outputs is not None
            ]
            if len(outputs) >= 2 and len(set(outputs)) == 1:
                repeats += len(outputs) - 1
        step = steps[name]
        cacheable = step.container or step.webhook or step.llm or step.fan_out
        if repeats >= 2 and cacheable and step.cache is None:
            out.append(
                Recommendation(
                    kind="Cache",
                    steps=[name],
                    gain_seconds=round(st.mean * repeats / max(len(runs), 1), 3),
                    message=f"cache {name}'s outputs by what it reads: add to it "
                    f"`cache: {{key: {json.dumps(_cache_key(step))}}}`",
                    evidence=f"{repeats} runs repeated it with the same params and got the same "
                    f"outputs; mean {st.mean:.1f}s",
                )
            )
    return out


def _cache_key(step: Step) -> str:
    """A CEL key over everything the step reads: its params and upstream outputs (and, in a
    fan-out, the item)."""
    text = json.dumps(step.model_dump(by_alias=True, exclude_none=True))
    reads = [f"params.{p}" for p in sorted(set(re.findall(r"params\.(\w+)", text)))]
    reads += [f"steps.{s}.outputs" for s in sorted(set(re.findall(r"steps\.(\w+)\.outputs", text)))]
    if step.fan_out is not None:
        reads.append("item")
    return f"[{', '.join(reads)}]" if reads else f"'{step.name}'"


def _timeouts_and_retries(
    spec: WorkflowSpec,
    runs: list[WorkflowRunStatus],
    by_step: dict[str, StepStats],
    timed_out: Counter[str],
) -> list[Recommendation]:
    steps = {s.name: s for s in spec.steps}
    out = []
    for name, st in by_step.items():
        step = steps[name]
        timeout = step.timeout_seconds or (spec.defaults.timeout_seconds if spec.defaults else None)
        if timeout and (timed_out[name] or st.p95 > 0.8 * timeout):
            out.append(
                Recommendation(
                    kind="RaiseTimeout",
                    steps=[name],
                    gain_seconds=round(
                        st.retry_waste + timed_out[name] * timeout / max(len(runs), 1), 3
                    ),
                    message=f"raise {name}'s timeoutSeconds from {timeout} to about "
                    f"{math.ceil(st.p95 * 1.5)}",
                    evidence=f"p95 {st.p95:.1f}s against a {timeout}s timeout; "
                    f"{timed_out[name]} run(s) timed out",
                )
            )
        retry = step.retry or (spec.defaults.retry if spec.defaults else None)
        retried = [s for r in runs for s in r.steps if s.name == name and s.attempts > 1]
        if retry and retry.limit and retried and all(s.phase == StepPhase.FAILED for s in retried):
            out.append(
                Recommendation(
                    kind="LowerRetries",
                    steps=[name],
                    gain_seconds=st.retry_waste,
                    message=f"lower {name}'s retry limit ({retry.limit}) or restrict retryOn: "
                    "its retries never succeeded",
                    evidence=f"{len(retried)} run(s) retried it and every one still failed; "
                    f"{st.retry_waste:.1f}s per run spent on those attempts",
                )
            )
    return out


def _relax_sla(spec: WorkflowSpec, run_durations: list[float]) -> list[Recommendation]:
    sla = spec.sla.max_duration_seconds if spec.sla else None
    if not sla or not run_durations:
        return []
    missed = sum(d > sla for d in run_durations)
    if missed / len(run_durations) <= 0.5:
        return []
    p50 = percentile(run_durations, 50)
    return [
        Recommendation(
            kind="RelaxSLA",
            steps=[],
            gain_seconds=round(p50 - sla, 3),
            message=f"the run SLA ({sla}s) is routinely missed: raise it to about "
            f"{math.ceil(percentile(run_durations, 95))}s or shorten the critical path",
            evidence=f"{missed} of {len(run_durations)} runs took longer; median {p50:.1f}s",
        )
    ]

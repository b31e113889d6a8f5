"""The text report of an analysis."""

from __future__ import annotations

from braid.api.analysis import WorkflowAnalysis


def analysis_report(name: str, a: WorkflowAnalysis) -> str:
    summary = (
        f"Workflow {name}: {a.runs} finished runs ({a.succeeded} succeeded); "
        f"duration p50 {a.duration_p50:.1f}s, p95 {a.duration_p95:.1f}s"
    )
    header = (
        f"{'step':<20} {'runs':>4} {'p50':>8} {'p95':>8} {'mean':>8} {'stdev':>7} "
        f"{'ok':>5} {'err':>5} {'retry':>5} {'waste':>7} {'wait':>7} {'crit':>5} {'tokens':>8}"
    )
    path = " -> ".join(a.critical_path) or "-"
    lines = [summary, f"Critical path (most runs): {path}", "", header]
    for s in a.steps:
        tokens = f"{s.tokens:.0f}" if s.tokens is not None else "-"
        lines.append(
            f"{s.step[:20]:<20} {s.runs:>4} {s.p50:>7.1f}s {s.p95:>7.1f}s {s.mean:>7.1f}s "
            f"{s.stdev:>6.1f}s {s.success_rate:>5.0%} {s.error_rate:>5.0%} {s.retry_rate:>5.0%} "
            f"{s.retry_waste:>6.1f}s {s.waiting:>6.1f}s {s.on_critical_path:>5.0%} {tokens:>8}"
        )
    lines.append("")
    lines.append("Stragglers:" if a.stragglers else "Stragglers: none")
    lines += [
        f"  {s.step} in {s.run}: {s.seconds:.1f}s (median {s.p50:.1f}s)" for s in a.stragglers[:10]
    ]
    if a.model_calls:
        lines.append("")
        lines.append("Model calls:")
    for m in a.model_calls:
        where = f"{m.loop}/{m.step}" if m.loop else m.step
        said = ", ".join(f"{k} {v}" for k, v in sorted(m.models.items()))
        routed = ", ".join(f"{k} {v}" for k, v in sorted((m.candidates or {}).items()))
        finished = ", ".join(f"{k} {v}" for k, v in sorted(m.finish_reasons.items()))
        tokens = f"{m.input_tokens or 0:.0f} in / {m.output_tokens or 0:.0f} out tokens per call"
        lines.append(f"  {where}: {m.calls} replies ({said}); {tokens}; finished: {finished}")
        if routed:
            lines.append(f"    routed to: {routed}")
    lines.append("")
    lines.append("Bottlenecks:" if a.bottlenecks else "Bottlenecks: none")
    lines += [f"  {b.step}: {b.why} - {b.evidence}" for b in a.bottlenecks]
    lines.append("")
    lines.append(
        "Recommendations (largest expected gain first):"
        if a.recommendations
        else "Recommendations: none"
    )
    for i, r in enumerate(a.recommendations, 1):
        lines.append(f"  {i}. [{r.kind}] {r.message} (~{r.gain_seconds:.1f}s per run)")
        lines.append(f"     because {r.evidence}")
    return "\n".join(lines)

"""A run on its time line, drawn with matplotlib: one row per step, fan-out item, loop
iteration's body step, compensation and finally step; the last attempt solid, earlier
attempts and their backoff hatched, waiting (approvals, sleeps, a slot) drawn as such; the
critical path outlined; a real time axis in seconds from the run's start."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timedelta

import matplotlib as mpl
from matplotlib.figure import Figure  # no pyplot: no display, no global figures
from matplotlib.patches import Patch

from braid.analysis.drawing import COLOURS
from braid.analysis.stats import critical_path
from braid.api.reasons import StepReason
from braid.api.run import StepPhase, TaskStatus, WorkflowRunStatus
from braid.api.workflow import WorkflowSpec

MAX_ROWS = 60


@dataclass(frozen=True)
class Row:
    label: str
    status: TaskStatus
    critical: bool = False


def rows(status: WorkflowRunStatus, critical: set[str]) -> list[Row]:
    """What gets a row, in the order steps are declared (items and iterations under them)."""
    out: list[Row] = []
    for st in status.steps:
        on_path = st.name in critical
        if st.start_time is not None:
            out.append(Row(st.name, st, on_path))
        items = (st.items or [])[:20]
        out += [Row(f"  {st.name}[{i.index}]", i) for i in items if i.start_time is not None]
        out += [
            Row(f"  {st.name}#{it.iteration}/{b.name}", b)
            for it in st.iterations or []
            for b in it.steps
            if b.start_time is not None
        ]
        comp = st.compensation
        if comp is not None and comp.start_time is not None:
            out.append(Row(f"  {st.name} (undo)", comp))
    out += [Row(f.name, f) for f in status.finally_ or [] if f.start_time is not None]
    return out[:MAX_ROWS]


def _at(start: datetime, t: datetime | None, end: datetime) -> float:
    return ((t or end) - start) / timedelta(seconds=1)


def figure(status: WorkflowRunStatus, title: str = "", spec: WorkflowSpec | None = None) -> Figure:
    path = set(critical_path(spec, status)) if spec is not None else set()
    shown = rows(status, path)
    times = [r.status.start_time for r in shown if r.status.start_time]
    start = status.start_time or min(times, default=datetime.now().astimezone())
    ends = [r.status.completion_time for r in shown if r.status.completion_time]
    end = status.completion_time or max(ends, default=start)
    total = max(_at(start, end, end), 1e-3)
    height = 1.2 + 0.34 * max(len(shown), 1)
    fig = Figure(figsize=(11, max(height, 2.6)), dpi=110)
    ax = fig.subplots()
    for y, row in enumerate(shown):
        st = row.status
        fill, stroke = COLOURS.get(st.phase.value, COLOURS["Pending"])
        s0 = _at(start, st.start_time, end)
        s1 = _at(start, st.completion_time, end)
        last = _at(start, st.attempt_start_time, end) if st.attempt_start_time else s0
        ec, lw = ("#111", 2.0) if row.critical else (stroke, 1.0)
        waiting = st.phase == StepPhase.WAITING or st.reason in (
            StepReason.APPROVED,
            StepReason.REJECTED,
            StepReason.APPROVAL_TIMED_OUT,
            StepReason.WOKE,
            StepReason.SLEEPING,
            StepReason.APPROVAL_PENDING,
        )
        if waiting:
            ax.barh(
                y,
                max(s1 - s0, total / 400),
                left=s0,
                color="#fff8e1",
                hatch="..",
                edgecolor=ec,
                linewidth=lw,
            )
        else:
            if last > s0:  # earlier attempts and backoff
                ax.barh(
                    y, last - s0, left=s0, color="#ffffff", hatch="///", edgecolor=ec, linewidth=lw
                )
            ax.barh(
                y, max(s1 - last, total / 400), left=last, color=fill, edgecolor=ec, linewidth=lw
            )
        said = f"{s1 - s0:.1f}s" + (f", {st.attempts} tries" if st.attempts > 1 else "")
        ax.text(s1 + total / 100, y, said, va="center", fontsize=8, color="#333")
    ax.set_yticks(range(len(shown)), [r.label for r in shown], fontsize=9)
    for tick, row in zip(ax.get_yticklabels(), shown, strict=True):
        if row.critical:
            tick.set_fontweight("bold")
    ax.invert_yaxis()
    ax.set_xlim(0, total * 1.12)
    ax.set_xlabel(f"seconds since the run started ({start.strftime('%Y-%m-%d %H:%M:%S %Z')})")
    ax.grid(axis="x", color="#e5e5e5")
    ax.set_axisbelow(True)
    heading = f"{title}: {status.phase.value} in {total:.1f}s" if title else status.phase.value
    ax.set_title(heading, loc="left", fontsize=11, fontweight="bold")
    phases = sorted({r.status.phase.value for r in shown})
    legend = [
        Patch(facecolor=COLOURS[p][0], edgecolor=COLOURS[p][1], label=p)
        for p in phases
        if p in COLOURS
    ]
    legend += [
        Patch(facecolor="#ffffff", edgecolor="#555", hatch="///", label="retries & backoff"),
        Patch(facecolor="#fff8e1", edgecolor="#555", hatch="..", label="waiting"),
        Patch(facecolor="#ffffff", edgecolor="#111", linewidth=2, label="critical path"),
    ]
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    return fig


def gantt_svg(status: WorkflowRunStatus, title: str = "", spec: WorkflowSpec | None = None) -> str:
    out = io.StringIO()
    with mpl.rc_context({"svg.fonttype": "none"}):  # SVG text stays text: searchable
        figure(status, title, spec).savefig(out, format="svg")
    return out.getvalue()


def gantt_png(
    status: WorkflowRunStatus, title: str = "", spec: WorkflowSpec | None = None
) -> bytes:
    out = io.BytesIO()
    figure(status, title, spec).savefig(out, format="png")
    return out.getvalue()

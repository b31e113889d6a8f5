"""A workflow's DAG as a picture: Mermaid text, SVG and PNG (drawing.py lays it out). Pure:
from the spec (and, for a run, its status) to a scene — fan-outs and loops drawn as such,
`when` on the edges, compensation and `finally` joined, and a run's boxes coloured by phase
with attempts, items, decisions, failure reasons and durations."""

from __future__ import annotations

import re
from datetime import timedelta

from braid.analysis.drawing import COLOURS, Arrow, Box, Scene, lay_out
from braid.analysis.drawing import png as draw_png
from braid.analysis.drawing import svg as draw_svg
from braid.api.common import human_size
from braid.api.run import StepStatus, TaskStatus, WorkflowRunStatus
from braid.api.workflow import FinallyStep, Step, StepAction, WorkflowSpec
from braid.engine import dag

__all__ = ["COLOURS", "graph_of", "mermaid", "png", "svg"]


def _duration(st: TaskStatus) -> str | None:
    if st.start_time is None or st.completion_time is None:
        return None
    seconds = (st.completion_time - st.start_time) / timedelta(seconds=1)
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def _action(step: Step | StepAction | FinallyStep) -> str:  # noqa: PLR0911 - one per kind
    """What a step does, in a few words."""
    if isinstance(step, Step):
        if step.llm is not None:
            routes = f" (+{len(step.llm.candidates)} routes)" if step.llm.candidates else ""
            return f"llm: {step.llm.model}{routes}"
        if step.approval is not None:
            a, people = step.approval, []
            if a.approvers is not None:
                people = [
                    *(a.approvers.users or []),
                    *(f"group:{g}" for g in a.approvers.groups or []),
                ]
            return f"approval: {a.required} of {', '.join(people) or 'anyone'}"
        if step.sleep is not None:
            z = step.sleep
            return (
                f"sleep {z.duration_seconds}s" if z.duration_seconds is not None else "sleep until"
            )
        if step.workflow is not None:
            return f"workflow: {step.workflow.name or 'inline'}"
    if step.webhook is not None:
        return f"webhook: {step.webhook.method} {str(step.webhook.url)[:40]}"
    if step.container is not None:
        job = " (Job)" if step.container.run_as == "Job" else ""
        return f"container: {step.container.image}{job}"
    return "step"


def _short(when: str) -> str:
    """A `when` as an edge label: steps.x.outputs.y reads x.y."""
    return re.sub(r"steps\.([\w-]+)\.outputs\.", r"\1.", when).replace("steps.", "")


def _describe(step: Step) -> list[str]:
    fan, loop = step.fan_out, step.loop
    out: list[str]
    if fan is not None:
        size = f"{len(fan.items)} items" if fan.items is not None else "items from CEL"
        width = f", {fan.parallelism} at a time" if fan.parallelism else ""
        out = [f"fan-out: {size}{width}"]
        if fan.success_threshold is not None:
            t = fan.success_threshold
            out.append(
                f"≥ {t.count} must succeed"
                if t.count is not None
                else f"≥ {t.fraction:.0%} must succeed"
            )
    elif loop is not None:
        body = " → ".join(b.name for b in loop.steps)
        out = [f"loop (at most {loop.max_iterations}): {body}"]
    else:
        out = [_action(step)]
    if step.retry is not None and step.retry.limit:
        out.append(f"retry ≤ {step.retry.limit}")
    if step.cache is not None:
        out.append("cached")
    return out


def _runtime(st: StepStatus) -> tuple[list[str], list[str]]:
    """Lines and badges a run adds to its step's box."""
    lines, badges = [], []
    if st.attempts > 1:
        badges.append(f"{st.attempts} tries")
    if st.item_count is not None:
        done = (st.outputs or {}).get("succeeded")
        badges.append(f"{done}/{st.item_count}" if done is not None else f"{st.item_count} items")
    if st.iterations:
        badges.append(f"{len(st.iterations)} iter")
    for record in st.approvals or []:
        mark = (
            "✓" if record.decision == "Approved" else "✗" if record.decision == "Rejected" else "!"
        )
        badges.append(f"{mark} {record.user}")
    if (
        st.reason and st.phase.value in ("Failed", "Cancelled", "Skipped")
    ) or st.reason == "Cached":
        lines.append(f"{st.phase.value}: {st.reason}")
    duration = _duration(st)
    if duration:
        lines.append(duration)
    shown = list((st.artifacts or {}).items())
    lines += [f"{name} ({human_size(a.size)})" for name, a in shown[:3]]
    if len(shown) > 3:
        lines.append(f"+{len(shown) - 3} artifacts")
    return lines, badges


def graph_of(spec: WorkflowSpec, status: WorkflowRunStatus | None = None) -> Scene:
    """The picture of a workflow (or a run of it). Only the dependencies are resolved, no
    expression is compiled: a workflow with a broken expression can still be drawn."""
    deps = dag.build(spec)[0].deps
    steps = {s.name: s for s in status.steps} if status else {}
    scene = Scene({}, [])
    for step in spec.steps:
        st = steps.get(step.name)
        box = Box(step.name, step.kind, _describe(step), tooltip=step.description or "")
        into = deps.get(step.name, ())
        if step.when and not into:
            box.lines.append(f"when: {step.when}")
        if st is not None:
            box.phase = st.phase.value
            lines, box.badges = _runtime(st)
            box.lines += lines
            box.tooltip = "; ".join(t for t in (st.reason, st.message) if t) or box.tooltip
        scene.boxes[step.name] = box
        said = _short(step.when) if step.when else ""
        scene.arrows += [Arrow(d, step.name, label=said if d == into[-1] else "") for d in into]
        if step.compensation is not None:
            undo = f"{step.name} (undo)"
            comp = st.compensation if st is not None else None
            scene.boxes[undo] = Box(
                undo,
                "undo",
                [_action(step.compensation)],
                phase=comp.phase.value if comp is not None else None,
                tooltip=(comp.message or "") if comp is not None else "compensation",
            )
            scene.arrows.append(Arrow(step.name, undo, kind="compensation"))
    has_dependants = {a.source for a in scene.arrows if a.kind == "dep"}
    sinks = [s.name for s in spec.steps if s.name not in has_dependants]
    finals = {s.name: s for s in (status.finally_ or [])} if status else {}
    for fin in spec.finally_ or []:
        st = finals.get(fin.name)
        box = Box(fin.name, "finally", [f"finally: {_action(fin)}"])
        if fin.when:
            box.lines.append(f"when: {fin.when}")
        if st is not None:
            box.phase = st.phase.value
            lines, box.badges = _runtime(st)
            box.lines += lines
            box.tooltip = "; ".join(t for t in (st.reason, st.message) if t)
        scene.boxes[fin.name] = box
        after = fin.depends_on or sinks
        scene.arrows += [Arrow(s, fin.name, kind="finally") for s in after]
    return scene


def svg(scene: Scene, title: str = "") -> str:
    scene.title = title
    return draw_svg(lay_out(scene))


def png(scene: Scene, title: str = "") -> bytes:
    scene.title = title
    return draw_png(lay_out(scene))


def _id(name: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in name)


def mermaid(scene: Scene) -> str:
    shapes = {
        "fanOut": ("[[", "]]"),
        "loop": ("{{", "}}"),
        "approval": ("{", "}"),
        "undo": ("[/", "/]"),
    }
    out = ["flowchart TD"]
    for box in scene.boxes.values():
        kind = "approval" if box.lines[:1] and box.lines[0].startswith("approval") else box.kind
        left, right = shapes.get(kind, ("[", "]"))
        label = "<br/>".join([box.name, *box.lines, *box.badges]).replace('"', "'")
        css = f":::{box.phase}" if box.phase else ""
        out.append(f'  {_id(box.name)}{left}"{label}"{right}{css}')
    for a in scene.arrows:
        arrow = {"dep": "-->", "compensation": "-.->", "finally": "-.->"}[a.kind]
        label = f"|{a.label[:40].replace('|', '/')}|" if a.label else ""
        out.append(f"  {_id(a.source)} {arrow}{label} {_id(a.target)}")
    for phase in sorted({b.phase for b in scene.boxes.values() if b.phase}):
        fill, stroke = COLOURS.get(phase, COLOURS["Pending"])
        out.append(f"  classDef {phase} fill:{fill},stroke:{stroke}")
    return "\n".join(out) + "\n"

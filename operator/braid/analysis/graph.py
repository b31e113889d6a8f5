"""A workflow's DAG as a picture: Mermaid text and a self-contained SVG. Pure: from the spec
(and, for a run, its status) to text; fan-outs and loops are drawn as such, and a run's nodes
are coloured by phase with their attempts and durations."""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from html import escape

from braid.api.common import human_size
from braid.api.run import StepStatus, WorkflowRunStatus
from braid.api.workflow import Step, WorkflowSpec
from braid.engine import dag

# Phase -> (fill, stroke); Pending/unknown stays white.
COLOURS = {
    "Succeeded": ("#d4edda", "#28a745"),
    "Failed": ("#f8d7da", "#dc3545"),
    "Running": ("#cce5ff", "#007bff"),
    "Retrying": ("#fff3cd", "#fd7e14"),
    "Waiting": ("#fff3cd", "#ffc107"),
    "Skipped": ("#e2e3e5", "#6c757d"),
    "Cancelled": ("#e2e3e5", "#343a40"),
    "Pending": ("#ffffff", "#6c757d"),
}


@dataclass
class Node:
    name: str
    kind: str
    lines: list[str]
    phase: str | None = None


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)
    finally_: list[Node] = field(default_factory=list)


def _duration(st: StepStatus) -> str | None:
    if st.start_time is None or st.completion_time is None:
        return None
    seconds = (st.completion_time - st.start_time) / timedelta(seconds=1)
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def _describe(step: Step) -> list[str]:
    fan, loop = step.fan_out, step.loop
    if fan is not None:
        size = f"{len(fan.items)} items" if fan.items is not None else "items from CEL"
        width = f", {fan.parallelism} at a time" if fan.parallelism else ""
        return [f"fan-out: {size}{width}"]
    if loop is not None:
        body = " → ".join(b.name for b in loop.steps)
        return [f"loop (at most {loop.max_iterations}): {body}"]
    if step.approval is not None:
        return ["approval"]
    return [step.kind]


def _runtime(st: StepStatus) -> list[str]:
    out = []
    if st.attempts > 1:
        out.append(f"{st.attempts} attempts")
    if st.item_count is not None:
        done = (st.outputs or {}).get("succeeded")
        out.append(
            f"{done}/{st.item_count} items ok" if done is not None else f"{st.item_count} items"
        )
    if st.iterations:
        out.append(f"{len(st.iterations)} iterations")
    duration = _duration(st)
    if duration:
        out.append(duration)
    lines = [", ".join(out)] if out else []
    shown = list((st.artifacts or {}).items())
    lines += [f"{name} ({human_size(a.size)})" for name, a in shown[:3]]
    if len(shown) > 3:
        lines.append(f"+{len(shown) - 3} artifacts")
    return lines


def graph_of(spec: WorkflowSpec, status: WorkflowRunStatus | None = None) -> Graph:
    """The picture of a workflow (or a run of it). Only the dependencies are resolved, no
    expression is compiled: a workflow with a broken expression can still be drawn."""
    deps = dag.build(spec)[0].deps
    steps = {s.name: s for s in status.steps} if status else {}
    graph = Graph()
    for step in spec.steps:
        st = steps.get(step.name)
        node = Node(step.name, step.kind, _describe(step))
        if st is not None:
            node.phase = st.phase.value
            node.lines += _runtime(st)
        graph.nodes.append(node)
        graph.edges += [(dep, step.name) for dep in deps.get(step.name, ())]
    finals = {s.name: s for s in (status.finally_ or [])} if status else {}
    for fin in spec.finally_ or []:
        st = finals.get(fin.name)
        node = Node(fin.name, "finally", ["finally"])
        if st is not None:
            node.phase = st.phase.value
            node.lines += _runtime(st)
        graph.finally_.append(node)
    return graph


def _id(name: str) -> str:
    return "n_" + name.replace("-", "_")


def mermaid(graph: Graph) -> str:
    shapes = {"fanOut": ("[[", "]]"), "loop": ("{{", "}}"), "approval": ("{", "}")}
    out = ["flowchart TD"]
    for node in [*graph.nodes, *graph.finally_]:
        kind = "approval" if node.lines[:1] == ["approval"] else node.kind
        left, right = shapes.get(kind, ("[", "]"))
        label = "<br/>".join([node.name, *node.lines]).replace('"', "'")
        css = f":::{node.phase}" if node.phase else ""
        out.append(f'  {_id(node.name)}{left}"{label}"{right}{css}')
    out += [f"  {_id(a)} --> {_id(b)}" for a, b in graph.edges]
    if graph.finally_:
        sinks = [n.name for n in graph.nodes if not any(a == n.name for a, _ in graph.edges)]
        out += [f"  {_id(s)} -.-> {_id(f.name)}" for s in sinks for f in graph.finally_[:1]]
    for phase in sorted({n.phase for n in [*graph.nodes, *graph.finally_] if n.phase}):
        fill, stroke = COLOURS.get(phase, COLOURS["Pending"])
        out.append(f"  classDef {phase} fill:{fill},stroke:{stroke}")
    return "\n".join(out) + "\n"


def _layers(graph: Graph) -> dict[str, int]:
    """Longest path from a root: a step sits one layer below its deepest dependency."""
    deps: dict[str, list[str]] = defaultdict(list)
    for a, b in graph.edges:
        deps[b].append(a)
    layer: dict[str, int] = {}
    for node in graph.nodes:  # declaration order is topological (dependencies come first)
        layer[node.name] = 1 + max((layer[d] for d in deps[node.name]), default=-1)
    last = max(layer.values(), default=-1)
    for node in graph.finally_:
        layer[node.name] = last + 1
    return layer


WIDTH, HEIGHT, GAP_X, GAP_Y, MARGIN = 200, 58, 30, 44, 20
MAX_LINES = 6


@dataclass
class Shape:
    """A drawing primitive both back ends (SVG, PNG) understand."""

    kind: str  # rect | line | text
    x: float
    y: float
    w: float = 0.0  # rect: width; line: x2
    h: float = 0.0  # rect: height; line: y2
    fill: str = "none"
    stroke: str = "#555"
    text: str = ""
    bold: bool = False
    dashed: bool = False
    group: str | None = None  # the step a shape belongs to
    anchor: str = "middle"


def layout(graph: Graph, title: str = "") -> tuple[float, float, list[Shape]]:
    """Nodes in layers (longest path from a root), centred per layer; edges top to bottom."""
    layer = _layers(graph)
    rows: dict[int, list[Node]] = defaultdict(list)
    for node in [*graph.nodes, *graph.finally_]:
        rows[layer[node.name]].append(node)
    widest = max((len(r) for r in rows.values()), default=1)
    # Boxes grow to the most lines any node has (a run's artifacts add some), up to MAX_LINES.
    lines = min(
        MAX_LINES, max((1 + len(n.lines) for n in [*graph.nodes, *graph.finally_]), default=1)
    )
    box = max(HEIGHT, 13 + 15 * lines)
    width = MARGIN * 2 + widest * WIDTH + (widest - 1) * GAP_X
    top = MARGIN + (24 if title else 0)
    height = top + MARGIN + len(rows) * box + max(len(rows) - 1, 0) * GAP_Y
    where: dict[str, tuple[float, float]] = {}
    for index, row in sorted(rows.items()):
        span = len(row) * WIDTH + (len(row) - 1) * GAP_X
        x0 = (width - span) / 2
        for i, node in enumerate(row):
            where[node.name] = (x0 + i * (WIDTH + GAP_X), top + index * (box + GAP_Y))
    shapes: list[Shape] = []
    if title:
        shapes.append(Shape("text", MARGIN, MARGIN + 4, text=title, bold=True, anchor="start"))
    for a, b in graph.edges:
        (ax, ay), (bx, by) = where[a], where[b]
        shapes.append(Shape("line", ax + WIDTH / 2, ay + box, bx + WIDTH / 2, by))
    for node in [*graph.nodes, *graph.finally_]:
        x, y = where[node.name]
        fill, stroke = COLOURS.get(node.phase or "Pending", COLOURS["Pending"])
        dashed = node.kind in ("fanOut", "loop", "finally")
        if node.kind == "fanOut":  # a stack: more than one of it
            shapes.append(Shape("rect", x + 4, y - 4, WIDTH, box, "none", stroke, group=node.name))
        shapes.append(Shape("rect", x, y, WIDTH, box, fill, stroke, dashed=dashed, group=node.name))
        for i, text in enumerate([node.name, *node.lines][:lines]):
            shapes.append(
                Shape(
                    "text",
                    x + WIDTH / 2,
                    y + 18 + i * 15,
                    text=text[:34],
                    bold=i == 0,
                    group=node.name,
                )
            )
    return width, height, shapes


def render_svg(width: float, height: float, shapes: list[Shape]) -> str:
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="12">'
        ),
        (
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/>'
            "</marker></defs>"
        ),
    ]
    group: str | None = None
    for shape in shapes:
        if shape.group != group:
            if group is not None:
                parts.append("</g>")
            if shape.group is not None:
                parts.append(f'<g class="step" data-step="{escape(shape.group)}">')
            group = shape.group
        if shape.kind == "line":
            parts.append(
                f'<line x1="{shape.x:.0f}" y1="{shape.y:.0f}" x2="{shape.w:.0f}" '
                f'y2="{shape.h:.0f}" stroke="{shape.stroke}" marker-end="url(#arrow)"/>'
            )
        elif shape.kind == "rect":
            dash = ' stroke-dasharray="6 3"' if shape.dashed else ""
            parts.append(
                f'<rect x="{shape.x:.0f}" y="{shape.y:.0f}" width="{shape.w:.0f}" '
                f'height="{shape.h:.0f}" rx="4" fill="{shape.fill}" stroke="{shape.stroke}" '
                f'stroke-width="1.5"{dash}/>'
            )
        else:
            weight = ' font-weight="bold"' if shape.bold else ""
            parts.append(
                f'<text x="{shape.x:.0f}" y="{shape.y:.0f}" text-anchor="{shape.anchor}"'
                f"{weight}>{escape(shape.text)}</text>"
            )
    if group is not None:
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def render_png(width: float, height: float, shapes: list[Shape]) -> bytes:
    """The same drawing as a PNG (Pillow, its built-in font)."""
    from PIL import Image, ImageDraw  # noqa: PLC0415 - only pictures need Pillow

    image = Image.new("RGB", (int(width), int(height)), "white")
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        if shape.kind == "line":
            draw.line((shape.x, shape.y, shape.w, shape.h), fill=shape.stroke, width=1)
            draw.polygon(
                [(shape.w, shape.h), (shape.w - 4, shape.h - 7), (shape.w + 4, shape.h - 7)],
                fill=shape.stroke,
            )
        elif shape.kind == "rect":
            fill = None if shape.fill == "none" else shape.fill
            box = (shape.x, shape.y, shape.x + shape.w, shape.y + shape.h)
            draw.rectangle(box, fill=fill, outline=shape.stroke, width=2 if shape.bold else 1)
        else:
            anchor = "ms" if shape.anchor == "middle" else ("rs" if shape.anchor == "end" else "ls")
            draw.text((shape.x, shape.y), shape.text, fill="black", anchor=anchor)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def svg(graph: Graph, title: str = "") -> str:
    return render_svg(*layout(graph, title))


def png(graph: Graph, title: str = "") -> bytes:
    return render_png(*layout(graph, title))

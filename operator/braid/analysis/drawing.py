"""A workflow's (or a run's) DAG laid out and drawn: a layered (Sugiyama) layout with
crossing reduction from grandalf, edges routed around the boxes, the `when` of a step on the
edges into it, compensation as dashed edges to an undo box, `finally` joined to the steps that
end the run, badges for phase, attempts, items and decisions, a legend, and (SVG) tooltips
with each step's message. The same scene is written as SVG or, with Pillow's bundled TrueType
font, as PNG."""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass, field
from html import escape
from typing import Any

from grandalf.graphs import Edge as GEdge
from grandalf.graphs import Graph as GGraph
from grandalf.graphs import Vertex
from grandalf.layouts import SugiyamaLayout
from PIL import Image, ImageDraw, ImageFont

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
FONT = 12  # px
CHAR = 7.0  # px per character of FONT, for sizing boxes
LINE = 16
PAD = 10
MAX_LINE = 38  # characters a box line shows


@dataclass
class Box:
    name: str
    kind: str  # container, webhook, llm, approval, sleep, workflow, fanOut, loop, finally, undo
    lines: list[str]
    phase: str | None = None
    badges: list[str] = field(default_factory=list)
    tooltip: str = ""


@dataclass
class Arrow:
    source: str
    target: str
    kind: str = "dep"  # dep | compensation | finally
    label: str = ""


@dataclass
class Scene:
    boxes: dict[str, Box]
    arrows: list[Arrow]
    title: str = ""
    positions: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    paths: list[tuple[Arrow, list[tuple[float, float]]]] = field(default_factory=list)
    width: float = 0.0
    height: float = 0.0


class _View:
    def __init__(self, w: float, h: float) -> None:
        self.w, self.h = w, h
        self.xy: tuple[float, float] = (0.0, 0.0)


class _EdgeView:
    def __init__(self) -> None:
        self.points: list[tuple[float, float]] = []

    def setpath(self, pts: list[tuple[float, float]]) -> None:
        self.points = [(float(x), float(y)) for x, y in pts]


def _size(box: Box) -> tuple[float, float]:
    longest = max([len(box.name) + 2, *(min(len(s), MAX_LINE) for s in box.lines), 12])
    badges = sum(len(b) * 6.5 + 10 for b in box.badges)
    width = max(longest * CHAR, badges) + 2 * PAD
    return width, (1 + len(box.lines)) * LINE + 2 * PAD - 4


def lay_out(scene: Scene) -> Scene:
    """Positions for every box and a routed path for every arrow (layered, top to bottom)."""
    vertices = {name: Vertex(name) for name in scene.boxes}
    for name, v in vertices.items():
        v.view = _View(*_size(scene.boxes[name]))
    edges = []
    for arrow in scene.arrows:
        e = GEdge(vertices[arrow.source], vertices[arrow.target], data=arrow)
        e.view = _EdgeView()
        edges.append(e)
    graph = GGraph(list(vertices.values()), edges)
    x_offset, margin, top = 20.0, 20.0, 20.0 + (26.0 if scene.title else 0.0)
    for component in graph.C:
        sug = SugiyamaLayout(component)
        sug.xspace, sug.yspace = 36, 64
        roots = [v for v in component.sV if not v.e_in()]
        sug.init_all(roots=roots or None, optimize=True)
        sug.draw(3)  # rounds of crossing reduction
        xs = [v.view.xy[0] - v.view.w / 2 for v in component.sV]
        left = min(xs) if xs else 0.0
        right = max((v.view.xy[0] + v.view.w / 2 for v in component.sV), default=0.0)
        shift = x_offset - left
        for v in component.sV:
            x, y = v.view.xy
            scene.positions[v.data] = (x + shift - v.view.w / 2, y + top, v.view.w, v.view.h)
        for e in component.sE:
            pts = [(x + shift, y + top) for x, y in e.view.points]
            scene.paths.append((e.data, pts))
        x_offset += (right - left) + 40
    bottom = max((y + h for _, y, _, h in scene.positions.values()), default=0.0)
    scene.width = max(x_offset - 20 + margin, 360.0)
    scene.height = bottom + margin + 44  # the legend
    return scene


def _clip(
    start: tuple[float, float], box: tuple[float, float, float, float]
) -> tuple[float, float]:
    """Where a line from ``start`` to the box's centre meets its border."""
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    dx, dy = start[0] - cx, start[1] - cy
    if dx == 0 and dy == 0:
        return cx, cy
    scale = min(w / 2 / abs(dx) if dx else 1e9, h / 2 / abs(dy) if dy else 1e9)
    return cx + dx * scale, cy + dy * scale


def _route(scene: Scene, arrow: Arrow, pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The arrow's points, ends clipped to the borders of its boxes."""
    a, b = scene.positions[arrow.source], scene.positions[arrow.target]
    inner = pts[1:-1]
    first = inner[0] if inner else (b[0] + b[2] / 2, b[1] + b[3] / 2)
    last = inner[-1] if inner else (a[0] + a[2] / 2, a[1] + a[3] / 2)
    return [_clip(first, a), *inner, _clip(last, b)]


def _labels(scene: Scene) -> list[tuple[str, float, float]]:
    """Each target's label (its `when`), on the most upright of the edges into it, close to
    the target: labels of steps side by side then sit apart."""
    out = []
    into: dict[str, list[list[tuple[float, float]]]] = {}
    said: dict[str, str] = {}
    for arrow, pts in scene.paths:
        into.setdefault(arrow.target, []).append(_route(scene, arrow, pts))
        if arrow.label:
            said[arrow.target] = arrow.label[:40]
    for target, label in said.items():
        routes = into[target]
        best = min(
            routes, key=lambda r: abs(r[-1][0] - r[-2][0]) / max(abs(r[-1][1] - r[-2][1]), 1)
        )
        (ax, ay), (bx, by) = best[-2], best[-1]
        out.append((label, ax + (bx - ax) * 0.72, ay + (by - ay) * 0.72))
    return out


def _legend(phases: list[str], kinds: set[str]) -> list[tuple[str, str, str]]:
    """(label, fill, stroke) of the phases shown, then the edge kinds."""
    out = [(p, *COLOURS.get(p, COLOURS["Pending"])) for p in phases]
    names = {"compensation": "- - compensation", "finally": "··· finally"}
    out += [(names[k], "none", "#555") for k in ("compensation", "finally") if k in kinds]
    return out


def svg(scene: Scene) -> str:
    w, h = scene.width, scene.height
    out = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0f}" height="{h:.0f}" '
            f'viewBox="0 0 {w:.0f} {h:.0f}" font-family="DejaVu Sans, Verdana, sans-serif" '
            f'font-size="{FONT}">'
        ),
        (
            "<defs>"
            '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
            'fill="#555"/></marker></defs>'
        ),
        f'<rect width="{w:.0f}" height="{h:.0f}" fill="#ffffff"/>',
    ]
    if scene.title:
        out.append(
            f'<text x="20" y="28" font-weight="bold" font-size="15">{escape(scene.title)}</text>'
        )
    for arrow, pts in scene.paths:
        route = _route(scene, arrow, pts)
        d = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in route)
        dashes = {"compensation": ' stroke-dasharray="6 4"', "finally": ' stroke-dasharray="2 3"'}
        out.append(
            f'<path class="edge {arrow.kind}" d="{d}" fill="none" stroke="#555" '
            f'stroke-width="1.3"{dashes.get(arrow.kind, "")} marker-end="url(#arrow)"/>'
        )
    for label, lx, ly in _labels(scene):
        text = escape(label)
        width = len(label) * 6.2 + 8
        out.append(
            f'<rect x="{lx - width / 2:.1f}" y="{ly - 9:.1f}" width="{width:.1f}" height="16" '
            'rx="3" fill="#fffbe6" stroke="#d4b106" stroke-width="0.6"/>'
            f'<text x="{lx:.1f}" y="{ly + 3:.1f}" text-anchor="middle" font-size="10.5" '
            f'fill="#614700">{text}</text>'
        )
    for name, box in scene.boxes.items():
        x, y, bw, bh = scene.positions[name]
        fill, stroke = COLOURS.get(box.phase or "Pending", COLOURS["Pending"])
        tip = f"<title>{escape(box.tooltip)}</title>" if box.tooltip else ""
        out.append(f'<g data-step="{escape(name)}" data-kind="{box.kind}">{tip}')
        if box.kind == "fanOut":  # a stack: more than one of it
            out.append(
                f'<rect x="{x + 5:.1f}" y="{y - 5:.1f}" width="{bw:.1f}" height="{bh:.1f}" rx="6" '
                f'fill="{fill}" stroke="{stroke}"/>'
            )
        dash = ' stroke-dasharray="5 3"' if box.kind in ("loop", "finally", "undo") else ""
        rx = 16 if box.kind in ("loop", "approval") else 6
        out.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{bh:.1f}" rx="{rx}" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="1.5"{dash}/>'
        )
        out.append(
            f'<text x="{x + PAD:.1f}" y="{y + PAD + 11:.1f}" font-weight="bold">'
            f"{escape(box.name)}</text>"
        )
        for i, line in enumerate(box.lines):
            shown = line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"
            out.append(
                f'<text x="{x + PAD:.1f}" y="{y + PAD + 11 + LINE * (i + 1):.1f}" fill="#333">'
                f"{escape(shown)}</text>"
            )
        bx = x + bw - 4
        for badge in reversed(box.badges):
            width = len(badge) * 6.5 + 8
            bx -= width + 2
            out.append(
                f'<rect x="{bx:.1f}" y="{y - 8:.1f}" width="{width:.1f}" height="15" rx="7" '
                f'fill="{stroke}"/><text x="{bx + width / 2:.1f}" y="{y + 3:.1f}" '
                f'text-anchor="middle" font-size="10" fill="#fff">{escape(badge)}</text>'
            )
        out.append("</g>")
    out += _svg_legend(scene)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _svg_legend(scene: Scene) -> list[str]:
    phases = sorted({b.phase or "Pending" for b in scene.boxes.values()})
    kinds = {a.kind for a in scene.arrows}
    x, y, out = 20.0, scene.height - 26, []
    for label, fill, stroke in _legend(phases, kinds):
        if fill != "none":
            out.append(
                f'<rect x="{x:.1f}" y="{y - 10:.1f}" width="14" height="12" rx="3" fill="{fill}" '
                f'stroke="{stroke}"/>'
            )
            x += 18
        out.append(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="11" fill="#333">{escape(label)}</text>'
        )
        x += len(label) * 6.6 + 16
    return out


def png(scene: Scene) -> bytes:
    """The scene as a PNG, drawn with Pillow's bundled TrueType font at twice the size."""
    k = 2
    image = Image.new("RGB", (int(scene.width * k), int(scene.height * k)), "white")
    draw = ImageDraw.Draw(image)
    font, bold, small = _font(FONT * k), _font((FONT + 1) * k, bold=True), _font(10 * k)
    if scene.title:
        draw.text((20 * k, 14 * k), scene.title, fill="black", font=bold)
    for arrow, pts in scene.paths:
        route = [(x * k, y * k) for x, y in _route(scene, arrow, pts)]
        _line(draw, route, arrow.kind)
        _head(draw, route[-2], route[-1])
    for text, x0, y0 in _labels(scene):
        lx, ly = x0 * k, y0 * k
        tw = draw.textlength(text, font=small)
        draw.rounded_rectangle(
            (lx - tw / 2 - 4 * k, ly - 9 * k, lx + tw / 2 + 4 * k, ly + 7 * k),
            radius=3 * k,
            fill="#fffbe6",
            outline="#d4b106",
        )
        draw.text((lx - tw / 2, ly - 8 * k), text, fill="#614700", font=small)
    for name, box in scene.boxes.items():
        x, y, bw, bh = (v * k for v in scene.positions[name])
        fill, stroke = COLOURS.get(box.phase or "Pending", COLOURS["Pending"])
        if box.kind == "fanOut":
            draw.rounded_rectangle((x + 5 * k, y - 5 * k, x + bw + 5 * k, y + bh - 5 * k),
                                   radius=6 * k, fill=fill, outline=stroke, width=k)  # fmt: skip
        radius = (16 if box.kind in ("loop", "approval") else 6) * k
        draw.rounded_rectangle((x, y, x + bw, y + bh), radius=radius, fill=fill, outline=stroke,
                               width=int(1.5 * k))  # fmt: skip
        draw.text((x + PAD * k, y + (PAD - 1) * k), box.name, fill="black", font=bold)
        for i, line in enumerate(box.lines):
            shown = line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"
            draw.text((x + PAD * k, y + (PAD - 1 + LINE * (i + 1)) * k), shown, fill="#333",
                      font=font)  # fmt: skip
        bx = x + bw - 4 * k
        for badge in reversed(box.badges):
            width = draw.textlength(badge, font=small) + 8 * k
            bx -= width + 2 * k
            draw.rounded_rectangle(
                (bx, y - 8 * k, bx + width, y + 7 * k), radius=7 * k, fill=stroke
            )
            draw.text((bx + 4 * k, y - 7 * k), badge, fill="white", font=small)
    phases = sorted({b.phase or "Pending" for b in scene.boxes.values()})
    lx, ly = 20 * k, (scene.height - 36) * k
    for label, fill, stroke in _legend(phases, {a.kind for a in scene.arrows}):
        if fill != "none":
            draw.rounded_rectangle((lx, ly, lx + 14 * k, ly + 12 * k), radius=3 * k, fill=fill,
                                   outline=stroke)  # fmt: skip
            lx += 18 * k
        draw.text((lx, ly - k), label, fill="#333", font=small)
        lx += draw.textlength(label, font=small) + 16 * k
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _font(size: int, *, bold: bool = False) -> Any:
    """DejaVu Sans (matplotlib bundles it: every glyph the pictures use, ✓ ✗ → ≤ …), else
    Pillow's own TrueType font."""
    try:
        from matplotlib import font_manager  # noqa: PLC0415 - only for PNGs

        path = font_manager.findfont(
            font_manager.FontProperties(family="DejaVu Sans", weight="bold" if bold else "normal"),
            fallback_to_default=True,
        )
        return ImageFont.truetype(path, size)
    except (ImportError, OSError, ValueError):
        return ImageFont.load_default(size=size)


def _line(draw: Any, route: list[tuple[float, float]], kind: str) -> None:
    if kind == "dep":
        draw.line(route, fill="#555", width=3, joint="curve")
        return
    on, off = (12, 8) if kind == "compensation" else (4, 6)
    for (x0, y0), (x1, y1) in itertools.pairwise(route):
        length = max(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5, 1e-6)
        t = 0.0
        while t < length:
            t1 = min(t + on, length)
            a = (x0 + (x1 - x0) * t / length, y0 + (y1 - y0) * t / length)
            b = (x0 + (x1 - x0) * t1 / length, y0 + (y1 - y0) * t1 / length)
            draw.line([a, b], fill="#555", width=3)
            t = t1 + off


def _head(draw: Any, a: tuple[float, float], b: tuple[float, float]) -> None:
    dx, dy = b[0] - a[0], b[1] - a[1]
    length = max((dx * dx + dy * dy) ** 0.5, 1e-6)
    ux, uy = dx / length, dy / length
    size = 14
    left = (b[0] - ux * size - uy * size * 0.5, b[1] - uy * size + ux * size * 0.5)
    right = (b[0] - ux * size + uy * size * 0.5, b[1] - uy * size - ux * size * 0.5)
    draw.polygon([b, left, right], fill="#555")

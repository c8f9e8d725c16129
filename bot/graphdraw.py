"""Draw the dialogue's graph description (``flows.describe``) as a PNG or an SVG picture.

The pure core says *what* to show; this module decides *where*. The layout is a
layered (Sugiyama) drawing from grandalf, a pure-Python library, so no external
program such as Graphviz's ``dot`` is needed. Matplotlib draws it with the DejaVu
Sans font it ships, which has Cyrillic, so Russian labels come out as written on
any machine where the package installs; SVG text is written as outlines, so it
shows the same in any viewer, with or without that font.

The picture has two parts: the dialogue (questions as boxes, branches as arrows
labelled with the answers, each question marked with the outcomes its answers can
give) and, beside it, every rule grouped by the outcome it gives.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from flows import Flow, Lang, describe
from flows.graph import LEVEL_COLOURS, NODE_STYLE, GraphEdge, GraphNode, node_class
from flows.graph import Graph as FlowGraph

if TYPE_CHECKING:  # matplotlib, grandalf and PIL load on the first picture, not with the bot
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties
    from PIL import ImageFont

__all__ = ["font_file", "render", "to_png", "to_svg"]


@cache
def font_file() -> Path:
    """DejaVu Sans as shipped inside matplotlib: it has Latin and Cyrillic letters."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


#: Largest PNG sent, in pixels. Telegram refuses photos whose width + height exceed 10000.
MAX_PNG_SIDE = 4800
MAX_PNG_SUM = 9000

Format = Literal["png", "svg"]

# sizes in pixels of the drawing (1 point = 1 pixel at 72 dpi)
BODY = 12
SMALL = 10
TITLE = 17
NODE_WRAP = 28
EDGE_WRAP = 22
RULE_WRAP = 64
LINE = 1.35
PAD = 8
BADGE_H = 15
MARGIN = 24
PANEL_GAP = 40


@cache
def _pil_font(size: int) -> ImageFont.FreeTypeFont:
    from PIL import ImageFont

    return ImageFont.truetype(str(font_file()), size)


def _width(text: str, size: int) -> float:
    """Width of ``text`` in pixels in the drawing's font."""
    return float(_pil_font(size).getlength(text))


def _wrap(text: str, width: int, most: int = 4) -> list[str]:
    lines = textwrap.wrap(text, width, break_long_words=True) or [""]
    if len(lines) > most:
        lines = lines[:most]
        lines[-1] = lines[-1][: width - 1].rstrip() + "…"
    return lines


# --- boxes ----------------------------------------------------------------------


@dataclass
class _Box:
    """A node's box: its text lines and size (grandalf reads ``w``, ``h`` and sets ``xy``)."""

    node: GraphNode
    label: list[str]
    asked_if: list[str]
    w: float
    h: float
    xy: tuple[float, float] = (0.0, 0.0)


def _box(node: GraphNode, asked_word: str) -> _Box:
    label = _wrap(node.label, NODE_WRAP, 3)
    asked = _wrap(asked_word + node.asked_if, NODE_WRAP + 4, 4) if node.asked_if else []
    widths = [_width(node.id, SMALL)] + [_width(s, BODY) for s in label]
    widths += [_width(s, SMALL) for s in asked]
    badges = sum(_width(lv, SMALL - 1) + 10 for lv in node.levels) + 4 * len(node.levels)
    w = max([*widths, badges]) + 2 * PAD + 8
    h = PAD * 2 + SMALL * LINE + BODY * LINE * len(label) + SMALL * LINE * len(asked)
    if node.levels:
        h += BADGE_H + 4
    return _Box(node, label, asked, max(w, 90.0), h)


@dataclass
class _EdgeView:
    """Where grandalf routes an edge: a polyline from box to box."""

    points: list[tuple[float, float]]
    head_angle: float = 0.0

    def setpath(self, pts: list[tuple[float, float]]) -> None:
        self.points = list(pts)


@dataclass
class _Layout:
    boxes: dict[str, _Box]
    routes: list[tuple[GraphEdge, list[tuple[float, float]]]]
    width: float
    height: float


def _layout(graph: FlowGraph) -> _Layout:
    """Place the boxes in layers from the start down and route the edges between them."""
    from grandalf.graphs import Edge, Graph, Vertex
    from grandalf.layouts import SugiyamaLayout
    from grandalf.routing import route_with_lines

    asked_word = graph.word("asked_if")
    boxes = {n.id: _box(n, asked_word) for n in graph.nodes}
    vertices = {node_id: Vertex(node_id) for node_id in boxes}
    for node_id, v in vertices.items():
        v.view = boxes[node_id]
    edges: list[tuple[GraphEdge, Edge]] = []
    for e in graph.edges:
        ge = Edge(vertices[e.source], vertices[e.target])
        ge.view = _EdgeView([])
        edges.append((e, ge))
    g = Graph(list(vertices.values()), [ge for _, ge in edges])
    left = 0.0
    for component in g.C:
        sug = SugiyamaLayout(component)
        sug.xspace, sug.yspace = 48, 62
        sug.route_edge = route_with_lines
        roots = [v for v in component.sV if v.data == graph.start]
        if not roots:
            roots = [v for v in component.sV if not v.e_in()] or [next(iter(component.sV))]
        sug.init_all(roots=roots)
        sug.draw(N=4)
        xs = [v.view.xy[0] - v.view.w / 2 for v in component.sV]
        shift = left - min(xs)
        for v in component.sV:
            x, y = v.view.xy
            v.view.xy = (x + shift, y)
        for ge in component.sE:
            ge.view.points = [(x + shift, y) for x, y in ge.view.points]
        left = max(v.view.xy[0] + v.view.w / 2 for v in component.sV) + 60
    min_x = min(b.xy[0] - b.w / 2 for b in boxes.values())
    min_y = min(b.xy[1] - b.h / 2 for b in boxes.values())
    dx, dy = MARGIN - min_x, MARGIN + 70 - min_y
    for b in boxes.values():
        b.xy = (b.xy[0] + dx, b.xy[1] + dy)
    routes = [(e, [(x + dx, y + dy) for x, y in ge.view.points]) for e, ge in edges]
    width = (
        max(
            max(b.xy[0] + b.w / 2 for b in boxes.values()),
            max((x for _, pts in routes for x, _ in pts), default=0.0),
        )
        + MARGIN
    )
    height = max(b.xy[1] + b.h / 2 for b in boxes.values()) + MARGIN
    return _Layout(boxes, routes, width, height)


# --- the rules panel ------------------------------------------------------------------


def _panel_lines(graph: FlowGraph) -> Iterator[tuple[str, str, int, bool]]:
    """(text, colour, size, bold) for each line of the panel listing the rules by outcome."""
    yield graph.word("rules"), "#212121", TITLE - 2, True
    titles = dict(graph.outcomes)
    for level, _ in graph.outcomes:
        rules = [r for r in graph.rules if r.level == level]
        if not rules:
            continue
        yield "", "#212121", SMALL, False
        yield f"{level}: {titles[level]}", LEVEL_COLOURS[level], BODY, True
        for r in rules:
            for k, line in enumerate(_wrap(r.answers, RULE_WRAP, 6)):
                yield ("• " if k == 0 else "   ") + line, "#212121", SMALL, False


def _panel_size(graph: FlowGraph) -> tuple[float, float]:
    lines = list(_panel_lines(graph))
    w = max(_width(t, size) for t, _, size, _ in lines) + 2 * PAD
    h = sum(size * LINE for _, _, size, _ in lines) + 2 * PAD
    return w, h


# --- drawing ----------------------------------------------------------------------


def _font(size: float, *, bold: bool = False, italic: bool = False) -> FontProperties:
    from matplotlib.font_manager import FontProperties

    return FontProperties(
        fname=str(font_file()), size=size, weight="bold" if bold else "normal",
        style="italic" if italic else "normal",
    )  # fmt: skip


def _edge_colour(edge: GraphEdge) -> str:
    return LEVEL_COLOURS[edge.levels[0]] if edge.levels else "#546e7a"


def _figure(graph: FlowGraph) -> tuple[Figure, float, float]:
    from matplotlib.figure import Figure

    lay = _layout(graph)
    panel_w, panel_h = _panel_size(graph)
    width = lay.width + PANEL_GAP + panel_w + MARGIN
    height = max(lay.height, panel_h + 90)
    fig = Figure(figsize=(width / 72, height / 72), dpi=72, facecolor="#ffffff")
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()

    heading = f"{graph.title} ({graph.word('version')} {graph.version or '-'})"
    ax.text(MARGIN, MARGIN + 4, heading, fontproperties=_font(TITLE, bold=True),
            color="#212121", va="top")  # fmt: skip
    ax.text(MARGIN, MARGIN + 30, graph.word("skipped"), fontproperties=_font(SMALL),
            color="#616161", va="top")  # fmt: skip

    for edge, pts in lay.routes:
        _draw_edge(ax, edge, pts)
    for box in lay.boxes.values():
        _draw_box(ax, box)
    _draw_panel(ax, graph, lay.width + PANEL_GAP, 70.0, panel_w, panel_h)
    return fig, width, height


def _draw_edge(ax: Axes, edge: GraphEdge, pts: list[tuple[float, float]]) -> None:
    from matplotlib.patches import FancyArrowPatch
    from matplotlib.path import Path as MplPath

    colour = _edge_colour(edge)
    dashed = edge.kind == "interrupt"
    codes = [MplPath.MOVETO] + [MplPath.LINETO] * (len(pts) - 1)
    arrow = FancyArrowPatch(
        path=MplPath(pts, codes), arrowstyle="-|>", mutation_scale=13, color=colour,
        linewidth=2.2 if edge.levels else 1.3, linestyle=(0, (5, 3)) if dashed else "-",
        zorder=1,
    )  # fmt: skip
    ax.add_patch(arrow)
    if not edge.label:
        return
    # the label sits on the first segment, nearer its end, where edges fanning out have parted
    (x0, y0), (x1, y1) = pts[0], pts[1]
    t = 0.62
    at = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t)
    text = "\n".join(_wrap(edge.label, EDGE_WRAP, 3))
    ax.text(
        *at, text, fontproperties=_font(SMALL, bold=bool(edge.levels)),
        color=colour if edge.levels else "#37474f", ha="center", va="center", zorder=3,
        bbox={"boxstyle": "round,pad=0.2", "fc": "#ffffff", "ec": "none", "alpha": 0.92},
    )  # fmt: skip


def _draw_box(ax: Axes, box: _Box) -> None:
    from matplotlib.patches import FancyBboxPatch

    node = box.node
    fill, stroke = NODE_STYLE[node_class(node.kind)]
    if node.emergency:
        fill, stroke = "#ffebee", LEVEL_COLOURS["EMERGENCY"]
    cx, cy = box.xy
    x0, y0 = cx - box.w / 2, cy - box.h / 2
    style = "round,pad=0,rounding_size=14" if node.kind == "end" else "round,pad=0,rounding_size=6"
    patch = FancyBboxPatch(
        (x0, y0), box.w, box.h, boxstyle=style, fc=fill, ec=stroke,
        linewidth=2.6 if node.save or node.kind == "triage" else 1.4,
        linestyle=(0, (4, 2)) if node.asked_if else "-", zorder=2,
    )  # fmt: skip
    ax.add_patch(patch)
    y = y0 + PAD
    ax.text(cx, y, node.id, fontproperties=_font(SMALL), color="#757575",
            ha="center", va="top", zorder=4)  # fmt: skip
    y += SMALL * LINE
    for line in box.label:
        ax.text(cx, y, line, fontproperties=_font(BODY, bold=node.kind != "info"),
                color="#212121", ha="center", va="top", zorder=4)  # fmt: skip
        y += BODY * LINE
    for line in box.asked_if:
        ax.text(cx, y, line, fontproperties=_font(SMALL, italic=True), color="#455a64",
                ha="center", va="top", zorder=4)  # fmt: skip
        y += SMALL * LINE
    if node.levels:
        widths = [_width(lv, SMALL - 1) + 10 for lv in node.levels]
        x = cx - (sum(widths) + 4 * (len(widths) - 1)) / 2
        y += 2
        for lv, w in zip(node.levels, widths, strict=True):
            ax.add_patch(FancyBboxPatch(
                (x, y), w, BADGE_H, boxstyle="round,pad=0,rounding_size=4",
                fc=LEVEL_COLOURS[lv], ec="none", zorder=4,
            ))  # fmt: skip
            ax.text(x + w / 2, y + BADGE_H / 2, lv, fontproperties=_font(SMALL - 1, bold=True),
                    color="#212121" if lv == "LATER" else "#ffffff", ha="center",
                    va="center", zorder=5)  # fmt: skip
            x += w + 4


def _draw_panel(ax: Axes, graph: FlowGraph, x: float, y: float, w: float, h: float) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch(
        (x, y), w, h, boxstyle="round,pad=0,rounding_size=8", fc="#fafafa", ec="#bdbdbd",
        linewidth=1.0, zorder=0,
    ))  # fmt: skip
    y += PAD
    for text, colour, size, bold in _panel_lines(graph):
        if text:
            ax.text(x + PAD, y, text, fontproperties=_font(size, bold=bold), color=colour,
                    ha="left", va="top")  # fmt: skip
        y += size * LINE


# --- entry points ----------------------------------------------------------------------


def render(graph: FlowGraph, fmt: Format = "png") -> bytes:
    """Return the picture of a graph description as PNG or SVG bytes."""
    import matplotlib

    fig, width, height = _figure(graph)
    buf = io.BytesIO()
    if fmt == "svg":
        with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "flow"}):
            fig.savefig(buf, format="svg", metadata={"Date": None})
        return buf.getvalue()
    scale = min(2.0, MAX_PNG_SIDE / width, MAX_PNG_SIDE / height, MAX_PNG_SUM / (width + height))
    fig.savefig(buf, format="png", dpi=72 * scale, metadata={"Software": None})
    return buf.getvalue()


def to_png(flow: Flow, *, lang: Lang = "en") -> bytes:
    """Return a PNG picture of ``flow`` labelled in ``lang``."""
    return render(describe(flow, lang=lang), "png")


def to_svg(flow: Flow, *, lang: Lang = "en") -> bytes:
    """Return an SVG picture of ``flow`` labelled in ``lang`` (text as outlines)."""
    return render(describe(flow, lang=lang), "svg")

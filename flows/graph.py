"""Draw the dialogue from the flow itself (Mermaid, SVG, PNG), so no picture is drawn by hand.

``build_graph`` turns a flow into a small frozen graph: nodes, labelled edges and
rows (a longest-path layering of the acyclic flow, with waypoints where an edge
skips rows, ordered to cross little). The three outputs all draw that one graph,
so they cannot drift apart. SVG and PNG share one layout; PNG is drawn with
Pillow and its built-in font, so no external program or font file is needed.
"""

from __future__ import annotations

import html
import io
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageDraw, ImageFont

from flows.checker import has_not
from flows.diff import render_condition
from flows.engine import holds
from flows.markup import plain_text
from flows.schema import (
    LEVELS,
    ChecklistNode,
    ChoiceNode,
    EndNode,
    Flow,
    Lang,
    Level,
    Transition,
    TriageNode,
    YesNoNode,
    atoms_of,
)

__all__ = [
    "LEVEL_COLOURS",
    "Graph",
    "GraphEdge",
    "GraphNode",
    "Waypoint",
    "build_graph",
    "to_mermaid",
    "to_png",
    "to_svg",
]

#: The colour of each outcome level, used for triage branches in every output.
LEVEL_COLOURS: dict[Level, str] = {
    "EMERGENCY": "#d32f2f",
    "STOP": "#bf360c",
    "LATER": "#f9a825",
    "CLEAR": "#1976d2",
    "OK": "#2e7d32",
}

EdgeKind = Literal["answer", "branch", "interrupt"]

LABEL_CHARS = 60

#: The few words the drawings add around flow texts.
_WORDS: dict[Lang, dict[str, str]] = {
    "en": {
        "interrupt": "emergency sign",
        "stop": "emergency sign → stop",
        "otherwise": "otherwise",
        "outcome": "outcome",
        "outcomes": "Outcomes",
        "version": "version",
    },
    "ru": {
        "interrupt": "срочный признак",
        "stop": "срочный признак → стоп",
        "otherwise": "иначе",
        "outcome": "итог",
        "outcomes": "Итоги",
        "version": "версия",
    },
}


# --- the graph model ----------------------------------------------------------


@dataclass(frozen=True)
class GraphNode:
    """One node of the flow as drawn: its id, kind and a short plain label."""

    id: str
    kind: str
    label: str
    layer: int
    #: An end node that saves a request.
    save: bool = False
    #: The flow's emergency_node.
    emergency: bool = False


@dataclass(frozen=True)
class GraphEdge:
    """A way from one node to another, labelled with the answers or the condition taking it."""

    source: str
    target: str
    label: str
    kind: EdgeKind
    #: For a triage branch: the outcome level it is taken on (the edge's colour).
    level: Level | None = None


@dataclass(frozen=True)
class Waypoint:
    """Where edge number ``edge`` passes through row ``layer`` on its way down."""

    edge: int
    layer: int


Slot = str | Waypoint


@dataclass(frozen=True)
class Graph:
    """The flow as a layered graph: ``rows`` list node ids and waypoints left to right."""

    title: str
    lang: Lang
    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]
    rows: tuple[tuple[Slot, ...], ...]

    def node(self, node_id: str) -> GraphNode:
        """Return the node ``node_id`` (StopIteration if there is none)."""
        return next(n for n in self.nodes if n.id == node_id)


def _short(text: str, limit: int = LABEL_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _label(flow: Flow, node_id: str, lang: Lang) -> str:
    node = flow.nodes[node_id]
    if node.summary is not None:
        return _short(node.summary.get(lang))
    lines = [x for x in plain_text(node.text.get(lang)).splitlines() if x.strip()]
    return _short(lines[0] if lines else node_id)


def _possible_levels(flow: Flow) -> list[Level]:
    """Outcomes a triage node can compute (EMERGENCY stops the dialogue before it)."""
    found = {r.level for r in flow.rules} | {flow.default_rule.level}
    return [lv for lv in LEVELS if lv in found and lv != "EMERGENCY"]


def _node_edges(flow: Flow, node_id: str, lang: Lang) -> list[GraphEdge]:
    node = flow.nodes[node_id]
    if isinstance(node, EndNode):
        return []
    raw: list[GraphEdge] = []
    falls_through = True
    fall_labels: list[str] = []
    if isinstance(node, ChoiceNode | YesNoNode):
        jumps = [o for o in node.options if o.goto]
        rest = [o for o in node.options if not o.goto]
        for o in jumps:
            assert o.goto is not None
            raw.append(GraphEdge(node_id, o.goto, _short(o.label.get(lang), 40), "answer"))
        falls_through = bool(rest)
        if jumps:
            fall_labels = [_short(o.label.get(lang), 40) for o in rest]
    branches: str | tuple[Transition, ...] | None = node.next
    if isinstance(node, TriageNode):
        raw += _triage_edges(flow, node_id, node, lang)
    elif not falls_through or branches is None:
        pass
    elif isinstance(branches, str):
        raw.append(GraphEdge(node_id, branches, " / ".join(fall_labels), "branch"))
    else:
        for i, tr in enumerate(branches):
            text = (
                render_condition(tr.when) if tr.when else (_WORDS[lang]["otherwise"] if i else "")
            )
            raw.append(GraphEdge(node_id, tr.to, text, "branch"))
    return _merge(raw)


def _triage_edges(flow: Flow, node_id: str, node: TriageNode, lang: Lang) -> list[GraphEdge]:
    """One coloured edge per outcome level when the branches look at the outcome only."""
    levels = _possible_levels(flow)
    branches = node.next
    if branches is None:
        return []
    if isinstance(branches, str):
        return [GraphEdge(node_id, branches, lv, "branch", lv) for lv in levels]
    by_outcome = all(
        tr.when is None or all(fact == "outcome" for fact, _ in atoms_of(tr.when))
        for tr in branches
    )
    if by_outcome:
        out = []
        for lv in levels:
            facts = frozenset({("outcome", str(lv))})
            tr = next((t for t in branches if t.when is None or holds(t.when, facts)), None)
            if tr is not None:
                out.append(GraphEdge(node_id, tr.to, lv, "branch", lv))
        return out
    edges = []
    for i, tr in enumerate(branches):
        text = render_condition(tr.when) if tr.when else (_WORDS[lang]["otherwise"] if i else "")
        edges.append(GraphEdge(node_id, tr.to, text, "branch"))
    return edges


def _merge(edges: list[GraphEdge]) -> list[GraphEdge]:
    """Join edges between the same two nodes (and of the same colour) into one."""
    out: list[GraphEdge] = []
    for e in edges:
        twin = next(
            (i for i, o in enumerate(out) if (o.target, o.level) == (e.target, e.level)), None
        )
        if twin is None:
            out.append(e)
            continue
        o = out[twin]
        labels = [x for x in (o.label, e.label) if x]
        out[twin] = GraphEdge(o.source, o.target, " / ".join(labels), o.kind, o.level)
    return out


def _interrupt_sources(flow: Flow) -> list[str]:
    """Questions whose answers can fire an EMERGENCY rule (the dialogue stops there)."""
    rules = [r for r in flow.rules if r.level == "EMERGENCY"]
    if not rules:
        return []
    answers = [i for i, n in flow.nodes.items() if not isinstance(n, EndNode | TriageNode)]
    if any(has_not(r.when) for r in rules):
        return answers
    atoms = frozenset().union(*(atoms_of(r.when) for r in rules))
    out = []
    for node_id in answers:
        node = flow.nodes[node_id]
        if not isinstance(node, ChoiceNode | YesNoNode | ChecklistNode):
            continue
        for o in node.options:
            if any((k, v) in atoms or (k, None) in atoms for k, vs in o.facts.items() for v in vs):
                out.append(node_id)
                break
    return out


def build_graph(flow: Flow, *, lang: Lang = "en") -> Graph:
    """Return the flow as a layered graph that every drawing is made from.

    Edges to nodes that do not exist are left out: the checker reports those.
    """
    edges: list[GraphEdge] = []
    for node_id in flow.nodes:
        edges += _node_edges(flow, node_id, lang)
    if flow.emergency_node in flow.nodes:
        edges += [
            GraphEdge(src, flow.emergency_node, _WORDS[lang]["interrupt"], "interrupt", "EMERGENCY")
            for src in _interrupt_sources(flow)
        ]
    edges = [e for e in edges if e.source in flow.nodes and e.target in flow.nodes]
    order, forward = _dfs(flow, edges)
    layer = {n: 0 for n in flow.nodes}
    for node_id in order:
        for i, e in enumerate(edges):
            if e.source == node_id and i in forward:
                layer[e.target] = max(layer[e.target], layer[node_id] + 1)
    nodes = tuple(
        GraphNode(
            id=node_id,
            kind=node.kind,
            label=_label(flow, node_id, lang),
            layer=layer[node_id],
            save=isinstance(node, EndNode) and node.save,
            emergency=node_id == flow.emergency_node,
        )
        for node_id, node in flow.nodes.items()
    )
    rows = _rows(order, edges, forward, layer)
    return Graph(flow.title.get(lang), lang, nodes, tuple(edges), rows)


def _dfs(flow: Flow, edges: list[GraphEdge]) -> tuple[list[str], set[int]]:
    """Return the nodes in topological order and the indexes of edges that point forward."""
    out_edges: dict[str, list[int]] = {n: [] for n in flow.nodes}
    for i, e in enumerate(edges):
        out_edges[e.source].append(i)
    state: dict[str, int] = {}
    post: list[str] = []
    forward: set[int] = set()
    starts = [flow.start, *flow.nodes] if flow.start in flow.nodes else list(flow.nodes)
    for root in starts:
        if root in state:
            continue
        state[root] = 1
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            node_id, k = stack[-1]
            if k < len(out_edges[node_id]):
                stack[-1] = (node_id, k + 1)
                i = out_edges[node_id][k]
                target = edges[i].target
                if state.get(target) == 1:
                    continue  # a back edge: the flow loops (the checker refuses that)
                forward.add(i)
                if target not in state:
                    state[target] = 1
                    stack.append((target, 0))
            else:
                state[node_id] = 2
                post.append(node_id)
                stack.pop()
    return post[::-1], forward


def _rows(
    order: list[str], edges: list[GraphEdge], forward: set[int], layer: dict[str, int]
) -> tuple[tuple[Slot, ...], ...]:
    """Put nodes and waypoints into rows and order each row to cross few edges."""
    height = max(layer.values(), default=0) + 1
    rows: list[list[Slot]] = [[] for _ in range(height)]
    rank: dict[Slot, float] = {}
    for i, node_id in enumerate(order):
        rows[layer[node_id]].append(node_id)
        rank[node_id] = i
    up: dict[Slot, list[Slot]] = {}
    down: dict[Slot, list[Slot]] = {}
    for i, e in enumerate(edges):
        if i not in forward:
            continue
        chain: list[Slot] = [e.source]
        for lv in range(layer[e.source] + 1, layer[e.target]):
            w = Waypoint(i, lv)
            rows[lv].append(w)
            rank[w] = rank[e.source] + 0.5
            chain.append(w)
        chain.append(e.target)
        for a, b in zip(chain, chain[1:], strict=False):
            down.setdefault(a, []).append(b)
            up.setdefault(b, []).append(a)
    rows = [sorted(r, key=lambda s: rank[s]) for r in rows]

    def crossings(rs: list[list[Slot]]) -> int:
        total = 0
        for upper, lower in zip(rs, rs[1:], strict=False):
            pos = {s: k for k, s in enumerate(lower)}
            segs = [(k, pos[t]) for k, s in enumerate(upper) for t in down.get(s, ()) if t in pos]
            total += sum(1 for a, b in segs for c, d in segs if a < c and b > d)
        return total

    best, best_count = [list(r) for r in rows], crossings(rows)
    for sweep in range(12):
        downward = sweep % 2 == 0
        indexes = range(1, height) if downward else range(height - 2, -1, -1)
        for lv in indexes:
            ref = rows[lv - 1] if downward else rows[lv + 1]
            rows[lv] = _by_barycentre(rows[lv], ref, up if downward else down)
        count = crossings(rows)
        if count < best_count:
            best, best_count = [list(r) for r in rows], count
    return tuple(tuple(r) for r in best)


def _by_barycentre(row: list[Slot], ref: list[Slot], links: dict[Slot, list[Slot]]) -> list[Slot]:
    """Sort ``row`` by the mean position of each slot's neighbours in the row ``ref``."""
    pos = {s: k for k, s in enumerate(ref)}

    def centre(item: tuple[int, Slot]) -> float:
        k, s = item
        near = [pos[n] for n in links.get(s, ()) if n in pos]
        return sum(near) / len(near) if near else float(k)

    return [s for _, s in sorted(enumerate(row), key=centre)]


# --- Mermaid ------------------------------------------------------------------

_MERMAID_WORDS = {"end", "graph", "subgraph", "flowchart", "style", "class", "classdef",
                  "linkstyle", "click", "call", "direction", "default"}  # fmt: skip

_KIND_CLASS = {
    "choice": "question", "yesno": "question", "checklist": "question",
    "text": "typed", "phone": "typed", "info": "info", "triage": "triage",
    "confirm": "confirm", "end": "finish",
}  # fmt: skip

_SHAPES = {
    "question": ('("', '")'),
    "typed": ('[/"', '"/]'),
    "info": ('["', '"]'),
    "triage": ('{{"', '"}}'),
    "confirm": ('[["', '"]]'),
    "finish": ('(["', '"])'),
}

_STYLE = {
    "question": ("#ffffff", "#455a64"),
    "typed": ("#fff8e1", "#8d6e63"),
    "info": ("#f5f5f5", "#9e9e9e"),
    "triage": ("#ede7f6", "#5e35b1"),
    "confirm": ("#e8f5e9", "#388e3c"),
    "finish": ("#eceff1", "#37474f"),
}


def _node_class(node: GraphNode) -> str:
    if node.emergency:
        return "outcome_EMERGENCY"
    if node.kind == "end" and node.save:
        return "finish_save"
    return _KIND_CLASS[node.kind]


def _mermaid_id(node_id: str) -> str:
    return f"n_{node_id}" if node_id.lower() in _MERMAID_WORDS else node_id


def _mermaid_text(text: str) -> str:
    return (
        text.replace("&", "#amp;")
        .replace('"', "#quot;")
        .replace("<", "#lt;")
        .replace(">", "#gt;")
        .replace("`", "'")
    )


def to_mermaid(flow: Flow, *, lang: Lang = "en") -> str:
    """Return a Mermaid ``flowchart TD`` of the flow: every node, labelled and styled by kind."""
    graph = build_graph(flow, lang=lang)
    heading = _heading(graph.title, flow.version, lang)
    out = [f"%% {_mermaid_text(heading)}", "flowchart TD"]
    for n in graph.nodes:
        left, right = _SHAPES[_KIND_CLASS[n.kind]]
        text = f"<b>{n.id}</b><br/>{_mermaid_text(n.label)}"
        out.append(f"    {_mermaid_id(n.id)}{left}{text}{right}:::{_node_class(n)}")
    styles = []
    for i, e in enumerate(graph.edges):
        arrow = "-.->" if e.kind == "interrupt" else "-->"
        label = f'|"{_mermaid_text(e.label)}"|' if e.label else ""
        out.append(f"    {_mermaid_id(e.source)} {arrow}{label} {_mermaid_id(e.target)}")
        if e.level is not None:
            width = "1.5px" if e.kind == "interrupt" else "2.5px"
            styles.append(
                f"    linkStyle {i} stroke:{LEVEL_COLOURS[e.level]},stroke-width:{width},"
                f"color:{LEVEL_COLOURS[e.level]}"
            )
    out += styles
    out.append(f'    subgraph legend["{_WORDS[lang]["outcomes"]}"]')
    out += [f'        LEGEND_{lv}["{lv}"]:::outcome_{lv}' for lv in LEVELS]
    out.append("    end")
    for name, (fill, stroke) in _STYLE.items():
        out.append(f"    classDef {name} fill:{fill},stroke:{stroke},color:#212121")
    out.append(
        "    classDef finish_save fill:#eceff1,stroke:#263238,stroke-width:3px,color:#212121"
    )
    for lv, colour in LEVEL_COLOURS.items():
        text = "#212121" if lv == "LATER" else "#ffffff"
        out.append(f"    classDef outcome_{lv} fill:{colour},stroke:{colour},color:{text}")
    return "\n".join(out) + "\n"


# --- layout shared by SVG and PNG ---------------------------------------------

NODE_W = 210
WAY_W = 28
H_GAP = 28
V_GAP = 96
MARGIN = 24
HEADER = 64
LINE_H = 16
WRAP = 27
MAX_LINES = 3

Point = tuple[float, float]


@dataclass(frozen=True)
class _Box:
    node: GraphNode
    x: float
    y: float
    w: float
    h: float
    lines: tuple[str, ...]


@dataclass(frozen=True)
class _Line:
    edge: GraphEdge
    points: tuple[Point, ...]
    label_at: Point


@dataclass(frozen=True)
class _Layout:
    title: str
    width: float
    height: float
    boxes: tuple[_Box, ...]
    lines: tuple[_Line, ...]


def _wrap(text: str, width: int = WRAP, most: int = MAX_LINES) -> tuple[str, ...]:
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word if len(word) <= width else word[: width - 1] + "…")
    if len(lines) > most:
        lines = lines[:most]
        lines[-1] = lines[-1][: width - 1].rstrip() + "…"
    return tuple(lines)


def _layout(graph: Graph) -> _Layout:
    nodes = {n.id: n for n in graph.nodes}
    texts = {n.id: _wrap(n.label) for n in graph.nodes}

    def width(s: Slot) -> float:
        return WAY_W if isinstance(s, Waypoint) else NODE_W

    row_h = [
        max((LINE_H * (len(texts[s]) + 1) + 14.0 for s in row if isinstance(s, str)), default=20.0)
        for row in graph.rows
    ]
    tops = []
    y = float(HEADER)
    for h in row_h:
        tops.append(y)
        y += h + V_GAP
    height = y - V_GAP + MARGIN

    # x: start packed and centred, then pull each slot towards its neighbours a few times
    x: dict[Slot, float] = {}
    widest = max((sum(width(s) + H_GAP for s in r) - H_GAP for r in graph.rows), default=0.0)
    for row in graph.rows:
        total = sum(width(s) + H_GAP for s in row) - H_GAP
        left = (widest - total) / 2
        for s in row:
            x[s] = left + width(s) / 2
            left += width(s) + H_GAP
    links: dict[Slot, list[Slot]] = {}
    for i, e in enumerate(graph.edges):
        chain = _chain(graph, i, e, nodes)
        for a, b in zip(chain, chain[1:], strict=False):
            links.setdefault(a, []).append(b)
            links.setdefault(b, []).append(a)
    for sweep in range(8):
        order = graph.rows if sweep % 2 == 0 else graph.rows[::-1]
        for row in order:
            wanted = []
            for s in row:
                near = [x[n] for n in links.get(s, ()) if n in x]
                wanted.append(sum(near) / len(near) if near else x[s])
            x.update(_place(row, wanted, width))
    left_edge = min(x[s] - width(s) / 2 for row in graph.rows for s in row) if x else 0.0
    for s in x:
        x[s] += MARGIN - left_edge
    right = max((x[s] + width(s) / 2 for s in x), default=0.0) + MARGIN
    total_w = max(right, 520.0)

    slot_y = {s: tops[k] for k, row in enumerate(graph.rows) for s in row}
    boxes = tuple(
        _Box(
            nodes[s],
            x[s] - NODE_W / 2,
            slot_y[s],
            NODE_W,
            LINE_H * (len(texts[s]) + 1) + 14,
            texts[s],
        )
        for row in graph.rows
        for s in row
        if isinstance(s, str)
    )
    box_of = {b.node.id: b for b in boxes}
    return _Layout(
        graph.title,
        total_w,
        height,
        boxes,
        _edge_lines(graph, box_of, x, slot_y, row_h),
    )


def _chain(graph: Graph, i: int, e: GraphEdge, nodes: dict[str, GraphNode]) -> list[Slot]:
    a, b = nodes[e.source].layer, nodes[e.target].layer
    if b <= a:
        return [e.source, e.target]
    return [e.source, *(Waypoint(i, lv) for lv in range(a + 1, b)), e.target]


def _place(
    row: Sequence[Slot], wanted: list[float], width: Callable[[Slot], float]
) -> dict[Slot, float]:
    """Put slots near where they want to be, in order, without overlapping."""
    n = len(row)
    ltr = list(wanted)
    for k in range(1, n):
        gap = (width(row[k - 1]) + width(row[k])) / 2 + H_GAP
        ltr[k] = max(ltr[k], ltr[k - 1] + gap)
    rtl = list(wanted)
    for k in range(n - 2, -1, -1):
        gap = (width(row[k + 1]) + width(row[k])) / 2 + H_GAP
        rtl[k] = min(rtl[k], rtl[k + 1] - gap)
    mid = [(a + b) / 2 for a, b in zip(ltr, rtl, strict=True)]
    for k in range(1, n):
        gap = (width(row[k - 1]) + width(row[k])) / 2 + H_GAP
        mid[k] = max(mid[k], mid[k - 1] + gap)
    return dict(zip(row, mid, strict=True))


def _edge_lines(
    graph: Graph,
    box_of: dict[str, _Box],
    x: dict[Slot, float],
    slot_y: dict[Slot, float],
    row_h: list[float],
) -> tuple[_Line, ...]:
    nodes = {n.id: n for n in graph.nodes}
    chains = [_chain(graph, i, e, nodes) for i, e in enumerate(graph.edges)]

    def spread(ends: dict[str, list[tuple[float, int]]]) -> dict[tuple[str, int], float]:
        """Spread the edges leaving (or entering) one box along its side, by direction."""
        out: dict[tuple[str, int], float] = {}
        for node_id, items in ends.items():
            box = box_of[node_id]
            items.sort()
            step = min(26.0, (box.w - 40) / max(len(items), 1))
            first = box.x + box.w / 2 - step * (len(items) - 1) / 2
            for k, (_, i) in enumerate(items):
                out[(node_id, i)] = first + k * step
        return out

    leaving: dict[str, list[tuple[float, int]]] = {}
    entering: dict[str, list[tuple[float, int]]] = {}
    for i, e in enumerate(graph.edges):
        chain = chains[i]
        leaving.setdefault(e.source, []).append((x[chain[1]], i))
        entering.setdefault(e.target, []).append((x[chain[-2]], i))
    out_x, in_x = spread(leaving), spread(entering)

    fan: dict[str, list[int]] = {}
    for i, e in enumerate(graph.edges):
        fan.setdefault(e.source, []).append(i)
    for node_id in fan:
        fan[node_id].sort(key=lambda i: out_x[(node_id, i)])

    lines = []
    for i, e in enumerate(graph.edges):
        src, dst = box_of[e.source], box_of[e.target]
        pts: list[Point] = [(out_x[(e.source, i)], src.y + src.h)]
        for w in chains[i][1:-1]:
            assert isinstance(w, Waypoint)
            top = slot_y[w]
            pts += [(x[w], top), (x[w], top + row_h[w.layer])]
        if dst.y > src.y:
            pts.append((in_x[(e.target, i)], dst.y))
        else:  # a loop back up: enter from the side
            pts.append((dst.x + dst.w, dst.y + dst.h / 2))
        k = fan[e.source].index(i)
        t = (0.5, 0.28, 0.72)[k % 3] if len(fan[e.source]) > 1 else 0.5
        (x0, y0), (x1, y1) = pts[0], pts[1]
        lines.append(_Line(e, tuple(pts), (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t)))
    return tuple(lines)


def _colour(edge: GraphEdge) -> str:
    return LEVEL_COLOURS[edge.level] if edge.level is not None else "#546e7a"


def _fill(node: GraphNode) -> tuple[str, str]:
    if node.emergency:
        return "#ffebee", LEVEL_COLOURS["EMERGENCY"]
    return _STYLE[_KIND_CLASS[node.kind]]


def _shape(box: _Box) -> tuple[str, list[Point]]:
    """The outline of a node: ("rect", corners) with a corner radius kind, or ("poly", points)."""
    x0, y0, x1, y1 = box.x, box.y, box.x + box.w, box.y + box.h
    if box.node.kind == "triage":
        d = 16.0
        pts = [(x0 + d, y0), (x1 - d, y0), (x1, (y0 + y1) / 2), (x1 - d, y1), (x0 + d, y1),
               (x0, (y0 + y1) / 2)]  # fmt: skip
        return "poly", pts
    if box.node.kind in ("text", "phone"):
        d = 10.0
        return "poly", [(x0 + d, y0), (x1, y0), (x1 - d, y1), (x0, y1)]
    return "rect", [(x0, y0), (x1, y1)]


def _radius(box: _Box) -> float:
    kind = box.node.kind
    if kind == "end":
        return box.h / 2
    if kind in ("choice", "yesno", "checklist"):
        return 10.0
    return 2.0


def _legend(lang: Lang) -> list[tuple[str, str, bool]]:
    """(text, colour, dashed) for each entry of the legend."""
    words = _WORDS[lang]
    out = [(f"{words['outcome']} {lv}", LEVEL_COLOURS[lv], False) for lv in LEVELS]
    out[0] = (words["stop"], LEVEL_COLOURS["EMERGENCY"], True)
    return out


def _heading(title: str, version: str, lang: Lang) -> str:
    return f"{title} ({_WORDS[lang]['version']} {version or '-'})"


# --- SVG ----------------------------------------------------------------------


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _fmt(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def to_svg(flow: Flow, *, lang: Lang = "en") -> str:
    """Return the flow as a standalone SVG document (one layered drawing, no external tools)."""
    layout = _layout(build_graph(flow, lang=lang))
    w, h = layout.width, layout.height
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_fmt(w)}" height="{_fmt(h)}" '
        f'viewBox="0 0 {_fmt(w)} {_fmt(h)}" font-family="DejaVu Sans, Arial, Helvetica, '
        'sans-serif" font-size="12">',
        f"<title>{_esc(layout.title)}</title>",
        "<defs>",
    ]
    colours = sorted({_colour(line.edge) for line in layout.lines})
    for c in colours:
        out.append(
            f'<marker id="arrow{c[1:]}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" '
            f'markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
            f'fill="{c}"/></marker>'
        )
    out.append("</defs>")
    out.append(f'<rect x="0" y="0" width="{_fmt(w)}" height="{_fmt(h)}" fill="#ffffff"/>')
    out.append(
        f'<text x="{MARGIN}" y="26" font-size="16" font-weight="bold" fill="#212121">'
        f"{_esc(_heading(layout.title, flow.version, lang))}</text>"
    )
    lx = float(MARGIN)
    for text, colour, dashed in _legend(lang):
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        out.append(
            f'<line x1="{_fmt(lx)}" y1="44" x2="{_fmt(lx + 22)}" y2="44" stroke="{colour}" '
            f'stroke-width="2.5"{dash}/>'
            f'<text x="{_fmt(lx + 27)}" y="48" fill="#424242" font-size="11">{_esc(text)}</text>'
        )
        lx += 27 + 7 * len(text) + 16
    for line in layout.lines:
        e = line.edge
        colour = _colour(e)
        dash = ' stroke-dasharray="6 4"' if e.kind == "interrupt" else ""
        coords = " ".join(f"{_fmt(px)},{_fmt(py)}" for px, py in line.points)
        width = "2.2" if e.level is not None and e.kind != "interrupt" else "1.4"
        out.append(
            f'<polyline class="edge" points="{coords}" fill="none" stroke="{colour}" '
            f'stroke-width="{width}"{dash} marker-end="url(#arrow{colour[1:]})">'
            f"<title>{_esc(e.source)} → {_esc(e.target)}</title></polyline>"
        )
    for line in layout.lines:
        if not line.edge.label:
            continue
        text = _short(line.edge.label, 34)
        tw = 6.4 * len(text) + 8
        cx, cy = line.label_at
        colour = _colour(line.edge) if line.edge.level else "#37474f"
        out.append(
            f'<rect x="{_fmt(cx - tw / 2)}" y="{_fmt(cy - 8)}" width="{_fmt(tw)}" height="16" '
            f'rx="3" fill="#ffffff" fill-opacity="0.9"/>'
            f'<text x="{_fmt(cx)}" y="{_fmt(cy + 4)}" text-anchor="middle" font-size="11" '
            f'fill="{colour}">{_esc(text)}</text>'
        )
    for box in layout.boxes:
        fill, stroke = _fill(box.node)
        sw = "3" if box.node.save or box.node.kind == "triage" else "1.5"
        kind, pts = _shape(box)
        out.append(f'<g class="node {box.node.kind}" id="node-{_esc(box.node.id)}">')
        if kind == "poly":
            p = " ".join(f"{_fmt(a)},{_fmt(b)}" for a, b in pts)
            out.append(
                f'<polygon points="{p}" fill="{fill}" stroke="{stroke}" stroke-width="{sw}"/>'
            )
        else:
            r = _radius(box)
            out.append(
                f'<rect x="{_fmt(box.x)}" y="{_fmt(box.y)}" width="{_fmt(box.w)}" '
                f'height="{_fmt(box.h)}" rx="{_fmt(r)}" fill="{fill}" stroke="{stroke}" '
                f'stroke-width="{sw}"/>'
            )
            if box.node.kind == "confirm":
                out.append(
                    f'<rect x="{_fmt(box.x + 4)}" y="{_fmt(box.y + 4)}" '
                    f'width="{_fmt(box.w - 8)}" height="{_fmt(box.h - 8)}" fill="none" '
                    f'stroke="{stroke}" stroke-width="1"/>'
                )
        cx = box.x + box.w / 2
        out.append(
            f'<text x="{_fmt(cx)}" y="{_fmt(box.y + 18)}" text-anchor="middle" '
            f'font-size="11" font-weight="bold" fill="#616161">{_esc(box.node.id)}</text>'
        )
        for k, text in enumerate(box.lines):
            y = box.y + 18 + LINE_H * (k + 1)
            out.append(
                f'<text x="{_fmt(cx)}" y="{_fmt(y)}" text-anchor="middle" fill="#212121">'
                f"{_esc(text)}</text>"
            )
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


# --- PNG ----------------------------------------------------------------------

#: Largest PNG drawn, in pixels; bigger layouts are scaled down to fit.
MAX_PNG = (4000, 6000)

_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

#: Russian letters in Latin script (BGN/PCGN-like), for fonts without Cyrillic.
_TRANSLIT = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh",
    "з": "z", "и": "i", "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o",
    "п": "p", "р": "r", "с": "s", "т": "t", "у": "u", "ф": "f", "х": "kh", "ц": "ts",
    "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "yu",
    "я": "ya",
}  # fmt: skip
_PUNCT = {"→": "->", "←": "<-", "—": "-", "–": "-", "…": "...", "«": '"', "»": '"', "№": "No."}


class _Printer:
    """Turn text into what a font can draw: characters it lacks are transliterated."""

    def __init__(self, font: _Font) -> None:
        self.font = font
        self.missing = self._glyph("\U0010fffd")
        self.known: dict[str, bool] = {}

    def _glyph(self, ch: str) -> bytes | None:
        try:
            left, top, right, bottom = self.font.getbbox(ch)
            img = Image.new("L", (int(right - left) + 2, int(bottom - top) + 2))
            ImageDraw.Draw(img).text((-left, -top), ch, font=self.font, fill=255)
        except (UnicodeError, ValueError, OSError):
            return None
        return img.tobytes() + bytes(f"{right - left}x{bottom - top}", "ascii")

    def covers(self, ch: str) -> bool:
        """Whether the font has a glyph for ``ch`` (not its 'missing' box)."""
        if ch not in self.known:
            glyph = self._glyph(ch)
            self.known[ch] = glyph is not None and (ch.isspace() or glyph != self.missing)
        return self.known[ch]

    def __call__(self, text: str) -> str:
        out = []
        for ch in text:
            if self.covers(ch):
                out.append(ch)
                continue
            low = ch.lower()
            sub = _TRANSLIT.get(low)
            if sub is not None:
                out.append(sub.capitalize() if ch != low else sub)
            elif ch in _PUNCT:
                out.append(_PUNCT[ch])
            else:
                ascii_ = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
                out.append(ascii_ or ("" if unicodedata.category(ch) == "So" else "?"))
        return "".join(out)


def _font(data: bytes | None, size: float) -> _Font:
    if data is not None:
        return ImageFont.truetype(io.BytesIO(data), size)
    return ImageFont.load_default(size=size)


def to_png(flow: Flow, *, lang: Lang = "en", font: bytes | None = None) -> bytes:
    """Return the flow as a PNG of the same layout as the SVG.

    Pillow's built-in font has no Cyrillic: letters it cannot draw are
    transliterated (``Имя`` → ``Imya``). Pass ``font`` (the bytes of a TrueType
    font with Cyrillic, read by the caller) to draw Russian labels as written.
    """
    layout = _layout(build_graph(flow, lang=lang))
    fit = min(1.0, MAX_PNG[0] / layout.width, MAX_PNG[1] / layout.height)
    ss = 2.0 * fit  # drawn at twice the size, then scaled down: smooth lines and text
    size = (int(layout.width * ss) + 1, int(layout.height * ss) + 1)
    img = Image.new("RGB", size, "#ffffff")
    draw = ImageDraw.Draw(img)
    fonts = {k: _font(font, v * ss) for k, v in (("body", 12), ("small", 11), ("title", 16))}
    printers = {k: _Printer(f) for k, f in fonts.items()}

    def p(pt: Point) -> tuple[float, float]:
        return (pt[0] * ss, pt[1] * ss)

    def text(at: Point, s: str, key: str, fill: str, anchor: str = "ms") -> None:
        draw.text(p(at), printers[key](s), font=fonts[key], fill=fill, anchor=anchor)

    def fitted(s: str, key: str, room: float) -> str:
        s = printers[key](s)
        while len(s) > 1 and draw.textlength(s, font=fonts[key]) > room * ss:
            s = s[:-2] + "…" if printers[key].covers("…") else s[:-4] + "..."
        return s

    text((MARGIN, 26), _heading(layout.title, flow.version, lang), "title",
         "#212121", "ls")  # fmt: skip
    lx = float(MARGIN)
    for label, colour, dashed in _legend(lang):
        _segment(draw, p((lx, 44)), p((lx + 22, 44)), colour, 2.5 * ss, dashed, ss)
        text((lx + 27, 48), label, "small", "#424242", "ls")
        lx += 27 + 7 * len(label) + 16
    for line in layout.lines:
        e = line.edge
        colour = _colour(e)
        width = (2.2 if e.level is not None and e.kind != "interrupt" else 1.4) * ss
        pts = [p(pt) for pt in line.points]
        for a, b in zip(pts, pts[1:], strict=False):
            _segment(draw, a, b, colour, width, e.kind == "interrupt", ss)
        _arrowhead(draw, pts[-2], pts[-1], colour, ss)
    for line in layout.lines:
        if not line.edge.label:
            continue
        label = fitted(_short(line.edge.label, 34), "small", 230)
        tw = draw.textlength(label, font=fonts["small"]) / ss + 8
        cx, cy = line.label_at
        draw.rounded_rectangle(
            [p((cx - tw / 2, cy - 8)), p((cx + tw / 2, cy + 8))], radius=3 * ss, fill="#ffffff"
        )
        colour = _colour(line.edge) if line.edge.level else "#37474f"
        draw.text(p((cx, cy)), label, font=fonts["small"], fill=colour, anchor="mm")
    for box in layout.boxes:
        fill, stroke = _fill(box.node)
        sw = max(1, round((3 if box.node.save or box.node.kind == "triage" else 1.5) * ss))
        kind, pts = _shape(box)
        if kind == "poly":
            draw.polygon([p(q) for q in pts], fill=fill, outline=stroke, width=sw)
        else:
            draw.rounded_rectangle(
                [p(pts[0]), p(pts[1])], radius=_radius(box) * ss, fill=fill, outline=stroke,
                width=sw,
            )  # fmt: skip
            if box.node.kind == "confirm":
                inner = [p((box.x + 4, box.y + 4)), p((box.x + box.w - 4, box.y + box.h - 4))]
                draw.rectangle(inner, outline=stroke, width=max(1, round(ss)))
        cx = box.x + box.w / 2
        text((cx, box.y + 18), box.node.id, "small", "#616161")
        for k, s in enumerate(box.lines):
            y = box.y + 18 + LINE_H * (k + 1)
            draw.text(p((cx, y)), fitted(s, "body", box.w - 16), font=fonts["body"],
                      fill="#212121", anchor="ms")  # fmt: skip
    final = (max(1, round(layout.width * fit)), max(1, round(layout.height * fit)))
    img = img.resize(final, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _segment(
    draw: ImageDraw.ImageDraw,
    a: tuple[float, float],
    b: tuple[float, float],
    colour: str,
    width: float,
    dashed: bool,
    ss: float,
) -> None:
    if not dashed:
        draw.line([a, b], fill=colour, width=max(1, round(width)))
        return
    (x0, y0), (x1, y1) = a, b
    length = ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5
    dash, gap = 6 * ss, 4 * ss
    pos = 0.0
    while pos < length:
        end = min(pos + dash, length)
        t0, t1 = pos / length, end / length
        draw.line(
            [
                (x0 + (x1 - x0) * t0, y0 + (y1 - y0) * t0),
                (x0 + (x1 - x0) * t1, y0 + (y1 - y0) * t1),
            ],
            fill=colour,
            width=max(1, round(width)),
        )
        pos = end + gap


def _arrowhead(
    draw: ImageDraw.ImageDraw,
    a: tuple[float, float],
    b: tuple[float, float],
    colour: str,
    ss: float,
) -> None:
    (x0, y0), (x1, y1) = a, b
    length = ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5 or 1.0
    ux, uy = (x1 - x0) / length, (y1 - y0) / length
    size = 9 * ss
    base = (x1 - ux * size, y1 - uy * size)
    left = (base[0] - uy * size * 0.45, base[1] + ux * size * 0.45)
    right = (base[0] + uy * size * 0.45, base[1] - ux * size * 0.45)
    draw.polygon([(x1, y1), left, right], fill=colour)

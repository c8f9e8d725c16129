"""The dialogue as a graph *description*: nodes, edges, labels and rules, in the admin's language.

``describe(flow, lang=...)`` returns frozen data and draws nothing: ``bot.graphdraw``
lays it out and renders PNG or SVG, and ``to_mermaid`` writes it as Mermaid text.
Every label is written the way the dialogue itself speaks: a branch taken on an
answer is labelled with that answer's button text ("Межпозвоночная грыжа"), never
with fact names. Each triage rule is listed with the outcome it gives, so the
picture shows which answers lead to STOP, LATER, CLEAR, OK or EMERGENCY.

Follow-up questions asked one after another, each only when its own condition holds
(the screening block after "What bothers you"), form a *chain*: instead of an edge
from every follow-up to every later one, the description keeps the chain in order and
puts the condition on the follow-up ("asked only if: Межпозвоночная грыжа").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from flows.catalogue import t as fixed
from flows.engine import holds
from flows.markup import plain_text
from flows.schema import (
    LEVELS,
    AllOf,
    ChecklistNode,
    ChoiceNode,
    Condition,
    EndNode,
    FactIs,
    Flow,
    Lang,
    Level,
    NotOf,
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
    "GraphRule",
    "describe",
    "to_mermaid",
]

#: The colour of each outcome, the same in every picture.
LEVEL_COLOURS: dict[Level, str] = {
    "EMERGENCY": "#c62828",
    "STOP": "#d84315",
    "LATER": "#f9a825",
    "CLEAR": "#1565c0",
    "OK": "#2e7d32",
}

EdgeKind = Literal["answer", "branch", "step", "interrupt"]

#: Longest node label, in characters.
LABEL_CHARS = 60


@dataclass(frozen=True)
class GraphNode:
    """One screen of the dialogue: its id, kind, short label and what its answers can lead to."""

    id: str
    kind: str
    label: str
    #: For a follow-up in a chain: the answers it is asked on ("only if" these).
    asked_if: str = ""
    #: Outcomes that rules give on answers recorded here (most severe first).
    levels: tuple[Level, ...] = ()
    #: An end node that saves a request.
    save: bool = False
    #: The flow's emergency end.
    emergency: bool = False


@dataclass(frozen=True)
class GraphEdge:
    """A way from one node to another, labelled with the answers or outcomes that take it."""

    source: str
    target: str
    label: str
    kind: EdgeKind
    #: The outcomes this edge is taken on (a triage branch, the emergency stop).
    levels: tuple[Level, ...] = ()


@dataclass(frozen=True)
class GraphRule:
    """A triage rule: the answers it looks at, in the dialogue's words, and the outcome it gives."""

    id: str
    level: Level
    answers: str
    #: The questions whose answers the rule looks at, in the flow's order.
    nodes: tuple[str, ...]
    #: The rule used when no other rule applies.
    default: bool = False


@dataclass(frozen=True)
class Graph:
    """The whole description a picture is drawn from."""

    title: str
    version: str
    lang: Lang
    start: str
    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]
    rules: tuple[GraphRule, ...]
    #: Each outcome's headline as the client reads it, for the legend.
    outcomes: tuple[tuple[Level, str], ...]

    def node(self, node_id: str) -> GraphNode:
        """Return the node ``node_id`` (StopIteration if there is none)."""
        return next(n for n in self.nodes if n.id == node_id)

    def word(self, key: str) -> str:
        """Return the fixed label ``graph.<key>`` of the catalogue in this graph's language."""
        return fixed(f"graph.{key}", self.lang)


# --- words --------------------------------------------------------------------


def _short(text: str, limit: int = LABEL_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _button(label: str) -> str:
    """An answer's button text without its explanation in brackets: 'Шейный (шея)' → 'Шейный'."""
    short = re.sub(r"\s+\([^()]*\)$", "", label.strip())
    return short or label.strip()


def _node_label(flow: Flow, node_id: str, lang: Lang) -> str:
    node = flow.nodes[node_id]
    if node.summary is not None:
        return _short(node.summary.get(lang))
    lines = [x for x in plain_text(node.text.get(lang)).splitlines() if x.strip()]
    return _short(lines[0] if lines else node_id)


class _Words:
    """Conditions in the dialogue's own words: each fact value by the answer that records it."""

    def __init__(self, flow: Flow, lang: Lang) -> None:
        self.flow = flow
        self.lang = lang
        #: (fact, value) -> (node id, answer label), first in the flow's order
        self.answer: dict[tuple[str, str], tuple[str, str]] = {}
        #: fact -> node id of the first question that records it
        self.asker: dict[str, str] = {}
        for node_id, node in flow.nodes.items():
            if not isinstance(node, ChoiceNode | YesNoNode | ChecklistNode):
                continue
            for option in node.options:
                for fact, values in option.facts.items():
                    self.asker.setdefault(fact, node_id)
                    for value in values:
                        self.answer.setdefault(
                            (fact, value), (node_id, _button(option.label.get(lang)))
                        )

    def word(self, key: str) -> str:
        return fixed(f"graph.{key}", self.lang)

    def nodes_of(self, cond: Condition) -> set[str]:
        """The questions whose answers ``cond`` looks at."""
        out = set()
        for fact, value in atoms_of(cond):
            found = self.answer.get((fact, value)) if value is not None else None
            node = found[0] if found else self.asker.get(fact)
            if node is not None:
                out.add(node)
        return out

    def fact(self, cond: FactIs, here: str | None) -> str:
        """One fact's values as answer labels; prefixed by the question when asked elsewhere."""
        if cond.fact == "outcome":
            return " / ".join(cond.in_ or LEVELS)
        asker = self.asker.get(cond.fact)
        if cond.in_ is None:
            where = _node_label(self.flow, asker, self.lang) if asker else cond.fact
            return f"{where}: {self.word('any_answer')}"
        labels: list[str] = []
        nodes: set[str] = set()
        for value in cond.in_:
            found = self.answer.get((cond.fact, value))
            if found is None:
                labels.append(f"{cond.fact} = {value}")
                continue
            nodes.add(found[0])
            if found[1] not in labels:
                labels.append(found[1])
        text = " / ".join(labels)
        if len(nodes) == 1 and (node := nodes.pop()) != here:
            text = f"{_node_label(self.flow, node, self.lang)}: {text}"
        return text

    def condition(self, cond: Condition, here: str | None = None, *, nested: bool = False) -> str:
        """``cond`` in words; ``here`` is the question the reader is looking at."""
        if isinstance(cond, FactIs):
            return self.fact(cond, here)
        if isinstance(cond, NotOf):
            return self.word("not") + self.condition(cond.not_, here, nested=True)
        parts, joiner = (
            (cond.all, self.word("and")) if isinstance(cond, AllOf) else (cond.any, self.word("or"))
        )
        if len(parts) == 1:
            return self.condition(parts[0], here, nested=nested)
        text = joiner.join(self.condition(p, here, nested=True) for p in parts)
        return f"({text})" if nested else text


# --- edges ----------------------------------------------------------------------


def _chain(flow: Flow, node_id: str) -> list[Transition] | None:
    """The follow-ups of ``node_id`` when they form a chain (see the module docstring)."""
    node = flow.nodes[node_id]
    branches = None if isinstance(node, EndNode) else node.next
    if not isinstance(branches, tuple) or len(branches) < 3 or branches[-1].when is not None:
        return None
    steps = list(branches[:-1])
    if any(t.when is None or t.to not in flow.nodes or t.to == node_id for t in steps):
        return None
    if len({t.to for t in steps}) != len(steps):
        return None
    for k, t in enumerate(steps):
        follow = flow.nodes[t.to]
        if isinstance(follow, EndNode) or follow.next != branches[k + 1 :]:
            return None
    return steps


def _triage_edges(flow: Flow, node_id: str, node: TriageNode, words: _Words) -> list[GraphEdge]:
    """One edge per target, labelled and coloured with the outcomes that take it."""
    found = {r.level for r in flow.rules} | {flow.default_rule.level}
    levels = [lv for lv in LEVELS if lv in found and lv != "EMERGENCY"]
    branches = node.next
    if branches is None:
        return []
    if isinstance(branches, str):
        return [GraphEdge(node_id, branches, " / ".join(levels), "branch", tuple(levels))]
    by_outcome = all(
        t.when is None or all(fact == "outcome" for fact, _ in atoms_of(t.when)) for t in branches
    )
    if not by_outcome:
        return _branch_edges(node_id, branches, words)
    targets: dict[str, list[Level]] = {}
    for lv in levels:
        facts = frozenset({("outcome", str(lv))})
        taken = next((t for t in branches if t.when is None or holds(t.when, facts)), None)
        if taken is not None:
            targets.setdefault(taken.to, []).append(lv)
    return [
        GraphEdge(node_id, to, " / ".join(lvs), "branch", tuple(lvs)) for to, lvs in targets.items()
    ]


def _branch_edges(node_id: str, branches: tuple[Transition, ...], words: _Words) -> list[GraphEdge]:
    out = []
    for i, t in enumerate(branches):
        if t.when is not None:
            text = words.condition(t.when, node_id)
        else:
            text = words.word("otherwise") if i else ""
        out.append(GraphEdge(node_id, t.to, text, "branch"))
    return out


def _node_edges(
    flow: Flow, node_id: str, words: _Words, chained: dict[str, tuple[str, str]]
) -> list[GraphEdge]:
    node = flow.nodes[node_id]
    if isinstance(node, EndNode):
        return []
    lang = words.lang
    out: list[GraphEdge] = []
    falls_through = True
    rest_labels: list[str] = []
    if isinstance(node, ChoiceNode | YesNoNode):
        jumps = [o for o in node.options if o.goto]
        rest = [o for o in node.options if not o.goto]
        out += [
            GraphEdge(node_id, o.goto, _short(o.label.get(lang), 40), "answer")
            for o in jumps
            if o.goto is not None
        ]
        falls_through = bool(rest)
        if jumps:
            rest_labels = [_short(o.label.get(lang), 40) for o in rest]
    if isinstance(node, TriageNode):
        return _merge(out + _triage_edges(flow, node_id, node, words))
    if node_id in chained:  # a follow-up in a chain goes on to the next one in it
        out.append(GraphEdge(node_id, chained[node_id][0], "", "step"))
        return _merge(out)
    branches = node.next
    if not falls_through or branches is None:
        pass
    elif isinstance(branches, str):
        out.append(GraphEdge(node_id, branches, " / ".join(rest_labels), "branch"))
    elif (steps := _chain(flow, node_id)) is not None:
        out.append(GraphEdge(node_id, steps[0].to, "", "step"))
    else:
        out += _branch_edges(node_id, branches, words)
    return _merge(out)


def _chains(flow: Flow, words: _Words) -> dict[str, tuple[str, str]]:
    """Follow-up id -> (the next node in its chain, the condition it is asked on, in words)."""
    out: dict[str, tuple[str, str]] = {}
    for node_id in flow.nodes:
        steps = _chain(flow, node_id)
        if steps is None or any(t.to in out for t in steps):
            continue
        node = flow.nodes[node_id]
        assert not isinstance(node, EndNode) and isinstance(node.next, tuple)
        after = [t.to for t in steps[1:]] + [node.next[-1].to]
        for t, nxt in zip(steps, after, strict=True):
            assert t.when is not None
            out[t.to] = (nxt, words.condition(t.when, node_id))
    return out


def _merge(edges: list[GraphEdge]) -> list[GraphEdge]:
    """Join edges between the same two nodes into one, their labels joined."""
    out: list[GraphEdge] = []
    for e in edges:
        twin = next((i for i, o in enumerate(out) if o.target == e.target), None)
        if twin is None:
            out.append(e)
            continue
        o = out[twin]
        labels = [x for x in (o.label, e.label) if x]
        levels = tuple(lv for lv in LEVELS if lv in o.levels or lv in e.levels)
        kind = o.kind if o.kind == e.kind else "branch"
        out[twin] = GraphEdge(o.source, o.target, " / ".join(labels), kind, levels)
    return out


# --- rules ----------------------------------------------------------------------


def _rules(flow: Flow, words: _Words) -> tuple[GraphRule, ...]:
    order = {node_id: k for k, node_id in enumerate(flow.nodes)}
    out = []
    for rule in flow.rules:
        nodes = tuple(sorted(words.nodes_of(rule.when), key=order.__getitem__))
        out.append(GraphRule(rule.id, rule.level, words.condition(rule.when), nodes))
    d = flow.default_rule
    out.append(GraphRule(d.id, d.level, words.word("no_rule"), (), default=True))
    return tuple(out)


def _interrupt_sources(flow: Flow, words: _Words) -> list[str]:
    """Questions whose answers can fire an EMERGENCY rule (the dialogue stops there)."""
    sources = set()
    for rule in flow.rules:
        if rule.level == "EMERGENCY":
            sources |= words.nodes_of(rule.when)
    return [n for n in flow.nodes if n in sources]


def describe(flow: Flow, *, lang: Lang = "en") -> Graph:
    """Return what a picture of ``flow`` shows, labelled in ``lang``.

    Edges to nodes that do not exist are left out: the checker reports those.
    """
    words = _Words(flow, lang)
    chained = _chains(flow, words)
    rules = _rules(flow, words)
    edges: list[GraphEdge] = []
    for node_id in flow.nodes:
        edges += _node_edges(flow, node_id, words, chained)
    if flow.emergency_node in flow.nodes:
        edges += [
            GraphEdge(
                src, flow.emergency_node, words.word("emergency_sign"), "interrupt", ("EMERGENCY",)
            )  # fmt: skip
            for src in _interrupt_sources(flow, words)
        ]
    edges = [e for e in edges if e.source in flow.nodes and e.target in flow.nodes]
    levels: dict[str, set[Level]] = {}
    for rule in rules:
        for node_id in rule.nodes:
            levels.setdefault(node_id, set()).add(rule.level)
    nodes = tuple(
        GraphNode(
            id=node_id,
            kind=node.kind,
            label=_node_label(flow, node_id, lang),
            asked_if=chained[node_id][1] if node_id in chained else "",
            levels=tuple(lv for lv in LEVELS if lv in levels.get(node_id, ())),
            save=isinstance(node, EndNode) and node.save,
            emergency=node_id == flow.emergency_node,
        )
        for node_id, node in flow.nodes.items()
    )
    outcomes = tuple((lv, flow.outcomes[lv].title.get(lang)) for lv in LEVELS)
    return Graph(
        flow.title.get(lang), flow.version, lang, flow.start, nodes, tuple(edges), rules, outcomes
    )


# --- Mermaid ----------------------------------------------------------------------

_SHAPES = {
    "question": ("(", ")"),
    "info": ("[", "]"),
    "input": ("[/", "/]"),
    "triage": ("{{", "}}"),
    "confirm": ("[[", "]]"),
    "finish": ("([", "])"),
}
_KIND_CLASS = {
    "choice": "question",
    "yesno": "question",
    "checklist": "question",
    "info": "info",
    "text": "input",
    "phone": "input",
    "triage": "triage",
    "confirm": "confirm",
    "end": "finish",
}
#: Fill and outline of each node class, shared with the drawings.
NODE_STYLE = {
    "question": ("#e3f2fd", "#1565c0"),
    "info": ("#f5f5f5", "#757575"),
    "input": ("#fff8e1", "#ff8f00"),
    "triage": ("#ede7f6", "#4527a0"),
    "confirm": ("#e8f5e9", "#2e7d32"),
    "finish": ("#eceff1", "#37474f"),
}
_RESERVED = {"end", "graph", "subgraph", "flowchart", "style", "class", "classdef", "click"}


def node_class(kind: str) -> str:
    """The drawing class of a node kind (question, info, input, triage, confirm, finish)."""
    return _KIND_CLASS.get(kind, "info")


def _mermaid_id(node_id: str) -> str:
    return f"n_{node_id}" if node_id.lower() in _RESERVED else node_id


def _mermaid_text(text: str) -> str:
    return (
        text.replace("&", "#amp;")
        .replace('"', "#quot;")
        .replace("<", "#lt;")
        .replace(">", "#gt;")
        .replace("`", "'")
    )


def to_mermaid(flow: Flow, *, lang: Lang = "en") -> str:
    """Return a Mermaid ``flowchart TD`` of the flow's description (text, no drawing)."""
    graph = describe(flow, lang=lang)
    out = [
        f"%% {_mermaid_text(graph.title)} ({graph.word('version')} {graph.version or '-'})",
        "flowchart TD",
    ]
    for n in graph.nodes:
        left, right = _SHAPES[node_class(n.kind)]
        text = f"<b>{n.id}</b><br/>{_mermaid_text(n.label)}"
        if n.asked_if:
            text += f"<br/><i>{_mermaid_text(graph.word('asked_if') + n.asked_if)}</i>"
        if n.levels:
            text += "<br/>→ " + ", ".join(n.levels)
        cls = "emergency" if n.emergency else node_class(n.kind)
        out.append(f'    {_mermaid_id(n.id)}{left}"{text}"{right}:::{cls}')
    styles = []
    for i, e in enumerate(graph.edges):
        arrow = "-.->" if e.kind == "interrupt" else "-->"
        label = f'|"{_mermaid_text(e.label)}"|' if e.label else ""
        out.append(f"    {_mermaid_id(e.source)} {arrow}{label} {_mermaid_id(e.target)}")
        if e.levels:
            colour = LEVEL_COLOURS[e.levels[0]]
            styles.append(f"    linkStyle {i} stroke:{colour},stroke-width:2.5px,color:{colour}")
    out += styles
    out.append(f'    subgraph rules["{_mermaid_text(graph.word("rules"))}"]')
    for r in graph.rules:
        text = _mermaid_text(f"{r.level}: {r.answers}")
        out.append(f'        rule_{r.id}["{text}"]:::outcome_{r.level}')
    out.append("    end")
    for name, (fill, stroke) in NODE_STYLE.items():
        out.append(f"    classDef {name} fill:{fill},stroke:{stroke},color:#212121")
    out.append(
        f"    classDef emergency fill:#ffebee,stroke:{LEVEL_COLOURS['EMERGENCY']},color:#212121"
    )
    for lv, colour in LEVEL_COLOURS.items():
        text = "#212121" if lv == "LATER" else "#ffffff"
        out.append(f"    classDef outcome_{lv} fill:{colour},stroke:{colour},color:{text}")
    return "\n".join(out) + "\n"

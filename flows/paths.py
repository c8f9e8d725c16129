"""How long the common paths are: screens and taps from the welcome to the outcome.

For each common outcome (OK for wellbeing, OK with one condition, CLEAR, LATER, STOP,
EMERGENCY) ``path_table`` finds the client's shortest way to a saved request with that
outcome, driving the real engine: answers are harmless defaults (the "none" of a
checklist, "no", a choice's first answer, a sample name and phone) except for at most
two, and the path with the fewest taps wins. The figures are what that client does:

- ``screens``: messages the client acts on (questions, menus, info texts, the summary);
- ``questions``: of those, the questions (``is_question``: counted in "question k of n");
- ``taps``: button presses (a checklist tick and its Done are two);
- ``typed``: answers typed (name, phone).

The /start command that opens the dialogue is not counted.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass

from flows.engine import (
    Begin,
    Choose,
    Confirm,
    Continue,
    Done,
    Input,
    RequestDraft,
    SaveRequest,
    State,
    TextInput,
    Toggle,
    is_question,
    new_state,
    step,
)
from flows.schema import (
    ChecklistNode,
    ChoiceNode,
    ConfirmNode,
    Flow,
    InfoNode,
    Lang,
    Level,
    Node,
    PhoneNode,
    TextNode,
    YesNoNode,
)

__all__ = ["COMMON_PATHS", "PathCount", "format_table", "path_table", "sample_answer"]

#: An answer as the engine's scripted clients give it: option id(s) or typed text.
Answer = str | tuple[str, ...]

#: Answers that may differ from the harmless default on one path.
MAX_CHANGES = 2


@dataclass(frozen=True)
class PathCount:
    """One common path: what it ends in, the answers on it and what it costs the client."""

    name: str
    outcome: Level
    #: Every answer on the path, in order.
    answers: tuple[tuple[str, Answer], ...]
    #: The answers that differ from the harmless defaults (what makes this path).
    changed: tuple[tuple[str, Answer], ...]
    screens: int
    questions: int
    taps: int
    typed: int


def _conditions(draft: RequestDraft) -> list[str]:
    return draft.facts.get("condition", [])


#: The common outcomes: a name and a test on the saved request.
COMMON_PATHS: tuple[tuple[str, Callable[[RequestDraft], bool]], ...] = (
    ("OK, wellbeing", lambda d: d.outcome == "OK" and not _conditions(d)),
    ("OK, one condition", lambda d: d.outcome == "OK" and len(_conditions(d)) == 1),
    ("CLEAR", lambda d: d.outcome == "CLEAR"),
    ("LATER", lambda d: d.outcome == "LATER"),
    ("STOP", lambda d: d.outcome == "STOP"),
    ("EMERGENCY", lambda d: d.outcome == "EMERGENCY"),
)


def sample_answer(node: Node) -> Answer | None:
    """The harmless default answer to a question (None for screens that ask nothing)."""
    if isinstance(node, ChecklistNode):
        exclusive = [o.id for o in node.options if o.exclusive]
        return ((exclusive or [node.options[0].id])[0],)
    if isinstance(node, YesNoNode):
        return "no"
    if isinstance(node, ChoiceNode):
        return node.options[0].id
    if isinstance(node, PhoneNode):
        return "+7 912 345-67-89"
    if isinstance(node, TextNode):
        return "Anna"
    return None


def _choices(node: Node) -> list[Answer]:
    """Every answer worth trying at ``node``: the default first, then one option each."""
    default = sample_answer(node)
    if isinstance(node, ChecklistNode):
        singles: list[Answer] = [(o.id,) for o in node.options]
        return [default, *(a for a in singles if a != default)] if default else singles
    if isinstance(node, ChoiceNode | YesNoNode):
        return [default, *(o.id for o in node.options if o.id != default)] if default else []
    return [default] if default is not None else []


def _inputs(node_id: str, node: Node, state: State, answer: Answer | None) -> list[Input]:
    """The inputs a client sends to give ``answer`` (or to go on from an info or summary)."""
    seq = state.seq
    if isinstance(node, InfoNode):
        return [Continue(node_id, seq)]
    if isinstance(node, ConfirmNode):
        return [Confirm(node_id, seq)]
    if isinstance(node, ChecklistNode):
        assert isinstance(answer, tuple)
        ticks: list[Input] = [Toggle(o, node_id, seq + i) for i, o in enumerate(answer)]
        return [*ticks, Done(node_id, seq + len(answer))]
    if isinstance(node, ChoiceNode | YesNoNode):
        assert isinstance(answer, str)
        return [Choose(answer, node_id, seq)]
    assert isinstance(answer, str)
    return [TextInput(answer)]


@dataclass(frozen=True)
class _Walk:
    state: State
    answers: tuple[tuple[str, Answer], ...] = ()
    changed: tuple[tuple[str, Answer], ...] = ()
    screens: int = 0
    questions: int = 0
    taps: int = 0
    typed: int = 0
    #: Set when the walk has saved a request: it goes no further.
    saved: RequestDraft | None = None


def _go(flow: Flow, walk: _Walk, answer: Answer | None) -> _Walk:
    """Give ``answer`` at the current screen; return the walk after it."""
    node_id = walk.state.node
    node = flow.nodes[node_id]
    state = walk.state
    saved: RequestDraft | None = None
    inputs = _inputs(node_id, node, state, answer)
    for inp in inputs:
        state, replies = step(flow, state, inp)
        saved = next((r.request for r in replies if isinstance(r, SaveRequest)), saved)
    typed = 1 if isinstance(node, TextNode | PhoneNode) else 0
    recorded = () if answer is None else ((node_id, answer),)
    changed = recorded if answer != sample_answer(node) else ()
    return _Walk(
        state=state,
        answers=walk.answers + recorded,
        changed=walk.changed + changed,
        screens=walk.screens + 1,
        questions=walk.questions + (1 if is_question(node) else 0),
        taps=walk.taps + len(inputs) - typed,
        typed=walk.typed + typed,
        saved=saved,
    )


def path_table(flow: Flow, lang: Lang = "en") -> tuple[PathCount, ...]:
    """Return the shortest path (fewest taps) to each common outcome that ``flow`` has.

    A best-first search over the engine's own steps: the cheapest walks are taken
    further first, so the first saved request that passes an outcome's test is the
    cheapest way there (ties: fewer screens, then the order answers are tried in).
    """
    state, _ = step(flow, new_state(flow, lang), Begin())
    order = itertools.count()
    queue: list[tuple[int, int, int, _Walk]] = [(0, 0, next(order), _Walk(state))]
    found: dict[str, PathCount] = {}
    while queue and len(found) < len(COMMON_PATHS):
        _, _, _, walk = heapq.heappop(queue)
        if walk.saved is not None:
            _record(found, walk.saved, walk)
            continue
        node = flow.nodes[walk.state.node]
        choices: list[Answer | None] = list(_choices(node)) or [None]
        for answer in choices:
            changes = len(walk.changed) + (answer != sample_answer(node))
            if changes > MAX_CHANGES:
                continue
            after = _go(flow, walk, answer)
            if after.state == walk.state or (after.state.finished and after.saved is None):
                continue  # refused, or ended without a request (a goodbye)
            heapq.heappush(queue, (after.taps + after.typed, after.screens, next(order), after))
    names = [name for name, _ in COMMON_PATHS]
    return tuple(found[name] for name in names if name in found)


def _record(found: dict[str, PathCount], saved: RequestDraft, walk: _Walk) -> None:
    """Keep ``walk`` as the path of every common outcome it is the first to reach."""
    assert saved.outcome is not None
    for name, test in COMMON_PATHS:
        if name not in found and test(saved):
            found[name] = PathCount(
                name=name,
                outcome=saved.outcome,
                answers=walk.answers,
                changed=walk.changed,
                screens=walk.screens,
                questions=walk.questions,
                taps=walk.taps,
                typed=walk.typed,
            )


def format_table(rows: tuple[PathCount, ...]) -> str:
    """The table as Markdown, one row per path, with the answers that differ from defaults."""
    lines = [
        "| path | screens | questions | taps | typed | answers that lead there |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        chosen = (
            ", ".join(
                f"{node}: {'+'.join(a) if isinstance(a, tuple) else a}" for node, a in r.changed
            )
            or "(all defaults)"
        )
        lines.append(
            f"| {r.name} | {r.screens} | {r.questions} | {r.taps} | {r.typed} | {chosen} |"
        )
    return "\n".join(lines)

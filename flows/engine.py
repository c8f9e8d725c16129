"""The dialogue engine: a pure function from (flow, state, input) to (state, replies).

Theory of operation
-------------------
A dialogue is a walk through a checked ``Flow``. ``State`` is a small frozen
value: the node the client is at, the history of accepted answers (each entry
records the facts it set, so Back undoes exactly those), the checklist ticks in
progress, every red flag reported in this dialogue, and (while the client changes
one answer from the summary) the later answers ``kept`` to be re-applied. Facts are
never stored on their own; they are the union of the history's entries.

Red flags outlive Back and Start over inside one dialogue, so staff see an answer
that was taken back; a dialogue that reached an end node leaves nothing to the next
one (``fresh_start``).

A *question* (``is_question``) is a node that asks something and records the answer
under a summary name: only questions are listed in the summary, counted by the
progress line ("Question k of n") and offered for change. Menus (a choice whose
answers record nothing, such as the welcome) and info texts are screens, not questions.

Changing an answer from the summary goes back to that question with the later
answers kept; after the new answer the engine re-applies every kept answer whose
question is still on the path, asks only the questions the change made necessary,
and returns to the summary.

``step(flow, state, input)`` returns a new state and a tuple of replies. Replies
are data: ``Message`` (text and buttons), ``Alert`` (a short notice, e.g. for a
stale button) and ``SaveRequest`` (the shell must store the request). The engine
does no I/O: the caller owns Telegram, the database, the clock and retries.

Invalid input (an unknown button, free text where a button is expected, a bad
phone number) returns the *same* state with a re-prompt; exceptions are kept for
programmer faults. Every accepted input bumps ``seq``; buttons carry the ``seq``
they were drawn at, so a press on an old keyboard changes nothing.

After every accepted answer the EMERGENCY rules are evaluated: if one fires the
questionnaire stops at once at the flow's ``emergency_node``. Triage nodes
evaluate all rules and record the outcome as the fact ``outcome`` so later
branches can depend on it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field

from flows.catalogue import t
from flows.errors import FlowError, FlowMismatchError, Problem
from flows.policy import POLICY
from flows.schema import (
    LEVELS,
    AllOf,
    AnyOf,
    ChecklistNode,
    ChoiceNode,
    Condition,
    ConfirmNode,
    DefaultRule,
    EndNode,
    FactIs,
    Flow,
    InfoNode,
    Lang,
    Level,
    Node,
    NotOf,
    Option,
    PhoneNode,
    Rule,
    TextNode,
    TriageNode,
    YesNoNode,
    level_rank,
)

__all__ = [
    "Alert",
    "AnswerRecord",
    "Back",
    "Begin",
    "Button",
    "Choose",
    "Confirm",
    "Continue",
    "Done",
    "Entry",
    "FactSet",
    "Input",
    "MESSAGE_BUDGET",
    "Message",
    "Reply",
    "RequestDraft",
    "Restart",
    "Revise",
    "SaveRequest",
    "SetLang",
    "State",
    "TextInput",
    "Toggle",
    "Triage",
    "answers",
    "compile_condition",
    "decode",
    "emergency_fires",
    "evaluate",
    "facts_of",
    "fresh_start",
    "holds",
    "is_question",
    "last_outcome",
    "new_state",
    "next_node",
    "normalize_phone",
    "outcome_blocks",
    "pack",
    "progress",
    "reasons",
    "request_draft",
    "step",
    "summary_lines",
]

#: The facts of a dialogue as (name, value) pairs.
FactSet = frozenset[tuple[str, str]]


# --- inputs -------------------------------------------------------------------


@dataclass(frozen=True)
class Begin:
    """Show the current question again (a new or resumed conversation)."""


@dataclass(frozen=True)
class Choose:
    """Pick ``option`` at a choice or yes/no question."""

    option: str
    node: str | None = None
    seq: int | None = None


@dataclass(frozen=True)
class Toggle:
    """Tick or untick ``option`` in a checklist."""

    option: str
    node: str | None = None
    seq: int | None = None


@dataclass(frozen=True)
class Done:
    """Finish a checklist."""

    node: str | None = None
    seq: int | None = None


@dataclass(frozen=True)
class Continue:
    """Go on from an info text."""

    node: str | None = None
    seq: int | None = None


@dataclass(frozen=True)
class Confirm:
    """Confirm the summary: the request may be saved."""

    node: str | None = None
    seq: int | None = None


@dataclass(frozen=True)
class Revise:
    """At the summary: list answers to change (``target`` None) or go back to ``target``."""

    target: str | None = None
    seq: int | None = None


@dataclass(frozen=True)
class TextInput:
    """Text the client typed (or a phone number from a shared contact)."""

    text: str


@dataclass(frozen=True)
class Back:
    """Undo the last answer."""

    seq: int | None = None


@dataclass(frozen=True)
class Restart:
    """Start the dialogue over (red flags stay on record unless the dialogue had ended)."""

    seq: int | None = None


@dataclass(frozen=True)
class SetLang:
    """Switch the dialogue's language."""

    lang: Lang


Input = (
    Begin
    | Choose
    | Toggle
    | Done
    | Continue
    | Confirm
    | Revise
    | TextInput
    | Back
    | Restart
    | SetLang
)


# --- state --------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Entry(_Frozen):
    """One accepted answer (or, with ``auto``, an outcome the engine recorded)."""

    node: str
    options: tuple[str, ...] = ()
    value: str | None = None
    facts: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    rules: tuple[str, ...] = ()
    auto: bool = False


class State(_Frozen):
    """Where one client is in one dialogue; JSON-serialisable with ``model_dump``."""

    flow: str
    version: str
    lang: Lang
    node: str
    seq: int = 0
    history: tuple[Entry, ...] = ()
    pending: tuple[str, ...] = ()
    #: Every policy fact the client reported in this dialogue, as "name=value"; Back and
    #: Start over do not shrink it; a new dialogue after an ended one starts empty.
    red_flags: tuple[str, ...] = ()
    revising: bool = False
    finished: bool = False
    #: While an answer is changed from the summary: the later answers, to re-apply
    #: where their questions are still on the path (and the old outcome, to compare).
    kept: tuple[Entry, ...] = ()


def new_state(flow: Flow, lang: Lang, *, red_flags: tuple[str, ...] = ()) -> State:
    """Return the state of a dialogue that has not begun (``Begin`` shows the first question)."""
    return State(
        flow=flow.name, version=flow.version, lang=lang, node=flow.start, red_flags=red_flags
    )


def fresh_start(flow: Flow, state: State) -> State:
    """Return a new dialogue on ``flow`` for the client of ``state`` (same language and seq).

    Red flags carry over from a dialogue that has not ended (Start over, a flow update),
    so an answer taken back stays on record; a dialogue that reached an end node (a
    saved request, a goodbye) leaves nothing to the next one.
    """
    flags = () if state.finished else state.red_flags
    return new_state(flow, state.lang, red_flags=flags).model_copy(update={"seq": state.seq})


def facts_of(state: State) -> FactSet:
    """Return the facts the state's answers have set."""
    return frozenset((k, v) for e in state.history for k, vs in e.facts.items() for v in vs)


# --- replies ------------------------------------------------------------------


@dataclass(frozen=True)
class Button:
    """A button: what it says and the callback data it sends back (see ``decode``)."""

    label: str
    data: str


@dataclass(frozen=True)
class Message:
    """A message to show. ``edit`` asks to replace the previous one (checklist ticks)."""

    text: str
    buttons: tuple[tuple[Button, ...], ...] = ()
    node: str | None = None
    kind: str | None = None
    edit: bool = False


@dataclass(frozen=True)
class Alert:
    """A short notice that changes nothing (stale button, first question…)."""

    text: str


@dataclass(frozen=True)
class AnswerRecord:
    """One answer in a request: the question's short name and the answer, in the client's words."""

    node: str
    question: str
    answer: str


@dataclass(frozen=True)
class RequestDraft:
    """Everything a consultation request stores, as plain values."""

    flow: str
    version: str
    lang: Lang
    outcome: Level | None
    rule_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    answers: tuple[AnswerRecord, ...]
    facts: dict[str, list[str]]
    fields: dict[str, str]
    red_flag_changed: bool
    withdrawn_red_flags: tuple[str, ...]


@dataclass(frozen=True)
class SaveRequest:
    """Effect: store this consultation request (with the state, in one transaction)."""

    request: RequestDraft


Reply = Message | Alert | SaveRequest


# --- conditions, rules, transitions -------------------------------------------


def holds(cond: Condition, facts: FactSet) -> bool:
    """Return whether ``cond`` is true of ``facts``."""
    if isinstance(cond, FactIs):
        if cond.in_ is None:
            return any(k == cond.fact for k, _ in facts)
        return any((cond.fact, v) in facts for v in cond.in_)
    if isinstance(cond, AllOf):
        return all(holds(c, facts) for c in cond.all)
    if isinstance(cond, AnyOf):
        return any(holds(c, facts) for c in cond.any)
    assert isinstance(cond, NotOf)
    return not holds(cond.not_, facts)


def compile_condition(cond: Condition) -> Callable[[FactSet], bool]:
    """Return a fast predicate equivalent to ``holds(cond, facts)`` (for the checker)."""
    if isinstance(cond, FactIs):
        if cond.in_ is None:
            key = cond.fact
            return lambda facts: any(k == key for k, _ in facts)
        pairs = frozenset((cond.fact, v) for v in cond.in_)
        return lambda facts: not pairs.isdisjoint(facts)
    if isinstance(cond, AllOf):
        parts = [compile_condition(c) for c in cond.all]
        return lambda facts: all(p(facts) for p in parts)
    if isinstance(cond, AnyOf):
        parts = [compile_condition(c) for c in cond.any]
        return lambda facts: any(p(facts) for p in parts)
    assert isinstance(cond, NotOf)
    inner = compile_condition(cond.not_)
    return lambda facts: not inner(facts)


@dataclass(frozen=True)
class Triage:
    """The outcome of the rules: its level, the rules at that level, and every rule that fired."""

    level: Level
    deciding: tuple[Rule | DefaultRule, ...]
    fired: tuple[Rule | DefaultRule, ...] = field(default=())


def evaluate(flow: Flow, facts: FactSet) -> Triage:
    """Apply the flow's rules to ``facts``: the highest level that fires wins."""
    fired = [r for r in flow.rules if holds(r.when, facts)]
    if not fired:
        return Triage(flow.default_rule.level, (flow.default_rule,), (flow.default_rule,))
    fired.sort(key=lambda r: -level_rank(r.level))
    level = fired[0].level
    return Triage(level, tuple(r for r in fired if r.level == level), tuple(fired))


def emergency_fires(flow: Flow, facts: FactSet) -> tuple[Rule, ...]:
    """Return the EMERGENCY rules that fire on ``facts`` (empty: carry on)."""
    return tuple(r for r in flow.rules if r.level == "EMERGENCY" and holds(r.when, facts))


def next_node(flow: Flow, node_id: str, option: Option | None, facts: FactSet) -> str | None:
    """Return where the dialogue goes after ``node_id`` (None: nowhere, a dead end)."""
    if option is not None and option.goto:
        return option.goto
    node = flow.nodes[node_id]
    if isinstance(node, EndNode) or node.next is None:
        return None
    if isinstance(node.next, str):
        return node.next
    for tr in node.next:
        if tr.when is None or holds(tr.when, facts):
            return tr.to
    return None


# --- callback data ------------------------------------------------------------

_VERBS = {"o", "t", "d", "c", "y", "e", "v", "b", "r"}
_DATA_RE = re.compile(r"^([a-z]):(\d{1,9})(?::([a-z][a-z0-9_]*))?(?::([a-z0-9][a-z0-9_]*))?$")


def _data(verb: str, seq: int, node: str = "", option: str = "") -> str:
    parts = [verb, str(seq)] + [p for p in (node, option) if p]
    return ":".join(parts)


def decode(data: str) -> Input | None:
    """Turn button callback data back into an input (None if it is not ours)."""
    m = _DATA_RE.match(data)
    if m is None or m.group(1) not in _VERBS:
        return None
    verb, seq, node, option = m.group(1), int(m.group(2)), m.group(3), m.group(4)
    if verb in ("o", "t") and node and option:
        return Choose(option, node, seq) if verb == "o" else Toggle(option, node, seq)
    if verb == "d" and node:
        return Done(node, seq)
    if verb == "c" and node:
        return Continue(node, seq)
    if verb == "y" and node:
        return Confirm(node, seq)
    if verb == "e":
        return Revise(None, seq)
    if verb == "v" and option:
        return Revise(option, seq)
    if verb == "b":
        return Back(seq)
    if verb == "r":
        return Restart(seq)
    return None


# --- the step function --------------------------------------------------------


def step(flow: Flow, state: State, inp: Input) -> tuple[State, tuple[Reply, ...]]:
    """Advance the dialogue by one input; see the module docstring."""
    if state.flow != flow.name or state.version != flow.version:
        raise FlowMismatchError(
            f"state runs on {state.flow}@{state.version}, not {flow.name}@{flow.version}"
        )
    lang = state.lang
    if isinstance(inp, Begin):
        return state, _render(flow, state)
    if isinstance(inp, SetLang):
        moved = state.model_copy(update={"lang": inp.lang, "seq": state.seq + 1})
        return moved, _render(flow, moved)
    seq = getattr(inp, "seq", None)
    if seq is not None and seq != state.seq:
        return state, (Alert(t("engine.stale", lang)),)
    if isinstance(inp, Restart):
        fresh = fresh_start(flow, state).model_copy(update={"seq": state.seq + 1})
        return fresh, _render(flow, fresh)
    if state.finished:
        return state, (Alert(t("engine.finished", lang)), *_render(flow, state))
    if isinstance(inp, Back):
        return _back(flow, state)

    node = flow.nodes[state.node]
    node_arg = getattr(inp, "node", None)
    if node_arg is not None and node_arg != state.node:
        return state, (Alert(t("engine.stale", lang)),)

    if isinstance(node, ChoiceNode | YesNoNode):
        return _answer_choice(flow, state, node, inp)
    if isinstance(node, ChecklistNode):
        return _answer_checklist(flow, state, node, inp)
    if isinstance(node, TextNode | PhoneNode):
        return _answer_text(flow, state, node, inp)
    if isinstance(node, InfoNode):
        if isinstance(inp, Continue):
            return _accept(flow, state, Entry(node=state.node), None)
        return _reprompt(flow, state, "engine.use_buttons")
    if isinstance(node, ConfirmNode):
        return _answer_confirm(flow, state, inp)
    raise FlowError([Problem("the dialogue stopped at a node that asks nothing", node=state.node)])


def _reprompt(flow: Flow, state: State, key: str, **fmt: object) -> tuple[State, tuple[Reply, ...]]:
    return state, (Alert(t(key, state.lang, **fmt)), *_render(flow, state))


def _match_label(options: tuple[Option, ...], text: str, lang: Lang) -> Option | None:
    wanted = " ".join(text.split()).casefold()
    for opt in options:
        if " ".join(opt.label.get(lang).split()).casefold() == wanted:
            return opt
    return None


def _answer_choice(
    flow: Flow, state: State, node: ChoiceNode | YesNoNode, inp: Input
) -> tuple[State, tuple[Reply, ...]]:
    option: Option | None = None
    if isinstance(inp, Choose):
        option = next((o for o in node.options if o.id == inp.option), None)
        if option is None:
            return _reprompt(flow, state, "engine.unknown_option")
    elif isinstance(inp, TextInput):
        option = _match_label(node.options, inp.text, state.lang)
    if option is None:
        return _reprompt(flow, state, "engine.use_buttons")
    entry = Entry(node=state.node, options=(option.id,), facts=dict(option.facts))
    return _accept(flow, state, entry, option)


def _answer_checklist(
    flow: Flow, state: State, node: ChecklistNode, inp: Input
) -> tuple[State, tuple[Reply, ...]]:
    if isinstance(inp, Toggle):
        option = next((o for o in node.options if o.id == inp.option), None)
        if option is None:
            return _reprompt(flow, state, "engine.unknown_option")
        pending = _toggle(node, state.pending, option)
        moved = state.model_copy(update={"pending": pending, "seq": state.seq + 1})
        return moved, _render(flow, moved, edit=True)
    if isinstance(inp, Done):
        if not state.pending:
            return _reprompt(flow, state, "engine.tick_one")
        chosen = [o for o in node.options if o.id in state.pending]
        facts: dict[str, tuple[str, ...]] = {}
        for o in chosen:
            for k, vs in o.facts.items():
                facts[k] = tuple(dict.fromkeys(facts.get(k, ()) + vs))
        entry = Entry(node=state.node, options=tuple(o.id for o in chosen), facts=facts)
        return _accept(flow, state, entry, None)
    if isinstance(inp, TextInput):
        option = _match_label(node.options, inp.text, state.lang)
        if option is not None:
            return _answer_checklist(flow, state, node, Toggle(option.id))
    return _reprompt(flow, state, "engine.use_buttons")


def _toggle(node: ChecklistNode, pending: tuple[str, ...], option: Option) -> tuple[str, ...]:
    if option.id in pending:
        return tuple(p for p in pending if p != option.id)
    if option.exclusive:
        return (option.id,)
    exclusive = {o.id for o in node.options if o.exclusive}
    kept = [p for p in pending if p not in exclusive] + [option.id]
    return tuple(o.id for o in node.options if o.id in kept)


_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _answer_text(
    flow: Flow, state: State, node: TextNode | PhoneNode, inp: Input
) -> tuple[State, tuple[Reply, ...]]:
    if not isinstance(inp, TextInput):
        return _reprompt(flow, state, "engine.use_buttons")
    text = " ".join(_CONTROL_RE.sub(" ", inp.text).split())
    if isinstance(node, PhoneNode):
        e164 = normalize_phone(text, node.region)
        if e164 is None:
            return _reprompt(flow, state, "engine.bad_phone")
        return _accept(flow, state, Entry(node=state.node, value=e164), None)
    if not text:
        return _reprompt(flow, state, "engine.empty_text")
    if len(text) > node.max_length:
        return _reprompt(flow, state, "engine.too_long", n=node.max_length)
    return _accept(flow, state, Entry(node=state.node, value=text), None)


def normalize_phone(text: str, region: str) -> str | None:
    """Return ``text`` as an E.164 number if it is a valid phone number, else None."""
    if not text or len(text) > 40:
        return None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _answer_confirm(flow: Flow, state: State, inp: Input) -> tuple[State, tuple[Reply, ...]]:
    if isinstance(inp, Confirm):
        return _accept(flow, state, Entry(node=state.node), None)
    if isinstance(inp, Revise) and inp.target is None:
        if not _answered(flow, state):
            return state, (Alert(t("engine.no_answers", state.lang)),)
        moved = state.model_copy(update={"revising": True, "seq": state.seq + 1})
        return moved, _render(flow, moved)
    if isinstance(inp, Revise) and inp.target is not None:
        if inp.target not in {e.node for e in _answered(flow, state)}:
            return _reprompt(flow, state, "engine.unknown_option")
        return _rewind(flow, state, inp.target)
    return _reprompt(flow, state, "engine.use_buttons")


def _answered(flow: Flow, state: State) -> list[Entry]:
    """The client's own answers to questions that can be changed from the summary."""
    return [
        e
        for e in state.history
        if not e.auto and is_question(flow.nodes[e.node]) and e.node != state.node
    ]


def is_question(node: Node) -> bool:
    """Whether ``node`` is a question: it asks something and records the answer by name.

    Questions have a ``summary`` name and record a typed value, a field or facts; only
    they are listed in the summary, counted in "question k of n" and offered for change.
    A menu (a choice whose answers record nothing) and an info text are not questions.
    """
    if node.summary is None:
        return False
    if isinstance(node, TextNode | PhoneNode):
        return True
    if isinstance(node, ChoiceNode | YesNoNode | ChecklistNode):
        return node.field is not None or any(o.facts for o in node.options)
    return False


def _red_flags(state: State, entry: Entry) -> tuple[str, ...]:
    new = [f"{k}={v}" for k, vs in entry.facts.items() for v in vs if (k, v) in POLICY.facts]
    return tuple(dict.fromkeys(state.red_flags + tuple(new)))


def _accept(
    flow: Flow, state: State, entry: Entry, option: Option | None
) -> tuple[State, tuple[Reply, ...]]:
    """Record an accepted answer and move on to the next question that asks something.

    While answers are kept (an answer changed from the summary), every later question
    that still lies on the path takes its kept answer again without being asked.
    """
    state = state.model_copy(update={"pending": (), "revising": False, "seq": state.seq + 1})
    replies: list[Reply] = []
    for _ in range(len(flow.nodes) + 1):
        state = state.model_copy(
            update={"history": state.history + (entry,), "red_flags": _red_flags(state, entry)}
        )
        facts = facts_of(state)
        fired = emergency_fires(flow, facts)
        if fired:
            stop = Entry(
                node=entry.node,
                facts={"outcome": ("EMERGENCY",)},
                rules=tuple(r.id for r in fired),
                auto=True,
            )
            state = state.model_copy(update={"history": state.history + (stop,)})
            target: str | None = flow.emergency_node
        else:
            target = next_node(flow, entry.node, option, facts)
        state, replay = _advance(flow, state, target, replies)
        if replay is None:
            return state, tuple(replies)
        entry, option = replay
    raise FlowError([Problem("the dialogue loops without asking anything", node=state.node)])


def _kept_answer(flow: Flow, state: State, node_id: str) -> tuple[Entry, Option | None] | None:
    """The kept answer to ``node_id`` (with its option, for a choice), if it can be re-applied."""
    entry = next((e for e in state.kept if e.node == node_id and not e.auto), None)
    if entry is None:
        return None
    node = flow.nodes[node_id]
    if isinstance(node, ChoiceNode | YesNoNode):
        option = next((o for o in node.options if entry.options[:1] == (o.id,)), None)
        return (entry, option) if option is not None else None
    if isinstance(node, ChecklistNode | TextNode | PhoneNode | InfoNode):
        return entry, None
    return None


def _advance(
    flow: Flow, state: State, target: str | None, replies: list[Reply]
) -> tuple[State, tuple[Entry, Option | None] | None]:
    """Walk to ``target`` and on through triage nodes, adding what to show to ``replies``.

    Returns the new state and, when the node reached has a kept answer, that answer (the
    caller records it and goes on); None when the client has something to answer.
    """
    for _ in range(len(flow.nodes) + 1):
        if target is None:
            raise FlowError([Problem("no way forward from here", node=state.node)])
        node = flow.nodes[target]
        if isinstance(node, TriageNode):
            facts = facts_of(state)
            result = evaluate(flow, facts)
            entry = Entry(
                node=target,
                facts={"outcome": (result.level,)},
                rules=tuple(r.id for r in result.fired),
                auto=True,
            )
            old = [i for i, e in enumerate(state.kept) if e.node == target and e.auto]
            before = state.kept[old[0]] if old else None
            rest = state.kept[: old[0]] + state.kept[old[0] + 1 :] if old else state.kept
            state = state.model_copy(
                update={"history": state.history + (entry,), "node": target, "kept": rest}
            )
            if before is None or (before.facts, before.rules) != (entry.facts, entry.rules):
                blocks = outcome_blocks(flow, state, node.text.get(state.lang), result)
                replies.extend(Message(text, (), target, "outcome") for text in pack(blocks))
            target = next_node(flow, target, None, facts_of(state))
            continue
        state = state.model_copy(update={"node": target, "pending": (), "revising": False})
        if isinstance(node, EndNode):
            state = state.model_copy(update={"finished": True, "kept": ()})
            replies.extend(_render(flow, state))
            if node.save:
                replies.append(SaveRequest(request_draft(flow, state)))
            return state, None
        if isinstance(node, ConfirmNode):
            state = state.model_copy(update={"kept": ()})
        kept = _kept_answer(flow, state, target)
        if kept is not None:
            i = state.kept.index(kept[0])
            state = state.model_copy(update={"kept": state.kept[:i] + state.kept[i + 1 :]})
            return state, kept
        replies.extend(_render(flow, state))
        return state, None
    raise FlowError([Problem("the dialogue loops without asking anything", node=state.node)])


def _back(flow: Flow, state: State) -> tuple[State, tuple[Reply, ...]]:
    if state.revising:
        moved = state.model_copy(update={"revising": False, "seq": state.seq + 1})
        return moved, _render(flow, moved)
    history = list(state.history)
    while history and history[-1].auto:
        history.pop()
    if not history:
        return state, (Alert(t("engine.first_question", state.lang)),)
    last = history.pop()
    return _restore(flow, state, history, last)


def _rewind(flow: Flow, state: State, target: str) -> tuple[State, tuple[Reply, ...]]:
    """Go back to ``target`` from the summary, keeping the answers after it (see ``kept``)."""
    history = list(state.history)
    later: list[Entry] = []
    while history:
        last = history.pop()
        if last.node == target and not last.auto:
            return _restore(flow, state, history, last, kept=tuple(reversed(later)))
        later.append(last)
    return _reprompt(flow, state, "engine.unknown_option")  # pragma: no cover - guarded by caller


def _restore(
    flow: Flow,
    state: State,
    history: list[Entry],
    undone: Entry,
    kept: tuple[Entry, ...] | None = None,
) -> tuple[State, tuple[Reply, ...]]:
    node = flow.nodes[undone.node]
    pending = undone.options if isinstance(node, ChecklistNode) else ()
    moved = state.model_copy(
        update={
            "history": tuple(history),
            "node": undone.node,
            "pending": pending,
            "revising": False,
            "seq": state.seq + 1,
            "kept": state.kept if kept is None else kept,
        }
    )
    return moved, _render(flow, moved)


# --- rendering ----------------------------------------------------------------


def _nav(state: State, *, back: bool = True) -> tuple[Button, ...]:
    row = []
    if back and any(not e.auto for e in state.history):
        row.append(Button(t("engine.back", state.lang), _data("b", state.seq)))
    row.append(Button(t("engine.restart", state.lang), _data("r", state.seq)))
    return tuple(row)


def _render(flow: Flow, state: State, *, edit: bool = False) -> tuple[Reply, ...]:
    """Draw the current question (or the end text) with its buttons."""
    lang = state.lang
    node = flow.nodes[state.node]
    text = node.text.get(lang)
    seq = state.seq
    rows: list[tuple[Button, ...]] = []
    if isinstance(node, EndNode):
        return (
            Message(
                text, ((Button(t("engine.restart", lang), _data("r", seq)),),), state.node, "end"
            ),
        )
    if is_question(node):
        k, n = progress(flow, state)
        text = f"<i>{t('engine.progress', lang, k=k, n=n)}</i>\n\n{text}"
    if isinstance(node, ChoiceNode | YesNoNode):
        rows = [
            (Button(o.label.get(lang), _data("o", seq, state.node, o.id)),) for o in node.options
        ]
    elif isinstance(node, ChecklistNode):
        for o in node.options:
            mark = "✅ " if o.id in state.pending else "▫️ "
            rows.append((Button(mark + o.label.get(lang), _data("t", seq, state.node, o.id)),))
        rows.append((Button(t("engine.done", lang), _data("d", seq, state.node)),))
    elif isinstance(node, InfoNode):
        rows.append((Button(t("engine.continue", lang), _data("c", seq, state.node)),))
    elif isinstance(node, ConfirmNode):
        if state.revising:
            text = t("engine.revise_prompt", lang)
            for e in _answered(flow, state):
                label = _question_name(flow, e.node, lang)
                rows.append((Button(label, _data("v", seq, state.node, e.node)),))
        else:
            rows.append((Button(t("engine.confirm", lang), _data("y", seq, state.node)),))
            rows.append((Button(t("engine.revise", lang), _data("e", seq, state.node)),))
            rows.append(_nav(state))
            *before, last = pack(["\n".join(summary_lines(flow, state)), text])
            head = tuple(Message(b, (), state.node, "summary") for b in before)
            return (*head, Message(last, tuple(rows), state.node, node.kind, edit))
    rows.append(_nav(state))
    return (Message(text, tuple(rows), state.node, node.kind, edit),)


def progress(flow: Flow, state: State) -> tuple[int, int]:
    """Return (k, n): the current question is question k of the n on the client's path.

    The path is the questions answered so far and those ahead as the flow predicts them
    from the answers given: an unanswered choice takes its first answer, other branches
    the first transition that holds without the unknown answers, a triage the outcome of
    the facts so far, and a question whose answer is kept (see ``kept``) that answer. So
    n changes only when an answer takes the path somewhere other than predicted.
    """
    done = sum(1 for e in state.history if not e.auto and is_question(flow.nodes[e.node]))
    facts = facts_of(state)
    ahead = 0
    node_id: str | None = state.node
    for _ in range(len(flow.nodes)):
        if node_id is None:
            break
        node = flow.nodes[node_id]
        if isinstance(node, EndNode | ConfirmNode):
            break
        if is_question(node):
            ahead += 1
        if isinstance(node, TriageNode):
            facts = facts | {("outcome", evaluate(flow, facts).level)}
        option = node.options[0] if isinstance(node, ChoiceNode | YesNoNode) else None
        kept = _kept_answer(flow, state, node_id) if node_id != state.node else None
        if kept is not None:
            option = kept[1]
            facts = facts | {(k, v) for k, vs in kept[0].facts.items() for v in vs}
        node_id = next_node(flow, node_id, option, facts)
    return done + 1, done + max(ahead, 1)


def _question_name(flow: Flow, node_id: str, lang: Lang) -> str:
    node = flow.nodes[node_id]
    if node.summary is not None:
        return node.summary.get(lang)
    first = html.unescape(re.sub(r"<[^>]+>", "", node.text.get(lang))).strip().splitlines()[0]
    return first[:60]


def _answer_text_of(flow: Flow, entry: Entry, lang: Lang) -> str:
    node = flow.nodes[entry.node]
    if isinstance(node, ChoiceNode | YesNoNode | ChecklistNode):
        labels = {o.id: o.label.get(lang) for o in node.options}
        return ", ".join(labels[o] for o in entry.options if o in labels)
    if isinstance(node, PhoneNode) and entry.value:
        number = phonenumbers.parse(entry.value, None)
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    return entry.value or ""


def answers(flow: Flow, state: State) -> tuple[AnswerRecord, ...]:
    """Return the client's answers in order, in the client's language (unescaped text)."""
    out = []
    for e in state.history:
        if e.auto or not is_question(flow.nodes[e.node]):
            continue
        question = _question_name(flow, e.node, state.lang)
        out.append(AnswerRecord(e.node, question, _answer_text_of(flow, e, state.lang)))
    return tuple(out)


def last_outcome(state: State) -> Entry | None:
    """Return the most recent outcome entry of the dialogue, if any."""
    return next((e for e in reversed(state.history) if "outcome" in e.facts), None)


def summary_lines(flow: Flow, state: State) -> list[str]:
    """Return the answers and the outcome, as shown before the client confirms."""
    lang = state.lang
    lines = [t("engine.summary_title", lang)]
    for a in answers(flow, state):
        lines.append(f"• {html.escape(a.question)}: <b>{html.escape(a.answer)}</b>")
    outcome = last_outcome(state)
    if outcome is not None:
        title = flow.outcomes[_level(outcome.facts["outcome"][0])].title.get(lang)
        lines.append(f"{t('engine.result', lang)}: <b>{title}</b>")
    return lines


def reasons(flow: Flow, state: State, result: Triage) -> tuple[str, ...]:
    """Why the outcome is what it is: each deciding rule's reason once, in plain text.

    The reason names the answer in its own words; the client's answer is not echoed.
    """
    return tuple(dict.fromkeys(rule.reason.get(state.lang) for rule in result.deciding))


def also_reasons(flow: Flow, state: State, result: Triage) -> tuple[str, ...]:
    """The reasons of protective rules that fired below the outcome's level (a recent
    fracture under "not now": once the fever has passed, a doctor must still clear it),
    strictest first, without the deciding ones; none for OK and CLEAR."""
    rank = level_rank(result.level)
    lower = [
        r
        for r in result.fired
        if level_rank("CLEAR") <= level_rank(r.level) < rank and r.level != result.level
    ]
    lower.sort(key=lambda r: -level_rank(r.level))
    deciding = set(reasons(flow, state, result))
    found = (r.reason.get(state.lang) for r in lower)
    return tuple(r for r in dict.fromkeys(found) if r not in deciding)


#: Longest text the engine puts in one message (Telegram allows 4096 characters).
MESSAGE_BUDGET = 4000


def pack(blocks: list[str], limit: int = MESSAGE_BUDGET) -> list[str]:
    """Join text blocks with blank lines into as few messages as fit within ``limit``."""
    out: list[str] = []
    for block in blocks:
        if out and len(out[-1]) + 2 + len(block) <= limit:
            out[-1] += "\n\n" + block
        else:
            out.append(block)
    return out


def outcome_blocks(flow: Flow, state: State, intro: str, result: Triage) -> list[str]:
    """The outcome as blocks: headline, each suggestion, each reason (each fits a message)."""
    lang = state.lang
    texts = flow.outcomes[result.level]
    blocks = [intro, f"<b>{texts.title.get(lang)}</b>\n{texts.text.get(lang)}"]
    if result.level == "OK":
        blocks.append(t("engine.suggest", lang))
        rules = [r for r in result.deciding if isinstance(r, Rule)]
        blocks += [f"• {a}" for a in merged_advice([r.advice.get(lang) for r in rules if r.advice])]
        courses = [r.course_sessions for r in rules if r.course_sessions]
        if courses:
            n = max(courses)
            key = "engine.course" if len(courses) == 1 else "engine.course_longest"
            blocks.append(t(key, lang, n=n, sessions=_sessions(n, lang)))
    blocks.append(t("engine.why", lang))
    blocks += [f"• {html.escape(r)}" for r in reasons(flow, state, result)]
    also = also_reasons(flow, state, result)
    if also:
        blocks.append(
            t("engine.also_clear" if result.level == "LATER" else "engine.also_tell", lang)
        )
        blocks += [f"• {html.escape(r)}" for r in also]
    return blocks


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def merged_advice(advice: list[str]) -> list[str]:
    """Several suggestions as one reads them: every sentence once, in the order first given."""
    seen: set[str] = set()
    out: list[str] = []
    for text in advice:
        kept = []
        for sentence in _SENTENCE_END.split(text.strip()):
            key = " ".join(re.sub(r"<[^>]+>", "", sentence).split()).casefold()
            if key and key not in seen:
                seen.add(key)
                kept.append(sentence)
        if kept:
            out.append(" ".join(kept))
    return out


def _sessions(n: int, lang: Lang) -> str:
    """'sessions' agreeing with ``n`` (Russian has three forms)."""
    if n % 10 == 1 and n % 100 != 11 and (lang == "ru" or n == 1):
        return t("engine.sessions_one", lang)
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return t("engine.sessions_few", lang)
    return t("engine.sessions_many", lang)


def _level(raw: str) -> Level:
    return next(lv for lv in LEVELS if lv == raw)


def request_draft(flow: Flow, state: State) -> RequestDraft:
    """Build the consultation request from a finished dialogue's state."""
    facts = facts_of(state)
    outcome = last_outcome(state)
    level: Level | None = None
    rule_ids: tuple[str, ...] = ()
    why: tuple[str, ...] = ()
    if outcome is not None:
        level = _level(outcome.facts["outcome"][0])
        rule_ids = outcome.rules
        by_id: dict[str, Rule | DefaultRule] = {r.id: r for r in flow.rules}
        by_id[flow.default_rule.id] = flow.default_rule
        fired = tuple(by_id[i] for i in rule_ids if i in by_id)
        deciding = tuple(r for r in fired if r.level == level)
        triage = Triage(level, deciding, fired)
        # the staff who call back see the rest too (what a doctor must clear after "not now")
        why = reasons(flow, state, triage) + also_reasons(flow, state, triage)
    fields: dict[str, str] = {}
    for e in state.history:
        node = flow.nodes[e.node]
        name = getattr(node, "field", None)
        if name and not e.auto:
            fields[name] = e.value if e.value is not None else ",".join(e.options)
    current = {f"{k}={v}" for k, v in facts}
    withdrawn = tuple(f for f in state.red_flags if f not in current)
    grouped: dict[str, list[str]] = {}
    for k, v in sorted(facts):
        grouped.setdefault(k, []).append(v)
    return RequestDraft(
        flow=flow.name,
        version=flow.version,
        lang=state.lang,
        outcome=level,
        rule_ids=rule_ids,
        reasons=why,
        answers=answers(flow, state),
        facts=grouped,
        fields=fields,
        red_flag_changed=bool(withdrawn),
        withdrawn_red_flags=withdrawn,
    )

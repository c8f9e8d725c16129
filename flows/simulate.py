"""Run a scripted dialogue on a flow, so an admin can try a change before publishing it.

A script is YAML text: the language, an answer per question id (a checklist takes a
list, text and phone questions a string) and, optionally, explicit ``steps``::

    lang: en
    answers:
      welcome: start
      conditions: [osteochondrosis]
      phone: "+7 912 345-67-89"
    defaults: true            # questions without an answer get a harmless one
    steps:                    # optional: exact inputs first, e.g. to try Back
      - choose: start
      - tick: [none]
      - back
      - text: "Anna"

Without ``steps`` the walk is automatic: each question gets its answer, info texts
are continued and the summary confirmed. With ``steps`` those run first; the walk
then goes on automatically only if the script has answers or ``defaults: true``.
Everything goes through the public engine (``new_state`` and ``step``), so the
transcript is what a client would see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import phonenumbers
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from flows.engine import (
    Alert,
    Back,
    Begin,
    Button,
    Choose,
    Confirm,
    Continue,
    Done,
    Input,
    Message,
    Reply,
    RequestDraft,
    Restart,
    Revise,
    SaveRequest,
    State,
    TextInput,
    Toggle,
    decode,
    last_outcome,
    new_state,
    step,
)
from flows.markup import plain_text
from flows.schema import (
    LANGS,
    LEVELS,
    ChecklistNode,
    ChoiceNode,
    Flow,
    Lang,
    Level,
    Node,
    PhoneNode,
    TextNode,
    YesNoNode,
)

__all__ = [
    "Answer",
    "Script",
    "ScriptAnswer",
    "ScriptError",
    "ScriptStep",
    "Transcript",
    "load_script",
    "simulate",
]

Answer = str | tuple[str, ...]
Verb = Literal[
    "choose", "tick", "toggle", "done", "continue", "confirm", "text", "back", "restart", "revise"
]  # fmt: skip

_VERBS: tuple[Verb, ...] = (
    "choose", "tick", "toggle", "done", "continue", "confirm", "text", "back", "restart", "revise"
)  # fmt: skip
#: Verbs that need no value: a step may be written as the bare word (``- back``).
_BARE: tuple[Verb, ...] = ("done", "continue", "confirm", "back", "restart", "revise")
_KEYS = ("lang", "answers", "defaults", "steps")


class ScriptError(Exception):
    """A simulation script is malformed or does not fit the flow; the message says where."""


@dataclass(frozen=True)
class ScriptAnswer:
    """The answer a script gives to one question."""

    question: str
    value: Answer
    line: int | None = None


@dataclass(frozen=True)
class ScriptStep:
    """One explicit input: ``verb`` with its option id(s) or text (None for bare verbs)."""

    verb: Verb
    value: Answer | None = None
    line: int | None = None

    def __str__(self) -> str:
        if self.value is None:
            return self.verb
        value = ", ".join(self.value) if isinstance(self.value, tuple) else self.value
        return f"{self.verb}: {value}"


@dataclass(frozen=True)
class Script:
    """A parsed script: language, answers by question, defaults and explicit steps."""

    lang: Lang = "en"
    answers: tuple[ScriptAnswer, ...] = ()
    defaults: bool = False
    steps: tuple[ScriptStep, ...] = ()
    origin: str = "script"

    def answer(self, question: str) -> ScriptAnswer | None:
        """Return the script's answer to ``question``, if it gives one."""
        return next((a for a in self.answers if a.question == question), None)


@dataclass(frozen=True)
class Transcript:
    """What happened: the conversation as plain lines and what it came to."""

    #: Bot messages as plain text, client inputs as "> …", notices as "(!) …".
    lines: tuple[str, ...]
    outcome: Level | None
    outcome_title: str | None
    #: Every rule that fired at the last outcome (the EMERGENCY rules, or the triage's).
    rules: tuple[str, ...]
    request: RequestDraft | None
    finished: bool
    #: The question the dialogue is at (or ended on).
    node: str
    #: Why the simulation stopped before the dialogue ended, if it did.
    stopped: str | None = None

    def render(self) -> str:
        """Return the transcript followed by a summary block."""
        out = ["\n\n".join(self.lines), "", "=== Summary ==="]
        if self.outcome is not None:
            title = f" ({self.outcome_title})" if self.outcome_title else ""
            out.append(f"Outcome: {self.outcome}{title}")
        else:
            out.append("Outcome: none (the dialogue did not reach one)")
        out.append(f"Rules fired: {', '.join(self.rules) if self.rules else 'none'}")
        if self.request is not None:
            out.append("Request: would be saved")
            fields = self.request.fields
            for name in ("name", "phone"):
                out.append(f"  {name}: {fields.get(name, '(not given)')}")
            for name, value in fields.items():
                if name not in ("name", "phone"):
                    out.append(f"  {name}: {value}")
            if self.request.withdrawn_red_flags:
                out.append("  red flags withdrawn: " + ", ".join(self.request.withdrawn_red_flags))
        else:
            out.append("Request: none would be saved")
        out.append(f"Finished: {'yes' if self.finished else 'no'}, at question '{self.node}'")
        if self.stopped:
            out.append(f"Stopped: {self.stopped}")
        return "\n".join(out) + "\n"


# --- reading a script ---------------------------------------------------------


def _line(data: Any, key: Any) -> int | None:
    if isinstance(data, CommentedMap) and key in data:
        return int(data.lc.key(key)[0]) + 1
    if isinstance(data, CommentedSeq) and isinstance(key, int) and key < len(data):
        return int(data.lc.item(key)[0]) + 1
    return None


def _where(origin: str, line: int | None) -> str:
    return f"{origin}, line {line}" if line is not None else origin


def _scalar(value: Any) -> str | None:
    """A YAML scalar as a string (numbers too); None for lists, maps and nulls."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | int | float):
        return str(value)
    return None


def load_script(text: str, *, origin: str = "script") -> Script:
    """Parse script YAML ``text``; ``origin`` names it in errors (raises ScriptError)."""
    yaml = YAML(typ="rt")
    try:
        data = yaml.load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScriptError(f"{_where(origin, line)}: this is not valid YAML ({problem})") from exc
    if data is None:
        data = CommentedMap()
    if not isinstance(data, dict):
        raise ScriptError(f"{origin}: a script is a mapping with lang, answers, defaults, steps")
    for key in data:
        if key not in _KEYS:
            raise ScriptError(
                f"{_where(origin, _line(data, key))}: unknown key '{key}' "
                f"(check the spelling; a script has {', '.join(_KEYS)})"
            )
    lang = data.get("lang", "en")
    if lang not in LANGS:
        raise ScriptError(
            f"{_where(origin, _line(data, 'lang'))}: lang must be one of {', '.join(LANGS)}"
        )
    defaults = data.get("defaults", False)
    if not isinstance(defaults, bool):
        raise ScriptError(f"{_where(origin, _line(data, 'defaults'))}: defaults is true or false")
    return Script(
        lang=next(x for x in LANGS if x == lang),
        answers=_answers(data, origin),
        defaults=defaults,
        steps=_steps(data, origin),
        origin=origin,
    )


def _answers(data: Any, origin: str) -> tuple[ScriptAnswer, ...]:
    raw = data.get("answers")
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        where = _where(origin, _line(data, "answers"))
        raise ScriptError(f"{where}: answers is a mapping: question id, then its answer")
    out = []
    for question, value in raw.items():
        line = _line(raw, question)
        where = _where(origin, line)
        if not isinstance(question, str):
            raise ScriptError(f"{where}: '{question}' is not a question id")
        if isinstance(value, list):
            items = [_scalar(v) for v in value]
            if not items or any(i is None for i in items):
                raise ScriptError(f"{where}: answers.{question}: a list of answer ids, e.g. [none]")
            out.append(ScriptAnswer(question, tuple(i for i in items if i is not None), line))
            continue
        single = _scalar(value)
        if single is None:
            raise ScriptError(
                f"{where}: answers.{question}: give an answer id, a list of ids or a text"
            )
        out.append(ScriptAnswer(question, single, line))
    return tuple(out)


def _steps(data: Any, origin: str) -> tuple[ScriptStep, ...]:
    raw = data.get("steps")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        where = _where(origin, _line(data, "steps"))
        raise ScriptError(f"{where}: steps is a list, e.g. [{{choose: start}}, back]")
    out = []
    for k, item in enumerate(raw):
        line = _line(raw, k)
        where = f"{_where(origin, line)}: step {k + 1}"
        if isinstance(item, str):
            verb = next((v for v in _BARE if v == item), None)
            if verb is None:
                raise ScriptError(f"{where}: '{item}' needs a value or is unknown; {_verbs()}")
            out.append(ScriptStep(verb, None, line))
            continue
        if not isinstance(item, dict) or len(item) != 1:
            raise ScriptError(f"{where}: write each step as one verb, e.g. choose: start")
        [(key, value)] = item.items()
        verb = next((v for v in _VERBS if v == key), None)
        if verb is None:
            raise ScriptError(f"{where}: unknown step '{key}'; {_verbs()}")
        out.append(ScriptStep(verb, _step_value(verb, value, where), line))
    return tuple(out)


def _verbs() -> str:
    return "use one of " + ", ".join(_VERBS)


def _step_value(verb: Verb, value: Any, where: str) -> Answer | None:
    if verb in ("done", "continue", "confirm", "back", "restart"):
        return None
    if verb == "revise" and (value is None or value is True):
        return None
    if verb == "tick":
        items = value if isinstance(value, list) else [value]
        ids = [_scalar(v) for v in items]
        if not ids or any(i is None for i in ids):
            raise ScriptError(f"{where}: tick takes an answer id or a list of ids")
        return tuple(i for i in ids if i is not None)
    single = _scalar(value)
    if single is None:
        raise ScriptError(f"{where}: {verb} takes one value")
    return single


# --- checking a script against the flow ---------------------------------------

_ASKS = ChoiceNode | YesNoNode | ChecklistNode


def _options_text(node: Node) -> str:
    if isinstance(node, _ASKS):
        return ", ".join(o.id for o in node.options)
    return ""


def _describe(node_id: str, node: Node) -> str:
    options = _options_text(node)
    return f"'{node_id}' ({node.kind}" + (f", options: {options})" if options else ")")


def _check(flow: Flow, script: Script) -> None:
    for a in script.answers:
        where = _where(script.origin, a.line)
        node = flow.nodes.get(a.question)
        if node is None:
            names = ", ".join(flow.nodes)
            raise ScriptError(f"{where}: unknown question '{a.question}' (the flow has: {names})")
        if isinstance(node, ChecklistNode):
            ids = a.value if isinstance(a.value, tuple) else (a.value,)
        elif isinstance(node, ChoiceNode | YesNoNode):
            if isinstance(a.value, tuple):
                raise ScriptError(
                    f"{where}: question {_describe(a.question, node)} takes one answer, not a list"
                )
            ids = (a.value,)
        elif isinstance(node, TextNode | PhoneNode):
            if isinstance(a.value, tuple):
                raise ScriptError(f"{where}: question '{a.question}' takes a text, not a list")
            continue
        else:
            raise ScriptError(
                f"{where}: '{a.question}' is a {node.kind} node: it takes no answer "
                "(info texts are continued and the summary confirmed by themselves)"
            )
        known = {o.id for o in node.options}
        for i in ids:
            if i not in known:
                raise ScriptError(
                    f"{where}: unknown answer '{i}' for question {_describe(a.question, node)}"
                )


# --- running it ---------------------------------------------------------------


class _Run:
    """The engine driven by a script; collects the transcript as it goes."""

    def __init__(self, flow: Flow, script: Script) -> None:
        self.flow = flow
        self.script = script
        self.state: State = new_state(flow, script.lang)
        self.lines: list[str] = []
        self.buttons: list[Button] = []
        self.request: RequestDraft | None = None
        self.alerts: list[str] = []
        self.send(Begin(), None)

    @property
    def node(self) -> Node:
        return self.flow.nodes[self.state.node]

    def send(self, inp: Input, said: str | None) -> None:
        if said is not None:
            self.lines.append(f"> {said}")
        self.state, replies = step(self.flow, self.state, inp)
        self._record(replies)

    def _record(self, replies: tuple[Reply, ...]) -> None:
        self.alerts = []
        for r in replies:
            if isinstance(r, Alert):
                self.alerts.append(r.text)
                self.lines.append(f"(!) {plain_text(r.text)}")
            elif isinstance(r, SaveRequest):
                self.request = r.request
                self.lines.append("(a consultation request is saved here)")
            elif isinstance(r, Message):
                self.buttons = [b for row in r.buttons for b in row] or self.buttons
                if r.edit:
                    continue
                text = plain_text(r.text).strip()
                answers = [b.label for row in r.buttons for b in row if not _nav(b)]
                if answers:
                    text += "\n" + "  ".join(f"[{x}]" for x in answers)
                self.lines.append(text)

    def label(self, option: str) -> str:
        node = self.node
        if isinstance(node, _ASKS):
            return next(
                (o.label.get(self.state.lang) for o in node.options if o.id == option), option
            )
        return option

    def button(self, kind: type, fallback: str) -> str:
        for b in self.buttons:
            if isinstance(decode(b.data), kind):
                return b.label
        return fallback

    # -- one input of each kind, with what the client would be seen doing

    def choose(self, option: str) -> None:
        self.send(Choose(option, self.state.node, self.state.seq), self.label(option))

    def toggle(self, option: str) -> None:
        self.send(Toggle(option, self.state.node, self.state.seq), f"tick {self.label(option)}")

    def done(self) -> None:
        self.send(Done(self.state.node, self.state.seq), self.button(Done, "Done"))

    def tick(self, options: tuple[str, ...], note: str = "") -> None:
        """Leave exactly ``options`` ticked, then press Done (one transcript line)."""
        node = self.state.node
        untick = [o for o in self.state.pending if o not in options]
        for o in untick + [o for o in options if o not in self.state.pending]:
            self.send(Toggle(o, node, self.state.seq), None)
        # what is ticked now (an exclusive answer such as "none" unticks the others)
        labels = ", ".join(self.label(o) for o in self.state.pending)
        self.send(Done(node, self.state.seq), f"{labels} + {self.button(Done, 'Done')}{note}")

    def text(self, value: str, note: str = "") -> None:
        self.send(TextInput(value), value + note)

    def cont(self) -> None:
        self.send(Continue(self.state.node, self.state.seq), self.button(Continue, "Continue"))

    def confirm(self) -> None:
        self.send(Confirm(self.state.node, self.state.seq), self.button(Confirm, "Confirm"))

    def back(self) -> None:
        self.send(Back(self.state.seq), self.button(Back, "Back"))

    def restart(self) -> None:
        self.send(Restart(self.state.seq), self.button(Restart, "Start over"))

    def revise(self, target: str | None) -> None:
        self.send(Revise(target, self.state.seq), self.button(Revise, "Change an answer"))


def _nav(button: Button) -> bool:
    return isinstance(decode(button.data), Back | Restart)


def _default(node: Node) -> Answer | None:
    """A harmless answer for a question the script does not answer (``defaults: true``)."""
    if isinstance(node, ChecklistNode):
        exclusive = [o.id for o in node.options if o.exclusive]
        return (exclusive[0],) if exclusive else (node.options[0].id,)
    if isinstance(node, YesNoNode):
        return "no"
    if isinstance(node, ChoiceNode):
        return node.options[0].id
    if isinstance(node, PhoneNode):
        number = phonenumbers.example_number(node.region)
        if number is None:  # pragma: no cover - every region the schema allows has one
            return "+7 912 345-67-89"
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    if isinstance(node, TextNode):
        return "Test"
    return None


def simulate(flow: Flow, script: Script) -> Transcript:
    """Run ``script`` on ``flow``; raise ScriptError if the script does not fit the flow."""
    _check(flow, script)
    run = _Run(flow, script)
    stopped: str | None = None
    for k, s in enumerate(script.steps):
        _apply(run, s, k)
    if not script.steps or script.answers or script.defaults:
        stopped = _walk(run)
    return _transcript(run, stopped)


def _apply(run: _Run, s: ScriptStep, k: int) -> None:
    node_id, node = run.state.node, run.node
    where = f"{_where(run.script.origin, s.line)}: step {k + 1} ({s})"

    def refuse(why: str) -> ScriptError:
        return ScriptError(
            f"{where}: the dialogue is at question {_describe(node_id, node)}; {why}"
        )

    values = s.value if isinstance(s.value, tuple) else (s.value,) if s.value is not None else ()
    if s.verb in ("choose", "tick", "toggle"):
        wanted = ChoiceNode | YesNoNode if s.verb == "choose" else ChecklistNode
        if not isinstance(node, wanted):
            needed = "a choice or yes/no question" if s.verb == "choose" else "a checklist"
            raise refuse(f"{s.verb} needs {needed}")
        assert isinstance(node, _ASKS)
        known = {o.id for o in node.options}
        for v in values:
            if v not in known:
                raise refuse(f"it has no answer '{v}'")
    if s.verb == "choose":
        assert isinstance(s.value, str)
        run.choose(s.value)
    elif s.verb == "tick":
        assert isinstance(s.value, tuple)
        run.tick(s.value)
    elif s.verb == "toggle":
        assert isinstance(s.value, str)
        run.toggle(s.value)
    elif s.verb == "text":
        assert isinstance(s.value, str)
        run.text(s.value)
    elif s.verb == "done":
        if not isinstance(node, ChecklistNode):
            raise refuse("done needs a checklist")
        run.done()
    elif s.verb == "continue":
        if node.kind != "info":
            raise refuse("continue needs an info text")
        run.cont()
    elif s.verb == "confirm":
        if node.kind != "confirm":
            raise refuse("confirm needs the summary (a confirm node)")
        run.confirm()
    elif s.verb == "back":
        run.back()
    elif s.verb == "restart":
        run.restart()
    else:
        if node.kind != "confirm":
            raise refuse("revise needs the summary (a confirm node)")
        run.revise(s.value if isinstance(s.value, str) else None)


def _walk(run: _Run) -> str | None:
    """Answer question after question from the script; return why it stopped early, if it did."""
    flow, script = run.flow, run.script
    for _ in range(4 * len(flow.nodes) + 8):
        if run.state.finished:
            return None
        node_id, node = run.state.node, run.node
        before = run.state
        if node.kind == "info":
            run.cont()
        elif node.kind == "confirm":
            run.confirm()
        else:
            given = script.answer(node_id)
            value = given.value if given is not None else None
            note = ""
            if value is None and script.defaults:
                value, note = _default(node), " (default)"
            if value is None:
                return (
                    f"no answer for question {_describe(node_id, node)}: add it under "
                    "answers, or set defaults: true"
                )
            if isinstance(node, ChecklistNode):
                run.tick(value if isinstance(value, tuple) else (value,), note)
            elif isinstance(node, ChoiceNode | YesNoNode):
                assert isinstance(value, str)
                run.send(Choose(value, node_id, run.state.seq), run.label(value) + note)
            else:
                assert isinstance(value, str)
                run.text(value, note)
        if run.state.node == before.node and run.state.history == before.history:
            why = "; ".join(plain_text(a) for a in run.alerts) or "no reason given"
            return f"the answer at question '{node_id}' was refused: {why}"
    return "the dialogue did not finish (is there a loop?)"  # pragma: no cover - flows are acyclic


def _level(raw: str) -> Level | None:
    return next((lv for lv in LEVELS if lv == raw), None)


def _transcript(run: _Run, stopped: str | None) -> Transcript:
    outcome = last_outcome(run.state)
    level = _level(outcome.facts["outcome"][0]) if outcome is not None else None
    title = run.flow.outcomes[level].title.get(run.state.lang) if level is not None else None
    return Transcript(
        lines=tuple(run.lines),
        outcome=level,
        outcome_title=plain_text(title) if title else None,
        rules=outcome.rules if outcome is not None else (),
        request=run.request,
        finished=run.state.finished,
        node=run.state.node,
        stopped=stopped,
    )

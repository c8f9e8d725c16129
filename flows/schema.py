"""The flow file format: pydantic models for a dialogue an admin writes in YAML.

Every model is frozen and forbids unknown keys, so a typo in a flow file is an
error with a place, not a silently ignored line.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "LANGS",
    "LEVELS",
    "AllOf",
    "AnyOf",
    "Atom",
    "ChecklistNode",
    "ChoiceNode",
    "Condition",
    "ConfirmNode",
    "AdminRule",
    "EndNode",
    "FileNode",
    "FlowFile",
    "LOCKED_KEYS",
    "SOURCE_DOCUMENT",
    "ScreeningNode",
    "FactIs",
    "Flow",
    "InfoNode",
    "Lang",
    "Level",
    "Node",
    "NotOf",
    "Option",
    "OutcomeText",
    "PhoneNode",
    "Rule",
    "Text",
    "TextNode",
    "Transition",
    "TriageNode",
    "YesNoNode",
    "atoms_of",
    "level_rank",
]

Lang = Literal["ru", "en"]
LANGS: tuple[Lang, ...] = ("ru", "en")

Level = Literal["EMERGENCY", "STOP", "LATER", "CLEAR", "OK"]
#: Highest priority first: when several rules fire, the first level here wins.
LEVELS: tuple[Level, ...] = ("EMERGENCY", "STOP", "LATER", "CLEAR", "OK")

IDENT_RE = r"^[a-z][a-z0-9_]{0,23}$"
Ident = Annotated[str, Field(pattern=IDENT_RE)]
FactValue = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_]{0,31}$")]

#: (fact name, value); value None means "any value of this fact".
Atom = tuple[str, str | None]


def level_rank(level: Level) -> int:
    """Return a number that grows with a level's priority (OK = 0, EMERGENCY = 4)."""
    return len(LEVELS) - 1 - LEVELS.index(level)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Text(_Frozen):
    """A text in every language the bot speaks."""

    ru: str
    en: str

    @field_validator("ru", "en")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the text is empty")
        return value.strip("\n")

    def get(self, lang: Lang) -> str:
        """Return the text in ``lang``."""
        return self.ru if lang == "ru" else self.en


# --- conditions -------------------------------------------------------------


class FactIs(_Frozen):
    """True when the fact ``fact`` holds one of the values ``in`` (or any value)."""

    fact: Ident
    in_: tuple[FactValue, ...] | None = Field(default=None, alias="in")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("in_", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        if isinstance(value, str | int):
            value = [value]
        if isinstance(value, list | tuple):
            return tuple(str(v) for v in value)
        return value


class AllOf(_Frozen):
    """True when every inner condition is true."""

    all: tuple[Condition, ...] = Field(min_length=1)


class AnyOf(_Frozen):
    """True when at least one inner condition is true."""

    any: tuple[Condition, ...] = Field(min_length=1)


class NotOf(_Frozen):
    """True when the inner condition is false."""

    not_: Condition = Field(alias="not")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


Condition = FactIs | AllOf | AnyOf | NotOf


def atoms_of(cond: Condition) -> frozenset[Atom]:
    """Return every (fact, value) pair a condition looks at."""
    if isinstance(cond, FactIs):
        if cond.in_ is None:
            return frozenset({(cond.fact, None)})
        return frozenset((cond.fact, v) for v in cond.in_)
    if isinstance(cond, AllOf):
        return frozenset().union(*(atoms_of(c) for c in cond.all))
    if isinstance(cond, AnyOf):
        return frozenset().union(*(atoms_of(c) for c in cond.any))
    return atoms_of(cond.not_)


# --- nodes --------------------------------------------------------------------


def _facts(value: Any) -> Any:
    """Accept ``{k: v}`` and ``{k: [v, w]}``, numbers included; store tuples of strings."""
    if not isinstance(value, dict):
        return value
    out: dict[str, tuple[str, ...]] = {}
    for key, raw in value.items():
        items = raw if isinstance(raw, list | tuple) else [raw]
        out[str(key)] = tuple(str(v).lower() if isinstance(v, bool) else str(v) for v in items)
    return out


Facts = dict[Ident, tuple[FactValue, ...]]


class Option(_Frozen):
    """One answer a client can pick; it records facts and may jump elsewhere."""

    id: Ident
    label: Text
    facts: Facts = Field(default_factory=dict)
    goto: Ident | None = None
    exclusive: bool = False

    _facts = field_validator("facts", mode="before")(_facts)


class Transition(_Frozen):
    """Go to ``to`` when ``when`` holds (or always, when ``when`` is absent)."""

    when: Condition | None = None
    to: Ident


Next = Ident | tuple[Transition, ...]


class _NodeBase(_Frozen):
    text: Text
    #: A short name of the question for summaries and staff cards.
    summary: Text | None = None
    next: Next | None = None


class _Asks(_NodeBase):
    options: tuple[Option, ...] = Field(min_length=2)
    #: Store the chosen option id under this name in the request (e.g. call_time).
    field: Ident | None = None

    @model_validator(mode="after")
    def _unique_options(self) -> Self:
        ids = [o.id for o in self.options]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"two answers share the id {', '.join(dupes)}")
        return self


class ChoiceNode(_Asks):
    """A question with one answer picked from buttons."""

    kind: Literal["choice"]


class YesNoNode(_Asks):
    """A question answered yes or no; its two options have the ids ``yes`` and ``no``."""

    kind: Literal["yesno"]

    @model_validator(mode="after")
    def _yes_and_no(self) -> Self:
        if sorted(o.id for o in self.options) != ["no", "yes"]:
            raise ValueError("a yes/no question needs exactly two answers, with ids yes and no")
        return self


class ChecklistNode(_Asks):
    """A checklist: the client ticks any number of options, then presses Done."""

    kind: Literal["checklist"]

    @model_validator(mode="after")
    def _no_goto(self) -> Self:
        if any(o.goto for o in self.options):
            raise ValueError("answers of a checklist cannot have goto; use next with conditions")
        return self


class TextNode(_NodeBase):
    """A free-text answer stored under ``field``."""

    kind: Literal["text"]
    field: Ident
    max_length: int = Field(default=200, ge=1, le=1000)


class PhoneNode(_NodeBase):
    """A phone number, validated and stored in E.164 form under ``field``."""

    kind: Literal["phone"]
    field: Ident = "phone"
    region: str = Field(default="RU", pattern=r"^[A-Z]{2}$")


class InfoNode(_NodeBase):
    """A text with a Continue button."""

    kind: Literal["info"]


class TriageNode(_NodeBase):
    """Where the rules compute the outcome; ``text`` introduces it."""

    kind: Literal["triage"]


class ConfirmNode(_NodeBase):
    """Shows the client a summary of their answers to confirm or change."""

    kind: Literal["confirm"]


class ScreeningNode(_Frozen):
    """A reference to a screening block of the safety policy (its questions are not editable)."""

    kind: Literal["screening"]
    block: Ident
    next: Next

    @model_validator(mode="before")
    @classmethod
    def _as_it_is(cls, data: Any) -> Any:
        if isinstance(data, dict):
            extra = sorted(set(data) - {"kind", "block", "next"})
            if extra:
                raise ValueError(
                    "a screening block is included as it is: its questions, answers, labels "
                    "and facts are locked by the safety policy, so only 'block' and 'next' "
                    f"may be written here (found: {', '.join(extra)})"
                )
        return data


class EndNode(_Frozen):
    """The end of a dialogue; ``save`` queues a consultation request."""

    kind: Literal["end"]
    text: Text
    summary: Text | None = None
    save: bool = False


_Kinds = (
    ChoiceNode
    | YesNoNode
    | ChecklistNode
    | TextNode
    | PhoneNode
    | InfoNode
    | TriageNode
    | ConfirmNode
    | EndNode
)
Node = Annotated[_Kinds, Field(discriminator="kind")]
#: A node as an admin writes it: any node, or a reference to a screening block.
FileNode = Annotated[_Kinds | ScreeningNode, Field(discriminator="kind")]


# --- rules and the flow -----------------------------------------------------


class Rule(_Frozen):
    """A triage rule: when ``when`` holds, the outcome is at least ``level``."""

    id: Ident
    level: Level
    when: Condition
    #: Why, in the client's words: "You reported an acute infection with fever."
    reason: Text
    #: What is suggested (massage type, technique); OK rules only.
    advice: Text | None = None
    #: How many sessions the course takes (OK rules). When several OK rules apply, the
    #: client reads one course line: the longest, saying why.
    course_sessions: int | None = Field(default=None, ge=1, le=100)
    #: The sentence of the clinical source this rule rests on, quoted verbatim.
    source: str = Field(min_length=10)
    #: "precaution" when the article is silent and the rule errs towards a doctor.
    basis: Literal["article", "precaution"] = "article"

    @model_validator(mode="after")
    def _advice_only_for_ok(self) -> Self:
        if self.level == "OK" and self.advice is None:
            raise ValueError("a rule with level OK must say what it suggests (advice)")
        return self


class DefaultRule(_Frozen):
    """The outcome when no rule fires: the flow errs on the side of a doctor."""

    id: Ident
    level: Literal["CLEAR", "LATER", "STOP"] = "CLEAR"
    reason: Text
    source: str = Field(min_length=10)
    basis: Literal["article", "precaution"] = "precaution"


class OutcomeText(_Frozen):
    """The headline and explanation shown for an outcome level."""

    title: Text
    text: Text


#: The only clinical source a flow may quote (shipped with the package).
SOURCE_DOCUMENT = "massage-article.txt"

#: Keys of a flow file that belong to the safety policy, and why, for the refusal message.
LOCKED_KEYS = {
    "emergency_node": "the emergency end (call 112 / 103) is fixed by the safety policy",
    "default_rule": "when no rule matches, the safety policy sends the client to a doctor",
}


class AdminRule(Rule):
    """A rule an admin writes: OK advice, or an extra doctor check (CLEAR).

    STOP, LATER and EMERGENCY are decided by the safety policy alone.
    """

    @field_validator("level")
    @classmethod
    def _admin_level(cls, value: str) -> str:
        if value not in ("OK", "CLEAR"):
            raise ValueError(
                f"level {value} is decided by the safety policy only (the screening core in "
                "the program); a rule in a flow file may be OK or CLEAR"
            )
        return value


class FlowFile(_Frozen):
    """A flow file as an admin writes it: the dialogue around the screening core.

    The loader composes it with the safety policy into a ``Flow``.
    """

    name: Ident
    title: Text
    version: str = ""
    source_document: str | None = None
    start: Ident
    nodes: dict[Ident, FileNode] = Field(min_length=1)
    rules: tuple[AdminRule, ...] = Field(min_length=1)
    outcomes: dict[Level, OutcomeText]

    @model_validator(mode="before")
    @classmethod
    def _locked(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, why in LOCKED_KEYS.items():
                if key in data:
                    raise ValueError(f"'{key}' cannot be set in a flow file: {why}")
        return data

    @field_validator("source_document")
    @classmethod
    def _shipped_source(cls, value: str | None) -> str | None:
        if value is not None and value != SOURCE_DOCUMENT:
            raise ValueError(
                f"the only clinical source a flow may quote is the shipped article "
                f"{SOURCE_DOCUMENT}"
            )
        return value

    @field_validator("outcomes")
    @classmethod
    def _only_ok(cls, value: dict[Level, OutcomeText]) -> dict[Level, OutcomeText]:
        locked = [lv for lv in LEVELS if lv != "OK" and lv in value]
        if locked:
            raise ValueError(
                f"the {', '.join(locked)} outcome text(s) belong to the safety policy (they "
                "carry the emergency numbers and the doctor's advice); write only OK here"
            )
        if "OK" not in value:
            raise ValueError("the OK outcome text is missing")
        return value

    @model_validator(mode="after")
    def _unique_rules(self) -> Self:
        ids = [r.id for r in self.rules]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"two rules share the id {', '.join(dupes)}")
        return self


class Flow(_Frozen):
    """A whole dialogue: questions, branches, triage rules and outcome texts."""

    name: Ident
    title: Text
    #: Set by the loader from the file's checksum; a value written in the file is replaced.
    version: str = ""
    #: File name of the clinical source, next to the flow file; rules quote it.
    source_document: str | None = None
    start: Ident
    #: Where the dialogue goes the moment an EMERGENCY rule fires.
    emergency_node: Ident
    nodes: dict[Ident, Node] = Field(min_length=1)
    rules: tuple[Rule, ...] = Field(min_length=1)
    default_rule: DefaultRule
    outcomes: dict[Level, OutcomeText]

    @model_validator(mode="after")
    def _complete(self) -> Self:
        missing = [lvl for lvl in LEVELS if lvl not in self.outcomes]
        if missing:
            raise ValueError(f"outcomes: a text is missing for {', '.join(missing)}")
        ids = [r.id for r in self.rules] + [self.default_rule.id]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"two rules share the id {', '.join(dupes)}")
        return self

    def node(self, node_id: str) -> Node:
        """Return the node ``node_id`` (KeyError if there is none)."""
        return self.nodes[node_id]


for _model in (AllOf, AnyOf, NotOf, Transition, _NodeBase, Rule, ScreeningNode):
    _model.model_rebuild()

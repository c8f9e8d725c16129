"""The safety policy: the screening core that admins cannot edit, and what the proof rests on.

Everything the safety promise depends on is owned here, not by the admin's flow file:
the screening questions (emergency signs, conditions and their follow-ups, both of the
article's lists of contraindications, a recent fracture), their answers' labels in both
languages, the facts those answers record, every item's minimum outcome with the article's
sentence it rests on, the protective outcome texts and the emergency end.

The content is the packaged file ``definitions/screening.yaml``, which ships with the code
and changes only as code changes, reviewed like code. An admin's flow includes its blocks
by reference (``kind: screening``); the loader composes the two, and the checker proves the
composition. Because an admin cannot touch a label, a fact or a protective text, renaming,
re-tagging or re-wording them is impossible, not merely detected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator
from ruamel.yaml import YAML

from flows.schema import (
    LEVELS,
    Condition,
    DefaultRule,
    EndNode,
    FactIs,
    Level,
    Node,
    OutcomeText,
    Rule,
    Text,
    Transition,
    level_rank,
)

__all__ = ["EXIT", "POLICY", "Block", "PolicyItem", "SafetyPolicy"]

Fact = tuple[str, str]

#: The placeholder a block's last question leads to; the loader replaces it with the
#: ``next`` of the admin's reference to the block.
EXIT = "block_exit"


@dataclass(frozen=True)
class PolicyItem:
    """One answer that must not lead to a massage suggestion, with its minimum outcome."""

    fact: Fact
    #: EMERGENCY: stop at once; STOP: no massage, see a doctor; LATER: not now; CLEAR: doctor first.
    min_level: Level
    #: Where the follow-up that asks it is relevant (e.g. the hernia stage needs a hernia):
    #: a path with any of these facts must have asked it. The minimum applies whenever the fact is
    #: present, whatever the precondition.
    when: tuple[Fact, ...] = ()
    why: str = ""
    reason: Text | None = None
    source: str = ""
    basis: str = "article"

    @property
    def absolute(self) -> bool:
        """Whether the item rules massage out now (STOP or stricter, or LATER)."""
        return level_rank(self.min_level) >= level_rank("LATER")


@dataclass(frozen=True)
class Block:
    """A screening block: questions in order, each with the condition under which it is asked."""

    name: str
    nodes: tuple[tuple[str, Node], ...]

    @property
    def entry(self) -> str:
        """The id of the block's first question (and of the admin's reference to it)."""
        return self.nodes[0][0]

    @property
    def ids(self) -> frozenset[str]:
        """Every question id of the block."""
        return frozenset(i for i, _ in self.nodes)


@dataclass(frozen=True)
class SafetyPolicy:
    """The whole policy: items, vocabulary, blocks, protective rules and texts."""

    items: tuple[PolicyItem, ...]
    vocabulary: dict[str, tuple[str, ...]] = field(default_factory=dict)
    blocks: tuple[Block, ...] = ()
    rules: tuple[Rule, ...] = ()
    default_rule: DefaultRule | None = None
    outcomes: dict[Level, OutcomeText] = field(default_factory=dict)
    emergency_end: tuple[str, EndNode] | None = None
    disclaimer: Text | None = None

    @property
    def facts(self) -> frozenset[Fact]:
        """Every fact the policy names."""
        return frozenset(i.fact for i in self.items)

    @property
    def emergency(self) -> frozenset[Fact]:
        """Facts that must stop the questionnaire at once."""
        return frozenset(i.fact for i in self.items if i.min_level == "EMERGENCY")

    @property
    def owned_keys(self) -> frozenset[str]:
        """Fact keys only the screening core may record."""
        return frozenset(self.vocabulary)

    @property
    def node_ids(self) -> frozenset[str]:
        """Question ids that belong to the screening core (reserved in admin files)."""
        ids: set[str] = set()
        for block in self.blocks:
            ids |= block.ids
        if self.emergency_end is not None:
            ids.add(self.emergency_end[0])
        return frozenset(ids)

    def block(self, name: str) -> Block | None:
        """The block called ``name``, if there is one."""
        return next((b for b in self.blocks if b.name == name), None)

    def applicable(self, facts: frozenset[Fact]) -> tuple[PolicyItem, ...]:
        """Items whose precondition holds in ``facts`` (any one of its facts, or none given)."""
        return tuple(i for i in self.items if not i.when or any(w in facts for w in i.when))


# --- the packaged policy file ---------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ItemSpec(_Frozen):
    fact: str = Field(pattern=r"^[a-z_]+=[A-Za-z0-9_]+$")
    level: Level
    when: tuple[str, ...] = ()
    reason: Text
    source: str = Field(min_length=10)
    basis: str = "article"

    @field_validator("when", mode="before")
    @classmethod
    def _tuple(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value


class _PolicyFile(_Frozen):
    vocabulary: dict[str, tuple[str, ...]]
    items: tuple[_ItemSpec, ...]
    default_rule: DefaultRule
    disclaimer: Text
    blocks: dict[str, list[dict[str, Any]]]
    emergency_end: dict[str, Any]
    outcomes: dict[Level, OutcomeText]

    @field_validator("vocabulary", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        return {str(k): tuple(str(v) for v in vs) for k, vs in value.items()}


_NODE = TypeAdapter(Node)
_CONDITION: TypeAdapter[Condition] = TypeAdapter(Condition)


def _fact(raw: str) -> Fact:
    key, _, value = raw.partition("=")
    return key, value


def _block(name: str, specs: list[dict[str, Any]]) -> Block:
    """Validate a block's questions and chain them: each leads to the next one asked."""
    asks: list[tuple[str, Condition | None, dict[str, Any]]] = []
    for spec in specs:
        spec = dict(spec)
        node_id = str(spec.pop("id"))
        raw_when = spec.pop("ask_when", None)
        when = _CONDITION.validate_python(raw_when) if raw_when is not None else None
        asks.append((node_id, when, spec))
    if asks[0][1] is not None:
        raise ValueError(f"block {name}: its first question is always asked (no ask_when)")
    nodes: list[tuple[str, Node]] = []
    for i, (node_id, _, spec) in enumerate(asks):
        later = [Transition(when=w, to=n) for n, w, _ in asks[i + 1 :] if w is not None]
        always = next((n for n, w, _ in asks[i + 1 :] if w is None), EXIT)
        spec["next"] = (*later, Transition(to=always))
        nodes.append((node_id, _NODE.validate_python(spec)))
    return Block(name, tuple(nodes))


#: Short prefixes for the rule ids made from items (ids are at most 24 characters).
_SHORT = {
    "contraindication": "c",
    "emergency": "em",
    "scoliosis_degree": "scoliosis",
    "hernia_stage": "hernia",
    "radiculitis_phase": "radiculitis",
    "sciatica_phase": "sciatica",
}


def _rule(item: _ItemSpec) -> Rule:
    key, value = _fact(item.fact)
    return Rule(
        id=f"{_SHORT.get(key, key)}_{value}",
        level=item.level,
        when=FactIs(fact=key, in_=(value,)),
        reason=item.reason,
        source=item.source,
        basis="precaution" if item.basis == "precaution" else "article",
    )


def _load(text: str) -> SafetyPolicy:
    raw = YAML(typ="safe").load(text)
    spec = _PolicyFile.model_validate(raw)
    items = tuple(
        PolicyItem(
            fact=_fact(i.fact),
            min_level=i.level,
            when=tuple(_fact(w) for w in i.when),
            why=i.reason.en,
            reason=i.reason,
            source=i.source,
            basis=i.basis,
        )
        for i in spec.items
    )
    for item in items:
        key, value = item.fact
        if value not in spec.vocabulary.get(key, ()):
            raise ValueError(f"policy item {key}={value} is not in the vocabulary")
    end = dict(spec.emergency_end)
    end_id = str(end.pop("id"))
    end_node = _NODE.validate_python(end)
    assert isinstance(end_node, EndNode)
    missing = [lv for lv in LEVELS if lv != "OK" and lv not in spec.outcomes]
    if missing or "OK" in spec.outcomes:
        raise ValueError("the policy owns every outcome text but OK")
    return SafetyPolicy(
        items=items,
        vocabulary=dict(spec.vocabulary),
        blocks=tuple(_block(name, nodes) for name, nodes in spec.blocks.items()),
        rules=tuple(_rule(i) for i in spec.items),
        default_rule=spec.default_rule,
        outcomes=dict(spec.outcomes),
        emergency_end=(end_id, end_node),
        disclaimer=spec.disclaimer,
    )


def _packaged() -> str:
    return (resources.files("flows") / "definitions" / "screening.yaml").read_text("utf-8")


POLICY = _load(_packaged())

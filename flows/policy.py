"""The safety policy: which answers are emergencies and which forbid a massage suggestion.

Admins edit flow files; they do not edit this. The checker proves every flow
against it: an answer listed here must lead at least to its ``min_level`` on every
path, and every path that can end in OK must have asked about every item whose
precondition holds. Deleting or re-tagging an option in a flow therefore cannot
open a way to a massage suggestion.
"""

from __future__ import annotations

from dataclasses import dataclass

from flows.schema import Level

__all__ = ["POLICY", "PolicyItem", "SafetyPolicy"]

Fact = tuple[str, str]


@dataclass(frozen=True)
class PolicyItem:
    """One answer that must not lead to a massage suggestion."""

    fact: Fact
    #: EMERGENCY: stop at once; LATER: absolute (no massage now or at all); CLEAR: doctor first.
    min_level: Level
    #: The item applies only when these facts hold (e.g. hernia stage needs a hernia).
    when: tuple[Fact, ...] = ()
    why: str = ""


@dataclass(frozen=True)
class SafetyPolicy:
    """The whole policy: a tuple of items plus lookups."""

    items: tuple[PolicyItem, ...]

    @property
    def facts(self) -> frozenset[Fact]:
        """Every fact the policy names."""
        return frozenset(i.fact for i in self.items)

    @property
    def emergency(self) -> frozenset[Fact]:
        """Facts that must stop the questionnaire at once."""
        return frozenset(i.fact for i in self.items if i.min_level == "EMERGENCY")

    def applicable(self, facts: frozenset[Fact]) -> tuple[PolicyItem, ...]:
        """Items whose preconditions hold in ``facts``."""
        return tuple(i for i in self.items if all(w in facts for w in i.when))


def _items(
    level: Level, key: str, values: str, why: str, when: tuple[Fact, ...] = ()
) -> list[PolicyItem]:
    return [PolicyItem((key, v), level, when, why) for v in values.split()]


POLICY = SafetyPolicy(
    items=tuple(
        _items(
            "EMERGENCY",
            "emergency",
            "chest_pain leg_weakness bladder_bowel trauma",
            "cannot wait: emergency numbers, no questionnaire",
        )
        + _items(
            "LATER",
            "contraindication",
            "fever_infection intoxication exacerbation wounds skin lymphadenitis "
            "oncology heart clotting hiv mental high_pressure",
            "the article lists it as a contraindication to massage",
        )
        + _items(
            "LATER",
            "scoliosis_degree",
            "4",
            "fourth degree scoliosis excludes massage",
            (("condition", "scoliosis"),),
        )
        + _items(
            "LATER",
            "hernia_stage",
            "pain_now",
            "a hernia with pain now: massage is contraindicated",
            (("condition", "hernia"),),
        )
        + _items(
            "LATER",
            "radiculitis_phase",
            "exacerbation",
            "radiculitis is massaged only without an exacerbation",
            (("condition", "radiculitis"),),
        )
        + _items("CLEAR", "caution", "recent_fracture", "a recent back fracture: doctor first")
        + _items(
            "CLEAR",
            "neck_checked",
            "no",
            "neck pain: a doctor first rules out hernia or subluxation",
            (("condition", "neck_pain"),),
        )
        + _items(
            "CLEAR",
            "scoliosis_degree",
            "unknown",
            "unknown scoliosis degree may be the fourth",
            (("condition", "scoliosis"),),
        )
        + _items(
            "CLEAR",
            "hernia_stage",
            "unknown",
            "unknown hernia stage may be pain now",
            (("condition", "hernia"),),
        )
        + _items("CLEAR", "condition", "back_pain", "back pain without a diagnosis: doctor first")
    )
)

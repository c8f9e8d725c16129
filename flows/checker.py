"""The flow checker: structure, limits, translations, sources and a safety proof.

The safety proof is exhaustive, not sampled. It walks every path through the
flow, branching on every answer that can change the path (anything a branch
condition or an EMERGENCY rule looks at, and every option of a single-choice
question). Checklist options that no branch looks at ("free" options) are not
branched on one by one; they are handled by an exact argument instead:

* Every rule above OK (a *protective* rule) must be built from answers given,
  never from answers missing (no ``not``). Such a rule that fires on a set of
  answers fires on every larger set too.
* So "answer p leads to at least level L on this path, whatever else was ticked"
  holds exactly when a protective rule of level L or higher fires on the path's
  fixed answers plus the one option carrying p. The checker tests that set.
* If no protective rule fires on the path's fixed answers alone, some choice of
  the free options may lead to OK; such a path must have asked about every item
  of the safety policy that applies to it.

After an outcome the rules no longer matter, so the rest of the walk follows
every outcome level a path could have and merges states that differ only in
answers no later branch looks at.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from importlib import resources
from itertools import combinations
from typing import Any

from flows.engine import (
    MESSAGE_BUDGET,
    FactSet,
    compile_condition,
    emergency_fires,
    evaluate,
    is_question,
    next_node,
)
from flows.errors import FlowError, Problem
from flows.lint import (
    booking_words,
    diagnosis_claims,
    emergency_numbers,
    medicine_names,
    typed_hours,
    typed_phones,
)
from flows.loader import load_flow_text
from flows.markup import html_problem
from flows.policy import POLICY, PolicyItem, SafetyPolicy
from flows.schema import (
    LANGS,
    LEVELS,
    SOURCE_DOCUMENT,
    AllOf,
    AnyOf,
    Atom,
    ChecklistNode,
    ChoiceNode,
    Condition,
    ConfirmNode,
    EndNode,
    FactIs,
    Flow,
    NotOf,
    Option,
    PhoneNode,
    TextNode,
    TriageNode,
    YesNoNode,
    atoms_of,
    level_rank,
)

__all__ = [
    "PROOF_BUDGET",
    "CheckReport",
    "check_flow",
    "check_text",
    "shipped_article",
]

CALLBACK_LIMIT = 64
#: The widest sequence number a button can carry (see engine.decode).
_WIDEST_SEQ = "999999999"


@dataclass
class CheckReport:
    """What the checker found, and how much it explored to prove it."""

    origin: str
    flow_name: str = ""
    version: str = ""
    problems: list[Problem] = field(default_factory=list)
    paths: int = 0
    states: int = 0
    combinations: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    #: The loaded flow (None if it could not be loaded).
    flow: Flow | None = None
    #: The peak memory of the process that checked it, in MB (0: not measured).
    peak_memory_mb: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the flow may be used."""
        return not self.problems

    def render(self) -> str:
        """Return a report an admin can read."""
        if self.flow_name:
            head = f"{self.origin}: flow '{self.flow_name}' version {self.version}"
        else:
            head = self.origin
        lines = [head]
        if self.ok:
            lines.append("  OK: the flow is valid and safe.")
        else:
            lines.append(f"  FAILED: {len(self.problems)} problem(s):")
            lines.extend(f"  - {p}" for p in self.problems)
        if self.states:
            reached = ", ".join(f"{lv} {self.outcomes[lv]}" for lv in LEVELS if self.outcomes[lv])
            lines.append(
                f"  Safety proof: explored {self.states} states and {self.paths} paths, "
                f"covering {self.combinations} answer combinations up to the outcome."
            )
            lines.append(f"  Outcome branches followed: {reached or 'none'}.")
        return "\n".join(lines)


def shipped_article() -> str:
    """The clinical source every rule quotes (shipped with the package)."""
    return (resources.files("flows") / "definitions" / SOURCE_DOCUMENT).read_text("utf-8")


def check_text(
    text: str,
    *,
    origin: str = "flow",
    policy: SafetyPolicy = POLICY,
    budget: int | None = None,
) -> CheckReport:
    """Check flow YAML ``text`` against the shipped article and the safety policy."""
    try:
        flow = load_flow_text(text, origin=origin, policy=policy)
    except FlowError as exc:
        return CheckReport(origin=origin, problems=exc.problems)
    return check_flow(
        flow, origin=origin, source_text=shipped_article(), policy=policy, budget=budget
    )


def check_flow(
    flow: Flow,
    *,
    origin: str = "flow",
    source_text: str | None = None,
    policy: SafetyPolicy = POLICY,
    budget: int | None = None,
) -> CheckReport:
    """Check a composed flow: structure first, then (if that holds) the safety proof.

    ``budget`` caps the states the proof may explore (default ``PROOF_BUDGET``); a flow
    that needs more is refused as too complex to prove, with what to simplify.
    """
    report = CheckReport(origin=origin, flow_name=flow.name, version=flow.version, flow=flow)
    problems = report.problems
    problems.extend(_references(flow))
    if problems:
        return _placed(report)
    problems.extend(_graph(flow))
    problems.extend(_facts_and_rules(flow, source_text))
    problems.extend(_limits(flow))
    problems.extend(_block_sizes(flow))
    problems.extend(_screening_order(flow, policy))
    problems.extend(_texts(flow, policy))
    problems.extend(_screening_branches(flow, policy))
    problems.extend(_consent(flow))
    if not problems:
        _Prover(flow, policy, report, budget or PROOF_BUDGET).run()
    return _placed(report)


def _placed(report: CheckReport) -> CheckReport:
    report.problems = [
        Problem(p.message, p.file or report.origin, p.line, p.node) for p in report.problems
    ]
    return report


# --- structure ----------------------------------------------------------------


def _targets(flow: Flow, node_id: str) -> list[str]:
    node = flow.nodes[node_id]
    out: list[str] = []
    if isinstance(node, ChoiceNode | YesNoNode | ChecklistNode):
        out += [o.goto for o in node.options if o.goto]
    if not isinstance(node, EndNode) and node.next is not None:
        out += [node.next] if isinstance(node.next, str) else [t.to for t in node.next]
    return out


def _references(flow: Flow) -> list[Problem]:
    problems = []
    for name, ref in (("start", flow.start), ("emergency_node", flow.emergency_node)):
        if ref not in flow.nodes:
            problems.append(Problem(f"{name} points to '{ref}', which does not exist"))
    if flow.emergency_node in flow.nodes and flow.nodes[flow.emergency_node].kind != "end":
        problems.append(Problem("emergency_node must be an end node", node=flow.emergency_node))
    for node_id in flow.nodes:
        for target in _targets(flow, node_id):
            if target not in flow.nodes:
                problems.append(Problem(f"leads to '{target}', which does not exist", node=node_id))
    return problems


def _graph(flow: Flow) -> list[Problem]:
    problems = []
    for node_id, node in flow.nodes.items():
        if isinstance(node, EndNode):
            continue
        if node.next is None:
            if isinstance(node, ChoiceNode | YesNoNode):
                loose = [o.id for o in node.options if not o.goto]
                if loose:
                    problems.append(
                        Problem(
                            f"dead end: after the answer(s) {', '.join(loose)} there is no "
                            "next question (add 'next' or 'goto')",
                            node=node_id,
                        )
                    )
            else:
                problems.append(Problem("dead end: no 'next' question", node=node_id))
    seen = {flow.start, flow.emergency_node}
    todo = [flow.start]
    while todo:
        for target in _targets(flow, todo.pop()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    for node_id in flow.nodes:
        if node_id not in seen:
            problems.append(Problem("unreachable: no question leads here", node=node_id))
    loop = _find_loop(flow)
    if loop:
        problems.append(Problem("a loop: " + " → ".join(loop) + " (dialogues must move forward)"))
    return problems


def _find_loop(flow: Flow) -> list[str] | None:
    """A cycle of questions, if there is one (an iterative depth-first search)."""
    state: dict[str, int] = {}
    for root in flow.nodes:
        if root in state:
            continue
        path: list[str] = [root]
        stack = [iter(_targets(flow, root))]
        state[root] = 1
        while stack:
            target = next(stack[-1], None)
            if target is None:
                stack.pop()
                state[path.pop()] = 2
            elif state.get(target) == 1:
                return path[path.index(target) :] + [target]
            elif target not in state:
                state[target] = 1
                path.append(target)
                stack.append(iter(_targets(flow, target)))
    return None


def _reachable(flow: Flow, start: str, without: str) -> set[str]:
    """Questions reachable from ``start`` when the question ``without`` is taken out."""
    seen = {start} if start != without else set()
    todo = list(seen)
    while todo:
        for target in _targets(flow, todo.pop()):
            if target not in seen and target != without:
                seen.add(target)
                todo.append(target)
    return seen


def _screening_order(flow: Flow, policy: SafetyPolicy) -> list[Problem]:
    """Every path passes the emergency block first and every screening block before any
    outcome: no branch, house rule or shortcut can skip the screening."""
    problems = []
    triages = [n for n, node in flow.nodes.items() if isinstance(node, TriageNode)]
    blocks = [b for b in policy.blocks if b.entry in flow.nodes]
    for block in blocks:
        around = _reachable(flow, flow.start, block.entry)
        for triage in triages:
            if triage in around:
                problems.append(
                    Problem(
                        f"a path reaches this outcome without the screening block "
                        f"'{block.name}': every client must pass it before any outcome",
                        node=triage,
                    )
                )
    emergency = policy.blocks[0] if policy.blocks else None
    if emergency is not None and emergency.entry in flow.nodes:
        around = _reachable(flow, flow.start, emergency.entry)
        for block in blocks[1:]:
            if block.entry in around:
                problems.append(
                    Problem(
                        f"a path reaches the screening block '{block.name}' before the "
                        f"emergency signs: the '{emergency.name}' block must come first",
                        node=block.entry,
                    )
                )
    return problems


def _admin_texts(flow: Flow, policy: SafetyPolicy) -> list[tuple[str | None, str, str]]:
    """Every text of the flow that the admin wrote: (question, what, text)."""
    out: list[tuple[str | None, str, str]] = []
    core = policy.node_ids
    policy_rules = {r.id for r in policy.rules}
    for lang in LANGS:
        out.append((None, f"title ({lang})", flow.title.get(lang)))
        for node_id, node in flow.nodes.items():
            if node_id in core:
                continue
            out.append((node_id, f"text ({lang})", node.text.get(lang)))
            if node.summary is not None:
                out.append((node_id, f"summary ({lang})", node.summary.get(lang)))
            for o in getattr(node, "options", ()):
                out.append((node_id, f"answer {o.id} ({lang})", o.label.get(lang)))
        for r in flow.rules:
            if r.id in policy_rules:
                continue
            out.append((None, f"rule {r.id} reason ({lang})", r.reason.get(lang)))
            if r.advice is not None:
                out.append((None, f"rule {r.id} advice ({lang})", r.advice.get(lang)))
        ok = flow.outcomes["OK"]
        out.append((None, f"outcome OK ({lang})", f"{ok.title.get(lang)}\n{ok.text.get(lang)}"))
    return out


def _texts(flow: Flow, policy: SafetyPolicy) -> list[Problem]:
    """The text lint over everything the admin wrote (see ``flows.lint``)."""
    problems = []
    for node, what, text in _admin_texts(flow, policy):
        for name in medicine_names(text):
            problems.append(
                Problem(
                    f"{what} names a medicine ({name}): the bot never recommends medication; "
                    "only a doctor chooses a treatment",
                    node=node,
                )
            )
        for claim in diagnosis_claims(text):
            problems.append(
                Problem(
                    f"{what} presents the bot's answer as a diagnosis (“{claim}”): the bot "
                    "never diagnoses",
                    node=node,
                )
            )
        is_phone_question = node is not None and isinstance(flow.nodes[node], PhoneNode)
        if not is_phone_question:
            for number in typed_phones(text):
                problems.append(
                    Problem(
                        f"{what} has a phone number typed in ({number}): write {{phone}}, "
                        "and the bot shows the center's number from its settings",
                        node=node,
                    )
                )
        if node is not None and isinstance(flow.nodes[node], TriageNode):
            words = booking_words(text)
            if words:
                problems.append(
                    Problem(
                        f"{what} suggests a massage ({', '.join(words)}), but the triage text "
                        "is shown with every outcome, STOP and LATER included: keep it neutral "
                        "(the outcome's own text says what follows)",
                        node=node,
                    )
                )
        for number in emergency_numbers(text):
            problems.append(
                Problem(
                    f"{what} mentions the emergency numbers ({number}): what to do in an "
                    "emergency is the safety policy's own text (call 112 / 103 at once, do "
                    "not wait for our call), and another text could contradict it",
                    node=node,
                )
            )
        for hours in typed_hours(text):
            problems.append(
                Problem(
                    f"{what} has opening hours typed in ({hours}): write {{hours}}, and the "
                    "bot shows the hours from its settings",
                    node=node,
                )
            )
    return problems


def _consent(flow: Flow) -> list[Problem]:
    """A request (name, phone and health answers) is saved only after the client agreed: on
    every way to an end that saves (but the emergency stop's, which keeps no name or phone),
    the last answer to a consent question (a choice recording ``field: consent``) is its
    ``agree``."""
    problems = []
    seen: set[tuple[str, bool]] = set()
    todo = [(flow.start, False)]
    reported: set[str] = set()
    while todo:
        node_id, agreed = todo.pop()
        if (node_id, agreed) in seen or node_id not in flow.nodes:
            continue
        seen.add((node_id, agreed))
        node = flow.nodes[node_id]
        if isinstance(node, EndNode):
            unsaid = node.save and not agreed and node_id != flow.emergency_node
            if unsaid and node_id not in reported:
                reported.add(node_id)
                problems.append(
                    Problem(
                        "this end saves the request (name, phone and health answers), but "
                        "a path reaches it without the client's consent: ask a question "
                        "with 'field: consent' first, whose answer 'agree' leads on to "
                        "the name and phone (and any other answer leads to an end that "
                        "saves nothing)",
                        node=node_id,
                    )
                )
            continue
        if isinstance(node, ChoiceNode) and getattr(node, "field", None) == "consent":
            onward = [] if node.next is None else _targets_of_next(node.next)
            for o in node.options:
                for target in [o.goto] if o.goto else onward:
                    todo.append((target, o.id == "agree"))
            continue
        todo += [(target, agreed) for target in _targets(flow, node_id)]
    return problems


def _targets_of_next(nxt: object) -> list[str]:
    return [nxt] if isinstance(nxt, str) else [tr.to for tr in nxt]  # type: ignore[attr-defined]


def _massage_words(node: Any, *, with_text: bool) -> list[str]:
    """The words suggesting a massage in what a screen shows: its text (``with_text``), its
    answers, and its summary name (as the summary before sending lists it)."""
    texts = [node.text.get(lang) for lang in LANGS] if with_text else []
    texts += [o.label.get(lang) for o in getattr(node, "options", ()) for lang in LANGS]
    summary = getattr(node, "summary", None)
    texts += [summary.get(lang) for lang in LANGS] if summary is not None else []
    return sorted({w for text in texts for w in booking_words(text)})


#: What a question after STOP or LATER may record: the call about a doctor's consultation.
_CONTACT = frozenset({"consent", "name", "phone", "call_time"})


def _screening_branches(flow: Flow, policy: SafetyPolicy) -> list[Problem]:
    """Admin screens may not be shown, skipped or chosen by a screening answer: what follows
    from those is the triage's to decide (its outcome), so a screen cannot single out the
    clients who reported a contraindication (to sell them a course before the STOP).

    Also: what the admin's non-OK rules tell the client (their reasons sit under a
    protective headline) may not suggest a massage."""
    problems = []
    owned = set(policy.vocabulary)
    core = policy.node_ids
    for node_id, node in flow.nodes.items():
        if isinstance(node, EndNode) or node.next is None or isinstance(node.next, str):
            continue
        # (the screening's own follow-ups branch on its answers, from question to question;
        # a branch whose way out leads to the admin's screens is the admin's)
        keys = sorted({k for tr in node.next if tr.when for k, _ in atoms_of(tr.when)} & owned)
        if keys and any(tr.to not in core for tr in node.next):
            where = node_id if node_id not in core else None
            problems.append(
                Problem(
                    f"a branch after '{node_id}' looks at the screening answer "
                    f"{', '.join(keys)}: what follows a screening answer is for the triage to "
                    "decide; branch on the outcome after the triage instead",
                    node=where,
                )
            )
    policy_rules = {r.id for r in policy.rules}
    for r in flow.rules:
        if r.id in policy_rules or r.level == "OK":
            continue
        for lang in LANGS:
            words = booking_words(r.reason.get(lang))
            if words:
                problems.append(
                    Problem(
                        f"rule {r.id} reason ({lang}) suggests a massage ({', '.join(words)}), "
                        f"but it is shown under the {r.level} headline: say what the client "
                        "reported, not what to book"
                    )
                )
    return problems


def has_not(cond: Condition) -> bool:
    """Whether a condition depends on an answer being absent (uses ``not``)."""
    if isinstance(cond, NotOf):
        return True
    if isinstance(cond, AllOf):
        return any(has_not(c) for c in cond.all)
    if isinstance(cond, AnyOf):
        return any(has_not(c) for c in cond.any)
    assert isinstance(cond, FactIs)
    return False


def _fact_tests(cond: Condition) -> list[FactIs]:
    if isinstance(cond, FactIs):
        return [cond]
    if isinstance(cond, AllOf):
        return [t for c in cond.all for t in _fact_tests(c)]
    if isinstance(cond, AnyOf):
        return [t for c in cond.any for t in _fact_tests(c)]
    assert isinstance(cond, NotOf)
    return _fact_tests(cond.not_)


def _normalise(text: str) -> str:
    table = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "–": "-", "—": "-"})
    return " ".join(text.translate(table).split()).casefold()


def _facts_and_rules(flow: Flow, source_text: str | None) -> list[Problem]:
    problems = []
    offered: set[tuple[str, str]] = set()
    for node_id, node in flow.nodes.items():
        if isinstance(node, ChoiceNode | YesNoNode | ChecklistNode):
            for o in node.options:
                if "outcome" in o.facts:
                    problems.append(
                        Problem(f"answer {o.id}: 'outcome' is set by the rules only", node=node_id)
                    )
                offered |= {(k, v) for k, vs in o.facts.items() for v in vs}
    offered |= {("outcome", lv) for lv in LEVELS}
    keys = {k for k, _ in offered}

    def unknown(atoms: frozenset[Atom]) -> list[str]:
        return sorted(
            f"{k}={v}" if v is not None else k
            for k, v in atoms
            if (v is None and k not in keys) or (v is not None and (k, v) not in offered)
        )

    for rule in flow.rules:
        missing = unknown(atoms_of(rule.when))
        if missing:
            problems.append(
                Problem(f"rule {rule.id} looks for {', '.join(missing)}, which no answer sets")
            )
        if rule.level != "OK" and has_not(rule.when):
            problems.append(
                Problem(
                    f"rule {rule.id}: a {rule.level} rule must be built from answers given, "
                    "not from answers missing ('not' is allowed only in OK rules)"
                )
            )
    for node_id, node in flow.nodes.items():
        if isinstance(node, EndNode) or node.next is None or isinstance(node.next, str):
            continue
        for tr in node.next:
            missing = unknown(atoms_of(tr.when)) if tr.when is not None else []
            if missing:
                problems.append(
                    Problem(
                        f"a branch looks for {', '.join(missing)}, which no answer sets",
                        node=node_id,
                    )
                )
    if source_text is not None:
        article = _normalise(source_text)
        sources: list[tuple[str, str]] = [(r.id, r.source) for r in flow.rules]
        sources.append((flow.default_rule.id, flow.default_rule.source))
        for rule_id, source in sources:
            if _normalise(source) not in article:
                problems.append(
                    Problem(
                        f"rule {rule_id}: its source is not a quote of the article "
                        f"{SOURCE_DOCUMENT}; copy the sentence word for word"
                    )
                )
    return problems


def _limits(flow: Flow) -> list[Problem]:
    """Texts (as the engine draws them, in the worst case) and buttons within Telegram's limits."""
    problems = []
    extra_question = 200  # the progress line and the widest summary header
    for node_id, node in flow.nodes.items():
        for lang in LANGS:
            text = node.text.get(lang)
            bad = html_problem(text)
            if bad:
                problems.append(Problem(f"text ({lang}): {bad}", node=node_id))
            size = len(text) + extra_question
            if size > MESSAGE_BUDGET:
                problems.append(
                    Problem(
                        f"text ({lang}) may be {size} characters when shown; keep it under "
                        f"{MESSAGE_BUDGET - extra_question}",
                        node=node_id,
                    )
                )
        if isinstance(node, TextNode) and node.max_length > 1000:
            problems.append(Problem("max_length above 1000", node=node_id))  # pragma: no cover
        options: tuple[Option, ...] = getattr(node, "options", ())
        for o in options:
            data = f"t:{_WIDEST_SEQ}:{node_id}:{o.id}"
            if len(data.encode()) > CALLBACK_LIMIT:
                problems.append(
                    Problem(
                        f"answer {o.id}: its button data '{data}' is longer than "
                        f"{CALLBACK_LIMIT} bytes; shorten the question or answer id",
                        node=node_id,
                    )
                )
            for lang in LANGS:
                bad = html_problem(o.label.get(lang))
                if bad:
                    problems.append(Problem(f"answer {o.id} ({lang}): {bad}", node=node_id))
        if isinstance(node, ConfirmNode):
            for other in flow.nodes:
                data = f"v:{_WIDEST_SEQ}:{node_id}:{other}"
                if len(data.encode()) > CALLBACK_LIMIT:
                    problems.append(
                        Problem(f"question id '{other}' too long for a button", node=node_id)
                    )
    for r in flow.rules:
        for lang in LANGS:
            for what, text in (
                ("reason", r.reason.get(lang)),
                ("advice", r.advice.get(lang) if r.advice else ""),
            ):
                bad = html_problem(text) if text else None
                if bad:
                    problems.append(Problem(f"rule {r.id} {what} ({lang}): {bad}"))
    for level, texts in flow.outcomes.items():
        for lang in LANGS:
            for text in (texts.title.get(lang), texts.text.get(lang)):
                bad = html_problem(text)
                if bad:
                    problems.append(Problem(f"outcome {level} ({lang}): {bad}"))
    return problems


def _block_sizes(flow: Flow) -> list[Problem]:
    """Every block of an outcome message (headline, suggestion, reason) must fit one message."""
    problems = []
    for lang in LANGS:
        blocks: list[tuple[str, int]] = [
            (f"outcome {lv}", len(o.title.get(lang)) + len(o.text.get(lang)) + 10)
            for lv, o in flow.outcomes.items()
        ]
        for r in flow.rules:
            atoms = atoms_of(r.when)
            labels = sum(
                len(o.label.get(lang)) + 4
                for node in flow.nodes.values()
                for o in getattr(node, "options", ())
                if any(
                    (k, v) in atoms or (k, None) in atoms for k, vs in o.facts.items() for v in vs
                )
            )
            blocks.append((f"rule {r.id} reason", len(r.reason.get(lang)) + labels + 40))
            if r.advice:
                blocks.append((f"rule {r.id} advice", len(r.advice.get(lang)) + 4))
        for what, size in blocks:
            if size > MESSAGE_BUDGET:
                problems.append(
                    Problem(
                        f"{what} ({lang}) may be {size} characters; keep it under {MESSAGE_BUDGET}"
                    )
                )
    return problems


# --- the safety proof ---------------------------------------------------------

#: The most states the proof may explore (the shipped flow needs about 60 thousand). A flow that
#: needs more is refused as too complex to prove: a bound on time and memory that holds on
#: any machine, whatever the admin wrote.
PROOF_BUDGET = 250_000

#: Outcomes after which the client may only be offered a call about a doctor's consultation.
_PROTECTIVE = frozenset({"EMERGENCY", "STOP", "LATER"})


class _TooComplex(Exception):
    """The proof ran past its budget."""


#: The answers that led somewhere, newest last, as a linked list: (earlier, label).
Trail = tuple["Trail", str] | None


def _steps(trail: Trail) -> list[str]:
    out = []
    while trail is not None:
        trail, label = trail
        out.append(label)
    return out[::-1]


@dataclass(frozen=True)
class _Walk:
    """One partial path: facts fixed so far, free options offered, policy items asked."""

    node: str
    facts: FactSet
    free: frozenset[tuple[str, str]]  # (node, option) of free checklist options offered
    asked: frozenset[tuple[str, str]]
    trail: Trail


#: What a step of the walk asks its driver for: the number of paths from a walk, with weight.
_Call = tuple[_Walk, int]
_Gen = Generator[_Call, int, int]


class _Prover:
    """The exhaustive walk. Written as generators driven by an explicit stack, so a flow of
    any length needs no recursion; every state counts against the budget."""

    def __init__(self, flow: Flow, policy: SafetyPolicy, report: CheckReport, budget: int) -> None:
        self.flow = flow
        self.policy = policy
        self.report = report
        self.budget = budget
        self.spent = 0
        self.spent_at: Counter[str] = Counter()
        self.protective = [r for r in flow.rules if r.level != "OK"]
        guard_atoms: set[Atom] = set()
        for node in flow.nodes.values():
            if not isinstance(node, EndNode) and isinstance(node.next, tuple):
                for tr in node.next:
                    if tr.when is not None:
                        guard_atoms |= atoms_of(tr.when)
        emergency_atoms = {
            a for r in flow.rules if r.level == "EMERGENCY" for a in atoms_of(r.when)
        }
        self.guard_keys = {k for k, _ in guard_atoms} | {"outcome"}
        self.structural: set[Atom] = guard_atoms | emergency_atoms
        self.structural |= {(k, v) for k, v in policy.emergency}
        self.structural |= {w for item in policy.items for w in item.when}
        self.triage_ahead = self._triage_ahead()
        #: paths from a state, and answer combinations per unit of weight
        self.memo: dict[object, tuple[int, int]] = {}
        self.visited: set[str] = set()
        self.seen_problems: set[str] = set()
        self.option_facts: dict[int, FactSet] = {}
        self.emergency = policy.emergency
        self.policy_facts = policy.facts
        self.core = policy.node_ids
        self.items_by_fact: dict[tuple[str, str], list[PolicyItem]] = {}
        for item in policy.items:
            self.items_by_fact.setdefault(item.fact, []).append(item)
        self.alone: dict[PolicyItem, bool] = {}
        single_rules = {
            id(r.when)
            for r in self.protective
            if isinstance(r.when, FactIs) and r.when.in_ is not None and len(r.when.in_) == 1
        }
        conditions = [r.when for r in flow.rules if id(r.when) not in single_rules] + [
            tr.when
            for node in flow.nodes.values()
            if not isinstance(node, EndNode) and isinstance(node.next, tuple)
            for tr in node.next
            if tr.when is not None
        ]
        self.tests_by_key: dict[str, list[FactIs]] = {}
        for cond in conditions:
            for test in _fact_tests(cond):
                self.tests_by_key.setdefault(test.fact, []).append(test)
        self.precondition_facts = {w for i in policy.items for w in i.when}
        self.ranked = [(level_rank(r.level), compile_condition(r.when)) for r in self.protective]
        #: protective rules on a single answer, by that answer; the others, compiled
        self.single: dict[tuple[str, str], int] = {}
        self.compound: list[tuple[int, Callable[[FactSet], bool]]] = []
        for r in self.protective:
            w = r.when
            if isinstance(w, FactIs) and w.in_ is not None and len(w.in_) == 1:
                fact = (w.fact, w.in_[0])
                self.single[fact] = max(self.single.get(fact, 0), level_rank(r.level))
            else:
                self.compound.append((level_rank(r.level), compile_condition(r.when)))
        self.unconditional = [i for i in policy.items if not i.when]
        self.conditional = [i for i in policy.items if i.when]
        self.free_cache: dict[frozenset[tuple[str, str]], list[Option]] = {}
        #: admin questions reached after a protective outcome, with the outcome and a path
        self.after_protective: dict[str, tuple[str, _Walk]] = {}

    # -- helpers

    def _triage_ahead(self) -> dict[str, bool]:
        """For each question, whether a triage can still come after it (no recursion)."""
        ahead = {n: isinstance(node, TriageNode) for n, node in self.flow.nodes.items()}
        changed = True
        while changed:
            changed = False
            for node_id in self.flow.nodes:
                if not ahead[node_id] and any(ahead[t] for t in _targets(self.flow, node_id)):
                    ahead[node_id] = changed = True
        return ahead

    def _is_structural(self, option: Option) -> bool:
        return any(
            (k, v) in self.structural or (k, None) in self.structural
            for k, vs in option.facts.items()
            for v in vs
        )

    def _problem(self, message: str, walk: _Walk, node: str | None = None) -> None:
        key = f"{node}|{message}"
        if key in self.seen_problems:
            return
        self.seen_problems.add(key)
        path = " → ".join(_steps(walk.trail)[-12:]) or "(start)"
        self.report.problems.append(Problem(f"{message}. Example path: {path}", node=node))

    def _facts(self, option: Option) -> FactSet:
        found = self.option_facts.get(id(option))
        if found is None:
            found = frozenset((k, v) for k, vs in option.facts.items() for v in vs)
            self.option_facts[id(option)] = found
        return found

    def _policy_offered(self, options: tuple[Option, ...]) -> frozenset[tuple[str, str]]:
        offered: set[tuple[str, str]] = set()
        for o in options:
            offered |= self._facts(o) & self.policy_facts
        return frozenset(offered)

    def _spend(self, node: str | None) -> None:
        """Count one step of the walk against the budget (``node``: the question whose
        answers split the path here, named in a "too complex" report)."""
        self.spent += 1
        if node is not None:
            self.spent_at[node] += 1
        if self.spent > self.budget:
            raise _TooComplex

    # -- the walk

    def run(self) -> None:
        start = _Walk(self.flow.start, frozenset(), frozenset(), frozenset(), None)
        collecting = gc.isenabled()
        gc.disable()  # the walk makes many small objects and no cycles
        try:
            self.report.paths = self._drive(start, 1)
        except _TooComplex:
            self.report.problems.append(Problem(self._too_complex()))
            return
        finally:
            if collecting:
                gc.enable()
        self.report.states = len(self.memo)
        for node_id in self.flow.nodes:
            if node_id not in self.visited:
                self.report.problems.append(
                    Problem("no combination of answers ever reaches this question", node=node_id)
                )
        self._check_after_protective()

    def _too_complex(self) -> str:
        """Name the questions whose answers multiply the paths most, and what to change."""
        splits: list[tuple[int, str]] = []
        for node_id, node in self.flow.nodes.items():
            if isinstance(node, ChecklistNode):
                count = sum(1 for o in node.options if self._is_structural(o))
                if count > 1:
                    splits.append((2**count, node_id))
            elif isinstance(node, ChoiceNode | YesNoNode):
                splits.append((len(self._alike(node.options)), node_id))
        splits.sort(key=lambda x: (-x[0], x[1]))
        named = [f"'{n}' ({k} ways on)" for k, n in splits[:3] if k > 2]
        busiest = ", ".join(named) or ", ".join(f"'{n}'" for n, _ in self.spent_at.most_common(3))
        return (
            f"the flow is too complex to prove safe: the proof would need more than "
            f"{self.budget} steps. The paths split most at the questions {busiest}. "
            "Simplify: fewer answers in one checklist that branches, rules or follow-ups look "
            "at, fewer questions that split the path after the screening, or fewer branches "
            "that read several answers at once"
        )

    def _drive(self, start: _Walk, weight: int) -> int:
        """Run the walk with an explicit stack of generators instead of recursion."""
        stack: list[_Gen] = [self._enter(start, weight)]
        result: int | None = None
        while stack:
            try:
                call = stack[-1].send(result)  # type: ignore[arg-type]
            except StopIteration as done:
                stack.pop()
                result = done.value
                continue
            stack.append(self._enter(*call))
            result = None
        assert result is not None
        return result

    def _enter(self, walk: _Walk, weight: int) -> _Gen:
        """Walk from ``walk.node``; return the number of paths from here to an end.

        Equal states are explored once: before the triage a state is the node with every
        fact, policy item asked and free option offered; after it, the node with the facts
        a later branch looks at.
        """
        self.visited.add(walk.node)
        node = self.flow.nodes[walk.node]
        if self.triage_ahead[walk.node]:
            key: object = (walk.node, walk.facts, walk.free, walk.asked)
            found = self.memo.get(key)
            self._spend(None)
            if found is None:
                before = self.report.combinations
                paths = yield from self._expand(walk, node, 1)
                found = (paths, self.report.combinations - before)
                self.memo[key] = found
                self.report.combinations += (weight - 1) * found[1]
            else:
                self.report.combinations += weight * found[1]
            return found[0]
        projected = frozenset((k, v) for k, v in walk.facts if k in self.guard_keys)
        key = (walk.node, projected)
        found = self.memo.get(key)
        self._spend(None)
        if found is None:
            level = next((v for k, v in projected if k == "outcome"), None)
            if level in _PROTECTIVE and walk.node not in self.core:
                self.after_protective.setdefault(walk.node, (level, walk))
            plain = _Walk(walk.node, projected, frozenset(), frozenset(), walk.trail)
            paths = yield from self._expand(plain, node, weight)
            found = (paths, 0)
            self.memo[key] = found
        return found[0]

    def _expand(self, walk: _Walk, node: object, weight: int) -> _Gen:
        if isinstance(node, EndNode):
            if not any(k == "outcome" for k, _ in walk.facts):
                self._problem("a dialogue can end here without any outcome", walk, walk.node)
            return 1
        if isinstance(node, TriageNode):
            return (yield from self._triage(walk, weight))
        if isinstance(node, ChoiceNode | YesNoNode):
            total = 0
            asked = walk.asked | self._policy_offered(node.options)
            groups = self._alike(node.options)
            self.spent_at[walk.node] += len(groups) - 1
            for group in groups:
                o = group[0]
                facts = walk.facts | self._facts(o)
                label = f"{walk.node}={'|'.join(x.id for x in group)}"
                nxt = _Walk(walk.node, facts, walk.free, asked, (walk.trail, label))
                total += len(group) * (yield from self._after_answer(nxt, o, weight * len(group)))
            return total
        if isinstance(node, ChecklistNode):
            return (yield from self._checklist(walk, node, weight))
        # text, phone, info, confirm: one way on, no facts
        step = _Walk(walk.node, walk.facts, walk.free, walk.asked, (walk.trail, walk.node))
        return (yield from self._after_answer(step, None, weight))

    def _checklist(self, walk: _Walk, node: ChecklistNode, weight: int) -> _Gen:
        structural = [o for o in node.options if self._is_structural(o)]
        free = [o for o in node.options if not self._is_structural(o)]
        free_plain = [o for o in free if not o.exclusive]
        free_excl = [o for o in free if o.exclusive]
        asked = walk.asked | self._policy_offered(node.options)
        offered = walk.free | {(walk.node, o.id) for o in free_plain if not self._settled(o)}
        total = 0
        for size in range(len(structural) + 1):
            for chosen in combinations(structural, size):
                self._spend(walk.node)
                if any(o.exclusive for o in chosen) and size > 1:
                    continue
                facts = walk.facts.union(*(self._facts(o) for o in chosen))
                label = "+".join(o.id for o in chosen)
                if chosen and not any(o.exclusive for o in chosen):
                    # any subset of the free options may be ticked too, none included
                    combos = weight * 2 ** len(free_plain)
                    nxt = _Walk(
                        walk.node, facts, offered, asked, (walk.trail, f"{walk.node}={label}")
                    )
                    total += yield from self._after_answer(nxt, None, combos)
                elif chosen:
                    nxt = _Walk(
                        walk.node, facts, walk.free, asked, (walk.trail, f"{walk.node}={label}")
                    )
                    total += yield from self._after_answer(nxt, None, weight)
                else:
                    # no structural option: one or more free options, or one free exclusive one
                    if free_plain:
                        combos = weight * (2 ** len(free_plain) - 1)
                        trail = (
                            walk.trail,
                            f"{walk.node}=(any of {', '.join(o.id for o in free_plain)})",
                        )
                        nxt = _Walk(walk.node, facts, offered, asked, trail)
                        total += yield from self._after_answer(nxt, None, combos)
                    for o in free_excl:
                        facts_x = facts | self._facts(o)
                        nxt = _Walk(
                            walk.node,
                            facts_x,
                            walk.free,
                            asked,
                            (walk.trail, f"{walk.node}={o.id}"),
                        )
                        total += yield from self._after_answer(nxt, None, weight)
        return total

    def _after_answer(self, walk: _Walk, option: Option | None, weight: int) -> _Gen:
        flow = self.flow
        fired = emergency_fires(flow, walk.facts)
        if fired:
            facts = walk.facts | {("outcome", "EMERGENCY")}
            self.report.outcomes["EMERGENCY"] += 1
            if self.triage_ahead[walk.node]:
                self.report.combinations += weight
            nxt = _Walk(flow.emergency_node, facts, frozenset(), walk.asked, walk.trail)
            return (yield (nxt, weight))
        missed = sorted(f"{k}={v}" for k, v in walk.facts if (k, v) in self.emergency)
        if missed:
            self._problem(
                f"the emergency sign(s) {', '.join(missed)} do not stop the questionnaire "
                "(no EMERGENCY rule fires)",
                walk,
                walk.node,
            )
        target = next_node(flow, walk.node, option, walk.facts)
        if target is None:
            shown = ", ".join(sorted(f"{k}={v}" for k, v in walk.facts)) or "no answers"
            self._problem(f"dead end: no branch matches the answers ({shown})", walk, walk.node)
            return 0
        return (yield (_Walk(target, walk.facts, walk.free, walk.asked, walk.trail), weight))

    def _fires_at_least(self, facts: FactSet, level: str) -> bool:
        rank = level_rank(level)  # type: ignore[arg-type]
        return any(r_rank >= rank and fires(facts) for r_rank, fires in self.ranked)

    def _alike(self, options: tuple[Option, ...]) -> list[list[Option]]:
        """Group answers that nothing can tell apart: same jump, and every condition and
        policy item sees their facts the same way. One of each group is enough to explore."""
        groups: dict[object, list[Option]] = {}
        for o in options:
            signature = (o.goto, frozenset(self._value_class(f) for f in self._facts(o)))
            groups.setdefault(signature, []).append(o)
        return list(groups.values())

    def _value_class(self, fact: tuple[str, str]) -> object:
        """What every rule, branch and policy item can tell of a fact.

        Two policy answers with the same items (level and precondition) that no condition
        tells apart (prescription "no" and "unsure", say) are the same to the proof."""
        key, value = fact
        tests = self.tests_by_key.get(key, [])
        seen = (key, tuple(t.in_ is None or value in t.in_ for t in tests))
        if fact in self.precondition_facts:
            return fact
        items = tuple((i.min_level, i.when) for i in self.items_by_fact.get(fact, ()))
        return (seen, items, self.single.get(fact, 0))

    def _settled(self, option: Option) -> bool:
        """Whether a free option needs no check at the triage: it records only policy answers,
        each of which a rule of its level fires on by itself (so on any larger set too)."""
        facts = self._facts(option)
        return all(
            fact in self.policy_facts
            and all(self._protected(item, frozenset()) for item in self.items_by_fact[fact])
            for fact in facts
        )

    def _protected(self, item: PolicyItem, facts: FactSet) -> bool:
        """Whether a rule of the item's level or stricter fires on ``facts``.

        Protective rules are monotone, so a rule that fires on the item's fact alone fires
        on every larger set: that answer is cached per item.
        """
        alone = self.alone.get(item)
        if alone is None:
            alone = self._fires_at_least(frozenset({item.fact}), item.min_level)
            self.alone[item] = alone
        return alone or self._fires_at_least(facts, item.min_level)

    def _free_options(self, walk: _Walk) -> list[Option]:
        out: list[Option] = []
        for node_id, option_id in walk.free:
            node = self.flow.nodes[node_id]
            assert isinstance(node, ChecklistNode)
            out.extend(o for o in node.options if o.id == option_id)
        return out

    def _top(self, facts: FactSet) -> int:
        """The rank of the strictest protective rule that fires on ``facts`` (0: none).

        Rules on one answer (all of the policy's) are looked up by fact; the rest are
        evaluated."""
        top = max((self.single[f] for f in facts if f in self.single), default=0)
        for rank, fires in self.compound:
            if rank > top and fires(facts):
                top = rank
        return top

    def _triage(self, walk: _Walk, weight: int) -> _Gen:
        self.report.combinations += weight
        base = walk.facts
        free = self.free_cache.get(walk.free)
        if free is None:
            free = self.free_cache[walk.free] = self._free_options(walk)
        # (1) every policy answer on this path leads at least to its level, whatever else
        candidates: list[tuple[PolicyItem, FactSet]] = []
        for fact in base & self.policy_facts:
            candidates += [(item, base) for item in self.items_by_fact[fact]]
        for o in free:
            extra = self._facts(o)
            for fact in extra & self.policy_facts:
                candidates += [(item, base | extra) for item in self.items_by_fact[fact]]
        for item, facts in candidates:
            if not self._protected(item, facts):
                got = evaluate(self.flow, facts).level
                self._problem(
                    f"SAFETY: the answer {item.fact[0]}={item.fact[1]} must lead to "
                    f"{item.min_level} or stricter ({item.why}), but no such rule fires and "
                    f"the outcome can be {got}",
                    walk,
                    walk.node,
                )
        # (2) a path that may still end in OK or CLEAR has asked about every policy item
        top = self._top(base)
        if top < level_rank("LATER"):
            for item in self.unconditional:
                if item.fact not in walk.asked:
                    self._unasked(item, walk)
            for item in self.conditional:
                if item.fact not in walk.asked and any(w in base for w in item.when):
                    self._unasked(item, walk)
        # (3) go on with every level this path can have
        total = 0
        for level in LEVELS:
            if level == "EMERGENCY" or level_rank(level) < top:
                continue
            self.report.outcomes[level] += 1
            facts = base | {("outcome", level)}
            trail = (walk.trail, f"{walk.node}:{level}")
            target = next_node(self.flow, walk.node, None, facts)
            if target is None:
                self._problem(f"dead end after the outcome {level}", walk, walk.node)
                continue
            total += yield (_Walk(target, facts, frozenset(), walk.asked, trail), 1)
        return total

    def _unasked(self, item: PolicyItem, walk: _Walk) -> None:
        self._problem(
            f"SAFETY: a path that can end in a massage suggestion or a doctor check "
            f"never asks about {item.fact[0]}={item.fact[1]} ({item.why})",
            walk,
            walk.node,
        )

    def _check_after_protective(self) -> None:
        """After STOP or LATER only a call about a doctor's consultation may be offered:
        questions that record answers (oils, a massage booking) and texts that suggest a
        massage are refused there."""
        for node_id, (level, walk) in sorted(self.after_protective.items()):
            node = self.flow.nodes[node_id]
            options: tuple[Option, ...] = getattr(node, "options", ())
            field = getattr(node, "field", None)
            if any(o.facts for o in options) or (field is not None and field not in _CONTACT):
                self._problem(
                    f"after the outcome {level} the client reaches this question, which "
                    "records answers for a massage: after STOP or LATER only a call about a "
                    "doctor's consultation (consent, name, phone, call time) may follow",
                    walk,
                    node_id,
                )
            words = _massage_words(node, with_text=True)
            if words:
                self._problem(
                    f"after the outcome {level} the client reads here words that suggest a "
                    f"massage ({', '.join(words)}): a client who must not have a massage may "
                    "only be offered a call about a doctor's consultation",
                    walk,
                    node_id,
                )
            if isinstance(node, ConfirmNode):
                self._check_summary_after_protective(level, walk, node_id)

    def _check_summary_after_protective(self, level: str, walk: _Walk, node_id: str) -> None:
        """The summary a STOP or LATER client confirms lists the questions answered before
        the triage, by name and answer: none of those may suggest a massage either."""
        for before, node in self.flow.nodes.items():
            if before in self.core or not self.triage_ahead.get(before) or not is_question(node):
                continue
            words = _massage_words(node, with_text=False)
            if words:
                self._problem(
                    f"question '{before}' is named or answered with words that suggest a "
                    f"massage ({', '.join(words)}), and after the outcome {level} the client "
                    "reads them in the summary",
                    walk,
                    node_id,
                )

"""Compose an admin's flow file with the safety policy's screening core into one ``Flow``.

The admin writes the dialogue around the screening core and includes its blocks by
reference. Composition inserts the policy's questions, rules, protective outcome texts and
emergency end, and refuses a file that reaches into what the policy owns: a reserved
question id, a fact key of the policy's vocabulary recorded by an admin's answer, a value
the vocabulary does not know, a jump into the middle of a block. Each refusal says what is
locked and why, in plain words.
"""

from __future__ import annotations

from collections.abc import Mapping

from flows.errors import FlowError, Problem
from flows.policy import EXIT, SafetyPolicy
from flows.schema import (
    LANGS,
    AdminRule,
    Condition,
    EndNode,
    Flow,
    FlowFile,
    Node,
    OutcomeText,
    Rule,
    ScreeningNode,
    Text,
    Transition,
    atoms_of,
)

__all__ = ["compose", "fill"]

_WHERE = "the screening core (flows/definitions/screening.yaml, changed only as code is)"


def fill(text: Text, values: Mapping[str, str]) -> Text:
    """Put setting values (``{phone}``, ``{hours}``) into a text."""
    if not values:
        return text
    out = {}
    for lang in LANGS:
        raw = text.get(lang)
        for key, value in values.items():
            raw = raw.replace("{" + key + "}", value)
        out[lang] = raw
    return Text(**out)


def _with_disclaimer(outcome: OutcomeText, disclaimer: Text | None) -> OutcomeText:
    if disclaimer is None:
        return outcome
    text = Text(
        ru=f"{outcome.text.ru}\n\n{disclaimer.ru}", en=f"{outcome.text.en}\n\n{disclaimer.en}"
    )
    return OutcomeText(title=outcome.title, text=text)


def _targets(node: object) -> list[str]:
    out: list[str] = []
    for o in getattr(node, "options", ()):
        if o.goto:
            out.append(o.goto)
    nxt = getattr(node, "next", None)
    if isinstance(nxt, str):
        out.append(nxt)
    elif isinstance(nxt, tuple):
        out += [t.to for t in nxt]
    return out


def _conditions(node: object) -> list[Condition]:
    nxt = getattr(node, "next", None)
    if isinstance(nxt, tuple):
        return [t.when for t in nxt if t.when is not None]
    return []


def _vocabulary_problems(
    cond: Condition, policy: SafetyPolicy, what: str, node: str | None
) -> list[Problem]:
    problems = []
    for key, value in sorted(atoms_of(cond), key=lambda a: (a[0], a[1] or "")):
        allowed = policy.vocabulary.get(key)
        if allowed is not None and value is not None and value not in allowed:
            problems.append(
                Problem(
                    f"{what} looks for {key}={value}, but the safety policy's '{key}' has only "
                    f"the values {', '.join(allowed)} (the screening core records them, so a "
                    "renamed value would never match)",
                    node=node,
                )
            )
    return problems


def _relabel(node: Node, values: Mapping[str, str]) -> Node:
    """Fill setting values into every text of an admin's node."""
    if not values:
        return node
    update: dict[str, object] = {"text": fill(node.text, values)}
    summary = getattr(node, "summary", None)
    if summary is not None:
        update["summary"] = fill(summary, values)
    options = getattr(node, "options", None)
    if options is not None:
        update["options"] = tuple(
            o.model_copy(update={"label": fill(o.label, values)}) for o in options
        )
    return node.model_copy(update=update)


def compose(
    file: FlowFile, policy: SafetyPolicy, *, values: Mapping[str, str] | None = None
) -> Flow:
    """Return the runnable flow: the admin's file with the screening core put in.

    ``values`` fills ``{phone}`` and ``{hours}`` placeholders in the admin's texts (the
    checker composes without them, so a number typed into a text is caught there).
    Raises ``FlowError`` naming each question that reaches into the policy's part.
    """
    values = values or {}
    problems: list[Problem] = []
    reserved = policy.node_ids
    refs: dict[str, ScreeningNode] = {}
    for node_id, node in file.nodes.items():
        if isinstance(node, ScreeningNode):
            block = policy.block(node.block)
            if block is None:
                names = ", ".join(b.name for b in policy.blocks)
                problems.append(
                    Problem(
                        f"there is no screening block '{node.block}' (use {names})", node=node_id
                    )
                )
            elif node_id != block.entry:
                problems.append(
                    Problem(
                        f"write the screening block '{node.block}' under the id "
                        f"'{block.entry}', so every question can refer to it",
                        node=node_id,
                    )
                )
            else:
                refs[node_id] = node
            continue
        if node_id in reserved:
            problems.append(
                Problem(
                    f"the id '{node_id}' belongs to {_WHERE}: its questions, answers and "
                    "texts are locked because the safety proof rests on them; include the "
                    f"block with 'kind: screening' instead of writing the question",
                    node=node_id,
                )
            )
        for o in getattr(node, "options", ()):
            owned = sorted(k for k in o.facts if k in policy.owned_keys)
            if owned:
                problems.append(
                    Problem(
                        f"answer {o.id} records {', '.join(owned)}, a fact owned by the safety "
                        "policy: only its screening questions may record it, so that a label "
                        "always means what the proof assumes",
                        node=node_id,
                    )
                )
        for cond in _conditions(node):
            problems += _vocabulary_problems(cond, policy, "a branch", node_id)
    for block in policy.blocks:
        if block.entry not in refs:
            problems.append(
                Problem(
                    f"the screening block '{block.name}' is missing: every flow must include "
                    f"it ('{block.entry}: {{kind: screening, block: {block.name}, next: …}}')"
                )
            )
    inner = reserved - {b.entry for b in policy.blocks}
    for node_id, node in file.nodes.items():
        for target in _targets(node):
            if target in inner:
                problems.append(
                    Problem(
                        f"leads to '{target}', a question inside a screening block; lead to "
                        "the block itself, so none of its questions can be skipped",
                        node=node_id,
                    )
                )
    if file.start in inner:
        problems.append(Problem(f"start points inside a screening block ('{file.start}')"))
    policy_rule_ids = {r.id for r in policy.rules}
    if policy.default_rule is not None:
        policy_rule_ids.add(policy.default_rule.id)
    for rule in file.rules:
        if rule.id in policy_rule_ids:
            problems.append(Problem(f"rule {rule.id}: this id is used by the safety policy"))
        problems += _vocabulary_problems(rule.when, policy, f"rule {rule.id}", None)
    if problems:
        raise FlowError(problems)

    nodes: dict[str, Node] = {}
    for node_id, node in file.nodes.items():
        if isinstance(node, ScreeningNode):
            block = policy.block(node.block)
            assert block is not None
            exit_to: tuple[Transition, ...] = (
                (Transition(to=node.next),) if isinstance(node.next, str) else node.next
            )
            for inner_id, inner_node in block.nodes:
                assert not isinstance(inner_node, EndNode)
                assert isinstance(inner_node.next, tuple)
                nxt: list[Transition] = []
                for tr in inner_node.next:
                    nxt += list(exit_to) if tr.to == EXIT else [tr]
                nodes[inner_id] = inner_node.model_copy(update={"next": tuple(nxt)})
        else:
            nodes[node_id] = _relabel(node, values)
    assert policy.emergency_end is not None and policy.default_rule is not None
    end_id, end_node = policy.emergency_end
    nodes[end_id] = end_node
    admin_rules: tuple[Rule, ...] = tuple(
        Rule(**{k: getattr(r, k) for k in Rule.model_fields}) if isinstance(r, AdminRule) else r
        for r in file.rules
    )
    if values:
        admin_rules = tuple(
            r.model_copy(
                update={
                    "reason": fill(r.reason, values),
                    "advice": fill(r.advice, values) if r.advice else None,
                }
            )
            for r in admin_rules
        )
    outcomes = {lv: _with_disclaimer(t, policy.disclaimer) for lv, t in policy.outcomes.items()}
    ok = file.outcomes["OK"]
    ok = OutcomeText(title=fill(ok.title, values), text=fill(ok.text, values))
    outcomes["OK"] = _with_disclaimer(ok, policy.disclaimer)
    return Flow(
        name=file.name,
        title=fill(file.title, values),
        version=file.version,
        source_document=file.source_document,
        start=file.start,
        emergency_node=end_id,
        nodes=nodes,
        rules=policy.rules + admin_rules,
        default_rule=policy.default_rule,
        outcomes=outcomes,
    )

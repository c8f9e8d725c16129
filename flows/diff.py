"""Say what changed between two versions of a flow, in words an admin reads without code."""

from __future__ import annotations

from flows.markup import plain_text
from flows.schema import (
    LANGS,
    LEVELS,
    AllOf,
    AnyOf,
    ChecklistNode,
    ChoiceNode,
    Condition,
    EndNode,
    FactIs,
    Flow,
    Lang,
    Node,
    NotOf,
    Option,
    PhoneNode,
    Rule,
    Text,
    TextNode,
    Transition,
    YesNoNode,
)

__all__ = ["KIND_NAMES", "diff_flows", "excerpts", "render_condition", "render_next"]

#: What each node kind is called in messages for admins.
KIND_NAMES: dict[str, str] = {
    "choice": "choice (one answer)",
    "yesno": "yes/no question",
    "checklist": "checklist (several answers)",
    "text": "free text",
    "phone": "phone number",
    "info": "information",
    "triage": "outcome calculation",
    "confirm": "answer check",
    "end": "end",
}

#: How many characters of a changed text each side of an arrow shows.
EXCERPT = 60


# --- conditions ---------------------------------------------------------------


def render_condition(cond: Condition) -> str:
    """Return ``cond`` as a readable phrase: ``condition is hernia and hernia_stage is unknown``."""
    return _cond(cond, nested=False)


def _values(values: tuple[str, ...]) -> str:
    if len(values) == 1:
        return values[0]
    return ", ".join(values[:-1]) + " or " + values[-1]


def _cond(cond: Condition, *, nested: bool) -> str:
    if isinstance(cond, FactIs):
        if cond.in_ is None:
            return f"{cond.fact} is set"
        return f"{cond.fact} is {_values(cond.in_)}"
    if isinstance(cond, NotOf):
        inner = cond.not_
        if isinstance(inner, FactIs):
            if inner.in_ is None:
                return f"{inner.fact} is not set"
            if len(inner.in_) == 1:
                return f"{inner.fact} is not {inner.in_[0]}"
            return f"{inner.fact} is neither " + " nor ".join(inner.in_)
        return f"not ({_cond(inner, nested=False)})"
    if isinstance(cond, AllOf):
        parts, joiner = cond.all, " and "
    else:
        assert isinstance(cond, AnyOf)
        parts, joiner = cond.any, " or "
    if len(parts) == 1:
        return _cond(parts[0], nested=nested)
    text = joiner.join(_cond(p, nested=True) for p in parts)
    return f"({text})" if nested else text


def render_next(next_: str | tuple[Transition, ...] | None) -> str:
    """Return where a question goes next: ``'acute'`` or ``if … → 'x'; otherwise → 'y'``."""
    if next_ is None:
        return "not set"
    if isinstance(next_, str):
        return f"'{next_}'"
    return "; ".join(_branch_text(c, t, i) for i, (c, t) in enumerate(_branches(next_)))


# --- texts --------------------------------------------------------------------


def _flat(text: str) -> str:
    return " ".join(plain_text(text).split())


def excerpts(old: str, new: str, width: int = EXCERPT) -> tuple[str, str]:
    """Return short excerpts of two texts around where they first differ (plain, one line)."""
    a, b = _flat(old), _flat(new)
    same = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        same += 1
    start = 0
    if max(len(a), len(b)) > width and same > width // 3:
        start = same - width // 3
        space = a.rfind(" ", 0, start + 1)
        if space > start - 12:
            start = space + 1

    def cut(s: str) -> str:
        piece = s[start : start + width]
        if start + width < len(s):
            piece = piece.rstrip() + "…"
        return ("…" if start else "") + piece

    return cut(a), cut(b)


def _quote(text: str, width: int = EXCERPT) -> str:
    flat = _flat(text)
    return f'"{flat[:width].rstrip()}…"' if len(flat) > width else f'"{flat}"'


def _langs(lang: Lang) -> tuple[Lang, ...]:
    return (lang, *(x for x in LANGS if x != lang))


def _text_changes(what: str, old: Text | None, new: Text | None, lang: Lang) -> list[str]:
    """Lines for a text that may be added, removed or changed in some languages."""
    if old == new:
        return []
    if old is None:
        assert new is not None
        return [f"{what} added: {_quote(new.get(lang))}"]
    if new is None:
        return [f"{what} removed (was {_quote(old.get(lang))})"]
    out = []
    for code in _langs(lang):
        if old.get(code) != new.get(code):
            before, after = excerpts(old.get(code), new.get(code))
            out.append(f'{what} ({code}) changed: "{before}" → "{after}"')
    return out


def _str_change(what: str, old: str, new: str) -> list[str]:
    if old == new:
        return []
    before, after = excerpts(old, new)
    return [f'{what} changed: "{before}" → "{after}"']


# --- the flow -----------------------------------------------------------------


def diff_flows(old: Flow, new: Flow, *, lang: Lang = "en") -> list[str]:
    """Return one plain line per difference between ``old`` and ``new`` (empty: the same).

    The version checksum is ignored: two files that differ only in comments or
    layout give no lines. Texts are quoted in ``lang`` (other languages follow).
    """
    lines: list[str] = []
    lines += _general(old, new, lang)
    lines += _nodes(old, new, lang)
    lines += _rules(old, new, lang)
    lines += _default_rule(old, new, lang)
    for level in LEVELS:
        a, b = old.outcomes[level], new.outcomes[level]
        lines += [f"Outcome {level}: {x}" for x in _text_changes("title", a.title, b.title, lang)]
        lines += [f"Outcome {level}: {x}" for x in _text_changes("text", a.text, b.text, lang)]
    return lines


def _general(old: Flow, new: Flow, lang: Lang) -> list[str]:
    lines = []
    if old.name != new.name:
        lines.append(f"Flow name changed from '{old.name}' to '{new.name}'")
    lines += [f"Flow {x}" for x in _text_changes("title", old.title, new.title, lang)]
    if old.start != new.start:
        lines.append(f"First question changed from '{old.start}' to '{new.start}'")
    if old.emergency_node != new.emergency_node:
        lines.append(
            f"Emergency stop (emergency_node) changed from '{old.emergency_node}' "
            f"to '{new.emergency_node}'"
        )
    if old.source_document != new.source_document:
        lines.append(
            f"Source document changed from {old.source_document or 'none'} "
            f"to {new.source_document or 'none'}"
        )
    return lines


def _node_name(node: Node, lang: Lang) -> str:
    if node.summary is not None:
        return _quote(node.summary.get(lang))
    lines = plain_text(node.text.get(lang)).strip().splitlines()
    return _quote(lines[0] if lines else "")


def _nodes(old: Flow, new: Flow, lang: Lang) -> list[str]:
    lines = []
    for node_id, node in new.nodes.items():
        if node_id not in old.nodes:
            kind = KIND_NAMES[node.kind]
            lines.append(f"Question '{node_id}' added ({kind}): {_node_name(node, lang)}")
    for node_id, node in old.nodes.items():
        if node_id not in new.nodes:
            kind = KIND_NAMES[node.kind]
            lines.append(f"Question '{node_id}' removed ({kind}): {_node_name(node, lang)}")
    for node_id, node in new.nodes.items():
        if node_id in old.nodes:
            changes = _node_changes(old.nodes[node_id], node, lang)
            lines += [f"Question '{node_id}': {c}" for c in changes]
    return lines


def _node_changes(old: Node, new: Node, lang: Lang) -> list[str]:
    out = []
    if old.kind != new.kind:
        out.append(f"kind changed from {KIND_NAMES[old.kind]} to {KIND_NAMES[new.kind]}")
    out += _text_changes("text", old.text, new.text, lang)
    out += _text_changes("summary", old.summary, new.summary, lang)
    out += _settings(old, new)
    asks = ChoiceNode | YesNoNode | ChecklistNode
    if isinstance(old, asks) and isinstance(new, asks):
        out += _options(old.options, new.options, lang)
    elif isinstance(new, asks):
        out.append("its answers are now " + _option_list(new.options, lang))
    elif isinstance(old, asks):
        out.append("it no longer has answers (before: " + _option_list(old.options, lang) + ")")
    if not isinstance(old, EndNode) and not isinstance(new, EndNode):
        out += _next(old.next, new.next)
    return out


def _settings(old: Node, new: Node) -> list[str]:
    out = []
    old_field, new_field = getattr(old, "field", None), getattr(new, "field", None)
    if old_field != new_field:
        if new_field is None:
            out.append(f"the answer is no longer stored as '{old_field}'")
        elif old_field is None:
            out.append(f"the answer is now stored as '{new_field}'")
        else:
            out.append(f"the answer is now stored as '{new_field}' (before: '{old_field}')")
    if isinstance(old, TextNode) and isinstance(new, TextNode) and old.max_length != new.max_length:
        out.append(f"longest answer changed from {old.max_length} to {new.max_length} characters")
    if isinstance(old, PhoneNode) and isinstance(new, PhoneNode) and old.region != new.region:
        out.append(f"phone numbers are now read for region {new.region} (before: {old.region})")
    if isinstance(old, EndNode) and isinstance(new, EndNode) and old.save != new.save:
        out.append("now saves a request" if new.save else "no longer saves a request")
    return out


def _option_list(options: tuple[Option, ...], lang: Lang) -> str:
    return ", ".join(f"'{o.id}' {_quote(o.label.get(lang), 30)}" for o in options)


def _facts(option: Option) -> str:
    if not option.facts:
        return "nothing"
    return ", ".join(f"{k} = {', '.join(vs)}" for k, vs in option.facts.items())


def _goto(option: Option) -> str:
    return f"'{option.goto}'" if option.goto else "the question's next"


def _options(old: tuple[Option, ...], new: tuple[Option, ...], lang: Lang) -> list[str]:
    out = []
    before = {o.id: o for o in old}
    after = {o.id: o for o in new}
    for o in new:
        if o.id not in before:
            out.append(f"answer '{o.id}' added: {_quote(o.label.get(lang))}")
    for o in old:
        if o.id not in after:
            out.append(f"answer '{o.id}' removed: {_quote(o.label.get(lang))}")
    for o in new:
        p = before.get(o.id)
        if p is None:
            continue
        what = f"answer '{o.id}'"
        for code in _langs(lang):
            if p.label.get(code) != o.label.get(code):
                out.append(
                    f"{what} relabelled ({code}): "
                    f"{_quote(p.label.get(code))} → {_quote(o.label.get(code))}"
                )
        if p.facts != o.facts:
            out.append(f"{what} now records {_facts(o)} (before: {_facts(p)})")
        if p.goto != o.goto:
            out.append(f"{what} now goes to {_goto(o)} (before: {_goto(p)})")
        if p.exclusive != o.exclusive:
            out.append(f"{what} is {'now' if o.exclusive else 'no longer'} exclusive")
    kept_old = [o.id for o in old if o.id in after]
    kept_new = [o.id for o in new if o.id in before]
    if kept_old != kept_new:
        out.append("answers reordered: " + ", ".join(f"'{i}'" for i in kept_new))
    return out


def _branches(next_: str | tuple[Transition, ...] | None) -> list[tuple[str | None, str]]:
    if next_ is None:
        return []
    if isinstance(next_, str):
        return [(None, next_)]
    return [(render_condition(t.when) if t.when else None, t.to) for t in next_]


def _next(
    old: str | tuple[Transition, ...] | None, new: str | tuple[Transition, ...] | None
) -> list[str]:
    a, b = _branches(old), _branches(new)
    if a == b:
        return []
    if len(a) == len(b) == 1 and a[0][0] is None and b[0][0] is None:
        return [f"next question changed from '{a[0][1]}' to '{b[0][1]}'"]
    targets_a, targets_b = [t for _, t in a], [t for _, t in b]
    if not a or not b or len(set(targets_a)) < len(a) or len(set(targets_b)) < len(b):
        return [f"next changed: {render_next(new)} (before: {render_next(old)})"]
    out = []
    cond_a, cond_b = dict((t, c) for c, t in a), dict((t, c) for c, t in b)
    for i, (cond, target) in enumerate(b):
        if target not in cond_a:
            out.append(f"new branch: {_branch_text(cond, target, i)}")
    for i, (cond, target) in enumerate(a):
        if target not in cond_b:
            out.append(f"branch removed: {_branch_text(cond, target, i)}")
    index_a = {t: i for i, t in enumerate(targets_a)}
    for i, (cond, target) in enumerate(b):
        if target in cond_a and cond_a[target] != cond:
            before = _when(cond_a[target], index_a[target])
            out.append(f"branch to '{target}' now taken {_when(cond, i)} (before: {before})")
    kept_a = [t for t in targets_a if t in cond_b]
    kept_b = [t for t in targets_b if t in cond_a]
    if kept_a != kept_b:
        out.append("branches reordered (the first that fits is taken): " + render_next(new))
    return out


def _when(cond: str | None, index: int) -> str:
    if cond is None:
        return "otherwise" if index else "always"
    return f"if {cond}"


def _branch_text(cond: str | None, target: str, index: int) -> str:
    return f"{_when(cond, index)} → '{target}'"


# --- rules --------------------------------------------------------------------


def _rule_summary(rule: Rule) -> str:
    return f"{rule.level} when {render_condition(rule.when)}"


def _rules(old: Flow, new: Flow, lang: Lang) -> list[str]:
    out = []
    before = {r.id: r for r in old.rules}
    after = {r.id: r for r in new.rules}
    for r in new.rules:
        if r.id not in before:
            out.append(f"Rule '{r.id}' added: {_rule_summary(r)}")
    for r in old.rules:
        if r.id not in after:
            out.append(f"Rule '{r.id}' removed (it gave {_rule_summary(r)})")
    for r in new.rules:
        p = before.get(r.id)
        if p is None:
            continue
        changes = []
        if p.level != r.level:
            changes.append(f"level changed from {p.level} to {r.level}")
        if p.when != r.when:
            changes.append(
                f"condition changed: {render_condition(p.when)} → {render_condition(r.when)}"
            )
        changes += _text_changes("reason", p.reason, r.reason, lang)
        changes += _text_changes("advice", p.advice, r.advice, lang)
        if p.course_sessions != r.course_sessions:
            changes.append(
                f"course changed from {p.course_sessions or 'none'} to "
                f"{r.course_sessions or 'none'} sessions"
            )
        changes += _str_change("source", p.source, r.source)
        if p.basis != r.basis:
            changes.append(f"basis changed from {p.basis} to {r.basis}")
        out += [f"Rule '{r.id}': {c}" for c in changes]
    return out


def _default_rule(old: Flow, new: Flow, lang: Lang) -> list[str]:
    a, b = old.default_rule, new.default_rule
    changes = []
    if a.id != b.id:
        changes.append(f"id changed from '{a.id}' to '{b.id}'")
    if a.level != b.level:
        changes.append(f"level changed from {a.level} to {b.level}")
    changes += _text_changes("reason", a.reason, b.reason, lang)
    changes += _str_change("source", a.source, b.source)
    if a.basis != b.basis:
        changes.append(f"basis changed from {a.basis} to {b.basis}")
    return [f"Default rule (when no rule fits): {c}" for c in changes]

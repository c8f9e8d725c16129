"""A differential property test: random admin edits, the checker, and the real engine.

Hypothesis edits the shipped flow file as an admin could (renamed values, changed labels,
re-tagged, added and deleted answers and questions, reordered branches, changed rule
levels, redirected jumps, new rules). Whenever the checker passes an edit, random clients
walk the real engine on it, and the oracle (which reads only the safety policy, never the
edited file) looks at what each client actually answered: a client who picked an absolute
contraindication never reaches OK or CLEAR, and an emergency sign always ends in EMERGENCY.
"""

from __future__ import annotations

import copy
from io import StringIO
from typing import Any

from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from flows import POLICY, Flow, check_text, decode
from flows.schema import level_rank
from tests.factories import INTAKE_PATH, Client

_YAML = YAML(typ="rt")
_YAML.width = 4096
_BASE = _YAML.load(INTAKE_PATH.read_text())
_LEVELS = ["EMERGENCY", "STOP", "LATER", "CLEAR", "OK"]

#: Answers of the screening core, as the policy defines them: (question, answer) → facts.
_CORE: dict[tuple[str, str], set[tuple[str, str]]] = {
    (node_id, o.id): {(k, v) for k, vs in o.facts.items() for v in vs}
    for block in POLICY.blocks
    for node_id, node in block.nodes
    for o in getattr(node, "options", ())
}
_ABSOLUTE = {i.fact for i in POLICY.items if level_rank(i.min_level) >= level_rank("LATER")}
_EMERGENCY = POLICY.emergency
#: Facts an edit may put on an admin's answer: the policy's own and others.
_FACT_POOL = sorted(POLICY.facts) + [("oils", "yes"), ("mood", "calm"), ("pressure", "high")]
_WORDS = ["hernia", "HIV", "None of these", "Cancer", "Нет", "scoliosis", "x"]


def _admin_nodes(d: Any) -> list[str]:
    return [n for n, node in d["nodes"].items() if node.get("kind") != "screening"]


def _asking(d: Any) -> list[str]:
    return [n for n in _admin_nodes(d) if "options" in d["nodes"][n]]


@st.composite
def edits(draw: st.DrawFn) -> str:
    d = copy.deepcopy(_BASE)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(
            st.sampled_from(
                ["label", "retag", "rename", "add_option", "drop_option", "drop_node",
                 "add_node", "reorder", "level", "redirect", "add_rule"]
            )
        )  # fmt: skip
        nodes = d["nodes"]
        asking = _asking(d)
        if kind == "label" and asking:
            node = nodes[draw(st.sampled_from(asking))]
            o = draw(st.sampled_from(list(node["options"])))
            o["label"]["en"] = o["label"]["ru"] = draw(st.sampled_from(_WORDS))
        elif kind == "retag" and asking:
            node = nodes[draw(st.sampled_from(asking))]
            o = draw(st.sampled_from(list(node["options"])))
            key, value = draw(st.sampled_from(_FACT_POOL))
            o["facts"] = {key: value}
        elif kind == "rename":
            r = draw(st.sampled_from(list(d["rules"])))
            r["when"] = {"fact": "condition", "in": [draw(st.sampled_from(["hernia2", "disc"]))]}
        elif kind == "add_option" and asking:
            node = nodes[draw(st.sampled_from(asking))]
            key, value = draw(st.sampled_from(_FACT_POOL))
            word = draw(st.sampled_from(_WORDS))
            node["options"].append(
                {"id": "added", "label": {"ru": word, "en": word}, "facts": {key: value}}
            )
        elif kind == "drop_option" and asking:
            node = nodes[draw(st.sampled_from(asking))]
            if len(node["options"]) > 2:
                node["options"].pop(draw(st.integers(0, len(node["options"]) - 1)))
        elif kind == "drop_node":
            victim = draw(st.sampled_from(list(nodes)))
            del nodes[victim]
        elif kind == "add_node":
            before = draw(st.sampled_from(_admin_nodes(d)))
            node = nodes[before]
            if isinstance(node.get("next"), str):
                nodes["added_info"] = {
                    "kind": "info",
                    "text": {"ru": "Инфо", "en": "Info"},
                    "next": node["next"],
                }
                node["next"] = "added_info"
        elif kind == "reorder":
            branches = nodes["triage"]["next"]
            if isinstance(branches, list) and len(branches) > 1:
                branches.reverse()
        elif kind == "level":
            r = draw(st.sampled_from(list(d["rules"])))
            r["level"] = draw(st.sampled_from(_LEVELS))
        elif kind == "redirect":
            source = draw(st.sampled_from(list(nodes)))
            target = draw(st.sampled_from(list(nodes)))
            if nodes[source].get("kind") != "end":
                nodes[source]["next"] = target
        elif kind == "add_rule":
            key, value = draw(st.sampled_from(_FACT_POOL))
            d["rules"].append(
                {
                    "id": "added_rule",
                    "level": draw(st.sampled_from(_LEVELS)),
                    "when": {"fact": key, "in": [value]},
                    "reason": {"ru": "Правило", "en": "A rule"},
                    "advice": {"ru": "Совет", "en": "Advice"},
                    "source": "Each course must be supervised by a physician.",
                }
            )
    buf = StringIO()
    _YAML.dump(d, buf)
    return buf.getvalue()


def _answered_core(client: Client) -> set[tuple[str, str]]:
    """The policy facts behind the client's current answers to screening questions."""
    out: set[tuple[str, str]] = set()
    for entry in client.state.history:
        if entry.auto:
            continue
        for option_id in entry.options:
            out |= _CORE.get((entry.node, option_id), set())
    return out


def _walk(flow: Flow, data: st.DataObject, lang: str) -> None:
    client = Client(flow=flow, lang=lang)  # type: ignore[arg-type]
    for _ in range(60):
        if client.state.finished:
            break
        buttons = [b for m in client.messages for row in m.buttons for b in row]
        answers = [b for b in buttons if not b.data.startswith(("b:", "r:"))]
        if not answers:
            client.type(data.draw(st.sampled_from(["Anna", "+7 912 345-67-89"])))
            continue
        inp = decode(data.draw(st.sampled_from(answers)).data)
        assert inp is not None
        client.send(inp)
    answered = _answered_core(client)
    outcome = client.outcome
    if answered & _EMERGENCY:
        assert outcome == "EMERGENCY" and client.state.finished, answered
    if outcome is not None and answered & _ABSOLUTE:
        assert outcome not in ("OK", "CLEAR"), (answered & _ABSOLUTE, outcome)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)
@given(text=edits(), data=st.data(), lang=st.sampled_from(["ru", "en"]))
def test_every_edit_the_checker_passes_keeps_clients_safe(
    text: str, data: st.DataObject, lang: str
) -> None:
    report = check_text(text, origin="edited")
    event("the checker passed the edit" if report.ok else "the checker refused the edit")
    if not report.ok or report.flow is None:
        return
    for _ in range(6):
        _walk(report.flow, data, lang)

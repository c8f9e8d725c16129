"""The graph description: every node and rule, labelled in the admin's language, outcomes shown."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from bot.files import load_flow_file as load_flow
from flows import LEVELS, Flow
from flows.catalogue import CATALOGUE
from flows.graph import LEVEL_COLOURS, Graph, describe, to_mermaid
from tests.factories import intake_flow
from tests.flows.test_checker import variant

CYRILLIC = re.compile(r"[А-Яа-яЁё]")
#: What labels in code English look like: "condition is hernia", "oil_allergy", "a=b".
CODE_WORDS = re.compile(r"\bis\b|=|\w_\w")


def texts(graph: Graph) -> list[str]:
    """Every text of the picture taken from the flow (ids and outcome codes aside)."""
    out = [graph.title, *(n.label for n in graph.nodes), *(t for _, t in graph.outcomes)]
    out += [e.label for e in graph.edges if e.kind == "answer"]
    return out + composed(graph)


def composed(graph: Graph) -> list[str]:
    """The texts the description writes itself: branch labels, conditions and rules."""
    out = [n.asked_if for n in graph.nodes if n.asked_if]
    out += [e.label for e in graph.edges if e.label and e.kind == "branch" and not e.levels]
    return out + [r.answers for r in graph.rules]


def edge(graph: Graph, source: str, target: str) -> Any:
    found = [e for e in graph.edges if (e.source, e.target) == (source, target)]
    assert len(found) == 1, (source, target, found)
    return found[0]


# --- labels in the admin's language --------------------------------------------------


def test_russian_labels_are_russian_and_use_the_dialogues_own_answers() -> None:
    graph = describe(intake_flow(), lang="ru")
    for text in texts(graph):
        assert CYRILLIC.search(text), text
    for text in composed(graph):
        assert not CODE_WORDS.search(text), text
    assert graph.node("welcome").label == "Начало разговора"
    assert graph.node("hernia_stage").asked_if == "Межпозвоночная грыжа"
    assert graph.node("scoliosis_degree").asked_if == "Сколиоз"
    assert graph.node("neck_checked").asked_if == (
        "Боль в шее или Отдел позвоночника: Шейный / Несколько отделов"
    )
    assert edge(graph, "welcome", "after_massage").label == "Спина болит после массажа"
    assert edge(graph, "oil_allergy", "oil_base_only").label == "Да, есть аллергия / Не знаю"
    assert edge(graph, "oil_allergy", "oil_scent").label == "иначе"


def test_english_labels_are_english_without_code_words() -> None:
    graph = describe(intake_flow(), lang="en")
    for text in texts(graph):
        assert not CYRILLIC.search(text), text
    for text in composed(graph):
        assert not CODE_WORDS.search(text), text
    assert graph.node("hernia_stage").asked_if == "Herniated disc"
    assert graph.node("sciatica_phase").asked_if == "Sciatica or lumbago"
    assert edge(graph, "oil_allergy", "oil_scent").label == "otherwise"
    assert graph.word("rules") == CATALOGUE["graph.rules"]["en"]


def test_every_fixed_label_has_both_languages() -> None:
    labels = {k: v for k, v in CATALOGUE.items() if k.startswith("graph.")}
    assert labels, "the picture's words are in the catalogue"
    for key, words in labels.items():
        assert set(words) == {"ru", "en"}, key
        assert all(w.strip() for w in words.values()), key


# --- rules and outcomes ----------------------------------------------------------------


def test_every_rule_appears_with_the_outcome_it_gives() -> None:
    flow = intake_flow()
    for lang in ("ru", "en"):
        graph = describe(flow, lang=lang)
        shown = {(r.id, r.level) for r in graph.rules}
        wanted = {(r.id, r.level) for r in flow.rules}
        assert shown == wanted | {(flow.default_rule.id, flow.default_rule.level)}
        assert [lv for lv, _ in graph.outcomes] == list(LEVELS)
    rules = {r.id: r for r in describe(flow, lang="ru").rules}
    assert rules["hernia_pain_now"].level == "STOP"
    assert rules["hernia_pain_now"].answers == "Состояние грыжи: Сейчас есть боль"
    assert rules["hernia_pain_now"].nodes == ("hernia_stage",)
    assert rules["c_oncology"].answers == "Хронические заболевания: Онкологическое заболевание"
    assert rules["c_oncology"].nodes == ("chronic",)
    assert rules["caution_recent_fracture"].answers == "Недавний перелом позвоночника: Да"
    assert rules["ok_scoliosis"].answers == (
        "Что беспокоит: Сколиоз и Степень сколиоза: 1-я степень / 2-я степень / 3-я степень"
    )
    assert rules["ok_scoliosis"].nodes == ("conditions", "scoliosis_degree")
    assert rules["no_rule"].default and rules["no_rule"].level == "CLEAR"


def test_each_question_shows_the_outcomes_its_answers_can_give() -> None:
    graph = describe(intake_flow())
    assert graph.node("emergency").levels == ("EMERGENCY",)
    assert graph.node("chronic").levels == ("STOP", "CLEAR")
    assert graph.node("acute").levels == ("STOP", "LATER", "CLEAR")
    assert graph.node("hernia_stage").levels == ("STOP", "CLEAR", "OK")
    assert graph.node("osteo_region").levels == ()
    assert graph.node("welcome").levels == ()


def test_triage_branches_and_the_emergency_stop_carry_their_outcomes() -> None:
    graph = describe(intake_flow())
    assert edge(graph, "triage", "offer_call").levels == ("STOP", "LATER")
    assert edge(graph, "triage", "offer_call").label == "STOP / LATER"
    assert edge(graph, "triage", "oils").levels == ("CLEAR", "OK")
    stop = edge(graph, "emergency", "emergency_stop")
    assert stop.kind == "interrupt" and stop.levels == ("EMERGENCY",)
    assert stop.label == "emergency sign"
    assert graph.node("emergency_stop").emergency


# --- the shape of the graph --------------------------------------------------------------


def test_every_node_once_and_edges_between_known_nodes() -> None:
    flow = intake_flow()
    graph = describe(flow)
    assert [n.id for n in graph.nodes] == list(flow.nodes)
    assert all(e.source in flow.nodes and e.target in flow.nodes for e in graph.edges)
    pairs = [(e.source, e.target) for e in graph.edges]
    assert len(pairs) == len(set(pairs))
    assert graph.start == flow.start and graph.version == flow.version


def test_follow_ups_form_one_chain_instead_of_a_tangle() -> None:
    graph = describe(intake_flow())
    chain = ["conditions", "scoliosis_degree", "osteo_region", "radiculitis_phase",
             "sciatica_phase", "hernia_stage", "neck_checked", "prescription", "acute"]  # fmt: skip
    for a, b in zip(chain, chain[1:], strict=False):
        assert edge(graph, a, b).kind == "step"
    inside = set(chain[:-1])
    leaving = [e for e in graph.edges if e.source in inside]
    assert len(leaving) == len(chain) - 1  # one edge each, no skip edges
    assert all(graph.node(n).asked_if for n in chain[1:-1])
    assert not graph.node("conditions").asked_if and not graph.node("acute").asked_if


def test_branches_that_are_no_chain_are_labelled_in_words(tmp_path: Path) -> None:
    def edit(d: Any) -> None:
        d["nodes"]["oil_allergy"]["next"] = [
            {"when": {"not": {"fact": "oil_allergy", "in": ["none"]}}, "to": "oil_base_only"},
            {"when": {"fact": "oils", "in": ["undecided"]}, "to": "oil_info"},
            {"to": "oil_scent"},
        ]

    flow = load_flow(variant(tmp_path, edit))
    ru = describe(flow, lang="ru")
    assert edge(ru, "oil_allergy", "oil_base_only").label == "не Нет аллергии"
    assert edge(ru, "oil_allergy", "oil_info").label == "Ароматические масла: Пока не знаю"
    assert edge(ru, "oil_allergy", "oil_scent").label == "иначе"
    en = describe(flow, lang="en")
    assert edge(en, "oil_allergy", "oil_base_only").label == "not No allergy"


def test_the_description_is_frozen_data() -> None:
    graph = describe(intake_flow())
    with pytest.raises(dataclasses.FrozenInstanceError):
        graph.title = "changed"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        graph.rules[0].level = "OK"  # type: ignore[misc]


# --- Mermaid ------------------------------------------------------------------


def test_mermaid_names_every_node_and_colours_every_outcome() -> None:
    flow = intake_flow()
    text = to_mermaid(flow)
    assert "\nflowchart TD\n" in text
    for node_id in flow.nodes:
        assert re.search(rf"^    {node_id}[(\[{{].*<b>{node_id}</b>", text, re.M), node_id
    for level in LEVELS:
        assert f"classDef outcome_{level} fill:{LEVEL_COLOURS[level]}" in text
        assert f":::outcome_{level}" in text
    assert "    emergency -.->" in text
    assert "    conditions --> scoliosis_degree" in text
    assert 'rule_hernia_pain_now["STOP: Hernia stage: I have pain now"]' in text
    lines = [x for x in text.splitlines() if re.match(r"    \w+ -", x)]
    stop = next(i for i, x in enumerate(lines) if x.startswith('    triage -->|"STOP / LATER"|'))
    assert f"linkStyle {stop} stroke:{LEVEL_COLOURS['STOP']}" in text


def test_mermaid_escapes_labels_and_renames_reserved_ids(tmp_path: Path) -> None:
    def edit(d: Any) -> None:
        d["nodes"]["end"] = d["nodes"].pop("done")
        d["nodes"]["confirm"]["next"] = "end"
        d["nodes"]["name"]["summary"]["en"] = 'Name "as <you> like" & more'

    text = to_mermaid(load_flow(variant(tmp_path, edit)))
    assert "n_end([" in text and "confirm --> n_end" in text
    assert "Name #quot;as #lt;you#gt; like#quot; #amp; more" in text


def test_mermaid_speaks_russian() -> None:
    text = to_mermaid(intake_flow(), lang="ru")
    assert "Срочные признаки" in text and "только если: Межпозвоночная грыжа" in text
    assert "Какие ответы к чему ведут" in text


def wide_flow(tmp_path: Path, count: int) -> Flow:
    def edit(d: Any) -> None:
        options = d["nodes"]["welcome"]["options"]
        for k in range(count):
            d["nodes"][f"end_{k}"] = {"kind": "end", "text": {"ru": f"Конец {k}", "en": f"End {k}"}}
            options.append({"id": f"o{k}", "label": {"ru": f"Вариант {k}", "en": f"Option {k}"},
                            "goto": f"end_{k}"})  # fmt: skip

    return load_flow(variant(tmp_path, edit))


def test_a_wide_flow_is_described_whole(tmp_path: Path) -> None:
    graph = describe(wide_flow(tmp_path, 12), lang="ru")
    assert edge(graph, "welcome", "end_11").label == "Вариант 11"

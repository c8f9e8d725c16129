"""The flow diff: nothing for the same flow, one plain line per change, conditions read aloud."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from flows import Flow, load_flow
from flows.diff import diff_flows, excerpts, render_condition
from flows.schema import Condition
from tests.factories import intake_flow
from tests.flows.test_checker import drop_rule, rule, variant


def changed(tmp_path: Path, edit: Any) -> Flow:
    return load_flow(variant(tmp_path, edit))


def test_the_same_flow_has_no_differences() -> None:
    assert diff_flows(intake_flow(), intake_flow()) == []


def test_a_rewritten_file_with_the_same_content_has_no_differences(tmp_path: Path) -> None:
    # the copy loses the file's layout, so its version checksum differs; the diff ignores it
    copy = changed(tmp_path, lambda d: None)
    assert copy.version != intake_flow().version
    assert diff_flows(intake_flow(), copy) == []


def sample_change(d: Any) -> None:
    d["nodes"]["fracture"]["text"]["en"] = (
        "<b>Have you broken your back (a spine fracture) in the last twelve months?</b>"
    )
    asthma = {"ru": "Астма", "en": "Asthma"}
    d["nodes"]["chronic"]["options"].insert(
        6, {"id": "asthma", "label": asthma, "facts": {"contraindication": "asthma"}}
    )
    drop_rule(d, "c_hiv")
    rule(d, "c_fever")["level"] = "CLEAR"
    d["nodes"]["conditions"]["next"][3]["when"] = {
        "fact": "condition",
        "in": ["hernia", "sciatica"],
    }
    d["nodes"]["neck_checked"]["next"] = "chronic"


def test_a_sample_change_reads_as_plain_sentences(tmp_path: Path) -> None:
    lines = diff_flows(intake_flow(), changed(tmp_path, sample_change))
    assert lines == [
        "Question 'conditions': branch to 'hernia_stage' now taken "
        "if condition is hernia or sciatica (before: if condition is hernia)",
        "Question 'neck_checked': next question changed from 'acute' to 'chronic'",
        "Question 'chronic': answer 'asthma' added: \"Asthma\"",
        "Question 'fracture': text (en) changed: "
        '"Have you recently broken your back (a spine fracture)?" → '
        '"Have you broken your back (a spine fracture) in the last twe…"',
        "Rule 'c_hiv' removed (it gave STOP when contraindication is hiv)",
        "Rule 'c_fever': level changed from LATER to CLEAR",
    ]


def test_texts_are_quoted_in_the_chosen_language(tmp_path: Path) -> None:
    lines = diff_flows(intake_flow(), changed(tmp_path, sample_change), lang="ru")
    assert "Question 'chronic': answer 'asthma' added: \"Астма\"" in lines
    # only the English text changed, so that is the one shown, marked as such
    assert any(line.startswith("Question 'fracture': text (en) changed") for line in lines)


def test_a_long_text_shows_where_it_changed(tmp_path: Path) -> None:
    def reword(d: Any) -> None:
        text = d["nodes"]["welcome"]["text"]
        text["en"] = text["en"].replace("about 3 minutes", "about 5 minutes")
        text["ru"] = text["ru"].replace("около 3 минут", "около 5 минут")

    lines = diff_flows(intake_flow(), changed(tmp_path, reword))
    assert lines == [
        "Question 'welcome': text (en) changed: "
        '"…questions. It takes about 3 minutes. Then I will suggest whe…" → '
        '"…questions. It takes about 5 minutes. Then I will suggest whe…"',
        "Question 'welcome': text (ru) changed: "
        '"…вопросов. Это займёт около 3 минут. Потом я подскажу, подойд…" → '
        '"…вопросов. Это займёт около 5 минут. Потом я подскажу, подойд…"',
    ]


def test_every_kind_of_change_is_named(tmp_path: Path) -> None:
    def edit(d: Any) -> None:
        d["start"] = "emergency"
        d["nodes"]["welcome"]["summary"]["en"] = "Start"
        yes = d["nodes"]["fracture"]["options"][0]
        yes["facts"] = {"caution": "fracture_recent"}
        yes["label"]["en"] = "Yes, recently"
        d["nodes"]["oils"]["options"][1]["goto"] = "oil_info"
        d["nodes"]["conditions"]["next"].pop(0)
        del d["nodes"]["goodbye"]
        d["nodes"]["bye"] = {"kind": "end", "text": {"ru": "Пока", "en": "Bye"}}
        d["nodes"]["done"]["save"] = False
        d["rules"].append(
            {
                "id": "c_asthma",
                "level": "LATER",
                "when": {
                    "all": [
                        {"fact": "contraindication", "in": ["asthma"]},
                        {"not": {"fact": "goal"}},
                    ]
                },
                "reason": {"ru": "Астма", "en": "Asthma"},
                "source": "Alcohol or drug intoxication.",
            }
        )
        rule(d, "c_fever")["source"] = "Alcohol or drug intoxication."
        rule(d, "ok_neck")["advice"]["ru"] = "Массаж шеи."
        d["default_rule"]["level"] = "STOP"
        d["outcomes"]["OK"]["title"]["en"] = "Massage suits you"

    assert diff_flows(intake_flow(), changed(tmp_path, edit)) == [
        "First question changed from 'welcome' to 'emergency'",
        "Question 'bye' added (end): \"Bye\"",
        "Question 'goodbye' removed (end): \"Thank you for stopping by! Take care.\"",
        'Question \'welcome\': summary (en) changed: "Opening choice" → "Start"',
        "Question 'conditions': branch removed: if condition is scoliosis → 'scoliosis_degree'",
        "Question 'fracture': answer 'yes' relabelled (en): \"Yes\" → \"Yes, recently\"",
        "Question 'fracture': answer 'yes' now records caution = fracture_recent "
        "(before: caution = recent_fracture)",
        "Question 'oils': answer 'no' now goes to 'oil_info' (before: 'consent')",
        "Question 'done': no longer saves a request",
        "Rule 'c_asthma' added: LATER when contraindication is asthma and goal is not set",
        "Rule 'c_fever': source changed: "
        '"Acute infections that are accompanied by high body temperatu…" → '
        '"Alcohol or drug intoxication."',
        "Rule 'ok_neck': advice (ru) changed: "
        '"Массаж шеи и воротниковой зоны. Массажист прорабатывает длин…" → "Массаж шеи."',
        "Default rule (when no rule fits): level changed from CLEAR to STOP",
        'Outcome OK: title (en) changed: "Massage is suitable: here is what we suggest" → '
        '"Massage suits you"',
    ]


def test_a_question_that_changes_kind_says_so(tmp_path: Path) -> None:
    def edit(d: Any) -> None:
        name = d["nodes"]["name"]
        name["kind"] = "choice"
        del name["max_length"]
        name["options"] = [
            {"id": "anna", "label": {"ru": "Анна", "en": "Anna"}},
            {"id": "other", "label": {"ru": "Другое", "en": "Someone else"}},
        ]

    assert diff_flows(intake_flow(), changed(tmp_path, edit)) == [
        "Question 'name': kind changed from free text to choice (one answer)",
        "Question 'name': its answers are now 'anna' \"Anna\", 'other' \"Someone else\"",
    ]


def test_reordered_answers_and_branches_are_reported(tmp_path: Path) -> None:
    def edit(d: Any) -> None:
        options = d["nodes"]["oils"]["options"]
        options.insert(0, options.pop(2))
        branches = d["nodes"]["conditions"]["next"]
        branches.insert(0, branches.pop(1))

    lines = diff_flows(intake_flow(), changed(tmp_path, edit))
    assert lines == [
        "Question 'conditions': branches reordered (the first that fits is taken): "
        "if condition is osteochondrosis → 'osteo_region'; "
        "if condition is scoliosis → 'scoliosis_degree'; "
        "if condition is radiculitis → 'radiculitis_phase'; "
        "if condition is hernia → 'hernia_stage'; "
        "if condition is neck_pain → 'neck_checked'; otherwise → 'acute'",
        "Question 'oils': answers reordered: 'undecided', 'yes', 'no'",
    ]


_CONDITION: TypeAdapter[Condition] = TypeAdapter(Condition)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (
            {"fact": "contraindication", "in": ["fever_infection"]},
            "contraindication is fever_infection",
        ),
        ({"fact": "scoliosis_degree", "in": [1, 2, 3]}, "scoliosis_degree is 1, 2 or 3"),
        ({"fact": "caution"}, "caution is set"),
        ({"not": {"fact": "caution"}}, "caution is not set"),
        ({"not": {"fact": "neck_checked", "in": ["yes"]}}, "neck_checked is not yes"),
        (
            {"not": {"fact": "oils", "in": ["yes", "undecided"]}},
            "oils is neither yes nor undecided",
        ),
        (
            {
                "all": [
                    {"fact": "contraindication", "in": ["fever_infection"]},
                    {
                        "any": [
                            {"fact": "condition", "in": ["hernia"]},
                            {"not": {"fact": "hernia_stage", "in": ["recovery"]}},
                        ]
                    },
                ]
            },
            "contraindication is fever_infection and "
            "(condition is hernia or hernia_stage is not recovery)",
        ),
        (
            {"not": {"all": [{"fact": "a", "in": ["x"]}, {"fact": "b", "in": ["y"]}]}},
            "not (a is x and b is y)",
        ),
        ({"any": [{"fact": "a", "in": ["x"]}]}, "a is x"),
    ],
)
def test_conditions_read_as_words(raw: dict[str, Any], words: str) -> None:
    assert render_condition(_CONDITION.validate_python(raw)) == words


def test_every_rule_of_the_shipped_flow_renders() -> None:
    rendered = {r.id: render_condition(r.when) for r in intake_flow().rules}
    assert rendered["em_chest"] == "emergency is chest_pain"
    assert rendered["hernia_pain"] == "condition is hernia and hernia_stage is pain_now"
    assert all(text and "{" not in text for text in rendered.values())


def test_excerpts_keep_short_texts_whole_and_cut_long_ones_near_the_change() -> None:
    assert excerpts("<b>Name</b>", "Your name") == ("Name", "Your name")
    long = "word " * 40
    before, after = excerpts(long + "end", long + "finish")
    assert before.startswith("…") and before.endswith("end")
    assert after.startswith("…") and after.endswith("finish")
    assert len(before) <= 62 and len(after) <= 62


def test_settings_rules_and_outcomes_changes_are_named(tmp_path: Path) -> None:
    def edit(d: Any) -> None:
        d["name"] = "intake2"
        d["title"]["en"] = "Back massage"
        d["emergency_node"] = "goodbye"
        d["source_document"] = "other.txt"
        d["nodes"]["name"]["max_length"] = 60
        d["nodes"]["name"]["field"] = "client_name"
        d["nodes"]["phone"]["region"] = "KZ"
        d["nodes"]["consent"].pop("field")
        d["nodes"]["oils"]["field"] = "oils"
        chronic = d["nodes"]["chronic"]["options"]
        chronic.remove(next(o for o in chronic if o["id"] == "hiv"))
        chronic[-1]["exclusive"] = False
        d["nodes"]["offer_call"]["options"][1].pop("goto")
        d["nodes"]["offer_call"]["next"] = "goodbye"
        d["nodes"]["oil_scent"].pop("summary")
        d["nodes"]["after_massage"]["summary"] = {"ru": "После массажа", "en": "After a massage"}
        d["nodes"]["fracture"]["next"] = [{"when": {"fact": "caution"}, "to": "triage"}]
        heart = rule(d, "c_heart")
        heart["when"] = {
            "any": [
                {"fact": "contraindication", "in": ["heart"]},
                {"fact": "caution", "in": ["heart_attack"]},
            ]
        }
        heart["reason"]["en"] = "You reported heart disease"
        heart["basis"] = "precaution"
        rule(d, "ok_neck").pop("advice")
        rule(d, "ok_neck")["level"] = "CLEAR"
        d["default_rule"]["id"] = "nothing_fits"
        d["default_rule"]["basis"] = "article"
        d["outcomes"]["LATER"]["text"]["ru"] = "Не сейчас."

    assert diff_flows(intake_flow(), changed(tmp_path, edit)) == [
        "Flow name changed from 'intake' to 'intake2'",
        'Flow title (en) changed: "Veronika Herba: back and neck massage" → "Back massage"',
        "Emergency stop (emergency_node) changed from 'emergency_stop' to 'goodbye'",
        "Source document changed from massage-article.txt to other.txt",
        "Question 'after_massage': summary added: \"After a massage\"",
        "Question 'chronic': answer 'hiv' removed: \"HIV infection or AIDS\"",
        "Question 'chronic': answer 'none' is no longer exclusive",
        "Question 'fracture': branch to 'triage' now taken if caution is set (before: always)",
        "Question 'offer_call': answer 'no' now goes to the question's next (before: 'goodbye')",
        "Question 'offer_call': next changed: 'goodbye' (before: not set)",
        "Question 'oils': the answer is now stored as 'oils'",
        "Question 'oil_scent': summary removed (was \"Scent\")",
        "Question 'consent': the answer is no longer stored as 'consent'",
        "Question 'name': the answer is now stored as 'client_name' (before: 'name')",
        "Question 'name': longest answer changed from 100 to 60 characters",
        "Question 'phone': phone numbers are now read for region KZ (before: RU)",
        "Rule 'c_heart': condition changed: contraindication is heart → "
        "contraindication is heart or caution is heart_attack",
        "Rule 'c_heart': reason (en) changed: "
        '"You reported a severe heart or blood vessel disease" → "You reported heart disease"',
        "Rule 'c_heart': basis changed from article to precaution",
        "Rule 'ok_neck': level changed from OK to CLEAR",
        "Rule 'ok_neck': advice removed "
        '(was "Massage of the neck and collar area. The therapist works the…")',
        "Default rule (when no rule fits): id changed from 'no_rule' to 'nothing_fits'",
        "Default rule (when no rule fits): basis changed from precaution to article",
        'Outcome LATER: text (ru) changed: "Во время острого состояния, обострения или '
        'опьянения массаж…" → "Не сейчас."',
    ]

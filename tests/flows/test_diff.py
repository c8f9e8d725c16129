"""The flow diff: nothing for the same flow, one plain line per change, conditions read aloud."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from flows import Flow, load_flow_text
from flows.diff import diff_flows, excerpts, render_condition
from flows.schema import ChecklistNode, Condition, FactIs, Transition, YesNoNode
from tests.factories import VALUES, intake_flow
from tests.flows.test_checker import drop_rule, rule, variant


def changed(tmp_path: Path, edit: Any) -> Flow:
    path = variant(tmp_path, edit)
    return load_flow_text(path.read_text(), origin=str(path), values=VALUES)


def test_the_same_flow_has_no_differences() -> None:
    assert diff_flows(intake_flow(), intake_flow()) == []


def test_a_rewritten_file_with_the_same_content_has_no_differences(tmp_path: Path) -> None:
    # the copy loses the file's layout, so its version checksum differs; the diff ignores it
    copy = changed(tmp_path, lambda d: None)
    assert copy.version != intake_flow().version
    assert diff_flows(intake_flow(), copy) == []


def sample_change(d: Any) -> None:
    d["nodes"]["oil_allergy"]["text"]["en"] = (
        "<b>Have you ever had an allergy to a scent or an essential oil?</b>"
    )
    floral = {"ru": "Цветочный: роза, жасмин", "en": "Floral: rose, jasmine"}
    d["nodes"]["oil_scent"]["options"].insert(
        2, {"id": "floral", "label": floral, "facts": {"oil_scent": "floral"}}
    )
    drop_rule(d, "ok_sciatica")
    rule(d, "ok_hernia_recovery")["level"] = "CLEAR"
    d["nodes"]["triage"]["next"][0]["when"] = {"fact": "outcome", "in": ["OK"]}
    d["nodes"]["after_massage"]["next"] = "massage_types"


def test_a_sample_change_reads_as_plain_sentences(tmp_path: Path) -> None:
    lines = diff_flows(intake_flow(), changed(tmp_path, sample_change))
    assert lines == [
        "Question 'after_massage': next question changed from 'emergency' to 'massage_types'",
        "Question 'triage': branch to 'oils' now taken "
        "if outcome is OK (before: if outcome is OK or CLEAR)",
        "Question 'oil_allergy': text (en) changed: "
        '"Are you allergic to any scents or essential oils?" → '
        '"Have you ever had an allergy to a scent or an essential oil?"',
        "Question 'oil_scent': answer 'floral' added: \"Floral: rose, jasmine\"",
        "Rule 'ok_sciatica' removed (it gave OK when condition is sciatica)",
        "Rule 'ok_hernia_recovery': level changed from OK to CLEAR",
    ]


def test_texts_are_quoted_in_the_chosen_language(tmp_path: Path) -> None:
    lines = diff_flows(intake_flow(), changed(tmp_path, sample_change), lang="ru")
    assert "Question 'oil_scent': answer 'floral' added: \"Цветочный: роза, жасмин\"" in lines
    # only the English text changed, so that is the one shown, marked as such
    assert any(line.startswith("Question 'oil_allergy': text (en) changed") for line in lines)


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
        yes = d["nodes"]["oils"]["options"][0]
        yes["facts"] = {"oils": "wanted"}
        yes["label"]["en"] = "Yes, gladly"
        d["nodes"]["oils"]["options"][1]["goto"] = "oil_info"
        d["nodes"]["triage"]["next"].pop(0)
        del d["nodes"]["goodbye"]
        d["nodes"]["bye"] = {"kind": "end", "text": {"ru": "Пока", "en": "Bye"}}
        d["nodes"]["done"]["save"] = False
        d["rules"].append(
            {
                "id": "clear_osteo_neck",
                "level": "CLEAR",
                "when": {
                    "all": [
                        {"fact": "condition", "in": ["osteochondrosis"]},
                        {"not": {"fact": "neck_checked"}},
                    ]
                },
                "reason": {"ru": "Остеохондроз", "en": "Osteochondrosis"},
                "source": "Each course must be supervised by a physician.",
            }
        )
        rule(d, "ok_sciatica")["source"] = "Each course must be supervised by a physician."
        rule(d, "ok_neck")["advice"]["ru"] = "Массаж шеи."
        d["outcomes"]["OK"]["title"]["en"] = "Massage suits you"

    assert diff_flows(intake_flow(), changed(tmp_path, edit)) == [
        "First question changed from 'welcome' to 'emergency'",
        "Question 'bye' added (end): \"Bye\"",
        "Question 'goodbye' removed (end): \"Thank you for your answers! Take care.\"",
        'Question \'welcome\': summary (en) changed: "Opening choice" → "Start"',
        "Question 'triage': branch removed: if outcome is OK or CLEAR → 'oils'",
        "Question 'oils': answer 'yes' relabelled (en): \"Yes, please\" → \"Yes, gladly\"",
        "Question 'oils': answer 'yes' now records oils = wanted (before: oils = yes)",
        "Question 'oils': answer 'no' now goes to 'oil_info' (before: 'consent')",
        "Question 'done': no longer saves a request",
        "Rule 'clear_osteo_neck' added: "
        "CLEAR when condition is osteochondrosis and neck_checked is not set",
        "Rule 'ok_sciatica': source changed: "
        '"To record the results obtained and prevent it, it is recomme…" → '
        '"Each course must be supervised by a physician."',
        "Rule 'ok_neck': advice (ru) changed: "
        '"Массаж шеи и воротниковой зоны. Массажист прорабатывает длин…" → "Массаж шеи."',
        'Outcome OK: title (en) changed: "Massage is suitable: here is what we suggest" → '
        '"Massage suits you"',
    ]


def test_changes_to_the_policy_parts_are_named_too(tmp_path: Path) -> None:
    # An admin's file cannot change these (the loader refuses it), but two
    # versions composed under different releases of the safety policy can differ in them.
    old = intake_flow()
    chronic = old.nodes["chronic"]
    assert isinstance(chronic, ChecklistNode)
    options = tuple(o for o in chronic.options if o.id != "hiv")
    options = (*options[:-1], options[-1].model_copy(update={"exclusive": False}))
    fracture = old.nodes["fracture"]
    assert isinstance(fracture, YesNoNode)
    yes = fracture.options[0].model_copy(update={"facts": {"caution": ("fracture_recent",)}})
    heart = next(r for r in old.rules if r.id == "c_heart")
    later = old.outcomes["LATER"]
    new = old.model_copy(
        update={
            "emergency_node": "goodbye",
            "source_document": "other.txt",
            "nodes": {
                **old.nodes,
                "chronic": chronic.model_copy(update={"options": options}),
                "fracture": fracture.model_copy(
                    update={
                        "options": (yes, *fracture.options[1:]),
                        "next": (Transition(when=FactIs(fact="caution"), to="triage"),),
                    }
                ),
            },
            "rules": tuple(
                r.model_copy(update={"level": "LATER", "basis": "precaution"}) if r is heart else r
                for r in old.rules
            ),
            "default_rule": old.default_rule.model_copy(
                update={"id": "nothing_fits", "level": "STOP", "basis": "article"}
            ),
            "outcomes": {
                **old.outcomes,
                "LATER": later.model_copy(
                    update={"text": later.text.model_copy(update={"ru": "Не сейчас."})}
                ),
            },
        }
    )
    assert diff_flows(old, new) == [
        "Emergency stop (emergency_node) changed from 'emergency_stop' to 'goodbye'",
        "Source document changed from massage-article.txt to other.txt",
        "Question 'chronic': answer 'hiv' removed: \"HIV infection or AIDS\"",
        "Question 'chronic': answer 'none' is no longer exclusive",
        "Question 'fracture': answer 'yes' now records caution = fracture_recent "
        "(before: caution = recent_fracture)",
        "Question 'fracture': branch to 'triage' now taken if caution is set (before: always)",
        "Rule 'c_heart': level changed from STOP to LATER",
        "Rule 'c_heart': basis changed from article to precaution",
        "Default rule (when no rule fits): id changed from 'no_rule' to 'nothing_fits'",
        "Default rule (when no rule fits): level changed from CLEAR to STOP",
        "Default rule (when no rule fits): basis changed from precaution to article",
        'Outcome LATER: text (ru) changed: "Пока это состояние не прошло, массаж может '
        'навредить. Когда…" → "Не сейчас."',
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
        d["nodes"]["triage"]["next"] = [
            {"when": {"fact": "outcome", "in": ["STOP", "LATER"]}, "to": "offer_call"},
            {"when": {"fact": "outcome", "in": ["OK", "CLEAR"]}, "to": "oils"},
            {"to": "goodbye"},
        ]

    before = changed(
        tmp_path,
        lambda d: d["nodes"]["triage"].update(
            next=[
                {"when": {"fact": "outcome", "in": ["OK", "CLEAR"]}, "to": "oils"},
                {"when": {"fact": "outcome", "in": ["STOP", "LATER"]}, "to": "offer_call"},
                {"to": "goodbye"},
            ]
        ),
    )
    lines = diff_flows(before, changed(tmp_path, edit))
    assert lines == [
        "Question 'triage': branches reordered (the first that fits is taken): "
        "if outcome is STOP or LATER → 'offer_call'; "
        "if outcome is OK or CLEAR → 'oils'; otherwise → 'goodbye'",
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
    assert rendered["em_chest_pain"] == "emergency is chest_pain"
    assert rendered["hernia_pain_now"] == "hernia_stage is pain_now"
    assert rendered["ok_hernia_recovery"] == "condition is hernia and hernia_stage is recovery"
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
        d["nodes"]["name"]["max_length"] = 60
        d["nodes"]["name"]["field"] = "client_name"
        d["nodes"]["phone"]["region"] = "KZ"
        d["nodes"]["consent"].pop("field")
        d["nodes"]["oils"]["field"] = "oils"
        scents = d["nodes"]["oil_scent"]["options"]
        scents.remove(next(o for o in scents if o["id"] == "tonic"))
        d["nodes"]["offer_call"]["options"][1].pop("goto")
        d["nodes"]["offer_call"]["next"] = "goodbye"
        d["nodes"]["oil_scent"].pop("summary")
        d["nodes"]["after_massage"]["summary"] = {"ru": "После массажа", "en": "After a massage"}
        d["nodes"]["triage"]["next"][1]["when"] = {"fact": "outcome", "in": ["STOP", "LATER"]}
        osteo = rule(d, "ok_osteochondrosis")
        osteo["when"] = {
            "all": [
                {"fact": "condition", "in": ["osteochondrosis"]},
                {"fact": "prescription", "in": ["yes"]},
            ]
        }
        osteo["reason"]["en"] = "You reported osteochondrosis, and a doctor prescribed massage"
        osteo["basis"] = "precaution"
        rule(d, "ok_neck").pop("advice")
        rule(d, "ok_neck")["level"] = "CLEAR"
        d["outcomes"]["OK"]["text"]["ru"] = "Подходит."

    assert diff_flows(intake_flow(), changed(tmp_path, edit)) == [
        "Flow name changed from 'intake' to 'intake2'",
        'Flow title (en) changed: "Veronika Herba: back and neck massage" → "Back massage"',
        "Question 'after_massage': summary added: \"After a massage\"",
        "Question 'triage': branch to 'offer_call' now taken if outcome is STOP or LATER "
        "(before: otherwise)",
        "Question 'offer_call': answer 'no' now goes to the question's next (before: 'goodbye')",
        "Question 'offer_call': next changed: 'goodbye' (before: not set)",
        "Question 'oils': the answer is now stored as 'oils'",
        "Question 'oil_scent': summary removed (was \"Scent\")",
        "Question 'oil_scent': answer 'tonic' removed: \"Invigorating: citrus, pine\"",
        "Question 'consent': the answer is no longer stored as 'consent'",
        "Question 'name': the answer is now stored as 'client_name' (before: 'name')",
        "Question 'name': longest answer changed from 100 to 60 characters",
        "Question 'phone': phone numbers are now read for region KZ (before: RU)",
        "Rule 'ok_osteochondrosis': condition changed: condition is osteochondrosis → "
        "condition is osteochondrosis and prescription is yes",
        "Rule 'ok_osteochondrosis': reason (en) changed: "
        '"…reported osteochondrosis" → '
        '"…reported osteochondrosis, and a doctor prescribed massage"',
        "Rule 'ok_osteochondrosis': basis changed from article to precaution",
        "Rule 'ok_neck': level changed from OK to CLEAR",
        "Rule 'ok_neck': advice removed "
        '(was "Massage of the neck and collar area. The therapist works the…")',
        # the policy's "not a diagnosis" line follows every outcome text
        'Outcome OK: text (ru) changed: "По вашим ответам противопоказаний не найдено. Ниже — '
        'что мы…" → "Подходит. Это не диагноз: окончательное решение всегда прини…"',
    ]


def test_a_changed_course_length_is_named(tmp_path: Path) -> None:
    def longer(d: Any) -> None:
        rule(d, "ok_osteochondrosis")["course_sessions"] = 12

    lines = diff_flows(intake_flow(), changed(tmp_path, longer))
    assert lines == ["Rule 'ok_osteochondrosis': course changed from 10 to 12 sessions"]

"""Scripted dialogues: outcomes, rules and requests as a client gets them; readable errors."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from bot.files import load_flow_file as load_flow
from flows.simulate import Script, ScriptAnswer, ScriptError, ScriptStep, load_script, simulate
from tests.factories import intake_flow
from tests.flows.test_checker import rule, variant

FIXTURES = Path(__file__).parent / "fixtures"


def run(text: str) -> Any:
    return simulate(intake_flow(), load_script(text))


def script_error(text: str) -> str:
    with pytest.raises(ScriptError) as caught:
        run(text)
    return str(caught.value)


def test_a_script_reaching_ok_saves_a_request_with_the_expected_rules() -> None:
    path = FIXTURES / "sim_osteochondrosis.yaml"
    t = simulate(intake_flow(), load_script(path.read_text(), origin=path.name))
    assert t.finished and t.stopped is None and t.node == "done"
    assert t.outcome == "OK"
    assert t.outcome_title == "Massage is suitable: here is what we suggest"
    assert t.rules == ("ok_osteochondrosis",)
    assert t.request is not None
    assert t.request.outcome == "OK" and t.request.rule_ids == ("ok_osteochondrosis",)
    assert t.request.fields == {
        "consent": "agree",
        "name": "Anna",
        "phone": "+79123456789",
        "call_time": "evening",
    }
    # the client's inputs are marked, the bot's messages are plain text
    assert "> Start the questions" in t.lines
    assert "> Osteochondrosis (worn spinal discs) + ✔️ Done" in t.lines
    assert "> Anna" in t.lines and "> ✅ All correct, send" in t.lines
    assert not any("<b>" in line for line in t.lines)
    assert any(line.startswith("Thank you! Your request has been received.") for line in t.lines)
    text = t.render()
    assert text.endswith(
        "=== Summary ===\n"
        "Outcome: OK (Massage is suitable: here is what we suggest)\n"
        "Rules fired: ok_osteochondrosis\n"
        "Request: would be saved\n"
        "  name: Anna\n"
        "  phone: +79123456789\n"
        "  consent: agree\n"
        "  call_time: evening\n"
        "Finished: yes, at question 'done'\n"
    )
    assert "Where shall we start?\n[Start the questions]  [My back hurts after a massage]" in text


def test_a_script_reaching_an_emergency_stops_at_once() -> None:
    t = simulate(intake_flow(), load_script((FIXTURES / "sim_emergency.yaml").read_text()))
    assert t.finished and t.node == "emergency_stop"
    assert t.outcome == "EMERGENCY" and t.outcome_title == "Срочно звоните 112 или 103"
    assert t.rules == ("em_chest_pain", "em_trauma")
    assert t.request is not None and t.request.outcome == "EMERGENCY"
    assert not any("Что вас беспокоит?" in line for line in t.lines)
    assert "Request: would be saved\n  name: (not given)\n  phone: (not given)" in t.render()


def test_explicit_steps_with_back() -> None:
    t = run(
        """
        lang: en
        steps:
          - choose: start
          - tick: [none]
          - back
          - tick: [trauma]
        """
    )
    assert [line for line in t.lines if line.startswith(">")] == [
        "> Start the questions",
        "> None of these + ✔️ Done",
        "> ⬅️ Back",
        "> Severe pain after a fall or an accident + ✔️ Done",
    ]
    # Back shows the checklist again with the earlier tick
    back_at = t.lines.index("> ⬅️ Back")
    assert "[✅ None of these]" in t.lines[back_at + 1]
    assert t.outcome == "EMERGENCY" and t.rules == ("em_trauma",)


def test_steps_without_answers_stop_where_they_end() -> None:
    t = run("steps: [{choose: types}, continue, {toggle: none}, {toggle: trauma}, done]")
    assert t.lines[-2].startswith("This may be dangerous.")
    assert t.lines[-1] == "(a consultation request is saved here)"
    assert "> tick None of these" in t.lines and "> ✔️ Done" in t.lines
    assert t.finished and t.node == "emergency_stop" and t.outcome == "EMERGENCY"
    t = run("steps: [{choose: start}, {tick: none}]")
    assert not t.finished and t.stopped is None and t.node == "conditions"
    assert t.outcome is None and t.request is None
    assert "Outcome: none" in t.render() and "Request: none would be saved" in t.render()


def test_steps_then_answers_change_an_answer_and_finish() -> None:
    t = run(
        """
        defaults: true
        answers: {conditions: [sciatica], sciatica_phase: calm}
        steps: [{choose: start}, {tick: [none]}, back, {tick: [none]}]
        """
    )
    assert t.finished and t.outcome == "OK" and t.rules == ("ok_sciatica",)
    assert t.request is not None and t.request.fields["name"] == "Test"


def test_a_missing_answer_stops_with_a_clear_message() -> None:
    t = run("answers: {welcome: start, emergency: [none], conditions: [none]}")
    assert not t.finished and t.node == "acute"
    assert t.stopped == (
        "no answer for question 'acute' (checklist, options: fever_infection, infectious, "
        "intoxication, exacerbation, wounds, skin, lymphadenitis, pregnancy, none): add it "
        "under answers, or set defaults: true"
    )
    assert t.render().endswith(f"Stopped: {t.stopped}\n")


def test_defaults_answer_the_rest_harmlessly() -> None:
    t = run("defaults: true\nanswers: {conditions: [hernia], hernia_stage: pain_now}")
    assert t.finished and t.outcome == "STOP" and t.rules == ("hernia_pain_now",)
    assert "> Start the questions (default)" in t.lines
    assert "> No, thank you (default)" not in t.lines  # offer_call takes its first answer
    assert t.request is not None and t.request.fields["phone"].startswith("+7")


def test_a_refused_answer_stops_the_walk_with_the_bots_reason() -> None:
    t = run("defaults: true\nanswers: {phone: '12'}")
    assert not t.finished and t.node == "phone"
    assert t.stopped is not None
    assert t.stopped.startswith(
        "the answer at question 'phone' was refused: That does not look like a valid phone number"
    )


def test_trying_a_changed_flow_shows_the_new_outcome(tmp_path: Path) -> None:
    def house_rule(d: Any) -> None:
        wellbeing = rule(d, "ok_wellbeing")
        d["rules"].append(
            {
                "id": "first_visit",
                "level": "CLEAR",
                "when": copy.deepcopy(wellbeing["when"]),
                "reason": {
                    "ru": "Первый визит начинается с врача",
                    "en": "First visits start with a doctor",
                },
                "source": "Each course must be supervised by a physician.",
            }
        )

    script = load_script("defaults: true\nanswers: {conditions: [none]}")
    assert simulate(intake_flow(), script).outcome == "OK"
    changed = simulate(load_flow(variant(tmp_path, house_rule)), script)
    assert changed.outcome == "CLEAR" and "first_visit" in changed.rules


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "answers: {welcome: start, osteo_region: lumbar}",
            "script, line 1: unknown answer 'lumbar' for question 'osteo_region' "
            "(choice, options: cervical, thoracic, lumbosacral, several)",
        ),
        ("answers:\n  welcom: start", "script, line 2: unknown question 'welcom' (the flow has:"),
        (
            "answers: {welcome: [start]}",
            "question 'welcome' (choice, options: start, after_massage, types, session, "
            "self_massage) "
            "takes one answer, not a list",
        ),
        ("answers: {name: [Anna]}", "question 'name' takes a text, not a list"),
        ("answers: {triage: x}", "'triage' is a triage node: it takes no answer"),
        ("answers: {emergency: [none, fever]}", "unknown answer 'fever' for question 'emergency'"),
        ("answers: {emergency: []}", "answers.emergency: a list of answer ids"),
        ("answers: {emergency: {a: b}}", "answers.emergency: give an answer id"),
        ("answers: [welcome]", "answers is a mapping"),
        ("lang: de", "lang must be one of ru, en"),
        ("defaults: yes", "defaults is true or false"),
        ("answer: {welcome: start}", "unknown key 'answer' (check the spelling"),
        ("- a\n- b", "a script is a mapping"),
        ("answers: {welcome: start\n", "script, line 2: this is not valid YAML"),
        ("steps: {choose: start}", "steps is a list"),
        ("steps: [jump]", "step 1: 'jump' needs a value or is unknown; use one of choose"),
        ("steps: [{jump: x}]", "step 1: unknown step 'jump'"),
        ("steps: [{choose: start, tick: none}]", "step 1: write each step as one verb"),
        ("steps: [{choose: [a, b]}]", "step 1: choose takes one value"),
        ("steps: [{tick: [{a: b}]}]", "step 1: tick takes an answer id or a list of ids"),
        (
            "steps: [{choose: start}, {tick: [nothing]}]",
            "step 2 (tick: nothing): the dialogue is at question 'emergency' (checklist, "
            "options: chest_pain, leg_weakness, bladder_bowel, saddle, trauma, none); "
            "it has no answer 'nothing'",
        ),
        ("steps: [{tick: [none]}]", "step 1 (tick: none): the dialogue is at question 'welcome'"),
        ("steps: [{choose: start}, {choose: none}]", "choose needs a choice or yes/no question"),
        ("steps: [done]", "done needs a checklist"),
        ("steps: [continue]", "continue needs an info text"),
        ("steps: [confirm]", "confirm needs the summary"),
        ("steps: [revise]", "revise needs the summary"),
    ],
)
def test_script_errors_are_readable(text: str, words: str) -> None:
    assert words in script_error(text)


def test_script_errors_name_the_file_given_as_origin() -> None:
    with pytest.raises(ScriptError, match=r"^try\.yaml, line 3: unknown answer 'x' for question"):
        script = load_script("lang: en\nanswers:\n  fracture: x\n", origin="try.yaml")
        simulate(intake_flow(), script)


def test_a_loaded_script_is_a_frozen_value() -> None:
    script = load_script(
        "lang: ru\ndefaults: true\nanswers:\n  emergency: none\n  name: 42\n"
        "steps: [back, {text: 7}, {revise: name}, {tick: none}]"
    )
    assert script == Script(
        lang="ru",
        answers=(ScriptAnswer("emergency", "none", 4), ScriptAnswer("name", "42", 5)),
        defaults=True,
        steps=(
            ScriptStep("back", None, 6),
            ScriptStep("text", "7", 6),
            ScriptStep("revise", "name", 6),
            ScriptStep("tick", ("none",), 6),
        ),
    )
    assert script.answer("name") == ScriptAnswer("name", "42", 5)
    assert script.answer("phone") is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        script.lang = "en"  # type: ignore[misc]
    assert load_script("") == Script()


def test_revising_an_answer_from_the_summary() -> None:
    t = run(
        """
        defaults: true
        steps:
          - choose: start
          - tick: [none]
          - tick: [none]
          - tick: [none]
          - tick: [none]
          - choose: "no"
          - choose: "yes"
          - choose: none
          - choose: calming
          - continue
          - choose: agree
          - text: Anna
          - text: "+7 912 345-67-89"
          - choose: any
          - revise
          - revise: name
          - text: Maria
        """
    )
    assert t.finished and t.request is not None
    assert t.request.fields["name"] == "Maria" and t.outcome == "OK"


def test_the_transcript_shows_what_was_really_ticked() -> None:
    # "none" is exclusive: ticking scoliosis after it unticks it, as in Telegram
    t = run("defaults: true\nanswers: {conditions: [none, scoliosis], scoliosis_degree: d2}")
    assert "> Scoliosis (curved spine) + ✔️ Done" in t.lines
    assert t.outcome == "OK" and t.rules == ("ok_scoliosis",)

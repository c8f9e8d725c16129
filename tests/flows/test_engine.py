"""The engine, scripted step by step: whole state asserted, bad input changes nothing."""

from __future__ import annotations

import json

import pytest

from flows import (
    Alert,
    Back,
    Begin,
    Choose,
    Done,
    FlowMismatchError,
    Message,
    Restart,
    SaveRequest,
    SetLang,
    State,
    TextInput,
    Toggle,
    decode,
    new_state,
    step,
)
from flows.engine import Entry, progress
from tests.factories import Client, intake_flow


def test_new_dialogue_shows_the_welcome_without_progress_or_back_button() -> None:
    c = Client(lang="en")
    assert c.state == State(
        flow="intake", version=intake_flow().version, lang="en", node="welcome", seq=0
    )
    [msg] = c.messages
    assert msg.node == "welcome"
    assert msg.text.startswith("Hello!"), "the opening menu is not a question: no progress line"
    labels = [b.label for row in msg.buttons for b in row]
    assert "⬅️ Back" not in labels and "🔄 Start over" in labels
    assert all(len(b.data.encode()) <= 64 for row in msg.buttons for b in row)


def test_choice_records_the_answer_and_moves_on() -> None:
    c = Client()
    c.choose("start")
    assert c.state.node == "emergency"
    assert c.state.seq == 1
    assert c.state.history == (Entry(node="welcome", options=("start",)),)
    assert c.messages[0].kind == "checklist"


@pytest.mark.parametrize(
    "bad",
    [
        TextInput("hello"),
        TextInput(""),
        Choose("no_such_option", "welcome", 0),
        Toggle("start", "welcome", 0),
        Done("welcome", 0),
    ],
)
def test_bad_input_at_a_choice_leaves_the_state_unchanged(bad: object) -> None:
    c = Client()
    before = c.state
    c.send(bad)  # type: ignore[arg-type]
    assert c.state == before
    assert c.alerts, "the client is told what went wrong"
    assert c.messages and c.messages[-1].node == "welcome", "and sees the question again"


def test_a_stale_button_changes_nothing() -> None:
    c = Client()
    old = [b.data for row in c.messages[0].buttons for b in row][0]
    c.choose("start")
    before = c.state
    stale = decode(old)
    assert stale is not None
    c.send(stale)
    assert c.state == before
    assert c.alerts == ["That button belongs to an earlier question. Please answer the latest one."]


def test_typing_an_option_label_counts_as_pressing_it() -> None:
    c = Client()
    c.type("  start THE questions ")
    assert c.node == "emergency"


def test_checklist_toggles_edit_in_place_and_exclusive_none_clears_the_rest() -> None:
    c = Client()
    c.choose("start")
    c.toggle("chest_pain")
    assert c.state.pending == ("chest_pain",)
    assert c.messages[0].edit is True
    assert "✅ Chest pain" in c.messages[0].buttons[0][0].label
    c.toggle("none")
    assert c.state.pending == ("none",)
    c.toggle("trauma")
    assert c.state.pending == ("trauma",)
    c.toggle("trauma")
    assert c.state.pending == ()
    before = c.state
    c.done()
    assert c.state == before, "Done with nothing ticked is refused"
    assert "Tick at least one" in c.alerts[0]


def test_an_emergency_answer_stops_the_questionnaire_at_once() -> None:
    c = Client()
    c.choose("start")
    c.tick("leg_weakness")
    assert c.state.finished
    assert c.node == "emergency_stop"
    assert "112" in c.text and "103" in c.text
    [draft] = c.saved
    assert draft.outcome == "EMERGENCY"
    assert draft.rule_ids == ("em_leg_weakness",)
    assert draft.fields == {}, "no personal data without consent"
    # nothing else can be answered; only a restart
    before = c.state
    c.back()
    assert c.state == before


def test_back_undoes_the_last_answer_and_every_fact_it_set() -> None:
    c = Client()
    c.choose("start")
    c.tick("none")
    c.tick("scoliosis", "hernia")
    assert c.node == "scoliosis_degree"
    c.choose("d2")
    assert c.node == "hernia_stage"
    assert c.facts["scoliosis_degree"] == {"2"}
    c.back()
    assert c.node == "scoliosis_degree"
    assert "scoliosis_degree" not in c.facts
    c.back()
    assert c.node == "conditions"
    assert "condition" not in c.facts
    assert c.state.pending == ("scoliosis", "hernia"), "the old ticks are shown again"


def test_back_at_the_first_question_says_so() -> None:
    c = Client()
    before = c.state
    c.back()
    assert c.state == before
    assert c.alerts == ["This is the first question: there is nothing to go back to."]


def test_back_over_the_outcome_returns_to_the_last_question() -> None:
    c = Client()
    c.choose("start")
    c.tick("none")
    c.tick("none")
    c.tick("none")
    c.tick("none")
    c.choose("no")
    assert c.node == "oils"
    assert c.outcome == "OK"
    c.back()
    assert c.node == "fracture"
    assert c.outcome is None


def test_a_red_flag_taken_back_stays_on_record() -> None:
    c = Client()
    c.choose("start")
    c.tick("none")
    c.tick("osteochondrosis")
    c.choose("lumbosacral")
    c.choose("yes")
    c.tick("fever_infection")
    assert c.state.red_flags == ("contraindication=infection",)
    c.back()
    c.tick("none")
    c.run()
    [draft] = c.saved
    assert draft.outcome == "OK"
    assert draft.red_flag_changed is True
    assert draft.withdrawn_red_flags == ("contraindication=infection",)


def test_restart_keeps_red_flags_but_forgets_answers() -> None:
    c = Client()
    c.choose("start")
    c.tick("none")
    c.tick("none")
    c.tick("none")
    c.tick("oncology")
    c.restart()
    assert c.state.history == ()
    assert c.node == "welcome"
    assert c.state.red_flags == ("contraindication=oncology",)
    c.run()
    assert c.saved[-1].red_flag_changed is True


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("+7 912 345-67-89", "+79123456789"),
        ("8 (912) 345 67 89", "+79123456789"),
        ("9123456789", "+79123456789"),
        ("+44 20 7946 0958", "+442079460958"),
    ],
)
def test_phone_numbers_are_normalised_to_e164(typed: str, stored: str) -> None:
    c = Client()
    c.run({"phone": typed})
    assert c.saved[0].fields["phone"] == stored


@pytest.mark.parametrize("typed", ["12345", "hello", "+7 912", "8" * 60, "+1 555 0100"])
def test_an_invalid_phone_is_refused_politely(typed: str) -> None:
    c = Client()
    with pytest.raises(AssertionError, match="refused"):
        c.run({"phone": typed})
    assert c.node == "phone"
    assert "valid phone number" in c.alerts[0]


def test_name_is_trimmed_and_length_limited() -> None:
    c = Client()
    with pytest.raises(AssertionError, match="refused"):
        c.run({"name": "x" * 101})
    before = c.state
    c.type("   ")
    assert c.state == before
    c.type("  Мария   Ивановна\x07 ")
    assert c.state.history[-1].value == "Мария Ивановна"


def test_summary_then_change_an_answer_then_confirm() -> None:
    c = Client()
    c.choose("start")
    for _ in range(4):
        c.tick("none")
    c.choose("no")
    c.choose("no")  # oils
    c.choose("agree")
    c.type("Олег")
    c.type("89123456789")
    c.choose("morning")
    assert c.node == "confirm"
    shown = c.text
    assert "Олег" in shown and "+7 912 345-67-89" in shown and "Massage is suitable" in shown
    c.revise()
    assert c.state.revising
    targets = [b.data for row in c.messages[0].buttons for b in row if b.data.startswith("v:")]
    assert any(t.endswith(":name") for t in targets)
    c.revise("name")
    assert c.node == "name"
    assert "name" not in {e.node for e in c.state.history}
    c.type("Олег Петрович")
    assert c.node == "confirm", "the phone and call time are kept"
    c.confirm()
    [draft] = c.saved
    assert draft.fields["name"] == "Олег Петрович"
    assert draft.fields["call_time"] == "morning"


def test_html_in_client_text_is_escaped_in_the_summary() -> None:
    c = Client()
    c.run({"name": "<b>Bob & Co</b>"}, stop_at="confirm")
    assert c.node == "confirm"
    assert "&lt;b&gt;Bob &amp; Co&lt;/b&gt;" in c.text
    c.confirm()
    assert c.saved[0].fields["name"] == "<b>Bob & Co</b>", "stored as typed"


def test_progress_counts_questions() -> None:
    c = Client()
    c.choose("start")
    k, n = progress(c.flow, c.state)
    assert k == 1 and n >= 10
    c.tick("none")
    assert progress(c.flow, c.state) == (2, n)


def test_set_lang_redraws_in_the_other_language() -> None:
    c = Client(lang="en")
    c.choose("start")
    c.send(SetLang("ru"))
    assert c.state.lang == "ru"
    assert "Вопрос 1 из" in c.text


def test_state_round_trips_through_json() -> None:
    c = Client()
    c.choose("start")
    c.toggle("none")
    raw = json.dumps(c.state.model_dump(mode="json"))
    assert State.model_validate(json.loads(raw)) == c.state


def test_a_state_of_another_flow_version_is_refused() -> None:
    flow = intake_flow()
    other = new_state(flow, "en").model_copy(update={"version": "something-else"})
    with pytest.raises(FlowMismatchError):
        step(flow, other, Begin())


def test_every_reply_is_plain_data() -> None:
    c = Client()
    c.run()
    kinds = {type(r) for r in c.replies}
    assert kinds <= {Message, Alert, SaveRequest}
    assert decode("x:1") is None and decode("garbage") is None
    assert decode("b:3") == Back(3) and decode("r:2") == Restart(2)

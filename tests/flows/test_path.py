"""The client's path through the engine: progress, the summary, changing an answer, red flags."""

from __future__ import annotations

import re

from flows import Message
from flows.engine import is_question
from flows.schema import ChecklistNode, ChoiceNode, Flow, YesNoNode
from tests.factories import DEFAULT_ANSWERS, Client, intake_flow

PROGRESS_RE = re.compile(r"^(?:<i>)?(?:Question|Вопрос) (\d+) (?:of|из) (\d+)(?:</i>)?\n")


def first_answers(flow: Flow) -> dict[str, str | tuple[str, ...]]:
    """The answers the progress line predicts: a choice's first answer, a checklist's "none"."""
    plan: dict[str, str | tuple[str, ...]] = dict(DEFAULT_ANSWERS)
    for node_id, node in flow.nodes.items():
        if isinstance(node, ChoiceNode | YesNoNode):
            plan[node_id] = node.options[0].id
        elif isinstance(node, ChecklistNode):
            plan[node_id] = tuple(o.id for o in node.options if o.exclusive)[:1]
    return plan


def walk(
    c: Client, plan: dict[str, str | tuple[str, ...]]
) -> list[tuple[str, int | None, int | None]]:
    """Answer from ``plan`` up to the summary; every screen as (node, k, n) (None: no line)."""
    screens: list[tuple[str, int | None, int | None]] = []
    for _ in range(60):
        shown = [m for m in c.messages if m.node == c.node and m.kind != "outcome"]
        found = PROGRESS_RE.match(shown[-1].text) if shown else None
        k, n = (int(found.group(1)), int(found.group(2))) if found else (None, None)
        screens.append((c.node, k, n))
        kind = c.flow.nodes[c.node].kind
        if kind == "confirm" or c.state.finished:
            return screens
        if kind == "info":
            c.cont()
        else:
            c.answer(plan[c.node])
    raise AssertionError("the dialogue did not reach the summary")


def test_progress_counts_only_questions_and_is_exact_on_the_predicted_path() -> None:
    flow = intake_flow()
    c = Client(lang="en")
    screens = walk(c, first_answers(flow))
    questions = [node for node, _, _ in screens if is_question(flow.nodes[node])]
    assert "welcome" not in questions, "the opening menu records nothing: not a question"
    assert all(not is_question(flow.nodes[n]) for n in ("welcome", "confirm", "oil_info"))
    # a progress line on every question and only there
    assert [node for node, k, _ in screens if k is not None] == questions
    assert [k for _, k, _ in screens if k is not None] == list(range(1, len(questions) + 1))
    # nothing along this path went elsewhere than predicted: n never moves
    assert {n for _, _, n in screens if n is not None} == {len(questions)}


def test_progress_changes_only_when_an_answer_changes_the_path() -> None:
    flow = intake_flow()
    predicted = first_answers(flow)
    baseline = [node for node, k, _ in walk(Client(lang="en"), predicted) if k is not None]
    plan = {**predicted, "conditions": ("scoliosis",), "oils": "no"}
    screens = [s for s in walk(Client(lang="en"), plan) if s[1] is not None]
    nodes = [node for node, _, _ in screens]
    assert [k for _, k, _ in screens] == list(range(1, len(screens) + 1))
    # three stretches: up to the conditions, then with the scoliosis follow-up(s), then
    # after "no oils" (which skips the oil questions); n is constant on each
    cut1 = nodes.index("conditions") + 1
    cut2 = nodes.index("oils") + 1
    stretches = [screens[:cut1], screens[cut1:cut2], screens[cut2:]]
    values = [{n for _, _, n in part} for part in stretches]
    assert all(len(v) == 1 for v in values), screens
    before, with_follow_up, final = (v.pop() for v in values)
    assert before == len(baseline), "up to the conditions, the predicted path"
    added = [n for n in nodes if n not in baseline]
    skipped = [n for n in baseline if n not in nodes]
    assert added and skipped
    assert with_follow_up == before + len(added), "the scoliosis question(s) joined the path"
    assert final == with_follow_up - len(skipped) == len(screens), "then the oil ones left it"


def test_back_steps_progress_back_by_one() -> None:
    c = Client(lang="en")
    c.choose("start")
    c.tick("none")
    first = PROGRESS_RE.match(c.messages[-1].text)
    c.tick("none")
    c.back()
    again = PROGRESS_RE.match(c.messages[-1].text)
    assert first is not None and again is not None
    assert again.groups() == first.groups()


def test_progress_in_russian_has_no_tilde() -> None:
    c = Client(lang="ru")
    c.choose("start")
    text = c.messages[-1].text
    assert re.match(r"^<i>Вопрос 1 из \d+</i>", text), text
    assert "~" not in text


def test_the_summary_lists_answers_only_and_the_reason_does_not_echo_them() -> None:
    c = Client(lang="en")
    c.run({"conditions": ("osteochondrosis",), "osteo_region": "lumbosacral"}, stop_at="confirm")
    outcome = "\n".join(c.transcript)
    summary = c.text
    assert "Opening choice" not in summary and "Start the questions" not in summary
    assert "(your answer" not in outcome and "«" not in outcome
    assert "Spine region" in summary and "Lumbosacral" in summary
    c.revise()
    targets = [b.data for row in c.messages[0].buttons for b in row if b.data.startswith("v:")]
    assert not any(t.endswith(":welcome") for t in targets)
    c.back()  # leave the list of answers
    c.confirm()
    [draft] = c.saved
    assert [a.node for a in draft.answers][0] == "emergency"
    assert not any("(your answer" in r for r in draft.reasons)


def test_english_texts_use_english_quotes() -> None:
    c = Client(lang="en")
    c.run(
        {
            "conditions": ("scoliosis", "hernia"),
            "scoliosis_degree": "d2",
            "hernia_stage": "recovery",
        },
        stop_at="confirm",
    )
    assert not any("«" in text or "»" in text for text in c.transcript)


# --- changing one answer from the summary -----------------------------------------


def at_summary(plan: dict[str, str | tuple[str, ...]] | None = None) -> Client:
    c = Client(lang="en")
    c.run(plan or {}, stop_at="confirm")
    assert c.node == "confirm"
    return c


def answer_nodes(c: Client) -> list[str]:
    return [e.node for e in c.state.history if not e.auto]


def test_changing_the_name_keeps_the_phone_and_call_time() -> None:
    c = at_summary({"call_time": "morning"})
    before = answer_nodes(c)
    c.revise("name")
    assert c.node == "name"
    c.type("Olga")
    assert c.node == "confirm", "nothing else is asked again"
    assert answer_nodes(c) == before
    assert "Olga" in c.text and "+7 912 345-67-89" in c.text
    c.confirm()
    [draft] = c.saved
    assert draft.fields == {**draft.fields, "name": "Olga", "call_time": "morning"}
    assert draft.fields["phone"] == "+79123456789"


def test_a_change_asks_only_the_questions_it_makes_necessary() -> None:
    oils = {"oils": "yes", "oil_allergy": "none", "oil_scent": "calming"}
    without = [e.node for e in at_summary({"oils": "no"}).state.history]
    with_oils = [e.node for e in at_summary(oils).state.history]
    necessary = [n for n in with_oils if n not in without]
    c = at_summary({"oils": "no", "call_time": "evening"})
    c.revise("oils")
    c.choose("yes")
    asked = [c.node]
    while c.node != "confirm":
        node = c.flow.nodes[c.node]
        if node.kind == "info":
            c.cont()
        else:
            c.answer(oils[c.node])
        asked.append(c.node)
    assert asked == [*necessary, "confirm"]
    assert "oil_allergy" in asked
    c.confirm()
    [draft] = c.saved
    assert draft.fields["call_time"] == "evening" and draft.fields["name"] == "Анна"
    assert draft.facts["oils"] == ["yes"]


def test_a_change_to_the_outcome_shows_the_new_outcome_and_drops_answers_off_the_path() -> None:
    c = at_summary({"oils": "yes", "oil_allergy": "none", "oil_scent": "calming"})
    c.revise("chronic")
    c.tick("oncology")
    assert any(m.kind == "outcome" for m in c.messages), "the new outcome is shown"
    assert c.node == "offer_call", "a new screen on the path is asked"
    c.choose("yes")
    assert c.node == "confirm"
    c.confirm()
    [draft] = c.saved
    assert draft.outcome == "STOP"
    assert "oils" not in draft.facts, "the oil answers are off the path now"
    assert draft.fields["name"] == "Анна" and draft.fields["phone"] == "+79123456789"


def test_an_unchanged_outcome_is_not_shown_again() -> None:
    c = at_summary()
    c.revise("fracture")
    c.choose("no")
    assert c.node == "confirm"
    assert not any(m.kind == "outcome" for m in c.messages)


def test_back_while_changing_an_answer_still_keeps_the_later_ones() -> None:
    c = at_summary()
    c.revise("conditions")
    c.tick("scoliosis")
    assert c.node == "scoliosis_degree"
    c.back()
    assert c.node == "conditions"
    c.tick("none")  # untick scoliosis: "none" is exclusive
    assert c.node == "confirm"
    c.confirm()
    assert c.saved[0].fields["name"] == "Анна"


def test_progress_while_changing_an_answer_counts_the_kept_ones() -> None:
    c = at_summary()
    total = sum(1 for e in c.state.history if not e.auto and is_question(c.flow.nodes[e.node]))
    c.revise("name")
    found = PROGRESS_RE.match(next(m for m in c.messages if isinstance(m, Message)).text)
    assert found is not None
    names = [e.node for e in c.state.history if is_question(c.flow.nodes[e.node])]
    assert int(found.group(1)) == len(names) + 1
    assert int(found.group(2)) == total


# --- red flags belong to one dialogue ---------------------------------------------


def test_a_new_dialogue_after_a_saved_request_carries_no_red_flags() -> None:
    c = Client()
    c.run({"chronic": ("oncology",)})
    assert c.saved[0].outcome == "STOP"
    assert c.state.red_flags == ("contraindication=oncology",)
    c.restart()
    assert c.state.red_flags == ()
    c.run()
    second = c.saved[-1]
    assert second.red_flag_changed is False
    assert second.withdrawn_red_flags == ()


def test_a_new_dialogue_after_a_goodbye_carries_no_red_flags() -> None:
    c = Client()
    c.run({"chronic": ("heart",), "offer_call": "no"})
    assert c.state.finished and not c.saved
    c.restart()
    assert c.state.red_flags == ()


def test_start_over_inside_a_dialogue_still_keeps_red_flags() -> None:
    c = Client()
    c.run({"acute": ("fever_infection",)}, stop_at="chronic")
    flags = c.state.red_flags
    assert flags and all(f.startswith("contraindication=") for f in flags)
    c.restart()
    assert c.state.red_flags == flags

"""Random walks through the shipped flow: whatever a client presses, the safety invariant holds."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows import POLICY, Message, TextInput, decode
from flows.markup import html_problem
from flows.schema import level_rank
from tests.factories import Client

_level_of = {"EMERGENCY": 4, "STOP": 3, "LATER": 2, "CLEAR": 1, "OK": 0}


def _assert_safe(client: Client) -> None:
    """The outcome on record respects every policy item the client's current answers hold."""
    facts = {(k, v) for k, vs in client.facts.items() for v in vs}
    outcome = client.outcome
    if outcome is None:
        return
    for item in POLICY.applicable(frozenset(facts)):
        if item.fact in facts:
            assert level_rank(outcome) >= level_rank(item.min_level), (  # type: ignore[arg-type]
                f"{item.fact} reached {outcome}"
            )
    if any(f in POLICY.emergency for f in facts):
        assert outcome == "EMERGENCY" and client.state.finished


def _assert_well_formed(client: Client) -> None:
    for reply in client.replies:
        if isinstance(reply, Message):
            assert len(reply.text) <= 4096
            assert html_problem(reply.text) is None, reply.text
            for row in reply.buttons:
                for button in row:
                    assert len(button.data.encode()) <= 64
                    assert decode(button.data) is not None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), lang=st.sampled_from(["ru", "en"]))
def test_random_walks_never_suggest_massage_after_a_contraindication(
    data: st.DataObject, lang: str
) -> None:
    client = Client(lang=lang)  # type: ignore[arg-type]
    buttons = [b for m in client.messages for row in m.buttons for b in row]
    for _ in range(70):
        if data.draw(st.integers(0, 9), label="type instead") == 0:
            text = data.draw(st.text(max_size=30) | st.sampled_from(["+79123456789", "Ann"]))
            before = client.state
            client.send(TextInput(text))
            if client.alerts:
                assert client.state == before, "refused input changes nothing"
        else:
            # prefer answers over Back / Start over so that walks get deep
            answers = [b for b in buttons if not b.data.startswith(("b:", "r:"))]
            pool = answers if answers and data.draw(st.integers(0, 7)) else buttons
            button = data.draw(st.sampled_from(pool), label="press")
            inp = decode(button.data)
            assert inp is not None
            client.send(inp)
        _assert_well_formed(client)
        _assert_safe(client)
        for draft in client.saved:
            for item in POLICY.items:
                key, value = item.fact
                if value in draft.facts.get(key, []) and all(
                    w[1] in draft.facts.get(w[0], []) for w in item.when
                ):
                    assert draft.outcome is not None
                    assert _level_of[draft.outcome] >= _level_of[item.min_level]
        shown = [b for m in client.messages for row in m.buttons for b in row]
        if shown:
            buttons = shown

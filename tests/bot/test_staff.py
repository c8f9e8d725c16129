"""Staff work the queue in the staff group: cards, buttons, commands, relays, announcements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.app import run_housekeeping
from storage import get_request, list_events, list_requests
from tests.bot.conftest import RunningBot, start_bot
from tests.bot.people import FULL, Person
from tests.fakebotapi import FakeBotAPI

STAFF_CHAT = -1001234
STAFF, ADMIN, MEMBER, STRANGER = 900, 901, 902, 555


class Clock:
    """A clock the test moves by hand (UTC)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


# 10:00 in Moscow (UTC+3): within opening hours
MORNING = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock(MORNING)


@pytest.fixture
async def staff_bot(
    fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine], clock: Clock
) -> AsyncIterator[RunningBot]:
    url, engine = database
    fake_bot_api.add_chat(STAFF_CHAT, title="Staff")
    fake_bot_api.add_chat_member(STAFF_CHAT, MEMBER)
    running = await start_bot(
        fake_bot_api, url, engine, clock=clock, staff_chat_id=STAFF_CHAT,
        staff_user_ids=[STAFF], admin_user_ids=[ADMIN], staff_language="en",
    )  # fmt: skip
    try:
        yield running
    finally:
        await running.stop()


def staff_messages(api: FakeBotAPI) -> list[dict[str, Any]]:
    return api.messages(STAFF_CHAT)


def card_of(api: FakeBotAPI, request_id: int) -> dict[str, Any]:
    return next(m for m in staff_messages(api) if m["text"].startswith(f"Request #{request_id}"))


async def press_card(api: FakeBotAPI, user: int, request_id: int, label: str) -> str:
    """A staff member (or not) presses a button on a request's card."""
    card = card_of(api, request_id)
    rows = card["reply_markup"]["inline_keyboard"]
    data = next(b["callback_data"] for row in rows for b in row if label in b["text"])
    query = api.user_callback(user, card["message_id"], data, chat_id=STAFF_CHAT)
    await api.wait_for("answerCallbackQuery", lambda c: c.params["callback_query_id"] == query)
    await api.wait_idle(quiet=0.15)
    return query


async def staff_says(api: FakeBotAPI, user: int, text: str, **extra: Any) -> None:
    api.user_message(user, text, chat_id=STAFF_CHAT, chat_type="supergroup", **extra)
    await api.wait_for("sendMessage", lambda c: c.params["chat_id"] == STAFF_CHAT, timeout=10)
    await api.wait_idle(quiet=0.15)


async def intake(
    api: FakeBotAPI, user: int, plan: dict[str, Any] | None = None, start: str = "/start"
) -> None:
    person = Person(api, user)
    await person.say(start)
    await person.walk(plan or {}, FULL)


async def test_a_new_request_is_posted_as_a_card(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    await intake(fake_bot_api, 1101, {"fracture": "yes", "name": "Ольга"}, start="/start ad_spring")
    async with staff_bot.sessionmaker() as session:
        [request] = await list_requests(session=session)
    assert request.source == "ad_spring"
    card = card_of(fake_bot_api, request.id)  # type: ignore[arg-type]
    text = card["text"]
    for piece in ("new", "Ольга", "+79123456789", "CLEAR", "fracture", "Source: ad_spring",
                  "Flow: intake@", "Waiting: 0 min", "Recent spine fracture: Yes"):  # fmt: skip
        assert piece in text, piece
    labels = [b["text"] for row in card["reply_markup"]["inline_keyboard"] for b in row]
    assert labels == ["👤 Take"]
    assert request.card_message_id == card["message_id"]


async def test_take_called_and_no_answer_edit_the_card_in_place_and_are_audited(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI, clock: Clock
) -> None:
    await intake(fake_bot_api, 1102)
    async with staff_bot.sessionmaker() as session:
        [request] = await list_requests(session=session)
    assert request.id is not None
    cards_before = len(staff_messages(fake_bot_api))
    clock.now += timedelta(minutes=5)
    await press_card(fake_bot_api, STAFF, request.id, "Take")
    assert "taken" in card_of(fake_bot_api, request.id)["text"]
    clock.now += timedelta(minutes=5)
    await press_card(fake_bot_api, STAFF, request.id, "No answer")
    card = card_of(fake_bot_api, request.id)
    assert "no answer" in card["text"] and "Call attempts: 1" in card["text"]
    await press_card(fake_bot_api, STAFF, request.id, "in 3 h")
    assert "Call again:" in card_of(fake_bot_api, request.id)["text"]
    await press_card(fake_bot_api, ADMIN, request.id, "Called: booked")
    assert "booked" in card_of(fake_bot_api, request.id)["text"]
    await press_card(fake_bot_api, ADMIN, request.id, "Close")
    assert "closed" in card_of(fake_bot_api, request.id)["text"]
    assert len(staff_messages(fake_bot_api)) == cards_before, "edited in place, not re-posted"
    client_messages = len(fake_bot_api.messages(1102))
    async with staff_bot.sessionmaker() as session:
        events = await list_events(session=session, request_id=request.id)
        stored = await get_request(session=session, request_id=request.id)
    assert [(e.from_status, e.to_status) for e in events if e.action == "status"] == [
        ("new", "taken"), ("taken", "no_answer"), ("no_answer", "booked"), ("booked", "closed"),
    ]  # fmt: skip
    assert [e.action for e in events].count("retry") == 1
    assert events[0].actor_id == STAFF and events[-1].actor_id == ADMIN
    assert stored is not None and stored.first_call_at == MORNING + timedelta(minutes=10)
    assert len(fake_bot_api.messages(1102)) == client_messages
    # closing did not message the client; the follow-up is a deliberate choice
    await press_card(fake_bot_api, STAFF, request.id, "follow-up")
    assert "Thank you for contacting" in fake_bot_api.last_message(1102)["text"]  # type: ignore[index]


async def test_a_stranger_is_refused_and_shown_nothing(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    await intake(fake_bot_api, 1103)
    async with staff_bot.sessionmaker() as session:
        [request] = await list_requests(session=session)
    assert request.id is not None
    query = await press_card(fake_bot_api, STRANGER, request.id, "Take")
    assert fake_bot_api.callback_answers[query]["text"] == "This is for the center's staff only."
    assert "new" in card_of(fake_bot_api, request.id)["text"]
    for command in ("/queue", f"/request {request.id}", f"/note {request.id} hi", "/stats"):
        fake_bot_api.user_message(STRANGER, command)
        call = await fake_bot_api.wait_for("sendMessage", lambda c: c.params["chat_id"] == STRANGER)
        assert call.params["text"] == "This is for the center's staff only."
        assert "+7912" not in call.params["text"]
    async with staff_bot.sessionmaker() as session:
        assert await list_events(session=session, request_id=request.id) == []


async def test_a_member_of_the_staff_group_counts_as_staff(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    await intake(fake_bot_api, 1104)
    async with staff_bot.sessionmaker() as session:
        [request] = await list_requests(session=session)
    assert request.id is not None
    await press_card(fake_bot_api, MEMBER, request.id, "Take")
    assert "taken" in card_of(fake_bot_api, request.id)["text"]


async def test_queue_request_note_and_stats(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI, clock: Clock
) -> None:
    await intake(fake_bot_api, 1105, {"name": "First"})
    clock.now += timedelta(minutes=1)
    await intake(fake_bot_api, 1106, {"name": "Doctor", "fracture": "yes"})
    await staff_says(fake_bot_api, STAFF, "/queue")
    queue = staff_messages(fake_bot_api)[-1]["text"]
    assert queue.index("Doctor") < queue.index("First"), "a doctor's word needed: first"
    await staff_says(fake_bot_api, STAFF, "/note 1 called twice, line busy")
    await staff_says(fake_bot_api, STAFF, "/request 1")
    details = staff_messages(fake_bot_api)[-1]["text"]
    assert "First" in details and "called twice, line busy" in details
    await staff_says(fake_bot_api, STAFF, "/stats")
    stats = staff_messages(fake_bot_api)[-1]["text"]
    assert (
        "new 2" in stats and "by outcome: CLEAR 1, OK 1" in stats and "by source: direct 2" in stats
    )
    assert "welcome: 2 / 0" in stats and "done: 2 / 2" in stats


async def test_overdue_requests_are_announced_again_in_opening_hours_only(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI, clock: Clock
) -> None:
    await intake(fake_bot_api, 1107)
    clock.now += timedelta(minutes=10)
    assert await run_housekeeping(staff_bot.app) == (0, 0), "not overdue yet"
    clock.now += timedelta(minutes=25)
    assert await run_housekeeping(staff_bot.app) == (0, 1)
    assert staff_messages(fake_bot_api)[-1]["text"].startswith("⏰ Still waiting for a call")
    clock.now += timedelta(minutes=5)
    assert await run_housekeeping(staff_bot.app) == (0, 0), "not again right away"
    clock.now = datetime(2026, 11, 24, 20, 30, tzinfo=UTC)  # 23:30 in Moscow
    assert await run_housekeeping(staff_bot.app) == (0, 0), "nothing at night"
    clock.now = datetime(2026, 11, 25, 6, 5, tzinfo=UTC)  # 9:05 in Moscow
    assert await run_housekeeping(staff_bot.app) == (0, 1)


async def test_a_card_that_failed_to_post_is_redelivered(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    fake_bot_api.block_chat(STAFF_CHAT)  # e.g. the bot was removed from the group
    await intake(fake_bot_api, 1108)
    async with staff_bot.sessionmaker() as session:
        [request] = await list_requests(session=session)
    assert request.card_message_id is None and request.delivery_error
    assert request.status == "new", "the request is stored all the same"
    fake_bot_api.unblock_chat(STAFF_CHAT)
    assert await run_housekeeping(staff_bot.app) == (1, 0)
    async with staff_bot.sessionmaker() as session:
        [request] = await list_requests(session=session)
    assert request.card_message_id == card_of(fake_bot_api, request.id)["message_id"]  # type: ignore[arg-type]


async def test_a_clients_question_reaches_staff_and_the_reply_comes_back(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    person = Person(fake_bot_api, 1109)
    await person.say("/start")
    await person.walk({}, ["welcome"])
    await person.press("Ask a question")
    assert "Write your question" in person.last
    await person.say("Можно ли массаж при беременности?")
    assert "passed to our staff" in person.last
    forwarded = staff_messages(fake_bot_api)[-1]
    assert "Можно ли массаж при беременности?" in forwarded["text"]
    state_before = person.texts[:]
    await staff_says(fake_bot_api, STAFF, "Нужна консультация врача, позвоните нам.",
                     reply_to_message=forwarded)  # fmt: skip
    await person.settle()
    assert "Нужна консультация врача" in person.last
    assert "Answer from the Veronika Herba center" in person.last
    assert all("Question" not in m for m in person.texts[len(state_before) :]), (
        "no prompts meanwhile"
    )
    await person.press("Back to the questionnaire")
    assert "Safety first" in person.last


async def test_status_tells_the_client_where_their_request_is(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    person = Person(fake_bot_api, 1110)
    await person.say("/status")
    assert "no request yet" in person.last
    await intake(fake_bot_api, 1110)
    await person.say("/status")
    assert "Your request #1: received" in person.last
    await press_card(fake_bot_api, STAFF, 1, "Take")
    await person.say("/status")
    assert "a staff member is on it" in person.last

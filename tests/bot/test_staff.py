"""Staff work the queue in the staff group: cards, buttons, commands, relays, announcements."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from telegram import Update

from bot.app import MESSAGE_LIMIT, PRUNE_BATCH, error_report, run_housekeeping, run_retention
from storage import (
    claim_update,
    get_request,
    list_events,
    list_requests,
    store_updates,
    utcnow,
)
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


async def card_button(
    api: FakeBotAPI, request_id: int, label: str, prefix: str = "Request"
) -> tuple[dict[str, Any], str]:
    """The request's card and the data of its button ``label``, once the bot has drawn it
    (the card is posted, and edited after each press, a moment after the reply)."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        cards = [m for m in staff_messages(api) if m["text"].startswith(f"{prefix} #{request_id}")]
        for card in cards[:1]:
            rows = (card.get("reply_markup") or {}).get("inline_keyboard", [])
            found = [b["callback_data"] for row in rows for b in row if label in b["text"]]
            if found:
                return card, found[0]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no button {label!r} on the card of request #{request_id}")
        await asyncio.sleep(0.02)


async def press_card(api: FakeBotAPI, user: int, request_id: int, label: str) -> str:
    """A staff member (or not) presses a button on a request's card."""
    card, data = await card_button(api, request_id, label)
    query = api.user_callback(user, card["message_id"], data, chat_id=STAFF_CHAT)
    await api.wait_for("answerCallbackQuery", lambda c: c.params["callback_query_id"] == query)
    await api.wait_idle(quiet=0.15)
    return query


async def staff_says(api: FakeBotAPI, user: int, text: str, **extra: Any) -> None:
    """Say ``text`` in the staff group and wait for the bot's answer to it (not an older one)."""
    before = len(api.calls)
    api.user_message(user, text, chat_id=STAFF_CHAT, chat_type="supergroup", **extra)

    def answer(call: Any) -> bool:
        newer = any(call is c for c in api.calls[before:])
        return newer and call.params["chat_id"] == STAFF_CHAT

    await api.wait_for("sendMessage", answer, timeout=10)
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
    await press_card(fake_bot_api, STAFF, request.id, "thank-you")
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
    await staff_bot.drained()  # what it queued is sent
    clock.now += timedelta(minutes=25)
    assert await run_housekeeping(staff_bot.app) == (0, 1)
    await staff_bot.drained()  # what it queued is sent
    assert staff_messages(fake_bot_api)[-1]["text"].startswith("⏰ Still waiting for a call")
    clock.now += timedelta(minutes=5)
    assert await run_housekeeping(staff_bot.app) == (0, 0), "not again right away"
    await staff_bot.drained()  # what it queued is sent
    clock.now = datetime(2026, 11, 24, 20, 30, tzinfo=UTC)  # 23:30 in Moscow
    assert await run_housekeeping(staff_bot.app) == (0, 0), "nothing at night"
    await staff_bot.drained()  # what it queued is sent
    clock.now = datetime(2026, 11, 25, 6, 5, tzinfo=UTC)  # 9:05 in Moscow
    assert await run_housekeeping(staff_bot.app) == (0, 1)
    await staff_bot.drained()  # what it queued is sent


async def test_a_card_that_failed_to_post_is_redelivered(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    fake_bot_api.block_chat(STAFF_CHAT)  # e.g. the bot was removed from the group
    await intake(fake_bot_api, 1108)
    await staff_bot.drained()
    async with staff_bot.sessionmaker() as session:
        [request] = await list_requests(session=session)
    assert request.card_message_id is None and request.delivery_error
    assert request.status == "new", "the request is stored all the same"
    fake_bot_api.unblock_chat(STAFF_CHAT)
    assert await run_housekeeping(staff_bot.app) == (1, 0)
    await staff_bot.drained()  # what it queued is sent
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


# --- call-backs -------------------------------------------------------------------------


async def _no_answer(api: FakeBotAPI, user: int, request_id: int, when: str) -> None:
    await press_card(api, STAFF, request_id, "Take")
    await press_card(api, STAFF, request_id, "No answer")
    await press_card(api, STAFF, request_id, when)


def reminders(api: FakeBotAPI) -> list[dict[str, Any]]:
    return [m for m in staff_messages(api) if m["text"].startswith("📞 Time to call back")]


async def test_a_call_back_reminds_the_group_at_its_time_and_survives_a_restart(
    fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine], clock: Clock
) -> None:
    url, engine = database
    fake_bot_api.add_chat(STAFF_CHAT, title="Staff")
    settings = {"staff_chat_id": STAFF_CHAT, "staff_user_ids": [STAFF], "staff_language": "en"}
    first = await start_bot(fake_bot_api, url, engine, clock=clock, **settings)
    try:
        await intake(fake_bot_api, 1201)
        await _no_answer(fake_bot_api, 1201, 1, "in 1 h")
        assert "Call again: 24.11 11:00" in card_of(fake_bot_api, 1)["text"], "Moscow time"
        assert first.app.job_queue is not None
        [job] = first.app.job_queue.get_jobs_by_name("callback:1")
        assert job.next_t is not None
        delay = job.next_t - datetime.now(UTC)
        assert timedelta(minutes=55) < delay <= timedelta(hours=1), "scheduled in an hour"
        clock.now += timedelta(minutes=30)
        await job.run(first.app)
        await first.drained()  # what it queued is sent
        assert reminders(fake_bot_api) == [], "not before its time"
    finally:
        await first.stop()
    second = await start_bot(fake_bot_api, url, engine, clock=clock, **settings)
    try:
        assert second.app.job_queue is not None
        [job] = second.app.job_queue.get_jobs_by_name("callback:1")  # rescheduled from the db
        clock.now = MORNING + timedelta(hours=1)
        await job.run(second.app)
        await second.drained()  # what it queued is sent
        [reminder] = reminders(fake_bot_api)
        assert "Request #1" in reminder["text"]
        assert reminder["reply_to_message"]["message_id"] == card_of(fake_bot_api, 1)["message_id"]
        assert await run_housekeeping(second.app) == (0, 0)
        await second.drained()  # what it queued is sent
        assert len(reminders(fake_bot_api)) == 1, "reminded once"
    finally:
        await second.stop()


async def test_a_call_back_after_closing_time_moves_to_the_next_opening(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI, clock: Clock
) -> None:
    clock.now = datetime(2026, 11, 24, 16, 30, tzinfo=UTC)  # 19:30 in Moscow
    await intake(fake_bot_api, 1202)
    await _no_answer(fake_bot_api, 1202, 1, "in 3 h")  # 22:30: closed
    assert "Call again: 25.11 09:00" in card_of(fake_bot_api, 1)["text"]
    clock.now = datetime(2026, 11, 24, 19, 30, tzinfo=UTC)  # 22:30 in Moscow
    await run_housekeeping(staff_bot.app)
    await staff_bot.drained()  # what it queued is sent
    assert reminders(fake_bot_api) == [], "nothing at night"
    clock.now = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)  # 9:00 in Moscow
    await run_housekeeping(staff_bot.app)
    await staff_bot.drained()  # what it queued is sent
    assert len(reminders(fake_bot_api)) == 1


async def test_the_client_is_not_told_of_a_missed_call_by_default(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    await intake(fake_bot_api, 1203)
    before = len(fake_bot_api.messages(1203))
    await press_card(fake_bot_api, STAFF, 1, "Take")
    await press_card(fake_bot_api, STAFF, 1, "No answer")
    assert len(fake_bot_api.messages(1203)) == before


async def test_with_the_setting_the_client_is_told_we_tried_to_call(
    fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine], clock: Clock
) -> None:
    url, engine = database
    fake_bot_api.add_chat(STAFF_CHAT, title="Staff")
    running = await start_bot(
        fake_bot_api, url, engine, clock=clock, staff_chat_id=STAFF_CHAT,
        staff_user_ids=[STAFF], tell_client_no_answer=True,
    )  # fmt: skip
    try:
        await intake(fake_bot_api, 1204)
        await press_card_ru(fake_bot_api, 1, "Взять")
        await press_card_ru(fake_bot_api, 1, "Не ответил")
        await fake_bot_api.wait_for("sendMessage", lambda c: c.params["chat_id"] == 1204)
        last = fake_bot_api.last_message(1204)
        assert last is not None and last["text"].startswith("We tried to call you")
        assert "+7 (495) 085-15-13 (9:00–21:00" in last["text"]
    finally:
        await running.stop()


async def press_card_ru(api: FakeBotAPI, request_id: int, label: str) -> None:
    card, data = await card_button(api, request_id, label, prefix="Заявка")
    query = api.user_callback(STAFF, card["message_id"], data, chat_id=STAFF_CHAT)
    await api.wait_for("answerCallbackQuery", lambda c: c.params["callback_query_id"] == query)
    await api.wait_idle(quiet=0.15)


# --- the lifecycle on the card ----------------------------------------------------------


async def test_a_stale_card_button_is_refused_and_the_card_shows_the_truth(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    await intake(fake_bot_api, 1205)
    card = card_of(fake_bot_api, 1)
    await press_card(fake_bot_api, STAFF, 1, "Take")
    await press_card(fake_bot_api, STAFF, 1, "Close")
    # the old "Take" button of a card shown before (e.g. an announcement)
    query = fake_bot_api.user_callback(
        STAFF, card["message_id"], "S:take:1", chat_id=STAFF_CHAT, check_button=False
    )
    await fake_bot_api.wait_for(
        "answerCallbackQuery", lambda c: c.params["callback_query_id"] == query
    )
    await fake_bot_api.wait_idle(quiet=0.15)
    assert fake_bot_api.callback_answers[query]["text"].startswith("That is not possible now")
    async with staff_bot.sessionmaker() as session:
        request = await get_request(session=session, request_id=1)
    assert request is not None and request.status == "closed"
    assert "closed" in card_of(fake_bot_api, 1)["text"]


# --- malformed staff input --------------------------------------------------------------


async def test_huge_numbers_and_forged_pages_get_an_answer_not_an_error(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    await intake(fake_bot_api, 1206, {"name": "Ирина"})
    huge = "99999999999999999999"
    await staff_says(fake_bot_api, STAFF, f"/request {huge}")
    assert staff_messages(fake_bot_api)[-1]["text"] == "There is no request with that number."
    await staff_says(fake_bot_api, STAFF, f"/note {huge} hello")
    assert staff_messages(fake_bot_api)[-1]["text"] == "There is no request with that number."
    await staff_says(fake_bot_api, STAFF, f"/queue {huge}")
    assert "Open requests" in staff_messages(fake_bot_api)[-1]["text"], "the last page"
    await staff_says(fake_bot_api, STAFF, "/queue -3")
    assert "Open requests (1/1" in staff_messages(fake_bot_api)[-1]["text"]
    queue = staff_messages(fake_bot_api)[-1]
    for data in (f"S:queue:{huge}", f"S:take:{huge}", "S:bogus:1"):
        query = fake_bot_api.user_callback(
            STAFF, queue["message_id"], data, chat_id=STAFF_CHAT, check_button=False
        )
        await fake_bot_api.wait_for(
            "answerCallbackQuery", lambda c, q=query: c.params["callback_query_id"] == q
        )
        await fake_bot_api.wait_idle(quiet=0.15)
    assert "Open requests" in staff_messages(fake_bot_api)[-1]["text"]
    assert not [m for m in staff_messages(fake_bot_api) if m["text"].startswith("⚠️ Error")]
    fake_bot_api.assert_no_rejections()


# --- the error report -------------------------------------------------------------------


async def test_an_error_is_reported_to_the_group_by_ids_only(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    person = Person(fake_bot_api, 1207)
    await person.say("/start")
    await person.walk({"name": "Зинаида"}, FULL[:-2])  # at the call time question
    update = Update.de_json(
        fake_bot_api.user_message(1207, "позвоните после обеда, Зинаида +79123456789"),
        staff_bot.app.bot,
    )
    words = "Зинаида +79123456789 позвоните после обеда"
    try:
        raise RuntimeError(words)  # an exception whose message quotes the client
    except RuntimeError as exc:
        error = exc
    await staff_bot.app.process_error(update, error)
    await fake_bot_api.wait_for(
        "sendMessage", lambda c: c.params["chat_id"] == STAFF_CHAT and "Error" in c.params["text"]
    )
    report = staff_messages(fake_bot_api)[-1]["text"]
    assert report.startswith("⚠️ Error: RuntimeError")
    assert f"update {update.update_id}" in report and "chat 1207" in report
    assert "question call_time" in report
    for secret in ("Зинаида", "79123456789", "позвоните", "Anna"):
        assert secret not in report


def test_a_long_error_report_fits_telegrams_limit() -> None:
    frames = "".join(f'  File "bot/x.py", line {i}, in f\n    a < b & c\n' for i in range(500))
    report = error_report(
        update_id=1, chat_id=2, question="phone", error="ValueError", notes="n", frames=frames
    )
    assert len(report) <= MESSAGE_LIMIT
    assert report.startswith("⚠️ <b>Error</b>: ValueError\nupdate 1 · chat 2 · question phone")
    assert "line 499, in f" in report and "line 0," not in report, "the newest frames kept"
    assert report.endswith("</pre>") and "&lt;" in report


# --- retention --------------------------------------------------------------------------


async def test_personal_data_are_erased_retention_days_after_closing(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI, clock: Clock
) -> None:
    await intake(fake_bot_api, 1208, {"name": "Тамара"})
    await intake(fake_bot_api, 1209, {"name": "Still open"})
    await press_card(fake_bot_api, STAFF, 1, "Take")
    await press_card(fake_bot_api, STAFF, 1, "Called: booked")
    await staff_says(fake_bot_api, STAFF, "/note 1 Тамара просила звонить вечером")
    await press_card(fake_bot_api, STAFF, 1, "Close")
    closed_at = clock.now
    clock.now = closed_at + timedelta(days=179)
    assert await run_retention(staff_bot.app) == 0, "kept for RETENTION_DAYS (180)"
    clock.now = closed_at + timedelta(days=181)
    assert await run_retention(staff_bot.app) == 1
    assert await run_retention(staff_bot.app) == 0, "once"
    async with staff_bot.sessionmaker() as session:
        erased = await get_request(session=session, request_id=1)
        kept = await get_request(session=session, request_id=2)
        events = await list_events(session=session, request_id=1)
    assert erased is not None and kept is not None
    assert (erased.name, erased.phone, erased.preferred_time) == (None, None, None)
    assert erased.answers == [] and erased.facts == {} and erased.reasons == []
    assert erased.erased_at == clock.now
    assert (erased.outcome, erased.status, erased.source) == ("OK", "closed", None)
    assert erased.created_at == MORNING and erased.closed_at == closed_at
    assert all(e.note is None for e in events) and len(events) == 4
    assert kept.name == "Still open" and kept.answers, "open requests are kept"
    await staff_says(fake_bot_api, STAFF, "/stats")
    await staff_says(fake_bot_api, STAFF, "/request 1")
    shown = staff_messages(fake_bot_api)[-1]["text"]
    assert "Personal data erased" in shown and "Тамара" not in shown


async def test_a_status_set_from_the_command_line_redraws_the_card_through_the_bot(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    """The command line stores the move and the redraw together; the running bot sends it."""
    from tests.bot.test_requests_cli import cli

    await intake(fake_bot_api, 1301)
    await staff_bot.drained()
    card = card_of(fake_bot_api, 1)
    assert "🆕" in card["text"]
    done = await asyncio.to_thread(
        cli, "set-status", "1", "taken", url=staff_bot.url, env={"STAFF_LANGUAGE": "en"}
    )
    assert done.exit_code == 0, done.output
    await fake_bot_api.wait_for(
        "editMessageText",
        lambda c: c.ok and c.params["message_id"] == card["message_id"],
        timeout=15,
    )
    assert "taken" in card_of(fake_bot_api, 1)["text"].lower()


def test_call_again_tomorrow_says_the_hour_it_means() -> None:
    """ "Tomorrow 10:00" when the center opens at 9; the opening hour when it opens later."""
    from bot.settings import Settings
    from bot.staff import card_keyboard
    from bot.workflow import retry_time
    from storage import ConsultationRequest

    for opening, hour in ((9, 10), (11, 11)):
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            opening_hour=opening,
            staff_language="en",
        )
        request = ConsultationRequest(
            id=1, client_id=1, flow_name="intake", flow_version="v", language="en",
            outcome="OK", status="no_answer", phone="+79123456789",
        )  # fmt: skip
        markup = card_keyboard(request, settings)
        assert markup is not None
        labels = [b.text for row in markup.inline_keyboard for b in row]
        assert f"tomorrow {hour}:00" in labels, labels
        at = retry_time("rt", MORNING, settings).astimezone(settings.zone)
        assert (at.hour, at.minute) == (hour, 0)


async def test_housekeeping_prunes_a_week_old_backlog_in_batches(staff_bot: RunningBot) -> None:
    """Updates processed over a week ago go, however many (a few hundred per transaction,
    so that a long backlog never holds the database, or on SQLite the event loop, for long);
    recent ones stay for recognising a repeat."""
    old = utcnow() - timedelta(days=8)
    backlog = PRUNE_BATCH * 2 + 7
    async with staff_bot.sessionmaker() as session, session.begin():
        rows = [(10_000_000 + n, 5, {}) for n in range(backlog + 3)]
        await store_updates(session=session, updates=rows, at=old)
        for update_id, _, _ in rows[:backlog]:
            assert await claim_update(session=session, update_id=update_id, at=old)
        for update_id, _, _ in rows[backlog:]:
            assert await claim_update(session=session, update_id=update_id, at=utcnow())
    deletes: list[str] = []

    def statement(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        if sql.lstrip().upper().startswith("DELETE FROM INBOX"):
            deletes.append(sql)

    sqlalchemy.event.listen(staff_bot.engine.sync_engine, "before_cursor_execute", statement)
    try:
        await run_housekeeping(staff_bot.app)
    finally:
        sqlalchemy.event.remove(staff_bot.engine.sync_engine, "before_cursor_execute", statement)
    assert len(deletes) == 3, "two full batches, then the rest"
    async with staff_bot.sessionmaker() as session:
        left = await session.exec(  # type: ignore[call-overload]
            text("SELECT count(*) FROM inbox WHERE update_id >= 10000000")
        )
        assert left.scalar_one() == 3


async def test_staff_commands_in_another_group_show_no_client_data(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    """A staff member typing /request or /queue in some other group the bot is in would
    post clients' names, phones and health answers to everyone there."""
    api, other = fake_bot_api, -100999
    await intake(api, 3601, {"name": "Светлана"})
    api.add_chat(other, title="Yoga friends")
    for command in ("/request 1", "/queue", "/stats", "/note 1 called twice"):
        api.user_message(STAFF, command, chat_id=other, chat_type="supergroup")
        call = await api.wait_for("sendMessage", lambda c: c.params["chat_id"] == other, timeout=20)
        assert "only in the staff group" in call.params["text"]
    posted = "\n".join(m["text"] for m in api.messages(other))
    assert "Светлана" not in posted and "+7" not in posted
    async with staff_bot.sessionmaker() as session:
        events = await list_events(session=session, request_id=1)
    assert not any(e.action == "note" for e in events), "no note was added from there"
    # in the staff group the same command still works
    api.user_message(STAFF, "/request 1", chat_id=STAFF_CHAT, chat_type="supergroup")
    card = await api.wait_for(
        "sendMessage",
        lambda c: c.params["chat_id"] == STAFF_CHAT and "Светлана" in c.params["text"],
        timeout=20,
    )
    assert card.params["text"].startswith("<b>Request #1</b>")


# --- Telegram's length limit (4096 UTF-16 units: an emoji counts twice) -------------------


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


async def _asking(api: FakeBotAPI, user: int) -> Person:
    person = Person(api, user)
    await person.say("/start")
    await person.press("Ask a question")
    return person


async def test_a_question_as_long_as_telegram_allows_reaches_staff_whole(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    for user, question in (
        (3101, "😣" * 2045),  # 4090 UTF-16 units, a message a client can send
        # 3875 characters: it was cut at 3500, and its question with it
        (3102, "Описание моей проблемы. " * 160 + "ГЛАВНЫЙ ВОПРОС: можно ли при грыже?"),
    ):
        assert _units(question) <= 4096
        person = await _asking(fake_bot_api, user)
        before = len(staff_messages(fake_bot_api))
        await person.say(question)
        await staff_bot.drained()
        assert "passed to our staff" in person.last
        parts = staff_messages(fake_bot_api)[before:]
        if _units(question) > 4000:  # with the header it takes two messages
            assert len(parts) == 2 and "1/2" in parts[0]["text"] and "2/2" in parts[1]["text"]
        else:
            assert len(parts) == 1
        body = "".join(p["text"].split("\n\n", 1)[1] for p in parts)
        assert body.replace("\n", "").replace(" ", "") == question.replace(" ", ""), "all of it"
        assert all(_units(p["text"]) <= 4096 for p in parts)
        # a reply to either part reaches the client
        await staff_says(
            fake_bot_api, STAFF, "Да, после консультации врача.", reply_to_message=parts[-1]
        )
        await staff_bot.drained()
        assert "после консультации врача" in person.last


async def test_a_staff_reply_as_long_as_telegram_allows_reaches_the_client_whole(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    person = await _asking(fake_bot_api, 3103)
    await person.say("Можно ли массаж при беременности?")
    forwarded = staff_messages(fake_bot_api)[-1]
    before = len(fake_bot_api.messages(person.id))
    reply = ("Подробный ответ. " * 240).strip()  # 4079 characters: one message in Telegram
    await staff_says(fake_bot_api, STAFF, reply, reply_to_message=forwarded)
    await staff_bot.drained()
    got = [m["text"] for m in fake_bot_api.messages(person.id)[before:]]
    assert len(got) == 2 and got[0].startswith("💬")
    assert " ".join(got).count("Подробный ответ.") == 240
    assert "sent to the client" in staff_messages(fake_bot_api)[-1]["text"]


async def test_request_shows_the_newest_notes_within_the_limit(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    await intake(fake_bot_api, 3201)
    for n in range(1, 6):
        await staff_says(fake_bot_api, STAFF, f"/note 1 note{n} " + "подробности звонка " * 45)
    await staff_says(fake_bot_api, STAFF, "/note 1 emoji " + "👍" * 900)
    await staff_says(fake_bot_api, STAFF, "/note 1 A&B <i>\nПозвонить после 18:00\nСпросить")
    mark = len(fake_bot_api.calls)
    await staff_says(fake_bot_api, STAFF, "/request 1")
    [call] = [c for c in fake_bot_api.calls[mark:] if c.method == "sendMessage"]
    assert call.ok, call.error
    shown = call.params["text"]
    assert "A&amp;B &lt;i&gt;\nПозвонить после 18:00\nСпросить" in shown, "lines kept, escaped"
    assert "emoji" in shown and "earlier entries (the whole history: intake-bot requests" in shown
    assert "note1" not in shown, "the oldest make room for the newest"


async def test_a_photo_reply_to_a_question_is_answered_not_dropped(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    person = await _asking(fake_bot_api, 3104)
    await person.say("Где вы находитесь?")
    forwarded = staff_messages(fake_bot_api)[-1]
    before = len(fake_bot_api.messages(person.id))
    group = {"chat_id": STAFF_CHAT, "chat_type": "supergroup"}
    fake_bot_api.user_photo(STAFF, caption="Схема", reply_to_message=forwarded, **group)
    await fake_bot_api.wait_for(
        "sendMessage",
        lambda c: c.params["chat_id"] == STAFF_CHAT and "Only text is" in c.params["text"],
        timeout=20,
    )
    await staff_bot.drained()
    assert len(fake_bot_api.messages(person.id)) == before, "nothing half-delivered"
    # a photo replying to a message that is no client's question is left alone
    fake_bot_api.user_photo(STAFF, reply_to_message=staff_messages(fake_bot_api)[-1], **group)
    await fake_bot_api.wait_idle(quiet=0.3, timeout=20)
    await staff_bot.drained()
    assert len([m for m in staff_messages(fake_bot_api) if "Only text" in m["text"]]) == 1


async def test_staff_learn_when_a_reply_could_not_reach_the_client(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    person = await _asking(fake_bot_api, 3105)
    await person.say("Можно ли прийти завтра?")
    await staff_bot.drained()
    forwarded = staff_messages(fake_bot_api)[-1]
    fake_bot_api.block_chat(person.id)  # the client blocked the bot meanwhile
    fake_bot_api.user_message(
        STAFF, "Да, приходите.", chat_id=STAFF_CHAT, chat_type="supergroup",
        reply_to_message=forwarded,
    )  # fmt: skip
    await fake_bot_api.wait_for(
        "sendMessage",
        lambda c: c.params["chat_id"] == STAFF_CHAT and "not delivered" in c.params["text"],
        timeout=20,
    )
    await staff_bot.drained()
    said = [m["text"] for m in staff_messages(fake_bot_api)]
    assert not any("was sent to the client" in s for s in said), "never told it went"


async def test_a_client_learns_when_a_question_could_not_be_passed_on(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    person = await _asking(fake_bot_api, 3106)
    fake_bot_api.block_chat(STAFF_CHAT)  # the bot was removed from the group, say
    await person.say("Можно ли при беременности?")
    await fake_bot_api.wait_for(
        "sendMessage",
        lambda c: (
            c.params["chat_id"] == person.id and "cannot pass your question" in c.params["text"]
        ),
        timeout=20,
    )
    await staff_bot.drained()
    assert not any("has been passed to our staff" in s for s in person.shown)
    assert "Back to the questionnaire" in str(fake_bot_api.messages(person.id)[-1]["reply_markup"])


async def _pressed_together(api: FakeBotAPI, label: str) -> tuple[str, str]:
    """Two staff members press the same button of request 1's card at once; both answered."""
    card, data = await card_button(api, 1, label)
    q1 = api.user_callback(STAFF, card["message_id"], data, chat_id=STAFF_CHAT)
    q2 = api.user_callback(ADMIN, card["message_id"], data, chat_id=STAFF_CHAT)
    for query in (q1, q2):
        await api.wait_for(
            "answerCallbackQuery", lambda c, q=query: c.params["callback_query_id"] == q
        )
    return q1, q2


async def test_two_staff_taking_one_request_at_once(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    """One takes it, the other is told it is not possible now, and the card is redrawn
    once: nothing Telegram would refuse ("message is not modified")."""
    await intake(fake_bot_api, 3401)
    q1, q2 = await _pressed_together(fake_bot_api, "Take")
    await staff_bot.drained()
    async with staff_bot.sessionmaker() as session:
        events = await list_events(session=session, request_id=1)
    assert len([e for e in events if e.action == "status"]) == 1
    answers = [(fake_bot_api.callback_answers[q].get("text") or "") for q in (q1, q2)]
    assert sum(a.startswith("That is not possible now") for a in answers) == 1
    assert "taken" in card_of(fake_bot_api, 1)["text"]
    assert [c.error for c in fake_bot_api.calls if not c.ok] == []


async def test_the_thank_you_pressed_twice_at_once_goes_and_is_recorded_once(
    staff_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    await intake(fake_bot_api, 4001)
    await press_card(fake_bot_api, STAFF, 1, "Take")
    await press_card(fake_bot_api, STAFF, 1, "Close")
    before = len(fake_bot_api.messages(4001))
    q1, q2 = await _pressed_together(fake_bot_api, "thank-you")
    await staff_bot.drained()
    assert len(fake_bot_api.messages(4001)[before:]) == 1
    async with staff_bot.sessionmaker() as session:
        events = await list_events(session=session, request_id=1)
    assert [e.action for e in events].count("follow_up") == 1
    answers = sorted((fake_bot_api.callback_answers[q].get("text") or "") for q in (q1, q2))
    assert answers == [
        "The client has been sent the follow-up already.",
        "The client was sent a follow-up.",
    ]
    assert [c.error for c in fake_bot_api.calls if not c.ok] == []

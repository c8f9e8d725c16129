"""The client dialogue in Telegram: the real Application against a local fake Bot API."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import sender
from flows import is_question
from storage import (
    Client,
    ConsultationRequest,
    DialogueSession,
    get_client,
    get_dialogue,
    list_requests,
)
from tests.bot.conftest import RunningBot, start_bot, start_webhook_bot
from tests.bot.people import COMMON, CONTACT, FULL, SCREEN, Person, Plan
from tests.factories import intake_flow
from tests.fakebotapi import FakeBotAPI
from tests.flows.test_path import PROGRESS_RE


async def count(engine: AsyncEngine, model: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(model))).scalar_one())


async def state_of(bot: RunningBot, user_id: int) -> dict[str, Any] | None:
    async with bot.sessionmaker() as session:
        client = await get_client(session=session, telegram_id=user_id)
        if client is None or client.id is None:
            return None
        dialogue = await get_dialogue(session=session, client_id=client.id)
        return dialogue.state if dialogue else None


CASES: dict[str, tuple[Plan, list[str]]] = {
    "OK": ({"conditions": ("osteochondrosis",), "osteo_region": "lumbosacral"},
           [*COMMON, "osteo_region", "prescription", *SCREEN, "oils", *CONTACT]),
    "CLEAR": ({"fracture": "yes"}, [*COMMON, *SCREEN, "oils", *CONTACT]),
    "LATER": ({"acute": ("intoxication",)}, [*COMMON, *SCREEN, "offer_call", *CONTACT]),
    "STOP": ({"chronic": ("heart", "hiv")}, [*COMMON, *SCREEN, "offer_call", *CONTACT]),
    "EMERGENCY": ({"emergency": ("bladder_bowel",)}, ["welcome", "emergency"]),
}  # fmt: skip


@pytest.mark.parametrize("lang", ["ru", "en"])
@pytest.mark.parametrize("outcome", list(CASES))
async def test_full_dialogue_to_each_outcome(
    bot: RunningBot, fake_bot_api: FakeBotAPI, outcome: str, lang: str
) -> None:
    person = Person(fake_bot_api, 1001, lang)
    await person.say("/start")
    plan, path = CASES[outcome]
    await person.walk(plan, path)
    async with bot.sessionmaker() as session:
        [request] = await list_requests(session=session)
    assert request.outcome == outcome
    assert request.language == lang
    assert request.status == "new"
    closing = person.last
    if outcome == "EMERGENCY":
        assert "112" in "\n".join(person.texts[-3:])
        assert request.phone is None
    else:
        assert request.phone == "+79123456789"
        assert ("9:00" in closing) and ("+7 (495) 085-15-13" in closing)
    # every question showed its exact place: question k of the n on this client's path
    flow = intake_flow()
    asked = [n for n in path if is_question(flow.nodes[n])]
    # (a question may come under the text before it, joined into one message)
    progress = re.compile(PROGRESS_RE.pattern.lstrip("^"))
    shown = [m for m in person.shown if progress.search(m)]
    places = [int(progress.search(m).group(1)) for m in shown]  # type: ignore[union-attr]
    # a checklist tick redraws its question in place: the same place again
    assert [k for i, k in enumerate(places) if i == 0 or k != places[i - 1]] == list(
        range(1, len(asked) + 1)
    )
    if outcome != "EMERGENCY":  # an emergency cuts the path short
        assert int(progress.search(shown[-1]).group(2)) == len(asked)  # type: ignore[union-attr]


async def test_commands_are_registered_in_both_languages(
    bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    calls = [await fake_bot_api.wait_for("setMyCommands") for _ in range(3)]
    codes = {c.params.get("language_code") for c in calls}
    assert {"ru", "en"} <= codes
    for call in calls:
        names = [c["command"] for c in call.params["commands"]]
        assert names == [
            "start", "restart", "lang", "info", "help", "status", "ask", "cancel", "forget"
        ]  # fmt: skip


async def test_checklist_ticks_edit_the_same_message(
    bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    person = Person(fake_bot_api, 1002)
    await person.say("/start")
    await person.press("Start the questions")
    before = len(fake_bot_api.messages(person.id))
    edited = len(fake_bot_api.calls_of("editMessageText"))
    await person.press("Chest pain")
    await person.press("Severe pain after a fall")
    await person.press("Chest pain")
    assert len(fake_bot_api.messages(person.id)) == before, "ticks edit, they do not send"
    edits = fake_bot_api.calls_of("editMessageText")[edited:]
    assert len(edits) == 3
    labels = person.labels()
    assert "✅ Severe pain after a fall or an accident" in labels
    assert "▫️ Chest pain or shortness of breath" in labels


async def test_back_goes_to_the_previous_question(
    bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    person = Person(fake_bot_api, 1003)
    await person.say("/start")
    await person.walk({}, ["welcome", "emergency"])
    assert "What bothers you?" in person.last
    await person.press("⬅️ Back")
    assert "Safety first" in person.last
    state = await state_of(bot, person.id)
    assert state is not None and state["node"] == "emergency"


async def test_a_pressed_question_turns_into_the_next_and_stale_presses_change_nothing(
    bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    person = Person(fake_bot_api, 1004)
    await person.say("/start")
    welcome_id, data = fake_bot_api.find_button(person.id, "About massage types")
    sent = len(fake_bot_api.calls_of("sendMessage"))
    await person.press("Start the questions")
    welcome = next(m for m in fake_bot_api.messages(person.id) if m["message_id"] == welcome_id)
    assert "Safety first" in welcome["text"], "the answered question became the next one"
    assert len(fake_bot_api.calls_of("sendMessage")) == sent, "one edit, no new message"
    buttons = [b for row in welcome["reply_markup"]["inline_keyboard"] for b in row]
    assert all(b["callback_data"] != data for b in buttons), "no button of the old question"
    before = await state_of(bot, person.id)
    mark = len(fake_bot_api.calls)
    query = fake_bot_api.user_callback(person.id, welcome_id, data, check_button=False)
    await person.settle(mark)
    assert await state_of(bot, person.id) == before
    assert "earlier question" in fake_bot_api.callback_answers[query]["text"]


async def test_a_foreign_button_is_explained_and_ignored(
    bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    person = Person(fake_bot_api, 1005)
    await person.say("/start")
    message_id, _ = fake_bot_api.find_button(person.id, "Start the questions")
    before = await state_of(bot, person.id)
    mark = len(fake_bot_api.calls)
    query = fake_bot_api.user_callback(person.id, message_id, "forged:data", check_button=False)
    await person.settle(mark)
    assert await state_of(bot, person.id) == before
    assert fake_bot_api.callback_answers[query]["text"] == "This button is no longer active."


def _message(user_id: int, **content: Any) -> dict[str, Any]:
    return {
        "message": {
            "message_id": 9000 + len(content),
            "date": 1_700_000_000,
            "chat": {"id": user_id, "type": "private", "first_name": "T"},
            "from": {"id": user_id, "is_bot": False, "first_name": "T", "language_code": "en"},
            **content,
        }
    }


BAD_INPUTS = {
    "free text at a button question": None,
    "sticker": {"sticker": {"file_id": "s1", "file_unique_id": "u1", "type": "regular",
                            "width": 512, "height": 512, "is_animated": False,
                            "is_video": False}},
    "photo": {"photo": [{"file_id": "p1", "file_unique_id": "u2", "width": 90, "height": 90}]},
    "voice": {"voice": {"file_id": "v1", "file_unique_id": "u3", "duration": 2}},
    "location": {"location": {"latitude": 55.75, "longitude": 37.61}},
    "very long text": {"text": "я" * 4096},
    "emoji": {"text": "😀🙏💆‍♀️"},
}  # fmt: skip


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
async def test_bad_input_gets_a_polite_answer_and_changes_nothing(
    bot: RunningBot, fake_bot_api: FakeBotAPI, kind: str
) -> None:
    person = Person(fake_bot_api, 1006)
    await person.say("/start")
    await person.walk({}, ["welcome"])
    before = await state_of(bot, person.id)
    sent = len(fake_bot_api.calls_of("sendMessage"))
    content = BAD_INPUTS[kind]
    if content is None:
        await person.say("I have a bad back")
    else:
        await person.send(_message(person.id, **content))
    after = await state_of(bot, person.id)
    assert after is not None and before is not None
    assert {k: v for k, v in after.items() if k != "seq"} == {
        k: v for k, v in before.items() if k != "seq"
    }
    replies = [c.params["text"] for c in fake_bot_api.calls_of("sendMessage")[sent:]]
    assert replies, "the client got an answer"
    assert "Safety first" in replies[-1], "and the question again"


async def test_edited_messages_and_group_messages_are_handled_politely(
    bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    person = Person(fake_bot_api, 1007)
    await person.say("/start")
    before = await state_of(bot, person.id)
    edited = _message(person.id, text="edited")
    edited["edited_message"] = edited.pop("message")
    edited["edited_message"]["edit_date"] = 1_700_000_100
    await person.send(edited)
    note = person.last  # the note, and under it the current question again
    assert "edited a message" in note and "answers already given" in note
    assert "Where shall we start?" in note, "and the current question again"
    after = await state_of(bot, person.id)
    assert after is not None and before is not None
    assert {**after, "seq": 0} == {**before, "seq": 0}
    fake_bot_api.user_message(person.id, "/start", chat_id=-100500, chat_type="group")
    await fake_bot_api.wait_for("sendMessage", lambda c: c.params["chat_id"] == -100500)
    await person.settle()
    [reply] = [c for c in fake_bot_api.calls_of("sendMessage") if c.params["chat_id"] == -100500]
    assert "private chat" in reply.params["text"]
    fake_bot_api.user_message(person.id, "hello all", chat_id=-100500, chat_type="group")
    await person.settle()
    assert (
        len([c for c in fake_bot_api.calls_of("sendMessage") if c.params["chat_id"] == -100500])
        == 1
    )


async def test_an_edit_in_russian_is_answered_in_russian_with_the_current_question(
    bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    person = Person(fake_bot_api, 1017, lang="ru")
    await person.say("/start")
    await person.walk({}, ["welcome"])
    edited = _message(person.id, text="исправлено")
    edited["edited_message"] = edited.pop("message")
    edited["edited_message"]["from"]["language_code"] = "ru"
    edited["edited_message"]["edit_date"] = 1_700_000_100
    await person.send(edited)
    note, _, question = person.last.partition("\n\n")
    assert "исправили" in note
    assert "Вопрос 1 из " in question and "Сначала о безопасности" in question


async def test_red_flags_of_a_saved_request_do_not_reach_the_next_request(
    bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    """Regression: /start after a saved request began a dialogue with the old red flags."""
    person = Person(fake_bot_api, 1018)
    await person.say("/start")
    # a red flag answered, taken back with Back, then a STOP answer: request 1
    await person.walk({"conditions": ("neck_pain",)}, [*COMMON])
    await person.press("No")
    await person.press("⬅️ Back")
    await person.walk({"neck_checked": "yes", "chronic": ("oncology",)},
                      ["neck_checked", *SCREEN, "offer_call", *CONTACT])  # fmt: skip
    await person.say("/start")
    await person.walk({}, FULL)
    await person.say("/start")
    await person.walk({"acute": ("fever_infection",)}, [*COMMON, *SCREEN, "offer_call", *CONTACT])
    async with bot.sessionmaker() as session:
        requests = sorted(await list_requests(session=session), key=lambda r: r.id or 0)
    first, second, third = requests
    assert first.outcome == "STOP" and first.red_flag_changed
    assert first.withdrawn_red_flags == ["neck_checked=no"]
    assert second.outcome == "OK"
    assert (second.red_flag_changed, second.withdrawn_red_flags) == (False, [])
    assert "contraindication" not in second.facts
    assert third.outcome == "LATER"
    assert (third.red_flag_changed, third.withdrawn_red_flags) == (False, [])
    assert third.facts["contraindication"] and "oncology" not in third.facts["contraindication"]


async def test_changing_the_name_from_the_summary_keeps_the_other_answers(
    bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    person = Person(fake_bot_api, 1019)
    await person.say("/start")
    await person.walk({"call_time": "evening"}, FULL[:-1])
    assert "Your answers" in person.texts[-2] or "Your answers" in person.last
    await person.press("✏️ Change an answer")
    labels = person.labels()
    assert "Name" in labels and not any("Opening" in x for x in labels)
    await person.press("Name")
    assert "name" in person.last.lower()
    await person.say("Olga")
    summary = "\n".join(person.texts[-2:])
    assert "Your answers" in summary and "Olga" in summary and "+7 912 345-67-89" in summary
    await person.press("✅ All correct, send")
    async with bot.sessionmaker() as session:
        [request] = await list_requests(session=session)
    assert (request.name, request.phone, request.preferred_time) == (
        "Olga",
        "+79123456789",
        "evening",
    )
    assert request.answers[0]["node"] == "emergency", "the opening menu is no answer"
    assert not any("(your answer" in r for r in request.reasons)


async def _to_phone(person: Person) -> None:
    await person.say("/start")
    await person.walk({}, [*COMMON, *SCREEN, "oils", "consent", "name"])
    assert "phone number" in person.last


def _calls_into(api: FakeBotAPI, chat_id: int, mark: int) -> list[Any]:
    """The Bot API calls the bot made into one chat since ``mark``."""
    return [c for c in api.calls[mark:] if c.params.get("chat_id") == chat_id]


def _live_questions(api: FakeBotAPI, chat_id: int) -> list[str]:
    """The bot's messages in the chat that still carry buttons."""
    return [
        m.get("text", "")
        for m in api.messages(chat_id)
        if (m.get("reply_markup") or {}).get("inline_keyboard")
    ]


async def test_a_typed_answer_and_a_shared_contact_cost_one_message_each(
    bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    """The questions answered by typing carry no buttons, so nothing has to be taken back:
    the name brings the phone question (with its share button) in one message, the shared
    contact the next question in one message, and the one-time share button hides itself."""
    api = fake_bot_api
    person = Person(api, 1012)
    await person.say("/start")
    await person.walk({}, [*COMMON, *SCREEN, "oils", "consent"])
    question = api.last_message(person.id)
    assert question is not None and "your name" in question["text"]
    assert "reply_markup" not in question and _live_questions(api, person.id) == []
    mark = len(api.calls)
    await person.say("Olga")
    [call] = _calls_into(api, person.id, mark)
    assert call.method == "sendMessage" and "phone number" in call.params["text"]
    assert "share your number" in call.params["text"]
    keyboard = api.reply_keyboard(person.id)
    assert keyboard is not None and keyboard["keyboard"][0][0]["request_contact"] is True
    assert api.reply_keyboard_open(person.id) and _live_questions(api, person.id) == []
    mark = len(api.calls)
    api.user_contact(person.id, "+79123456789")
    await person.settle(mark)
    [call] = _calls_into(api, person.id, mark)
    assert call.method == "sendMessage" and "convenient" in call.params["text"]
    assert not api.reply_keyboard_open(person.id), "the one-time share button hid itself"
    [live] = _live_questions(api, person.id)
    assert "convenient" in live
    await person.walk({}, ["call_time", "confirm"])
    async with bot.sessionmaker() as session:
        [request] = await list_requests(session=session)
    assert (request.name, request.phone) == ("Olga", "+79123456789")


async def test_a_typed_phone_takes_the_share_button_away(
    bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    api = fake_bot_api
    person = Person(api, 1013)
    await _to_phone(person)
    mark = len(api.calls)
    await person.say("8 912 345-67-89")
    assert api.reply_keyboard(person.id) is None, "typed over it: the share button must go"
    assert [c.method for c in _calls_into(api, person.id, mark)] == ["sendMessage"] * 2
    [live] = _live_questions(api, person.id)
    assert "convenient" in live


async def test_a_contact_shared_again_later_changes_nothing_and_hides_the_button(
    bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    """The one-time share button stays behind its icon; pressed at a later question, the
    contact is no answer to it: a polite word, the button goes, the answers stay."""
    api = fake_bot_api
    person = Person(api, 1014)
    await _to_phone(person)
    mark = len(api.calls)
    api.user_contact(person.id, "+79123456789")
    await person.settle(mark)
    before = await state_of(bot, person.id)
    assert before is not None and before["node"] == "call_time"
    mark = len(api.calls)
    api.user_contact(person.id, "+79990001122")
    await person.settle(mark)
    [call] = _calls_into(api, person.id, mark)
    assert call.method == "sendMessage" and "have not saved" in call.params["text"]
    assert api.reply_keyboard(person.id) is None
    assert await state_of(bot, person.id) == before
    [live] = _live_questions(api, person.id)
    assert "convenient" in live


async def test_the_phone_step_offers_contact_sharing_and_accepts_only_the_own_contact(
    bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    person = Person(fake_bot_api, 1008)
    await _to_phone(person)
    keyboard = fake_bot_api.reply_keyboard(person.id)
    assert keyboard is not None
    assert keyboard["keyboard"][0][0]["request_contact"] is True
    mark = len(fake_bot_api.calls)
    fake_bot_api.user_contact(person.id, "+79990001122", contact_user_id=4242)
    await person.settle(mark)
    assert "your own number" in "\n".join(person.texts[-3:])
    state = await state_of(bot, person.id)
    assert state is not None and state["node"] == "phone"
    mark = len(fake_bot_api.calls)
    fake_bot_api.user_contact(person.id, "79123456789")
    await person.settle(mark)
    state = await state_of(bot, person.id)
    assert state is not None and state["node"] == "call_time"
    assert not fake_bot_api.reply_keyboard_open(person.id), "the one-time button hid itself"
    await person.walk({}, ["call_time", "confirm"])
    async with bot.sessionmaker() as session:
        [request] = await list_requests(session=session)
    assert request.phone == "+79123456789"


async def test_a_typed_invalid_phone_is_refused_with_a_clear_message(
    bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    person = Person(fake_bot_api, 1009)
    await _to_phone(person)
    await person.say("call me maybe")
    assert "valid phone number" in "\n".join(person.texts[-3:])
    state = await state_of(bot, person.id)
    assert state is not None and state["node"] == "phone"


async def test_restart_resumes_every_client_at_the_same_question(
    fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine]
) -> None:
    url, engine = database
    first = await start_bot(fake_bot_api, url, engine)
    person = Person(fake_bot_api, 1010)
    await person.say("/start")
    await person.walk({"conditions": ("hernia",)}, ["welcome", "emergency", "conditions"])
    state = await state_of(first, person.id)
    assert state is not None and state["node"] == "hernia_stage"
    await first.stop()

    second = await start_bot(fake_bot_api, url, engine)
    try:
        await person.say("/start")
        assert "hernia" in person.last.lower()
        await person.walk(
            {"hernia_stage": "pain_now"},
            ["hernia_stage", "prescription", *SCREEN, "offer_call", *CONTACT],
        )
        async with second.sessionmaker() as session:
            [request] = await list_requests(session=session)
        assert request.outcome == "STOP", "a hernia that hurts now rules massage out"
    finally:
        await second.stop()


async def test_cancel_and_restart_commands(bot: RunningBot, fake_bot_api: FakeBotAPI) -> None:
    person = Person(fake_bot_api, 1011)
    await person.say("/start")
    await person.walk({}, ["welcome", "emergency"])
    await person.say("/cancel")
    assert "stopped" in person.last
    state = await state_of(bot, person.id)
    assert state is not None and state["node"] == "welcome" and state["history"] == []
    await person.say("/restart")
    assert "Where shall we start?" in person.last


async def test_help_info_and_language_switch(bot: RunningBot, fake_bot_api: FakeBotAPI) -> None:
    person = Person(fake_bot_api, 1012, lang="de")
    await person.say("/start")
    assert "С чего начнём?" in person.last, (
        "an unknown language falls back to DEFAULT_LANGUAGE (ru)"
    )
    await person.say("/info")
    assert "9:00" in person.last and "085-15-13" in person.last
    await person.say("/lang")
    await person.press("English")
    assert "Where shall we start?" in person.last
    await person.say("/help")
    assert "/forget" in person.last


async def test_forget_erases_the_client_from_every_table(
    bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    other = Person(fake_bot_api, 2000)
    await other.say("/start")
    person = Person(fake_bot_api, 1013)
    await person.say("/start")
    await person.walk({}, [*COMMON, *SCREEN, "oils", *CONTACT])
    assert await count(bot.engine, ConsultationRequest) == 1
    await person.say("/forget")
    await person.press("No, keep")
    assert await count(bot.engine, ConsultationRequest) == 1
    await person.say("/forget")
    await person.press("Yes, erase")
    assert "erased" in person.last
    assert await count(bot.engine, ConsultationRequest) == 0
    async with bot.sessionmaker() as session:
        assert await get_client(session=session, telegram_id=person.id) is None
        assert await get_client(session=session, telegram_id=other.id) is not None
    assert await count(bot.engine, DialogueSession) == 1
    assert await count(bot.engine, Client) == 1


async def test_429_and_5xx_from_the_api_are_retried_without_losing_anything(
    bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    person = Person(fake_bot_api, 1014)
    fake_bot_api.fail_next("sendMessage", status=429, retry_after=1)
    await person.say("/start")
    await fake_bot_api.wait_for("sendMessage", lambda c: c.ok, timeout=10)
    assert "Where shall we start?" in person.last
    fake_bot_api.fail_next("editMessageText", status=502, times=2)
    await person.press("Start the questions")
    await fake_bot_api.wait_for(
        "editMessageText", lambda c: c.ok and "Safety" in c.params["text"], timeout=10
    )
    state = await state_of(bot, person.id)
    assert state is not None and state["node"] == "emergency"


async def test_a_send_telegram_keeps_answering_with_5xx_is_given_up_and_the_chat_goes_on(
    bot: RunningBot, fake_bot_api: FakeBotAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call Telegram cannot handle must not hold up its chat for good."""
    monkeypatch.setattr(sender, "GIVE_UP_AFTER", 1.0)
    user = 1030
    fake_bot_api.fail_next("sendMessage", status=500, times=3)
    fake_bot_api.user_message(user, "/start")
    for _ in range(3):  # tried again after 0.5 s and 1 s more, then given up
        await fake_bot_api.wait_for(
            "sendMessage", lambda c: c.params.get("chat_id") == user and not c.ok, timeout=20
        )
    fake_bot_api.user_message(user, "/help")
    answer = await fake_bot_api.wait_for(
        "sendMessage", lambda c: c.params.get("chat_id") == user and c.ok, timeout=20
    )
    assert "Where shall we start?" not in answer.params["text"], "the welcome was given up"
    assert "/start" in answer.params["text"], "the help came next"


async def test_a_client_who_blocked_the_bot_keeps_their_state(
    bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    person = Person(fake_bot_api, 1015)
    await person.say("/start")
    fake_bot_api.block_chat(person.id)
    await person.say("Start the questions")
    state = await state_of(bot, person.id)
    assert state is not None and state["node"] == "emergency", "the answer was saved first"
    fake_bot_api.unblock_chat(person.id)
    await person.say("/start")
    assert "Safety first" in person.last


async def test_the_same_update_delivered_twice_is_processed_once(
    fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine], unused_tcp_port: int
) -> None:
    url, engine = database
    running = await start_webhook_bot(fake_bot_api, url, engine, unused_tcp_port)
    try:
        person = Person(fake_bot_api, 1016)
        start = fake_bot_api.user_message(person.id, "/start")
        assert await fake_bot_api.push_webhook(start) == 200
        await fake_bot_api.wait_for("sendMessage", lambda c: "start?" in c.params["text"])
        # A typed answer carries no button sequence number: only the update id can tell
        # that the second delivery is the same update.
        update = fake_bot_api.user_message(person.id, "Start the questions")
        sent_before = len(fake_bot_api.calls_of("sendMessage"))
        assert await fake_bot_api.push_webhook(update) == 200
        assert await fake_bot_api.push_webhook(update) == 200
        await fake_bot_api.wait_for("sendMessage", lambda c: "Safety" in c.params["text"])
        await running.drained()
        state = await state_of(running, person.id)
        assert state is not None and state["seq"] == 1 and state["node"] == "emergency"
        replies = [c.params["text"] for c in fake_bot_api.calls_of("sendMessage")[sent_before:]]
        assert len(replies) == 1, replies  # the replay would have earned "Please choose…"
    finally:
        await running.stop()


async def test_webhook_requires_the_secret_token(
    fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine], unused_tcp_port: int
) -> None:
    url, engine = database
    running = await start_webhook_bot(fake_bot_api, url, engine, unused_tcp_port)
    try:
        assert fake_bot_api.webhook_url == f"http://127.0.0.1:{unused_tcp_port}/telegram"
        update = fake_bot_api.user_message(1017, "/start")
        assert await fake_bot_api.push_webhook(update, secret_token=None) == 403
        assert await fake_bot_api.push_webhook(update, secret_token="wrong") == 403
        await running.drained()
        assert not fake_bot_api.calls_of("sendMessage")
        assert await fake_bot_api.push_webhook(update) == 200
        await fake_bot_api.wait_for("sendMessage")
    finally:
        await running.stop()


def test_run_without_a_token_names_the_setting_and_points_to_chat(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TELEGRAM_TOKEN"}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'x.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "bot", "run"], capture_output=True, text=True, env=env,
        cwd=tmp_path, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "TELEGRAM_TOKEN" in result.stderr and "intake-bot chat" in result.stderr


def test_run_refuses_a_webhook_without_a_secret(tmp_path: Path) -> None:
    env = {**os.environ, "TELEGRAM_TOKEN": "123:abc", "WEBHOOK_URL": "https://example.org/t"}
    env.pop("WEBHOOK_SECRET", None)
    result = subprocess.run(
        [sys.executable, "-m", "bot", "run"], capture_output=True, text=True, env=env,
        cwd=tmp_path, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "WEBHOOK_SECRET" in result.stderr


async def test_leaving_the_phone_question_without_a_number_says_so(
    bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    person = Person(fake_bot_api, 3901)
    await _to_phone(person)
    assert fake_bot_api.reply_keyboard_open(person.id)
    mark = len(fake_bot_api.calls)
    await person.say("/restart")
    said = [
        c.params.get("text") or ""
        for c in _calls_into(fake_bot_api, person.id, mark)
        if c.method == "sendMessage"
    ]
    state = await state_of(bot, person.id)
    assert state is not None and state["node"] == "welcome"
    assert not any("Number received" in s for s in said), "no number was given"
    assert any("no number was saved" in s for s in said)
    assert not fake_bot_api.reply_keyboard_open(person.id)


async def test_cancel_at_the_phone_question_closes_the_share_button(
    bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    person = Person(fake_bot_api, 3902)
    await _to_phone(person)
    await person.say("/cancel")
    assert not fake_bot_api.reply_keyboard_open(person.id)

"""The message path under faults: crashes at each point of a step, Telegram down, redelivery,
a flooded staff group, forged presses, and two processes on PostgreSQL.

A crash here is the bot stopped without grace (its tasks cancelled mid-call, its open
transaction rolled back), then a new bot started on the same database: what a SIGKILL and
a restart do (tests/bot/test_process.py does it with a real process and a real SIGKILL).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, User
from telegram.ext import ExtBot

from bot.context import Services
from bot.handlers.client import step_client
from bot.inbox import Receipts
from bot.outbox import call_ref, unit
from bot.sender import Sender
from bot.transport import BotAPIRequest, NotSent
from flows import Restart
from storage import (
    WaitingUpdate,
    create_client,
    get_client,
    get_dialogue,
    list_events,
    list_requests,
    make_engine,
    make_sessionmaker,
    pending_calls,
    upgrade,
)
from tests.bot.conftest import RunningBot, bot_settings, start_bot, start_webhook_bot
from tests.bot.people import FULL, Person
from tests.dbs import fresh_database
from tests.fakebotapi import FakeBotAPI
from tests.fakebotapi.fixtures import TEST_TOKEN

STAFF_CHAT = -1009876
STAFF = 900


async def state_of(bot: RunningBot, user_id: int) -> dict[str, Any]:
    async with bot.sessionmaker() as session:
        client = await get_client(session=session, telegram_id=user_id)
        assert client is not None and client.id is not None
        dialogue = await get_dialogue(session=session, client_id=client.id)
        assert dialogue is not None
        return dialogue.state


def live_keyboards(api: FakeBotAPI, chat_id: int) -> list[int]:
    """Messages in the chat that still carry inline buttons."""
    return [
        m["message_id"]
        for m in api.messages(chat_id)
        if (m.get("reply_markup") or {}).get("inline_keyboard")
    ]


def calls_in(api: FakeBotAPI, chat_id: int, method: str) -> list[Any]:
    return [c for c in api.calls_of(method) if c.ok and c.params.get("chat_id") == chat_id]


@pytest.fixture
async def staff_bot(
    fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine]
) -> AsyncIterator[RunningBot]:
    url, engine = database
    fake_bot_api.add_chat(STAFF_CHAT, title="Staff")
    running = await start_bot(
        fake_bot_api, url, engine, staff_chat_id=STAFF_CHAT, staff_user_ids=[STAFF]
    )
    try:
        yield running
    finally:
        await running.stop()


async def crash_and_restart(bot: RunningBot, api: FakeBotAPI, **extra: Any) -> RunningBot:
    """Stop ``bot`` without grace (a crash), then start a new bot on its database."""
    await bot.stop(grace=0)
    for method in ("editMessageText", "sendMessage", "answerCallbackQuery", "getChatMember"):
        api.release(method)
    return await start_bot(api, bot.url, bot.engine, **extra)


async def test_a_crash_before_the_commit_processes_the_update_once_after_restart(
    fake_bot_api: FakeBotAPI, staff_bot: RunningBot
) -> None:
    """The update was stored, its handler was half way (asking Telegram who the sender is)."""
    api = fake_bot_api
    api.add_chat_member(STAFF_CHAT, 777)  # staff by membership: the handler asks Telegram
    api.hold("getChatMember")
    api.user_message(777, "/queue", chat_id=STAFF_CHAT, chat_type="supergroup")
    await api.wait_held("getChatMember")
    again = await crash_and_restart(staff_bot, api, staff_chat_id=STAFF_CHAT)
    try:
        await api.wait_for("sendMessage", lambda c: c.params["chat_id"] == STAFF_CHAT)
        await again.drained()
        assert len(calls_in(api, STAFF_CHAT, "sendMessage")) == 1, "answered once"
    finally:
        await again.stop()


async def test_a_crash_between_the_commit_and_the_send_answers_after_restart(
    fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine]
) -> None:
    api = fake_bot_api
    url, engine = database
    bot = await start_bot(api, url, engine)
    person = Person(api, 3002)
    await person.say("/start")
    api.hold("editMessageText")
    api.hold("answerCallbackQuery")
    message_id, data = api.find_button(person.id, "Start the questions")
    api.user_callback(person.id, message_id, data)
    await api.wait_held("answerCallbackQuery")
    assert (await state_of(bot, person.id))["node"] == "emergency", "the step is committed"
    again = await crash_and_restart(bot, api)
    try:
        await api.wait_for("editMessageText", lambda c: c.ok and "Safety" in c.params["text"])
        await again.drained()
        assert len(calls_in(api, person.id, "editMessageText")) == 1, "shown once"
        assert len([c for c in api.calls_of("answerCallbackQuery") if c.ok]) == 1
        assert live_keyboards(api, person.id) == [message_id], "one live question"
        assert (await state_of(again, person.id))["seq"] == 1, "stepped once"
    finally:
        await again.stop()


async def test_a_crash_after_the_send_sends_nothing_again(
    fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine]
) -> None:
    api = fake_bot_api
    url, engine = database
    bot = await start_bot(api, url, engine)
    person = Person(api, 3003)
    await person.say("/start")
    await person.press("Start the questions")
    await bot.drained()
    made = len(api.calls)
    again = await crash_and_restart(bot, api)
    try:
        await again.drained()
        after = [c for c in api.calls[made:] if c.method not in ("getUpdates", "getMe")]
        assert [c.method for c in after if c.params.get("chat_id") == person.id] == []
        await person.press("None of these")
        await person.press("Done")
        assert "What bothers you?" in person.last
        assert len(live_keyboards(api, person.id)) == 1
    finally:
        await again.stop()


async def test_telegram_down_then_back_answers_every_committed_step(
    fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine]
) -> None:
    api = fake_bot_api
    url, engine = database
    bot = await start_bot(api, url, engine)
    try:
        person = Person(api, 3004)
        await person.say("/start")
        api.hold("editMessageText")  # the reply to the next press is on its way...
        message_id, data = api.find_button(person.id, "Start the questions")
        api.user_callback(person.id, message_id, data)
        await api.wait_held("editMessageText")
        api.down = True  # ...when Telegram goes down (every call fails, getUpdates too)
        api.release("editMessageText")
        api.user_message(person.id, "/help")  # sent while Telegram is down
        await api.wait_for("editMessageText", lambda c: not c.ok)
        api.down = False  # back: the sender's back-off is at most 10 s
        await api.wait_for(
            "editMessageText", lambda c: c.ok and "Safety" in c.params["text"], timeout=30
        )
        await api.wait_for(
            "sendMessage", lambda c: c.ok and "/forget" in c.params["text"], timeout=30
        )
        await bot.drained()
        assert (await state_of(bot, person.id))["node"] == "emergency"
    finally:
        await bot.stop()


class Thrice(Person):
    """A user whose every update Telegram delivers three times (webhook retries)."""

    def __init__(self, api: FakeBotAPI, user_id: int, bot: RunningBot) -> None:
        super().__init__(api, user_id)
        self.bot = bot

    async def deliver(self) -> None:
        for update in list(self.api.pending_updates()):
            for _ in range(3):
                assert await self.api.push_webhook(update) == 200
        await self.bot.drained()

    async def say(self, text: str) -> None:
        self.api.user_message(self.id, text, language_code=self.lang)
        await self.deliver()

    async def press(self, label: str) -> str:
        message_id, data = self.api.find_button(self.id, label)
        query = self.api.user_callback(self.id, message_id, data, language_code=self.lang)
        await self.deliver()
        return query


async def test_the_same_update_delivered_three_times_has_one_effect(
    fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine], unused_tcp_port: int
) -> None:
    """A dialogue press, /note, a client's question and a staff reply, each delivered 3x."""
    api = fake_bot_api
    url, engine = database
    api.add_chat(STAFF_CHAT, title="Staff")
    bot = await start_webhook_bot(
        api, url, engine, unused_tcp_port, staff_chat_id=STAFF_CHAT, staff_user_ids=[STAFF]
    )
    try:
        person = Thrice(api, 3005, bot)
        await person.say("/start")
        await person.press("Start the questions")
        assert (await state_of(bot, person.id))["seq"] == 1
        assert len(calls_in(api, person.id, "editMessageText")) == 1
        await person.walk({}, FULL[1:])
        async with bot.sessionmaker() as session:
            [request] = await list_requests(session=session)
        assert request.id is not None
        assert len(calls_in(api, STAFF_CHAT, "sendMessage")) == 1, "one card"

        staff = Thrice(api, STAFF, bot)
        api.user_message(
            STAFF, f"/note {request.id} called twice", chat_id=STAFF_CHAT, chat_type="supergroup"
        )
        await staff.deliver()
        async with bot.sessionmaker() as session:
            events = await list_events(session=session, request_id=request.id)
        assert len([e for e in events if e.action == "note"]) == 1

        await person.say("/ask")
        await person.say("Can I come on Sunday?")
        questions = [
            c for c in calls_in(api, STAFF_CHAT, "sendMessage") if "Sunday" in c.params["text"]
        ]
        assert len(questions) == 1, "forwarded once"
        forwarded = questions[0].result["message_id"]
        reply_to = {
            "message_id": forwarded,
            "date": 1,
            "chat": {"id": STAFF_CHAT, "type": "supergroup", "title": "Staff"},
        }
        api.user_message(
            STAFF, "Yes, we are open", chat_id=STAFF_CHAT, chat_type="supergroup",
            reply_to_message=reply_to,
        )  # fmt: skip
        await staff.deliver()
        answers = [
            c for c in calls_in(api, person.id, "sendMessage")
            if "Yes, we are open" in c.params["text"]
        ]  # fmt: skip
        assert len(answers) == 1, "delivered once"
    finally:
        await bot.stop()


async def test_a_flooded_staff_group_does_not_delay_a_client(
    fake_bot_api: FakeBotAPI, staff_bot: RunningBot
) -> None:
    """40 commands in the staff group: the rate limiter lets 20 messages a minute into one
    group, so half of the answers wait; a client writing meanwhile is answered at once."""
    api = fake_bot_api
    for _ in range(40):
        api.user_message(STAFF, "/queue", chat_id=STAFF_CHAT, chat_type="supergroup")
    for _ in range(20):  # the group's burst is used up
        await api.wait_for("sendMessage", lambda c: c.params["chat_id"] == STAFF_CHAT)
    api.user_message(3006, "/start")
    await api.wait_for("sendMessage", lambda c: c.params["chat_id"] == 3006)
    async with staff_bot.sessionmaker() as session:
        waiting = await pending_calls(session=session, lane=STAFF_CHAT)
    assert waiting > 0, "the client was answered while the group's answers still wait"
    assert len(calls_in(api, STAFF_CHAT, "sendMessage")) < 40


async def test_a_press_is_taken_only_from_the_chat_of_its_message(
    fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine]
) -> None:
    api = fake_bot_api
    url, engine = database
    bot = await start_bot(api, url, engine)
    try:
        victim, attacker = Person(api, 3007), Person(api, 3008)
        await victim.say("/start")
        await attacker.say("/start")
        message_id, data = api.find_button(victim.id, "Start the questions")
        # a forged press: the attacker's query carrying the victim's message
        forged = api.user_callback(
            attacker.id, message_id, data, chat_id=victim.id, check_button=False
        )
        await api.wait_for("answerCallbackQuery", lambda c: c.params["callback_query_id"] == forged)
        await bot.drained()
        assert (await state_of(bot, victim.id))["node"] == "welcome"
        assert (await state_of(bot, attacker.id))["node"] == "welcome"
        assert api.callback_answers[forged]["text"] == "This button is no longer active."
    finally:
        await bot.stop()


async def test_two_processes_on_postgresql_serve_one_clients_rapid_answers_in_order(
    fake_bot_api: FakeBotAPI, tmp_path: Path
) -> None:
    """Two bot processes on one PostgreSQL database (one receives, both work the inbox and
    the outbox): one client's rapid answers keep their order; nothing is done twice."""
    api = fake_bot_api
    async with fresh_database("postgresql", tmp_path) as url:
        engines = [make_engine(url), make_engine(url)]
        await upgrade(engines[0])
        one = await start_bot(api, url, engines[0])
        two = await start_bot(api, url, engines[1], receive=False)
        try:
            for user in (3101, 3102, 3103):
                person = Person(api, user)
                await person.say("/start")
                await person.walk({}, FULL)
            async with one.sessionmaker() as session:
                requests = await list_requests(session=session)
            assert len(requests) == 3, "every intake saved once"
            for user in (3101, 3102, 3103):
                assert len(live_keyboards(api, user)) == 1
            # rapid typed answers: the name and the phone sent without waiting between
            person = Person(api, 3104)
            await person.say("/start")
            await person.walk({}, FULL[: FULL.index("name")])
            api.user_message(person.id, "Anna")
            api.user_message(person.id, "+79123456789")
            await person.settle()
            await one.drained()
            await two.drained()
            state = await state_of(one, person.id)
            assert state["node"] == "call_time", "the name, then the phone: in order"
            values = {e["node"]: e.get("value") for e in state["history"]}
            assert values["name"] == "Anna"
        finally:
            await one.stop()
            await two.stop()
            for engine in engines:
                await engine.dispose()


async def test_an_intake_costs_about_one_message_per_answer_and_keeps_no_texts(
    fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine]
) -> None:
    """A whole intake: a press costs one chat-bound call (its question edited into the next),
    a typed answer one (the next question; the typed question had no buttons), plus one to
    take the share button away after a typed phone number, and the staff card; nothing
    Telegram refuses ("message is not modified" included); no client text is kept in the
    inbox or outbox once processed and sent."""
    api = fake_bot_api
    url, engine = database
    api.add_chat(STAFF_CHAT, title="Staff")
    bot = await start_bot(api, url, engine, staff_chat_id=STAFF_CHAT)
    try:
        person = Person(api, 3009)
        await person.say("/start")
        await person.walk({}, FULL)
        await bot.drained()
        assert api.rejected == []
        presses = len(api.calls_of("answerCallbackQuery"))
        typed = len(
            [m for m in api.messages(person.id, include_user=True) if m["from"]["id"] == person.id]
        )
        chat_bound = [
            c
            for c in api.calls
            if c.params.get("chat_id") == person.id and c.method != "getUpdates"
        ]
        assert len(chat_bound) == presses + typed + 1, [c.method for c in chat_bound]
        assert len([c for c in api.calls if c.params.get("chat_id") == STAFF_CHAT]) == 1
        async with bot.sessionmaker() as session:
            inbox = (await session.exec(text("SELECT payload FROM inbox"))).all()  # type: ignore[call-overload]
            outbox = (await session.exec(text("SELECT params FROM outbox"))).all()  # type: ignore[call-overload]
        assert inbox and all(json.loads(row[0]) == {} for row in inbox)
        assert outbox and all(json.loads(row[0]) == {} for row in outbox)
    finally:
        await bot.stop()


async def test_a_press_is_one_transaction_of_a_few_statements(
    fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine]
) -> None:
    """Each answer of an intake is one transaction: the client, their dialogue and the active
    flow version read in one statement, the dialogue and the step written, its update marked
    done, and the calls to make stored in one statement (the issue's budget: at most five
    statements on the dialogue's tables, one commit)."""
    api = fake_bot_api
    url, engine = database
    bot = await start_bot(api, url, engine)
    transactions: list[list[str]] = []
    current: dict[int, list[str]] = {}

    def statement(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        if not sql.lstrip().upper().startswith("BEGIN"):
            current.setdefault(id(conn), []).append(" ".join(sql.split()).lower())

    def commit(conn: Any) -> None:
        transactions.append(current.pop(id(conn), []))

    try:
        person = Person(api, 3011)
        await person.say("/start")
        await bot.drained()
        sqlalchemy.event.listen(engine.sync_engine, "before_cursor_execute", statement)
        sqlalchemy.event.listen(engine.sync_engine, "commit", commit)
        for _ in range(3):
            await person.press(person.labels()[0])
            await bot.drained()
    finally:
        sqlalchemy.event.remove(engine.sync_engine, "before_cursor_execute", statement)
        sqlalchemy.event.remove(engine.sync_engine, "commit", commit)
        await bot.stop()
    steps = [
        t for t in transactions if any("update dialogue_sessions set flow_name" in s for s in t)
    ]
    assert len(steps) == 3, transactions
    for step in steps:
        own = [s for s in step if not any(f" {name}" in s for name in ("inbox", "outbox"))]
        assert len(own) <= 5, own
        assert len([s for s in own if s.startswith("select")]) == 1, own
        assert len([s for s in step if s.startswith("insert into outbox")]) == 1, step
        assert len([s for s in step if s.startswith("update inbox")]) == 1, step


async def test_the_output_port_sends_only_the_parameters_each_method_takes(
    fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine]
) -> None:
    """Every call goes out with its own parameters only (no parse_mode on a keyboard edit)."""
    api = fake_bot_api
    url, engine = database
    services = Services()
    services.configure(
        registry=None, sessionmaker=make_sessionmaker(engine), settings=bot_settings(api, url)
    )
    user = 3010
    async with unit(services, claim=False) as work:
        button = InlineKeyboardMarkup([[InlineKeyboardButton("A", callback_data="a")]])
        await work.out.send(user, "<b>hi</b>", markup=button)
        [sent] = await work.out.flush()
        await work.out.edit_markup(user, call_ref(sent))
    bot: ExtBot[None] = ExtBot(TEST_TOKEN, base_url=api.base_url, base_file_url=api.base_file_url)
    sender = Sender(bot, services.sessionmaker, owner="test", shared=False)
    async with bot:
        sender.wake({user})
        await sender.idle()
    assert api.rejected == []
    [message] = api.messages(user)
    assert api.calls_of("sendMessage")[0].params["parse_mode"] == "HTML"
    assert api.calls_of("editMessageReplyMarkup")[0].params == {
        "chat_id": user,
        "message_id": message["message_id"],
    }
    assert "reply_markup" not in api.messages(user)[-1]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_many_clients_at_once_get_every_answer_once(
    fake_bot_api: FakeBotAPI, tmp_path: Path, backend: str
) -> None:
    """Concurrent chats: no call is made twice (Telegram refuses a press answered twice).

    (The race this guards against, one chat's deferred records flushed by another chat's
    lane, showed in the benchmark at 50 clients on PostgreSQL; here it is not forced.)"""
    api = fake_bot_api
    async with fresh_database(backend, tmp_path) as url:
        engine = make_engine(url)
        await upgrade(engine)
        bot = await start_bot(api, url, engine)
        try:
            people = [Person(api, 3200 + i) for i in range(10)]
            for person in people:
                await person.say("/start")
            await asyncio.gather(*(p.walk({}, FULL) for p in people))
            await bot.drained()
            assert api.rejected == []
            async with bot.sessionmaker() as session:
                assert len(await list_requests(session=session)) == len(people)
        finally:
            await bot.stop()
            await engine.dispose()


async def test_updates_posted_while_the_database_is_busy_are_stored_together(
    database: tuple[str, AsyncEngine],
) -> None:
    """A burst of webhook posts (Telegram opens up to 40 connections) waiting for the database
    is stored in one transaction, not one each; every poster learns its update is stored."""
    url, engine = database
    sessions = make_sessionmaker(engine)
    handed: list[WaitingUpdate] = []
    receipts = Receipts(sessions, handed.extend)
    inserts: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO INBOX"):
            inserts.append(statement)

    sqlalchemy.event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        updates = [
            {"update_id": 500 + n, "message": {"chat": {"id": 7000 + n}, "text": "hi"}}
            for n in range(30)
        ]
        async with sessions() as busy, busy.begin():  # another writer holds the database
            await busy.exec(text("SELECT 1"))  # type: ignore[call-overload]
            posts = [asyncio.create_task(receipts.store(u)) for u in updates]
            await asyncio.sleep(0)
            assert not any(p.done() for p in posts), "nothing is confirmed before it is stored"
        await asyncio.wait_for(asyncio.gather(*posts), 20)
    finally:
        sqlalchemy.event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert len(inserts) == 1, inserts
    assert sorted((u.lane, u.update_id) for u in handed) == [(7000 + n, 500 + n) for n in range(30)]
    async with sessions() as session:
        stored = (await session.exec(text("SELECT count(*) FROM inbox"))).one()[0]  # type: ignore[call-overload]
    assert stored == 30


async def _sender_with(
    api: FakeBotAPI, engine: AsyncEngine, request: BotAPIRequest
) -> tuple[Services, ExtBot[None], Sender]:
    services = Services()
    services.configure(
        registry=None, sessionmaker=make_sessionmaker(engine), settings=bot_settings(api, "")
    )
    bot: ExtBot[None] = ExtBot(
        TEST_TOKEN, base_url=api.base_url, base_file_url=api.base_file_url, request=request
    )
    return services, bot, Sender(bot, services.sessionmaker, owner="test", shared=False)


async def test_a_send_whose_answer_is_late_is_not_repeated(
    fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine]
) -> None:
    """Telegram may have shown it: a repeat could show it twice, so it is recorded instead."""
    api = fake_bot_api
    services, bot, sender = await _sender_with(api, database[1], BotAPIRequest(2, read_timeout=0.3))
    user = 3020
    async with unit(services, claim=False) as work:
        await work.out.send(user, "late answer")
    api.hold("sendMessage", user)
    async with bot:
        sender.wake({user})
        await asyncio.wait_for(sender.idle(), 60)  # a sender that repeats it never goes idle
    api.release("sendMessage", user)
    assert len(api.held) == 1  # sent once, never again
    async with services.sessionmaker() as session:
        assert await pending_calls(session=session) == 0
        [error] = (await session.exec(text("SELECT error FROM outbox"))).one()  # type: ignore[call-overload]
    assert "may have been delivered" in error


async def test_a_send_that_never_left_is_made_once_a_connection_is_free(
    fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine]
) -> None:
    """One connection, busy with another chat's slow call: the wait for it times out before
    anything is sent, so the send is tried again, and shown once."""
    api = fake_bot_api

    class Watched(BotAPIRequest):
        """The real client; it also says when a call timed out waiting for the connection."""

        timed_out = asyncio.Event()

        async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
            try:
                return await super().do_request(*args, **kwargs)
            except NotSent:
                self.timed_out.set()
                raise

    request = Watched(1, pool_timeout=0.1)
    services, bot, sender = await _sender_with(api, database[1], request)
    slow, waiting = 3021, 3022
    async with unit(services, claim=False) as work:
        await work.out.send(slow, "slow")
        await work.out.send(waiting, "waits for the connection")
    api.hold("sendMessage", slow)
    async with bot:
        sender.wake({slow, waiting})
        await api.wait_held("sendMessage")
        await asyncio.wait_for(request.timed_out.wait(), 60)  # the other chat's send did
        api.release("sendMessage", slow)
        await sender.idle()
    assert [m["text"] for m in api.messages(waiting)] == ["waits for the connection"]
    assert [m["text"] for m in api.messages(slow)] == ["slow"]
    assert len(api.calls_of("sendMessage")) == 2


async def test_a_send_whose_connection_breaks_after_it_left_is_not_repeated(
    fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine]
) -> None:
    """Telegram took the message, then the connection broke before its answer came back: a
    repeat would show it twice. (A proxy between the bot and the fake cuts the connection
    once the fake has answered the first sendMessage, without passing the answer on.)"""
    api = fake_bot_api
    assert api.port is not None
    cut: list[bytes] = []

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", api.port)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                upstream.write(head + await reader.readexactly(length))
                answer_head = await upstream_reader.readuntil(b"\r\n\r\n")
                size = next(
                    int(line.split(b":")[1])
                    for line in answer_head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                answer = answer_head + await upstream_reader.readexactly(size)
                if b"/sendMessage " in head and not cut:
                    cut.append(head)
                    writer.transport.abort()  # the answer never reaches the bot
                    return
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            upstream.close()
            writer.close()

    proxy = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    services, _, _ = await _sender_with(api, database[1], BotAPIRequest(2))
    bot: ExtBot[None] = ExtBot(
        TEST_TOKEN, base_url=f"http://127.0.0.1:{port}/bot", request=BotAPIRequest(2)
    )
    sender = Sender(bot, services.sessionmaker, owner="test", shared=False)
    user = 3023
    async with unit(services, claim=False) as work:
        await work.out.send(user, "shown once")
        await work.out.send(user, "and the next one")
    try:
        async with bot:
            sender.wake({user})
            await asyncio.wait_for(sender.idle(), 60)
    finally:
        proxy.close()
    assert cut, "the proxy never cut a sendMessage"
    assert [m["text"] for m in api.messages(user)] == ["shown once", "and the next one"]
    async with services.sessionmaker() as session:
        errors = (await session.exec(text("SELECT error FROM outbox ORDER BY id"))).all()  # type: ignore[call-overload]
    assert [e for (e,) in errors] == ["connection lost; may have been delivered", None]


async def test_sends_of_many_chats_made_while_the_database_is_busy_are_recorded_together(
    fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine]
) -> None:
    """Each made send waits for its record (until then a crash would make it again); those
    of other chats that come meanwhile go into the same transaction, not one each."""
    url, engine = database
    api = fake_bot_api
    services, bot, sender = await _sender_with(api, engine, BotAPIRequest(16))
    users = range(3100, 3112)
    for user in users:
        async with unit(services, claim=False) as work:
            await work.out.send(user, f"answer for {user}")
    records: list[int] = []
    statements: dict[int, list[str]] = {}

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.setdefault(id(conn), []).append(statement.lstrip().upper())

    def committed(conn: Any) -> None:
        done = statements.pop(id(conn), [])
        records.extend([sum(1 for s in done if s.startswith("UPDATE OUTBOX SET"))] * any(done))

    sqlalchemy.event.listen(engine.sync_engine, "before_cursor_execute", seen)
    sqlalchemy.event.listen(engine.sync_engine, "commit", committed)
    try:
        async with bot:
            async with services.sessionmaker() as busy, busy.begin():
                await busy.exec(text("SELECT 1"))  # type: ignore[call-overload]
                sender.wake(set(users))  # another writer holds the database meanwhile

                for user in users:  # every send made (Telegram took it) before any record
                    await api.wait_for(
                        "sendMessage", lambda c, u=user: c.params["chat_id"] == u, timeout=30
                    )
            await asyncio.wait_for(sender.idle(), 30)
    finally:
        sqlalchemy.event.remove(engine.sync_engine, "before_cursor_execute", seen)
        sqlalchemy.event.remove(engine.sync_engine, "commit", committed)
    written = [n for n in records if n]
    assert sum(written) == len(users), written  # every send recorded once
    assert len(written) <= 2, written  # the first one that waited, then all the others
    async with services.sessionmaker() as session:
        assert await pending_calls(session=session) == 0


async def test_a_new_client_created_meanwhile_by_another_transaction_is_stepped_not_doubled(
    fake_bot_api: FakeBotAPI, tmp_path: Path
) -> None:
    """A first message inserts the client without reading it first; if another transaction
    (another process) inserted the same client meanwhile, the step waits for it, then takes
    that client, locked, and goes on: one client, one dialogue, the message answered."""
    user = User(id=3201, first_name="Anna", is_bot=False, language_code="en")
    async with fresh_database("postgresql", tmp_path) as url:
        engine = make_engine(url)
        await upgrade(engine)
        running = await start_bot(fake_bot_api, url, engine, receive=False)
        services = running.serving.services
        try:
            async with running.sessionmaker() as other, other.begin():
                await create_client(
                    session=other, telegram_id=user.id, channel="telegram", language="ru"
                )

                async def first_message() -> None:
                    async with unit(services, claim=False) as work:
                        await step_client(work, services, user, user.id, Restart())

                step = asyncio.create_task(first_message())
                # the step's own INSERT of the client waits for this transaction (the
                # server's activity view is read afresh in a transaction of its own each time)
                while not await _waiting_to_insert_a_client(running):
                    assert not step.done(), step
                    await asyncio.sleep(0.05)
            await asyncio.wait_for(step, 30)
            async with running.sessionmaker() as session:
                clients = (
                    await (await session.connection()).execute(
                        text("SELECT id, language FROM clients WHERE telegram_id = :u"),
                        {"u": user.id},
                    )
                ).all()
                assert len(clients) == 1 and clients[0].language == "ru", "the first one's"
                dialogue = await get_dialogue(session=session, client_id=clients[0].id)
            assert dialogue is not None and dialogue.state["node"] != ""
            welcome = await fake_bot_api.wait_for(
                "sendMessage", lambda c: c.params.get("chat_id") == user.id, timeout=20
            )
            assert "start?" in welcome.params["text"] or "начн" in welcome.params["text"]
        finally:
            await running.stop()
            await engine.dispose()


async def _waiting_to_insert_a_client(running: RunningBot) -> bool:
    async with running.sessionmaker() as watch:
        found = await (await watch.connection()).execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE 'INSERT INTO clients%'"
            )
        )
        return bool(found.scalar_one())

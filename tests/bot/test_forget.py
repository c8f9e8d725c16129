"""/forget leaves no trace of the client's name in the SQLite file (secure_delete)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.bot.conftest import RunningBot
from tests.bot.people import FULL, Person
from tests.bot.test_telegram import _live_questions
from tests.fakebotapi import FakeBotAPI

NAME = "Евлампия Секретова"


def raw_bytes(path: Path) -> bytes:
    return path.read_bytes()


def checkpoint(path: Path) -> bytes:
    """Move the WAL into the database file and empty it; return the file's raw bytes."""
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


async def test_forget_leaves_no_name_in_the_database_file(
    bot: RunningBot, fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine]
) -> None:
    path = Path(bot.url.split(":///", 1)[1])
    person = Person(fake_bot_api, 4001)
    await person.say("/start")
    await person.walk({"name": NAME}, FULL)
    assert NAME.encode() in checkpoint(path), "the name was stored in the file"
    await person.say("/forget")
    await person.press("Yes, erase")
    assert "erased" in person.last
    raw = checkpoint(path)
    for piece in (NAME, "Евлампия", "Секретова"):
        assert piece.encode() not in raw, f"{piece!r} is still in the file's bytes"


async def test_forget_leaves_no_name_in_the_write_ahead_log_either(
    bot: RunningBot, fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine]
) -> None:
    path = Path(bot.url.split(":///", 1)[1])
    wal = path.with_name(path.name + "-wal")
    person = Person(fake_bot_api, 4002)
    await person.say("/start")
    await person.walk({"name": NAME}, FULL)
    await person.say("/forget")
    await person.press("Yes, erase")
    assert "erased" in person.last
    # read the files as they are, without checkpointing them first
    raw = raw_bytes(path) + (raw_bytes(wal) if wal.exists() else b"")
    assert NAME.encode() not in raw, "the name is still in the database file or its log"


async def test_forget_then_keep_answers_politely_and_erases_nothing(
    bot: RunningBot, fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine]
) -> None:
    path = Path(bot.url.split(":///", 1)[1])
    person = Person(fake_bot_api, 4003)
    await person.say("/start")
    await person.walk({"name": NAME}, FULL)
    await person.say("/forget")
    await person.press("No, keep")
    assert "All right, nothing was erased." in person.last
    assert "Sorry" not in "\n".join(person.shown[-2:])
    assert NAME.encode() in checkpoint(path), "the data are still there"
    # the question's buttons are gone: a later "Yes, erase" cannot be pressed by mistake
    live = [
        m
        for m in fake_bot_api.messages(person.id)
        if (m.get("reply_markup") or {}).get("inline_keyboard")
    ]
    assert not any("Yes, erase" in str(m["reply_markup"]) for m in live)


async def test_forget_then_keep_in_the_language_the_client_chose(
    bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    person = Person(fake_bot_api, 4004, lang="en")
    await person.say("/start")
    await person.say("/lang")
    await person.press("Русский")
    await person.say("/forget")
    await person.press("Нет, оставить")
    assert "ничего не удалено" in person.last


async def test_after_forget_no_button_of_the_erased_dialogue_stays_live(
    bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    person = Person(fake_bot_api, 4005)
    await person.say("/start")
    await person.walk({}, ["welcome", "emergency"])  # at "What bothers you?"
    await person.say("/forget")
    await person.press("Yes, erase")
    assert not _live_questions(fake_bot_api, person.id), "the erased dialogue's question is dead"
    await person.say("/start")
    assert len(_live_questions(fake_bot_api, person.id)) == 1, "one live question at a time"


async def test_erase_pressed_twice_erases_once_and_asks_telegram_nothing_twice(
    bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    person = Person(fake_bot_api, 4006)
    await person.say("/start")
    await person.say("/forget")
    message_id, data = fake_bot_api.find_button(person.id, "Yes, erase")
    fake_bot_api.user_callback(person.id, message_id, data)
    fake_bot_api.user_callback(person.id, message_id, data)
    await fake_bot_api.wait_for("answerCallbackQuery", timeout=20)
    await fake_bot_api.wait_for("answerCallbackQuery", timeout=20)
    await bot.drained()
    assert [(c.method, c.error) for c in fake_bot_api.calls if not c.ok] == []
    assert "erased" in person.last

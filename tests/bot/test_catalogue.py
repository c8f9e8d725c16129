"""Fixed strings: the center's values come from settings, and people get their own language."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

import bot
import flows
from bot.settings import Settings
from flows import CATALOGUE
from tests.bot.conftest import RunningBot, start_bot
from tests.bot.people import Person
from tests.bot.test_admin import (
    ADMIN,
    STRANGER,
    admin_bot,  # noqa: F401 - the fixture, shared
    edited,
)
from tests.bot.test_staff import STAFF, clock, intake, staff_bot, staff_messages, staff_says  # noqa: F401 - the fixtures, shared
from tests.fakebotapi import FakeBotAPI

DEFAULTS = Settings(_env_file=None)  # type: ignore[call-arg]


def test_no_text_types_the_phone_or_the_opening_hours() -> None:
    phone_digits = re.sub(r"\D", "", DEFAULTS.center_phone)
    hours = (f"{DEFAULTS.opening_hour}:00", f"{DEFAULTS.closing_hour}:00")
    for key, texts in CATALOGUE.items():
        for lang, text in texts.items():
            assert phone_digits[-7:] not in re.sub(r"\D", "", text), f"{key} ({lang}): phone"
            assert not any(re.search(rf"(?<!\d){h}", text) for h in hours), f"{key} ({lang})"
            assert not re.search(r"\d:\d\d\s*[–-]\s*\d", text), f"{key} ({lang}): hours"


def test_every_key_the_code_looks_up_is_in_the_catalogue() -> None:
    roots = [Path(bot.__file__).parent, Path(flows.__file__).parent]
    sources = "\n".join(p.read_text() for root in roots for p in sorted(root.rglob("*.py")))
    keys = re.findall(r"""\bt\(\s*["']([a-z_]+\.[a-z_.]+)["']""", sources)
    prefixes = re.findall(r"""\bt\(\s*f["']([a-z_]+\.[a-z_.]+)\{""", sources)
    assert len(keys) > 100 and len(prefixes) >= 5, "the search finds the lookups"
    assert sorted({k for k in keys if k not in CATALOGUE}) == []
    assert [p for p in prefixes if not any(k.startswith(p) for k in CATALOGUE)] == []


@pytest.fixture
async def own_values_bot(
    fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine]
) -> AsyncIterator[RunningBot]:
    url, engine = database
    running = await start_bot(
        fake_bot_api, url, engine, center_phone="+7 (812) 555-01-02", opening_hour=10,
        closing_hour=19,
    )  # fmt: skip
    try:
        yield running
    finally:
        await running.stop()


@pytest.mark.parametrize(
    ("lang", "words"),
    [("ru", "Работаем 10:00–19:00, без выходных."), ("en", "Open 10:00–19:00, seven days")],
)
@pytest.mark.usefixtures("own_values_bot")
async def test_info_shows_the_phone_and_hours_of_the_settings(
    fake_bot_api: FakeBotAPI, lang: str, words: str
) -> None:
    client = Person(fake_bot_api, 4001, lang=lang)
    await client.say("/info")
    assert words in client.last and "+7 (812) 555-01-02" in client.last
    assert not re.search(r"(?<!\d)9:00|21:00|085-15-13", client.last), "no default is typed"


@pytest.mark.usefixtures("staff_bot")
async def test_stats_come_in_the_language_of_the_staff_member_who_asks(
    fake_bot_api: FakeBotAPI,
) -> None:
    await intake(fake_bot_api, 4101)
    await staff_says(fake_bot_api, STAFF, "/stats", language_code="ru")
    stats = staff_messages(fake_bot_api)[-1]["text"]
    assert stats.startswith("Сегодня\nновые 1") and "\nЗа 7 дней\nновые 1" in stats
    assert "новые 1 · в работе 0 · записаны 0" in stats
    assert "медиана до первого звонка: — мин" in stats and "по источнику: direct 1" in stats
    assert "Воронка (7 дней): дошли / остановились" in stats
    assert "Today" not in stats and "by outcome" not in stats, "the group's language is English"


async def reply_after(api: FakeBotAPI, user: int, mark: int) -> str:
    """The first message the bot sends ``user`` after the ``mark``-th call."""

    def to_user(call: Any) -> bool:
        newer = any(call is c for c in api.calls[mark:])
        return newer and call.params["chat_id"] == user

    call = await api.wait_for("sendMessage", to_user, timeout=60)
    return str(call.params["text"])


@pytest.mark.usefixtures("admin_bot")
async def test_admin_refusals_come_in_the_language_of_who_wrote(fake_bot_api: FakeBotAPI) -> None:
    stranger = Person(fake_bot_api, STRANGER, lang="ru")
    await stranger.say("/flows_history")
    assert stranger.last == "Это доступно только администраторам центра."

    mark = len(fake_bot_api.calls)
    fake_bot_api.user_document(ADMIN, b"\xff\xfe", file_name="intake.yaml", language_code="ru")
    assert await reply_after(fake_bot_api, ADMIN, mark) == (
        "Пришлите, пожалуйста, анкету файлом YAML в кодировке UTF-8 (.yaml)."
    )

    mark = len(fake_bot_api.calls)
    unsafe = edited("unsafe").encode()
    fake_bot_api.user_document(ADMIN, unsafe, file_name="intake.yaml", language_code="ru")
    refusal = await reply_after(fake_bot_api, ADMIN, mark)
    assert refusal.startswith("❌ Анкета не прошла проверку, опубликовать её нельзя:\n<pre>")
    assert "after the outcome STOP the client reaches this question" in refusal, "the report"
    document = await fake_bot_api.wait_for("sendDocument", timeout=10)
    assert document.params["caption"] == "Полный отчёт проверки"

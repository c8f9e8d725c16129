"""Logs keep the promise at every level: a whole dialogue at DEBUG leaks no personal data."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.logs import QUIET_LOGGERS, RedactingFilter, configure_logging
from tests.bot.conftest import start_bot
from tests.bot.people import FULL, Person
from tests.fakebotapi import FakeBotAPI
from tests.fakebotapi.fixtures import TEST_TOKEN

STAFF_CHAT = -100555
NAME = "Зинаида Тестова"
PHONE = "+7 916 555-12-34"
FREE_TEXT = "Спина болит с прошлой зимы после падения на льду"
USERNAME = "zina_private_handle"


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    """Everything logged, at DEBUG, the way ``intake-bot run`` configures it."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("DEBUG", secrets=[TEST_TOKEN], stream=stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)


async def test_a_whole_dialogue_at_debug_logs_no_name_phone_answer_username_or_token(
    fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine], debug_log: io.StringIO
) -> None:
    url, engine = database
    fake_bot_api.add_chat(STAFF_CHAT, title="Staff")
    running = await start_bot(
        fake_bot_api, url, engine, staff_chat_id=STAFF_CHAT, staff_user_ids=[900],
        log_level="DEBUG",
    )  # fmt: skip
    try:
        person = Person(fake_bot_api, 3001)
        mark = len(fake_bot_api.calls)
        fake_bot_api.user_message(
            3001, "/start", language_code="en", first_name="Зинаида", username=USERNAME
        )
        await person.settle(mark)
        await person.walk({}, ["welcome"])
        await person.press("Ask a question")
        await person.say(FREE_TEXT)
        await person.press("Back to the questionnaire")
        await person.walk({"name": NAME, "phone": PHONE}, FULL[1:])
        assert NAME in fake_bot_api.messages(STAFF_CHAT)[-1]["text"], "the card was posted"
    finally:
        await running.stop()
    logging.getLogger("bot.test").warning("a URL %s/bot%s/getMe", "http://x", TEST_TOKEN)
    log = debug_log.getvalue()
    assert "DEBUG" in log or "INFO" in log or "WARNING" in log, "something was logged"
    assert "http://x/bot[token]/getMe" in log, "the token is redacted where it still appears"
    digits = PHONE.replace(" ", "").replace("-", "")
    for secret in (
        NAME, "Зинаида", "Тестова", digits, digits[2:], "555-12-34", FREE_TEXT[:20],
        USERNAME, TEST_TOKEN, TEST_TOKEN.split(":")[1],
    ):  # fmt: skip
        assert secret not in log, f"{secret!r} leaked into the log"


def test_the_filter_redacts_messages_arguments_and_tracebacks() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "GET /bot%s/x", ("SECRET",), None)
    try:
        raise ValueError("token SECRET in a traceback")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    assert RedactingFilter(["SECRET"]).filter(record)
    assert record.getMessage() == "GET /bot[token]/x"
    assert record.exc_text is not None and "SECRET" not in record.exc_text
    assert "[token]" in record.exc_text

"""Fixtures for the Telegram tests: the real Application, polling a local fake Bot API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from telegram.ext import Application

from bot.app import ALLOWED_UPDATES, build_application
from bot.flowsource import FlowRegistry
from bot.serve import Serving, start_serving
from bot.settings import Settings
from storage import (
    make_engine,
    make_sessionmaker,
    pending_calls,
    pending_updates,
    upgrade,
    utcnow,
)
from tests.fakebotapi import FakeBotAPI
from tests.fakebotapi.fixtures import TEST_TOKEN, fake_bot_api  # noqa: F401 - a fixture


def bot_settings(api: FakeBotAPI, database_url: str, **extra: Any) -> Settings:
    """Settings pointing the bot at the fake API and a test database, ignoring any .env."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        telegram_token=TEST_TOKEN,
        telegram_base_url=api.base_url,
        telegram_base_file_url=api.base_file_url,
        database_url=database_url,
        **extra,
    )


class RunningBot:
    """A started bot (long polling into the inbox) and what it was built from."""

    def __init__(self, serving: Serving, engine: AsyncEngine, url: str) -> None:
        self.serving = serving
        self.app: Application = serving.app  # type: ignore[type-arg]
        self.engine = engine
        self.url = url
        self.sessionmaker = make_sessionmaker(engine)

        #: stops the fake API asking this bot whether it is done (see ``start_bot``)
        self.unsettle: Callable[[], None] = lambda: None

    async def stop(self, grace: float = 5.0) -> None:
        self.unsettle()
        await self.serving.stop(grace)

    async def waiting(self) -> int:
        """Stored updates not yet processed and queued calls not yet made; 0 when the bot
        is done with everything delivered so far (nothing more comes from it)."""
        async with make_sessionmaker(self.engine, read_only=True)() as session:
            left = await pending_updates(session=session) + await pending_calls(session=session)
        services = self.serving.services
        busy = services.dispatcher.busy or services.sender.busy
        return left or int(busy)

    async def is_drained(self) -> bool:
        return not await self.waiting()

    async def drained(self, timeout: float = 15.0) -> None:  # noqa: ASYNC109
        """Wait until every stored update is processed and every queued call made.

        A condition on the bot's own tables, not a quiet gap: after it, nothing more
        comes from what was delivered so far.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while left := await self.waiting():
            assert asyncio.get_running_loop().time() < deadline, f"{left} item(s) still waiting"
            await asyncio.sleep(0.01)


async def start_bot(
    api: FakeBotAPI,
    url: str,
    engine: AsyncEngine,
    *,
    clock: Callable[[], datetime] = utcnow,
    receive: bool = True,
    **extra: Any,
) -> RunningBot:
    """Build the project's Application with its own factory and start long polling.

    Housekeeping (re-delivery, re-announcement) does not run by itself in tests; they call
    ``bot.app.run_housekeeping`` at the moments they choose, with their own clock.
    """
    settings = bot_settings(api, url, **extra)
    app = build_application(
        settings,
        registry=FlowRegistry(values=settings.flow_values),
        sessionmaker=make_sessionmaker(engine),
        clock=clock,
        housekeeping=False,
    )
    serving = await start_serving(
        app, allowed_updates=ALLOWED_UPDATES, poll_timeout=1, receive=receive
    )
    running = RunningBot(serving, engine, url)
    # the fake API's wait_idle asks the bot whether it is done instead of waiting for a gap
    running.unsettle = api.settle_with(running.is_drained)
    return running


async def start_webhook_bot(
    api: FakeBotAPI,
    url: str,
    engine: AsyncEngine,
    port: int,
    secret: str = "s3cr3t-Token",
    **extra: Any,
) -> RunningBot:
    """The bot in webhook mode on ``127.0.0.1:port/telegram`` (it registers the webhook)."""
    settings = bot_settings(
        api, url, webhook_url=f"http://127.0.0.1:{port}/telegram", webhook_secret=secret,
        webhook_listen="127.0.0.1", webhook_port=port, **extra,
    )  # fmt: skip
    app = build_application(
        settings,
        registry=FlowRegistry(values=settings.flow_values),
        sessionmaker=make_sessionmaker(engine),
        housekeeping=False,
    )
    serving = await start_serving(app, allowed_updates=ALLOWED_UPDATES)
    return RunningBot(serving, engine, url)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[tuple[str, AsyncEngine]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    engine = make_engine(url)
    await upgrade(engine)
    try:
        yield url, engine
    finally:
        await engine.dispose()


@pytest.fixture
async def bot(
    fake_bot_api: FakeBotAPI,  # noqa: F811
    database: tuple[str, AsyncEngine],
) -> AsyncIterator[RunningBot]:
    url, engine = database
    running = await start_bot(fake_bot_api, url, engine)
    try:
        yield running
    finally:
        await running.stop()

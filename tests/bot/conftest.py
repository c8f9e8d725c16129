"""Fixtures for the Telegram tests: the real Application, polling a local fake Bot API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from telegram import Update
from telegram.ext import Application

from bot.app import ALLOWED_UPDATES, build_application
from bot.flowsource import FlowRegistry
from bot.settings import Settings
from storage import make_engine, make_sessionmaker, upgrade, utcnow
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
    """A started Application (long polling) and what it was built from."""

    def __init__(self, app: Application, engine: AsyncEngine, url: str) -> None:  # type: ignore[type-arg]
        self.app = app
        self.engine = engine
        self.url = url
        self.sessionmaker = make_sessionmaker(engine)

    async def stop(self) -> None:
        if self.app.updater and self.app.updater.running:
            await self.app.updater.stop()
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()


def report_handled(app: Application, api: FakeBotAPI) -> None:  # type: ignore[type-arg]
    """Tell the fake API when the bot has finished each update, handlers and error report
    included, so tests wait for exactly that (``FakeBotAPI.wait_idle``), not a quiet gap."""
    process_update = app.process_update

    async def processed(update: object) -> None:
        try:
            await process_update(update)
        finally:
            if isinstance(update, Update):
                api.handled(update.update_id)

    app.process_update = processed  # type: ignore[method-assign]


async def start_bot(
    api: FakeBotAPI,
    url: str,
    engine: AsyncEngine,
    *,
    clock: Callable[[], datetime] = utcnow,
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
    report_handled(app, api)
    await app.initialize()
    await app.post_init(app)  # type: ignore[misc]
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(poll_interval=0, timeout=1, allowed_updates=ALLOWED_UPDATES)
    return RunningBot(app, engine, url)


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

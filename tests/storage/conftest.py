"""Fixtures: every storage test runs once on SQLite and once on a fresh PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from storage import AsyncSession, make_engine, make_sessionmaker, upgrade
from tests.dbs import BACKENDS, fresh_database


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def migrated_engine(engine: AsyncEngine) -> AsyncEngine:
    await upgrade(engine)
    return engine


@pytest.fixture
def sessionmaker(migrated_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(migrated_engine)


@pytest.fixture
async def session(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    async with sessionmaker() as session:
        yield session


@pytest.fixture
async def postgresql(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated fresh PostgreSQL database, for what only PostgreSQL runs (statements sent
    to the driver)."""
    async with fresh_database("postgresql", tmp_path) as url:
        engine = make_engine(url)
        try:
            await upgrade(engine)
            yield engine
        finally:
            await engine.dispose()

"""Throwaway databases for tests: a SQLite file, or a fresh PostgreSQL database per test.

PostgreSQL is reached through ``$TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``), a database used only to create and drop the
per-test ones. When it is unreachable the test is skipped, or fails when ``CI=true``, so a CI
run can never pass without having tested PostgreSQL.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

__all__ = [
    "BACKENDS",
    "DEFAULT_POSTGRES_ADMIN_URL",
    "connect_admin",
    "fresh_database",
    "postgres_admin_url",
]

BACKENDS = ("sqlite", "postgresql")
DEFAULT_POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
DATABASE_PREFIX = "intake_test_"


def postgres_admin_url() -> str:
    return os.environ.get("TEST_POSTGRES_URL") or DEFAULT_POSTGRES_ADMIN_URL


@asynccontextmanager
async def fresh_database(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """Yield the async SQLAlchemy URL of an empty database that only this caller uses.

    ``sqlite``: a file in ``tmp_path``. ``postgresql``: ``CREATE DATABASE intake_test_<hex>``,
    dropped on exit even if connections to it are still open.
    """
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'intake.db'}"
        return
    if backend != "postgresql":
        raise ValueError(f"unknown backend {backend!r}, expected one of {BACKENDS}")

    admin_url = make_url(postgres_admin_url())
    admin = await connect_admin()
    name = DATABASE_PREFIX + secrets.token_hex(6)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield admin_url.set(drivername="postgresql+asyncpg", database=name).render_as_string(
                hide_password=False
            )
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def connect_admin() -> asyncpg.Connection:
    """Connect to the PostgreSQL admin database, or skip (fail when ``CI=true``) the test."""
    url = make_url(postgres_admin_url()).set(drivername="postgresql")
    dsn = url.render_as_string(hide_password=False)
    try:
        return await asyncpg.connect(dsn, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        where = url.render_as_string(hide_password=True)
        message = f"PostgreSQL is unreachable at {where}: {exc!r}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true, so this fails instead of skipping)")
        pytest.skip(message)

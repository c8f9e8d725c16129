"""Migrating in a child process: the bot's own process never loads alembic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import MigrationError, upgrade_apart
from storage.db import HEAD

ROOT = Path(__file__).resolve().parents[2]

MIGRATE_AND_LIST_MODULES = """
import asyncio, sys
from storage import make_engine, upgrade_apart

async def main(url):
    engine = make_engine(url)
    await upgrade_apart(engine)
    await engine.dispose()

asyncio.run(main(sys.argv[1]))
print(sorted(name for name in sys.modules if name.split(".")[0] == "alembic"))
"""


def test_a_process_that_migrates_apart_never_loads_alembic(database_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", MIGRATE_AND_LIST_MODULES, database_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


async def test_the_database_is_at_head_afterwards_and_a_second_call_is_a_no_op(
    engine: AsyncEngine,
) -> None:
    await upgrade_apart(engine)
    async with engine.connect() as connection:
        version = (await connection.execute(text("SELECT version_num FROM alembic_version"))).all()
        tables = await connection.run_sync(
            lambda sync: sync.dialect.get_table_names(sync)  # type: ignore[no-any-return]
        )
    assert version == [(HEAD,)]
    assert {"clients", "dialogue_sessions", "consultation_requests", "inbox", "outbox"} <= set(
        tables
    )
    await upgrade_apart(engine)  # already at head: nothing runs, nothing fails


async def test_a_failed_migration_is_a_clear_error(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
        await connection.execute(text("INSERT INTO alembic_version VALUES ('nosuchrevision')"))
    with pytest.raises(MigrationError, match="migrating the database failed.*nosuchrevision"):
        await upgrade_apart(engine)

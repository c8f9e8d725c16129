"""The test helper that hands each test its own database."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from tests.dbs import DATABASE_PREFIX, connect_admin, fresh_database


async def _postgres_databases() -> set[str]:
    connection = await connect_admin()
    try:
        rows = await connection.fetch("SELECT datname FROM pg_database")
    finally:
        await connection.close()
    return {row["datname"] for row in rows if row["datname"].startswith(DATABASE_PREFIX)}


async def test_each_postgres_database_is_fresh_and_dropped_afterwards(tmp_path: Path) -> None:
    before = await _postgres_databases()
    async with (
        fresh_database("postgresql", tmp_path) as first,
        fresh_database("postgresql", tmp_path) as second,
    ):
        assert first != second
        ours = {first.rsplit("/", 1)[1], second.rsplit("/", 1)[1]}
        during = await _postgres_databases()
        assert ours <= during - before
        # Left open on purpose: dropping must not be blocked by a leftover connection.
        leftover = await asyncpg.connect(first.replace("+asyncpg", ""), timeout=5)
    await leftover.close()
    # only our own: other test runs on the shared server create and drop theirs meanwhile
    assert ours.isdisjoint(await _postgres_databases())


async def test_sqlite_database_is_a_file_in_tmp_path(tmp_path: Path) -> None:
    async with fresh_database("sqlite", tmp_path) as url:
        assert url == f"sqlite+aiosqlite:///{tmp_path / 'intake.db'}"


async def test_unknown_backend_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="oracle"):
        async with fresh_database("oracle", tmp_path):
            pass  # pragma: no cover


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
async def test_unreachable_postgres_skips_except_on_ci(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ci: str,
    outcome: type[BaseException],
) -> None:
    monkeypatch.setenv("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:1/test")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="unreachable"):
        async with fresh_database("postgresql", tmp_path):
            pass  # pragma: no cover

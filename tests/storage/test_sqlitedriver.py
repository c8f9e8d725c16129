from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from storage import make_engine, make_sessionmaker, sqlitedriver


@pytest.fixture
async def connection(tmp_path: Path) -> AsyncIterator[Any]:
    connection = await sqlitedriver.connect(str(tmp_path / "d.db"), isolation_level=None)
    try:
        yield connection
    finally:
        await connection.close()


def _other_process(path: Path) -> sqlite3.Connection:
    """Another process's connection, as far as SQLite's locks go (its own file handle)."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
    other.execute("PRAGMA journal_mode=WAL")
    return other


async def test_a_statement_hands_back_rows_count_and_last_id(connection: Any) -> None:
    cursor = connection.cursor()
    await cursor.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
    await cursor.execute("INSERT INTO t (name) VALUES (?)", ("a",))
    assert (cursor.rowcount, cursor.lastrowid, cursor.description) == (1, 1, None)
    await cursor.executemany("INSERT INTO t (name) VALUES (?)", [("b",), ("c",)])
    assert cursor.rowcount == 2
    await cursor.execute("UPDATE t SET name = upper(name) WHERE id > ?", (1,))
    assert cursor.rowcount == 2
    await cursor.execute("INSERT INTO t (name) VALUES ('d') RETURNING id")
    assert await cursor.fetchall() == [(4,)]

    await cursor.execute("SELECT id, name FROM t ORDER BY id")
    assert [column[0] for column in cursor.description] == ["id", "name"]
    assert await cursor.fetchone() == (1, "a")
    assert await cursor.fetchmany(2) == [(2, "B"), (3, "C")]
    assert await cursor.fetchall() == [(4, "d")]
    assert await cursor.fetchone() is None


async def test_statements_run_on_the_event_loops_thread(connection: Any) -> None:
    """No thread switch per statement: SQLite calls back on the thread that awaited it."""
    connection._conn.create_function("thread_id", 0, threading.get_ident)
    cursor = connection.cursor()
    await cursor.execute("SELECT thread_id()")
    assert await cursor.fetchall() == [(threading.get_ident(),)]


async def test_errors_reach_the_caller(connection: Any) -> None:
    cursor = connection.cursor()
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await cursor.execute("SELECT * FROM missing")


async def test_commit_and_rollback_end_the_transaction(connection: Any) -> None:
    cursor = connection.cursor()
    await cursor.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    await connection.commit()  # nothing open: nothing happens
    await connection.rollback()

    await cursor.execute("BEGIN")
    await cursor.execute("INSERT INTO t DEFAULT VALUES")
    await connection.rollback()
    await cursor.execute("SELECT count(*) FROM t")
    assert await cursor.fetchall() == [(0,)]
    await cursor.execute("BEGIN")
    await cursor.execute("INSERT INTO t DEFAULT VALUES")
    await connection.commit()
    await cursor.execute("SELECT count(*) FROM t")
    assert await cursor.fetchall() == [(1,)]


async def test_a_lock_held_by_another_process_is_waited_for_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    """The other process lets go only when a task of this event loop tells it to: were the
    waiting statement sleeping in SQLite, that task could never run."""
    path = tmp_path / "d.db"
    connection = await sqlitedriver.connect(str(path), isolation_level=None)
    other = _other_process(path)
    try:
        cursor = connection.cursor()
        await cursor.execute("PRAGMA journal_mode=WAL")
        await cursor.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO t DEFAULT VALUES")

        waiting = asyncio.Event()

        async def write() -> list[Any]:
            waiting.set()
            await cursor.execute("BEGIN IMMEDIATE")
            await cursor.execute("INSERT INTO t DEFAULT VALUES")
            await connection.commit()
            await cursor.execute("SELECT count(*) FROM t")
            rows: list[Any] = await cursor.fetchall()
            return rows

        writer = asyncio.create_task(write())
        await waiting.wait()
        for _ in range(20):  # the writer is refused and sleeps; this loop goes on meanwhile
            await asyncio.sleep(0.005)
        assert not writer.done()
        other.execute("COMMIT")
        assert await asyncio.wait_for(writer, 30) == [(2,)]
    finally:
        other.close()
        await connection.close()


async def test_a_lock_held_past_the_timeout_fails_as_before(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    connection = await sqlitedriver.connect(str(path), isolation_level=None, timeout=0.2)
    other = _other_process(path)
    try:
        cursor = connection.cursor()
        await cursor.execute("PRAGMA journal_mode=WAL")
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await cursor.execute("BEGIN IMMEDIATE")
    finally:
        other.close()
        await connection.close()


async def test_a_write_session_waits_for_another_processs_lock_and_then_commits(
    tmp_path: Path,
) -> None:
    """Through the engine, as the bot writes: the session waits, the loop goes on serving."""
    path = tmp_path / "bot.db"
    engine = make_engine(f"sqlite:///{path}")
    sessionmaker = make_sessionmaker(engine)
    try:
        async with sessionmaker() as session, session.begin():
            await session.exec(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
        other = _other_process(path)
        other.execute("BEGIN IMMEDIATE")
        started = asyncio.Event()

        async def write() -> None:
            started.set()
            async with sessionmaker() as session, session.begin():
                await session.exec(text("INSERT INTO t DEFAULT VALUES"))

        writer = asyncio.create_task(write())
        await started.wait()
        await asyncio.sleep(0.05)
        assert not writer.done()
        other.execute("ROLLBACK")
        other.close()
        await asyncio.wait_for(writer, 30)
        async with make_sessionmaker(engine, read_only=True)() as session:
            assert (await session.exec(text("SELECT count(*) FROM t"))).scalar() == 1
    finally:
        await engine.dispose()

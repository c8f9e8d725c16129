from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storage import sqlitedriver


@pytest.fixture
async def connection(tmp_path: Path) -> AsyncIterator[Any]:
    connection = await sqlitedriver.connect(str(tmp_path / "d.db"), isolation_level=None)
    trips: list[str] = []
    execute = connection._execute

    async def counted(function: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(function, "__name__", repr(function)))
        return await execute(function, *args, **kwargs)

    connection._execute = counted
    connection.trips = trips
    try:
        yield connection
    finally:
        await connection.close()


async def test_a_statement_hands_back_rows_count_and_last_id_in_one_trip(connection: Any) -> None:
    cursor = connection.cursor()
    await cursor.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
    connection.trips.clear()

    await cursor.execute("INSERT INTO t (name) VALUES (?)", ("a",))
    assert (cursor.rowcount, cursor.lastrowid, cursor.description) == (1, 1, None)
    await cursor.executemany("INSERT INTO t (name) VALUES (?)", [("b",), ("c",)])
    assert cursor.rowcount == 2
    await cursor.execute("UPDATE t SET name = upper(name) WHERE id > ?", (1,))
    assert cursor.rowcount == 2
    await cursor.execute("INSERT INTO t (name) VALUES ('d') RETURNING id")
    assert await cursor.fetchall() == [(4,)]
    assert len(connection.trips) == 4

    await cursor.execute("SELECT id, name FROM t ORDER BY id")
    assert [column[0] for column in cursor.description] == ["id", "name"]
    assert await cursor.fetchone() == (1, "a")
    assert await cursor.fetchmany(2) == [(2, "B"), (3, "C")]
    assert await cursor.fetchall() == [(4, "d")]
    assert await cursor.fetchone() is None
    assert len(connection.trips) == 5


async def test_errors_reach_the_caller(connection: Any) -> None:
    cursor = connection.cursor()
    with pytest.raises(Exception, match="no such table"):
        await cursor.execute("SELECT * FROM missing")


async def test_commit_and_rollback_make_a_trip_only_inside_a_transaction(
    connection: Any,
) -> None:
    cursor = connection.cursor()
    await cursor.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    connection.trips.clear()
    await connection.commit()
    await connection.rollback()
    assert connection.trips == []

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
    assert connection.trips.count("rollback") == connection.trips.count("commit") == 1

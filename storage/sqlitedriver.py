"""aiosqlite with one trip to the connection's thread per statement.

aiosqlite runs every ``sqlite3`` call on the connection's own thread, and SQLAlchemy's adapter
makes a call for each step of a statement: open a cursor, execute, fetch the rows, close the
cursor. Each trip is a thread switch and an event-loop wake-up; on the message path they
were most of the CPU time spent on SQLite. Here a statement is one trip: the cursor is
opened, executed, read to the end and closed on the thread, and the adapter is handed the
rows, description, row count and last row id as plain values. Committing or rolling back
outside a transaction makes no trip at all (``sqlite3`` does nothing then either), which
spares the pool's reset of every connection given back after a commit.

``make_engine`` plugs ``connect`` in through the adapter's ``async_creator_fn`` connect
argument, so SQLAlchemy still builds the ``sqlite3.connect`` arguments from the URL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from threading import Thread
from typing import Any

import aiosqlite

__all__ = ["connect"]

_Result = tuple[list[Any], Any, int, int | None]


def _run(
    connection: sqlite3.Connection, execute: Callable[..., Any], sql: str, parameters: Any
) -> _Result:
    """On the connection's thread: the whole statement, its rows read at once."""
    cursor = connection.cursor()
    try:
        execute(cursor, sql, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return rows, cursor.description, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class _Cursor:
    """What SQLAlchemy's adapter needs of an aiosqlite cursor, without trips of its own."""

    arraysize = 1

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self._rows: list[Any] = []
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None

    async def __aenter__(self) -> _Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _go(self, execute: Callable[..., Any], sql: str, parameters: Any) -> _Cursor:
        connection = self._connection
        self._rows, self.description, self.rowcount, self.lastrowid = await connection.trip(
            _run, connection._conn, execute, sql, parameters
        )
        return self

    async def execute(self, sql: str, parameters: Iterable[Any] = ()) -> _Cursor:
        """Run one statement (one trip)."""
        return await self._go(sqlite3.Cursor.execute, sql, parameters)

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> _Cursor:
        """Run one statement for each set of parameters (one trip)."""
        return await self._go(sqlite3.Cursor.executemany, sql, parameters)

    async def fetchone(self) -> Any:
        """The next row, or None."""
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        """The next ``size`` rows."""
        count = self.arraysize if size is None else size
        rows, self._rows = self._rows[:count], self._rows[count:]
        return rows

    async def fetchall(self) -> Sequence[Any]:
        """The rows not fetched yet."""
        rows, self._rows = self._rows, []
        return rows

    async def close(self) -> None:
        """Drop the rows (the ``sqlite3`` cursor is closed already)."""
        self._rows = []


class _Connection(aiosqlite.Connection):
    """An aiosqlite connection whose cursors make one trip per statement."""

    async def trip(self, function: Callable[..., Any], *args: Any) -> Any:
        """Call ``function(*args)`` on the connection's thread."""
        return await self._execute(function, *args)  # type: ignore[no-untyped-call]

    def cursor(self) -> _Cursor:  # type: ignore[override]
        """A cursor (made on the thread only when it runs a statement)."""
        return _Cursor(self)

    async def commit(self) -> None:
        """Commit the transaction, if one is open."""
        if self._conn.in_transaction:
            await self.trip(self._conn.commit)

    async def rollback(self) -> None:
        """Roll the transaction back, if one is open."""
        if self._conn.in_transaction:
            await self.trip(self._conn.rollback)


def connect(database: str, **kwargs: Any) -> aiosqlite.Connection:
    """Open a connection as ``aiosqlite.connect`` does; awaiting it connects."""

    def connector() -> sqlite3.Connection:
        opened: sqlite3.Connection = sqlite3.connect(database, **kwargs)
        return opened

    connection: _Connection = _Connection(connector, 64)
    # As SQLAlchemy does for aiosqlite: a forgotten connection must not keep the process alive.
    thread = connection if isinstance(connection, Thread) else connection._thread
    thread.daemon = True
    return connection

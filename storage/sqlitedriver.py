"""aiosqlite's interface, with every statement run on the event loop's own thread.

aiosqlite runs every ``sqlite3`` call on the connection's own thread, and SQLAlchemy's adapter
makes a call for each step of a statement: open a cursor, execute, fetch the rows, close the
cursor. Each trip is a thread switch and an event-loop wake-up: about a hundred context
switches per update, and a fifth of the CPU time in the kernel. A statement of this bot on
a local file in WAL mode with ``synchronous=NORMAL`` takes microseconds (a commit does not
wait for the disk; only a checkpoint does), far less than the trip. So here a statement runs
right where it is awaited: the cursor is opened, executed, read to the end and closed, and
the adapter is handed the rows, description, row count and last row id as plain values.
The connection's thread is used only to open and close it.

Waiting for another process is the one thing that must not block the event loop: SQLite's
own busy handler would sleep in the statement. The connections are opened with no busy
timeout (``make_engine`` sets ``PRAGMA busy_timeout=0`` too), so a statement that meets a
lock held elsewhere fails at once with SQLITE_BUSY, which means it did nothing; it is tried
again after an ``asyncio.sleep`` (1 ms doubling to 50 ms), for up to the connection's
``timeout`` (30 s unless the URL says otherwise), and then the error is raised as before.
A batch (``executemany``) is not tried again: part of it may have run. It runs only inside a
write transaction, which already holds the lock.

``make_engine`` plugs ``connect`` in through the adapter's ``async_creator_fn`` connect
argument, so SQLAlchemy still builds the ``sqlite3.connect`` arguments from the URL.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from threading import Thread
from typing import Any

import aiosqlite

__all__ = ["BUSY_TIMEOUT", "connect"]

#: Seconds a statement waits for a lock another process holds (the ``timeout`` default).
BUSY_TIMEOUT = 30.0

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
        """Run one statement; if another process holds the lock, wait and try again."""
        connection = self._connection
        waited = 0.0
        delay = 0.001
        while True:
            try:
                return await self._go(sqlite3.Cursor.execute, sql, parameters)
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or waited >= connection.busy_timeout:
                    raise
            started = time.monotonic()
            await asyncio.sleep(delay)
            waited += time.monotonic() - started
            delay = min(delay * 2, 0.05)

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> _Cursor:
        """Run one statement for each set of parameters (never tried again: see above)."""
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
    """An aiosqlite connection whose statements run on the event loop's thread."""

    #: Seconds a statement waits for a lock held by another process.
    busy_timeout = BUSY_TIMEOUT

    async def trip(self, function: Callable[..., Any], *args: Any) -> Any:
        """Call ``function(*args)`` (here: a statement takes less than a thread switch)."""
        return function(*args)

    def cursor(self) -> _Cursor:  # type: ignore[override]
        """A cursor (a ``sqlite3`` one is made only while a statement runs)."""
        return _Cursor(self)

    async def commit(self) -> None:
        """Commit the transaction, if one is open."""
        if self._conn.in_transaction:
            await self.trip(self._conn.commit)

    async def rollback(self) -> None:
        """Roll the transaction back, if one is open."""
        if self._conn.in_transaction:
            await self.trip(self._conn.rollback)


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused because another connection holds a lock (SQLITE_BUSY)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool((code & 0xFF) == sqlite3.SQLITE_BUSY)
    return "database is locked" in str(exc)


def connect(database: str, **kwargs: Any) -> aiosqlite.Connection:
    """Open a connection as ``aiosqlite.connect`` does; awaiting it connects.

    ``timeout`` (seconds) is how long a statement waits for another process's lock; SQLite
    itself is given none, so that it never sleeps on the event loop's thread.
    """
    budget = float(kwargs.pop("timeout", BUSY_TIMEOUT))
    kwargs["timeout"] = 0
    kwargs["check_same_thread"] = False  # opened on the connection's thread, used on the loop's

    def connector() -> sqlite3.Connection:
        opened: sqlite3.Connection = sqlite3.connect(database, **kwargs)
        return opened

    connection: _Connection = _Connection(connector, 64)
    connection.busy_timeout = budget
    # As SQLAlchemy does for aiosqlite: a forgotten connection must not keep the process alive.
    thread = connection if isinstance(connection, Thread) else connection._thread
    thread.daemon = True
    return connection

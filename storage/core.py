"""The message path's hot statements: Core statements in a session's transaction, skipping
the ORM, and on PostgreSQL single statements sent to the driver alone (``fetch_alone``).

An ORM-enabled statement (``update(Model)``, ``session.add`` and a flush) costs about twice
the Python of the same statement run on the table; the message path runs a dozen per update.
The statements built once here carry bind parameters, so SQLAlchemy neither rebuilds them nor
recomputes their cache keys. They do not touch objects loaded in the session: the functions
using them say what they keep in step by hand.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from sqlalchemy import CursorResult, Executable, Table, TextClause, bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session
from sqlmodel.ext.asyncio.session import AsyncSession

_T = TypeVar("_T")

__all__ = ["Alone", "fetch_alone", "insert_rows", "json_text", "run", "table"]


def json_text(value: Any) -> str:
    """A JSON column's text, as the engines write it: Cyrillic kept readable, not escaped."""
    return json.dumps(value, ensure_ascii=False)


class Alone:
    """Statements run by ``fetch_alone`` in this process (they bypass SQLAlchemy's events;
    the benchmark counts them with the message path's)."""

    statements: ClassVar[int] = 0


def _rowcount(result: CursorResult[Any]) -> int:
    return result.rowcount


def table(model: Any) -> Table:
    """The table behind a SQLModel class."""
    found: Table = model.__table__
    return found


async def run(
    session: AsyncSession,
    statement: Executable,
    params: dict[str, Any] | list[dict[str, Any]] | None = None,
    take: Callable[[CursorResult[Any]], _T] = _rowcount,  # type: ignore[assignment]
) -> _T:
    """Run ``statement`` on the session's connection, in its transaction; return ``take`` of
    its result (by default the row count). A list of ``params`` runs it for each (one
    statement: an INSERT becomes one multi-row INSERT).

    Changes pending in the session are flushed first, so the statement sees them. It all
    runs in one switch to SQLAlchemy's synchronous side.
    """

    def go(sync: Session) -> _T:
        if sync.new or sync.dirty or sync.deleted:
            sync.flush()
        return take(sync.connection().execute(statement, params))

    return await session.run_sync(go)


async def fetch_alone(engine: AsyncEngine, statement: str, *args: Any) -> list[Any]:
    """Run one statement of this package alone (autocommit) on the driver of a connection
    from ``engine``'s pool, and return its rows (PostgreSQL: asyncpg's ``$n`` parameters).

    For the message path's one-statement reads and records: about a third of the CPU of the
    same statement in a session (and a sixth of one in a transaction of its own), as
    SQLAlchemy's session and execution are skipped. The connection goes back to the pool
    with nothing open; one that failed other than by the server's refusing the statement
    (dropped, timed out, cancelled half way) is discarded, as SQLAlchemy discards one, so a
    broken connection does not go round the pool.
    """
    Alone.statements += 1
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver: Any = raw.driver_connection
        try:
            rows: list[Any] = await driver.fetch(statement, *args)
        except BaseException as exc:
            if getattr(exc, "sqlstate", None) is None or driver.is_closed():
                # Not the server refusing the statement: the connection's state is unknown.
                await asyncio.shield(connection.invalidate())
            raise
        return rows


def insert_rows(
    into: Table, rows: Sequence[Mapping[str, Any]], *, suffix: str = ""
) -> tuple[TextClause, dict[str, Any]]:
    """One multi-row INSERT of ``rows`` (all with the same columns) into ``into``, followed by
    ``suffix`` (``ON CONFLICT ...``, ``RETURNING ...``), and its parameters.

    SQLAlchemy does not cache a multi-row ``insert().values([...])``: it compiled the
    statement again for every batch. This one is built once per table, columns, row count
    and suffix, and its parameters are typed by the table's columns.
    """
    columns = tuple(rows[0])
    statement = _insert_rows(into, columns, len(rows), suffix)
    params = {f"{name}_{n}": row[name] for n, row in enumerate(rows) for name in columns}
    return statement, params


@functools.lru_cache(maxsize=256)
def _insert_rows(into: Table, columns: tuple[str, ...], count: int, suffix: str) -> TextClause:
    values = ", ".join(
        "(" + ", ".join(f":{name}_{n}" for name in columns) + ")" for n in range(count)
    )
    statement = text(f"INSERT INTO {into.name} ({', '.join(columns)}) VALUES {values} {suffix}")
    return statement.bindparams(
        *(
            bindparam(f"{name}_{n}", type_=into.c[name].type)
            for n in range(count)
            for name in columns
        )
    )

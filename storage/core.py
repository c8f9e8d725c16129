"""Core statements in a session's transaction: the message path's hot statements skip the ORM.

An ORM-enabled statement (``update(Model)``, ``session.add`` and a flush) costs about twice
the Python of the same statement run on the table; the message path runs a dozen per update.
The statements built once here carry bind parameters, so SQLAlchemy neither rebuilds them nor
recomputes their cache keys. They do not touch objects loaded in the session: the functions
using them say what they keep in step by hand.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import CursorResult, Executable, Table, TextClause, bindparam, text
from sqlalchemy.orm import Session
from sqlmodel.ext.asyncio.session import AsyncSession

_T = TypeVar("_T")

__all__ = ["insert_rows", "run", "table"]


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

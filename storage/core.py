"""Core statements in a session's transaction: the message path's hot statements skip the ORM.

An ORM-enabled statement (``update(Model)``, ``session.add`` and a flush) costs about twice
the Python of the same statement run on the table; the message path runs a dozen per update.
The statements built once here carry bind parameters, so SQLAlchemy neither rebuilds them nor
recomputes their cache keys. They do not touch objects loaded in the session: the functions
using them say what they keep in step by hand.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import CursorResult, Executable, Table
from sqlmodel.ext.asyncio.session import AsyncSession

__all__ = ["run", "table"]


def table(model: Any) -> Table:
    """The table behind a SQLModel class."""
    found: Table = model.__table__
    return found


async def run(
    session: AsyncSession, statement: Executable, params: dict[str, Any] | None = None
) -> CursorResult[Any]:
    """Run ``statement`` on the session's connection, in its transaction.

    Changes pending in the session are flushed first, so the statement sees them.
    """
    if session.new or session.dirty or session.deleted:
        await session.flush()
    connection = await session.connection()
    return await connection.execute(statement, params)

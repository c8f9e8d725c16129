"""The message path's hot statements: Core statements in a session's transaction, skipping
the ORM; on PostgreSQL, single statements sent to the driver alone (``fetch_alone``) and a
client's step's statements sent to the driver inside the session's transaction
(``fetch_in``); on SQLite, the writes of every update marked ``direct`` run by ``run`` on the
driver inside the session's transaction.

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
import re
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from sqlalchemy import CursorResult, Executable, Table, TextClause, bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session
from sqlmodel.ext.asyncio.session import AsyncSession

_T = TypeVar("_T")

__all__ = [
    "Alone",
    "InTransaction",
    "direct",
    "drop_writes",
    "fetch_alone",
    "fetch_in",
    "hold_writes",
    "insert_rows",
    "json_text",
    "last_id",
    "on_driver",
    "release_writes",
    "run",
    "shifted",
    "table",
]


def shifted(statement: str, by: int) -> str:
    """A driver statement's ``$n`` parameters renumbered ``$(n + by)``: to embed it in a
    larger statement whose first parameters are its own."""
    return re.sub(r"\$(\d+)", lambda match: f"${int(match[1]) + by}", statement)


def json_text(value: Any) -> str:
    """A JSON column's text, as the engines write it: Cyrillic kept readable, not escaped."""
    return json.dumps(value, ensure_ascii=False)


class Alone:
    """Statements run by ``fetch_alone`` in this process (they bypass SQLAlchemy's events;
    the benchmark counts them with the message path's)."""

    statements: ClassVar[int] = 0


class InTransaction:
    """Statements run by ``fetch_in`` in this process, and who hears of each (they bypass
    SQLAlchemy's events: the benchmark listens here with ``listeners``, given the sync
    connection, whose ``info`` its commit event sees, and the statement)."""

    statements: ClassVar[int] = 0
    listeners: ClassVar[list[Callable[[Any, str], None]]] = []


def _rowcount(result: CursorResult[Any]) -> int:
    return result.rowcount


def last_id(result: CursorResult[Any]) -> int:
    """``run``'s ``take`` for an INSERT: the id of the (last) row it inserted (SQLite)."""
    return int(result.lastrowid)


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

    Changes pending in the session are flushed first (and writes held, ``hold_writes``), so
    the statement sees them. It all runs in one switch to SQLAlchemy's synchronous side, or
    on SQLite, for a statement marked ``direct`` run for its row count or its last id, on
    the driver.
    """
    await _write_held(session)
    direct_take = take is _rowcount or take is last_id
    if direct_take and isinstance(params, dict) and statement in _DIRECT:
        found = await _run_direct(session, statement, params, take is last_id)
        if found is not None:
            return found  # type: ignore[return-value]

    def go(sync: Session) -> _T:
        if sync.new or sync.dirty or sync.deleted:
            sync.flush()
        return take(sync.connection().execute(statement, params))

    return await session.run_sync(go)


#: Statements marked ``direct`` (built once, at import), and their SQLite form once compiled.
_DIRECT: weakref.WeakKeyDictionary[
    Executable, tuple[str, tuple[str, ...], dict[str, Any], Any] | None
] = weakref.WeakKeyDictionary()  # (weak: statements built once per shape may be dropped)

_E = TypeVar("_E", bound=Executable)


def direct(statement: _E) -> _E:
    """Mark ``statement`` (a Core UPDATE or INSERT built once, its values given, or a text
    statement) to be run, on SQLite, by ``run`` straight on the driver inside the session's
    transaction: about half the CPU of SQLAlchemy's execution, for the writes of every update
    (the claim of an update, the record of a call). Only its row count or last id is
    returned (``run``'s default ``take``, or ``last_id``). A statement whose
    execution needs more than its parameters (column defaults computed in Python, RETURNING),
    or that is no UPDATE or INSERT, runs through SQLAlchemy as before. Its values must be
    given (``.values(...)``): without them SQLAlchemy would write the columns its parameters
    name, and this form would write every column."""
    if not isinstance(statement, TextClause) and not getattr(statement, "_values", None):
        raise ValueError("a direct statement must give its values")
    _DIRECT[statement] = None
    return statement


async def _run_direct(
    session: AsyncSession, statement: Executable, params: dict[str, Any], want_id: bool
) -> int | None:
    """``statement`` with ``params`` on the session's SQLite connection, in its transaction
    (begun, with the write lock, as for any statement); its row count, or with ``want_id``
    the id of the last row it inserted. None: not on SQLite, or not a statement that can go
    to the driver as it is."""
    bind = session.get_bind()
    if bind.dialect.name != "sqlite":
        return None
    compiled = _DIRECT[statement]
    if compiled is None:
        compiled = _DIRECT[statement] = _compile_direct(statement, bind.dialect)
    sql, names, processors, form = compiled
    if not sql:
        return None
    if session.new or session.dirty or session.deleted:
        await session.flush()
    connection = await _sqlite_connection_of(session)
    values = form.construct_params(params, _check=True)
    args = [
        processors[name](values[name]) if name in processors else values[name] for name in names
    ]
    sync, cursor = connection[0].sync_connection, connection[1].cursor()
    try:
        # the engine's own statement events, as for any statement it runs (logging, counts)
        sync.dispatch.before_cursor_execute(sync, cursor, sql, args, None, False)
        cursor.execute(sql, args)
        sync.dispatch.after_cursor_execute(sync, cursor, sql, args, None, False)
        return int(cursor.lastrowid if want_id else cursor.rowcount)
    finally:
        cursor.close()


def _compile_direct(
    statement: Executable, dialect: Any
) -> tuple[str, tuple[str, ...], dict[str, Any], Any]:
    """The SQLite text of ``statement``, its parameter names in order, their processors and
    the compiled form; an empty text if it must run through SQLAlchemy."""
    form: Any = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
    if (
        not (form.isupdate or form.isinsert or isinstance(statement, TextClause))
        or form.insert_prefetch
        or form.update_prefetch
        or form.effective_returning
        or not form.positiontup
        or any(p.expanding for p in form.binds.values())
    ):
        return "", (), {}, form
    processors = dict(form._bind_processors)  # noqa: SLF001 - the types' own converters
    return form.string, tuple(form.positiontup), processors, form


async def _sqlite_connection_of(session: AsyncSession) -> tuple[Any, Any]:
    """The session's connection in its current transaction (begun: BEGIN IMMEDIATE and the
    write lock, by the engine's events) and its ``sqlite3`` connection; kept in the session
    until the transaction changes."""
    kept = _kept(session)
    if kept is not None:
        return kept
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    adapted: Any = raw.driver_connection  # storage.sqlitedriver's connection
    return _keep(session, connection, adapted._conn)  # noqa: SLF001 - its sqlite3 connection


def _kept(session: AsyncSession) -> tuple[Any, Any] | None:
    """The connection and driver kept in the session for its current transaction, if any."""
    sync = session.sync_session
    transaction = sync.get_nested_transaction() or sync.get_transaction()
    kept = session.info.get(_DRIVER)
    if transaction is not None and kept is not None and kept[0] is transaction:
        return kept[1], kept[2]
    return None


def _keep(session: AsyncSession, connection: Any, driver: Any) -> tuple[Any, Any]:
    """Keep ``connection`` and ``driver`` in the session for its current transaction."""
    sync = session.sync_session
    transaction = sync.get_nested_transaction() or sync.get_transaction()
    session.info[_DRIVER] = (transaction, connection, driver)
    return connection, driver


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
        return await _fetch(connection, raw.driver_connection, statement, args)


async def _fetch(connection: Any, driver: Any, statement: str, args: Sequence[Any]) -> list[Any]:
    """``statement``'s rows from ``driver``, the driver of ``connection``; a connection that
    failed other than by the server's refusing the statement is discarded."""
    try:
        rows: list[Any] = await driver.fetch(statement, *args)
    except BaseException as exc:
        if getattr(exc, "sqlstate", None) is None or driver.is_closed():
            # Not the server refusing the statement: the connection's state is unknown.
            await asyncio.shield(connection.invalidate())
        raise
    return rows


def on_driver(session: AsyncSession) -> bool:
    """Whether ``fetch_in`` runs on the session's database (PostgreSQL)."""
    return session.get_bind().dialect.name == "postgresql"


async def fetch_in(
    session: AsyncSession, statement: str, *args: Any, held: bool = False, absorb: bool = False
) -> list[Any]:
    """Run one statement of this package in the session's open transaction, sent to the
    asyncpg driver of its connection, and return its rows (PostgreSQL only: ``on_driver``).

    For the hot statements of a client's step: about a third of the CPU of the same statement
    through the session, whose execution, result and greenlet switch are skipped. It is the
    session's own transaction (begun on the driver here if no statement began it yet), so the
    statement commits or rolls back with the rest. Objects pending in the session are flushed
    first, so the statement sees them; objects loaded in it do not see the statement's
    changes (the callers keep them in step by hand, as with ``run``).

    ``held``: a write whose rows nobody needs, which may wait while the session holds writes
    (``hold_writes``): it then returns no rows and goes with a later statement, in the same
    transaction. ``absorb``: the statement may take the writes waiting as parts of itself
    (data-modifying ``WITH`` queries: one round trip for all), which the caller vouches is
    safe because it reads none of the rows they change; any other statement runs after them.
    """
    waiting = session.info.get(_HELD)
    if held and waiting is not None and session.sync_session.get_nested_transaction() is None:
        waiting.append((statement, args))
        return []  # (inside a savepoint it is sent at once: it must go if the savepoint goes)
    if absorb:
        statement, args = _with(_take_held(session), statement, args)
    else:
        await _write_held(session)
    if session.new or session.dirty or session.deleted:
        await session.flush()
    connection, driver = await _driver_of(session)
    InTransaction.statements += 1
    for listener in InTransaction.listeners:
        listener(connection.sync_connection, statement)
    return await _fetch(connection, driver, statement, args)


def hold_writes(session: AsyncSession) -> None:
    """Until ``release_writes``, the writes of ``fetch_in(..., held=True)`` wait for the next
    driver statement of the session's transaction (the one that absorbs them, or the one
    ``release_writes`` runs before the commit). The holder must release them before it
    commits and must not read the rows they change, other than by ``fetch_in``/``run``."""
    session.info[_HELD] = []


async def release_writes(session: AsyncSession) -> None:
    """Run the writes held (one statement) and hold no more."""
    await _write_held(session)
    session.info.pop(_HELD, None)


def _take_held(session: AsyncSession) -> list[tuple[str, tuple[Any, ...]]]:
    """The writes held, which the caller now runs."""
    waiting = session.info.get(_HELD)
    if not waiting:
        return []
    if session.sync_session.get_nested_transaction() is not None:
        # A savepoint rolled back would take them with it, though they came before it.
        raise RuntimeError("writes held before a savepoint must be released before it")
    writes, waiting[:] = list(waiting), []
    return writes


async def _write_held(session: AsyncSession) -> None:
    """Run the writes held, if any, as one statement."""
    writes = _take_held(session)
    if writes:
        statement, args = _with(writes, "SELECT 1", ())
        await fetch_in(session, statement, *args)


def drop_writes(session: AsyncSession) -> None:
    """Forget the writes held (their transaction rolled back) and hold no more."""
    session.info.pop(_HELD, None)


def _with(
    writes: Sequence[tuple[str, tuple[Any, ...]]], statement: str, args: tuple[Any, ...]
) -> tuple[str, tuple[Any, ...]]:
    """``statement`` with ``writes`` as data-modifying ``WITH`` queries before it (their
    parameters numbered after its own)."""
    if not writes:
        return statement, args
    parts, params = [], list(args)
    for n, (write, write_args) in enumerate(writes):
        parts.append(f"held_{n} AS ({shifted(write, len(params)).strip()})")
        params.extend(write_args)
    body = statement.strip()
    if body[:5].upper() == "WITH ":
        return f"WITH {', '.join(parts)}, {body[5:]}", tuple(params)
    return f"WITH {', '.join(parts)}\n{body}", tuple(params)


_HELD = "storage.core.held"


async def _driver_of(session: AsyncSession) -> tuple[Any, Any]:
    """The session's connection in its current transaction (a savepoint's, inside one) and
    that connection's asyncpg driver, its transaction begun; kept in the session until the
    transaction (or savepoint) changes."""
    kept = _kept(session)
    if kept is not None:
        return kept
    # Asking the session for its connection also emits the SAVEPOINT of a savepoint begun
    # since the last statement.
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    adapted: Any = raw.dbapi_connection
    # SQLAlchemy's asyncpg adapter begins its transaction with the first statement it runs;
    # this one may be the first, so it begins it the adapter's way, and the session's commit
    # or rollback then ends it.
    if adapted._transaction is None:  # noqa: SLF001 - no public way to begin it
        try:
            await adapted._start_transaction()  # noqa: SLF001
        except BaseException:
            # Cancelled or failed with BEGIN in flight: the server may be in a transaction
            # the adapter does not know of, which no rollback would end.
            await asyncio.shield(connection.invalidate())
            raise
    return _keep(session, connection, raw.driver_connection)


_DRIVER = "storage.core.driver"


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
    return direct(
        statement.bindparams(
            *(
                bindparam(f"{name}_{n}", type_=into.c[name].type)
                for n in range(count)
                for name in columns
            )
        )
    )

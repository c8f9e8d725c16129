"""Engines, sessions and migrations: everything that starts from a database URL.

SQLite notes. ``make_engine`` turns on foreign keys, WAL with ``synchronous=NORMAL`` (a commit
is durable once the WAL is checkpointed; a power cut may lose the last commits, never corrupt
the file) and secure delete (erased rows are overwritten) for every connection, and takes
transaction control away from the ``sqlite3`` driver (which would otherwise not BEGIN before
SELECT or DDL, breaking SAVEPOINTs and transactional migrations): SQLAlchemy emits the BEGIN
itself. Its connections run each statement on the event loop's thread, and wait for locks
other processes hold with asyncio, up to 30 s (``storage.sqlitedriver``).

Writes: a session of ``make_sessionmaker(engine)`` begins with ``BEGIN IMMEDIATE``, after
waiting for the engine's write lock (asyncio futures in queues): writers of one process take turns
first come, first served, instead of polling for SQLite's lock (which is not fair). The lock
is released right after COMMIT or ROLLBACK. Writers in other processes meet on SQLite's lock,
which the driver polls without blocking the event loop. No write transaction should wait on the
network, and a task must not open a second write transaction while it holds one (it would
wait for itself until the 30 s timeout).

A session of ``make_sessionmaker(engine, first=True)`` (or ``ahead_of(sessionmaker)``) waits
for the lock ahead of the others: it is for short writes something outside waits for
(recording that Telegram took a message: until it is recorded, a crash would send it again;
storing an update Telegram is waiting to have confirmed).

Reads: a session of ``make_sessionmaker(engine, read_only=True)`` begins with a plain
(deferred) BEGIN under ``PRAGMA query_only``: it takes no lock, reads the last committed state
while a writer is busy, and fails at once if it tries to write. On PostgreSQL it is a READ
ONLY transaction. A session of ``make_sessionmaker(engine, lone=True)`` is for fixed reads of
one statement each (the lanes looking for work): on PostgreSQL each statement runs alone in
autocommit, one round trip instead of three. Otherwise the ``AUTOCOMMIT`` isolation level must
not be used with these engines (on SQLite it would bypass the write lock).

PostgreSQL notes. The pool keeps ``POOL_SIZE`` connections open and opens up to
``POOL_OVERFLOW`` more for a burst: with SQLAlchemy's default of 5 kept, the lanes' bursts
opened and closed a connection (a server process, authentication, every statement prepared
again) for one transaction in fifteen under a flood. A pooled connection is checked (pinged)
before use only when it has been idle for ``PING_AFTER_IDLE`` seconds (as HikariCP's "alive
bypass window"): SQLAlchemy's ``pool_pre_ping`` costs three round trips (BEGIN, a ping,
ROLLBACK) on every checkout, as many as a short transaction's own, and under load every round
trip waits for a turn of a busy event loop. A connection that fails the check is replaced;
one that broke within the window fails its statement, and SQLAlchemy then replaces every
connection older than the failure (the work is tried again: a receipt is answered 500 and
posted again, a lane is swept again).
"""

from __future__ import annotations

import asyncio
import sys
import time
import weakref
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.util import await_only
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.sqltypes import AutoString

import storage.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from storage import sqlitedriver
from storage.core import json_text
from storage.errors import DatabaseURLError, MigrationError
from storage.sqltypes import AwareDateTime

__all__ = [
    "DEFAULT_DATABASE_URL",
    "HEAD",
    "MIGRATIONS_DIR",
    "ahead_of",
    "context_options",
    "make_engine",
    "make_sessionmaker",
    "migrate",
    "normalize_url",
    "pending_changes",
    "truncate_wal",
    "upgrade",
    "upgrade_apart",
]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/intake.db"

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: The newest migration (tests check it is the head of ``MIGRATIONS_DIR``); a database at
#: this revision is up to date without loading alembic.
HEAD = "0006"

_ASYNC_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
_MIGRATION_LOCK = 0x1A7A4E  # any constant bigint, the same in every process
_SQLITE_PRAGMAS = (
    "PRAGMA foreign_keys=ON",
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    # SQLite must not sleep on the event loop's thread: the driver waits for other processes'
    # locks itself, with asyncio (``storage.sqlitedriver``).
    "PRAGMA busy_timeout=0",
    # Deleted rows are overwritten with zeros, so erased personal data do not linger in
    # the file's free pages (/forget, retention).
    "PRAGMA secure_delete=ON",
)
#: Seconds a write transaction waits for the engine's write lock, as long as the busy timeout.
WRITE_LOCK_TIMEOUT = 30.0
#: PostgreSQL connections a process keeps open, and how many more it may open for a burst
#: (several processes on one server: keep their sum under its ``max_connections``).
POOL_SIZE = 15
POOL_OVERFLOW = 5
#: Seconds a pooled PostgreSQL connection may have been idle and still be used unchecked.
PING_AFTER_IDLE = 1.0
#: Execution option of the engine behind read-only sessions.
_READ_ONLY = "intake_read_only"
#: Connection option of sessions whose writes wait ahead of the others on SQLite.
_FIRST = "intake_write_first"
#: Keys in a pooled connection's ``info``.
_HOLDS_WRITE_LOCK = "intake_write_lock"
_QUERY_ONLY = "intake_query_only"
_LAST_USED = "intake_last_used"


def normalize_url(url: str) -> str:
    """Return ``url`` with the async driver this project uses for its backend.

    ``sqlite://`` becomes ``sqlite+aiosqlite://``; ``postgresql://`` and the ``postgres://``
    that hosting providers hand out become ``postgresql+asyncpg://``. A URL that already names
    a driver keeps it. Any other backend raises ``DatabaseURLError``.
    """
    scheme, separator, rest = url.strip().partition("://")
    if not separator:
        raise DatabaseURLError("not a database URL: expected 'scheme://...'")
    backend, _, driver = scheme.lower().partition("+")
    if backend == "postgres":
        backend = "postgresql"
    if backend not in _ASYNC_DRIVERS:
        # Only the scheme goes into the message: the rest may hold a password.
        raise DatabaseURLError(f"unsupported database {scheme!r}: use sqlite or postgresql")
    return f"{backend}+{driver or _ASYNC_DRIVERS[backend]}://{rest}"


def make_engine(
    url: str, *, pool_size: int = POOL_SIZE, pool_overflow: int = POOL_OVERFLOW
) -> AsyncEngine:
    """Create an async engine for ``url`` (normalized first), ready for this project's schema:
    keeping up to ``pool_size`` connections open and opening ``pool_overflow`` more for a
    burst (a SQLite file, PostgreSQL).

    For a SQLite file the parent directory is created if missing.
    """
    url = normalize_url(url)
    parsed = make_url(url)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    options: dict[str, Any] = {}
    if is_sqlite:
        _ensure_sqlite_directory(url)
        if parsed.get_driver_name() == "aiosqlite":
            options["connect_args"] = {"async_creator_fn": sqlitedriver.connect}
        if _file_database(parsed):
            # SQLAlchemy keeps 5 file connections; the lanes' bursts opened (a thread, the
            # file, the pragmas) and closed one for one transaction in seven.
            options.update(pool_size=pool_size, max_overflow=pool_overflow)
    else:
        options.update(pool_size=pool_size, max_overflow=pool_overflow)
    engine = create_async_engine(url, json_serializer=json_text, **options)
    if is_sqlite:
        writer = _SQLiteWriter()
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        event.listen(engine.sync_engine, "begin", writer.begin)
        event.listen(engine.sync_engine, "commit", writer.commit)
        event.listen(engine.sync_engine, "rollback", writer.rollback)
        # A connection closed or invalidated mid-transaction (a cancelled task) must not keep
        # the lock.
        event.listen(engine.sync_engine.pool, "checkin", writer.checkin)
        event.listen(engine.sync_engine.pool, "invalidate", writer.invalidate)
    else:
        pinger = _IdlePing(engine.sync_engine.dialect)
        event.listen(engine.sync_engine.pool, "connect", pinger.used)
        event.listen(engine.sync_engine.pool, "checkin", pinger.used)
        event.listen(engine.sync_engine.pool, "checkout", pinger.checkout)
    return engine


def make_sessionmaker(
    engine: AsyncEngine, *, read_only: bool = False, first: bool = False, lone: bool = False
) -> async_sessionmaker[AsyncSession]:
    """Return the session factory for ``engine``; objects stay usable after commit.

    With ``read_only`` the sessions are for transactions that only read: they do not queue
    behind writers on SQLite, and any write in them fails; with ``first`` their write
    transactions wait ahead of the others on SQLite (see the module's notes). With ``lone``
    they are for reads that are one statement each (a single statement sees one consistent
    state on its own): on PostgreSQL each runs alone in autocommit, one round trip instead of
    three (BEGIN READ ONLY, the statement, COMMIT), and nothing refuses a write, so only fixed
    reads of this package may use them; on SQLite they are ``read_only`` sessions.
    """
    bind = engine
    if lone and engine.dialect.name == "postgresql":
        bind = engine.execution_options(isolation_level="AUTOCOMMIT")
    elif read_only or lone:
        bind = engine.execution_options(**{_READ_ONLY: True}, postgresql_readonly=True)
    elif first:
        bind = engine.execution_options(**{_FIRST: True})
    return async_sessionmaker(bind, class_=AsyncSession, expire_on_commit=False)


def ahead_of(sessionmaker: async_sessionmaker[AsyncSession]) -> async_sessionmaker[AsyncSession]:
    """``sessionmaker``'s sessions, their write transactions waiting ahead of the others on
    SQLite (for short writes something outside waits for: see the module's notes)."""
    bind = sessionmaker.kw.get("bind")
    if not isinstance(bind, AsyncEngine):
        return sessionmaker
    return make_sessionmaker(bind, first=True)


async def upgrade(engine: AsyncEngine) -> None:
    """Apply every migration up to head, in one transaction, on a connection of ``engine``.

    Processes starting together are serialized on PostgreSQL (see ``migrate``). Within one
    process, do not run it concurrently: alembic keeps its migration context in a global.
    """
    async with engine.connect() as connection:
        await connection.run_sync(migrate, _upgrade_to_head)


async def upgrade_apart(engine: AsyncEngine) -> None:
    """As ``upgrade``, but when there is something to migrate, alembic runs in a child process.

    A long-running process (the bot) then never loads alembic, which would keep about 13 MB
    of its memory until it stops: on its first start, and on every start that brings a
    migration. The child gets the URL on its standard input (not its command line, which
    other users of the machine can read); its error output becomes the ``MigrationError``.
    """
    async with engine.connect() as connection:
        current = await connection.run_sync(_current_revision)
    if current == HEAD:
        return
    if engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"):
        await upgrade(engine)  # another process would see a database of its own
        return
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "storage.migrate",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    url = engine.url.render_as_string(hide_password=False)
    _, errors = await child.communicate(url.encode())
    if child.returncode != 0:
        lines = errors.decode(errors="replace").strip().splitlines()
        raise MigrationError(
            f"migrating the database failed (exit {child.returncode}): "
            + (lines[-1] if lines else "no error output")
        )


async def truncate_wal(engine: AsyncEngine) -> None:
    """On SQLite, fold the write-ahead log into the file and empty it; elsewhere nothing.

    The log keeps old page images (with data since deleted) until it is reused; truncating it
    makes an erasure final. Best effort: with readers active SQLite does what it can.
    """
    if engine.dialect.name != "sqlite":
        return
    async with engine.connect() as connection:
        # A checkpoint does not wait for readers or writers by itself (no busy timeout): a
        # few tries, a moment apart, while they finish.
        for _ in range(_CHECKPOINT_TRIES):
            busy = await connection.run_sync(_driver_fetch, "PRAGMA wal_checkpoint(TRUNCATE)")
            if not busy or not busy[0][0]:
                return
            await asyncio.sleep(0.05)


_CHECKPOINT_TRIES = 40


async def pending_changes(engine: AsyncEngine) -> list[Any]:
    """Return alembic's autogenerate diff between the database and the models.

    An empty list means the migrations applied to the database match ``SQLModel.metadata``.
    """
    async with engine.connect() as connection:
        return await connection.run_sync(_compare_with_models)


def context_options(dialect_name: str) -> dict[str, Any]:
    """Options for alembic's migration context, shared by ``env.py`` and ``pending_changes``."""
    return {
        "target_metadata": SQLModel.metadata,
        "render_as_batch": dialect_name == "sqlite",
        "compare_type": True,
        "render_item": _render_item,
    }


def migrate(connection: Connection, run: Callable[[Connection], None]) -> None:
    """Call ``run(connection)`` in a transaction that is committed only if it succeeds.

    On PostgreSQL, an advisory lock makes concurrent callers wait for each other. On SQLite,
    foreign keys are switched off meanwhile: alembic's batch mode recreates a
    table by copying it and dropping the original, and with foreign keys on that DROP would
    cascade-delete every dependent row. They are checked before committing instead.
    """
    is_sqlite = connection.dialect.name == "sqlite"
    if is_sqlite:
        # The pragma is ignored inside a transaction, so it goes straight to the driver.
        _driver_execute(connection, "PRAGMA foreign_keys=OFF")
    try:
        with connection.begin():
            if connection.dialect.name == "postgresql":
                # Processes starting together migrate one after the other, not in a race.
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
            run(connection)
            if is_sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                if broken:
                    tables = sorted({str(row[0]) for row in broken})
                    raise MigrationError(f"migration left broken foreign keys in {tables}")
    finally:
        if is_sqlite:
            _driver_execute(connection, "PRAGMA foreign_keys=ON")


def _upgrade_to_head(connection: Connection) -> None:
    if _current_revision(connection) == HEAD:
        return
    # alembic is loaded only when there is something to migrate (it costs a running bot
    # about 10 MB of memory otherwise).
    from alembic import command
    from alembic.config import Config

    config = Config()
    # Config values go through configparser interpolation, hence the doubled '%'.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _compare_with_models(connection: Connection) -> list[Any]:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(connection, opts=context_options(connection.dialect.name))
    return list(compare_metadata(context, SQLModel.metadata))


def _current_revision(connection: Connection) -> str | None:
    """The revision the database is at (None for an empty database), without alembic."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Render our column types as plain ``sa`` types, so migrations import nothing of ours."""
    if type_ == "type" and isinstance(obj, AwareDateTime):
        return "sa.DateTime(timezone=True)"
    if type_ == "type" and isinstance(obj, AutoString):
        length = getattr(obj.impl, "length", None)
        return f"sa.String(length={length})" if length else "sa.String()"
    return False


def _file_database(url: URL) -> bool:
    """Whether a SQLite URL names a file (SQLAlchemy pools only those; as its dialect decides)."""
    return url.database not in (None, "", ":memory:") and url.query.get("mode") != "memory"


def _ensure_sqlite_directory(url: str) -> None:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    Path(database).parent.mkdir(parents=True, exist_ok=True)


def _on_sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    # Stop the driver from managing transactions; _SQLiteWriter.begin emits BEGIN instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


class _IdlePing:
    """Checks a pooled connection before use if it has been idle ``PING_AFTER_IDLE`` seconds."""

    def __init__(self, dialect: Any) -> None:
        self._dialect = dialect

    def used(self, dbapi_connection: Any, connection_record: Any) -> None:
        connection_record.info[_LAST_USED] = time.monotonic()

    def checkout(self, dbapi_connection: Any, connection_record: Any, proxy: Any) -> None:
        last = connection_record.info.get(_LAST_USED)
        if last is not None and time.monotonic() - last < PING_AFTER_IDLE:
            return
        try:
            self._dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool closes this connection and checks out another (up to three times).
            raise DisconnectionError("the pooled connection failed its check") from exc
        connection_record.info[_LAST_USED] = time.monotonic()


class _SQLiteWriter:
    """One engine's write lock: write transactions of one process, first come, first served.

    The lock is taken in the ``begin`` event, before ``BEGIN IMMEDIATE``, and given back right
    after the transaction ends: this class runs COMMIT and ROLLBACK itself, then releases,
    leaving the driver's own commit or rollback nothing to do. The events run in SQLAlchemy's
    greenlet inside the event loop, so ``await_only`` can wait there for the lock.
    """

    def __init__(self) -> None:
        # One lock per event loop: a future belongs to the loop it was made in.
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _TurnLock] = (
            weakref.WeakKeyDictionary()
        )

    def begin(self, connection: Connection) -> None:
        info = connection.info
        if connection.get_execution_options().get(_READ_ONLY):
            if not info.get(_QUERY_ONLY):
                _driver_execute(connection, "PRAGMA query_only=ON")
                info[_QUERY_ONLY] = True
            _driver_execute(connection, "BEGIN")
            return
        if info.get(_QUERY_ONLY):
            _driver_execute(connection, "PRAGMA query_only=OFF")
            info[_QUERY_ONLY] = False
        lock = self._lock()
        first = bool(connection.get_execution_options().get(_FIRST))
        try:
            if not lock.take_free():  # (free: taken at once, without a task or a loop turn)
                await_only(asyncio.wait_for(lock.acquire(first=first), WRITE_LOCK_TIMEOUT))
        except TimeoutError:
            raise OperationalError(
                "BEGIN IMMEDIATE",
                None,
                RuntimeError(f"waited {WRITE_LOCK_TIMEOUT:.0f} s for the SQLite write lock"),
            ) from None
        info[_HOLDS_WRITE_LOCK] = lock
        try:
            _driver_execute(connection, "BEGIN IMMEDIATE")
        except BaseException:
            _release(info)
            raise

    def commit(self, connection: Connection) -> None:
        self._end(connection, "COMMIT")

    def rollback(self, connection: Connection) -> None:
        self._end(connection, "ROLLBACK")

    def checkin(self, dbapi_connection: Any, connection_record: Any) -> None:
        _release(connection_record.info)

    def invalidate(self, dbapi_connection: Any, connection_record: Any, exception: Any) -> None:
        _release(connection_record.info)

    def _end(self, connection: Connection, sql: str) -> None:
        if _HOLDS_WRITE_LOCK not in connection.info:
            return  # a read, or nothing begun: the driver ends it
        try:
            _driver_execute(connection, sql)
        finally:
            _release(connection.info)

    def _lock(self) -> _TurnLock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = _TurnLock()
        return lock


class _TurnLock:
    """A lock taken in turn, first come, first served, except that waiters marked ``first``
    go ahead of the others."""

    def __init__(self) -> None:
        self._held = False
        self._first: deque[asyncio.Future[None]] = deque()
        self._others: deque[asyncio.Future[None]] = deque()

    def take_free(self) -> bool:
        """Take the lock if it is free and nobody waits for it; whether it was taken."""
        if self._held or self._first or self._others:
            return False
        self._held = True
        return True

    async def acquire(self, *, first: bool = False) -> None:
        if self.take_free():
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (self._first if first else self._others).append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # handed over just as the wait was given up: pass it on
            raise  # (a cancelled turn stays queued; ``release`` skips it)

    def release(self) -> None:
        for queue in (self._first, self._others):
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)  # the lock passes to it, still held
                    return
        self._held = False


def _release(info: dict[Any, Any]) -> None:
    lock = info.pop(_HOLDS_WRITE_LOCK, None)
    if lock is not None:
        lock.release()


def _driver_fetch(connection: Connection, sql: str) -> list[Any]:
    """Run ``sql`` as ``_driver_execute`` does; return its rows."""
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _driver_execute(connection: Connection, sql: str) -> None:
    """Run ``sql`` on the DBAPI connection, outside any transaction SQLAlchemy would begin."""
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql)
    finally:
        cursor.close()

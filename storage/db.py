"""Engines, sessions and migrations: everything that starts from a database URL.

SQLite notes. ``make_engine`` turns on foreign keys, WAL, a busy timeout and secure delete
for every connection, and takes transaction control away from the ``sqlite3`` driver (which would
otherwise not BEGIN before SELECT or DDL, breaking SAVEPOINTs and transactional migrations):
SQLAlchemy emits ``BEGIN IMMEDIATE`` itself, so concurrent writers queue on the busy timeout
rather than fail. The price is that the ``AUTOCOMMIT`` isolation level must not be used with
these engines, and that no transaction should wait on the network.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.sqltypes import AutoString

import storage.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from storage.errors import DatabaseURLError, MigrationError
from storage.sqltypes import AwareDateTime

__all__ = [
    "DEFAULT_DATABASE_URL",
    "MIGRATIONS_DIR",
    "context_options",
    "make_engine",
    "make_sessionmaker",
    "migrate",
    "normalize_url",
    "pending_changes",
    "truncate_wal",
    "upgrade",
]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/intake.db"

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

_ASYNC_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
_MIGRATION_LOCK = 0x1A7A4E  # any constant bigint, the same in every process
_SQLITE_PRAGMAS = (
    "PRAGMA foreign_keys=ON",
    "PRAGMA journal_mode=WAL",
    "PRAGMA busy_timeout=30000",
    # Deleted rows are overwritten with zeros, so erased personal data do not linger in
    # the file's free pages (/forget, retention).
    "PRAGMA secure_delete=ON",
)


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


def make_engine(url: str) -> AsyncEngine:
    """Create an async engine for ``url`` (normalized first), ready for this project's schema.

    For a SQLite file the parent directory is created if missing.
    """
    url = normalize_url(url)
    is_sqlite = make_url(url).get_backend_name() == "sqlite"
    if is_sqlite:
        _ensure_sqlite_directory(url)
    engine = create_async_engine(
        url,
        json_serializer=_json_dumps,
        pool_pre_ping=not is_sqlite,
    )
    if is_sqlite:
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        event.listen(engine.sync_engine, "begin", _on_sqlite_begin)
    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Return the session factory for ``engine``; objects stay usable after commit."""
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


async def upgrade(engine: AsyncEngine) -> None:
    """Apply every migration up to head, in one transaction, on a connection of ``engine``.

    Processes starting together are serialized on PostgreSQL (see ``migrate``). Within one
    process, do not run it concurrently: alembic keeps its migration context in a global.
    """
    async with engine.connect() as connection:
        await connection.run_sync(migrate, _upgrade_to_head)


async def truncate_wal(engine: AsyncEngine) -> None:
    """On SQLite, fold the write-ahead log into the file and empty it; elsewhere nothing.

    The log keeps old page images (with data since deleted) until it is reused; truncating it
    makes an erasure final. Best effort: with readers active SQLite does what it can.
    """
    if engine.dialect.name != "sqlite":
        return
    async with engine.connect() as connection:
        await connection.run_sync(_driver_execute, "PRAGMA wal_checkpoint(TRUNCATE)")


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
    config = Config()
    # Config values go through configparser interpolation, hence the doubled '%'.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _compare_with_models(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts=context_options(connection.dialect.name))
    return list(compare_metadata(context, SQLModel.metadata))


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    """Render our column types as plain ``sa`` types, so migrations import nothing of ours."""
    if type_ == "type" and isinstance(obj, AwareDateTime):
        return "sa.DateTime(timezone=True)"
    if type_ == "type" and isinstance(obj, AutoString):
        length = getattr(obj.impl, "length", None)
        return f"sa.String(length={length})" if length else "sa.String()"
    return False


def _ensure_sqlite_directory(url: str) -> None:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    Path(database).parent.mkdir(parents=True, exist_ok=True)


def _json_dumps(value: Any) -> str:
    # Keep Cyrillic readable in the database instead of \u escapes.
    return json.dumps(value, ensure_ascii=False)


def _on_sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    # Stop the driver from managing transactions; _on_sqlite_begin emits BEGIN instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _on_sqlite_begin(connection: Connection) -> None:
    # IMMEDIATE takes the write lock at the start: a transaction that reads, then writes,
    # waits (busy_timeout) for another writer instead of failing with "database is locked"
    # when that writer commits in between. Callers keep transactions short and free of I/O.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _driver_execute(connection: Connection, sql: str) -> None:
    """Run ``sql`` on the DBAPI connection, outside any transaction SQLAlchemy would begin."""
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql)
    finally:
        cursor.close()

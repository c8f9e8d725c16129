"""Engines, URLs and migrations."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, String, event, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

import storage.db
from storage import (
    DEFAULT_DATABASE_URL,
    AsyncSession,
    Client,
    DatabaseURLError,
    MigrationError,
    create_client,
    create_request,
    get_client,
    get_dialogue,
    make_engine,
    make_sessionmaker,
    normalize_url,
    pending_changes,
    save_dialogue,
    upgrade,
)
from storage.db import MIGRATIONS_DIR, _TurnLock, migrate
from tests.dbs import fresh_database
from tests.storage.factories import new_request

TABLES = {
    "clients",
    "dialogue_sessions",
    "consultation_requests",
    "request_events",
    "step_events",
    "relays",
    "flow_versions",
    "inbox",
    "outbox",
    "leases",
}


HEAD = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite:////abs/x.db", "sqlite+aiosqlite:////abs/x.db"),
        ("sqlite://", "sqlite+aiosqlite://"),
        ("sqlite+aiosqlite:///./data/intake.db", "sqlite+aiosqlite:///./data/intake.db"),
        ("postgresql://u:p%40ss@db:5432/intake", "postgresql+asyncpg://u:p%40ss@db:5432/intake"),
        ("postgres://u:p@db/intake?ssl=require", "postgresql+asyncpg://u:p@db/intake?ssl=require"),
        ("postgresql+asyncpg://u@db/intake", "postgresql+asyncpg://u@db/intake"),
        ("postgres+asyncpg://u@db/intake", "postgresql+asyncpg://u@db/intake"),
        ("  postgresql://u@db/intake\n", "postgresql+asyncpg://u@db/intake"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@pytest.mark.parametrize("url", ["mysql://u:secret@db/x", "intake.db", ""])
def test_normalize_url_refuses_other_databases_without_echoing_secrets(url: str) -> None:
    with pytest.raises(DatabaseURLError) as excinfo:
        normalize_url(url)
    assert "secret" not in str(excinfo.value)


def test_default_url_is_already_normal() -> None:
    assert normalize_url(DEFAULT_DATABASE_URL) == DEFAULT_DATABASE_URL


async def test_make_engine_creates_the_missing_parent_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert not (tmp_path / "data").exists()
    engine = make_engine("sqlite:///./data/intake.db")
    try:
        assert (tmp_path / "data").is_dir()
        await upgrade(engine)
        assert (tmp_path / "data" / "intake.db").is_file()
    finally:
        await engine.dispose()


async def test_make_engine_sets_sqlite_pragmas(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'nested' / 'deeper' / 'x.db'}")
    try:
        async with engine.connect() as connection:
            pragmas = {
                name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar_one()
                for name in ("foreign_keys", "journal_mode", "synchronous", "busy_timeout")
            }
    finally:
        await engine.dispose()
    normal = 1
    assert pragmas == {
        "foreign_keys": 1,
        "journal_mode": "wal",
        "synchronous": normal,
        # SQLite does not sleep on the event loop: the driver waits for other processes
        "busy_timeout": 0,
    }


async def test_a_sqlite_file_keeps_its_connections_between_bursts(tmp_path: Path) -> None:
    """Opening a SQLite connection costs a thread, the file and the pragmas: a burst of
    concurrent transactions (the lanes) reuses the connections the last burst opened."""
    engine = make_engine(f"sqlite:///{tmp_path / 'burst.db'}")
    opened: list[object] = []
    event.listen(engine.sync_engine, "connect", lambda dbapi, record: opened.append(dbapi))
    reads = make_sessionmaker(engine, read_only=True)
    both_in = asyncio.Barrier(12)

    async def read() -> None:
        async with reads() as session:
            await (await session.connection()).exec_driver_sql("SELECT 1")
            await both_in.wait()  # all twelve hold a connection at once

    try:
        await asyncio.wait_for(asyncio.gather(*(read() for _ in range(12))), NOT_FOREVER)
        first = len(opened)
        await asyncio.wait_for(asyncio.gather(*(read() for _ in range(12))), NOT_FOREVER)
    finally:
        await engine.dispose()
    assert first == 12
    assert len(opened) == first  # none closed in between, none opened again


async def test_make_engine_accepts_memory_sqlite() -> None:
    engine = make_engine("sqlite://")
    try:
        await upgrade(engine)
        assert await pending_changes(engine) == []
    finally:
        await engine.dispose()


async def _table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))


async def _version(engine: AsyncEngine) -> str:
    async with engine.connect() as connection:
        result = await connection.execute(text("SELECT version_num FROM alembic_version"))
        return str(result.scalar_one())


async def test_pending_changes_sees_an_unmigrated_database(engine: AsyncEngine) -> None:
    changes = await pending_changes(engine)
    added = {change[1].name for change in changes if change[0] == "add_table"}
    assert added == TABLES


async def test_upgrade_creates_the_tables_and_matches_the_models(engine: AsyncEngine) -> None:
    await upgrade(engine)
    assert await _table_names(engine) == TABLES | {"alembic_version"}
    assert await _version(engine) == HEAD
    assert await pending_changes(engine) == []


async def test_upgrade_twice_is_harmless(engine: AsyncEngine) -> None:
    await upgrade(engine)
    async with make_sessionmaker(engine)() as session, session.begin():
        client = await create_client(
            session=session, telegram_id=1, channel="telegram", language="ru"
        )
    await upgrade(engine)
    assert await _version(engine) == HEAD
    assert await pending_changes(engine) == []
    async with make_sessionmaker(engine)() as session:
        assert (await session.get(Client, client.id)) is not None


async def test_foreign_keys_are_enforced_after_upgrade(migrated_engine: AsyncEngine) -> None:
    # On SQLite, upgrade switches foreign keys off while migrating; they must come back on.
    async with make_sessionmaker(migrated_engine)() as session:
        with pytest.raises(IntegrityError):
            await save_dialogue(
                session=session, client_id=424242, flow_name="f", flow_version="1", state={}
            )


async def test_batch_recreation_of_clients_keeps_dependent_rows(tmp_path: Path) -> None:
    # Alembic's batch mode on SQLite copies a table and drops the original; with foreign keys
    # on, that DROP would cascade to every dialogue and request. ``migrate`` prevents it.
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        await upgrade(engine)
        async with make_sessionmaker(engine)() as session, session.begin():
            client = await create_client(
                session=session, telegram_id=7, channel="telegram", language="ru"
            )
            assert client.id is not None
            await save_dialogue(
                session=session, client_id=client.id, flow_name="f", flow_version="1", state={}
            )
            await create_request(session=session, request=new_request(client.id))

        def add_column_by_recreating(connection: Connection) -> None:
            operations = Operations(MigrationContext.configure(connection))
            with operations.batch_alter_table("clients", recreate="always") as batch:
                batch.add_column(Column("nickname", String(), nullable=True))

        async with engine.connect() as connection:
            await connection.run_sync(migrate, add_column_by_recreating)
            counts = [
                (await connection.exec_driver_sql(f"SELECT count(*) FROM {table}")).scalar_one()
                for table in ("clients", "dialogue_sessions", "consultation_requests")
            ]
            foreign_keys = (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar_one()
    finally:
        await engine.dispose()
    assert counts == [1, 1, 1]
    assert foreign_keys == 1


async def test_migrate_rolls_back_when_foreign_keys_break(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        await upgrade(engine)

        def orphan_a_dialogue(connection: Connection) -> None:
            connection.exec_driver_sql(
                "INSERT INTO dialogue_sessions (client_id, flow_name, flow_version, state,"
                " updated_at) VALUES (99, 'f', '1', '{}', '2024-01-01 00:00:00')"
            )

        async with engine.connect() as connection:
            with pytest.raises(MigrationError, match="dialogue_sessions"):
                await connection.run_sync(migrate, orphan_a_dialogue)
            rows = (
                await connection.exec_driver_sql("SELECT count(*) FROM dialogue_sessions")
            ).scalar_one()
    finally:
        await engine.dispose()
    assert rows == 0


async def test_concurrent_upgrades_on_postgres_wait_for_each_other(tmp_path: Path) -> None:
    async with fresh_database("postgresql", tmp_path) as url:
        engines = [make_engine(url) for _ in range(3)]
        try:
            # Separate engines stand in for separate processes; the advisory lock makes them
            # take turns (without it they deadlock, hence the timeout).
            await asyncio.wait_for(
                asyncio.gather(*(upgrade(engine) for engine in engines)), timeout=60
            )
            assert await _version(engines[0]) == HEAD
            assert await pending_changes(engines[0]) == []
        finally:
            for engine in engines:
                await engine.dispose()


async def test_a_pooled_postgres_connection_closed_by_the_server_is_replaced_before_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection idle past the check's window is checked, and replaced if it is gone."""
    monkeypatch.setattr(storage.db, "PING_AFTER_IDLE", 0.0)  # every connection is "idle"
    backend = text("SELECT pg_backend_pid()")
    async with fresh_database("postgresql", tmp_path) as url:
        engine, admin = make_engine(url), make_engine(url)
        try:
            async with engine.connect() as connection:
                pid = (await connection.execute(backend)).scalar_one()
            async with admin.connect() as connection:
                await connection.execute(text(f"SELECT pg_terminate_backend({int(pid)})"))
            async with engine.connect() as connection:
                assert (await connection.execute(backend)).scalar_one() != pid
        finally:
            await engine.dispose()
            await admin.dispose()


async def test_concurrent_read_then_write_transactions_queue_on_sqlite(tmp_path: Path) -> None:
    """Two clients' steps overlapping: the second waits for the first instead of failing."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'busy.db'}")
    try:
        await upgrade(engine)
        sessions = make_sessionmaker(engine)
        async with sessions() as session, session.begin():
            ids = []
            for _ in range(2):
                client = await create_client(
                    session=session, telegram_id=None, channel="terminal", language="ru"
                )
                assert client.id is not None
                ids.append(client.id)

        async def step(client_id: int) -> None:
            async with sessions() as session, session.begin():
                await get_dialogue(session=session, client_id=client_id)  # read…
                await asyncio.sleep(0.05)  # …while the other one reads and writes…
                await save_dialogue(  # …then write
                    session=session, client_id=client_id, flow_name="f", flow_version="v",
                    state={"n": client_id},
                )  # fmt: skip

        await asyncio.gather(*(step(i) for i in ids))
        async with sessions() as session:
            for client_id in ids:
                stored = await get_dialogue(session=session, client_id=client_id)
                assert stored is not None and stored.state == {"n": client_id}
    finally:
        await engine.dispose()


# A guard against a hang, not a timing assertion: a read that queues behind the write lock
# waits for SQLite's 30 s busy timeout or forever.
NOT_FOREVER = 20


async def _new_client(session: AsyncSession, telegram_id: int) -> None:
    await create_client(session=session, telegram_id=telegram_id, channel="telegram", language="ru")


async def test_a_read_does_not_wait_for_a_write_in_progress(migrated_engine: AsyncEngine) -> None:
    writes = make_sessionmaker(migrated_engine)
    reads = make_sessionmaker(migrated_engine, read_only=True)
    async with writes() as session, session.begin():
        await _new_client(session, 1)

    async def read() -> tuple[bool, bool]:
        async with reads() as session:
            first = await get_client(session=session, telegram_id=1)
            second = await get_client(session=session, telegram_id=2)
            return first is not None, second is not None

    async with writes() as writer, writer.begin():
        await _new_client(writer, 2)  # written, not committed: the write lock is held
        seen = await asyncio.wait_for(read(), NOT_FOREVER)
    assert seen == (True, False)  # the last committed state
    assert await asyncio.wait_for(read(), NOT_FOREVER) == (True, True)


async def test_a_lone_read_runs_on_its_own_and_leaves_the_connection_as_it_was(
    migrated_engine: AsyncEngine,
) -> None:
    """On PostgreSQL a lone read is one statement outside any transaction block (no BEGIN and
    COMMIT round trips); the pooled connection then runs ordinary transactions again. On
    SQLite it is a read-only session."""
    postgresql = migrated_engine.dialect.name == "postgresql"

    async def in_transaction(session: AsyncSession) -> bool:
        raw = await (await session.connection()).get_raw_connection()
        return bool(raw.driver_connection.is_in_transaction())  # type: ignore[union-attr]

    async with make_sessionmaker(migrated_engine, lone=True)() as session:
        assert await get_client(session=session, telegram_id=2) is None
        if postgresql:
            assert not await in_transaction(session)
        else:
            with pytest.raises(DBAPIError):
                await _new_client(session, 1)
    for _ in range(3):  # whichever pooled connection the lone read used
        async with make_sessionmaker(migrated_engine)() as session:
            await get_client(session=session, telegram_id=2)
            if postgresql:
                assert await in_transaction(session)
    async with make_sessionmaker(migrated_engine)() as session, session.begin():
        await _new_client(session, 2)
    async with make_sessionmaker(migrated_engine, lone=True)() as session:
        assert await get_client(session=session, telegram_id=2) is not None


async def test_a_read_only_session_refuses_to_write(migrated_engine: AsyncEngine) -> None:
    async with make_sessionmaker(migrated_engine, read_only=True)() as session:
        with pytest.raises(DBAPIError):
            await _new_client(session, 1)
    # ...and the connection it used writes again in an ordinary session.
    async with make_sessionmaker(migrated_engine)() as session, session.begin():
        await _new_client(session, 2)
        assert await get_client(session=session, telegram_id=2) is not None


async def test_failed_and_cancelled_writes_give_the_write_lock_back(
    migrated_engine: AsyncEngine,
) -> None:
    writes = make_sessionmaker(migrated_engine)
    with pytest.raises(RuntimeError):
        async with writes() as session, session.begin():
            await _new_client(session, 1)
            raise RuntimeError("the handler failed")

    holding = asyncio.Event()

    async def stuck() -> None:
        async with writes() as session, session.begin():
            await _new_client(session, 2)
            holding.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(stuck())
    await holding.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def write() -> None:
        async with writes() as session, session.begin():
            await _new_client(session, 3)

    await asyncio.wait_for(write(), NOT_FOREVER)
    async with make_sessionmaker(migrated_engine, read_only=True)() as session:
        found = [await get_client(session=session, telegram_id=n) for n in (1, 2, 3)]
    assert [client is not None for client in found] == [False, False, True]


def test_the_head_the_bot_checks_without_alembic_is_the_newest_migration() -> None:
    from storage import db

    assert db.HEAD == HEAD, "storage.db.HEAD must name the newest migration"


async def test_the_write_lock_serves_first_come_first_served_but_first_marked_ahead() -> None:
    """Writers take turns in the order they came, except that a waiter marked ``first`` (the
    record of a call Telegram took) goes ahead; a waiter that gave up loses its turn only."""
    lock = _TurnLock()
    order: list[str] = []

    async def writer(name: str, *, first: bool = False) -> None:
        await lock.acquire(first=first)
        order.append(name)
        await asyncio.sleep(0)
        lock.release()

    await lock.acquire()  # a step is writing
    tasks = [asyncio.create_task(writer(n)) for n in ("b", "c")]
    gave_up = asyncio.create_task(writer("x"))
    tasks.append(asyncio.create_task(writer("record", first=True)))
    tasks.append(asyncio.create_task(writer("d")))
    await asyncio.sleep(0)  # every task is now waiting in the queue
    gave_up.cancel()
    lock.release()
    await asyncio.wait_for(asyncio.gather(*tasks), NOT_FOREVER)
    assert order == ["record", "b", "c", "d"]
    await asyncio.wait_for(lock.acquire(), NOT_FOREVER)  # free again


async def test_first_marked_sessions_write_and_give_the_lock_back(
    migrated_engine: AsyncEngine,
) -> None:
    first = make_sessionmaker(migrated_engine, first=True)
    for telegram_id in (1, 2):
        async with first() as session, session.begin():
            await _new_client(session, telegram_id)
    async with make_sessionmaker(migrated_engine)() as session, session.begin():
        await _new_client(session, 3)
    async with make_sessionmaker(migrated_engine, read_only=True)() as session:
        found = [await get_client(session=session, telegram_id=n) for n in (1, 2, 3)]
    assert all(client is not None for client in found)

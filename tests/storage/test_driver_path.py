"""A client's step on PostgreSQL sends its hot statements to the driver inside the session's
transaction (``storage.core.fetch_in``): they must read and write what the session's
statements do, commit and roll back with the rest, see what the session has pending, keep the
client locked, and not hand a broken connection out again."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text as text_
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from storage import (
    AsyncSession,
    Claim,
    Client,
    StepEvent,
    claim_update,
    create_client,
    enqueue_calls,
    get_dialogue,
    hold_writes,
    make_engine,
    make_sessionmaker,
    read_turn,
    record_step,
    release_writes,
    save_dialogue,
    store_updates,
    utcnow,
)
from storage.core import InTransaction, fetch_alone, fetch_in, run
from storage.crud import _TURN

Sessions = async_sessionmaker[AsyncSession]


async def _client_with_dialogue(sessions: Sessions, telegram_id: int) -> int:
    async with sessions() as session, session.begin():
        client = await create_client(
            session=session, telegram_id=telegram_id, channel="telegram", language="ru"
        )
        assert client.id is not None
        await save_dialogue(
            session=session,
            client_id=client.id,
            flow_name="intake",
            flow_version="v1",
            state={"node": "pain", "имя": "Анна"},
            last_update_id=7,
        )
        return client.id


async def _write_step(
    session: AsyncSession, client_id: int, telegram_id: int, node: str, update_id: int
) -> None:
    """A step's reads and writes: the turn, the dialogue moved to ``node``, the step event."""
    turn = await read_turn(session=session, telegram_id=telegram_id, flow_name="intake")
    await save_dialogue(
        session=session,
        client_id=client_id,
        flow_name="intake",
        flow_version="v1",
        state={"node": node},
        last_update_id=update_id,
        stored=turn.dialogue,
    )
    await record_step(
        session=session, client_id=client_id, node=node, flow_version="v1", at=utcnow()
    )


async def test_a_step_rolled_back_leaves_nothing_and_one_committed_leaves_all(
    sessionmaker: Sessions,
) -> None:
    """The claim, the dialogue and the step event are written together or not at all, in
    whichever order the session's and the driver's statements come."""
    client_id = await _client_with_dialogue(sessionmaker, 501)
    async with sessionmaker() as session, session.begin():
        await store_updates(session=session, updates=[(90, 501, {"x": 1})], at=utcnow())

    async def step(fail: bool) -> None:
        async with sessionmaker() as session, session.begin():
            assert await claim_update(session=session, update_id=90, at=utcnow())
            await _write_step(session, client_id, 501, "next", 90)
            session.add(StepEvent(client_id=client_id, node="orm", flow_version="v1"))
            if fail:
                raise RuntimeError("crash before the commit")

    with pytest.raises(RuntimeError):
        await step(fail=True)
    async with sessionmaker() as session:
        dialogue = await get_dialogue(session=session, client_id=client_id)
        assert dialogue is not None and dialogue.state["node"] == "pain"
        assert dialogue.last_update_id == 7
        events = (await session.exec(text_("SELECT count(*) FROM step_events"))).one()  # type: ignore[call-overload]
        assert events[0] == 0
    await step(fail=False)
    async with sessionmaker() as session:
        dialogue = await get_dialogue(session=session, client_id=client_id)
        assert dialogue is not None and dialogue.state == {"node": "next"}
        assert dialogue.last_update_id == 90
        nodes = (await session.exec(text_("SELECT node FROM step_events ORDER BY node"))).all()  # type: ignore[call-overload]
        assert [row[0] for row in nodes] == ["next", "orm"]
    async with sessionmaker() as session, session.begin():
        assert not await claim_update(session=session, update_id=90, at=utcnow()), "once"


async def test_a_turn_sees_a_client_the_session_has_not_written_yet(
    sessionmaker: Sessions,
) -> None:
    async with sessionmaker() as session, session.begin():
        session.add(Client(telegram_id=777, channel="telegram", language="en"))
        turn = await read_turn(session=session, telegram_id=777, flow_name="intake")
        assert turn.client is not None and turn.client.language == "en"
        assert turn.dialogue is None and turn.active is None


async def test_a_turn_read_on_the_driver_is_the_sessions_turn(postgresql: AsyncEngine) -> None:
    """Every field of the client and their dialogue, Cyrillic, times and the active version
    read by the statement sent to the driver equal what the session's statement loads."""
    sessions = make_sessionmaker(postgresql)
    await _client_with_dialogue(sessions, 502)
    async with sessions() as session, session.begin():
        await session.exec(  # type: ignore[call-overload]
            text_(
                "INSERT INTO flow_versions (flow_name, number, checksum, yaml, author, note,"
                " active, created_at) VALUES ('intake', 1, 'abc', 'x', 'a', '', true, now())"
            )
        )
        # no field left at its default, so a field the statement forgot would show
        await session.exec(text_("UPDATE clients SET asking = true, source = 'ad'"))  # type: ignore[call-overload]
        await session.exec(text_("UPDATE dialogue_sessions SET prompt_message_id = 5"))  # type: ignore[call-overload]
    async with sessions() as session, session.begin():
        fast = await read_turn(session=session, telegram_id=502, flow_name="intake")
    async with sessions() as session, session.begin():
        params = {"turn_of": 502, "active_of": "intake"}
        client, dialogue, active = (await session.exec(_TURN, params=params)).one()  # type: ignore[call-overload]
    assert fast.client is not None and fast.dialogue is not None
    assert fast.client.model_dump() == client.model_dump()
    assert fast.dialogue.model_dump() == dialogue.model_dump()
    assert fast.dialogue.state == {"node": "pain", "имя": "Анна"}
    assert (fast.client.asking, fast.client.source, fast.dialogue.prompt_message_id) == (
        True,
        "ad",
        5,
    )
    assert fast.active == active == "abc"
    async with sessions() as session, session.begin():
        nobody = await read_turn(session=session, telegram_id=999, flow_name="intake")
    assert (nobody.client, nobody.dialogue, nobody.active) == (None, None, "abc")


async def test_a_turn_read_on_the_driver_keeps_the_client_locked(postgresql: AsyncEngine) -> None:
    """One client's steps run one at a time across processes: a second step's read waits
    for the first step's transaction."""
    sessions = make_sessionmaker(postgresql)
    await _client_with_dialogue(sessions, 503)
    async with sessions() as first, first.begin():
        await read_turn(session=first, telegram_id=503, flow_name="intake")
        async with sessions() as second, second.begin():
            await second.exec(text_("SET LOCAL lock_timeout = '200ms'"))  # type: ignore[call-overload]
            with pytest.raises(Exception, match="lock timeout"):
                await read_turn(session=second, telegram_id=503, flow_name="intake")


async def test_a_connection_broken_under_a_step_is_not_handed_out_again(
    postgresql: AsyncEngine,
) -> None:
    sessions = make_sessionmaker(postgresql)
    with pytest.raises(Exception, match="terminat"):
        async with sessions() as session, session.begin():
            [[pid]] = await fetch_in(session, "SELECT pg_backend_pid()")
            await fetch_in(session, "SELECT pg_terminate_backend(pg_backend_pid())")
    async with sessions() as session, session.begin():
        [[other]] = await fetch_in(session, "SELECT pg_backend_pid()")
        turn = await read_turn(session=session, telegram_id=1, flow_name="intake")
    assert other != pid
    assert turn.client is None, "the new connection works"


async def _scratch(engine: AsyncEngine) -> Sessions:
    sessions = make_sessionmaker(engine)
    async with sessions() as session, session.begin():
        await session.exec(text_("CREATE TABLE scratch (x integer)"))  # type: ignore[call-overload]
    return sessions


async def _scratch_rows(sessions: Sessions) -> list[int]:
    async with sessions() as session:
        rows = (await session.exec(text_("SELECT x FROM scratch ORDER BY x"))).all()  # type: ignore[call-overload]
    return [row[0] for row in rows]


async def test_a_savepoint_rolled_back_takes_its_driver_statements_with_it(
    postgresql: AsyncEngine,
) -> None:
    sessions = await _scratch(postgresql)
    async with sessions() as session, session.begin():
        await fetch_in(session, "INSERT INTO scratch VALUES (1)")
        with pytest.raises(RuntimeError):
            async with session.begin_nested():
                await fetch_in(session, "INSERT INTO scratch VALUES (2)")
                raise RuntimeError("undo the savepoint")
        await fetch_in(session, "INSERT INTO scratch VALUES (3)")
    assert await _scratch_rows(sessions) == [1, 3]


async def test_one_session_s_transactions_each_commit_or_roll_back_their_own(
    postgresql: AsyncEngine,
) -> None:
    sessions = await _scratch(postgresql)
    async with sessions() as session:
        async with session.begin():
            await fetch_in(session, "INSERT INTO scratch VALUES (1)")
        with pytest.raises(RuntimeError):
            async with session.begin():
                await fetch_in(session, "INSERT INTO scratch VALUES (2)")
                raise RuntimeError("roll back the second")
        async with session.begin():
            await fetch_in(session, "INSERT INTO scratch VALUES (3)")
    assert await _scratch_rows(sessions) == [1, 3]


async def test_a_step_cancelled_while_it_begins_leaves_no_connection_in_a_transaction(
    postgresql: AsyncEngine,
) -> None:
    """Stopping cancels steps wherever they are; one cancelled with its BEGIN on the way must
    not hand the pool a connection still in a transaction, whose later work would never be
    committed."""
    sessions = await _scratch(postgresql)
    async with sessions() as session:
        with pytest.raises(asyncio.CancelledError):
            async with session.begin():
                await session.connection()  # no statement yet: the first one begins
                step = asyncio.create_task(fetch_in(session, "INSERT INTO scratch VALUES (1)"))
                await asyncio.sleep(0)  # the task has sent BEGIN and waits for the answer
                step.cancel()
                await step
    for value in (2, 3, 4):  # later units of work, on whichever pooled connection
        async with sessions() as session, session.begin():
            await fetch_in(session, f"INSERT INTO scratch VALUES ({value})")
    # Seen from outside the pool: committed, and no connection left in a transaction.
    outside = make_engine(postgresql.url.render_as_string(hide_password=False))
    try:
        assert await _scratch_rows(make_sessionmaker(outside)) == [2, 3, 4]
        stuck = await fetch_alone(
            outside,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state LIKE 'idle in transaction%'",
        )
        assert stuck[0][0] == 0
    finally:
        await outside.dispose()


async def test_a_turn_read_with_its_claim_claims_once_and_reads_as_without(
    sessionmaker: Sessions,
) -> None:
    """``read_turn(claim=...)``: the update is claimed in the same statement (PostgreSQL) or
    just before (SQLite); a second claim of it fails; the turn read is the one without a
    claim, a client not yet known included."""
    client_id = await _client_with_dialogue(sessionmaker, 504)
    async with sessionmaker() as session, session.begin():
        await store_updates(
            session=session, updates=[(91, 504, {"x": 1}), (92, 505, {"y": 2})], at=utcnow()
        )
    async with sessionmaker() as session, session.begin():
        plain = await read_turn(session=session, telegram_id=504, flow_name="intake")
    async with sessionmaker() as session, session.begin():
        claimed = await read_turn(
            session=session, telegram_id=504, flow_name="intake", claim=Claim(91, utcnow())
        )
    assert claimed.claimed is True and plain.claimed is None
    assert claimed.client is not None and plain.client is not None
    assert claimed.client.model_dump() == plain.client.model_dump()
    assert claimed.dialogue is not None and plain.dialogue is not None
    assert claimed.dialogue.model_dump() == plain.dialogue.model_dump()
    assert claimed.client.id == client_id and claimed.active == plain.active
    async with sessionmaker() as session, session.begin():
        again = await read_turn(
            session=session, telegram_id=504, flow_name="intake", claim=Claim(91, utcnow())
        )
    assert again.claimed is False, "an update is claimed once"
    async with sessionmaker() as session, session.begin():
        nobody = await read_turn(
            session=session, telegram_id=505, flow_name="intake", claim=Claim(92, utcnow())
        )
    assert (nobody.client, nobody.dialogue, nobody.claimed) == (None, None, True)
    async with sessionmaker() as session:
        rows = (
            await session.exec(  # type: ignore[call-overload]
                text_("SELECT update_id, outcome FROM inbox ORDER BY update_id")
            )
        ).all()
    assert [tuple(row) for row in rows] == [(91, "done"), (92, "done")]


async def test_a_claim_in_a_turn_rolled_back_is_not_made(sessionmaker: Sessions) -> None:
    await _client_with_dialogue(sessionmaker, 506)
    async with sessionmaker() as session, session.begin():
        await store_updates(session=session, updates=[(93, 506, {})], at=utcnow())
    with pytest.raises(RuntimeError):
        async with sessionmaker() as session, session.begin():
            turn = await read_turn(
                session=session, telegram_id=506, flow_name="intake", claim=Claim(93, utcnow())
            )
            assert turn.claimed
            raise RuntimeError("crash before the commit")
    async with sessionmaker() as session, session.begin():
        assert await claim_update(session=session, update_id=93, at=utcnow())


async def _count(sessions: Sessions, sql: str) -> int:
    async with sessions() as session:
        return int((await session.exec(text_(sql))).one()[0])  # type: ignore[call-overload]


async def test_held_writes_go_with_the_statement_that_absorbs_them(
    postgresql: AsyncEngine,
) -> None:
    """Held writes (``hold_writes``) are not sent until a statement takes them: the outbox's
    INSERT absorbs them (one statement), and they commit or roll back with it."""
    sessions = make_sessionmaker(postgresql)
    client_id = await _client_with_dialogue(sessions, 507)

    async def step(fail: bool) -> int:
        async with sessions() as session, session.begin():
            hold_writes(session)
            before = InTransaction.statements
            await _write_step(session, client_id, 507, "held", 95)
            assert InTransaction.statements == before + 1, "only the read was sent"
            await enqueue_calls(
                session=session,
                calls=[{"lane": 507, "method": "sendMessage", "params": {"t": 1}, "bind": None}],
                at=utcnow(),
            )
            await release_writes(session)
            sent = InTransaction.statements - before
            if fail:
                raise RuntimeError("crash before the commit")
        return sent

    with pytest.raises(RuntimeError):
        await step(fail=True)
    assert await _count(sessions, "SELECT count(*) FROM step_events") == 0
    assert await _count(sessions, "SELECT count(*) FROM outbox") == 0
    assert await _count(sessions, "SELECT last_update_id FROM dialogue_sessions") == 7
    assert await step(fail=False) == 2, "the read, then the outbox INSERT with the writes"
    assert await _count(sessions, "SELECT count(*) FROM step_events WHERE node = 'held'") == 1
    assert await _count(sessions, "SELECT count(*) FROM outbox") == 1
    async with sessions() as session:
        dialogue = await get_dialogue(session=session, client_id=client_id)
    assert dialogue is not None and dialogue.state == {"node": "held"}
    assert dialogue.last_update_id == 95


async def test_held_writes_are_seen_by_any_later_statement_and_released_before_the_commit(
    postgresql: AsyncEngine,
) -> None:
    """A statement that does not absorb held writes runs after them (so it sees them), through
    the driver or the session alike; what nobody absorbed is written by ``release_writes``;
    a savepoint after held writes is refused rather than let a rollback take them."""
    sessions = make_sessionmaker(postgresql)
    client_id = await _client_with_dialogue(sessions, 508)
    async with sessions() as session, session.begin():
        hold_writes(session)
        await record_step(
            session=session, client_id=client_id, node="a", flow_version="v1", at=utcnow()
        )
        seen = await fetch_in(session, "SELECT count(*) FROM step_events WHERE node = 'a'")
        assert seen[0][0] == 1
        await record_step(
            session=session, client_id=client_id, node="b", flow_version="v1", at=utcnow()
        )
        through_session = await run(
            session,
            text_("SELECT count(*) FROM step_events WHERE node = 'b'"),
            take=lambda result: result.scalar(),
        )
        assert through_session == 1
        await record_step(
            session=session, client_id=client_id, node="c", flow_version="v1", at=utcnow()
        )
        await release_writes(session)
        await record_step(  # no longer held: written at once
            session=session, client_id=client_id, node="d", flow_version="v1", at=utcnow()
        )
    assert await _count(sessions, "SELECT count(*) FROM step_events") == 4
    async with sessions() as session, session.begin():
        hold_writes(session)
        with pytest.raises(RuntimeError, match="undone"):
            async with session.begin_nested():  # written inside it, so undone with it
                await record_step(
                    session=session, client_id=client_id, node="x", flow_version="v1", at=utcnow()
                )
                raise RuntimeError("undone")
        await release_writes(session)
    assert await _count(sessions, "SELECT count(*) FROM step_events") == 4
    with pytest.raises(RuntimeError, match="savepoint"):
        async with sessions() as session, session.begin():
            hold_writes(session)
            await record_step(
                session=session, client_id=client_id, node="e", flow_version="v1", at=utcnow()
            )
            async with session.begin_nested():
                await fetch_in(session, "SELECT 1")
    assert await _count(sessions, "SELECT count(*) FROM step_events") == 4


def test_a_direct_statement_must_give_its_values() -> None:
    # without them the driver's form would write every column of the table, where
    # SQLAlchemy writes only the columns a call's parameters name
    from sqlalchemy import update

    from storage.core import direct, table

    with pytest.raises(ValueError, match="must give its values"):
        direct(update(table(StepEvent)))
    statement = update(table(StepEvent)).values(node="x")
    assert direct(statement) is statement

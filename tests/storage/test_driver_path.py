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
    Client,
    StepEvent,
    claim_update,
    create_client,
    get_dialogue,
    make_engine,
    make_sessionmaker,
    read_turn,
    record_step,
    save_dialogue,
    store_updates,
    utcnow,
)
from storage.core import fetch_alone, fetch_in
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
            turn = await read_turn(session=session, telegram_id=501, flow_name="intake")
            await save_dialogue(
                session=session,
                client_id=client_id,
                flow_name="intake",
                flow_version="v1",
                state={"node": "next"},
                last_update_id=90,
                stored=turn.dialogue,
            )
            await record_step(
                session=session, client_id=client_id, node="next", flow_version="v1", at=utcnow()
            )
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

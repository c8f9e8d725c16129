"""Lane locks on PostgreSQL: a lane is locked by one connection at a time, "in" and "out" of
one chat apart, and the lanes of a connection that dies or closes are free at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import (
    LaneLocks,
    Made,
    OutboxMessage,
    create_client,
    enqueue_calls,
    get_dialogue,
    lock_key,
    make_engine,
    make_sessionmaker,
    next_calls,
    next_calls_held,
    next_updates,
    next_updates_held,
    record_call,
    record_calls_held,
    save_dialogue,
    store_updates,
    upgrade,
    utcnow,
)
from tests.dbs import connect_admin, fresh_database


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with fresh_database("postgresql", tmp_path) as url:
        engine = make_engine(url)
        try:
            yield engine
        finally:
            await engine.dispose()


async def until(condition: Callable[[], object], what: str, ceiling: float = 30.0) -> None:
    """Wait for ``condition`` (not for a gap): fail only if it has not come in ``ceiling``."""
    deadline = asyncio.get_running_loop().time() + ceiling
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


def test_a_lane_key_is_a_stable_64_bit_number_apart_for_in_and_out() -> None:
    assert lock_key("in:42") == lock_key("in:42")
    assert lock_key("in:42") != lock_key("out:42")
    assert all(-(2**63) <= lock_key(f"{d}:{c}") < 2**63 for d in ("in", "out") for c in (1, -1))
    # the documented hash, so that every release and process agrees on it
    assert lock_key("in:42") == -4180951457403278836


async def test_a_lane_is_locked_by_one_connection_at_a_time(engine: AsyncEngine) -> None:
    one = LaneLocks(engine=engine, label="one")
    two = LaneLocks(engine=engine, label="two")
    try:
        taken = await asyncio.gather(one.take(key="in:1"), two.take(key="in:1"))
        assert sorted(t is not None for t in taken) == [False, True], "one of two at once"
        holder, other = (one, two) if taken[0] is not None else (two, one)
        generation = taken[0] if taken[0] is not None else taken[1]
        assert generation is not None
        assert await other.take(key="in:1") is None
        assert await other.take(key="out:1") is not None, "the chat's outbox is another lane"
        assert holder.holds(generation)
        await holder.give(key="in:1", generation=generation)
        assert await other.take(key="in:1") is not None, "given back, taken at once"
        assert await holder.take(key="in:1") is None
    finally:
        await one.close()
        await two.close()


async def test_a_dead_connections_lanes_are_free_at_once(engine: AsyncEngine) -> None:
    """Its backend terminated (as when a process dies or the server drops it): the holder
    sees its locks are gone, another takes the lane without waiting for any timeout, and
    the holder connects again for its next lane."""
    one = LaneLocks(engine=engine, label="intake-test one")
    two = LaneLocks(engine=engine, label="intake-test two")
    admin = await connect_admin()
    try:
        held = await one.take(key="in:7")
        assert held is not None
        assert await two.take(key="in:7") is None
        database = engine.url.database
        ended = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'intake-test one' AND datname = $1",
            database,
        )
        assert ended == 1
        await until(lambda: not one.holds(held), "the holder sees its lock is gone")
        # the server frees it as the backend exits, at once: no timeout to wait for
        deadline = asyncio.get_running_loop().time() + 30.0
        while await two.take(key="in:7") is None:
            assert asyncio.get_running_loop().time() < deadline, "the other takes the lane"
            await asyncio.sleep(0.01)
        again = await one.take(key="in:8")
        assert again is not None and again != held, "connected again, a new generation"
        assert await one.take(key="in:7") is None, "the other has it now"
        await one.give(key="in:7", generation=held)  # of the dead connection: nothing to do
        third = LaneLocks(engine=engine, label="three")
        try:
            assert await third.take(key="in:7") is None, "still the other's"
        finally:
            await third.close()
    finally:
        await admin.close()
        await one.close()
        await two.close()


async def test_closing_frees_every_lane_before_it_returns(engine: AsyncEngine) -> None:
    one = LaneLocks(engine=engine, label="one")
    two = LaneLocks(engine=engine, label="two")
    try:
        assert await one.take(key="in:1") is not None
        assert await one.take(key="out:1") is not None
        await one.close()
        assert await two.take(key="in:1") is not None
        assert await two.take(key="out:1") is not None
        with pytest.raises(RuntimeError):
            await one.take(key="in:2")
    finally:
        await two.close()


async def test_a_lane_taken_twice_in_one_process_is_held_until_given_twice(
    engine: AsyncEngine,
) -> None:
    """As PostgreSQL counts a session's takes of one key (two lane keys whose hashes collide
    stay locked while either works)."""
    one = LaneLocks(engine=engine, label="one")
    two = LaneLocks(engine=engine, label="two")
    try:
        first = await one.take(key="in:1")
        second = await one.take(key="in:1")
        assert first is not None and first == second
        await one.give(key="in:1", generation=first)
        assert await two.take(key="in:1") is None
        await one.give(key="in:1", generation=first)
        assert await two.take(key="in:1") is not None
    finally:
        await one.close()
        await two.close()


async def test_a_lanes_reads_and_records_on_the_lock_connection_match_the_sessions(
    engine: AsyncEngine,
) -> None:
    """While a lane is held, its next updates and calls are read, and its calls recorded
    (with the client's keyboard), on the lock connection; the rows are those the session
    functions read and write, a call recorded before stays as it was, and with the lock gone
    nothing is read or written there."""
    await upgrade(engine)
    sessions = make_sessionmaker(engine)
    now = utcnow()
    async with sessions() as session, session.begin():
        client = await create_client(
            session=session, telegram_id=77, channel="telegram", language="ru"
        )
        assert client.id is not None
        await save_dialogue(
            session=session, client_id=client.id, flow_name="f", flow_version="1", state={}
        )
        await store_updates(
            session=session, updates=[(5, 77, {"text": "Анна"}), (4, 77, {}), (6, 8, {})], at=now
        )
        ids = await enqueue_calls(
            session=session,
            calls=[
                {"lane": 77, "method": "answerCallbackQuery", "params": {"a": 1}, "bind": None},
                {"lane": 77, "method": "sendMessage", "params": {"text": "Привет"},
                 "bind": {"prompt": client.id}},
                {"lane": 77, "method": "sendMessage", "params": {}, "bind": None},
                {"lane": 9, "method": "sendMessage", "params": {}, "bind": None},
            ],
            at=now,
        )  # fmt: skip
    locks = LaneLocks(engine=engine, label="reader")
    try:
        held = await locks.take(key="in:77")
        assert held is not None
        updates = await next_updates_held(locks=locks, generation=held, lane=77)
        async with sessions() as session:
            assert updates == await next_updates(session=session, lane=77)
        assert updates is not None and [u.update_id for u in updates] == [4, 5]
        assert updates[1].payload == {"text": "Анна"}
        calls = await next_calls_held(locks=locks, generation=held, lane=77)
        assert calls is not None and [c.id for c in calls] == ids[:3]
        assert calls[1].bind == {"prompt": client.id} and calls[1].params == {"text": "Привет"}

        async with sessions() as session, session.begin():
            assert await record_call(session=session, call_id=ids[0], at=now, message_id=1)
        made = [
            Made(ids[0], None, None, None),  # recorded before: left as it was
            Made(ids[1], 2**33, None, client.id),
            Made(ids[2], None, "refused: chat not found", None),
        ]
        recorded = await record_calls_held(locks=locks, generation=held, made=made, at=now)
        assert recorded is not None and sorted(recorded) == ids[1:3]
        async with sessions() as session:
            rows = {i: await session.get(OutboxMessage, i) for i in ids}
            dialogue = await get_dialogue(session=session, client_id=client.id)
            assert await next_calls(session=session, lane=77) == []
        assert dialogue is not None and dialogue.prompt_message_id == 2**33
        first, sent, refused, other = (rows[i] for i in ids)
        assert first is not None and first.message_id == 1
        assert sent is not None and sent.sent_at is not None and sent.params == {}
        assert refused is not None and refused.error == "refused: chat not found"
        assert other is not None and other.sent_at is None, "another chat's call is untouched"

        # One client's keyboard named twice in one record is a mistake of the caller.
        with pytest.raises(ValueError, match="twice"):
            await record_calls_held(
                locks=locks,
                generation=held,
                made=[Made(ids[3], 3, None, client.id), Made(ids[3], 4, None, client.id)],
                at=now,
            )
        await locks.give(key="in:77", generation=held)
        assert await next_updates_held(locks=locks, generation=held + 1, lane=77) is None
        await locks.close()
        assert await next_calls_held(locks=locks, generation=held, lane=77) is None
        gone = await record_calls_held(
            locks=locks, generation=held, made=[Made(ids[3], 3, None, None)], at=now
        )
        assert gone is None
        async with sessions() as session:
            still = await session.get(OutboxMessage, ids[3])
        assert still is not None and still.sent_at is None, "nothing written without the lock"
    finally:
        await locks.close()

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
    WaitingUpdate,
    claim_update,
    enqueue_calls,
    lock_key,
    make_engine,
    make_sessionmaker,
    store_updates,
    take_calls,
    take_updates,
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


async def test_a_lane_taken_with_its_read_returns_its_items_only_to_its_holder(
    engine: AsyncEngine,
) -> None:
    """``take_updates``/``take_calls`` lock a lane and read its waiting items in one round
    trip: the holder gets them in order (nothing done or sent, nothing of another chat);
    another connection gets neither the lock nor the items; once given back, the lane's
    items as its last holder left them are read by the next."""
    await upgrade(engine)
    sessions = make_sessionmaker(engine)
    async with sessions() as session, session.begin():
        await store_updates(
            session=session,
            updates=[(12, 7, {"b": 2}), (11, 7, {"a": "я"}), (13, 8, {"c": 3})],
            at=utcnow(),
        )
        await enqueue_calls(
            session=session,
            calls=[
                {"lane": 7, "method": "sendMessage", "params": {"n": 1}, "bind": None},
                {"lane": 7, "method": "editMessageText", "params": {"n": 2}, "bind": {"x": 1}},
            ],
            at=utcnow(),
        )
    one = LaneLocks(engine=engine, label="one")
    two = LaneLocks(engine=engine, label="two")
    try:
        held, updates = await take_updates(one, key="in:7", lane=7)
        assert held is not None
        assert updates == [WaitingUpdate(11, 7, {"a": "я"}), WaitingUpdate(12, 7, {"b": 2})]
        assert await take_updates(two, key="in:7", lane=7) == (None, [])
        async with sessions() as session, session.begin():
            await claim_update(session=session, update_id=11, at=utcnow())
        await one.give(key="in:7", generation=held)
        taken, left = await take_updates(two, key="in:7", lane=7)
        assert taken is not None and [u.update_id for u in left] == [12]
        empty, none = await take_updates(one, key="in:9", lane=9)
        assert empty is not None and none == [], "a lane with nothing waiting is still taken"
        got, calls = await take_calls(one, key="out:7", lane=7)
        assert got is not None
        assert [(c.method, c.params, c.bind) for c in calls] == [
            ("sendMessage", {"n": 1}, None),
            ("editMessageText", {"n": 2}, {"x": 1}),
        ]
        assert await take_calls(two, key="out:7", lane=7) == (None, [])
    finally:
        await one.close()
        await two.close()


async def test_a_lock_given_back_soon_goes_with_the_next_take_or_on_its_own(
    engine: AsyncEngine,
) -> None:
    """``give(soon=True)`` returns at once: the unlock rides with the connection's next take
    (no round trip of its own), or goes alone within moments when no take comes; a take of
    the same lane in that statement keeps it; a lock given soon on a connection that then
    dies is never unlocked on the next connection (which may hold that lane again)."""
    await upgrade(engine)
    one = LaneLocks(engine=engine, label="one")
    two = LaneLocks(engine=engine, label="two")
    try:
        first = await one.take(key="in:1")
        assert first is not None
        before = LaneLocks.statements
        await one.give(key="in:1", generation=first, soon=True)
        assert LaneLocks.statements == before, "no round trip of its own yet"
        assert await one.take(key="in:2") is not None
        assert LaneLocks.statements == before + 1, "the unlock went with the take"
        assert await two.take(key="in:1") is not None, "given back by that take"

        second, items = await take_updates(one, key="in:3", lane=3)
        assert second is not None and items == []
        await one.give(key="in:3", generation=second, soon=True)
        again, _ = await take_updates(one, key="in:3", lane=3)  # unlocked, then taken
        assert again is not None
        assert await two.take(key="in:3") is None, "taken again in the same statement"
        await one.give(key="in:3", generation=again, soon=True)
        deadline = asyncio.get_running_loop().time() + 30.0
        while await two.take(key="in:3") is None:  # no take on ``one``: it goes alone
            assert asyncio.get_running_loop().time() < deadline, "unlocked on its own"
            await asyncio.sleep(0.01)

        held = await one.take(key="in:4")
        assert held is not None
        await one.give(key="in:4", generation=held, soon=True)
        one._lose()  # noqa: SLF001 - the connection dies before the unlock went
        retaken = await one.take(key="in:4")
        assert retaken is not None and retaken != held
        await asyncio.sleep(0.05)  # past GIVE_WAIT: nothing may unlock it now
        assert await two.take(key="in:4") is None, "the new connection keeps it"
    finally:
        await one.close()
        await two.close()

"""Lanes shared by two processes on PostgreSQL: a lane one works on is left alone by the
other until the holder's lock connection dies; then the other takes it at once, and the
holder finishes the item in hand but takes no more until it has the lane again.

Two lane workers with engines of their own stand for two processes; their work is kept in
memory (the same for both, as a shared inbox would be), so the test sees every batch each
one takes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.lanes import BATCH, LaneWorker
from storage import AsyncSession, make_engine, make_sessionmaker
from tests.dbs import connect_admin, fresh_database

Item = tuple[int, int]  # (lane, number)


class Chats(LaneWorker[Item]):
    """A lane worker over ``work`` (lane -> batches waiting, shared by the two workers)."""

    name = "in"

    def __init__(self, engine: AsyncEngine, owner: str, work: dict[int, int]) -> None:
        super().__init__(make_sessionmaker(engine), owner=owner, shared=True, tick=0.05)
        self.work = work
        self.taken: list[int] = []  # the lane of each batch handled
        self.gate = asyncio.Event()  # handle waits for it
        self.gate.set()
        self.inside = asyncio.Event()  # set when handle starts

    async def lanes(self, session: AsyncSession) -> list[int]:
        return [lane for lane, left in self.work.items() if left]

    async def batch(self, session: AsyncSession, lane: int) -> list[Item]:
        return [(lane, n) for n in range(BATCH)] if self.work.get(lane) else []

    async def handle(self, items: list[Item]) -> None:
        lane = items[0][0]
        self.taken.append(lane)
        self.work[lane] -= 1  # claimed (as a unit of work claims its update)
        self.inside.set()
        await self.gate.wait()


@pytest.fixture
async def engines(tmp_path: Path) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    async with fresh_database("postgresql", tmp_path) as url:
        one, two = make_engine(url), make_engine(url)
        try:
            yield one, two
        finally:
            await one.dispose()
            await two.dispose()


async def holding(worker: Chats, lane: int) -> None:
    """Start ``worker`` on ``lane`` and wait until it is inside its first batch, held there."""
    worker.gate.clear()
    worker.wake({lane})
    await asyncio.wait_for(worker.inside.wait(), 30)


async def until(condition: Callable[[], Any], what: str, ceiling: float = 30.0) -> None:
    """Wait for ``condition`` (not for a gap): fail only if it has not come in ``ceiling``."""
    deadline = asyncio.get_running_loop().time() + ceiling
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


async def test_a_lane_held_by_one_process_goes_to_the_other_when_its_holder_dies(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    work = {1: 5, 2: 1}
    one = Chats(engines[0], "one", work)
    two = Chats(engines[1], "two", work)
    admin = await connect_admin()
    try:
        await holding(one, 1)  # one holds lane 1, in its first batch
        assert one.working(1)
        two.wake({1, 2})
        await two.idle()
        assert two.taken == [2], "lane 1 is one's: two left it, and worked lane 2"
        assert one.locks is not None and two.locks is not None

        # one's lock connection dies (its backend terminated, as by a restart or a network
        # failure that the server noticed)
        ended = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'intake-bot in one' AND datname = $1",
            engines[0].url.database,
        )
        assert ended == 1
        locks = one.locks

        async def noticed() -> bool:
            return not locks.connected

        await until(noticed, "one sees its lock connection is gone")
        assert not one.working(1), "one's dispatcher or sender would stop before its next item"
        assert two.working(2) is False, "two holds no lane now"

        async def taken_over() -> bool:
            two.wake({1})
            await two.idle()
            return 1 in two.taken

        await until(taken_over, "two takes lane 1 without waiting for a timeout")
        assert two.taken == [2, 1, 1, 1, 1], "two worked the lane's other batches"

        one.gate.set()
        await one.idle()
        assert one.taken == [1], "one finished its batch in hand and took no other"
        assert work == {1: 0, 2: 0}

        # one connects again for its next lane (one two has not been refused, so two does
        # not try it again meanwhile)
        work[3] = 2
        one.wake({3})
        await one.idle()
        assert one.taken == [1, 3, 3]
        assert work[3] == 0 and locks.connected
    finally:
        await admin.close()
        await one.stop()
        await two.stop()


async def test_a_stopped_process_frees_its_lanes_at_once(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    work = {1: 3}
    one = Chats(engines[0], "one", work)
    two = Chats(engines[1], "two", work)
    try:
        await holding(one, 1)
        two.wake({1})
        await two.idle()
        assert two.taken == []
        stopping = asyncio.create_task(one.stop(grace=30))
        one.gate.set()
        await stopping
        assert one.taken == [1], "stopping, one finishes the batch in hand"
        two.wake({1})
        await two.idle()
        assert two.taken == [1, 1], "the lane was given back when one stopped"
    finally:
        await one.stop()
        await two.stop()


class OneAtATime(Chats):
    """Takes one item per batch: a lane that has done it ends without looking again."""

    async def batch(self, session: AsyncSession, lane: int) -> list[Item]:
        return [(lane, 0)] if self.work.get(lane) else []


async def test_work_stored_while_another_process_held_the_lane_is_done_when_it_lets_go(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    """Two stores an update for a chat while one works on it; one ends the lane without
    seeing it. Two tries the lane again shortly, instead of leaving the update to a sweep
    (none runs here)."""
    work = {1: 1}
    one = OneAtATime(engines[0], "one", work)
    two = OneAtATime(engines[1], "two", work)
    try:
        await holding(one, 1)
        work[1] += 1  # stored by two, which is woken for it
        two.wake({1})
        await two.idle()
        assert two.taken == [], "lane 1 is one's for now"
        one.gate.set()
        await one.idle()
        assert one.taken == [1], "one did its item and let go"

        async def done() -> bool:
            return two.taken == [1]

        await until(done, "two takes lane 1 once one has let go")
        assert work[1] == 0
    finally:
        await one.stop()
        await two.stop()

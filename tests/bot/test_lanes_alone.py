"""A lane worker alone on its database (SQLite) takes what its own process commits from
memory, but never at the price of an item skipped, done twice or done out of order.

The "database" here is a dict of the items waiting in each lane (id order is the lane's
order); ``store`` commits an item and ``hand`` gives it to the worker as the bot's own commits
do; ``store`` without ``hand`` is another process (the command line) writing behind its back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.lanes import BATCH, LaneWorker
from storage import AsyncSession, make_engine, make_sessionmaker

Item = tuple[int, int]  # (lane, id)


class Chats(LaneWorker[Item]):
    def __init__(
        self, engine: AsyncEngine, *, fail_on: int | None = None, shared: bool = False
    ) -> None:
        super().__init__(make_sessionmaker(engine), owner="t", shared=shared, tick=0.05)
        self.waiting: dict[int, set[int]] = {}  # lane -> ids stored and not done
        self.done: list[Item] = []
        self.handled: list[Item] = []  # every item handle was given, done before or not
        self.reads = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.inside = asyncio.Event()
        self.fail_on = fail_on
        self.before: Callable[[Item], None] = lambda item: None  # called as an item starts

    def store(self, lane: int, number: int) -> Item:
        self.waiting.setdefault(lane, set()).add(number)
        return lane, number

    async def lanes(self, session: AsyncSession) -> list[int]:
        return [lane for lane, ids in self.waiting.items() if ids]

    async def batch(self, session: AsyncSession, lane: int) -> list[Item]:
        self.reads += 1
        return [(lane, n) for n in sorted(self.waiting.get(lane, ()))[:BATCH]]

    def key(self, item: Item) -> tuple[int, int]:
        return item

    async def handle(self, items: list[Item]) -> None:
        for lane, number in items:
            self.handled.append((lane, number))
            self.before((lane, number))
            self.inside.set()
            await self.gate.wait()
            if number == self.fail_on:
                self.fail_on = None  # fails once, as a database that went away and came back
                raise RuntimeError("the database went away")
            if number in self.waiting.get(lane, set()):  # claimed once, as the inbox does
                self.waiting[lane].discard(number)
                self.done.append((lane, number))


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'lanes.db'}")
    try:
        yield engine
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def running(chats: Chats) -> AsyncIterator[Chats]:
    """The worker with its sweep running (as ``intake-bot run`` starts it)."""
    sweep = asyncio.create_task(chats.run())
    try:
        yield chats
    finally:
        await chats.stop()
        await asyncio.wait_for(sweep, 30)


async def until(condition: Callable[[], Any], what: str, ceiling: float = 30.0) -> None:
    """Wait for ``condition`` (not for a gap): fail only if it has not come in ``ceiling``."""
    deadline = asyncio.get_running_loop().time() + ceiling
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


async def knowing(chats: Chats, lane: int = 1) -> None:
    """Hand the worker the lane's first item and let it finish: from then on memory knows
    the lane (it was read to its end once)."""
    chats.hand([chats.store(lane, 1)])
    await chats.idle()


async def test_what_the_process_hands_over_is_done_in_order_without_reading_it_back(
    engine: AsyncEngine,
) -> None:
    chats = Chats(engine)
    async with running(chats):
        await knowing(chats)
        assert chats.done == [(1, 1)] and chats.reads == 1  # the first time, read to its end
        for number in range(2, 40):
            chats.hand([chats.store(1, number)])
        await chats.idle()
        assert chats.done == [(1, n) for n in range(1, 40)]
        assert chats.handled == chats.done
        assert chats.reads == 1


async def test_work_stored_by_another_process_in_a_known_lane_is_still_done_in_order(
    engine: AsyncEngine,
) -> None:
    chats = Chats(engine)
    async with running(chats):
        await knowing(chats)
        chats.store(1, 2)  # the command line, behind the bot's back: nobody hands it
        await until(lambda: (1, 2) in chats.done, "the sweep finds it")
        chats.store(1, 3)  # again; and then the bot's own next item is handed
        chats.hand([chats.store(1, 4)])
        await chats.idle()
        await until(lambda: len(chats.done) == 4, "all four done")
        assert chats.done == [(1, 1), (1, 2), (1, 3), (1, 4)] or chats.done == [
            (1, 1),
            (1, 2),
            (1, 4),
            (1, 3),
        ], chats.done
        assert not chats.waiting[1]


async def test_woken_without_the_items_the_lane_reads_them(engine: AsyncEngine) -> None:
    chats = Chats(engine)
    async with running(chats):
        await knowing(chats)
        chats.store(1, 2)
        chats.store(1, 3)
        chats.wake({1})  # committed here, but not handed (a job, the command line's sender)
        chats.hand([chats.store(1, 4)])
        await chats.idle()
        assert chats.done == [(1, 1), (1, 2), (1, 3), (1, 4)]


async def test_an_item_handed_after_a_newer_one_is_done_first_if_not_started(
    engine: AsyncEngine,
) -> None:
    """An older update id stored after a newer one (Telegram redelivering it): in memory it
    would go after; the lane reads the database instead, which has them in order."""
    chats = Chats(engine)
    async with running(chats):
        await knowing(chats)
        chats.gate.clear()
        chats.inside.clear()
        chats.hand([chats.store(1, 10)])
        await asyncio.wait_for(chats.inside.wait(), 30)  # held inside 10
        chats.hand([chats.store(1, 12)])
        chats.hand([chats.store(1, 11)])  # older than 12, which is waiting
        chats.gate.set()
        await chats.idle()
        assert chats.done == [(1, 1), (1, 10), (1, 11), (1, 12)]


@pytest.mark.parametrize("late", ["during the read", "after the read"])
async def test_an_item_committed_before_its_lane_reads_and_handed_late_is_done_once(
    engine: AsyncEngine, late: str
) -> None:
    """Committed before the read and handed during or after it: the read has it; memory
    must not give it to the lane a second time."""
    chats = Chats(engine)
    original = chats.batch

    async def read_then_hand(session: AsyncSession, lane: int) -> list[Item]:
        items = await original(session, lane)
        if (lane, 2) in items and late == "during the read":
            chats.hand([(lane, 2)])
        return items

    def hand_late(item: Item) -> None:
        if item == (1, 1) and late == "after the read":
            chats.hand([(1, 2)])

    async with running(chats):
        chats.batch = read_then_hand  # type: ignore[method-assign]
        chats.before = hand_late
        chats.store(1, 1)
        chats.store(1, 2)
        chats.wake({1})
        await chats.idle()
        chats.hand([chats.store(1, 3)])
        await chats.idle()
        assert chats.done == [(1, 1), (1, 2), (1, 3)]
        assert chats.handled == chats.done, "2 was given to handle once"
        assert chats.reads == 1


async def test_after_a_failure_the_lane_reads_the_database_before_newer_items(
    engine: AsyncEngine,
) -> None:
    """The items a failed batch left go before what is handed while the lane recovers."""
    chats = Chats(engine, fail_on=3)

    def hand_newer(item: Item) -> None:
        if item == (1, 3):
            chats.hand([chats.store(1, 5)])  # committed as 3 fails

    async with running(chats):
        for number in (1, 2):
            chats.hand([chats.store(1, number)])
        await chats.idle()
        chats.before = hand_newer
        chats.hand([chats.store(1, 3), chats.store(1, 4)])
        await until(lambda: len(chats.done) == 5, "3, 4 and 5 done after the failure")
        assert chats.done == [(1, n) for n in range(1, 6)]


async def test_more_than_a_batch_handed_at_once_is_all_done(engine: AsyncEngine) -> None:
    chats = Chats(engine)
    async with running(chats):
        chats.hand([chats.store(1, 0)])
        await chats.idle()
        chats.hand([chats.store(1, n) for n in range(1, 3 * BATCH + 2)])
        await chats.idle()
        assert chats.done == [(1, n) for n in range(0, 3 * BATCH + 2)]


async def test_a_shared_worker_never_takes_from_memory(engine: AsyncEngine) -> None:
    """Several processes on PostgreSQL: another may have stored work for the lane."""
    chats = Chats(engine, shared=True)
    async with running(chats):
        await knowing(chats)
        chats.hand([chats.store(1, 2)])
        await chats.idle()
        assert chats.done == [(1, 1), (1, 2)] and chats.reads == 2

"""The sender's group commit on SQLite: the records of several chats that come while one
batch is written go together; if a batch fails, each chat's records are written on their own,
so one chat's trouble leaves nobody else's calls unrecorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.sender import _GroupCommit
from storage import (
    AsyncSession,
    WaitingCall,
    enqueue_calls,
    make_engine,
    make_sessionmaker,
    upgrade,
    utcnow,
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'records.db'}")
    await upgrade(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


def call(lane: int) -> WaitingCall:
    return WaitingCall(lane, lane, "sendMessage", {}, None)


async def test_a_failing_chat_does_not_leave_the_others_unrecorded(engine: AsyncEngine) -> None:
    sessions = make_sessionmaker(engine)

    async def write_one(
        session: AsyncSession, made: WaitingCall, message_id: int | None, error: str | None
    ) -> None:
        if made.lane == 2:
            raise RuntimeError("this chat's record cannot be written")
        # a row that stands for the record (rolled back with its transaction)
        await enqueue_calls(session=session, calls=[made._asdict()], at=utcnow())

    group = _GroupCommit(sessions, write_one, grouped=True)
    async with sessions() as busy, busy.begin():  # the batch forms while the database is busy
        await busy.exec(text("SELECT 1"))  # type: ignore[call-overload]
        writes = [asyncio.create_task(group.write([(call(lane), 1, None)])) for lane in (1, 2, 3)]
        await asyncio.sleep(0)
    results = await asyncio.wait_for(asyncio.gather(*writes, return_exceptions=True), 20)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], RuntimeError), "the failing chat learns of its failure"
    await group.drain()
    async with sessions() as session:
        kept = (await session.exec(text("SELECT lane FROM outbox ORDER BY lane"))).all()  # type: ignore[call-overload]
    assert [row[0] for row in kept] == [1, 3], "each written once, the failing one not at all"

"""The message path's tables on both backends: receipt once, claim once,
a call recorded once, and nothing personal kept after processing."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker

from storage import (
    AsyncSession,
    InboxUpdate,
    OutboxMessage,
    claim_update,
    enqueue_call,
    enqueue_calls,
    inbox_lanes,
    next_calls,
    next_updates,
    outbox_lanes,
    pending_calls,
    pending_updates,
    prune_messaging,
    record_call,
    store_updates,
    utcnow,
)

Sessions = async_sessionmaker[AsyncSession]


async def test_an_update_is_stored_once_and_claimed_once(sessionmaker: Sessions) -> None:
    now = utcnow()
    async with sessionmaker() as session, session.begin():
        first = await store_updates(
            session=session, updates=[(7, 100, {"text": "Анна"}), (8, 100, {})], at=now
        )
        again = await store_updates(session=session, updates=[(7, 100, {"x": 1})], at=now)
    assert (first, again) == ([7, 8], [])
    async with sessionmaker() as session:
        assert await inbox_lanes(session=session) == [100]
        [oldest, _] = await next_updates(session=session, lane=100)
    assert oldest is not None and oldest.update_id == 7 and oldest.payload == {"text": "Анна"}
    async with sessionmaker() as session, session.begin():
        assert await claim_update(session=session, update_id=7, at=now)
        assert not await claim_update(session=session, update_id=7, at=now), "once"
    async with sessionmaker() as session:
        [left] = await next_updates(session=session, lane=100)
        assert left is not None and left.update_id == 8
        assert await pending_updates(session=session) == 1
    async with sessionmaker() as session:
        done = await session.get(InboxUpdate, 7)
        assert done is not None and done.payload == {}, "the client's text is not kept"


async def test_a_rolled_back_claim_leaves_the_update_waiting(sessionmaker: Sessions) -> None:
    async with sessionmaker() as session, session.begin():
        await store_updates(session=session, updates=[(9, 5, {})], at=utcnow())

    class Crash(Exception):
        pass

    try:
        async with sessionmaker() as session, session.begin():
            assert await claim_update(session=session, update_id=9, at=utcnow())
            raise Crash
    except Crash:
        pass
    async with sessionmaker() as session:
        assert await pending_updates(session=session) == 1


async def test_a_call_is_recorded_once_and_its_parameters_go(sessionmaker: Sessions) -> None:
    now = utcnow()
    async with sessionmaker() as session, session.begin():
        first = await enqueue_call(
            session=session, lane=42, method="sendMessage", params={"text": "Анна"}, at=now
        )
        second = await enqueue_call(
            session=session, lane=42, method="editMessageText", params={}, at=now
        )
    assert first < second
    async with sessionmaker() as session:
        assert await outbox_lanes(session=session) == [42]
        call, _ = await next_calls(session=session, lane=42)
    assert call is not None and call.id == first, "in order"
    async with sessionmaker() as session, session.begin():
        assert await record_call(session=session, call_id=first, at=now, message_id=5)
        assert not await record_call(session=session, call_id=first, at=now, message_id=6)
    async with sessionmaker() as session:
        assert await pending_calls(session=session, lane=42) == 1
        made = await session.get(OutboxMessage, first)
        assert made is not None and made.params == {} and made.message_id == 5
    async with sessionmaker() as session, session.begin():
        assert await record_call(session=session, call_id=second, at=now)
        assert await prune_messaging(session=session, before=now + timedelta(seconds=1)) == 2


async def test_old_rows_are_pruned_in_batches(sessionmaker: Sessions) -> None:
    """A backlog goes a batch at a time; rows not yet made or newer than the cut stay."""
    now = utcnow()
    async with sessionmaker() as session, session.begin():
        calls = [{"lane": 7, "method": "sendMessage", "params": {}, "bind": None}] * 5
        ids = await enqueue_calls(session=session, calls=calls, at=now)
        for call_id in ids[:4]:
            assert await record_call(session=session, call_id=call_id, at=now)
    cut = now + timedelta(seconds=1)
    async with sessionmaker() as session, session.begin():
        assert await prune_messaging(session=session, before=cut, limit=3) == 3
    async with sessionmaker() as session:
        left = [call.id for call in await next_calls(session=session, lane=7)]
        assert left == ids[4:], "the call not made yet stays"
    async with sessionmaker() as session, session.begin():
        assert await prune_messaging(session=session, before=cut, limit=3) == 1
        assert await prune_messaging(session=session, before=cut, limit=3) == 0
    async with sessionmaker() as session:
        assert await pending_calls(session=session, lane=7) == 1


async def test_calls_stored_together_get_their_own_ids_in_order(sessionmaker: Sessions) -> None:
    """The sender is handed the stored calls with these ids: each must name its own row."""
    now = utcnow()
    async with sessionmaker() as session, session.begin():
        await enqueue_calls(
            session=session,
            calls=[{"lane": 1, "method": "first", "params": {}, "bind": None}],
            at=now,
        )
    for count in (1, 3, 5):
        calls = [
            {"lane": 2, "method": f"m{count}-{n}", "params": {"n": n}, "bind": {"prompt": n}}
            for n in range(count)
        ]
        async with sessionmaker() as session, session.begin():
            ids = await enqueue_calls(session=session, calls=calls, at=now)
        assert len(ids) == count and ids == sorted(ids)
        async with sessionmaker() as session:
            for call_id, call in zip(ids, calls, strict=True):
                row = await session.get(OutboxMessage, call_id)
                assert row is not None
                assert (row.method, row.params, row.bind) == (
                    call["method"],
                    call["params"],
                    call["bind"],
                )


async def test_a_batch_of_updates_with_redeliveries_stores_only_the_new_ones(
    sessionmaker: Sessions,
) -> None:
    now = utcnow()
    async with sessionmaker() as session, session.begin():
        assert await store_updates(session=session, updates=[(20, 1, {"a": 1})], at=now) == [20]
    batch = [(21, 1, {"b": 2}), (20, 1, {"again": True}), (22, 3, {"текст": "Анна"})]
    async with sessionmaker() as session, session.begin():
        assert await store_updates(session=session, updates=batch, at=now) == [21, 22]
    async with sessionmaker() as session:
        stored = {u.update_id: u.payload for u in await next_updates(session=session, lane=1)}
        [other] = await next_updates(session=session, lane=3)
    assert stored == {20: {"a": 1}, 21: {"b": 2}}, "the redelivery changed nothing"
    assert other.payload == {"текст": "Анна"}

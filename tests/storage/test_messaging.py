"""The message path's tables on both backends: receipt once, claim once,
a call recorded once, and nothing personal kept after processing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text as text_
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from storage import (
    AsyncSession,
    InboxUpdate,
    Made,
    OutboxMessage,
    claim_update,
    create_client,
    enqueue_call,
    enqueue_calls,
    get_dialogue,
    inbox_lanes,
    make_sessionmaker,
    next_calls,
    next_calls_alone,
    next_updates,
    next_updates_alone,
    outbox_lanes,
    pending_calls,
    pending_updates,
    prune_messaging,
    record_call,
    record_calls_alone,
    save_dialogue,
    store_updates,
    store_updates_alone,
    utcnow,
)
from storage.core import fetch_alone

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


async def test_a_lanes_reads_and_records_alone_match_the_sessions(
    postgresql: AsyncEngine,
) -> None:
    """On PostgreSQL a lane's next updates and calls are read, and its calls recorded (with
    the client's keyboard), by one statement alone on the driver: the rows are those the
    session functions read and write, and a call recorded before stays as it was."""
    engine = postgresql
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
    updates = await next_updates_alone(engine=engine, lane=77)
    async with sessions() as session:
        assert updates == await next_updates(session=session, lane=77)
    assert [u.update_id for u in updates] == [4, 5]
    assert updates[1].payload == {"text": "Анна"}
    calls = await next_calls_alone(engine=engine, lane=77)
    assert [c.id for c in calls] == ids[:3]
    assert calls[1].bind == {"prompt": client.id} and calls[1].params == {"text": "Привет"}

    async with sessions() as session, session.begin():
        assert await record_call(session=session, call_id=ids[0], at=now, message_id=1)
    made = [
        Made(ids[0], None, None, None),  # recorded before: left as it was
        Made(ids[1], 2**33, None, client.id),
        Made(ids[2], None, "refused: chat not found", None),
    ]
    recorded = await record_calls_alone(engine=engine, made=made, at=now)
    assert sorted(recorded) == ids[1:3]
    async with sessions() as session:
        rows = {i: await session.get(OutboxMessage, i) for i in ids}
        dialogue = await get_dialogue(session=session, client_id=client.id)
        assert await next_calls(session=session, lane=77) == []
    assert dialogue is not None and dialogue.prompt_message_id == 2**33
    first, sent, refused, other = (rows[i] for i in ids)
    assert first is not None and first.message_id == 1
    assert sent is not None and sent.params == {}
    assert (sent.sent_at, sent.message_id, sent.error) == (now, 2**33, None)
    assert refused is not None and refused.error == "refused: chat not found"
    assert refused.sent_at == now and refused.message_id is None
    assert other is not None and other.sent_at is None, "another chat's call is untouched"

    # A call recorded before moves no keyboard, nor does a refused send.
    again = await record_calls_alone(engine=engine, made=[Made(ids[0], 9, None, client.id)], at=now)
    assert again == []
    assert await record_calls_alone(
        engine=engine, made=[Made(ids[3], None, "refused", client.id)], at=now
    ) == [ids[3]]
    async with sessions() as session:
        kept = await get_dialogue(session=session, client_id=client.id)
    assert kept is not None and kept.prompt_message_id == 2**33
    # One client's keyboard named twice in one record is a mistake of the caller.
    with pytest.raises(ValueError, match="twice"):
        await record_calls_alone(
            engine=engine,
            made=[Made(ids[3], 3, None, client.id), Made(ids[3], 4, None, client.id)],
            at=now,
        )


async def test_updates_stored_alone_are_stored_once_as_a_session_stores_them(
    postgresql: AsyncEngine,
) -> None:
    now = utcnow()
    first = await store_updates_alone(
        engine=postgresql,
        updates=[(12, 3, {"text": "Анна «Ж»"}), (11, 3, {}), (11, 3, {"again": True})],
        at=now,
    )
    again = await store_updates_alone(engine=postgresql, updates=[(12, 3, {"x": 1})], at=now)
    assert (first, again) == ([11, 12], [])
    sessions = make_sessionmaker(postgresql)
    async with sessions() as session, session.begin():
        assert await store_updates(session=session, updates=[(11, 3, {})], at=now) == []
        assert await store_updates(session=session, updates=[(13, 3, {"t": "Ё"})], at=now) == [13]
    async with sessions() as session:
        waiting = await next_updates(session=session, lane=3)
        stored = await session.get(InboxUpdate, 12)
        text = (
            await session.exec(text_("SELECT payload::text FROM inbox WHERE update_id = 12"))
        ).one()[0]
    assert [(u.update_id, u.payload) for u in waiting] == [
        (11, {}),
        (12, {"text": "Анна «Ж»"}),
        (13, {"t": "Ё"}),
    ]
    assert stored is not None and stored.received_at == now and stored.attempts == 0
    assert "Анна" in text, "Cyrillic kept readable, as the engine writes it"


async def test_a_connection_broken_under_a_statement_alone_is_not_handed_out_again(
    postgresql: AsyncEngine,
) -> None:
    """A statement the server refuses leaves its connection in the pool; a connection that
    dies under a statement is discarded, so the next statement gets a live one."""
    [[pid]] = await fetch_alone(postgresql, "SELECT pg_backend_pid()")
    with pytest.raises(Exception, match="division by zero"):
        await fetch_alone(postgresql, "SELECT 1 / 0")
    assert await fetch_alone(postgresql, "SELECT pg_backend_pid()") == [(pid,)], "kept"
    with pytest.raises(Exception, match="terminat"):
        await fetch_alone(postgresql, "SELECT pg_terminate_backend(pg_backend_pid())")
    [[other]] = await fetch_alone(postgresql, "SELECT pg_backend_pid()")
    assert other != pid

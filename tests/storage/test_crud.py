"""Data functions: round trips, upserts, transactions owned by the caller, deletion."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import func, select, text

import storage.crud
from storage import (
    AsyncSession,
    Client,
    ConsultationRequest,
    DialogueSession,
    DuplicateClientError,
    create_client,
    create_request,
    delete_client_data,
    get_client,
    get_dialogue,
    get_or_create_client,
    get_request,
    list_requests,
    make_engine,
    make_sessionmaker,
    save_dialogue,
    set_client_language,
    set_prompt_message_id,
    upgrade,
)
from tests.dbs import fresh_database
from tests.storage.factories import new_request, request_fields

Sessions = async_sessionmaker[AsyncSession]

STATE = {
    "node": "fever",
    "answers": [{"node": "start", "answer": "Здравствуйте"}],
    "facts": {"conditions": ["мигрень"]},
    "attempts": 2,
    "done": False,
    "nothing": None,
}


async def _new_client(sessions: Sessions, telegram_id: int | None = 1001) -> int:
    async with sessions() as session, session.begin():
        client = await create_client(
            session=session, telegram_id=telegram_id, channel="telegram", language="ru"
        )
    assert client.id is not None
    return client.id


async def _count(
    session: AsyncSession, model: type[Client | DialogueSession | ConsultationRequest]
) -> int:
    return (await session.exec(select(func.count()).select_from(model))).one()


def _assert_recent_utc(moment: datetime) -> None:
    assert moment.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=1)


async def test_client_round_trip(sessionmaker: Sessions) -> None:
    async with sessionmaker() as session, session.begin():
        created = await create_client(
            session=session,
            telegram_id=9_007_199_254_740_993,  # beyond 32 bits: BigInteger
            channel="telegram",
            language="ru",
            source="vk-реклама",
        )
    async with sessionmaker() as session:
        client = await get_client(session=session, telegram_id=9_007_199_254_740_993)
        assert await get_client(session=session, telegram_id=1) is None
    assert client is not None
    assert (client.id, client.channel, client.language, client.source) == (
        created.id,
        "telegram",
        "ru",
        "vk-реклама",
    )
    _assert_recent_utc(client.created_at)
    _assert_recent_utc(client.updated_at)
    assert client.created_at == created.created_at


async def test_terminal_clients_have_no_telegram_id(sessionmaker: Sessions) -> None:
    async with sessionmaker() as session, session.begin():
        first = await create_client(
            session=session, telegram_id=None, channel="terminal", language="en"
        )
        second = await create_client(
            session=session, telegram_id=None, channel="terminal", language="en"
        )
    assert first.id != second.id
    async with sessionmaker() as session:
        stored = await session.get(Client, first.id)
    assert stored is not None
    assert (stored.telegram_id, stored.source) == (None, None)


async def test_duplicate_telegram_id_is_refused_and_the_transaction_survives(
    sessionmaker: Sessions,
) -> None:
    async with sessionmaker() as session, session.begin():
        await create_client(session=session, telegram_id=5, channel="telegram", language="ru")
        with pytest.raises(DuplicateClientError) as excinfo:
            await create_client(session=session, telegram_id=5, channel="telegram", language="en")
        assert excinfo.value.telegram_id == 5
        await create_client(session=session, telegram_id=6, channel="telegram", language="en")
    async with sessionmaker() as session:
        assert await _count(session, Client) == 2


async def test_get_or_create_client_creates_once_and_keeps_the_first_values(
    sessionmaker: Sessions,
) -> None:
    async with sessionmaker() as session, session.begin():
        first = await get_or_create_client(
            session=session, telegram_id=77, channel="telegram", language="ru", source="qr"
        )
    async with sessionmaker() as session, session.begin():
        again = await get_or_create_client(
            session=session, telegram_id=77, channel="telegram", language="en", source="other"
        )
    assert again.id == first.id
    assert (again.language, again.source) == ("ru", "qr")
    async with sessionmaker() as session:
        assert await _count(session, Client) == 1


async def test_get_or_create_client_survives_a_concurrent_insert(
    sessionmaker: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with sessionmaker() as session, session.begin():
        winner = await create_client(
            session=session, telegram_id=88, channel="telegram", language="ru"
        )
    # As if another transaction committed the client between our SELECT and our INSERT.
    real_get_client = storage.crud.get_client
    calls = []

    async def get_client_too_early(*, session: AsyncSession, telegram_id: int) -> Client | None:
        calls.append(telegram_id)
        if len(calls) == 1:
            return None
        return await real_get_client(session=session, telegram_id=telegram_id)

    monkeypatch.setattr(storage.crud, "get_client", get_client_too_early)
    async with sessionmaker() as session, session.begin():
        client = await get_or_create_client(
            session=session, telegram_id=88, channel="telegram", language="en"
        )
        assert client.id == winner.id
        assert client.language == "ru"
        # The failed insert was rolled back to its savepoint; the transaction goes on.
        assert client.id is not None
        await save_dialogue(
            session=session, client_id=client.id, flow_name="f", flow_version="1", state={}
        )
    assert len(calls) == 3
    async with sessionmaker() as session:
        assert await _count(session, Client) == 1
        assert await _count(session, DialogueSession) == 1


async def test_dialogue_round_trip_and_upsert_keeps_one_row(sessionmaker: Sessions) -> None:
    client_id = await _new_client(sessionmaker)
    async with sessionmaker() as session:
        assert await get_dialogue(session=session, client_id=client_id) is None

    async with sessionmaker() as session, session.begin():
        first = await save_dialogue(
            session=session,
            client_id=client_id,
            flow_name="intake",
            flow_version="1",
            state=STATE,
            last_update_id=2**40,
        )
    async with sessionmaker() as session, session.begin():
        second = await save_dialogue(
            session=session,
            client_id=client_id,
            flow_name="intake",
            flow_version="2",
            state={"node": "phone", "answers": []},
        )
    assert second.id == first.id
    assert second.updated_at >= first.updated_at

    async with sessionmaker() as session:
        stored = await get_dialogue(session=session, client_id=client_id)
        assert await _count(session, DialogueSession) == 1
    assert stored is not None
    assert (stored.flow_name, stored.flow_version) == ("intake", "2")
    assert stored.state == {"node": "phone", "answers": []}
    assert stored.last_update_id == 2**40  # None leaves the mark where it was
    _assert_recent_utc(stored.updated_at)


async def test_dialogue_state_round_trips_json(sessionmaker: Sessions) -> None:
    client_id = await _new_client(sessionmaker)
    async with sessionmaker() as session, session.begin():
        await save_dialogue(
            session=session, client_id=client_id, flow_name="f", flow_version="1", state=STATE
        )
    async with sessionmaker() as session:
        stored = await get_dialogue(session=session, client_id=client_id)
    assert stored is not None
    assert stored.state == STATE


async def test_save_dialogue_stores_in_place_changes_of_the_loaded_state(
    sessionmaker: Sessions,
) -> None:
    client_id = await _new_client(sessionmaker)
    async with sessionmaker() as session, session.begin():
        await save_dialogue(
            session=session, client_id=client_id, flow_name="f", flow_version="1", state={"n": 1}
        )
    async with sessionmaker() as session, session.begin():
        dialogue = await get_dialogue(session=session, client_id=client_id)
        assert dialogue is not None
        dialogue.state["n"] = 2  # the ORM cannot see this on its own
        await save_dialogue(
            session=session,
            client_id=client_id,
            flow_name="f",
            flow_version="1",
            state=dialogue.state,
            last_update_id=10,
        )
    async with sessionmaker() as session:
        stored = await get_dialogue(session=session, client_id=client_id)
    assert stored is not None
    assert (stored.state, stored.last_update_id) == ({"n": 2}, 10)


async def test_save_dialogue_for_an_unknown_client_fails(sessionmaker: Sessions) -> None:
    async with sessionmaker() as session:
        with pytest.raises(IntegrityError):
            await save_dialogue(
                session=session, client_id=31337, flow_name="f", flow_version="1", state={}
            )


async def test_request_round_trip(sessionmaker: Sessions) -> None:
    client_id = await _new_client(sessionmaker)
    fields = request_fields()
    async with sessionmaker() as session, session.begin():
        created = await create_request(session=session, request=new_request(client_id, **fields))
    assert created.id is not None
    async with sessionmaker() as session:
        stored = await get_request(session=session, request_id=created.id)
        assert await get_request(session=session, request_id=created.id + 1) is None
    assert stored is not None
    assert stored.model_dump(include=set(fields)) == fields
    assert (stored.client_id, stored.status) == (client_id, "new")
    _assert_recent_utc(stored.created_at)


async def test_request_accepts_frozen_values_and_nulls(sessionmaker: Sessions) -> None:
    client_id = await _new_client(sessionmaker)
    async with sessionmaker() as session, session.begin():
        created = await create_request(
            session=session,
            request=new_request(
                client_id,
                outcome="OK",
                rule_ids=(),
                reasons=("нет противопоказаний",),
                answers=({"node": "a", "question": "Q", "answer": "A"},),
                facts={"conditions": ()},
                name=None,
                phone=None,
                preferred_time=None,
                red_flag_changed=False,
                withdrawn_red_flags=(),
            ),
        )
    assert created.id is not None
    async with sessionmaker() as session:
        stored = await get_request(session=session, request_id=created.id)
    assert stored is not None
    assert stored.rule_ids == []
    assert stored.reasons == ["нет противопоказаний"]
    assert stored.answers == [{"node": "a", "question": "Q", "answer": "A"}]
    assert stored.facts == {"conditions": []}
    assert (stored.name, stored.phone, stored.preferred_time) == (None, None, None)
    assert stored.red_flag_changed is False
    assert stored.withdrawn_red_flags == []


def test_a_new_request_refuses_a_string_where_a_list_belongs_and_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="rule_ids"):
        new_request(1, rule_ids="R-FEVER")
    with pytest.raises(ValidationError, match="status"):
        new_request(1, status="closed")  # a new request is new


async def test_rollback_leaves_neither_request_nor_dialogue(sessionmaker: Sessions) -> None:
    client_id = await _new_client(sessionmaker)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with sessionmaker() as session, session.begin():
            await create_request(session=session, request=new_request(client_id))
            await save_dialogue(
                session=session, client_id=client_id, flow_name="f", flow_version="1", state=STATE
            )
            raise Boom

    async with sessionmaker() as session:
        assert await _count(session, ConsultationRequest) == 0
        assert await _count(session, DialogueSession) == 0
        assert await _count(session, Client) == 1


async def test_rollback_of_a_new_client_leaves_nothing(sessionmaker: Sessions) -> None:
    async with sessionmaker() as session:
        client = await get_or_create_client(
            session=session, telegram_id=3, channel="telegram", language="ru"
        )
        assert client.id is not None
        await save_dialogue(
            session=session, client_id=client.id, flow_name="f", flow_version="1", state={}
        )
        await session.rollback()
    async with sessionmaker() as session:
        assert await _count(session, Client) == 0
        assert await _count(session, DialogueSession) == 0


async def test_delete_client_data_removes_that_client_only(sessionmaker: Sessions) -> None:
    doomed = await _new_client(sessionmaker, telegram_id=1)
    kept = await _new_client(sessionmaker, telegram_id=2)
    async with sessionmaker() as session, session.begin():
        for client_id in (doomed, kept):
            await save_dialogue(
                session=session, client_id=client_id, flow_name="f", flow_version="1", state=STATE
            )
            await create_request(session=session, request=new_request(client_id))
            await create_request(session=session, request=new_request(client_id))

    async with sessionmaker() as session, session.begin():
        loaded = await get_dialogue(session=session, client_id=doomed)
        await delete_client_data(session=session, client_id=doomed)
        assert loaded not in session
        await delete_client_data(session=session, client_id=doomed)  # again: a no-op

    async with sessionmaker() as session:
        assert await session.get(Client, doomed) is None
        assert await get_dialogue(session=session, client_id=doomed) is None
        assert await get_client(session=session, telegram_id=2) is not None
        assert await get_dialogue(session=session, client_id=kept) is not None
        remaining = await list_requests(session=session)
    assert [request.client_id for request in remaining] == [kept, kept]


async def test_list_requests_filters_by_status_oldest_first(sessionmaker: Sessions) -> None:
    client_id = await _new_client(sessionmaker)
    ids: list[int] = []
    for outcome in ("OK", "STOP", "LATER", "CLEAR"):
        async with sessionmaker() as session, session.begin():
            created = await create_request(
                session=session, request=new_request(client_id, outcome=outcome)
            )
            assert created.id is not None
            ids.append(created.id)
    async with sessionmaker() as session, session.begin():
        for request_id in ids[1::2]:
            stored = await get_request(session=session, request_id=request_id)
            assert stored is not None
            stored.status = "done"

    async with sessionmaker() as session:
        everything = await list_requests(session=session)
        new = await list_requests(session=session, status="new")
        done = await list_requests(session=session, status="done")
        first_two = await list_requests(session=session, limit=2)
        unknown = await list_requests(session=session, status="archived")
    assert [r.id for r in everything] == ids
    assert [r.outcome for r in new] == ["OK", "LATER"]
    assert [r.outcome for r in done] == ["STOP", "CLEAR"]
    assert [r.id for r in first_two] == ids[:2]
    assert unknown == []
    assert all(r.updated_at >= r.created_at for r in done)


async def test_list_requests_orders_by_creation_time_not_id(sessionmaker: Sessions) -> None:
    client_id = await _new_client(sessionmaker)
    now = datetime.now(UTC)
    async with sessionmaker() as session, session.begin():
        later = await create_request(session=session, request=new_request(client_id))
        earlier = await create_request(session=session, request=new_request(client_id))
        later.created_at = now
        earlier.created_at = now - timedelta(hours=3)
    async with sessionmaker() as session:
        listed = await list_requests(session=session)
    assert [r.id for r in listed] == [earlier.id, later.id]
    assert listed[0].created_at == now - timedelta(hours=3)


async def test_list_requests_refuses_a_negative_limit(session: AsyncSession) -> None:
    with pytest.raises(ValueError, match="limit"):
        await list_requests(session=session, limit=-1)


async def test_timestamps_must_be_aware(session: AsyncSession) -> None:
    session.add(Client(channel="terminal", language="en", created_at=datetime(2024, 1, 1)))  # noqa: DTZ001
    with pytest.raises(StatementError, match="naive datetime"):
        await session.flush()


async def test_save_dialogue_survives_a_concurrent_first_save(
    sessionmaker: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_id = await _new_client(sessionmaker)
    async with sessionmaker() as session, session.begin():
        await save_dialogue(
            session=session, client_id=client_id, flow_name="f", flow_version="1", state={"n": 1}
        )
    # As if another transaction stored the first dialogue between our SELECT and our INSERT.
    real_get_dialogue = storage.crud.get_dialogue
    calls = []

    async def get_dialogue_too_early(
        *, session: AsyncSession, client_id: int
    ) -> DialogueSession | None:
        calls.append(client_id)
        if len(calls) == 1:
            return None
        return await real_get_dialogue(session=session, client_id=client_id)

    monkeypatch.setattr(storage.crud, "get_dialogue", get_dialogue_too_early)
    async with sessionmaker() as session, session.begin():
        await save_dialogue(
            session=session, client_id=client_id, flow_name="f", flow_version="2", state={"n": 2}
        )
    monkeypatch.undo()
    async with sessionmaker() as session:
        stored = await get_dialogue(session=session, client_id=client_id)
        assert await _count(session, DialogueSession) == 1
    assert stored is not None
    assert (stored.flow_version, stored.state) == ("2", {"n": 2})


async def test_create_client_passes_on_other_integrity_errors(session: AsyncSession) -> None:
    with pytest.raises(IntegrityError):
        await create_client(
            session=session,
            telegram_id=None,
            channel=None,  # type: ignore[arg-type]
            language="ru",
        )


async def test_set_client_language_changes_that_client_only(sessionmaker: Sessions) -> None:
    switched = await _new_client(sessionmaker, telegram_id=1)
    other = await _new_client(sessionmaker, telegram_id=2)
    async with sessionmaker() as session, session.begin():
        loaded = await session.get(Client, switched)
        assert loaded is not None
        before = loaded.updated_at
        await set_client_language(session=session, client_id=switched, language="en")
        assert loaded.language == "en"  # objects already loaded see the change
        await set_client_language(session=session, client_id=31337, language="en")  # no-op
    async with sessionmaker() as session:
        stored = await session.get(Client, switched)
        untouched = await session.get(Client, other)
    assert stored is not None and untouched is not None
    assert (stored.language, untouched.language) == ("en", "ru")
    assert stored.updated_at >= before


async def test_prompt_message_id_is_kept_across_dialogue_saves(sessionmaker: Sessions) -> None:
    client_id = await _new_client(sessionmaker)
    async with sessionmaker() as session, session.begin():
        await set_prompt_message_id(session=session, client_id=client_id, message_id=5)  # no-op
        assert await get_dialogue(session=session, client_id=client_id) is None
        await save_dialogue(
            session=session, client_id=client_id, flow_name="f", flow_version="1", state={}
        )
        await set_prompt_message_id(session=session, client_id=client_id, message_id=2**33)
    async with sessionmaker() as session, session.begin():
        await save_dialogue(
            session=session, client_id=client_id, flow_name="f", flow_version="1", state={"n": 1}
        )
    async with sessionmaker() as session:
        stored = await get_dialogue(session=session, client_id=client_id, for_update=True)
    assert stored is not None
    assert (stored.prompt_message_id, stored.state) == (2**33, {"n": 1})

    async with sessionmaker() as session, session.begin():
        await set_prompt_message_id(session=session, client_id=client_id, message_id=None)
    async with sessionmaker() as session:
        cleared = await get_dialogue(session=session, client_id=client_id)
    assert cleared is not None and cleared.prompt_message_id is None


async def _until_a_backend_waits_for_a_lock(session: AsyncSession) -> None:
    """Return once another connection to this database is waiting for a lock."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = asyncio.get_running_loop().time() + 10
    while not (await session.exec(query)).scalar_one():
        await session.exec(text("SELECT pg_stat_clear_snapshot()"))  # read it afresh
        assert asyncio.get_running_loop().time() < deadline, "nobody waits for the lock"
        await asyncio.sleep(0.01)


async def test_get_dialogue_for_update_locks_the_row_on_postgres(tmp_path: Path) -> None:
    async with fresh_database("postgresql", tmp_path) as url:
        engine = make_engine(url)
        try:
            await upgrade(engine)
            sessions = make_sessionmaker(engine)
            client_id = await _new_client(sessions)
            async with sessions() as session, session.begin():
                await save_dialogue(
                    session=session, client_id=client_id, flow_name="f", flow_version="1", state={}
                )

            async def lock_and_read() -> DialogueSession | None:
                async with sessions() as other, other.begin():
                    return await get_dialogue(session=other, client_id=client_id, for_update=True)

            async with sessions() as session, session.begin():
                assert await get_dialogue(session=session, client_id=client_id, for_update=True)
                waiting = asyncio.create_task(lock_and_read())
                await _until_a_backend_waits_for_a_lock(session)
                assert not waiting.done()  # blocked by our lock
            assert await asyncio.wait_for(waiting, timeout=10) is not None
        finally:
            await engine.dispose()

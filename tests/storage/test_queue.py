"""The request lifecycle in storage: allowed moves only, call-backs, retention (both backends)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select

from storage import (
    STATUSES,
    TRANSITIONS,
    Action,
    AsyncSession,
    DialogueSession,
    IllegalMoveError,
    Relay,
    Status,
    action_to,
    add_relay,
    apply_action,
    callbacks_to_remind,
    card_actions,
    create_client,
    create_request,
    delete_client_data,
    erase_expired,
    get_request,
    list_events,
    mark_reminded,
    save_dialogue,
    search_requests,
    stats,
)
from tests.storage import factories

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


async def new_request(session: AsyncSession, created_at: datetime = T0, **fields: object) -> int:
    client = await create_client(
        session=session, telegram_id=None, channel="terminal", language="ru"
    )
    assert client.id is not None
    request = await create_request(
        session=session, request=factories.new_request(client.id, **fields), created_at=created_at
    )
    assert request.id is not None
    return request.id


async def move(session: AsyncSession, request_id: int, action: Action, **extra: object) -> None:
    request = await get_request(session=session, request_id=request_id)
    assert request is not None
    at = extra.pop("at", T0 + timedelta(minutes=10))
    await apply_action(
        session=session, request=request, action=action, actor_id=7, actor_name="Олег",
        at=at, **extra,  # type: ignore[arg-type]
    )  # fmt: skip


# --- the table itself (pure) ------------------------------------------------------------


def test_every_status_has_its_moves_and_every_move_leads_to_a_status() -> None:
    assert set(TRANSITIONS) == set(STATUSES) == set(Status)
    for moves in TRANSITIONS.values():
        assert len({m.action for m in moves}) == len(moves), "one move per action"
        assert all(m.to is None or m.to in Status for m in moves)


def test_the_card_buttons_are_drawn_from_the_table() -> None:
    assert card_actions(Status.NEW) == [[Action.TAKE]]
    assert card_actions(Status.TAKEN) == [
        [Action.BOOKED, Action.DECLINED], [Action.NO_ANSWER], [Action.CLOSE]
    ]  # fmt: skip
    assert card_actions(Status.NO_ANSWER) == [
        [Action.BOOKED, Action.DECLINED], [Action.NO_ANSWER], [Action.RETRY], [Action.CLOSE]
    ]  # fmt: skip
    assert card_actions(Status.CLOSED) == [[Action.FOLLOW_UP]]


def test_set_status_finds_the_action_and_never_reopens_implicitly() -> None:
    assert action_to(Status.NEW, Status.BOOKED) is Action.BOOKED
    assert action_to(Status.NO_ANSWER, Status.TAKEN) is Action.TAKE
    with pytest.raises(IllegalMoveError, match="reopen it with a note"):
        action_to(Status.CLOSED, Status.NEW)
    with pytest.raises(IllegalMoveError, match="cannot become taken; possible: closed"):
        action_to(Status.BOOKED, Status.TAKEN)


# --- moves in the database --------------------------------------------------------------


async def test_an_illegal_move_is_refused_and_writes_nothing(sessionmaker: Sessions) -> None:
    async with sessionmaker() as session, session.begin():
        request_id = await new_request(session)
        await move(session, request_id, Action.CLOSE)
    async with sessionmaker() as session, session.begin():
        with pytest.raises(IllegalMoveError, match="'take' is not possible"):
            await move(session, request_id, Action.TAKE)
        with pytest.raises(IllegalMoveError, match="needs a note"):
            await move(session, request_id, Action.REOPEN)
    async with sessionmaker() as session:
        request = await get_request(session=session, request_id=request_id)
        events = await list_events(session=session, request_id=request_id)
    assert request is not None and request.status == "closed"
    assert [(e.from_status, e.to_status) for e in events] == [("new", "closed")]


async def test_a_whole_lifecycle_keeps_the_workflow_fields_in_step(sessionmaker: Sessions) -> None:
    retry = T0 + timedelta(hours=2)
    async with sessionmaker() as session, session.begin():
        request_id = await new_request(session)
        await move(session, request_id, Action.TAKE, at=T0 + timedelta(minutes=1))
        await move(session, request_id, Action.NO_ANSWER, at=T0 + timedelta(minutes=2))
        await move(session, request_id, Action.RETRY, retry_at=retry)
        [due] = await callbacks_to_remind(session=session)
        assert due.id == request_id and due.retry_at == retry
        await mark_reminded(session=session, request=due, at=retry)
        assert await callbacks_to_remind(session=session) == []
        await move(session, request_id, Action.BOOKED, at=retry)
        await move(session, request_id, Action.CLOSE, at=retry + timedelta(minutes=1))
        await move(
            session, request_id, Action.REOPEN, note="перезвонила сама", at=retry + timedelta(1)
        )
    async with sessionmaker() as session:
        request = await get_request(session=session, request_id=request_id)
        events = await list_events(session=session, request_id=request_id)
    assert request is not None
    assert request.status == "new" and request.closed_at is None and request.taken_by is None
    assert request.attempts == 1 and request.first_call_at == T0 + timedelta(minutes=2)
    assert request.retry_at is None
    assert [(e.action, e.from_status, e.to_status) for e in events] == [
        ("status", "new", "taken"), ("status", "taken", "no_answer"), ("retry", None, None),
        ("status", "no_answer", "booked"), ("status", "booked", "closed"),
        ("status", "closed", "new"),
    ]  # fmt: skip
    assert events[-1].note == "перезвонила сама"


async def test_the_command_lines_order_is_the_queues(sessionmaker: Sessions) -> None:
    async with sessionmaker() as session, session.begin():
        done = await new_request(session, outcome="OK", red_flag_changed=False)
        await move(session, done, Action.CLOSE)
        plain = await new_request(
            session, outcome="OK", red_flag_changed=False, created_at=T0 + timedelta(minutes=1)
        )
        doctor = await new_request(session, outcome="CLEAR", created_at=T0 + timedelta(hours=1))
        found = await search_requests(session=session, queue_order=True)
    assert [r.id for r in found] == [doctor, plain, done]


async def test_a_relay_for_a_client_who_erased_their_data_is_not_kept(
    sessionmaker: Sessions,
) -> None:
    """A question relayed to the staff group and posted after the client's /forget: recording
    it must neither fail (the sender would post it again and again) nor bring the client back."""
    async with sessionmaker() as session, session.begin():
        client = await create_client(
            session=session, telegram_id=77, channel="telegram", language="ru"
        )
        assert client.id is not None
        client_id = client.id
        await delete_client_data(session=session, client_id=client_id)
    async with sessionmaker() as session, session.begin():
        kept = await add_relay(
            session=session, client_id=client_id, staff_chat_id=-1, staff_message_id=9
        )
    assert kept is None
    async with sessionmaker() as session:
        assert (await session.exec(select(Relay))).all() == []


# --- retention ---------------------------------------------------------------------------


async def test_erase_expired_keeps_only_what_the_statistics_need(sessionmaker: Sessions) -> None:
    closed = T0 + timedelta(days=1)
    async with sessionmaker() as session, session.begin():
        old = await new_request(session, source="site")
        recent = await new_request(session)
        still_open = await new_request(session)
        for request_id, at in ((old, closed), (recent, closed + timedelta(days=30))):
            await move(session, request_id, Action.TAKE, at=at)
            await move(session, request_id, Action.CLOSE, at=at, note="Анна просила вечером")
        request = await get_request(session=session, request_id=old)
        assert request is not None
        await add_relay(
            session=session, client_id=request.client_id, staff_chat_id=-1, staff_message_id=5
        )
        await save_dialogue(
            session=session, client_id=request.client_id, flow_name="intake",
            flow_version="v", state={"answers": {"name": "Анна Петровна"}},
        )  # fmt: skip
    async with sessionmaker() as session, session.begin():
        # Relays and dialogues are stamped with the real time now; move them into the past.
        for relay in (await session.exec(select(Relay))).all():
            relay.at = closed
        for dialogue in (await session.exec(select(DialogueSession))).all():
            dialogue.updated_at = closed
    now = closed + timedelta(days=20)
    async with sessionmaker() as session, session.begin():
        erased = await erase_expired(
            session=session, closed_before=closed + timedelta(days=10), at=now
        )
    assert erased == 1
    async with sessionmaker() as session:
        gone = await get_request(session=session, request_id=old)
        kept = await get_request(session=session, request_id=recent)
        open_one = await get_request(session=session, request_id=still_open)
        events = await list_events(session=session, request_id=old)
        figures = await stats(session=session, since=T0, until=now)
        relays = (await session.exec(select(Relay))).all()
        dialogues = (await session.exec(select(DialogueSession))).all()
    assert gone is not None and kept is not None and open_one is not None
    assert (gone.name, gone.phone, gone.preferred_time) == (None, None, None)
    assert (gone.answers, gone.facts, gone.reasons, gone.rule_ids) == ([], {}, [], [])
    assert gone.withdrawn_red_flags == [] and gone.erased_at == now
    assert (gone.outcome, gone.status, gone.source, gone.closed_at) == (
        "STOP", "closed", "site", closed
    )  # fmt: skip
    assert gone.created_at == T0 and gone.taken_by_name == "Олег"
    assert all(e.note is None for e in events) and len(events) == 2
    assert kept.name == "Анна Петровна" and kept.erased_at is None
    assert open_one.name == "Анна Петровна"
    assert figures.new == 3 and figures.by_outcome == {"STOP": 3} and figures.closed == 1
    assert relays == [] and dialogues == []

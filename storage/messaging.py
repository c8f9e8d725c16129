"""The message path's tables: the inbox of updates and the outbox of Bot API calls.

Like the rest of ``storage``, every function works in the caller's transaction and none
commits, but for the ``*_alone`` ones: on PostgreSQL each is one statement sent to the
driver alone, committed by itself (``core.fetch_alone``). Personal data do not stay here: a
processed update's payload and a sent call's parameters are emptied in the transaction that
processes or records them; what is kept (ids, times, outcomes) is what de-duplication and
the audit of delivery need.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import CursorResult, bindparam, delete, func, update
from sqlalchemy import select as core_select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.core import (
    direct,
    fetch_alone,
    fetch_in,
    insert_rows,
    json_text,
    last_id,
    on_driver,
    run,
    table,
)
from storage.locks import LaneLocks
from storage.models import InboxUpdate, OutboxMessage
from storage.sqltypes import as_utc

__all__ = [
    "CLAIM_PG",
    "Claim",
    "Made",
    "WaitingCall",
    "WaitingUpdate",
    "claim_args",
    "claim_update",
    "enqueue_call",
    "enqueue_calls",
    "inbox_lanes",
    "keyboards_once",
    "next_calls",
    "next_calls_alone",
    "next_updates",
    "next_updates_alone",
    "outbox_lanes",
    "pending_calls",
    "pending_updates",
    "prune_messaging",
    "record_call",
    "record_calls_alone",
    "sent_message_id",
    "store_updates",
    "store_updates_alone",
    "take_calls",
    "take_updates",
]


_INBOX = table(InboxUpdate)
_OUTBOX = table(OutboxMessage)


class WaitingUpdate(NamedTuple):
    """An update in the inbox not processed yet: what processing it needs of its row."""

    update_id: int
    lane: int
    payload: dict[str, Any]


class WaitingCall(NamedTuple):
    """A call in the outbox not made yet: what making it needs of its row."""

    id: int
    lane: int
    method: str
    params: dict[str, Any]
    bind: dict[str, Any] | None


async def store_updates(
    *, session: AsyncSession, updates: Sequence[tuple[int, int, dict[str, Any]]], at: datetime
) -> list[int]:
    """Store ``(update_id, lane, payload)`` rows; return the ids that were new.

    An update already stored (a redelivery) is left as it is: processed or not, it is
    processed once.
    """
    if not updates:
        return []
    statement, params = insert_rows(
        _INBOX,
        [
            {"update_id": u, "lane": lane, "payload": payload, "received_at": at, "attempts": 0}
            for u, lane, payload in updates
        ],
        suffix="ON CONFLICT (update_id) DO NOTHING RETURNING update_id",
    )
    rows = await run(session, statement, params, take=CursorResult.all)
    return sorted(int(row[0]) for row in rows)


async def store_updates_alone(
    *, engine: AsyncEngine, updates: Sequence[tuple[int, int, dict[str, Any]]], at: datetime
) -> list[int]:
    """``store_updates`` on PostgreSQL, one statement alone (``core.fetch_alone``): stored
    (committed) when it returns."""
    if not updates:
        return []
    rows = await fetch_alone(
        engine,
        _STORE_PG,
        [u for u, _, _ in updates],
        [lane for _, lane, _ in updates],
        [json_text(payload) for _, _, payload in updates],
        as_utc(at),
    )
    return sorted(int(row[0]) for row in rows)


_STORE_PG = """
INSERT INTO inbox (update_id, lane, payload, received_at, attempts)
SELECT u.update_id, u.lane, u.payload, $4, 0
FROM unnest($1::bigint[], $2::bigint[], $3::json[]) AS u(update_id, lane, payload)
ON CONFLICT (update_id) DO NOTHING
RETURNING update_id
"""


async def inbox_lanes(*, session: AsyncSession, limit: int = 256) -> list[int]:
    """Lanes (chats) with updates waiting, the longest-waiting first."""
    statement = (
        select(InboxUpdate.lane)
        .where(col(InboxUpdate.done_at).is_(None))
        .group_by(col(InboxUpdate.lane))
        .order_by(func.min(InboxUpdate.update_id))
        .limit(limit)
    )
    return [int(lane) for lane in (await session.exec(statement)).all()]


async def next_updates(*, session: AsyncSession, lane: int, limit: int = 16) -> list[WaitingUpdate]:
    """The oldest updates of ``lane`` not processed yet, in order."""
    params = {"next_lane": lane, "next_limit": limit}
    return await run(session, _NEXT_UPDATES, params, take=_updates)


def _updates(result: CursorResult[Any]) -> list[WaitingUpdate]:
    return [WaitingUpdate._make(row) for row in result]


_NEXT_UPDATES = (
    core_select(_INBOX.c.update_id, _INBOX.c.lane, _INBOX.c.payload)
    .where(_INBOX.c.lane == bindparam("next_lane"), _INBOX.c.done_at.is_(None))
    .order_by(_INBOX.c.update_id)
    .limit(bindparam("next_limit"))
)


async def next_updates_alone(
    *, engine: AsyncEngine, lane: int, limit: int = 16
) -> list[WaitingUpdate]:
    """``next_updates`` on PostgreSQL, one statement alone (``core.fetch_alone``)."""
    return [WaitingUpdate(*row) for row in await fetch_alone(engine, _NEXT_UPDATES_PG, lane, limit)]


_NEXT_UPDATES_PG = (
    "SELECT update_id, lane, payload FROM inbox"
    " WHERE lane = $1 AND done_at IS NULL ORDER BY update_id LIMIT $2"
)


async def take_updates(
    locks: LaneLocks, *, key: str, lane: int, limit: int = 16
) -> tuple[int | None, list[WaitingUpdate]]:
    """Lock the chat's inbox lane (``key``) and read its next updates, in one round trip on
    the lock connection (migration 0006's ``inbox_take``): the lock's generation (None: another
    process holds the lane) and the updates."""
    generation, rows = await locks.take_reading(
        key=key, reading=_TAKE_UPDATES_PG, args=(lane, limit)
    )
    return generation, [WaitingUpdate(*row) for row in rows]


_TAKE_UPDATES_PG = "SELECT * FROM inbox_take($1, $2, $3, $4)"


async def pending_updates(*, session: AsyncSession) -> int:
    """How many stored updates are not processed yet."""
    statement = (
        select(func.count()).select_from(InboxUpdate).where(col(InboxUpdate.done_at).is_(None))
    )
    return int((await session.exec(statement)).one())


class Claim(NamedTuple):
    """Marking an inbox update processed (``claim_update``'s arguments)."""

    update_id: int
    at: datetime
    outcome: str = "done"


def claim_args(claim: Claim) -> tuple[int, datetime, str]:
    """``CLAIM_PG``'s parameters."""
    return claim.update_id, as_utc(claim.at), claim.outcome


async def claim_update(
    *, session: AsyncSession, update_id: int, at: datetime, outcome: str = "done"
) -> bool:
    """Mark an update processed, in the transaction of its effects; False if it already was.

    Its payload is emptied at the same time (it may hold what the client typed).
    """
    if on_driver(session):
        claim = Claim(update_id, at, outcome)
        return bool(await fetch_in(session, CLAIM_PG, *claim_args(claim)))
    params = {"claimed_id": update_id, "claimed_at": at, "claimed_outcome": outcome}
    return bool(await run(session, _CLAIM, params))


#: ``claim_update`` on PostgreSQL ($1 update id, $2 time, $3 outcome).
CLAIM_PG = (
    "UPDATE inbox SET done_at = $2, outcome = $3, payload = '{}'::json"
    " WHERE update_id = $1 AND done_at IS NULL RETURNING update_id"
)


_CLAIM = direct(
    update(_INBOX)
    .where(_INBOX.c.update_id == bindparam("claimed_id"), _INBOX.c.done_at.is_(None))
    .values(done_at=bindparam("claimed_at"), outcome=bindparam("claimed_outcome"), payload={})
)


async def enqueue_call(
    *,
    session: AsyncSession,
    lane: int,
    method: str,
    params: dict[str, Any],
    bind: dict[str, Any] | None = None,
    at: datetime,
) -> int:
    """Store a Bot API call to make after the commit; returns its id."""
    call = {"lane": lane, "method": method, "params": params, "bind": bind}
    [call_id] = await enqueue_calls(session=session, calls=[call], at=at)
    return call_id


async def enqueue_calls(
    *, session: AsyncSession, calls: Sequence[Mapping[str, Any]], at: datetime
) -> list[int]:
    """Store Bot API calls (each with ``lane``, ``method``, ``params`` and ``bind``) to make
    after the commit, in this order; returns their ids, in the same order.

    It is one statement for all of them: a multi-row INSERT (on PostgreSQL, one returning
    the ids).
    """
    if not calls:
        return []
    if on_driver(session):
        ids = await fetch_in(
            session,
            _ENQUEUE_PG,
            [call["lane"] for call in calls],
            [call["method"] for call in calls],
            [json_text(call["params"]) for call in calls],
            [json_text(call["bind"]) for call in calls],
            as_utc(at),
            absorb=True,  # it reads nothing but its parameters
        )
        # The ids are drawn in the rows' order (the INSERT takes them sorted).
        return sorted(int(row[0]) for row in ids)
    rows = [{**call, "created_at": at, "attempts": 0} for call in calls]
    # SQLite: one multi-row INSERT with no ids given; SQLite numbers the rows one after the
    # other (each one above the largest id so far), the last one ``lastrowid``.
    statement, params = insert_rows(_OUTBOX, rows)
    last = await run(session, statement, params, take=last_id)
    return list(range(last - len(rows) + 1, last + 1))


# A call without ``bind`` is stored as the JSON null the session's statement stores.
_ENQUEUE_PG = """
INSERT INTO outbox (lane, method, params, bind, created_at, attempts)
SELECT c.lane, c.method, c.params, c.bind, $5, 0
FROM unnest($1::bigint[], $2::varchar[], $3::json[], $4::json[]) WITH ORDINALITY
    AS c(lane, method, params, bind, n)
ORDER BY c.n
RETURNING id
"""


async def outbox_lanes(*, session: AsyncSession, limit: int = 256) -> list[int]:
    """Lanes (chats) with calls waiting, the longest-waiting first."""
    statement = (
        select(OutboxMessage.lane)
        .where(col(OutboxMessage.sent_at).is_(None))
        .group_by(col(OutboxMessage.lane))
        .order_by(func.min(OutboxMessage.id))
        .limit(limit)
    )
    return [int(lane) for lane in (await session.exec(statement)).all()]


async def next_calls(*, session: AsyncSession, lane: int, limit: int = 16) -> list[WaitingCall]:
    """The oldest calls of ``lane`` not made yet, in order."""
    params = {"next_lane": lane, "next_limit": limit}
    return await run(session, _NEXT_CALLS, params, take=_calls)


def _calls(result: CursorResult[Any]) -> list[WaitingCall]:
    return [WaitingCall._make(row) for row in result]


_NEXT_CALLS = (
    core_select(_OUTBOX.c.id, _OUTBOX.c.lane, _OUTBOX.c.method, _OUTBOX.c.params, _OUTBOX.c.bind)
    .where(_OUTBOX.c.lane == bindparam("next_lane"), _OUTBOX.c.sent_at.is_(None))
    .order_by(_OUTBOX.c.id)
    .limit(bindparam("next_limit"))
)


async def next_calls_alone(*, engine: AsyncEngine, lane: int, limit: int = 16) -> list[WaitingCall]:
    """``next_calls`` on PostgreSQL, one statement alone (``core.fetch_alone``)."""
    return [WaitingCall(*row) for row in await fetch_alone(engine, _NEXT_CALLS_PG, lane, limit)]


_NEXT_CALLS_PG = (
    "SELECT id, lane, method, params, bind FROM outbox"
    " WHERE lane = $1 AND sent_at IS NULL ORDER BY id LIMIT $2"
)


async def take_calls(
    locks: LaneLocks, *, key: str, lane: int, limit: int = 16
) -> tuple[int | None, list[WaitingCall]]:
    """``take_updates`` for the chat's outbox lane (``outbox_take``)."""
    generation, rows = await locks.take_reading(key=key, reading=_TAKE_CALLS_PG, args=(lane, limit))
    return generation, [WaitingCall(*row) for row in rows]


_TAKE_CALLS_PG = "SELECT * FROM outbox_take($1, $2, $3, $4)"


async def pending_calls(*, session: AsyncSession, lane: int | None = None) -> int:
    """How many calls are waiting to be made (in ``lane``, or in all)."""
    statement = (
        select(func.count()).select_from(OutboxMessage).where(col(OutboxMessage.sent_at).is_(None))
    )
    if lane is not None:
        statement = statement.where(OutboxMessage.lane == lane)
    return int((await session.exec(statement)).one())


async def record_call(
    *,
    session: AsyncSession,
    call_id: int,
    at: datetime,
    message_id: int | None = None,
    error: str | None = None,
) -> bool:
    """Record that a call was made (or given up); its parameters are emptied.

    False if it was already recorded (another process made it first).
    """
    params = {"made_id": call_id, "made_at": at, "made_message_id": message_id, "made_error": error}
    return bool(await run(session, _RECORD, params))


_RECORD = direct(
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("made_id"), _OUTBOX.c.sent_at.is_(None))
    .values(
        sent_at=bindparam("made_at"),
        message_id=bindparam("made_message_id"),
        error=bindparam("made_error"),
        params={},
    )
)


class Made(NamedTuple):
    """A call made (or given up), to record: its message id or error, and the client whose
    live keyboard the message carries (None: no client's)."""

    call_id: int
    message_id: int | None
    error: str | None
    prompt: int | None


def keyboards_once(made: Sequence[Made]) -> bool:
    """Whether no client's keyboard is named twice in ``made`` (``record_calls_alone``
    takes only such a record)."""
    prompts = [m.prompt for m in made if m.prompt is not None]
    return len(prompts) == len(set(prompts))


async def record_calls_alone(
    *, engine: AsyncEngine, made: Sequence[Made], at: datetime
) -> list[int]:
    """``record_call`` for each of ``made`` and, for one that carries a client's keyboard and
    was not refused, ``set_prompt_message_id``: on PostgreSQL, one statement alone
    (``core.fetch_alone``). Returns the ids recorded now (the others were recorded before,
    by another process: nothing of theirs changes).

    A client's keyboard may be named by one of ``made`` at most.
    """
    if not keyboards_once(made):
        raise ValueError("one client's keyboard named twice in one record")
    rows = await fetch_alone(
        engine,
        _RECORD_PG,
        as_utc(at),
        [m.call_id for m in made],
        [m.message_id for m in made],
        [m.error for m in made],
        [m.prompt for m in made],
    )
    return [int(row[0]) for row in rows]


# Data-modifying WITH queries run to completion whether read or not, in the statement's one
# transaction; a call recorded before (by another process) changes nothing.
_RECORD_PG = """
WITH made AS (
    SELECT * FROM unnest($2::integer[], $3::bigint[], $4::varchar[], $5::integer[])
        AS m(id, message_id, error, prompt)
), recorded AS (
    UPDATE outbox SET sent_at = $1, message_id = made.message_id, error = made.error,
        params = '{}'::json
    FROM made WHERE outbox.id = made.id AND outbox.sent_at IS NULL
    RETURNING outbox.id
), prompted AS (
    UPDATE dialogue_sessions SET prompt_message_id = made.message_id, updated_at = $1
    FROM made JOIN recorded ON recorded.id = made.id
    WHERE dialogue_sessions.client_id = made.prompt AND made.error IS NULL
)
SELECT id FROM recorded
"""


async def sent_message_id(*, session: AsyncSession, call_id: int) -> int | None:
    """The message id a call produced (None if it produced none or is not made yet)."""
    value = await run(session, _SENT, {"sent_id": call_id}, take=CursorResult.scalar)
    return int(value) if value is not None else None


_SENT = select(_OUTBOX.c.message_id).where(_OUTBOX.c.id == bindparam("sent_id"))


async def prune_messaging(
    *, session: AsyncSession, before: datetime, limit: int | None = None
) -> int:
    """Delete processed updates and made calls older than ``before``; how many rows.

    With ``limit``, at most that many of each (the oldest first): the caller deletes a large
    backlog in short transactions, one after the other, until fewer come back.
    """
    old_updates = select(InboxUpdate.update_id).where(col(InboxUpdate.done_at) < before)
    old_calls = select(OutboxMessage.id).where(col(OutboxMessage.sent_at) < before)
    if limit is not None:
        old_updates = old_updates.order_by(col(InboxUpdate.update_id)).limit(limit)
        old_calls = old_calls.order_by(col(OutboxMessage.id)).limit(limit)
    inbox = await session.exec(
        delete(InboxUpdate).where(col(InboxUpdate.update_id).in_(old_updates))
    )
    outbox = await session.exec(delete(OutboxMessage).where(col(OutboxMessage.id).in_(old_calls)))
    return int(inbox.rowcount or 0) + int(outbox.rowcount or 0)

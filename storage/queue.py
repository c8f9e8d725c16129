"""The staff queue: request workflow with its audit trail, card delivery, funnel and statistics.

Like ``storage.crud``, every function flushes and none commits: the caller owns the
transaction, so a status change and its audit entry are stored together or not at all.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, delete, func, insert, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.core import direct, fetch_in, on_driver, run, table
from storage.lifecycle import OPEN_STATUSES, Action, IllegalMoveError, Status, transition
from storage.models import (
    Client,
    ConsultationRequest,
    DialogueSession,
    Relay,
    RequestEvent,
    StepEvent,
)
from storage.sqltypes import as_utc, utcnow

__all__ = [
    "Stats",
    "add_relay",
    "add_request_event",
    "apply_action",
    "callbacks_to_remind",
    "count_open_requests",
    "erase_expired",
    "find_relay",
    "funnel",
    "latest_request_of_client",
    "list_events",
    "list_open_requests",
    "mark_announced",
    "mark_delivered",
    "mark_delivery_failed",
    "mark_reminded",
    "overdue_new_requests",
    "record_step",
    "requests_to_deliver",
    "search_requests",
    "set_client_asking",
    "stats",
]


async def add_request_event(
    *,
    session: AsyncSession,
    request_id: int,
    actor_id: int | None,
    actor_name: str,
    action: str,
    at: datetime,
    from_status: str | None = None,
    to_status: str | None = None,
    note: str | None = None,
) -> RequestEvent:
    """Append an entry to a request's audit trail."""
    event = RequestEvent(
        request_id=request_id,
        actor_id=actor_id,
        actor_name=actor_name,
        action=action,
        from_status=from_status,
        to_status=to_status,
        note=note,
        at=at,
    )
    session.add(event)
    await session.flush()
    return event


async def apply_action(
    *,
    session: AsyncSession,
    request: ConsultationRequest,
    action: Action,
    actor_id: int | None,
    actor_name: str,
    at: datetime,
    note: str | None = None,
    retry_at: datetime | None = None,
) -> RequestEvent:
    """Make the move ``action`` on a request if the lifecycle table allows it, and audit it.

    Raises ``IllegalMoveError`` (nothing written) for a move the table does not allow, or a
    reopen without a note. Taking records who and when; the first call result (no answer,
    booked, declined) records when the center first called; "no answer" counts attempts;
    ``retry`` (after no answer) sets when to call again (``retry_at``).
    """
    assert request.id is not None
    before = Status(request.status)
    move = transition(before, action, note=note)
    after = move.to or before
    if action is Action.RETRY:
        if retry_at is None:
            raise IllegalMoveError("'retry' needs the time to call again")
        request.retry_at = retry_at
        request.reminded_at = None
    if move.to is not None:
        request.status = after
        if after is Status.TAKEN or (request.taken_by is None and actor_id is not None):
            request.taken_by = actor_id
            request.taken_by_name = actor_name
            request.taken_at = request.taken_at or at
        if action in _CALLS and request.first_call_at is None:
            request.first_call_at = at
        if after is Status.NO_ANSWER:
            request.attempts += 1
        if after is not Status.NO_ANSWER:
            request.retry_at = None
        request.closed_at = at if after is Status.CLOSED else None
        if action is Action.REOPEN:
            request.taken_by = request.taken_by_name = request.taken_at = None
            request.announced_at = None
    request.updated_at = at
    session.add(request)
    kinds = {Action.RETRY: "retry", Action.FOLLOW_UP: "follow_up"}
    return await add_request_event(
        session=session,
        request_id=request.id,
        actor_id=actor_id,
        actor_name=actor_name,
        action=kinds.get(action, "status"),
        from_status=before if move.to is not None else None,
        to_status=after if move.to is not None else None,
        note=retry_at.isoformat() if action is Action.RETRY and retry_at else note,
        at=at,
    )


_CALLS = (Action.NO_ANSWER, Action.BOOKED, Action.DECLINED)


async def list_events(*, session: AsyncSession, request_id: int) -> list[RequestEvent]:
    """A request's audit trail, oldest first."""
    result = await session.exec(
        select(RequestEvent)
        .where(col(RequestEvent.request_id) == request_id)
        .order_by(col(RequestEvent.at), col(RequestEvent.id))
    )
    return list(result.all())


def _priority() -> Any:
    """Requests that need a doctor's word or came back after a red flag come first."""
    return case(
        (
            (col(ConsultationRequest.outcome) == "CLEAR")
            | (col(ConsultationRequest.red_flag_changed) == True),  # noqa: E712 - SQL
            0,
        ),
        else_=1,
    )


async def list_open_requests(
    *, session: AsyncSession, offset: int = 0, limit: int = 10
) -> list[ConsultationRequest]:
    """Open requests in queue order: priority first, then oldest first."""
    result = await session.exec(
        select(ConsultationRequest)
        .where(col(ConsultationRequest.status).in_(OPEN_STATUSES))
        .order_by(_priority(), col(ConsultationRequest.created_at), col(ConsultationRequest.id))
        .offset(offset)
        .limit(limit)
    )
    return list(result.all())


async def count_open_requests(*, session: AsyncSession) -> int:
    """How many requests are open."""
    result = await session.exec(
        select(func.count())
        .select_from(ConsultationRequest)
        .where(col(ConsultationRequest.status).in_(OPEN_STATUSES))
    )
    return int(result.one())


async def search_requests(
    *,
    session: AsyncSession,
    status: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
    queue_order: bool = False,
) -> list[ConsultationRequest]:
    """Requests by status and creation time (for the command line).

    Oldest first; with ``queue_order``, the way staff work them: open requests first, in
    queue order (see ``list_open_requests``), then the rest, oldest first.
    """
    query = select(ConsultationRequest)
    if status is not None:
        query = query.where(col(ConsultationRequest.status) == status)
    if since is not None:
        query = query.where(col(ConsultationRequest.created_at) >= since)
    if queue_order:
        is_open = case((col(ConsultationRequest.status).in_(OPEN_STATUSES), 0), else_=1)
        query = query.order_by(is_open, _priority())
    query = query.order_by(col(ConsultationRequest.created_at), col(ConsultationRequest.id))
    if limit is not None:
        query = query.limit(limit)
    return list((await session.exec(query)).all())


async def latest_request_of_client(
    *, session: AsyncSession, client_id: int
) -> ConsultationRequest | None:
    """The client's most recent request, if any."""
    result = await session.exec(
        select(ConsultationRequest)
        .where(col(ConsultationRequest.client_id) == client_id)
        .order_by(col(ConsultationRequest.created_at).desc(), col(ConsultationRequest.id).desc())
        .limit(1)
    )
    return result.first()


# --- delivery to the staff group ----------------------------------------------------


async def requests_to_deliver(
    *, session: AsyncSession, limit: int = 50
) -> list[ConsultationRequest]:
    """Requests whose card has not been posted to the staff group yet, oldest first."""
    result = await session.exec(
        select(ConsultationRequest)
        .where(col(ConsultationRequest.card_message_id).is_(None))
        .order_by(col(ConsultationRequest.id))
        .limit(limit)
        # Several bot processes (PostgreSQL): each row goes to one of them.
        .with_for_update(skip_locked=True)
    )
    return list(result.all())


async def mark_delivered(
    *, session: AsyncSession, request_id: int, chat_id: int, message_id: int
) -> None:
    """Remember where a request's card was posted (nothing happens if there is no request)."""
    values = {"card_chat_id": chat_id, "card_message_id": message_id, "delivery_error": None}
    await run(session, _MARK_CARD, {"card_of": request_id, **values, "card_at": utcnow()})


async def mark_delivery_failed(*, session: AsyncSession, request_id: int, error: str) -> None:
    """Record why posting the card failed; the request stays queued for re-delivery."""
    values = {"delivery_error": error[:500], "card_at": utcnow()}
    await run(session, _MARK_CARD_FAILED, {"card_of": request_id, **values})


_REQUESTS = table(ConsultationRequest)
_MARK_CARD = direct(
    update(_REQUESTS)
    .where(_REQUESTS.c.id == bindparam("card_of"))
    .values(
        card_chat_id=bindparam("card_chat_id"),
        card_message_id=bindparam("card_message_id"),
        delivery_error=bindparam("delivery_error"),
        updated_at=bindparam("card_at"),
    )
)
_MARK_CARD_FAILED = direct(
    update(_REQUESTS)
    .where(_REQUESTS.c.id == bindparam("card_of"))
    .values(delivery_error=bindparam("delivery_error"), updated_at=bindparam("card_at"))
)


async def overdue_new_requests(
    *, session: AsyncSession, created_before: datetime, announced_before: datetime
) -> list[ConsultationRequest]:
    """Requests still ``new`` since before ``created_before``, not announced since then."""
    result = await session.exec(
        select(ConsultationRequest)
        .where(col(ConsultationRequest.status) == "new")
        .where(col(ConsultationRequest.created_at) < created_before)
        .where(
            col(ConsultationRequest.announced_at).is_(None)
            | (col(ConsultationRequest.announced_at) < announced_before)
        )
        .order_by(col(ConsultationRequest.created_at))
        .with_for_update(skip_locked=True)
    )
    return list(result.all())


async def mark_announced(
    *, session: AsyncSession, request: ConsultationRequest, at: datetime
) -> None:
    """Remember when a request was last announced to staff."""
    request.announced_at = at
    session.add(request)
    await session.flush()


# --- call-backs --------------------------------------------------------------------------


async def callbacks_to_remind(*, session: AsyncSession) -> list[ConsultationRequest]:
    """Requests waiting for a call-back staff were not reminded of yet, soonest first."""
    result = await session.exec(
        select(ConsultationRequest)
        .where(col(ConsultationRequest.status) == Status.NO_ANSWER)
        .where(col(ConsultationRequest.retry_at).is_not(None))
        .where(col(ConsultationRequest.reminded_at).is_(None))
        .order_by(col(ConsultationRequest.retry_at), col(ConsultationRequest.id))
        .with_for_update(skip_locked=True)
    )
    return list(result.all())


async def mark_reminded(
    *, session: AsyncSession, request: ConsultationRequest, at: datetime
) -> None:
    """Remember that staff were reminded of the request's call-back."""
    request.reminded_at = at
    session.add(request)
    await session.flush()


# --- retention ---------------------------------------------------------------------------


async def erase_expired(*, session: AsyncSession, closed_before: datetime, at: datetime) -> int:
    """Erase the personal data of requests closed before ``closed_before``; return how many.

    Kept for the statistics: outcome, status, source, language, flow version, timestamps and
    who on the staff worked it. Erased: name, phone, call time, answers, facts, reasons and
    rule ids (they tell a health condition), red flags, and the notes of the audit trail.
    Also erased: dialogues not touched since ``closed_before`` (their state holds the answers)
    and relays of questions older than that.
    """
    expired = list(
        (
            await session.exec(
                select(ConsultationRequest)
                .where(col(ConsultationRequest.closed_at) < closed_before)
                .where(col(ConsultationRequest.status) == Status.CLOSED)
                .where(col(ConsultationRequest.erased_at).is_(None))
            )
        ).all()
    )
    for request in expired:
        request.name = request.phone = request.preferred_time = None
        request.answers, request.facts, request.reasons, request.rule_ids = [], {}, [], []
        request.withdrawn_red_flags = []
        request.delivery_error = None
        request.erased_at = at
        session.add(request)
    ids = [r.id for r in expired]
    if ids:
        await session.exec(
            update(RequestEvent).where(col(RequestEvent.request_id).in_(ids)).values(note=None)
        )
    await session.exec(delete(Relay).where(col(Relay.at) < closed_before))
    await session.exec(
        delete(DialogueSession).where(col(DialogueSession.updated_at) < closed_before)
    )
    await session.flush()
    return len(expired)


# --- asking staff a question ----------------------------------------------------------


async def set_client_asking(*, session: AsyncSession, client_id: int, asking: bool) -> None:
    """Switch the client's "asking staff a question" mode."""
    client = await session.get(Client, client_id)
    if client is not None:
        client.asking = asking
        session.add(client)
        await session.flush()


async def add_relay(
    *, session: AsyncSession, client_id: int, staff_chat_id: int, staff_message_id: int
) -> Relay | None:
    """Remember that a staff-group message carries this client's question; None if the client
    has erased their data meanwhile (the message was posted before the erasure reached it)."""
    if await session.get(Client, client_id) is None:
        return None
    relay = Relay(
        client_id=client_id, staff_chat_id=staff_chat_id, staff_message_id=staff_message_id
    )
    session.add(relay)
    await session.flush()
    return relay


async def find_relay(
    *, session: AsyncSession, staff_chat_id: int, staff_message_id: int
) -> Relay | None:
    """The relay a staff reply answers, if any."""
    result = await session.exec(
        select(Relay)
        .where(col(Relay.staff_chat_id) == staff_chat_id)
        .where(col(Relay.staff_message_id) == staff_message_id)
    )
    return result.first()


# --- the funnel and statistics --------------------------------------------------------


async def record_step(
    *, session: AsyncSession, client_id: int, node: str, flow_version: str, at: datetime
) -> None:
    """Record that a client reached a question (one event per step)."""
    if on_driver(session):
        await fetch_in(
            session, _RECORD_STEP_PG, client_id, node, flow_version, as_utc(at), held=True
        )
        return
    await run(
        session,
        _RECORD_STEP,
        {"client_id": client_id, "node": node, "flow_version": flow_version, "at": at},
    )


_RECORD_STEP = direct(
    insert(table(StepEvent)).values(
        client_id=bindparam("client_id"),
        node=bindparam("node"),
        flow_version=bindparam("flow_version"),
        at=bindparam("at"),
    )
)
_RECORD_STEP_PG = (
    "INSERT INTO step_events (client_id, node, flow_version, at) VALUES ($1, $2, $3, $4)"
)


async def funnel(*, session: AsyncSession, since: datetime) -> list[tuple[str, int, int]]:
    """Per question: how many clients reached it since ``since``, and how many stopped there.

    A client "stopped" at the last question they reached; for end nodes that means finished.
    """
    rows = (
        await session.exec(
            select(StepEvent.client_id, StepEvent.node, StepEvent.at, StepEvent.id)
            .where(col(StepEvent.at) >= since)
            .order_by(col(StepEvent.at), col(StepEvent.id))
        )
    ).all()
    reached: dict[str, set[int]] = {}
    last: dict[int, str] = {}
    order: list[str] = []
    for client_id, node, _, _ in rows:
        if node not in reached:
            reached[node] = set()
            order.append(node)
        reached[node].add(client_id)
        last[client_id] = node
    stopped = Counter(last.values())
    return [(node, len(reached[node]), stopped[node]) for node in order]


@dataclass
class Stats:
    """Queue figures for a period."""

    new: int = 0
    taken: int = 0
    booked: int = 0
    declined: int = 0
    no_answer: int = 0
    closed: int = 0
    median_first_call_minutes: float | None = None
    by_outcome: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, int] = field(default_factory=dict)


async def stats(*, session: AsyncSession, since: datetime, until: datetime) -> Stats:
    """Requests made in [since, until) and status changes made in that period."""
    made = (
        await session.exec(
            select(ConsultationRequest)
            .where(col(ConsultationRequest.created_at) >= since)
            .where(col(ConsultationRequest.created_at) < until)
        )
    ).all()
    out = Stats(new=len(made))
    out.by_outcome = dict(Counter(r.outcome for r in made))
    out.by_source = dict(Counter(r.source or "direct" for r in made))
    changes: Sequence[Any] = (
        await session.exec(
            select(RequestEvent.request_id, RequestEvent.to_status)
            .where(col(RequestEvent.action) == "status")
            .where(col(RequestEvent.at) >= since)
            .where(col(RequestEvent.at) < until)
        )
    ).all()
    per_status: dict[str, set[int]] = {}
    for request_id, to_status in changes:
        per_status.setdefault(to_status, set()).add(request_id)
    for name in ("taken", "booked", "declined", "no_answer", "closed"):
        setattr(out, name, len(per_status.get(name, set())))
    called = (
        await session.exec(
            select(ConsultationRequest.created_at, ConsultationRequest.first_call_at)
            .where(col(ConsultationRequest.first_call_at) >= since)
            .where(col(ConsultationRequest.first_call_at) < until)
        )
    ).all()
    waits = [(first - made_at).total_seconds() / 60 for made_at, first in called if first]
    out.median_first_call_minutes = statistics.median(waits) if waits else None
    return out

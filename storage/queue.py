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

from sqlalchemy import case, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.models import Client, ConsultationRequest, Relay, RequestEvent, StepEvent

__all__ = [
    "OPEN_STATUSES",
    "STATUSES",
    "Stats",
    "add_relay",
    "add_request_event",
    "change_status",
    "count_open_requests",
    "find_relay",
    "funnel",
    "latest_request_of_client",
    "list_events",
    "list_open_requests",
    "mark_announced",
    "mark_delivered",
    "mark_delivery_failed",
    "overdue_new_requests",
    "record_step",
    "requests_to_deliver",
    "search_requests",
    "set_client_asking",
    "stats",
]

#: Every status a request can have, in workflow order.
STATUSES = ("new", "taken", "no_answer", "booked", "declined", "closed")
#: Statuses that still need a call.
OPEN_STATUSES = ("new", "taken", "no_answer")


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


async def change_status(
    *,
    session: AsyncSession,
    request: ConsultationRequest,
    to_status: str,
    actor_id: int | None,
    actor_name: str,
    at: datetime,
    note: str | None = None,
    retry_at: datetime | None = None,
) -> RequestEvent:
    """Move a request to ``to_status``, keep its workflow fields in step, and audit it.

    Taking records who and when; the first call outcome (no answer, booked, declined)
    records when the center first called; "no answer" counts attempts.
    """
    if to_status not in STATUSES:
        raise ValueError(f"unknown status {to_status!r}; expected one of {', '.join(STATUSES)}")
    assert request.id is not None
    before = request.status
    request.status = to_status
    if to_status == "taken" or (request.taken_by is None and actor_id is not None):
        request.taken_by = actor_id
        request.taken_by_name = actor_name
        request.taken_at = request.taken_at or at
    if to_status in ("no_answer", "booked", "declined") and request.first_call_at is None:
        request.first_call_at = at
    if to_status == "no_answer":
        request.attempts += 1
        request.retry_at = retry_at
    elif to_status != "taken":
        request.retry_at = None
    if to_status == "closed":
        request.closed_at = at
    request.updated_at = at
    session.add(request)
    return await add_request_event(
        session=session,
        request_id=request.id,
        actor_id=actor_id,
        actor_name=actor_name,
        action="status",
        from_status=before,
        to_status=to_status,
        note=note,
        at=at,
    )


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
) -> list[ConsultationRequest]:
    """Requests by status and creation time, oldest first (for the command line)."""
    query = select(ConsultationRequest)
    if status is not None:
        query = query.where(col(ConsultationRequest.status) == status)
    if since is not None:
        query = query.where(col(ConsultationRequest.created_at) >= since)
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
    )
    return list(result.all())


async def mark_delivered(
    *, session: AsyncSession, request: ConsultationRequest, chat_id: int, message_id: int
) -> None:
    """Remember where a request's card was posted."""
    request.card_chat_id = chat_id
    request.card_message_id = message_id
    request.delivery_error = None
    session.add(request)
    await session.flush()


async def mark_delivery_failed(
    *, session: AsyncSession, request: ConsultationRequest, error: str
) -> None:
    """Record why posting the card failed; the request stays queued for re-delivery."""
    request.delivery_error = error[:500]
    session.add(request)
    await session.flush()


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
    )
    return list(result.all())


async def mark_announced(
    *, session: AsyncSession, request: ConsultationRequest, at: datetime
) -> None:
    """Remember when a request was last announced to staff."""
    request.announced_at = at
    session.add(request)
    await session.flush()


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
) -> Relay:
    """Remember that a staff-group message carries this client's question."""
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
    session.add(StepEvent(client_id=client_id, node=node, flow_version=flow_version, at=at))
    await session.flush()


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

"""Staff actions on a request: one use case for the Telegram card and the command line.

The lifecycle table (``storage.lifecycle``) decides which moves are allowed; this module
works in the caller's transaction, turns "call again in 1 h / 3 h / tomorrow 10:00" into a
time within the center's opening hours, and reports what was done. No Telegram call happens here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.settings import Settings
from bot.staff import callback_hour, followed_up, into_opening_hours
from storage import (
    Action,
    AsyncSession,
    ConsultationRequest,
    IllegalMoveError,
    Status,
    apply_action,
    get_request,
)

__all__ = [
    "MAX_REQUEST_ID",
    "Acted",
    "IllegalMoveError",
    "RequestNotFoundError",
    "act",
    "parse_request_id",
    "retry_time",
]

#: Request ids are 32-bit integers in the database; anything larger names no request.
MAX_REQUEST_ID = 2**31 - 1


class RequestNotFoundError(LookupError):
    """There is no request with that id."""


@dataclass(frozen=True)
class Acted:
    """What an action did: the request as it is now, and its status before."""

    request: ConsultationRequest
    before: Status
    #: Whether the client has been sent the closing follow-up.
    followed: bool


def parse_request_id(text: str) -> int | None:
    """``12`` or ``#12`` as a request id; None for anything else (including huge numbers)."""
    digits = text.strip().lstrip("#")
    if not digits.isascii() or not digits.isdigit():
        return None
    value = int(digits)
    return value if 1 <= value <= MAX_REQUEST_ID else None


def retry_time(choice: str, now: datetime, settings: Settings) -> datetime:
    """When to call again: ``r1`` in an hour, ``r3`` in three, ``rt`` tomorrow at 10:00.

    A time outside the opening hours moves to the next opening (local time).
    """
    if choice == "r1":
        at = now + timedelta(hours=1)
    elif choice == "r3":
        at = now + timedelta(hours=3)
    elif choice == "rt":
        local = now.astimezone(settings.zone) + timedelta(days=1)
        at = local.replace(
            hour=callback_hour(settings), minute=0, second=0, microsecond=0
        ).astimezone(now.tzinfo)
    else:
        raise ValueError(f"unknown call-back choice {choice!r}")
    return into_opening_hours(at, settings)


async def act(
    session: AsyncSession,
    *,
    request_id: int,
    action: Action,
    actor_id: int | None,
    actor_name: str,
    at: datetime,
    note: str | None = None,
    retry_at: datetime | None = None,
) -> Acted:
    """Make ``action`` on request ``request_id`` in the caller's transaction, audited.

    Raises ``RequestNotFoundError``, or ``IllegalMoveError`` (with a message for the user)
    when the lifecycle table does not allow the move; nothing is written then (the caller's
    transaction is rolled back by the exception).
    """
    if not 1 <= request_id <= MAX_REQUEST_ID:
        raise RequestNotFoundError(request_id)
    request = await get_request(session=session, request_id=request_id)
    if request is None or request.id is None:
        raise RequestNotFoundError(request_id)
    before = Status(request.status)
    await apply_action(
        session=session, request=request, action=action, actor_id=actor_id,
        actor_name=actor_name, at=at, note=note, retry_at=retry_at,
    )  # fmt: skip
    followed = await followed_up(session, request.id)
    return Acted(request=request, before=before, followed=followed)

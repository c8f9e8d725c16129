"""A consultation request's lifecycle as one table: its statuses and the actions between them.

Pure data and lookups, no I/O. ``storage.queue.apply_action`` writes a move the table allows;
the staff card's buttons and the command line's ``set-status`` are drawn from the same table,
so a move that is not in it cannot be made from anywhere. In short: a new request is taken,
called (booked, declined or no answer; after no answer, a time to call again), and closed;
a request that is done goes back to new only through an explicit reopen with a note.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "OPEN_STATUSES",
    "STATUSES",
    "TRANSITIONS",
    "Action",
    "IllegalMoveError",
    "Status",
    "Transition",
    "action_to",
    "allowed",
    "card_actions",
    "transition",
]


class Status(StrEnum):
    """Where a request stands, in workflow order."""

    NEW = "new"
    TAKEN = "taken"
    NO_ANSWER = "no_answer"
    BOOKED = "booked"
    DECLINED = "declined"
    CLOSED = "closed"


class Action(StrEnum):
    """What staff do to a request; the value is also the card button's callback token."""

    TAKE = "take"
    BOOKED = "booked"
    DECLINED = "declined"
    NO_ANSWER = "noans"
    RETRY = "retry"
    CLOSE = "close"
    FOLLOW_UP = "follow"
    REOPEN = "reopen"


@dataclass(frozen=True)
class Transition:
    """One allowed move: ``action`` from a status leads to ``to`` (None: the status stays).

    ``row`` places its button on the card (equal rows share a line); None: no button (the
    command line only). ``needs_note``: refused without a note saying why.
    """

    action: Action
    to: Status | None
    row: int | None
    needs_note: bool = False


_CALL_RESULTS = (
    Transition(Action.BOOKED, Status.BOOKED, 0),
    Transition(Action.DECLINED, Status.DECLINED, 0),
    Transition(Action.NO_ANSWER, Status.NO_ANSWER, 1),
)
_REOPEN = Transition(Action.REOPEN, Status.NEW, None, needs_note=True)

#: The whole lifecycle: from each status, the moves allowed and the buttons its card shows.
TRANSITIONS: dict[Status, tuple[Transition, ...]] = {
    Status.NEW: (
        Transition(Action.TAKE, Status.TAKEN, 0),
        *(Transition(t.action, t.to, None) for t in _CALL_RESULTS),
        Transition(Action.CLOSE, Status.CLOSED, None),
    ),
    Status.TAKEN: (*_CALL_RESULTS, Transition(Action.CLOSE, Status.CLOSED, 3)),
    Status.NO_ANSWER: (
        *_CALL_RESULTS,
        Transition(Action.RETRY, None, 2),
        Transition(Action.CLOSE, Status.CLOSED, 3),
        Transition(Action.TAKE, Status.TAKEN, None),
    ),
    Status.BOOKED: (Transition(Action.CLOSE, Status.CLOSED, 0), _REOPEN),
    Status.DECLINED: (Transition(Action.CLOSE, Status.CLOSED, 0), _REOPEN),
    Status.CLOSED: (Transition(Action.FOLLOW_UP, None, 0), _REOPEN),
}

#: Every status, in workflow order, and those that still need a call.
STATUSES: tuple[Status, ...] = tuple(Status)
OPEN_STATUSES: tuple[Status, ...] = (Status.NEW, Status.TAKEN, Status.NO_ANSWER)


class IllegalMoveError(ValueError):
    """A move the lifecycle table does not allow; the message says what is allowed instead."""


def allowed(status: Status) -> tuple[Transition, ...]:
    """The moves allowed from ``status``."""
    return TRANSITIONS[status]


def transition(status: Status, action: Action, *, note: str | None = None) -> Transition:
    """The move ``action`` makes from ``status``, or ``IllegalMoveError`` saying why not."""
    for move in TRANSITIONS[status]:
        if move.action is action:
            if move.needs_note and not (note and note.strip()):
                raise IllegalMoveError(f"'{action}' needs a note saying why")
            return move
    possible = ", ".join(m.action.value for m in TRANSITIONS[status]) or "none"
    raise IllegalMoveError(
        f"'{action}' is not possible for a request that is {status}; possible: {possible}"
    )


def action_to(status: Status, target: Status) -> Action:
    """The action that moves a request from ``status`` to ``target`` (for ``set-status``).

    Reopening is never chosen implicitly: a request that is done can only go back to new
    through an explicit reopen with a note.
    """
    for move in TRANSITIONS[status]:
        if move.to is target and move.action is not Action.REOPEN:
            return move.action
    if any(m.to is target and m.action is Action.REOPEN for m in TRANSITIONS[status]):
        raise IllegalMoveError(
            f"a request that is {status} does not go back to {target}: reopen it with a note"
        )
    targets = sorted(
        {m.to.value for m in TRANSITIONS[status] if m.to and m.action is not Action.REOPEN}
    )
    raise IllegalMoveError(
        f"a request that is {status} cannot become {target}; "
        f"possible: {', '.join(targets) or 'none'}"
    )


def card_actions(status: Status) -> list[list[Action]]:
    """The card's button rows for ``status``, in order."""
    rows: dict[int, list[Action]] = {}
    for move in TRANSITIONS[status]:
        if move.row is not None:
            rows.setdefault(move.row, []).append(move.action)
    return [rows[key] for key in sorted(rows)]

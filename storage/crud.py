"""Reading and writing rows with plain values; every write flushes and none commits.

The caller owns the transaction, so a consultation request and the dialogue state that
produced it are stored together or not at all::

    async with sessionmaker() as session, session.begin():
        await create_request(session=session, ...)
        await save_dialogue(session=session, ...)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import EllipsisType
from typing import Any

from sqlalchemy import CursorResult, bindparam, delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.core import direct, fetch_in, json_text, on_driver, run, shifted, table
from storage.errors import DuplicateClientError
from storage.flowstore import ACTIVE_CHECKSUM, active_flow_checksum
from storage.messaging import CLAIM_PG, Claim, claim_args, claim_update
from storage.models import (
    Client,
    ConsultationRequest,
    DialogueSession,
    Relay,
    RequestCreate,
    RequestEvent,
    StepEvent,
)
from storage.sqltypes import as_utc, utcnow

__all__ = [
    "Turn",
    "create_client",
    "create_request",
    "delete_client_data",
    "get_client",
    "get_dialogue",
    "get_or_create_client",
    "get_prompt_message_id",
    "get_request",
    "list_requests",
    "read_turn",
    "save_dialogue",
    "set_client_language",
    "set_prompt_message_id",
]


async def get_client(*, session: AsyncSession, telegram_id: int) -> Client | None:
    """Return the client with this Telegram user id, if any."""
    result = await session.exec(_GET_CLIENT, params={"telegram_id": telegram_id})
    return result.first()


# Built once: SQLAlchemy then neither rebuilds them nor recomputes their cache keys.
_GET_CLIENT = select(Client).where(col(Client.telegram_id) == bindparam("telegram_id"))


async def create_client(
    *,
    session: AsyncSession,
    telegram_id: int | None,
    channel: str,
    language: str,
    source: str | None = None,
) -> Client:
    """Insert a client; ``telegram_id`` is None for clients of the terminal chat.

    Raises ``DuplicateClientError`` if the Telegram id is taken; the caller's transaction
    stays usable, since the insert ran in a savepoint.
    """
    client = Client(telegram_id=telegram_id, channel=channel, language=language, source=source)
    try:
        async with session.begin_nested():
            session.add(client)
    except IntegrityError as exc:
        if telegram_id is not None and await get_client(session=session, telegram_id=telegram_id):
            raise DuplicateClientError(telegram_id) from exc
        raise
    return client


async def get_or_create_client(
    *,
    session: AsyncSession,
    telegram_id: int,
    channel: str,
    language: str,
    source: str | None = None,
) -> Client:
    """Return the client with this Telegram id, creating it if needed.

    ``channel``, ``language`` and ``source`` are used only when creating; an existing client
    keeps its own. Safe against a concurrent insert of the same client.
    """
    client = await get_client(session=session, telegram_id=telegram_id)
    if client is not None:
        return client
    try:
        return await create_client(
            session=session,
            telegram_id=telegram_id,
            channel=channel,
            language=language,
            source=source,
        )
    except DuplicateClientError:
        client = await get_client(session=session, telegram_id=telegram_id)
        assert client is not None  # DuplicateClientError is raised only once it exists
        return client


async def set_client_language(*, session: AsyncSession, client_id: int, language: str) -> None:
    """Change the language of a client; nothing happens if there is no such client."""
    await session.exec(
        update(Client)
        .where(col(Client.id) == client_id)
        .values(language=language, updated_at=utcnow())
    )


async def get_dialogue(
    *, session: AsyncSession, client_id: int, for_update: bool = False
) -> DialogueSession | None:
    """Return the live dialogue of a client, if any.

    ``for_update`` locks the row until the transaction ends (``SELECT ... FOR UPDATE`` on
    PostgreSQL; SQLite has a single writer anyway and ignores it).
    """
    statement = _GET_DIALOGUE_FOR_UPDATE if for_update else _GET_DIALOGUE
    result = await session.exec(statement, params={"dialogue_of": client_id})
    return result.first()


_GET_DIALOGUE = select(DialogueSession).where(
    col(DialogueSession.client_id) == bindparam("dialogue_of")
)
_GET_DIALOGUE_FOR_UPDATE = _GET_DIALOGUE.with_for_update()


@dataclass(frozen=True)
class Turn:
    """What a client's step reads, in one statement (see ``read_turn``)."""

    client: Client | None
    dialogue: DialogueSession | None
    #: The checksum of the flow's active version (None: the flow has none yet).
    active: str | None
    #: With a claim: whether it was made (False: the update was processed before).
    claimed: bool | None = None


async def read_turn(
    *, session: AsyncSession, telegram_id: int, flow_name: str, claim: Claim | None = None
) -> Turn:
    """The client with this Telegram id, their dialogue and the flow's active version: what
    one step of the dialogue reads, in one statement.

    The client's row is locked until the transaction ends (``SELECT ... FOR UPDATE OF
    clients`` on PostgreSQL; SQLite has a single writer anyway), so one client's steps run
    one at a time. With no such client yet, only the active version is read (a second
    statement, once per client).

    With ``claim``, the inbox update being processed is claimed first (``claim_update``; on
    PostgreSQL in the same statement) and ``Turn.claimed`` says whether it was.
    """
    if claim is not None:
        if on_driver(session):
            rows = await fetch_in(
                session, _CLAIM_TURN_PG, telegram_id, flow_name, *claim_args(claim)
            )
            return dataclasses.replace(_turn(rows[0][1:]), claimed=bool(rows[0][0]))
        claimed = await claim_update(session=session, **claim._asdict())
        turn = await read_turn(session=session, telegram_id=telegram_id, flow_name=flow_name)
        return dataclasses.replace(turn, claimed=claimed)
    if on_driver(session):
        rows = await fetch_in(session, _TURN_PG, telegram_id, flow_name)
        if rows:
            return _turn(rows[0])
        return Turn(None, None, await active_flow_checksum(session=session, flow_name=flow_name))
    params = {"turn_of": telegram_id, "active_of": flow_name}
    row = (await session.exec(_TURN, params=params)).first()
    if row is not None:
        client, dialogue, active = row
        return Turn(client, dialogue, active)
    return Turn(None, None, await active_flow_checksum(session=session, flow_name=flow_name))


_TURN = (
    select(Client, DialogueSession, ACTIVE_CHECKSUM.scalar_subquery())
    .outerjoin(DialogueSession, col(DialogueSession.client_id) == col(Client.id))
    .where(col(Client.telegram_id) == bindparam("turn_of"))
    .with_for_update(of=Client)
)


_CLIENT_COLUMNS = ("id", "telegram_id", "channel", "language", "source", "asking",
                   "created_at", "updated_at")  # fmt: skip
_DIALOGUE_COLUMNS = ("id", "client_id", "flow_name", "flow_version", "state", "last_update_id",
                     "prompt_message_id", "updated_at")  # fmt: skip
_TURN_PG = f"""
SELECT {", ".join(f"c.{name}" for name in _CLIENT_COLUMNS)},
    {", ".join(f"d.{name}" for name in _DIALOGUE_COLUMNS)},
    (SELECT checksum FROM flow_versions WHERE flow_name = $2 AND active)
FROM clients AS c LEFT JOIN dialogue_sessions AS d ON d.client_id = c.id
WHERE c.telegram_id = $1
FOR UPDATE OF c
"""


# The claim (``storage.messaging._CLAIM_PG``) and the turn in one statement, one row always:
# whether the update was claimed, then the client's and the dialogue's columns (NULL when
# the client is new) and the active checksum.
_CLAIM_TURN_PG = f"""
WITH claimed AS ({shifted(CLAIM_PG, 2)}),
c AS (SELECT * FROM clients WHERE telegram_id = $1 FOR UPDATE)
SELECT (SELECT count(*) FROM claimed) > 0,
    {", ".join(f"c.{name}" for name in _CLIENT_COLUMNS)},
    {", ".join(f"d.{name}" for name in _DIALOGUE_COLUMNS)},
    (SELECT checksum FROM flow_versions WHERE flow_name = $2 AND active)
FROM (SELECT 1) AS one LEFT JOIN c ON true LEFT JOIN dialogue_sessions AS d ON d.client_id = c.id
"""


def _turn(row: Any) -> Turn:
    """A ``Turn`` from a row of ``_TURN_PG``: the objects are built, not loaded (the session
    does not know them; what changes them keeps them in step, as ``save_dialogue`` does)."""
    values = tuple(row)
    client_values = values[: len(_CLIENT_COLUMNS)]
    dialogue_values = values[len(_CLIENT_COLUMNS) : -1]
    if client_values[0] is None:
        return Turn(None, None, values[-1])
    client = Client(**dict(zip(_CLIENT_COLUMNS, client_values, strict=True)))
    dialogue = None
    if dialogue_values[0] is not None:
        dialogue = DialogueSession(**dict(zip(_DIALOGUE_COLUMNS, dialogue_values, strict=True)))
    return Turn(client, dialogue, values[-1])


async def get_prompt_message_id(*, session: AsyncSession, client_id: int) -> int | None:
    """The message carrying the client's live keyboard (None: none, or no dialogue)."""
    found: int | None = await run(
        session, _GET_PROMPT, {"prompted_client": client_id}, take=CursorResult.scalar
    )
    return found


async def set_prompt_message_id(
    *, session: AsyncSession, client_id: int, message_id: int | None
) -> None:
    """Remember which message carries the client's live keyboard (None: no such message).

    Nothing happens if the client has no dialogue yet.
    """
    await run(
        session,
        _SET_PROMPT,
        {"prompted_client": client_id, "prompted_message": message_id, "prompted_at": utcnow()},
    )


_DIALOGUES = table(DialogueSession)
_GET_PROMPT = select(_DIALOGUES.c.prompt_message_id).where(
    _DIALOGUES.c.client_id == bindparam("prompted_client")
)
_SET_PROMPT = direct(
    update(_DIALOGUES)
    .where(_DIALOGUES.c.client_id == bindparam("prompted_client"))
    .values(prompt_message_id=bindparam("prompted_message"), updated_at=bindparam("prompted_at"))
)


async def save_dialogue(
    *,
    session: AsyncSession,
    client_id: int,
    flow_name: str,
    flow_version: str,
    state: Mapping[str, Any],
    last_update_id: int | None = None,
    stored: DialogueSession | None | EllipsisType = ...,
) -> DialogueSession:
    """Store the dialogue of a client, replacing the one stored before (one row per client).

    ``last_update_id`` None keeps the stored id: the mark only ever moves forward. ``stored``
    is the client's row if the caller read it already in this transaction, None if it read
    that there is none (with the client's row locked, so none can appear meanwhile).
    """
    dialogue = await get_dialogue(session=session, client_id=client_id) if stored is ... else stored
    if dialogue is None:
        dialogue = DialogueSession(
            client_id=client_id,
            flow_name=flow_name,
            flow_version=flow_version,
            state=dict(state),
            last_update_id=last_update_id,
        )
        try:
            async with session.begin_nested():
                session.add(dialogue)
            return dialogue
        except IntegrityError:
            # Either the client does not exist (re-raised below) or a concurrent
            # transaction stored its dialogue first (updated below).
            dialogue = await get_dialogue(session=session, client_id=client_id)
            if dialogue is None:
                raise
    assert dialogue.id is not None
    values: dict[str, Any] = {
        "flow_name": flow_name,
        "flow_version": flow_version,
        "state": dict(state),
        "last_update_id": dialogue.last_update_id if last_update_id is None else last_update_id,
        "updated_at": utcnow(),
    }
    # One UPDATE of the row, without the ORM's flush; the loaded object is told the new
    # values as stored ones, so it reads them and has nothing left to write.
    if on_driver(session):
        await fetch_in(
            session,
            _SAVE_DIALOGUE_PG,
            dialogue.id,
            flow_name,
            flow_version,
            json_text(values["state"]),
            values["last_update_id"],
            as_utc(values["updated_at"]),
            held=True,
        )
    else:
        await run(session, _SAVE_DIALOGUE, {**values, "saved_id": dialogue.id})
    for key, value in values.items():
        set_committed_value(dialogue, key, value)
    return dialogue


_SAVE_DIALOGUE_PG = (
    "UPDATE dialogue_sessions SET flow_name = $2, flow_version = $3, state = $4::json,"
    " last_update_id = $5, updated_at = $6 WHERE id = $1"
)
_SAVED = ("flow_name", "flow_version", "state", "last_update_id", "updated_at")
_SAVE_DIALOGUE = direct(
    update(_DIALOGUES)
    .where(_DIALOGUES.c.id == bindparam("saved_id"))
    .values({name: bindparam(name) for name in _SAVED})
)


async def create_request(
    *, session: AsyncSession, request: RequestCreate, created_at: datetime | None = None
) -> ConsultationRequest:
    """Insert ``request`` with status ``new``, made at ``created_at`` (default: now)."""
    made = {"created_at": created_at, "updated_at": created_at} if created_at else {}
    row = ConsultationRequest.model_validate(request, update=made)
    session.add(row)
    await session.flush()
    return row


async def get_request(*, session: AsyncSession, request_id: int) -> ConsultationRequest | None:
    """Return a consultation request by id, if any."""
    return await session.get(ConsultationRequest, request_id)


async def list_requests(
    *, session: AsyncSession, status: str | None = None, limit: int = 100
) -> list[ConsultationRequest]:
    """Return up to ``limit`` requests, oldest first, optionally only those with ``status``."""
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    statement = select(ConsultationRequest)
    if status is not None:
        statement = statement.where(col(ConsultationRequest.status) == status)
    statement = statement.order_by(
        col(ConsultationRequest.created_at), col(ConsultationRequest.id)
    ).limit(limit)
    result = await session.exec(statement)
    return list(result.all())


async def delete_client_data(*, session: AsyncSession, client_id: int) -> None:
    """Delete a client with their dialogue and requests; nothing happens if there is none.

    Deletes explicitly rather than relying on ON DELETE CASCADE, so it also holds on a SQLite
    connection without foreign keys, and objects already loaded leave the session.
    """
    requests = select(ConsultationRequest.id).where(col(ConsultationRequest.client_id) == client_id)
    await session.exec(delete(RequestEvent).where(col(RequestEvent.request_id).in_(requests)))
    await session.exec(
        delete(ConsultationRequest).where(col(ConsultationRequest.client_id) == client_id)
    )
    await session.exec(delete(StepEvent).where(col(StepEvent.client_id) == client_id))
    await session.exec(delete(Relay).where(col(Relay.client_id) == client_id))
    await session.exec(delete(DialogueSession).where(col(DialogueSession.client_id) == client_id))
    await session.exec(delete(Client).where(col(Client.id) == client_id))

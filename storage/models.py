"""The tables: who wrote to us, where their dialogue stands, and what they asked for.

Timestamps are aware UTC on every backend (see ``storage.sqltypes.AwareDateTime``). JSON
columns are plain ``sqlalchemy.JSON`` so the same models run on SQLite and PostgreSQL; the ORM
does not see in-place changes to them, so assign a new value (``crud`` does) rather than
mutating the stored list or dict.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ConfigDict
from sqlalchemy import JSON, BigInteger, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from storage.sqltypes import AwareDateTime, utcnow

__all__ = [
    "Client",
    "InboxUpdate",
    "Lease",
    "OutboxMessage",
    "ConsultationRequest",
    "DialogueSession",
    "FlowVersion",
    "Relay",
    "RequestBase",
    "RequestCreate",
    "RequestEvent",
    "StepEvent",
]

# Deterministic constraint names: the same on SQLite and PostgreSQL, and needed by alembic's
# batch mode to drop or alter constraints on SQLite in later migrations.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _created_at() -> Any:
    return Field(default_factory=utcnow, sa_type=AwareDateTime())


def _updated_at() -> Any:
    return Field(
        default_factory=utcnow, sa_type=AwareDateTime(), sa_column_kwargs={"onupdate": utcnow}
    )


class Client(SQLModel, table=True):
    """A person who wrote to the center, through Telegram or the terminal chat."""

    __tablename__ = "clients"

    id: int | None = Field(default=None, primary_key=True)
    # None for clients of the terminal chat; unique among the rest.
    telegram_id: int | None = Field(default=None, sa_type=BigInteger, unique=True)
    channel: str  # "telegram" | "terminal"
    language: str  # "ru" | "en"
    source: str | None = None  # where the client came from, e.g. a deep-link tag
    # True while the client is asking staff a question (the dialogue waits meanwhile).
    asking: bool = False
    created_at: datetime = _created_at()
    updated_at: datetime = _updated_at()


class DialogueSession(SQLModel, table=True):
    """The one live dialogue of a client: the engine's serialized state and its flow."""

    __tablename__ = "dialogue_sessions"

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = Field(foreign_key="clients.id", ondelete="CASCADE", unique=True)
    flow_name: str
    flow_version: str
    state: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    # The Telegram update id processed last, to drop redelivered updates.
    last_update_id: int | None = Field(default=None, sa_type=BigInteger)
    # The Telegram message that carries the client's live keyboard, to edit or retire it.
    prompt_message_id: int | None = Field(default=None, sa_type=BigInteger)
    updated_at: datetime = _updated_at()


class RequestBase(SQLModel):
    """What a finished dialogue hands in: the outcome, why, and how to reach the client."""

    client_id: int = Field(foreign_key="clients.id", ondelete="CASCADE", index=True)
    flow_name: str
    flow_version: str
    language: str
    outcome: str  # EMERGENCY | STOP | LATER | CLEAR | OK
    rule_ids: list[str] = Field(default_factory=list, sa_type=JSON)
    reasons: list[str] = Field(default_factory=list, sa_type=JSON)
    # [{"node": ..., "question": ..., "answer": ...}, ...] in the order asked
    answers: list[dict[str, str]] = Field(default_factory=list, sa_type=JSON)
    facts: dict[str, list[str]] = Field(default_factory=dict, sa_type=JSON)
    name: str | None = None
    phone: str | None = None  # E.164
    preferred_time: str | None = None
    red_flag_changed: bool = False
    withdrawn_red_flags: list[str] = Field(default_factory=list, sa_type=JSON)
    source: str | None = None  # the client's source when the request was made


class RequestCreate(RequestBase):
    """A new request as a caller builds it, validated: tuples and frozen mappings become
    lists and dicts, a string where a list belongs is refused, an unknown field too."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]


class ConsultationRequest(RequestBase, table=True):
    """A finished intake and how staff work on it (status, calls, the card in the group)."""

    __tablename__ = "consultation_requests"

    id: int | None = Field(default=None, primary_key=True)
    status: str = Field(default="new", index=True)
    # Who works on it, and how it went (kept in step with the audit trail, RequestEvent).
    taken_by: int | None = Field(default=None, sa_type=BigInteger)
    taken_by_name: str | None = None
    taken_at: datetime | None = Field(default=None, sa_type=AwareDateTime())
    first_call_at: datetime | None = Field(default=None, sa_type=AwareDateTime())
    attempts: int = 0
    retry_at: datetime | None = Field(default=None, sa_type=AwareDateTime())
    # When staff were reminded of the call-back at retry_at (None: not yet).
    reminded_at: datetime | None = Field(default=None, sa_type=AwareDateTime())
    closed_at: datetime | None = Field(default=None, sa_type=AwareDateTime())
    # The card in the staff group; None until it was posted (then it is re-delivered).
    card_chat_id: int | None = Field(default=None, sa_type=BigInteger)
    card_message_id: int | None = Field(default=None, sa_type=BigInteger)
    delivery_error: str | None = None
    announced_at: datetime | None = Field(default=None, sa_type=AwareDateTime())
    # When the personal data were erased after the retention period (None: still kept).
    erased_at: datetime | None = Field(default=None, sa_type=AwareDateTime())
    created_at: datetime = _created_at()
    updated_at: datetime = _updated_at()


class RequestEvent(SQLModel, table=True):
    """The audit trail of a request: every status change and note, never edited."""

    __tablename__ = "request_events"

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="consultation_requests.id", ondelete="CASCADE", index=True)
    actor_id: int | None = Field(default=None, sa_type=BigInteger)
    actor_name: str
    action: str  # "status" | "note" | "follow_up" | "delivered"
    from_status: str | None = None
    to_status: str | None = None
    note: str | None = None
    at: datetime = _created_at()


class StepEvent(SQLModel, table=True):
    """One dialogue step a client reached (the funnel in /stats)."""

    __tablename__ = "step_events"

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = Field(foreign_key="clients.id", ondelete="CASCADE", index=True)
    flow_version: str
    node: str
    at: datetime = Field(default_factory=utcnow, sa_type=AwareDateTime(), index=True)


class Relay(SQLModel, table=True):
    """A client's question forwarded to the staff group, so a reply can find its way back."""

    __tablename__ = "relays"

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = Field(foreign_key="clients.id", ondelete="CASCADE", index=True)
    staff_chat_id: int = Field(sa_type=BigInteger)
    staff_message_id: int = Field(sa_type=BigInteger, index=True)
    at: datetime = _created_at()


class FlowVersion(SQLModel, table=True):
    """A published version of a dialogue flow: its full YAML, who published it and why."""

    __tablename__ = "flow_versions"
    __table_args__ = (UniqueConstraint("flow_name", "number"),)

    id: int | None = Field(default=None, primary_key=True)
    flow_name: str = Field(index=True)
    number: int
    checksum: str = Field(index=True)
    yaml: str = Field(sa_type=Text)
    author: str
    note: str = ""
    active: bool = False
    created_at: datetime = _created_at()


class InboxUpdate(SQLModel, table=True):
    """An update from Telegram, stored before Telegram is told it arrived.

    ``done_at`` is set in the same transaction as the update's effects (see
    ``storage.messaging.claim_update``), so an update takes effect once, whatever is
    redelivered or replayed after a crash.
    """

    __tablename__ = "inbox"

    update_id: int = Field(
        primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    # The chat its effects belong to: updates of one chat are processed in order.
    lane: int = Field(sa_type=BigInteger)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    received_at: datetime = _created_at()
    done_at: datetime | None = Field(default=None, sa_type=AwareDateTime(), index=True)
    # "done" (its unit of work committed), "ignored" (nothing handled it), "failed".
    outcome: str | None = None
    attempts: int = 0


class OutboxMessage(SQLModel, table=True):
    """A Bot API call to make, stored in the transaction that decided it.

    The sender makes the calls of one chat in ``id`` order and records what came back.
    ``params`` may hold references resolved when sending (see ``storage.messaging``);
    ``bind`` says what to record from the result (the message carrying a client's live
    keyboard, a request's card in the staff group, a relayed question).
    """

    __tablename__ = "outbox"

    id: int | None = Field(default=None, primary_key=True)
    lane: int = Field(sa_type=BigInteger, index=True)
    method: str
    params: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    bind: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    created_at: datetime = _created_at()
    sent_at: datetime | None = Field(default=None, sa_type=AwareDateTime(), index=True)
    message_id: int | None = Field(default=None, sa_type=BigInteger)
    attempts: int = 0
    # Why a call was given up (Telegram refused it); None when it went through.
    error: str | None = None


class Lease(SQLModel, table=True):
    """Who worked on a lane (a chat's inbox or outbox) until when, across processes.

    Unused: lanes are locked with advisory locks now (``storage.locks``). The table stays so
    that the schema, and the migrations, do not change.
    """

    __tablename__ = "leases"

    key: str = Field(primary_key=True)
    owner: str
    until: datetime = Field(sa_type=AwareDateTime())

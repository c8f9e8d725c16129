"""The output port: every Telegram call the bot makes is decided here, inside a unit of work.

A handler, a job or an admin command opens ``unit(services)``: one transaction in which it
reads what it needs, decides, writes its rows and records the calls to make (``Out``). The
calls are stored in the outbox in that same transaction; after the commit the sender
(``bot.sender``) makes them, in order per chat, and records what came back. So a committed
decision is always delivered, a rolled-back one never is, and nothing is sent twice.

An update from the inbox is claimed (marked processed) by the first unit of work of its
handler, in that unit's transaction: its effects and its "done" mark are stored together.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from telegram import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
)

from storage import (
    AsyncSession,
    Claim,
    WaitingCall,
    claim_update,
    drop_writes,
    enqueue_calls,
    hold_writes,
    release_writes,
    utcnow,
)

if TYPE_CHECKING:
    from bot.context import Services

__all__ = [
    "PROCESSING",
    "Markup",
    "Out",
    "Processing",
    "Superseded",
    "Work",
    "call_ref",
    "markup_dict",
    "prompt_ref",
    "unit",
]

Markup = InlineKeyboardMarkup | ReplyKeyboardMarkup | ReplyKeyboardRemove


class Superseded(Exception):
    """The update was already processed (by another process, or before a restart)."""


@dataclass
class Processing:
    """The inbox update being processed in this task, and what became of it."""

    update_id: int
    claimed: bool = False
    failed: bool = False


#: Set by the dispatcher around each update it processes.
PROCESSING: ContextVar[Processing | None] = ContextVar("processing", default=None)


def prompt_ref(client_id: int) -> dict[str, int]:
    """A message id resolved when sending: the message carrying the client's live keyboard."""
    return {"$prompt": client_id}


def call_ref(call_id: int) -> dict[str, int]:
    """A message id resolved when sending: the message an earlier call of the outbox sent
    (its id from ``Out.flush``)."""
    return {"$call": call_id}


def markup_dict(markup: Markup | None) -> dict[str, Any] | None:
    """The markup as the Bot API takes it: what PTB's ``to_dict`` gives (built directly for
    the common inline keyboard of plain callback buttons: ``to_dict`` was 2% of the bot's
    time)."""
    if markup is None:
        return None
    if isinstance(markup, InlineKeyboardMarkup) and markup.inline_keyboard:
        rows = []
        for row in markup.inline_keyboard:
            buttons = []
            for button in row:
                if not _plain(button):
                    return markup.to_dict()  # a link, a web app, a style...: PTB's fields
                buttons.append({"callback_data": button.callback_data, "text": button.text})
            rows.append(buttons)
        return {"inline_keyboard": rows}
    return markup.to_dict()


#: An inline button's fields besides its text and callback data (whatever this PTB has).
_OTHER_FIELDS = tuple(
    name for name in InlineKeyboardButton.__slots__ if name not in ("text", "callback_data")
)


def _plain(button: InlineKeyboardButton) -> bool:
    """Whether a button is only a text and callback data (a string)."""
    return (
        isinstance(button.callback_data, str)
        and not button.api_kwargs
        and all(getattr(button, name, None) is None for name in _OTHER_FIELDS)
    )


@dataclass
class Out:
    """Records Bot API calls into the outbox, in the unit of work's transaction.

    The calls are kept until the unit ends (or ``flush``) and then stored in one statement.
    """

    session: AsyncSession
    at: datetime
    pending: list[dict[str, Any]] = field(default_factory=list)
    #: The calls stored, as stored (handed to the sender after the commit).
    stored: list[WaitingCall] = field(default_factory=list)

    async def call(
        self, lane: int, method: str, params: dict[str, Any], bind: dict[str, Any] | None = None
    ) -> None:
        """Record any call (in this unit's order)."""
        self.pending.append(
            {
                "lane": lane,
                "method": method,
                "params": {k: v for k, v in params.items() if v is not None},
                "bind": bind,
            }
        )

    async def flush(self) -> list[int]:
        """Store the calls recorded so far; returns their outbox ids (for ``call_ref``)."""
        calls, self.pending = self.pending, []
        numbers = await enqueue_calls(session=self.session, calls=calls, at=self.at)
        self.stored.extend(
            WaitingCall(number, call["lane"], call["method"], call["params"], call["bind"])
            for number, call in zip(numbers, calls, strict=True)
        )
        return numbers

    async def send(
        self,
        chat_id: int,
        text: str,
        *,
        markup: Markup | None = None,
        bind: dict[str, Any] | None = None,
        html: bool = True,
    ) -> None:
        """Send a text message (HTML unless ``html`` is False), without link previews."""
        params: dict[str, Any] = {
            "chat_id": chat_id,
            "text": text,
            "reply_markup": markup_dict(markup),
            "link_preview_options": {"is_disabled": True},
        }
        if html:
            params["parse_mode"] = "HTML"
        await self.call(chat_id, "sendMessage", params, bind)

    async def edit(
        self,
        chat_id: int,
        message_id: int | dict[str, int],
        text: str,
        *,
        markup: InlineKeyboardMarkup | None = None,
        bind: dict[str, Any] | None = None,
        or_send: bool = False,
    ) -> None:
        """Replace a message's text and keyboard; with ``or_send``, send it anew if the message
        cannot be edited (deleted, or too old)."""
        params: dict[str, Any] = {
            "chat_id": chat_id,
            "message_id": message_id,
            "text": text,
            "parse_mode": "HTML",
            "reply_markup": markup_dict(markup),
            "link_preview_options": {"is_disabled": True},
        }
        if or_send:
            bind = {**(bind or {}), "or_send": True}
        await self.call(chat_id, "editMessageText", params, bind)

    async def edit_markup(
        self,
        chat_id: int,
        message_id: int | dict[str, int],
        markup: InlineKeyboardMarkup | None = None,
    ) -> None:
        """Replace (or, with None, remove) a message's inline keyboard.

        Removing the keyboard of a client's live question (``prompt_ref``) also records that
        the client has no live question until the next one is shown.
        """
        params = {"chat_id": chat_id, "message_id": message_id, "reply_markup": markup_dict(markup)}
        bind = None
        if isinstance(message_id, dict) and "$prompt" in message_id and markup is None:
            bind = {"unprompt": message_id["$prompt"]}
        await self.call(chat_id, "editMessageReplyMarkup", params, bind)

    async def answer(
        self, chat_id: int, query_id: str, text: str | None = None, *, alert: bool = False
    ) -> None:
        """Answer a button press (in the chat's order, so before what the press changed)."""
        params: dict[str, Any] = {"callback_query_id": query_id}
        if text:
            params["text"] = text[:200]
        if alert:
            params["show_alert"] = True
        await self.call(chat_id, "answerCallbackQuery", params)

    async def document(
        self, chat_id: int, data: bytes, filename: str, *, caption: str | None = None
    ) -> None:
        """Send a file."""
        params = {
            "chat_id": chat_id,
            "document": _file(data, filename),
            "caption": caption,
            "parse_mode": "HTML" if caption else None,
        }
        await self.call(chat_id, "sendDocument", params)

    async def photo(
        self, chat_id: int, data: bytes, filename: str, *, caption: str | None = None
    ) -> None:
        """Send a picture."""
        params = {
            "chat_id": chat_id,
            "photo": _file(data, filename),
            "caption": caption,
            "parse_mode": "HTML" if caption else None,
        }
        await self.call(chat_id, "sendPhoto", params)


def _file(data: bytes, filename: str) -> dict[str, str]:
    return {"$file": base64.b64encode(data).decode("ascii"), "filename": filename}


@dataclass
class Work:
    """One unit of work: the open transaction, its time and its output."""

    session: AsyncSession
    out: Out
    at: datetime
    #: The update's claim, left to the unit's body (``unit(..., deferred=True)``): whoever
    #: takes it makes it (``storage.read_turn`` does, in the statement that reads the
    #: client) and raises ``Superseded`` if it fails; otherwise the unit makes it at its end.
    claim: Claim | None = None

    def take_claim(self) -> Claim | None:
        """The claim still to make, which the caller now makes (None: none is left)."""
        claim, self.claim = self.claim, None
        return claim


@asynccontextmanager
async def unit(
    services: Services, *, claim: bool = True, outcome: str = "done", deferred: bool = False
) -> AsyncIterator[Work]:
    """One transaction with an output port; the sender is handed its calls after the commit.

    Inside the dispatcher, the first unit of an update claims it (``claim``); if it was
    already processed, ``Superseded`` is raised before anything is done.

    ``deferred`` is for a client's step, whose statements the unit gathers into as few round
    trips as it can. The body may make the claim in a statement of its own (``Work.claim``:
    the step claims it as it reads the client); it must do nothing outside the transaction
    before that, since the claim may still fail (and all it wrote is undone). The step's
    writes whose rows nobody reads back (the dialogue's state, the step event) are held and
    go with the outbox's INSERT (``storage.hold_writes``).
    """
    processing = PROCESSING.get()
    claiming = claim and processing is not None and not processing.claimed
    at = services.clock()
    async with services.sessionmaker() as session:
        try:
            async with session.begin():
                pending = None
                if claiming:
                    assert processing is not None
                    pending = Claim(processing.update_id, utcnow(), outcome)
                    if not deferred:
                        await _claim(session, pending)
                        pending = None
                if deferred:
                    hold_writes(session)
                out = Out(session, at)
                work = Work(session, out, at, pending)
                yield work
                left = work.take_claim()
                if left is not None:
                    await _claim(session, left)
                await out.flush()
                await release_writes(session)
        finally:
            drop_writes(session)
        # Committed: the sender takes the calls at once (not after closing the session).
        services.hand_sender(out.stored)
        if claiming:
            assert processing is not None
            processing.claimed = True  # committed: its effects and its mark together


async def _claim(session: AsyncSession, claim: Claim) -> None:
    """Claim the update (``storage.claim_update``); ``Superseded`` if it was processed."""
    if not await claim_update(session=session, **claim._asdict()):
        raise Superseded(claim.update_id)

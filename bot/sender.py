"""The sender: the one place that calls Telegram with what the outbox holds.

Calls of one chat (a lane) are made one at a time in the order they were decided; lanes run
in parallel, so a slow or rate-limited chat (the staff group) holds up only itself. After a
call the sender records, in one transaction (on PostgreSQL, when all it records beside the
call is the client's live keyboard, in one statement), that it was made, the message id it
produced and what that id means (the client's live keyboard, a request's card, a relayed
question).

Retries live here and in the rate limiter: 429s are waited out; a call that never reached
Telegram (connection refused, connect timeout) is retried with back-off for as long as it
takes; one Telegram answers with a server error (5xx) is retried for up to ``GIVE_UP_AFTER``
seconds and then recorded as failed, so that a call Telegram cannot handle does not hold up
its chat for good (a card is posted again by the housekeeping); a send whose answer was lost
on the way back (read timeout) is not repeated, because Telegram may have delivered it.
Across processes (PostgreSQL), a lane is locked (see ``bot.lanes``), so one process at a time
sends a chat's messages.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from telegram import InputFile
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TimedOut
from telegram.ext import ExtBot
from telegram.warnings import PTBUserWarning

from bot.lanes import BATCH, LaneWorker, seconds
from bot.transport import MaybeDelivered, NotDelivered, NotSent
from storage import (
    AsyncSession,
    LaneLocks,
    Made,
    WaitingCall,
    add_relay,
    ahead_of,
    enqueue_calls,
    get_prompt_message_id,
    keyboards_once,
    mark_delivered,
    mark_delivery_failed,
    next_calls,
    next_calls_alone,
    outbox_lanes,
    record_call,
    record_calls_alone,
    sent_message_id,
    set_prompt_message_id,
    take_calls,
    utcnow,
)

__all__ = ["Sender"]

logger = logging.getLogger(__name__)

# The sender makes every call through one generic method on purpose (the outbox stores
# method names and parameters); PTB suggests the named methods for known ones.
warnings.filterwarnings("ignore", message=r"Please use 'Bot\.", category=PTBUserWarning)

Record = tuple[WaitingCall, int | None, str | None]

#: Calls recorded with the next one: made again after a crash, they show nothing twice.
_DEFERRABLE = {"answerCallbackQuery"}

#: Methods a repeat cannot duplicate: repeating them is always safe.
_IDEMPOTENT = {
    "editMessageText",
    "editMessageReplyMarkup",
    "deleteMessage",
    "setMyCommands",
}
# (Answering a press twice is refused by Telegram, and a lost answer only leaves the button's
# spinner a few seconds longer: after an uncertain timeout it is not repeated either.)

#: Seconds a call Telegram keeps answering with a server error (5xx) is tried again before
#: it is given up (recorded as failed): during an outage a reply older than this is stale.
GIVE_UP_AFTER = 600.0


class Sender(LaneWorker[WaitingCall]):
    """Makes the outbox's calls; ``wake`` it after a commit, ``run`` it in the background."""

    name = "out"

    def __init__(
        self, bot: ExtBot[Any], sessionmaker: async_sessionmaker[AsyncSession], **lanes: Any
    ) -> None:
        """``lanes``: owner, shared, concurrency, tick (see ``LaneWorker``)."""
        super().__init__(sessionmaker, **lanes)
        self.bot = bot
        # Until a call Telegram took is recorded, a crash would make it again: the record
        # goes ahead of the steps waiting to write (on SQLite; see storage.db). On SQLite,
        # whose writes take turns anyway, together with the records of other chats that came
        # meanwhile; on PostgreSQL each chat's on its own (one statement, or a transaction),
        # in parallel (one transaction for many would make each wait for all the others'
        # round trips).
        bind = sessionmaker.kw.get("bind")
        grouped = isinstance(bind, AsyncEngine) and bind.dialect.name == "sqlite"
        self._records = _GroupCommit(ahead_of(sessionmaker), self._record_one, grouped=grouped)
        #: Calls made, for the benchmark and the logs.
        self.made = 0

    async def stop(self, grace: float = 5.0) -> None:
        """Finish the calls in hand within ``grace`` seconds, and record what was made."""
        await super().stop(grace)
        await self._records.drain()

    async def lanes(self, session: AsyncSession) -> list[int]:
        """Chats with calls waiting."""
        return await outbox_lanes(session=session)

    async def batch(self, session: AsyncSession, lane: int) -> list[WaitingCall]:
        """The chat's next calls."""
        return await next_calls(session=session, lane=lane)

    async def batch_alone(self, engine: AsyncEngine, lane: int) -> list[WaitingCall] | None:
        """The chat's next calls, read alone on PostgreSQL."""
        return await next_calls_alone(engine=engine, lane=lane)

    async def take(
        self, locks: LaneLocks, key: str, lane: int
    ) -> tuple[int | None, list[WaitingCall] | None]:
        """Lock the chat's lane and read its next calls in one round trip."""
        return await take_calls(locks, key=key, lane=lane, limit=BATCH)

    def key(self, item: WaitingCall) -> tuple[int, int]:
        """A call's chat and id."""
        return item.lane, item.id

    async def handle(self, items: list[WaitingCall]) -> None:
        """Make the calls in order and record them.

        A call whose repeat is harmless (answering a press) is recorded together with the
        next one, so a press and its edit cost one transaction; a send is recorded at once.
        """
        deferred: list[Record] = []  # this lane's own: another lane's flush must not take them
        for item in items:
            if not self.working(item.lane):
                break
            await self._make(item, deferred)
        await self._flush(deferred)

    # --- one call ---------------------------------------------------------------------

    async def _make(self, call: WaitingCall, deferred: list[Record]) -> None:
        """Make one call until it is made or given up, and record it."""
        bind = call.bind or {}
        params = await self._resolve(call.params)
        if params is None:  # what it edits was never shown: nothing to do
            await self._record(call, None, "nothing to edit", deferred)
            return
        method = call.method
        delay = 0.5
        failing_since: float | None = None  # when Telegram first answered a server error
        while True:
            try:
                result = await self.bot.do_api_request(method, api_kwargs=params)
            except RetryAfter as exc:
                await asyncio.sleep(min(max(seconds(exc.retry_after), 0.1), 60.0))
                continue
            except BadRequest as exc:
                text = str(exc).lower()
                if "not modified" in text:
                    await self._record(call, _message_id(params.get("message_id")), None, deferred)
                    return
                if bind.get("or_send") and method == "editMessageText":
                    # The message cannot be edited (deleted, too old): show it anew.
                    method = "sendMessage"
                    params = {k: v for k, v in params.items() if k != "message_id"}
                    continue
                logger.warning("Telegram refused %s in chat %s: %s", method, call.lane, exc)
                await self._record(call, None, f"refused: {exc}"[:500], deferred)
                return
            except Forbidden as exc:
                logger.warning("chat %s does not take messages (%s)", call.lane, method)
                await self._record(call, None, f"forbidden: {exc}"[:500], deferred)
                return
            except TimedOut as exc:
                if method not in _IDEMPOTENT and not _never_sent(exc):
                    # Telegram may have delivered it: a repeat could show it twice.
                    logger.warning("%s in chat %s timed out; not repeated", method, call.lane)
                    await self._record(call, None, "timed out; may have been delivered", deferred)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            except NetworkError as exc:
                if method not in _IDEMPOTENT and _maybe_delivered(exc):
                    # The connection broke after the request left: a repeat could show it
                    # twice, as after a timeout.
                    logger.warning(
                        "%s in chat %s: connection lost; not repeated", method, call.lane
                    )
                    await self._record(
                        call, None, "connection lost; may have been delivered", deferred
                    )
                    return
                if _server_error(exc):
                    if failing_since is None:
                        failing_since = time.monotonic()
                    if time.monotonic() - failing_since >= GIVE_UP_AFTER:
                        logger.warning(
                            "%s in chat %s: Telegram kept answering %s; given up",
                            method, call.lane, exc,
                        )  # fmt: skip
                        await self._record(
                            call, None, f"given up: Telegram kept answering {exc}"[:500], deferred
                        )
                        return
                # No connection made, or Telegram's 5xx answer: try again.
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            self.made += 1
            message_id = result.get("message_id") if isinstance(result, dict) else None
            if message_id is None:
                message_id = _message_id(params.get("message_id"))
            await self._record(call, message_id, None, deferred)
            return

    async def _resolve(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """Fill in references (message ids known only now, files); None if one is unknown."""
        resolved: dict[str, Any] = {}
        for key, value in params.items():
            if isinstance(value, dict) and "$prompt" in value:
                async with self._reader() as session:
                    prompt = await get_prompt_message_id(
                        session=session, client_id=value["$prompt"]
                    )
                if prompt is None:
                    return None
                resolved[key] = prompt
            elif isinstance(value, dict) and "$call" in value:
                async with self._reader() as session:
                    found = await sent_message_id(session=session, call_id=value["$call"])
                if found is None:
                    return None
                resolved[key] = found
            elif isinstance(value, dict) and "$file" in value:
                resolved[key] = InputFile(
                    base64.b64decode(value["$file"]), filename=value.get("filename")
                )
            else:
                resolved[key] = value
        return resolved

    async def _record(
        self,
        call: WaitingCall,
        message_id: int | None,
        error: str | None,
        deferred: list[Record],
    ) -> None:
        """Record the call (with any deferred before it), in one transaction."""
        deferred.append((call, message_id, error))
        if call.method not in _DEFERRABLE:
            await self._flush(deferred)

    async def _flush(self, deferred: list[Record]) -> None:
        records = list(deferred)
        deferred.clear()
        if records and not await self._record_alone(records):
            await self._records.write(records)
            binds = [r[0].bind for r in records]
            told = {bind["notify"]["chat"] for bind in binds if bind and "notify" in bind}
            if told:
                self.wake(told)  # the notices just stored (``_record_one``)

    async def _record_alone(self, records: list[Record]) -> bool:
        """On PostgreSQL, record a lane's calls in one statement alone, if all they record
        beside themselves is a client's keyboard (once each); False if that is not done
        (then they are recorded in a transaction: a call recorded here meanwhile is
        recorded once, as by another process)."""
        engine = self._direct
        if engine is None:
            return False
        made: list[Made] = []
        for call, message_id, error in records:
            bind = call.bind or {}
            if set(bind) - {"prompt", "or_send"}:  # a card, a relay or an unprompt
                return False
            made.append(Made(call.id, message_id, error, bind.get("prompt")))
        if not keyboards_once(made):
            return False
        try:
            await record_calls_alone(engine=engine, made=made, at=utcnow())
        except Exception:  # noqa: BLE001 - recorded in a transaction instead
            lane = records[0][0].lane
            logger.warning("recording calls in chat %s alone failed", lane, exc_info=True)
            return False
        return True

    async def _record_one(
        self,
        session: AsyncSession,
        call: WaitingCall,
        message_id: int | None,
        error: str | None,
    ) -> None:
        """Record one call and what its message id means."""
        bind = call.bind or {}
        if not await record_call(
            session=session, call_id=call.id, at=utcnow(), message_id=message_id, error=error
        ):
            return  # recorded by another process meanwhile
        chat_id = call.lane  # a send's lane is its chat
        if "unprompt" in bind:
            await set_prompt_message_id(
                session=session, client_id=bind["unprompt"], message_id=None
            )
        if "prompt" in bind and error is None:
            await set_prompt_message_id(
                session=session, client_id=bind["prompt"], message_id=message_id
            )
        if "card" in bind:
            if error is None and message_id is not None:
                await mark_delivered(
                    session=session, request_id=bind["card"], chat_id=chat_id, message_id=message_id
                )
            else:
                await mark_delivery_failed(
                    session=session, request_id=bind["card"], error=error or ""
                )
        if "relay" in bind and error is None and message_id is not None:
            await add_relay(
                session=session,
                client_id=bind["relay"],
                staff_chat_id=chat_id,
                staff_message_id=message_id,
            )
        if "notify" in bind:
            # whoever waits for this message learns how it went, once it went
            notice = bind["notify"]
            params: dict[str, Any] = {
                "chat_id": notice["chat"],
                "text": notice["ok"] if error is None else notice["failed"],
                "parse_mode": "HTML",
                "link_preview_options": {"is_disabled": True},
            }
            if notice.get("markup") is not None:
                params["reply_markup"] = notice["markup"]
            call_to = {"lane": notice["chat"], "method": "sendMessage", "params": params}
            await enqueue_calls(session=session, calls=[{**call_to, "bind": None}], at=utcnow())


class _GroupCommit:
    """Writes records in as few transactions as possible: while one batch is being written,
    the records that come meanwhile (from other chats) wait and go together in the next.

    If a batch fails, each chat's records are written again on their own, so that one chat's
    trouble does not leave the others' calls unrecorded (made again after a crash).
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        write_one: Callable[[AsyncSession, WaitingCall, int | None, str | None], Awaitable[None]],
        *,
        grouped: bool,
    ) -> None:
        """Without ``grouped``, each ``write`` is a transaction of its own."""
        self._sessionmaker = sessionmaker
        self._write_one = write_one
        self._grouped = grouped
        self._waiting: list[tuple[list[Record], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def write(self, records: list[Record]) -> None:
        """Return once ``records`` are committed (or raise what writing them raised)."""
        if not self._grouped:
            await self._commit(records)
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((records, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="outbox records")
        await done

    async def drain(self) -> None:
        """Wait until every record handed in is written (or failed)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _write(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await self._commit([record for records, _ in batch for record in records])
            except Exception:  # noqa: BLE001 - each chat's records alone, then
                for records, done in batch:
                    try:
                        await self._commit(records)
                    except Exception as exc:  # noqa: BLE001 - its lane answers for it
                        _settle(done, exc)
                    else:
                        _settle(done, None)
                continue
            for _, done in batch:
                _settle(done, None)

    async def _commit(self, records: list[Record]) -> None:
        async with self._sessionmaker() as session, session.begin():
            for call, message_id, error in records:
                await self._write_one(session, call, message_id, error)


def _settle(done: asyncio.Future[None], exc: BaseException | None) -> None:
    if done.done():
        return  # its lane was cancelled (stopping)
    if exc is None:
        done.set_result(None)
    else:
        done.set_exception(exc)


def _message_id(value: Any) -> int | None:
    return value if isinstance(value, int) else None


def _maybe_delivered(exc: NetworkError) -> bool:
    """Whether the connection broke after the request was written (so Telegram may have acted
    on it): ``MaybeDelivered`` from ``bot.transport``, or httpx's read or protocol error."""
    cause = exc.__cause__
    return isinstance(exc, MaybeDelivered) or isinstance(
        cause, httpx.ReadError | httpx.WriteError | httpx.RemoteProtocolError
    )


def _server_error(exc: NetworkError) -> bool:
    """Whether Telegram answered with a server error (5xx), rather than no connection being
    made (``NotDelivered``, or an httpx error behind a proxy)."""
    return not isinstance(exc, NotDelivered | MaybeDelivered) and not isinstance(
        exc.__cause__, httpx.HTTPError
    )


def _never_sent(exc: TimedOut) -> bool:
    """Whether a timeout happened before the request left (so a repeat cannot duplicate):
    ``NotSent`` from ``bot.transport``, or httpx's pool or connect timeout (behind a proxy)."""
    cause = exc.__cause__
    return isinstance(exc, NotSent) or isinstance(cause, httpx.ConnectTimeout | httpx.PoolTimeout)

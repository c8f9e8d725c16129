"""The inbox: every update is stored before Telegram is told it arrived, then processed.

Polling asks for the next updates only after the last batch is committed (the offset of
``getUpdates`` is Telegram's receipt); the webhook answers 200 only after the commit. A
redelivered update is recognised by its id. The dispatcher processes the stored updates in
lanes (one chat in order, chats in parallel) through the Application's handlers; the first
unit of work of a handler marks its update processed together with its effects (see
``bot.outbox``), so an update takes effect once, even when a crash interrupts it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from telegram import Update
from telegram.error import InvalidToken, NetworkError, RetryAfter, TimedOut
from telegram.ext import Application

from bot.lanes import BATCH, LaneWorker, postgresql_engine, seconds
from bot.outbox import PROCESSING, Processing
from storage import (
    AsyncSession,
    LaneLocks,
    WaitingUpdate,
    claim_update,
    inbox_lanes,
    next_updates,
    next_updates_alone,
    store_updates,
    store_updates_alone,
    take_updates,
    utcnow,
)

__all__ = ["Dispatcher", "Poller", "WebhookServer", "lane_of", "receive"]

logger = logging.getLogger(__name__)


def lane_of(payload: dict[str, Any]) -> int:
    """The chat an update belongs to (its updates are processed in order)."""
    for key in ("message", "edited_message", "channel_post", "edited_channel_post"):
        message = payload.get(key)
        if isinstance(message, dict):
            return int(message.get("chat", {}).get("id", 0))
    query = payload.get("callback_query")
    if isinstance(query, dict):
        message = query.get("message")
        if isinstance(message, dict) and "chat" in message:
            return int(message["chat"].get("id", 0))
        return int(query.get("from", {}).get("id", 0))
    for key in ("my_chat_member", "chat_member", "chat_join_request"):
        event = payload.get(key)
        if isinstance(event, dict):
            return int(event.get("chat", {}).get("id", 0))
    return 0


async def receive(
    sessionmaker: async_sessionmaker[AsyncSession], payloads: list[dict[str, Any]]
) -> list[WaitingUpdate]:
    """Store updates (one transaction; on PostgreSQL one statement alone); return the new ones
    (not stored before), as stored."""
    rows = [
        (int(p["update_id"]), lane_of(p), p)
        for p in payloads
        if isinstance(p, dict) and isinstance(p.get("update_id"), int)
    ]
    if not rows:
        return []
    at = utcnow()
    engine = postgresql_engine(sessionmaker)
    if engine is not None:
        new = set(await store_updates_alone(engine=engine, updates=rows, at=at))
    else:
        async with sessionmaker() as session, session.begin():
            new = set(await store_updates(session=session, updates=rows, at=at))
    return [
        WaitingUpdate(update_id, lane, payload)
        for update_id, lane, payload in rows
        if update_id in new
    ]


class Dispatcher(LaneWorker[WaitingUpdate]):
    """Processes the stored updates through the Application's handlers."""

    name = "in"

    def __init__(
        self,
        app: Application,  # type: ignore[type-arg]
        sessionmaker: async_sessionmaker[AsyncSession],
        **lanes: Any,
    ) -> None:
        """``lanes``: owner, shared, concurrency, tick (see ``LaneWorker``)."""
        super().__init__(sessionmaker, **lanes)
        self.app = app
        #: Updates processed, for the benchmark.
        self.processed = 0

    async def lanes(self, session: AsyncSession) -> list[int]:
        """Chats with updates waiting."""
        return await inbox_lanes(session=session)

    async def batch(self, session: AsyncSession, lane: int) -> list[WaitingUpdate]:
        """The chat's oldest updates not processed yet."""
        return await next_updates(session=session, lane=lane)

    async def batch_alone(self, engine: AsyncEngine, lane: int) -> list[WaitingUpdate] | None:
        """The chat's next updates, read alone on PostgreSQL."""
        return await next_updates_alone(engine=engine, lane=lane)

    async def take(
        self, locks: LaneLocks, key: str, lane: int
    ) -> tuple[int | None, list[WaitingUpdate] | None]:
        """Lock the chat's lane and read its next updates in one round trip."""
        return await take_updates(locks, key=key, lane=lane, limit=BATCH)

    def key(self, item: WaitingUpdate) -> tuple[int, int]:
        """An update's chat and id."""
        return item.lane, item.update_id

    async def handle(self, items: list[WaitingUpdate]) -> None:
        """Run the updates through the handlers, one after the other."""
        for item in items:
            if not self.working(item.lane):
                return  # the rest stay in the inbox
            await self._process(item)

    async def _process(self, item: WaitingUpdate) -> None:
        """Run one update through the handlers; close it if no unit of work claimed it."""
        processing = Processing(item.update_id)
        token = PROCESSING.set(processing)
        try:
            update = Update.de_json(item.payload, self.app.bot)
            await self.app.process_update(update)
        except Exception:  # noqa: BLE001 - an update PTB cannot read is closed, not retried
            logger.exception("update %s could not be processed", item.update_id)
            processing.failed = True
        finally:
            PROCESSING.reset(token)
        self.processed += 1
        if not processing.claimed:
            async with self._sessionmaker() as session, session.begin():
                await claim_update(
                    session=session,
                    update_id=item.update_id,
                    at=utcnow(),
                    outcome="failed" if processing.failed else "ignored",
                )


#: Takes updates just stored (the dispatcher's ``hand``).
Hand = Callable[[list[WaitingUpdate]], None]


class Poller:
    """Long polling: fetch, store, and only then confirm (the next offset)."""

    def __init__(
        self,
        app: Application,  # type: ignore[type-arg]
        sessionmaker: async_sessionmaker[AsyncSession],
        hand: Hand,
        *,
        allowed_updates: list[str],
        timeout: int = 30,
    ) -> None:
        self.app = app
        self._sessionmaker = sessionmaker
        self._hand = hand
        self._allowed = allowed_updates
        self._timeout = timeout
        self._stopping = False
        self.offset: int | None = None

    async def run(self) -> None:
        """Poll until stopped; network trouble is waited out, a revoked token stops it."""
        bot = self.app.bot
        await bot.delete_webhook()  # polling and a webhook exclude each other
        delay = 1.0
        while not self._stopping:
            try:
                updates = await bot.do_api_request(
                    "getUpdates",
                    api_kwargs={
                        "offset": self.offset,
                        "timeout": self._timeout,
                        "allowed_updates": self._allowed,
                    },
                    read_timeout=self._timeout + 10,
                )
            except RetryAfter as exc:
                await asyncio.sleep(seconds(exc.retry_after))
                continue
            except InvalidToken:
                raise
            except (NetworkError, TimedOut):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            delay = 1.0
            if not isinstance(updates, list) or not updates:
                continue
            new = await self._store(updates)
            # Stored: the next request's offset tells Telegram they arrived.
            self.offset = max(int(u["update_id"]) for u in updates) + 1
            self._hand(new)

    async def _store(self, updates: list[dict[str, Any]]) -> list[WaitingUpdate]:
        delay = 1.0
        while True:
            try:
                return await receive(self._sessionmaker, updates)
            except Exception:  # noqa: BLE001 - not confirmed: keep them until stored
                logger.exception("could not store %s update(s); trying again", len(updates))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def stop(self) -> None:
        """Stop after the request in flight (its updates are not confirmed)."""
        self._stopping = True


class Receipts:
    """Stores posted updates in as few transactions as possible (a group commit): while one
    batch is being written, the updates that arrive meanwhile wait and go together in the
    next. Each poster learns when its update is stored; the dispatcher is handed each batch."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], hand: Hand) -> None:
        self._sessionmaker = sessionmaker
        self._hand = hand
        self._waiting: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def store(self, payload: dict[str, Any]) -> None:
        """Return once ``payload`` is stored (or raise what storing it raised)."""
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((payload, stored))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="inbox receipts")
        await stored

    async def _write(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                new = await receive(self._sessionmaker, [payload for payload, _ in batch])
            except Exception as exc:  # noqa: BLE001 - each poster answers for its own
                for _, stored in batch:
                    if not stored.done():
                        stored.set_exception(exc)
                continue
            for _, stored in batch:
                if not stored.done():
                    stored.set_result(None)
            self._hand(new)


class WebhookServer:
    """Telegram posts updates here; the answer is 200 only once the update is stored."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        hand: Hand,
        *,
        secret: str,
        path: str,
        listen: str,
        port: int,
    ) -> None:
        self._receipts = Receipts(sessionmaker, hand)
        self._secret = secret
        self._path = "/" + path.lstrip("/")
        self._listen = listen
        self._port = port
        self._server: Any = None

    async def start(self) -> None:
        """Listen (tornado, which python-telegram-bot's webhook extra brings)."""
        import tornado.httpserver
        import tornado.web

        outer = self

        class Handler(tornado.web.RequestHandler):
            async def post(self) -> None:
                await outer._post(self)

        app = tornado.web.Application([(self._path, Handler)])
        self._server = tornado.httpserver.HTTPServer(app)
        self._server.listen(self._port, address=self._listen)

    async def _post(self, handler: Any) -> None:
        token = handler.request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not secrets.compare_digest(token, self._secret):
            handler.set_status(403)
            return
        try:
            payload = json.loads(handler.request.body)
        except ValueError:
            handler.set_status(400)
            return
        if not isinstance(payload, dict) or not isinstance(payload.get("update_id"), int):
            handler.set_status(400)
            return
        try:
            await self._receipts.store(payload)
        except Exception:  # noqa: BLE001 - Telegram will deliver it again
            logger.exception("could not store update %s", payload.get("update_id"))
            handler.set_status(500)
            return
        handler.set_status(200)

    async def stop(self) -> None:
        """Stop accepting; requests in flight finish."""
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()

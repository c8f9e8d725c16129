"""The one factory that builds the Telegram Application: handlers, defaults, errors, commands."""

from __future__ import annotations

import html
import logging
import os
import secrets
import socket
import traceback
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from telegram import BotCommand, BotCommandScopeDefault, Update
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    ContextTypes,
    ExtBot,
)

from bot.context import BotContext, Services
from bot.flowsource import FlowRegistry
from bot.handlers import admin, client, staff
from bot.inbox import Dispatcher
from bot.outbox import PROCESSING, Superseded, unit
from bot.sender import Sender
from bot.settings import Settings
from bot.staff import announce_overdue, redeliver, remind_callbacks, schedule_pending_callbacks
from bot.transport import make_request
from flows import COMMANDS, t
from storage import (
    AsyncSession,
    erase_expired,
    get_client,
    get_dialogue,
    prune_messaging,
    truncate_wal,
    utcnow,
)

__all__ = [
    "ALLOWED_UPDATES",
    "MESSAGE_LIMIT",
    "build_application",
    "error_report",
    "run_housekeeping",
    "run_retention",
]

#: Telegram's limit on the length of a message's text.
MESSAGE_LIMIT = 4096
#: Old inbox and outbox rows deleted per transaction by housekeeping.
PRUNE_BATCH = 500
#: Connections kept to the Bot API for the bot's calls (getUpdates has one of its own).
HTTP_CONNECTIONS = 16

logger = logging.getLogger(__name__)

ALLOWED_UPDATES = [Update.MESSAGE, Update.EDITED_MESSAGE, Update.CALLBACK_QUERY]


def build_application(
    settings: Settings,
    *,
    registry: FlowRegistry,
    sessionmaker: async_sessionmaker[AsyncSession],
    rate_limit: bool | None = None,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
    clock: Callable[[], datetime] = utcnow,
    housekeeping: bool = True,
) -> Application:  # type: ignore[type-arg]
    """Build the bot: handlers by audience, HTML defaults, one error handler, menu commands.

    Nothing is registered at import time; ``settings.telegram_token`` must be set.
    """
    if settings.telegram_token is None:
        raise ValueError("TELEGRAM_TOKEN is not set")
    bot: ExtBot[Any] = ExtBot(
        settings.telegram_token.get_secret_value(),
        base_url=settings.telegram_base_url,
        base_file_url=settings.telegram_base_file_url,
        # The lean client of bot.transport (httpx only behind a proxy): a sixth of the CPU
        # per call.
        # A generous read timeout: a send whose answer is late is not repeated (the sender
        # cannot know whether Telegram showed it), so "late" should mean "lost". A call that
        # waited ``pool_timeout`` for a free connection was never sent: retried.
        request=make_request(
            settings.telegram_base_url, HTTP_CONNECTIONS, read_timeout=20, pool_timeout=10
        ),
        get_updates_request=make_request(settings.telegram_base_url, 1),
        rate_limiter=(
            AIORateLimiter(max_retries=3)
            if (settings.rate_limit if rate_limit is None else rate_limit)
            else None
        ),
    )
    builder = (
        ApplicationBuilder()
        .bot(bot)
        .context_types(ContextTypes(context=BotContext, bot_data=Services))
        # Updates come from the inbox (bot.inbox), not from PTB's updater; the dispatcher
        # serves chats in parallel and each chat's updates in order.
        .updater(None)
        .post_init(_post_init if housekeeping else _post_init_quiet)
    )
    if on_shutdown is not None:
        shutdown = on_shutdown

        async def _post_shutdown(_: Application) -> None:  # type: ignore[type-arg]
            await shutdown()

        builder = builder.post_shutdown(_post_shutdown)
    app = builder.build()
    services: Services = app.bot_data
    services.configure(registry=registry, sessionmaker=sessionmaker, settings=settings, clock=clock)
    engine = sessionmaker.kw.get("bind")
    shared = not (isinstance(engine, AsyncEngine) and engine.dialect.name == "sqlite")
    owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
    services.sender = Sender(bot, sessionmaker, owner=owner, shared=shared)
    services.dispatcher = Dispatcher(app, sessionmaker, owner=owner, shared=shared)
    admin.register(app)
    staff.register(app)
    client.register(app)
    app.add_error_handler(on_error)
    return app


async def _post_init(app: Application) -> None:  # type: ignore[type-arg]
    """Register the command menu, schedule stored call-backs and the periodic jobs."""
    await _post_init_quiet(app)
    services: Services = app.bot_data
    assert app.job_queue is not None  # the job-queue extra is a dependency
    app.job_queue.run_repeating(
        _housekeeping_job, interval=services.settings.housekeeping_seconds, name="housekeeping"
    )
    # Retention: once soon after start, then daily.
    app.job_queue.run_repeating(
        _retention_job, interval=timedelta(days=1), first=timedelta(minutes=1), name="retention"
    )


async def _post_init_quiet(app: Application) -> None:  # type: ignore[type-arg]
    """Register the command menu and schedule the call-backs stored in the database.

    Without the periodic jobs (tests run housekeeping and retention at moments they choose).
    """
    await _register_commands(app)
    services: Services = app.bot_data
    await schedule_pending_callbacks(
        app.job_queue, services.sessionmaker, services.settings, services.clock()
    )


async def _housekeeping_job(context: Any) -> None:
    await run_housekeeping(context.application)


async def _retention_job(context: Any) -> None:
    await run_retention(context.application)


async def run_retention(app: Application) -> int:  # type: ignore[type-arg]
    """Erase the personal data of requests closed more than RETENTION_DAYS ago; how many."""
    services: Services = app.bot_data
    now = services.clock()
    cutoff = now - timedelta(days=services.settings.retention_days)
    try:
        async with services.sessionmaker() as session, session.begin():
            erased = await erase_expired(session=session, closed_before=cutoff, at=now)
        engine = services.sessionmaker.kw.get("bind")
        if isinstance(engine, AsyncEngine):
            await truncate_wal(engine)  # old page images go too (SQLite)
    except Exception:  # noqa: BLE001 - tried again tomorrow; it is logged
        logger.exception("retention round failed")
        return 0
    if erased:
        logger.info("erased the personal data of %s request(s) closed before %s", erased, cutoff)
    return erased


async def run_housekeeping(app: Application) -> tuple[int, int]:  # type: ignore[type-arg]
    """One round of housekeeping; returns (cards delivered, requests announced).

    Also reminds staff of call-backs that are due, in case their job was lost.
    """
    services: Services = app.bot_data
    try:
        delivered = await redeliver(services)
        announced = await announce_overdue(services)
        # A safety net for call-back reminders whose job was lost; normally the job fires.
        await remind_callbacks(services)
        # Processed updates and made calls are kept a week for de-duplication, then go, a
        # few hundred at a time (on SQLite a statement runs on the event loop's thread).
        before = utcnow() - timedelta(days=7)
        while True:
            async with services.sessionmaker() as session, session.begin():
                pruned = await prune_messaging(session=session, before=before, limit=PRUNE_BATCH)
            if pruned < PRUNE_BATCH:
                break
    except Exception:  # noqa: BLE001 - the loop must survive a bad round; it is logged
        logger.exception("housekeeping round failed")
        return 0, 0
    return delivered, announced


async def _register_commands(app: Application) -> None:  # type: ignore[type-arg]
    """Prove the active flow (before any update is served), then register the command menu
    in Russian and English (and the default), through the outbox."""
    services: Services = app.bot_data
    await services.registry.prepare(services.sessionmaker)
    async with unit(services, claim=False) as work:
        for lang, code in (("ru", "ru"), ("en", "en"), ("ru", None)):
            commands = [BotCommand(c, t(f"client.command.{c}", lang)) for c in COMMANDS]  # type: ignore[arg-type]
            params: dict[str, Any] = {
                "commands": [c.to_dict() for c in commands],
                "scope": BotCommandScopeDefault().to_dict(),
                "language_code": code,
            }
            await work.out.call(0, "setMyCommands", params)


async def on_error(update: object, context: Any) -> None:
    """Log every unexpected error and report it to the staff group, by ids only.

    The exception's own message is never logged or reported (it could quote a client's
    text); its type, the notes the handlers add, the update, chat and question ids and the
    traceback's frames are. The client in a private chat is told something went wrong.
    An update found already processed (``Superseded``) is no error: it is left alone.
    """
    error = context.error
    if isinstance(error, Superseded):
        return
    processing = PROCESSING.get()
    if processing is not None:
        processing.failed = True
    update_id = update.update_id if isinstance(update, Update) else None
    notes = "; ".join(getattr(error, "__notes__", []))
    frames = "".join(traceback.format_tb(error.__traceback__)) if error else ""
    logger.error(
        "error while handling update %s: %s [%s]\n%s",
        update_id,
        type(error).__name__,
        notes,
        frames,
    )
    services: Services = context.bot_data
    chat = update.effective_chat if isinstance(update, Update) else None
    question = await _question_of(update, services)
    staff_chat = services.settings.staff_chat_id
    try:
        # The update is closed with this unit: it is not tried again.
        async with unit(services, outcome="failed") as work:
            if staff_chat is not None:
                report = error_report(
                    update_id=update_id,
                    chat_id=chat.id if chat else None,
                    question=question,
                    error=type(error).__name__,
                    notes=notes,
                    frames=frames,
                )
                await work.out.send(staff_chat, report)
            if isinstance(update, Update) and chat and chat.type == "private":
                lang = client.language_of(update.effective_user, services.settings.default_language)
                await work.out.send(chat.id, html.escape(t("client.sorry", lang)))
            query = update.callback_query if isinstance(update, Update) else None
            if query is not None and chat is not None:
                await work.out.answer(chat.id, query.id)
    except Exception:  # noqa: BLE001 - the log above is what matters
        logger.warning("could not report the error")


async def _question_of(update: object, services: Services) -> str | None:
    """The question the client was at (its id), if the update came from a client."""
    user = update.effective_user if isinstance(update, Update) else None
    if user is None:
        return None
    try:
        async with services.sessionmaker() as session:
            found = await get_client(session=session, telegram_id=user.id)
            if found is None or found.id is None:
                return None
            dialogue = await get_dialogue(session=session, client_id=found.id)
    except Exception:  # noqa: BLE001 - the database may be why we are here
        return None
    node = dialogue.state.get("node") if dialogue else None
    return node if isinstance(node, str) else None


def error_report(
    *,
    update_id: int | None,
    chat_id: int | None,
    question: str | None,
    error: str,
    notes: str,
    frames: str,
) -> str:
    """The staff group's error report (HTML), within Telegram's length limit.

    Ids only, never a client's answers, name or phone. A long traceback loses its oldest
    frames first; the ids and the exception type always fit.
    """

    def e(text: str) -> str:
        return html.escape(text, quote=False)

    head = (
        f"⚠️ <b>Error</b>: {e(error)}\n"
        f"update {update_id if update_id is not None else '—'} · "
        f"chat {chat_id if chat_id is not None else '—'} · "
        f"question {e(question or '—')}"
    )
    if notes:
        head += f"\n{e(notes[:500])}"
    room = MESSAGE_LIMIT - len(head) - len("\n<pre>…\n</pre>")
    kept: list[str] = []
    lines = frames.splitlines(keepends=True)
    for line in reversed(lines):
        escaped = e(line)
        if len(escaped) > room:
            break
        kept.append(escaped)
        room -= len(escaped)
    if not kept:
        return head
    cut = "…\n" if len(kept) < len(lines) else ""
    return f"{head}\n<pre>{cut}{''.join(reversed(kept))}</pre>"

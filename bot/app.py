"""The one factory that builds the Telegram Application: handlers, defaults, errors, commands."""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import traceback
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from telegram import BotCommand, BotCommandScopeDefault, LinkPreviewOptions, Update
from telegram.constants import ParseMode
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    ContextTypes,
    Defaults,
)

from bot.context import BotContext, Services
from bot.flowsource import FlowRegistry
from bot.handlers import admin, client, staff
from bot.settings import Settings
from bot.staff import announce_overdue, redeliver
from bot.texts import COMMANDS, t
from storage import AsyncSession, utcnow

__all__ = ["ALLOWED_UPDATES", "build_application", "run_housekeeping"]

logger = logging.getLogger(__name__)

ALLOWED_UPDATES = [Update.MESSAGE, Update.EDITED_MESSAGE, Update.CALLBACK_QUERY]


def build_application(
    settings: Settings,
    *,
    registry: FlowRegistry,
    sessionmaker: async_sessionmaker[AsyncSession],
    rate_limit: bool = True,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
    clock: Callable[[], datetime] = utcnow,
    housekeeping: bool = True,
) -> Application:  # type: ignore[type-arg]
    """Build the bot: handlers by audience, HTML defaults, one error handler, menu commands.

    Nothing is registered at import time; ``settings.telegram_token`` must be set.
    """
    if settings.telegram_token is None:
        raise ValueError("TELEGRAM_TOKEN is not set")
    builder = (
        ApplicationBuilder()
        .token(settings.telegram_token.get_secret_value())
        .base_url(settings.telegram_base_url)
        .base_file_url(settings.telegram_base_file_url)
        .defaults(
            Defaults(
                parse_mode=ParseMode.HTML,
                link_preview_options=LinkPreviewOptions(is_disabled=True),
            )
        )
        .context_types(ContextTypes(context=BotContext, bot_data=Services))
        # Different clients are served concurrently; one client's updates are serialised
        # by Services.client_lock.
        .concurrent_updates(64)
        .post_init(_post_init if housekeeping else _register_commands)
        .post_stop(_post_stop)
    )
    if rate_limit:
        # AIORateLimiter is generic over its per-call arguments; PTB's stubs leave it unbound.
        builder = builder.rate_limiter(AIORateLimiter(max_retries=3))  # type: ignore[arg-type]
    if on_shutdown is not None:
        shutdown = on_shutdown

        async def _post_shutdown(_: Application) -> None:  # type: ignore[type-arg]
            await shutdown()

        builder = builder.post_shutdown(_post_shutdown)
    app = builder.build()
    services: Services = app.bot_data
    services.configure(registry=registry, sessionmaker=sessionmaker, settings=settings, clock=clock)
    admin.register(app)
    staff.register(app)
    client.register(app)
    app.add_error_handler(on_error)
    return app


async def _post_init(app: Application) -> None:  # type: ignore[type-arg]
    """Register the command menu and start the housekeeping loop."""
    await _register_commands(app)
    services: Services = app.bot_data
    services.housekeeping = asyncio.create_task(_housekeeping(app), name="housekeeping")


async def _post_stop(app: Application) -> None:  # type: ignore[type-arg]
    services: Services = app.bot_data
    if services.housekeeping is not None:
        services.housekeeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await services.housekeeping


async def _housekeeping(app: Application) -> None:  # type: ignore[type-arg]
    """Every few seconds: re-deliver cards that failed to post, announce overdue requests."""
    services: Services = app.bot_data
    while True:
        await asyncio.sleep(services.settings.housekeeping_seconds)
        await run_housekeeping(app)


async def run_housekeeping(app: Application) -> tuple[int, int]:  # type: ignore[type-arg]
    """One round of housekeeping; returns (cards delivered, requests announced)."""
    services: Services = app.bot_data
    now = services.clock()
    try:
        delivered, _ = await redeliver(app.bot, services.sessionmaker, services.settings, now)
        announced = await announce_overdue(app.bot, services.sessionmaker, services.settings, now)
    except Exception:  # noqa: BLE001 - the loop must survive a bad round; it is logged
        logger.exception("housekeeping round failed")
        return 0, 0
    return delivered, announced


async def _register_commands(app: Application) -> None:  # type: ignore[type-arg]
    """Prove the active flow (before any update is served), then register the command menu
    in Russian and English (and the default)."""
    services: Services = app.bot_data
    await services.registry.prepare(services.sessionmaker)
    for lang, code in (("ru", "ru"), ("en", "en"), ("ru", None)):
        commands = [BotCommand(c, d) for c, d in COMMANDS[lang]]  # type: ignore[index]
        await app.bot.set_my_commands(commands, scope=BotCommandScopeDefault(), language_code=code)


async def on_error(update: object, context: Any) -> None:
    """Log every unexpected error with the update id and dialogue position, never answers.

    The exception's own message is not logged (it could quote a client's text); its type,
    the notes the handlers add (update id, question id) and the traceback's frames are.
    """
    update_id = update.update_id if isinstance(update, Update) else None
    error = context.error
    notes = "; ".join(getattr(error, "__notes__", []))
    frames = "".join(traceback.format_tb(error.__traceback__)) if error else ""
    logger.error(
        "error while handling update %s: %s [%s]\n%s",
        update_id,
        type(error).__name__,
        notes,
        frames,
    )
    if (
        isinstance(update, Update)
        and update.effective_chat
        and update.effective_chat.type == "private"
    ):
        lang = client.language_of(update.effective_user, context.bot_data.settings.default_language)
        try:
            await context.bot.send_message(update.effective_chat.id, html.escape(t("sorry", lang)))
        except Exception:  # noqa: BLE001 - the report above is what matters
            logger.info("could not tell chat about the error")

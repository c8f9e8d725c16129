"""Serving: the inbox (polling or webhook), the dispatcher and the sender, and a clean stop.

``serve`` runs until SIGTERM or SIGINT, then stops taking updates, lets the updates and calls
in hand finish for a few seconds, and leaves the rest in the database for the next start (or
another process). Nothing waits on Telegram while the process is asked to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field
from urllib.parse import urlparse

from telegram.ext import Application

from bot.context import Services
from bot.inbox import Poller, WebhookServer
from storage import ahead_of

__all__ = ["Serving", "serve", "start_serving"]

logger = logging.getLogger(__name__)


@dataclass
class Serving:
    """A started bot: its Application and background tasks."""

    app: Application  # type: ignore[type-arg]
    poller: Poller | None = None
    webhook: WebhookServer | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def services(self) -> Services:
        """The application's services."""
        return self.app.bot_data  # type: ignore[no-any-return]

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking updates, finish what is in hand within ``grace``, then shut down."""
        services = self.services
        if self.poller is not None:
            self.poller.stop()
        if self.webhook is not None:
            await self.webhook.stop()
        await services.dispatcher.stop(grace)
        await services.sender.stop(grace)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()
        if self.app.post_shutdown is not None:
            await self.app.post_shutdown(self.app)


async def start_serving(
    app: Application,  # type: ignore[type-arg]
    *,
    allowed_updates: list[str],
    poll_timeout: int = 30,
    receive: bool = True,
) -> Serving:
    """Initialise the Application and start the inbox, the dispatcher and the sender.

    Polling unless the settings have a webhook URL; with ``receive`` False, neither (a
    process that only works what others stored, behind a load balancer's other replicas).
    """
    await app.initialize()
    if app.post_init is not None:
        await app.post_init(app)
    await app.start()
    services: Services = app.bot_data
    serving = Serving(app)
    serving.tasks.append(asyncio.create_task(services.sender.run(), name="sender"))
    serving.tasks.append(asyncio.create_task(services.dispatcher.run(), name="dispatcher"))
    settings = services.settings
    if not receive:
        return serving
    if settings.webhook_url and settings.webhook_secret is not None:
        serving.webhook = WebhookServer(
            ahead_of(services.sessionmaker),  # Telegram waits for the receipt
            services.dispatcher.hand,
            secret=settings.webhook_secret.get_secret_value(),
            path=urlparse(settings.webhook_url).path,
            listen=settings.webhook_listen,
            port=settings.webhook_port,
        )
        await serving.webhook.start()
        await app.bot.set_webhook(
            settings.webhook_url,
            secret_token=settings.webhook_secret.get_secret_value(),
            allowed_updates=allowed_updates,
        )
    else:
        serving.poller = Poller(
            app,
            ahead_of(services.sessionmaker),  # the next poll waits for the receipt
            services.dispatcher.hand,
            allowed_updates=allowed_updates,
            timeout=poll_timeout,
        )
        serving.tasks.append(asyncio.create_task(serving.poller.run(), name="poller"))
    return serving


async def serve(app: Application, *, allowed_updates: list[str]) -> None:  # type: ignore[type-arg]
    """Serve until SIGTERM or SIGINT, or until polling fails for good (re-raised)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    serving = await start_serving(app, allowed_updates=allowed_updates)
    waiter = asyncio.create_task(stop.wait())
    watched = [waiter, *serving.tasks]
    try:
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        logger.info("stopping: finishing the updates in hand")
        waiter.cancel()
        await serving.stop()

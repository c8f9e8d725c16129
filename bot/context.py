"""The typed context: services (flow, database, settings) reach handlers through ``bot_data``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from telegram.ext import CallbackContext, ExtBot

from bot.flowsource import FlowRegistry
from bot.settings import Settings
from storage import AsyncSession, WaitingCall, utcnow

if TYPE_CHECKING:
    from bot.inbox import Dispatcher
    from bot.sender import Sender

__all__ = ["BotContext", "Services"]


class Services:
    """What every handler needs; one instance per Application (its ``bot_data``)."""

    registry: FlowRegistry
    sessionmaker: async_sessionmaker[AsyncSession]
    settings: Settings
    #: The time now (UTC); tests pass a controllable clock.
    clock: Callable[[], datetime]
    #: Makes the outbox's calls (the only caller of Telegram).
    sender: Sender
    #: Processes the inbox's updates through the handlers.
    dispatcher: Dispatcher

    def configure(
        self,
        *,
        registry: FlowRegistry | None,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """Fill in the services (PTB creates ``bot_data`` without arguments).

        The command line leaves out the registry where it needs no flow.
        """
        if registry is not None:
            self.registry = registry
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.clock = clock

    def hand_sender(self, calls: list[WaitingCall]) -> None:
        """These calls were just committed to the outbox: send them now."""
        sender = getattr(self, "sender", None)
        if calls and sender is not None:
            sender.hand(calls)


class BotContext(CallbackContext[ExtBot[None], dict[Any, Any], dict[Any, Any], Services]):
    """The callback context with the services typed."""

    @property
    def services(self) -> Services:
        """The application's services."""
        return self.bot_data

"""Engine replies to Telegram messages: keyboards, in-place checklist edits, retries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from telegram import (
    Bot,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
)
from telegram import Message as TgMessage
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError
from telegram.ext import ExtBot

from bot.service import StepResult
from flows import Alert, Lang, Message, t

__all__ = ["ASK", "ClientBlockedError", "IntakeBot", "Renderer", "answer_query", "keyboard"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

ReplyMarkup = InlineKeyboardMarkup | ReplyKeyboardMarkup | ReplyKeyboardRemove


class IntakeBot(ExtBot[Any]):
    """PTB's ExtBot, minus the parameters its Defaults add to methods that do not take them.

    PTB sends and edits through one helper that fills every parameter it knows from
    ``Defaults``, so with ``Defaults(parse_mode=HTML)`` each ``editMessageReplyMarkup`` carried
    ``parse_mode``, which that method does not take. Telegram ignores it; a strict Bot API
    (the fake in tests/fakebotapi) refuses it. An explicit None in ``api_kwargs`` wins over
    the default and is then dropped before sending.
    """

    async def edit_message_reply_markup(
        self, *args: Any, api_kwargs: dict[str, Any] | None = None, **kwargs: Any
    ) -> Any:
        """Edit only the keyboard, sending only the parameters the method takes."""
        unset = {"parse_mode": None, "link_preview_options": None}
        return await super().edit_message_reply_markup(
            *args, api_kwargs={**unset, **(api_kwargs or {})}, **kwargs
        )


class ClientBlockedError(Exception):
    """The client blocked the bot: nothing can be sent (their state is already saved)."""


#: Callback data of the "Ask a question" button the bot adds under every question.
ASK = "A"


def keyboard(message: Message, ask_label: str | None = None) -> InlineKeyboardMarkup | None:
    """The inline keyboard of an engine message, with "Ask a question" under questions."""
    if not message.buttons:
        return None
    rows = [
        [InlineKeyboardButton(b.label, callback_data=b.data) for b in row]
        for row in message.buttons
    ]
    if ask_label and message.kind not in ("end", "summary", "outcome"):
        rows.append([InlineKeyboardButton(ask_label, callback_data=ASK)])
    return InlineKeyboardMarkup(rows)


async def with_retries(call: Callable[[], Awaitable[T]], *, attempts: int = 4) -> T:
    """Run a Bot API call, waiting out 429s and retrying timeouts and server errors."""
    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except RetryAfter as exc:
            if attempt == attempts:
                raise
            wait = exc.retry_after
            seconds = wait.total_seconds() if hasattr(wait, "total_seconds") else float(wait)
            await asyncio.sleep(min(seconds, 30.0))
        except (BadRequest, Forbidden):
            raise
        except NetworkError:
            if attempt == attempts:
                raise
            await asyncio.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


class Renderer:
    """Shows one step's replies in one chat."""

    def __init__(self, bot: Bot, chat_id: int, lang: Lang) -> None:
        self.bot = bot
        self.chat_id = chat_id
        self.lang = lang

    async def say(self, text: str, reply_markup: ReplyMarkup | None = None) -> TgMessage:
        """Send a message (HTML) with retries; raise ClientBlockedError if blocked."""
        try:
            return await with_retries(
                lambda: self.bot.send_message(self.chat_id, text, reply_markup=reply_markup)
            )
        except Forbidden as exc:
            raise ClientBlockedError(str(exc)) from exc

    async def retire(self, message_id: int) -> None:
        """Remove the keyboard of an answered question (best effort)."""
        with contextlib.suppress(BadRequest):  # already without keyboard, or too old to edit
            await with_retries(
                lambda: self.bot.edit_message_reply_markup(
                    self.chat_id, message_id, reply_markup=None
                )
            )

    async def edit(self, message_id: int, message: Message) -> bool:
        """Replace a message's text and keyboard in place (a checklist tick)."""
        try:
            await with_retries(
                lambda: self.bot.edit_message_text(
                    message.text, chat_id=self.chat_id, message_id=message_id,
                    reply_markup=keyboard(message, t("client.ask_button", self.lang)),
                )
            )  # fmt: skip
        except BadRequest as exc:
            return "not modified" in str(exc).lower()
        return True

    async def show(
        self,
        result: StepResult,
        *,
        query: CallbackQuery | None,
        changed: bool,
        prompt_id: int | None,
        left_phone: bool,
    ) -> int | None:
        """Show ``result``; return the id of the message now carrying the live keyboard."""
        alerts = [r.text for r in result.replies if isinstance(r, Alert)]
        messages = [r for r in result.replies if isinstance(r, Message)]
        try:
            if query is not None:
                await answer_query(query, alerts[0] if alerts else None)
                if not changed:
                    return None  # a refused or stale press: the question is still on screen
                edit = next((m for m in messages if m.edit), None)
                pressed = query.message
                if (
                    edit is not None
                    and pressed is not None
                    and await self.edit(pressed.message_id, edit)
                ):
                    return pressed.message_id
            else:
                for text in alerts:
                    await self.say(text)
            if prompt_id is not None:
                await self.retire(prompt_id)
            if left_phone:
                await self.say(t("client.phone_saved", self.lang), ReplyKeyboardRemove())
            new_prompt = None
            for message in messages:
                sent = await self.say(
                    message.text, keyboard(message, t("client.ask_button", self.lang))
                )
                if message.buttons:
                    new_prompt = sent.message_id
                if message.kind == "phone":
                    share = KeyboardButton(
                        t("client.share_contact", self.lang), request_contact=True
                    )
                    await self.say(
                        t("client.share_hint", self.lang),
                        ReplyKeyboardMarkup(
                            [[share]], resize_keyboard=True, one_time_keyboard=True
                        ),
                    )
            return new_prompt
        except ClientBlockedError:
            logger.warning("chat %s blocked the bot; its dialogue state is kept", self.chat_id)
            return None


async def answer_query(query: CallbackQuery, text: str | None) -> None:
    """Answer a button press (best effort: an expired query must not stop the dialogue)."""
    try:
        await query.answer(text[:200] if text else None)
    except TelegramError:
        logger.info("could not answer callback query %s", query.id)

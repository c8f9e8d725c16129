"""A fake Telegram Bot API HTTP server that the real python-telegram-bot stack can talk to."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from types import EllipsisType, TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx
import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web

from .validation import (
    CALLBACK_ANSWER_TEXT_LIMIT,
    CAPTION_LIMIT,
    CHAT_ACTIONS,
    MESSAGE_TEXT_LIMIT,
    NOT_MODIFIED,
    ApiError,
    bad_request,
    bot_command_entities,
    check_params,
    decode_form_value,
    inline_buttons,
    prepare_text,
    utf16_len,
    validate_commands,
    validate_reply_markup,
)

__all__ = ["Call", "FakeBotAPI", "UploadedFile"]

_LOGGER = logging.getLogger(__name__)

ALL_UPDATE_TYPES = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_connection",
    "business_message",
    "edited_business_message",
    "deleted_business_messages",
    "message_reaction",
    "message_reaction_count",
    "inline_query",
    "chosen_inline_result",
    "callback_query",
    "shipping_query",
    "pre_checkout_query",
    "purchased_paid_media",
    "poll",
    "poll_answer",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
)
# What Telegram delivers when allowed_updates was never set or was set to [].
DEFAULT_UPDATE_TYPES = frozenset(ALL_UPDATE_TYPES) - {
    "chat_member",
    "message_reaction",
    "message_reaction_count",
}
_FAULT_DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


@dataclass
class UploadedFile:
    """A file PTB uploaded as a multipart part."""

    filename: str
    content_type: str
    content: bytes = field(repr=False)


@dataclass
class Call:
    """One request the bot made.

    ``params`` are decoded: JSON-encoded fields (reply_markup, entities, commands, ...) are
    dicts/lists, numbers are ints, uploads are :class:`UploadedFile`. ``error`` is the
    description of the error response, ``rejected`` is True when the fake refused the request
    for breaking a Bot API rule (not for a fault the test injected).
    """

    method: str
    params: dict[str, Any]
    ok: bool
    error: str | None = None
    status: int = 200
    result: Any = None
    rejected: bool = False


@dataclass
class _StoredFile:
    file_id: str
    file_unique_id: str
    file_path: str
    content: bytes = field(repr=False)
    file_name: str | None = None
    mime_type: str | None = None

    def as_file(self) -> dict[str, Any]:
        return {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": len(self.content),
            "file_path": self.file_path,
        }


@dataclass
class _Fault:
    status: int
    description: str
    retry_after: int | None


class _ClientGone(Exception):
    """The client dropped the connection of a long poll; nothing to answer."""


class _Signal:
    """Wakes every coroutine waiting in :meth:`wait` when :meth:`notify` is called."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()

    def notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait(self, at_most: float | None, *also: asyncio.Future[Any]) -> None:
        """Return on notify(), when one of ``also`` is done, or after ``at_most`` seconds."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await asyncio.wait([waiter, *also], timeout=at_most, return_when="FIRST_COMPLETED")
        finally:
            self._waiters.discard(waiter)
            waiter.cancel()


class FakeBotAPI:
    """An in-process Bot API server on 127.0.0.1 (random port) with chat state and checks.

    Point PTB at it with ``base_url=api.base_url`` and ``base_file_url=api.base_file_url``.
    Requests are validated like Telegram does; the refused ones are recorded in
    :attr:`rejected` (call :meth:`assert_no_rejections` in teardown). Tests drive users with
    ``user_*`` methods, which queue updates for ``getUpdates`` (or :meth:`push_webhook`).
    """

    def __init__(
        self,
        token: str = "123:ABC",
        *,
        username: str = "intake_test_bot",
        first_name: str = "Intake Test Bot",
        strict_ampersand: bool = True,
    ) -> None:
        """Create the server (not started yet).

        ``strict_ampersand``: in HTML, reject a ``&`` that starts no entity. Telegram keeps
        it as text, but it almost always means user input was not escaped.
        """
        self.token = token
        self.strict_ampersand = strict_ampersand
        self.bot_user: dict[str, Any] = {
            "id": int(token.split(":", 1)[0]),
            "is_bot": True,
            "first_name": first_name,
            "username": username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }
        self.calls: list[Call] = []
        self.webhook_url: str | None = None
        self.webhook_secret_token: str | None = None
        self.callback_answers: dict[str, dict[str, Any]] = {}
        # setMyName / setMyDescription / setMyShortDescription, keyed "name:<language_code>".
        self.bot_texts: dict[str, str] = {}

        self._server: tornado.httpserver.HTTPServer | None = None
        self.port: int | None = None
        self._stopping = False

        self._next_update_id = 1
        self._pending: list[dict[str, Any]] = []
        self._members: dict[tuple[int, int], str] = {}
        self._delivered: set[int] = set()
        self._allowed_updates: frozenset[str] = DEFAULT_UPDATE_TYPES
        self._poll_superseded: asyncio.Future[str] | None = None
        self._updates_signal = _Signal()
        self._calls_signal = _Signal()
        self._consumed: set[int] = set()
        self._in_flight = 0
        self._last_activity = time.monotonic()
        # How the bots under test say they are done (see ``settle_with``); without any,
        # ``wait_idle`` falls back to a quiet gap.
        self._settled: list[Callable[[], Awaitable[bool]]] = []

        self._chats: dict[int, dict[str, Any]] = {}
        self._users: dict[int, dict[str, Any]] = {}
        self._history: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._reply_keyboards: dict[int, dict[str, Any]] = {}
        # Chats whose one-time keyboard was used: still there, collapsed behind its icon.
        self._collapsed: set[int] = set()
        self._blocked: set[int] = set()
        self._faults: dict[str, list[_Fault]] = defaultdict(list)
        # Held calls wait (not applied) until released; ``down`` answers 502 to everything.
        self._holds: dict[tuple[str, int | None], asyncio.Event] = {}
        self.held: list[tuple[str, dict[str, Any]]] = []
        self.down = False
        self._open_callbacks: set[str] = set()
        self._callback_ids = itertools.count(4_000_000_000_001)
        self._commands: dict[tuple[str, str], list[dict[str, str]]] = {}
        self._files: dict[str, _StoredFile] = {}
        self._file_numbers = itertools.count(1)

        self._methods: dict[str, Callable[[dict[str, Any]], Any]] = {
            "getMe": self._get_me,
            "logOut": self._return_true,
            "close": self._return_true,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "setMyDescription": self._set_bot_text("description", 512),
            "setMyShortDescription": self._set_bot_text("short_description", 120),
            "setMyName": self._set_bot_text("name", 64),
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "deleteMessage": self._delete_message,
            "answerCallbackQuery": self._answer_callback_query,
            "sendChatAction": self._send_chat_action,
            "sendDocument": self._send_document,
            "sendPhoto": self._send_photo,
            "getFile": self._get_file,
            "getChatMember": self._get_chat_member,
        }
        # getUpdates is async and handled by _dispatch itself.
        self._method_names = {name.lower(): name for name in [*self._methods, "getUpdates"]}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> FakeBotAPI:
        """Start listening on 127.0.0.1 on a free port."""
        if self._server is not None:
            return self
        app = tornado.web.Application(
            [
                (r"/bot([^/]*)/([^/]*)", _BotApiHandler, {"api": self}),
                (r"/file/bot([^/]*)/(.+)", _FileHandler, {"api": self}),
            ],
            log_function=lambda handler: None,
        )
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self._server = tornado.httpserver.HTTPServer(app, max_body_size=64 * 1024 * 1024)
        self._server.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        self._stopping = False
        return self

    async def stop(self) -> None:
        """Answer pending long polls, then close the server and all connections."""
        if self._server is None:
            return
        self._stopping = True
        self._updates_signal.notify()
        await asyncio.sleep(0)
        self._server.stop()
        await self._server.close_all_connections()
        self._server = None

    async def __aenter__(self) -> FakeBotAPI:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """Root URL of the server, e.g. ``http://127.0.0.1:PORT``."""
        if self.port is None:
            raise RuntimeError("FakeBotAPI is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """Value for PTB's ``base_url`` (PTB appends the token)."""
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        """Value for PTB's ``base_file_url`` (PTB appends the token)."""
        return f"{self.url}/file/bot"

    # ------------------------------------------------------------------ inspecting calls

    def calls_of(self, method: str) -> list[Call]:
        """All calls of ``method`` (case-insensitive), oldest first."""
        name = self._canonical(method)
        return [call for call in self.calls if call.method == name]

    @property
    def rejected(self) -> list[Call]:
        """Calls the fake refused because they broke a Bot API rule."""
        return [call for call in self.calls if call.rejected]

    def assert_no_rejections(self) -> None:
        """Raise AssertionError listing every rejected call, if any."""
        if not self.rejected:
            return
        lines = [
            f"  {call.method} -> {call.status} {call.error!r} params={_abbreviate(call.params)}"
            for call in self.rejected
        ]
        raise AssertionError(
            f"FakeBotAPI rejected {len(lines)} call(s) as Telegram would:\n" + "\n".join(lines)
        )

    async def wait_for(
        self,
        method: str | None,
        predicate: Callable[[Call], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - a deadline is the natural API for tests
    ) -> Call:
        """Wait for the first not yet consumed call of ``method`` matching ``predicate``.

        Each call is returned by ``wait_for`` at most once: a matched call is consumed, so
        ``await wait_for("sendMessage")`` twice yields two different messages, in order.
        Calls that arrived before ``wait_for`` was called count too (nothing is missed), and
        other calls are not consumed. ``method=None`` matches any method but getUpdates.
        Failed calls match as well; check ``call.ok`` in the predicate if it matters.
        Raises AssertionError after ``timeout`` seconds.
        """
        name = self._canonical(method) if method else None
        deadline = time.monotonic() + timeout
        while True:
            for index, call in enumerate(self.calls):
                if index in self._consumed:
                    continue
                if name is None and call.method == "getUpdates":
                    continue
                if name is not None and call.method != name:
                    continue
                if predicate is None or predicate(call):
                    self._consumed.add(index)
                    return call
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                recent = [
                    f"{c.method}({'ok' if c.ok else c.error})"
                    for c in self.calls
                    if c.method != "getUpdates"
                ][-10:]
                raise AssertionError(
                    f"no {method or 'API'} call matching within {timeout}s; "
                    f"last calls: {', '.join(recent) or 'none'}"
                )
            await self._calls_signal.wait(remaining)

    def settle_with(self, done: Callable[[], Awaitable[bool]]) -> Callable[[], None]:
        """Let :meth:`wait_idle` ask a bot under test whether it is done; returns a function
        that stops asking (call it when that bot stops).

        Telegram cannot know this; a test harness can ask the bot (its queues, its tables),
        so that :meth:`wait_idle` waits for exactly that instead of a quiet gap.
        """
        self._settled.append(done)
        return lambda: self._settled.remove(done) if done in self._settled else None

    async def wait_idle(
        self,
        quiet: float = 0.1,
        timeout: float = 5.0,  # noqa: ASYNC109 - a deadline is the natural API for tests
    ) -> None:
        """Wait until the bot has fetched, confirmed and finished every queued update.

        When a bot says whether it is done (:meth:`settle_with`), this waits until every
        queued update is confirmed (a later getUpdates offset), no request is in flight and
        every such bot says it is done. Otherwise it is a heuristic: every update fetched and
        no call for ``quiet`` seconds; prefer :meth:`wait_for` when the expected call is
        known. Raises AssertionError after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            polling = self.webhook_url is None
            busy = self._in_flight > 0 or (polling and self._undelivered())
            if self._settled:
                unconfirmed = polling and any(
                    _update_type(u) in self._allowed_updates for u in self._pending
                )
                if not busy and not unconfirmed and all([await d() for d in self._settled]):
                    return
            elif not busy and now - self._last_activity >= quiet:
                return
            if now >= deadline:
                raise AssertionError(
                    f"bot not idle after {timeout}s: {self._in_flight} request(s) in flight, "
                    f"{len(self._undelivered())} update(s) not fetched"
                    + (", or not done with them" if self._settled else "")
                )
            await asyncio.sleep(0.005 if self._settled else min(quiet / 2, 0.02))

    # ------------------------------------------------------------------ chat state

    def messages(self, chat_id: int, *, include_user: bool = False) -> list[dict[str, Any]]:
        """Messages in the chat, oldest first, as they are now (edits applied, deleted gone).

        Only the bot's messages unless ``include_user``. Each is a Bot API Message dict
        (``text``, ``entities``, ``reply_markup`` for inline keyboards, ``caption``, ...).
        """
        return [
            copy.deepcopy(message)
            for message in self._history.get(chat_id, [])
            if include_user or self._is_bot_message(message)
        ]

    def last_message(self, chat_id: int) -> dict[str, Any] | None:
        """The bot's latest message in the chat, or None."""
        messages = self.messages(chat_id)
        return messages[-1] if messages else None

    def reply_keyboard(self, chat_id: int) -> dict[str, Any] | None:
        """The ReplyKeyboardMarkup the bot last showed in the chat (None once removed).

        A one-time keyboard the user has used stays available behind its icon, as in
        Telegram: see ``reply_keyboard_open``.
        """
        return copy.deepcopy(self._reply_keyboards.get(chat_id))

    def reply_keyboard_open(self, chat_id: int) -> bool:
        """Whether a reply keyboard is shown in place of the user's letter keyboard."""
        return chat_id in self._reply_keyboards and chat_id not in self._collapsed

    def find_button(self, chat_id: int, text: str) -> tuple[int, str]:
        """Find an inline callback button by label in the newest bot message that has one.

        Matches labels containing ``text`` (an exact label match wins within a message).
        Returns ``(message_id, callback_data)``; raises LookupError listing the labels.
        """
        for message in reversed(self.messages(chat_id)):
            buttons = [b for b in inline_buttons(message) if "callback_data" in b]
            matches = [b for b in buttons if text in b["text"]]
            if matches:
                exact = [b for b in matches if b["text"] == text]
                return message["message_id"], (exact or matches)[0]["callback_data"]
        labels = [b["text"] for m in self.messages(chat_id) for b in inline_buttons(m)]
        raise LookupError(f"no inline button containing {text!r} in chat {chat_id}; have {labels}")

    def my_commands(
        self, scope: dict[str, Any] | None = None, language_code: str = ""
    ) -> list[dict[str, str]]:
        """Commands stored by setMyCommands for that scope and language."""
        return copy.deepcopy(self._commands.get(_commands_key(scope, language_code), []))

    def add_chat(
        self,
        chat_id: int,
        *,
        chat_type: str = "supergroup",
        title: str | None = None,
        username: str | None = None,
    ) -> dict[str, Any]:
        """Declare a group/channel chat (private chats appear when users write)."""
        chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            chat["first_name"] = title or "Test"
        else:
            chat["title"] = title or f"Chat {chat_id}"
        if username:
            chat["username"] = username
        self._chats[chat_id] = chat
        return copy.deepcopy(chat)

    def add_chat_member(self, chat_id: int, user_id: int, status: str = "member") -> None:
        """Make ``user_id`` a member of a group (what getChatMember reports)."""
        self._members[(chat_id, user_id)] = status

    def block_chat(self, chat_id: int) -> None:
        """Make every send to the chat fail with 403 (bot blocked / kicked)."""
        self._blocked.add(chat_id)

    def unblock_chat(self, chat_id: int) -> None:
        """Undo :meth:`block_chat`."""
        self._blocked.discard(chat_id)

    def hold(self, method: str, chat_id: int | None = None) -> None:
        """Keep calls of ``method`` (in ``chat_id``, or any chat) waiting, not applied, until
        :meth:`release`; a client that gives up meanwhile (a crash) leaves no trace."""
        self._holds[(self._canonical(method), chat_id)] = asyncio.Event()

    def release(self, method: str, chat_id: int | None = None) -> None:
        """Let held calls of ``method`` through (and later ones pass at once)."""
        event = self._holds.pop((self._canonical(method), chat_id), None)
        if event is not None:
            event.set()

    async def wait_held(
        self,
        method: str,
        count: int = 1,
        timeout: float = 10.0,  # noqa: ASYNC109 - a deadline is the natural API for tests
    ) -> None:
        """Wait until ``count`` calls of ``method`` are being held."""
        name = self._canonical(method)
        deadline = time.monotonic() + timeout
        while sum(1 for m, _ in self.held if m == name) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no held {method} call within {timeout}s"
            await self._calls_signal.wait(remaining)

    def fail_next(
        self,
        method: str,
        *,
        status: int = 429,
        retry_after: int = 1,
        description: str | None = None,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail with ``status``.

        429 carries ``parameters.retry_after`` (PTB raises RetryAfter); 500 and 502 read
        "Internal Server Error" / "Bad Gateway" (PTB raises NetworkError); 403 reads "Forbidden:
        bot was blocked by the user". Injected failures are recorded but are not rejections.
        """
        if status == 429:
            default = f"Too Many Requests: retry after {retry_after}"
        else:
            default = _FAULT_DESCRIPTIONS.get(status) or HTTPStatus(status).phrase
        fault = _Fault(status, description or default, retry_after if status == 429 else None)
        self._faults[self._canonical(method)].extend([fault] * times)

    def add_file(
        self,
        content: bytes,
        *,
        file_name: str | None = None,
        mime_type: str | None = None,
        kind: str = "documents",
    ) -> dict[str, Any]:
        """Store a file the bot can getFile and download; returns a Bot API File dict."""
        number = next(self._file_numbers)
        suffix = "_" + file_name.replace("/", "_") if file_name else ""
        stored = _StoredFile(
            file_id=f"FAKE-{kind}-{number}",
            file_unique_id=f"U{number}",
            file_path=f"{kind}/file_{number}{suffix}",
            content=content,
            file_name=file_name,
            mime_type=mime_type,
        )
        self._files[stored.file_id] = stored
        return stored.as_file()

    # ------------------------------------------------------------------ simulated users

    def user_message(
        self,
        user_id: int,
        text: str,
        *,
        chat_id: int | None = None,
        chat_type: str = "private",
        language_code: str = "en",
        first_name: str = "Test",
        last_name: str | None = None,
        username: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Queue a text message from a user; returns the update.

        ``/commands`` get their ``bot_command`` entities as Telegram adds them. ``extra``
        fields are merged into the Message (e.g. ``reply_to_message``). ``chat_id`` defaults
        to ``user_id`` (a private chat); other chat types need an explicit ``chat_id``.
        """
        message = self._user_message(
            user_id, chat_id, chat_type, language_code, first_name, last_name, username
        )
        message["text"] = text
        if entities := bot_command_entities(text):
            message["entities"] = entities
        return self._queue_message(message, extra)

    def user_contact(
        self,
        user_id: int,
        phone_number: str,
        *,
        contact_user_id: int | None = None,
        include_user_id: bool = True,
        chat_id: int | None = None,
        language_code: str = "en",
        first_name: str = "Test",
        last_name: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Queue a message with a ``contact``; returns the update.

        By default it is the user's own contact, as a ``request_contact`` button sends it
        (``contact.user_id`` = ``user_id``); pass ``contact_user_id`` for someone else's or
        ``include_user_id=False`` for a contact without a Telegram account.
        """
        message = self._user_message(
            user_id, chat_id, "private", language_code, first_name, last_name, None
        )
        contact: dict[str, Any] = {"phone_number": phone_number, "first_name": first_name}
        if last_name:
            contact["last_name"] = last_name
        if include_user_id:
            contact["user_id"] = contact_user_id if contact_user_id is not None else user_id
        message["contact"] = contact
        return self._queue_message(message, extra)

    def user_document(
        self,
        user_id: int,
        content: bytes,
        *,
        file_name: str = "document.pdf",
        mime_type: str = "application/pdf",
        caption: str | None = None,
        chat_id: int | None = None,
        language_code: str = "en",
        first_name: str = "Test",
        **extra: Any,
    ) -> dict[str, Any]:
        """Queue a message with a document (downloadable by the bot); returns the update."""
        message = self._user_message(
            user_id, chat_id, "private", language_code, first_name, None, None
        )
        stored = self.add_file(content, file_name=file_name, mime_type=mime_type)
        message["document"] = {
            "file_id": stored["file_id"],
            "file_unique_id": stored["file_unique_id"],
            "file_name": file_name,
            "mime_type": mime_type,
            "file_size": len(content),
        }
        if caption:
            message["caption"] = caption
        return self._queue_message(message, extra)

    def user_photo(
        self,
        user_id: int,
        content: bytes = b"\xff\xd8\xff\xe0fake-jpeg",
        *,
        caption: str | None = None,
        chat_id: int | None = None,
        chat_type: str = "private",
        language_code: str = "en",
        first_name: str = "Test",
        **extra: Any,
    ) -> dict[str, Any]:
        """Queue a message with a photo (one size, downloadable by the bot)."""
        message = self._user_message(
            user_id, chat_id, chat_type, language_code, first_name, None, None
        )
        stored = self.add_file(content, kind="photos", mime_type="image/jpeg")
        message["photo"] = [_photo_size(stored["file_id"], stored["file_unique_id"], content)]
        if caption:
            message["caption"] = caption
        return self._queue_message(message, extra)

    def user_callback(
        self,
        user_id: int,
        message_id: int,
        data: str,
        *,
        chat_id: int | None = None,
        language_code: str = "en",
        check_button: bool = True,
    ) -> str:
        """Queue a button press on the bot's message; returns the callback query id.

        With ``check_button`` the message must currently show a button with that
        callback_data (a user cannot press a button that is gone); turn it off to simulate
        forged or stale data. The id stays answerable (once) by answerCallbackQuery.
        """
        chat_id = user_id if chat_id is None else chat_id
        message = self._find_message(chat_id, message_id)
        if message is None:
            raise LookupError(f"no message {message_id} in chat {chat_id}")
        if check_button:
            datas = [b.get("callback_data") for b in inline_buttons(message)]
            if data not in datas:
                raise LookupError(
                    f"message {message_id} in chat {chat_id} has no button with callback_data "
                    f"{data!r}; it has {datas}"
                )
        user = self._remember_user(user_id, language_code=language_code)
        query_id = str(next(self._callback_ids))
        self._open_callbacks.add(query_id)
        self._queue(
            {
                "callback_query": {
                    "id": query_id,
                    "from": user,
                    "message": copy.deepcopy(message),
                    "chat_instance": str(8_000_000_000_000 + chat_id),
                    "data": data,
                }
            }
        )
        return query_id

    def press_button(self, user_id: int, text: str, *, chat_id: int | None = None) -> str:
        """Press the inline button labelled ``text`` (see :meth:`find_button`)."""
        chat_id = user_id if chat_id is None else chat_id
        message_id, data = self.find_button(chat_id, text)
        return self.user_callback(user_id, message_id, data, chat_id=chat_id)

    def pending_updates(self) -> list[dict[str, Any]]:
        """Copies of the updates queued by the ``user_*`` helpers and not yet delivered."""
        return copy.deepcopy(self._pending)

    def user_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue any raw update (an ``update_id`` is assigned if missing); returns it."""
        return self._queue(copy.deepcopy(update))

    async def push_webhook(
        self,
        update: dict[str, Any],
        secret_token: str | None | EllipsisType = ...,
    ) -> int:
        """POST an update to the webhook registered by setWebhook; returns the HTTP status.

        ``secret_token`` defaults to the one given to setWebhook; ``None`` sends no
        ``X-Telegram-Bot-Api-Secret-Token`` header. A queued update (from ``user_*``) is
        taken off the getUpdates queue, since it is now delivered.
        """
        if self.webhook_url is None:
            raise RuntimeError("no webhook is set (the bot has not called setWebhook)")
        if "update_id" not in update:
            update = self._queue(copy.deepcopy(update))
        self._pending = [u for u in self._pending if u["update_id"] != update["update_id"]]
        token = self.webhook_secret_token if secret_token is ... else secret_token
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = token
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            response = await client.post(
                self.webhook_url, content=json.dumps(update), headers=headers
            )
        return response.status_code

    async def push_pending_webhook(self) -> list[int]:
        """Push every queued update (from ``user_*``) to the webhook, in order.

        Returns the HTTP statuses. This is how Telegram delivers in webhook mode: queue
        updates with the ``user_*`` helpers, then call this.
        """
        statuses = []
        for update in list(self._pending):
            statuses.append(await self.push_webhook(update))
        return statuses

    # ------------------------------------------------------------------ request handling

    def _canonical(self, method: str) -> str:
        return self._method_names.get(method.lower(), method)

    async def _dispatch(
        self, token: str, method: str, params: dict[str, Any], closed: asyncio.Future[None]
    ) -> tuple[int, dict[str, Any]] | None:
        """Run one request; returns (HTTP status, JSON body) or None if the client left."""
        name = self._canonical(method)
        polling = name == "getUpdates"
        if not polling:
            self._in_flight += 1
            self._last_activity = time.monotonic()
        try:
            result = await self._run_method(token, name, params, closed)
        except _ClientGone:
            return None
        except ApiError as error:
            self._record(
                Call(name, params, False, error.description, error.status, None, error.rejected)
            )
            return error.status, error.body()
        except Exception as exc:  # a bug in the fake: make it loud, not a mystery 500
            _LOGGER.exception("FakeBotAPI failed on %s", name)
            error = ApiError(500, f"Internal Server Error: fake server bug: {exc!r}")
            self._record(Call(name, params, False, error.description, 500, None, True))
            return 500, error.body()
        finally:
            if not polling:
                self._in_flight -= 1
                self._last_activity = time.monotonic()
        self._record(Call(name, params, True, result=copy.deepcopy(result)))
        return 200, {"ok": True, "result": result}

    async def _run_method(
        self, token: str, name: str, params: dict[str, Any], closed: asyncio.Future[None]
    ) -> Any:
        if token != self.token:
            raise ApiError(401, "Unauthorized")
        if self.down:
            raise ApiError(502, "Bad Gateway", rejected=False)
        hold = self._holds.get((name, params.get("chat_id"))) or self._holds.get((name, None))
        if hold is not None and not hold.is_set():
            self.held.append((name, params))
            self._calls_signal.notify()
            waiter = asyncio.ensure_future(hold.wait())
            await asyncio.wait([waiter, closed], return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                waiter.cancel()
                raise _ClientGone
            if closed.done():
                raise _ClientGone
            if self.down:
                raise ApiError(502, "Bad Gateway", rejected=False)
        if self._faults.get(name):
            fault = self._faults[name].pop(0)
            retry = {"retry_after": fault.retry_after} if fault.retry_after is not None else None
            raise ApiError(fault.status, fault.description, parameters=retry, rejected=False)
        if name != "getUpdates" and name not in self._methods:
            raise ApiError(404, "Not Found: method not found")
        check_params(name, params)
        if name == "getUpdates":
            return await self._get_updates(params, closed)
        return self._methods[name](params)

    def _record(self, call: Call) -> None:
        self.calls.append(call)
        self._calls_signal.notify()

    # ------------------------------------------------------------------ updates

    def _queue(self, update: dict[str, Any]) -> dict[str, Any]:
        if "update_id" not in update:
            update["update_id"] = self._next_update_id
        self._next_update_id = max(self._next_update_id, update["update_id"] + 1)
        self._pending.append(update)
        self._updates_signal.notify()
        return update

    def _undelivered(self) -> list[dict[str, Any]]:
        return [
            u
            for u in self._pending
            if u["update_id"] not in self._delivered and _update_type(u) in self._allowed_updates
        ]

    async def _get_updates(
        self, params: dict[str, Any], closed: asyncio.Future[None]
    ) -> list[dict[str, Any]]:
        if self.webhook_url is not None:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = int(params.get("offset") or 0)
        limit = min(max(int(params.get("limit") or 100), 1), 100)
        timeout = max(float(params.get("timeout") or 0), 0.0)
        if isinstance(params.get("allowed_updates"), list):
            self._allowed_updates = frozenset(params["allowed_updates"]) or DEFAULT_UPDATE_TYPES

        if offset > 0:
            self._pending = [u for u in self._pending if u["update_id"] >= offset]
        elif offset < 0:
            self._pending = self._pending[offset:]

        if self._poll_superseded is not None and not self._poll_superseded.done():
            self._poll_superseded.set_result(
                "Conflict: terminated by other getUpdates request; "
                "make sure that only one bot instance is running"
            )
        superseded: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._poll_superseded = superseded

        deadline = time.monotonic() + timeout
        while True:
            # Updates of types the bot did not ask for are dropped, as Telegram does.
            self._pending = [u for u in self._pending if _update_type(u) in self._allowed_updates]
            batch = self._pending[:limit]
            remaining = deadline - time.monotonic()
            if batch or self._stopping or remaining <= 0:
                break
            await self._updates_signal.wait(remaining, closed, superseded)
            if closed.done():
                raise _ClientGone
            if superseded.done():
                raise ApiError(409, superseded.result(), rejected=False)
        if batch:
            self._delivered.update(u["update_id"] for u in batch)
            self._last_activity = time.monotonic()
        return copy.deepcopy(batch)

    # ------------------------------------------------------------------ bot & webhook methods

    def _get_me(self, params: dict[str, Any]) -> dict[str, Any]:
        return dict(self.bot_user)

    def _return_true(self, params: dict[str, Any]) -> bool:
        return True

    def _set_webhook(self, params: dict[str, Any]) -> bool:
        url = str(params.get("url") or "")
        if not url:
            return self._delete_webhook(params)
        parts = urlsplit(url)
        local = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if parts.scheme != "https" and not (parts.scheme == "http" and local):
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.get("secret_token")
        if secret is not None:
            secret = str(secret)
            allowed = secret.replace("_", "").replace("-", "")
            if not 1 <= len(secret) <= 256 or not (allowed.isascii() and allowed.isalnum()):
                raise bad_request("secret token contains unallowed characters")
        if isinstance(params.get("allowed_updates"), list):
            self._allowed_updates = frozenset(params["allowed_updates"]) or DEFAULT_UPDATE_TYPES
        if params.get("drop_pending_updates"):
            self._pending.clear()
        self.webhook_url = url
        self.webhook_secret_token = secret
        if self._poll_superseded is not None and not self._poll_superseded.done():
            self._poll_superseded.set_result("Conflict: terminated by setWebhook request")
        return True

    def _delete_webhook(self, params: dict[str, Any]) -> bool:
        if params.get("drop_pending_updates"):
            self._pending.clear()
        self.webhook_url = None
        self.webhook_secret_token = None
        return True

    def _get_webhook_info(self, params: dict[str, Any]) -> dict[str, Any]:
        info: dict[str, Any] = {
            "url": self.webhook_url or "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._pending),
        }
        if self.webhook_url:
            info["max_connections"] = 40
            info["allowed_updates"] = sorted(self._allowed_updates)
        return info

    def _set_my_commands(self, params: dict[str, Any]) -> bool:
        commands = validate_commands(params.get("commands"))
        key = _commands_key(params.get("scope"), params.get("language_code"))
        self._commands[key] = commands
        return True

    def _get_my_commands(self, params: dict[str, Any]) -> list[dict[str, str]]:
        key = _commands_key(params.get("scope"), params.get("language_code"))
        return self._commands.get(key, [])

    def _delete_my_commands(self, params: dict[str, Any]) -> bool:
        key = _commands_key(params.get("scope"), params.get("language_code"))
        self._commands.pop(key, None)
        return True

    def _set_bot_text(self, name: str, limit: int) -> Callable[[dict[str, Any]], bool]:
        def handler(params: dict[str, Any]) -> bool:
            value = str(params.get(name) or "")
            if len(value) > limit:
                raise bad_request(f"bot {name.replace('_', ' ')} is too long")
            self.bot_texts[f"{name}:{params.get('language_code') or ''}"] = value
            return True

        return handler

    # ------------------------------------------------------------------ messages

    def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat_id(params)
        text, entities = prepare_text(
            params.get("text"),
            params.get("parse_mode"),
            params.get("entities"),
            limit=MESSAGE_TEXT_LIMIT,
            allow_empty=False,
            strict_ampersand=self.strict_ampersand,
        )
        markup = params.get("reply_markup")
        kind = validate_reply_markup(markup)
        reply_to = self._reply_to(chat_id, params)
        self._check_blocked(chat_id)
        content: dict[str, Any] = {"text": text}
        if entities:
            content["entities"] = entities
        return self._new_bot_message(chat_id, content, markup, kind, reply_to)

    def _send_document(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._send_media(params, "document")

    def _send_photo(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._send_media(params, "photo")

    def _send_media(self, params: dict[str, Any], field_name: str) -> dict[str, Any]:
        chat_id = self._chat_id(params)
        media = params.get(field_name)
        if media is None or media == "":
            raise bad_request(f"there is no {field_name} in the request")
        caption, entities = prepare_text(
            params.get("caption"),
            params.get("parse_mode"),
            params.get("caption_entities"),
            limit=CAPTION_LIMIT,
            allow_empty=True,
            strict_ampersand=self.strict_ampersand,
            too_long_error="message caption is too long",
        )
        markup = params.get("reply_markup")
        kind = validate_reply_markup(markup)
        reply_to = self._reply_to(chat_id, params)
        self._check_blocked(chat_id)
        stored = self._store_media(media, field_name)
        content: dict[str, Any] = {}
        if field_name == "photo":
            content["photo"] = [_photo_size(stored.file_id, stored.file_unique_id, stored.content)]
        else:
            content["document"] = {
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "file_size": len(stored.content),
            }
            if stored.file_name:
                content["document"]["file_name"] = stored.file_name
            if stored.mime_type:
                content["document"]["mime_type"] = stored.mime_type
        if caption:
            content["caption"] = caption
            if entities:
                content["caption_entities"] = entities
        return self._new_bot_message(chat_id, content, markup, kind, reply_to)

    def _store_media(self, media: Any, field_name: str) -> _StoredFile:
        kind = "photos" if field_name == "photo" else "documents"
        if isinstance(media, UploadedFile):
            if not media.content:
                raise bad_request("file must be non-empty")
            mime = media.content_type if media.content_type != "application/octet-stream" else None
            file_id = self.add_file(
                media.content, file_name=media.filename or None, mime_type=mime, kind=kind
            )["file_id"]
            return self._files[file_id]
        media = str(media)
        if media in self._files:
            return self._files[media]
        if media.startswith(("http://", "https://")):
            file_id = self.add_file(b"", file_name=media.rsplit("/", 1)[-1], kind=kind)["file_id"]
            return self._files[file_id]
        raise bad_request("wrong file identifier/HTTP URL specified")

    def _edit_message_text(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id, message_id = self._edited_message_ids(params)
        text, entities = prepare_text(
            params.get("text"),
            params.get("parse_mode"),
            params.get("entities"),
            limit=MESSAGE_TEXT_LIMIT,
            allow_empty=False,
            strict_ampersand=self.strict_ampersand,
        )
        markup = self._inline_markup_for_edit(params)
        self._check_blocked(chat_id)
        message = self._message_to_edit(chat_id, message_id)
        if "text" not in message:
            raise bad_request("there is no text in the message to edit")
        unchanged = (
            message["text"] == text
            and message.get("entities", []) == entities
            and message.get("reply_markup") == markup
        )
        if unchanged:
            raise bad_request(NOT_MODIFIED)
        message["text"] = text
        _set_or_drop(message, "entities", entities)
        _set_or_drop(message, "reply_markup", markup)  # no reply_markup removes the keyboard
        message["edit_date"] = int(time.time())
        return copy.deepcopy(message)

    def _edit_message_reply_markup(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id, message_id = self._edited_message_ids(params)
        markup = self._inline_markup_for_edit(params)
        self._check_blocked(chat_id)
        message = self._message_to_edit(chat_id, message_id)
        if message.get("reply_markup") == markup:
            raise bad_request(NOT_MODIFIED)
        _set_or_drop(message, "reply_markup", markup)
        message["edit_date"] = int(time.time())
        return copy.deepcopy(message)

    def _delete_message(self, params: dict[str, Any]) -> bool:
        chat_id = self._chat_id(params)
        message_id = self._message_id(params)
        message = self._find_message(chat_id, message_id)
        if message is None:
            raise bad_request("message to delete not found")
        self._history[chat_id].remove(message)
        return True

    def _answer_callback_query(self, params: dict[str, Any]) -> bool:
        query_id = str(params.get("callback_query_id") or "")
        text = params.get("text")
        if text is not None and utf16_len(str(text)) > CALLBACK_ANSWER_TEXT_LIMIT:
            raise bad_request("MESSAGE_TOO_LONG")
        if query_id not in self._open_callbacks:
            raise bad_request(
                "query is too old and response timeout expired or query ID is invalid"
            )
        self._open_callbacks.discard(query_id)
        self.callback_answers[query_id] = dict(params)
        return True

    def _send_chat_action(self, params: dict[str, Any]) -> bool:
        chat_id = self._chat_id(params)
        if params.get("action") not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        self._check_blocked(chat_id)
        return True

    def _get_chat_member(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat_id(params)
        user_id = int(params.get("user_id") or 0)
        if not user_id:
            raise bad_request("user_id is empty")
        status = self._members.get((chat_id, user_id), "left")
        user = self._users.get(user_id, {"id": user_id, "is_bot": False, "first_name": "Test"})
        member: dict[str, Any] = {"status": status, "user": dict(user)}
        if status == "administrator":
            member.update(can_be_edited=False, is_anonymous=False, can_manage_chat=True,
                          can_delete_messages=True, can_manage_video_chats=True,
                          can_restrict_members=True, can_promote_members=False,
                          can_change_info=True, can_invite_users=True, can_post_stories=False,
                          can_edit_stories=False, can_delete_stories=False)  # fmt: skip
        if status == "creator":
            member["is_anonymous"] = False
        return member

    def _get_file(self, params: dict[str, Any]) -> dict[str, Any]:
        stored = self._files.get(str(params.get("file_id") or ""))
        if stored is None:
            raise bad_request("invalid file_id")
        return stored.as_file()

    # ------------------------------------------------------------------ message helpers

    def _chat_id(self, params: dict[str, Any]) -> int:
        value = params.get("chat_id")
        if value is None or value == "":
            raise bad_request("chat_id is empty")
        if isinstance(value, str) and value.startswith("@"):
            for chat in self._chats.values():
                if chat.get("username", "").lower() == value[1:].lower():
                    return int(chat["id"])
            raise bad_request("chat not found")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise bad_request("chat not found") from None

    def _message_id(self, params: dict[str, Any]) -> int:
        value = params.get("message_id")
        if value is None or value == "":
            raise bad_request("message identifier is not specified")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise bad_request("message identifier is not specified") from None

    def _edited_message_ids(self, params: dict[str, Any]) -> tuple[int, int]:
        if params.get("inline_message_id"):
            raise bad_request("the fake does not support inline_message_id")
        return self._chat_id(params), self._message_id(params)

    def _inline_markup_for_edit(self, params: dict[str, Any]) -> dict[str, Any] | None:
        markup = params.get("reply_markup")
        kind = validate_reply_markup(markup)
        if kind not in (None, "inline"):
            raise bad_request("inline keyboard expected")
        return markup if markup and markup.get("inline_keyboard") else None

    def _message_to_edit(self, chat_id: int, message_id: int) -> dict[str, Any]:
        message = self._find_message(chat_id, message_id)
        if message is None:
            raise bad_request("message to edit not found")
        if not self._is_bot_message(message):
            raise bad_request("message can't be edited")
        return message

    def _reply_to(self, chat_id: int, params: dict[str, Any]) -> dict[str, Any] | None:
        reply = params.get("reply_parameters")
        if not isinstance(reply, dict) and params.get("reply_to_message_id"):
            reply = {"message_id": params["reply_to_message_id"]}
        if not isinstance(reply, dict):
            return None
        target_chat = self._chat_id(reply) if "chat_id" in reply else chat_id
        message = self._find_message(target_chat, int(reply.get("message_id") or 0))
        if message is None:
            if reply.get("allow_sending_without_reply") or params.get(
                "allow_sending_without_reply"
            ):
                return None
            raise bad_request("message to be replied not found")
        return copy.deepcopy(message)

    def _check_blocked(self, chat_id: int) -> None:
        if chat_id in self._blocked:
            description = (
                "Forbidden: bot was blocked by the user"
                if chat_id > 0
                else "Forbidden: bot was kicked from the group chat"
            )
            raise ApiError(403, description, rejected=False)

    def _find_message(self, chat_id: int, message_id: int) -> dict[str, Any] | None:
        for message in self._history.get(chat_id, []):
            if message["message_id"] == message_id:
                return message
        return None

    def _is_bot_message(self, message: dict[str, Any]) -> bool:
        return message.get("from", {}).get("id") == self.bot_user["id"]

    def _chat(self, chat_id: int) -> dict[str, Any]:
        if chat_id not in self._chats:
            if chat_id > 0:
                user = self._users.get(chat_id, {"first_name": f"User {chat_id}"})
                chat = {"id": chat_id, "type": "private", "first_name": user["first_name"]}
                self._chats[chat_id] = chat
            else:
                chat_type = "supergroup" if str(chat_id).startswith("-100") else "group"
                self.add_chat(chat_id, chat_type=chat_type)
        return self._chats[chat_id]

    def _next_message_id(self, chat_id: int) -> int:
        counter = self._message_ids.setdefault(chat_id, itertools.count(1))
        return next(counter)

    def _new_bot_message(
        self,
        chat_id: int,
        content: dict[str, Any],
        markup: dict[str, Any] | None,
        kind: str | None,
        reply_to: dict[str, Any] | None,
    ) -> dict[str, Any]:
        bot_from = {k: self.bot_user[k] for k in ("id", "is_bot", "first_name", "username")}
        message: dict[str, Any] = {
            "message_id": self._next_message_id(chat_id),
            "from": bot_from,
            "chat": copy.deepcopy(self._chat(chat_id)),
            "date": int(time.time()),
            **content,
        }
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        if kind == "inline" and markup and markup.get("inline_keyboard"):
            message["reply_markup"] = markup
        elif kind == "keyboard" and markup is not None:
            self._reply_keyboards[chat_id] = markup
            self._collapsed.discard(chat_id)
        elif kind == "remove":
            self._reply_keyboards.pop(chat_id, None)
            self._collapsed.discard(chat_id)
        self._history[chat_id].append(message)
        return copy.deepcopy(message)

    def _remember_user(
        self,
        user_id: int,
        *,
        first_name: str | None = None,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = None,
    ) -> dict[str, Any]:
        user = self._users.setdefault(
            user_id, {"id": user_id, "is_bot": False, "first_name": first_name or "Test"}
        )
        for key, value in (
            ("first_name", first_name),
            ("last_name", last_name),
            ("username", username),
            ("language_code", language_code),
        ):
            if value is not None:
                user[key] = value
        return copy.deepcopy(user)

    def _user_message(
        self,
        user_id: int,
        chat_id: int | None,
        chat_type: str,
        language_code: str,
        first_name: str,
        last_name: str | None,
        username: str | None,
    ) -> dict[str, Any]:
        user = self._remember_user(
            user_id,
            first_name=first_name,
            last_name=last_name,
            username=username,
            language_code=language_code,
        )
        if chat_id is None:
            if chat_type != "private":
                raise ValueError(f"a {chat_type} message needs an explicit chat_id")
            chat_id = user_id
        if chat_type == "private":
            chat = {"id": chat_id, "type": "private", "first_name": first_name}
            if last_name:
                chat["last_name"] = last_name
            if username:
                chat["username"] = username
            self._chats[chat_id] = chat
        elif chat_id not in self._chats:
            self.add_chat(chat_id, chat_type=chat_type)
        return {
            "message_id": self._next_message_id(chat_id),
            "from": user,
            "chat": copy.deepcopy(self._chats[chat_id]),
            "date": int(time.time()),
        }

    def _queue_message(self, message: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        message.update(extra)
        chat_id = message["chat"]["id"]
        keyboard = self._reply_keyboards.get(chat_id)
        if keyboard and keyboard.get("one_time_keyboard") and self._pressed(keyboard, message):
            self._collapsed.add(chat_id)  # Telegram hides a one-time keyboard once used
        self._history[message["chat"]["id"]].append(copy.deepcopy(message))
        return self._queue({"message": message})

    @staticmethod
    def _pressed(keyboard: dict[str, Any], message: dict[str, Any]) -> bool:
        """Whether ``message`` is what a button of the reply ``keyboard`` sends."""
        own_contact = message.get("contact", {}).get("user_id") == message["from"]["id"]
        for row in keyboard.get("keyboard", []):
            for button in row:
                label = button if isinstance(button, str) else button.get("text")
                if isinstance(button, dict) and button.get("request_contact"):
                    if own_contact:
                        return True
                elif message.get("text") == label:
                    return True
        return False


# ---------------------------------------------------------------------- HTTP handlers


class _BotApiHandler(tornado.web.RequestHandler):
    """``/bot<token>/<method>``: GET or POST, form, multipart or JSON parameters."""

    def initialize(self, api: FakeBotAPI) -> None:
        self.api = api
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_connection_close(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    async def get(self, token: str, method: str) -> None:
        await self._handle(token, method)

    async def post(self, token: str, method: str) -> None:
        await self._handle(token, method)

    async def _handle(self, token: str, method: str) -> None:
        answer = await self.api._dispatch(token, method, self._params(), self.closed)
        if answer is None or self.closed.done():
            return
        status, body = answer
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        with contextlib.suppress(tornado.iostream.StreamClosedError):
            await self.finish(json.dumps(body))

    def _params(self) -> dict[str, Any]:
        content_type = self.request.headers.get("Content-Type", "")
        if content_type.startswith("application/json") and self.request.body:
            body = json.loads(self.request.body)
            return body if isinstance(body, dict) else {}
        params: dict[str, Any] = {
            name: decode_form_value(name, values[-1].decode("utf-8"))
            for name, values in self.request.arguments.items()
        }
        uploads = {
            name: UploadedFile(part.filename, part.content_type, part.body)
            for name, parts in self.request.files.items()
            for part in parts[-1:]
        }
        for name, value in list(params.items()):
            # Files attached as attach://<name> replace the reference.
            if isinstance(value, str) and value.startswith("attach://"):
                params[name] = uploads.pop(value.removeprefix("attach://"), value)
        params.update(uploads)
        return params


class _FileHandler(tornado.web.RequestHandler):
    """``/file/bot<token>/<file_path>``: downloads of stored files."""

    def initialize(self, api: FakeBotAPI) -> None:
        self.api = api

    def get(self, token: str, file_path: str) -> None:
        stored = next((f for f in self.api._files.values() if f.file_path == file_path), None)
        if token != self.api.token or stored is None:
            self.set_status(404)
            self.finish(json.dumps({"ok": False, "error_code": 404, "description": "Not Found"}))
            return
        self.set_header("Content-Type", stored.mime_type or "application/octet-stream")
        self.finish(stored.content)


# ---------------------------------------------------------------------- helpers


def _update_type(update: dict[str, Any]) -> str:
    return next((key for key in update if key != "update_id"), "")


def _commands_key(scope: Any, language_code: Any) -> tuple[str, str]:
    scope = scope if isinstance(scope, dict) else {"type": "default"}
    return json.dumps(scope, sort_keys=True), str(language_code or "")


def _photo_size(file_id: str, file_unique_id: str, content: bytes) -> dict[str, Any]:
    return {
        "file_id": file_id,
        "file_unique_id": file_unique_id,
        "width": 800,
        "height": 600,
        "file_size": len(content),
    }


def _set_or_drop(message: dict[str, Any], key: str, value: Any) -> None:
    if value:
        message[key] = value
    else:
        message.pop(key, None)


def _abbreviate(params: dict[str, Any], limit: int = 120) -> str:
    shown = {}
    for key, value in params.items():
        text = repr(value)
        shown[key] = text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"
    return "{" + ", ".join(f"{key}={value}" for key, value in shown.items()) + "}"

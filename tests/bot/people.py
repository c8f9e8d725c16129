"""A Telegram user for tests: types, presses buttons by label, walks the dialogue."""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

from bot.settings import Settings
from flows import Flow, load_flow_text
from flows import t as engine_t
from tests.factories import DEFAULT_ANSWERS, INTAKE_PATH
from tests.fakebotapi import FakeBotAPI

Plan = dict[str, str | tuple[str, ...]]
COMMON = ["welcome", "emergency", "conditions"]
SCREEN = ["acute", "chronic", "fracture"]
CONTACT = ["consent", "name", "phone", "call_time", "confirm"]
#: The shortest way through the whole intake to a saved request.
FULL = [*COMMON, *SCREEN, "oils", *CONTACT]


@cache
def shown_flow() -> Flow:
    """The shipped flow as the bot shows it: {phone} and {hours} filled from the settings."""
    values = Settings(_env_file=None).flow_values
    text = INTAKE_PATH.read_text(encoding="utf-8")
    return load_flow_text(text, origin=str(INTAKE_PATH), values=values)


class Person:
    """A Telegram user talking to the bot through the fake API."""

    def __init__(self, api: FakeBotAPI, user_id: int, lang: str = "en") -> None:
        self.api = api
        self.id = user_id
        self.lang = lang

    async def settle(self, mark: int | None = None) -> None:
        """Wait until the bot has shown its reaction (after ``mark``) and gone quiet.

        A reaction is a message sent to or edited in this chat, or a callback answer with
        a text (a refused press); a bare callback answer comes before the real reaction.
        """
        if mark is not None:

            def reacted(call: Any) -> bool:
                if call.method in ("sendMessage", "editMessageText"):
                    return bool(call.params.get("chat_id") == self.id)
                return call.method == "answerCallbackQuery" and bool(call.params.get("text"))

            deadline = asyncio.get_running_loop().time() + 30
            while not any(reacted(c) for c in self.api.calls[mark:]):
                assert asyncio.get_running_loop().time() < deadline, "the bot did not react"
                await asyncio.sleep(0.01)
        await self.api.wait_idle(quiet=0.15, timeout=30)

    async def say(self, text: str) -> None:
        mark = len(self.api.calls)
        self.api.user_message(self.id, text, language_code=self.lang)
        await self.settle(mark)

    async def press(self, label: str) -> str:
        message_id, data = self.api.find_button(self.id, label)
        mark = len(self.api.calls)
        query_id = self.api.user_callback(self.id, message_id, data, language_code=self.lang)
        await self.settle(mark)
        return query_id

    async def send(self, update: dict[str, Any]) -> None:
        mark = len(self.api.calls)
        self.api.user_update(update)
        await self.settle(mark)

    @property
    def texts(self) -> list[str]:
        return [m.get("text", "") for m in self.api.messages(self.id)]

    @property
    def shown(self) -> list[str]:
        """Every text the bot showed in this chat, in order: sent, or edited into a message."""
        return [
            str(c.params.get("text", ""))
            for c in self.api.calls
            if c.method in ("sendMessage", "editMessageText")
            and c.params.get("chat_id") == self.id
            and c.ok
        ]

    @property
    def last(self) -> str:
        message = self.api.last_message(self.id)
        return message.get("text", "") if message else ""

    def labels(self) -> list[str]:
        """Labels of the inline buttons on the bot's latest message that has any."""
        for message in reversed(self.api.messages(self.id)):
            rows = (message.get("reply_markup") or {}).get("inline_keyboard") or []
            if rows:
                return [b["text"] for row in rows for b in row]
        return []

    async def answer(self, node_id: str, value: str | tuple[str, ...]) -> None:
        node = shown_flow().nodes[node_id]
        lang = self.lang
        if node.kind == "info":
            await self.press(engine_t("engine.continue", lang))  # type: ignore[arg-type]
        elif node.kind == "confirm":
            await self.press(engine_t("engine.confirm", lang))  # type: ignore[arg-type]
        elif node.kind == "checklist":
            labels = {o.id: o.label.get(lang) for o in node.options}  # type: ignore[attr-defined,arg-type]
            for tick in value if isinstance(value, tuple) else (value,):
                await self.press(labels[tick])
            await self.press(engine_t("engine.done", lang))  # type: ignore[arg-type]
        elif node.kind in ("choice", "yesno"):
            labels = {o.id: o.label.get(lang) for o in node.options}  # type: ignore[attr-defined,arg-type]
            await self.press(labels[str(value)])
        else:
            await self.say(str(value))

    async def walk(self, plan: Plan, path: list[str]) -> None:
        answers = {**DEFAULT_ANSWERS, **plan}
        for node_id in path:
            await self.answer(node_id, answers.get(node_id, ""))

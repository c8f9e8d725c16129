"""Engine replies to outbox calls: how a step looks in the client's chat.

The presentation, chosen to cost one Telegram message per answer:
- A press on a question turns that question, in place, into the next one (one edit, plus the
  press's answer). Several engine messages of one step (an outcome and the next question, say)
  are joined into one message while they fit Telegram's limit.
- A question answered by typing (name, phone) carries no buttons, so the typed answer stays
  in the chat and the next question comes as one new message, with nothing to take back.
  (Going back is done from the summary before sending, or /restart.) The phone question
  comes with a one-time "share my number" button, which hides itself once pressed; a number
  typed over it costs one more message, the one that takes the button away.
- A typed answer to a question with buttons (a label typed instead of pressed) takes the old
  question's buttons away first.
- A checklist tick redraws the checklist in place.
So the chat reads as the client's typed answers and one live question at the bottom; the
summary before sending shows every answer.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

from telegram import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
)

from bot.outbox import Out, prompt_ref
from flows import Alert, Lang, Message, Reply, t

__all__ = [
    "ASK",
    "MESSAGE_LIMIT",
    "TYPED",
    "Screen",
    "fit_lines",
    "keyboard",
    "pieces",
    "present",
    "visible_length",
]

#: Telegram's limit on the length of a message's text.
MESSAGE_LIMIT = 4096

_TAG = re.compile(r"<[^>]*>")


def _units(text: str) -> int:
    """``text``'s length as Telegram counts it: UTF-16 code units (an emoji is two)."""
    return len(text.encode("utf-16-le")) // 2


def visible_length(text: str) -> int:
    """How long Telegram counts an HTML message: tags dropped, entities one character each,
    in UTF-16 code units (what its 4096 limit is measured in)."""
    return _units(html.unescape(_TAG.sub("", text)))


def pieces(text: str, room: int) -> list[str]:
    """Plain ``text`` (not yet escaped) in pieces of at most ``room`` UTF-16 units, cut at a
    line end or a space when one is in the piece's second half; nothing is dropped."""
    out: list[str] = []
    rest = text
    while _units(rest) > room:
        cut, used = 0, 0
        for ch in rest:
            width = 2 if ord(ch) > 0xFFFF else 1
            if used + width > room:
                break
            used += width
            cut += 1
        for mark in ("\n", " "):
            at = rest.rfind(mark, 0, cut)
            if at > cut // 2:
                cut = at + 1
                break
        out.append(rest[:cut].rstrip())
        rest = rest[cut:]
    out.append(rest)
    return [p for p in out if p.strip()] or [text]


def fit_lines(lines: Sequence[str], limit: int = MESSAGE_LIMIT, more: str = "…") -> str:
    """The HTML ``lines`` joined, the last ones left out (and ``more`` said instead) until
    the message fits ``limit``; lines are never cut, so no tag is left open."""
    kept = list(lines)
    whole = "\n".join(kept)
    if visible_length(whole) <= limit:
        return whole
    while len(kept) > 1:
        kept.pop()
        shortened = "\n".join([*kept, more])
        if visible_length(shortened) <= limit:
            return shortened
    return "\n".join(kept)


#: Callback data of the "Ask a question" button the bot adds under every question.
ASK = "A"

#: The kinds of question answered by typing: shown without buttons in Telegram.
TYPED = frozenset({"text", "phone"})


def keyboard(message: Message, ask_label: str | None = None) -> InlineKeyboardMarkup | None:
    """The inline keyboard of an engine message, with "Ask a question" under questions.

    Questions answered by typing get none (their back and restart buttons are the summary's
    "change an answer" and /restart), so a typed answer leaves no buttons behind.
    """
    if not message.buttons or message.kind in TYPED:
        return None
    rows = [
        [InlineKeyboardButton(b.label, callback_data=b.data) for b in row]
        for row in message.buttons
    ]
    if ask_label and message.kind not in ("end", "summary", "outcome"):
        rows.append([InlineKeyboardButton(ask_label, callback_data=ASK)])
    return InlineKeyboardMarkup(rows)


@dataclass(frozen=True)
class Screen:
    """One Telegram message to show: text and inline keyboard."""

    text: str
    markup: InlineKeyboardMarkup | None
    phone: bool = False


def screens(messages: Sequence[Message], lang: Lang, notices: Sequence[str] = ()) -> list[Screen]:
    """Join a step's messages (after any notices) into as few Telegram messages as fit."""
    ask = t("client.ask_button", lang)
    parts: list[tuple[str, InlineKeyboardMarkup | None, bool]] = [(n, None, False) for n in notices]
    parts += [(m.text, keyboard(m, ask), m.kind == "phone") for m in messages]
    out: list[Screen] = []
    text, phone = "", False
    for part, markup, is_phone in parts:
        joined = f"{text}\n\n{part}" if text else part
        if text and len(joined) > MESSAGE_LIMIT:
            out.append(Screen(text, None, phone))
            joined = part
        text, phone = joined, is_phone
        if markup is not None:  # a keyboard closes a message
            out.append(Screen(text, markup, phone))
            text, phone = "", False
    if text:
        out.append(Screen(text, None, phone))
    return out


async def present(
    out: Out,
    *,
    chat_id: int,
    client_id: int,
    lang: Lang,
    replies: Sequence[Reply],
    query_id: str | None = None,
    pressed: int | None = None,
    changed: bool = True,
    retire: bool = True,
    left_phone: bool = False,
    phone_taken: bool = True,
    notices: Sequence[str] = (),
) -> None:
    """Record the calls that show a step's replies (see the module's notes).

    For a typed answer (``pressed`` None), ``retire`` says the question answered may have
    buttons to take away, and ``left_phone`` that the share button is still open
    (``phone_taken``: the client left the phone question by typing the number).
    """
    alerts = [r.text for r in replies if isinstance(r, Alert)]
    messages = [r for r in replies if isinstance(r, Message)]
    if query_id is not None:
        await out.answer(chat_id, query_id, alerts[0] if alerts else None)
        if not changed:
            return  # a refused or stale press: the question is still on screen
        alerts = []
    tick = next((m for m in messages if m.edit), None)
    if tick is not None and pressed is not None:
        await out.edit(
            chat_id, pressed, tick.text, markup=keyboard(tick, t("client.ask_button", lang))
        )
        return
    shown = screens(messages, lang, [*notices, *alerts])
    if pressed is None:
        if retire:  # the old question keeps no live buttons once the dialogue moved on
            await out.edit_markup(chat_id, prompt_ref(client_id))
        if left_phone:
            said = "client.phone_saved" if phone_taken else "client.phone_closed"
            await out.send(chat_id, t(said, lang), markup=ReplyKeyboardRemove())
    hint = t("client.share_hint", lang)
    for i, screen in enumerate(shown):
        last = i == len(shown) - 1
        # The live question is remembered, to take its buttons away later; one without
        # buttons leaves nothing to take away.
        bind = (
            ({"prompt": client_id} if screen.markup else {"unprompt": client_id}) if last else None
        )
        if i == 0 and pressed is not None:
            await out.edit(
                chat_id, pressed, screen.text, markup=screen.markup, bind=bind, or_send=True
            )
            if screen.phone:  # an edit cannot bring a reply keyboard: the hint brings it
                await out.send(chat_id, hint, markup=_share(lang))
        elif screen.phone and len(joined := f"{screen.text}\n\n{hint}") <= MESSAGE_LIMIT:
            await out.send(chat_id, joined, markup=_share(lang), bind=bind)
        elif screen.phone:
            await out.send(chat_id, screen.text, bind=bind)
            await out.send(chat_id, hint, markup=_share(lang))
        else:
            await out.send(chat_id, screen.text, markup=screen.markup, bind=bind)


def _share(lang: Lang) -> ReplyKeyboardMarkup:
    """The one-time "share my number" keyboard of the phone question."""
    share = KeyboardButton(t("client.share_contact", lang), request_contact=True)
    return ReplyKeyboardMarkup([[share]], resize_keyboard=True, one_time_keyboard=True)

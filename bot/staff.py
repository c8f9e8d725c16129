"""The staff side of a request: its card, posting and re-delivery, announcements, who is staff."""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import ParseMode
from telegram.error import TelegramError

from bot.render import with_retries
from bot.settings import Settings
from flows import Lang
from storage import (
    AsyncSession,
    ConsultationRequest,
    get_request,
    list_events,
    mark_announced,
    mark_delivered,
    mark_delivery_failed,
    overdue_new_requests,
    requests_to_deliver,
)

__all__ = [
    "Clock",
    "announce_overdue",
    "card_keyboard",
    "card_text",
    "followed_up",
    "is_open",
    "is_staff",
    "post_card",
    "redeliver",
    "refresh_card",
    "st",
]

logger = logging.getLogger(__name__)
Clock = Callable[[], datetime]

_STAFF: dict[str, dict[Lang, str]] = {
    "title": {"ru": "Заявка", "en": "Request"},
    "new": {"ru": "🆕 новая", "en": "🆕 new"},
    "taken": {"ru": "👤 в работе", "en": "👤 taken"},
    "no_answer": {"ru": "📵 не дозвонились", "en": "📵 no answer"},
    "booked": {"ru": "✅ записан(а)", "en": "✅ booked"},
    "declined": {"ru": "❌ отказ", "en": "❌ declined"},
    "closed": {"ru": "🗄 закрыта", "en": "🗄 closed"},
    "name": {"ru": "Имя", "en": "Name"},
    "phone": {"ru": "Телефон", "en": "Phone"},
    "time": {"ru": "Когда звонить", "en": "Call time"},
    "lang": {"ru": "Язык", "en": "Language"},
    "outcome": {"ru": "Итог", "en": "Outcome"},
    "why": {"ru": "Почему", "en": "Why"},
    "answers": {"ru": "Ответы", "en": "Answers"},
    "red_flag": {
        "ru": "⚠️ Ответ изменён после «красного флага»",
        "en": "⚠️ Answer changed after a red flag",
    },
    "source": {"ru": "Источник", "en": "Source"},
    "flow": {"ru": "Анкета", "en": "Flow"},
    "waiting": {"ru": "Ждёт", "en": "Waiting"},
    "minutes": {"ru": "мин", "en": "min"},
    "who": {"ru": "Взял(а)", "en": "Taken by"},
    "attempts": {"ru": "Попыток дозвона", "en": "Call attempts"},
    "retry": {"ru": "Перезвонить", "en": "Call again"},
    "take": {"ru": "👤 Взять", "en": "👤 Take"},
    "b_booked": {"ru": "✅ Позвонили: записан", "en": "✅ Called: booked"},
    "b_declined": {"ru": "❌ Позвонили: отказ", "en": "❌ Called: declined"},
    "b_no_answer": {"ru": "📵 Не ответил", "en": "📵 No answer"},
    "b_close": {"ru": "🗄 Закрыть", "en": "🗄 Close"},
    "b_follow": {"ru": "✉️ Отправить клиенту итог", "en": "✉️ Send the client a follow-up"},
    "r1": {"ru": "через 1 ч", "en": "in 1 h"},
    "r3": {"ru": "через 3 ч", "en": "in 3 h"},
    "rt": {"ru": "завтра 10:00", "en": "tomorrow 10:00"},
    "again": {"ru": "⏰ Всё ещё ждёт звонка", "en": "⏰ Still waiting for a call"},
    "no_contact": {"ru": "без контактов (экстренный случай)", "en": "no contact (emergency stop)"},
}


def st(key: str, lang: Lang) -> str:
    """A fixed string of the staff side."""
    return _STAFF[key][lang]


def _local(at: datetime, settings: Settings) -> str:
    return at.astimezone(settings.zone).strftime("%d.%m %H:%M")


def card_text(request: ConsultationRequest, settings: Settings, now: datetime) -> str:
    """The request card: who, how to reach them, the outcome and why, and where it stands."""
    lang = settings.staff_language
    e = html.escape
    lines = [f"<b>{st('title', lang)} #{request.id}</b> · {st(request.status, lang)}"]
    if request.phone:
        lines.append(f"{st('name', lang)}: <b>{e(request.name or '—')}</b>")
        lines.append(f"{st('phone', lang)}: {e(request.phone)}")
        lines.append(f"{st('time', lang)}: {e(request.preferred_time or '—')}")
    else:
        lines.append(st("no_contact", lang))
    lines.append(f"{st('lang', lang)}: {request.language}")
    lines.append(
        f"{st('outcome', lang)}: <b>{e(request.outcome)}</b> ({e(', '.join(request.rule_ids))})"
    )
    if request.reasons:
        lines.append(f"{st('why', lang)}:")
        lines += [f"• {e(r)}" for r in request.reasons]
    skip = {"welcome", "consent", "name", "phone", "call_time"}
    shown = [a for a in request.answers if a.get("node") not in skip]
    if shown:
        lines.append(f"{st('answers', lang)}:")
        lines += [f"• {e(a['question'])}: {e(a['answer'])}" for a in shown]
    if request.red_flag_changed:
        lines.append(f"{st('red_flag', lang)}: {e(', '.join(request.withdrawn_red_flags))}")
    lines.append(
        f"{st('source', lang)}: {e(request.source or '—')} · "
        f"{st('flow', lang)}: {e(request.flow_name)}@{e(request.flow_version[:8])}"
    )
    if request.status in ("new", "taken", "no_answer"):
        minutes = int((now - request.created_at).total_seconds() // 60)
        lines.append(f"{st('waiting', lang)}: {minutes} {st('minutes', lang)}")
    if request.taken_by_name:
        when = _local(request.taken_at, settings) if request.taken_at else ""
        lines.append(f"{st('who', lang)}: {e(request.taken_by_name)} {when}")
    if request.attempts:
        lines.append(f"{st('attempts', lang)}: {request.attempts}")
    if request.retry_at:
        lines.append(f"{st('retry', lang)}: {_local(request.retry_at, settings)}")
    return "\n".join(lines)


def card_keyboard(
    request: ConsultationRequest, settings: Settings, *, followed_up: bool = False
) -> InlineKeyboardMarkup | None:
    """The buttons a card offers in its current status."""
    lang = settings.staff_language

    def b(key: str, action: str) -> InlineKeyboardButton:
        return InlineKeyboardButton(st(key, lang), callback_data=f"S:{action}:{request.id}")

    if request.status == "new":
        rows = [[b("take", "take")]]
    elif request.status in ("taken", "no_answer"):
        rows = [[b("b_booked", "booked"), b("b_declined", "declined")], [b("b_no_answer", "noans")]]
        if request.status == "no_answer":
            rows.append([b("r1", "r1"), b("r3", "r3"), b("rt", "rt")])
        rows.append([b("b_close", "close")])
    elif request.status in ("booked", "declined"):
        rows = [[b("b_close", "close")]]
    elif request.phone is not None and not followed_up:
        rows = [[b("b_follow", "follow")]]
    else:
        return None
    return InlineKeyboardMarkup(rows)


async def followed_up(session: AsyncSession, request_id: int) -> bool:
    """Whether the client was already sent the closing follow-up."""
    events = await list_events(session=session, request_id=request_id)
    return any(e.action == "follow_up" for e in events)


async def post_card(
    bot: Bot,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    request_id: int,
    now: datetime,
) -> bool:
    """Post a request's card to the staff group; on failure keep it for re-delivery.

    No transaction is open while Telegram is called.
    """
    async with sessionmaker() as session:
        request = await get_request(session=session, request_id=request_id)
        if request is None or request.card_message_id is not None:
            return request is not None
        text, keyboard = card_text(request, settings, now), card_keyboard(request, settings)
    error: str | None = None
    sent = None
    if settings.staff_chat_id is None:
        error = "STAFF_CHAT_ID is not set"
    else:
        chat_id = settings.staff_chat_id
        try:
            sent = await with_retries(
                lambda: bot.send_message(
                    chat_id, text, reply_markup=keyboard, parse_mode=ParseMode.HTML
                )
            )
        except TelegramError as exc:
            logger.warning(
                "could not post the card of request %s: %s", request_id, type(exc).__name__
            )
            error = str(exc)
    async with sessionmaker() as session, session.begin():
        request = await get_request(session=session, request_id=request_id)
        if request is None:
            return False
        if sent is None:
            await mark_delivery_failed(session=session, request=request, error=error or "?")
            return False
        await mark_delivered(
            session=session, request=request, chat_id=sent.chat_id, message_id=sent.message_id
        )
    return True


async def refresh_card(
    bot: Bot,
    settings: Settings,
    request: ConsultationRequest,
    now: datetime,
    *,
    followed: bool,
) -> None:
    """Edit a posted card in place to show the request's current state (outside transactions)."""
    if request.card_message_id is None or request.card_chat_id is None:
        return
    chat_id, message_id = request.card_chat_id, request.card_message_id
    text = card_text(request, settings, now)
    keyboard = card_keyboard(request, settings, followed_up=followed)
    try:
        await with_retries(
            lambda: bot.edit_message_text(
                text,
                chat_id=chat_id,
                message_id=message_id,
                reply_markup=keyboard,
                parse_mode=ParseMode.HTML,
            )
        )
    except TelegramError as exc:
        if "not modified" not in str(exc).lower():
            logger.warning("could not update the card of request %s", request.id)


async def redeliver(
    bot: Bot, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, now: datetime
) -> tuple[int, int]:
    """Post every card not posted yet; return (delivered, still failing)."""
    async with sessionmaker() as session:
        pending = [r.id for r in await requests_to_deliver(session=session) if r.id is not None]
    delivered = 0
    for request_id in pending:
        delivered += await post_card(bot, sessionmaker, settings, request_id, now)
    return delivered, len(pending) - delivered


def is_open(now: datetime, settings: Settings) -> bool:
    """Whether the center is open at ``now`` (its local opening hours)."""
    local = now.astimezone(settings.zone)
    return settings.opening_hour <= local.hour < settings.closing_hour


async def announce_overdue(
    bot: Bot, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, now: datetime
) -> int:
    """Announce again, during opening hours only, requests still new for too long."""
    if settings.staff_chat_id is None or not is_open(now, settings):
        return 0
    chat_id = settings.staff_chat_id
    wait = timedelta(minutes=settings.reannounce_after_minutes)
    async with sessionmaker() as session:
        due = [
            (r.id, r.card_message_id, card_text(r, settings, now), card_keyboard(r, settings))
            for r in await overdue_new_requests(
                session=session, created_before=now - wait, announced_before=now - wait
            )
        ]
    announced = 0
    for request_id, card_id, text, keyboard in due:
        message = f"{st('again', settings.staff_language)}\n\n{text}"
        try:
            await with_retries(
                lambda m=message, k=keyboard, c=card_id: bot.send_message(  # type: ignore[misc]
                    chat_id,
                    m,
                    reply_markup=k,
                    reply_to_message_id=c,
                    allow_sending_without_reply=True,
                    parse_mode=ParseMode.HTML,
                )
            )
        except TelegramError:
            logger.warning("could not re-announce request %s", request_id)
            continue
        async with sessionmaker() as session, session.begin():
            request = await get_request(session=session, request_id=request_id)  # type: ignore[arg-type]
            if request is not None:
                await mark_announced(session=session, request=request, at=now)
        announced += 1
    return announced


async def is_staff(bot: Bot, settings: Settings, user_id: int) -> bool:
    """Staff: listed in STAFF_USER_IDS or ADMIN_USER_IDS, or a member of the staff group."""
    if user_id in settings.staff_user_ids or user_id in settings.admin_user_ids:
        return True
    if settings.staff_chat_id is None:
        return False
    try:
        member = await bot.get_chat_member(settings.staff_chat_id, user_id)
    except TelegramError:
        return False
    return member.status in ("member", "administrator", "creator")

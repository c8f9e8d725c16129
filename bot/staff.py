"""The staff side of a request: its card, posting and re-delivery, announcements, who is staff."""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import ParseMode
from telegram.error import TelegramError
from telegram.ext import JobQueue

from bot.context import BotContext
from bot.render import with_retries
from bot.settings import Settings
from flows import Lang, t
from storage import (
    OPEN_STATUSES,
    Action,
    AsyncSession,
    Client,
    ConsultationRequest,
    Status,
    callbacks_to_remind,
    card_actions,
    get_request,
    list_events,
    mark_announced,
    mark_delivered,
    mark_delivery_failed,
    mark_reminded,
    overdue_new_requests,
    requests_to_deliver,
)

__all__ = [
    "Clock",
    "announce_overdue",
    "callback_job",
    "card_keyboard",
    "card_text",
    "followed_up",
    "into_opening_hours",
    "is_open",
    "is_staff",
    "local_time",
    "post_card",
    "redeliver",
    "refresh_card",
    "remind_callbacks",
    "schedule_callback",
    "schedule_pending_callbacks",
    "tell_client_no_answer",
]

logger = logging.getLogger(__name__)
Clock = Callable[[], datetime]


def local_time(at: datetime, settings: Settings, fmt: str = "%d.%m %H:%M") -> str:
    """A moment in the center's time zone (staff read local time, never UTC)."""
    return at.astimezone(settings.zone).strftime(fmt)


_local = local_time


def card_text(request: ConsultationRequest, settings: Settings, now: datetime) -> str:
    """The request card: who, how to reach them, the outcome and why, and where it stands."""
    lang = settings.staff_language
    e = html.escape
    status = t(f"staff.status.{request.status}", lang)
    lines = [f"<b>{t('staff.card.title', lang)} #{request.id}</b> · {status}"]
    if request.erased_at is not None:
        lines.append(t("staff.card.erased", lang))
    elif request.phone:
        lines.append(f"{t('staff.card.name', lang)}: <b>{e(request.name or '—')}</b>")
        lines.append(f"{t('staff.card.phone', lang)}: {e(request.phone)}")
        lines.append(f"{t('staff.card.time', lang)}: {e(request.preferred_time or '—')}")
    else:
        lines.append(t("staff.card.no_contact", lang))
    lines.append(f"{t('staff.card.lang', lang)}: {request.language}")
    rules = e(", ".join(request.rule_ids))
    lines.append(f"{t('staff.card.outcome', lang)}: <b>{e(request.outcome)}</b> ({rules})")
    if request.reasons:
        lines.append(f"{t('staff.card.why', lang)}:")
        lines += [f"• {e(r)}" for r in request.reasons]
    skip = {"welcome", "consent", "name", "phone", "call_time"}
    shown = [a for a in request.answers if a.get("node") not in skip]
    if shown:
        lines.append(f"{t('staff.card.answers', lang)}:")
        lines += [f"• {e(a['question'])}: {e(a['answer'])}" for a in shown]
    if request.red_flag_changed:
        lines.append(
            f"{t('staff.card.red_flag', lang)}: {e(', '.join(request.withdrawn_red_flags))}"
        )
    lines.append(
        f"{t('staff.card.source', lang)}: {e(request.source or '—')} · "
        f"{t('staff.card.flow', lang)}: {e(request.flow_name)}@{e(request.flow_version[:8])}"
    )
    lines.append(f"{t('staff.card.received', lang)}: {_local(request.created_at, settings)}")
    if request.status in OPEN_STATUSES:
        minutes = int((now - request.created_at).total_seconds() // 60)
        lines.append(f"{t('staff.card.waiting', lang)}: {minutes} {t('staff.minutes', lang)}")
    if request.taken_by_name:
        when = _local(request.taken_at, settings) if request.taken_at else ""
        lines.append(f"{t('staff.card.who', lang)}: {e(request.taken_by_name)} {when}")
    if request.attempts:
        lines.append(f"{t('staff.card.attempts', lang)}: {request.attempts}")
    if request.retry_at:
        lines.append(f"{t('staff.card.retry', lang)}: {_local(request.retry_at, settings)}")
    return "\n".join(lines)


#: The call-back choices after "No answer": their callback tokens, labelled r1, r3, rt.
RETRY_CHOICES = ("r1", "r3", "rt")


def card_keyboard(
    request: ConsultationRequest, settings: Settings, *, followed_up: bool = False
) -> InlineKeyboardMarkup | None:
    """The buttons a card offers in its current status, drawn from the lifecycle table."""
    lang = settings.staff_language

    def b(token: str) -> InlineKeyboardButton:
        label = t(f"staff.button.{token}", lang)
        return InlineKeyboardButton(label, callback_data=f"S:{token}:{request.id}")

    rows = []
    for actions in card_actions(Status(request.status)):
        row = []
        for action in actions:
            if action is Action.RETRY:
                row += [b(choice) for choice in RETRY_CHOICES]
            elif action is Action.FOLLOW_UP:
                if request.phone is not None and not followed_up:
                    row.append(b(action.value))
            else:
                row.append(b(action.value))
        if row:
            rows.append(row)
    return InlineKeyboardMarkup(rows) if rows else None


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
    return await _post_and_mark(
        bot,
        sessionmaker,
        chat_id,
        due,
        t("staff.again", settings.staff_language),
        mark_announced,
        now,
    )


async def _reply_to_card(
    bot: Bot, chat_id: int, card_id: int | None, message: str, keyboard: Any
) -> None:
    """Post ``message`` with the card's buttons as a reply to the card (retried)."""
    await with_retries(
        lambda: bot.send_message(
            chat_id,
            message,
            reply_markup=keyboard,
            reply_to_message_id=card_id,
            allow_sending_without_reply=True,
            parse_mode=ParseMode.HTML,
        )
    )


def into_opening_hours(at: datetime, settings: Settings) -> datetime:
    """``at``, or the next opening of the center if it is closed then (local opening hours)."""
    zone = settings.zone
    local = at.astimezone(zone)
    if settings.opening_hour <= local.hour < settings.closing_hour:
        return at
    day = local.date() if local.hour < settings.opening_hour else local.date() + timedelta(days=1)
    opening = datetime(day.year, day.month, day.day, settings.opening_hour, tzinfo=zone)
    return opening.astimezone(at.tzinfo)


async def remind_callbacks(
    bot: Bot, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, now: datetime
) -> int:
    """Remind the staff group of every call-back that is due (in opening hours); how many."""
    if settings.staff_chat_id is None or not is_open(now, settings):
        return 0
    chat_id = settings.staff_chat_id
    async with sessionmaker() as session:
        due = [
            (r.id, r.card_message_id, card_text(r, settings, now), card_keyboard(r, settings))
            for r in await callbacks_to_remind(session=session)
            if r.retry_at is not None and r.retry_at <= now
        ]
    return await _post_and_mark(
        bot,
        sessionmaker,
        chat_id,
        due,
        t("staff.call_back", settings.staff_language),
        mark_reminded,
        now,
    )


async def _post_and_mark(
    bot: Bot,
    sessionmaker: async_sessionmaker[AsyncSession],
    chat_id: int,
    due: list[tuple[int | None, int | None, str, Any]],
    headline: str,
    mark: Callable[..., Awaitable[None]],
    now: datetime,
) -> int:
    """Post each due card again under ``headline`` and record it with ``mark``; how many."""
    posted = 0
    for request_id, card_id, text, keyboard in due:
        try:
            await _reply_to_card(bot, chat_id, card_id, f"{headline}\n\n{text}", keyboard)
        except TelegramError:
            logger.warning("could not post request %s to the staff group again", request_id)
            continue
        async with sessionmaker() as session, session.begin():
            request = await get_request(session=session, request_id=request_id)  # type: ignore[arg-type]
            if request is not None:
                await mark(session=session, request=request, at=now)
        posted += 1
    return posted


async def callback_job(context: BotContext) -> None:
    """The JobQueue job of a call-back: remind staff of every call-back due now."""
    svc = context.bot_data
    await remind_callbacks(context.bot, svc.sessionmaker, svc.settings, svc.clock())


def schedule_callback(
    job_queue: JobQueue | None,  # type: ignore[type-arg]
    request_id: int,
    retry_at: datetime,
    settings: Settings,
    now: datetime,
) -> None:
    """Schedule the reminder of a request's call-back (replacing one scheduled before).

    The delay is measured on the bot's clock; a call-back already due (after a restart, say)
    fires at once, or at the next opening if the center is closed now.
    """
    if job_queue is None:
        return
    name = f"callback:{request_id}"
    for job in job_queue.get_jobs_by_name(name):
        job.schedule_removal()
    when = into_opening_hours(max(retry_at, now), settings)
    job_queue.run_once(callback_job, when=max(when - now, timedelta(0)), name=name)


async def schedule_pending_callbacks(
    job_queue: JobQueue | None,  # type: ignore[type-arg]
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    now: datetime,
) -> int:
    """On start: schedule the reminders of every call-back stored and not reminded yet."""
    async with sessionmaker() as session:
        pending = [(r.id, r.retry_at) for r in await callbacks_to_remind(session=session)]
    for request_id, retry_at in pending:
        if request_id is not None and retry_at is not None:
            schedule_callback(job_queue, request_id, retry_at, settings, now)
    return len(pending)


async def tell_client_no_answer(
    bot: Bot, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, request_id: int
) -> bool:
    """Tell the client, in their language, that the center tried to call; whether it was sent."""
    async with sessionmaker() as session:
        request = await get_request(session=session, request_id=request_id)
        client = await session.get(Client, request.client_id) if request else None
    if client is None or client.telegram_id is None:
        return False
    lang: Lang = "en" if client.language == "en" else "ru"
    text = t("client.tried_to_call", lang, **settings.flow_values)
    chat_id = client.telegram_id
    try:
        await with_retries(lambda: bot.send_message(chat_id, text))
    except TelegramError:
        logger.info("could not tell the client of request %s about the missed call", request_id)
        return False
    return True


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

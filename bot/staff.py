"""The staff side of a request: its card, posting and re-delivery, announcements, who is staff."""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import TelegramError
from telegram.ext import JobQueue

from bot.context import BotContext, Services
from bot.outbox import Work, markup_dict, unit
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
    "queue_card",
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


def callback_hour(settings: Settings) -> int:
    """The hour of "call again tomorrow": 10:00, or the opening if the center opens later."""
    return max(settings.opening_hour, 10)


#: The call-back choices after "No answer": their callback tokens, labelled r1, r3, rt.
RETRY_CHOICES = ("r1", "r3", "rt")


def card_keyboard(
    request: ConsultationRequest, settings: Settings, *, followed_up: bool = False
) -> InlineKeyboardMarkup | None:
    """The buttons a card offers in its current status, drawn from the lifecycle table."""
    lang = settings.staff_language

    def b(token: str) -> InlineKeyboardButton:
        label = t(f"staff.button.{token}", lang, hour=callback_hour(settings))
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


async def queue_card(work: Work, settings: Settings, request_id: int) -> None:
    """Queue a new request's card for the staff group, in the unit that created the request.

    The sender records the card's message id when it is posted (or why it could not be).
    """
    request = await get_request(session=work.session, request_id=request_id)
    if request is None:
        return
    if settings.staff_chat_id is None:
        await mark_delivery_failed(
            session=work.session, request_id=request_id, error="STAFF_CHAT_ID is not set"
        )
        return
    # Queued: the chat is known, the message id comes when the sender has posted it.
    request.card_chat_id = settings.staff_chat_id
    request.delivery_error = None
    work.session.add(request)
    await work.out.send(
        settings.staff_chat_id,
        card_text(request, settings, work.at),
        markup=card_keyboard(request, settings),
        bind={"card": request_id},
    )


async def refresh_card(
    work: Work,
    settings: Settings,
    request: ConsultationRequest,
    *,
    followed: bool,
) -> None:
    """Redraw a posted card to show the request's current state."""
    if request.card_message_id is None or request.card_chat_id is None:
        return
    await work.out.edit(
        request.card_chat_id,
        request.card_message_id,
        card_text(request, settings, work.at),
        markup=card_keyboard(request, settings, followed_up=followed),
    )


async def redeliver(services: Services) -> int:
    """Queue the cards never queued or refused by Telegram (no staff group then, say).

    A card still waiting in the outbox is not queued twice. Returns how many were queued.
    """
    if services.settings.staff_chat_id is None:
        return 0
    async with unit(services, claim=False) as work:
        due = [
            r
            for r in await requests_to_deliver(session=work.session)
            if (r.card_chat_id is None or r.delivery_error is not None) and r.id is not None
        ]
        for request in due:
            await queue_card(work, services.settings, request.id)  # type: ignore[arg-type]
    return len(due)


def is_open(now: datetime, settings: Settings) -> bool:
    """Whether the center is open at ``now`` (its local opening hours)."""
    local = now.astimezone(settings.zone)
    return settings.opening_hour <= local.hour < settings.closing_hour


async def announce_overdue(services: Services) -> int:
    """Announce again, during opening hours only, requests still new for too long."""
    settings = services.settings
    now = services.clock()
    if settings.staff_chat_id is None or not is_open(now, settings):
        return 0
    wait = timedelta(minutes=settings.reannounce_after_minutes)
    async with unit(services, claim=False) as work:
        due = await overdue_new_requests(
            session=work.session, created_before=now - wait, announced_before=now - wait
        )
        await _post_again(work, settings, due, t("staff.again", settings.staff_language))
        for request in due:
            await mark_announced(session=work.session, request=request, at=now)
    return len(due)


async def _post_again(
    work: Work, settings: Settings, due: list[ConsultationRequest], headline: str
) -> None:
    """Post each card again under ``headline``, as a reply to the card, with its buttons."""
    assert settings.staff_chat_id is not None
    for request in due:
        params: dict[str, Any] = {
            "chat_id": settings.staff_chat_id,
            "text": f"{headline}\n\n{card_text(request, settings, work.at)}",
            "parse_mode": "HTML",
            "reply_markup": markup_dict(card_keyboard(request, settings)),
            "link_preview_options": {"is_disabled": True},
        }
        if request.card_message_id is not None:
            params["reply_parameters"] = {
                "message_id": request.card_message_id,
                "allow_sending_without_reply": True,
            }
        await work.out.call(settings.staff_chat_id, "sendMessage", params)


def into_opening_hours(at: datetime, settings: Settings) -> datetime:
    """``at``, or the next opening of the center if it is closed then (local opening hours)."""
    zone = settings.zone
    local = at.astimezone(zone)
    if settings.opening_hour <= local.hour < settings.closing_hour:
        return at
    day = local.date() if local.hour < settings.opening_hour else local.date() + timedelta(days=1)
    opening = datetime(day.year, day.month, day.day, settings.opening_hour, tzinfo=zone)
    return opening.astimezone(at.tzinfo)


async def remind_callbacks(services: Services) -> int:
    """Remind the staff group of every call-back that is due (in opening hours); how many."""
    settings = services.settings
    now = services.clock()
    if settings.staff_chat_id is None or not is_open(now, settings):
        return 0
    async with unit(services, claim=False) as work:
        due = [
            r
            for r in await callbacks_to_remind(session=work.session)
            if r.retry_at is not None and r.retry_at <= now
        ]
        await _post_again(work, settings, due, t("staff.call_back", settings.staff_language))
        for request in due:
            await mark_reminded(session=work.session, request=request, at=now)
    return len(due)


async def callback_job(context: BotContext) -> None:
    """The JobQueue job of a call-back: remind staff of every call-back due now."""
    await remind_callbacks(context.bot_data)


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


async def tell_client_no_answer(work: Work, settings: Settings, request_id: int) -> bool:
    """Tell the client, in their language, that the center tried to call; whether queued."""
    request = await get_request(session=work.session, request_id=request_id)
    client = await work.session.get(Client, request.client_id) if request else None
    if client is None or client.telegram_id is None:
        return False
    lang: Lang = "en" if client.language == "en" else "ru"
    await work.out.send(client.telegram_id, t("client.tried_to_call", lang, **settings.flow_values))
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

"""Staff handlers: card buttons, /queue, /request, /note, /stats, replies to clients."""

from __future__ import annotations

import html
import logging
from datetime import timedelta

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ChatType
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, MessageHandler, filters

from bot.context import BotContext, Services
from bot.handlers.client import language_of
from bot.outbox import Work, unit
from bot.render import MESSAGE_LIMIT, fit_lines, pieces, visible_length
from bot.staff import (
    RETRY_CHOICES,
    card_keyboard,
    card_text,
    followed_up,
    is_staff,
    local_time,
    refresh_card,
    schedule_callback,
    tell_client_no_answer,
)
from bot.workflow import (
    IllegalMoveError,
    RequestNotFoundError,
    act,
    parse_request_id,
    retry_time,
)
from flows import Lang, t
from storage import (
    Action,
    Client,
    add_request_event,
    count_open_requests,
    find_relay,
    funnel,
    get_request,
    list_events,
    list_open_requests,
    stats,
)

__all__ = ["register"]

logger = logging.getLogger(__name__)

PAGE = 10


def register(app: Application) -> None:  # type: ignore[type-arg]
    """Add the staff handlers (each checks that the user is staff)."""
    app.add_handler(CommandHandler("queue", on_queue))
    app.add_handler(CommandHandler("request", on_request))
    app.add_handler(CommandHandler("note", on_note))
    app.add_handler(CommandHandler("stats", on_stats))
    app.add_handler(CallbackQueryHandler(on_card_button, pattern=r"^S:[a-z0-9]+:\d+$"))
    app.add_handler(
        MessageHandler(
            filters.ChatType.GROUPS
            & filters.REPLY
            & ~filters.COMMAND
            & ~filters.StatusUpdate.ALL
            & ~filters.VIA_BOT,
            on_reply,
        )
    )


async def _allowed(update: Update, context: BotContext) -> bool:
    """True for staff in the staff group or in their private chat with the bot; anyone else,
    and staff in any other chat (whose members would see clients' data), is refused and
    shown nothing."""
    user = update.effective_user
    chat = update.effective_chat
    svc = context.services
    if chat is None:
        return False
    here = chat.type == ChatType.PRIVATE or chat.id == svc.settings.staff_chat_id
    staff = user is not None and await is_staff(context.bot, svc.settings, user.id)
    if staff and here:
        return True
    lang = language_of(user, svc.settings.staff_language)
    refusal = t("staff.refused" if not staff else "staff.wrong_chat", lang)
    async with unit(svc) as work:
        if update.callback_query is not None:
            await work.out.answer(chat.id, update.callback_query.id, refusal)
        else:
            await work.out.send(chat.id, refusal)
    return False


def _actor(update: Update) -> tuple[int | None, str]:
    user = update.effective_user
    if user is None:
        return None, "?"
    return user.id, user.full_name + (f" (@{user.username})" if user.username else "")


async def on_card_button(update: Update, context: BotContext) -> None:
    """A card's button: an action of the lifecycle table, a call-back time, or a queue page."""
    query = update.callback_query
    chat = update.effective_chat
    if query is None or query.data is None or chat is None:
        return
    if not await _allowed(update, context):
        return
    _, token, raw_id = query.data.split(":")
    svc = context.services
    lang = svc.settings.staff_language
    async with unit(svc) as work:
        if token == "queue":  # the queue's page buttons (forged numbers get the last page)
            await work.out.answer(chat.id, query.id)
            await _send_queue(work, svc, chat.id, _page(raw_id))
            return
        retry_at = retry_time(token, work.at, svc.settings) if token in RETRY_CHOICES else None
        action = Action.RETRY if retry_at is not None else _action(token)
        request_id = parse_request_id(raw_id)
        if action is None or request_id is None:
            await work.out.answer(chat.id, query.id, t("staff.not_found", lang))
            return
        note = None
        if action is Action.FOLLOW_UP and await followed_up(work.session, request_id):
            # once: a second press (or two at once) neither sends nor records it again
            await work.out.answer(chat.id, query.id, t("staff.followed_already", lang))
            return
        if action is Action.FOLLOW_UP:
            note = await _send_follow_up(work, svc, request_id)
            if note is None:
                await work.out.answer(chat.id, query.id, t("staff.gone", lang))
                return
        actor_id, actor_name = _actor(update)
        try:
            done = await act(
                work.session, request_id=request_id, action=action, actor_id=actor_id,
                actor_name=actor_name, at=work.at, note=note, retry_at=retry_at,
            )  # fmt: skip
        except RequestNotFoundError:
            await work.out.answer(chat.id, query.id, t("staff.not_found", lang))
            return
        except IllegalMoveError:  # a stale card: someone else moved the request meanwhile
            # The move that made it stale redraws the card (a press, or the command line),
            # so it shows the truth without a redraw from here, which would repeat that one
            # ("message is not modified") when two presses come together.
            await work.out.answer(chat.id, query.id, t("staff.not_possible", lang))
            return
        await work.out.answer(
            chat.id, query.id, t("staff.followed", lang) if action is Action.FOLLOW_UP else None
        )
        await refresh_card(work, svc.settings, done.request, followed=done.followed)
        if action is Action.NO_ANSWER and svc.settings.tell_client_no_answer:
            await tell_client_no_answer(work, svc.settings, request_id)
    if action is Action.RETRY and retry_at is not None:
        schedule_callback(context.job_queue, request_id, retry_at, svc.settings, svc.clock())


def _action(token: str) -> Action | None:
    try:
        return Action(token)
    except ValueError:
        return None


def _page(text: str) -> int:
    """A page number from a command or a button; nonsense is page 1, huge numbers the last."""
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()):
        return 1
    return max(int(digits), 1) if len(digits) <= 9 else 10**9


async def _send_follow_up(work: Work, svc: Services, request_id: int) -> str | None:
    """Send a closed request's client the fixed follow-up; the text, or None if impossible."""
    request = await get_request(session=work.session, request_id=request_id)
    if request is None or request.status != "closed":
        return None
    client = await work.session.get(Client, request.client_id)
    if client is None or client.telegram_id is None:
        return None
    settings = svc.settings
    lang: Lang = "en" if client.language == "en" else "ru"
    text = t("client.follow_up", lang, **settings.flow_values)
    await work.out.send(client.telegram_id, text)
    return text


async def on_queue(update: Update, context: BotContext) -> None:
    """Open requests: those needing a doctor's word or changed after a red flag first."""
    chat = update.effective_chat
    if chat is None or not await _allowed(update, context):
        return
    page = _page(context.args[0]) if context.args else 1
    async with unit(context.services) as work:
        await _send_queue(work, context.services, chat.id, page)


async def _send_queue(work: Work, svc: Services, chat_id: int, page: int) -> None:
    lang = svc.settings.staff_language
    now = work.at
    session = work.session
    total = await count_open_requests(session=session)
    page = min(page, max((total + PAGE - 1) // PAGE, 1))
    items = await list_open_requests(session=session, offset=(page - 1) * PAGE, limit=PAGE)
    if not items:
        await work.out.send(chat_id, t("staff.queue_empty", lang))
        return
    pages = (total + PAGE - 1) // PAGE
    lines = [f"<b>{t('staff.queue', lang)}</b> ({page}/{pages}, {total})"]
    for r in items:
        flag = "⚠️ " if (r.outcome == "CLEAR" or r.red_flag_changed) else ""
        minutes = int((now - r.created_at).total_seconds() // 60)
        call = f" · 📞 {local_time(r.retry_at, svc.settings)}" if r.retry_at else ""
        lines.append(
            f"{flag}#{r.id} · {t(f'staff.status.{r.status}', lang)} · {html.escape(r.outcome)} · "
            f"{html.escape(r.name or '—')} · {minutes} {t('staff.minutes', lang)}{call}"
        )
    nav = []
    if page > 1:
        nav.append(InlineKeyboardButton("◀", callback_data=f"S:queue:{page - 1}"))
    if page < pages:
        nav.append(InlineKeyboardButton("▶", callback_data=f"S:queue:{page + 1}"))
    await work.out.send(
        chat_id, "\n".join(lines), markup=InlineKeyboardMarkup([nav]) if nav else None
    )


async def on_request(update: Update, context: BotContext) -> None:
    """/request N: the card with its history."""
    chat = update.effective_chat
    if chat is None or not await _allowed(update, context):
        return
    svc = context.services
    lang = svc.settings.staff_language
    async with unit(svc) as work:
        if not context.args or not context.args[0].lstrip("#").isdigit():
            await work.out.send(chat.id, t("staff.usage_request", lang))
            return
        request_id = parse_request_id(context.args[0])
        session = work.session
        request = await get_request(session=session, request_id=request_id) if request_id else None
        if request is None or request.id is None:
            await work.out.send(chat.id, t("staff.not_found", lang))
            return
        events = await list_events(session=session, request_id=request.id)
        history = [
            f"• {local_time(e.at, svc.settings)} {html.escape(e.actor_name)}: "
            + (f"{e.from_status} → {e.to_status}" if e.action == "status" else e.action)
            + (f" — {html.escape(e.note)}" if e.note and e.action == "note" else "")
            for e in events
        ]
        text = card_text(request, svc.settings, work.at)
        # the newest entries, as many as fit one message (the command line shows them all)
        shown = history[-20:]
        while shown:
            left = len(history) - len(shown)
            more = [t("staff.history_more", lang, n=left, id=request.id)] if left else []
            whole = "\n".join([*more, *shown])
            if visible_length(f"{text}\n\n{t('staff.history', lang)}\n{whole}") <= MESSAGE_LIMIT:
                text += f"\n\n<b>{t('staff.history', lang)}</b>\n{whole}"
                break
            shown = shown[1:]
        await work.out.send(chat.id, text, markup=card_keyboard(request, svc.settings))


async def on_note(update: Update, context: BotContext) -> None:
    """/note N text: add a note to the request's audit trail."""
    chat = update.effective_chat
    if chat is None or not await _allowed(update, context):
        return
    svc = context.services
    lang = svc.settings.staff_language
    message = update.effective_message
    # the note as typed, its line breaks kept: "/note 12 first line\nsecond line"
    words = (message.text or "").split(None, 2) if message is not None else []
    args = words[1:]
    async with unit(svc) as work:
        if len(args) < 2 or not args[0].lstrip("#").isdigit():
            await work.out.send(chat.id, t("staff.usage_note", lang))
            return
        note = args[1].strip()[:1000]
        actor_id, actor_name = _actor(update)
        request_id = parse_request_id(args[0])
        session = work.session
        request = await get_request(session=session, request_id=request_id) if request_id else None
        if request is None or request.id is None:
            await work.out.send(chat.id, t("staff.not_found", lang))
            return
        await add_request_event(
            session=session, request_id=request.id, actor_id=actor_id, actor_name=actor_name,
            action="note", note=note, at=work.at,
        )  # fmt: skip
        await work.out.send(chat.id, t("staff.noted", lang, id=request.id))


async def on_stats(update: Update, context: BotContext) -> None:
    """/stats: today and the last 7 days, by outcome and source, and the funnel."""
    chat = update.effective_chat
    if chat is None or not await _allowed(update, context):
        return
    svc = context.services
    lang = language_of(update.effective_user, svc.settings.staff_language)
    async with unit(svc) as work:
        now = work.at
        local = now.astimezone(svc.settings.zone)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        lines: list[str] = []
        session = work.session
        for key, since in (("today", midnight), ("week", midnight - timedelta(days=6))):
            s = await stats(session=session, since=since, until=now + timedelta(seconds=1))
            median = (
                f"{s.median_first_call_minutes:.0f}"
                if s.median_first_call_minutes is not None
                else "—"
            )
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(s.by_outcome.items()))
            sources = ", ".join(f"{html.escape(k)} {v}" for k, v in sorted(s.by_source.items()))
            lines += [
                f"<b>{t(f'staff.stats.{key}', lang)}</b>",
                t("staff.stats.counts", lang, new=s.new, taken=s.taken, booked=s.booked,
                  declined=s.declined, no_answer=s.no_answer, closed=s.closed),
                t("staff.stats.median", lang, minutes=median),
                t("staff.stats.by_outcome", lang, items=outcomes or "—"),
                t("staff.stats.by_source", lang, items=sources or "—"),
            ]  # fmt: skip
        steps = await funnel(session=session, since=midnight - timedelta(days=6))
        lines.append(f"\n<b>{t('staff.stats.funnel', lang)}</b>")
        lines += [f"{html.escape(node)}: {reached} / {stopped}" for node, reached, stopped in steps]
        await work.out.send(chat.id, fit_lines(lines))


async def on_reply(update: Update, context: BotContext) -> None:
    """A staff reply to a client's forwarded question goes to the client."""
    message = update.effective_message
    chat = update.effective_chat
    svc = context.services
    if (
        message is None
        or message.reply_to_message is None
        or chat is None
        or chat.id != svc.settings.staff_chat_id
    ):
        return
    async with svc.sessionmaker() as session:
        relay = await find_relay(
            session=session,
            staff_chat_id=chat.id,
            staff_message_id=message.reply_to_message.message_id,
        )
    if relay is None or not await _allowed(update, context):
        return
    lang = svc.settings.staff_language
    if message.text is None:  # a photo, a voice message, a sticker…: not passed on
        async with unit(svc) as work:
            await work.out.send(chat.id, t("staff.text_only", lang))
        return
    async with unit(svc) as work:
        client = await work.session.get(Client, relay.client_id)
        if client is None or client.telegram_id is None:
            await work.out.send(chat.id, t("staff.gone", lang))
            return
        client_lang: Lang = "en" if client.language == "en" else "ru"
        head = f"{t('client.staff_answer', client_lang)}\n\n"
        # the header on top of a reply as long as Telegram allows: the rest follows
        parts = pieces(message.text, MESSAGE_LIMIT - visible_length(head))
        # the group learns whether it reached the client once it did (or could not)
        notify = {
            "chat": chat.id,
            "ok": t("staff.delivered", lang),
            "failed": t("staff.not_delivered", lang),
        }
        for n, part in enumerate(parts):
            text = f"{head if n == 0 else ''}{html.escape(part)}"
            last = n == len(parts) - 1
            await work.out.send(client.telegram_id, text, bind={"notify": notify} if last else None)

"""Admin handlers: get the flow, upload an edited one, see the check, publish, roll back."""

from __future__ import annotations

import asyncio
import html
import logging

from telegram import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    Message,
    Update,
)
from telegram.error import BadRequest, TelegramError
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, MessageHandler, filters

from bot.context import BotContext
from bot.handlers.client import language_of
from bot.publishing import discard, propose, publish_version, rollback
from flows import Lang, diff_flows, t, to_png
from storage import get_active_flow_version, list_flow_versions

__all__ = ["register"]

logger = logging.getLogger(__name__)

MAX_UPLOAD = 512 * 1024

#: How much of a check report a message shows (Telegram allows 4096 characters).
REPORT_CHARS = 3500


def _pre(text: str, limit: int = REPORT_CHARS) -> str:
    """``text`` as a <pre> block, shortened before escaping so that no entity is cut."""
    if len(text) > limit:
        text = text[:limit].rstrip() + "\n…"
    return f"<pre>{html.escape(text)}</pre>"


def _lang(update: Update, context: BotContext) -> Lang:
    """The language of the admin who wrote (Telegram's, as for clients; else the staff's)."""
    return language_of(update.effective_user, context.services.settings.staff_language)


async def _refusal(message: Message, report: str, lang: Lang) -> None:
    """Say the flow failed its check; a report too long for a message also comes as a file."""
    await message.reply_text(f"{t('admin.failed', lang)}\n{_pre(report)}")
    if len(report) > REPORT_CHARS:
        await message.reply_document(
            InputFile(report.encode("utf-8"), filename="check-report.txt"),
            caption=t("admin.whole_report", lang),
        )


def register(app: Application) -> None:  # type: ignore[type-arg]
    """Add the admin handlers (before the client ones: admins' documents are flows)."""
    admins = app.bot_data.settings.admin_user_ids
    app.add_handler(CommandHandler("flow", on_flow))
    app.add_handler(CommandHandler("flows_history", on_history))
    app.add_handler(CallbackQueryHandler(on_decision, pattern=r"^(P|X):\d+$"))
    app.add_handler(CallbackQueryHandler(on_rollback, pattern=r"^R:\d+$"))
    if admins:
        app.add_handler(
            MessageHandler(
                filters.ChatType.PRIVATE & filters.Document.ALL & filters.User(user_id=admins),
                on_upload,
            )
        )


async def _admin(update: Update, context: BotContext) -> bool:
    user = update.effective_user
    if user is not None and user.id in context.services.settings.admin_user_ids:
        return True
    refused = t("admin.refused", _lang(update, context))
    if update.callback_query is not None:
        await update.callback_query.answer(refused)
    elif update.effective_message is not None:
        await update.effective_message.reply_text(refused)
    return False


def _author(update: Update) -> str:
    user = update.effective_user
    if user is None:
        return "Telegram"
    return f"{user.full_name} (Telegram {user.id})"


async def on_flow(update: Update, context: BotContext) -> None:
    """/flow: the active version's YAML as a document."""
    if not await _admin(update, context) or update.effective_message is None:
        return
    svc = context.services
    async with svc.sessionmaker() as session, session.begin():
        await svc.registry.bootstrap(session)
        row = await get_active_flow_version(session=session, flow_name=svc.registry.name)
    assert row is not None
    name, n, checksum = html.escape(row.flow_name), row.number, row.checksum
    await update.effective_message.reply_document(
        InputFile(row.yaml.encode("utf-8"), filename=f"{row.flow_name}-v{row.number}.yaml"),
        caption=t("admin.flow_caption", _lang(update, context), name=name, n=n, checksum=checksum),
    )


async def on_upload(update: Update, context: BotContext) -> None:
    """An edited flow from an admin: check it, show the diff and the graph, offer Publish."""
    message = update.effective_message
    if message is None or message.document is None:
        return
    document = message.document
    lang = _lang(update, context)
    if document.file_size and document.file_size > MAX_UPLOAD:
        await message.reply_text(t("admin.too_big", lang, kb=MAX_UPLOAD // 1024))
        return
    raw = await (await document.get_file()).download_as_bytearray()
    if len(raw) > MAX_UPLOAD:
        await message.reply_text(t("admin.too_big", lang, kb=MAX_UPLOAD // 1024))
        return
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        await message.reply_text(t("admin.not_yaml", lang))
        return
    svc = context.services
    origin = document.file_name or "upload.yaml"
    # The proof runs in a bounded worker process, outside any transaction; a flow that
    # passes is kept as a version waiting for Publish (it survives a restart).
    result = await propose(
        registry=svc.registry, sessionmaker=svc.sessionmaker, text=text, origin=origin,
        author=_author(update),
    )  # fmt: skip
    if result.status == "refused" and result.report is not None:
        await _refusal(message, result.report.render(), lang)
        return
    if result.status == "other_flow" and result.report is not None:
        other = result.report.flow_name
        await message.reply_text(
            t("admin.other_flow", lang, name=html.escape(other), ours=svc.registry.name)
        )
        return
    assert result.flow is not None and result.report is not None
    await message.reply_text(f"{t('admin.passed', lang)}\n{_pre(result.report.render(), 1500)}")
    if result.status == "unchanged":
        await message.reply_text(t("admin.no_changes", lang, n=result.active))
        return
    async with svc.sessionmaker() as session:
        active = await svc.registry.active(session)
    lines = await asyncio.to_thread(diff_flows, active, result.flow)
    summary = (
        t("admin.changes", lang, n=result.active)
        + "\n"
        + "\n".join(f"• {html.escape(x)}" for x in lines)
        if lines
        else t("admin.layout_only", lang, n=result.active)
    )
    try:
        await message.reply_photo(
            await asyncio.to_thread(to_png, result.flow), caption=t("admin.graph", lang)
        )
    except TelegramError:
        logger.warning("could not send the flow graph")
    buttons = InlineKeyboardMarkup(
        [[InlineKeyboardButton(t("admin.publish", lang), callback_data=f"P:{result.number}"),
          InlineKeyboardButton(t("admin.discard", lang), callback_data=f"X:{result.number}")]]
    )  # fmt: skip
    await message.reply_text(summary[:4000], reply_markup=buttons)


async def on_decision(update: Update, context: BotContext) -> None:
    """Publish or Discard a checked upload (kept as a version, so any process can)."""
    query = update.callback_query
    if query is None or query.data is None or not await _admin(update, context):
        return
    verb, raw = query.data.split(":")
    number = int(raw) if len(raw) <= 9 else 0
    svc = context.services
    lang = _lang(update, context)
    await query.answer()
    if verb == "X":
        gone = await discard(registry=svc.registry, sessionmaker=svc.sessionmaker, number=number)
        await _settle(
            query, t("admin.discarded" if gone.status != "missing" else "admin.expired", lang)
        )
        return
    result = await publish_version(
        registry=svc.registry, sessionmaker=svc.sessionmaker, number=number,
        author=_author(update), note="published from Telegram",
    )  # fmt: skip
    if result.status == "published":
        await _settle(query, t("admin.published", lang, n=number))
    elif result.status == "already_active":
        await _settle(query, t("admin.already_active", lang, n=number))
    elif result.status == "refused" and result.report is not None:
        await _settle(query, f"{t('admin.failed', lang)}\n{_pre(result.report.render())}")
    else:
        await _settle(query, t("admin.expired", lang))


async def _settle(query: CallbackQuery, text: str) -> None:
    """Replace the buttons' message with ``text`` (a second press finds nothing to change)."""
    try:
        await query.edit_message_text(text)
    except BadRequest as exc:
        if "not modified" not in str(exc):
            raise


async def on_history(update: Update, context: BotContext) -> None:
    """/flows_history: the versions, with a Rollback button for each inactive one."""
    if not await _admin(update, context) or update.effective_message is None:
        return
    svc = context.services
    async with svc.sessionmaker() as session, session.begin():
        await svc.registry.bootstrap(session)
        versions = await list_flow_versions(session=session, flow_name=svc.registry.name)
    lang = _lang(update, context)
    lines = [t("admin.history", lang)]
    rows = []
    for v in versions[:20]:
        mark = "●" if v.active else "○"
        lines.append(
            f"{mark} <b>{v.number}</b> · {v.created_at:%Y-%m-%d %H:%M} UTC · "
            f"{html.escape(v.author)}: {html.escape(v.note)}"
        )
        if not v.active:
            label = t("admin.rollback", lang, n=v.number)
            rows.append([InlineKeyboardButton(label, callback_data=f"R:{v.number}")])
    await update.effective_message.reply_text(
        "\n".join(lines), reply_markup=InlineKeyboardMarkup(rows[:10]) if rows else None
    )


async def on_rollback(update: Update, context: BotContext) -> None:
    """Make an earlier version active again, after checking it again."""
    query = update.callback_query
    if query is None or query.data is None or not await _admin(update, context):
        return
    raw = query.data.split(":")[1]
    number = int(raw) if len(raw) <= 9 else 0
    svc = context.services
    lang = _lang(update, context)
    await query.answer()
    result = await rollback(
        registry=svc.registry, sessionmaker=svc.sessionmaker, number=number,
        author=_author(update),
    )  # fmt: skip
    if result.status == "published":
        await _settle(query, t("admin.rolled_back", lang, n=number, m=result.number))
    elif result.status == "already_active":
        await _settle(query, t("admin.already_active", lang, n=number))
    elif result.status == "refused":
        await _settle(query, t("admin.unsafe_now", lang, n=number))
    else:
        await _settle(query, t("admin.no_version", lang, n=number))

"""Admin handlers: get the flow, upload an edited one, see the check, publish, roll back."""

from __future__ import annotations

import asyncio
import html
import logging

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, MessageHandler, filters

from bot.context import BotContext, Services
from bot.graphdraw import to_png
from bot.handlers.client import language_of
from bot.outbox import Work, unit
from bot.publishing import Result, discard, propose, publish_version, rollback
from bot.render import fit_lines
from flows import Lang, diff_flows, t
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


async def _refusal(work: Work, chat_id: int, report: str, lang: Lang) -> None:
    """Say the flow failed its check; a report too long for a message also comes as a file."""
    await work.out.send(chat_id, f"{t('admin.failed', lang)}\n{_pre(report)}")
    if len(report) > REPORT_CHARS:
        await work.out.document(
            chat_id,
            report.encode("utf-8"),
            "check-report.txt",
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
    chat = update.effective_chat
    lang = _lang(update, context)
    if chat is not None:
        async with unit(context.services) as work:
            if update.callback_query is not None:
                await work.out.answer(chat.id, update.callback_query.id, t("admin.refused", lang))
            else:
                await work.out.send(chat.id, t("admin.refused", lang))
    return False


def _author(update: Update) -> str:
    user = update.effective_user
    if user is None:
        return "Telegram"
    return f"{user.full_name} (Telegram {user.id})"


async def on_flow(update: Update, context: BotContext) -> None:
    """/flow: the active version's YAML as a document."""
    chat = update.effective_chat
    if chat is None or not await _admin(update, context):
        return
    svc = context.services
    async with unit(svc) as work:
        await svc.registry.bootstrap(work.session)
        row = await get_active_flow_version(session=work.session, flow_name=svc.registry.name)
        assert row is not None
        await work.out.document(
            chat.id,
            row.yaml.encode("utf-8"),
            f"{row.flow_name}-v{row.number}.yaml",
            caption=t(
                "admin.flow_caption",
                _lang(update, context),
                name=html.escape(row.flow_name),
                n=row.number,
                checksum=row.checksum,
            ),
        )


async def on_upload(update: Update, context: BotContext) -> None:
    """An edited flow from an admin: check it, show the diff and the graph, offer Publish."""
    message = update.effective_message
    chat = update.effective_chat
    if message is None or message.document is None or chat is None:
        return
    svc = context.services
    lang = _lang(update, context)
    document = message.document
    text = None
    problem = None
    if document.file_size and document.file_size > MAX_UPLOAD:
        problem = t("admin.too_big", lang, kb=MAX_UPLOAD // 1024)
    else:
        # Reading the file is the one Bot API call made outside the outbox: it shows nothing.
        raw = await (await document.get_file()).download_as_bytearray()
        if len(raw) > MAX_UPLOAD:
            problem = t("admin.too_big", lang, kb=MAX_UPLOAD // 1024)
        else:
            try:
                text = bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                problem = t("admin.not_yaml", lang)
    if text is None:
        async with unit(svc) as work:
            await work.out.send(chat.id, problem or t("admin.not_yaml", lang))
        return
    origin = document.file_name or "upload.yaml"
    # The proof runs in a bounded worker process, outside any transaction; a flow that
    # passes is kept as a version waiting for Publish (it survives a restart).
    result = await propose(
        registry=svc.registry, sessionmaker=svc.sessionmaker, text=text, origin=origin,
        author=_author(update),
    )  # fmt: skip
    picture = None
    if result.status not in ("refused", "other_flow", "unchanged") and result.flow is not None:
        try:
            picture = await asyncio.to_thread(to_png, result.flow, lang=lang)
        except Exception:  # noqa: BLE001 - the picture is a courtesy; the check is what counts
            logger.warning("could not draw the flow graph")
    async with unit(svc) as work:
        await _upload_reply(work, svc, chat.id, result, picture, lang)


async def _upload_reply(
    work: Work, svc: Services, chat_id: int, result: Result, picture: bytes | None, lang: Lang
) -> None:
    """What an admin is told about an upload: refused, or the check, changes and picture."""
    if result.status == "refused" and result.report is not None:
        await _refusal(work, chat_id, result.report.render(), lang)
        return
    if result.status == "other_flow" and result.report is not None:
        other = result.report.flow_name
        await work.out.send(
            chat_id, t("admin.other_flow", lang, name=html.escape(other), ours=svc.registry.name)
        )
        return
    assert result.flow is not None and result.report is not None
    await work.out.send(chat_id, f"{t('admin.passed', lang)}\n{_pre(result.report.render(), 1500)}")
    if result.status == "unchanged":
        await work.out.send(chat_id, t("admin.no_changes", lang, n=result.active))
        return
    active = await svc.registry.active(work.session)
    lines = diff_flows(active, result.flow)
    summary = (
        t("admin.changes", lang, n=result.active)
        + "\n"
        + "\n".join(f"• {html.escape(x)}" for x in lines)
        if lines
        else t("admin.layout_only", lang, n=result.active)
    )
    if picture is not None:
        await work.out.photo(chat_id, picture, "flow.png", caption=t("admin.graph", lang))
    buttons = InlineKeyboardMarkup(
        [[InlineKeyboardButton(t("admin.publish", lang), callback_data=f"P:{result.number}"),
          InlineKeyboardButton(t("admin.discard", lang), callback_data=f"X:{result.number}")]]
    )  # fmt: skip
    await work.out.send(chat_id, fit_lines(summary.split("\n")), markup=buttons)


async def on_decision(update: Update, context: BotContext) -> None:
    """Publish or Discard a checked upload (kept as a version, so any process can)."""
    query = update.callback_query
    if query is None or query.data is None or not await _admin(update, context):
        return
    verb, raw = query.data.split(":")
    number = int(raw) if len(raw) <= 9 else 0
    svc = context.services
    lang = _lang(update, context)
    if verb == "X":
        gone = await discard(registry=svc.registry, sessionmaker=svc.sessionmaker, number=number)
        await _settle(
            update,
            context,
            t("admin.discarded", lang) if gone.status != "missing" else t("admin.expired", lang),
        )
        return
    result = await publish_version(
        registry=svc.registry, sessionmaker=svc.sessionmaker, number=number,
        author=_author(update), note="published from Telegram",
    )  # fmt: skip
    if result.status == "published":
        text = t("admin.published", lang, n=number)
    elif result.status == "already_active":
        text = t("admin.already_active", lang, n=number)
    elif result.status == "refused" and result.report is not None:
        text = f"{t('admin.failed', lang)}\n{_pre(result.report.render())}"
    else:
        text = t("admin.expired", lang)
    await _settle(update, context, text)


async def _settle(update: Update, context: BotContext, text: str) -> None:
    """Answer the press and replace the buttons' message with ``text``."""
    query = update.callback_query
    chat = update.effective_chat
    if query is None or chat is None:
        return
    async with unit(context.services) as work:
        await work.out.answer(chat.id, query.id)
        if query.message is not None:
            await work.out.edit(chat.id, query.message.message_id, text, or_send=True)
        else:
            await work.out.send(chat.id, text)


async def on_history(update: Update, context: BotContext) -> None:
    """/flows_history: the versions, with a Rollback button for each inactive one."""
    chat = update.effective_chat
    if chat is None or not await _admin(update, context):
        return
    svc = context.services
    lang = _lang(update, context)
    async with unit(svc) as work:
        await svc.registry.bootstrap(work.session)
        versions = await list_flow_versions(session=work.session, flow_name=svc.registry.name)
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
        await work.out.send(
            chat.id, "\n".join(lines), markup=InlineKeyboardMarkup(rows[:10]) if rows else None
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
    result = await rollback(
        registry=svc.registry, sessionmaker=svc.sessionmaker, number=number,
        author=_author(update),
    )  # fmt: skip
    if result.status == "published":
        text = t("admin.rolled_back", lang, n=number, m=result.number)
    elif result.status == "already_active":
        text = t("admin.already_active", lang, n=number)
    elif result.status == "refused":
        text = t("admin.unsafe_now", lang, n=number)
    else:
        text = t("admin.no_version", lang, n=number)
    await _settle(update, context, text)

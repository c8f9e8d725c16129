"""Admin handlers: get the flow, upload an edited one, see the check, publish, roll back."""

from __future__ import annotations

import asyncio
import html
import logging

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Update
from telegram.error import TelegramError
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, MessageHandler, filters

from bot.context import BotContext
from bot.flowsource import FlowRefusedError
from flows import diff_flows, to_png
from storage import (
    activate_flow_version,
    add_flow_version,
    get_active_flow_version,
    get_flow_version,
    list_flow_versions,
)

__all__ = ["register"]

logger = logging.getLogger(__name__)

MAX_UPLOAD = 512 * 1024
_T = {
    "refused": "This is for the center's admins only.",
    "not_yaml": "Please send the flow as a UTF-8 YAML file (.yaml).",
    "too_big": (
        "Sorry, that file is too large for a flow (at most {kb} KB). "
        "Please send the flow's YAML file, as /flow gives it."
    ),
    "failed": "❌ The flow failed its check and cannot be published:",
    "passed": "✅ The flow passed its check, including the safety proof.",
    "changes": "Changes from the active version {n}:",
    "no_changes": "It is the same as the active version {n}.",
    "publish": "✅ Publish",
    "discard": "✖️ Discard",
    "published": (
        "Published as version {n}. New dialogues use it from now on; "
        "dialogues under way finish on their version."
    ),
    "discarded": "Discarded; nothing changed.",
    "expired": "This upload is no longer pending; please send the file again.",
    "history": "Flow versions (newest first; ● is active):",
    "rollback": "↩️ Make version {n} active",
    "rolled_back": "Version {n} is active again.",
    "unsafe_now": "Version {n} no longer passes the check; it was not activated.",
    "graph": "The dialogue as a picture",
}


def register(app: Application) -> None:  # type: ignore[type-arg]
    """Add the admin handlers (before the client ones: admins' documents are flows)."""
    admins = app.bot_data.settings.admin_user_ids
    app.add_handler(CommandHandler("flow", on_flow))
    app.add_handler(CommandHandler("flows_history", on_history))
    app.add_handler(CallbackQueryHandler(on_decision, pattern=r"^(P|X):[0-9a-f]{12}$"))
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
    if update.callback_query is not None:
        await update.callback_query.answer(_T["refused"])
    elif update.effective_message is not None:
        await update.effective_message.reply_text(_T["refused"])
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
    await update.effective_message.reply_document(
        InputFile(row.yaml.encode("utf-8"), filename=f"{row.flow_name}-v{row.number}.yaml"),
        caption=f"{html.escape(row.flow_name)} version {row.number} ({row.checksum})",
    )


async def on_upload(update: Update, context: BotContext) -> None:
    """An edited flow from an admin: check it, show the diff and the graph, offer Publish."""
    message = update.effective_message
    if message is None or message.document is None:
        return
    document = message.document
    if document.file_size and document.file_size > MAX_UPLOAD:
        await message.reply_text(_T["too_big"].format(kb=MAX_UPLOAD // 1024))
        return
    raw = await (await document.get_file()).download_as_bytearray()
    if len(raw) > MAX_UPLOAD:
        await message.reply_text(_T["too_big"].format(kb=MAX_UPLOAD // 1024))
        return
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        await message.reply_text(_T["not_yaml"])
        return
    svc = context.services
    origin = document.file_name or "upload.yaml"
    # The proof and the picture take CPU seconds: off the event loop, clients keep being served.
    # The proof runs in a bounded worker process, outside any transaction.
    report = await svc.registry.report(text, origin)
    rendered = html.escape(report.render())
    if not report.ok or report.flow is None:
        await message.reply_text(f"{_T['failed']}\n<pre>{rendered[:3500]}</pre>")
        return
    # as clients would see it ({phone} and {hours} filled in), like the active version
    flow = await svc.registry.checked_async(text, origin)
    async with svc.sessionmaker() as session, session.begin():
        await svc.registry.bootstrap(session)
        row = await get_active_flow_version(session=session, flow_name=svc.registry.name)
        assert row is not None
        active = await svc.registry.active(session)
    lines = await asyncio.to_thread(diff_flows, active, flow)
    summary = (
        _T["changes"].format(n=row.number) + "\n" + "\n".join(f"• {html.escape(x)}" for x in lines)
        if lines
        else _T["no_changes"].format(n=row.number)
    )
    await message.reply_text(f"{_T['passed']}\n<pre>{rendered[:1500]}</pre>")
    try:
        await message.reply_photo(await asyncio.to_thread(to_png, flow), caption=_T["graph"])
    except TelegramError:
        logger.warning("could not send the flow graph")
    svc.pending_flows[flow.version] = text
    buttons = InlineKeyboardMarkup(
        [[InlineKeyboardButton(_T["publish"], callback_data=f"P:{flow.version}"),
          InlineKeyboardButton(_T["discard"], callback_data=f"X:{flow.version}")]]
    )  # fmt: skip
    await message.reply_text(summary[:4000], reply_markup=buttons)


async def on_decision(update: Update, context: BotContext) -> None:
    """Publish or Discard a checked upload."""
    query = update.callback_query
    if query is None or query.data is None or not await _admin(update, context):
        return
    verb, key = query.data.split(":")
    svc = context.services
    text = svc.pending_flows.pop(key, None)
    await query.answer()
    if text is None:
        await query.edit_message_reply_markup(reply_markup=None)
        await context.bot.send_message(query.message.chat.id, _T["expired"])  # type: ignore[union-attr]
        return
    if verb == "X":
        await query.edit_message_text(_T["discarded"])
        return
    try:
        flow = await svc.registry.checked_async(text, "upload")
    except FlowRefusedError as exc:  # pragma: no cover - it passed moments ago
        report = html.escape(exc.report.render())[:3500]
        await query.edit_message_text(f"{_T['failed']}\n<pre>{report}</pre>")
        return
    async with svc.sessionmaker() as session, session.begin():
        version = await add_flow_version(
            session=session, flow_name=flow.name, yaml=text, checksum=flow.version,
            author=_author(update), note="published from Telegram",
        )  # fmt: skip
    await query.edit_message_text(_T["published"].format(n=version.number))


async def on_history(update: Update, context: BotContext) -> None:
    """/flows_history: the versions, with a Rollback button for each inactive one."""
    if not await _admin(update, context) or update.effective_message is None:
        return
    svc = context.services
    async with svc.sessionmaker() as session, session.begin():
        await svc.registry.bootstrap(session)
        versions = await list_flow_versions(session=session, flow_name=svc.registry.name)
    lines = [_T["history"]]
    rows = []
    for v in versions[:20]:
        mark = "●" if v.active else "○"
        lines.append(
            f"{mark} <b>{v.number}</b> · {v.created_at:%Y-%m-%d %H:%M} UTC · "
            f"{html.escape(v.author)}: {html.escape(v.note)}"
        )
        if not v.active:
            label = _T["rollback"].format(n=v.number)
            rows.append([InlineKeyboardButton(label, callback_data=f"R:{v.number}")])
    await update.effective_message.reply_text(
        "\n".join(lines), reply_markup=InlineKeyboardMarkup(rows[:10]) if rows else None
    )


async def on_rollback(update: Update, context: BotContext) -> None:
    """Make an earlier version active again, after checking it again."""
    query = update.callback_query
    if query is None or query.data is None or not await _admin(update, context):
        return
    number = int(query.data.split(":")[1])
    svc = context.services
    await query.answer()
    async with svc.sessionmaker() as session:
        row = await get_flow_version(session=session, flow_name=svc.registry.name, number=number)
        text = None if row is None else row.yaml
    if text is None:
        return
    try:  # proven outside any transaction
        await svc.registry.checked_async(text, f"version {number}")
    except FlowRefusedError:
        await query.edit_message_text(_T["unsafe_now"].format(n=number))
        return
    async with svc.sessionmaker() as session, session.begin():
        row = await get_flow_version(session=session, flow_name=svc.registry.name, number=number)
        assert row is not None
        await activate_flow_version(session=session, version=row)
    await query.edit_message_text(_T["rolled_back"].format(n=number))

"""Client handlers (private chats): turn an update into an engine input, step, persist, render."""

from __future__ import annotations

import html
import logging
import re

from telegram import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Update,
    User,
)
from telegram.error import TelegramError
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    filters,
)

from bot.context import BotContext
from bot.render import ASK, Renderer, answer_query, with_retries
from bot.service import StepResult, advance
from bot.settings import Settings
from bot.staff import post_card
from flows import Begin, Flow, Input, Lang, Restart, SetLang, TextInput, decode, t
from storage import (
    AsyncSession,
    Client,
    add_relay,
    delete_client_data,
    get_client,
    get_dialogue,
    get_or_create_client,
    latest_request_of_client,
    record_step,
    set_client_asking,
    set_client_language,
    set_prompt_message_id,
    truncate_wal,
)

__all__ = ["language_of", "register"]

logger = logging.getLogger(__name__)

_SOURCE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PRIVATE = filters.ChatType.PRIVATE


def language_of(user: User | None, default: Lang) -> Lang:
    """The client's language from Telegram's ``language_code`` (ru/en), else ``default``."""
    code = (user.language_code or "").lower() if user else ""
    if code.startswith(("ru", "uk", "be", "kk")):
        return "ru"
    if code.startswith("en"):
        return "en"
    return default


def register(app: Application) -> None:  # type: ignore[type-arg]
    """Add the client handlers to ``app`` (private chats only)."""
    app.add_handler(CommandHandler("start", on_start, filters=PRIVATE))
    app.add_handler(CommandHandler("restart", on_restart, filters=PRIVATE))
    app.add_handler(CommandHandler("lang", on_lang, filters=PRIVATE))
    app.add_handler(CommandHandler("help", on_help, filters=PRIVATE))
    app.add_handler(CommandHandler("info", on_info, filters=PRIVATE))
    app.add_handler(CommandHandler("cancel", on_cancel, filters=PRIVATE))
    app.add_handler(CommandHandler("forget", on_forget, filters=PRIVATE))
    app.add_handler(CommandHandler("status", on_status, filters=PRIVATE))
    app.add_handler(CommandHandler("ask", on_ask, filters=PRIVATE))
    app.add_handler(CallbackQueryHandler(on_ask, pattern=f"^{ASK}$"))
    app.add_handler(CallbackQueryHandler(on_back_to_questions, pattern=r"^Q$"))
    app.add_handler(CallbackQueryHandler(on_lang_button, pattern=r"^L:(ru|en)$"))
    app.add_handler(CallbackQueryHandler(on_forget_button, pattern=r"^F:(yes|no)$"))
    app.add_handler(CallbackQueryHandler(on_button))
    app.add_handler(MessageHandler(PRIVATE & filters.UpdateType.EDITED_MESSAGE, on_edited))
    app.add_handler(MessageHandler(PRIVATE & filters.CONTACT, on_contact))
    app.add_handler(MessageHandler(PRIVATE & filters.TEXT & ~filters.COMMAND, on_text))
    app.add_handler(MessageHandler(PRIVATE & filters.COMMAND, on_unknown_command))
    app.add_handler(MessageHandler(PRIVATE & filters.UpdateType.MESSAGE, on_other))
    app.add_handler(CommandHandler(["start", "help", "info"], on_group_command, filters=~PRIVATE))


# --- the core: one input through the engine -----------------------------------


async def drive(
    update: Update,
    context: BotContext,
    inp: Input,
    *,
    query: CallbackQuery | None = None,
    notice: str | None = None,
) -> StepResult | None:
    """Step the client's dialogue with ``inp``, commit, then show the replies."""
    user = update.effective_user
    chat = update.effective_chat
    if user is None or chat is None:
        return None
    svc = context.services
    async with svc.client_lock(user.id):
        async with svc.sessionmaker() as session, session.begin():
            client, client_id = await _telegram_client(session, user, svc.settings)
            before = await get_dialogue(session=session, client_id=client_id, for_update=True)
            prompt_id = before.prompt_message_id if before else None
            old_node = before.state.get("node") if before else None
            old_seq = before.state.get("seq") if before else None
            active = await svc.registry.active(session)

            async def pinned(version: str) -> Flow | None:
                return await svc.registry.pinned(session, version)

            result = await advance(
                session=session,
                flow=active,
                client_id=client_id,
                inp=inp,
                lang=client.language,  # type: ignore[arg-type]
                update_id=update.update_id,
                source=client.source,
                at=svc.clock(),
                pinned=pinned,
            )
            if client.asking:
                await set_client_asking(session=session, client_id=client_id, asking=False)
            if not result.duplicate and (result.state.node != old_node or old_node is None):
                await record_step(
                    session=session,
                    client_id=client_id,
                    node=result.state.node,
                    flow_version=result.state.version,
                    at=svc.clock(),
                )
        if result.duplicate:
            return result  # handled when it first came; its query was answered then
        changed = result.state.seq != old_seq or result.state.node != old_node
        renderer = Renderer(context.bot, chat.id, result.state.lang)
        if notice:
            await renderer.say(notice)
        if result.restarted:
            await renderer.say(t("client.flow_updated", result.state.lang))
        new_prompt = await renderer.show(
            result,
            query=query,
            changed=changed,
            prompt_id=prompt_id,
            left_phone=old_node != result.state.node and _is_phone(result.flow, old_node),
        )
        if new_prompt is not None and new_prompt != prompt_id:
            # Which message carries the live keyboard, so the next answer can retire it.
            async with svc.sessionmaker() as session, session.begin():
                await set_prompt_message_id(
                    session=session, client_id=client_id, message_id=new_prompt
                )
        if result.request_id is not None:  # after the client has their answer
            await post_card(
                context.bot, svc.sessionmaker, svc.settings, result.request_id, svc.clock()
            )
    return result


async def _telegram_client(
    session: AsyncSession, user: User, settings: Settings, source: str | None = None
) -> tuple[Client, int]:
    """The client behind a Telegram user (created on first contact) and its id."""
    client = await get_or_create_client(
        session=session,
        telegram_id=user.id,
        channel="telegram",
        language=language_of(user, settings.default_language),
        source=source,
    )
    assert client.id is not None
    return client, client.id


def _is_phone(flow: Flow | None, node: object) -> bool:
    """Whether ``node`` is the phone question (its share-contact keyboard must go)."""
    if flow is None or not isinstance(node, str) or node not in flow.nodes:
        return False
    return flow.nodes[node].kind == "phone"


async def _client_lang(update: Update, context: BotContext) -> Lang:
    user = update.effective_user
    svc = context.services
    default = language_of(user, svc.settings.default_language)
    if user is None:
        return default
    async with svc.sessionmaker() as session:
        client = await get_client(session=session, telegram_id=user.id)
    return client.language if client is not None else default  # type: ignore[return-value]


# --- commands -------------------------------------------------------------------


async def on_start(update: Update, context: BotContext) -> None:
    """Resume where the client was, or begin; a deep-link payload records the source."""
    source = context.args[0] if context.args else None
    user = update.effective_user
    if source and user and _SOURCE_RE.match(source):
        svc = context.services
        async with svc.sessionmaker() as session, session.begin():
            await _telegram_client(session, user, svc.settings, source)
    svc = context.services
    finished = False
    if user is not None:
        async with svc.sessionmaker() as session:
            client = await get_client(session=session, telegram_id=user.id)
            if client is not None and client.id is not None:
                stored = await get_dialogue(session=session, client_id=client.id)
                finished = bool(stored and stored.state.get("finished"))
    await drive(update, context, Restart() if finished else Begin())


async def on_restart(update: Update, context: BotContext) -> None:
    """Start the questionnaire over."""
    await drive(update, context, Restart())


async def on_help(update: Update, context: BotContext) -> None:
    """Say what the bot does and list the commands."""
    if update.effective_message:
        await update.effective_message.reply_text(
            t("client.help", await _client_lang(update, context))
        )


async def on_info(update: Update, context: BotContext) -> None:
    """The center's hours and phone."""
    if update.effective_message:
        await update.effective_message.reply_text(
            t(
                "client.info",
                await _client_lang(update, context),
                **context.services.settings.flow_values,
            )
        )


async def on_lang(update: Update, context: BotContext) -> None:
    """Offer the two languages."""
    lang = await _client_lang(update, context)
    keyboard = InlineKeyboardMarkup(
        [[InlineKeyboardButton("Русский", callback_data="L:ru"),
          InlineKeyboardButton("English", callback_data="L:en")]]
    )  # fmt: skip
    if update.effective_message:
        await update.effective_message.reply_text(
            t("client.lang_prompt", lang), reply_markup=keyboard
        )


async def on_lang_button(update: Update, context: BotContext) -> None:
    """Switch the client's language and redraw the current question."""
    query = update.callback_query
    user = update.effective_user
    if query is None or user is None or query.data is None:
        return
    lang: Lang = "ru" if query.data.endswith("ru") else "en"
    svc = context.services
    async with svc.sessionmaker() as session, session.begin():
        client = await get_or_create_client(
            session=session, telegram_id=user.id, channel="telegram", language=lang
        )
        assert client.id is not None
        await set_client_language(session=session, client_id=client.id, language=lang)
    await answer_query(query, t("client.lang_set", lang))
    try:
        await query.edit_message_reply_markup(reply_markup=None)
    except Exception:  # noqa: BLE001 - the message may be gone; the switch still happened
        logger.info("could not clear the language keyboard")
    await drive(update, context, SetLang(lang))


async def on_cancel(update: Update, context: BotContext) -> None:
    """Stop the questionnaire: the answers are dropped (red flags stay on record)."""
    lang = await _client_lang(update, context)
    result = await drive_silently(update, context, Restart())
    if result is not None and update.effective_message:
        await update.effective_message.reply_text(t("client.cancelled", lang))


async def drive_silently(update: Update, context: BotContext, inp: Input) -> StepResult | None:
    """Step and commit without showing the engine's replies (for /cancel)."""
    user = update.effective_user
    if user is None:
        return None
    svc = context.services
    async with svc.client_lock(user.id), svc.sessionmaker() as session, session.begin():
        client, client_id = await _telegram_client(session, user, svc.settings)
        return await advance(
            session=session,
            flow=await svc.registry.active(session),
            client_id=client_id,
            inp=inp,
            lang=client.language,  # type: ignore[arg-type]
            update_id=update.update_id,
        )


async def on_forget(update: Update, context: BotContext) -> None:
    """Ask for confirmation before erasing the client's data."""
    lang = await _client_lang(update, context)
    keyboard = InlineKeyboardMarkup(
        [[InlineKeyboardButton(t("client.forget_yes", lang), callback_data="F:yes"),
          InlineKeyboardButton(t("client.forget_no", lang), callback_data="F:no")]]
    )  # fmt: skip
    if update.effective_message:
        await update.effective_message.reply_text(
            t("client.forget_confirm", lang), reply_markup=keyboard
        )


async def on_forget_button(update: Update, context: BotContext) -> None:
    """Erase the client's personal data and answers from every table, or keep them."""
    query = update.callback_query
    user = update.effective_user
    if query is None or user is None:
        return
    lang = await _client_lang(update, context)
    svc = context.services
    if query.data == "F:yes":
        async with svc.client_lock(user.id), svc.sessionmaker() as session, session.begin():
            client = await get_client(session=session, telegram_id=user.id)
            if client is not None and client.id is not None:
                await delete_client_data(session=session, client_id=client.id)
        # SQLite keeps old page images in its write-ahead log: empty it now, so the erasure
        # is final at once (not at the next daily job)
        await truncate_wal(svc.sessionmaker.kw["bind"])
        text = t("client.forget_done", lang)
    else:
        text = t("client.forget_kept", lang)
    await answer_query(query, None)
    try:
        await query.edit_message_text(text)
    except Exception:  # noqa: BLE001 - fall back to a new message
        if update.effective_chat:
            await context.bot.send_message(update.effective_chat.id, text)


async def on_unknown_command(update: Update, context: BotContext) -> None:
    """An unknown /command: show help."""
    await on_help(update, context)


async def on_group_command(update: Update, context: BotContext) -> None:
    """Clients write in private; in groups the bot only says so."""
    if update.effective_message:
        lang = language_of(update.effective_user, context.services.settings.default_language)
        await update.effective_message.reply_text(t("client.private_only", lang))


# --- messages and buttons -------------------------------------------------------


async def on_button(update: Update, context: BotContext) -> None:
    """A press on one of the dialogue's inline buttons."""
    query = update.callback_query
    if query is None:
        return
    inp = decode(query.data or "")
    if inp is None:
        lang = await _client_lang(update, context)
        await answer_query(query, t("client.inactive_button", lang))
        return
    await drive(update, context, inp, query=query)


async def on_text(update: Update, context: BotContext) -> None:
    """Typed text: a question for staff (while asking), else an answer for the dialogue."""
    message = update.effective_message
    if message is None or message.text is None:
        return
    if await _relay_question(update, context, message.text):
        return
    await drive(update, context, TextInput(message.text[:4096]))


async def _relay_question(update: Update, context: BotContext, text: str) -> bool:
    """While the client is asking, forward their text to the staff group; True if it was."""
    user = update.effective_user
    chat = update.effective_chat
    if user is None or chat is None:
        return False
    svc = context.services
    async with svc.sessionmaker() as session:
        client = await get_client(session=session, telegram_id=user.id)
        if client is None or client.id is None or not client.asking:
            return False
        client_id = client.id
        lang: Lang = "en" if client.language == "en" else "ru"
        request = await latest_request_of_client(session=session, client_id=client_id)
        ref = f" · #{request.id}" if request else ""
        who = html.escape(request.name) if request and request.name else f"client {client_id}"
    staff_chat = svc.settings.staff_chat_id
    if staff_chat is None:
        await context.bot.send_message(
            chat.id, t("client.ask_unavailable", lang, **svc.settings.flow_values)
        )
        return True
    forwarded = f"❓ <b>{who}</b>{ref} ({lang})\n\n{html.escape(text[:3500])}"
    try:
        sent = await with_retries(lambda: context.bot.send_message(staff_chat, forwarded))
    except TelegramError:
        await context.bot.send_message(
            chat.id, t("client.ask_unavailable", lang, **svc.settings.flow_values)
        )
        return True
    async with svc.sessionmaker() as session, session.begin():
        await add_relay(
            session=session,
            client_id=client_id,
            staff_chat_id=sent.chat_id,
            staff_message_id=sent.message_id,
        )
    back = InlineKeyboardMarkup(
        [[InlineKeyboardButton(t("client.ask_back", lang), callback_data="Q")]]
    )
    await context.bot.send_message(chat.id, t("client.ask_sent", lang), reply_markup=back)
    return True


async def on_ask(update: Update, context: BotContext) -> None:
    """/ask or the "Ask a question" button: the client's next messages go to staff."""
    user = update.effective_user
    chat = update.effective_chat
    if user is None or chat is None:
        return
    svc = context.services
    if update.callback_query is not None:
        await answer_query(update.callback_query, None)
    async with svc.sessionmaker() as session, session.begin():
        client, client_id = await _telegram_client(session, user, svc.settings)
        await set_client_asking(session=session, client_id=client_id, asking=True)
        lang: Lang = client.language  # type: ignore[assignment]
    back = InlineKeyboardMarkup(
        [[InlineKeyboardButton(t("client.ask_back", lang), callback_data="Q")]]
    )
    await context.bot.send_message(chat.id, t("client.ask_prompt", lang), reply_markup=back)


async def on_back_to_questions(update: Update, context: BotContext) -> None:
    """Leave "asking" mode and show the current question again."""
    if update.callback_query is not None:
        await answer_query(update.callback_query, None)
    await drive(update, context, Begin())


async def on_status(update: Update, context: BotContext) -> None:
    """The client's own request and its state, in their words."""
    user = update.effective_user
    message = update.effective_message
    if user is None or message is None:
        return
    svc = context.services
    async with svc.sessionmaker() as session:
        client = await get_client(session=session, telegram_id=user.id)
        request = None
        if client is not None and client.id is not None:
            request = await latest_request_of_client(session=session, client_id=client.id)
    lang = await _client_lang(update, context)
    if request is None:
        await message.reply_text(t("client.status_none", lang))
        return
    state = t(f"client.state.{request.status}", lang, **svc.settings.flow_values)
    await message.reply_text(t("client.status", lang, id=request.id, state=state))


async def on_contact(update: Update, context: BotContext) -> None:
    """A shared contact: only the sender's own number is accepted."""
    message = update.effective_message
    user = update.effective_user
    if message is None or message.contact is None or user is None:
        return
    if message.contact.user_id != user.id:
        lang = await _client_lang(update, context)
        await drive(update, context, Begin(), notice=t("client.foreign_contact", lang))
        return
    await drive(update, context, TextInput(message.contact.phone_number))


async def on_edited(update: Update, context: BotContext) -> None:
    """Edits are not answers: a polite note, then the current question again; nothing changes."""
    lang = await _client_lang(update, context)
    if await _is_asking(update, context):
        if update.effective_chat:
            await context.bot.send_message(
                update.effective_chat.id, t("client.edited_asking", lang)
            )
        return
    await drive(update, context, Begin(), notice=t("client.edited", lang))


async def on_other(update: Update, context: BotContext) -> None:
    """Stickers, photos, voice, locations…: a polite word and the question again."""
    lang = await _client_lang(update, context)
    if await _is_asking(update, context):
        if update.effective_chat:
            await context.bot.send_message(update.effective_chat.id, t("client.not_text", lang))
        return
    await drive(update, context, Begin(), notice=t("client.not_text", lang))


async def _is_asking(update: Update, context: BotContext) -> bool:
    user = update.effective_user
    if user is None:
        return False
    async with context.services.sessionmaker() as session:
        client = await get_client(session=session, telegram_id=user.id)
    return bool(client and client.asking)

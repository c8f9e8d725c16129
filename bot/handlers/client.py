"""Client handlers (private chats): turn an update into an engine input, step, persist, render."""

from __future__ import annotations

import html
import logging
import re
from typing import Any

from telegram import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    ReplyKeyboardRemove,
    Update,
    User,
)
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    filters,
)

from bot.context import BotContext, Services
from bot.outbox import Superseded, Work, markup_dict, prompt_ref, unit
from bot.render import ASK, MESSAGE_LIMIT, TYPED, pieces, present, visible_length
from bot.service import StepResult, advance
from bot.settings import Settings
from bot.staff import queue_card
from flows import Begin, Flow, Input, Lang, Restart, SetLang, TextInput, decode, t
from storage import (
    AsyncSession,
    Client,
    DuplicateClientError,
    Turn,
    create_client,
    delete_client_data,
    get_client,
    get_dialogue,
    get_or_create_client,
    get_prompt_message_id,
    latest_request_of_client,
    read_turn,
    record_step,
    set_client_asking,
    set_client_language,
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


async def step_client(
    work: Work,
    svc: Services,
    user: User,
    chat_id: int,
    inp: Input,
    *,
    update_id: int | None = None,
    query: CallbackQuery | None = None,
    notices: tuple[str, ...] = (),
    source: str | None = None,
    restart_if_finished: bool = False,
    contact: bool = False,
    turn: Turn | None = None,
) -> StepResult:
    """Step the client's dialogue with ``inp`` in ``work``'s transaction and record its replies.

    The client and their dialogue are read once (the client locked on PostgreSQL), the
    engine steps, the state, any request with its staff card and the step event are written,
    and what the client sees goes into the outbox, all in one transaction. With
    ``restart_if_finished`` a dialogue that has ended starts over instead (/start);
    ``contact`` says the input came from the one-time share button (which hid itself);
    ``turn`` is what ``read_turn_claimed`` read already in this transaction, if the caller did.
    """
    session = work.session
    if turn is None:
        turn = await read_turn_claimed(work, svc, user)
    if turn.client is None:  # first contact: the client is created (its new row is ours)
        turn = await _first_contact(session, user, svc, source, turn)
    client, before = turn.client, turn.dialogue
    assert client is not None and client.id is not None
    client_id = client.id
    if restart_if_finished and before is not None and before.state.get("finished"):
        inp = Restart()  # /start after a finished intake begins a new one
    old_node = before.state.get("node") if before else None
    old_seq = before.state.get("seq") if before else None
    active = await svc.registry.active(session, known=turn.active)

    async def pinned(version: str) -> Flow | None:
        return await svc.registry.pinned(session, version)

    result = await advance(
        session=session,
        flow=active,
        client_id=client_id,
        inp=inp,
        lang=client.language,  # type: ignore[arg-type]
        update_id=update_id,
        source=client.source,
        at=work.at,
        pinned=pinned,
        stored=before,
    )
    if result.duplicate:
        if query is not None:
            await work.out.answer(chat_id, query.id)
        return result
    if client.asking:
        await set_client_asking(session=session, client_id=client_id, asking=False)
    if result.state.node != old_node or old_node is None:
        await record_step(
            session=session,
            client_id=client_id,
            node=result.state.node,
            flow_version=result.state.version,
            at=work.at,
        )
    lang = result.state.lang
    if result.restarted:
        notices = (*notices, t("client.flow_updated", lang))
    pressed = query.message.message_id if query is not None and query.message else None
    await present(
        work.out,
        chat_id=chat_id,
        client_id=client_id,
        lang=lang,
        replies=result.replies,
        query_id=query.id if query is not None else None,
        pressed=pressed,
        changed=result.state.seq != old_seq or result.state.node != old_node,
        # A question answered by typing was shown without buttons, and a client with no
        # dialogue yet was shown none (its live keyboard is the dialogue's): nothing to take
        # away.
        retire=before is not None
        and (result.restarted or _kind(result.flow, old_node) not in TYPED),
        left_phone=old_node != result.state.node
        and _kind(result.flow, old_node) == "phone"
        and not contact,
        # left by typing the number, or by /restart, Back or a change of answer
        phone_taken=isinstance(inp, TextInput) and not result.restarted,
        notices=notices,
    )
    if result.request_id is not None:  # the client's answer is queued first
        await queue_card(work, svc.settings, result.request_id)
    return result


async def read_turn_claimed(work: Work, svc: Services, user: User) -> Turn:
    """The client's turn (``read_turn``, the client locked), with the update's claim if the
    unit left it to the body (``unit(deferred=True)``); Superseded if it was processed before."""
    claim = work.take_claim()  # the update's claim goes with the read
    turn = await read_turn(
        session=work.session, telegram_id=user.id, flow_name=svc.registry.name, claim=claim
    )
    if claim is not None and not turn.claimed:
        raise Superseded(claim.update_id)
    return turn


async def drive(
    update: Update,
    context: BotContext,
    inp: Input,
    *,
    query: CallbackQuery | None = None,
    notice: str | None = None,
) -> StepResult | None:
    """One unit of work: step the client's dialogue with ``inp`` and show the replies."""
    user = update.effective_user
    chat = update.effective_chat
    if user is None or chat is None:
        return None
    svc = context.services
    async with unit(svc, deferred=True) as work:
        return await step_client(
            work,
            svc,
            user,
            chat.id,
            inp,
            update_id=update.update_id,
            query=query,
            notices=(notice,) if notice else (),
        )


async def _first_contact(
    session: AsyncSession, user: User, svc: Services, source: str | None, turn: Turn
) -> Turn:
    """Create the client who wrote for the first time: no dialogue yet, and their row is this
    transaction's until it ends. If another transaction created them first, read them (locked)."""
    try:
        client = await create_client(
            session=session,
            telegram_id=user.id,
            channel="telegram",
            language=language_of(user, svc.settings.default_language),
            source=source,
        )
    except DuplicateClientError:
        return await read_turn(session=session, telegram_id=user.id, flow_name=svc.registry.name)
    return Turn(client, None, turn.active)


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


def svc_values(context: BotContext) -> dict[str, str]:
    """The values fixed texts fill in from the settings (phone, hours)."""
    return dict(context.services.settings.flow_values)


def _kind(flow: Flow | None, node: object) -> str | None:
    """The kind of question ``node`` is in ``flow`` (None if it is none of its nodes)."""
    if flow is None or not isinstance(node, str) or node not in flow.nodes:
        return None
    return flow.nodes[node].kind


async def _client(work: Work, update: Update, context: BotContext) -> tuple[Client | None, Lang]:
    """The client who wrote (None if unknown yet) and the language to answer in."""
    user = update.effective_user
    default = language_of(user, context.services.settings.default_language)
    if user is None:
        return None, default
    client = await get_client(session=work.session, telegram_id=user.id)
    lang: Lang = client.language if client is not None else default  # type: ignore[assignment]
    return client, lang


async def _reply(update: Update, context: BotContext, key: str, **markup: Any) -> None:
    """One unit of work that answers with a fixed text in the client's language."""
    chat = update.effective_chat
    if chat is None:
        return
    async with unit(context.services) as work:
        _, lang = await _client(work, update, context)
        await work.out.send(chat.id, t(key, lang, **svc_values(context)), **markup)


# --- commands -------------------------------------------------------------------


async def on_start(update: Update, context: BotContext) -> None:
    """Resume where the client was, or begin; a deep-link payload records the source."""
    source = context.args[0] if context.args else None
    user = update.effective_user
    chat = update.effective_chat
    if user is None or chat is None:
        return
    svc = context.services
    tag = source if source and _SOURCE_RE.match(source) else None
    async with unit(svc, deferred=True) as work:
        await step_client(
            work, svc, user, chat.id, Begin(), update_id=update.update_id, source=tag,
            restart_if_finished=True,
        )  # fmt: skip


async def on_restart(update: Update, context: BotContext) -> None:
    """Start the questionnaire over."""
    await drive(update, context, Restart())


async def on_help(update: Update, context: BotContext) -> None:
    """Say what the bot does and list the commands."""
    await _reply(update, context, "client.help")


async def on_info(update: Update, context: BotContext) -> None:
    """The center's hours and phone."""
    await _reply(update, context, "client.info")


async def on_lang(update: Update, context: BotContext) -> None:
    """Offer the two languages."""
    keyboard = InlineKeyboardMarkup(
        [[InlineKeyboardButton("Русский", callback_data="L:ru"),
          InlineKeyboardButton("English", callback_data="L:en")]]
    )  # fmt: skip
    await _reply(update, context, "client.lang_prompt", markup=keyboard)


async def on_lang_button(update: Update, context: BotContext) -> None:
    """Switch the client's language and redraw the current question."""
    query = update.callback_query
    user = update.effective_user
    chat = update.effective_chat
    if query is None or user is None or chat is None or query.data is None:
        return
    lang: Lang = "ru" if query.data.endswith("ru") else "en"
    svc = context.services
    async with unit(svc) as work:
        client, client_id = await _telegram_client(work.session, user, svc.settings)
        await set_client_language(session=work.session, client_id=client_id, language=lang)
        await work.out.answer(chat.id, query.id, t("client.lang_set", lang))
        if query.message is not None:
            await work.out.edit_markup(chat.id, query.message.message_id)
        await step_client(work, svc, user, chat.id, SetLang(lang), update_id=update.update_id)


async def on_cancel(update: Update, context: BotContext) -> None:
    """Stop the questionnaire: the answers are dropped (red flags stay on record)."""
    user = update.effective_user
    chat = update.effective_chat
    if user is None or chat is None:
        return
    svc = context.services
    async with unit(svc) as work:
        client, client_id = await _telegram_client(work.session, user, svc.settings)
        await advance(
            session=work.session,
            flow=await svc.registry.active(work.session),
            client_id=client_id,
            inp=Restart(),
            lang=client.language,  # type: ignore[arg-type]
            update_id=update.update_id,
        )
        await work.out.edit_markup(chat.id, prompt_ref(client_id))
        # (and the phone question's "share my number" button, if it was open)
        await work.out.send(
            chat.id,
            t("client.cancelled", client.language),  # type: ignore[arg-type]
            markup=ReplyKeyboardRemove(),
        )


async def on_forget(update: Update, context: BotContext) -> None:
    """Ask for confirmation before erasing the client's data."""
    chat = update.effective_chat
    if chat is None:
        return
    async with unit(context.services) as work:
        _, lang = await _client(work, update, context)
        keyboard = InlineKeyboardMarkup(
            [[InlineKeyboardButton(t("client.forget_yes", lang), callback_data="F:yes"),
              InlineKeyboardButton(t("client.forget_no", lang), callback_data="F:no")]]
        )  # fmt: skip
        await work.out.send(chat.id, t("client.forget_confirm", lang), markup=keyboard)


async def on_forget_button(update: Update, context: BotContext) -> None:
    """Erase the client's personal data and answers from every table, or keep them."""
    query = update.callback_query
    chat = update.effective_chat
    if query is None or chat is None:
        return
    svc = context.services
    erase = query.data == "F:yes"
    async with unit(svc) as work:
        client, lang = await _client(work, update, context)
        await work.out.answer(chat.id, query.id)
        if erase and (client is None or client.id is None):
            return  # erased already (a second press): the message says so already
        if erase and client is not None and client.id is not None:
            # the live question goes with the data: no button of it may act any more
            prompt = await get_prompt_message_id(session=work.session, client_id=client.id)
            if prompt is not None and (query.message is None or prompt != query.message.message_id):
                await work.out.edit_markup(chat.id, prompt)
            await delete_client_data(session=work.session, client_id=client.id)
        text = t("client.forget_done" if erase else "client.forget_kept", lang)
        if query.message is not None:
            await work.out.edit(chat.id, query.message.message_id, text, or_send=True)
        else:
            await work.out.send(chat.id, text)
    if erase:
        # SQLite keeps old page images in its write-ahead log: empty it now, so the erasure
        # is final at once (not at the next daily job)
        await truncate_wal(svc.sessionmaker.kw["bind"])


async def on_unknown_command(update: Update, context: BotContext) -> None:
    """An unknown /command: show help."""
    await on_help(update, context)


async def on_group_command(update: Update, context: BotContext) -> None:
    """Clients write in private; in groups the bot only says so."""
    chat = update.effective_chat
    if chat is None:
        return
    lang = language_of(update.effective_user, context.services.settings.default_language)
    async with unit(context.services) as work:
        await work.out.send(chat.id, t("client.private_only", lang))


# --- messages and buttons -------------------------------------------------------


def _own_press(update: Update) -> bool:
    """Whether a press comes from the chat its message is in (a forged one may not)."""
    query = update.callback_query
    if query is None:
        return False
    message = query.message
    if message is None:
        return False
    return message.chat.id == query.from_user.id


async def on_button(update: Update, context: BotContext) -> None:
    """A press on one of the dialogue's inline buttons."""
    query = update.callback_query
    chat = update.effective_chat
    if query is None or chat is None:
        return
    inp = decode(query.data or "")
    if inp is None or not _own_press(update):
        async with unit(context.services) as work:
            _, lang = await _client(work, update, context)
            await work.out.answer(chat.id, query.id, t("client.inactive_button", lang))
        return
    await drive(update, context, inp, query=query)


async def on_text(update: Update, context: BotContext) -> None:
    """Typed text: a question for staff (while asking), else an answer for the dialogue."""
    message = update.effective_message
    user = update.effective_user
    chat = update.effective_chat
    if message is None or message.text is None or user is None or chat is None:
        return
    svc = context.services
    async with unit(svc, deferred=True) as work:
        turn = await read_turn_claimed(work, svc, user)  # one read for the check and the step
        if turn.client is not None and turn.client.asking:
            await _relay_question(work, svc, turn.client, chat.id, message.text)
            return
        await step_client(
            work,
            svc,
            user,
            chat.id,
            TextInput(message.text[:4096]),
            update_id=update.update_id,
            turn=turn,
        )


async def _relay_question(
    work: Work, svc: Services, client: Client, chat_id: int, text: str
) -> None:
    """Forward a client's question to the staff group (their replies find the way back)."""
    assert client.id is not None
    lang: Lang = "en" if client.language == "en" else "ru"
    staff_chat = svc.settings.staff_chat_id
    if staff_chat is None:
        await work.out.send(chat_id, t("client.ask_unavailable", lang, **svc.settings.flow_values))
        return
    request = await latest_request_of_client(session=work.session, client_id=client.id)
    ref = f" · #{request.id}" if request else ""
    who = html.escape(request.name) if request and request.name else f"client {client.id}"
    head = f"❓ <b>{who}</b>{ref} ({lang})"
    # Whole, in as many messages as Telegram's limit needs (a reply to any of them reaches
    # the client); the limit counts UTF-16 units, so an emoji counts twice.
    parts = pieces(text, MESSAGE_LIMIT - visible_length(f"{head} 99/99\n\n"))
    back = InlineKeyboardMarkup(
        [[InlineKeyboardButton(t("client.ask_back", lang), callback_data="Q")]]
    )
    # the client is told it was passed on once it was (or that it could not be)
    notify = {
        "chat": chat_id,
        "ok": t("client.ask_sent", lang),
        "failed": t("client.ask_unavailable", lang, **svc.settings.flow_values),
        "markup": markup_dict(back),
    }
    for n, part in enumerate(parts, 1):
        count = f" {n}/{len(parts)}" if len(parts) > 1 else ""
        forwarded = f"{head}{count}\n\n{html.escape(part)}"
        bind: dict[str, object] = {"relay": client.id}
        if n == len(parts):
            bind["notify"] = notify
        await work.out.send(staff_chat, forwarded, bind=bind)


async def on_ask(update: Update, context: BotContext) -> None:
    """/ask or the "Ask a question" button: the client's next messages go to staff."""
    user = update.effective_user
    chat = update.effective_chat
    if user is None or chat is None:
        return
    svc = context.services
    async with unit(svc) as work:
        client, client_id = await _telegram_client(work.session, user, svc.settings)
        await set_client_asking(session=work.session, client_id=client_id, asking=True)
        lang: Lang = client.language  # type: ignore[assignment]
        if update.callback_query is not None:
            await work.out.answer(chat.id, update.callback_query.id)
        back = InlineKeyboardMarkup(
            [[InlineKeyboardButton(t("client.ask_back", lang), callback_data="Q")]]
        )
        await work.out.send(chat.id, t("client.ask_prompt", lang), markup=back)


async def on_back_to_questions(update: Update, context: BotContext) -> None:
    """Leave "asking" mode and show the current question again."""
    user = update.effective_user
    chat = update.effective_chat
    if user is None or chat is None:
        return
    svc = context.services
    async with unit(svc, deferred=True) as work:
        if update.callback_query is not None:
            await work.out.answer(chat.id, update.callback_query.id)
        await step_client(work, svc, user, chat.id, Begin(), update_id=update.update_id)


async def on_status(update: Update, context: BotContext) -> None:
    """The client's own request and its state, in their words."""
    chat = update.effective_chat
    if chat is None:
        return
    async with unit(context.services) as work:
        client, lang = await _client(work, update, context)
        request = None
        if client is not None and client.id is not None:
            request = await latest_request_of_client(session=work.session, client_id=client.id)
        if request is None:
            await work.out.send(chat.id, t("client.status_none", lang))
            return
        values = svc_values(context)
        state = t(f"client.state.{request.status}", lang, **values)
        await work.out.send(chat.id, t("client.status", lang, id=request.id, state=state))


async def on_contact(update: Update, context: BotContext) -> None:
    """A shared contact: only the sender's own number is accepted."""
    message = update.effective_message
    user = update.effective_user
    if message is None or message.contact is None or user is None:
        return
    chat_id = message.chat.id
    svc = context.services
    async with unit(svc) as work:
        client, lang = await _client(work, update, context)
        if not await _asks_phone(work, svc, client):
            # The one-time button, reopened later: no answer to the question on screen.
            await work.out.send(
                chat_id, t("client.contact_late", lang), markup=ReplyKeyboardRemove()
            )
            return
        if message.contact.user_id != user.id:
            inp: Input = Begin()
            notices: tuple[str, ...] = (t("client.foreign_contact", lang),)
        else:
            inp, notices = TextInput(message.contact.phone_number), ()
        await step_client(
            work,
            svc,
            user,
            chat_id,
            inp,
            update_id=update.update_id,
            notices=notices,
            contact=True,
        )


async def _asks_phone(work: Work, svc: Services, client: Client | None) -> bool:
    """Whether the client's dialogue is at the phone question now."""
    if client is None or client.id is None:
        return False
    dialogue = await get_dialogue(session=work.session, client_id=client.id)
    if dialogue is None or dialogue.state.get("finished"):
        return False
    version = dialogue.state.get("version")
    flow = await svc.registry.pinned(work.session, version) if isinstance(version, str) else None
    return _kind(flow, dialogue.state.get("node")) == "phone"


async def on_edited(update: Update, context: BotContext) -> None:
    """Edits are not answers: a polite note, then the current question again; nothing changes."""
    await _not_an_answer(update, context, "client.edited", "client.edited_asking")


async def on_other(update: Update, context: BotContext) -> None:
    """Stickers, photos, voice, locations…: a polite word and the question again."""
    await _not_an_answer(update, context, "client.not_text", "client.not_text")


async def _not_an_answer(update: Update, context: BotContext, key: str, asking_key: str) -> None:
    user = update.effective_user
    chat = update.effective_chat
    if user is None or chat is None:
        return
    svc = context.services
    async with unit(svc) as work:
        client, lang = await _client(work, update, context)
        if client is not None and client.asking:
            await work.out.send(chat.id, t(asking_key, lang))
            return
        await step_client(
            work, svc, user, chat.id, Begin(), update_id=update.update_id, notices=(t(key, lang),)
        )

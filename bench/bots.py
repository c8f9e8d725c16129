"""The bots the comparison benchmark measures, each run in a process of its own.

Usage (started by ``bench.compare``, not by hand)::

    python -m bench.bots echo|conversation|intake --mode polling|webhook \\
        --base-url URL --base-file-url URL [--db URL] [--staff-chat ID] [--rate-limit] \\
        [--port N] [--webhook-url URL]

``echo`` is the framework floor: a plain python-telegram-bot Application that repeats every
text. ``conversation`` is what a PTB user would write instead of the intake bot: a
ConversationHandler of a few questions (a typed name, a yes/no button, the phone shared by
its reply-keyboard button or typed, a confirmation) with PicklePersistence. ``intake`` is
the project's own Application from ``build_application``, on the database at ``--db``
(migrated and bootstrapped here). In webhook mode the intake bot listens on ``--port`` (a
free one by default) and gives setWebhook ``--webhook-url`` (by default its own address):
several processes on one PostgreSQL database share one public URL, as behind a load balancer.

All three process updates concurrently (64 at a time), one at a time per chat: the intake
bot by its own per-client lock, the baselines by a small PTB update processor (without it,
a client's next answer can reach the ConversationHandler before its state has moved on, as
the state is stored only after the handler returns). The process
prints ``READY`` once it takes updates, and on a line ``STOP`` on stdin it prints ``REPORT``
and a JSON object: the CPU time the process used between the two (user + system, every
thread), its peak RSS, and for the intake bot the SQL statements and commits it ran; then it
stops. Nothing here listens or connects beyond 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from telegram import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    ReplyKeyboardMarkup,
    Update,
)
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    BaseUpdateProcessor,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    ConversationHandler,
    MessageHandler,
    PicklePersistence,
    filters,
)
from telegram.warnings import PTBUserWarning

__all__ = ["CONCURRENCY", "WEBHOOK_SECRET", "start_bot", "stop_bot", "webhook_settings"]

WEBHOOK_SECRET = "bench-secret"
#: Updates processed at once, the same for every bot (the intake bot's own setting).
CONCURRENCY = 64
ALLOWED_UPDATES = [Update.MESSAGE, Update.EDITED_MESSAGE, Update.CALLBACK_QUERY]

# --- the ConversationHandler bot -----------------------------------------------------------

NAME, PAIN, PHONE, CONFIRM = range(4)
ASK_NAME = "Hello! What is your name?"
ASK_PAIN = "Do you have pain today?"
ASK_PHONE = "Your phone number, please."
ASK_CONFIRM = "Send your request to the center?"
THANKS = "Thank you, we will call you."
CANCELLED = "Cancelled. Send /start to begin again."


def _buttons(*labels: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(label, callback_data=label)] for label in labels]
    )


async def _conv_start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    assert update.message is not None
    await update.message.reply_text(ASK_NAME)
    return NAME


async def _conv_name(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    assert update.message is not None and context.user_data is not None
    context.user_data["name"] = update.message.text
    await update.message.reply_text(ASK_PAIN, reply_markup=_buttons("Yes", "No"))
    return PAIN


async def _conv_pain(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    query = update.callback_query
    assert query is not None and context.user_data is not None and query.message is not None
    await query.answer()
    context.user_data["pain"] = query.data
    await query.edit_message_text(f"{ASK_PAIN} {query.data}")
    share = KeyboardButton("Share my number", request_contact=True)
    await context.bot.send_message(
        query.message.chat.id,
        ASK_PHONE,
        reply_markup=ReplyKeyboardMarkup([[share]], resize_keyboard=True, one_time_keyboard=True),
    )
    return PHONE


async def _conv_phone(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    message = update.message
    assert message is not None and context.user_data is not None
    context.user_data["phone"] = message.contact.phone_number if message.contact else message.text
    await message.reply_text(ASK_CONFIRM, reply_markup=_buttons("Send", "Cancel"))
    return CONFIRM


async def _conv_confirm(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
    query = update.callback_query
    assert query is not None and context.user_data is not None
    await query.answer()
    context.user_data.setdefault("requests", []).append(dict(context.user_data))
    await query.edit_message_text(THANKS if query.data == "Send" else CANCELLED)
    return ConversationHandler.END


def conversation_handler() -> ConversationHandler[Any]:
    """The few-question dialogue, persisted under the name ``intake``."""
    with warnings.catch_warnings():
        # PTB warns that per_message=False tracks CallbackQueryHandlers per chat, not per
        # message; that is what this dialogue means.
        warnings.simplefilter("ignore", PTBUserWarning)
        return ConversationHandler(
            entry_points=[CommandHandler("start", _conv_start)],
            states={
                NAME: [MessageHandler(filters.TEXT & ~filters.COMMAND, _conv_name)],
                PAIN: [CallbackQueryHandler(_conv_pain)],
                PHONE: [
                    MessageHandler(filters.CONTACT | (filters.TEXT & ~filters.COMMAND), _conv_phone)
                ],
                CONFIRM: [CallbackQueryHandler(_conv_confirm)],
            },
            fallbacks=[CommandHandler("start", _conv_start)],
            name="intake",
            persistent=True,
        )


async def _echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.message is not None and update.message.text is not None
    await update.message.reply_text(update.message.text)


class PerChatUpdateProcessor(BaseUpdateProcessor):
    """Up to ``max_concurrent_updates`` at once, but one at a time within a chat."""

    def __init__(self, max_concurrent_updates: int) -> None:
        super().__init__(max_concurrent_updates)
        self._locks: defaultdict[int | None, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        chat = update.effective_chat if isinstance(update, Update) else None
        async with self._locks[chat.id if chat else None]:
            await coroutine

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to tear down."""


def baseline(kind: str, args: argparse.Namespace, workdir: Path) -> Application:  # type: ignore[type-arg]
    """The echo or ConversationHandler bot, as a PTB user would build it."""
    builder = (
        ApplicationBuilder()
        .token(args.token)
        .base_url(args.base_url)
        .base_file_url(args.base_file_url)
        .concurrent_updates(PerChatUpdateProcessor(CONCURRENCY))
    )
    if args.rate_limit:
        builder = builder.rate_limiter(AIORateLimiter(max_retries=3))  # type: ignore[arg-type]
    if kind == "conversation":
        builder = builder.persistence(PicklePersistence(workdir / "conversation.pickle"))
    app = builder.build()
    if kind == "echo":
        app.add_handler(MessageHandler(filters.TEXT, _echo))
    else:
        with warnings.catch_warnings():
            # Concurrent updates and a ConversationHandler: safe here, since one client never
            # has two updates in flight.
            warnings.simplefilter("ignore", PTBUserWarning)
            app.add_handler(conversation_handler())
    return app


# --- the intake bot -------------------------------------------------------------------------


class SqlCounter:
    """Counts the SQL statements and commits of every engine in the process.

    Split in two: the dialogue's own work (the step: client, dialogue, request, events) and
    the message path's bookkeeping (statements on the inbox, the outbox, the lanes' locks, and
    transactions that touched nothing else). A statement that does both (on PostgreSQL a
    step's claim travels inside its read, and its writes inside its outbox INSERT) is the
    step's. BEGIN is not counted as a statement.
    """

    def __init__(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        self.statements = 0
        self.commits = 0
        self.path_statements = 0
        self.path_commits = 0
        from storage.core import InTransaction

        event.listen(Engine, "before_cursor_execute", self._statement)
        event.listen(Engine, "commit", self._commit)
        # statements sent to the driver in a session's transaction (no engine events)
        InTransaction.listeners.append(
            lambda conn, statement: self._statement(conn, None, statement)
        )

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        text = statement.lstrip().upper()
        if text.startswith("BEGIN"):
            return
        lower = statement.lower()
        # the message ids the sender reads and records; then a statement on the dialogue's
        # tables is the step's (on PostgreSQL the step's claim and its outbox INSERT travel
        # inside its read and its writes); the rest on the inbox, the outbox and the lanes'
        # locks is the message path's
        path_marks = (
            "set prompt_message_id",
            "select dialogue_sessions.prompt_message_id",
            "card_message_id=",
            "into relays",
        )
        step_tables = ("clients", "dialogue_sessions", "step_events", "consultation_requests")
        if any(mark in lower for mark in path_marks) or (
            not any(f" {t}" in lower for t in step_tables)
            and any(f" {t}" in lower for t in ("inbox", "outbox", "leases"))
        ):
            self.path_statements += 1
        else:
            self.statements += 1
            conn.info["bench_step"] = True

    @property
    def driver_statements(self) -> int:
        """The lanes' lock statements and the message path's statements run alone, both on
        the driver's connection (no engine events)."""
        from storage.core import Alone
        from storage.locks import LaneLocks

        return LaneLocks.statements + Alone.statements

    def _commit(self, conn: Any) -> None:
        if conn.info.pop("bench_step", False):
            self.commits += 1
        else:
            self.path_commits += 1


def webhook_settings(mode: str, port: int | None = None, url: str | None = None) -> dict[str, Any]:
    """The intake bot's settings for ``mode``: a webhook on ``port`` (a free local one), with
    ``url`` (its own address) as the public URL, or none."""
    if mode != "webhook":
        return {}
    port = port or free_port()
    return {
        "webhook_url": url or f"http://127.0.0.1:{port}/telegram",
        "webhook_secret": WEBHOOK_SECRET,
        "webhook_listen": "127.0.0.1",
        "webhook_port": port,
    }


async def intake(args: argparse.Namespace, port: int) -> tuple[Application, Any]:  # type: ignore[type-arg]
    """The project's bot on ``args.db``, migrated; the shipped flow becomes version 1."""
    from bot.app import build_application
    from bot.flowsource import FlowRegistry
    from bot.settings import Settings
    from storage import make_engine, make_sessionmaker, upgrade_apart

    engine = make_engine(args.db)
    await upgrade_apart(engine)  # as ``intake-bot run``: alembic in a child process
    settings = Settings(
        _env_file=None,
        telegram_token=args.token,
        telegram_base_url=args.base_url,
        telegram_base_file_url=args.base_file_url,
        database_url=args.db,
        staff_chat_id=args.staff_chat,
        **webhook_settings(args.mode, port, args.webhook_url),
    )
    sessionmaker = make_sessionmaker(engine)
    registry = FlowRegistry(
        values=settings.flow_values
    )  # post_init proves the shipped flow; it becomes version 1
    app = build_application(
        settings, registry=registry, sessionmaker=sessionmaker, rate_limit=args.rate_limit
    )
    return app, engine


# --- starting and stopping -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_bot(app: Application, mode: str) -> None:  # type: ignore[type-arg]
    """Start the Application the way ``intake-bot run`` does, fetching updates by ``mode``."""
    await app.initialize()
    if app.post_init is not None:
        await app.post_init(app)
    await app.start()
    assert app.updater is not None
    if mode == "polling":
        await app.updater.start_polling(poll_interval=0, timeout=1, allowed_updates=ALLOWED_UPDATES)
        return
    port = free_port()
    await app.updater.start_webhook(
        listen="127.0.0.1",
        port=port,
        url_path="telegram",
        webhook_url=f"http://127.0.0.1:{port}/telegram",
        secret_token=WEBHOOK_SECRET,
        allowed_updates=ALLOWED_UPDATES,
    )


async def stop_bot(app: Application) -> None:  # type: ignore[type-arg]
    if app.updater is not None and app.updater.running:
        await app.updater.stop()
    if app.running:
        await app.stop()
        if app.post_stop is not None:
            await app.post_stop(app)  # as run_polling does: ends the housekeeping loop
    await app.shutdown()
    if app.post_shutdown is not None:
        await app.post_shutdown(app)


def _peak_rss_mb() -> float:
    """The process's own peak RSS (VmHWM; ru_maxrss would include the parent's, from fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def own_cpu_seconds() -> float:
    """This process's CPU time so far (user + system, all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def serve(args: argparse.Namespace) -> dict[str, Any]:
    counter = SqlCounter() if args.kind == "intake" else None
    engine = None
    with tempfile.TemporaryDirectory(prefix="bench-bot-") as tmp:
        serving = None
        if args.kind == "intake":
            from bot.serve import start_serving

            app, engine = await intake(args, args.port or free_port())
            # as ``intake-bot run`` does: the inbox (polling or webhook), dispatcher, sender
            serving = await start_serving(app, allowed_updates=ALLOWED_UPDATES, poll_timeout=1)
        else:
            app = baseline(args.kind, args, Path(tmp))
            await start_bot(app, args.mode)
        cpu, before = own_cpu_seconds(), None
        if counter is not None:
            before = dict(vars(counter), driver_statements=counter.driver_statements)
        print("READY", flush=True)
        loop = asyncio.get_running_loop()
        while (await loop.run_in_executor(None, sys.stdin.readline)).strip() not in ("STOP", ""):
            pass
        report: dict[str, Any] = {
            "cpu_seconds": own_cpu_seconds() - cpu,
            "peak_rss_mb": _peak_rss_mb(),
        }
        if counter is not None and before is not None:
            for key in ("statements", "commits", "path_statements", "path_commits"):
                report[f"sql_{key}"] = getattr(counter, key) - before[key]
            report["sql_path_statements"] += counter.driver_statements - before["driver_statements"]
        if serving is not None:
            await serving.stop()
        else:
            await stop_bot(app)
        if engine is not None:
            await engine.dispose()
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bots")
    parser.add_argument("kind", choices=["echo", "conversation", "intake"])
    parser.add_argument("--mode", choices=["polling", "webhook"], required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--base-file-url", required=True)
    parser.add_argument("--db", help="database URL (intake)")
    parser.add_argument("--staff-chat", type=int, help="staff group id (intake)")
    parser.add_argument("--rate-limit", action="store_true")
    parser.add_argument("--port", type=int, help="webhook listen port (intake; a free one)")
    parser.add_argument("--webhook-url", help="public webhook URL (intake; its own address)")
    parser.add_argument("--profile", help="write cProfile stats of the run to this file")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.profile:
        import cProfile

        with cProfile.Profile() as profile:
            report = asyncio.run(serve(args))
        profile.dump_stats(args.profile)
    else:
        report = asyncio.run(serve(args))
    report["wall_seconds"] = time.perf_counter() - started
    print("REPORT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()

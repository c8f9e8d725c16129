"""The ``intake-bot`` command line: run, chat, requests, flows check, db upgrade."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import getpass
import io
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, NoReturn, TypeVar
from urllib.parse import urlparse

import phonenumbers
import typer
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker
from telegram import Bot
from telegram.error import InvalidToken, NetworkError, TimedOut
from telegram.ext import ExtBot

from bot.app import ALLOWED_UPDATES, build_application
from bot.chat import run_chat
from bot.checking import FlowChecker
from bot.context import Services
from bot.flowsource import FlowRefusedError, FlowRegistry
from bot.graphdraw import render
from bot.logs import configure_logging
from bot.outbox import unit
from bot.publishing import publish_text, rollback
from bot.sender import Sender
from bot.serve import serve
from bot.settings import Settings
from bot.staff import local_time, redeliver, refresh_card
from bot.transport import make_request
from bot.workflow import MAX_REQUEST_ID, Acted, RequestNotFoundError, act
from flows import (
    Flow,
    FlowError,
    Lang,
    ScriptError,
    describe,
    diff_flows,
    load_flow_text,
    load_script,
    shipped_flow_path,
    simulate,
    to_mermaid,
)
from storage import (
    STATUSES,
    Action,
    AsyncSession,
    ConsultationRequest,
    DatabaseInUseError,
    FlowVersion,
    IllegalMoveError,
    Status,
    action_to,
    get_active_flow_version,
    get_request,
    list_events,
    list_flow_versions,
    make_engine,
    make_sessionmaker,
    normalize_url,
    outbox_lanes,
    requests_to_deliver,
    search_requests,
    serving_alone,
    upgrade,
    upgrade_apart,
)
from storage.migrate import upgrade_url
from storage.serving import BOT

__all__ = ["app", "main"]

T = TypeVar("T")


class LangChoice(StrEnum):
    """The languages a conversation can be held in."""

    ru = "ru"
    en = "en"


app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
flows_app = typer.Typer(
    no_args_is_help=True, help="Check, compare, draw, publish and roll back dialogue flows."
)
db_app = typer.Typer(no_args_is_help=True, help="Database maintenance.")
requests_app = typer.Typer(no_args_is_help=True, help="Work the consultation requests queue.")
app.add_typer(flows_app, name="flows")
app.add_typer(db_app, name="db")
app.add_typer(requests_app, name="requests")


class OutputFormat(StrEnum):
    """How ``requests list`` prints."""

    table = "table"
    json = "json"
    csv = "csv"


EXPORT_COLUMNS = [
    "id", "created_at", "status", "outcome", "rule_ids", "reasons", "name", "phone",
    "preferred_time", "retry_at", "language", "source", "red_flag_changed",
    "withdrawn_red_flags", "taken_by_name", "taken_at", "first_call_at", "attempts",
    "closed_at", "erased_at", "flow_name", "flow_version", "answers",
]  # fmt: skip

#: Labels of ``requests show``.
LABELS = {
    "created_at": "Received", "status": "Status", "outcome": "Outcome", "rule_ids": "Rules",
    "reasons": "Why", "name": "Name", "phone": "Phone", "preferred_time": "Call time",
    "retry_at": "Call again", "language": "Language", "source": "Source",
    "red_flag_changed": "Answer changed after a red flag", "withdrawn_red_flags": "Red flags",
    "taken_by_name": "Taken by", "taken_at": "Taken at", "first_call_at": "First call",
    "attempts": "Call attempts", "closed_at": "Closed", "erased_at": "Personal data erased",
    "flow_name": "Flow", "flow_version": "Flow version",
}  # fmt: skip


def _row(request: ConsultationRequest, settings: Settings) -> dict[str, object]:
    """A request as plain JSON-able values, times in the center's zone (lists stay lists)."""
    data = request.model_dump()
    out: dict[str, object] = {}
    for key in EXPORT_COLUMNS:
        value = data.get(key)
        out[key] = (
            value.astimezone(settings.zone).isoformat() if isinstance(value, datetime) else value
        )
    out["facts"] = data.get("facts")
    return out


def _when(value: object) -> str:
    """An ISO time from ``_row`` as ``YYYY-MM-DD HH:MM`` (already local)."""
    return str(value)[:16].replace("T", " ") if value else ""


def _flat(value: object) -> str:
    if isinstance(value, list):
        if value and isinstance(value[0], dict):
            return "; ".join(f"{a.get('question')}: {a.get('answer')}" for a in value)
        return "; ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _phone_as_text(phone: object) -> str:
    """The phone as spreadsheets keep it: ``+7 912 345-67-89``, not the number 79123456789.

    With spaces and dashes it is no number to LibreOffice or Excel, so the cell stays text
    and keeps its "+" (E.164 "+79123456789" would become the number 79123456789).
    """
    if not isinstance(phone, str) or not phone:
        return ""
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return phone
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def _with_session(
    work: Callable[[AsyncSession], Awaitable[T]], registry: FlowRegistry | None = None
) -> T:
    """Run ``work`` in one transaction; with ``registry``, its active flow is proven first
    (outside the transaction)."""
    settings = _settings()

    async def go() -> T:
        engine = make_engine(settings.database_url)
        try:
            await upgrade(engine)
            sessionmaker = make_sessionmaker(engine)
            if registry is not None:
                await _active_or_exit(registry, sessionmaker)
            async with sessionmaker() as session, session.begin():
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _with_sessionmaker(work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]) -> T:
    settings = _settings()

    async def go() -> T:
        engine = make_engine(settings.database_url)
        try:
            await upgrade(engine)
            return await work(make_sessionmaker(engine))
        finally:
            await engine.dispose()

    return asyncio.run(go())


@requests_app.command("list")
def requests_list(
    status: Annotated[str | None, typer.Option(help=f"One of: {', '.join(STATUSES)}.")] = None,
    since: Annotated[
        datetime | None,
        typer.Option(help="Only requests made since this date (YYYY-MM-DD, the center's time)."),
    ] = None,
    output: Annotated[
        OutputFormat, typer.Option("--format", help="Output format.")
    ] = OutputFormat.table,
) -> None:
    """List requests in queue order: open ones first (⚠ a doctor's word needed), then the rest.

    Times are in the center's time zone (CENTER_TIMEZONE).
    """
    if status is not None and status not in STATUSES:
        typer.echo(f"Unknown status {status!r}; use one of: {', '.join(STATUSES)}", err=True)
        raise typer.Exit(2)
    settings = _settings()
    moment = since.replace(tzinfo=settings.zone) if since and since.tzinfo is None else since

    async def work(session: AsyncSession) -> list[ConsultationRequest]:
        return await search_requests(session=session, status=status, since=moment, queue_order=True)

    found = _with_session(work)
    rows = [_row(r, settings) for r in found]
    if output == OutputFormat.json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
    elif output == OutputFormat.csv:
        buffer = io.StringIO()
        _write_csv(buffer, rows)
        typer.echo(buffer.getvalue(), nl=False)
    else:
        typer.echo(
            f"{'id':>5}  {'':2}{'received':16}  {'status':9}  {'outcome':9}  "
            f"{'call':24}  {'phone':16}  name"
        )
        for request, r in zip(found, rows, strict=True):
            flag = "⚠ " if request.outcome == "CLEAR" or request.red_flag_changed else "  "
            call = (
                f"again {_when(r['retry_at'])[5:]}"
                if r["retry_at"] and request.status == Status.NO_ANSWER
                else _flat(r["preferred_time"])
            )
            typer.echo(
                f"{r['id']:>5}  {flag}{_when(r['created_at']):16}  {r['status']!s:9}  "
                f"{r['outcome']!s:9}  {call[:24]:24}  {_phone_as_text(r['phone']):16}  "
                f"{_flat(r['name'])}"
            )
        typer.echo(
            f"{len(rows)} request(s). ⚠ a doctor's word needed or an answer changed after a "
            f"red flag. Times: {settings.center_timezone}."
        )


def _write_csv(stream: IO[str], rows: list[dict[str, object]]) -> None:
    writer = csv.writer(stream)
    writer.writerow(EXPORT_COLUMNS)
    for r in rows:
        writer.writerow(
            [
                _phone_as_text(r[c])
                if c == "phone"
                else _when(r[c])
                if c.endswith("_at")
                else _flat(r[c])
                for c in EXPORT_COLUMNS
            ]
        )


@requests_app.command("show")
def requests_show(request_id: int) -> None:
    """Show one request, readably, with its history (times in the center's time zone)."""
    settings = _settings()

    async def work(session: AsyncSession) -> tuple[dict[str, object], list[str]] | None:
        if not 1 <= request_id <= MAX_REQUEST_ID:
            return None
        request = await get_request(session=session, request_id=request_id)
        if request is None:
            return None
        events = await list_events(session=session, request_id=request_id)
        trail = [
            f"{local_time(e.at, settings, '%Y-%m-%d %H:%M')}  {e.actor_name}: "
            + (f"{e.from_status} -> {e.to_status}" if e.action == "status" else e.action)
            + (f"  ({_event_note(e.action, e.note, settings)})" if e.note else "")
            for e in events
        ]
        return _row(request, settings), trail

    found = _with_session(work)
    if found is None:
        typer.echo(f"No request #{request_id}.", err=True)
        raise typer.Exit(1)
    row, trail = found
    typer.echo(f"Request #{row['id']}  (times: {settings.center_timezone})")
    for key, label in LABELS.items():
        value = row.get(key)
        if value in (None, "", [], False) and key not in ("status", "outcome"):
            continue
        if key.endswith("_at"):
            text = _when(value)
        elif key == "phone":
            text = _phone_as_text(value)
        elif key == "red_flag_changed":
            text = "yes"
        elif key == "flow_version":
            text = str(value)[:12]
        else:
            text = _flat(value)
        typer.echo(f"  {label + ':':<34}{text}")
    answers = row.get("answers")
    if isinstance(answers, list) and answers:
        typer.echo("\nAnswers:")
        for answer in answers:
            typer.echo(f"  {answer.get('question')}: {answer.get('answer')}")
    typer.echo("\nHistory:" if trail else "\nHistory: none")
    for line in trail:
        typer.echo(f"  {line}")


def _event_note(action: str, note: str, settings: Settings) -> str:
    """An audit note; a call-back time is shown in the center's time zone."""
    if action == "retry":
        try:
            return local_time(datetime.fromisoformat(note), settings, "%Y-%m-%d %H:%M")
        except ValueError:
            return note
    return note


@requests_app.command("set-status")
def requests_set_status(
    request_id: int,
    status: str,
    note: Annotated[str | None, typer.Option(help="A note for the audit trail.")] = None,
) -> None:
    """Move a request to STATUS, if its lifecycle allows it (audited as the command line).

    A request that is done (booked, declined, closed) goes back to new only with
    `requests reopen ID --note WHY`.
    """
    if status not in STATUSES:
        typer.echo(f"Unknown status {status!r}; use one of: {', '.join(STATUSES)}", err=True)
        raise typer.Exit(2)
    _act(request_id, None, Status(status), note)


@requests_app.command("reopen")
def requests_reopen(
    request_id: int,
    note: Annotated[str, typer.Option(help="Why it is reopened (required; audited).")],
) -> None:
    """Put a booked, declined or closed request back into the queue as new."""
    _act(request_id, Action.REOPEN, Status.NEW, note)


def _act(request_id: int, action: Action | None, target: Status, note: str | None) -> None:
    """Make a lifecycle move from the command line, or explain why it is refused."""
    actor = f"command line ({getpass.getuser()})"

    settings = _settings()

    async def work(sessionmaker: async_sessionmaker[AsyncSession]) -> Acted:
        if not 1 <= request_id <= MAX_REQUEST_ID:
            raise RequestNotFoundError(request_id)
        # The card in the staff group is redrawn by the running bot (through the outbox).
        async with unit(_services(settings, sessionmaker)) as work:
            request = await get_request(session=work.session, request_id=request_id)
            if request is None:
                raise RequestNotFoundError(request_id)
            move = action or action_to(Status(request.status), target)
            done = await act(
                work.session, request_id=request_id, action=move, actor_id=None,
                actor_name=actor, at=work.at, note=note,
            )  # fmt: skip
            await refresh_card(work, settings, done.request, followed=done.followed)
        return done

    try:
        done = _with_sessionmaker(work)
    except RequestNotFoundError:
        typer.echo(f"No request #{request_id}.", err=True)
        raise typer.Exit(1) from None
    except IllegalMoveError as exc:
        hint = ""
        if "reopen" in str(exc):
            hint = f"\nTo reopen it: intake-bot requests reopen {request_id} --note 'why'"
        typer.echo(f"Request #{request_id} not changed: {exc}.{hint}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Request #{request_id}: {done.before} -> {done.request.status}.")


@requests_app.command("export")
def requests_export(
    file: Annotated[Path, typer.Argument(help="CSV file to write (UTF-8 with BOM).")],
) -> None:
    """Export every request, oldest first, as CSV for spreadsheet programs.

    UTF-8 with a byte-order mark (Cyrillic intact), times in the center's time zone, phones
    written as "+7 912 345-67-89" so that the cell stays text.
    """
    settings = _settings()

    async def work(session: AsyncSession) -> list[ConsultationRequest]:
        return await search_requests(session=session)

    rows = [_row(r, settings) for r in _with_session(work)]
    with file.open("w", encoding="utf-8-sig", newline="") as stream:
        _write_csv(stream, rows)
    typer.echo(f"Exported {len(rows)} request(s) to {file}.")


@requests_app.command("redeliver")
def requests_redeliver() -> None:
    """Post to the staff group every request card that could not be posted before.

    If a bot is running on the same SQLite file, the cards are queued for it to post (two
    processes must not send from one SQLite file). Either way this waits up to a minute for
    them; what is left stays queued for the bot.
    """
    settings = _settings()
    if settings.telegram_token is None or settings.staff_chat_id is None:
        typer.echo(
            "Set TELEGRAM_TOKEN and STAFF_CHAT_ID to post cards to the staff group.", err=True
        )
        raise typer.Exit(2)
    try:
        with serving_alone(settings.database_url, role=REDELIVER):
            delivered, failing, queued = asyncio.run(_redeliver(settings, send=True))
        by = ""
    except DatabaseInUseError as exc:
        if exc.role != BOT:
            typer.echo(f"The database is in use by {_holder(exc)}; try again later.", err=True)
            raise typer.Exit(1) from None
        delivered, failing, queued = asyncio.run(_redeliver(settings, send=False))
        by = f" by the running bot ({_holder(exc)})"
    line = f"Delivered {delivered} card(s){by}; {failing} still failing."
    if queued:
        line += f" {queued} still queued: the bot posts them when it runs."
    typer.echo(line)
    if failing or queued:
        raise typer.Exit(1)


#: The role ``requests redeliver`` holds a SQLite file under (a starting bot waits for it).
REDELIVER = "intake-bot requests redeliver"
#: Seconds ``requests redeliver`` waits for the cards to be posted (by itself or the bot).
REDELIVER_WAIT = 60.0
#: Seconds a starting bot waits for a command that holds its SQLite file (``REDELIVER``
#: posting cards gives it back within ``REDELIVER_WAIT`` and its sender's grace).
COMMAND_WAIT = REDELIVER_WAIT + 30.0


async def _redeliver(settings: Settings, *, send: bool) -> tuple[int, int, int]:
    """Queue the cards to post again, then post them (``send``) or let the running bot; wait
    for them, up to ``REDELIVER_WAIT``. Of the requests whose card was not posted at the
    start: how many are posted now, how many failing, how many still queued."""
    assert settings.telegram_token is not None and settings.staff_chat_id is not None
    engine = make_engine(settings.database_url)
    try:
        if send:
            await upgrade(engine)  # (beside a running bot, the bot keeps the schema)
        sessionmaker = make_sessionmaker(engine)
        async with sessionmaker() as session:
            watched = [r.id for r in await requests_to_deliver(session=session) if r.id]
        await redeliver(_services(settings, sessionmaker))
        deadline = time.monotonic() + REDELIVER_WAIT
        if send:
            await _send_waiting(settings, sessionmaker, deadline)
        while True:
            states = await _card_states(sessionmaker, watched)
            if not states["queued"] or time.monotonic() >= deadline:
                return states["posted"], states["failing"], states["queued"]
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()


async def _card_states(
    sessionmaker: async_sessionmaker[AsyncSession], ids: list[int]
) -> dict[str, int]:
    """How many of these requests have their card posted, failing, or queued (in flight)."""
    states = {"posted": 0, "failing": 0, "queued": 0}
    async with sessionmaker() as session:
        for request_id in ids:
            request = await get_request(session=session, request_id=request_id)
            if request is None:
                continue  # erased meanwhile (/forget)
            if request.card_message_id is not None:
                states["posted"] += 1
            elif request.delivery_error is not None or request.card_chat_id is None:
                states["failing"] += 1
            else:
                states["queued"] += 1
    return states


async def _send_waiting(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], deadline: float
) -> None:
    """Make the calls waiting in the outbox until ``deadline``, as the bot's sender would (on
    PostgreSQL with the lanes locked, so a running bot's sends are not doubled); what is not
    made by then stays in the outbox for the bot."""
    assert settings.telegram_token is not None
    bot: ExtBot[None] = ExtBot(
        settings.telegram_token.get_secret_value(),
        base_url=settings.telegram_base_url,
        base_file_url=settings.telegram_base_file_url,
    )
    sender = Sender(bot, sessionmaker, owner=f"cli:{os.getpid()}", shared=True)
    async with bot:
        async with sessionmaker() as session:
            lanes = set(await outbox_lanes(session=session))
        sender.wake(lanes)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sender.idle(), max(deadline - time.monotonic(), 0.1))
        await sender.stop()


def _holder(exc: DatabaseInUseError) -> str:
    """Who holds a SQLite file, for a message."""
    who = f"process {exc.pid}" if exc.pid is not None else "another process"
    return f"{exc.role}, {who}" if exc.role not in (None, BOT) else who


def _services(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> Services:
    """The services a use case needs from the command line (no flow, no running bot).

    What a unit of work queues for Telegram is sent by the running bot.
    """
    services = Services()
    services.configure(registry=None, sessionmaker=sessionmaker, settings=settings)
    return services


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()]
        typer.echo("Configuration error (check your environment and .env):", err=True)
        typer.echo("\n".join(lines), err=True)
        raise typer.Exit(2) from exc


def _setup_logging(settings: Settings) -> None:
    token = settings.telegram_token.get_secret_value() if settings.telegram_token else ""
    configure_logging(settings.log_level, secrets=[token])


def _registry_or_exit(settings: Settings) -> FlowRegistry:
    try:
        return FlowRegistry(settings.flow_file, values=settings.flow_values)
    except FlowRefusedError as exc:
        typer.echo("The dialogue flow failed its check; refusing to start.\n", err=True)
        typer.echo(exc.report.render(), err=True)
        raise typer.Exit(1) from exc


@app.command()
def chat(
    lang: Annotated[
        LangChoice | None,
        typer.Option("--lang", help="Language of the conversation (default: DEFAULT_LANGUAGE)."),
    ] = None,
) -> None:
    """Talk through the client intake in the terminal; requests go to the real database."""
    settings = _settings()
    logging.basicConfig(level=logging.WARNING)
    registry = _registry_or_exit(settings)
    wanted = lang.value if lang is not None else settings.default_language
    chosen: Lang = "en" if wanted == "en" else "ru"

    async def go() -> list[int]:
        engine = make_engine(settings.database_url)
        try:
            await upgrade(engine)
            sessionmaker = make_sessionmaker(engine)
            flow = await _active_or_exit(registry, sessionmaker)
            return await run_chat(sessionmaker=sessionmaker, flow=flow, lang=chosen)
        finally:
            await engine.dispose()

    # the chat itself says, in its language, which requests were saved
    asyncio.run(go())


@app.command()
def start() -> None:
    """Run the Telegram bot if TELEGRAM_TOKEN is set, otherwise the terminal chat."""
    if _settings().telegram_token is None:
        typer.echo("TELEGRAM_TOKEN is not set, so starting the terminal chat instead of the bot.")
        typer.echo("(Put the token into .env to run the Telegram bot; see .env.example.)\n")
        chat(lang=None)
    else:
        run()


@app.command()
def run() -> None:
    """Run the Telegram bot: long polling, or a webhook server when WEBHOOK_URL is set."""
    settings = _settings()
    _setup_logging(settings)
    if settings.telegram_token is None:
        typer.echo(
            "TELEGRAM_TOKEN is not set. Put the token you got from @BotFather into .env "
            "(see .env.example) or the environment.\n"
            "To try the dialogue without Telegram, run: intake-bot chat",
            err=True,
        )
        raise typer.Exit(2)
    if settings.webhook_url and settings.webhook_secret is None:
        typer.echo(
            "WEBHOOK_URL is set but WEBHOOK_SECRET is not: a secret token is required so that "
            "only Telegram can post updates. Set WEBHOOK_SECRET in .env.",
            err=True,
        )
        raise typer.Exit(2)
    registry = _registry_or_exit(settings)
    try:
        # One bot per SQLite file; a command posting cards is waited for.
        with serving_alone(settings.database_url, patient=COMMAND_WAIT):
            _run(settings, registry)
    except DatabaseInUseError as exc:
        who = "Another bot" if exc.role == BOT else "Another program"
        typer.echo(
            f"{who} ({_holder(exc)}) is using this database ({_safe(settings.database_url)}). "
            "Stop it first: one bot process per SQLite file. To run several processes, use "
            "PostgreSQL (DATABASE_URL).",
            err=True,
        )
        raise typer.Exit(1) from None


def _run(settings: Settings, registry: FlowRegistry) -> None:
    asyncio.run(_reach_telegram_or_exit(settings))
    flow = asyncio.run(_prepare(settings.database_url, registry))
    engine = make_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        pool_overflow=settings.database_pool_overflow,
    )
    application = build_application(
        settings,
        registry=registry,
        sessionmaker=make_sessionmaker(engine),
        on_shutdown=engine.dispose,
    )
    logging.getLogger(__name__).info(
        "flow %s version %s; database %s", flow.name, flow.version, _safe(settings.database_url)
    )
    try:
        # Polling, or a webhook server when WEBHOOK_URL is set; until SIGTERM or Ctrl+C.
        asyncio.run(serve(application, allowed_updates=ALLOWED_UPDATES))
    except (InvalidToken, NetworkError, TimedOut) as exc:
        _telegram_failed(settings, exc)


async def _reach_telegram_or_exit(settings: Settings) -> None:
    """Ask Telegram who the bot is before anything else: one clear line if that fails."""
    assert settings.telegram_token is not None
    bot = Bot(
        settings.telegram_token.get_secret_value(),
        base_url=settings.telegram_base_url,
        base_file_url=settings.telegram_base_file_url,
        request=make_request(settings.telegram_base_url, 1),  # the client the bot will use
    )
    try:
        async with bot:
            pass  # initialising the bot calls getMe
    except (InvalidToken, NetworkError, TimedOut) as exc:
        _telegram_failed(settings, exc)


def _telegram_failed(settings: Settings, exc: Exception) -> NoReturn:
    if isinstance(exc, InvalidToken):
        typer.echo("Telegram refused the bot token: check TELEGRAM_TOKEN in .env.", err=True)
        raise typer.Exit(1) from exc
    # The error's text may hold the request URL, and with it the token: name its type only.
    where = urlparse(settings.telegram_base_url).netloc or settings.telegram_base_url
    typer.echo(
        f"Cannot reach Telegram at {where} ({_kind(exc)}): check the network "
        "connection (or TELEGRAM_BASE_URL) and start again.",
        err=True,
    )
    raise typer.Exit(1) from exc


def _kind(exc: Exception) -> str:
    """PTB's name for the failure, not the name of our client's subclasses of it."""
    if isinstance(exc, TimedOut):
        return "TimedOut"
    return "NetworkError" if isinstance(exc, NetworkError) else type(exc).__name__


async def _active_or_exit(
    registry: FlowRegistry, sessionmaker: async_sessionmaker[AsyncSession]
) -> Flow:
    """The active flow version (version 1 from the file on first start), checked."""
    try:
        return await registry.prepare(sessionmaker)
    except FlowRefusedError as exc:
        typer.echo("The active dialogue flow failed its check; refusing to start.\n", err=True)
        typer.echo(exc.report.render(), err=True)
        raise typer.Exit(1) from exc


async def _prepare(url: str, registry: FlowRegistry) -> Flow:
    """Apply migrations (in a child process, so the bot never loads alembic) and make sure an
    active, checked flow version exists."""
    engine = make_engine(url)
    try:
        await upgrade_apart(engine)
        return await _active_or_exit(registry, make_sessionmaker(engine))
    finally:
        await engine.dispose()


def _safe(url: str) -> str:
    """The database URL without its password, for logs."""
    return make_url(normalize_url(url)).render_as_string(hide_password=True)


@flows_app.command("check")
def flows_check(
    file: Annotated[
        Path | None, typer.Argument(help="Flow YAML file (default: the shipped intake flow).")
    ] = None,
) -> None:
    """Check a flow: structure, texts, limits and the safety proof. Exit 1 on any problem."""
    path = file or shipped_flow_path()
    started = time.monotonic()
    report = FlowChecker().check_blocking(_read_flow_file(path), str(path))
    seconds = time.monotonic() - started
    typer.echo(report.render())
    peak = report.peak_memory_mb
    typer.echo(f"  Checked in {seconds:.1f} s in a worker process (peak memory {peak:.0f} MB).")
    if not report.ok:
        raise typer.Exit(1)


class GraphFormat(StrEnum):
    """Picture formats of ``flows graph``."""

    mermaid = "mermaid"
    svg = "svg"
    png = "png"


def _read_flow_file(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        typer.echo(f"Cannot read {file}: {exc}", err=True)
        raise typer.Exit(2) from exc


async def _active_version(session: AsyncSession, registry: FlowRegistry) -> FlowVersion:
    await registry.bootstrap(session)
    row = await get_active_flow_version(session=session, flow_name=registry.name)
    assert row is not None
    return row


@flows_app.command("diff")
def flows_diff(
    file: Annotated[Path, typer.Argument(help="The edited flow YAML file.")],
    lang: Annotated[LangChoice, typer.Option(help="Language of quoted texts.")] = LangChoice.en,
) -> None:
    """What FILE changes against the active version, in plain words."""
    settings = _settings()
    registry = _registry_or_exit(settings)
    text = _read_flow_file(file)
    try:
        new = load_flow_text(text, origin=str(file), values=registry.values)
    except FlowError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc

    async def work(session: AsyncSession) -> tuple[int, Flow]:
        row = await _active_version(session, registry)
        return row.number, await registry.active(session)

    number, active = _with_session(work, registry)
    lines = diff_flows(active, new, lang=lang.value)
    typer.echo(f"Changes from the active version {number} to {file}:")
    typer.echo("\n".join(f"  - {line}" for line in lines) if lines else "  (no changes)")


@flows_app.command("graph")
def flows_graph(
    file: Annotated[
        Path | None, typer.Argument(help="Flow YAML (default: the active version).")
    ] = None,
    output_format: Annotated[GraphFormat, typer.Option("--format")] = GraphFormat.mermaid,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write it.")
    ] = None,
    lang: Annotated[LangChoice, typer.Option(help="Language of the labels.")] = LangChoice.en,
) -> None:
    """A picture of the dialogue: questions, branches, and which answers lead to which outcome.

    Without -o, Mermaid and SVG go to standard output and a PNG to a new temporary
    folder (its path is printed): nothing is written into the current folder.
    """
    if file is not None:
        try:
            flow = load_flow_text(
                _read_flow_file(file), origin=str(file), values=_settings().flow_values
            )
        except FlowError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from exc
    else:
        registry = _registry_or_exit(_settings())

        async def work(session: AsyncSession) -> Flow:
            return await registry.active(session)

        flow = _with_session(work, registry)
    if output_format == GraphFormat.mermaid:
        data = to_mermaid(flow, lang=lang.value).encode("utf-8")
    else:
        graph = describe(flow, lang=lang.value)
        data = render(graph, "svg") if output_format == GraphFormat.svg else render(graph, "png")
    if output is None and output_format != GraphFormat.png:
        sys.stdout.buffer.write(data)  # text: print it, to read or redirect
        sys.stdout.flush()
        return
    if output is None:  # a PNG is not for a terminal, nor for the working tree
        output = Path(tempfile.mkdtemp(prefix="flow-graph-")) / f"{flow.name}.png"
    output.write_bytes(data)
    typer.echo(f"Wrote {output}.")


@flows_app.command("publish")
def flows_publish(
    file: Annotated[Path, typer.Argument(help="The flow YAML file to make active.")],
    note: Annotated[str, typer.Option(help="Why: shown in the history.")],
    author: Annotated[str | None, typer.Option(help="Who publishes (default: your login).")] = None,
) -> None:
    """Check FILE and, if it passes, make it the active version (no restart needed)."""
    registry = _registry_or_exit(_settings())
    text = _read_flow_file(file)
    result = _with_services(
        registry,
        lambda sessionmaker: publish_text(
            registry=registry, sessionmaker=sessionmaker, text=text, origin=str(file),
            author=author or getpass.getuser(), note=note,
        ),
    )  # fmt: skip
    if result.status == "refused" and result.report is not None:
        typer.echo("Not published: the flow failed its check.\n", err=True)
        typer.echo(result.report.render(), err=True)
        raise typer.Exit(1)
    if result.status == "other_flow" and result.report is not None:
        name = result.report.flow_name
        typer.echo(f"Not published: this is flow '{name}', not '{registry.name}'.", err=True)
        raise typer.Exit(1)
    if result.report is not None:
        typer.echo(result.report.render())
    if result.status == "unchanged":
        typer.echo(f"No changes: it is the same as the active version {result.number}.")
        return
    typer.echo(
        f"Published version {result.number} of '{registry.name}'; new dialogues use it from now on."
    )


def _with_services(
    registry: FlowRegistry, work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]
) -> T:
    """Run a use case with a session maker, the active flow proven first."""

    async def proven(sessionmaker: async_sessionmaker[AsyncSession]) -> T:
        await _active_or_exit(registry, sessionmaker)
        return await work(sessionmaker)

    return _with_sessionmaker(proven)


@flows_app.command("history")
def flows_history() -> None:
    """Every published version, newest first; * marks the active one."""
    registry = _registry_or_exit(_settings())

    async def work(session: AsyncSession) -> list[FlowVersion]:
        await registry.bootstrap(session)
        return await list_flow_versions(session=session, flow_name=registry.name)

    for v in _with_session(work, registry):
        mark = "*" if v.active else " "
        typer.echo(
            f"{mark} {v.number:>3}  {v.created_at:%Y-%m-%d %H:%M} UTC  {v.checksum}  "
            f"{v.author}: {v.note}"
        )


@flows_app.command("rollback")
def flows_rollback(
    version: Annotated[int, typer.Argument(help="The version number to make active.")],
) -> None:
    """Make an earlier version active again (it is checked again first; the rollback is
    recorded in the history as a new version)."""
    registry = _registry_or_exit(_settings())
    result = _with_services(
        registry,
        lambda sessionmaker: rollback(
            registry=registry, sessionmaker=sessionmaker, number=version,
            author=getpass.getuser(),
        ),
    )  # fmt: skip
    if result.status == "missing":
        typer.echo(f"There is no version {version}; see `intake-bot flows history`.", err=True)
        raise typer.Exit(1)
    if result.status == "refused" and result.report is not None:
        typer.echo(f"Version {version} no longer passes the check; not activated.\n", err=True)
        typer.echo(result.report.render(), err=True)
        raise typer.Exit(1)
    if result.status == "already_active":
        typer.echo(f"Version {version} is already the active one; nothing changed.")
        return
    typer.echo(f"Version {version} is active again (recorded as version {result.number}).")


@flows_app.command("export")
def flows_export(
    file: Annotated[Path | None, typer.Argument(help="Where to write (default: print).")] = None,
) -> None:
    """The active version's YAML, to edit and publish again."""
    registry = _registry_or_exit(_settings())

    async def work(session: AsyncSession) -> str:
        return (await _active_version(session, registry)).yaml

    text = _with_session(work, registry)
    if file is None:
        typer.echo(text, nl=False)
    else:
        file.write_text(text, encoding="utf-8")
        typer.echo(f"Wrote {file}.")


@flows_app.command("simulate")
def flows_simulate(
    file: Annotated[Path, typer.Argument(help="The flow YAML file to try.")],
    script: Annotated[Path, typer.Option(help="The answers, as YAML (see the README).")],
) -> None:
    """Run a scripted dialogue against FILE and print the transcript and the outcome."""
    try:
        flow = load_flow_text(
            _read_flow_file(file), origin=str(file), values=_settings().flow_values
        )
        transcript = simulate(flow, load_script(_read_flow_file(script), origin=str(script)))
    except (FlowError, ScriptError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    typer.echo(transcript.render())


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations (also done automatically on start)."""
    settings = _settings()

    asyncio.run(upgrade_url(settings.database_url))
    typer.echo(f"Database is up to date: {_safe(settings.database_url)}")


def main() -> None:
    """Entry point of the ``intake-bot`` console script."""
    app()

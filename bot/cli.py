"""The ``intake-bot`` command line: run, chat, flows check, db upgrade."""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse

import typer
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from bot.app import ALLOWED_UPDATES, build_application
from bot.chat import run_chat
from bot.flowsource import FlowRefusedError, load_checked_flow
from bot.settings import Settings
from flows import Flow, Lang, check_file, shipped_flow_path
from storage import make_engine, make_sessionmaker, normalize_url, upgrade

__all__ = ["app", "main"]


class LangChoice(StrEnum):
    """The languages a conversation can be held in."""

    ru = "ru"
    en = "en"


app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
flows_app = typer.Typer(no_args_is_help=True, help="Check dialogue flow files.")
db_app = typer.Typer(no_args_is_help=True, help="Database maintenance.")
app.add_typer(flows_app, name="flows")
app.add_typer(db_app, name="db")


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()]
        typer.echo("Configuration error (check your environment and .env):", err=True)
        typer.echo("\n".join(lines), err=True)
        raise typer.Exit(2) from exc


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every request URL, which contains the bot token.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _flow_or_exit(settings: Settings) -> Flow:
    try:
        return load_checked_flow(settings.flow_file)
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
    flow = _flow_or_exit(settings)
    wanted = lang.value if lang is not None else settings.default_language
    chosen: Lang = "en" if wanted == "en" else "ru"

    async def go() -> list[int]:
        engine = make_engine(settings.database_url)
        try:
            await upgrade(engine)
            return await run_chat(sessionmaker=make_sessionmaker(engine), flow=flow, lang=chosen)
        finally:
            await engine.dispose()

    saved = asyncio.run(go())
    where = normalize_url(settings.database_url)
    if saved:
        ids = ", ".join(f"#{i}" for i in saved)
        typer.echo(f"\nSaved request(s) {ids} in {where}.")
    else:
        typer.echo("\nNo request was saved.")


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
    flow = _flow_or_exit(settings)
    asyncio.run(_migrate(settings.database_url))
    engine = make_engine(settings.database_url)
    application = build_application(
        settings, flow=flow, sessionmaker=make_sessionmaker(engine), on_shutdown=engine.dispose
    )
    logging.getLogger(__name__).info(
        "flow %s version %s; database %s", flow.name, flow.version, _safe(settings.database_url)
    )
    if settings.webhook_url and settings.webhook_secret is not None:
        application.run_webhook(
            listen=settings.webhook_listen,
            port=settings.webhook_port,
            url_path=urlparse(settings.webhook_url).path.lstrip("/"),
            webhook_url=settings.webhook_url,
            secret_token=settings.webhook_secret.get_secret_value(),
            allowed_updates=ALLOWED_UPDATES,
        )
    else:
        application.run_polling(allowed_updates=ALLOWED_UPDATES)


async def _migrate(url: str) -> None:
    engine = make_engine(url)
    try:
        await upgrade(engine)
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
    report = check_file(file or shipped_flow_path())
    typer.echo(report.render())
    if not report.ok:
        raise typer.Exit(1)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations (also done automatically on start)."""
    settings = _settings()

    asyncio.run(_migrate(settings.database_url))
    typer.echo(f"Database is up to date: {_safe(settings.database_url)}")


def main() -> None:
    """Entry point of the ``intake-bot`` console script."""
    app()

"""``intake-bot run`` as a real process: killed with SIGKILL mid-dialogue, nothing is lost."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

import bot.cli
from storage import serving_alone
from tests.bot.test_requests_cli import cli, seed
from tests.dbs import connect_admin, postgres_admin_url
from tests.fakebotapi import FakeBotAPI
from tests.fakebotapi.fixtures import TEST_TOKEN


def _bot_env(api: FakeBotAPI, database_url: str, **more: str) -> dict[str, str]:
    """The environment of ``intake-bot run`` against ``api``, on ``database_url``."""
    env = {
        **os.environ,
        **more,
        "TELEGRAM_TOKEN": TEST_TOKEN,
        "TELEGRAM_BASE_URL": api.base_url,
        "TELEGRAM_BASE_FILE_URL": api.base_file_url,
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
    }
    env.pop("WEBHOOK_URL", None)
    return env


def _run_bot(env: dict[str, str], cwd: Path, stderr: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "run"],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


def _start_logged(env: dict[str, str], cwd: Path, log_file: Path) -> subprocess.Popen[bytes]:
    """``intake-bot run`` logging to a file (a pipe nobody reads would fill and block it)."""
    with log_file.open("wb") as stderr:
        return _run_bot(env, cwd, stderr)


def _start(
    api: FakeBotAPI, tmp_path: Path, log: str = "bot.log", **more: str
) -> subprocess.Popen[bytes]:
    """``intake-bot run`` on the SQLite file in ``tmp_path``, logging to ``tmp_path / log``."""
    env = _bot_env(api, f"sqlite:///{tmp_path / 'data' / 'intake.db'}", **more)
    return _start_logged(env, tmp_path, tmp_path / log)


async def _logged(log_file: Path, text: str) -> str:
    """The first line of ``log_file`` holding ``text``, once the process has written it
    (within 30 s)."""

    def written() -> str:
        for _ in range(600):
            for line in log_file.read_text().splitlines():
                if text in line:
                    return line
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged: {log_file.read_text()}")

    return await asyncio.to_thread(written)


async def _serving(
    api: FakeBotAPI, tmp_path: Path, user: int, **more: str
) -> subprocess.Popen[bytes]:
    """A bot started, and answering: it has replied to ``user``'s /start."""
    bot = _start(api, tmp_path, **more)
    api.user_message(user, "/start")
    await api.wait_for("sendMessage", lambda c: c.params.get("chat_id") == user, timeout=30)
    return bot


async def _press(api: FakeBotAPI, user: int, label: str) -> None:
    message_id, data = api.find_button(user, label)
    api.user_callback(user, message_id, data)
    await api.wait_for("answerCallbackQuery", timeout=20)
    await api.wait_idle(quiet=0.3, timeout=20)


async def test_sigkill_then_restart_resumes_the_client_at_the_same_question(
    fake_bot_api: FakeBotAPI, tmp_path: Path
) -> None:
    api, user = fake_bot_api, 5001
    bot = _start(api, tmp_path)
    try:
        api.user_message(user, "/start")
        await api.wait_for("sendMessage", lambda c: "start?" in c.params["text"], timeout=30)
        # each press turns its question, in place, into the next one
        await _press(api, user, "Start the questions")
        await api.wait_for(
            "editMessageText", lambda c: "Safety first" in c.params["text"], timeout=20
        )
        await _press(api, user, "None of these")
        await _press(api, user, "Done")
        await api.wait_for(
            "editMessageText", lambda c: "What bothers you" in c.params["text"], timeout=20
        )
    finally:
        bot.send_signal(signal.SIGKILL)
        bot.wait(timeout=20)
    assert bot.returncode == -signal.SIGKILL

    again = _start(api, tmp_path, log="again.log")
    try:
        api.user_message(user, "/start")
        call = await api.wait_for(
            "sendMessage", lambda c: c.params.get("chat_id") == user, timeout=30
        )
        assert "What bothers you" in call.params["text"]
        assert "Question 2 of " in call.params["text"]
    finally:
        again.send_signal(signal.SIGTERM)
        await asyncio.to_thread(again.wait, 30)
    assert again.returncode == 0, (tmp_path / "again.log").read_text()[-2000:]


async def test_a_second_bot_on_the_same_sqlite_file_refuses_and_the_first_goes_on(
    fake_bot_api: FakeBotAPI, tmp_path: Path
) -> None:
    api, user = fake_bot_api, 5002
    first = await _serving(api, tmp_path, user)
    try:
        second = _start(api, tmp_path, log="second.log")
        await asyncio.to_thread(second.wait, 60)
        assert second.returncode == 1
        lines = (tmp_path / "second.log").read_text().strip().splitlines()
        assert lines == [
            f"Another bot (process {first.pid}) is using this database "
            f"(sqlite+aiosqlite:///{tmp_path / 'data' / 'intake.db'}). Stop it first: one bot "
            "process per SQLite file. To run several processes, use PostgreSQL (DATABASE_URL)."
        ]
        api.user_message(user, "/help")
        await api.wait_for(
            "sendMessage",
            lambda c: c.params.get("chat_id") == user and "/start" in c.params["text"],
            timeout=30,
        )
    finally:
        first.send_signal(signal.SIGTERM)
        await asyncio.to_thread(first.wait, 30)
    assert first.returncode == 0
    assert (tmp_path / "data" / "intake.db.lock").read_text() == "", "the pid is cleared"


async def test_a_bot_starting_while_a_command_posts_cards_waits_for_it(
    fake_bot_api: FakeBotAPI, tmp_path: Path
) -> None:
    api, user = fake_bot_api, 5004
    url = f"sqlite:///{tmp_path / 'data' / 'intake.db'}"
    with serving_alone(url, role="intake-bot requests redeliver"):
        bot = _start(api, tmp_path)
        await _logged(
            tmp_path / "bot.log",
            f"waiting for intake-bot requests redeliver (process {os.getpid()})",
        )
    try:
        api.user_message(user, "/start")
        await api.wait_for("sendMessage", lambda c: c.params.get("chat_id") == user, timeout=30)
    finally:
        bot.send_signal(signal.SIGTERM)
        await asyncio.to_thread(bot.wait, 30)
    assert bot.returncode == 0


async def test_redeliver_beside_a_running_bot_on_sqlite_lets_the_bot_post_each_card_once(
    fake_bot_api: FakeBotAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes sending from one SQLite file would post a card twice: the command
    queues the cards and the running bot posts them."""
    monkeypatch.chdir(tmp_path)  # the command runs here: no developer's .env
    api, staff = fake_bot_api, -100777
    api.add_chat(staff, title="Staff")
    process = await _serving(api, tmp_path, 5003, STAFF_CHAT_ID=str(staff))  # file migrated
    url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'intake.db'}"
    try:
        await seed(url)  # two requests whose cards were never posted
        api.hold("sendMessage", staff)
        env = {
            "TELEGRAM_TOKEN": TEST_TOKEN,
            "TELEGRAM_BASE_URL": api.base_url,
            "TELEGRAM_BASE_FILE_URL": api.base_file_url,
            "STAFF_CHAT_ID": str(staff),
        }
        # Telegram holds the first card: the command waits for the bot, then says what is
        # still queued.
        monkeypatch.setattr(bot.cli, "REDELIVER_WAIT", 1.0)
        early = await asyncio.to_thread(cli, "redeliver", url=url, env=env)
        await api.wait_held("sendMessage", 1, timeout=30)
        # A second sender would post the same card within its sweep (a second): none comes.
        with pytest.raises(AssertionError, match="no held"):
            await api.wait_held("sendMessage", 2, timeout=2.5)
        monkeypatch.setattr(bot.cli, "REDELIVER_WAIT", 60.0)
        command = asyncio.create_task(asyncio.to_thread(cli, "redeliver", url=url, env=env))
        # Telegram lets the cards through once the command knows which it waits for.
        waiting = threading.Event()

        def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
            if "card_message_id IS NULL" in statement:  # it has read the cards to watch
                waiting.set()

        event.listen(Engine, "before_cursor_execute", seen)
        try:
            assert await asyncio.to_thread(waiting.wait, 30)
            api.release("sendMessage", staff)
            done = await command
        finally:
            event.remove(Engine, "before_cursor_execute", seen)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 30)
    assert early.exit_code == 1
    assert early.stdout.strip() == (
        f"Delivered 0 card(s) by the running bot (process {process.pid}); 0 still failing. "
        "2 still queued: the bot posts them when it runs."
    )
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == (
        f"Delivered 2 card(s) by the running bot (process {process.pid}); 0 still failing."
    )
    cards = [m["text"].split("\n")[0] for m in api.messages(staff)]
    assert cards == ["Заявка #1 · 🆕 новая", "Заявка #2 · 🆕 новая"]


def test_a_bot_on_a_migrated_database_loads_neither_migrations_nor_drawing(
    tmp_path: Path,
) -> None:
    """What a serving bot imports is what it holds in memory for good: alembic only when
    there is something to migrate, the graph drawing libraries only for a picture."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'intake.db'}"
    script = (
        "import asyncio, sys\n"
        "from bot.app import build_application\n"
        "from storage import make_engine, upgrade\n"
        "engine = make_engine(sys.argv[1])\n"
        "asyncio.run(upgrade(engine))\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(loaded & {'alembic', 'PIL', 'matplotlib', 'grandalf'}))\n"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", script, url], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    ]
    assert runs == ["['alembic']", "[]"], "a fresh database is migrated, then up to date"


async def test_a_bot_kept_to_one_pooled_connection_answers_a_burst_within_its_budget(
    fake_bot_api: FakeBotAPI, tmp_path: Path
) -> None:
    # Several processes must share the server's max_connections, so an operator sets a
    # small pool: the database role may open only what the settings allow (1 pooled + the 2
    # chat-lock connections), and PostgreSQL refuses any connection beyond that. A burst of
    # new clients is still answered, every one, with nothing refused.
    api = fake_bot_api
    admin = await connect_admin()
    role = "intake_pool_" + secrets.token_hex(4)
    await admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 3")
    await admin.execute(f"CREATE DATABASE {role} OWNER {role}")
    url = make_url(postgres_admin_url()).set(drivername="postgresql", username=role, database=role)
    env = _bot_env(
        api,
        url.render_as_string(hide_password=False),
        DATABASE_POOL_SIZE="1",
        DATABASE_POOL_OVERFLOW="0",
        RATE_LIMIT="false",
    )
    log_file = tmp_path / "bot.log"
    bot = _start_logged(env, tmp_path, log_file)
    users = range(7001, 7021)
    try:
        for user in users:
            api.user_message(user, "/start")
        for user in users:
            await api.wait_for(
                "sendMessage",
                lambda c, user=user: (
                    c.params.get("chat_id") == user and "start?" in c.params["text"]
                ),
                timeout=60,
            )
    finally:
        bot.send_signal(signal.SIGTERM)
        await asyncio.to_thread(bot.wait, 30)
        await admin.execute(f"DROP DATABASE IF EXISTS {role} WITH (FORCE)")
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()
    log = log_file.read_text()
    assert bot.returncode == 0, log[-2000:]
    assert "too many connections" not in log, log[-2000:]

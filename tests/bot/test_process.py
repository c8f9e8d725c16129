"""``intake-bot run`` as a real process: killed with SIGKILL mid-dialogue, nothing is lost."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.fakebotapi import FakeBotAPI
from tests.fakebotapi.fixtures import TEST_TOKEN


def _start(api: FakeBotAPI, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TELEGRAM_TOKEN": TEST_TOKEN,
        "TELEGRAM_BASE_URL": api.base_url,
        "TELEGRAM_BASE_FILE_URL": api.base_file_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'intake.db'}",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("WEBHOOK_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


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

    again = _start(api, tmp_path)
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
    assert again.returncode == 0, (again.stderr.read() if again.stderr else b"").decode()[-2000:]


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

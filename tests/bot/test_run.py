"""``intake-bot run`` without a way to Telegram says so in one line, not a traceback."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from storage.db import HEAD


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``run`` configures logging for the process; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_no_network_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app,
        ["run"],
        env={
            "TELEGRAM_TOKEN": "123456:SECRET-TOKEN",
            # nothing listens on the discard port: the connection is refused at once
            "TELEGRAM_BASE_URL": "http://127.0.0.1:9/bot",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
            "WEBHOOK_URL": "",
        },
    )
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Cannot reach Telegram at 127.0.0.1:9 (NetworkError): check the network connection "
        "(or TELEGRAM_BASE_URL) and start again."
    ]
    assert "Traceback" not in result.output and "SECRET-TOKEN" not in result.output


def test_db_upgrade_migrates_a_new_database_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app, ["db", "upgrade"], env={"DATABASE_URL": f"sqlite:///{tmp_path / 'new.db'}"}
    )
    assert result.exit_code == 0, result.output
    assert "Database is up to date" in result.output
    with sqlite3.connect(tmp_path / "new.db") as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]

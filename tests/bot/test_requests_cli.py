"""``intake-bot requests …`` on the server, against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.service import store_request
from storage import create_client, list_events, make_engine, make_sessionmaker, upgrade
from tests.dbs import BACKENDS, fresh_database
from tests.factories import Client
from tests.fakebotapi import FakeBotAPI
from tests.fakebotapi.fixtures import TEST_TOKEN


def cli(
    *args: str, url: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "requests", *args],
        capture_output=True, text=True, cwd=cwd, timeout=120, check=False,
        env={**os.environ, "DATABASE_URL": url, **(env or {})},
    )  # fmt: skip


async def seed(url: str) -> None:
    """Two finished intakes stored the way the bot stores them."""
    engine = make_engine(url)
    try:
        await upgrade(engine)
        async with make_sessionmaker(engine)() as session, session.begin():
            for answers, lang in (
                ({"name": "Анна Иванова"}, "ru"),
                ({"fracture": "yes", "name": "Bob"}, "en"),
            ):
                dialogue = Client(lang=lang).run(answers)  # type: ignore[arg-type]
                client = await create_client(
                    session=session, telegram_id=None, channel="terminal", language=lang
                )
                assert client.id is not None
                await store_request(
                    session=session, client_id=client.id, draft=dialogue.saved[0], source="site"
                )
    finally:
        await engine.dispose()


@pytest.fixture(params=BACKENDS)
async def seeded(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with fresh_database(request.param, tmp_path) as url:
        await seed(url)
        yield url


async def test_list_show_and_set_status(seeded: str, tmp_path: Path) -> None:
    table = await asyncio.to_thread(cli, "list", url=seeded, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "Анна Иванова" in table.stdout and "2 request(s)." in table.stdout

    raw = await asyncio.to_thread(cli, "list", "--format", "json", url=seeded, cwd=tmp_path)
    rows = json.loads(raw.stdout)
    assert [(r["id"], r["outcome"], r["status"]) for r in rows] == [
        (1, "OK", "new"),
        (2, "CLEAR", "new"),
    ]
    assert rows[1]["rule_ids"][0] == "caution_recent_fracture" and rows[1]["reasons"]
    assert rows[0]["flow_version"] and rows[0]["source"] == "site"

    changed = await asyncio.to_thread(
        cli, "set-status", "2", "booked", "--note", "записан на 25.11", url=seeded, cwd=tmp_path
    )
    assert changed.returncode == 0, changed.stderr
    assert "new -> booked" in changed.stdout
    shown = await asyncio.to_thread(cli, "show", "2", url=seeded, cwd=tmp_path)
    assert (
        "booked" in shown.stdout
        and "записан на 25.11" in shown.stdout
        and "command line" in shown.stdout
    )
    only = await asyncio.to_thread(
        cli, "list", "--status", "booked", "--format", "json", url=seeded, cwd=tmp_path
    )
    assert [r["id"] for r in json.loads(only.stdout)] == [2]

    engine = make_engine(seeded)
    try:
        async with make_sessionmaker(engine)() as session:
            [event] = await list_events(session=session, request_id=2)
    finally:
        await engine.dispose()
    assert (event.from_status, event.to_status, event.actor_id) == ("new", "booked", None)


async def test_bad_arguments_get_clear_messages(seeded: str, tmp_path: Path) -> None:
    bad = await asyncio.to_thread(cli, "set-status", "1", "done", url=seeded, cwd=tmp_path)
    assert bad.returncode == 2 and "Unknown status 'done'" in bad.stderr
    missing = await asyncio.to_thread(cli, "show", "99", url=seeded, cwd=tmp_path)
    assert missing.returncode == 1 and "No request #99" in missing.stderr


async def test_export_is_csv_with_a_bom_and_cyrillic_intact(seeded: str, tmp_path: Path) -> None:
    out = tmp_path / "requests.csv"
    done = await asyncio.to_thread(cli, "export", str(out), url=seeded, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes().startswith(b"\xef\xbb\xbf")
    with out.open(encoding="utf-8-sig", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [r["name"] for r in rows] == ["Анна Иванова", "Bob"]
    assert "беспокоит" in rows[0]["answers"]


async def test_redeliver_posts_the_cards_that_were_never_posted(
    fake_bot_api: FakeBotAPI, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    await seed(url)
    env = {
        "TELEGRAM_TOKEN": TEST_TOKEN,
        "TELEGRAM_BASE_URL": fake_bot_api.base_url,
        "TELEGRAM_BASE_FILE_URL": fake_bot_api.base_file_url,
        "STAFF_CHAT_ID": "-100777",
    }
    fake_bot_api.add_chat(-100777, title="Staff")
    fake_bot_api.block_chat(-100777)
    failing = await asyncio.to_thread(cli, "redeliver", url=url, cwd=tmp_path, env=env)
    assert failing.returncode == 1 and "2 still failing" in failing.stdout
    fake_bot_api.unblock_chat(-100777)
    done = await asyncio.to_thread(cli, "redeliver", url=url, cwd=tmp_path, env=env)
    assert done.returncode == 0 and "Delivered 2 card(s)" in done.stdout
    cards = fake_bot_api.messages(-100777)
    assert [m["text"].split("\n")[0] for m in cards] == [
        "Заявка #1 · 🆕 новая",
        "Заявка #2 · 🆕 новая",
    ]
    again = await asyncio.to_thread(cli, "redeliver", url=url, cwd=tmp_path, env=env)
    assert "Delivered 0 card(s); 0 still failing." in again.stdout

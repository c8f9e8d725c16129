"""``intake-bot requests …`` on the server (in-process), against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import json
import re
import shutil
import subprocess
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from bot.cli import app
from bot.service import store_request
from storage import (
    create_client,
    get_request,
    list_events,
    make_engine,
    make_sessionmaker,
    upgrade,
)
from tests.dbs import BACKENDS, fresh_database
from tests.factories import Client
from tests.fakebotapi import FakeBotAPI
from tests.fakebotapi.fixtures import TEST_TOKEN

RUNNER = CliRunner()
#: When the seeded requests were made: 10:00 and 10:05 in Moscow.
MADE = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)


def cli(*args: str, url: str, env: dict[str, str] | None = None) -> Result:
    """``intake-bot requests ARGS`` in this process (so it counts in coverage)."""
    return RUNNER.invoke(
        app, ["requests", *args], env={"DATABASE_URL": url, "TELEGRAM_TOKEN": "", **(env or {})}
    )


@pytest.fixture(autouse=True)
def _no_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's


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
                    session=session, client_id=client.id, draft=dialogue.saved[0], source="site",
                    at=MADE + timedelta(minutes=5 * client.id - 5),
                )  # fmt: skip
    finally:
        await engine.dispose()


@pytest.fixture(params=BACKENDS)
async def seeded(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with fresh_database(request.param, tmp_path) as url:
        await seed(url)
        yield url


async def test_list_is_in_queue_order_with_local_times_call_times_and_red_flags(
    seeded: str,
) -> None:
    table = await asyncio.to_thread(cli, "list", url=seeded)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    bob, anna = lines[1], lines[2]
    assert bob.split()[:2] == ["2", "⚠"], "a doctor's word needed: first, and marked"
    assert "2026-11-24 10:05" in bob and "CLEAR" in bob and "Bob" in bob
    assert anna.split()[0] == "1" and "⚠" not in anna and "Анна Иванова" in anna
    assert "2026-11-24 10:00" in anna, "times in the center's zone (Moscow), not UTC"
    assert "+7 912 345-67-89" in anna
    assert "2 request(s)." in table.stdout and "Europe/Moscow" in table.stdout

    raw = await asyncio.to_thread(cli, "list", "--format", "json", url=seeded)
    rows = json.loads(raw.stdout)
    assert [(r["id"], r["outcome"], r["status"]) for r in rows] == [
        (2, "CLEAR", "new"),
        (1, "OK", "new"),
    ]
    assert rows[0]["rule_ids"][0] == "caution_recent_fracture" and rows[0]["reasons"]
    assert rows[1]["flow_version"] and rows[1]["source"] == "site"
    assert rows[1]["created_at"] == "2026-11-24T10:00:00+03:00"


async def test_set_status_goes_through_the_lifecycle_and_show_is_readable(seeded: str) -> None:
    changed = await asyncio.to_thread(
        cli, "set-status", "2", "booked", "--note", "записан на 25.11", url=seeded
    )
    assert changed.exit_code == 0, changed.output
    assert "new -> booked" in changed.stdout
    shown = await asyncio.to_thread(cli, "show", "2", url=seeded)
    out = shown.stdout
    assert "Status:" in out and "booked" in out and "Name:" in out and "Bob" in out
    assert "Phone:" in out and "+7 912 345-67-89" in out
    assert "Received:" in out and "2026-11-24 10:05" in out
    assert "\nAnswers:\n" in out and "\n  Recent spine fracture" in out, "one answer per line"
    assert "{" not in out and "'question'" not in out, "no Python dicts"
    assert "command line" in out and "записан на 25.11" in out
    only = await asyncio.to_thread(
        cli, "list", "--status", "booked", "--format", "json", url=seeded
    )
    assert [r["id"] for r in json.loads(only.stdout)] == [2]

    engine = make_engine(seeded)
    try:
        async with make_sessionmaker(engine)() as session:
            [event] = await list_events(session=session, request_id=2)
    finally:
        await engine.dispose()
    assert (event.from_status, event.to_status, event.actor_id) == ("new", "booked", None)


async def test_an_illegal_move_is_refused_unless_it_is_a_reopen_with_a_note(
    seeded: str,
) -> None:
    closed = await asyncio.to_thread(cli, "set-status", "1", "closed", url=seeded)
    assert closed.exit_code == 0, closed.output
    back = await asyncio.to_thread(cli, "set-status", "1", "new", url=seeded)
    assert back.exit_code == 1
    assert "not changed" in back.stderr and "reopen" in back.stderr
    sideways = await asyncio.to_thread(cli, "set-status", "1", "no_answer", url=seeded)
    assert sideways.exit_code == 1 and "cannot become no_answer" in sideways.stderr
    bare = await asyncio.to_thread(cli, "reopen", "1", url=seeded)
    assert bare.exit_code == 2 and "--note" in bare.output
    empty = await asyncio.to_thread(cli, "reopen", "1", "--note", " ", url=seeded)
    assert empty.exit_code == 1 and "needs a note" in empty.stderr
    reopened = await asyncio.to_thread(
        cli, "reopen", "1", "--note", "the client called back", url=seeded
    )
    assert reopened.exit_code == 0 and "closed -> new" in reopened.stdout
    engine = make_engine(seeded)
    try:
        async with make_sessionmaker(engine)() as session:
            events = await list_events(session=session, request_id=1)
            request = await get_request(session=session, request_id=1)
    finally:
        await engine.dispose()
    assert [(e.from_status, e.to_status, e.note) for e in events] == [
        ("new", "closed", None),
        ("closed", "new", "the client called back"),
    ]
    assert request is not None and request.closed_at is None


async def test_bad_arguments_get_clear_messages(seeded: str) -> None:
    bad = await asyncio.to_thread(cli, "set-status", "1", "done", url=seeded)
    assert bad.exit_code == 2 and "Unknown status 'done'" in bad.stderr
    missing = await asyncio.to_thread(cli, "show", "99", url=seeded)
    assert missing.exit_code == 1 and "No request #99" in missing.stderr
    huge = await asyncio.to_thread(cli, "show", "99999999999999999999", url=seeded)
    assert huge.exit_code == 1 and "No request #" in huge.stderr
    huge = await asyncio.to_thread(cli, "set-status", "99999999999999999999", "taken", url=seeded)
    assert huge.exit_code == 1 and "No request #" in huge.stderr


async def test_export_is_csv_with_a_bom_cyrillic_intact_and_phones_kept_as_text(
    seeded: str, tmp_path: Path
) -> None:
    out = tmp_path / "requests.csv"
    done = await asyncio.to_thread(cli, "export", str(out), url=seeded)
    assert done.exit_code == 0, done.output
    assert out.read_bytes().startswith(b"\xef\xbb\xbf")
    with out.open(encoding="utf-8-sig", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [r["name"] for r in rows] == ["Анна Иванова", "Bob"]
    assert "беспокоит" in rows[0]["answers"]
    assert rows[0]["phone"] == "+7 912 345-67-89"
    assert rows[0]["created_at"] == "2026-11-24 10:00"


@pytest.mark.skipif(shutil.which("soffice") is None, reason="LibreOffice is not installed")
async def test_libreoffice_keeps_the_exported_phone_as_text(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'lo.db'}"
    await seed(url)
    out = tmp_path / "requests.csv"
    assert (await asyncio.to_thread(cli, "export", str(out), url=url)).exit_code == 0
    converted = await asyncio.to_thread(
        subprocess.run,
        ["soffice", f"-env:UserInstallation=file://{tmp_path}/lo", "--headless",
         "--infilter=CSV:44,34,76,1,,1049", "--convert-to", "xlsx", "--outdir", str(tmp_path),
         str(out)],
        capture_output=True, timeout=180, check=False,
    )  # fmt: skip
    assert converted.returncode == 0, converted.stderr
    with zipfile.ZipFile(tmp_path / "requests.xlsx") as book:
        sheet = book.read("xl/worksheets/sheet1.xml").decode()
        strings = book.read("xl/sharedStrings.xml").decode()
    header = re.findall(r'<c r="([A-Z]+)1"[^>]*t="s"><v>(\d+)</v>', sheet)
    shared = re.findall(r"<t[^>]*>([^<]*)</t>", strings)
    column = next(col for col, index in header if shared[int(index)] == "phone")
    cell = re.search(rf'<c r="{column}2"[^>]*>(.*?)</c>', sheet)
    assert cell is not None and 't="s"' in cell.group(0), "a text cell, not a number"
    assert shared[int(re.sub(r"\D", "", cell.group(1)))] == "+7 912 345-67-89"


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
    failing = await asyncio.to_thread(cli, "redeliver", url=url, env=env)
    assert failing.exit_code == 1 and "2 still failing" in failing.stdout
    fake_bot_api.unblock_chat(-100777)
    done = await asyncio.to_thread(cli, "redeliver", url=url, env=env)
    assert done.exit_code == 0 and "Delivered 2 card(s)" in done.stdout
    cards = fake_bot_api.messages(-100777)
    assert [m["text"].split("\n")[0] for m in cards] == [
        "Заявка #1 · 🆕 новая",
        "Заявка #2 · 🆕 новая",
    ]
    again = await asyncio.to_thread(cli, "redeliver", url=url, env=env)
    assert "Delivered 0 card(s); 0 still failing." in again.stdout

"""Admins edit, check, publish and roll back the dialogue, in Telegram and on the command line."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.handlers.admin import MAX_UPLOAD
from storage import get_active_flow_version, list_flow_versions, list_requests
from tests.bot.conftest import RunningBot, start_bot
from tests.bot.people import FULL, Person
from tests.cli import intake_bot
from tests.dbs import BACKENDS, fresh_database
from tests.factories import INTAKE_PATH
from tests.fakebotapi import FakeBotAPI
from tests.fakebotapi.fixtures import TEST_TOKEN
from tests.flows.attacks import ATTACKS
from tests.flows.attacks import edited as attack_text

ADMIN, STRANGER = 901, 555
NEW_WELCOME = "Welcome to the renewed questionnaire of the Veronika Herba center."


def edited(change: str) -> str:
    """The shipped flow's YAML with one deliberate change."""
    yaml = YAML(typ="rt")
    yaml.width = 4096
    data = yaml.load(INTAKE_PATH.read_text())
    if change == "reworded":
        data["nodes"]["welcome"]["text"]["en"] = NEW_WELCOME
    elif change == "unsafe":  # after STOP, questions about oils for a massage
        data["nodes"]["triage"]["next"][0]["when"]["in"] = ["OK", "CLEAR", "STOP"]
    elif change == "own_emergency":  # its own emergency question instead of the locked block
        data["nodes"]["emergency"] = {
            "kind": "yesno",
            "text": {"ru": "Есть ли у вас острая боль?", "en": "Are you in acute pain?"},
            "options": [
                {"id": "yes", "label": {"ru": "Да", "en": "Yes"}, "goto": "goodbye"},
                {"id": "no", "label": {"ru": "Нет", "en": "No"}},
            ],
            "next": "conditions",
        }
    elif change == "emergency_node":  # its own emergency end
        data["emergency_node"] = "goodbye"
    out = StringIO()
    yaml.dump(data, out)
    return out.getvalue()


@pytest.fixture
async def admin_bot(
    fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine]
) -> AsyncIterator[RunningBot]:
    url, engine = database
    running = await start_bot(fake_bot_api, url, engine, admin_user_ids=[ADMIN])
    try:
        yield running
    finally:
        await running.stop()


async def upload(api: FakeBotAPI, user: int, text: str) -> None:
    api.user_document(user, text.encode(), file_name="intake.yaml", mime_type="application/x-yaml")
    final = (
        "Changes from the active version",
        "Only comments or layout differ",
        "same as the active version",
        "failed its check",
        "too large for a flow",
    )

    def last_reply(call: Any) -> bool:
        return call.params["chat_id"] == user and any(f in call.params["text"] for f in final)

    await api.wait_for("sendMessage", last_reply, timeout=30)
    await api.wait_idle(quiet=0.2, timeout=20)


def texts(api: FakeBotAPI, user: int) -> list[str]:
    return [m.get("text") or m.get("caption") or "" for m in api.messages(user)]


async def test_flow_sends_the_active_yaml_as_a_document(
    admin_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    fake_bot_api.user_message(ADMIN, "/flow")
    call = await fake_bot_api.wait_for("sendDocument", timeout=10)
    document = call.params["document"]
    assert document.filename == "intake-v1.yaml"
    assert document.content.decode() == INTAKE_PATH.read_text()


async def test_a_valid_upload_is_checked_shown_and_published_without_restart(
    admin_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    # a client mid-dialogue on version 1
    early = Person(fake_bot_api, 3001)
    await early.say("/start")
    await early.walk({}, ["welcome", "emergency"])

    await upload(fake_bot_api, ADMIN, edited("reworded"))
    shown = "\n".join(texts(fake_bot_api, ADMIN))
    assert "passed its check, including the safety proof" in shown
    assert "Safety proof: explored" in shown
    assert (
        "Changes from the active version 1" in shown
        and "Question 'welcome': text (en) changed" in shown
    )
    [photo] = fake_bot_api.calls_of("sendPhoto")
    assert photo.params["photo"].content.startswith(b"\x89PNG\r\n\x1a\n")
    admin = Person(fake_bot_api, ADMIN)
    await admin.press("Publish")
    assert "Published as version 2" in admin.last

    async with admin_bot.sessionmaker() as session:
        active = await get_active_flow_version(session=session, flow_name="intake")
    assert (
        active is not None and active.number == 2 and active.author.endswith(f"(Telegram {ADMIN})")
    )

    newcomer = Person(fake_bot_api, 3002)
    await newcomer.say("/start")
    assert NEW_WELCOME in newcomer.last, "new dialogues use the new version at once"

    await early.walk({}, FULL[2:])
    async with admin_bot.sessionmaker() as session:
        [request] = await list_requests(session=session)
    assert request.flow_version != active.checksum, "the early client finished on version 1"


async def refusal_shown(bot: RunningBot, api: FakeBotAPI) -> str:
    """What the admin was shown, after checking nothing was offered or published."""
    assert not any("Publish" in b for b in Person(api, ADMIN).labels())
    async with bot.sessionmaker() as session:
        versions = await list_flow_versions(session=session, flow_name="intake")
    assert [v.number for v in versions] in ([], [1]), "nothing published"
    return "\n".join(texts(api, ADMIN))


async def test_an_unsafe_upload_is_refused_with_the_reason(
    admin_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    await upload(fake_bot_api, ADMIN, edited("unsafe"))
    shown = await refusal_shown(admin_bot, fake_bot_api)
    assert "failed its check and cannot be published" in shown
    assert "after the outcome STOP the client reaches this question" in shown
    assert "triage:STOP → oils" in shown, "an example path shows how"
    # the report is longer than a message: all of it comes as a file as well
    call = await fake_bot_api.wait_for("sendDocument", timeout=10)
    document = call.params["document"]
    assert document.filename == "check-report.txt"
    whole = document.content.decode()
    assert "question 'oils': after the outcome STOP the client reaches this question" in whole
    assert "question 'oil_scent'" in whole and "…" in shown


async def test_an_upload_that_writes_its_own_emergency_question_is_refused(
    admin_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    await upload(fake_bot_api, ADMIN, edited("own_emergency"))
    shown = await refusal_shown(admin_bot, fake_bot_api)
    assert "failed its check and cannot be published" in shown
    assert "question 'emergency': the id 'emergency' belongs to the screening core" in shown
    assert "its questions, answers and texts are locked" in shown
    assert "include the block with 'kind: screening'" in shown
    assert "the screening block 'emergency' is missing" in shown


async def test_an_upload_that_sets_the_emergency_end_is_refused(
    admin_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    await upload(fake_bot_api, ADMIN, edited("emergency_node"))
    shown = await refusal_shown(admin_bot, fake_bot_api)
    assert "failed its check and cannot be published" in shown
    assert "'emergency_node' cannot be set in a flow file" in shown
    assert "the emergency end (call 112 / 103) is fixed by the safety policy" in shown


async def test_an_unchanged_upload_is_the_same_as_the_active_version(
    admin_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    # the settings' phone and hours fill both versions alike: no change is invented
    await upload(fake_bot_api, ADMIN, INTAKE_PATH.read_text())
    shown = "\n".join(texts(fake_bot_api, ADMIN))
    assert "It is the same as the active version 1." in shown
    assert "changed" not in shown


async def test_an_oversized_upload_is_refused_politely(
    admin_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    await upload(fake_bot_api, ADMIN, "#" * (MAX_UPLOAD + 1))
    shown = await refusal_shown(admin_bot, fake_bot_api)
    assert "Sorry, that file is too large for a flow (at most 512 KB)" in shown
    assert not fake_bot_api.calls_of("getFile"), "refused before downloading it"
    # under the upload limit but over the flow's own: the check names both sizes
    padding = "# " + "x" * 98 + "\n"
    await upload(fake_bot_api, ADMIN, INTAKE_PATH.read_text() + padding * 2000)
    shown = await refusal_shown(admin_bot, fake_bot_api)
    assert "the file is too large (" in shown and "at most 200 thousand)" in shown


async def test_history_and_rollback(admin_bot: RunningBot, fake_bot_api: FakeBotAPI) -> None:
    admin = Person(fake_bot_api, ADMIN)
    await upload(fake_bot_api, ADMIN, edited("reworded"))
    await admin.press("Publish")
    await admin.say("/flows_history")
    assert "● <b>2</b>" not in admin.last and "2 ·" in admin.last
    await admin.press("Make version 1 active")
    assert "Version 1 is active again (recorded as version 3)" in admin.last
    async with admin_bot.sessionmaker() as session:
        active = await get_active_flow_version(session=session, flow_name="intake")
        versions = await list_flow_versions(session=session, flow_name="intake")
    assert active is not None and active.number == 3
    assert active.yaml == INTAKE_PATH.read_text() and active.note == "rollback to version 1"
    assert [v.number for v in versions] == [3, 2, 1], "the rollback is in the history"
    await admin.say("/flows_history")
    await admin.press("Make version 1 active")
    assert "Version 1 is already the active one" in admin.last


async def test_a_pending_upload_survives_a_restart_and_another_process(
    fake_bot_api: FakeBotAPI, database: tuple[str, AsyncEngine]
) -> None:
    url, engine = database
    first = await start_bot(fake_bot_api, url, engine, admin_user_ids=[ADMIN])
    try:
        await upload(fake_bot_api, ADMIN, edited("reworded"))
    finally:
        await first.stop()
    second = await start_bot(fake_bot_api, url, engine, admin_user_ids=[ADMIN])
    try:
        admin = Person(fake_bot_api, ADMIN)
        await admin.press("Publish")
        assert "Published as version 2" in admin.last
        async with second.sessionmaker() as session:
            active = await get_active_flow_version(session=session, flow_name="intake")
        assert active is not None and active.number == 2 and NEW_WELCOME in active.yaml
    finally:
        await second.stop()


async def test_an_upload_of_another_flow_or_a_copy_publishes_nothing(
    admin_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    admin = Person(fake_bot_api, ADMIN)
    other = INTAKE_PATH.read_text().replace("name: intake", "name: intake_copy", 1)
    fake_bot_api.user_document(ADMIN, other.encode(), file_name="other.yaml")
    await fake_bot_api.wait_for(
        "sendMessage", lambda c: "would never be used" in c.params.get("text", ""), timeout=30
    )
    await upload(fake_bot_api, ADMIN, INTAKE_PATH.read_text())
    assert "It is the same as the active version 1." in admin.last
    assert not any("Publish" in b for b in admin.labels())
    async with admin_bot.sessionmaker() as session:
        versions = await list_flow_versions(session=session, flow_name="intake")
    assert [v.number for v in versions] == [1]


async def test_others_are_refused(admin_bot: RunningBot, fake_bot_api: FakeBotAPI) -> None:
    stranger = Person(fake_bot_api, STRANGER)
    await stranger.say("/flow")
    assert stranger.last == "This is for the center's admins only."
    await stranger.say("/flows_history")
    assert stranger.last == "This is for the center's admins only."
    await stranger.send(
        {"message": {"message_id": 1, "date": 0, "chat": {"id": STRANGER, "type": "private"},
                     "from": {"id": STRANGER, "is_bot": False, "first_name": "S"},
                     "document": {"file_id": "x", "file_unique_id": "y", "file_name": "a.yaml"}}}
    )  # fmt: skip
    assert "понимаю только текст" in "\n".join(stranger.texts), "a document is just bad input"
    assert not fake_bot_api.calls_of("sendDocument")


def cli(*args: str, url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``intake-bot flows ARGS`` (in this process: call it through ``asyncio.to_thread``)."""
    return intake_bot("flows", *args, cwd=cwd, env={"DATABASE_URL": url})


@pytest.mark.parametrize("backend", BACKENDS)
async def test_cli_publish_history_rollback_export(backend: str, tmp_path: Path) -> None:
    async with fresh_database(backend, tmp_path) as url:
        good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
        good.write_text(edited("reworded"))
        bad.write_text(edited("unsafe"))

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return cli(*args, url=url, cwd=tmp_path)

        refused = await asyncio.to_thread(run, "publish", str(bad), "--note", "oops")
        assert refused.returncode == 1 and "Not published" in refused.stderr
        assert "after the outcome STOP the client reaches this question" in refused.stderr
        same = await asyncio.to_thread(run, "diff", str(INTAKE_PATH))
        assert same.returncode == 0 and "(no changes)" in same.stdout, same.stdout
        diff = await asyncio.to_thread(run, "diff", str(good))
        assert "Question 'welcome': text (en) changed" in diff.stdout
        done = await asyncio.to_thread(
            run, "publish", str(good), "--note", "new welcome", "--author", "Olga"
        )
        assert done.returncode == 0 and "Published version 2" in done.stdout
        history = await asyncio.to_thread(run, "history")
        lines = history.stdout.splitlines()
        assert lines[0].startswith("*   2") and "Olga: new welcome" in lines[0]
        assert lines[1].startswith("    1") and "first start" in lines[1]
        exported = await asyncio.to_thread(run, "export")
        assert NEW_WELCOME in exported.stdout
        back = await asyncio.to_thread(run, "rollback", "1")
        assert back.returncode == 0, back.stderr
        assert "Version 1 is active again (recorded as version 3)" in back.stdout
        exported = await asyncio.to_thread(run, "export")
        assert exported.stdout == INTAKE_PATH.read_text()
        history = await asyncio.to_thread(run, "history")
        assert "rollback to version 1" in history.stdout.splitlines()[0]
        again = await asyncio.to_thread(run, "rollback", "1")
        assert again.returncode == 0 and "already the active one" in again.stdout
        same = await asyncio.to_thread(run, "publish", str(INTAKE_PATH), "--note", "same")
        assert same.returncode == 0 and "No changes" in same.stdout
        missing = await asyncio.to_thread(run, "rollback", "9")
        assert missing.returncode == 1 and "There is no version 9" in missing.stderr


async def test_cli_graph_and_simulate(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return cli(*args, url=url, cwd=tmp_path)

    mermaid = await asyncio.to_thread(run, "graph")
    assert mermaid.returncode == 0 and "flowchart TD" in mermaid.stdout
    assert "emergency_stop" in mermaid.stdout
    for fmt, magic in (("png", b"\x89PNG"), ("svg", b"<")):
        made = await asyncio.to_thread(
            run, "graph", str(INTAKE_PATH), "--format", fmt, "-o", str(tmp_path / f"g.{fmt}")
        )
        assert made.returncode == 0, made.stderr
        assert (tmp_path / f"g.{fmt}").read_bytes().lstrip().startswith(magic)
    script = tmp_path / "answers.yaml"
    script.write_text("lang: en\ndefaults: true\nanswers:\n  acute: [fever_infection]\n")
    sim = await asyncio.to_thread(run, "simulate", str(INTAKE_PATH), "--script", str(script))
    assert sim.returncode == 0, sim.stderr
    assert "LATER" in sim.stdout and "c_infection" in sim.stdout


async def test_a_running_bot_switches_when_another_process_publishes(
    database: tuple[str, AsyncEngine], tmp_path: Path
) -> None:
    """A publish from the command line (another process) reaches the running bot.

    (Several bot processes on one database are the PostgreSQL path; see test_message_path.)
    """
    url, engine = database
    async with FakeBotAPI(token=TEST_TOKEN) as api:
        running = await start_bot(api, url, engine)
        try:
            await Person(api, 4001).say("/start")
            assert NEW_WELCOME not in (api.last_message(4001) or {}).get("text", "")
            good = tmp_path / "good.yaml"
            good.write_text(edited("reworded"))
            published = await asyncio.to_thread(
                cli, "publish", str(good), "--note", "both", url=url, cwd=tmp_path
            )
            assert published.returncode == 0, published.stderr
            # the first dialogue after the publish has the bot prove the new version, in
            # the background: meanwhile it keeps the version it proved before
            await Person(api, 4002).say("/start")
            await running.app.bot_data.registry.settled()
            person = Person(api, 4012)
            await person.say("/start")
            assert NEW_WELCOME in person.last
        finally:
            await running.stop()


async def test_every_attack_uploaded_in_telegram_is_refused_readably(
    admin_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    """The attack catalogue of the checker tests, each sent as an admin's upload."""
    for attack in ATTACKS:
        before = len(fake_bot_api.messages(ADMIN))
        await upload(fake_bot_api, ADMIN, attack_text(attack.edit))
        replies = fake_bot_api.messages(ADMIN)[before:]
        shown = "\n".join(m.get("text") or m.get("caption") or "" for m in replies)
        reports = [
            c.params["document"].content.decode()
            for c in fake_bot_api.calls
            if c.method == "sendDocument" and c.params.get("chat_id") == ADMIN
        ]
        assert "failed its check and cannot be published" in shown, attack.name
        assert attack.says in shown or any(attack.says in r for r in reports), attack.name
        assert "Traceback" not in shown
    await refusal_shown(admin_bot, fake_bot_api)


FIXTURES = Path(__file__).parents[1] / "flows" / "fixtures"


async def test_an_unsafe_upload_made_to_share_a_safe_ones_checksum_is_still_refused(
    admin_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    """A version's short checksum (12 hex digits) can be made to collide in minutes: the
    unsafe file sends STOP and LATER clients on to the aromatic oils, the safe one is the
    shipped flow; both were made to share a checksum. The safe one passing first must not
    let the unsafe one through on its proof."""
    from flows import checksum

    safe = (FIXTURES / "collision_safe.yaml").read_text()
    unsafe = (FIXTURES / "collision_unsafe.yaml").read_text()
    assert safe != unsafe and checksum(safe) == checksum(unsafe)
    await upload(fake_bot_api, ADMIN, safe)
    admin = Person(fake_bot_api, ADMIN)
    await admin.press("Publish")
    assert "Published as version 2" in admin.last
    await upload(fake_bot_api, ADMIN, unsafe)
    shown = "\n".join(texts(fake_bot_api, ADMIN)[-3:])
    assert "failed its check and cannot be published" in shown
    assert "after the outcome STOP the client reaches this question" in shown
    async with admin_bot.sessionmaker() as session:
        versions = await list_flow_versions(session=session, flow_name="intake")
        active = await get_active_flow_version(session=session, flow_name="intake")
    assert [v.number for v in versions] == [2, 1], "nothing more was stored"
    assert active is not None and active.yaml == safe
    # and a client who reports cancer is not offered the oils
    person = Person(fake_bot_api, 3101)
    await person.say("/start")
    await person.walk({"chronic": ("oncology",)}, ["welcome", "emergency", "conditions", "acute"])
    assert "aromatic oils" not in "\n".join(person.shown).lower()


async def test_publish_takes_only_an_upload_that_is_waiting(
    admin_bot: RunningBot, fake_bot_api: FakeBotAPI
) -> None:
    """A Publish press carries a version number: forged or stale, it must neither activate
    a discarded upload nor rewrite an earlier version's history entry (going back is a
    rollback, which records a new version)."""
    api = fake_bot_api
    await upload(api, ADMIN, edited("reworded"))
    message_id, data = api.find_button(ADMIN, "Discard")
    api.user_callback(ADMIN, message_id, data)
    await api.wait_for("answerCallbackQuery", timeout=20)
    await api.wait_idle(quiet=0.2, timeout=20)
    discarded = int(data.split(":")[1])
    async with admin_bot.sessionmaker() as session:
        before = {
            v.number: (v.note, v.author, v.active)
            for v in await list_flow_versions(session=session, flow_name="intake")
        }
    for number in (discarded, 1):
        api.user_callback(ADMIN, message_id, f"P:{number}", check_button=False)
        await api.wait_for("answerCallbackQuery", timeout=20)
        await api.wait_idle(quiet=0.2, timeout=20)
        assert "no longer waiting for Publish" in texts(api, ADMIN)[-1] or any(
            "no longer waiting for Publish" in (c.params.get("text") or "")
            for c in api.calls_of("editMessageText")
        )
    async with admin_bot.sessionmaker() as session:
        after = {
            v.number: (v.note, v.author, v.active)
            for v in await list_flow_versions(session=session, flow_name="intake")
        }
        active = await get_active_flow_version(session=session, flow_name="intake")
    assert after == before, "no version was activated or rewritten"
    assert active is not None and active.number == 1

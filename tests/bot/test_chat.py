"""The terminal chat as a user runs it: ``intake-bot chat``, typed answers, a real database."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from flows import Flow, t
from storage import get_request, make_engine, make_sessionmaker
from tests.bot.people import shown_flow
from tests.cli import intake_bot
from tests.dbs import fresh_database
from tests.factories import DEFAULT_ANSWERS, intake_flow

Plan = dict[str, str | tuple[str, ...]]


def typed_lines(flow: Flow, lang: str, plan: Plan, path: list[str]) -> str:
    """What a person types at each question of ``path``: labels of the chosen answers."""
    answers = {**DEFAULT_ANSWERS, **plan}
    lines: list[str] = []
    for node_id in path:
        node = flow.nodes[node_id]
        value = answers.get(node_id)
        if node.kind == "info":
            lines.append(t("engine.continue", lang))  # type: ignore[arg-type]
        elif node.kind == "confirm":
            lines.append("1")
        elif node.kind == "checklist":
            ticks = value if isinstance(value, tuple) else (value,)
            labels = {o.id: o.label.get(lang) for o in node.options}  # type: ignore[attr-defined]
            lines += [labels[x] for x in ticks] + [t("engine.done", lang)]  # type: ignore[arg-type]
        elif node.kind in ("choice", "yesno"):
            labels = {o.id: o.label.get(lang) for o in node.options}  # type: ignore[attr-defined]
            lines.append(labels[str(value)])
        else:
            lines.append(str(value))
    return "\n".join(lines) + "\n"


COMMON = ["welcome", "emergency", "conditions"]
SCREEN = ["acute", "chronic", "fracture"]
CONTACT = ["consent", "name", "phone", "call_time", "confirm"]

CASES = {
    "OK": ({"conditions": ("none",)}, [*COMMON, *SCREEN, "oils", *CONTACT]),
    "CLEAR": ({"conditions": ("back_pain",)}, [*COMMON, *SCREEN, "oils", *CONTACT]),
    "LATER": (
        {"conditions": ("sciatica",), "sciatica_phase": "flare"},
        [*COMMON, "sciatica_phase", "prescription", *SCREEN, "offer_call", *CONTACT],
    ),
    "STOP": ({"acute": ("wounds",)}, [*COMMON, *SCREEN, "offer_call", *CONTACT]),
    "EMERGENCY": ({"emergency": ("chest_pain",)}, ["welcome", "emergency"]),
}


#: The line the chat prints when a request is saved, in each language.
SAVED = {"en": r"✔ Request #(\d+) saved\.", "ru": r"✔ Заявка №(\d+) сохранена\."}


def run_chat(lang: str, url: str, text: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``intake-bot chat --lang LANG`` typing ``text``, in this process (counted in coverage)."""
    return intake_bot("chat", "--lang", lang, input=text, env={"DATABASE_URL": url}, cwd=cwd)


@pytest.mark.parametrize("lang", ["ru", "en"])
@pytest.mark.parametrize("outcome", list(CASES))
async def test_chat_through_each_outcome_saves_the_request(
    outcome: str, lang: str, tmp_path: Path
) -> None:
    plan, path = CASES[outcome]
    url = f"sqlite:///{tmp_path / 'data' / 'intake.db'}"
    result = run_chat(lang, url, typed_lines(shown_flow(), lang, plan, path), tmp_path)
    assert result.returncode == 0, result.stderr
    found = re.search(SAVED[lang], result.stdout)
    assert found, result.stdout[-2000:]
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            request = await get_request(session=session, request_id=int(found.group(1)))
    finally:
        await engine.dispose()
    assert request is not None
    assert request.outcome == outcome
    assert request.language == lang
    assert request.status == "new"
    assert request.flow_name == "intake" and request.flow_version == intake_flow().version
    if outcome == "EMERGENCY":
        assert "112" in result.stdout and request.phone is None
    else:
        assert request.phone == "+79123456789"
        assert request.name == "Анна"
        # the closing text gives the center's phone and hours from the settings
        assert "+7 (495) 085-15-13" in result.stdout and "9:00–21:00" in result.stdout
    assert "{phone}" not in result.stdout and "{hours}" not in result.stdout


async def test_chat_on_postgresql(tmp_path: Path) -> None:
    plan, path = CASES["CLEAR"]
    async with fresh_database("postgresql", tmp_path) as url:
        result = run_chat("en", url, typed_lines(shown_flow(), "en", plan, path), tmp_path)
        assert result.returncode == 0, result.stderr
        assert re.search(r"Request #1 saved", result.stdout), result.stdout[-1500:]


def test_chat_answers_bad_input_politely_and_quits_cleanly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    lines = "Start the questions\n99\nbanana\n\nback\nrestart\nquit\n"
    result = run_chat("en", url, lines, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "There is no such number." in result.stdout
    assert "Please choose an answer" in result.stdout
    assert "No request was saved." in result.stdout
    assert "Traceback" not in result.stderr


def test_the_russian_chat_speaks_russian(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    plan, path = CASES["OK"]
    typed = typed_lines(shown_flow(), "ru", plan, path) + "заново\n99\nвыход\n"
    result = run_chat("ru", url, typed, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Команды: назад (back), заново (restart), выход (quit)." in result.stdout
    assert re.search(SAVED["ru"], result.stdout)
    assert "! Нет такого номера." in result.stdout
    assert "Сохранённые заявки: №1." in result.stdout
    assert "Request #" not in result.stdout and "There is no such number" not in result.stdout


async def test_red_flags_of_a_saved_request_do_not_reach_the_next_one_in_the_chat(
    tmp_path: Path,
) -> None:
    """Regression: "restart" after a saved request carried the old red flags along."""
    url = f"sqlite:///{tmp_path / 'data' / 'intake.db'}"
    flow = shown_flow()
    stop_plan, stop_path = CASES["STOP"]
    ok_plan, ok_path = CASES["OK"]
    typed = (
        typed_lines(flow, "en", stop_plan, stop_path)
        + "restart\n"
        + typed_lines(flow, "en", ok_plan, ok_path)
    )
    result = run_chat("en", url, typed, tmp_path)
    assert result.returncode == 0, result.stderr
    ids = [int(i) for i in re.findall(SAVED["en"], result.stdout)]
    assert len(ids) == 2, result.stdout[-2000:]
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            first = await get_request(session=session, request_id=ids[0])
            second = await get_request(session=session, request_id=ids[1])
    finally:
        await engine.dispose()
    assert first is not None and second is not None
    assert first.outcome == "STOP" and first.facts["contraindication"]
    assert second.outcome == "OK"
    assert (second.red_flag_changed, second.withdrawn_red_flags) == (False, [])
    assert "contraindication" not in second.facts


def test_chat_refuses_to_start_on_an_unsafe_flow(tmp_path: Path) -> None:
    from tests.flows.test_checker import variant

    def offer_oils_after_stop(d: Any) -> None:
        d["nodes"]["triage"]["next"][0]["when"]["in"] = ["OK", "CLEAR", "STOP"]

    broken = variant(tmp_path, offer_oils_after_stop)
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "FLOW_FILE": str(broken)}
    result = intake_bot("chat", input="", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "refusing to start" in result.stderr
    assert "after the outcome STOP the client reaches this question" in result.stderr

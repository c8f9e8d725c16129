"""The checker: passes the shipped flow, refuses each flow broken or attacked on purpose.

The attacks (``tests/flows/attacks.py``) are what a careless or hostile admin could write;
each must be refused, for the right reason, in words an admin can act on.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.checking import FlowChecker
from bot.files import check_file
from bot.files import load_flow_file as load_flow
from flows import POLICY, check_text, load_flow_text
from flows.errors import FlowError
from flows.lint import booking_words, diagnosis_claims, medicine_names
from tests.cli import intake_bot
from tests.factories import INTAKE_PATH
from tests.flows.attacks import ATTACKS, Attack, edited, option, rule

FIXTURES = Path(__file__).parent / "fixtures"
ARTICLE = " ".join((INTAKE_PATH.parent / "massage-article.txt").read_text().split())


def variant(tmp_path: Path, edit: Callable[[Any], None], name: str = "intake.yaml") -> Path:
    """Write the shipped flow, changed by ``edit``."""
    out = tmp_path / name
    out.write_text(edited(edit), encoding="utf-8")
    return out


def drop_rule(data: Any, rule_id: str) -> None:
    data["rules"].remove(rule(data, rule_id))


def messages(path: Path) -> str:
    report = check_file(path)
    assert not report.ok
    return "\n".join(str(p) for p in report.problems)


def test_the_shipped_flow_passes_with_a_proof() -> None:
    report = check_text(INTAKE_PATH.read_text())
    assert report.ok, report.render()
    assert report.states > 1000 and report.paths > report.states
    assert report.combinations > 10**6
    assert set(report.outcomes) == {"EMERGENCY", "STOP", "LATER", "CLEAR", "OK"}
    assert "OK: the flow is valid and safe." in report.render()


def test_the_shipped_flow_passes_in_the_bounded_worker() -> None:
    text = INTAKE_PATH.read_text() + "\n# a copy, so that no cached proof is reused\n"
    report = FlowChecker().check_blocking(text, "copy of intake.yaml")
    assert report.ok, report.render()


def test_an_unchanged_copy_passes(tmp_path: Path) -> None:
    assert check_file(variant(tmp_path, lambda d: None)).ok


# --- what a hostile or careless admin could write --------------------------------------


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_every_attack_is_refused_with_a_readable_reason(attack: Attack, tmp_path: Path) -> None:
    report = check_file(variant(tmp_path, attack.edit))
    text = "\n".join(str(p) for p in report.problems)
    assert not report.ok
    assert attack.says in text
    assert "Traceback" not in text


def test_a_refused_source_document_is_never_read_back(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("Each course must be supervised by a physician. TOKEN=12345:abcdef")

    def point_at_secret(d: Any) -> None:
        d["source_document"] = str(secret)
        rule(d, "ok_wellbeing")["source"] = "TOKEN=12345:abcdef is the token."

    text = messages(variant(tmp_path, point_at_secret))
    assert "the only clinical source a flow may quote is the shipped article" in text
    assert "12345" not in text and "abcdef" not in text


def test_a_house_rule_to_clear_is_allowed_but_screening_stays() -> None:
    """An admin may send more clients to a doctor; the screening still runs first."""

    def doctor_first(d: Any) -> None:
        d["rules"].append(
            {
                "id": "doctor_first",
                "level": "CLEAR",
                "when": {"fact": "goal", "in": ["wellbeing"]},
                "reason": {"ru": "Сначала врач", "en": "A doctor first"},
                "source": "Each course must be supervised by a physician.",
            }
        )

    report = check_text(edited(doctor_first))
    assert report.ok, report.render()


def test_the_policy_owns_labels_facts_and_protective_texts() -> None:
    """Whatever the admin's file says, the composed flow carries the policy's own."""
    flow = load_flow_text(INTAKE_PATH.read_text())
    for block in POLICY.blocks:
        for node_id, node in block.nodes:
            mine = flow.nodes[node_id]
            assert getattr(mine, "options", None) == getattr(node, "options", None)
            assert mine.text == node.text
    for level, text in POLICY.outcomes.items():
        assert flow.outcomes[level].title == text.title
        assert flow.outcomes[level].text.en.startswith(text.text.en.strip())
    emergency = flow.outcomes["EMERGENCY"].text.en + flow.nodes["emergency_stop"].text.en
    assert "112" in emergency and "103" in emergency and "Do not wait for our call" in emergency
    assert POLICY.disclaimer is not None
    for outcome in flow.outcomes.values():
        assert outcome.text.en.endswith(POLICY.disclaimer.en)
        assert outcome.text.ru.endswith(POLICY.disclaimer.ru)


def test_every_policy_item_quotes_the_article_and_has_the_articles_level() -> None:
    by_fact = {f"{i.fact[0]}={i.fact[1]}": i for i in POLICY.items}
    for item in POLICY.items:
        assert " ".join(item.source.split()) in ARTICLE, item.fact
        value = item.fact[1]
        assert value in POLICY.vocabulary[item.fact[0]]
    # what the article lists as a contraindication is STOP unless it qualifies it
    for fact in (
        "contraindication=oncology",
        "contraindication=heart",
        "contraindication=clotting",
        "contraindication=hiv",
        "contraindication=mental",
        "contraindication=high_pressure",
        "contraindication=skin",
        "contraindication=lymphadenitis",
        "contraindication=wounds",
        "contraindication=infectious",
        "hernia_stage=pain_now",
        "scoliosis_degree=4",
    ):
        assert by_fact[fact].min_level == "STOP", fact
    for fact in (
        "contraindication=infection",
        "contraindication=intoxication",
        "contraindication=exacerbation",
        "radiculitis_phase=exacerbation",
        "sciatica_phase=flare",
    ):
        assert by_fact[fact].min_level == "LATER", fact
    # a doctor decides: "may be prohibited ... any chronic diseases"; pregnancy (the article
    # is silent on massage in pregnancy)
    for fact in (
        "caution=recent_fracture",
        "caution=pregnancy",
        "caution=chronic_disease",
        "prescription=no",
        "prescription=unsure",
    ):
        assert by_fact[fact].min_level == "CLEAR", fact
    assert {i.fact[1] for i in POLICY.items if i.min_level == "EMERGENCY"} == {
        "chest_pain",
        "leg_weakness",
        "bladder_bowel",
        "saddle",
        "trauma",
    }


def test_every_policy_fact_is_recorded_by_a_screening_question() -> None:
    recorded = {
        (k, v)
        for block in POLICY.blocks
        for _, node in block.nodes
        for o in getattr(node, "options", ())
        for k, vs in o.facts.items()
        for v in vs
    }
    assert POLICY.facts <= recorded
    for key, values in POLICY.vocabulary.items():
        assert {(key, v) for v in values} <= recorded, key


def test_the_policys_own_texts_pass_the_lint() -> None:
    flow = load_flow(INTAKE_PATH)
    texts = []
    for block in POLICY.blocks:
        for _, node in block.nodes:
            texts += [node.text.ru, node.text.en]
            texts += [t for o in getattr(node, "options", ()) for t in (o.label.ru, o.label.en)]
    texts += [r.reason.ru for r in POLICY.rules] + [r.reason.en for r in POLICY.rules]
    for text in texts + [o.text.en for o in flow.outcomes.values()]:
        assert medicine_names(text) == [] and diagnosis_claims(text) == [], text


def test_the_lint_folds_spellings_a_hostile_admin_would_try() -> None:
    for text in (
        "Финалгон",
        "F-i-n-a-l-g-o-n",
        "F i n a l g o n",
        "Finalgоn",
        "<b>Фастум</b>-гель",
    ):
        assert medicine_names(text), text
    assert medicine_names("the paring knife") == []
    assert diagnosis_claims("Это не диагноз.") == []
    assert diagnosis_claims("I will diagnose you") and diagnosis_claims("Поставлю вам диагноз")
    assert booking_words("Would you like us to call you?") == []
    assert booking_words("Запишитесь на массаж") and booking_words("Book a session")


# --- bounded checking ----------------------------------------------------------------


def _text(ru: str, en: str) -> dict[str, str]:
    return {"ru": ru, "en": en}


def extra_checklists(questions: int, options: int) -> Callable[[Any], None]:
    """Checklists after the triage, each branching on every one of its answers."""

    def edit(d: Any) -> None:
        d["nodes"]["triage"]["next"][0]["to"] = "extra0"
        for q in range(questions):
            nxt = f"extra{q + 1}" if q + 1 < questions else "oils"
            branches: list[dict[str, Any]] = [
                {"when": {"fact": f"x{q}", "in": [f"v{i}"]}, "to": nxt} for i in range(options)
            ]
            d["nodes"][f"extra{q}"] = {
                "kind": "checklist",
                "text": _text(f"Вопрос {q}", f"Question {q}"),
                "options": [
                    {"id": f"o{i}", "label": _text(f"П{i}", f"O{i}"), "facts": {f"x{q}": f"v{i}"}}
                    for i in range(options)
                ],
                "next": [*branches, {"to": nxt}],
            }

    return edit


def info_chain(length: int) -> Callable[[Any], None]:
    def edit(d: Any) -> None:
        option(d["nodes"]["welcome"], "start")["goto"] = "i0"
        for k in range(length):
            nxt = f"i{k + 1}" if k + 1 < length else "emergency"
            d["nodes"][f"i{k}"] = {
                "kind": "info",
                "text": _text(f"Экран {k}", f"Screen {k}"),
                "next": nxt,
            }

    return edit


@pytest.mark.parametrize(
    ("edit", "name"),
    [
        (extra_checklists(1, 12), "a 12-answer checklist after the triage, branching on it"),
        (extra_checklists(1, 16), "a 16-answer checklist"),
        (extra_checklists(6, 12), "six distinguishable 12-answer checklists"),
    ],
)
def test_a_flow_too_complex_to_prove_is_refused_with_what_to_simplify(
    edit: Callable[[Any], None], name: str
) -> None:
    # a small budget keeps the suite fast; the worker test below uses the real one
    report = check_text(edited(edit), budget=20_000)
    [problem] = report.problems
    assert "too complex to prove safe" in problem.message
    assert "'extra0'" in problem.message and "Simplify" in problem.message


def test_a_runaway_flow_is_refused_by_the_worker_within_its_limits() -> None:
    checker = FlowChecker()
    report = checker.check_blocking(edited(extra_checklists(6, 12)), "six checklists")
    assert not report.ok
    assert "too complex to prove safe" in str(report.problems[0])


def test_a_worker_over_its_time_limit_is_stopped_and_reported() -> None:
    checker = FlowChecker(seconds=0.01)
    report = checker.check_blocking(edited(extra_checklists(1, 12)), "slow")
    assert not report.ok
    assert "did not finish within 0.01 seconds" in str(report.problems[0])


def test_a_worker_over_its_memory_limit_is_reported_not_crashed() -> None:
    checker = FlowChecker(memory_bytes=64 << 20)
    report = checker.check_blocking(edited(extra_checklists(1, 3)), "small memory")
    assert not report.ok
    assert "too complex to prove safe" in str(report.problems[0])


def _grandchildren() -> set[int]:
    """Processes whose parent is a child of this one (the checks, forked by the server)."""

    def parent(pid: str) -> int | None:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("PPid:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    pids = [pid for pid in os.listdir("/proc") if pid.isdigit()]
    children = {int(pid) for pid in pids if parent(pid) == os.getpid()}
    return {int(pid) for pid in pids if parent(pid) in children}


@pytest.mark.parametrize(
    ("sig", "says"),
    [
        (signal.SIGTERM, "its process was stopped by SIGTERM. Nothing was published"),
        (signal.SIGKILL, "too complex to prove safe: its check ran out of memory, most likely"),
    ],
)
def test_a_check_process_killed_midway_is_reported_as_what_happened(
    sig: signal.Signals, says: str
) -> None:
    # an operator's kill, or the kernel's out-of-memory killer, ends the check process
    # before it reports: the flow is not accepted, and the admin is told which it was
    text = INTAKE_PATH.read_text() + f"\n# killed by {sig.name}\n"
    before = _grandchildren()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(FlowChecker().check_blocking, text, "killed")
        while not (started := _grandchildren() - before):
            assert not running.done(), "the check finished before it could be killed"
        for pid in started:
            os.kill(pid, sig)
        report = running.result()
    assert not report.ok
    [problem] = report.problems
    assert says in problem.message
    # the sound flow is not refused for good: checked again, it passes
    assert FlowChecker().check_blocking(text, "again").ok


async def test_concurrent_checks_of_the_same_content_share_one_run() -> None:
    import asyncio

    checker = FlowChecker()
    text = INTAKE_PATH.read_text() + "\n# shared check\n"
    tasks = [asyncio.create_task(checker.check(text, f"upload {i}")) for i in range(5)]
    await asyncio.sleep(0)  # every request has started and is waiting
    assert len(checker._running) == 1, "one worker for the five requests"
    reports = await asyncio.gather(*tasks)
    assert all(r is reports[0] for r in reports)
    assert reports[0].ok


def test_a_long_chain_of_screens_is_walked_without_recursion() -> None:
    report = check_text(edited(info_chain(400)))
    assert report.ok, report.render()


def test_yaml_aliases_are_refused_before_they_can_expand() -> None:
    levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefg", "bcdefgh", strict=True):
        levels.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    [problem] = check_text("\n".join(levels)).problems
    assert "anchors and aliases" in problem.message and problem.line == 1


def test_an_oversized_file_and_odd_bytes_are_refused_readably() -> None:
    [big] = check_text("#" * 300_000).problems
    assert "too large" in big.message
    [odd] = check_text("name: x\n\x00\x01").problems
    assert "not valid YAML" in odd.message


# --- structure -----------------------------------------------------------------------


def test_a_dangling_transition_fails(tmp_path: Path) -> None:
    def dangle(d: Any) -> None:
        d["nodes"]["oil_info"]["next"] = "consentt"

    text = messages(variant(tmp_path, dangle))
    assert "question 'oil_info': leads to 'consentt', which does not exist" in text


def test_a_missing_translation_fails_with_file_line_and_node(tmp_path: Path) -> None:
    def untranslate(d: Any) -> None:
        del d["nodes"]["consent"]["text"]["en"]

    path = variant(tmp_path, untranslate)
    [problem] = check_file(path).problems
    assert problem.node == "consent"
    assert "the English (en) translation is missing" in problem.message
    assert problem.file == str(path)
    lines = path.read_text().splitlines()
    assert problem.line is not None
    assert lines[problem.line - 1].strip().startswith("text:")
    assert "consent:" in "\n".join(lines[: problem.line])


def test_a_locked_part_is_named_with_its_line(tmp_path: Path) -> None:
    def own_fracture(d: Any) -> None:
        d["nodes"]["fracture"] = {"kind": "info", "text": _text("Перелом", "Fracture"), "next": "x"}

    path = variant(tmp_path, own_fracture)
    problems = [p for p in check_file(path).problems if p.node == "fracture"]
    assert problems and "belongs to the screening core" in problems[0].message
    assert problems[0].line is not None
    assert path.read_text().splitlines()[problems[0].line - 1].strip() == "fracture:"


def test_an_unreachable_node_fails(tmp_path: Path) -> None:
    def orphan(d: Any) -> None:
        option(d["nodes"]["welcome"], "types")["goto"] = "emergency"

    text = messages(variant(tmp_path, orphan))
    assert "question 'massage_types': unreachable: no question leads here" in text


def test_a_question_no_answers_can_reach_fails(tmp_path: Path) -> None:
    def guard(d: Any) -> None:
        d["nodes"]["triage"]["next"][0]["when"] = {"all": [
            {"fact": "outcome", "in": ["OK"]}, {"fact": "outcome", "in": ["STOP"]}
        ]}  # fmt: skip

    text = messages(variant(tmp_path, guard))
    assert "question 'oils': no combination of answers ever reaches" in text


def test_an_ok_rule_with_not_is_fine_but_a_clear_rule_with_not_fails(tmp_path: Path) -> None:
    def negate(d: Any) -> None:
        d["rules"].append(
            {
                "id": "not_relaxing",
                "level": "CLEAR",
                "when": {"not": {"fact": "goal", "in": ["wellbeing"]}},
                "reason": _text("Врач", "Doctor"),
                "source": "Each course must be supervised by a physician.",
            }
        )

    text = messages(variant(tmp_path, negate))
    assert "rule not_relaxing: a CLEAR rule must be built from answers given" in text


def test_a_loop_fails(tmp_path: Path) -> None:
    def loop(d: Any) -> None:
        d["nodes"]["oil_info"]["next"] = "oils"

    assert "a loop:" in messages(variant(tmp_path, loop))


def test_a_dead_end_after_an_outcome_fails(tmp_path: Path) -> None:
    def dead(d: Any) -> None:
        # the default branch now only catches STOP: a LATER outcome has nowhere to go
        d["nodes"]["triage"]["next"][-1]["when"] = {"fact": "outcome", "in": ["STOP"]}

    assert "dead end after the outcome LATER" in messages(variant(tmp_path, dead))


def test_too_long_text_and_broken_html_fail(tmp_path: Path) -> None:
    def spoil(d: Any) -> None:
        d["nodes"]["oil_info"]["text"]["en"] = "x" * 5000
        d["nodes"]["name"]["text"]["ru"] = "<b>Как вас зовут?"
        d["nodes"]["phone"]["text"]["en"] = "Phone & number"

    text = messages(variant(tmp_path, spoil))
    assert "question 'oil_info': text (en) may be 5200 characters" in text
    assert "question 'name': text (ru): the tag <b> is never closed" in text
    assert "question 'phone': text (en): a bare '&' must be written as &amp;" in text


def test_an_id_too_long_for_button_data_is_refused_readably(tmp_path: Path) -> None:
    def long_id(d: Any) -> None:
        d["nodes"]["oils"]["options"][0]["id"] = "y" * 25

    text = messages(variant(tmp_path, long_id))
    assert "is not a valid id" in text and "at most 24 characters" in text


@pytest.mark.parametrize(
    ("fixture", "line", "node", "words"),
    [
        ("bad_yaml.yaml", 7, None, "this is not valid YAML"),
        ("unknown_kind.yaml", 9, "hello", "unknown kind 'question'"),
        ("typo_key.yaml", 15, "hello", "unknown key 'nxt' (check the spelling)"),
    ],
)
def test_load_errors_name_file_line_and_node(
    fixture: str, line: int, node: str | None, words: str
) -> None:
    with pytest.raises(FlowError) as caught:
        load_flow(FIXTURES / fixture)
    problem = caught.value.problems[0]
    assert problem.file.endswith(fixture)
    assert problem.line == line
    assert problem.node == node
    assert words in problem.message


def test_the_cli_exits_zero_on_the_shipped_flow_and_one_on_an_attack(tmp_path: Path) -> None:
    ok = intake_bot("flows", "check")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Safety proof: explored" in ok.stdout
    # the worker's own peak memory (it is no child of the command: a forkserver starts it)
    peak = re.search(r"in a worker process \(peak memory (\d+) MB\)", ok.stdout)
    assert peak is not None and 20 <= int(peak.group(1)) <= 1024, ok.stdout
    lowered = next(a for a in ATTACKS if a.name == "oncology lowered from STOP to LATER")
    broken = variant(tmp_path, lowered.edit)
    bad = intake_bot("flows", "check", str(broken))
    assert bad.returncode == 1
    assert "FAILED" in bad.stdout and lowered.says in bad.stdout


def test_a_fixture_copy_keeps_its_article(tmp_path: Path) -> None:
    """A flow file in any folder is checked against the shipped article, not a neighbour."""
    fake = tmp_path / "massage-article.txt"
    fake.write_text("Massage cures everything, says nobody.")
    shutil.copy(INTAKE_PATH, tmp_path / "intake.yaml")

    def invent(d: Any) -> None:
        rule(d, "ok_wellbeing")["source"] = "Massage cures everything, says nobody."

    (tmp_path / "intake.yaml").write_text(edited(invent))
    assert "is not a quote of the article" in messages(tmp_path / "intake.yaml")


@pytest.mark.parametrize("depth", [45, 20_000])
def test_a_deeply_nested_file_is_refused_at_its_line_at_once(depth: int) -> None:
    """Thousands of nested brackets made the YAML parser recurse until it failed, or use
    up the check's time; such a file is refused with its line before it is parsed."""
    text = INTAKE_PATH.read_text() + "\nextra: " + "[" * depth + "]" * depth + "\n"
    line = text.count("\n")
    report = check_text(text, origin="deep.yaml")
    assert not report.ok
    [problem] = report.problems
    assert f"deep.yaml, line {line}: the file nests {depth} levels deep" in str(problem)

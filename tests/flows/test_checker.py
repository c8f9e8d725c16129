"""The checker: passes the shipped flow, fails each flow broken on purpose, for the right reason."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from flows import check_file, load_flow
from flows.errors import FlowError
from tests.factories import INTAKE_PATH

FIXTURES = Path(__file__).parent / "fixtures"


def variant(tmp_path: Path, edit: Callable[[Any], None], name: str = "intake.yaml") -> Path:
    """Write the shipped flow, changed by ``edit``, next to a copy of the article."""
    yaml = YAML(typ="rt")
    yaml.width = 4096
    data = yaml.load(INTAKE_PATH.read_text())
    edit(data)
    out = tmp_path / name
    with out.open("w") as fh:
        yaml.dump(data, fh)
    shutil.copy(INTAKE_PATH.parent / "massage-article.txt", tmp_path / "massage-article.txt")
    return out


def rule(data: Any, rule_id: str) -> Any:
    return next(r for r in data["rules"] if r["id"] == rule_id)


def drop_rule(data: Any, rule_id: str) -> None:
    data["rules"].remove(rule(data, rule_id))


def messages(path: Path) -> str:
    report = check_file(path)
    assert not report.ok
    return "\n".join(str(p) for p in report.problems)


def test_the_shipped_flow_passes_with_a_proof() -> None:
    report = check_file(INTAKE_PATH)
    assert report.ok, report.render()
    assert report.states > 1000 and report.paths > report.states
    assert report.combinations > 10**6
    assert set(report.outcomes) == {"EMERGENCY", "STOP", "LATER", "CLEAR", "OK"}
    assert "OK: the flow is valid and safe." in report.render()


def test_an_unchanged_copy_passes(tmp_path: Path) -> None:
    assert check_file(variant(tmp_path, lambda d: None)).ok


def test_a_contraindication_routed_to_ok_fails(tmp_path: Path) -> None:
    # Without its STOP rule, oncology plus "I want to relax" would get a massage suggestion.
    text = messages(variant(tmp_path, lambda d: drop_rule(d, "c_oncology")))
    assert "SAFETY: the answer contraindication=oncology must lead to LATER or stricter" in text
    assert "the outcome can be OK" in text


def test_a_contraindication_weakened_to_a_doctor_check_fails(tmp_path: Path) -> None:
    def weaken(d: Any) -> None:
        rule(d, "c_fever")["level"] = "CLEAR"

    assert "contraindication=fever_infection must lead to LATER" in messages(
        variant(tmp_path, weaken)
    )


def test_a_dangling_transition_fails(tmp_path: Path) -> None:
    def dangle(d: Any) -> None:
        d["nodes"]["fracture"]["next"] = "triagee"

    text = messages(variant(tmp_path, dangle))
    assert "question 'fracture': leads to 'triagee', which does not exist" in text


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


def test_an_unreachable_node_fails(tmp_path: Path) -> None:
    def orphan(d: Any) -> None:
        welcome = d["nodes"]["welcome"]
        next(o for o in welcome["options"] if o["id"] == "types")["goto"] = "emergency"

    text = messages(variant(tmp_path, orphan))
    assert "question 'massage_types': unreachable: no question leads here" in text


def test_a_question_no_answers_can_reach_fails(tmp_path: Path) -> None:
    def guard(d: Any) -> None:
        d["nodes"]["conditions"]["next"][0]["when"] = {"all": [
            {"fact": "condition", "in": ["scoliosis"]}, {"fact": "goal", "in": ["wellbeing"]}
        ]}  # fmt: skip

    text = messages(variant(tmp_path, guard))
    assert "question 'scoliosis_degree': no combination of answers ever reaches" in text


def test_deleting_a_policy_option_opens_no_way_to_ok(tmp_path: Path) -> None:
    def delete_hiv(d: Any) -> None:
        chronic = d["nodes"]["chronic"]["options"]
        chronic.remove(next(o for o in chronic if o["id"] == "hiv"))
        drop_rule(d, "c_hiv")

    text = messages(variant(tmp_path, delete_hiv))
    assert "never asks about contraindication=hiv" in text


def test_retagging_an_option_opens_no_way_to_ok(tmp_path: Path) -> None:
    def retag(d: Any) -> None:
        acute = d["nodes"]["acute"]["options"]
        next(o for o in acute if o["id"] == "intoxication")["facts"] = {"mood": "relaxed"}

    text = messages(variant(tmp_path, retag))
    assert "rule c_intoxication looks for contraindication=intoxication, which no answer" in text

    def retag_and_drop_rule(d: Any) -> None:
        retag(d)
        drop_rule(d, "c_intoxication")

    text = messages(variant(tmp_path, retag_and_drop_rule))
    assert "never asks about contraindication=intoxication" in text


def test_an_emergency_that_does_not_stop_the_questionnaire_fails(tmp_path: Path) -> None:
    text = messages(variant(tmp_path, lambda d: drop_rule(d, "em_legs")))
    assert "emergency sign(s) emergency=leg_weakness do not stop the questionnaire" in text


def test_a_protective_rule_built_on_a_missing_answer_fails(tmp_path: Path) -> None:
    def negate(d: Any) -> None:
        rule(d, "c_hiv")["when"] = {"not": {"fact": "contraindication", "in": ["none_of_these"]}}

    text = messages(variant(tmp_path, negate))
    assert "rule c_hiv: a STOP rule must be built from answers given" in text
    assert "rule c_hiv looks for contraindication=none_of_these, which no answer sets" in text


def test_a_rule_source_that_is_not_in_the_article_fails(tmp_path: Path) -> None:
    def invent(d: Any) -> None:
        rule(d, "c_hiv")["source"] = "Massage cures everything, says nobody."

    assert "rule c_hiv: its source is not a quote of massage-article.txt" in messages(
        variant(tmp_path, invent)
    )


def test_a_loop_fails(tmp_path: Path) -> None:
    def loop(d: Any) -> None:
        d["nodes"]["fracture"]["next"] = "emergency"

    text = messages(variant(tmp_path, loop))
    assert "a loop:" in text


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
        d["nodes"]["fracture"]["options"][0]["id"] = "y" * 25

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


def test_the_cli_exits_zero_on_the_shipped_flow_and_one_on_a_broken_one(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "bot", "flows", "check"]
    ok = subprocess.run(cli, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Safety proof: explored" in ok.stdout
    broken = variant(tmp_path, lambda d: drop_rule(d, "c_oncology"))
    bad = subprocess.run([*cli, str(broken)], capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert "FAILED" in bad.stdout and "contraindication=oncology" in bad.stdout

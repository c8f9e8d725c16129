"""Clinical scenarios from the article: answers in, outcome and reasons out.

Each row quotes the sentence of the article it checks; the test also verifies
that quote really is in the shipped article, so the table cannot drift from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tests.factories import INTAKE_PATH, Client

ARTICLE = " ".join((INTAKE_PATH.parent / "massage-article.txt").read_text().split())


@dataclass(frozen=True)
class Scenario:
    name: str
    cites: str
    answers: dict[str, str | tuple[str, ...]]
    outcome: str
    rules: tuple[str, ...] = ()
    #: Words that must appear in the outcome text the client sees (English).
    says: tuple[str, ...] = field(default=())


SCENARIOS = [
    Scenario(
        "wellbeing, no diagnosis: classical massage",
        "It is the most common and in demand.",
        {},
        "OK",
        ("ok_wellbeing",),
        ("classical",),
    ),
    Scenario(
        "osteochondrosis: at least 10 sessions",
        "The minimum course duration is 10 sessions.",
        {"conditions": ("osteochondrosis",), "osteo_region": "lumbosacral"},
        "OK",
        ("ok_osteochondrosis",),
        ("10 sessions",),
    ),
    Scenario(
        "sciatica or lumbago: 15 sessions",
        "To record the results obtained and prevent it, it is recommended to do 15 sessions.",
        {"conditions": ("sciatica",)},
        "OK",
        ("ok_sciatica",),
        ("15 sessions",),
    ),
    Scenario(
        "radiculitis without exacerbation: light start, 5-10 minutes",
        "The duration of the massage is 5–10 minutes.",
        {"conditions": ("radiculitis",), "radiculitis_phase": "remission"},
        "OK",
        ("ok_radiculitis",),
        ("5", "10 minutes"),
    ),
    Scenario(
        "radiculitis in exacerbation: not now",
        "The course of massage is carried out during the absence of exacerbations.",
        {"conditions": ("radiculitis",), "radiculitis_phase": "exacerbation"},
        "LATER",
        ("radiculitis_exacerbation",),
    ),
    Scenario(
        "hernia in recovery: only adjacent tissues",
        "Only the tissues adjacent to the hernia are massaged.",
        {"conditions": ("hernia",), "hernia_stage": "recovery"},
        "OK",
        ("ok_hernia_recovery",),
        ("highly qualified",),
    ),
    Scenario(
        "hernia with pain now: contraindicated",
        "If there is pain, it is contraindicated because it can cause back spasms.",
        {"conditions": ("hernia",), "hernia_stage": "pain_now"},
        "STOP",
        ("hernia_pain_now",),
        ("spasms", "see a doctor"),
    ),
    Scenario(
        "hernia, stage unknown: a doctor first",
        "Back massage should be performed during the recovery stage.",
        {"conditions": ("hernia",), "hernia_stage": "unknown"},
        "CLEAR",
        ("hernia_unknown",),
    ),
    Scenario(
        "scoliosis grade 2: highly qualified specialist",
        "It must be done by a highly qualified specialist, because incorrect actions can "
        "only worsen the situation.",
        {"conditions": ("scoliosis",), "scoliosis_degree": "d2"},
        "OK",
        ("ok_scoliosis",),
    ),
    Scenario(
        "scoliosis grade 4 excludes massage",
        "It is worth noting that the presence of fourth degree scoliosis excludes the "
        "possibility of massage.",
        {"conditions": ("scoliosis",), "scoliosis_degree": "d4"},
        "STOP",
        ("scoliosis_4",),
    ),
    Scenario(
        "scoliosis, grade unknown: a doctor first",
        "It is worth noting that the presence of fourth degree scoliosis excludes the "
        "possibility of massage.",
        {"conditions": ("scoliosis",), "scoliosis_degree": "unknown"},
        "CLEAR",
        ("scoliosis_unknown",),
    ),
    Scenario(
        "neck pain not examined: a doctor first",
        "Before a massage, you need to consult a doctor to make sure that there is no "
        "intervertebral hernia or subluxation of the vertebrae.",
        {"conditions": ("neck_pain",), "neck_checked": "no"},
        "CLEAR",
        ("neck_checked_no",),
    ),
    Scenario(
        "neck pain examined by a doctor: neck and collar massage",
        "Massage is an important component of treatment.",
        {"conditions": ("neck_pain",), "neck_checked": "yes"},
        "OK",
        ("ok_neck",),
    ),
    Scenario(
        "acute infection with fever: not now",
        "Acute infections that are accompanied by high body temperature.",
        {"acute": ("fever_infection",)},
        "LATER",
        ("c_infection",),
    ),
    Scenario(
        "skin disease at the massage site",
        "Skin diseases of any origin, for example, hemangioma, bacterial, fungal and other skin "
        "infections, etc.",
        {"conditions": ("osteochondrosis",), "osteo_region": "thoracic", "acute": ("skin",)},
        "STOP",
        ("c_skin",),
    ),
    Scenario(
        "open wounds or burns on the back: see a doctor",
        "Bleeding and the presence of open wounds, including burns, especially in the back.",
        {"acute": ("wounds",)},
        "STOP",
        ("c_wounds",),
    ),
    Scenario(
        "purulent lymphadenitis",
        "Purulent lymphadenitis.",
        {"acute": ("lymphadenitis",)},
        "STOP",
        ("c_lymphadenitis",),
    ),
    Scenario(
        "oncology",
        "The presence of specific oncological diseases.",
        {"chronic": ("oncology",)},
        "STOP",
        ("c_oncology",),
    ),
    Scenario(
        "severe heart and vessel disease",
        "Severe pathologies of the heart and blood vessels.",
        {"chronic": ("heart",)},
        "STOP",
        ("c_heart",),
    ),
    Scenario(
        "poor blood clotting",
        "Massage is contraindicated for blood diseases that reduce blood clotting.",
        {"chronic": ("clotting",)},
        "STOP",
        ("c_clotting",),
    ),
    Scenario(
        "HIV or AIDS",
        "HIV infection or AIDS in a patient.",
        {"chronic": ("hiv",)},
        "STOP",
        ("c_hiv",),
    ),
    Scenario(
        "mental illness",
        "Mental illnesses.",
        {"chronic": ("mental",)},
        "STOP",
        ("c_mental",),
    ),
    Scenario(
        "high blood pressure",
        "High blood pressure.",
        {"chronic": ("high_pressure",)},
        "STOP",
        ("c_high_pressure",),
    ),
    Scenario(
        "alcohol or drug intoxication: not now",
        "Alcohol or drug intoxication.",
        {"acute": ("intoxication",)},
        "LATER",
        ("c_intoxication",),
    ),
    Scenario(
        "exacerbation of a chronic disease: not now",
        "Conducting a massage session during an exacerbation is contraindicated.",
        {"acute": ("exacerbation",)},
        "LATER",
        ("c_exacerbation",),
    ),
    Scenario(
        "recent back fracture: only after a doctor",
        "They can be massaged only after consultation with a doctor.",
        {
            "conditions": ("osteochondrosis",),
            "osteo_region": "several",
            "neck_checked": "yes",
            "fracture": "yes",
        },
        "CLEAR",
        ("caution_recent_fracture",),
    ),
    Scenario(
        "back pain without a diagnosis: a doctor first (article silent)",
        "But we must remember that there are different reasons for pain.",
        {"conditions": ("back_pain",)},
        "CLEAR",
        ("condition_back_pain",),
    ),
    Scenario(
        "the strongest wins: osteochondrosis with oncology is STOP, not OK",
        "The presence of specific oncological diseases.",
        {
            "conditions": ("osteochondrosis",),
            "osteo_region": "cervical",
            "neck_checked": "yes",
            "chronic": ("oncology",),
        },
        "STOP",
        ("c_oncology",),
    ),
    Scenario(
        "the strongest wins: fever (LATER) over a fracture (CLEAR)",
        "Acute infections that are accompanied by high body temperature.",
        {"acute": ("fever_infection",), "fracture": "yes"},
        "LATER",
        ("c_infection",),
    ),
    Scenario(
        "chest pain now: emergency, not a massage question",
        "Acute cardiovascular failure, for example, recent myocardial infarction, chronic "
        "angina, etc.",
        {"emergency": ("chest_pain",)},
        "EMERGENCY",
        ("em_chest_pain",),
        ("112", "103"),
    ),
    Scenario(
        "severe pain after a fall: emergency",
        "Back massage should be used with caution in patients who have recently broken their back.",
        {"emergency": ("trauma", "bladder_bowel")},
        "EMERGENCY",
        ("em_bladder_bowel", "em_trauma"),
    ),
    Scenario(
        "several OK conditions: one merged suggestion, the longest course",
        "The minimum course duration is 10 sessions.",
        {"conditions": ("osteochondrosis", "sciatica"), "osteo_region": "lumbosacral"},
        "OK",
        ("ok_osteochondrosis", "ok_sciatica"),
        ("15 sessions, the longest of the courses",),
    ),
    Scenario(
        "spine condition without a doctor's prescription: a doctor first",
        "There are the following types of back massage, which can only be prescribed by a doctor:",
        {"conditions": ("osteochondrosis",), "osteo_region": "thoracic", "prescription": "no"},
        "CLEAR",
        ("prescription_no",),
        ("prescribed by a doctor", "doctor's consultation"),
    ),
    Scenario(
        "spine condition, not sure of a prescription: a doctor first",
        "There are the following types of back massage, which can only be prescribed by a doctor:",
        {"conditions": ("hernia",), "hernia_stage": "recovery", "prescription": "unsure"},
        "CLEAR",
        ("prescription_unsure",),
    ),
    Scenario(
        "lumbago in a flare-up: not now",
        "Conducting a massage session during an exacerbation is contraindicated.",
        {"conditions": ("sciatica",), "sciatica_phase": "flare"},
        "LATER",
        ("sciatica_flare",),
    ),
    Scenario(
        "cervical osteochondrosis, neck not examined: a doctor rules out a hernia first",
        "Before a massage, you need to consult a doctor to make sure that there is no "
        "intervertebral hernia or subluxation of the vertebrae.",
        {"conditions": ("osteochondrosis",), "osteo_region": "cervical", "neck_checked": "no"},
        "CLEAR",
        ("neck_checked_no",),
    ),
    Scenario(
        "an infectious disease is asked as the article words it: no massage",
        "Presence of an infectious disease.",
        {"acute": ("infectious",)},
        "STOP",
        ("c_infectious",),
        ("infectious disease",),
    ),
]


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(sc: Scenario) -> None:
    assert " ".join(sc.cites.split()) in ARTICLE, "the cited sentence is in the article"
    client = Client(lang="en")
    client.run(sc.answers)
    [draft] = client.saved
    assert draft.outcome == sc.outcome
    assert set(sc.rules) <= set(draft.rule_ids)
    assert draft.reasons, "every outcome says why"
    shown = "\n".join(client.transcript)
    for word in sc.says:
        assert word in shown
    if sc.outcome == "EMERGENCY":
        assert client.node == "emergency_stop"
        assert draft.fields == {}
    else:
        assert draft.fields["phone"] == "+79123456789"


def test_there_are_at_least_25_scenarios_with_distinct_expectations() -> None:
    assert len(SCENARIOS) >= 25
    assert {s.outcome for s in SCENARIOS} == {"EMERGENCY", "STOP", "LATER", "CLEAR", "OK"}


@pytest.mark.parametrize("lang", ["ru", "en"])
def test_reasons_are_in_the_clients_language(lang: str) -> None:
    client = Client(lang=lang)  # type: ignore[arg-type]
    client.run({"acute": ("fever_infection",)})
    [reason] = client.saved[0].reasons
    cyrillic = any("а" <= ch <= "я" for ch in reason.lower())
    assert cyrillic is (lang == "ru")


def test_the_bot_never_names_a_medicine() -> None:
    policy_text = (INTAKE_PATH.parent / "screening.yaml").read_text()
    for text in (INTAKE_PATH.read_text().lower(), policy_text.lower()):
        for drug in ("fastum", "finalgon", "dolobene", "ketoprofen", "фастум", "финалгон"):
            assert drug not in text


@pytest.mark.parametrize(
    ("option", "cites", "says"),
    [
        (
            "session",
            (
                "Before the session begins, the patient takes a horizontal position, lying on "
                "his stomach, then a special gel is applied to the massaged areas of the body, "
                "which warms up the skin and ensures gliding.",
                "The duration of each stage is two to three minutes.",
                "The average session duration is approximately 15 minutes.",
                "Despite the fact that the subject of the treatment procedure is the spine, the "
                "line of the spinal column should not be involved.",
                "The main thing is to agree with your doctor in advance on the date and time of "
                "your appointment.",
            ),
            ("lie on your stomach", "gel", "two to three minutes", "about 15 minutes",
             "line of the spine itself is not", "Agree the date and time with your doctor"),
        ),
        (
            "self_massage",
            (
                "You can massage this area yourself.",
                "Performing a massage of this area on your own is quite problematic.",
                "The main thing is not to forget that it is prohibited to carry out any "
                "manipulations directly on the spine, and try not to put pressure on the area "
                "where the kidneys are located.",
            ),
            ("sawing", "ask someone close to you", "sit astride a chair",
             "Never work directly on the spine", "kidneys"),
        ),
    ],
)  # fmt: skip
def test_the_articles_practical_sections_are_info_screens(
    option: str, cites: tuple[str, ...], says: tuple[str, ...]
) -> None:
    for sentence in cites:
        assert " ".join(sentence.split()) in ARTICLE
    client = Client(lang="en")
    client.choose(option)
    shown = client.text
    for words in says:
        assert words in shown
    client.cont()
    assert client.node == "emergency", "the screen leads on to the questions"


@pytest.mark.parametrize("allergy", ["yes", "unknown"])
def test_an_allergy_to_oils_means_a_base_oil_only(allergy: str) -> None:
    assert "almost complete absence of an allergic reaction" in ARTICLE
    client = Client(lang="en")
    client.run({"oils": "yes", "oil_allergy": allergy})
    shown = "\n".join(client.transcript)
    assert "no essential oils" in shown and "Coconut oil almost never" in shown
    assert "patch test first" in shown and "almond" in shown
    assert "oil_scent" not in client.saved[0].answers.__repr__()
    assert all(a.question != "Scent" for a in client.saved[0].answers)
    # what the staff card shows
    [line] = [a for a in client.saved[0].answers if a.question.startswith("Allergy")]
    assert "no essential oils, patch test first" in line.question


def test_no_allergy_goes_on_to_the_scent() -> None:
    client = Client(lang="en")
    client.run({"oils": "yes", "oil_allergy": "none", "oil_scent": "calming"})
    assert any(a.question == "Scent" for a in client.saved[0].answers)


def test_several_conditions_read_as_one_suggestion() -> None:
    """Each sentence once, one course length (the longest, saying why)."""
    assert "it is recommended to do 15 sessions" in ARTICLE
    client = Client(lang="en")
    client.run({"conditions": ("osteochondrosis", "sciatica"), "osteo_region": "lumbosacral"})
    shown = "\n".join(client.transcript)
    assert shown.count("The course is supervised by a physician.") == 1
    assert shown.count("Course:</b>") == 1 and "10 sessions" not in shown
    ru = Client(lang="ru")
    ru.run({"conditions": ("osteochondrosis", "sciatica"), "osteo_region": "lumbosacral"})
    shown_ru = "\n".join(ru.transcript)
    assert "15 сеансов" in shown_ru and shown_ru.count("Курс проходит под наблюдением врача.") == 1


# --- Found by a clinical review from the article's side ------------------------------


def test_not_now_still_tells_what_a_doctor_must_clear_first() -> None:
    """A fever makes it "not now", but the recent fracture still needs a doctor: the client
    is told both, and so are the staff who call back (not only "come back when it passed")."""
    assert "They can be massaged only after consultation with a doctor." in ARTICLE
    client = Client(lang="en")
    client.run({"acute": ("fever_infection",), "fracture": "yes"})
    [draft] = client.saved
    assert draft.outcome == "LATER"
    outcome = next(t for t in client.transcript if "not advisable right now" in t)
    assert "Before any massage, a doctor must also clear this:" in outcome
    assert outcome.index("acute infection with fever") < outcome.index("a doctor must also")
    assert outcome.index("a doctor must also") < outcome.index("recent spine fracture")
    assert any("recent spine fracture" in r for r in draft.reasons), "the staff see it too"
    assert draft.reasons[0].startswith("You reported an acute infection"), "the deciding first"
    ru = Client(lang="ru")
    ru.run({"acute": ("fever_infection",), "fracture": "yes"})
    shown = "\n".join(ru.transcript)
    assert "До любого массажа это также должен разрешить врач:" in shown
    assert "недавний перелом позвоночника" in shown


def test_no_massage_asks_to_tell_the_doctor_the_rest_too() -> None:
    client = Client(lang="en")
    client.run({"chronic": ("oncology",), "fracture": "yes"})
    [draft] = client.saved
    assert draft.outcome == "STOP"
    shown = "\n".join(client.transcript)
    assert "Please also tell your doctor:" in shown and "recent spine fracture" in shown
    assert [r.split(":")[0] for r in draft.reasons] == [
        "You reported an oncological disease (cancer)",
        "You reported a recent spine fracture",
    ]


def test_only_the_deciding_reasons_when_nothing_else_fired() -> None:
    client = Client(lang="en")
    client.run({"acute": ("intoxication",)})
    shown = "\n".join(client.transcript)
    assert "must also clear" not in shown and "also tell your doctor" not in shown
    assert client.saved[0].reasons == ("You reported alcohol or drug intoxication",)


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_pregnancy_is_asked_and_a_doctor_decides(lang: str) -> None:
    """The article is silent on massage in pregnancy (it names pregnancy among the
    ointments' contraindications, and a warming gel is used at every session): a doctor
    decides first, and "massage is suitable" is never shown."""
    assert "eczema, pregnancy and allergies to the main component" in ARTICLE
    client = Client(lang=lang)  # type: ignore[arg-type]
    client.run({"acute": ("pregnancy",)})
    [draft] = client.saved
    assert draft.outcome == "CLEAR"
    assert "caution_pregnancy" in draft.rule_ids
    shown = "\n".join(client.transcript)
    assert ("pregnan" if lang == "en" else "беремен") in shown.lower()
    assert "Massage is suitable" not in shown and "Массаж вам подходит" not in shown


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_any_other_chronic_disease_is_for_a_doctor_to_clear(lang: str) -> None:
    cites = (
        "A patient may be prohibited from massage due to the presence of any chronic "
        "diseases. Each course must be supervised by a physician."
    )
    assert cites in ARTICLE
    client = Client(lang=lang)  # type: ignore[arg-type]
    client.run({"chronic": ("other_chronic",)})
    [draft] = client.saved
    assert draft.outcome == "CLEAR"
    assert "caution_chronic_disease" in draft.rule_ids
    assert "Massage is suitable" not in "\n".join(client.transcript)


def test_an_infectious_disease_that_is_not_an_acute_fever_is_no_massage() -> None:
    """The article lists "Presence of an infectious disease." without a qualifier (STOP);
    only "Acute infections that are accompanied by high body temperature" pass (LATER)."""
    assert "Presence of an infectious disease." in ARTICLE
    assert "Acute infections that are accompanied by high body temperature." in ARTICLE
    client = Client(lang="en")
    client.run({"acute": ("infectious",)})
    assert client.saved[0].outcome == "STOP"
    assert "c_infectious" in client.saved[0].rule_ids
    acute = Client(lang="en")
    acute.run({"acute": ("fever_infection",)})
    assert acute.saved[0].outcome == "LATER"


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_numbness_in_the_groin_or_not_passing_urine_is_an_emergency(lang: str) -> None:
    client = Client(lang=lang)  # type: ignore[arg-type]
    client.run(stop_at="emergency")
    labels = [b.label for m in client.messages for row in m.buttons for b in row]
    assert any(("groin" if lang == "en" else "паху") in label for label in labels)
    client.run({"emergency": ("saddle",)})
    assert client.node == "emergency_stop"
    assert client.saved[0].outcome == "EMERGENCY"
    assert "112" in client.text and "103" in client.text

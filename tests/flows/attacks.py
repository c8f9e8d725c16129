"""Flow files a careless or hostile admin could write, each with the words of its refusal.

Each attack edits the shipped flow file the way an admin could (the YAML, nothing else).
The checker tests run every one through ``flows check``; the admin tests upload every one
through Telegram. Both must refuse it with a readable reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from io import StringIO
from typing import Any

from ruamel.yaml import YAML

from tests.factories import INTAKE_PATH

Edit = Callable[[Any], None]


def edited(edit: Edit) -> str:
    """The shipped flow file's text, changed by ``edit``."""
    yaml = YAML(typ="rt")
    yaml.width = 4096
    data = yaml.load(INTAKE_PATH.read_text())
    edit(data)
    buf = StringIO()
    yaml.dump(data, buf)
    return buf.getvalue()


def rule(data: Any, rule_id: str) -> Any:
    return next(r for r in data["rules"] if r["id"] == rule_id)


def option(node: Any, option_id: str) -> Any:
    return next(o for o in node["options"] if o["id"] == option_id)


def _text(ru: str, en: str) -> dict[str, str]:
    return {"ru": ru, "en": en}


@dataclass(frozen=True)
class Attack:
    name: str
    edit: Edit
    #: words the refusal must contain
    says: str


def _redefine_conditions(d: Any) -> None:
    """Write the conditions question out, with values renamed and labels of one's own."""
    d["nodes"]["conditions"] = {
        "kind": "checklist",
        "text": _text("Что беспокоит?", "What bothers you?"),
        "options": [
            {"id": "hernia", "label": _text("Грыжа", "Hernia"), "facts": {"condition": "disc"}},
            {"id": "none", "label": _text("Ничего", "Nothing"), "exclusive": True},
        ],
        "next": "acute",
    }


def _own_question(facts: dict[str, str], label: str = "HIV") -> Edit:
    def edit(d: Any) -> None:
        d["nodes"]["extra"] = {
            "kind": "checklist",
            "text": _text("Уточним", "One more thing"),
            "options": [
                {"id": "x", "label": _text(label, label), "facts": facts},
                {"id": "none", "label": _text("Нет", "None"), "exclusive": True},
            ],
            "next": "emergency",
        }
        option(d["nodes"]["welcome"], "start")["goto"] = "extra"

    return edit


def _renamed_value(d: Any) -> None:
    rule(d, "ok_hernia_recovery")["when"]["all"][0]["in"] = ["herniated_disc"]


def _swap_labels(d: Any) -> None:
    d["nodes"]["emergency"]["options"] = [
        {"id": "chest_pain", "label": _text("Ничего из этого", "None of these")},
    ]


def _skip_screening(d: Any) -> None:
    option(d["nodes"]["welcome"], "start")["goto"] = "triage"


def _house_rule_clear_early(d: Any) -> None:
    """ "Every course starts with a doctor": CLEAR for all, and the screening skipped."""
    d["rules"].append(
        {
            "id": "doctor_first",
            "level": "CLEAR",
            "when": {"fact": "goal", "in": ["wellbeing"]},
            "reason": _text("Сначала врач", "A doctor first"),
            "source": "Each course must be supervised by a physician.",
        }
    )
    d["nodes"]["emergency"]["next"] = "triage"


def _delete_emergency_block(d: Any) -> None:
    del d["nodes"]["emergency"]
    for o in d["nodes"]["welcome"]["options"]:
        if o.get("goto") == "emergency":
            o["goto"] = "conditions"
    d["nodes"]["after_massage"]["next"] = "conditions"
    d["nodes"]["massage_types"]["next"] = "conditions"


def _conditions_first(d: Any) -> None:
    for o in d["nodes"]["welcome"]["options"]:
        if o.get("goto") == "emergency":
            o["goto"] = "conditions"
    d["nodes"]["after_massage"]["next"] = "conditions"
    d["nodes"]["massage_types"]["next"] = "conditions"
    d["nodes"]["conditions"]["next"] = "emergency"
    d["nodes"]["emergency"]["next"] = "acute"


def _set(key: str, value: Any) -> Edit:
    def edit(d: Any) -> None:
        d[key] = value

    return edit


def _reword(node: str, en: str) -> Edit:
    def edit(d: Any) -> None:
        d["nodes"][node]["text"]["en"] = en

    return edit


def _stop_to_oils(d: Any) -> None:
    d["nodes"]["triage"]["next"][0]["when"]["in"] = ["OK", "CLEAR", "STOP"]


def _stop_outcome_text(d: Any) -> None:
    d["outcomes"]["STOP"] = {
        "title": _text("Массаж вам подходит", "Massage suits you"),
        "text": _text("Запишитесь на курс.", "Book a course."),
    }


def _medicine(d: Any) -> None:
    advice = rule(d, "ok_sciatica")["advice"]
    advice["en"] = advice["en"].rstrip() + " Rub in some Finalgon after the session."


def _lower_oncology(d: Any) -> None:
    d["rules"].append(
        {
            "id": "oncology_later",
            "level": "LATER",
            "when": {"fact": "contraindication", "in": ["oncology"]},
            "reason": _text("Позже", "Later"),
            "source": "Oncological diseases.",
        }
    )


def _invented_source(d: Any) -> None:
    rule(d, "ok_wellbeing")["source"] = "Massage cures everything, says nobody."


def _into_the_block(d: Any) -> None:
    option(d["nodes"]["welcome"], "types")["goto"] = "prescription"


def _reword_rule_advice(rule_id: str, en: str) -> Edit:
    def edit(d: Any) -> None:
        advice = rule(d, rule_id)["advice"]
        advice["en"] = advice["en"].rstrip() + " " + en

    return edit


def _screen_for_cancer(d: Any) -> None:
    """An info screen selling a course, shown exactly to the clients who reported cancer,
    just before the triage says STOP."""
    d["nodes"]["good_news"] = {
        "kind": "info",
        "text": _text("Хорошие новости!", "Good news: with your condition we can help you!"),
        "next": "triage",
    }
    d["nodes"]["acute"]["next"] = [
        {"when": {"fact": "contraindication", "in": ["oncology"]}, "to": "good_news"},
        {"to": "triage"},
    ]


def _field_question_after_stop(d: Any) -> None:
    """After STOP, a question whose answers record a field (not facts): what treatment."""
    d["nodes"]["pick_type"] = {
        "kind": "choice",
        "field": "wanted_treatment",
        "summary": _text("Что делаем", "What we will do"),
        "text": _text("Что делаем на первом визите?", "What shall we do on your first visit?"),
        "options": [
            {"id": "deep", "label": _text("Глубокая проработка спины", "Deep back work, 60 min")},
            {"id": "stones", "label": _text("Горячие камни", "Hot stones")},
        ],
        "next": "consent",
    }
    option(d["nodes"]["offer_call"], "yes")["goto"] = "pick_type"


def _house_clear_selling(d: Any) -> None:
    d["rules"].append(
        {
            "id": "house_clear",
            "level": "CLEAR",
            "when": {"fact": "caution", "in": ["recent_fracture"]},
            "reason": _text(
                "Массаж вам подходит: запишитесь на курс", "Massage suits you: book your course"
            ),
            "source": "They can be massaged only after consultation with a doctor.",
        }
    )


def _summary_leak(d: Any) -> None:
    """A question before the screening whose name and answer, listed in the summary a STOP
    client confirms, promise a massage course."""
    d["nodes"]["course_pick"] = {
        "kind": "choice",
        "field": "course_pick",
        "summary": _text("Ваш курс массажа: 10 сеансов", "Your massage course: 10 sessions"),
        "text": _text("Готовы начать?", "Ready to start?"),
        "options": [
            {"id": "go", "label": _text("Да", "Yes, book it")},
            {"id": "later", "label": _text("Позже", "Later")},
        ],
        "next": "emergency",
    }
    option(d["nodes"]["welcome"], "start")["goto"] = "course_pick"


def _no_consent(d: Any) -> None:
    """The call offer goes straight to the name and phone: no consent is asked."""
    option(d["nodes"]["offer_call"], "yes")["goto"] = "name"
    for o in d["nodes"]["oils"]["options"]:
        if o.get("goto") == "consent":
            o["goto"] = "name"
    d["nodes"]["oil_info"]["next"] = "name"
    d["nodes"]["oil_base_only"]["next"] = "name"
    del d["nodes"]["consent"]


def _decline_saves(d: Any) -> None:
    option(d["nodes"]["consent"], "decline")["goto"] = "done"


ATTACKS = [
    Attack(
        "a question of the screening core written out with renamed values",
        _redefine_conditions,
        "the id 'conditions' belongs to the screening core",
    ),
    Attack(
        "an own question recording a policy fact (decoy HIV option)",
        _own_question({"contraindication": "hiv"}),
        "records contraindication, a fact owned by the safety policy",
    ),
    Attack(
        "an own question recording a renamed policy value",
        _own_question({"contraindication": "HIV_acute"}),
        "records contraindication, a fact owned by the safety policy",
    ),
    Attack(
        "a rule looking for a renamed condition value",
        _renamed_value,
        "looks for condition=herniated_disc, but the safety policy's 'condition' has only",
    ),
    Attack(
        "labels swapped inside a screening block",
        _swap_labels,
        "a screening block is included as it is",
    ),
    Attack(
        "the screening skipped straight to the outcome",
        _skip_screening,
        "without the screening block 'emergency'",
    ),
    Attack(
        "a house rule sends everyone to a doctor and skips the contraindications",
        _house_rule_clear_early,
        "without the screening block 'contraindications'",
    ),
    Attack(
        "the emergency block deleted",
        _delete_emergency_block,
        "the screening block 'emergency' is missing",
    ),
    Attack(
        "the emergency signs asked after the conditions",
        _conditions_first,
        "before the emergency signs: the 'emergency' block must come first",
    ),
    Attack(
        "the emergency end pointed at the goodbye",
        _set("emergency_node", "goodbye"),
        "'emergency_node' cannot be set in a flow file",
    ),
    Attack(
        "a default rule of one's own",
        _set(
            "default_rule",
            {
                "id": "d",
                "level": "CLEAR",
                "reason": _text("a", "a"),
                "source": "Each course must be supervised by a physician.",
            },
        ),
        "'default_rule' cannot be set in a flow file",
    ),  # fmt: skip
    Attack(
        "the STOP outcome text rewritten to suggest a massage",
        _stop_outcome_text,
        "outcome text(s) belong to the safety policy",
    ),
    Attack(
        "a massage offered in the call offer after STOP",
        _reword("offer_call", "Massage suits you anyway: book a course with us!"),
        "words that suggest a massage",
    ),
    Attack(
        "a triage text that promises a massage before a STOP headline",
        _reword("triage", "Great news: massage suits you, book your course today!"),
        "the triage text is shown with every outcome",
    ),
    Attack(
        "STOP clients sent on to the aromatic oils",
        _stop_to_oils,
        "records answers for a massage",
    ),
    Attack(
        "a claim to diagnose",
        _reword("welcome", "Hello! I will diagnose you in three minutes."),
        "presents the bot's answer as a diagnosis",
    ),
    Attack(
        "a medicine in the advice",
        _medicine,
        "names a medicine (finalgon)",
    ),
    Attack(
        "another phone number typed into a text",
        _reword("goodbye", "Take care. Call us on +7 999 123-45-67."),
        "phone number typed in (+7 999 123-45-67)",
    ),
    Attack(
        "opening hours typed into a text",
        _reword("goodbye", "Take care. We are open from 8:00 to 23:00."),
        "opening hours typed in",
    ),
    Attack(
        "oncology lowered from STOP to LATER",
        _lower_oncology,
        "level LATER is decided by the safety policy only",
    ),
    Attack(
        "a source document outside the package",
        _set("source_document", "/etc/passwd"),
        "the only clinical source a flow may quote is the shipped article",
    ),
    Attack(
        "a source document climbing out of the folder",
        _set("source_document", "../../.env"),
        "the only clinical source a flow may quote is the shipped article",
    ),
    Attack(
        "a rule source that is not in the article",
        _invented_source,
        "rule ok_wellbeing: its source is not a quote of the article",
    ),
    Attack(
        "a jump into the middle of a screening block",
        _into_the_block,
        "a question inside a screening block",
    ),
    Attack(
        "a massage screen shown only to clients who reported cancer, before the triage",
        _screen_for_cancer,
        "looks at the screening answer contraindication: what follows",
    ),
    Attack(
        "after STOP, a question that records a treatment as a field",
        _field_question_after_stop,
        "records answers for a massage",
    ),
    Attack(
        "a massage offered after STOP with the word split by a tag",
        _reword("offer_call", "You can still have a mass<b>age</b>: book your cour<b>se</b>!"),
        "words that suggest a massage",
    ),
    Attack(
        "a massage offered after STOP with a Cyrillic letter in the word",
        _reword("offer_call", "You can still have a m\u0430ssage with us!"),
        "words that suggest a massage",
    ),
    Attack(
        "a massage offered after STOP written with an HTML entity",
        _reword("offer_call", "You can still have a mass&#97;ge with us!"),
        "words that suggest a massage",
    ),
    Attack(
        "a massage offered after STOP with a zero-width space in the word",
        _reword("offer_call", "You can still have a mas\u200bsage with us!"),
        "words that suggest a massage",
    ),
    Attack(
        "a medicine split by a tag",
        _reword_rule_advice("ok_sciatica", "Rub in some Fin<b>algon</b> after the session."),
        "names a medicine (finalgon)",
    ),
    Attack(
        "a medicine with a Greek letter",
        _reword_rule_advice("ok_sciatica", "Rub in some Finalg\u03bfn after the session."),
        "names a medicine (finalgon)",
    ),
    Attack(
        "a medicine in full-width letters",
        _reword_rule_advice(
            "ok_sciatica", "Rub in some \uff26\uff49\uff4e\uff41\uff4c\uff47\uff4f\uff4e."
        ),
        "names a medicine (finalgon)",
    ),
    Attack(
        "a painkiller the article does not name",
        _reword_rule_advice("ok_sciatica", "Take Nimesil before the session."),
        "names a medicine (nimesil)",
    ),
    Attack(
        "medication advice without a name",
        _reword_rule_advice("ok_sciatica", "Take a painkiller pill before you come."),
        "names a medicine (painkiller)",
    ),
    Attack(
        "a claim to diagnose, contracted",
        _reword("welcome", "Hello! I'll diagnose you in three minutes."),
        "presents the bot's answer as a diagnosis",
    ),
    Attack(
        "a diagnosis offered",
        _reword("welcome", "Hello! Get your diagnosis now."),
        "presents the bot's answer as a diagnosis",
    ),
    Attack(
        "a text that contradicts the emergency instruction",
        _reword("welcome", "Chest pain? There is no need to call 112 or 103: tell us here."),
        "mentions the emergency numbers",
    ),
    Attack(
        "a doctor-first reason that sells a massage",
        _house_clear_selling,
        "rule house_clear reason (en) suggests a massage",
    ),
    Attack(
        "a question whose name in the summary promises a course to STOP clients",
        _summary_leak,
        "in the summary",
    ),
    Attack(
        "a request saved without asking consent",
        _no_consent,
        "a path reaches it without the client's consent",
    ),
    Attack(
        "a request saved although the client declined",
        _decline_saves,
        "a path reaches it without the client's consent",
    ),
]

"""Plain values for storage tests, overridable per test."""

from __future__ import annotations

from typing import Any


def request_fields(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments for ``create_request`` (minus session and client_id)."""
    fields: dict[str, Any] = {
        "flow_name": "intake",
        "flow_version": "2024.1",
        "language": "ru",
        "outcome": "STOP",
        "rule_ids": ["R-ANTICOAG", "R-FEVER"],
        "reasons": ["Приём антикоагулянтов", "Температура выше 37,5 °C"],
        "answers": [
            {"node": "fever", "question": "Есть ли у вас температура?", "answer": "Да"},
            {"node": "meds", "question": "Принимаете ли вы лекарства?", "answer": "Варфарин"},
        ],
        "facts": {"conditions": ["лихорадка"], "medications": ["варфарин", "аспирин"]},
        "name": "Анна Петровна",
        "phone": "+79161234567",
        "preferred_time": "после 18:00",
        "red_flag_changed": True,
        "withdrawn_red_flags": ["R-PREGNANCY"],
    }
    fields.update(overrides)
    return fields

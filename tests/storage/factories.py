"""Plain values for storage tests, overridable per test."""

from __future__ import annotations

from typing import Any

from storage import RequestCreate


def request_fields(**overrides: Any) -> dict[str, Any]:
    """The fields of a new request (but its client)."""
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


def new_request(client_id: int, **overrides: Any) -> RequestCreate:
    """A request to create for ``client_id``: ``request_fields`` with ``overrides``."""
    return RequestCreate(client_id=client_id, **request_fields(**overrides))

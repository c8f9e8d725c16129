"""The catalogue of fixed strings: every key in both languages, alike in their placeholders."""

from __future__ import annotations

from string import Formatter

import pytest

from flows import CATALOGUE, COMMANDS, LANGS, t
from flows.engine import _sessions


def placeholders(text: str) -> set[str]:
    return {field for _, field, _, _ in Formatter().parse(text) if field is not None}


@pytest.mark.parametrize("key", sorted(CATALOGUE))
def test_every_key_is_in_both_languages_with_the_same_placeholders(key: str) -> None:
    texts = CATALOGUE[key]
    assert set(texts) == set(LANGS), f"{key}: languages {sorted(texts)}"
    assert all(text.strip() for text in texts.values()), f"{key}: an empty text"
    assert placeholders(texts["ru"]) == placeholders(texts["en"]), key


def test_keys_say_whose_they_are() -> None:
    audiences = {key.split(".")[0] for key in CATALOGUE}
    assert audiences == {"engine", "client", "staff", "admin", "chat", "graph"}


def test_every_menu_command_has_a_description() -> None:
    for command in COMMANDS:
        assert f"client.command.{command}" in CATALOGUE


def test_values_fill_the_placeholders() -> None:
    assert t("engine.progress", "ru", k=3, n=14) == "Вопрос 3 из 14"
    assert t("client.ask_unavailable", "en", phone="+7 000") == (
        "We cannot pass your question on right now. Please call us: +7 000."
    )


def test_a_missing_key_language_or_value_is_an_error_that_names_it() -> None:
    with pytest.raises(KeyError, match="client.nothing"):
        t("client.nothing", "en")
    with pytest.raises(KeyError, match="'de'"):
        t("client.help", "de")  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="'phone'"):
        t("client.info", "ru", hours="9:00–21:00")


#: (n, Russian, English): Russian has three forms after a number, English two.
FORMS = [
    (1, "сеанс", "session"),
    (3, "сеанса", "sessions"),
    (10, "сеансов", "sessions"),
    (11, "сеансов", "sessions"),
    (21, "сеанс", "sessions"),
    (22, "сеанса", "sessions"),
]


@pytest.mark.parametrize(("n", "ru", "en"), FORMS)
def test_a_course_names_its_sessions_in_the_right_form(n: int, ru: str, en: str) -> None:
    assert (_sessions(n, "ru"), _sessions(n, "en")) == (ru, en)

"""The few fixed strings the engine adds around flow texts, one table per language."""

from __future__ import annotations

from flows.schema import Lang

__all__ = ["t"]

_TEXTS: dict[str, dict[Lang, str]] = {
    "progress": {"ru": "Вопрос {k} из {n}", "en": "Question {k} of {n}"},
    "back": {"ru": "⬅️ Назад", "en": "⬅️ Back"},
    "restart": {"ru": "🔄 Начать заново", "en": "🔄 Start over"},
    "continue": {"ru": "Продолжить ➡️", "en": "Continue ➡️"},
    "done": {"ru": "✔️ Готово", "en": "✔️ Done"},
    "confirm": {"ru": "✅ Всё верно, отправить", "en": "✅ All correct, send"},
    "revise": {"ru": "✏️ Изменить ответ", "en": "✏️ Change an answer"},
    "revise_prompt": {
        "ru": "Какой ответ вы хотите изменить?",
        "en": "Which answer would you like to change?",
    },
    "summary_title": {"ru": "<b>Ваши ответы</b>", "en": "<b>Your answers</b>"},
    "result": {"ru": "Итог", "en": "Result"},
    "course": {"ru": "<b>Курс:</b> {n} {sessions}.", "en": "<b>Course:</b> {n} {sessions}."},
    "course_longest": {
        "ru": (
            "<b>Курс:</b> {n} {sessions} — это самый длинный из курсов для того, что вы "
            "отметили, он покрывает и более короткие."
        ),
        "en": (
            "<b>Course:</b> {n} {sessions}, the longest of the courses for what you reported; "
            "it covers the shorter ones too."
        ),
    },
    "why": {"ru": "<b>Почему:</b>", "en": "<b>Why:</b>"},
    "suggest": {"ru": "<b>Что мы предлагаем:</b>", "en": "<b>What we suggest:</b>"},
    "use_buttons": {
        "ru": "Пожалуйста, выберите ответ кнопкой под вопросом.",
        "en": "Please choose an answer with the buttons under the question.",
    },
    "tick_one": {
        "ru": "Отметьте хотя бы один пункт (или вариант «нет»), затем нажмите «Готово».",
        "en": "Tick at least one item (or the “none” option), then press Done.",
    },
    "empty_text": {
        "ru": "Ответ пустой. Напишите, пожалуйста, текстом.",
        "en": "The answer is empty. Please type it as text.",
    },
    "too_long": {
        "ru": "Слишком длинный ответ: не больше {n} символов, пожалуйста.",
        "en": "That is too long: at most {n} characters, please.",
    },
    "bad_phone": {
        "ru": (
            "Не получилось распознать номер телефона. Напишите его полностью, "
            "например: +7 912 345-67-89 или 8 912 345-67-89."
        ),
        "en": (
            "That does not look like a valid phone number. Please write it in full, "
            "for example: +7 912 345-67-89 or 8 912 345-67-89."
        ),
    },
    "stale": {
        "ru": "Эта кнопка от прошлого вопроса. Ответьте, пожалуйста, на последний.",
        "en": "That button belongs to an earlier question. Please answer the latest one.",
    },
    "first_question": {
        "ru": "Это первый вопрос: назад некуда.",
        "en": "This is the first question: there is nothing to go back to.",
    },
    "finished": {
        "ru": "Анкета уже завершена. Чтобы пройти её снова, нажмите «Начать заново».",
        "en": "This questionnaire is finished. To go through it again, press Start over.",
    },
    "no_answers": {
        "ru": "Пока нечего менять.",
        "en": "There is nothing to change yet.",
    },
    "unknown_option": {
        "ru": "Такого варианта нет. Выберите, пожалуйста, из кнопок.",
        "en": "There is no such option. Please choose one of the buttons.",
    },
}


def t(key: str, lang: Lang, **fmt: object) -> str:
    """Return the fixed string ``key`` in ``lang``, formatted with ``fmt``."""
    text = _TEXTS[key][lang]
    return text.format(**fmt) if fmt else text

"""The bot's own fixed strings (not the dialogue's, which live in the flow file), per language."""

from __future__ import annotations

from flows import Lang

__all__ = ["COMMANDS", "t"]

CENTER_PHONE = "+7 (495) 085-15-13"

_TEXTS: dict[str, dict[Lang, str]] = {
    "help": {
        "ru": (
            "Я помощник центра «Вероника Херба». Задам несколько вопросов о вашей спине или шее, "
            "подскажу, подходит ли вам сейчас массаж, и передам заявку — наш сотрудник "
            "позвонит вам.\n\n"
            "Это не диагноз: окончательное решение принимают специалист и врач.\n\n"
            "На первом экране (/restart) можно также прочитать, как проходит сеанс, о видах "
            "массажа и о самомассаже дома.\n\n"
            "/start — начать или продолжить\n/restart — начать заново\n/lang — сменить язык\n"
            "/info — часы работы и телефон\n/status — состояние заявки\n"
            "/ask — задать вопрос сотруднику\n/cancel — прервать анкету\n"
            "/forget — удалить мои данные"
        ),
        "en": (
            "I am the assistant of the Veronika Herba center. I ask a few questions about your "
            "back or neck, tell you whether a massage suits you now, and pass your request on: "
            "our staff will call you.\n\nThis is not a diagnosis: a specialist and a doctor "
            "make the final decision.\n\nOn the first screen (/restart) you can also read what a "
            "session is like, about massage types and about self-massage at home.\n\n"
            "/start — begin or continue\n/restart — start over\n"
            "/lang — change the language\n/info — opening hours and phone\n"
            "/status — the state of your request\n/ask — ask our staff a question\n"
            "/cancel — stop the questionnaire\n/forget — erase my data"
        ),
    },
    "info": {
        "ru": (
            "<b>Центр красоты и здоровья «Вероника Херба»</b>, Москва\n"
            f"Работаем с 9:00 до 21:00, без выходных.\nТелефон: {CENTER_PHONE}"
        ),
        "en": (
            "<b>Veronika Herba beauty and health center</b>, Moscow\n"
            f"Open 9:00 to 21:00, seven days a week.\nPhone: {CENTER_PHONE}"
        ),
    },
    "lang_prompt": {"ru": "Выберите язык:", "en": "Choose a language:"},
    "lang_set": {"ru": "Язык: русский.", "en": "Language: English."},
    "forget_confirm": {
        "ru": (
            "Удалить все ваши данные: ответы, имя, телефон и заявки? Это нельзя отменить. "
            "Если заявка уже передана, позвоните нам, чтобы её отменить."
        ),
        "en": (
            "Erase all your data: answers, name, phone and requests? This cannot be undone. "
            "If a request has already been passed on, call us to cancel it."
        ),
    },
    "forget_yes": {"ru": "Да, удалить", "en": "Yes, erase"},
    "forget_no": {"ru": "Нет, оставить", "en": "No, keep"},
    "forget_done": {
        "ru": "Готово: ваши данные удалены. Если захотите вернуться, нажмите /start.",
        "en": "Done: your data has been erased. To come back, press /start.",
    },
    "forget_kept": {"ru": "Хорошо, ничего не удалено.", "en": "All right, nothing was erased."},
    "cancelled": {
        "ru": "Анкета прервана. Чтобы начать снова, нажмите /start.",
        "en": "The questionnaire is stopped. To begin again, press /start.",
    },
    "not_text": {
        "ru": "Я понимаю только текст и нажатия кнопок. Ответьте, пожалуйста, на вопрос ниже.",
        "en": "I can only read text and button presses. Please answer the question below.",
    },
    "edited": {
        "ru": (
            "Я вижу, что вы исправили сообщение. Исправление не меняет уже данные ответы. "
            "Вот текущий вопрос:"
        ),
        "en": (
            "I saw you edited a message. Edits do not change answers already given. "
            "Here is the current question:"
        ),
    },
    "edited_asking": {
        "ru": (
            "Я вижу, что вы исправили сообщение. Отправьте, пожалуйста, исправленный текст заново."
        ),
        "en": "I saw you edited a message. Please send the corrected text as a new message.",
    },
    "private_only": {
        "ru": "Пожалуйста, напишите мне в личные сообщения.",
        "en": "Please write to me in a private chat.",
    },
    "share_contact": {"ru": "📱 Отправить мой номер", "en": "📱 Share my number"},
    "share_hint": {
        "ru": "Можно нажать кнопку ниже, чтобы отправить свой номер, или написать его.",
        "en": "You can press the button below to share your number, or type it.",
    },
    "foreign_contact": {
        "ru": "Пожалуйста, отправьте свой собственный номер или напишите его.",
        "en": "Please share your own number, or type it.",
    },
    "phone_saved": {"ru": "✔️ Номер получен.", "en": "✔️ Number received."},
    "inactive_button": {
        "ru": "Эта кнопка больше не действует.",
        "en": "This button is no longer active.",
    },
    "flow_updated": {
        "ru": "Анкета обновилась, поэтому начнём её заново.",
        "en": "The questionnaire has been updated, so let us start it again.",
    },
    "ask_button": {"ru": "❓ Задать вопрос", "en": "❓ Ask a question"},
    "ask_prompt": {
        "ru": (
            "Напишите ваш вопрос одним сообщением — его прочитают наши сотрудники, "
            "ответ придёт сюда. Чтобы вернуться к анкете, нажмите кнопку ниже."
        ),
        "en": (
            "Write your question in one message: our staff will read it and the answer will "
            "come here. To go back to the questionnaire, press the button below."
        ),
    },
    "ask_back": {"ru": "↩️ Вернуться к анкете", "en": "↩️ Back to the questionnaire"},
    "ask_sent": {
        "ru": "Передали ваш вопрос сотрудникам. Ответ придёт сюда.",
        "en": "Your question has been passed to our staff. The answer will come here.",
    },
    "ask_unavailable": {
        "ru": "Сейчас не получается передать вопрос. Позвоните нам: +7 (495) 085-15-13.",
        "en": "We cannot pass your question on right now. Please call us: +7 (495) 085-15-13.",
    },
    "status_none": {
        "ru": "У вас пока нет заявки. Нажмите /start, чтобы пройти анкету.",
        "en": "You have no request yet. Press /start to go through the questionnaire.",
    },
    "status": {"ru": "Ваша заявка №{id}: {state}.", "en": "Your request #{id}: {state}."},
    "state_new": {
        "ru": "получена, мы позвоним в часы работы (9:00–21:00)",
        "en": "received; we will call you during opening hours (9:00–21:00)",
    },
    "state_taken": {
        "ru": "сотрудник уже занимается ею и скоро позвонит",
        "en": "a staff member is on it and will call you soon",
    },
    "state_no_answer": {
        "ru": "мы не смогли до вас дозвониться и попробуем ещё раз",
        "en": "we could not reach you and will try again",
    },
    "state_booked": {"ru": "вы записаны", "en": "you are booked"},
    "state_declined": {"ru": "закрыта после звонка", "en": "closed after our call"},
    "state_closed": {"ru": "закрыта", "en": "closed"},
    "sorry": {
        "ru": (
            "Извините, что-то пошло не так. Ваши ответы сохранены — нажмите /start, "
            "чтобы продолжить."
        ),
        "en": "Sorry, something went wrong. Your answers are saved: press /start to continue.",
    },
}

#: Commands shown in Telegram's menu, per language: (command, description).
COMMANDS: dict[Lang, list[tuple[str, str]]] = {
    "ru": [
        ("start", "Начать или продолжить анкету"),
        ("restart", "Начать заново"),
        ("lang", "Сменить язык"),
        ("info", "Часы работы и телефон"),
        ("help", "Что умеет бот"),
        ("status", "Состояние моей заявки"),
        ("ask", "Задать вопрос сотруднику"),
        ("cancel", "Прервать анкету"),
        ("forget", "Удалить мои данные"),
    ],
    "en": [
        ("start", "Begin or continue the questionnaire"),
        ("restart", "Start over"),
        ("lang", "Change the language"),
        ("info", "Opening hours and phone"),
        ("help", "What the bot does"),
        ("status", "The state of my request"),
        ("ask", "Ask our staff a question"),
        ("cancel", "Stop the questionnaire"),
        ("forget", "Erase my data"),
    ],
}


def t(key: str, lang: Lang) -> str:
    """Return the fixed bot string ``key`` in ``lang``."""
    return _TEXTS[key][lang]

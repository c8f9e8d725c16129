"""Every fixed string of the assistant (not the dialogue's, which live in the flow), both languages.

One table, one lookup: ``t(key, lang, **values)``. Keys are grouped by who reads them:

- ``engine.``: what the engine adds around flow texts (buttons, progress, the summary);
- ``client.``: the bot's own replies to clients (commands, notices, messages from the center);
- ``staff.``: request cards, their buttons and the staff commands in the staff group;
- ``admin.``: replies to admins who edit the dialogue;
- ``chat.``: the terminal chat.

Values that belong to the center (``{phone}``, ``{hours}``) are never typed here: the bot builds
them once from its settings (``Settings.flow_values``) and passes them in. This module is pure
data, so the engine can use it as well as the bot.
"""

from __future__ import annotations

from flows.schema import Lang

__all__ = ["CATALOGUE", "COMMANDS", "t"]

CATALOGUE: dict[str, dict[Lang, str]] = {
    # --- engine: around the flow's own texts ------------------------------------------
    "engine.progress": {"ru": "Вопрос {k} из {n}", "en": "Question {k} of {n}"},
    "engine.back": {"ru": "⬅️ Назад", "en": "⬅️ Back"},
    "engine.restart": {"ru": "🔄 Начать заново", "en": "🔄 Start over"},
    "engine.continue": {"ru": "Продолжить ➡️", "en": "Continue ➡️"},
    "engine.done": {"ru": "✔️ Готово", "en": "✔️ Done"},
    "engine.confirm": {"ru": "✅ Всё верно, отправить", "en": "✅ All correct, send"},
    "engine.revise": {"ru": "✏️ Изменить ответ", "en": "✏️ Change an answer"},
    "engine.revise_prompt": {
        "ru": "Какой ответ вы хотите изменить?",
        "en": "Which answer would you like to change?",
    },
    "engine.summary_title": {"ru": "<b>Ваши ответы</b>", "en": "<b>Your answers</b>"},
    "engine.result": {"ru": "Итог", "en": "Result"},
    "engine.course": {
        "ru": "<b>Курс:</b> {n} {sessions}.",
        "en": "<b>Course:</b> {n} {sessions}.",
    },
    "engine.course_longest": {
        "ru": (
            "<b>Курс:</b> {n} {sessions} — это самый длинный из курсов для того, что вы "
            "отметили, он покрывает и более короткие."
        ),
        "en": (
            "<b>Course:</b> {n} {sessions}, the longest of the courses for what you reported; "
            "it covers the shorter ones too."
        ),
    },
    #: "sessions" after a number: Russian has three forms (1 сеанс, 2 сеанса, 5 сеансов).
    "engine.sessions_one": {"ru": "сеанс", "en": "session"},
    "engine.sessions_few": {"ru": "сеанса", "en": "sessions"},
    "engine.sessions_many": {"ru": "сеансов", "en": "sessions"},
    "engine.why": {"ru": "<b>Почему:</b>", "en": "<b>Why:</b>"},
    # after "not now": what a doctor must still clear once it has passed
    "engine.also_clear": {
        "ru": "<b>До любого массажа это также должен разрешить врач:</b>",
        "en": "<b>Before any massage, a doctor must also clear this:</b>",
    },
    # after "no massage: see a doctor": the rest the client reported, for that doctor
    "engine.also_tell": {
        "ru": "<b>Расскажите врачу и об этом:</b>",
        "en": "<b>Please also tell your doctor:</b>",
    },
    "engine.suggest": {"ru": "<b>Что мы предлагаем:</b>", "en": "<b>What we suggest:</b>"},
    "engine.use_buttons": {
        "ru": "Пожалуйста, выберите ответ кнопкой под вопросом.",
        "en": "Please choose an answer with the buttons under the question.",
    },
    "engine.tick_one": {
        "ru": "Отметьте хотя бы один пункт (или вариант «нет»), затем нажмите «Готово».",
        "en": "Tick at least one item (or the “none” option), then press Done.",
    },
    "engine.empty_text": {
        "ru": "Ответ пустой. Напишите, пожалуйста, текстом.",
        "en": "The answer is empty. Please type it as text.",
    },
    "engine.too_long": {
        "ru": "Слишком длинный ответ: не больше {n} символов, пожалуйста.",
        "en": "That is too long: at most {n} characters, please.",
    },
    "engine.bad_phone": {
        "ru": (
            "Не получилось распознать номер телефона. Напишите его полностью, "
            "например: +7 912 345-67-89 или 8 912 345-67-89."
        ),
        "en": (
            "That does not look like a valid phone number. Please write it in full, "
            "for example: +7 912 345-67-89 or 8 912 345-67-89."
        ),
    },
    "engine.stale": {
        "ru": "Эта кнопка от прошлого вопроса. Ответьте, пожалуйста, на последний.",
        "en": "That button belongs to an earlier question. Please answer the latest one.",
    },
    "engine.first_question": {
        "ru": "Это первый вопрос: назад некуда.",
        "en": "This is the first question: there is nothing to go back to.",
    },
    "engine.finished": {
        "ru": "Анкета уже завершена. Чтобы пройти её снова, нажмите «Начать заново».",
        "en": "This questionnaire is finished. To go through it again, press Start over.",
    },
    "engine.no_answers": {"ru": "Пока нечего менять.", "en": "There is nothing to change yet."},
    "engine.unknown_option": {
        "ru": "Такого варианта нет. Выберите, пожалуйста, из кнопок.",
        "en": "There is no such option. Please choose one of the buttons.",
    },
    # --- client: the bot's own replies in private chats --------------------------------
    "client.help": {
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
    "client.info": {
        "ru": (
            "<b>Центр красоты и здоровья «Вероника Херба»</b>, Москва\n"
            "Работаем {hours}, без выходных.\nТелефон: {phone}"
        ),
        "en": (
            "<b>Veronika Herba beauty and health center</b>, Moscow\n"
            "Open {hours}, seven days a week.\nPhone: {phone}"
        ),
    },
    "client.lang_prompt": {"ru": "Выберите язык:", "en": "Choose a language:"},
    "client.lang_set": {"ru": "Язык: русский.", "en": "Language: English."},
    "client.forget_confirm": {
        "ru": (
            "Удалить все ваши данные: ответы, имя, телефон и заявки? Это нельзя отменить. "
            "Если заявка уже передана, позвоните нам, чтобы её отменить."
        ),
        "en": (
            "Erase all your data: answers, name, phone and requests? This cannot be undone. "
            "If a request has already been passed on, call us to cancel it."
        ),
    },
    "client.forget_yes": {"ru": "Да, удалить", "en": "Yes, erase"},
    "client.forget_no": {"ru": "Нет, оставить", "en": "No, keep"},
    "client.forget_done": {
        "ru": "Готово: ваши данные удалены. Если захотите вернуться, нажмите /start.",
        "en": "Done: your data has been erased. To come back, press /start.",
    },
    "client.forget_kept": {
        "ru": "Хорошо, ничего не удалено.",
        "en": "All right, nothing was erased.",
    },
    "client.cancelled": {
        "ru": "Анкета прервана. Чтобы начать снова, нажмите /start.",
        "en": "The questionnaire is stopped. To begin again, press /start.",
    },
    "client.not_text": {
        "ru": "Я понимаю только текст и нажатия кнопок. Ответьте, пожалуйста, на вопрос ниже.",
        "en": "I can only read text and button presses. Please answer the question below.",
    },
    "client.edited": {
        "ru": (
            "Я вижу, что вы исправили сообщение. Исправление не меняет уже данные ответы. "
            "Вот текущий вопрос:"
        ),
        "en": (
            "I saw you edited a message. Edits do not change answers already given. "
            "Here is the current question:"
        ),
    },
    "client.edited_asking": {
        "ru": (
            "Я вижу, что вы исправили сообщение. Отправьте, пожалуйста, исправленный текст заново."
        ),
        "en": "I saw you edited a message. Please send the corrected text as a new message.",
    },
    "client.private_only": {
        "ru": "Пожалуйста, напишите мне в личные сообщения.",
        "en": "Please write to me in a private chat.",
    },
    "client.share_contact": {"ru": "📱 Отправить мой номер", "en": "📱 Share my number"},
    "client.share_hint": {
        "ru": "Можно нажать кнопку ниже, чтобы отправить свой номер, или написать его.",
        "en": "You can press the button below to share your number, or type it.",
    },
    "client.foreign_contact": {
        "ru": "Пожалуйста, отправьте свой собственный номер или напишите его.",
        "en": "Please share your own number, or type it.",
    },
    "client.phone_saved": {"ru": "✔️ Номер получен.", "en": "✔️ Number received."},
    # the phone question left without a number (/restart, Back): its share button closed
    "client.phone_closed": {
        "ru": "Хорошо, номер не сохранён.",
        "en": "All right, no number was saved.",
    },
    "client.contact_late": {
        "ru": (
            "Сейчас номер телефона не нужен, поэтому я его не сохранил. "
            "Изменить номер можно в сводке перед отправкой заявки."
        ),
        "en": (
            "I do not need a phone number just now, so I have not saved this one. "
            "You can change your number in the summary before sending your request."
        ),
    },
    "client.inactive_button": {
        "ru": "Эта кнопка больше не действует.",
        "en": "This button is no longer active.",
    },
    "client.flow_updated": {
        "ru": "Анкета обновилась, поэтому начнём её заново.",
        "en": "The questionnaire has been updated, so let us start it again.",
    },
    "client.ask_button": {"ru": "❓ Задать вопрос", "en": "❓ Ask a question"},
    "client.ask_prompt": {
        "ru": (
            "Напишите ваш вопрос одним сообщением — его прочитают наши сотрудники, "
            "ответ придёт сюда. Чтобы вернуться к анкете, нажмите кнопку ниже."
        ),
        "en": (
            "Write your question in one message: our staff will read it and the answer will "
            "come here. To go back to the questionnaire, press the button below."
        ),
    },
    "client.ask_back": {"ru": "↩️ Вернуться к анкете", "en": "↩️ Back to the questionnaire"},
    "client.ask_sent": {
        "ru": "Передали ваш вопрос сотрудникам. Ответ придёт сюда.",
        "en": "Your question has been passed to our staff. The answer will come here.",
    },
    "client.ask_unavailable": {
        "ru": "Сейчас не получается передать вопрос. Позвоните нам: {phone}.",
        "en": "We cannot pass your question on right now. Please call us: {phone}.",
    },
    "client.status_none": {
        "ru": "У вас пока нет заявки. Нажмите /start, чтобы пройти анкету.",
        "en": "You have no request yet. Press /start to go through the questionnaire.",
    },
    "client.status": {"ru": "Ваша заявка №{id}: {state}.", "en": "Your request #{id}: {state}."},
    #: A request's status as its client reads it (``client.state.<status>``).
    "client.state.new": {
        "ru": "получена, мы позвоним в часы работы ({hours})",
        "en": "received; we will call you during opening hours ({hours})",
    },
    "client.state.taken": {
        "ru": "сотрудник уже занимается ею и скоро позвонит",
        "en": "a staff member is on it and will call you soon",
    },
    "client.state.no_answer": {
        "ru": "мы не смогли до вас дозвониться и попробуем ещё раз",
        "en": "we could not reach you and will try again",
    },
    "client.state.booked": {"ru": "вы записаны", "en": "you are booked"},
    "client.state.declined": {"ru": "закрыта после звонка", "en": "closed after our call"},
    "client.state.closed": {"ru": "закрыта", "en": "closed"},
    "client.sorry": {
        "ru": (
            "Извините, что-то пошло не так. Ваши ответы сохранены — нажмите /start, "
            "чтобы продолжить."
        ),
        "en": "Sorry, something went wrong. Your answers are saved: press /start to continue.",
    },
    "client.tried_to_call": {
        "ru": (
            "Мы пытались вам дозвониться по вашей заявке, но не получилось. Мы позвоним ещё "
            "раз; вы также можете позвонить нам сами: {phone} ({hours}, без выходных)."
        ),
        "en": (
            "We tried to call you about your request but could not reach you. We will call "
            "again; you can also call us: {phone} ({hours}, seven days a week)."
        ),
    },
    "client.follow_up": {
        "ru": (
            "Спасибо, что обратились в центр «Вероника Херба». Если появятся вопросы, "
            "звоните: {phone} ({hours}, без выходных) или нажмите /start."
        ),
        "en": (
            "Thank you for contacting the Veronika Herba center. If you have questions, "
            "call us: {phone} ({hours}, seven days a week), or press /start."
        ),
    },
    "client.staff_answer": {
        "ru": "💬 Ответ центра «Вероника Херба»:",
        "en": "💬 Answer from the Veronika Herba center:",
    },
    #: Telegram's command menu (``client.command.<command>``, in the order of COMMANDS).
    "client.command.start": {
        "ru": "Начать или продолжить анкету",
        "en": "Begin or continue the questionnaire",
    },
    "client.command.restart": {"ru": "Начать заново", "en": "Start over"},
    "client.command.lang": {"ru": "Сменить язык", "en": "Change the language"},
    "client.command.info": {"ru": "Часы работы и телефон", "en": "Opening hours and phone"},
    "client.command.help": {"ru": "Что умеет бот", "en": "What the bot does"},
    "client.command.status": {"ru": "Состояние моей заявки", "en": "The state of my request"},
    "client.command.ask": {"ru": "Задать вопрос сотруднику", "en": "Ask our staff a question"},
    "client.command.cancel": {"ru": "Прервать анкету", "en": "Stop the questionnaire"},
    "client.command.forget": {"ru": "Удалить мои данные", "en": "Erase my data"},
    # --- staff: cards and commands in the staff group ----------------------------------
    "staff.card.title": {"ru": "Заявка", "en": "Request"},
    "staff.card.name": {"ru": "Имя", "en": "Name"},
    "staff.card.phone": {"ru": "Телефон", "en": "Phone"},
    "staff.card.time": {"ru": "Когда звонить", "en": "Call time"},
    "staff.card.lang": {"ru": "Язык", "en": "Language"},
    "staff.card.outcome": {"ru": "Итог", "en": "Outcome"},
    "staff.card.why": {"ru": "Почему", "en": "Why"},
    "staff.card.answers": {"ru": "Ответы", "en": "Answers"},
    "staff.card.red_flag": {
        "ru": "⚠️ Ответ изменён после «красного флага»",
        "en": "⚠️ Answer changed after a red flag",
    },
    "staff.card.source": {"ru": "Источник", "en": "Source"},
    "staff.card.flow": {"ru": "Анкета", "en": "Flow"},
    "staff.card.received": {"ru": "Получена", "en": "Received"},
    "staff.card.waiting": {"ru": "Ждёт", "en": "Waiting"},
    "staff.card.who": {"ru": "Взял(а)", "en": "Taken by"},
    "staff.card.attempts": {"ru": "Попыток дозвона", "en": "Call attempts"},
    "staff.card.retry": {"ru": "Перезвонить", "en": "Call again"},
    "staff.card.erased": {
        "ru": "Личные данные удалены по сроку хранения",
        "en": "Personal data erased after the retention period",
    },
    "staff.card.no_contact": {
        "ru": "без контактов (экстренный случай)",
        "en": "no contact (emergency stop)",
    },
    "staff.minutes": {"ru": "мин", "en": "min"},
    #: A request's status on its card (``staff.status.<status>``).
    "staff.status.new": {"ru": "🆕 новая", "en": "🆕 new"},
    "staff.status.taken": {"ru": "👤 в работе", "en": "👤 taken"},
    "staff.status.no_answer": {"ru": "📵 не дозвонились", "en": "📵 no answer"},
    "staff.status.booked": {"ru": "✅ записан(а)", "en": "✅ booked"},
    "staff.status.declined": {"ru": "❌ отказ", "en": "❌ declined"},
    "staff.status.closed": {"ru": "🗄 закрыта", "en": "🗄 closed"},
    #: A card's buttons (``staff.button.<callback token>``: an action, or a call-back time).
    "staff.button.take": {"ru": "👤 Взять", "en": "👤 Take"},
    "staff.button.booked": {"ru": "✅ Позвонили: записан", "en": "✅ Called: booked"},
    "staff.button.declined": {"ru": "❌ Позвонили: отказ", "en": "❌ Called: declined"},
    "staff.button.noans": {"ru": "📵 Не ответил", "en": "📵 No answer"},
    "staff.button.close": {"ru": "🗄 Закрыть", "en": "🗄 Close"},
    "staff.button.follow": {
        "ru": "✉️ Поблагодарить клиента",
        "en": "✉️ Send the client a thank-you",
    },
    "staff.button.r1": {"ru": "через 1 ч", "en": "in 1 h"},
    "staff.button.r3": {"ru": "через 3 ч", "en": "in 3 h"},
    "staff.button.rt": {"ru": "завтра {hour}:00", "en": "tomorrow {hour}:00"},
    "staff.again": {"ru": "⏰ Всё ещё ждёт звонка", "en": "⏰ Still waiting for a call"},
    "staff.call_back": {"ru": "📞 Пора перезвонить", "en": "📞 Time to call back"},
    "staff.refused": {
        "ru": "Это доступно только сотрудникам центра.",
        "en": "This is for the center's staff only.",
    },
    # a staff command in a group other than the staff group: no client data there
    "staff.wrong_chat": {
        "ru": "Команды сотрудников работают только в группе сотрудников "
        "(или в личном чате с ботом), чтобы данные клиентов не попали в другие чаты.",
        "en": "Staff commands work only in the staff group (or in a private chat with the "
        "bot), so that clients' data never reach other chats.",
    },
    "staff.queue": {"ru": "Открытые заявки", "en": "Open requests"},
    "staff.queue_empty": {"ru": "Открытых заявок нет.", "en": "No open requests."},
    "staff.not_possible": {
        "ru": "Сейчас это сделать нельзя: заявка уже в другом статусе.",
        "en": "That is not possible now: the request has moved on.",
    },
    "staff.not_found": {
        "ru": "Заявки с таким номером нет.",
        "en": "There is no request with that number.",
    },
    "staff.usage_request": {"ru": "Так: /request 12", "en": "Usage: /request 12"},
    "staff.usage_note": {"ru": "Так: /note 12 текст заметки", "en": "Usage: /note 12 the note"},
    "staff.noted": {
        "ru": "Заметка добавлена к заявке #{id}.",
        "en": "Note added to request #{id}.",
    },
    "staff.history": {"ru": "История", "en": "History"},
    # /request N when the whole history does not fit one message
    "staff.history_more": {
        "ru": "… и ещё {n} более ранних записей (вся история: intake-bot requests show {id})",
        "en": "… and {n} earlier entries (the whole history: intake-bot requests show {id})",
    },
    "staff.delivered": {
        "ru": "✔️ Ответ отправлен клиенту.",
        "en": "✔️ The answer was sent to the client.",
    },
    "staff.text_only": {
        "ru": "Клиенту передаётся только текст: напишите ответ сообщением (ответом на вопрос).",
        "en": "Only text is passed on to the client: please write your answer as a text reply.",
    },
    "staff.not_delivered": {
        "ru": "⚠️ Ответ не доставлен: клиент заблокировал бота или удалил свои данные.",
        "en": "⚠️ The answer was not delivered: the client blocked the bot or erased their data.",
    },
    "staff.gone": {
        "ru": "Клиент удалил свои данные или заблокировал бота.",
        "en": "The client erased their data or blocked the bot.",
    },
    "staff.followed": {
        "ru": "Клиенту отправлено сообщение.",
        "en": "The client was sent a follow-up.",
    },
    "staff.followed_already": {
        "ru": "Клиенту уже отправляли это сообщение.",
        "en": "The client has been sent the follow-up already.",
    },
    "staff.stats.today": {"ru": "Сегодня", "en": "Today"},
    "staff.stats.week": {"ru": "За 7 дней", "en": "Last 7 days"},
    "staff.stats.counts": {
        "ru": (
            "новые {new} · в работе {taken} · записаны {booked} · отказ {declined} · "
            "не дозвонились {no_answer} · закрыты {closed}"
        ),
        "en": (
            "new {new} · taken {taken} · booked {booked} · declined {declined} · "
            "no answer {no_answer} · closed {closed}"
        ),
    },
    "staff.stats.median": {
        "ru": "медиана до первого звонка: {minutes} мин",
        "en": "median to first call: {minutes} min",
    },
    "staff.stats.by_outcome": {"ru": "по итогу: {items}", "en": "by outcome: {items}"},
    "staff.stats.by_source": {"ru": "по источнику: {items}", "en": "by source: {items}"},
    "staff.stats.funnel": {
        "ru": "Воронка (7 дней): дошли / остановились",
        "en": "Funnel (7 days): reached / stopped",
    },
    # --- admin: editing the dialogue in Telegram ---------------------------------------
    "admin.refused": {
        "ru": "Это доступно только администраторам центра.",
        "en": "This is for the center's admins only.",
    },
    "admin.not_yaml": {
        "ru": "Пришлите, пожалуйста, анкету файлом YAML в кодировке UTF-8 (.yaml).",
        "en": "Please send the flow as a UTF-8 YAML file (.yaml).",
    },
    "admin.too_big": {
        "ru": (
            "Этот файл слишком велик для анкеты (не больше {kb} КБ). "
            "Пришлите, пожалуйста, файл YAML анкеты в том виде, в каком его выдаёт /flow."
        ),
        "en": (
            "Sorry, that file is too large for a flow (at most {kb} KB). "
            "Please send the flow's YAML file, as /flow gives it."
        ),
    },
    "admin.flow_caption": {
        "ru": "{name}, версия {n} ({checksum})",
        "en": "{name} version {n} ({checksum})",
    },
    "admin.failed": {
        "ru": "❌ Анкета не прошла проверку, опубликовать её нельзя:",
        "en": "❌ The flow failed its check and cannot be published:",
    },
    "admin.passed": {
        "ru": "✅ Анкета прошла проверку, включая доказательство безопасности.",
        "en": "✅ The flow passed its check, including the safety proof.",
    },
    "admin.whole_report": {"ru": "Полный отчёт проверки", "en": "The whole check report"},
    "admin.changes": {
        "ru": "Изменения относительно действующей версии {n}:",
        "en": "Changes from the active version {n}:",
    },
    "admin.no_changes": {
        "ru": "Она совпадает с действующей версией {n}.",
        "en": "It is the same as the active version {n}.",
    },
    "admin.layout_only": {
        "ru": "От действующей версии {n} отличаются только комментарии или оформление.",
        "en": "Only comments or layout differ from the active version {n}.",
    },
    "admin.graph": {"ru": "Анкета в виде схемы", "en": "The dialogue as a picture"},
    "admin.publish": {"ru": "✅ Опубликовать", "en": "✅ Publish"},
    "admin.discard": {"ru": "✖️ Отменить", "en": "✖️ Discard"},
    "admin.published": {
        "ru": (
            "Опубликовано как версия {n}. Новые диалоги идут по ней с этого момента; "
            "начатые заканчиваются на своей версии."
        ),
        "en": (
            "Published as version {n}. New dialogues use it from now on; "
            "dialogues under way finish on their version."
        ),
    },
    "admin.discarded": {
        "ru": "Отменено; ничего не изменилось.",
        "en": "Discarded; nothing changed.",
    },
    "admin.expired": {
        "ru": "Эта загрузка больше не ждёт публикации; пришлите файл ещё раз.",
        "en": "This upload is no longer waiting for Publish; please send the file again.",
    },
    "admin.already_active": {
        "ru": "Версия {n} уже действует; ничего не изменилось.",
        "en": "Version {n} is already the active one; nothing changed.",
    },
    "admin.no_version": {"ru": "Версии {n} нет.", "en": "There is no version {n}."},
    "admin.other_flow": {
        "ru": (
            "В этом файле анкета «{name}», а бот работает с «{ours}»: она никогда не будет "
            "использована. Оставьте имя таким, каким его выдаёт /flow."
        ),
        "en": (
            "This file is the flow '{name}', but the bot runs '{ours}': it would never be used. "
            "Keep the name as /flow gives it."
        ),
    },
    "admin.history": {
        "ru": "Версии анкеты (сначала новые; ● — действующая):",
        "en": "Flow versions (newest first; ● is active):",
    },
    "admin.rollback": {"ru": "↩️ Вернуть версию {n}", "en": "↩️ Make version {n} active"},
    "admin.rolled_back": {
        "ru": "Версия {n} снова действует (записана как версия {m}).",
        "en": "Version {n} is active again (recorded as version {m}).",
    },
    "admin.unsafe_now": {
        "ru": "Версия {n} больше не проходит проверку; она не включена.",
        "en": "Version {n} no longer passes the check; it was not activated.",
    },
    # --- chat: the terminal chat -------------------------------------------------------
    "chat.hint": {
        "ru": (
            "Введите номер варианта или текст, если он нужен. "
            "Команды: назад (back), заново (restart), выход (quit)."
        ),
        "en": "Type a number to choose, or text when asked. Commands: back, restart, quit.",
    },
    "chat.no_number": {"ru": "Нет такого номера.", "en": "There is no such number."},
    "chat.saved": {"ru": "✔ Заявка №{id} сохранена.", "en": "✔ Request #{id} saved."},
    "chat.none_saved": {"ru": "Заявка не сохранена.", "en": "No request was saved."},
    "chat.all_saved": {"ru": "Сохранённые заявки: {ids}.", "en": "Saved request(s): {ids}."},
    "chat.number": {"ru": "№{id}", "en": "#{id}"},
    # --- the dialogue's picture (flows/graph.py): words around the flow's own texts
    "graph.otherwise": {"ru": "иначе", "en": "otherwise"},
    "graph.and": {"ru": " и ", "en": " and "},
    "graph.or": {"ru": " или ", "en": " or "},
    "graph.not": {"ru": "не ", "en": "not "},
    "graph.any_answer": {"ru": "любой ответ", "en": "any answer"},
    "graph.emergency_sign": {"ru": "срочный признак", "en": "emergency sign"},
    "graph.asked_if": {"ru": "только если: ", "en": "only if: "},
    "graph.no_rule": {"ru": "ни одно правило не подошло", "en": "no rule applies"},
    "graph.version": {"ru": "версия", "en": "version"},
    "graph.rules": {"ru": "Какие ответы к чему ведут", "en": "Which answers lead where"},
    "graph.outcomes": {"ru": "Итоги", "en": "Outcomes"},
    "graph.skipped": {
        "ru": "пунктирная рамка: вопрос задаётся только при условии, иначе пропускается",
        "en": "dashed frame: asked only if the condition holds, otherwise skipped",
    },
}

#: The commands of Telegram's menu, in order; each one's description is ``client.command.<name>``.
COMMANDS: tuple[str, ...] = (
    "start",
    "restart",
    "lang",
    "info",
    "help",
    "status",
    "ask",
    "cancel",
    "forget",
)


def t(key: str, lang: Lang, /, **values: object) -> str:
    """The fixed string ``key`` in ``lang``, its ``{placeholders}`` filled from ``values``.

    A missing key, language or value is a programmer's fault and raises ``KeyError`` naming it.
    """
    try:
        text = CATALOGUE[key][lang]
    except KeyError:
        raise KeyError(f"no fixed string {key!r} in {lang!r}") from None
    try:
        return text.format_map(values)
    except KeyError as exc:
        raise KeyError(f"the fixed string {key!r} needs the value {exc}") from None

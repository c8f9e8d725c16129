"""Tests of the fake Bot API server, driven over HTTP by the real python-telegram-bot Bot."""

import asyncio
import datetime as dtm
import json
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web
from telegram import (
    Bot,
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest, Conflict, Forbidden, NetworkError, RetryAfter
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    Defaults,
    ExtBot,
)

from tests.fakebotapi import FakeBotAPI, fixtures
from tests.fakebotapi.validation import METHOD_PARAMS, parse_html

TOKEN = "123456:TEST-TOKEN"
USER = 1001

fake_bot_api = fixtures.fake_bot_api  # the shared fixture, exercised below


@pytest.fixture
async def api() -> AsyncIterator[FakeBotAPI]:
    async with FakeBotAPI(token=TOKEN) as server:
        yield server


@pytest.fixture
async def bot(api: FakeBotAPI) -> AsyncIterator[Bot]:
    bot = Bot(TOKEN, base_url=api.base_url, base_file_url=api.base_file_url)
    await bot.initialize()
    yield bot
    await bot.shutdown()


def keyboard(*labels_and_data: tuple[str, str]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(label, callback_data=data)] for label, data in labels_and_data]
    )


def seconds(value: int | dtm.timedelta) -> float:
    return value.total_seconds() if isinstance(value, dtm.timedelta) else value


# ------------------------------------------------------------------------ basics


async def test_get_me_identifies_the_bot_from_the_token(api: FakeBotAPI, bot: Bot) -> None:
    me = await bot.get_me()

    assert me.id == 123456
    assert me.is_bot
    assert me.username == "intake_test_bot"
    assert bot.username == "intake_test_bot"
    assert [call.ok for call in api.calls_of("getMe")] == [True, True]


async def test_shared_fixture_serves_a_started_api(fake_bot_api: FakeBotAPI) -> None:
    async with Bot(fixtures.TEST_TOKEN, base_url=fake_bot_api.base_url) as bot:
        assert (await bot.get_me()).username == "intake_test_bot"


async def test_base_urls_point_at_the_server(api: FakeBotAPI) -> None:
    assert api.base_url == f"http://127.0.0.1:{api.port}/bot"
    assert api.base_file_url == f"http://127.0.0.1:{api.port}/file/bot"


async def test_unknown_method_is_404_and_a_rejection(api: FakeBotAPI) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.post(f"{api.base_url}{TOKEN}/sendTelepathy", data={"a": "1"})

    assert response.status_code == 404
    assert response.json() == {
        "ok": False,
        "error_code": 404,
        "description": "Not Found: method not found",
    }
    assert [call.method for call in api.rejected] == ["sendTelepathy"]


BOT_METHODS = sorted(METHOD_PARAMS)


def test_every_method_of_the_fake_has_its_parameter_list() -> None:
    served = set(FakeBotAPI()._method_names.values())
    assert served == set(METHOD_PARAMS)


@pytest.mark.parametrize("method", BOT_METHODS)
async def test_every_method_rejects_a_parameter_it_does_not_take(
    api: FakeBotAPI, method: str
) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.post(
            f"{api.base_url}{TOKEN}/{method}", data={"chat_id": str(USER), "colour": "red"}
        )

    assert response.status_code == 400
    description = response.json()["description"]
    assert description.startswith(f"Bad Request: {method} does not take the parameter(s) ")
    unknown = description.split("parameter(s) ")[1].split(" (")[0]
    expected = ["colour"] if "chat_id" in METHOD_PARAMS[method] else ["chat_id", "colour"]
    assert unknown.split(", ") == expected
    assert [call.method for call in api.rejected] == [method]


async def test_a_parameter_the_method_takes_is_accepted(api: FakeBotAPI, bot: Bot) -> None:
    sent = await bot.send_message(USER, "hi", disable_notification=True, protect_content=True)
    await bot.edit_message_reply_markup(USER, sent.message_id, reply_markup=keyboard(("A", "a")))

    assert api.rejected == []


async def test_ptb_defaults_put_parse_mode_on_keyboard_edits_and_the_fake_refuses_it(
    api: FakeBotAPI,
) -> None:
    # PTB fills every parameter of its shared send/edit helper from Defaults, including
    # parse_mode on editMessageReplyMarkup, which that method does not take.
    bot = ExtBot(
        TOKEN,
        base_url=api.base_url,
        base_file_url=api.base_file_url,
        defaults=Defaults(parse_mode=ParseMode.HTML),
    )
    async with bot:
        sent = await bot.send_message(USER, "<b>hi</b>", reply_markup=keyboard(("A", "a")))
        with pytest.raises(BadRequest, match="parse_mode"):
            await bot.edit_message_reply_markup(USER, sent.message_id, reply_markup=None)

    assert [call.method for call in api.rejected] == ["editMessageReplyMarkup"]
    assert "parse_mode" in api.rejected[0].params


async def test_wrong_token_is_unauthorized(api: FakeBotAPI) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.post(f"{api.base_url}999:WRONG/getMe")

    assert response.status_code == 401
    assert response.json()["description"] == "Unauthorized"


async def test_method_names_are_case_insensitive_and_json_bodies_work(api: FakeBotAPI) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.post(
            f"{api.base_url}{TOKEN}/sendmessage", json={"chat_id": USER, "text": "hi"}
        )

    assert response.json()["ok"] is True
    assert api.calls_of("sendMessage")[0].params == {"chat_id": USER, "text": "hi"}


# ------------------------------------------------------------------------ messages


async def test_send_message_records_decoded_params_and_returns_a_message(
    api: FakeBotAPI, bot: Bot
) -> None:
    markup = keyboard(("Yes", "answer:yes"), ("No", "answer:no"))

    sent = await bot.send_message(USER, "Continue?", reply_markup=markup)

    assert sent.message_id == 1
    assert sent.chat.id == USER
    assert sent.from_user.id == bot.id
    assert sent.text == "Continue?"
    assert sent.reply_markup == markup
    call = api.calls_of("sendMessage")[0]
    assert call.ok
    assert call.params["chat_id"] == USER
    assert call.params["text"] == "Continue?"
    assert call.params["reply_markup"] == markup.to_dict()
    assert api.last_message(USER)["reply_markup"] == markup.to_dict()
    assert api.find_button(USER, "No") == (1, "answer:no")

    second = await bot.send_message(USER, "123")
    assert second.message_id == 2
    assert api.calls_of("sendMessage")[1].params["text"] == "123"  # stays a string
    assert [m["text"] for m in api.messages(USER)] == ["Continue?", "123"]


async def test_message_ids_are_shared_with_user_messages_per_chat(
    api: FakeBotAPI, bot: Bot
) -> None:
    api.user_message(USER, "hello")
    sent = await bot.send_message(USER, "hi there")
    other = await bot.send_message(2002, "hi")

    assert sent.message_id == 2
    assert other.message_id == 1
    assert [m["text"] for m in api.messages(USER, include_user=True)] == ["hello", "hi there"]
    assert [m["text"] for m in api.messages(USER)] == ["hi there"]


async def test_edit_message_text_updates_the_stored_message(api: FakeBotAPI, bot: Bot) -> None:
    sent = await bot.send_message(USER, "Step 1", reply_markup=keyboard(("Next", "next")))

    edited = await bot.edit_message_text(
        "Step 2", chat_id=USER, message_id=sent.message_id, reply_markup=keyboard(("Done", "d"))
    )

    assert edited.text == "Step 2"
    assert api.last_message(USER)["text"] == "Step 2"
    assert api.find_button(USER, "Done") == (sent.message_id, "d")

    # Like Telegram, editing the text without reply_markup removes the inline keyboard.
    await bot.edit_message_text("Step 3", chat_id=USER, message_id=sent.message_id)
    assert "reply_markup" not in api.last_message(USER)


async def test_edit_message_errors_like_telegram(api: FakeBotAPI, bot: Bot) -> None:
    sent = await bot.send_message(USER, "Same", reply_markup=keyboard(("A", "a")))

    with pytest.raises(BadRequest, match="(?i)message is not modified"):
        await bot.edit_message_text(
            "Same", chat_id=USER, message_id=sent.message_id, reply_markup=keyboard(("A", "a"))
        )
    with pytest.raises(BadRequest, match="(?i)message to edit not found"):
        await bot.edit_message_text("New", chat_id=USER, message_id=99)
    with pytest.raises(BadRequest, match="(?i)message is not modified"):
        await bot.edit_message_reply_markup(
            chat_id=USER, message_id=sent.message_id, reply_markup=keyboard(("A", "a"))
        )

    await bot.edit_message_reply_markup(chat_id=USER, message_id=sent.message_id)
    assert "reply_markup" not in api.last_message(USER)
    assert len(api.rejected) == 3


async def test_delete_message_and_chat_action(api: FakeBotAPI, bot: Bot) -> None:
    sent = await bot.send_message(USER, "bye")

    assert await bot.send_chat_action(USER, "typing")
    assert await bot.delete_message(USER, sent.message_id)
    assert api.messages(USER) == []
    with pytest.raises(BadRequest, match="(?i)message to delete not found"):
        await bot.delete_message(USER, sent.message_id)
    with pytest.raises(BadRequest, match="(?i)wrong parameter action"):
        await bot.send_chat_action(USER, "dancing")


async def test_reply_keyboards_are_tracked_per_chat(api: FakeBotAPI, bot: Bot) -> None:
    share = ReplyKeyboardMarkup([[KeyboardButton("Share phone", request_contact=True)]])

    sent = await bot.send_message(USER, "Your phone?", reply_markup=share)

    assert sent.reply_markup is None  # Telegram only echoes inline keyboards
    assert api.reply_keyboard(USER)["keyboard"][0][0]["request_contact"] is True
    await bot.send_message(USER, "Thanks", reply_markup=ReplyKeyboardRemove())
    assert api.reply_keyboard(USER) is None


async def test_a_one_time_keyboard_collapses_once_used_and_stays_available(
    api: FakeBotAPI, bot: Bot
) -> None:
    share = KeyboardButton("Share phone", request_contact=True)
    once = ReplyKeyboardMarkup([[share], ["Later"]], one_time_keyboard=True)
    await bot.send_message(USER, "Your phone?", reply_markup=once)
    api.user_message(USER, "+7 912 345-67-89")  # typed over it: not a button
    assert api.reply_keyboard_open(USER)
    api.user_contact(USER, "+79123456789", contact_user_id=USER + 1)  # someone else's card
    assert api.reply_keyboard_open(USER)
    api.user_contact(USER, "+79123456789")  # what the button sends
    assert not api.reply_keyboard_open(USER) and api.reply_keyboard(USER) is not None
    await bot.send_message(USER, "Again?", reply_markup=once)
    assert api.reply_keyboard_open(USER)
    api.user_message(USER, "Later")
    assert not api.reply_keyboard_open(USER)
    lasting = ReplyKeyboardMarkup([["Later"]])
    await bot.send_message(USER, "And now?", reply_markup=lasting)
    api.user_message(USER, "Later")
    assert api.reply_keyboard_open(USER), "only a one-time keyboard hides itself"


async def test_reply_parameters_must_point_at_an_existing_message(
    api: FakeBotAPI, bot: Bot
) -> None:
    update = api.user_message(USER, "question")

    reply = await bot.send_message(
        USER, "answer", reply_to_message_id=update["message"]["message_id"]
    )

    assert reply.reply_to_message.text == "question"
    with pytest.raises(BadRequest, match="(?i)message to be replied not found"):
        await bot.send_message(USER, "answer", reply_to_message_id=42)


# ------------------------------------------------------------------------ validation


async def test_text_over_4096_utf16_units_is_rejected(api: FakeBotAPI, bot: Bot) -> None:
    await bot.send_message(USER, "a" * 4096)
    await bot.send_message(USER, "\N{GRINNING FACE}" * 2048)  # 2 UTF-16 units each
    await bot.send_message(USER, "<b>" + "a" * 4096 + "</b>", parse_mode=ParseMode.HTML)
    assert api.rejected == []

    with pytest.raises(BadRequest, match="(?i)message is too long"):
        await bot.send_message(USER, "a" * 4097)
    with pytest.raises(BadRequest, match="(?i)message is too long"):
        await bot.send_message(USER, "\N{GRINNING FACE}" * 2049)

    assert [call.error for call in api.rejected] == ["Bad Request: message is too long"] * 2
    assert len(api.rejected[0].params["text"]) == 4097


async def test_empty_text_and_missing_chat_are_rejected(api: FakeBotAPI) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        url = f"{api.base_url}{TOKEN}/sendMessage"
        empty = await client.post(url, data={"chat_id": "1", "text": "  \n "})
        no_chat = await client.post(url, data={"text": "hi"})

    assert empty.json()["description"] == "Bad Request: message text is empty"
    assert no_chat.json()["description"] == "Bad Request: chat_id is empty"
    assert len(api.rejected) == 2


@pytest.mark.parametrize(
    ("data", "accepted"),
    [("x" * 64, True), ("x" * 65, False), ("é" * 32, True), ("é" * 33, False)],
)
async def test_callback_data_is_limited_to_64_bytes(
    api: FakeBotAPI, bot: Bot, data: str, accepted: bool
) -> None:
    send = bot.send_message(USER, "Pick", reply_markup=keyboard(("Pick", data)))

    if accepted:
        await send
        assert api.rejected == []
    else:
        with pytest.raises(BadRequest, match="(?i)BUTTON_DATA_INVALID"):
            await send
        assert api.rejected[0].error == "Bad Request: BUTTON_DATA_INVALID"


async def test_inline_buttons_need_text_and_an_action(api: FakeBotAPI) -> None:
    async def send(markup: dict) -> str:
        async with httpx.AsyncClient(trust_env=False) as client:
            response = await client.post(
                f"{api.base_url}{TOKEN}/sendMessage",
                data={"chat_id": "1", "text": "x", "reply_markup": json.dumps(markup)},
            )
        return response.json()["description"]

    text_only = await send({"inline_keyboard": [[{"text": "Hi"}]]})
    no_text = await send({"inline_keyboard": [[{"callback_data": "x"}]]})

    assert text_only.endswith("Text buttons are unallowed in the inline keyboard")
    assert no_text.endswith('Can\'t find field "text"')
    assert len(api.rejected) == 2


@pytest.mark.parametrize(
    ("html", "error"),
    [
        ("<b>bold", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<div>x</div>", 'Unsupported start tag "div" at byte offset 0'),
        ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ('<span class="red">x</span>', 'Tag "span" must have class "tg-spoiler"'),
        ("Tom & Jerry", 'Unescaped "&" at byte offset 4'),
    ],
)
async def test_malformed_html_is_rejected(api: FakeBotAPI, bot: Bot, html: str, error: str) -> None:
    with pytest.raises(BadRequest, match="(?i)parse entities"):
        await bot.send_message(USER, html, parse_mode=ParseMode.HTML)

    assert api.rejected[0].error.startswith("Bad Request: can't parse entities: ")
    assert error in api.rejected[0].error


async def test_well_formed_html_is_accepted_with_entities(api: FakeBotAPI, bot: Bot) -> None:
    html = (
        '<b>Bold</b> &amp; <i>it</i> &lt;3 <a href="https://example.org/?a=1&amp;b=2">link</a> '
        '<span class="tg-spoiler">s</span> <code>c</code> <pre><code class="language-py">'
        "p</code></pre> <blockquote expandable>q</blockquote> "
        '<tg-emoji emoji-id="5368324170671202286">\N{THUMBS UP SIGN}</tg-emoji>'
    )

    sent = await bot.send_message(USER, html, parse_mode=ParseMode.HTML)

    assert api.rejected == []
    assert sent.text == "Bold & it <3 link s c p q \N{THUMBS UP SIGN}"
    types = [(e.type, sent.parse_entity(e)) for e in sent.entities]
    assert types == [
        ("bold", "Bold"),
        ("italic", "it"),
        ("text_link", "link"),
        ("spoiler", "s"),
        ("code", "c"),
        ("pre", "p"),
        ("expandable_blockquote", "q"),
        ("custom_emoji", "\N{THUMBS UP SIGN}"),
    ]
    assert sent.entities[2].url == "https://example.org/?a=1&b=2"
    assert sent.entities[5].language == "py"


def test_html_parser_matches_tdlib_edge_cases() -> None:
    assert parse_html("&lt;&gt;&amp;&quot;&laquo;&#12345678;") == (
        '<>&"&laquo;&#12345678;',
        [],
    )
    assert parse_html("<i>a</>") == ("a", [{"type": "italic", "offset": 0, "length": 1}])
    text, entities = parse_html("\N{STADIUM} <b>\N{STADIUM}</b>")
    assert text == "\N{STADIUM} \N{STADIUM}"
    assert entities == [{"type": "bold", "offset": 3, "length": 2}]


async def test_captions_are_limited_to_1024(api: FakeBotAPI, bot: Bot) -> None:
    with pytest.raises(BadRequest, match="(?i)caption is too long"):
        await bot.send_document(USER, b"data", filename="a.txt", caption="c" * 1025)


async def test_set_my_commands_validates_commands(api: FakeBotAPI, bot: Bot) -> None:
    commands = [BotCommand("start", "Start over"), BotCommand("help", "Get help")]
    assert await bot.set_my_commands(commands)
    assert await bot.get_my_commands() == tuple(commands)
    assert api.my_commands() == [c.to_dict() for c in commands]

    with pytest.raises(BadRequest, match="(?i)BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand("Start-Over", "Start over")])
    with pytest.raises(BadRequest, match="(?i)description must be non-empty"):
        await bot.set_my_commands([BotCommand("start", " ")])
    with pytest.raises(BadRequest, match="(?i)description length must not exceed 256"):
        await bot.set_my_commands([BotCommand("start", "d" * 257)])
    with pytest.raises(BadRequest, match="(?i)BOT_COMMANDS_TOO_MUCH"):
        await bot.set_my_commands([BotCommand(f"c{i}", "d") for i in range(101)])
    assert len(api.rejected) == 4
    assert api.rejected[0].params["commands"] == [
        {"command": "Start-Over", "description": "Start over"}
    ]

    assert await bot.delete_my_commands()
    assert await bot.get_my_commands() == ()


async def test_assert_no_rejections_lists_rejected_calls(api: FakeBotAPI, bot: Bot) -> None:
    api.assert_no_rejections()
    with pytest.raises(BadRequest):
        await bot.send_message(USER, "")

    with pytest.raises(AssertionError, match=r"sendMessage -> 400 'Bad Request: message text"):
        api.assert_no_rejections()


# ------------------------------------------------------------------------ callbacks


async def test_answer_callback_query_for_an_injected_press(api: FakeBotAPI, bot: Bot) -> None:
    await bot.send_message(USER, "Pick", reply_markup=keyboard(("Yes", "y"), ("No", "n")))

    query_id = api.press_button(USER, "Yes")
    (update,) = await bot.get_updates()

    assert update.callback_query.id == query_id
    assert update.callback_query.data == "y"
    assert update.callback_query.from_user.id == USER
    assert update.callback_query.message.text == "Pick"
    with pytest.raises(BadRequest, match="(?i)MESSAGE_TOO_LONG"):
        await bot.answer_callback_query(query_id, text="x" * 201)
    assert await bot.answer_callback_query(query_id, text="Saved")
    assert api.callback_answers[query_id]["text"] == "Saved"
    with pytest.raises(BadRequest, match="(?i)query is too old"):
        await bot.answer_callback_query(query_id)
    with pytest.raises(BadRequest, match="(?i)query is too old"):
        await bot.answer_callback_query("12345")


async def test_user_callback_checks_the_button_exists(api: FakeBotAPI, bot: Bot) -> None:
    sent = await bot.send_message(USER, "Pick", reply_markup=keyboard(("Yes", "y")))

    with pytest.raises(LookupError, match="no button with callback_data 'gone'"):
        api.user_callback(USER, sent.message_id, "gone")
    with pytest.raises(LookupError, match="no inline button containing 'Maybe'"):
        api.find_button(USER, "Maybe")
    assert api.user_callback(USER, sent.message_id, "gone", check_button=False)


# ------------------------------------------------------------------------ updates


async def test_get_updates_honours_offset_and_limit(api: FakeBotAPI, bot: Bot) -> None:
    first = api.user_message(USER, "/start deep-link", language_code="ru", first_name="Anna")
    second = api.user_message(USER, "hello")

    updates = await bot.get_updates(limit=1)
    assert [u.update_id for u in updates] == [first["update_id"]]
    message = updates[0].message
    assert message.text == "/start deep-link"
    assert message.from_user.language_code == "ru"
    assert message.from_user.first_name == "Anna"
    assert message.entities[0].type == "bot_command"
    assert message.entities[0].length == len("/start")

    updates = await bot.get_updates(offset=first["update_id"] + 1)
    assert [u.update_id for u in updates] == [second["update_id"]]
    assert await bot.get_updates(offset=second["update_id"] + 1) == ()
    assert await bot.get_updates() == ()  # confirmed updates are gone


async def test_get_updates_filters_allowed_updates(api: FakeBotAPI, bot: Bot) -> None:
    api.user_message(USER, "text")
    sent = await bot.send_message(USER, "Pick", reply_markup=keyboard(("Yes", "y")))
    api.user_callback(USER, sent.message_id, "y")

    updates = await bot.get_updates(allowed_updates=["callback_query"])

    assert [u.callback_query.data for u in updates] == ["y"]


async def test_contact_document_photo_and_raw_updates(api: FakeBotAPI, bot: Bot) -> None:
    api.user_contact(USER, "+79990001122")
    api.user_document(USER, b"%PDF-1.4 fake", file_name="referral.pdf")
    api.user_photo(USER, caption="my rash")
    api.user_update(
        {
            "edited_message": {
                "message_id": 1,
                "date": 0,
                "chat": {"id": USER, "type": "private"},
                "text": "edited",
            }
        }
    )

    contact, document, photo, edited = await bot.get_updates()

    assert contact.message.contact.phone_number == "+79990001122"
    assert contact.message.contact.user_id == USER
    assert document.message.document.file_name == "referral.pdf"
    downloaded = await (await document.message.document.get_file()).download_as_bytearray()
    assert bytes(downloaded) == b"%PDF-1.4 fake"
    assert photo.message.caption == "my rash"
    assert photo.message.photo[-1].file_id
    assert edited.edited_message.text == "edited"
    assert edited.update_id == photo.update_id + 1


async def test_group_messages_and_kicked_bot(api: FakeBotAPI, bot: Bot) -> None:
    group = -1001234567890
    api.user_message(USER, "/help@intake_test_bot", chat_id=group, chat_type="supergroup")

    (update,) = await bot.get_updates()
    sent = await bot.send_message(group, "Help is on the way")

    assert update.message.chat.type == "supergroup"
    assert update.message.entities[0].length == len("/help@intake_test_bot")
    assert sent.chat.title == f"Chat {group}"
    api.block_chat(group)
    with pytest.raises(Forbidden, match="(?i)kicked from the group chat"):
        await bot.send_message(group, "Still here?")
    with pytest.raises(ValueError, match="needs an explicit chat_id"):
        api.user_message(USER, "hi", chat_type="group")


async def test_send_document_upload_round_trip(api: FakeBotAPI, bot: Bot) -> None:
    sent = await bot.send_document(
        USER, b"hello", filename="summary.txt", caption="<b>Hi</b>", parse_mode=ParseMode.HTML
    )

    upload = api.calls_of("sendDocument")[0].params["document"]
    assert upload.filename == "summary.txt"
    assert upload.content == b"hello"
    assert sent.document.file_name == "summary.txt"
    assert sent.caption == "Hi"
    file = await bot.get_file(sent.document.file_id)
    assert bytes(await file.download_as_bytearray()) == b"hello"
    photo = await bot.send_photo(USER, b"\xff\xd8fake")
    assert photo.photo[0].file_id


async def test_long_polling_returns_as_soon_as_an_update_arrives(api: FakeBotAPI, bot: Bot) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=10))
    await asyncio.sleep(0.2)
    assert not poll.done()

    started = time.monotonic()
    api.user_message(USER, "wake up")
    updates = await asyncio.wait_for(poll, 3)

    assert time.monotonic() - started < 1
    assert [u.message.text for u in updates] == ["wake up"]
    assert api.calls_of("getUpdates")[-1].params["timeout"] == 10


async def test_long_polling_times_out_with_no_updates(api: FakeBotAPI, bot: Bot) -> None:
    started = time.monotonic()

    assert await bot.get_updates(timeout=1) == ()

    assert 0.9 <= time.monotonic() - started < 3


async def test_a_new_poll_terminates_the_previous_one(api: FakeBotAPI, bot: Bot) -> None:
    other = Bot(TOKEN, base_url=api.base_url)
    async with other:
        first = asyncio.create_task(bot.get_updates(timeout=10))
        await asyncio.sleep(0.2)
        assert await other.get_updates(timeout=0) == ()
        with pytest.raises(Conflict, match="(?i)terminated by other getUpdates request"):
            await asyncio.wait_for(first, 3)
    assert api.rejected == []


# ------------------------------------------------------------------------ faults


@pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning")
async def test_fail_next_429_raises_retry_after(api: FakeBotAPI, bot: Bot) -> None:
    api.fail_next("sendMessage", retry_after=3)

    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(USER, "hi")

    assert seconds(caught.value.retry_after) == 3
    assert (await bot.send_message(USER, "hi")).text == "hi"
    failed, succeeded = api.calls_of("sendMessage")
    assert (failed.ok, failed.status, failed.rejected) == (False, 429, False)
    assert succeeded.ok
    assert api.rejected == []


@pytest.mark.parametrize("status", [500, 502])
async def test_fail_next_server_errors_raise_network_error(
    api: FakeBotAPI, bot: Bot, status: int
) -> None:
    api.fail_next("sendMessage", status=status, times=2)

    for _ in range(2):
        with pytest.raises(NetworkError):
            await bot.send_message(USER, "hi")
    assert await bot.send_message(USER, "hi")


async def test_blocked_chat_raises_forbidden(api: FakeBotAPI, bot: Bot) -> None:
    api.block_chat(USER)

    with pytest.raises(Forbidden, match="(?i)bot was blocked by the user"):
        await bot.send_message(USER, "hi")
    with pytest.raises(Forbidden):
        await bot.send_chat_action(USER, "typing")
    api.unblock_chat(USER)
    assert await bot.send_message(USER, "hi")
    assert api.rejected == []


# ------------------------------------------------------------------------ waiting


async def test_wait_for_consumes_each_call_once(api: FakeBotAPI, bot: Bot) -> None:
    async def bot_reacts() -> None:
        await asyncio.sleep(0.1)
        await bot.send_message(USER, "one")
        await bot.send_message(USER, "two")

    task = asyncio.create_task(bot_reacts())
    first = await api.wait_for("sendMessage")
    second = await api.wait_for("sendmessage")
    await task

    assert (first.params["text"], second.params["text"]) == ("one", "two")
    with pytest.raises(AssertionError, match="no sendMessage call matching within 0.1s"):
        await api.wait_for("sendMessage", timeout=0.1)
    two = await api.wait_for(None, lambda call: True, timeout=0.1)
    assert two.method == "getMe"  # earlier calls of other methods are still unconsumed


async def test_wait_idle_waits_for_updates_to_be_fetched(api: FakeBotAPI, bot: Bot) -> None:
    api.user_message(USER, "hi")
    with pytest.raises(AssertionError, match="1 update"):
        await api.wait_idle(timeout=0.2)

    await bot.get_updates()
    await api.wait_idle(quiet=0.05, timeout=1)


async def test_wait_idle_asks_the_bot_whether_it_is_done_instead_of_a_quiet_gap(
    api: FakeBotAPI, bot: Bot
) -> None:
    done = False

    async def is_done() -> bool:
        return done

    stop_asking = api.settle_with(is_done)
    api.user_message(USER, "one")
    [first] = await bot.get_updates()
    with pytest.raises(AssertionError, match="not done"):  # fetched, not confirmed
        await api.wait_idle(quiet=0.01, timeout=0.3)
    await bot.get_updates(offset=first.update_id + 1)
    with pytest.raises(AssertionError, match="not done"):  # quiet, but the bot is busy
        await api.wait_idle(quiet=0.01, timeout=0.3)
    done = True
    await api.wait_idle(timeout=1)
    done = False
    stop_asking()
    await api.wait_idle(quiet=0.01, timeout=1)  # no bot to ask: a quiet gap again


# ------------------------------------------------------------------------ webhook


async def test_webhook_registration_and_push(api: FakeBotAPI, bot: Bot) -> None:
    received: list[tuple[dict, str | None]] = []

    class Receiver(tornado.web.RequestHandler):
        def post(self) -> None:
            secret = self.request.headers.get("X-Telegram-Bot-Api-Secret-Token")
            received.append((json.loads(self.request.body), secret))
            self.set_status(200 if secret == "s3cret" else 403)

    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(tornado.web.Application([("/hook", Receiver)]))
    server.add_sockets(sockets)
    url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/hook"
    try:
        assert await bot.set_webhook(url, secret_token="s3cret")
        assert api.webhook_url == url
        assert (await bot.get_webhook_info()).url == url
        with pytest.raises(Conflict, match="(?i)webhook is active"):
            await bot.get_updates()

        update = api.user_message(USER, "via webhook")
        assert await api.push_webhook(update) == 200
        assert await api.push_webhook(update, secret_token=None) == 403
        assert await api.push_webhook(update, secret_token="wrong") == 403
        assert received[0] == (update, "s3cret")
        assert received[1][1] is None
        assert (await bot.get_webhook_info()).pending_update_count == 0

        with pytest.raises(BadRequest, match="(?i)HTTPS URL must be provided"):
            await bot.set_webhook("http://example.org/hook")
        assert await bot.delete_webhook()
        assert api.webhook_url is None
    finally:
        server.stop()


# ------------------------------------------------------------------------ a whole Application


def build_application(api: FakeBotAPI) -> Application:
    """A tiny PTB Application (no project code) wired to the fake server."""

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.message.reply_text(
            "Hi <b>there</b>", parse_mode=ParseMode.HTML, reply_markup=keyboard(("Go", "go"))
        )

    async def go(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.callback_query.answer("Going")
        await update.callback_query.edit_message_text("Gone")

    application = (
        ApplicationBuilder()
        .token(TOKEN)
        .base_url(api.base_url)
        .base_file_url(api.base_file_url)
        .build()
    )
    application.add_handler(CommandHandler("start", start))
    application.add_handler(CallbackQueryHandler(go))
    return application


async def test_application_long_polling_end_to_end(api: FakeBotAPI) -> None:
    application = build_application(api)
    async with application:
        await application.start()
        await application.updater.start_polling(poll_interval=0, timeout=5)

        api.user_message(USER, "/start")
        await api.wait_for("sendMessage")
        assert api.last_message(USER)["text"] == "Hi there"
        api.press_button(USER, "Go")
        answer = await api.wait_for("answerCallbackQuery")
        await api.wait_for("editMessageText")

        await application.updater.stop()
        await application.stop()

    assert answer.params["text"] == "Going"
    assert api.last_message(USER)["text"] == "Gone"
    assert api.calls_of("deleteWebhook")[0].ok
    api.assert_no_rejections()


async def test_application_webhook_end_to_end(api: FakeBotAPI) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    application = build_application(api)
    async with application:
        await application.start()
        await application.updater.start_webhook(
            listen="127.0.0.1",
            port=port,
            url_path="hook",
            webhook_url=f"http://127.0.0.1:{port}/hook",
            secret_token="s3cret",
        )
        assert api.webhook_secret_token == "s3cret"

        api.user_message(USER, "/start")
        assert await api.push_pending_webhook() == [200]
        await api.wait_for("sendMessage")
        api.press_button(USER, "Go")
        assert await api.push_pending_webhook() == [200]
        await api.wait_for("editMessageText")
        assert await api.push_webhook({"message": {}}, secret_token="forged") == 403

        await application.updater.stop()
        await application.stop()

    assert api.last_message(USER)["text"] == "Gone"
    api.assert_no_rejections()

"""Bot API checks the fake server applies, with Telegram's limits and error descriptions."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

MESSAGE_TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
CALLBACK_ANSWER_TEXT_LIMIT = 200
CALLBACK_DATA_LIMIT_BYTES = 64
COMMANDS_LIMIT = 100
COMMAND_LENGTH_LIMIT = 32
COMMAND_DESCRIPTION_LIMIT = 256

NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly "
    "the same as a current content and reply markup of the message"
)

# Parameters that are strings in the Bot API. PTB sends strings as they are and everything
# else JSON-encoded, so only these must never be JSON-decoded (a text of "123" stays a str).
STRING_PARAMS = frozenset(
    {
        "action",
        "address",
        "business_connection_id",
        "callback_query_id",
        "caption",
        "currency",
        "custom_title",
        "description",
        "emoji",
        "error_message",
        "explanation",
        "explanation_parse_mode",
        "file_id",
        "first_name",
        "foursquare_id",
        "foursquare_type",
        "game_short_name",
        "google_place_id",
        "google_place_type",
        "inline_message_id",
        "inline_query_id",
        "invite_link",
        "ip_address",
        "language_code",
        "last_name",
        "message_effect_id",
        "name",
        "next_offset",
        "parse_mode",
        "payload",
        "phone_number",
        "pre_checkout_query_id",
        "provider_token",
        "query",
        "question",
        "question_parse_mode",
        "result_id",
        "secret_token",
        "shipping_query_id",
        "short_description",
        "start_parameter",
        "text",
        "title",
        "url",
        "vcard",
        "web_app_query_id",
    }
)

# The parameters each method takes (Bot API 9.2, checked against PTB 22's Bot methods).
# Telegram itself ignores a parameter a method does not take; the fake refuses it, because
# it means the bot believes something happens that does not (e.g. parse_mode on an edit of
# the keyboard alone). The old reply_to_message_id, allow_sending_without_reply and
# disable_web_page_preview are still accepted by Telegram and so here.
_SEND_COMMON = frozenset(
    {
        "business_connection_id",
        "chat_id",
        "message_thread_id",
        "direct_messages_topic_id",
        "disable_notification",
        "protect_content",
        "allow_paid_broadcast",
        "message_effect_id",
        "suggested_post_parameters",
        "reply_parameters",
        "reply_markup",
        "reply_to_message_id",
        "allow_sending_without_reply",
    }
)
_CAPTIONED = frozenset({"caption", "parse_mode", "caption_entities"})
_COMMAND_SCOPE = frozenset({"scope", "language_code"})
METHOD_PARAMS: dict[str, frozenset[str]] = {
    "getUpdates": frozenset({"offset", "limit", "timeout", "allowed_updates"}),
    "setWebhook": frozenset(
        {
            "url",
            "certificate",
            "ip_address",
            "max_connections",
            "allowed_updates",
            "drop_pending_updates",
            "secret_token",
        }
    ),
    "deleteWebhook": frozenset({"drop_pending_updates"}),
    "getWebhookInfo": frozenset(),
    "getMe": frozenset(),
    "logOut": frozenset(),
    "close": frozenset(),
    "setMyCommands": frozenset({"commands"}) | _COMMAND_SCOPE,
    "getMyCommands": _COMMAND_SCOPE,
    "deleteMyCommands": _COMMAND_SCOPE,
    "setMyName": frozenset({"name", "language_code"}),
    "setMyDescription": frozenset({"description", "language_code"}),
    "setMyShortDescription": frozenset({"short_description", "language_code"}),
    "sendMessage": _SEND_COMMON
    | {"text", "parse_mode", "entities", "link_preview_options", "disable_web_page_preview"},
    "sendPhoto": _SEND_COMMON | _CAPTIONED | {"photo", "show_caption_above_media", "has_spoiler"},
    "sendDocument": _SEND_COMMON
    | _CAPTIONED
    | {"document", "thumbnail", "disable_content_type_detection"},
    "sendChatAction": frozenset(
        {"business_connection_id", "chat_id", "message_thread_id", "action"}
    ),
    "editMessageText": frozenset(
        {
            "business_connection_id",
            "chat_id",
            "message_id",
            "inline_message_id",
            "text",
            "parse_mode",
            "entities",
            "link_preview_options",
            "disable_web_page_preview",
            "reply_markup",
        }
    ),
    "editMessageReplyMarkup": frozenset(
        {"business_connection_id", "chat_id", "message_id", "inline_message_id", "reply_markup"}
    ),
    "deleteMessage": frozenset({"chat_id", "message_id"}),
    "answerCallbackQuery": frozenset(
        {"callback_query_id", "text", "show_alert", "url", "cache_time"}
    ),
    "getFile": frozenset({"file_id"}),
    "getChatMember": frozenset({"chat_id", "user_id"}),
}

CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)

INLINE_BUTTON_ACTIONS = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)

_COMMAND_RE = re.compile(r"[a-z0-9_]+")
_SPACES = b" \t\r\n\v\0"
_TRIM_CHARS = " \t\r\n\v"


class ApiError(Exception):
    """An error response of the Bot API: HTTP status, description and optional parameters.

    ``rejected`` marks errors that the fake raised because the request broke a Bot API rule;
    errors injected by the test (``fail_next``, ``block_chat``) are not rejections.
    """

    def __init__(
        self,
        status: int,
        description: str,
        *,
        parameters: dict[str, Any] | None = None,
        rejected: bool = True,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters
        self.rejected = rejected

    def body(self) -> dict[str, Any]:
        """Return the JSON body Telegram sends for this error."""
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def bad_request(description: str) -> ApiError:
    """Build a 400 error with Telegram's "Bad Request: " prefix."""
    return ApiError(400, f"Bad Request: {description}")


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units, the unit of all Telegram offsets and limits."""
    return len(text.encode("utf-16-le")) // 2


# --------------------------------------------------------------------------- parameters


def decode_form_value(name: str, value: str) -> Any:
    """Decode one form field the way PTB encoded it: JSON for everything but plain strings."""
    if name in STRING_PARAMS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def check_params(method: str, params: dict[str, Any]) -> None:
    """Refuse parameters ``method`` does not take (Telegram would silently ignore them)."""
    allowed = METHOD_PARAMS.get(method)
    if allowed is None:
        return
    unknown = sorted(name for name in params if name not in allowed)
    if unknown:
        raise bad_request(
            f"{method} does not take the parameter(s) {', '.join(unknown)} (Telegram would "
            "ignore them; the fake is stricter)"
        )


# --------------------------------------------------------------------------- HTML


class EntityParseError(Exception):
    """Telegram's "can't parse entities" error, with the parser's message."""


@dataclass
class _OpenTag:
    name: str
    argument: str
    utf16_offset: int
    begin_pos: int


_SIMPLE_TAG_ENTITIES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "code": "code",
    "pre": "pre",
}
_HTML_TAGS = frozenset({*_SIMPLE_TAG_ENTITIES, "a", "blockquote", "tg-emoji"})


def _decode_html_entity(data: bytes, pos: int) -> tuple[str | None, int]:
    """Decode ``&lt;``, ``&gt;``, ``&amp;``, ``&quot;`` and numeric references like TDLib."""

    def at(i: int) -> int:
        return data[i] if i < len(data) else 0

    end = pos + 1
    code = 0
    if at(end) == ord("#"):
        end += 1
        if at(end) in (ord("x"), ord("X")):
            end += 1
            while chr(at(end)) in "0123456789abcdefABCDEF":
                code = code * 16 + int(chr(at(end)), 16)
                end += 1
        else:
            while ord("0") <= at(end) <= ord("9"):
                code = code * 10 + at(end) - ord("0")
                end += 1
        if code == 0 or code >= 0x10FFFF or end - pos >= 10:
            return None, pos
        if 0xD800 <= code <= 0xDFFF:
            raise EntityParseError(
                "Text contains invalid Unicode characters after decoding HTML entities, "
                "check for unmatched surrogate code units"
            )
        char = chr(code)
    else:
        while chr(at(end)).isascii() and chr(at(end)).isalpha():
            end += 1
        named = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
        char = named.get(data[pos + 1 : end].decode("ascii"), "")
        if not char:
            return None, pos
    if at(end) == ord(";"):
        end += 1
    return char, end


def parse_html(text: str, *, strict_ampersand: bool = False) -> tuple[str, list[dict[str, Any]]]:
    """Parse Telegram's HTML flavour into plain text and MessageEntity dicts.

    Follows TDLib's ``parse_html``: the same supported tags, the same error messages (byte
    offsets into the UTF-8 text) and UTF-16 entity offsets. With ``strict_ampersand`` a ``&``
    that does not start an entity is an error too (Telegram keeps it as a literal ``&``).
    """
    data = text.encode("utf-8")
    size = len(data)

    def at(i: int) -> int:
        return data[i] if i < size else 0

    pieces: list[str] = []
    utf16 = 0
    stack: list[_OpenTag] = []
    entities: list[dict[str, Any]] = []
    i = 0
    while i < size:
        char = data[i]
        if char == ord("&"):
            decoded, end = _decode_html_entity(data, i)
            if decoded is not None:
                pieces.append(decoded)
                utf16 += utf16_len(decoded)
                i = end
                continue
            if strict_ampersand:
                raise EntityParseError(
                    f'Unescaped "&" at byte offset {i} (the fake is stricter than Telegram here: '
                    "escape it as &amp;)"
                )
        if char != ord("<"):
            end = i + 1
            while end < size and data[end] not in b"&<":
                end += 1
            chunk = data[i:end].decode("utf-8")
            pieces.append(chunk)
            utf16 += utf16_len(chunk)
            i = end
            continue

        begin = i
        i += 1
        if at(i) != ord("/"):
            while at(i) not in _SPACES and at(i) != ord(">"):
                i += 1
            if at(i) == 0:
                raise EntityParseError(f"Unclosed start tag at byte offset {begin}")
            tag = data[begin + 1 : i].decode("utf-8", "replace").lower()
            if tag not in _HTML_TAGS:
                raise EntityParseError(f'Unsupported start tag "{tag}" at byte offset {begin}')
            argument = ""
            while at(i) != ord(">"):
                while at(i) != 0 and at(i) in _SPACES:
                    i += 1
                if at(i) == ord(">"):
                    break
                attr_begin = i
                while at(i) not in _SPACES and at(i) not in b"=>":
                    i += 1
                attr_name = data[attr_begin:i].decode("utf-8", "replace").lower()
                if not attr_name:
                    raise EntityParseError(
                        f'Empty attribute name in the tag "{tag}" at byte offset {begin}'
                    )
                while at(i) != 0 and at(i) in _SPACES:
                    i += 1
                if at(i) != ord("="):
                    if tag == "blockquote" and attr_name == "expandable":
                        argument = "1"
                        continue
                    raise EntityParseError(
                        "Expected equal sign in declaration of an attribute of the tag "
                        f'"{tag}" at byte offset {begin}'
                    )
                i += 1
                while at(i) != 0 and at(i) in _SPACES:
                    i += 1
                if at(i) == 0:
                    raise EntityParseError(f'Unclosed start tag "{tag}" at byte offset {begin}')
                if at(i) not in b"'\"":
                    token_begin = i
                    while chr(at(i)).isascii() and (chr(at(i)).isalnum() or at(i) in b".-"):
                        i += 1
                    value = data[token_begin:i].decode("ascii").lower()
                    if at(i) not in _SPACES and at(i) != ord(">"):
                        raise EntityParseError(
                            f"Unexpected end of name token at byte offset {token_begin}"
                        )
                else:
                    quote = at(i)
                    i += 1
                    value_pieces: list[str] = []
                    while at(i) != quote and at(i) != 0:
                        if at(i) == ord("&"):
                            decoded, end = _decode_html_entity(data, i)
                            if decoded is not None:
                                value_pieces.append(decoded)
                                i = end
                                continue
                        end = i + 1
                        while end < size and data[end] not in (quote, ord("&")):
                            end += 1
                        value_pieces.append(data[i:end].decode("utf-8", "replace"))
                        i = end
                    if at(i) == quote:
                        i += 1
                    value = "".join(value_pieces)
                if at(i) == 0:
                    raise EntityParseError(f"Unclosed start tag at byte offset {begin}")
                argument = _tag_argument(tag, attr_name, value, argument)
            if tag == "span" and argument != "spoiler":
                raise EntityParseError(
                    f'Tag "span" must have class "tg-spoiler" at byte offset {begin}'
                )
            stack.append(_OpenTag(tag, argument, utf16, begin))
            i += 1  # skip ">"
            continue

        # An end tag.
        if not stack:
            raise EntityParseError(f"Unexpected end tag at byte offset {begin}")
        while at(i) not in _SPACES and at(i) != ord(">"):
            i += 1
        end_name = data[begin + 2 : i].decode("utf-8", "replace").lower()
        while at(i) != 0 and at(i) in _SPACES:
            i += 1
        if at(i) != ord(">"):
            raise EntityParseError(f"Unclosed end tag at byte offset {begin}")
        opened = stack.pop()
        if end_name and end_name != opened.name:
            raise EntityParseError(
                f'Unmatched end tag at byte offset {begin}, expected "</{opened.name}>", '
                f'found "</{end_name}>"'
            )
        _close_tag(opened, utf16, entities)
        i += 1  # skip ">"

    if stack:
        raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1].name}"')
    entities.sort(key=lambda entity: (entity["offset"], -entity["length"]))
    return "".join(pieces), entities


def _tag_argument(tag: str, attr_name: str, value: str, current: str) -> str:
    if tag == "a" and attr_name == "href":
        return value
    if tag == "code" and attr_name == "class" and value.startswith("language-"):
        return value.removeprefix("language-")
    if tag == "span" and attr_name == "class" and value.startswith("tg-"):
        return value.removeprefix("tg-")
    if tag == "tg-emoji" and attr_name == "emoji-id":
        return value
    if tag == "blockquote" and attr_name == "expandable":
        return "1"
    return current


def _close_tag(opened: _OpenTag, utf16_end: int, entities: list[dict[str, Any]]) -> None:
    if opened.name == "tg-emoji" and not (
        opened.argument.isdigit() and 0 < int(opened.argument) < 2**63
    ):
        raise EntityParseError("Invalid custom emoji identifier specified")
    length = utf16_end - opened.utf16_offset
    if length == 0:
        return
    entity: dict[str, Any] = {"offset": opened.utf16_offset, "length": length}
    if opened.name in _SIMPLE_TAG_ENTITIES:
        entity["type"] = _SIMPLE_TAG_ENTITIES[opened.name]
    elif opened.name == "a":
        if not opened.argument:
            return
        entity["type"] = "text_link"
        entity["url"] = opened.argument
    elif opened.name == "blockquote":
        entity["type"] = "expandable_blockquote" if opened.argument else "blockquote"
    else:  # tg-emoji
        entity["type"] = "custom_emoji"
        entity["custom_emoji_id"] = opened.argument

    # <pre><code class="language-x"> over the same text is one "pre" entity with a language.
    if entities and opened.name in ("pre", "code"):
        inner = entities[-1]
        same_range = (inner["offset"], inner["length"]) == (entity["offset"], length)
        language = opened.argument if opened.name == "code" else inner.get("_language", "")
        if same_range and {inner["type"], entity["type"]} == {"pre", "code"} and language:
            entities[-1] = {"type": "pre", "offset": entity["offset"], "length": length}
            entities[-1]["language"] = language
            return
    if opened.name == "code" and opened.argument:
        entity["_language"] = opened.argument
    entities.append(entity)


def prepare_text(
    text: Any,
    parse_mode: Any,
    entities: Any,
    *,
    limit: int,
    allow_empty: bool,
    strict_ampersand: bool,
    empty_error: str = "message text is empty",
    too_long_error: str = "message is too long",
) -> tuple[str, list[dict[str, Any]]]:
    """Turn text + parse_mode (or explicit entities) into what Telegram stores, or raise.

    Like Telegram, leading and trailing whitespace is trimmed, the limit is counted in UTF-16
    code units after entity parsing, and explicit ``entities`` win over ``parse_mode``.
    Markdown and MarkdownV2 are accepted but not parsed (their markup counts as text).
    """
    if text is None or text == "":
        if allow_empty:
            return "", []
        raise bad_request(empty_error)
    text = str(text)
    mode = str(parse_mode or "").lower()
    if mode not in ("", "html", "markdown", "markdownv2"):
        raise bad_request("unsupported parse_mode")
    if isinstance(entities, list):
        plain, parsed = text, [dict(entity) for entity in entities]
    elif mode == "html":
        try:
            plain, parsed = parse_html(text, strict_ampersand=strict_ampersand)
        except EntityParseError as exc:
            raise bad_request(f"can't parse entities: {exc}") from None
    else:
        plain, parsed = text, []
    for entity in parsed:
        entity.pop("_language", None)

    stripped = plain.lstrip(_TRIM_CHARS)
    shift = utf16_len(plain) - utf16_len(stripped)
    plain = stripped.rstrip(_TRIM_CHARS)
    if not plain and not allow_empty:
        raise bad_request(empty_error)
    total = utf16_len(plain)
    if total > limit:
        raise bad_request(too_long_error)
    trimmed: list[dict[str, Any]] = []
    for entity in parsed:
        start = max(entity["offset"] - shift, 0)
        end = min(entity["offset"] + entity["length"] - shift, total)
        if end > start:
            trimmed.append({**entity, "offset": start, "length": end - start})
    return plain, trimmed


# --------------------------------------------------------------------------- reply markup


def validate_reply_markup(markup: Any) -> str | None:
    """Check a reply_markup like Telegram; return its kind.

    Kinds: ``"inline"``, ``"keyboard"``, ``"remove"``, ``"force_reply"``, or None if absent.
    """
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise bad_request("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in markup:
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise bad_request(
                'Field "inline_keyboard" of the InlineKeyboardMarkup should be an Array of Arrays'
            )
        for row in rows:
            for button in row:
                _validate_inline_button(button)
        return "inline"
    if "keyboard" in markup:
        rows = markup["keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise bad_request('Field "keyboard" of the ReplyKeyboardMarkup should be an Array')
        for row in rows:
            for button in row:
                label = button.get("text") if isinstance(button, dict) else button
                if not isinstance(label, str):
                    raise bad_request(
                        'can\'t parse keyboard button: Field "text" must be of type String'
                    )
                if not label:
                    raise bad_request("BUTTON_TEXT_INVALID")
        return "keyboard"
    if markup.get("remove_keyboard"):
        return "remove"
    if markup.get("force_reply"):
        return "force_reply"
    raise bad_request("can't parse reply keyboard markup JSON object")


def _validate_inline_button(button: Any) -> None:
    prefix = "can't parse inline keyboard button: "
    if not isinstance(button, dict):
        raise bad_request(prefix + "InlineKeyboardButton must be an Object")
    if "text" not in button:
        raise bad_request(prefix + 'Can\'t find field "text"')
    if not isinstance(button["text"], str):
        raise bad_request(prefix + 'Field "text" must be of type String')
    if not button["text"].strip():
        raise bad_request("BUTTON_TEXT_INVALID")
    actions = [name for name in INLINE_BUTTON_ACTIONS if button.get(name) is not None]
    if not actions:
        raise bad_request(prefix + "Text buttons are unallowed in the inline keyboard")
    if "callback_data" in actions:
        data = button["callback_data"]
        if not isinstance(data, str):
            raise bad_request(prefix + 'Field "callback_data" must be of type String')
        if not 1 <= len(data.encode("utf-8")) <= CALLBACK_DATA_LIMIT_BYTES:
            raise bad_request("BUTTON_DATA_INVALID")
    if "url" in actions and not str(button["url"]).strip():
        raise bad_request("BUTTON_URL_INVALID")


def inline_buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    """All inline keyboard buttons of a stored message, row by row."""
    markup = message.get("reply_markup") or {}
    return [button for row in markup.get("inline_keyboard", []) for button in row]


# --------------------------------------------------------------------------- commands


def validate_commands(commands: Any) -> list[dict[str, str]]:
    """Check setMyCommands' ``commands`` like TDLib and return them normalised."""
    if not isinstance(commands, list):
        raise bad_request("can't parse commands JSON object")
    if len(commands) > COMMANDS_LIMIT:
        raise bad_request("BOT_COMMANDS_TOO_MUCH")
    normalised = []
    for item in commands:
        if not isinstance(item, dict):
            raise bad_request("can't parse BotCommand: expected an Object")
        for field in ("command", "description"):
            if field not in item:
                raise bad_request(f"can't parse BotCommand: Can't find field \"{field}\"")
            if not isinstance(item[field], str):
                raise bad_request(
                    f'can\'t parse BotCommand: Field "{field}" must be of type String'
                )
        command = item["command"].strip(_TRIM_CHARS).removeprefix("/")
        description = item["description"].strip(_TRIM_CHARS)
        if not command:
            raise bad_request("command must be non-empty")
        if len(command) > COMMAND_LENGTH_LIMIT:
            raise bad_request(f"command length must not exceed {COMMAND_LENGTH_LIMIT}")
        if not description:
            raise bad_request("command description must be non-empty")
        if len(description) > COMMAND_DESCRIPTION_LIMIT:
            raise bad_request(
                f"command description length must not exceed {COMMAND_DESCRIPTION_LIMIT}"
            )
        if not _COMMAND_RE.fullmatch(command):
            raise bad_request("BOT_COMMAND_INVALID")
        normalised.append({"command": command, "description": description})
    return normalised


_BOT_COMMAND_RE = re.compile(r"(?<![\w/])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?")


def bot_command_entities(text: str) -> list[dict[str, Any]]:
    """The ``bot_command`` entities Telegram attaches to a user's text (needed by PTB filters)."""
    return [
        {
            "type": "bot_command",
            "offset": utf16_len(text[: match.start()]),
            "length": utf16_len(match.group()),
        }
        for match in _BOT_COMMAND_RE.finditer(text)
    ]

"""The outbox stores a keyboard exactly as python-telegram-bot would send it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from telegram import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
)

from bot.outbox import markup_dict

_text = st.text(min_size=1, max_size=20)
_button = st.one_of(
    st.builds(lambda t, d: InlineKeyboardButton(t, callback_data=d), _text, _text),
    st.builds(lambda t, u: InlineKeyboardButton(t, url=f"https://example.org/{u}"), _text, _text),
    st.builds(lambda t: InlineKeyboardButton(t, copy_text={"text": t}), _text),
    st.builds(
        lambda t, d: InlineKeyboardButton(t, callback_data=d, api_kwargs={"style": "primary"}),
        _text,
        _text,
    ),
)


@given(st.lists(st.lists(_button, min_size=1, max_size=4), max_size=5))
def test_an_inline_keyboard_is_stored_as_ptb_would_send_it(
    rows: list[list[InlineKeyboardButton]],
) -> None:
    markup = InlineKeyboardMarkup(rows)
    # the same fields in the same order, so the same JSON
    assert list(_items(markup_dict(markup))) == list(_items(markup.to_dict()))


def _items(value: object) -> object:
    """A dict's items in order, all the way down (== on dicts ignores the order)."""
    if isinstance(value, dict):
        return [(key, _items(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [_items(item) for item in value]
    return value


def test_othermarkup_dicts_are_stored_as_ptb_would_send_them() -> None:
    share = ReplyKeyboardMarkup(
        [[KeyboardButton("Share", request_contact=True)]], one_time_keyboard=True
    )
    for markup in (share, ReplyKeyboardRemove()):
        assert markup_dict(markup) == markup.to_dict()
    assert markup_dict(None) is None

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

from bot.outbox import _markup

_text = st.text(min_size=1, max_size=20)
_button = st.one_of(
    st.builds(lambda t, d: InlineKeyboardButton(t, callback_data=d), _text, _text),
    st.builds(lambda t, u: InlineKeyboardButton(t, url=f"https://example.org/{u}"), _text, _text),
    st.builds(lambda t: InlineKeyboardButton(t, copy_text={"text": t}), _text),
)


@given(st.lists(st.lists(_button, min_size=1, max_size=4), max_size=5))
def test_an_inline_keyboard_is_stored_as_ptb_would_send_it(
    rows: list[list[InlineKeyboardButton]],
) -> None:
    markup = InlineKeyboardMarkup(rows)
    assert _markup(markup) == markup.to_dict()


def test_other_markups_are_stored_as_ptb_would_send_them() -> None:
    share = ReplyKeyboardMarkup(
        [[KeyboardButton("Share", request_contact=True)]], one_time_keyboard=True
    )
    for markup in (share, ReplyKeyboardRemove()):
        assert _markup(markup) == markup.to_dict()
    assert _markup(None) is None

"""The terminal chat: the real engine and the real database, driven from a keyboard."""

from __future__ import annotations

import re
from collections.abc import Callable

from bot.service import advance
from flows import Alert as EngineAlert
from flows import (
    Back,
    Button,
    Flow,
    Input,
    Lang,
    Message,
    Restart,
    SaveRequest,
    TextInput,
    decode,
    plain_text,
    t,
)
from flows import Begin as EngineBegin
from storage import AsyncSession, create_client

__all__ = ["run_chat"]

_MARKS_RE = re.compile(r"^[^\w(«“\"]+")
_QUIT = {"quit", "q", "exit", "выход"}
_BACK = {"back", "b", "назад"}
_RESTART = {"restart", "заново"}


def _show(message: Message, out: Callable[[str], None]) -> list[Button]:
    """Print a message with numbered buttons; return the numbered buttons."""
    out("")
    out(plain_text(message.text))
    numbered: list[Button] = []
    for row in message.buttons:
        for button in row:
            if button.data.startswith(("b:", "r:")):
                continue
            numbered.append(button)
            out(f"  {len(numbered)}) {button.label}")
    return numbered


def _bare(label: str) -> str:
    """A label without its leading marks (✅, ▫️, arrows), for matching typed text."""
    return _MARKS_RE.sub("", label).strip().casefold()


def _parse(line: str, buttons: list[Button], seq: int) -> Input | None:
    word = line.strip().casefold()
    if word in _BACK:
        return Back(seq)
    if word in _RESTART:
        return Restart(seq)
    if word.isdigit() and buttons:
        index = int(word) - 1
        if 0 <= index < len(buttons):
            return decode(buttons[index].data)
        return None
    matches = [b for b in buttons if _bare(b.label) == _bare(line)]
    if len(matches) == 1:
        return decode(matches[0].data)
    return TextInput(line)


async def run_chat(
    *,
    sessionmaker: Callable[[], AsyncSession],
    flow: Flow,
    lang: Lang,
    read: Callable[[str], str] = input,
    out: Callable[[str], None] = print,
) -> list[int]:
    """Run one terminal conversation until quit or end of input; return the saved request ids.

    Every line it prints, the closing one included, is in the conversation's language.
    """
    async with sessionmaker() as session, session.begin():
        client = await create_client(
            session=session, telegram_id=None, channel="terminal", language=lang
        )
        assert client.id is not None
        client_id = client.id
    out(t("chat.hint", lang))
    saved: list[int] = []
    buttons: list[Button] = []
    inp: Input | None = EngineBegin()
    seq = 0
    while True:
        if inp is not None:
            async with sessionmaker() as session, session.begin():
                result = await advance(
                    session=session, flow=flow, client_id=client_id, inp=inp, lang=lang
                )
            seq = result.state.seq
            for reply in result.replies:
                if isinstance(reply, Message):
                    shown = _show(reply, out)
                    if reply.buttons:
                        buttons = shown
                elif isinstance(reply, EngineAlert):
                    out(f"! {plain_text(reply.text)}")
                elif isinstance(reply, SaveRequest) and result.request_id is not None:
                    saved.append(result.request_id)
                    out("\n" + t("chat.saved", lang, id=result.request_id))
        try:
            line = read("> ")
        except EOFError:
            break
        if line.strip().casefold() in _QUIT:
            break
        inp = _parse(line, buttons, seq)
        if inp is None:
            out("! " + t("chat.no_number", lang))
    if saved:
        ids = ", ".join(t("chat.number", lang, id=i) for i in saved)
        out("\n" + t("chat.all_saved", lang, ids=ids))
    else:
        out("\n" + t("chat.none_saved", lang))
    return saved

"""Validate the small HTML subset Telegram accepts in messages sent with parse_mode=HTML."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

__all__ = ["html_problem", "plain_text"]

_ALLOWED = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del",
    "a", "code", "pre", "tg-spoiler", "span", "blockquote", "tg-emoji",
}  # fmt: skip
_ENTITY_RE = re.compile(r"&(?!(?:lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);)")
_TAG_RE = re.compile(r"<[^>]+>")


class _Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.problem: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _ALLOWED:
            self.problem = self.problem or f"the tag <{tag}> is not allowed in Telegram messages"
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problem = self.problem or f"the closing tag </{tag}> does not match an opening tag"
            return
        self.stack.pop()


def html_problem(text: str) -> str | None:
    """Return why Telegram would reject ``text`` as HTML, or None if it is fine."""
    if _ENTITY_RE.search(text):
        return "a bare '&' must be written as &amp;"
    stripped = _TAG_RE.sub("", text)
    if "<" in stripped or ">" in stripped:
        return "a bare '<' or '>' must be written as &lt; or &gt;"
    checker = _Checker()
    checker.feed(text)
    checker.close()
    if checker.problem:
        return checker.problem
    if checker.stack:
        return f"the tag <{checker.stack[-1]}> is never closed"
    return None


def plain_text(text: str) -> str:
    """Return ``text`` without tags and with entities decoded (for terminals and lengths)."""
    return html.unescape(_TAG_RE.sub("", text))

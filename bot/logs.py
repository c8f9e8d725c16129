"""Logging that keeps the promise at every level: no answers, names, phones or bot token.

Our own code logs ids only. Libraries do not: at DEBUG the HTTP client logs every request
URL (which holds the token) and body, PTB logs whole updates (names, usernames, texts), and
the database drivers log query parameters (answers, phones). So their loggers are capped at
WARNING whatever LOG_LEVEL says, and every handler gets a filter that replaces the token
wherever it still appears (in a warning's URL, say, or a traceback).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import TextIO

__all__ = ["QUIET_LOGGERS", "RedactingFilter", "configure_logging"]

#: Third-party loggers that log personal data or the token below WARNING.
QUIET_LOGGERS = (
    "httpx",
    "httpcore",
    "telegram",
    "apscheduler",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "tornado",
)
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactingFilter(logging.Filter):
    """Replaces secrets (the bot token) in a record's message and traceback with ``[token]``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        if not self.secrets:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        for secret in self.secrets:
            message = message.replace(secret, "[token]")
            if record.exc_text:
                record.exc_text = record.exc_text.replace(secret, "[token]")
            if record.stack_info:
                record.stack_info = record.stack_info.replace(secret, "[token]")
        record.msg, record.args = message, None
        return True


def configure_logging(
    level: str | int,
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    handler: logging.Handler | None = None,
) -> logging.Handler:
    """Log at ``level`` to ``stream`` (stderr) or ``handler``; returns the handler installed.

    Third-party loggers are capped at WARNING and every record passes the redacting filter.
    """
    root = logging.getLogger()
    if handler is None:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RedactingFilter(secrets))
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler

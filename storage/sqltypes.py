"""Column types that read back the same values on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import types
from sqlalchemy.engine import Dialect

__all__ = ["AwareDateTime", "as_utc", "utcnow"]


def utcnow() -> datetime:
    """Return the current time as an aware datetime in UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC, as storage writes it; a naive datetime is refused."""
    if value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: storage keeps aware UTC timestamps only")
    return value.astimezone(UTC)


class AwareDateTime(types.TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that only accepts aware values and always returns aware UTC.

    PostgreSQL stores ``timestamptz`` and hands back aware values; SQLite has no time zones and
    would store the wall-clock digits and hand back naive values. So values are converted to UTC
    before they are written, and a naive value read back is UTC by construction.
    """

    impl = types.DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def __repr__(self) -> str:
        return "AwareDateTime()"

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes and store everything else as UTC."""
        return None if value is None else as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return the stored moment as an aware UTC datetime."""
        if value is None:
            return None
        if value.utcoffset() is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

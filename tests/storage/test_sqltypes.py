"""Aware UTC timestamps, whatever the backend hands back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from storage.sqltypes import AwareDateTime, utcnow

MOSCOW = timezone(timedelta(hours=3))
SQLITE = sqlite.dialect()
POSTGRES = postgresql.dialect()  # type: ignore[no-untyped-call]


def test_utcnow_is_aware_utc() -> None:
    assert utcnow().tzinfo is UTC


def test_values_are_stored_as_utc() -> None:
    moscow_noon = datetime(2024, 5, 1, 12, 0, tzinfo=MOSCOW)
    stored = AwareDateTime().process_bind_param(moscow_noon, SQLITE)
    assert stored == moscow_noon
    assert stored is not None and stored.tzinfo is UTC and stored.hour == 9


def test_naive_values_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        AwareDateTime().process_bind_param(datetime(2024, 5, 1, 12, 0), SQLITE)  # noqa: DTZ001


def test_naive_values_read_back_are_utc() -> None:
    read = AwareDateTime().process_result_value(datetime(2024, 5, 1, 9, 0), SQLITE)  # noqa: DTZ001
    assert read == datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


def test_aware_values_read_back_are_converted_to_utc() -> None:
    moscow_noon = datetime(2024, 5, 1, 12, 0, tzinfo=MOSCOW)
    read = AwareDateTime().process_result_value(moscow_noon, POSTGRES)
    assert read is not None and read.tzinfo is UTC and read.hour == 9


def test_none_passes_through() -> None:
    assert AwareDateTime().process_bind_param(None, POSTGRES) is None
    assert AwareDateTime().process_result_value(None, POSTGRES) is None


def test_ddl_is_a_timezone_aware_timestamp() -> None:
    assert repr(AwareDateTime()) == "AwareDateTime()"
    assert AwareDateTime().compile(dialect=POSTGRES) == "TIMESTAMP WITH TIME ZONE"

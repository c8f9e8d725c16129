"""The one small tree of exceptions raised by ``storage`` (programmer and configuration faults)."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "DatabaseInUseError",
    "DatabaseURLError",
    "DuplicateClientError",
    "MigrationError",
    "StorageError",
]


class StorageError(Exception):
    """Base of every error ``storage`` raises on purpose."""


class DatabaseURLError(StorageError, ValueError):
    """A database URL names a backend this project does not support."""


class MigrationError(StorageError):
    """Migrating the schema failed or would leave the data inconsistent."""


class DuplicateClientError(StorageError):
    """A client with this Telegram id already exists."""

    def __init__(self, telegram_id: int) -> None:
        self.telegram_id = telegram_id
        super().__init__(f"a client with telegram_id={telegram_id} already exists")


class DatabaseInUseError(StorageError):
    """Another process serves this SQLite file (``storage.serving``)."""

    def __init__(self, lock: Path, pid: int | None, role: str | None = None) -> None:
        self.lock = lock
        self.pid = pid
        self.role = role
        holder = f"process {pid}" if pid is not None else "another process"
        if role is not None:
            holder += f" ({role})"
        super().__init__(f"{holder} holds {lock}")

"""One bot process per SQLite file.

On SQLite the bot works alone (``bot.lanes``): it keeps what it committed in memory, and its
lanes take no locks another process would see. A second bot on the same file would answer
the same updates and send the same calls. So a process that serves a SQLite file holds an
exclusive lock on ``<file>.lock`` beside it (``flock``: the system gives it back when the
process ends, however it ends, SIGKILL included) and writes its pid there; another process
that wants the file is told who has it.

SQLite's own locks on the database file are POSIX record locks, which any ``close`` of the
file in the process would drop, so the lock is on a file of its own. PostgreSQL needs none of
this (its lanes are locked across processes), nor does an in-memory database.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url

from storage.errors import DatabaseInUseError

try:
    import fcntl
except ImportError:  # pragma: no cover - not a POSIX system: no guard there
    fcntl = None  # type: ignore[assignment]

__all__ = ["lock_path", "serving_alone"]


def lock_path(url: str) -> Path | None:
    """The lock file of the SQLite file ``url`` names (None: another database, or memory)."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):  # a URI: file:path?mode=...
        database = database[len("file:") :].split("?", 1)[0]
        if not database or parsed.query.get("mode") == "memory" or "mode=memory" in url:
            return None
    real = Path(database).resolve()  # the file itself, however the URL reaches it
    return real.with_name(real.name + ".lock")


@contextlib.contextmanager
def serving_alone(url: str) -> Iterator[None]:
    """Hold the SQLite file ``url`` names for this process (nothing to hold otherwise).

    Raises ``DatabaseInUseError`` (with the holder's pid, if it wrote one) at once if another
    process holds it.
    """
    path = lock_path(url)
    if path is None or fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatabaseInUseError(path, _pid(descriptor)) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(descriptor, 0)  # (the lock goes with the descriptor)
    finally:
        os.close(descriptor)


def _pid(descriptor: int) -> int | None:
    text = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None

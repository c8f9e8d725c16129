"""One bot process per SQLite file.

On SQLite the bot works alone (``bot.lanes``): it keeps what it committed in memory, and its
lanes take no locks another process would see. A second bot on the same file would answer
the same updates and send the same calls. So a process that serves a SQLite file (the bot, or
a command that sends, such as ``requests redeliver``) holds an exclusive lock on
``<file>.lock`` beside it (``flock``: the system gives it back when the process ends, however
it ends, SIGKILL included) and writes its pid and role there; another process that wants the
file is told who has it. A bot waits a while for a command to finish (``patient``); it does not
wait for another bot.

SQLite's own locks on the database file are POSIX record locks, which any ``close`` of the
file in the process would drop, so the lock is on a file of its own. PostgreSQL needs none of
this (its lanes are locked across processes), nor does an in-memory database.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url

from storage.db import normalize_url
from storage.errors import DatabaseInUseError

try:
    import fcntl
except ImportError:  # pragma: no cover - not a POSIX system: no guard there
    fcntl = None  # type: ignore[assignment]

__all__ = ["BOT", "lock_path", "serving_alone"]

logger = logging.getLogger(__name__)

#: The role of a bot process (others are commands, which a bot waits for).
BOT = "bot"
#: Seconds between two tries while waiting for a command to give the file back.
_RETRY = 0.2


def lock_path(url: str) -> Path | None:
    """The lock file of the SQLite file ``url`` names (None: another database, or memory)."""
    parsed = make_url(normalize_url(url))
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):  # a URI: file:path?mode=...
        database = database[len("file:") :].split("?", 1)[0]
        if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
            return None
    real = Path(database).resolve()  # the file itself, however the URL reaches it
    return real.with_name(real.name + ".lock")


@contextlib.contextmanager
def serving_alone(url: str, *, role: str = BOT, patient: float = 0.0) -> Iterator[None]:
    """Hold the SQLite file ``url`` names for this process (nothing to hold otherwise).

    If another process holds it: a command (not a bot) is waited for up to ``patient``
    seconds; otherwise ``DatabaseInUseError`` is raised, with the holder's pid and role when
    it wrote them.
    """
    path = lock_path(url)
    if path is None or fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        writable = True
    except PermissionError:  # left by another user (a command run as root): lock it all the same
        descriptor = os.open(path, os.O_RDONLY)
        writable = False
    try:
        _take(descriptor, path, patient)
        if writable:
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()} {role}\n".encode(), 0)
        try:
            yield
        finally:
            if writable:
                os.ftruncate(descriptor, 0)  # (the lock goes with the descriptor)
    finally:
        os.close(descriptor)


def _take(descriptor: int, path: Path, patient: float) -> None:
    deadline = time.monotonic() + patient
    told = False
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pid, role = _holder(descriptor)
            if role == BOT or time.monotonic() >= deadline:
                raise DatabaseInUseError(path, pid, role) from None
            if not told:
                logger.warning("waiting for %s (process %s) to finish with %s", role, pid, path)
                told = True
            time.sleep(_RETRY)


def _holder(descriptor: int) -> tuple[int | None, str | None]:
    words = os.pread(descriptor, 256, 0).decode(errors="replace").strip().split(maxsplit=1)
    pid = int(words[0]) if words and words[0].isdigit() else None
    return pid, (words[1] if len(words) > 1 else None)

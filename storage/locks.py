"""Lane locks across processes on PostgreSQL: session-level advisory locks on one connection.

Several bot processes on one database serve each chat's lane ("in:<chat>", "out:<chat>")
from one process at a time. A lane is locked with ``pg_try_advisory_lock`` when it starts and
unlocked with ``pg_advisory_unlock`` when it ends, on a connection of its own (outside the
engine's pool, in autocommit: no transaction, no commit). A lane worker gives its locks back
``soon``: the unlock rides with the connection's next take, or goes alone after
``GIVE_WAIT``, so a lane costs one round trip, not two. A session-level advisory lock lives
as long as the session that took it, so a process that dies (its socket closes) frees its
lanes at once, and nothing is written to any table.

The price is that the locks are only as good as that one connection: when it breaks (the
server restarts, the network fails, the backend is terminated), every lock it held is gone
and another process may take those lanes. ``holds`` says so without a round trip (the
driver notices a closed socket); the next ``take`` connects again. A silent network failure
is found by ``check``, run every few seconds while locks are held: a round trip that does not
come back within ``timeout`` drops the connection. The server is asked to probe the client
with TCP keepalives, so it frees the locks of a client that has gone silent in about half a
minute, not the operating system's two hours.

Keys: a lane key (a string) becomes a signed 64-bit integer, the first 8 bytes (big-endian,
two's complement) of ``BLAKE2b(b"intake-bot lane " + key, digest_size=8)``: stable across
processes, Python versions and hash seeds. Two lane keys share an advisory lock only if
their hashes collide (about n²/2⁶⁵ for n keys: 3·10⁻⁸ for a million chats in both
directions), and then the two lanes are only served by one process at a time, never wrongly
by two: this class counts its takes per key, as PostgreSQL does. The one other advisory lock
of the project (migrations, ``storage.db``) is a small constant.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import Counter
from typing import Any, ClassVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

__all__ = ["LaneLocks", "lock_key"]

_PREFIX = b"intake-bot lane "
# Run on the driver's connection itself (asyncpg prepares each once per connection): a lock
# statement through SQLAlchemy's asyncio layer cost several times the round trip's own CPU,
# and each lane takes and gives one per batch.
_TRY_LOCK = "SELECT pg_try_advisory_lock($1::bigint)"
_UNLOCK = "SELECT pg_advisory_unlock($1::bigint)"
# With locks given back ``soon`` that are still to unlock: they go in the same round trip,
# unlocked before the lock is tried (the FROM's one row is made before the SELECT's).
_TRY_LOCK_GIVING = (
    "SELECT pg_try_advisory_lock($1::bigint)"
    " FROM (SELECT count(pg_advisory_unlock(k)) FROM unnest($2::bigint[]) AS k) AS given"
)
_UNLOCK_MANY = "SELECT count(pg_advisory_unlock(k)) FROM unnest($1::bigint[]) AS k"
#: Seconds a lock given back ``soon`` may wait to go with the connection's next statement.
GIVE_WAIT = 0.005
_PING = "SELECT 1"
#: Server-side TCP keepalives of the lock connection (seconds; ignored over a Unix socket):
#: a client gone silent is dropped, and its locks freed, after about 10 + 5 x 3 s.
_KEEPALIVES = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}


def lock_key(key: str) -> int:
    """The advisory lock key (a signed 64-bit integer) of a lane key such as ``"in:42"``."""
    digest = hashlib.blake2b(_PREFIX + key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class LaneLocks:
    """Advisory locks of one process (or one of its workers), held on one connection.

    ``take`` returns the generation of the connection the lock is held on, or None when
    another session holds it; ``holds(generation)`` stays true as long as that connection
    lives; ``give`` unlocks (nothing to do if the connection is gone: so is the lock). Calls
    from many tasks take turns on the connection. Any failure or cancellation in the middle
    of a statement drops the connection (what the server did is unknown), so every lock this
    object held is gone and ``holds`` says so.
    """

    #: Statements run by every instance in this process (they bypass SQLAlchemy's events;
    #: the benchmark counts them with the message path's).
    statements: ClassVar[int] = 0

    def __init__(self, *, engine: AsyncEngine, label: str, timeout: float = 10.0) -> None:
        """``engine``: the database's (its URL is used, not its pool); ``label``: the
        connection's ``application_name``, to find it in ``pg_stat_activity``; ``timeout``:
        seconds a statement may take before the connection is given up."""
        if engine.dialect.name != "postgresql":
            raise ValueError("advisory lane locks need PostgreSQL")
        settings = dict(_KEEPALIVES, application_name=label[:63])
        self._engine = create_async_engine(
            engine.url,
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",
            connect_args={"server_settings": settings},
        )
        self._timeout = timeout
        self._turn = asyncio.Lock()
        self._connection: AsyncConnection | None = None
        self._driver: Any = None  # the driver's connection, to see that it closed
        self._stale: tuple[AsyncConnection, Any] | None = None  # given up, to be closed
        self._held: Counter[int] = Counter()
        self._giving: list[int] = []  # given back ``soon``, to unlock on this connection
        self._giver: asyncio.TimerHandle | None = None
        self._givers: set[asyncio.Task[None]] = set()
        self._generation = 0
        self._used = 0.0  # when the connection last answered (monotonic)
        self._closed = False

    def holds(self, generation: int) -> bool:
        """Whether locks taken under ``generation`` are still held."""
        if generation != self._generation or self._connection is None:
            return False
        if self._driver is None or self._driver.is_closed():
            self._lose()
            return False
        return True

    @property
    def connected(self) -> bool:
        """Whether the lock connection is up (as far as this side has seen)."""
        return self._driver is not None and not self._driver.is_closed()

    async def take(self, *, key: str) -> int | None:
        """Lock ``key`` if no other session holds it; the generation it is held under, or None.

        Raises what connecting raises (the database is away).
        """
        generation, _ = await self.take_reading(key=key)
        return generation

    async def take_reading(
        self, *, key: str, reading: str | None = None, args: tuple[Any, ...] = ()
    ) -> tuple[int | None, list[tuple[Any, ...]]]:
        """``take``, and with ``reading`` (a statement whose first parameter is the lock key
        and which takes the lock itself, like ``storage.messaging``'s lane functions) read the
        lane's first items in the same round trip: ``reading`` returns one row whose first
        column is false when another session holds the lock, else rows ``(true, ...)``; its
        parameters are the key, ``args``, and last the locks to unlock before it tries (those
        given back ``soon``). Returns the generation (None: not taken) and the rows without
        that first column.
        """
        number = lock_key(key)
        async with self._turn:
            await self._connect()
            generation = self._generation
            giving = self._take_giving()  # given back ``soon``: unlocked in the same trip
            if reading is None:
                if giving:
                    got = await self._run(_TRY_LOCK_GIVING, number, giving)
                else:
                    got = await self._run(_TRY_LOCK, number)
                rows = []
            else:
                records = await self._run(reading, number, *args, giving, many=True)
                got = not (records and records[0][0] is False)
                rows = [tuple(record)[1:] for record in records] if got else []
            if not got or not self.holds(generation):
                return None, []  # another's, or the connection closed as it answered
            self._held[number] += 1
            return generation, rows

    async def give(self, *, key: str, generation: int, soon: bool = False) -> None:
        """Unlock ``key``, taken under ``generation`` (nothing to do if that connection is
        gone). Never raises for a broken connection: the lock went with it.

        ``soon``: return at once; the unlock goes with this connection's next take (one round
        trip for both) or, if none comes within ``GIVE_WAIT`` seconds, on its own. Meanwhile
        this process counts the lock as given; another process may find it held a few
        milliseconds longer (and tries again, as for any lane it finds held).
        """
        number = lock_key(key)
        if soon:
            if not self.holds(generation) or not self._held[number]:
                return
            self._let_go(number)
            self._giving.append(number)
            if self._giver is None:
                loop = asyncio.get_running_loop()
                self._giver = loop.call_later(GIVE_WAIT, self._give_waiting)
            return
        async with self._turn:
            if not self.holds(generation) or not self._held[number]:
                return
            self._let_go(number)
            try:
                await self._run(_UNLOCK, number)
            except Exception:  # noqa: BLE001 - dropped with the connection, and the lock with it
                return

    def _let_go(self, number: int) -> None:
        self._held[number] -= 1
        if not self._held[number]:
            del self._held[number]

    def _take_giving(self) -> list[int]:
        """The locks given back ``soon`` and not yet unlocked, which the caller now unlocks."""
        giving, self._giving = self._giving, []
        if self._giver is not None:
            self._giver.cancel()
            self._giver = None
        return giving

    def _give_waiting(self) -> None:
        """No take came to carry them: unlock the locks given back ``soon``, on their own."""
        self._giver = None
        task = asyncio.create_task(self._unlock_waiting(), name="lane locks: give")
        self._givers.add(task)
        task.add_done_callback(self._givers.discard)

    async def _unlock_waiting(self) -> None:
        async with self._turn:
            giving = self._take_giving()
            if not giving or self._driver is None or self._driver.is_closed():
                return
            with contextlib.suppress(Exception):  # dropped with the connection, and the locks
                await self._run(_UNLOCK_MANY, giving)

    async def check(self, *, every: float) -> None:
        """While locks are held, make a round trip if the connection has been quiet for
        ``every`` seconds: a connection that does not answer is dropped (see ``holds``)."""
        if not self._held or time.monotonic() - self._used < every:
            return
        async with self._turn:
            if self._connection is None or not self.holds(self._generation):
                return
            with contextlib.suppress(Exception):  # dropped: ``holds`` says so
                await self._run(_PING, None)

    async def close(self) -> None:
        """Unlock everything and connect no more: the connection is closed, and when this
        returns the server has freed the locks (if it could be reached)."""
        async with self._turn:
            self._closed = True
            self._take_giving()  # the connection's closing unlocks them
            connection = self._connection
            if connection is not None and self.connected:
                self._held.clear()
                with contextlib.suppress(Exception):  # then it is terminated below
                    await asyncio.wait_for(connection.close(), self._timeout)
            await self._drop()
        await self._engine.dispose()

    # --- the connection ---------------------------------------------------------------

    async def _connect(self) -> AsyncConnection:
        if self._closed:
            raise RuntimeError("the lane locks are closed")
        if self._connection is not None and self._driver is not None:
            if not self._driver.is_closed():
                return self._connection
            self._lose()
        await self._drop()
        connection = await asyncio.wait_for(self._engine.connect(), self._timeout)
        raw = await connection.get_raw_connection()
        self._connection, self._driver = connection, raw.driver_connection
        self._used = time.monotonic()
        return connection

    async def _run(self, statement: str, key: Any, *args: Any, many: bool = False) -> Any:
        """Run one statement on the lock connection, under the turn (its value, or with
        ``many`` its rows); drop the connection if it does not come back."""
        params = () if key is None else (key, *args)
        try:
            if self._driver is None:
                raise ConnectionError("the lock connection was given up")
            LaneLocks.statements += 1
            async with asyncio.timeout(self._timeout):
                fetch = self._driver.fetch if many else self._driver.fetchval
                value = await fetch(statement, *params)
        except BaseException:
            # Failed, timed out or cancelled half way: the server's side is unknown.
            self._lose()
            await asyncio.shield(self._drop())
            raise
        self._used = time.monotonic()
        return value

    def _lose(self) -> None:
        """The connection is gone (or given up): so is every lock it held."""
        if self._connection is None:
            return
        self._generation += 1
        self._held.clear()
        self._take_giving()  # gone with it: never to be unlocked on the next connection
        self._stale = (self._connection, self._driver)
        self._connection = self._driver = None

    async def _drop(self) -> None:
        """Close the connection given up (or the current one) without waiting on the server."""
        self._lose()
        stale, self._stale = self._stale, None
        if stale is None:
            return
        connection, driver = stale
        if driver is not None and not driver.is_closed():
            driver.terminate()  # closes the socket: the server frees the locks
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.invalidate(), self._timeout)

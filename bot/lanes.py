"""Work in lanes: one chat's items one at a time and in order, chats in parallel, bounded.

The inbox's dispatcher and the outbox's sender are both lane workers. ``wake`` starts (or
nudges) the lanes that got new work after a commit in this process; ``run`` sweeps the
database every ``tick`` for work nobody woke us for (stored before a restart, or by another
process).

Alone on its database (SQLite: one bot process), a worker is also handed what this process
commits (``hand``): a lane read from the database to its end then takes what is handed to it
from memory instead of reading it back, until something happens that memory cannot vouch
for (``wake`` without the items, a failure, an item older than one already taken, a lane the
sweep finds waiting), and then it reads the database again. With ``shared`` (several
processes on one PostgreSQL database) nothing is taken from memory, and a lane is locked
before it is worked on, so one process at a time serves a chat: a session-level advisory lock
on a connection the worker keeps for its locks (``storage.LaneLocks``), taken when the lane
starts and given back when it ends, with no transaction of its own. A process that dies
closes that connection, so its chats are free at once. If the connection breaks while this
process lives, its lanes finish the item in hand and take no more (another process may
already have the chat); the next lane to start connects again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from storage import AsyncSession, LaneLocks, make_sessionmaker

__all__ = ["LaneWorker", "postgresql_engine", "seconds"]

logger = logging.getLogger(__name__)

Item = TypeVar("Item")

#: How many items a lane takes at once (the storage functions' default limit).
BATCH = 16
#: Seconds after which a lane another process held is tried again (then the sweep's turn).
RETRY = (0.02, 0.05, 0.1, 0.2, 0.4)
#: Lanes whose waiting items are kept in memory, at most (the least recently used go first).
KNOWN_LANES = 4096


def postgresql_engine(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncEngine | None:
    """The PostgreSQL engine behind ``sessionmaker`` (None on SQLite): the message path's
    one-statement work goes to its driver alone."""
    bind = sessionmaker.kw.get("bind")
    if isinstance(bind, AsyncEngine) and bind.dialect.name == "postgresql":
        return bind
    return None


def seconds(value: Any) -> float:
    """A wait Telegram asks for (``retry_after``: a timedelta, or seconds in older PTB)."""
    return value.total_seconds() if hasattr(value, "total_seconds") else float(value)


class LaneWorker(Generic[Item]):
    """Subclasses say where the work is (``lanes``, ``batch``) and what to do (``handle``)."""

    #: Prefix of this worker's lock keys ("in", "out").
    name = "lane"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        owner: str,
        shared: bool,
        concurrency: int = 64,
        check_seconds: float = 10.0,
        tick: float = 1.0,
    ) -> None:
        """``owner`` names this process (in the lock connection's ``application_name``);
        ``shared``: other processes work on the same database (only PostgreSQL locks: on
        SQLite one process serves the database); ``check_seconds``: how long the lock
        connection may stay quiet while locks are held before the sweep makes a round trip
        on it (a broken network is found that way)."""
        self._sessionmaker = sessionmaker
        # Looking for work only reads, a statement at a time: on SQLite it must not queue
        # behind the writers; on PostgreSQL each read is one round trip, with no BEGIN.
        bind = sessionmaker.kw.get("bind")
        self._reader = (
            make_sessionmaker(bind, lone=True) if isinstance(bind, AsyncEngine) else sessionmaker
        )
        #: PostgreSQL's engine: one-statement reads and records skip the session.
        self._direct = postgresql_engine(sessionmaker)
        self._locks = (
            LaneLocks(engine=self._direct, label=f"intake-bot {self.name} {owner}")
            if shared and self._direct is not None
            else None
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._check = check_seconds
        self._tick = tick
        self._active: dict[int, asyncio.Task[None]] = {}
        self._held: dict[int, int] = {}  # lane: the generation its lock is held under
        self._refused: dict[int, int] = {}  # lane: takes refused in a row (another's lock)
        self._dirty: set[int] = set()
        self._poke = asyncio.Event()
        self._stopping = False
        # Alone on the database: lane -> every item of it waiting in the database, in order
        # (only for lanes read to their end since); and the ids that read returned.
        self._alone = not shared
        self._known: OrderedDict[int, deque[Item]] = OrderedDict()
        self._read: dict[int, set[int]] = {}

    # --- what subclasses provide ------------------------------------------------------

    async def lanes(self, session: AsyncSession) -> list[int]:
        """Lanes with work waiting."""
        raise NotImplementedError

    async def batch(self, session: AsyncSession, lane: int) -> list[Item]:
        """The lane's next items, oldest first (empty when there is no work)."""
        raise NotImplementedError

    async def batch_alone(self, engine: AsyncEngine, lane: int) -> list[Item] | None:
        """``batch`` on PostgreSQL as one statement alone on the driver (no session); None:
        read it through a session instead (the worker has no such read)."""
        return None

    async def take(
        self, locks: LaneLocks, key: str, lane: int
    ) -> tuple[int | None, list[Item] | None]:
        """Lock the lane (``key``) across processes: the lock's generation (None: another
        process holds it) and, if the worker reads in the same round trip, the lane's first
        items (None: read them next)."""
        return await locks.take(key=key), None

    async def handle(self, items: list[Item]) -> None:
        """Do the items in order; each must be marked done in the database (or raise).

        Stop before an item when ``working(lane)`` says so (the rest stay in the database).
        """
        raise NotImplementedError

    def key(self, item: Item) -> tuple[int, int]:
        """An item's lane and its id, which orders the lane's items."""
        raise NotImplementedError

    # --- scheduling -------------------------------------------------------------------

    def wake(self, lanes: set[int] | None = None) -> None:
        """New work was committed (in ``lanes``, or somewhere): the lanes read it."""
        if self._stopping:
            return
        if lanes is None:
            self._known.clear()
            self._read.clear()
            self._poke.set()
            return
        for lane in lanes:
            self._forget(lane)
            self._go(lane)

    def hand(self, items: Iterable[Item]) -> None:
        """These items were committed (each one once, right after its commit): work on them,
        from memory where the lane's waiting items are all known."""
        if self._stopping:
            return
        lanes: set[int] = set()
        for item in items:
            lane, number = self.key(item)
            lanes.add(lane)
            known = self._known.get(lane)
            if known is None or number in self._read.get(lane, ()):
                continue  # the lane reads it from the database (or just did)
            if known and number < self.key(known[-1])[1]:
                self._forget(lane)  # it goes before one in memory: read the lane again
            else:
                known.append(item)
        for lane in lanes:
            self._go(lane)

    def _go(self, lane: int) -> None:
        if lane in self._active:
            self._dirty.add(lane)
        else:
            self._start(lane)

    def _forget(self, lane: int) -> None:
        """Memory no longer vouches for the lane: it reads the database next."""
        self._known.pop(lane, None)
        self._read.pop(lane, None)

    def _start(self, lane: int) -> None:
        self._active[lane] = asyncio.create_task(self._lane(lane), name=f"{self.name}:{lane}")

    async def run(self) -> None:
        """Sweep for work every ``tick`` until stopped."""
        while not self._stopping:
            try:
                async with self._reader() as session:
                    lanes = await self.lanes(session)
            except Exception:  # noqa: BLE001 - the database may be away; try again
                logger.exception("%s: could not look for work", self.name)
                lanes = []
            for lane in lanes:
                if lane not in self._active and not self._stopping:
                    self._forget(lane)  # waiting with nobody at it: memory missed something
                    self._start(lane)
            if self._locks is not None:
                await self._locks.check(every=self._check)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self._tick)
            self._poke.clear()

    async def stop(self, grace: float = 5.0) -> None:
        """Finish the items in hand within ``grace`` seconds; the rest stay in the database."""
        self._stopping = True
        self._poke.set()
        tasks = list(self._active.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._locks is not None:
            await self._locks.close()

    async def idle(self) -> None:
        """Wait until no lane is working."""
        while self._active:
            await asyncio.gather(*list(self._active.values()), return_exceptions=True)

    def _again(self, lane: int) -> None:
        """Try a lane another process held again shortly: it may have stored work for this
        process while that one held the lane, and then gave it back without knowing of the
        work (after ``RETRY`` runs out, the sweep finds what is left)."""
        tries = self._refused.get(lane, 0)
        if tries >= len(RETRY) or self._stopping:
            self._refused.pop(lane, None)
            return
        self._refused[lane] = tries + 1
        asyncio.get_running_loop().call_later(RETRY[tries], self._retry, lane)

    def _retry(self, lane: int) -> None:
        if not self._stopping and lane not in self._active:
            self._start(lane)

    def working(self, lane: int) -> bool:
        """Whether this process may go on with ``lane``'s items: it is not stopping, and on
        a shared database it still holds the lane's lock. ``handle`` asks before each item,
        so a lane whose lock went with its connection stops at once, before another process
        that may have taken the chat could be overtaken."""
        if self._stopping:
            return False
        if self._locks is None:
            return True
        held = self._held.get(lane)
        return held is not None and self._locks.holds(held)

    @property
    def locks(self) -> LaneLocks | None:
        """The lane locks across processes (None when this process works alone)."""
        return self._locks

    @property
    def busy(self) -> int:
        """How many lanes are working now."""
        return len(self._active)

    # --- one lane -------------------------------------------------------------------

    async def _lane(self, lane: int) -> None:
        try:
            async with self._slots:
                locks, key = self._locks, f"{self.name}:{lane}"
                first: list[Item] | None = None
                try:
                    if locks is not None:
                        self._dirty.discard(lane)  # the take's read sees what woke it
                        held, first = await self.take(locks, key, lane)
                        if held is None:
                            self._again(lane)  # another process works on it
                            return
                        self._refused.pop(lane, None)
                        self._held[lane] = held
                    # Until stopping, or until the lock went with its connection (the sweep
                    # tries the lane again).
                    while self.working(lane):
                        if first is not None:
                            items, first = first, None
                        else:
                            self._dirty.discard(lane)
                            items = await self._next(lane)
                        if not items:
                            if lane in self._dirty:
                                continue
                            return
                        await self.handle(items)
                        if len(items) < BATCH and lane not in self._dirty:
                            # All there was; new work after this wakes the lane again.
                            return
                finally:
                    taken = self._held.pop(lane, None)
                    if locks is not None and taken is not None:
                        # with the next lane's take (or alone in a few ms): one round trip
                        await locks.give(key=key, generation=taken, soon=True)
        except asyncio.CancelledError:
            self._forget(lane)
            raise
        except Exception:  # noqa: BLE001 - the sweep tries the lane again
            self._forget(lane)
            logger.exception("%s: lane %s failed", self.name, lane)
            await asyncio.sleep(self._tick)
        finally:
            if self._stopping:
                self._forget(lane)
            self._active.pop(lane, None)
            if lane in self._dirty and not self._stopping:
                # Work came while the lane was ending (giving its lock back): go on.
                self._dirty.discard(lane)
                self._start(lane)

    async def _next(self, lane: int) -> list[Item]:
        """The lane's next items: from memory if it knows them all, else from the database
        (and if that read reaches the lane's end, memory knows the lane from then on)."""
        known = self._known.get(lane)
        if known is not None:
            self._known.move_to_end(lane)
            return [known.popleft() for _ in range(min(BATCH, len(known)))]
        if self._alone:
            # Collect what is handed during the read; what the read returns is dropped.
            self._known[lane] = known = deque()
            while len(self._known) > KNOWN_LANES:
                evicted, _ = self._known.popitem(last=False)
                self._read.pop(evicted, None)
        items = None
        if self._direct is not None:
            # A statement that starts after the lane's lock was taken sees all its last
            # holder committed.
            items = await self.batch_alone(self._direct, lane)
        if items is None:
            async with self._reader() as session:
                items = await self.batch(session, lane)
        if known is None or self._known.get(lane) is not known:
            return items  # shared, or forgotten during the read
        numbers = {self.key(item)[1] for item in items}
        if len(items) >= BATCH:
            self._forget(lane)  # more may wait behind them: read again
            self._dirty.add(lane)
            return items
        # What was handed during the read and the read did not return came after it.
        handed = [item for item in known if self.key(item)[1] not in numbers]
        known.clear()
        known.extend(handed)
        self._read[lane] = numbers
        return items

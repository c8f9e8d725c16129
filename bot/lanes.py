"""Work in lanes: one chat's items one at a time and in order, chats in parallel, bounded.

The inbox's dispatcher and the outbox's sender are both lane workers. ``wake`` starts (or
nudges) the lanes that got new work after a commit in this process; ``run`` sweeps the
database every ``tick`` for work nobody woke us for (stored before a restart, or by another
process). With ``shared`` (several processes on one PostgreSQL database) a lane is leased
before it is worked on, so one process at a time serves a chat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from storage import AsyncSession, make_sessionmaker, release_lease, take_lease, utcnow

__all__ = ["LaneWorker", "seconds"]

logger = logging.getLogger(__name__)

Item = TypeVar("Item")

#: How many items a lane takes at once (the storage functions' default limit).
BATCH = 16


def seconds(value: Any) -> float:
    """A wait Telegram asks for (``retry_after``: a timedelta, or seconds in older PTB)."""
    return value.total_seconds() if hasattr(value, "total_seconds") else float(value)


class LaneWorker(Generic[Item]):
    """Subclasses say where the work is (``lanes``, ``batch``) and what to do (``handle``)."""

    #: Prefix of this worker's lease keys ("in", "out").
    name = "lane"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        owner: str,
        shared: bool,
        concurrency: int = 64,
        lease_seconds: float = 30.0,
        tick: float = 1.0,
    ) -> None:
        self._sessionmaker = sessionmaker
        # Looking for work only reads: on SQLite it must not queue behind the writers.
        bind = sessionmaker.kw.get("bind")
        self._reader = (
            make_sessionmaker(bind, read_only=True)
            if isinstance(bind, AsyncEngine)
            else sessionmaker
        )
        self._owner = owner
        self._shared = shared
        self._slots = asyncio.Semaphore(concurrency)
        self._lease = timedelta(seconds=lease_seconds)
        self._tick = tick
        self._active: dict[int, asyncio.Task[None]] = {}
        self._dirty: set[int] = set()
        self._taken: dict[int, float] = {}  # when this process last took a lane's lease
        self._poke = asyncio.Event()
        self._stopping = False

    # --- what subclasses provide ------------------------------------------------------

    async def lanes(self, session: AsyncSession) -> list[int]:
        """Lanes with work waiting."""
        raise NotImplementedError

    async def batch(self, session: AsyncSession, lane: int) -> list[Item]:
        """The lane's next items, oldest first (empty when there is no work)."""
        raise NotImplementedError

    async def handle(self, items: list[Item]) -> None:
        """Do the items in order; each must be marked done in the database (or raise)."""
        raise NotImplementedError

    # --- scheduling -------------------------------------------------------------------

    def wake(self, lanes: set[int] | None = None) -> None:
        """New work was committed (in ``lanes``, or somewhere)."""
        if self._stopping:
            return
        if lanes is None:
            self._poke.set()
            return
        for lane in lanes:
            if lane in self._active:
                self._dirty.add(lane)
            else:
                self._start(lane)

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
                    self._start(lane)
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

    async def idle(self) -> None:
        """Wait until no lane is working."""
        while self._active:
            await asyncio.gather(*list(self._active.values()), return_exceptions=True)

    @property
    def busy(self) -> int:
        """How many lanes are working now."""
        return len(self._active)

    # --- one lane -------------------------------------------------------------------

    async def _lane(self, lane: int) -> None:
        try:
            async with self._slots:
                items: list[Item] | None = None
                if self._shared:
                    self._dirty.discard(lane)
                    items = await self._take(lane, read=True)
                    if items is None:
                        return
                try:
                    while not self._stopping:
                        if items is None:
                            self._dirty.discard(lane)
                            async with self._reader() as session:
                                items = await self.batch(session, lane)
                        if not items:
                            if lane in self._dirty:
                                items = None
                                continue
                            return
                        await self.handle(items)
                        if len(items) < BATCH and lane not in self._dirty:
                            # All there was; new work after this wakes the lane again.
                            return
                        items = None
                        if self._shared and self._stale(lane) and await self._take(lane) is None:
                            return
                finally:
                    if self._shared:
                        await self._release(lane)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the sweep tries the lane again
            logger.exception("%s: lane %s failed", self.name, lane)
            await asyncio.sleep(self._tick)
        finally:
            self._active.pop(lane, None)
            if lane in self._dirty and not self._stopping:
                # Work came while the lane was ending (giving its lease back): go on.
                self._dirty.discard(lane)
                self._start(lane)

    def _stale(self, lane: int) -> bool:
        """Whether the lane's lease is a third through and should be renewed."""
        taken = self._taken.get(lane)
        return taken is None or time.monotonic() - taken > self._lease.total_seconds() / 3

    async def _take(self, lane: int, *, read: bool = False) -> list[Item] | None:
        """Take or renew the lane's lease; None if another process holds it.

        With ``read``, the lane's next items are read in the same transaction (one
        transaction fewer each time a lane starts).
        """
        self._taken[lane] = time.monotonic()
        now = utcnow()
        async with self._sessionmaker() as session, session.begin():
            taken = await take_lease(
                session=session,
                key=f"{self.name}:{lane}",
                owner=self._owner,
                until=now + self._lease,
                now=now,
            )
            if not taken:
                return None
            return await self.batch(session, lane) if read else []

    async def _release(self, lane: int) -> None:
        self._taken.pop(lane, None)
        with contextlib.suppress(Exception):
            async with self._sessionmaker() as session, session.begin():
                await release_lease(session=session, key=f"{self.name}:{lane}", owner=self._owner)

"""Where the running bot gets its flows: versions in the database, each proven before use.

The active version is what new dialogues run; a dialogue already under way finishes on the
version it started with. The shipped flow (or ``FLOW_FILE``) becomes version 1 on first start.
A version is used only after the checker (in a bounded worker process, see ``bot.checking``)
has proven it in this process; no proof ever runs while a database transaction is open:

* ``prepare`` proves the active version before the bot serves anyone;
* a version another process publishes is proven in the background; until then new
  dialogues keep the version proven before;
* a dialogue pinned to an older version is loaded without a new proof (it was proven when
  it became active; composing it with the screening core is still checked).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from types import EllipsisType

from sqlalchemy.ext.asyncio import async_sessionmaker

from bot.checking import FlowChecker
from flows import (
    CheckReport,
    Flow,
    FlowError,
    Problem,
    checksum,
    content_key,
    load_flow_text,
    shipped_flow_path,
)
from storage import (
    AsyncSession,
    active_flow_checksum,
    add_flow_version,
    get_active_flow_version,
    get_flow_version_by_checksum,
)

__all__ = ["FlowRefusedError", "FlowRegistry"]

log = logging.getLogger(__name__)


class FlowRefusedError(Exception):
    """The flow failed the checker; the bot must not run it."""

    def __init__(self, report: CheckReport) -> None:
        self.report = report
        super().__init__(report.render())


def collision(origin: str, version: str) -> CheckReport:
    """The report on a text whose short checksum is that of another version's text."""
    report = CheckReport(origin=origin)
    report.problems.append(
        Problem(
            f"another flow version with different content has the same checksum ({version}); "
            "nothing was published. Change anything in the file (a comment will do) and "
            "upload it again."
        )
    )
    return report


class FlowRegistry:
    """The flow versions a process runs, each proven once per process."""

    def __init__(
        self,
        initial: Path | None = None,
        *,
        values: Mapping[str, str],
        checker: FlowChecker | None = None,
    ) -> None:
        self.initial = initial or shipped_flow_path()
        #: what ``{phone}``, ``{hours}``… become in texts people see (required: a flow
        #: shown without them would show the placeholders)
        self.values = dict(values)
        self.checker = checker or FlowChecker()
        try:
            text = self.initial.read_text(encoding="utf-8")
            self.name = load_flow_text(text, origin=str(self.initial)).name
        except (OSError, UnicodeDecodeError) as exc:
            report = CheckReport(origin=str(self.initial))
            report.problems.append(Problem(f"cannot read the file: {exc}"))
            raise FlowRefusedError(report) from exc
        except FlowError as exc:
            raise FlowRefusedError(CheckReport(str(self.initial), problems=exc.problems)) from exc
        #: proven flows (with the settings' values filled in), by content checksum, and the
        #: full hash of each one's text (a short checksum alone can be made to collide)
        self._proven: dict[str, Flow] = {}
        self._proven_keys: dict[str, str] = {}
        #: flows loaded for pinned dialogues, by checksum
        self._loaded: dict[str, Flow] = {}
        self._current: Flow | None = None
        self._background: dict[str, asyncio.Task[None]] = {}

    # -- proving (never inside a transaction)

    def _accept(self, text: str, report: CheckReport) -> Flow:
        if not report.ok or report.flow is None:
            raise FlowRefusedError(report)
        key = content_key(text)
        version = checksum(text)
        if self._proven_keys.get(version, key) != key:
            raise FlowRefusedError(collision(report.origin, version))
        flow = load_flow_text(text, origin=report.origin, values=self.values)
        self._proven[flow.version] = flow
        self._proven_keys[flow.version] = key
        return flow

    def _known(self, text: str) -> Flow | None:
        """The proven flow of exactly ``text``, if it has been proven here."""
        version = checksum(text)
        if self._proven_keys.get(version) != content_key(text):
            return None
        return self._proven.get(version)

    def check(self, text: str, origin: str) -> Flow:
        """The flow in ``text`` if it passes the checker (blocking; for the CLI)."""
        found = self._known(text)
        if found is not None:
            return found
        return self._accept(text, self.checker.check_blocking(text, origin))

    async def checked_async(self, text: str, origin: str) -> Flow:
        """The flow in ``text`` if it passes the checker, proven off the event loop."""
        found = self._known(text)
        if found is not None:
            return found
        return self._accept(text, await self.checker.check(text, origin))

    async def report(self, text: str, origin: str) -> CheckReport:
        """The checker's full report on ``text`` (for an admin's upload)."""
        report = await self.checker.check(text, origin)
        if report.ok and report.flow is not None:
            self._accept(text, report)
        return report

    def proven(self, version: str) -> bool:
        """Whether the version with this checksum has been proven in this process."""
        return version in self._proven

    async def prepare(self, sessionmaker: async_sessionmaker[AsyncSession]) -> Flow:
        """Prove the active version (the initial file on first start) before serving.

        When the active version no longer passes (a new release's policy is stricter), the
        initial file is published in its place, so the bot keeps running safely.
        """
        async with sessionmaker() as session:
            row = await get_active_flow_version(session=session, flow_name=self.name)
            stored = (row.yaml, f"{self.name} version {row.number}") if row else None
        initial_text = self.initial.read_text(encoding="utf-8")
        if stored is not None:
            try:
                self._current = await self.checked_async(*stored)
                return self._current
            except FlowRefusedError as exc:
                if checksum(stored[0]) == checksum(initial_text):
                    raise
                log.warning(
                    "the active flow version fails this release's check; publishing %s "
                    "in its place:\n%s",
                    self.initial.name,
                    exc.report.render(),
                )
        flow = await self.checked_async(initial_text, str(self.initial))
        async with sessionmaker() as session, session.begin():
            row = await get_active_flow_version(session=session, flow_name=self.name)
            if row is None or row.checksum != flow.version:
                note = "first start" if stored is None else "the active version failed the check"
                await self._publish_initial(session, initial_text, flow, note)
        self._current = flow
        return flow

    async def _publish_initial(
        self, session: AsyncSession, text: str, flow: Flow, note: str
    ) -> None:
        await add_flow_version(
            session=session,
            flow_name=flow.name,
            yaml=text,
            checksum=flow.version,
            author=f"file {self.initial.name}",
            note=note,
        )

    # -- inside transactions: look-ups only

    async def bootstrap(self, session: AsyncSession) -> Flow:
        """Make sure the flow has an active version; ``prepare`` must have run."""
        if self._current is None:
            raise RuntimeError("FlowRegistry.prepare() must run before the bot serves")
        if await get_active_flow_version(session=session, flow_name=self.name) is None:
            text = self.initial.read_text(encoding="utf-8")
            flow = self._known(text)
            if flow is None:  # pragma: no cover - prepare proved it
                raise RuntimeError("the initial flow has not been proven")
            await self._publish_initial(session, text, flow, "first start")
        return await self.active(session)

    async def active(
        self, session: AsyncSession, *, known: str | None | EllipsisType = ...
    ) -> Flow:
        """The version new dialogues use (looked up each time: publishing needs no restart).

        ``known``: the active version's checksum, if the caller has read it already in this
        transaction (``storage.read_turn``). A version not yet proven here is proven in the
        background; meanwhile the version proven before is used."""
        key = (
            await active_flow_checksum(session=session, flow_name=self.name)
            if known is ...
            else known
        )
        if key is not None:
            found = self._proven.get(key)
            if found is not None:
                self._current = found
                return found
            row = await get_active_flow_version(session=session, flow_name=self.name)
            if row is not None:
                self._prove_later(row.yaml, f"{self.name} version {row.number}")
        if self._current is None:
            raise RuntimeError("FlowRegistry.prepare() must run before the bot serves")
        return self._current

    def _prove_later(self, text: str, origin: str) -> None:
        key = content_key(text)
        if key in self._background:
            return

        async def prove() -> None:
            try:
                await self.checked_async(text, origin)
            except FlowRefusedError as exc:
                log.error("%s fails the check and is not used:\n%s", origin, exc.report.render())

        task = asyncio.get_running_loop().create_task(prove(), name=f"prove {origin}")
        self._background[key] = task

    async def settled(self) -> None:
        """Wait for background proofs (tests and shutdown)."""
        if self._background:
            await asyncio.gather(*self._background.values(), return_exceptions=True)

    async def pinned(self, session: AsyncSession, version: str) -> Flow | None:
        """The version a dialogue started on, if it is still known and still composes."""
        found = self._proven.get(version) or self._loaded.get(version)
        if found is not None:
            return found
        row = await get_flow_version_by_checksum(
            session=session, flow_name=self.name, checksum=version
        )
        if row is None:
            return None
        try:
            flow = load_flow_text(row.yaml, origin=f"version {row.number}", values=self.values)
        except FlowError:
            log.warning("version %s no longer composes with the screening core", row.number)
            return None
        self._loaded[version] = flow
        return flow

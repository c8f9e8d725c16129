"""Where the running bot gets its flows: versions in the database, each checked before use.

The active version is what new dialogues run; a dialogue already under way finishes on the
version it started with. The shipped flow (or ``FLOW_FILE``) becomes version 1 on first start.
A version that fails the checker is never used, whichever way it arrived.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from flows import CheckReport, Flow, check_file, check_text, checksum, shipped_flow_path
from storage import (
    AsyncSession,
    add_flow_version,
    get_active_flow_version,
    get_flow_version_by_checksum,
)

__all__ = ["FlowRefusedError", "FlowRegistry", "load_checked_flow"]


class FlowRefusedError(Exception):
    """The flow failed the checker; the bot must not run it."""

    def __init__(self, report: CheckReport) -> None:
        self.report = report
        super().__init__(report.render())


#: Flows that passed the checker in this process, by content checksum. A check depends only
#: on the text, the clinical source and the (fixed) safety policy, so it is done once.
_PASSED: dict[str, Flow] = {}


def checked(text: str, origin: str, documents: Path) -> Flow:
    """The flow in ``text`` if it passes the checker; raise FlowRefusedError otherwise."""
    key = checksum(text)
    if key not in _PASSED:
        report = check_text(text, origin=origin, documents=documents)
        if not report.ok or report.flow is None:
            raise FlowRefusedError(report)
        _PASSED[key] = report.flow
    return _PASSED[key]


def load_checked_flow(path: Path | None = None) -> Flow:
    """Load the flow at ``path`` (the shipped intake flow by default) if it passes the checker."""
    path = path or shipped_flow_path()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise FlowRefusedError(check_file(path)) from None
    return checked(text, str(path), path.parent)


class FlowRegistry:
    """The flow versions a process runs, loaded from the database and checked once each."""

    def __init__(self, initial: Path | None = None) -> None:
        self.initial = initial or shipped_flow_path()
        self.name = load_checked_flow(self.initial).name
        self._checked: dict[str, Flow] = {}

    def check(self, text: str, origin: str) -> Flow:
        """The flow in ``text`` if it passes the checker (cached by content)."""
        flow = checked(text, origin, self.initial.parent)
        self._checked[flow.version] = flow
        return flow

    async def checked_async(self, text: str, origin: str) -> Flow:
        """``check`` in a worker thread when the text is new (the proof takes CPU seconds)."""
        if checksum(text) in _PASSED:
            return self.check(text, origin)
        return await asyncio.to_thread(self.check, text, origin)

    async def bootstrap(self, session: AsyncSession) -> Flow:
        """Make sure the flow has an active version (the initial file on first start)."""
        if await get_active_flow_version(session=session, flow_name=self.name) is None:
            text = self.initial.read_text(encoding="utf-8")
            flow = await self.checked_async(text, str(self.initial))
            await add_flow_version(
                session=session,
                flow_name=flow.name,
                yaml=text,
                checksum=flow.version,
                author=f"file {self.initial.name}",
                note="first start",
            )
        return await self.active(session)

    async def active(self, session: AsyncSession) -> Flow:
        """The version new dialogues use (looked up each time: publishing needs no restart)."""
        row = await get_active_flow_version(session=session, flow_name=self.name)
        if row is None:
            return await self.bootstrap(session)
        return await self.checked_async(row.yaml, f"{self.name} version {row.number}")

    async def pinned(self, session: AsyncSession, version: str) -> Flow | None:
        """The version a dialogue started on, if it is still known."""
        if version in self._checked:
            return self._checked[version]
        row = await get_flow_version_by_checksum(
            session=session, flow_name=self.name, checksum=version
        )
        if row is None:
            return None
        return await self.checked_async(row.yaml, f"{self.name} version {row.number}")

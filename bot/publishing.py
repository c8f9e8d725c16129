"""One publish service: the command line and Telegram change the active flow only through it.

Every way in proves the flow first (in the bounded worker, outside any transaction), refuses
a file of another flow, says "no changes" for a copy of the active version, and records
every change of the active version as a version of its own, rollbacks included, so the
history says who changed what and when. An upload waiting for Publish is stored as an
inactive version: it survives a restart and any process can publish it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy.ext.asyncio import async_sessionmaker

from bot.flowsource import FlowRefusedError, FlowRegistry, collision
from flows import CheckReport, Flow
from storage import (
    AsyncSession,
    activate_flow_version,
    add_flow_version,
    get_active_flow_version,
    get_flow_version,
    get_flow_version_by_checksum,
    set_flow_version_note,
)

__all__ = [
    "PENDING_NOTE",
    "Result",
    "discard",
    "propose",
    "publish_text",
    "publish_version",
    "rollback",
]

#: The note of an upload waiting for an admin's Publish.
PENDING_NOTE = "uploaded, waiting for Publish"

Status = Literal[
    "published", "pending", "unchanged", "refused", "other_flow", "already_active", "missing"
]


@dataclass(frozen=True)
class Result:
    """What a publishing step did: ``number`` is the version it concerns (or the active one)."""

    status: Status
    number: int | None = None
    report: CheckReport | None = None
    flow: Flow | None = None
    active: int | None = None


async def _checked(
    registry: FlowRegistry, text: str, origin: str
) -> tuple[Result | None, CheckReport]:
    """The checker's report, and why the text cannot be published (``None``: it can)."""
    report = await registry.report(text, origin)
    if not report.ok or report.flow is None:
        return Result("refused", report=report), report
    if report.flow.name != registry.name:
        return Result("other_flow", report=report), report
    return None, report


async def _active(registry: FlowRegistry, session: AsyncSession) -> tuple[int, str]:
    await registry.bootstrap(session)
    row = await get_active_flow_version(session=session, flow_name=registry.name)
    assert row is not None
    return row.number, row.checksum


async def _store(
    registry: FlowRegistry,
    sessionmaker: async_sessionmaker[AsyncSession],
    text: str,
    origin: str,
    *,
    author: str,
    note: str,
    activate: bool,
) -> Result:
    """Prove ``text``, then store it as a version: active, or waiting for Publish."""
    refused, report = await _checked(registry, text, origin)
    if refused is not None:
        return refused
    flow = await registry.checked_async(text, origin)
    async with sessionmaker() as session, session.begin():
        active, active_checksum = await _active(registry, session)
        same = await get_flow_version_by_checksum(
            session=session, flow_name=registry.name, checksum=flow.version
        )
        if same is not None and same.yaml != text:  # made to collide: never mistaken for it
            return Result("refused", report=collision(origin, flow.version))
        if active_checksum == flow.version:
            return Result("unchanged", active, report, flow, active)
        if not activate and same is not None and same.note == PENDING_NOTE:
            return Result("pending", same.number, report, flow, active)
        version = await add_flow_version(
            session=session, flow_name=flow.name, yaml=text, checksum=flow.version,
            author=author, note=note, activate=activate,
        )  # fmt: skip
        if activate:
            return Result("published", version.number, report, flow, version.number)
        return Result("pending", version.number, report, flow, active)


async def propose(
    *,
    registry: FlowRegistry,
    sessionmaker: async_sessionmaker[AsyncSession],
    text: str,
    origin: str,
    author: str,
) -> Result:
    """Check an uploaded flow and keep it as a version waiting for Publish."""
    return await _store(
        registry, sessionmaker, text, origin, author=author, note=PENDING_NOTE, activate=False
    )


async def publish_text(
    *,
    registry: FlowRegistry,
    sessionmaker: async_sessionmaker[AsyncSession],
    text: str,
    origin: str,
    author: str,
    note: str,
) -> Result:
    """Check a flow and make it the active version (``unchanged`` for a copy of the active)."""
    return await _store(
        registry, sessionmaker, text, origin, author=author, note=note, activate=True
    )


async def publish_version(
    *,
    registry: FlowRegistry,
    sessionmaker: async_sessionmaker[AsyncSession],
    number: int,
    author: str,
    note: str,
) -> Result:
    """Make a stored version (an upload waiting for Publish) the active one."""
    async with sessionmaker() as session:
        row = await get_flow_version(session=session, flow_name=registry.name, number=number)
        text = None if row is None else row.yaml
    if text is None:
        return Result("missing", number)
    try:
        await registry.checked_async(text, f"version {number}")
    except FlowRefusedError as exc:
        return Result("refused", number, report=exc.report)
    async with sessionmaker() as session, session.begin():
        active, _ = await _active(registry, session)
        row = await get_flow_version(session=session, flow_name=registry.name, number=number)
        assert row is not None
        if active == number:
            return Result("already_active", number, active=active)
        if row.note != PENDING_NOTE:
            # not an upload waiting (a discarded one, or an earlier version: going back to
            # one is a rollback, which keeps the history): Publish cannot touch it
            return Result("missing", number)
        await set_flow_version_note(session=session, version=row, note=note, author=author)
        await activate_flow_version(session=session, version=row)
        return Result("published", number, active=number)


async def rollback(
    *,
    registry: FlowRegistry,
    sessionmaker: async_sessionmaker[AsyncSession],
    number: int,
    author: str,
) -> Result:
    """Make an earlier version's content active again, as a new version in the history."""
    async with sessionmaker() as session:
        row = await get_flow_version(session=session, flow_name=registry.name, number=number)
        found = None if row is None else (row.yaml, row.checksum)
    if found is None:
        return Result("missing", number)
    text, content = found
    try:  # proven again (the policy may have changed since), outside any transaction
        await registry.checked_async(text, f"version {number}")
    except FlowRefusedError as exc:
        return Result("refused", number, report=exc.report)
    async with sessionmaker() as session, session.begin():
        active, active_checksum = await _active(registry, session)
        if active_checksum == content:
            return Result("already_active", number, active=active)
        version = await add_flow_version(
            session=session, flow_name=registry.name, yaml=text, checksum=content,
            author=author, note=f"rollback to version {number}",
        )  # fmt: skip
        return Result("published", version.number, active=version.number)


async def discard(
    *, registry: FlowRegistry, sessionmaker: async_sessionmaker[AsyncSession], number: int
) -> Result:
    """Mark an upload waiting for Publish as discarded (it stays in the history)."""
    async with sessionmaker() as session, session.begin():
        row = await get_flow_version(session=session, flow_name=registry.name, number=number)
        if row is None or row.active or row.note != PENDING_NOTE:
            return Result("missing", number)
        await set_flow_version_note(session=session, version=row, note="discarded, not published")
        return Result("unchanged", number)

"""Published flow versions: exactly one active per flow, each with its YAML, author and note."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CursorResult, bindparam, func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.core import run, table
from storage.models import FlowVersion

__all__ = [
    "activate_flow_version",
    "add_flow_version",
    "get_active_flow_version",
    "get_flow_version",
    "get_flow_version_by_checksum",
    "list_flow_versions",
    "set_flow_version_note",
]


async def get_active_flow_version(*, session: AsyncSession, flow_name: str) -> FlowVersion | None:
    """The version of ``flow_name`` new dialogues use, if any was published."""
    result = await session.exec(
        select(FlowVersion)
        .where(col(FlowVersion.flow_name) == flow_name)
        .where(col(FlowVersion.active) == True)  # noqa: E712 - SQL
    )
    return result.first()


async def active_flow_checksum(*, session: AsyncSession, flow_name: str) -> str | None:
    """The checksum of the active version (a small query: the YAML stays in the table)."""
    found: str | None = await run(
        session, ACTIVE_CHECKSUM, {"active_of": flow_name}, take=CursorResult.scalar
    )
    return found


_VERSIONS = table(FlowVersion)
#: The active version's checksum of the flow named by the ``active_of`` parameter (also read
#: with a client's step, ``storage.crud.read_turn``).
ACTIVE_CHECKSUM = select(_VERSIONS.c.checksum).where(
    _VERSIONS.c.flow_name == bindparam("active_of"), _VERSIONS.c.active.is_(True)
)


async def get_flow_version(
    *, session: AsyncSession, flow_name: str, number: int
) -> FlowVersion | None:
    """Version ``number`` of a flow."""
    result = await session.exec(
        select(FlowVersion)
        .where(col(FlowVersion.flow_name) == flow_name)
        .where(col(FlowVersion.number) == number)
    )
    return result.first()


async def get_flow_version_by_checksum(
    *, session: AsyncSession, flow_name: str, checksum: str
) -> FlowVersion | None:
    """The newest version of a flow with this content checksum."""
    result = await session.exec(
        select(FlowVersion)
        .where(col(FlowVersion.flow_name) == flow_name)
        .where(col(FlowVersion.checksum) == checksum)
        .order_by(col(FlowVersion.number).desc())
    )
    return result.first()


async def list_flow_versions(*, session: AsyncSession, flow_name: str) -> list[FlowVersion]:
    """Every version of a flow, newest first."""
    result = await session.exec(
        select(FlowVersion)
        .where(col(FlowVersion.flow_name) == flow_name)
        .order_by(col(FlowVersion.number).desc())
    )
    return list(result.all())


async def activate_flow_version(*, session: AsyncSession, version: FlowVersion) -> None:
    """Make ``version`` the active one of its flow (and no other)."""
    await session.exec(
        update(FlowVersion)
        .where(col(FlowVersion.flow_name) == version.flow_name)
        .where(col(FlowVersion.id) != version.id)
        .values(active=False)
    )
    version.active = True
    session.add(version)
    await session.flush()


async def add_flow_version(
    *,
    session: AsyncSession,
    flow_name: str,
    yaml: str,
    checksum: str,
    author: str,
    note: str,
    at: datetime | None = None,
    activate: bool = True,
) -> FlowVersion:
    """Store the next version of a flow (numbered 1, 2, …) and, by default, activate it.

    The caller must have checked the YAML; storage keeps what it is given.
    """
    highest = (
        await session.exec(
            select(func.max(FlowVersion.number)).where(col(FlowVersion.flow_name) == flow_name)
        )
    ).one()
    version = FlowVersion(
        flow_name=flow_name,
        number=(highest or 0) + 1,
        checksum=checksum,
        yaml=yaml,
        author=author,
        note=note,
    )
    if at is not None:
        version.created_at = at
    session.add(version)
    await session.flush()
    if activate:
        await activate_flow_version(session=session, version=version)
    return version


async def set_flow_version_note(
    *, session: AsyncSession, version: FlowVersion, note: str, author: str | None = None
) -> None:
    """Change why (and, given, by whom) a version is in the history."""
    version.note = note
    if author is not None:
        version.author = author
    session.add(version)
    await session.flush()

"""Apply every migration up to head to the database whose URL comes on standard input.

Run by ``storage.upgrade_apart`` as ``python -m storage.migrate``, so that the process that
asked (a long-running bot) never loads alembic. Exits 1 with the error on standard error.
"""

from __future__ import annotations

import asyncio
import sys

from storage.db import make_engine, upgrade


async def upgrade_url(url: str) -> None:
    """Apply every migration up to head to the database at ``url``, in this process."""
    engine = make_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


def main() -> None:
    """Migrate the database named on standard input."""
    url = sys.stdin.readline().strip()
    if not url:
        sys.exit("no database URL on standard input")
    try:
        asyncio.run(upgrade_url(url))
    except Exception as exc:  # the parent shows the last line
        sys.exit(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()

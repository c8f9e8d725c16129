"""Alembic environment: migrate the caller's connection, or DATABASE_URL from the command line.

``storage.db.upgrade`` passes its connection in ``config.attributes["connection"]`` and owns
the transaction. From the command line (``alembic revision --autogenerate -m ...`` with the
repository's ``alembic.ini``) the database is ``$DATABASE_URL``, or the default SQLite file.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection, make_url

from storage.db import DEFAULT_DATABASE_URL, context_options, make_engine, migrate, normalize_url

config = context.config


def run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, **context_options(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


def database_url() -> str:
    return normalize_url(os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)


def run_offline() -> None:
    url = database_url()
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **context_options(make_url(url).get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_online() -> None:
    engine = make_engine(database_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(migrate, run_migrations)
    finally:
        await engine.dispose()


shared_connection = config.attributes.get("connection")
if shared_connection is not None:
    run_migrations(shared_connection)
else:
    if config.config_file_name is not None:
        fileConfig(config.config_file_name)
    if context.is_offline_mode():
        run_offline()
    else:
        asyncio.run(run_online())

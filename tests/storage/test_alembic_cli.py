"""The developer path: the root alembic.ini and env.py against $DATABASE_URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import produce_migrations, render_python_code
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine
from sqlmodel import SQLModel

from storage.db import context_options

ROOT = Path(__file__).resolve().parents[2]


def _alembic(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), *args],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_alembic_command_line_upgrades_and_finds_nothing_to_generate(database_url: str) -> None:
    # Plain URLs, as a developer would export them; env.py normalizes them.
    plain = database_url.replace("+aiosqlite", "").replace("+asyncpg", "")
    upgraded = _alembic(plain, "upgrade", "head")
    assert upgraded.returncode == 0, upgraded.stderr
    checked = _alembic(plain, "check")
    assert checked.returncode == 0, checked.stderr
    assert "No new upgrade operations detected" in checked.stdout + checked.stderr
    current = _alembic(plain, "current")
    assert "(head)" in current.stdout


def test_alembic_offline_mode_prints_sql(tmp_path: Path) -> None:
    result = _alembic(f"sqlite:///{tmp_path / 'x.db'}", "upgrade", "head", "--sql")
    assert result.returncode == 0, result.stderr
    assert "CREATE TABLE clients" in result.stdout
    assert not (tmp_path / "x.db").exists()


def test_autogenerate_renders_plain_sqlalchemy_types() -> None:
    # New revisions must not import sqlmodel or storage: render our types as ``sa.*``.
    engine = create_engine("sqlite://")
    with engine.connect() as connection:
        options = context_options("sqlite")
        context = MigrationContext.configure(connection, opts=options)
        operations = produce_migrations(context, SQLModel.metadata)
    assert operations.upgrade_ops is not None
    code = render_python_code(operations.upgrade_ops, render_item=options["render_item"])
    assert "sa.DateTime(timezone=True)" in code
    assert "sa.String()" in code
    assert "sqlmodel" not in code
    assert "storage" not in code

"""``flows`` stays sans-I/O: no Telegram, database, asyncio, environment, clock or randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import flows

FORBIDDEN_MODULES = {
    "telegram",
    "sqlmodel",
    "sqlalchemy",
    "asyncio",
    "aiosqlite",
    "asyncpg",
    "httpx",
    "socket",
    "random",
    "time",
    "datetime",
    "os",
    "subprocess",
    "bot",
    "storage",
}


def _sources() -> list[Path]:
    return sorted(Path(flows.__file__).parent.rglob("*.py"))


def test_flows_imports_nothing_of_telegram_the_database_asyncio_or_the_environment() -> None:
    offenders = []
    for path in _sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            offenders += [
                f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN_MODULES
            ]
    assert offenders == []


def test_flows_never_reads_the_clock_or_the_environment() -> None:
    for path in _sources():
        text = path.read_text()
        for needle in ("datetime.now", "time.time(", "os.environ", "getenv(", "random."):
            assert needle not in text, f"{path.name} uses {needle}"


def test_the_check_would_catch_a_forbidden_import(tmp_path: Path) -> None:
    sample = "import asyncio\nfrom telegram import Bot\n"
    tree = ast.parse(sample)
    found = {
        (n.names[0].name if isinstance(n, ast.Import) else n.module or "").split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
    }
    assert found <= FORBIDDEN_MODULES and found == {"asyncio", "telegram"}

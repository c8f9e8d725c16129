"""The pure core does no I/O: no files (but its own package data), no clock, no network."""

from __future__ import annotations

import ast
from pathlib import Path

import flows

CORE = Path(flows.__file__).parent
IO_CALLS = {"open", "read_text", "read_bytes", "write_text", "write_bytes", "now", "utcnow"}
IO_MODULES = {"socket", "httpx", "telegram", "sqlalchemy", "sqlmodel", "storage", "bot", "time"}


def _calls(tree: ast.AST) -> list[tuple[str, int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in IO_CALLS:
                found.append((name, node.lineno, ast.unparse(node)))
    return found


def test_the_core_reads_no_files_but_its_own_package_data() -> None:
    reads = []
    for path in sorted(CORE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for name, line, code in _calls(tree):
            reads.append((path.name, code))
            # The only reads: the screening core and the article, shipped inside the package
            # and reviewed like code, read through importlib.resources.
            assert name == "read_text" and "resources.files('flows')" in code, (
                f"{path.name}:{line}: {code}"
            )
    assert {name for name, _ in reads} == {"policy.py", "checker.py"}


def test_the_core_imports_no_channel_clock_or_database() -> None:
    for path in sorted(CORE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in IO_MODULES, f"{path.name} imports {name}"

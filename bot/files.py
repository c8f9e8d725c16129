"""Flow files on disk: the shell reads them and hands the text to the pure core.

``flows`` takes text only (``load_flow_text``, ``check_text``); these helpers are the one
place the bot and the command line turn a path into that text.
"""

from __future__ import annotations

from pathlib import Path

from flows import CheckReport, Flow, FlowError, Problem, check_text, load_flow_text
from flows.policy import POLICY, SafetyPolicy

__all__ = ["check_file", "load_flow_file", "read_flow_file"]


def read_flow_file(path: str | Path) -> str:
    """The text of a flow file; ``FlowError`` if it cannot be read or is not UTF-8."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FlowError([Problem(f"cannot read the file: {exc.strerror}", file=str(path))]) from exc
    except UnicodeDecodeError as exc:
        raise FlowError([Problem("the file is not UTF-8 text", file=str(path))]) from exc


def load_flow_file(path: str | Path) -> Flow:
    """Load and validate the flow file at ``path``."""
    return load_flow_text(read_flow_file(path), origin=str(path))


def check_file(
    path: str | Path, *, policy: SafetyPolicy = POLICY, budget: int | None = None
) -> CheckReport:
    """Read the flow file at ``path`` and check it; never raises on a bad file."""
    try:
        text = read_flow_file(path)
    except FlowError as exc:
        return CheckReport(origin=str(path), problems=list(exc.problems))
    return check_text(text, origin=str(path), policy=policy, budget=budget)

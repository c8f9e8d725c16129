"""The one small tree of exceptions raised by ``flows`` (programmer and admin faults only)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FlowError", "FlowMismatchError", "Problem"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a flow file, placed where an admin can find it."""

    message: str
    file: str = ""
    line: int | None = None
    node: str | None = None

    def __str__(self) -> str:
        where = self.file or "flow"
        if self.line is not None:
            where += f", line {self.line}"
        if self.node:
            where += f", question '{self.node}'"
        return f"{where}: {self.message}"


class FlowError(Exception):
    """A flow file cannot be used; ``problems`` says why, each with its place."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class FlowMismatchError(Exception):
    """A dialogue state was stepped with a flow other than the one it started on."""

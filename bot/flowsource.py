"""Where the running bot gets its flow: loaded, checked, and refused if the check fails."""

from __future__ import annotations

from pathlib import Path

from flows import CheckReport, Flow, check_file, shipped_flow_path

__all__ = ["FlowRefusedError", "load_checked_flow"]


class FlowRefusedError(Exception):
    """The flow failed the checker; the bot must not run it."""

    def __init__(self, report: CheckReport) -> None:
        self.report = report
        super().__init__(report.render())


def load_checked_flow(path: Path | None = None) -> Flow:
    """Load the flow at ``path`` (the shipped intake flow by default) if it passes the checker."""
    report = check_file(path or shipped_flow_path())
    if not report.ok or report.flow is None:
        raise FlowRefusedError(report)
    return report.flow

"""Hypothesis runs the same examples on every run (``HYPOTHESIS_PROFILE=explore`` for new ones)."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

# "repeatable": the examples follow from the test alone, so a run fails or passes the same
# on every machine and nothing is written next to the code. "explore": new random
# examples each run, remembered in .hypothesis/ so that a failure found is tried first again.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


#: The files whose tests take longest (flow proofs under coverage, property tests): run first,
#: so that the workers finish together instead of one waiting on the other's last long test.
SLOW_FIRST = (
    "tests/flows/test_admin_edits.py",
    "tests/flows/test_safety_walks.py",
    "tests/bot/test_admin.py",
    "tests/flows/test_checker.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the slow files first (the order within each group stays as collected)."""
    items.sort(key=lambda item: 0 if item.nodeid.startswith(SLOW_FIRST) else 1)

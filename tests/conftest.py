"""Hypothesis runs the same examples on every run (``HYPOTHESIS_PROFILE=explore`` for new ones)."""

from __future__ import annotations

import os

from hypothesis import settings

# "repeatable": the examples follow from the test alone, so a run fails or passes the same
# on every machine and nothing is written next to the code. "explore": new random
# examples each run, remembered in .hypothesis/ so that a failure found is tried first again.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

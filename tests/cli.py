"""``intake-bot`` commands run in the test process, answered like a finished subprocess.

In process, the command line counts in coverage and reuses the proofs this process has
already done (a new process would prove the shipped flow again). It is the same typer app
``python -m bot`` runs; only the process boundary is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from typer.testing import CliRunner, Result

from bot.cli import app

__all__ = ["intake_bot"]


def intake_bot(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    input: str | None = None,  # noqa: A002 - the name subprocess.run uses
) -> subprocess.CompletedProcess[str]:
    """Run ``intake-bot ARGS`` with ``env`` added to the environment, in ``cwd``.

    Commands start their own event loop, so from a thread that runs one (an async test)
    the command runs in another thread while this one waits; a test with a bot serving
    meanwhile calls this through ``asyncio.to_thread`` instead. An exception the command
    does not turn into an exit code is raised here, as a crash would fail the test.
    """

    def invoke() -> Result:
        with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
            return CliRunner().invoke(app, list(args), env=env, input=input)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        result = invoke()
    else:
        with ThreadPoolExecutor(1) as pool:
            result = pool.submit(invoke).result()
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(
        ["intake-bot", *args], result.exit_code, result.stdout, result.stderr
    )

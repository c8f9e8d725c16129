"""Flow checks in a worker process with time and memory limits, one check per content.

The proof in ``flows`` is bounded by a budget of states; this adds the bounds a pure core
cannot set: seconds and memory, whatever the admin wrote or the machine does. The seconds
are the check process's own processor time, so a busy machine (which slows the check down
without making it any bigger) does not get a sound flow refused at start; a wall-clock
ceiling ten times as long still stops a check that cannot get the processor at all.
A check never runs in the bot's own process (a runaway check cannot stall clients or grow
the bot), never inside a database transaction (callers hold no session while they wait),
and concurrent requests for the same content share one check.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import resource
import signal
import time
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext, SpawnContext
from pathlib import Path

from flows import CheckReport, Problem, check_text, content_key

__all__ = ["CHECK_MEMORY_BYTES", "CHECK_SECONDS", "FlowChecker"]

log = logging.getLogger(__name__)

#: How much processor time one check may take, and how much memory its process may use.
CHECK_SECONDS = 30.0
CHECK_MEMORY_BYTES = 1 << 30
#: The wall-clock ceiling, as a multiple of the processor time allowed.
WALL_FACTOR = 10


def _cpu_seconds(pid: int) -> float | None:
    """The processor time (user + system) process ``pid`` has used; None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: The exit code of a worker that ran out of memory where it could not report it.
_OUT_OF_MEMORY = 86


def _work(text: str, origin: str, memory: int, out: Connection) -> None:
    """The worker process: cap memory, check, send the report back."""
    with contextlib.suppress(ValueError, OSError):  # a platform without RLIMIT_AS
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    try:
        try:
            report = check_text(text, origin=origin)
        except MemoryError:
            report = _too_complex(origin, "it needed more memory than the check may use")
        except RecursionError:  # pragma: no cover - the walk is iterative; a last guard
            report = _too_complex(origin, "it nests too deeply")
        report.peak_memory_mb = _peak_mb()
        out.send(report)
        out.close()
    except BaseException as exc:
        if _from_memory(exc):  # (also where a handler turned it into another error)
            os._exit(_OUT_OF_MEMORY)
        raise


def _peak_mb() -> float:
    """This process's peak resident memory, in MB."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _from_memory(exc: BaseException | None) -> bool:
    """Whether ``exc`` is, or came from, a MemoryError."""
    seen = 0
    while exc is not None and seen < 100:
        if isinstance(exc, MemoryError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


#: How a check process ends when it runs out of memory: where it could not report it, killed
#: by the kernel, or crashed where native code could not allocate.
_MEMORY_DEATHS = {
    _OUT_OF_MEMORY,
    -signal.SIGKILL,
    -signal.SIGSEGV,
    -signal.SIGABRT,
    -signal.SIGBUS,
}


def _died(origin: str, exitcode: int | None) -> CheckReport:
    """The report on a check whose process ended without reporting (``exitcode`` as
    multiprocessing gives it: negative for a signal)."""
    if exitcode in _MEMORY_DEATHS:
        return _too_complex(origin, "its check ran out of memory, most likely")
    if exitcode is not None and exitcode < 0:
        try:
            how = f"was stopped by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"was stopped by signal {-exitcode}"
    else:
        how = f"ended with exit code {exitcode}"
    log.error("the check of %s %s before it reported", origin, how)
    return CheckReport(
        origin=origin,
        problems=[
            Problem(
                f"the check of this flow could not finish: its process {how}. Nothing was "
                "published or changed. Try again; if it happens again, the bot's log says why",
                file=origin,
            )
        ],
    )


def _too_complex(origin: str, why: str) -> CheckReport:
    return CheckReport(
        origin=origin,
        problems=[
            Problem(
                f"the flow is too complex to prove safe: {why}. Simplify it: fewer answers "
                "that branches or rules look at in one checklist, fewer questions that split "
                "the path, shorter texts",
                file=origin,
            )
        ],
    )


@functools.cache
def _context() -> SpawnContext | ForkServerContext:
    """Where check processes come from: forked from a server process that has loaded only
    the checker (a fresh process in milliseconds, never a fork of the bot with its threads
    and connections); spawned afresh where there is no fork server."""
    if "forkserver" not in multiprocessing.get_all_start_methods():  # pragma: no cover
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


#: Reports of flows that passed, by their text's full hash (``content_key``: the short
#: checksum that names a version can be made to collide). A proof depends only on the text
#: and the safety policy (fixed for the life of the process), so it is done once per process.
_PASSED: dict[str, CheckReport] = {}


class FlowChecker:
    """Runs ``flows.check_text`` in a fresh process per new content, with limits."""

    def __init__(
        self, *, seconds: float = CHECK_SECONDS, memory_bytes: int = CHECK_MEMORY_BYTES
    ) -> None:
        self.seconds = seconds
        self.memory_bytes = memory_bytes
        self._running: dict[str, asyncio.Task[CheckReport]] = {}

    def check_blocking(self, text: str, origin: str) -> CheckReport:
        """Check ``text`` in a worker process and wait (for the CLI and worker threads)."""
        passed = _PASSED.get(content_key(text))
        if passed is not None:
            return passed
        ctx = _context()
        receive, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_work, args=(text, origin, self.memory_bytes, send), name="flow-check"
        )
        proc.start()
        send.close()
        try:
            if self._wait(proc.pid, receive):
                try:
                    report: CheckReport = receive.recv()
                except EOFError:  # the process ended without a report
                    proc.join(5)
                    report = _died(origin, proc.exitcode)
            else:
                log.warning("flow check of %s stopped after %g s", origin, self.seconds)
                report = _too_complex(
                    origin,
                    f"its check did not finish within {self.seconds:g} seconds of processor time",
                )
        finally:
            receive.close()
            if proc.is_alive():
                proc.kill()
            proc.join(5)
        if report.ok:
            _PASSED[content_key(text)] = report
        return report

    def _wait(self, pid: int | None, receive: Connection) -> bool:
        """Wait for the check's report; False once it used up its time (processor time, or
        the wall-clock ceiling)."""
        deadline = time.monotonic() + self.seconds * WALL_FACTOR
        step = min(0.05, self.seconds)
        while not receive.poll(step):
            used = _cpu_seconds(pid) if pid is not None else None
            if (used is not None and used > self.seconds) or time.monotonic() > deadline:
                return False
        return True

    async def check(self, text: str, origin: str) -> CheckReport:
        """Check ``text`` off the event loop; callers asking for the same content share it."""
        key = content_key(text)
        if key in _PASSED:
            return _PASSED[key]
        task = self._running.get(key)
        if task is None:
            task = asyncio.create_task(asyncio.to_thread(self.check_blocking, text, origin))
            self._running[key] = task
            task.add_done_callback(lambda _: self._running.pop(key, None))
        return await asyncio.shield(task)

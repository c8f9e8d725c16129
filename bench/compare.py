"""The intake bot beside two baselines, through one strict fake Bot API, runs interleaved.

Usage::

    .venv/bin/python -m bench.compare [--clients 10,50] [--modes polling,webhook] \\
        [--dbs sqlite,postgresql] [--bots echo,conversation,intake] [--processes 1,2] \\
        [--duration S] [--rounds 1] [--rate-limit] [--typed-phone] [--timeout 300]

Three bots (``bench/bots.py``), each in a process of its own so that its CPU time and memory
are its own: a plain python-telegram-bot echo bot (the framework floor), a PTB
ConversationHandler + PicklePersistence bot of a few questions (what a PTB user would write
instead), and the intake bot on SQLite and on PostgreSQL (a fresh database each run, as in
``bench.dialogue``, migrated before the bot starts, as on every start but the first). For
every client count and mode the runs follow each other, so that a noisy neighbour on the
machine touches all of them alike; ``--rounds`` repeats the whole sequence and reports the
median of each figure.

The clients are those of ``bench.dialogue``: each sends an update only when the bot has
finished reacting to the previous one. Echo clients send 17 texts; ConversationHandler
clients walk its dialogue (/start, a name, a button, the phone, a button) three times, 15
updates; intake clients walk the shipped flow to a request, 17 updates. Both dialogues take
the phone as the client's own shared contact (the one-tap button), or typed with
``--typed-phone``. ``--bots`` leaves some bots out (their ratios then show "-").

Each client walks once by default. ``--duration S`` (for 500 or 1000 clients, whose full walk
takes minutes) keeps N clients walking, each replaced by a new one when it ends, until S
seconds have passed; then nothing new is sent, the updates in flight are answered, and the
row reports all that was sent (wall time about S + N / throughput). Clients cut mid-dialogue
are noted with the median step they reached: the per-update figures then weigh the first
steps more than a full walk would (no request cards when nobody reaches the end).

``--processes 1,2`` runs the intake bot on PostgreSQL in webhook mode as that many processes
on one database (each listening on a port of its own, all giving setWebhook one public URL),
and the benchmark's webhook poster spreads the updates over them in turn, as a round-robin
load balancer would; other bots, databases and modes run one process. Such a row's CPU time
and SQL are the sum over its processes, its RSS the largest; ``updates/s x 1 process`` is its
throughput over that of one process in the same mode and client count.

Figures per run: updates/s (updates reacted to over the wall time of the walk), p50/p99 of
the latency from an update's injection to the bot's first Bot API call for that chat, the
bot process's peak RSS, its CPU time (user + system, all threads, from READY to the end of
the walk, for the intake bot to its last request card) per update, SQL statements (BEGIN
not counted) and commits per update (intake bot: the dialogue step's, and the inbox and
outbox bookkeeping's), Bot API calls per update (all but getUpdates, and in brackets the
chat-bound ones, sends and edits, which Telegram rate-limits per chat: into the client's own
chat + into the staff group, where the request cards go), spec violations (calls the
strict fake refused: unknown parameters, bad HTML, ...), errors the clients saw, and the CPU,
calls and RSS of each bot over the echo bot's and the ConversationHandler bot's in the same
mode and count. Two figures show what the machine had left: the cores busy over the walk (all
processes: the bot, the database, the benchmark itself and any neighbour; from /proc/stat),
and the benchmark's own CPU time per update (the fake Bot API, the clients and the webhook
poster, which share the machine with the bot). When the cores are all busy, a second bot
process or more clients cannot add throughput, whatever the bot does.
Nothing is asserted: it is not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.bots import ASK_NAME, ASK_PHONE, free_port, own_cpu_seconds
from bench.dialogue import (
    ANSWERS,
    LANG,
    STAFF_CHAT_ID,
    TOKEN,
    BenchBotAPI,
    Clients,
    Step,
    Tracker,
    asked,
    cards_posted,
    cut_note,
    dialogue,
    edited,
    fresh_database,
    percentile,
    webhook_poster,
)
from flows import load_flow_text, shipped_flow_path
from tests.fakebotapi import Call

ROOT = Path(__file__).resolve().parent.parent
BOTS = ("echo", "conversation", "intake")
#: Methods that put something in a chat: Telegram limits them per chat and per group.
CHAT_BOUND = frozenset(
    {
        "sendMessage",
        "sendPhoto",
        "sendDocument",
        "sendChatAction",
        "editMessageText",
        "editMessageReplyMarkup",
        "editMessageCaption",
        "deleteMessage",
        "forwardMessage",
        "copyMessage",
    }
)


def _sent(text: str) -> Callable[[Call], bool]:
    return lambda call: call.method == "sendMessage" and call.params.get("text") == text


def echo_steps() -> list[Step]:
    return [
        Step(f"text {n}", f"hello {n}", None, lambda call: call.method == "sendMessage")
        for n in range(1, 18)
    ]


def conversation_steps(typed_phone: bool = False, rounds: int = 3) -> list[Step]:
    phone = str(ANSWERS["phone"])
    one = [
        Step("/start", "/start", None, _sent(ASK_NAME)),
        Step("name", "Bench", None, asked),
        Step("pain: No", None, "No", _sent(ASK_PHONE)),
        Step("phone", phone, None, asked, contact=not typed_phone),
        Step("confirm: Send", None, "Send", edited),
    ]
    return one * rounds


def intake_steps(typed_phone: bool = False) -> list[Step]:
    from bot.settings import Settings

    path = shipped_flow_path()  # the bot proves it; here only its labels are read, as shown
    values = Settings(_env_file=None).flow_values  # type: ignore[call-arg]
    text = path.read_text(encoding="utf-8")
    flow = load_flow_text(text, origin=str(path), values=values)
    return dialogue(flow, ANSWERS, LANG, typed_phone=typed_phone)


@dataclass
class Row:
    """The figures of one run (or the medians of several)."""

    bot: str
    db: str
    mode: str
    clients: int
    processes: int = 1
    completed: int = 0
    #: Clients that ``--duration`` stopped mid-dialogue.
    cut: int = 0
    updates: int = 0
    seconds: float = math.nan
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    peak_rss_mb: float = math.nan
    cpu_seconds: float = math.nan
    calls: int = 0
    #: Chat-bound calls into the clients' own chats and into the staff group.
    client_calls: int = 0
    staff_calls: int = 0
    violations: int = 0
    errors: int = 0
    sql_statements: float = math.nan
    sql_commits: float = math.nan
    path_statements: float = math.nan
    path_commits: float = math.nan
    #: Processor time the whole machine spent over the walk (all processes, all cores), and
    #: the benchmark's own (the fake Bot API, the clients, the webhook poster).
    machine_cpu_seconds: float = math.nan
    bench_cpu_seconds: float = math.nan
    timed_out: bool = False
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        if self.bot != "intake":
            return self.bot
        processes = f", {self.processes} processes" if self.processes > 1 else ""
        return f"intake ({self.db}{processes})"

    def per_update(self, value: float) -> float:
        return value / self.updates if self.updates else math.nan

    @property
    def updates_per_second(self) -> float:
        return self.updates / self.seconds if self.seconds else math.nan

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.per_update(self.cpu_seconds)

    @property
    def cores_busy(self) -> float:
        """How many of the machine's cores were busy over the walk, on average."""
        return self.machine_cpu_seconds / self.seconds if self.seconds else math.nan


def machine_cpu_seconds() -> float:
    """Processor time the machine has spent so far, all cores, idle and iowait not counted
    (``/proc/stat``); NaN where there is none."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return math.nan
    ticks = [int(value) for value in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


# --- one run ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def database(bot: str, db: str) -> AsyncIterator[str | None]:
    if bot != "intake":
        yield None
        return
    async with fresh_database(db) as url:
        # Migrated here, as by `intake-bot db upgrade` before a deploy: the bot then starts as
        # it does on every start but the first, without loading the migration tool.
        from storage import make_engine, upgrade

        engine = make_engine(url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()
        yield url


Stop = Callable[[], Awaitable[dict[str, Any]]]


@contextlib.asynccontextmanager
async def bot_process(bot: str, command: list[str]) -> AsyncIterator[Stop]:
    """Start ``command`` and wait for READY; yield a function that stops it and reports."""
    with tempfile.TemporaryFile() as stderr:
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert process.stdin is not None and process.stdout is not None
        stdin, stdout = process.stdin, process.stdout

        def failed(what: str) -> RuntimeError:
            stderr.seek(0)
            tail = stderr.read().decode(errors="replace").strip().splitlines()[-15:]
            return RuntimeError(f"{bot} bot {what}:\n" + "\n".join(tail))

        async def stop() -> dict[str, Any]:
            stdin.write(b"STOP\n")
            await stdin.drain()
            async for line in stdout:
                if line.startswith(b"REPORT "):
                    await process.wait()
                    return dict(json.loads(line[len(b"REPORT ") :]))
            raise failed("ended without a report")

        try:
            line = await asyncio.wait_for(stdout.readline(), 120)
            if line.strip() != b"READY":
                raise failed("did not start")
            yield stop
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


@contextlib.asynccontextmanager
async def bot_processes(
    bot: str, mode: str, api: BenchBotAPI, url: str | None, args: argparse.Namespace, count: int
) -> AsyncIterator[tuple[Stop, list[str] | None]]:
    """Start ``count`` processes of ``bench.bots``, each READY before the next starts (they
    migrate one database). Yield a function that stops them all and merges their reports
    (CPU time and SQL summed, the largest RSS), and the webhook URLs to post to in turn
    (the intake bot's processes; None: the one given to setWebhook)."""
    command = [
        sys.executable, "-m", "bench.bots", bot, "--mode", mode, "--token", TOKEN,
        "--base-url", api.base_url, "--base-file-url", api.base_file_url,
    ]  # fmt: skip
    if url is not None:
        command += ["--db", url, "--staff-chat", str(STAFF_CHAT_ID)]
    if args.rate_limit:
        command.append("--rate-limit")
    targets = None
    if bot == "intake" and mode == "webhook":
        ports: list[int] = []
        while len(ports) < count:
            if (port := free_port()) not in ports:
                ports.append(port)
        targets = [f"http://127.0.0.1:{port}/telegram" for port in ports]
    async with contextlib.AsyncExitStack() as stack:
        stops = []
        for n in range(count):
            own = list(command)
            if targets is not None:
                own += ["--port", str(ports[n]), "--webhook-url", targets[0]]
            if bot == "intake" and os.environ.get("BENCH_PROFILE"):
                own += ["--profile", os.environ["BENCH_PROFILE"] + (f".{n}" if n else "")]
            stops.append(await stack.enter_async_context(bot_process(bot, own)))

        async def stop() -> dict[str, Any]:
            reports = await asyncio.gather(*(stop() for stop in stops))
            merged = {key: sum(report[key] for report in reports) for key in reports[0]}
            merged["peak_rss_mb"] = max(report["peak_rss_mb"] for report in reports)
            return merged

        yield stop, targets


def _steps(bot: str, typed_phone: bool) -> list[Step]:
    if bot == "echo":
        return echo_steps()
    if bot == "conversation":
        return conversation_steps(typed_phone)
    return intake_steps(typed_phone)


async def run_one(
    bot: str, db: str, mode: str, clients: int, processes: int, args: argparse.Namespace
) -> Row:
    row = Row(bot, db if bot == "intake" else "-", mode, clients, processes)
    steps = _steps(bot, args.typed_phone)
    tracker = Tracker()
    api = BenchBotAPI(tracker, webhook=mode == "webhook")
    async with api, database(bot, db) as url:
        api.add_chat(STAFF_CHAT_ID, chat_type="supergroup", title="Staff")
        async with bot_processes(bot, mode, api, url, args, processes) as (stop, targets):
            first = len(api.calls)
            async with webhook_poster(api, mode, shared=True, targets=targets) as post:
                walkers = Clients(api, steps, post, args.step_timeout, args.retries)
                machine, own = machine_cpu_seconds(), own_cpu_seconds()
                row.timed_out = await walkers.run(clients, args.timeout, args.duration)
                row.machine_cpu_seconds = machine_cpu_seconds() - machine
                row.bench_cpu_seconds = own_cpu_seconds() - own
                row.seconds = walkers.seconds
            unposted = None
            if bot == "intake":
                unposted = await cards_posted(tracker, walkers.completed, paced=args.rate_limit)
            report = await stop()
            calls = [call for call in api.calls[first:] if call.method != "getUpdates"]
    latencies = sorted(tracker.latencies)
    row.completed, row.cut, row.updates = walkers.completed, len(walkers.cut_at), len(latencies)
    row.p50_ms, row.p99_ms = percentile(latencies, 50), percentile(latencies, 99)
    row.peak_rss_mb = report["peak_rss_mb"]
    row.cpu_seconds = report["cpu_seconds"]
    row.sql_statements = report.get("sql_statements", math.nan)
    row.sql_commits = report.get("sql_commits", math.nan)
    row.path_statements = report.get("sql_path_statements", math.nan)
    row.path_commits = report.get("sql_path_commits", math.nan)
    row.calls = len(calls)
    chat_bound = [call for call in calls if call.method in CHAT_BOUND]
    row.staff_calls = sum(1 for call in chat_bound if call.params.get("chat_id") == STAFF_CHAT_ID)
    row.client_calls = len(chat_bound) - row.staff_calls
    row.violations = sum(1 for call in calls if call.rejected)
    row.errors = sum(tracker.client_errors.values()) + sum(
        1 for call in calls if not call.ok and not call.rejected
    )
    row.notes = [
        note for note in (cut_note(walkers.cut_at, len(steps), args.duration), unposted) if note
    ]
    row.notes += [f"{n} x {text}" for text, n in tracker.client_errors.most_common(3)]
    row.notes += sorted(
        {f"refused: {call.method}: {call.error}" for call in calls if call.rejected}
    )[:3]
    return row


def median_row(rows: list[Row]) -> Row:
    """The median of each figure over repeated runs of one configuration."""
    if len(rows) == 1:
        return rows[0]
    merged = dataclasses.replace(rows[0])
    for item in dataclasses.fields(Row):
        values = [getattr(row, item.name) for row in rows]
        if item.type in ("int", "float") and not any(
            isinstance(v, float) and math.isnan(v) for v in values
        ):
            median = statistics.median(values)
            setattr(merged, item.name, round(median) if item.type == "int" else median)
    merged.timed_out = any(row.timed_out for row in rows)
    merged.notes = [note for row in rows for note in row.notes]
    return merged


# --- report ----------------------------------------------------------------------------------


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _ratio(value: float, base: float) -> str:
    return "-" if math.isnan(value) or math.isnan(base) or not base else f"{value / base:.1f}"


def table(rows: list[Row]) -> str:
    scaled = any(row.processes > 1 for row in rows)
    columns = [
        "bot", "mode", "clients", "done", "updates", "updates/s", "p50 ms", "p99 ms",
        "peak RSS MB", "CPU ms/update", "step SQL/update", "step commits/update",
        "inbox+outbox SQL (commits)/update",
        "calls/update: all (client chat + staff)", "spec violations", "errors",
        "CPU x echo / x conv", "calls x echo / x conv", "RSS x echo / x conv",
        f"cores busy (of {os.cpu_count()})", "load CPU ms/update",
    ]  # fmt: skip
    if scaled:
        columns.append("updates/s x 1 process")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        bases = {
            base.bot: base
            for base in rows
            if base.bot != "intake" and (base.mode, base.clients) == (row.mode, row.clients)
        }
        echo, conv = bases.get("echo"), bases.get("conversation")

        def ratios(
            value: Callable[[Row], float],
            row: Row = row,
            against: tuple[Row | None, ...] = (echo, conv),
        ) -> str:
            return " / ".join(_ratio(value(row), value(base)) if base else "-" for base in against)

        done = str(row.completed) + (f" (+{row.cut} cut)" if row.cut else "")
        cells = [
            row.name,
            row.mode,
            str(row.clients),
            done + (" (timed out)" if row.timed_out else ""),
            str(row.updates),
            _fmt(row.updates_per_second, 0),
            _fmt(row.p50_ms, 0),
            _fmt(row.p99_ms, 0),
            _fmt(row.peak_rss_mb, 0),
            _fmt(row.cpu_ms, 2),
            _fmt(row.per_update(row.sql_statements)),
            _fmt(row.per_update(row.sql_commits), 2),
            f"{_fmt(row.per_update(row.path_statements))} "
            f"({_fmt(row.per_update(row.path_commits), 2)})",
            f"{_fmt(row.per_update(row.calls), 2)} ({_fmt(row.per_update(row.client_calls), 2)}"
            f" + {_fmt(row.per_update(row.staff_calls), 2)})",
            str(row.violations),
            str(row.errors),
            ratios(lambda r: r.cpu_ms),
            ratios(lambda r: r.per_update(r.calls)),
            ratios(lambda r: r.peak_rss_mb),
            _fmt(row.cores_busy, 2),
            _fmt(1000 * row.per_update(row.bench_cpu_seconds), 2),
        ]
        if scaled:
            one = next(
                (
                    base
                    for base in rows
                    if base.processes == 1
                    and (base.bot, base.db, base.mode, base.clients)
                    == (row.bot, row.db, row.mode, row.clients)
                ),
                None,
            )
            cells.append(
                _ratio(row.updates_per_second, one.updates_per_second)
                if one is not None and row.processes > 1
                else "-"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------


async def postgres_reachable() -> bool:
    try:
        async with fresh_database("postgresql"):
            return True
    except (OSError, TimeoutError, Exception):  # noqa: BLE001 - any failure means "skip it"
        return False


def plan(args: argparse.Namespace, dbs: list[str], mode: str) -> list[tuple[str, str, int]]:
    """The runs of one mode and client count: (bot, database, processes), in order."""
    runs: list[tuple[str, str, int]] = []
    for bot in args.bots:
        if bot != "intake":
            runs.append((bot, "-", 1))
            continue
        for db in dbs:
            several = (db, mode) == ("postgresql", "webhook")
            runs += [(bot, db, n) for n in (args.processes if several else [1])]
    return list(dict.fromkeys(runs))


async def main_async(args: argparse.Namespace) -> list[Row]:
    dbs = list(args.dbs)
    if "intake" in args.bots and "postgresql" in dbs and not await postgres_reachable():
        print("PostgreSQL at 127.0.0.1:5432 is unreachable: the intake bot runs on SQLite only")
        dbs.remove("postgresql")
    runs: dict[tuple[str, str, str, int, int], list[Row]] = {}
    for clients in args.clients:
        for mode in args.modes:
            for round_number in range(args.rounds):
                for bot, db, processes in plan(args, dbs, mode):
                    label = bot + (f"/{db}" if db != "-" else "")
                    label += f" x{processes}" if processes > 1 else ""
                    print(
                        f"{mode}, {clients} clients, round {round_number + 1}: {label} ...",
                        end=" ",
                        flush=True,
                    )
                    row = await run_one(bot, db, mode, clients, processes, args)
                    print(
                        f"{row.updates} updates in {row.seconds:.1f} s, "
                        f"{row.cpu_ms:.2f} CPU ms/update",
                        flush=True,
                    )
                    runs.setdefault((bot, db, mode, clients, processes), []).append(row)
    return [median_row(rows) for rows in runs.values()]


def _list(kind: Callable[[str], Any], allowed: tuple[Any, ...] | None = None) -> Any:
    def parse(text: str) -> list[Any]:
        values = [kind(part) for part in text.split(",") if part]
        if allowed is not None and any(value not in allowed for value in values):
            raise argparse.ArgumentTypeError(f"choose from {', '.join(map(str, allowed))}")
        return values

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description="The intake bot beside a PTB echo bot and a ConversationHandler bot.",
    )
    parser.add_argument(
        "--clients", type=_list(int), default=[10, 50], help="client counts (10,50)"
    )
    parser.add_argument(
        "--modes",
        type=_list(str, ("polling", "webhook")),
        default=["polling", "webhook"],
        help="polling,webhook",
    )
    parser.add_argument(
        "--dbs",
        type=_list(str, ("sqlite", "postgresql")),
        default=["sqlite", "postgresql"],
        help="databases of the intake bot (sqlite,postgresql)",
    )
    parser.add_argument(
        "--bots", type=_list(str, BOTS), default=list(BOTS), help="echo,conversation,intake"
    )
    parser.add_argument(
        "--processes",
        type=_list(int),
        default=[1],
        help="processes of the intake bot on PostgreSQL in webhook mode, e.g. 1,2 (1)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        help="seconds new clients keep starting, then the run drains (default: each walks once)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat and take medians (1)")
    parser.add_argument(
        "--rate-limit", action="store_true", help="PTB's AIORateLimiter in every bot"
    )
    parser.add_argument(
        "--typed-phone", action="store_true", help="type the phone instead of sharing a contact"
    )
    parser.add_argument(
        "--timeout", type=float, default=300, help="seconds per run, drain included (300)"
    )
    parser.add_argument(
        "--step-timeout", type=float, default=60, help="seconds a client waits for a reaction"
    )
    parser.add_argument(
        "--retries", type=int, default=3, help="times a client resends after 'sorry' (3)"
    )
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.processes):
        parser.error("--processes must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows = asyncio.run(main_async(args))
    print()
    print(table(rows))
    notes = [
        f"  {row.name}, {row.mode}, {row.clients}: {note}" for row in rows for note in row.notes
    ]
    if notes:
        print("\n".join(["", "notes:", *notes]))


if __name__ == "__main__":
    main()

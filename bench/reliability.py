"""Reliability as an outsider sees it: first replies in a flood, nothing lost or doubled on kill -9.

Usage::

    .venv/bin/python -m bench.reliability [--scenario flood|kill|both] \\
        [--db sqlite|postgresql|both] [--mode polling|webhook|both] [--clients 10] \\
        [--newcomers 20] [--flood 150] [--kills 3] [--seed 1] [--step-timeout 90]

The intake bot runs as a process of its own (``python -m bench.bots intake``, as in
``bench.compare``) against the strict fake Bot API, on a fresh database (a SQLite file, or a
new PostgreSQL database), fed by polling or by a webhook. In webhook mode the fake plays
Telegram's part: it POSTs every update to the URL the bot last gave to setWebhook and, on
anything but 200 (the bot down, the connection cut), POSTs it again until it is taken. In
polling mode an update simply waits in getUpdates until a bot confirms it.

flood
    With PTB's rate limiter (Telegram allows 20 messages a minute into one group), ``--flood``
    commands (/help, /queue, /stats, /start, /info) are posted at once in the staff group by a
    member, and ``--clients`` clients walk the shipped dialogue to a request, each request's
    card going to the same group. Meanwhile ``--newcomers`` new clients send /start, one every
    0.2-1 s. Reported: the newcomers' first-reply latency (from the update's injection to the
    bot's first call in their chat; target under 2 s), and how many messages reached the
    staff group during the run (the limiter at work).
``kill``
    ``--clients`` clients walk the dialogue while the bot process is SIGKILLed ``--kills``
    times, 2-5 s after each start, and started again on the same database. A client waits up
    to ``--step-timeout`` for each reaction, across restarts. At the end the bot is given
    time to deliver every request's card, then stopped. Counted from the fake's recorded
    calls and the database only:

    - lost: updates whose reaction never came (late: it came after the client gave up), and
      buttons a client waited for in vain;
    - replies doubled: a text sent again by sendMessage into a client's chat (every reply of
      the walk has a text of its own); the notes say when each copy came and the kill before;
    - presses answered twice: answerCallbackQuery repeated for one press (Telegram refuses
      the repeat, so nothing shows; repeated edits, refused as "not modified", are a note);
    - cards doubled: a request's card (found by the client's phone) sent more than once to
      the staff group; cards missing: requests without one;
    - requests in the database per completed client (each should have exactly one);
    - the slowest reaction: how long a client waited across a restart (on PostgreSQL a dead
      process's chats stay leased for up to 30 s).

    ``--kills 0`` gives the baseline of the same walk (all zeros).

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
import random
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from sqlalchemy import func, select
from sqlmodel import col

from bench.compare import intake_steps, postgres_reachable
from bench.dialogue import (
    FIRST_USER_ID,
    LANG,
    STAFF_CHAT_ID,
    TOKEN,
    BenchBotAPI,
    Probe,
    Step,
    Tracker,
    fresh_database,
    percentile,
)
from storage import Client, ConsultationRequest, make_engine
from tests.fakebotapi import Call

ROOT = Path(__file__).resolve().parent.parent
#: The staff member who floods the staff group (a member, so /queue and /stats answer).
STAFF_USER_ID = 900_001
FLOOD_COMMANDS = ("/help", "/queue", "/stats", "/start", "/info")
#: First user id of the newcomers (the walking clients start at FIRST_USER_ID).
FIRST_NEWCOMER_ID = 50_000


# --- the bot as a process that can be killed ------------------------------------------------


class BotProcess:
    """``python -m bench.bots intake`` on one database: started, SIGKILLed, started again."""

    def __init__(
        self, api: BenchBotAPI, url: str, mode: str, rate_limit: bool, stderr: IO[bytes]
    ) -> None:
        self.command = [
            sys.executable, "-m", "bench.bots", "intake", "--mode", mode, "--token", TOKEN,
            "--base-url", api.base_url, "--base-file-url", api.base_file_url,
            "--db", url, "--staff-chat", str(STAFF_CHAT_ID),
        ]  # fmt: skip
        if rate_limit:
            self.command.append("--rate-limit")
        self.stderr = stderr
        self.process: asyncio.subprocess.Process | None = None
        #: Seconds from each start to READY.
        self.starts: list[float] = []

    async def start(self) -> None:
        started = time.perf_counter()
        self.process = await asyncio.create_subprocess_exec(
            *self.command,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self.stderr,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 120)
        if line.strip() != b"READY":
            raise self.failed("did not start")
        self.starts.append(time.perf_counter() - started)

    async def kill(self) -> None:
        """SIGKILL: no stop, no grace, whatever was in hand is cut off."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def stop(self) -> None:
        """Ask for a clean stop (as SIGTERM would) and wait for the process to end."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(b"STOP\n")
        await process.stdin.drain()
        async for line in process.stdout:
            if line.startswith(b"REPORT "):
                break
        await process.wait()

    def failed(self, what: str) -> RuntimeError:
        self.stderr.seek(0)
        tail = self.stderr.read().decode(errors="replace").strip().splitlines()[-15:]
        return RuntimeError(f"intake bot {what}:\n" + "\n".join(tail))


class Delivery:
    """Telegram's side of a webhook: POST an update until the bot answers 200.

    At most 40 requests at once, Telegram's default ``max_connections``: 40 senders, each
    with a connection of its own, take the updates in the order they came; an update the
    bot did not take goes back in line after a pause (0.1 s, doubling up to 1 s), so no
    connection waits idle on a retry. (One httpx client sharing 40 connections among a
    queue of requests spends 5-7 ms of CPU per POST on its pool's bookkeeping, and more
    when the queue is long: the fake, not the bot, was then what the updates waited for.)
    """

    CONNECTIONS = 40

    def __init__(self, api: BenchBotAPI) -> None:
        self.api = api
        #: Updates to POST, as (update id, body, pause before the next try if this one fails).
        self.line: asyncio.Queue[tuple[int, str, float]] = asyncio.Queue()
        self.clients = [
            httpx.AsyncClient(trust_env=False, timeout=10, limits=httpx.Limits(max_connections=1))
            for _ in range(self.CONNECTIONS)
        ]
        self.senders = [asyncio.create_task(self._send(http)) for http in self.clients]
        self.retries = 0
        #: When the bot answered 200, by update id.
        self.taken: dict[int, float] = {}

    def deliver(self, update: dict[str, Any]) -> None:
        self.line.put_nowait((update["update_id"], json.dumps(update), 0.1))

    async def _send(self, http: httpx.AsyncClient) -> None:
        while True:
            update_id, body, delay = await self.line.get()
            if await self._post(http, body):
                self.taken[update_id] = time.perf_counter()
                continue
            self.retries += 1
            again = (update_id, body, min(delay * 2, 1.0))
            asyncio.get_running_loop().call_later(delay, self.line.put_nowait, again)

    async def _post(self, http: httpx.AsyncClient, body: str) -> bool:
        url, secret = self.api.webhook_url, self.api.webhook_secret_token
        if url is None:
            return False
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        try:
            response = await http.post(url, content=body, headers=headers)
        except httpx.HTTPError:
            return False  # the bot is down or was cut off mid-request
        return response.status_code == 200

    async def close(self) -> None:
        for task in self.senders:
            task.cancel()
        await asyncio.gather(*self.senders, return_exceptions=True)
        for http in self.clients:
            await http.aclose()


# --- what the fake saw ----------------------------------------------------------------------


class Log(Tracker):
    """The benchmark's tracker, also keeping every call with its time and chat."""

    def __init__(self) -> None:
        super().__init__()
        self.timeline: list[tuple[float, int | None, Call]] = []
        self.query_chats: dict[str, int] = {}

    def on_call(self, call: Call, at: float) -> None:
        if call.method != "getUpdates":
            self.timeline.append((at, self.chat_of(call), call))
        super().on_call(call, at)

    def chat_of(self, call: Call) -> int | None:
        if call.method == "answerCallbackQuery":
            return self.query_chats.get(str(call.params.get("callback_query_id")))
        try:
            return int(call.params.get("chat_id"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None

    def calls(self, chats: Iterable[int] | None = None) -> list[tuple[float, int, Call]]:
        """Calls (not getUpdates) in ``chats`` (or any chat), in order."""
        wanted = set(chats) if chats is not None else None
        return [
            (at, chat, call)
            for at, chat, call in self.timeline
            if chat is not None and (wanted is None or chat in wanted)
        ]


@dataclass
class Sent:
    """One update a client sent, and what became of it."""

    user_id: int
    step: Step
    sent_at: float
    update_id: int
    first_at: float | None = None
    done_at: float | None = None
    #: "ok", "sorry", or "no reaction" (the client gave up waiting).
    outcome: str = ""


class Walkers:
    """Clients sending updates one at a time, each waiting for the bot's reaction."""

    def __init__(self, setup: Setup, step_timeout: float) -> None:
        self.api = setup.api
        self.log = setup.log
        self.delivery = setup.delivery
        self.step_timeout = step_timeout
        self.sent: list[Sent] = []
        self.completed: set[int] = set()
        #: Why a client stopped before the end.
        self.gave_up: dict[int, str] = {}

    async def walk(self, user_id: int, steps: list[Step], retries: int = 3) -> None:
        """Walk ``steps``; a "sorry" is answered by sending the update again."""
        for number, step in enumerate(steps, 1):
            for _ in range(retries + 1):
                try:
                    outcome = await self.send(user_id, number, step)
                except TimeoutError:
                    self.gave_up[user_id] = f"{step.name}: no reaction"
                    return
                except LookupError:
                    self.gave_up[user_id] = f"{step.name}: no button {step.label!r} to press"
                    return
                if outcome == "ok":
                    break
            else:
                self.gave_up[user_id] = f"{step.name}: 'sorry' {retries + 1} times"
                return
        self.completed.add(user_id)

    async def button(self, user_id: int, label: str) -> tuple[int, str]:
        """The button to press, once shown (a doubled message can end a step too early)."""
        deadline = time.monotonic() + self.step_timeout
        while True:
            try:
                return self.api.find_button(user_id, label)
            except LookupError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.2)

    async def send(self, user_id: int, number: int, step: Step) -> str:
        api = self.api
        if step.label is not None:
            message_id, data = await self.button(user_id, step.label)
            query_id = api.user_callback(user_id, message_id, data, language_code=LANG)
            self.log.queries[query_id] = user_id
            self.log.query_chats[query_id] = user_id
        else:
            api.user_message(user_id, step.text or "", language_code=LANG)
        finished: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        probe = Probe(number, time.perf_counter(), step.until, finished)
        sent = Sent(user_id, step, probe.sent_at, api.last_update["update_id"])
        self.sent.append(sent)
        self.log.probes[user_id] = probe
        if self.delivery is not None:
            self.delivery.deliver(api.last_update)
        try:
            ok = await asyncio.wait_for(finished, self.step_timeout)
            sent.done_at = time.perf_counter()
            sent.outcome = "ok" if ok else "sorry"
            return sent.outcome
        except TimeoutError:
            sent.outcome = "no reaction"
            raise
        finally:
            sent.first_at = probe.first_at
            del self.log.probes[user_id]


def phone_of(user_id: int) -> str:
    return f"+7912{user_id:07d}"


def own_steps(steps: list[Step], user_id: int) -> list[Step]:
    """The walk with a phone number of the client's own, to find its card in the group."""
    return [
        dataclasses.replace(step, text=phone_of(user_id)) if step.text == "+79123456789" else step
        for step in steps
    ]


async def requests_by_client(url: str) -> Counter[int]:
    """Requests in the database per client's Telegram id."""
    engine = make_engine(url)
    statement = (
        select(col(Client.telegram_id), func.count(col(ConsultationRequest.id)))
        .join(ConsultationRequest, col(ConsultationRequest.client_id) == col(Client.id))
        .group_by(col(Client.telegram_id))
    )
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
    finally:
        await engine.dispose()
    return Counter({user: n for user, n in rows if user is not None})


# --- counting from the outside --------------------------------------------------------------


def doubled_replies(
    log: Log, users: Iterable[int], kills: list[float], origin: float
) -> tuple[int, int, int, list[str]]:
    """(texts sent again into a client chat, presses answered twice, repeated edits, notes).

    The notes give the seconds (from ``origin``) of each copy and of the kill before it.
    """
    sends: defaultdict[tuple[int, str], list[float]] = defaultdict(list)
    answers: Counter[str] = Counter()
    edits: Counter[tuple[int, str]] = Counter()
    for at, chat, call in log.calls(users):
        if call.method == "sendMessage" and call.ok:
            sends[(chat, str(call.params.get("text")))].append(at)
        elif call.method == "answerCallbackQuery":
            answers[str(call.params.get("callback_query_id"))] += 1
        elif call.method == "editMessageText":
            edits[(chat, json.dumps(call.params, sort_keys=True, default=str))] += 1
    doubled = {key: times for key, times in sends.items() if len(times) > 1}

    def when(at: float) -> str:
        before = [kill for kill in kills if kill < at]
        kill = f" (kill at {before[-1] - origin:.2f})" if before else ""
        return f"{at - origin:.2f}{kill}"

    notes = [
        f"chat {chat}: {text[:50]!r} sent at " + ", ".join(when(at) for at in times) + " s"
        for (chat, text), times in sorted(doubled.items())
    ]
    for kill in kills:  # how close to the kill a send must be made to be made again
        firsts = [(times[0], len(times) > 1) for times in sends.values()]
        near = [(kill - at, again) for at, again in firsts if 0 < kill - at < 1]
        again = sorted(f"{1000 * gap:.0f}" for gap, repeated in near if repeated)
        notes.append(
            f"kill at {kill - origin:.2f} s: {len(near)} send(s) in the second before it, "
            f"{len(again)} made again after the restart"
            + (f" (made {', '.join(again)} ms before the kill)" if again else "")
        )
    return (
        sum(len(times) - 1 for times in doubled.values()),
        sum(n - 1 for n in answers.values() if n > 1),
        sum(n - 1 for n in edits.values() if n > 1),
        notes,
    )


def cards_by_client(log: Log, users: Iterable[int]) -> Counter[int]:
    """Cards sent to the staff group per client, recognised by the client's phone."""
    phones = {phone_of(user): user for user in users}
    cards: Counter[int] = Counter()
    for _, _, call in log.calls([STAFF_CHAT_ID]):
        if call.method != "sendMessage" or not call.ok:
            continue
        text = str(call.params.get("text"))
        for phone in re.findall(r"\+7912\d{7}", text):
            if phone in phones:
                cards[phones[phone]] += 1
    return cards


# --- the runs -------------------------------------------------------------------------------


@dataclass
class FloodRow:
    db: str
    mode: str
    clients: int
    newcomers: int
    flood: int
    completed: int = 0
    answered: int = 0
    first_replies: list[float] = field(default_factory=list)
    staff_messages: int = 0
    seconds: float = math.nan
    sorry: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class KillRow:
    db: str
    mode: str
    clients: int
    killed_at: list[float] = field(default_factory=list)
    completed: int = 0
    updates: int = 0
    lost: int = 0
    late: int = 0
    sorry: int = 0
    doubled: int = 0
    answered_twice: int = 0
    edits_repeated: int = 0
    cards_doubled: int = 0
    cards_missing: int = 0
    requests: int = 0
    exactly_one: int = 0
    reactions: list[float] = field(default_factory=list)
    restart_seconds: list[float] = field(default_factory=list)
    redeliveries: int = 0
    seconds: float = math.nan
    notes: list[str] = field(default_factory=list)


@dataclass
class Setup:
    """One run's fake Telegram, its log, the database and the bot process."""

    api: BenchBotAPI
    log: Log
    url: str
    bot: BotProcess
    delivery: Delivery | None

    def post_in_group(self, text: str) -> None:
        """A staff member writes ``text`` in the staff group."""
        self.api.user_message(
            STAFF_USER_ID, text, chat_id=STAFF_CHAT_ID, chat_type="supergroup", language_code=LANG
        )
        if self.delivery is not None:
            self.delivery.deliver(self.api.last_update)


@contextlib.asynccontextmanager
async def bench_setup(db: str, mode: str, rate_limit: bool) -> AsyncIterator[Setup]:
    """A fresh database, the fake API (with the staff group) and the bot process, not started."""
    log = Log()
    api = BenchBotAPI(log, webhook=mode == "webhook")
    async with fresh_database(db) as url, api:
        api.add_chat(STAFF_CHAT_ID, chat_type="supergroup", title="Staff")
        api.add_chat_member(STAFF_CHAT_ID, STAFF_USER_ID)
        delivery = Delivery(api) if mode == "webhook" else None
        with tempfile.TemporaryFile() as stderr:
            bot = BotProcess(api, url, mode, rate_limit, stderr)
            try:
                yield Setup(api, log, url, bot, delivery)
            finally:
                await bot.kill()
                if delivery is not None:
                    await delivery.close()


async def flood_run(db: str, mode: str, args: argparse.Namespace) -> FloodRow:
    row = FloodRow(db, mode, args.clients, args.newcomers, args.flood)
    steps = intake_steps()
    rng = random.Random(args.seed)
    newcomers = range(FIRST_NEWCOMER_ID, FIRST_NEWCOMER_ID + args.newcomers)
    async with bench_setup(db, mode, rate_limit=True) as setup:
        await setup.bot.start()
        walkers = Walkers(setup, args.step_timeout)
        started = time.perf_counter()
        for n in range(args.flood):
            setup.post_in_group(FLOOD_COMMANDS[n % len(FLOOD_COMMANDS)])
        tasks = [
            asyncio.create_task(walkers.walk(user, steps))
            for user in range(FIRST_USER_ID, FIRST_USER_ID + args.clients)
        ]
        for user in newcomers:
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            tasks.append(asyncio.create_task(walkers.walk(user, steps[:1])))
        _, pending = await asyncio.wait(tasks, timeout=args.timeout)
        row.seconds = time.perf_counter() - started
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await setup.bot.stop()
    firsts = sorted(
        (
            (s.first_at - s.sent_at, s)
            for s in walkers.sent
            if s.first_at and s.user_id in newcomers
        ),
        key=lambda pair: pair[0],
    )
    row.first_replies = [latency for latency, _ in firsts]
    taken = setup.delivery.taken if setup.delivery is not None else {}
    row.notes += [
        f"newcomer {s.user_id}: first reply after {1000 * latency:.0f} ms"
        f" (sent {s.sent_at - started:.1f} s into the flood"
        + (
            f", webhook answered 200 after {1000 * (taken[s.update_id] - s.sent_at):.0f} ms)"
            if s.update_id in taken
            else ")"
        )
        for latency, s in firsts[-3:]
    ]
    row.answered = len(row.first_replies)
    row.completed = sum(1 for user in walkers.completed if user not in newcomers)
    row.sorry = sum(1 for s in walkers.sent if s.outcome == "sorry")
    row.staff_messages = sum(
        1 for _, _, call in setup.log.calls([STAFF_CHAT_ID]) if call.method == "sendMessage"
    )
    if pending:
        row.notes.append(f"{len(pending)} client(s) still walking after {args.timeout:.0f} s")
    row.notes += [f"client {user} gave up at {why}" for user, why in walkers.gave_up.items()]
    return row


async def kill_run(db: str, mode: str, args: argparse.Namespace) -> KillRow:
    row = KillRow(db, mode, args.clients)
    steps = intake_steps()
    rng = random.Random(args.seed)
    users = range(FIRST_USER_ID, FIRST_USER_ID + args.clients)
    async with bench_setup(db, mode, args.rate_limit) as setup:
        bot, log = setup.bot, setup.log
        await bot.start()
        walkers = Walkers(setup, args.step_timeout)
        started = time.perf_counter()
        walking = asyncio.gather(*(walkers.walk(user, own_steps(steps, user)) for user in users))
        for _ in range(args.kills):
            await asyncio.wait([walking], timeout=rng.uniform(2.0, 5.0))
            if walking.done():
                break
            await bot.kill()
            row.killed_at.append(time.perf_counter())
            await bot.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(walking, args.timeout)
        row.seconds = time.perf_counter() - started
        await settle(log, setup.url, users, args.settle)
        await bot.stop()
        per_client = await requests_by_client(setup.url)
    row.restart_seconds = bot.starts[1:]
    row.redeliveries = setup.delivery.retries if setup.delivery is not None else 0
    row.completed = len(walkers.completed)
    row.updates = len(walkers.sent)
    row.sorry = sum(1 for s in walkers.sent if s.outcome == "sorry")
    row.reactions = sorted(s.done_at - s.sent_at for s in walkers.sent if s.done_at is not None)
    for sent in walkers.sent:
        if sent.outcome not in ("ok", "sorry"):  # gave up, or still waiting at the end
            came = any(
                call.ok and sent.step.until(call)
                for at, _, call in log.calls([sent.user_id])
                if at > sent.sent_at
            )
            row.late += came
            row.lost += not came
            if came:
                row.notes.append(f"client {sent.user_id}: the reaction came after it gave up")
    # A button that never showed up: the reaction it belongs to was lost, whatever came.
    row.lost += sum(1 for why in walkers.gave_up.values() if "no button" in why)
    row.notes += [f"client {user} gave up at {why}" for user, why in walkers.gave_up.items()]
    row.doubled, row.answered_twice, row.edits_repeated, notes = doubled_replies(
        log, users, row.killed_at, started
    )
    row.notes += notes
    cards = cards_by_client(log, users)
    row.cards_doubled = sum(n - 1 for n in cards.values() if n > 1)
    row.cards_missing = sum(1 for user in users if per_client[user] and not cards[user])
    row.requests = sum(per_client[user] for user in users)
    row.exactly_one = sum(1 for user in walkers.completed if per_client[user] == 1)
    return row


async def settle(log: Log, url: str, users: range, limit: float) -> None:
    """Give the bot ``limit`` seconds to show every stored request's card, then 2 s of quiet.

    After a kill on PostgreSQL a chat stays leased to the dead process for up to 30 s.
    """
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        wanted = {user for user, n in (await requests_by_client(url)).items() if n}
        if wanted <= set(cards_by_client(log, users)):
            break
        await asyncio.sleep(0.5)
    quiet = len(log.timeline)
    while time.monotonic() < deadline:
        await asyncio.sleep(2)
        if len(log.timeline) == quiet:
            break
        quiet = len(log.timeline)


# --- report ---------------------------------------------------------------------------------


def _ms(values: list[float], q: float) -> str:
    value = percentile(values, q)
    return "-" if math.isnan(value) else f"{value:.0f}"


def flood_table(rows: list[FloodRow]) -> str:
    columns = [
        "db", "mode", "staff commands", "clients (done)", "newcomers (answered)",
        "first reply p50 ms", "p99 ms", "max ms", "staff group messages sent", "seconds", "sorry",
    ]  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = [
            r.db, r.mode, str(r.flood), f"{r.clients} ({r.completed})",
            f"{r.newcomers} ({r.answered})",
            _ms(r.first_replies, 50), _ms(r.first_replies, 99), _ms(r.first_replies, 100),
            str(r.staff_messages), f"{r.seconds:.0f}", str(r.sorry),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def kill_table(rows: list[KillRow]) -> str:
    columns = [
        "db", "mode", "clients (done)", "kills", "restart s", "updates", "lost (late)",
        "replies doubled", "presses answered twice", "cards doubled", "cards missing",
        "requests in DB", "done with exactly 1", "sorry", "reaction p50 ms", "max ms",
    ]  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        restart = f"{max(r.restart_seconds):.1f}" if r.restart_seconds else "-"
        cells = [
            r.db, r.mode, f"{r.clients} ({r.completed})", str(len(r.killed_at)), restart,
            str(r.updates),
            f"{r.lost} ({r.late})", str(r.doubled), str(r.answered_twice), str(r.cards_doubled),
            str(r.cards_missing), str(r.requests), f"{r.exactly_one}/{r.completed}",
            str(r.sorry), _ms(r.reactions, 50), _ms(r.reactions, 100),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def kill_notes(rows: list[KillRow]) -> list[str]:
    lines = []
    for r in rows:
        label = f"  {r.db}, {r.mode}:"
        if r.edits_repeated:
            lines.append(f"{label} {r.edits_repeated} edit(s) made again (not modified: harmless)")
        if r.redeliveries:
            lines.append(f"{label} {r.redeliveries} webhook POST(s) repeated by the fake Telegram")
        lines += [f"{label} {note}" for note in r.notes[:12]]
    return lines


# --- main -----------------------------------------------------------------------------------


def _both(value: str, pair: tuple[str, str]) -> list[str]:
    return list(pair) if value == "both" else [value]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.reliability",
        description="The intake bot under a flooded staff group and under kill -9.",
    )
    parser.add_argument("--scenario", choices=["flood", "kill", "both"], default="both")
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--mode", choices=["polling", "webhook", "both"], default="both")
    parser.add_argument("--clients", type=int, default=10, help="clients walking (10)")
    parser.add_argument("--newcomers", type=int, default=20, help="flood: new /start (20)")
    parser.add_argument("--flood", type=int, default=150, help="flood: staff commands (150)")
    parser.add_argument("--kills", type=int, default=3, help="kill: SIGKILLs per run (3)")
    parser.add_argument("--seed", type=int, default=1, help="of the random waits (1)")
    parser.add_argument(
        "--rate-limit", action="store_true", help="kill: PTB's rate limiter (flood always has it)"
    )
    parser.add_argument(
        "--step-timeout", type=float, default=90, help="seconds a client waits for a reaction"
    )
    parser.add_argument(
        "--settle", type=float, default=60, help="kill: seconds given to deliver the cards (60)"
    )
    parser.add_argument("--timeout", type=float, default=300, help="seconds per run (300)")
    args = parser.parse_args(argv)
    if args.clients < 0 or args.kills < 0:
        parser.error("--clients and --kills cannot be negative")
    return args


async def main_async(args: argparse.Namespace) -> tuple[list[FloodRow], list[KillRow]]:
    dbs = _both(args.db, ("sqlite", "postgresql"))
    if "postgresql" in dbs and not await postgres_reachable():
        print("PostgreSQL at 127.0.0.1:5432 is unreachable: SQLite only")
        dbs.remove("postgresql")
    floods: list[FloodRow] = []
    kills: list[KillRow] = []
    for scenario in _both(args.scenario, ("flood", "kill")):
        for db in dbs:
            for mode in _both(args.mode, ("polling", "webhook")):
                print(f"{scenario}, {db}, {mode} ...", end=" ", flush=True)
                if scenario == "flood":
                    flood = await flood_run(db, mode, args)
                    floods.append(flood)
                    print(f"{flood.seconds:.0f} s", flush=True)
                else:
                    kill = await kill_run(db, mode, args)
                    kills.append(kill)
                    print(f"{kill.seconds:.0f} s, {len(kill.killed_at)} kills", flush=True)
    return floods, kills


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    floods, kills = asyncio.run(main_async(args))
    if floods:
        print("\nflood: first replies to new clients while the staff group is flooded")
        print(flood_table(floods))
        notes = [f"  {r.db}, {r.mode}: {note}" for r in floods for note in r.notes]
        if notes:
            print("\n".join(["", "notes:", *notes]))
    if kills:
        print("\nkill: clients walking while the bot is SIGKILLed and restarted")
        print(kill_table(kills))
        notes = kill_notes(kills)
        if notes:
            print("\n".join(["", "notes:", *notes]))


if __name__ == "__main__":
    main()

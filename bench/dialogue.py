"""Load benchmark: N simulated clients walk the whole intake dialogue against the real bot.

Usage::

    .venv/bin/python -m bench.dialogue --clients 50 --mode polling|webhook|both \\
        [--db sqlite|postgresql] [--rate-limit] [--duration S] [--timeout 300] \\
        [--step-timeout 60] [--retries 3] [--typed-phone] [--per-step] [--tracemalloc] \\
        [--push-webhook] [--verbose]

Each run starts a FakeBotAPI (tests/fakebotapi) and the project's own Application from
``build_application`` on a fresh database: a SQLite file in a temporary directory, or
``CREATE DATABASE bench_<hex>`` on postgresql://postgres@127.0.0.1:5432/test, dropped
afterwards. The bot runs as in production, with a staff group (each request's card is posted
there) and its housekeeping loop. Everything listens on and talks to 127.0.0.1 only.
``both`` runs polling, then webhook, each on its own database.

Every client sends /start and answers the shipped flow the simplest way to a consultation
request (17 updates: no emergency signs, no diagnosis, no acute or chronic disease, no
fracture, no oils, consent, a typed name, the phone by sharing the client's own contact (the
one-tap button on a phone; ``--typed-phone`` types it instead), any call time, confirm). A
client sends its next update only when the bot has finished reacting to the previous one:
the ticked checklist has been edited, or the next question has arrived (with an inline
keyboard; the phone question is the message that brings the share-contact reply keyboard).
When the bot answers "sorry" instead (its error handler), the client sends the same update
again, up to ``--retries`` times, then gives up; a client that gets no complete reaction
within ``--step-timeout`` seconds gives up too. (A "sorry" counts against the update the
client is waiting on, even if it was for the one before.)

By default each of the N clients walks the dialogue once and the run ends with the last.
``--duration S`` bounds a run by time instead, for counts whose full walk would take long
(1000 clients x 17 updates at 35 updates/s is 8 minutes): N clients walk at once, and a
client that ends its dialogue is replaced by a new one (a new user) until S seconds have
passed; then no client sends again, the updates in flight get their reactions, and the run
reports everything sent (wall time S plus that drain, about N / throughput). The clients
still mid-dialogue at S are reported as cut, with the median step they reached: when N x 17
updates do not fit in S, the figures weigh the first steps of the dialogue more.

Latency of an update: from the moment it is injected (polling: queued for getUpdates;
webhook: handed to the HTTP client that POSTs it to the bot, which, like Telegram, opens at
most the ``max_connections`` the bot asked for in setWebhook) to the first Bot API call the
bot makes for that chat (answerCallbackQuery for a button press, else a send or edit),
time-stamped when the fake server records it. Updates/s is the number of updates the bot
reacted to divided by the wall time from the first update to the last client's end.
Errors are the failures clients saw (a "sorry", no reaction, a refused webhook POST) plus
Bot API calls the fake refused; the bot's own ERROR log lines are listed below the table.
``--per-step`` adds the latency of each of the 17 steps. The consultation requests in the
database are counted at the end: each client that completed should have exactly one.

The fake server, the simulated clients and the bot share one process and one event loop,
so the figures are a lower bound for the bot alone; CPU % is the process's CPU time over
the wall time (100 = one core busy). Webhook updates are POSTed with one shared HTTP
client: ``FakeBotAPI.push_webhook`` builds a new httpx client (and TLS context) per update,
about 18 ms of CPU each, which would dominate; ``--push-webhook`` uses it anyway.
``--rate-limit`` keeps PTB's AIORateLimiter (30 calls/s like Telegram) in the bot.
``--timeout`` bounds each mode's run (drain included): the clients still walking are then
stopped and the run reports what it has. Peak RSS is that of the whole process so far (in
``both`` mode the webhook row includes the polling run); ``--tracemalloc`` adds the Python
heap peak per run, at some cost in speed. Nothing here asserts timings: it is not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import itertools
import json
import logging
import math
import re
import resource
import secrets
import statistics
import tempfile
import time
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from bench.bots import WEBHOOK_SECRET, webhook_settings
from bot.app import ALLOWED_UPDATES, build_application
from bot.flowsource import FlowRegistry
from bot.serve import start_serving
from bot.settings import Settings
from flows import Flow, Lang, t
from storage import Client, ConsultationRequest, make_engine, make_sessionmaker, upgrade
from tests.fakebotapi import Call, FakeBotAPI

TOKEN = "123456:BENCH-TOKEN"
#: What the bot's error handler tells the client when an update failed.
SORRY = html.escape(t("client.sorry", "en"))
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
LANG: Lang = "en"
#: The staff group where the bot posts a card for every request, as configured in production.
STAFF_CHAT_ID = -1001000000001
FIRST_USER_ID = 10_000

#: The simplest complete path through the shipped flow: node id -> answer (option ids or text).
ANSWERS: dict[str, str | tuple[str, ...]] = {
    "welcome": "start",
    "emergency": ("none",),
    "conditions": ("none",),
    "acute": ("none",),
    "chronic": ("none",),
    "fracture": "no",
    "oils": "no",
    "consent": "agree",
    "name": "Bench",
    "phone": "+79123456789",
    "call_time": "any",
    "confirm": "",
}


# --- the scripted client ---------------------------------------------------------------


def _markup(call: Call) -> dict[str, Any]:
    markup = call.params.get("reply_markup")
    return markup if isinstance(markup, dict) else {}


def edited(call: Call) -> bool:
    """A checklist tick ends with the question edited in place."""
    return call.method == "editMessageText"


def asked(call: Call) -> bool:
    """A step ends with the next question: the pressed question edited into it, or (after a
    typed answer) a new message, with an inline keyboard either way."""
    return call.method in ("sendMessage", "editMessageText") and bool(
        _markup(call).get("inline_keyboard")
    )


def shown(call: Call) -> bool:
    """A question answered by typing (it has no buttons) has been shown: edited in or sent."""
    return call.method in ("sendMessage", "editMessageText")


def offered_contact(call: Call) -> bool:
    """The phone question has arrived: the message with the share-contact reply keyboard
    (the question itself, or a hint sent right after it)."""
    return call.method == "sendMessage" and "keyboard" in _markup(call)


@dataclass(frozen=True)
class Step:
    """One update a client sends: typed ``text``, a press on ``label``, or (``contact``) its
    own contact with the phone number ``text``; ``until`` says when the reaction is complete."""

    name: str
    text: str | None
    label: str | None
    until: Callable[[Call], bool]
    contact: bool = False


def dialogue(
    flow: Flow,
    answers: dict[str, str | tuple[str, ...]],
    lang: Lang,
    *,
    typed_phone: bool = False,
) -> list[Step]:
    """The updates that walk ``answers`` through ``flow``, labels read from the flow; the
    phone is shared as the client's own contact unless ``typed_phone``."""
    steps = [Step("/start", "/start", None, asked)]
    nodes = list(answers)
    for index, node_id in enumerate(nodes):
        node = flow.nodes[node_id]
        answer = answers[node_id]
        following = flow.nodes[nodes[index + 1]] if index + 1 < len(nodes) else None
        kind = following.kind if following is not None else None
        until = {"phone": offered_contact, "text": shown}.get(kind or "", asked)
        labels = {o.id: o.label.get(lang) for o in getattr(node, "options", ())}
        if node.kind == "checklist":
            ticks = answer if isinstance(answer, tuple) else (answer,)
            steps += [Step(f"{node_id}: tick {o}", None, labels[o], edited) for o in ticks]
            steps.append(Step(f"{node_id}: done", None, t("engine.done", lang), until))
        elif node.kind in ("choice", "yesno"):
            steps.append(Step(f"{node_id}: {answer}", None, labels[str(answer)], until))
        elif node.kind in ("info", "confirm"):
            key = "continue" if node.kind == "info" else "confirm"
            steps.append(Step(f"{node_id}: {key}", None, t(f"engine.{key}", lang), until))
        elif node.kind == "phone" and not typed_phone:
            steps.append(Step(f"{node_id}: contact", str(answer), None, until, contact=True))
        else:
            steps.append(Step(f"{node_id}: typed", str(answer), None, until))
    return steps


# --- timing the bot's reactions ----------------------------------------------------------


@dataclass
class Probe:
    """One update waiting for the bot's reaction in its chat."""

    step: int
    sent_at: float
    until: Callable[[Call], bool]
    #: True when the reaction is complete, False when the bot apologised for an error.
    finished: asyncio.Future[bool]
    first_at: float | None = None


class Tracker:
    """Routes every time-stamped API call to the probe of its chat; keeps the figures."""

    def __init__(self) -> None:
        self.probes: dict[int, Probe] = {}
        self.queries: dict[str, int] = {}
        self.latencies: list[float] = []
        self.by_step: dict[int, list[float]] = defaultdict(list)
        self.api_errors: Counter[str] = Counter()
        self.client_errors: Counter[str] = Counter()
        #: Messages posted to the staff group: a request's card (after its client's last step).
        self.cards = 0

    def on_call(self, call: Call, at: float) -> None:
        if call.method == "getUpdates":
            return
        if not call.ok:
            self.api_errors[f"{call.method}: {call.status} {call.error}"] += 1
        elif call.method == "sendMessage" and call.params.get("chat_id") == STAFF_CHAT_ID:
            self.cards += 1
        if call.method == "answerCallbackQuery":
            chat = self.queries.pop(str(call.params.get("callback_query_id")), None)
        else:
            try:
                chat = int(call.params.get("chat_id"))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return
        probe = self.probes.get(chat) if chat is not None else None
        if probe is None:
            return
        if probe.first_at is None:
            probe.first_at = at
            self.latencies.append(at - probe.sent_at)
            self.by_step[probe.step].append(at - probe.sent_at)
        if probe.finished.done() or not call.ok:
            return
        if call.method == "sendMessage" and call.params.get("text") == SORRY:
            probe.finished.set_result(False)
        elif probe.until(call):
            probe.finished.set_result(True)


class BenchBotAPI(FakeBotAPI):
    """The fake Bot API with two hooks for the benchmark, on the fake's internal methods.

    Every recorded call goes to the tracker with the time it was recorded, and the last
    queued update is kept so that webhook mode can POST it; an update delivered that way
    is taken off the getUpdates queue, as ``push_webhook`` does.
    """

    def __init__(self, tracker: Tracker, *, webhook: bool) -> None:
        super().__init__(token=TOKEN)
        self.tracker = tracker
        self.by_webhook = webhook
        self.last_update: dict[str, Any] = {}

    def _record(self, call: Call) -> None:
        super()._record(call)
        self.tracker.on_call(call, time.perf_counter())

    def _queue(self, update: dict[str, Any]) -> dict[str, Any]:
        update = super()._queue(update)
        if self.by_webhook:
            self._pending.pop()
        self.last_update = update
        return update


class Clients:
    """Simulated clients walking the dialogue, each waiting for the bot between updates."""

    def __init__(
        self,
        api: BenchBotAPI,
        steps: list[Step],
        post: Callable[[dict[str, Any]], Any] | None,
        step_timeout: float,
        retries: int,
    ) -> None:
        self.api = api
        self.tracker = api.tracker
        self.steps = steps
        self.post = post
        self.step_timeout = step_timeout
        self.retries = retries
        self.sent = 0
        self.completed = 0
        self.users: list[int] = []
        #: The step each client stopped at by ``--duration`` was about to send.
        self.cut_at: list[int] = []
        self.deadline: float | None = None
        self.seconds = 0.0

    async def run(self, count: int, limit: float, duration: float | None = None) -> bool:
        """``count`` clients at once, each walking once, or (``duration``) replaced by a new
        one until ``duration`` seconds have passed; True when after ``limit`` seconds some
        were still walking (they are stopped)."""
        started = time.perf_counter()
        self.deadline = None if duration is None else started + duration
        tasks = [asyncio.create_task(self._slot(FIRST_USER_ID + n, count)) for n in range(count)]
        _, pending = await asyncio.wait(tasks, timeout=limit)
        self.seconds = time.perf_counter() - started
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return bool(pending)

    async def _slot(self, user_id: int, stride: int) -> None:
        while True:
            self.users.append(user_id)
            await self.walk(user_id)
            if self.deadline is None or time.perf_counter() >= self.deadline:
                return
            user_id += stride

    async def walk(self, user_id: int) -> None:
        for number, step in enumerate(self.steps, 1):
            if self.deadline is not None and time.perf_counter() >= self.deadline:
                self.cut_at.append(number)
                return
            try:
                for attempt in range(self.retries + 1):
                    if await self.send(user_id, number, step):
                        break
                    self.tracker.client_errors[f"step {number}: the bot said sorry"] += 1
                    if attempt == self.retries:
                        return
            except LookupError:
                self.tracker.client_errors[f"step {number}: no button {step.label!r}"] += 1
                return
            except TimeoutError:
                self.tracker.client_errors[f"step {number}: no complete reaction"] += 1
                return
            except Exception as exc:  # noqa: BLE001 - one client's failure is a figure
                self.tracker.client_errors[f"step {number}: {type(exc).__name__}"] += 1
                return
        self.completed += 1

    async def send(self, user_id: int, number: int, step: Step) -> bool:
        """Send the step's update; True once the reaction is complete, False on "sorry"."""
        api = self.api
        if step.label is not None:
            message_id, data = api.find_button(user_id, step.label)
            query_id = api.user_callback(user_id, message_id, data, language_code=LANG)
            self.tracker.queries[query_id] = user_id
        elif step.contact:
            api.user_contact(user_id, step.text or "", language_code=LANG)
        else:
            api.user_message(user_id, step.text or "", language_code=LANG)
        update = api.last_update
        finished = asyncio.get_running_loop().create_future()
        self.tracker.probes[user_id] = Probe(number, time.perf_counter(), step.until, finished)
        self.sent += 1
        try:
            if self.post is not None:
                status = await self.post(update)
                if status != 200:
                    raise RuntimeError(f"webhook answered {status}")
            return await asyncio.wait_for(finished, self.step_timeout)
        finally:
            del self.tracker.probes[user_id]


# --- one run -----------------------------------------------------------------------------


@dataclass
class Result:
    """The figures of one run."""

    mode: str
    db: str
    rate_limit: bool
    clients: int
    completed: int = 0
    sent: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    by_step: dict[int, list[float]] = field(default_factory=dict)
    step_names: list[str] = field(default_factory=list)
    timed_out: bool = False
    cut: str | None = None
    unposted: str | None = None
    requests: int = 0
    clients_with_one_request: int = 0
    api_errors: Counter[str] = field(default_factory=Counter)
    client_errors: Counter[str] = field(default_factory=Counter)
    bot_errors: Counter[str] = field(default_factory=Counter)
    cpu_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    heap_peak_mb: float | None = None

    @property
    def errors(self) -> int:
        """Failures a client saw, plus Bot API calls refused (the bot's log is a detail)."""
        return sum(self.client_errors.values()) + sum(self.api_errors.values())


class ErrorLog(logging.Handler):
    """Counts the ERROR records (the bot's error handler logs one per failed update)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        first_line = record.getMessage().splitlines()[0][:160]
        self.seen[re.sub(r"\d+", "N", first_line)] += 1


@asynccontextmanager
async def fresh_database(kind: str) -> AsyncIterator[str]:
    """Yield the URL of an empty database used by this run only."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            yield f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        return
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    name = f"bench_{secrets.token_hex(6)}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def count_requests(engine: AsyncEngine, user_ids: Iterable[int]) -> tuple[int, int]:
    """Return (requests in the database, clients of this run with exactly one)."""
    statement = (
        select(col(Client.telegram_id), func.count(col(ConsultationRequest.id)))
        .join(ConsultationRequest, col(ConsultationRequest.client_id) == col(Client.id))
        .group_by(col(Client.telegram_id))
    )
    async with engine.connect() as conn:
        per_client = {user: n for user, n in (await conn.execute(statement)).all()}
    wanted = set(user_ids)
    exactly_one = sum(1 for user, n in per_client.items() if user in wanted and n == 1)
    return sum(per_client.values()), exactly_one


@asynccontextmanager
async def webhook_poster(
    api: FakeBotAPI, mode: str, *, shared: bool, targets: list[str] | None = None
) -> AsyncIterator[Callable[[dict[str, Any]], Any] | None]:
    """In webhook mode, a coroutine function that POSTs an update and returns the status.

    It POSTs to the URL the bot gave setWebhook, or in turn to each of ``targets``, as a
    round-robin load balancer before several bot processes would; at most the
    ``max_connections`` of setWebhook are open at once, over all of them.
    """
    if mode != "webhook":
        yield None
        return
    if not shared:
        yield api.push_webhook
        return
    set_webhook = api.calls_of("setWebhook")[-1].params
    connections = int(set_webhook.get("max_connections") or 40)
    urls = targets or [str(api.webhook_url)]
    assert all(url.startswith("http://127.0.0.1:") for url in urls)
    turns = itertools.cycle(urls)
    poster = _Poster(connections)
    try:

        async def post(update: dict[str, Any]) -> int:
            return await poster.post(next(turns), json.dumps(update).encode())

        yield post
    finally:
        poster.close()


class _Poster:
    """POSTs over at most ``connections`` kept-alive HTTP/1.1 connections, one request at a
    time on each, as Telegram's webhook delivery does.

    Lean on purpose: httpx's pool checks every pooled connection, and scans every request
    waiting for one, on each request; at 1000 clients that cost the benchmark more CPU per
    update than the bot it measures, and made every bot's throughput fall with the clients.
    """

    def __init__(self, connections: int) -> None:
        self._turn = asyncio.Semaphore(connections)
        self._idle: dict[str, list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}

    async def post(self, url: str, body: bytes) -> int:
        """POST ``body`` (JSON) to ``url``; its status. A connection that fails is dropped
        and the error raised (the update may or may not have arrived, as with Telegram),
        but for a kept-alive one the server had closed before the request reached it: the
        request then goes again on a new connection."""
        address, _, path = url.removeprefix("http://").partition("/")
        host, port = address.split(":")
        request = (
            f"POST /{path} HTTP/1.1\r\nHost: {address}\r\n"
            "Content-Type: application/json\r\n"
            f"X-Telegram-Bot-Api-Secret-Token: {WEBHOOK_SECRET}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
        ) + body
        async with self._turn:
            idle = self._idle.setdefault(url, [])
            while idle:
                reader, writer = idle.pop()
                try:
                    return await self._exchange(url, reader, writer, request)
                except (ConnectionError, asyncio.IncompleteReadError) as exc:
                    if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                        raise  # an answer had begun: the request arrived
            reader, writer = await asyncio.open_connection(host, port)
            return await self._exchange(url, reader, writer, request)

    async def _exchange(
        self,
        url: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: bytes,
    ) -> int:
        try:
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            fields = dict(line.lower().split(":", 1) for line in lines[1:] if ":" in line)
            if "chunked" in fields.get("transfer-encoding", ""):
                while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                    await reader.readexactly(size + 2)
                await reader.readuntil(b"\r\n")
            elif length := int(fields.get("content-length", "0").strip()):
                await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if "close" in fields.get("connection", ""):
            writer.close()
        else:
            self._idle[url].append((reader, writer))
        return status

    def close(self) -> None:
        for idle in self._idle.values():
            for _, writer in idle:
                writer.close()
        self._idle.clear()


async def cards_posted(tracker: Tracker, expected: int, *, paced: bool) -> str | None:
    """Wait until the staff group has ``expected`` cards; a note if it has not in time.

    A request's card is posted after its client's last reaction: without this wait the
    last cards would be left in the outbox when the bot stops, and missing from the figures.
    ``paced``: the bot keeps Telegram's 20 messages a minute in a group, 3 s a card.
    """
    limit = 30.0 + (3.0 * expected if paced else 0.0)
    deadline = time.perf_counter() + limit
    while tracker.cards < expected:
        if time.perf_counter() >= deadline:
            return f"{expected - tracker.cards} request card(s) not posted {limit:.0f} s after"
        await asyncio.sleep(0.05)
    return None


def cut_note(cut_at: list[int], steps: int, duration: float | None) -> str | None:
    """What ``--duration`` cut: how many clients, and how far they had got."""
    if not cut_at:
        return None
    median = statistics.median_low(cut_at)
    return (
        f"cut at {duration:.0f} s: {len(cut_at)} clients mid-dialogue, "
        f"median about to send step {median} of {steps}"
    )


async def run(mode: str, args: argparse.Namespace) -> Result:
    """One benchmark run: fresh database, fake API and bot; N clients; the figures."""
    result = Result(mode, args.db, args.rate_limit, args.clients)
    tracker = Tracker()
    errors = ErrorLog()
    if args.tracemalloc:
        tracemalloc.reset_peak()
    logging.getLogger().addHandler(errors)
    try:
        async with fresh_database(args.db) as url:
            api = BenchBotAPI(tracker, webhook=mode == "webhook")
            async with api:
                await run_bot(api, url, mode, args, result)
    finally:
        logging.getLogger().removeHandler(errors)
    result.latencies = sorted(tracker.latencies)
    result.by_step = {n: sorted(values) for n, values in sorted(tracker.by_step.items())}
    result.api_errors = tracker.api_errors
    result.client_errors = tracker.client_errors
    result.bot_errors = errors.seen
    result.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.tracemalloc:
        result.heap_peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    return result


async def run_bot(
    api: BenchBotAPI,
    url: str,
    mode: str,
    args: argparse.Namespace,
    result: Result,
) -> None:
    """Start the bot on ``api`` and ``url``, let the clients walk, stop, count the requests."""
    api.add_chat(STAFF_CHAT_ID, chat_type="supergroup", title="Staff")
    engine = make_engine(url)
    await upgrade(engine)
    settings = Settings(
        _env_file=None,
        telegram_token=TOKEN,
        telegram_base_url=api.base_url,
        telegram_base_file_url=api.base_file_url,
        database_url=url,
        staff_chat_id=STAFF_CHAT_ID,
        **webhook_settings(mode),
    )
    sessionmaker = make_sessionmaker(engine)
    registry = FlowRegistry(
        values=settings.flow_values
    )  # the shipped flow, which becomes version 1 as on a first start
    flow = await registry.prepare(sessionmaker)
    app = build_application(
        settings, registry=registry, sessionmaker=sessionmaker, rate_limit=args.rate_limit
    )
    steps = dialogue(flow, ANSWERS, LANG, typed_phone=args.typed_phone)
    result.step_names = [step.name for step in steps]
    serving = await start_serving(app, allowed_updates=ALLOWED_UPDATES, poll_timeout=1)
    try:
        async with webhook_poster(api, mode, shared=not args.push_webhook) as post:
            clients = Clients(api, steps, post, args.step_timeout, args.retries)
            cpu = time.process_time()
            result.timed_out = await clients.run(args.clients, args.timeout, args.duration)
            result.cpu_seconds = time.process_time() - cpu
        result.seconds = clients.seconds
        result.completed, result.sent = clients.completed, clients.sent
        result.cut = cut_note(clients.cut_at, len(steps), args.duration)
        result.unposted = await cards_posted(api.tracker, clients.completed, paced=args.rate_limit)
    finally:
        await serving.stop()
    try:
        result.requests, result.clients_with_one_request = await count_requests(
            engine, clients.users
        )
    finally:
        await engine.dispose()


# --- report ------------------------------------------------------------------------------


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list, in milliseconds (nan if empty)."""
    if not ordered:
        return math.nan
    return 1000 * ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def table(results: list[Result]) -> str:
    columns = [
        "mode", "db", "rate limit", "clients", "completed", "updates", "seconds", "updates/s",
        "p50 ms", "p95 ms", "p99 ms", "max ms", "errors", "requests in DB", "CPU %", "peak RSS MB",
    ]  # fmt: skip
    if any(r.heap_peak_mb is not None for r in results):
        columns.append("heap peak MB")
    rows = []
    for r in results:
        n = len(r.latencies)
        row = [
            r.mode + (" (timed out)" if r.timed_out else " (cut)" if r.cut else ""),
            r.db,
            "yes" if r.rate_limit else "no",
            str(r.clients),
            str(r.completed),
            str(n),
            f"{r.seconds:.1f}",
            f"{n / r.seconds:.0f}" if r.seconds else "-",
            *(f"{percentile(r.latencies, q):.0f}" for q in (50, 95, 99, 100)),
            str(r.errors),
            f"{r.requests} ({r.clients_with_one_request} clients with exactly one)",
            f"{100 * r.cpu_seconds / r.seconds:.0f}" if r.seconds else "-",
            f"{r.peak_rss_mb:.0f}",
        ]
        if r.heap_peak_mb is not None:
            row.append(f"{r.heap_peak_mb:.0f}")
        rows.append(row)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def details(result: Result) -> list[str]:
    lines = [f"  {result.mode}: {note}" for note in (result.cut, result.unposted) if note]
    for title, errors in (
        ("client", result.client_errors),
        ("Bot API", result.api_errors),
        ("bot log", result.bot_errors),
    ):
        kinds = errors.most_common()
        for text, n in kinds[:10]:
            lines.append(f"  {result.mode}: {n} x {title} error: {text}")
        if len(kinds) > 10:
            lines.append(f"  {result.mode}: ... and {len(kinds) - 10} more kinds of {title} error")
    if result.sent != len(result.latencies):
        lines.append(f"  {result.mode}: {result.sent - len(result.latencies)} update(s) unanswered")
    return lines


def per_step(result: Result) -> list[str]:
    lines = [f"{result.mode}: latency by step (ms)", "| step | updates | p50 | p95 | max |"]
    lines.append("|---|---|---|---|---|")
    for number, values in result.by_step.items():
        name = result.step_names[number - 1]
        figures = " | ".join(f"{percentile(values, q):.0f}" for q in (50, 95, 100))
        lines.append(f"| {number} {name} | {len(values)} | {figures} |")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dialogue",
        description="N simulated clients walk the intake dialogue against the real bot.",
    )
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (50)")
    parser.add_argument("--mode", choices=["polling", "webhook", "both"], default="both")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--rate-limit", action="store_true", help="keep PTB's AIORateLimiter (30 calls/s)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        help="seconds new clients keep starting; then the run drains (default: each walks once)",
    )
    parser.add_argument("--timeout", type=float, default=300, help="seconds per mode (300)")
    parser.add_argument(
        "--step-timeout", type=float, default=60, help="seconds a client waits for a reaction"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=3,
        help="times a client sends an update again after the bot said sorry (3)",
    )
    parser.add_argument(
        "--typed-phone", action="store_true", help="type the phone instead of sharing a contact"
    )
    parser.add_argument("--tracemalloc", action="store_true", help="also trace the heap peak")
    parser.add_argument(
        "--push-webhook",
        action="store_true",
        help="POST with FakeBotAPI.push_webhook (a new HTTP client per update)",
    )
    parser.add_argument(
        "--per-step", action="store_true", help="also print the latency of each step"
    )
    parser.add_argument("--verbose", action="store_true", help="show the bot's warnings")
    args = parser.parse_args(argv)
    if args.clients < 1:
        parser.error("--clients must be at least 1")
    return args


async def main_async(args: argparse.Namespace) -> list[Result]:
    modes = ["polling", "webhook"] if args.mode == "both" else [args.mode]
    results = []
    for mode in modes:
        print(f"running {mode}: {args.clients} clients on {args.db} ...", flush=True)
        results.append(await run(mode, args))
    return results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    if args.verbose:
        root.addHandler(logging.StreamHandler())
    else:
        root.addHandler(logging.NullHandler())
    if args.tracemalloc:
        tracemalloc.start()
    results = asyncio.run(main_async(args))
    print()
    print(table(results))
    if args.per_step:
        for result in results:
            print("\n".join(["", *per_step(result)]))
    notes = [line for result in results for line in details(result)]
    if notes:
        print("\n".join(["", "notes:", *notes]))


if __name__ == "__main__":
    main()

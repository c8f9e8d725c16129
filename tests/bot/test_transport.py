"""The bot's HTTP client for the Bot API (bot.transport), from the outside.

Through python-telegram-bot against the fake Bot API (a real HTTP server, tornado), and
against small raw servers that misbehave the ways a network and a server can: chunked
answers, ``Connection: close``, idle connections closed, no answer, half an answer, garbage,
a TLS certificate nobody signed.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, InputFile
from telegram.error import BadRequest, NetworkError, TimedOut

import bot.transport
from bot.transport import BotAPIRequest, MaybeDelivered, NotDelivered, NotSent
from tests.fakebotapi import FakeBotAPI

TOKEN = "123456:TEST-TOKEN"
OK = b'{"ok":true,"result":[]}'

# --- through PTB against the fake Bot API ---------------------------------------------------


@asynccontextmanager
async def ptb_bot(api: FakeBotAPI, request: BotAPIRequest | None = None) -> AsyncIterator[Bot]:
    async with Bot(
        TOKEN,
        base_url=api.base_url,
        base_file_url=api.base_file_url,
        request=request or BotAPIRequest(4),
        get_updates_request=BotAPIRequest(1),
    ) as ptb:
        yield ptb


async def test_a_message_with_markup_and_non_ascii_text_arrives_as_sent(
    fake_bot_api: FakeBotAPI,
) -> None:
    fake_bot_api.user_message(7, "/start")
    async with ptb_bot(fake_bot_api) as ptb:
        (update,) = await ptb.get_updates(timeout=0)
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Да & yes ✓", callback_data="y")]])
        sent = await ptb.send_message(
            7, "<b>Спина</b> болит? 🙂 a+b=c&amp;d", reply_markup=keyboard, parse_mode="HTML"
        )
    assert update.message is not None and update.message.text == "/start"
    (shown,) = fake_bot_api.messages(7)
    assert shown["message_id"] == sent.message_id
    assert shown["text"] == "Спина болит? 🙂 a+b=c&d"
    assert shown["reply_markup"]["inline_keyboard"][0][0]["text"] == "Да & yes ✓"


async def test_a_file_is_uploaded_byte_for_byte_with_its_name_and_caption(
    fake_bot_api: FakeBotAPI,
) -> None:
    fake_bot_api.user_message(7, "hi")
    content = bytes(range(256)) * 40 + b'"quoted"\r\n--boundary-like--\r\n'
    async with ptb_bot(fake_bot_api) as ptb:
        await ptb.get_updates(timeout=0)
        await ptb.send_document(
            7, InputFile(content, filename="заявки 2026.csv"), caption="Выгрузка"
        )
    (call,) = [c for c in fake_bot_api.calls if c.method == "sendDocument"]
    upload = call.params["document"]
    assert upload.content == content
    assert upload.filename == "заявки 2026.csv"
    assert call.params["caption"] == "Выгрузка"


async def test_a_long_poll_waits_for_the_update_and_returns_it(fake_bot_api: FakeBotAPI) -> None:
    async with ptb_bot(fake_bot_api) as ptb:
        polling = asyncio.create_task(ptb.get_updates(timeout=5))
        await asyncio.sleep(0.2)
        assert not polling.done()
        fake_bot_api.user_message(8, "late")
        (update,) = await asyncio.wait_for(polling, 10)
    assert update.message is not None and update.message.text == "late"


async def test_a_refusal_is_telegrams_error_not_a_network_one() -> None:
    async with FakeBotAPI(token=TOKEN) as api:  # not the fixture: this refusal is the point
        api.user_message(7, "hi")
        async with ptb_bot(api) as ptb:
            await ptb.get_updates(timeout=0)
            with pytest.raises(BadRequest, match="(?i)text is empty"):
                await ptb.send_message(7, "")


# --- against raw servers --------------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """An HTTP server written by hand: counts connections, records requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.received = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/bot{TOKEN}/getMe"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        self.requests.append((head, await reader.readexactly(length)))
        self.received.set()


def answer(body: bytes = OK, *, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def keep_alive(make: Callable[[], bytes] = answer) -> Callable[[RawServer], Handler]:
    def handler(server: RawServer) -> Handler:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await server.read_request(reader)
                writer.write(make())
                await writer.drain()

        return serve

    return handler


@asynccontextmanager
async def raw_server(make: Callable[[RawServer], Handler]) -> AsyncIterator[RawServer]:
    server = RawServer(lambda r, w: asyncio.sleep(0))
    server.handler = make(server)
    async with server:
        yield server


async def post(request: BotAPIRequest, url: str, **timeouts: float) -> tuple[int, bytes]:
    return await request.do_request(url, "POST", **timeouts)  # type: ignore[arg-type]


async def test_sequential_requests_reuse_one_connection() -> None:
    async with raw_server(keep_alive()) as server:
        request = BotAPIRequest(4)
        for _ in range(5):
            assert await post(request, server.url) == (200, OK)
        await request.shutdown()
    assert server.connections == 1
    head, body = server.requests[0]
    assert head.startswith(b"POST /bot123456:TEST-TOKEN/getMe HTTP/1.1\r\n")
    assert b"\r\nHost: 127.0.0.1:" in head and b"\r\nContent-Length: 0\r\n" in head


async def test_a_chunked_answer_is_read_whole() -> None:
    body = b'{"ok":true,"result":{"text":"' + "ж".encode() * 3000 + b'"}}'
    chunks = b"".join(
        f"{len(body[i : i + 1000]):x}\r\n".encode() + body[i : i + 1000] + b"\r\n"
        for i in range(0, len(body), 1000)
    )

    def chunked() -> bytes:
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"

    async with raw_server(keep_alive(chunked)) as server:
        request = BotAPIRequest(1)
        assert await post(request, server.url) == (200, body)
        assert await post(request, server.url) == (200, body)
        await request.shutdown()
    assert server.connections == 1


async def test_connection_close_is_honoured() -> None:
    async with raw_server(keep_alive(lambda: answer(extra=b"Connection: close\r\n"))) as server:
        request = BotAPIRequest(1)
        for _ in range(3):
            assert await post(request, server.url) == (200, OK)
    assert server.connections == 3


async def test_a_connection_the_server_closed_while_idle_is_not_used_again() -> None:
    def one_request_per_connection(server: RawServer) -> Handler:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(answer())  # keep-alive promised, then the server closes anyway
            await writer.drain()

        return serve

    async with raw_server(one_request_per_connection) as server:
        request = BotAPIRequest(1)
        assert await post(request, server.url) == (200, OK)
        await asyncio.sleep(0.2)  # the server's FIN arrives
        assert await post(request, server.url) == (200, OK)  # no error: a new connection
    assert server.connections == 2
    assert len(server.requests) == 2


async def test_a_connection_idle_past_the_keepalive_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bot.transport, "KEEPALIVE", 0.05)
    async with raw_server(keep_alive()) as server:
        request = BotAPIRequest(1)
        await post(request, server.url)
        await post(request, server.url)
        await asyncio.sleep(0.1)
        await post(request, server.url)
        await request.shutdown()
    assert server.connections == 2


async def test_no_answer_in_time_is_a_timeout_that_may_have_been_sent() -> None:
    def silent(server: RawServer) -> Handler:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            await asyncio.sleep(30)

        return serve

    async with raw_server(silent) as server:
        request = BotAPIRequest(1)
        with pytest.raises(TimedOut) as caught:
            await post(request, server.url, read_timeout=0.2)
    assert not isinstance(caught.value, NotSent)
    assert len(server.requests) == 1


async def test_no_free_connection_in_time_means_not_sent() -> None:
    release = asyncio.Event()

    def held(server: RawServer) -> Handler:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await server.read_request(reader)
                await release.wait()
                writer.write(answer())
                await writer.drain()

        return serve

    async with raw_server(held) as server:
        request = BotAPIRequest(1)
        first = asyncio.create_task(post(request, server.url))
        await server.received.wait()
        with pytest.raises(NotSent, match="not\\* sent"):
            await post(request, server.url, pool_timeout=0.1)
        release.set()
        assert await first == (200, OK)
        assert await post(request, server.url) == (200, OK)  # the slot came back
        await request.shutdown()
    assert len(server.requests) == 2


async def test_nobody_listening_is_a_network_error_saying_nothing_was_sent() -> None:
    async with raw_server(keep_alive()) as server:
        url = server.url
    request = BotAPIRequest(1)
    with pytest.raises(NotDelivered):
        await post(request, url)


@pytest.mark.parametrize(
    "reply",
    [
        b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"ok":',  # cut short
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",  # not HTTP
        b"HTTP/1.1 2",  # cut in the status line
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: 0\r\n\r\n",
    ],
    ids=[
        "body cut short",
        "not http",
        "status line cut",
        "chunk size not hex",
        "two lengths",
        "header without colon",
    ],
)
async def test_a_broken_answer_is_a_network_error_and_the_next_request_works(
    reply: bytes,
) -> None:
    answers = iter([reply])

    def once_broken(server: RawServer) -> Handler:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await server.read_request(reader)
                broken = next(answers, None)
                writer.write(broken or answer())
                await writer.drain()
                if broken is not None:
                    return

        return serve

    async with raw_server(once_broken) as server:
        request = BotAPIRequest(1)
        with pytest.raises(MaybeDelivered):  # the request had left: Telegram may have it
            await post(request, server.url)
        assert await post(request, server.url) == (200, OK)
        await request.shutdown()
    assert server.connections == 2


async def test_a_cancelled_request_gives_back_its_connection_slot() -> None:
    def slow_once(server: RawServer) -> Handler:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await server.read_request(reader)
                if len(server.requests) == 1:
                    await asyncio.sleep(30)
                writer.write(answer())
                await writer.drain()

        return serve

    async with raw_server(slow_once) as server:
        request = BotAPIRequest(1)
        stuck = asyncio.create_task(post(request, server.url))
        await server.received.wait()
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
        assert await post(request, server.url, pool_timeout=1) == (200, OK)
        await request.shutdown()
    assert server.connections == 2  # the cancelled one's connection was not reused


# --- TLS --------------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=DNS:localhost"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


async def test_https_works_with_a_trusted_certificate_and_fails_with_an_unknown_one(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    served = RawServer(lambda r, w: asyncio.sleep(0))
    served.handler = keep_alive()(served)
    server = await asyncio.start_server(served._serve, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    url = f"https://localhost:{port}/bot{TOKEN}/getMe"
    try:
        trusting = BotAPIRequest(1, tls=ssl.create_default_context(cafile=str(cert)))
        assert await post(trusting, url) == (200, OK)
        assert await post(trusting, url) == (200, OK)
        await trusting.shutdown()
        with pytest.raises(NetworkError, match="(?i)certificate"):
            await post(BotAPIRequest(1), url)  # certifi's authorities did not sign it
    finally:
        server.close()
    assert served.connections == 1  # one reused; the refused handshake never got this far
    assert b"Host: localhost:" in served.requests[0][0]


# --- behind a proxy ---------------------------------------------------------------------------

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
PROXY_VARIABLES += ("ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy")


@pytest.fixture
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("environment", "through_proxy"),
    [
        ({}, False),
        ({"HTTPS_PROXY": "http://proxy.example:3128"}, True),
        ({"ALL_PROXY": "http://proxy.example:8080"}, True),
        ({"HTTP_PROXY": "http://proxy.example:3128"}, False),  # for http:// only
        ({"HTTPS_PROXY": "http://proxy.example:3128", "NO_PROXY": "api.telegram.org"}, False),
    ],
    ids=["none", "https proxy", "all proxy", "http proxy only", "excluded"],
)
def test_a_proxy_in_the_environment_is_honoured_through_ptbs_client(
    no_proxy_settings: pytest.MonkeyPatch, environment: dict[str, str], through_proxy: bool
) -> None:
    from telegram.request import HTTPXRequest

    for name, value in environment.items():
        no_proxy_settings.setenv(name, value)
    request = bot.transport.make_request("https://api.telegram.org/bot", 4)
    assert isinstance(request, HTTPXRequest if through_proxy else BotAPIRequest)


async def test_the_host_header_keeps_an_ipv6_address_in_brackets() -> None:
    server = RawServer(lambda r, w: asyncio.sleep(0))
    server.handler = keep_alive()(server)
    try:
        listening = await asyncio.start_server(server._serve, "::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port = listening.sockets[0].getsockname()[1]
    try:
        request = BotAPIRequest(1)
        assert await post(request, f"http://[::1]:{port}/bot{TOKEN}/getMe") == (200, OK)
        await request.shutdown()
    finally:
        listening.close()
    assert f"\r\nHost: [::1]:{port}\r\n".encode() in server.requests[0][0]


async def test_an_interim_answer_is_skipped_and_the_real_one_returned() -> None:
    def early_hints() -> bytes:
        return b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + answer()

    async with raw_server(keep_alive(early_hints)) as server:
        request = BotAPIRequest(1)
        assert await post(request, server.url) == (200, OK)
        assert await post(request, server.url) == (200, OK)  # not the first one's answer
        await request.shutdown()
    assert server.connections == 1


@pytest.mark.parametrize(
    ("version", "connection", "connections"),
    [
        (b"HTTP/1.1", b"Connection: keep-alive, close\r\n", 3),
        (b"HTTP/1.0", b"", 3),
        (b"HTTP/1.0", b"Connection: Keep-Alive\r\n", 1),
    ],
    ids=["close among tokens", "http/1.0", "http/1.0 keep-alive"],
)
async def test_whether_a_connection_is_kept_follows_the_answer(
    version: bytes, connection: bytes, connections: int
) -> None:
    def reply() -> bytes:
        return answer(extra=connection).replace(b"HTTP/1.1", version, 1)

    async with raw_server(keep_alive(reply)) as server:
        request = BotAPIRequest(1)
        for _ in range(3):
            assert await post(request, server.url) == (200, OK)
        await request.shutdown()
    assert server.connections == connections


async def test_a_refusal_ptb_has_no_name_for_is_a_bad_request_not_a_network_error() -> None:
    too_large = b'{"ok":false,"error_code":413,"description":"Request Entity Too Large"}'

    def reply() -> bytes:
        return answer(too_large).replace(b"200 OK", b"413 Request Entity Too Large", 1)

    async with raw_server(keep_alive(reply)) as server:
        request = BotAPIRequest(1)
        with pytest.raises(BadRequest, match=r"Request Entity Too Large \(413\)"):
            await post(request, server.url)
        await request.shutdown()


async def test_a_url_that_cannot_be_sent_is_refused_before_connecting() -> None:
    async with raw_server(keep_alive()) as server:
        request = BotAPIRequest(1)
        assert await post(request, server.url.replace("getMe", "file/a b.txt")) == (200, OK)
        with pytest.raises(NotDelivered):
            await post(request, "http://127.0.0.1:notaport/bot/getMe")
        await request.shutdown()
    assert server.requests[0][0].startswith(b"POST /bot123456:TEST-TOKEN/file/a%20b.txt HTTP/1.1")


def test_a_new_event_loop_gets_new_connections() -> None:
    """As PTB's own client: stopped in one loop and started in another (the CLI does so)."""
    request = BotAPIRequest(1)
    counts: list[int] = []

    async def twice() -> None:
        async with raw_server(keep_alive()) as server:
            await post(request, server.url)
            await post(request, server.url)
            counts.append(server.connections)

    asyncio.run(twice())
    asyncio.run(twice())  # the idle connection of the first loop is not used here
    assert counts == [1, 1]


async def test_a_connection_in_use_at_shutdown_is_closed_when_its_request_ends() -> None:
    release = asyncio.Event()

    def held(server: RawServer) -> Handler:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            await release.wait()
            writer.write(answer())
            await writer.drain()
            await reader.read()  # until the client closes it
            server.requests.append((b"closed by the client", b""))

        return serve

    async with raw_server(held) as server:
        request = BotAPIRequest(1)
        await request.initialize()
        in_flight = asyncio.create_task(post(request, server.url))
        await server.received.wait()
        await request.shutdown()
        release.set()
        assert await in_flight == (200, OK)
        for _ in range(100):
            if len(server.requests) == 2:
                break
            await asyncio.sleep(0.05)
    assert server.requests[-1][0] == b"closed by the client"

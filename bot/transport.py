"""A lean HTTP/1.1 client for the Bot API: python-telegram-bot's ``BaseRequest`` on asyncio.

Why not PTB's ``HTTPXRequest``: under load, most of the bot's own CPU went to httpx and
httpcore rather than to the dialogue. On every request httpcore walks its whole pool twice,
asking each idle connection through anyio whether its socket is readable (a dict of
attributes and a ``getpeername`` per connection per request), and wraps every read and write
in anyio's layers. Measured on the benchmark machine: about 2-3 ms of CPU per call, growing
with the connections kept; this client: see ``bench/`` and the README's performance section.

What it does, and no more, as the Bot API needs:

- POST (and GET, for files) to one origin per URL, with keep-alive connections reused last in,
  first out, and closed after ``KEEPALIVE`` seconds unused (as httpx does: a connection idle
  for long may have died silently on the way, and a request written into it would only time
  out); at most ``connections`` at once. A caller waits up to the pool timeout for one and
  then gets ``NotSent``.
- Form-encoded parameters, or multipart when files are uploaded, as HTTPXRequest sends them.
- Responses with ``Content-Length`` or chunked bodies; ``Connection: close`` honoured.
- TLS for ``https`` with the certificates httpx uses (``SSL_CERT_FILE`` or ``SSL_CERT_DIR``
  if set, else certifi's bundle), hostname checked; Happy Eyeballs (an unreachable IPv6
  address does not hold up the IPv4 one).
- Timeouts as PTB defines them (connect, write, read, pool), errors as PTB expects:
  ``TimedOut`` for timeouts (``NotSent``, a ``TimedOut``, when the request never left: no
  free connection, or no connection made in time), ``NetworkError`` for the rest:
  ``NotDelivered`` when no connection could be made (nothing was sent), ``MaybeDelivered``
  when it broke after the request was written (Telegram may have acted on it). Answers with
  a 4xx status PTB does not name (413 "too large", ...) are ``BadRequest``: repeating them
  cannot help. The read and write timeouts bound the whole answer and the whole request
  (httpx bounds each socket operation): generous enough for the Bot API's small JSON and the
  bot's own files. A connection the server closed
  while idle is noticed before reuse (asyncio has already read its end), so a request is never
  written into a dead connection; one that breaks mid-request is not repeated here (the
  sender decides what may be repeated).

No redirects, cookies or HTTP/2: the Bot API needs none of them. No proxies either: when the
environment names one for the Bot API's address (``HTTPS_PROXY``, ``ALL_PROXY``, ... and not
excluded by ``NO_PROXY``, as PTB and httpx read them), ``make_request`` returns PTB's own
``HTTPXRequest``, which goes through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlencode, urlsplit
from urllib.request import getproxies, proxy_bypass

from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import ODVInput
from telegram.error import BadRequest, NetworkError, TimedOut
from telegram.request import BaseRequest, HTTPXRequest, RequestData

__all__ = [
    "KEEPALIVE",
    "BotAPIRequest",
    "MaybeDelivered",
    "NotDelivered",
    "NotSent",
    "make_request",
    "proxy_for",
]

_MAX_HEADER_BYTES = 64 * 1024
#: Seconds an unused connection is kept for reuse.
KEEPALIVE = 5.0


class NotSent(TimedOut):
    """A timeout before the request left: repeating it cannot make Telegram act twice."""


class NotDelivered(NetworkError):
    """No connection could be made: nothing was sent, so a repeat cannot act twice."""


class MaybeDelivered(NetworkError):
    """The connection broke after the request was written: Telegram may have acted on it."""


#: 4xx answers PTB turns into errors of their own (400 BadRequest, 401/404 InvalidToken,
#: 403 Forbidden, 409 Conflict, 429 RetryAfter); any other 4xx would be a NetworkError.
_PTB_NAMED = {400, 401, 403, 404, 409, 429}
_PATH_SAFE = "/%:@!$&'()*+,;=~-._"


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme == "https"


@lru_cache(maxsize=64)
def _split(url: str) -> tuple[_Origin, str, str]:
    """The origin, the request target and the Host header of ``url``."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise NotDelivered("the Bot API URL has a malformed port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotDelivered(f"unsupported URL scheme or host: {parts.scheme}://…")
    target = quote(parts.path or "/", safe=_PATH_SAFE) + (
        f"?{quote(parts.query, safe=_PATH_SAFE + '?')}" if parts.query else ""
    )
    host = parts.netloc.rpartition("@")[2]  # as written, an IPv6 address in its brackets
    return _Origin(parts.scheme, parts.hostname, port), target, host


class _Connection:
    __slots__ = ("idle_since", "origin", "reader", "writer")

    def __init__(
        self, origin: _Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.origin = origin
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def reusable(self, now: float) -> bool:
        """Recently used, still open, and the server has neither closed it nor sent anything
        unasked (asyncio reads the socket as data come, so its end is already seen)."""
        return (
            now - self.idle_since < KEEPALIVE
            and not self.writer.is_closing()
            and not self.reader.at_eof()
            and not self.reader._buffer  # type: ignore[attr-defined]  # bytes nobody asked for
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (None if none, or ``NO_PROXY`` excludes it)."""
    parts = urlsplit(url)
    proxies = getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or (parts.hostname and proxy_bypass(parts.hostname)):
        return None
    return proxy


def make_request(
    base_url: str,
    connections: int,
    *,
    read_timeout: float | None = 5.0,
    pool_timeout: float | None = 1.0,
) -> BaseRequest:
    """The client for calls to ``base_url``: this module's, or PTB's behind a proxy."""
    if proxy_for(base_url) is not None:
        return HTTPXRequest(
            connection_pool_size=connections, read_timeout=read_timeout, pool_timeout=pool_timeout
        )
    return BotAPIRequest(connections, read_timeout=read_timeout, pool_timeout=pool_timeout)


class BotAPIRequest(BaseRequest):
    """PTB's request interface over asyncio streams (see the module's docstring)."""

    def __init__(
        self,
        connections: int = 16,
        *,
        read_timeout: float | None = 5.0,
        write_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 1.0,
        media_write_timeout: float | None = 20.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``connections``: at most this many requests at once (and kept open between them).

        ``tls``: the context for ``https`` (by default one with certifi's certificates).
        """
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        self._media_write_timeout = media_write_timeout
        self._connections = connections
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[_Connection] = []
        self._closed = False
        self._ssl = tls

    @property
    def read_timeout(self) -> float | None:
        """The default read timeout (PTB adds it to getUpdates' long-poll timeout)."""
        return self._read_timeout

    async def initialize(self) -> None:
        """Nothing to open (connections are made when first needed): bind to this loop."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._closed:
            # Connections and the semaphore of another loop cannot be used in this one.
            self._drop_idle()
            self._slots = asyncio.Semaphore(self._connections)
            self._loop = loop
            self._closed = False

    async def shutdown(self) -> None:
        """Close every idle connection; one in use closes when its request ends."""
        self._closed = True
        self._drop_idle()

    def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    # --- one request -------------------------------------------------------------------

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        """Make the request; return the status code and the body."""
        if self._closed or self._loop is not asyncio.get_running_loop():
            await self.initialize()
        slots = self._slots
        assert slots is not None
        files = request_data.multipart_data if request_data else None
        read = self._read_timeout if isinstance(read_timeout, DefaultValue) else read_timeout
        connect = (
            self._connect_timeout if isinstance(connect_timeout, DefaultValue) else connect_timeout
        )
        pool = self._pool_timeout if isinstance(pool_timeout, DefaultValue) else pool_timeout
        if isinstance(write_timeout, DefaultValue):
            write = self._media_write_timeout if files else self._write_timeout
        else:
            write = write_timeout
        origin, target, host = _split(url)
        try:
            head, body = _encode(method, target, host, request_data, files)
        except (UnicodeError, OSError) as exc:
            raise NotDelivered(f"the request could not be encoded: {type(exc).__name__}") from exc

        try:
            async with asyncio.timeout(pool):
                await slots.acquire()
        except TimeoutError:
            raise NotSent(
                "Pool timeout: all connections to the Bot API are busy. The request was *not* "
                "sent to Telegram."
            ) from None
        connection: _Connection | None = None
        try:
            connection = await self._connection(origin, connect)
            try:
                async with asyncio.timeout(write):
                    connection.writer.write(head + body)
                    await connection.writer.drain()
                async with asyncio.timeout(read):
                    status, content, keep = await _read_response(connection.reader, method)
            except TimeoutError:
                raise TimedOut("Timed out waiting for the Bot API's answer") from None
            except (OSError, EOFError, ValueError, asyncio.LimitOverrunError) as exc:
                raise MaybeDelivered(
                    f"the connection broke after the request was sent ({type(exc).__name__}: "
                    f"{exc}); Telegram may have acted on it"
                ) from exc
            if keep and not self._closed:
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
                connection = None
            if 400 <= status < 500 and status not in _PTB_NAMED:
                raise BadRequest(_description(content, status))
            return status, content
        finally:
            if connection is not None:
                connection.close()
            slots.release()

    async def _connection(self, origin: _Origin, connect: float | None) -> _Connection:
        """An idle connection to ``origin`` still good to use, or a new one."""
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.origin == origin and connection.reusable(now):
                return connection
            connection.close()
        context = self._tls() if origin.tls else None
        try:
            async with asyncio.timeout(connect):
                reader, writer = await asyncio.open_connection(
                    origin.host,
                    origin.port,
                    ssl=context,
                    server_hostname=origin.host if context else None,
                    limit=_MAX_HEADER_BYTES,
                    happy_eyeballs_delay=0.25,  # as httpx (anyio) does
                )
        except TimeoutError:
            raise NotSent("Timed out connecting to the Bot API") from None
        except OSError as exc:  # refused, unreachable, no such host, TLS refused
            raise NotDelivered(f"cannot connect to the Bot API: {exc}") from exc
        return _Connection(origin, reader, writer)

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            # As httpx: the environment's certificates if it names them, else certifi's.
            cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
            if cafile and os.path.isfile(cafile):
                self._ssl = ssl.create_default_context(cafile=cafile)
            elif capath and os.path.isdir(capath):
                self._ssl = ssl.create_default_context(capath=capath)
            else:
                import certifi

                self._ssl = ssl.create_default_context(cafile=certifi.where())
        return self._ssl


def _encode(
    method: str,
    target: str,
    host: str,
    request_data: RequestData | None,
    files: dict[str, Any] | None,
) -> tuple[bytes, bytes]:
    """The request's head and body."""
    headers = [f"{method} {target} HTTP/1.1", f"Host: {host}", f"User-Agent: {_USER_AGENT}"]
    body = b""
    if files:
        assert request_data is not None
        body, content_type = _multipart(request_data.json_parameters, files)
        headers.append(f"Content-Type: {content_type}")
    elif request_data is not None:
        body = urlencode(request_data.json_parameters).encode()
        headers.append("Content-Type: application/x-www-form-urlencoded")
    if body or method == "POST":
        headers.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1"), body


def _multipart(fields: dict[str, str], files: dict[str, Any]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in fields.items():
        disposition = f'form-data; name="{_quote(name)}"'
        parts.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
            + value.encode()
            + b"\r\n"
        )
    for name, upload in files.items():
        filename, content, mimetype = _upload(upload)
        disposition = f'form-data; name="{_quote(name)}"; filename="{_quote(filename)}"'
        parts.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
            f"Content-Type: {mimetype}\r\n\r\n".encode()
            + content
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _upload(upload: Any) -> tuple[str, bytes, str]:
    """PTB's (filename, content, mimetype); content may be bytes or a file handle."""
    if isinstance(upload, tuple):
        filename, content, *rest = upload
        mimetype = rest[0] if rest else "application/octet-stream"
    else:
        filename, content, mimetype = "file", upload, "application/octet-stream"
    if hasattr(content, "read"):
        if hasattr(content, "seek"):
            content.seek(0)
        content = content.read()
    return str(filename or "file"), bytes(content), str(mimetype)


#: As httpx (the HTML5 form encoding): quotes and control characters escaped, ESC kept.
_FORM_ESCAPES = {ord('"'): "%22", ord("\\"): "\\\\"} | {
    code: f"%{code:02X}" for code in range(0x20) if code != 0x1B
}


def _quote(value: str) -> str:
    return value.translate(_FORM_ESCAPES)


async def _read_response(reader: asyncio.StreamReader, method: str) -> tuple[int, bytes, bool]:
    """Status, body, and whether the connection may be used again."""
    while True:
        version, status, headers = await _read_head(reader)
        if not 100 <= status < 200:
            break
        if status == 101:
            raise ValueError("the server switched protocols")
        # an interim answer (100 Continue, 103 Early Hints): the real one follows
    tokens = _tokens(headers.get("connection", ""))
    keep = (version == "HTTP/1.1" and "close" not in tokens) or (
        version == "HTTP/1.0" and "keep-alive" in tokens
    )
    if method == "HEAD" or status in (204, 304):
        return status, b"", keep
    encodings = _tokens(headers.get("transfer-encoding", ""))
    if encodings:
        if encodings[-1] != "chunked":
            raise ValueError(f"unsupported transfer encoding {encodings}")
        return status, await _read_chunked(reader), keep
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ValueError(f"bad Content-Length {length[:20]!r}")
        return status, await reader.readexactly(int(length)), keep
    return status, await reader.read(), False  # until the server closes it


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if version not in ("HTTP/1.1", "HTTP/1.0") or not code.isdigit() or rest[3:4] not in ("", " "):
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:40]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise ValueError(f"malformed header line {line[:40]!r}")
        key, value = name.lower(), value.strip()
        if key == "content-length" and key in headers and headers[key] != value:
            raise ValueError("conflicting Content-Length headers")
        headers[key] = (
            f"{headers[key]}, {value}" if key in headers and key != "content-length" else value
        )
    return version, int(code), headers


def _tokens(value: str) -> list[str]:
    return [token.strip().lower() for token in value.split(",") if token.strip()]


def _description(content: bytes, status: int) -> str:
    """Telegram's description of a refusal, or the status."""
    try:
        found = json.loads(content).get("description")
    except (ValueError, AttributeError):
        found = None
    return f"{found or 'Refused'} ({status})"


_HEX = frozenset(b"0123456789abcdefABCDEF")


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        size_field = (await reader.readuntil(b"\r\n"))[:-2].split(b";", 1)[0].strip()
        if not size_field or not set(size_field) <= _HEX:
            raise ValueError(f"bad chunk size {size_field[:20]!r}")
        size = int(size_field, 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise ValueError("a chunk does not end with CRLF")


_USER_AGENT = BaseRequest.USER_AGENT

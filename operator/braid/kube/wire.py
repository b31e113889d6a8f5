"""HTTP/1.1 to one API server over asyncio's own streams: kept-alive connections, bodies by
length or in chunks (a watch is one long chunked answer), gzip when the server sends it,
an HTTP proxy from the environment (CONNECT for https) unless NO_PROXY names the server.

Why not a general client: aiohttp was the operator's largest import (~0.15-0.2 s of CPU at
every start, the TLS contexts it builds for itself and yarl, multidict, attrs) and a fifth
of its CPU under load in a profile (bench/README.md, "Passing the peers"), for a dozen kinds
of JSON request to one server. What the API server needs of a client is small and fixed;
this is that and nothing more (no redirects, no cookies, no basic auth)."""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlencode, urlsplit

HEAD_LIMIT = 1 << 20  # the longest line of an answer's head (its status line, a header)
READ_SIZE = 1 << 20  # at most this much read from the socket at once
PATH_SAFE = "/%:@!$&'()*+,;=~"  # what a path keeps as it is (already escaped stays escaped)
PROXY_VARIABLES = ("https_proxy", "http_proxy", "all_proxy", "no_proxy")


class WireError(Exception):
    """The other side did not speak HTTP/1.1 as it must (or went away mid-answer)."""


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    authorization: str | None  # a Proxy-Authorization value, from user:password in its URL


def proxy_for(scheme: str, host: str) -> Proxy | None:
    """The proxy the environment names for ``scheme``://``host`` (HTTPS_PROXY, HTTP_PROXY,
    ALL_PROXY, in either case), None without one or when NO_PROXY covers the host. Only
    looked up (urllib.request loads ~30 modules) when a proxy variable is set at all."""
    if not any(key.lower() in PROXY_VARIABLES for key in os.environ):
        return None
    import urllib.request  # noqa: PLC0415 - only with a proxy variable set

    if urllib.request.proxy_bypass_environment(host):  # type: ignore[attr-defined]
        return None
    found = urllib.request.getproxies_environment()
    url = found.get(scheme) or found.get("all")
    if not url:
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise WireError(f"proxy {url!r}: only http:// proxies are supported")
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode()
    return Proxy(parts.hostname, parts.port or 80, authorization)


def _tunnelled(head: Head) -> None:
    if head.status != 200:
        raise WireError(f"the proxy refused the tunnel: HTTP {head.status}")


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.reused = False

    def close(self) -> None:
        self.writer.close()


@dataclass
class Head:
    status: int
    headers: dict[str, str]  # names in lower case; a repeated header's values joined by ", "
    version: bytes


async def read_head(reader: asyncio.StreamReader) -> Head:
    """The status line and headers of an answer (informational 1xx answers skipped)."""
    while True:
        line = await reader.readuntil(b"\r\n")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise WireError(f"not an HTTP/1.1 status line: {line[:100]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        while (field := await reader.readuntil(b"\r\n")) != b"\r\n":
            name, colon, value = field.partition(b":")
            if not colon:
                raise WireError(f"not a header line: {field[:100]!r}")
            key, text = name.strip().lower().decode("latin-1"), value.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        if not 100 <= status < 200:
            return Head(status, headers, parts[0])


def _count(text: str | bytes, base: int, what: str) -> int:
    """A length the answer states: digits only (int() would take "-5", "+5" or "1_0")."""
    digits = text.decode("latin-1") if isinstance(text, bytes) else text
    allowed = "0123456789abcdefABCDEF" if base == 16 else "0123456789"
    if not digits or any(c not in allowed for c in digits):
        raise WireError(f"{what} {text[:100]!r}")
    return int(digits, base)


class Body:
    """An answer's body, read piece by piece: by Content-Length, in chunks, or until the
    connection closes; inflated when gzip-encoded."""

    def __init__(self, reader: asyncio.StreamReader, head: Head, method: str) -> None:
        self.reader = reader
        headers = head.headers
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self.remaining: int | None = None
        if method == "HEAD" or head.status in (204, 304):
            self.remaining = 0
        elif not self.chunked and "content-length" in headers:
            self.remaining = _count(headers["content-length"], 10, "Content-Length")
        self.done = self.remaining == 0
        encoding = headers.get("content-encoding", "").lower()
        self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding == "gzip" else None
        connection = headers.get("connection", "").lower()
        self.reusable = (
            head.version == b"HTTP/1.1"
            and "close" not in connection
            and (self.chunked or self.remaining is not None)
        )

    async def piece(self) -> bytes:
        """The next piece of the body; b"" once it has all been read."""
        while not self.done:
            data = await self._raw()
            if self.inflate is not None:
                data = self.inflate.decompress(data) + (self.inflate.flush() if self.done else b"")
            if data:
                return data
        return b""

    async def _raw(self) -> bytes:
        reader = self.reader
        if self.chunked:
            line = await reader.readuntil(b"\r\n")
            size = _count(line.split(b";", 1)[0].strip(), 16, "not a chunk size:")
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers: none the API server sends matter
                self.done = True
                return b""
            data = await reader.readexactly(size + 2)
            if data[-2:] != b"\r\n":
                raise WireError("a chunk did not end where its size said")
            return data[:-2]
        if self.remaining is None:  # until the server closes
            data = await reader.read(READ_SIZE)
            self.done = not data
            return data
        data = await reader.read(min(self.remaining, READ_SIZE))
        if not data:
            raise WireError(f"the answer ended {self.remaining} bytes early")
        self.remaining -= len(data)
        self.done = self.remaining == 0
        return data

    async def read(self) -> bytes:
        pieces = []
        while piece := await self.piece():
            pieces.append(piece)
        return b"".join(pieces)


class Pool:
    """Requests to one server (``https://host:port[/prefix]``): up to ``limit`` connections
    at once, idle ones kept for the next request. Bound to the event loop it is first used
    in; used in another one (a CLI that runs the loop twice), it starts afresh."""

    def __init__(self, server: str, context: ssl.SSLContext | None, *, limit: int = 100) -> None:
        parts = urlsplit(server)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WireError(f"server {server!r}: an http:// or https:// URL is needed")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.authority = parts.netloc.rpartition("@")[2]
        self.prefix = parts.path.rstrip("/")
        self.context = context if self.https else None
        self.proxy = proxy_for(parts.scheme, self.host)
        self.limit = limit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._idle = loop, []  # the old loop's connections died with it
            self._slots = asyncio.Semaphore(self.limit)

    async def _open(self) -> _Connection:
        if self.proxy is None:
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.context, limit=HEAD_LIMIT
            )
            return _Connection(reader, writer)
        reader, writer = await asyncio.open_connection(
            self.proxy.host, self.proxy.port, limit=HEAD_LIMIT
        )
        connection = _Connection(reader, writer)
        if not self.https:
            return connection  # plain http: each request names the server in full
        try:
            host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6
            lines = [f"CONNECT {host}:{self.port} HTTP/1.1", f"Host: {host}:{self.port}"]
            if self.proxy.authorization:
                lines.append(f"Proxy-Authorization: {self.proxy.authorization}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            _tunnelled(await read_head(reader))
            assert self.context is not None
            await writer.start_tls(self.context, server_hostname=self.host)
        except BaseException:
            connection.close()
            raise
        return connection

    def _target(self, path: str, query: Iterable[tuple[str, str]]) -> str:
        target = quote(self.prefix + path, safe=PATH_SAFE)
        if encoded := urlencode(list(query)):
            target += "?" + encoded
        if self.proxy is not None and not self.https:
            target = f"http://{self.authority}{target}"
        return target

    def _message(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
    ) -> bytes:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.authority}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        if self.proxy is not None and not self.https and self.proxy.authorization:
            lines.append(f"Proxy-Authorization: {self.proxy.authorization}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head + body if body else head

    async def _exchange(self, message: bytes) -> tuple[_Connection, Head]:
        """Send on an idle connection (or a new one) and read the answer's head. A kept
        connection the server closed meanwhile fails before any byte of an answer: the
        request then goes once more on a new one (idle timeouts race every client)."""
        while True:
            connection = self._idle.pop() if self._idle else await self._open()
            if connection.reused and (connection.reader.at_eof() or connection.writer.is_closing()):
                connection.close()  # the server's close arrived while it was idle
                continue
            try:
                connection.writer.write(message)
                await connection.writer.drain()
                return connection, await read_head(connection.reader)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                connection.close()
                partial = getattr(exc, "partial", b"")
                if not connection.reused or partial:
                    raise
            except BaseException:
                connection.close()
                raise

    def _release(self, connection: _Connection, body: Body) -> None:
        if body.done and body.reusable and not connection.writer.is_closing():
            connection.reused = True
            self._idle.append(connection)
        else:
            connection.close()

    async def request(
        self,
        method: str,
        path: str,
        query: Iterable[tuple[str, str]],
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        seconds: float,
    ) -> tuple[int, bytes]:
        """The answer's status and (inflated) body, all within ``seconds``."""
        self._bind()
        message = self._message(method, self._target(path, query), headers, body)
        async with asyncio.timeout(seconds), self._slots:
            connection, head = await self._exchange(message)
            try:
                answer = Body(connection.reader, head, method)
                data = await answer.read()
            except BaseException:
                connection.close()
                raise
            self._release(connection, answer)
            return head.status, data

    @asynccontextmanager
    async def stream(
        self,
        path: str,
        query: Iterable[tuple[str, str]],
        headers: Mapping[str, str],
        *,
        connect_seconds: float,
    ) -> AsyncIterator[tuple[int, Body]]:
        """A GET whose answer is read as it comes (a watch): its status and body. The head
        must come within ``connect_seconds``; the body has no overall limit."""
        self._bind()
        message = self._message("GET", self._target(path, query), headers, None)
        async with self._slots:
            async with asyncio.timeout(connect_seconds):
                connection, head = await self._exchange(message)
            answer = Body(connection.reader, head, "GET")
            try:
                yield head.status, answer
            except BaseException:
                connection.close()
                raise
            self._release(connection, answer)

    async def close(self) -> None:
        self._bind()  # another loop's connections cannot be closed from this one
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        for connection in idle:
            try:
                async with asyncio.timeout(1):
                    await connection.writer.wait_closed()
            except (OSError, TimeoutError):
                pass  # closing anyway; nothing to do about a peer that will not say goodbye


async def lines(body: Body, *, read_seconds: float, limit: int) -> AsyncIterator[bytes]:
    """The non-empty lines of a streamed body, each piece awaited for at most
    ``read_seconds``; a line longer than ``limit`` bytes is an error, not a memory sink."""
    pending = bytearray()
    while True:
        async with asyncio.timeout(read_seconds):
            piece = await body.piece()
        if not piece:
            break
        scanned = len(pending)
        pending += piece
        start = 0
        while (end := pending.find(b"\n", scanned)) >= 0:
            line = bytes(pending[start:end])
            start = scanned = end + 1
            if line.strip():
                yield line
        del pending[:start]
        if len(pending) > limit:
            raise WireError(f"a line of over {limit} bytes")
    if pending.strip():
        yield bytes(pending)

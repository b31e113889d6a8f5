"""Braid's HTTP/1.1 (kube/wire.py, under kube/rest.py) against loopback servers that answer
byte for byte as scripted: kept-alive connections and the race with a server closing an idle
one, bodies by length, in chunks and until close, gzip, broken answers and silence named as
errors, a proxy from the environment (CONNECT for TLS, through a real TLS server)."""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
import subprocess
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from braid.kube import wire
from braid.kube.rest import ApiError, ConfigError, Credentials, Rest

# A request's head -> the bytes to answer with; b"": close without an answer; None: silence.
Answer = Callable[[bytes], bytes | None]


class Scripted:
    """A loopback server answering each request with ``answer(head)``; counts connections.
    ``close_after``: the server closes each connection after that many answers."""

    def __init__(self, answer: Answer, *, close_after: int | None = None) -> None:
        self.answer, self.close_after = answer, close_after
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        answered = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                self.heads.append(head)
                self.bodies.append(await reader.readexactly(length))
                reply = self.answer(head)
                if reply == b"":
                    break
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
                answered += 1
                if self.close_after is not None and answered >= self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def scripted(
    server: Scripted | Proxy, context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """The server listening on loopback; stopped afterwards with every connection it had."""
    listening = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=context)
    port = listening.sockets[0].getsockname()[1]
    try:
        yield f"{'https' if context else 'http'}://127.0.0.1:{port}"
    finally:
        listening.close()
        for writer in server.writers:
            writer.close()  # its handler reads the end and returns
        await asyncio.sleep(0.01)
        await listening.wait_closed()


def ok(body: bytes = b'{"kind": "Pod"}', *extra: str) -> Answer:
    def answer(_head: bytes) -> bytes:
        lines = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *extra]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    return answer


async def using(url: str, use: Callable[[Rest], Awaitable[Any]], **credentials: Any) -> Any:
    api = Rest(Credentials(server=url, **credentials))
    try:
        return await use(api)
    finally:
        await api.close()


def test_requests_share_one_kept_connection():
    server = Scripted(ok())

    async def go() -> list[Any]:
        async with scripted(server) as url:
            return await using(url, lambda api: sequential(api, 5))

    async def sequential(api: Rest, n: int) -> list[Any]:
        return [await api.json("GET", f"/api/v1/pods/{i}") for i in range(n)]

    assert asyncio.run(go()) == [{"kind": "Pod"}] * 5
    assert server.connections == 1
    first = server.heads[0].split(b"\r\n")
    assert first[0] == b"GET /api/v1/pods/0 HTTP/1.1"
    assert b"Accept: application/json" in first


def test_a_kept_connection_the_server_closed_is_replaced_and_the_request_sent_again():
    server = Scripted(ok(), close_after=1)  # an idle timeout, as soon as possible

    async def go() -> list[Any]:
        async with scripted(server) as url:
            return await using(
                url,
                lambda api: chain(api.json("GET", "/a"), api.json("POST", "/b", body={"x": 1})),
            )

    assert asyncio.run(go()) == [{"kind": "Pod"}] * 2
    assert server.connections == 2
    assert json.loads(server.bodies[-1]) == {"x": 1}


def test_a_request_the_server_closed_on_unanswered_goes_again_on_a_new_connection():
    """The race behind every idle timeout: the request was sent on a kept connection just
    as the server closed it, and no byte of an answer came back."""

    def answer(_head: bytes) -> bytes:
        return b"" if len(server.heads) == 2 else ok()(b"")

    server = Scripted(answer)

    async def go() -> list[Any]:
        async with scripted(server) as url:

            async def both(api: Rest) -> list[Any]:
                return [await api.json("GET", "/a"), await api.json("PUT", "/b", body={})]

            return await using(url, both)

    assert asyncio.run(go()) == [{"kind": "Pod"}] * 2
    assert server.connections == 2
    assert [h.split(b" ")[0] for h in server.heads] == [b"GET", b"PUT", b"PUT"]


async def chain(*calls: Awaitable[Any]) -> list[Any]:
    out = []
    for call in calls:
        out.append(await call)
        await asyncio.sleep(0.05)  # the server's close arrives before the next request
    return out


def test_a_chunked_gzipped_answer_and_one_that_ends_with_the_connection():
    payload = json.dumps({"items": ["x" * 1000] * 50}).encode()
    packed = gzip.compress(payload)

    def chunked(_head: bytes) -> bytes:
        out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
        for i in range(0, len(packed), 100):
            piece = packed[i : i + 100]
            out += f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n"
        return out + b"0\r\nX-Trailer: y\r\n\r\n"

    def until_close(_head: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + payload

    async def go(answer: Answer) -> Any:
        server = Scripted(answer, close_after=1)
        async with scripted(server) as url:
            return await using(url, lambda api: api.json("GET", "/big"))

    assert asyncio.run(go(chunked)) == json.loads(payload)
    assert asyncio.run(go(until_close)) == json.loads(payload)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"SSH-2.0-OpenSSH_9\r\n", "not an HTTP/1.1 status line: b'SSH-2.0-OpenSSH_9"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "not a header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "ended 7 bytes early"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "Content-Length 'ten'"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", "Content-Length '-5'"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "not a chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", "not a chunk size"),
    ],
)
def test_a_broken_answer_is_status_zero_saying_what_was_wrong(answer: bytes, message: str):
    server = Scripted(lambda _head: answer, close_after=1)

    async def go() -> None:
        async with scripted(server) as url:
            await using(url, lambda api: api.request("GET", "/x"))

    with pytest.raises(ApiError) as caught:
        asyncio.run(go())
    assert caught.value.status == 0
    assert message in caught.value.message


def test_silence_is_a_timeout_named_with_the_request_and_the_next_one_still_works():
    def answer(_head: bytes) -> bytes | None:
        return None if len(server.heads) == 1 else ok()(b"")  # the first is never answered

    server = Scripted(answer)

    async def go() -> Any:
        async with scripted(server) as url:
            api = Rest(Credentials(server=url))
            try:
                with pytest.raises(ApiError, match=r"did not answer GET /slow within 0.3 s"):
                    await api.request("GET", "/slow", seconds=0.3)
                return await api.json("GET", "/fast")
            finally:
                await api.close()

    assert asyncio.run(go()) == {"kind": "Pod"}
    assert server.connections == 2  # the silent one was not used again


def test_a_watch_arrives_in_pieces_and_a_runaway_line_is_refused(
    monkeypatch: pytest.MonkeyPatch,
):
    events = [{"type": "ADDED", "object": {"n": i, "pad": "y" * 5000}} for i in range(20)]
    stream = b"".join(json.dumps(e).encode() + b"\n" for e in events) + b"\n"

    def watch(_head: bytes) -> bytes:
        out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        for i in range(0, len(stream), 777):  # pieces that cut lines anywhere
            piece = stream[i : i + 777]
            out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        return out + b"0\r\n\r\n"

    async def go() -> list[Any]:
        server = Scripted(watch)
        async with scripted(server) as url:
            return await using(url, lambda api: collect(api.watch("/api/v1/pods", seconds=5)))

    assert asyncio.run(go()) == events
    monkeypatch.setattr("braid.kube.rest.WATCH_LINE_LIMIT", 4000)
    with pytest.raises(ApiError, match="a line of over 4000 bytes"):
        asyncio.run(go())


async def collect(events: AsyncIterator[Any]) -> list[Any]:
    return [e async for e in events]


def test_one_rest_serves_two_event_loops():
    """A CLI may run asyncio twice with one client: the first loop's connections are left
    behind with it, not used from the second."""
    server = Scripted(ok())
    ready, url = threading.Event(), []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve_until_stopped() -> None:
        async with scripted(server) as address:
            url.append(address)
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve_until_stopped(),))
    thread.start()
    try:
        assert ready.wait(10)
        api = Rest(Credentials(server=url[0]))
        assert asyncio.run(api.json("GET", "/one")) == {"kind": "Pod"}
        assert asyncio.run(api.json("GET", "/two")) == {"kind": "Pod"}
        asyncio.run(api.close())
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
    assert server.connections == 2


# ---- a proxy from the environment ---------------------------------------------------------


class Proxy:
    """A loopback HTTP proxy: CONNECT tunnels, and plain requests forwarded as they are."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        self.seen.append(head)
        method, target, _ = head.split(b"\r\n")[0].split(b" ")
        if method == b"CONNECT":
            host, port = target.rsplit(b":", 1)
            up_reader, up_writer = await asyncio.open_connection(host.decode(), int(port))
            self.writers.append(up_writer)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            port = target.split(b"/")[2].rsplit(b":", 1)[1]
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", int(port))
            self.writers.append(up_writer)
            up_writer.write(head)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, str]:
    """A server context with a self-signed certificate for 127.0.0.1, and its file."""
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(tmp_path / "k.pem"),
            "-out",
            str(tmp_path / "c.pem"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    return context, str(tmp_path / "c.pem")


def clean_proxies(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for key in wire.PROXY_VARIABLES:
        monkeypatch.delenv(key, raising=False)
        monkeypatch.delenv(key.upper(), raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize("secure", [True, False])
def test_a_proxy_variable_sends_requests_through_the_proxy(
    monkeypatch: pytest.MonkeyPatch, tls: tuple[ssl.SSLContext, str], secure: bool
):
    proxy, server = Proxy(), Scripted(ok())

    async def go() -> Any:
        async with scripted(proxy) as proxy_url:
            port = proxy_url.rsplit(":", 1)[1]
            clean_proxies(
                monkeypatch,
                HTTPS_PROXY=f"http://me:s%40crt@127.0.0.1:{port}",
                http_proxy=f"127.0.0.1:{port}",
            )
            async with scripted(server, tls[0] if secure else None) as url:
                return await using(url, lambda api: api.json("GET", "/v"), ca_file=tls[1])

    assert asyncio.run(go()) == {"kind": "Pod"}
    first = proxy.seen[0].split(b"\r\n")
    if secure:  # a tunnel, authenticated as the URL says; the request itself inside TLS
        assert first[0].startswith(b"CONNECT 127.0.0.1:")
        assert b"Proxy-Authorization: Basic bWU6c0BjcnQ=" in first  # me:s@crt
        assert server.heads[0].split(b"\r\n")[0] == b"GET /v HTTP/1.1"
    else:  # the request to the proxy, naming the server in full (passed on as it is here)
        assert first[0].startswith(b"GET http://127.0.0.1:")
        assert first[0].endswith(b"/v HTTP/1.1")


def test_no_proxy_naming_the_server_goes_direct(monkeypatch: pytest.MonkeyPatch):
    clean_proxies(monkeypatch, HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="example.com,127.0.0.1")
    assert wire.proxy_for("http", "127.0.0.1") is None
    found = wire.proxy_for("http", "10.0.0.1")
    assert found is not None
    assert (found.host, found.port) == ("127.0.0.1", 9)
    clean_proxies(monkeypatch)
    assert wire.proxy_for("https", "10.0.0.1") is None


def test_an_https_proxy_url_is_refused_by_name(monkeypatch: pytest.MonkeyPatch):
    clean_proxies(monkeypatch, HTTPS_PROXY="https://proxy.example:443")

    async def go() -> None:
        await using("https://10.0.0.1:6443", lambda api: api.request("GET", "/x"))

    with pytest.raises(ConfigError, match=r"proxy 'https://proxy.example:443': only http://"):
        asyncio.run(go())


def test_a_refused_tunnel_is_named_and_an_ipv6_server_is_bracketed(
    monkeypatch: pytest.MonkeyPatch,
):
    proxy = Scripted(lambda _head: b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")

    async def go() -> None:
        async with scripted(proxy) as proxy_url:
            clean_proxies(monkeypatch, HTTPS_PROXY=proxy_url)
            await using("https://[::1]:6443", lambda api: api.request("GET", "/version"))

    with pytest.raises(ApiError, match=r"the proxy refused the tunnel: HTTP 407") as caught:
        asyncio.run(go())
    assert caught.value.status == 0
    assert proxy.heads[0].split(b"\r\n")[:2] == [
        b"CONNECT [::1]:6443 HTTP/1.1",
        b"Host: [::1]:6443",
    ]

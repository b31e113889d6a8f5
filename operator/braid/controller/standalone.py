"""One operator on its own (no ``--peering``): the service (controller/service.py) with its
own watches of the pods, runs and schedules, a /healthz endpoint, and a stop on SIGTERM or
SIGINT. kopf is not loaded: once the runs and schedules came off it, all it still did here was
start, stop and answer the probe, for ~100 modules and ~0.1 s of CPU at every start
(bench/README.md, "Passing the peers"). A hot standby runs on kopf (controller/handlers.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal

import structlog

from braid.controller.service import Service, Settings, StartError

log = structlog.get_logger("braid.controller")


async def serve(settings: Settings, health: tuple[str, int] | None = None) -> int:
    """Run until SIGTERM or SIGINT; the process's exit code (1: it could not start)."""
    service = Service(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    server: asyncio.Server | None = None
    try:
        try:
            await service.start(own_watches=True)
        except StartError as exc:
            log.error("Cannot start", error=str(exc))  # noqa: TRY400 - says all; no trace
            return 1
        except Exception as exc:  # noqa: BLE001 - e.g. the API server unreachable
            # Exit, and let the kubelet (or whoever started it) start it again.
            log.error("Cannot start", error=str(exc) or type(exc).__name__)  # noqa: TRY400
            return 1
        if health is not None:
            server = await asyncio.start_server(_answer, health[0], health[1])
            log.info("Serving health", address=health[0], port=health[1])
        log.info("Started operator", namespaces=settings.namespaces or "(all)")
        await stopping.wait()
        log.info("Stopping operator")
        return 0
    finally:
        if server is not None:
            server.close()
            await server.wait_closed()
        await service.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """GET /healthz: 200 while the event loop answers (the kubelet's liveness and readiness
    probe); anything else 404. One request per connection."""
    try:
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
        writer.close()
        return
    parts = head.split(b"\r\n", 1)[0].split()
    ok = len(parts) == 3 and parts[0] in (b"GET", b"HEAD") and parts[1] == b"/healthz"
    body = json.dumps({"ok": True} if ok else {"error": "not found: try GET /healthz"}).encode()
    status = b"200 OK" if ok else b"404 Not Found"
    writer.write(
        b"HTTP/1.1 "
        + status
        + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + (body if parts[:1] != [b"HEAD"] else b"")
    )
    with contextlib.suppress(OSError):
        await writer.drain()
    writer.close()

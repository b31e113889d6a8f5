"""Carry out one attempt locally: a process for a container step, an HTTP call for a webhook.

Nothing here decides: timeouts, retries and output validation are the engine's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import httpx

from braid.engine import MAX_OUTPUT_BYTES, AttemptResult, StartAttempt
from braid.webhook import call_webhook

STDERR_TAIL = 400


class ProcessExecutor:
    """Runs container steps as subprocesses of their command and args; the image is ignored."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: dict[str, asyncio.subprocess.Process] = {}

    async def run(self, request: StartAttempt) -> AttemptResult:
        container = request.container
        assert container is not None
        argv = [*container.command, *container.args]
        if not container.command:
            return AttemptResult(
                request.name,
                error="container.command is required to run locally: the image's entrypoint is "
                "not known outside a cluster",
            )
        output_file = self.workdir / f"{request.name}.output.json"
        log_file = self.workdir / f"{request.name}.log"
        output_file.unlink(missing_ok=True)
        env = {**os.environ, **container.env, "BRAID_OUTPUT": str(output_file)}
        try:
            with log_file.open("wb") as log:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    env=env,
                    cwd=container.working_dir or None,
                    start_new_session=True,  # so a cancel can stop the whole process group
                )
                self.processes[request.name] = process
                code = await process.wait()
        except OSError as exc:
            return AttemptResult(request.name, error=f"could not start {argv[0]!r}: {exc.strerror}")
        finally:
            self.processes.pop(request.name, None)
        output = None
        if output_file.exists():
            # Read one byte past the limit so the engine can tell "too large" from "exactly 4 KiB".
            with output_file.open("rb") as f:
                output = f.read(MAX_OUTPUT_BYTES + 1).decode("utf-8", errors="replace")
        tail = log_file.read_bytes()[-STDERR_TAIL:].decode("utf-8", errors="replace")
        return AttemptResult(
            request.name, exit_code=code, output=output, message=tail if code else None
        )

    def cancel(self, name: str) -> None:
        process = self.processes.get(name)
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)

    def cancel_all(self) -> None:
        for name in list(self.processes):
            self.cancel(name)


class HTTPExecutor:
    """Makes webhook calls; the engine judges the response against the success condition."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def run(self, request: StartAttempt) -> AttemptResult:
        return await call_webhook(self.client, request)

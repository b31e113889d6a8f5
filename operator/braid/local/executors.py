"""Carry out one attempt locally: a process for a container step, an HTTP call for a webhook.

Nothing here decides: timeouts, retries and output validation are the engine's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path

import httpx

from braid.artifacts.files import ArtifactError
from braid.engine import MAX_OUTPUT_BYTES, AttemptResult, StartAttempt
from braid.engine.masking import Masker
from braid.local.artifacts import LocalArtifacts
from braid.local.data import LocalData, MissingDataError, step_env, webhook_reader
from braid.webhook import call_webhook

STDERR_TAIL = 400


class ProcessExecutor:
    """Runs container steps as subprocesses of their command and args; the image is ignored.

    Each attempt is its own process group, as a container is its own process tree: when the
    command exits, whatever it left behind is killed; a cancelled or timed-out attempt gets
    SIGTERM, then SIGKILL after ``grace_seconds``; and the next attempt of the same step does
    not start before the last one is gone, so a step that ignores SIGTERM cannot overlap its
    own retry."""

    def __init__(
        self,
        workdir: Path,
        grace_seconds: float = 10.0,
        data: LocalData | None = None,
        inherit_env: bool = False,
        run_uid: str = "",
        artifacts: LocalArtifacts | None = None,
        follow: Callable[[str, str], None] | None = None,
    ) -> None:
        self.workdir = workdir
        # braid run --follow: told each line an attempt writes (masked), as it writes it.
        self.follow = follow
        self.artifacts = artifacts
        self.grace_seconds = grace_seconds
        self.data = data or LocalData()
        self.inherit_env = inherit_env
        self.run_uid = run_uid
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self._reapers: set[asyncio.Future[None]] = set()
        self._stopping: set[str] = set()

    async def run(self, request: StartAttempt) -> AttemptResult:
        """The attempt's result, with the values of the Secrets it read masked (in its log
        file too)."""
        try:
            env = step_env(request, self.data, inherit=self.inherit_env, run_uid=self.run_uid)
        except MissingDataError as exc:
            return AttemptResult(request.name, error=f"cannot start the step: {exc}")
        masker = Masker.of(env.secrets)
        prepared = await self._prepare_artifacts(request, env.env)
        if isinstance(prepared, AttemptResult):
            return prepared
        result = await self._run(request, prepared, masker)
        if self.artifacts is not None and request.container is not None:
            result = await self.artifacts.collect(request, result)
        if masker:
            log_file = self.workdir / f"{request.name}.log"
            if log_file.exists():
                text = log_file.read_bytes().decode("utf-8", errors="replace")
                log_file.write_text(masker.text(text) or "")
        return masker.result(result)

    def fetch(self, uri: str, path: Path) -> None:
        """Copy an artifact of this machine's store (an item list, say) to ``path``."""
        if self.artifacts is None:
            raise ArtifactError("this run keeps no artifacts")
        self.artifacts.store.get(uri, path)

    async def _prepare_artifacts(
        self, request: StartAttempt, env: dict[str, str]
    ) -> dict[str, str] | AttemptResult:
        """The environment with $BRAID_ARTIFACTS and $BRAID_INPUTS (inputs fetched), or the
        attempt's failure when an input cannot be fetched."""
        if self.artifacts is None or request.container is None:
            return env
        try:
            return {**env, **await self.artifacts.prepare(request)}
        except ArtifactError as exc:
            return AttemptResult(request.name, artifact_error=f"input artifacts: {exc}")

    async def _run(
        self, request: StartAttempt, step_env: dict[str, str], masker: Masker | None = None
    ) -> AttemptResult:
        container = request.container
        assert container is not None
        argv = [*container.command, *container.args]
        if not container.command:
            return AttemptResult(
                request.name,
                error="container.command is required to run locally: the image's entrypoint is "
                "not known outside a cluster",
            )
        await self._previous_gone(request.name)
        output_file = self.workdir / f"{request.name}.output.json"
        log_file = self.workdir / f"{request.name}.log"
        output_file.unlink(missing_ok=True)
        env = {**step_env, "BRAID_OUTPUT": str(output_file)}
        try:
            with log_file.open("wb") as log:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    env=env,
                    cwd=container.working_dir or None,
                    start_new_session=True,  # its own process group: stopped as a whole
                )
        except OSError as exc:
            return AttemptResult(request.name, error=f"could not start {argv[0]!r}: {exc.strerror}")
        self.processes[request.name] = process
        follower = None
        if self.follow is not None:
            follower = asyncio.ensure_future(_follow(log_file, request.name, self.follow, masker))
        try:
            code = await process.wait()
        except asyncio.CancelledError:
            self.cancel(request.name)  # stopped gracefully; forgotten once it has exited
            raise
        finally:
            if follower is not None:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
        _signal_group(process.pid, signal.SIGKILL)  # whatever it left running
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

    async def _previous_gone(self, name: str) -> None:
        """Wait for earlier attempts of the same task (same name but the attempt number)."""
        prefix = name.rsplit("-", 1)[0] + "-"
        for other, process in list(self.processes.items()):
            if other != name and other.startswith(prefix) and other[len(prefix) :].isdigit():
                await process.wait()

    def cancel(self, name: str) -> None:
        """SIGTERM the attempt's process group; SIGKILL it if still there after the grace."""
        process = self.processes.get(name)
        if process is None or process.returncode is not None or name in self._stopping:
            return
        self._stopping.add(name)
        _signal_group(process.pid, signal.SIGTERM)
        reaper = asyncio.ensure_future(self._kill_after_grace(name, process))
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)

    async def _kill_after_grace(self, name: str, process: asyncio.subprocess.Process) -> None:
        try:
            await asyncio.wait_for(process.wait(), self.grace_seconds)
        except TimeoutError:
            _signal_group(process.pid, signal.SIGKILL)
            await process.wait()
        finally:
            _signal_group(process.pid, signal.SIGKILL)
            self._stopping.discard(name)
            if self.processes.get(name) is process:
                del self.processes[name]

    async def stop_all(self) -> None:
        """Stop every attempt still running and wait until each is gone."""
        for name in list(self.processes):
            self.cancel(name)
        while self._reapers:
            await asyncio.gather(*list(self._reapers), return_exceptions=True)

    def kill_all(self) -> None:
        for process in self.processes.values():
            _signal_group(process.pid, signal.SIGKILL)


async def _follow(
    log: Path, name: str, tell: Callable[[str, str], None], masker: Masker | None
) -> None:
    """Tell each complete line the log gains, until cancelled (then the rest)."""
    offset, pending = 0, b""

    def drain(final: bool) -> None:
        nonlocal offset, pending
        try:
            with log.open("rb") as f:
                f.seek(offset)
                chunk = f.read(1 << 20)
        except OSError:
            return
        offset += len(chunk)
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if final and pending:
            lines, pending = [*lines, pending], b""
        for raw in lines:
            text = raw.decode("utf-8", errors="replace").rstrip("\r")
            tell(name, (masker.text(text) if masker else text) or "")

    try:
        while True:
            drain(final=False)
            await asyncio.sleep(0.1)
    except asyncio.CancelledError:
        drain(final=True)
        raise


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class HTTPExecutor:
    """Makes webhook calls; the engine judges the response against the success condition."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        data: LocalData | None = None,
        artifacts: LocalArtifacts | None = None,
    ) -> None:
        self.client = client
        self.secrets = webhook_reader(data or LocalData())
        self.artifacts = artifacts

    async def run(self, request: StartAttempt) -> AttemptResult:
        result = await call_webhook(self.client, request, secrets=self.secrets)
        if result.exchange is not None and self.artifacts is not None:
            result = await self.artifacts.keep(request, result)
        return result

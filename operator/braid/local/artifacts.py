"""Artifacts of a local run, kept in a directory (``.braid/artifacts`` by default, or
``braid run --artifacts DIR``) with the keys a cluster uses (``<run>/<attempt>/<name>``), so
``steps.x.artifacts['name']`` reads the same and the same manifest runs unchanged."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from braid.artifacts.files import ArtifactError
from braid.artifacts.store import LocalStore, attempt_prefix, run_prefix
from braid.artifacts.transfer import download, keep_exchange, upload
from braid.engine import AttemptResult, StartAttempt

DEFAULT_DIR = Path(".braid/artifacts")


@dataclass
class LocalArtifacts:
    root: Path  # the store
    workdir: Path  # where each attempt's directories are made
    run: str

    def __post_init__(self) -> None:
        self.store = LocalStore(self.root)

    def dirs(self, name: str) -> tuple[Path, Path]:
        return self.workdir / name / "artifacts", self.workdir / name / "inputs"

    async def prepare(self, request: StartAttempt) -> dict[str, str]:
        """Fresh directories for the attempt, its inputs fetched; the variables naming them."""
        container = request.container
        assert container is not None
        out, inputs = self.dirs(request.name)
        env: dict[str, str] = {}
        if container.artifacts is not None:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            env["BRAID_ARTIFACTS"] = str(out)
        if container.inputs:
            shutil.rmtree(inputs, ignore_errors=True)
            await asyncio.to_thread(download, self.store.get, container.inputs, inputs)
            env["BRAID_INPUTS"] = str(inputs)
        return env

    async def collect(self, request: StartAttempt, result: AttemptResult) -> AttemptResult:
        """What the attempt left in its artifacts directory, stored, on its result."""
        container = request.container
        if container is None or container.artifacts is None:
            return result
        out, _ = self.dirs(request.name)
        key = attempt_prefix("", "", self.run, request.name)
        room = container.artifacts
        try:
            stored = await asyncio.to_thread(
                upload, self.store, out, key, room.max_bytes, room.max_files
            )
        except ArtifactError as exc:
            return replace(result, artifact_error=str(exc), artifact_too_large=exc.too_large)
        return replace(result, artifacts=stored or None)

    async def keep(self, request: StartAttempt, result: AttemptResult) -> AttemptResult:
        """A model call's request and reply as the attempt's artifacts."""
        assert result.exchange is not None
        key = attempt_prefix("", "", self.run, request.name)
        try:
            kept = await asyncio.to_thread(keep_exchange, self.store, key, result.exchange)
        except (ArtifactError, OSError) as exc:
            return replace(result, exchange=None, artifact_error=f"keeping the exchange: {exc}")
        return replace(result, exchange=None, artifacts=kept)

    def delete(self) -> int:
        return self.store.delete_prefix(run_prefix("", "", self.run))

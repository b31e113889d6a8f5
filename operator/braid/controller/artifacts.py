"""The artifacts of a run live as long as the run (Argo's artifactGC on deletion): before the
first Pod that may write artifacts is created, the run gets the finalizer braid.dev/artifacts;
when the run is deleted, the operator deletes every object under the run's prefix and then
lets the run go. A failure to delete is retried; the objects are never left behind silently.
A bucket lifecycle rule on the prefix is the backstop for runs deleted while no operator ran
with the same repository (README).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from braid.artifacts.files import ArtifactError
from braid.artifacts.store import S3Store, Store, attempt_prefix
from braid.artifacts.transfer import keep_exchange
from braid.engine import AttemptResult, StartAttempt
from braid.kube.artifact_pods import FINALIZER, ArtifactSettings
from braid.kube.client import Cluster

log = structlog.get_logger("braid.controller")

RETRY_SECONDS = 30.0


@dataclass
class ArtifactKeeper:
    cluster: Cluster
    settings: ArtifactSettings
    store: Store | None = None  # made on first use, with the operator's own credentials
    deleted: dict[str, int] = field(default_factory=dict)  # run uid -> objects deleted

    def _store(self) -> Store:
        if self.store is None:
            self.store = S3Store(self.settings.repository)
        return self.store

    def store_for(self, namespace: str) -> Callable[[str, Path], None]:
        """Fetches an artifact of a run in ``namespace`` (no other namespace's)."""
        scope = self.settings.run_prefix(namespace, "")
        store = self._store()

        def fetch(uri: str, path: Path) -> None:
            if isinstance(store, S3Store):
                store.get(uri, path, scope)
            else:
                store.get(uri, path)

        return fetch

    async def keep(
        self, key: tuple[str, str], action: StartAttempt, result: AttemptResult
    ) -> AttemptResult:
        """A model call's request and reply as the attempt's artifacts in the bucket (the run
        holds the finalizer from before the call, so they go when it goes)."""
        assert result.exchange is not None
        namespace, run = key
        prefix = attempt_prefix(self.settings.repository.prefix, namespace, run, action.name)
        try:
            kept = await asyncio.to_thread(keep_exchange, self._store(), prefix, result.exchange)
        except ArtifactError as exc:
            log.warning("Cannot keep a model call's exchange", attempt=action.name, error=str(exc))
            return replace(result, exchange=None)
        return replace(result, exchange=None, artifacts=kept)

    async def hold(self, run: dict[str, Any]) -> None:
        """Make sure the run keeps its finalizer; ``run`` then carries the new
        resourceVersion, so the status write that follows does not conflict."""
        meta = run["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER in finalizers:
            return
        finalizers.append(FINALIZER)
        version = await self.cluster.set_run_finalizers(
            meta["namespace"], meta["name"], finalizers, meta["resourceVersion"]
        )
        if version is not None:
            meta["finalizers"], meta["resourceVersion"] = finalizers, version

    async def release(self, run: dict[str, Any]) -> float | None:
        """A deleted run: delete its objects, then its finalizer. Seconds until the next try
        when deleting failed."""
        meta = run["metadata"]
        prefix = self.settings.run_prefix(meta["namespace"], meta["name"])
        try:
            count = await asyncio.to_thread(self._store().delete_prefix, prefix)
        except ArtifactError as exc:
            log.warning(
                "Cannot delete the artifacts of a deleted run; retrying",
                namespace=meta["namespace"],
                run=meta["name"],
                error=str(exc),
            )
            return RETRY_SECONDS
        left = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
        if (
            await self.cluster.set_run_finalizers(
                meta["namespace"], meta["name"], left, meta["resourceVersion"]
            )
            is not None
        ):
            log.info(
                "Deleted the artifacts of a deleted run",
                namespace=meta["namespace"],
                run=meta["name"],
                objects=count,
                prefix=prefix,
            )
        return None

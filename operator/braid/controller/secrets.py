"""Secrets and ConfigMaps a run's steps read, in the run's own namespace only: checked before a
step Pod is created (a missing one fails the attempt at once, instead of a Pod that waits in
CreateContainerConfigError until its timeout), read for webhook calls, and read again to mask
their values in what an attempt returns.

The operator reads Secrets only when its RBAC allows it (the chart's ``secrets.read``). Without
it, Pods still get their Secrets from the kubelet, but the operator cannot check or mask them,
and a webhook that needs one fails, saying so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from braid.api.workflow import KeySelector
from braid.engine import AttemptResult, ContainerRequest, StartAttempt
from braid.engine.masking import Masker
from braid.kube.client import Cluster, DataKind, ForbiddenError
from braid.kube.pods import secret_refs
from braid.webhook import SecretReader, SecretUnavailableError

log = structlog.get_logger("braid.controller")

GRANT = "the operator may not read Secrets here: install the chart with secrets.read=true"


@dataclass
class SecretAccess:
    cluster: Cluster

    def reader(self, namespace: str) -> SecretReader:
        """Reads one Secret key for a webhook call of a run in ``namespace``."""

        async def read(ref: KeySelector) -> str | None:
            try:
                data = await self.cluster.read_data("Secret", namespace, ref.name)
            except ForbiddenError:
                raise SecretUnavailableError(f"Secret {ref.name!r}: {GRANT}") from None
            if data is None:
                if ref.optional:
                    return None
                raise SecretUnavailableError(f"Secret {ref.name!r} not found in {namespace}")
            return data.get(ref.key)

        return read

    async def missing(self, action: StartAttempt, namespace: str) -> str | None:
        """What a step Pod reads that does not exist (and is not optional); None when all of
        it does, or when the operator may not look."""
        if action.container is None:
            return None
        for kind, name, key, where in references(action.container):
            try:
                data = await self.cluster.read_data(kind, namespace, name)
            except ForbiddenError:
                return None  # cannot tell: the kubelet will
            if data is None:
                return f"{kind} {name!r} ({where}) not found in namespace {namespace}"
            if key is not None and key not in data:
                return f"{kind} {name!r} ({where}) has no key {key!r}"
        return None

    async def mask(
        self, namespace: str, results: list[AttemptResult], pods: Any
    ) -> list[AttemptResult]:
        """Results of step Pods with the values of the Secrets they read masked. ``pods``:
        looks an attempt's pod up by name."""
        out = []
        for result in results:
            pod = pods(result.name)
            refs = (pod.get("secrets") if "secrets" in pod else secret_refs(pod)) if pod else None
            masker = Masker.of(await self._values(namespace, refs)) if refs else Masker()
            out.append(masker.result(result))
        return out

    async def _values(self, namespace: str, refs: Iterable[tuple[str, str | None]]) -> list[str]:
        values: list[str] = []
        read: dict[str, dict[str, str] | None] = {}
        for name, key in refs:
            if name not in read:
                try:
                    read[name] = await self.cluster.read_data("Secret", namespace, name)
                except ForbiddenError:
                    log.warning("Cannot mask a step's Secret values", secret=name, why=GRANT)
                    read[name] = None
            data = read[name] or {}
            values += [data[key]] if key is not None and key in data else []
            values += list(data.values()) if key is None else []
        return values


def references(container: ContainerRequest) -> list[tuple[DataKind, str, str | None, str]]:
    """(kind, name, key or None for all, where) of what a container must find to start."""
    out: list[tuple[DataKind, str, str | None, str]] = []
    for env in container.env_refs:
        source = env.value_from
        if source is None:
            continue
        if source.secret_key_ref is not None and not source.secret_key_ref.optional:
            out.append(
                ("Secret", source.secret_key_ref.name, source.secret_key_ref.key, f"env {env.name}")
            )
        ref = source.config_map_key_ref
        if ref is not None and not ref.optional:
            out.append(("ConfigMap", ref.name, ref.key, f"env {env.name}"))
    for whole in container.env_from:
        if whole.secret_ref is not None and not whole.secret_ref.optional:
            out.append(("Secret", whole.secret_ref.name, None, "envFrom"))
        if whole.config_map_ref is not None and not whole.config_map_ref.optional:
            out.append(("ConfigMap", whole.config_map_ref.name, None, "envFrom"))
    return out

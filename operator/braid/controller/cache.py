"""The operator's cache of successes (``cache`` on steps): a ConfigMap ``braid-cache`` per
namespace, like Argo's memoization, so entries survive operator restarts, stay in the
namespace of the runs that made them (a run never reuses another namespace's outputs), and
are bounded by what one object may hold. Read into memory on a namespace's first cached step
(and again after REFRESH_SECONDS, to see what other replicas wrote); each success is one merge
patch, which also drops the oldest entries past MAX_BYTES.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog

from braid.engine import caching
from braid.engine.actions import CacheEntry
from braid.kube.client import Cluster, ForbiddenError

log = structlog.get_logger()

CONFIGMAP = "braid-cache"
LABELS = {"app.kubernetes.io/part-of": "braid", "braid.dev/cache": "true"}
# A ConfigMap holds at most 1 MiB; an entry is at most ~4 KiB of outputs plus artifact refs.
MAX_BYTES = 768 * 1024
REFRESH_SECONDS = 60.0


@dataclass
class _Namespace:
    entries: dict[str, CacheEntry] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    read_at: float = 0.0


@dataclass
class ClusterCache:
    cluster: Cluster
    namespaces: dict[str, _Namespace] = field(default_factory=dict)
    clock: object = time.monotonic

    async def view(self, namespace: str) -> Mapping[str, CacheEntry]:
        """The namespace's entries (read from its ConfigMap when stale)."""
        ns = self.namespaces.setdefault(namespace, _Namespace())
        now = self.clock()  # type: ignore[operator]
        if not ns.read_at or now - ns.read_at > REFRESH_SECONDS:
            ns.read_at = now
            try:
                data = await self.cluster.read_data("ConfigMap", namespace, CONFIGMAP) or {}
            except ForbiddenError as exc:
                log.warning("Cannot read the step cache; cached steps run", error=str(exc))
                data = {}
            for key, text in data.items():
                try:
                    entry = caching.from_wire(json.loads(text))
                except ValueError:
                    entry = None
                if entry is not None and entry.key == key:
                    ns.entries[key], ns.sizes[key] = entry, len(text)
        return ns.entries

    async def put(self, namespace: str, entry: CacheEntry) -> None:
        """Keep a success; the oldest entries go when the ConfigMap would grow too large."""
        ns = self.namespaces.setdefault(namespace, _Namespace())
        text = json.dumps(caching.wire(entry), separators=(",", ":"))
        ns.entries[entry.key], ns.sizes[entry.key] = entry, len(text)
        patch: dict[str, str | None] = {entry.key: text}
        for old in sorted(ns.entries.values(), key=lambda e: e.time):
            if sum(ns.sizes.values()) <= MAX_BYTES or old.key == entry.key:
                break
            del ns.entries[old.key]
            ns.sizes.pop(old.key, None)
            patch[old.key] = None
        try:
            await self.cluster.patch_config_map(namespace, CONFIGMAP, patch, LABELS)
        except Exception as exc:  # noqa: BLE001 - a cache that cannot be written only costs reruns
            log.warning("Cannot write the step cache", namespace=namespace, error=str(exc))

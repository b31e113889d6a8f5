"""Memoization (``cache`` on a step): the key a task's attempt is cached by, whether an entry
may be reused, and the entry a success leaves. Pure: the driver owns the store (a ConfigMap
per namespace in a cluster, a directory locally) and hands the engine a read-only view.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from braid.api.run import Artifact
from braid.engine.actions import CacheEntry, StoreCache
from braid.engine.plan import CachePlan
from braid.expressions import Expression, ExpressionError

DIGEST_CHARS = 40  # of sha256 hex: a ConfigMap key, a file name


def key_of(plan: CachePlan, context: Callable[[Expression], dict[str, Any]]) -> str:
    """The digest of the key's value (any JSON, canonical); raises ExpressionError."""
    value = plan.key.evaluate(context(plan.key))
    if value is None:
        raise ExpressionError(plan.key.path, plan.key.source, "gives null, not a cache key")
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_CHARS]


def reusable(
    plan: CachePlan, entries: Mapping[str, CacheEntry] | None, key: str, now: datetime
) -> CacheEntry | None:
    entry = entries.get(key) if entries is not None else None
    if entry is None:
        return None
    age = plan.spec.max_age_seconds
    if age is not None and entry.time + timedelta(seconds=age) < now:
        return None
    return entry


def hit_message(entry: CacheEntry) -> str:
    return f"cached: the outputs of {entry.step} in run {entry.run} at {entry.time.isoformat()}"


def store(
    key: str,
    outputs: dict[str, Any],
    artifacts: dict[str, Artifact] | None,
    run: str,
    step: str,
    now: datetime,
) -> StoreCache:
    return StoreCache(CacheEntry(key, outputs, artifacts, run, step, now))


def wire(entry: CacheEntry) -> dict[str, Any]:
    """An entry as JSON, as the drivers store it."""
    return {
        "key": entry.key,
        "outputs": entry.outputs,
        "artifacts": {k: a.wire() for k, a in (entry.artifacts or {}).items()} or None,
        "run": entry.run,
        "step": entry.step,
        "time": entry.time.isoformat(),
    }


def from_wire(doc: Any) -> CacheEntry | None:
    """An entry read back; None when it is not one (a store someone edited is a miss)."""
    try:
        artifacts = {k: Artifact.model_validate(a) for k, a in (doc.get("artifacts") or {}).items()}
        outputs = doc["outputs"]
        if not isinstance(outputs, dict):
            return None
        return CacheEntry(
            str(doc["key"]),
            outputs,
            artifacts or None,
            str(doc["run"]),
            str(doc["step"]),
            datetime.fromisoformat(doc["time"]),
        )
    except (AttributeError, KeyError, TypeError, ValueError):
        return None

"""Storing what an attempt wrote and fetching what it reads, with any Store."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from braid.api.run import Artifact
from braid.artifacts.files import ArtifactError, collect, inside, sha256_of
from braid.artifacts.store import Store
from braid.engine.actions import InputArtifact

Fetch = Callable[[str, Path], None]


def upload(
    store: Store, root: Path, key_prefix: str, max_bytes: int, max_files: int
) -> dict[str, Artifact]:
    """Every file under ``root`` stored under ``key_prefix``; ArtifactsTooLargeError before
    anything is stored when they pass the limits."""
    out: dict[str, Artifact] = {}
    for found in collect(root, max_bytes, max_files):
        sha = sha256_of(found.path)
        uri = store.put(key_prefix + found.name, found.path)
        out[found.name] = Artifact(size=found.size, sha256=sha, uri=uri)
    return out


def download(fetch: Fetch, inputs: Iterable[InputArtifact], root: Path) -> None:
    """Each input into ``root/<path>``, its sha256 checked when the reference has one."""
    root.mkdir(parents=True, exist_ok=True)
    for item in inputs:
        target = inside(root, item.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fetch(item.uri, target)
        if item.sha256 and sha256_of(target) != item.sha256:
            raise ArtifactError(
                f"input {item.path}: {item.uri[:200]} is not what its step wrote (sha256 differs)"
            )


def keep_exchange(store: Store, key_prefix: str, exchange: tuple[Any, Any]) -> dict[str, Artifact]:
    """A model call's request body and reply (already masked) as the attempt's artifacts
    ``request.json`` and ``response.json``: for audit, and for replies too long for outputs."""
    out: dict[str, Artifact] = {}
    with tempfile.TemporaryDirectory(prefix="braid-exchange-") as tmp:
        for name, value in zip(("request.json", "response.json"), exchange, strict=True):
            path = Path(tmp) / name
            path.write_text(json.dumps(value, indent=1, default=str))
            out[name] = Artifact(
                size=path.stat().st_size,
                sha256=sha256_of(path),
                uri=store.put(key_prefix + name, path),
            )
    return out

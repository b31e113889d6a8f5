"""The local cache of successes (``cache`` on steps): one JSON file per key under a directory
(default .braid/cache), kept across runs, at most MAX_ENTRIES (the oldest go first)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

from braid.engine import caching
from braid.engine.actions import CacheEntry

DEFAULT_DIR = Path(".braid/cache")
MAX_ENTRIES = 1000


class LocalCache(Mapping[str, CacheEntry]):
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def __getitem__(self, key: str) -> CacheEntry:
        if not key.isalnum():
            raise KeyError(key)
        try:
            entry = caching.from_wire(json.loads(self._path(key).read_text()))
        except (OSError, ValueError):
            entry = None
        if entry is None:
            raise KeyError(key)
        return entry

    def __iter__(self) -> Iterator[str]:
        return (p.stem for p in self.directory.glob("*.json"))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def put(self, entry: CacheEntry) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self._path(entry.key).with_suffix(".tmp")
        partial.write_text(json.dumps(caching.wire(entry)))
        partial.replace(self._path(entry.key))
        files = sorted(self.directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for old in files[: max(0, len(files) - MAX_ENTRIES)]:
            old.unlink(missing_ok=True)

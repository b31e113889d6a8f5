"""A fan-out's items from an artifact holding a JSON list (fanOut.itemsFrom): fetched by the
driver when the engine asks (LoadItems), checked, and handed back parsed; never stored in
the run."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from braid.api.manifests import too_deep
from braid.artifacts.files import ArtifactError, sha256_of

MAX_LIST_BYTES = 16 << 20

Fetch = Callable[[str, Path], None]


def read_item_list(fetch: Fetch, uri: str, sha256: str | None) -> list[Any] | str:
    """The list, or why it cannot be had (for the step's failure message)."""
    return read_sized(fetch, uri, sha256)[0]


def read_sized(  # noqa: PLR0911 - one return per way the list is refused
    fetch: Fetch, uri: str, sha256: str | None
) -> tuple[list[Any] | str, int]:
    """The list (or why not) and the bytes of its JSON, which a driver's memory is held to."""
    with tempfile.TemporaryDirectory(prefix="braid-items-") as tmp:
        path = Path(tmp) / "items.json"
        try:
            fetch(uri, path)
        except (ArtifactError, OSError) as exc:
            return f"cannot read the items: {exc}", 0
        if sha256 and sha256_of(path) != sha256:
            return f"{uri[:200]} is not what its step wrote (sha256 differs)", 0
        size = path.stat().st_size
        if size > MAX_LIST_BYTES:
            return f"the item list is larger than {MAX_LIST_BYTES >> 20} MiB", 0
        try:
            items = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            return f"the item list is not JSON: {exc}"[:300], 0
    if not isinstance(items, list):
        return f"the artifact holds a JSON {type(items).__name__}, not a list", 0
    if too_deep(items, 64):
        return "the item list is nested deeper than 64 levels", 0
    return items, size

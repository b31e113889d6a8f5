"""The engine reads no clock and no randomness: time and jitter are inputs.

(Imports of I/O modules are forbidden by import-linter; this catches what imports cannot.)
"""

from __future__ import annotations
import __future__

import re
import types
from pathlib import Path

import pytest

import braid.api
import braid.engine
import braid.local

ENGINE = Path(braid.engine.__file__).parent
FORBIDDEN = re.compile(
    r"\b(datetime\.now|datetime\.utcnow|date\.today|time\.time|monotonic|random\.|uuid4|open\()"
)


def test_engine_source_reads_no_clock_randomness_or_files():
    offenders = [
        f"{path.name}:{n}: {line.strip()}"
        for path in sorted(ENGINE.glob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if FORBIDDEN.search(line)
    ]
    assert offenders == []


@pytest.mark.parametrize("module", [braid.api, braid.engine, braid.local], ids=str)
def test_public_surface_is_exactly_what_all_says(module: types.ModuleType) -> None:
    """As httpx does: every public name a package has is in __all__, and nothing else is
    (submodules are reached by their own names)."""
    public = [
        name
        for name in dir(module)
        if not name.startswith("_")
        and not isinstance(getattr(module, name), types.ModuleType | __future__._Feature)
    ]
    assert public == sorted(module.__all__)

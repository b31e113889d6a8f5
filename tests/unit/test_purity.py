"""The engine reads no clock and no randomness: time and jitter are inputs.

(Imports of I/O modules are forbidden by import-linter; this catches what imports cannot.)
"""

from __future__ import annotations

import re
from pathlib import Path

import braid.api
import braid.engine

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


def test_public_surface_is_curated():
    for module in (braid.api, braid.engine):
        assert len(set(module.__all__)) == len(module.__all__), "duplicate exports"
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name} is exported but missing"

"""Where benchmarks write: a marked section of bench/README.md, replaced in place."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).with_name("README.md")


def write_results(marker: str, text: str) -> None:
    """Replace what stands between ``<!-- marker:begin -->`` and ``<!-- marker:end -->``."""
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    readme = README.read_text()
    if begin not in readme:
        raise SystemExit(f"{README} has no {begin} section to write into")
    head, _, rest = readme.partition(begin)
    _, _, tail = rest.partition(end)
    README.write_text(f"{head}{begin}\n{text}\n{end}{tail}")

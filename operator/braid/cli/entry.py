"""The `braid` and `kubectl braid` commands. `braid operator ...` loads only the operator's
command: the rest of the CLI (the local runner and its HTTP client, the terminal views, the
test runner) is ~75 modules and 0.05-0.1 s of CPU that every operator start paid for and
never used (bench/README.md, "Passing the peers"). Anything else loads the whole CLI."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["operator"]:
        structlog_without_rich()
        from braid.cli.operator import run_alone  # noqa: PLC0415 - the point of this module

        run_alone(sys.argv[2:])
    else:
        from braid.cli.main import app  # noqa: PLC0415

        app()


def structlog_without_rich() -> None:
    """Load structlog as if rich were not installed. At import it loads rich (and pygments)
    for pretty tracebacks in console output: ~95 modules and ~0.05 s of CPU at every operator
    start, for logs that are JSON in a pod, and plain lines (plain tracebacks) on a terminal.
    rich stays importable: typer still loads it for `--help` and errors when asked."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment] # an import of it fails meanwhile
    try:
        import structlog  # noqa: F401, PLC0415
    finally:
        del sys.modules["rich"]

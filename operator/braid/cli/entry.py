"""The `braid` and `kubectl braid` commands. `braid operator ...` loads only the operator's
command: the rest of the CLI (the local runner and its HTTP client, the terminal views, the
test runner) is ~75 modules and 0.05-0.1 s of CPU that every operator start paid for and
never used (bench/README.md, "Passing the peers"). Anything else loads the whole CLI."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["operator"]:
        from braid.cli.operator import run_alone  # noqa: PLC0415 - the point of this module

        run_alone(sys.argv[2:])
    else:
        from braid.cli.main import app  # noqa: PLC0415

        app()

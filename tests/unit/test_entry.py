"""The `braid` command's entry point: `braid operator` starts without the rest of the CLI
(every operator start pays for what it loads), anything else gets the whole CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from braid import __version__

PROBE = """
import sys
sys.argv = ["braid", *sys.argv[1:]]
from braid.cli.entry import main
try:
    main()
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
loaded = ("braid.cli.main", "braid.local", "braid.cli.live", "httpx")
print(sorted(m for m in loaded if m in sys.modules))
"""


def braid(*args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip().splitlines()


def test_the_operator_command_loads_neither_the_rest_of_the_cli_nor_its_http_client():
    out = braid("operator", "--help")
    assert any("Usage: braid operator [OPTIONS]" in line for line in out)
    assert any("--peering" in line for line in out)
    assert out[-1] == "[]"


def test_every_other_command_gets_the_whole_cli():
    out = braid("--version")
    assert out[0] == __version__
    assert out[-1] != "[]"
    assert "braid.cli.main" in out[-1]
    out = braid("lint", "--help")
    assert any("Usage: braid lint" in line for line in out)


def test_the_operator_itself_loads_neither_kopf_nor_rich(tmp_path: Path):
    """All the way to its start (which fails here: nothing listens on the port)."""
    config = {
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c"}}],
        "current-context": "x",
    }
    (tmp_path / "config").write_text(json.dumps(config))
    probe = PROBE.replace("(0, None)", "(1,)").replace(
        '"httpx")', '"httpx", "kopf", "rich", "pygments")'
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, "operator", "--metrics-port=0", "--log-format=json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "KUBECONFIG": str(tmp_path / "config")},
    )
    assert "Cannot start" in done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"

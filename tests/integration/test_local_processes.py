"""The local runner stops what it starts: a step that ignores SIGTERM is killed after the
grace period, what it left running goes with it, and its retry never overlaps it."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from braid.api.run import RunPhase
from braid.api.workflow import WorkflowSpec
from braid.local.runner import LocalRun

# Ignores SIGTERM, leaves a grandchild behind, records its pid, and says whether the previous
# attempt of its step was still alive when it started.
STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
d, n = sys.argv[1], int(os.environ["BRAID_ATTEMPT"])
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
open(f"{d}/child-{n}", "w").write(str(child.pid))
if n > 1:
    previous = int(open(f"{d}/pid-{n - 1}").read())
    try:
        os.kill(previous, 0)
        open(f"{d}/overlap", "w").write(str(previous))
    except ProcessLookupError:
        pass
open(f"{d}/pid-{n}", "w").write(str(os.getpid()))
time.sleep(120)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose; its parent (the runner) reaps it.
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split()[2] == "Z")


def test_a_step_that_ignores_sigterm_is_killed_and_its_retry_waits_for_it(tmp_path: Path):
    script = tmp_path / "stubborn.py"
    script.write_text(STUBBORN)
    spec = WorkflowSpec.model_validate(
        {
            "steps": [
                {
                    "name": "stubborn",
                    "timeoutSeconds": 2,
                    "retry": {"limit": 1, "backoff": {"initialDelaySeconds": 0, "jitter": 0}},
                    "container": {
                        "image": "python",
                        "command": [sys.executable, str(script), str(tmp_path)],
                    },
                }
            ]
        }
    )
    run = LocalRun("stubborn", spec, {}, workdir=tmp_path / "work", grace_seconds=0.5)
    status = asyncio.run(run.execute())
    assert status.phase == RunPhase.FAILED
    step = status.steps[0]
    assert (step.attempts, step.reason) == (2, "TimedOut")
    assert not (tmp_path / "overlap").exists(), "the retry started while attempt 1 still ran"
    pids = [
        int((tmp_path / f"{kind}-{n}").read_text()) for kind in ("pid", "child") for n in (1, 2)
    ]
    assert not [p for p in pids if alive(p)], "a process outlived `braid run`"

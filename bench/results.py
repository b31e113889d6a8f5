"""What the benchmarks share: where they write (a marked section of bench/README.md, replaced in
place), kubectl, and an operator process's CPU and peak RSS."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

README = Path(__file__).with_name("README.md")
ROOT = Path(__file__).resolve().parents[1]


def write_results(marker: str, text: str) -> None:
    """Replace what stands between ``<!-- marker:begin -->`` and ``<!-- marker:end -->``."""
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    readme = README.read_text()
    if begin not in readme:
        raise SystemExit(f"{README} has no {begin} section to write into")
    head, _, rest = readme.partition(begin)
    _, _, tail = rest.partition(end)
    README.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def compile_braid() -> None:
    """Braid's byte code, compiled once into its ``__pycache__`` directories, as the image is
    (the Dockerfile compiles at build time). Without it an environment with
    PYTHONDONTWRITEBYTECODE (this machine's) compiles every module at every operator start:
    ~0.2 s CPU that no installed operator spends. Up-to-date files are skipped."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", str(ROOT / "operator" / "braid")],
        check=True,
        timeout=300,
    )


def operator_command(namespace: str, *extra: str) -> list[str]:
    """`braid operator` on one namespace as the benches start it: JSON logs, no metrics port,
    byte code compiled as in the image."""
    compile_braid()
    return [
        sys.executable,
        "-m",
        "braid.cli",
        "operator",
        "-n",
        namespace,
        "--log-format",
        "json",
        "--metrics-port",
        "0",
        *extra,
    ]


def kubectl(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        ["kubectl", *args], input=stdin, capture_output=True, text=True, check=True, timeout=120
    ).stdout


def proc_stats(pid: int) -> tuple[float, int]:
    """CPU seconds used and peak RSS bytes of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            rss = int(line.split()[1]) * 1024
    return cpu, rss


def wait_succeeded(namespace: str, runs: int, log: Path, timeout: float = 900) -> None:
    """Until every run in ``namespace`` has succeeded; SystemExit naming the operator's log
    when one fails or time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        phases = kubectl(
            "-n", namespace, "get", "workflowruns", "-o", "jsonpath={.items[*].status.phase}"
        ).split()
        if phases.count("Succeeded") == runs:
            return
        if "Failed" in phases:
            raise SystemExit(f"a run failed; see {log}")
        time.sleep(0.5)
    raise SystemExit(f"timed out; see {log}")

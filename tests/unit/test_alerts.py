"""The shipped alert rules and dashboard: promtool checks and unit-tests every alert, and every
metric they use is one the operator exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from braid.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts" / "braid" / "files" / "prometheus-rules.yaml"
DASHBOARD = ROOT / "charts" / "braid" / "files" / "grafana" / "braid-dashboard.json"


@pytest.fixture(scope="module")
def promtool() -> str:
    built = subprocess.run(
        ["bash", str(ROOT / "tests" / "cluster" / "build.sh"), "promtool"],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    return built.stdout.strip().splitlines()[-1]


def test_promtool_checks_and_unit_tests_the_rules(promtool: str, tmp_path: Path) -> None:
    shutil.copy(RULES, tmp_path / "rules.yaml")
    shutil.copy(ROOT / "tests" / "prometheus" / "rules_test.yaml", tmp_path)
    check = subprocess.run(
        [promtool, "check", "rules", "rules.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 6 rules found" in check.stdout
    test = subprocess.run(
        [promtool, "test", "rules", "rules_test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert test.returncode == 0, test.stdout + test.stderr


def exported() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        for s in family.samples:
            names.add(s.name)
        names.add(family.name)
        names.update(
            {
                f"{family.name}_total",
                f"{family.name}_bucket",
                f"{family.name}_count",
                f"{family.name}_sum",
            }
        )
    return names | {"braid_api_requests_total", "up"}


def metrics_in(text: str) -> set[str]:
    return set(re.findall(r"\b(braid_[a-z_]+|up)\b(?=\s*[{\[(])", text))


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    rules = metrics_in(RULES.read_text())
    dashboard = json.loads(DASHBOARD.read_text())
    queries = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    used = rules | metrics_in(queries)
    assert {
        "braid_sla_breaches_total",
        "braid_runs_finished_total",
        "braid_approvals_pending",
    } <= used
    assert used - exported() == set()
    titles = [p["title"] for p in dashboard["panels"]]
    assert any("p50 / p95" in t for t in titles)
    assert any("SLA" in t for t in titles)
    assert any("Approvals" in t for t in titles)
    assert any("failures" in t for t in titles)

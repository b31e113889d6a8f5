"""Helpers for the Helm chart's tests: helm (built from the Go module proxy) and rendering."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "braid"
BUILD = ROOT / "tests" / "cluster" / "build.sh"


@functools.cache
def built(what: str) -> str:
    """The path `tests/cluster/build.sh WHAT` prints (building it first when missing)."""
    result = subprocess.run(
        ["bash", str(BUILD), what], capture_output=True, text=True, check=True, timeout=1800
    )
    return result.stdout.strip().splitlines()[-1]


def helm(*args: str, check: bool = True, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [built("helm"), *args], capture_output=True, text=True, check=False, env=env, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout + result.stderr


def sets(values: dict[str, str]) -> list[str]:
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def render(
    values: dict[str, str] | None = None,
    *,
    namespace: str = "braid-system",
    release: str = "braid",
    extra: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """The chart's manifests (templates and, with --include-crds, crds/) as objects."""
    text = helm(
        "template", release, str(CHART), "--namespace", namespace, *sets(values or {}), *extra
    )
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def operator_rules(docs: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) granted to the operator by the chart's Role/ClusterRole."""
    granted = set()
    for doc in docs:
        if doc["kind"] in ("Role", "ClusterRole") and doc["metadata"]["name"].endswith(
            ("-operator", "-approval-policy-reader")
        ):
            for rule in doc["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            granted.add((group, resource, verb))
    return granted

"""The CRDs are generated from the models, structural, current, and their CEL rules compile."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cel
import pytest
import yaml

from braid.api.crd import iter_validations, render_crds

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("directory", ["crds", "charts/braid/files/crds"])
def test_committed_crds_are_current(directory):
    result = subprocess.run(
        [sys.executable, "-m", "braid.cli", "crds", "--check", "--dir", str(ROOT / directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_check_fails_on_a_stale_crd(tmp_path):
    for name, text in render_crds().items():
        (tmp_path / name).write_text(text)
    victim = next(tmp_path.iterdir())
    victim.write_text(victim.read_text().replace("Succeeded", "Done"))
    result = subprocess.run(
        [sys.executable, "-m", "braid.cli", "crds", "--check", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert f"stale: {victim}" in result.stderr.replace("\n", "")


def _walk(node, path="$"):
    yield path, node
    if isinstance(node, dict):
        for key in ("properties",):
            for name, sub in node.get(key, {}).items():
                yield from _walk(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            yield from _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from _walk(node["additionalProperties"], f"{path}{{}}")


CRDS = {name: yaml.safe_load(text) for name, text in render_crds().items()}


@pytest.mark.parametrize("name", sorted(CRDS))
def test_schema_is_structural(name):
    schema = CRDS[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    forbidden = {"$ref", "anyOf", "oneOf", "allOf", "$defs", "title", "const"}
    for path, node in _walk(schema):
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        assert not forbidden & set(node), (path, forbidden & set(node))
        if (
            path != "$.metadata"
            and node.get("type") == "object"
            and "properties" not in node
            and "additionalProperties" not in node
        ):
            assert node.get("x-kubernetes-preserve-unknown-fields"), path


@pytest.mark.parametrize("name", sorted(CRDS))
def test_every_field_is_documented_for_kubectl_explain(name):
    spec = CRDS[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    undocumented = [
        p
        for p, node in _walk(spec)
        if not p.endswith("[]") and not p.endswith("}") and p != "$" and not node.get("description")
    ]
    assert undocumented == []


def test_cel_rules_compile():
    rules = [
        r
        for crd in CRDS.values()
        for _, r in iter_validations(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    ]
    assert len(rules) >= 10
    for rule in rules:
        cel.compile(rule["rule"])  # raises on a syntax error
        assert rule["message"]


def test_names_printer_columns_and_categories():
    run = CRDS["workflowruns.braid.dev.yaml"]["spec"]
    assert run["names"]["shortNames"] == ["bwr", "braidrun"]
    assert "wf" not in CRDS["workflows.braid.dev.yaml"]["spec"]["names"]["shortNames"]
    assert run["names"]["categories"] == ["braid"]
    columns = [c["name"] for c in run["versions"][0]["additionalPrinterColumns"]]
    assert columns[:6] == ["Workflow", "Succeeded", "Reason", "Progress", "Start", "Duration"]
    assert run["versions"][0]["subresources"] == {"status": {}}
    steps = CRDS["workflows.braid.dev.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"
    ]["spec"]["properties"]["steps"]
    assert steps["x-kubernetes-list-type"] == "map"
    assert steps["x-kubernetes-list-map-keys"] == ["name"]


def test_the_crds_fit_an_object_in_etcd_with_room_to_grow():
    """etcd stores at most 1.5 MiB per object; the CRDs are installed server-side (a
    client-side apply's last-applied annotation would cap them at 256 KiB)."""
    for name, text in render_crds().items():
        compact = len(json.dumps(yaml.safe_load(text), separators=(",", ":")))
        assert compact < 768 * 1024, (name, compact)

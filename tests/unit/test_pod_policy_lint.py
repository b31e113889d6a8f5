"""`braid lint` refuses podTemplates that would let a run escape its namespace or the
restricted Pod Security Standard, naming the field, unless told the operator admits them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

WORKFLOW = """
apiVersion: braid.dev/v1alpha1
kind: Workflow
metadata: {{name: escape}}
spec:
  steps:
    - name: a
      container:
        image: busybox
        podTemplate:
{template}
"""

CASES = {
    "namespace": (
        "metadata: {namespace: kube-system}",
        "spec.steps[0].container.podTemplate.metadata.namespace: is set by Braid",
    ),
    "hostPath": (
        "spec: {volumes: [{name: root, hostPath: {path: /}}]}",
        (
            "spec.steps[0].container.podTemplate.spec.volumes[0].hostPath: not allowed at the "
            "restricted Pod Security level (a hostPath volume)"
        ),
    ),
    "privileged": (
        "spec: {containers: [{securityContext: {privileged: true}}]}",
        (
            "spec.steps[0].container.podTemplate.spec.containers[0].securityContext.privileged:"
            " not allowed at the restricted Pod Security level (a privileged container)"
        ),
    ),
}


def lint(tmp_path: Path, template: str, *flags: str) -> subprocess.CompletedProcess[str]:
    manifest = tmp_path / "wf.yaml"
    manifest.write_text(WORKFLOW.format(template=textwrap.indent(template, " " * 10)))
    return subprocess.run(
        [sys.executable, "-m", "braid.cli", "lint", str(manifest), *flags],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_lint_refuses_the_escape_naming_the_field(tmp_path: Path, case: str) -> None:
    template, expected = CASES[case]
    result = lint(tmp_path, template)
    assert result.returncode == 1, result.stderr
    assert expected in " ".join(result.stderr.split()), result.stderr


@pytest.mark.parametrize("case", ["hostPath", "privileged"])
def test_lint_admits_what_a_privileged_operator_admits(tmp_path: Path, case: str) -> None:
    result = lint(tmp_path, CASES[case][0], "--pod-security=privileged")
    assert result.returncode == 0, result.stderr


def test_a_namespace_is_refused_at_every_level(tmp_path: Path) -> None:
    result = lint(tmp_path, CASES["namespace"][0], "--pod-security=privileged")
    assert result.returncode == 1
    assert "metadata.namespace: is set by Braid" in result.stderr

"""Lint catches what would fail later: a step reading itself, attributes a step does not have,
unguarded reads of a step that may be skipped (a warning), manifests without apiVersion or
kind, and names the API server would refuse."""

from __future__ import annotations

import textwrap

import pytest
from typer.testing import CliRunner

from braid.api.errors import InvalidSpecError
from braid.api.manifests import parse_documents
from braid.cli.main import app
from braid.engine.validate import manifest_warnings, validate_manifests


def lint(text: str) -> tuple[list[str], list[str]]:
    """(errors, warnings)"""
    try:
        manifests = parse_documents(textwrap.dedent(text))
    except InvalidSpecError as exc:
        return [str(e) for e in exc.errors], []
    errors = [str(e) for e in validate_manifests(manifests)]
    return errors, [str(w) for w in manifest_warnings(manifests)] if not errors else []


def wf(steps: str, extra: str = "") -> str:
    return (
        "apiVersion: braid.dev/v1alpha1\nkind: Workflow\nmetadata: {name: w}\nspec:\n"
        + textwrap.indent(textwrap.dedent(extra), "  ")
        + "  steps:\n"
        + textwrap.indent(textwrap.dedent(steps), "    ")
    )


def test_a_step_reading_its_own_outputs_is_a_cycle():
    errors, _ = lint(
        wf("""
        - name: a
          container: {image: x, command: ["echo", "${{ steps.a.outputs.x }}"]}
        """)
    )
    assert errors == [
        (
            "spec.steps[0].container.command[1]: step 'a' reads its own status or outputs in "
            "'steps.a.outputs.x', which do not exist until it has finished (a cycle); read them in "
            "a later step, or in its compensation"
        )
    ]


@pytest.mark.parametrize(
    "field",
    [
        "when: \"steps.a.phase == 'Failed'\"",
        'fanOut: {items: [1], container: {image: x, command: ["${{ steps.a.outputs }}"]}}',
    ],
)
def test_self_reads_in_when_and_fan_out_items(field):
    errors, _ = lint(
        wf(f"- name: a\n  {field}\n" + ("  container: {image: x}\n" if "when" in field else ""))
    )
    assert any("reads its own status or outputs" in e for e in errors)


def test_compensation_may_read_its_own_step_and_loops_read_their_body():
    errors, _ = lint(
        wf("""
        - name: a
          container: {image: x, command: [make]}
          compensation:
            container: {image: x, command: ["undo", "${{ steps.a.outputs.id }}"]}
        - name: l
          loop:
            steps:
              - name: b
                container: {image: x, command: [b]}
            until: steps.b.outputs.done
            maxIterations: 3
        """)
    )
    assert errors == []


def test_attributes_a_step_does_not_have():
    errors, _ = lint(
        wf("""
        - name: a
          container: {image: x, command: [a]}
        - name: b
          when: steps.a.status == 'Succeeded' && steps["a"].output.x == 1
          container: {image: x, command: ["${{ steps.a.exitCode }} ${{ steps.a.reason }}"]}
        """)
    )
    assert errors == [
        (
            "spec.steps[1].when: steps.a.status in "
            "'steps.a.status == \\'Succeeded\\' && steps[\"a\"].output.x == 1': a step has no "
            "'status'; it has artifacts, attempts, exitCode, items, iterations, message, outputs, "
            "phase, reason (outputs.<name> for what it wrote)"
        ),
        (
            "spec.steps[1].when: steps.a.output in "
            "'steps.a.status == \\'Succeeded\\' && steps[\"a\"].output.x == 1': a step has no "
            "'output'; it has artifacts, attempts, exitCode, items, iterations, message, outputs, "
            "phase, reason (outputs.<name> for what it wrote)"
        ),
    ]


def test_a_string_that_looks_like_an_attribute_is_data():
    errors, _ = lint(
        wf("""
        - name: a
          container: {image: x, command: [a]}
        - name: b
          container: {image: x, command: ["${{ 'steps.a.nope' + steps.a.phase }}"]}
        """)
    )
    assert errors == []


def test_unguarded_reads_of_a_step_that_may_be_skipped_warn():
    steps = """
    - name: maybe
      when: params.go
      container: {image: x, command: [m]}
    - name: plain
      dependsOn: [maybe]
      container: {image: x, command: ["${{ steps.maybe.outputs.x }}"]}
    - name: whole-map
      dependsOn: [maybe]
      container: {image: x, command: ["${{ steps.maybe.outputs }}"]}
    - name: tested
      dependsOn: [maybe]
      container: {image: x, command: ["${{ steps.maybe.phase == 'Succeeded' ? steps.maybe.outputs.x : 0 }}"]}
    - name: when-guarded
      dependsOn: [maybe]
      when: steps.maybe.phase == 'Succeeded'
      container: {image: x, command: ["${{ steps.maybe.outputs.x }}"]}
    - name: has-guarded
      dependsOn: [maybe]
      container: {image: x, command: ["${{ has(steps.maybe.outputs.x) ? 1 : 0 }}"]}
    - name: branch
      dependsOn: []
      continueOn: {failed: true}
      container: {image: x, command: [b]}
    - name: after-branch
      dependsOn: [branch]
      container: {image: x, command: ["${{ steps.branch.outputs.y }}"]}
    """
    errors, warnings = lint(wf(steps, "params: [{name: go, default: true}]\n"))
    assert errors == []
    assert [w.split(":")[0] for w in warnings] == [
        "spec.steps[1].container.command[0]",
        "spec.steps[7].container.command[0]",
    ]
    assert "maybe runs only when its `when` holds" in warnings[0]
    assert "branch may fail while the run goes on (continueOn.failed)" in warnings[1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "kind: Workflow\nmetadata: {name: w}\nspec: {steps: [{name: a, container: {image: x}}]}",
            ["apiVersion: must be braid.dev/v1alpha1; it is missing"],
        ),
        (
            "apiVersion: braid.dev/v1alpha1\nmetadata: {name: w}\nspec: {}",
            ["kind: must be Workflow, WorkflowRun or WorkflowSchedule; it is missing"],
        ),
        (
            "apiVersion: braid.dev/v1alpha1\nkind: Workflow\nspec: {steps: [{name: a, container: {image: x}}]}",
            ["metadata.name: required"],
        ),
        (
            "apiVersion: braid.dev/v1alpha1\nkind: WorkflowRun\nmetadata: {}\nspec: {workflowRef: {name: w}}",
            ["metadata.name: required (or metadata.generateName)"],
        ),
        (
            (
                "apiVersion: braid.dev/v1alpha1\nkind: WorkflowRun\nmetadata: {generateName: r-}\n"
                "spec: {workflowRef: {name: w}}"
            ),
            [],
        ),
        (
            (
                "apiVersion: braid.dev/v1alpha1\nkind: Workflow\nmetadata: {name: My_Flow}\n"
                "spec: {steps: [{name: a, container: {image: x}}]}"
            ),
            [
                (
                    "metadata.name: 'My_Flow' is not a valid name: lowercase letters, digits, '-' "
                    "and '.', starting and ending with a letter or digit, at most 253 characters"
                )
            ],
        ),
        (
            "apiVersion: braid.dev/v1alpha1\nkind: WorkflowRun\nmetadata: {name: "
            + "r" * 161
            + "}\n"
            "spec: {workflowRef: {name: w}}",
            [
                (
                    f"metadata.name: '{'r' * 161}' is not a valid name: lowercase letters, digits, "
                    "'-' and '.', starting and ending with a letter or digit, at most 160 characters"
                )
            ],
        ),
    ],
)
def test_manifest_identity(text, expected):
    errors, _ = lint(text)
    assert errors == expected


def test_lint_prints_warnings_and_exits_zero(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(
        wf(
            """
            - name: maybe
              when: params.go
              container: {image: x, command: [m]}
            - name: reads
              container: {image: x, command: ["${{ steps.maybe.outputs.x }}"]}
            """,
            "params: [{name: go, default: true}]\n",
        )
    )
    result = CliRunner().invoke(app, ["lint", str(path)])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output
    assert "1 manifest(s) valid (1 warning(s))" in result.output


def test_templates_in_images_escapes_and_extensions_lint_clean():
    errors, _ = lint(
        wf(
            """
        - name: a
          container:
            image: "ghcr.io/acme/agent:${{ params.tag.lowerAscii() }}"
            command: ["echo", "$${{ not a template }}", "${{ lists.range(3).map(i, i * 2) }}"]
        """,
            "params: [{name: tag, default: V1}]\n",
        )
    )
    assert errors == []


def test_unknown_function_is_an_error_at_lint():
    errors, _ = lint(
        wf(
            """
        - name: a
          container: {image: x, command: ["${{ params.x.toUpper() }}"]}
        """,
            "params: [{name: x, default: a}]\n",
        )
    )
    assert len(errors) == 1
    assert "unknown function 'toUpper'" in errors[0]
    assert errors[0].startswith("spec.steps[0].container.command[0]")

"""Validation names the field path and what would be valid."""

from __future__ import annotations

import textwrap

import pytest

from braid.api.errors import InvalidSpecError
from braid.api.manifests import parse_documents
from braid.engine.validate import validate_manifests


def problems(yaml_text: str) -> list[str]:
    try:
        manifests = parse_documents(textwrap.dedent(yaml_text))
    except InvalidSpecError as exc:
        return [str(e) for e in exc.errors]
    return [str(e) for e in validate_manifests(manifests)]


HEAD = """
apiVersion: braid.dev/v1alpha1
kind: Workflow
metadata: {name: w}
spec:
"""


def wf(body: str) -> str:
    return HEAD + textwrap.indent(textwrap.dedent(body), "  ")


C = "container: {image: x, command: [a]}"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            f"""
            steps:
              - {{name: a, dependsOn: [c], {C}}}
              - {{name: b, dependsOn: [a], {C}}}
              - {{name: c, dependsOn: [b], {C}}}
            """,
            [
                "spec.steps[0].dependsOn: dependency cycle: a -> c -> b -> a; a workflow must be acyclic (use a loop step to repeat work)"
            ],
        ),
        (
            f"""
            steps:
              - {{name: a, {C}}}
              - {{name: b, dependsOn: [a, nope], {C}}}
            """,
            ["spec.steps[1].dependsOn[1]: unknown step 'nope'; must be one of: a, b"],
        ),
        (
            f"""
            steps:
              - {{name: a, {C}}}
              - {{name: a, {C}}}
            """,
            ["spec.steps[1].name: duplicate step name 'a' (also spec.steps[0])"],
        ),
        (
            f"""
            steps:
              - {{name: a, {C}}}
              - {{name: b, when: "steps.a.outputs.x ==", {C}}}
            """,
            [
                "spec.steps[1].when: invalid CEL: 1:21: Syntax error: mismatched input '<EOF>' (in expression 'steps.a.outputs.x ==')"
            ],
        ),
        (
            f"""
            steps:
              - {{name: a, when: '"text" + 1 == 2', {C}}}
            """,
            [
                "spec.steps[0].when: Unsupported operation: string + int. CEL does not coerce between types — both operands must be the same type. Convert explicitly with int(x), uint(x), double(x) or string(x) as appropriate. (in expression '\"text\" + 1 == 2')"
            ],
        ),
        (
            f"""
            steps:
              - {{name: a, dependsOn: [], {C}}}
              - {{name: b, dependsOn: [], when: "steps.a.outputs.ok", {C}}}
            """,
            [
                "spec.steps[1].when: step 'a' is not upstream of step 'b', so its outputs are not available; add it to dependsOn (directly or transitively)"
            ],
        ),
        (
            """
            steps:
              - name: a
                container: {image: x, args: ["${{ item }}"]}
            """,
            [
                "spec.steps[0].container.args[0]: unknown name 'item' in 'item'; in scope here: params, run, steps"
            ],
        ),
        (
            """
            steps:
              - name: a
                container: {image: x, args: ["${{ steps.a.outputs }"]}
            """,
            [
                "spec.steps[0].container.args[0]: unterminated ${{ interpolation; close it with }} (or write $${{ for a literal ${{) (in expression '${{ steps.a.outputs }')"
            ],
        ),
        (
            f"""
            steps:
              - {{name: Bad_Name, {C}}}
            """,
            [
                "spec.steps[0].name: must be a lowercase DNS label: a-z, 0-9 and single '-', starting with a letter and not ending with '-' (e.g. fetch-data)"
            ],
        ),
        (
            """
            steps:
              - {name: a, container: {image: x, comand: [a]}}
            """,
            ['spec.steps[0].container.comand: unknown field (did you mean "command"?)'],
        ),
        (
            f"""
            steps:
              - {{name: a, {C}, approval: {{}}}}
            """,
            [
                "spec.steps[0]: set exactly one of container, webhook, llm, approval, sleep, workflow, fanOut or loop"
            ],
        ),
        (
            """
            steps:
              - {name: a, approval: {approvers: {users: [alice]}, required: 2}}
            """,
            [
                "spec.steps[0].approval: required=2 but only 1 approver(s) are listed, so the gate could never open; lower required or add approvers"
            ],
        ),
        (
            f"""
            params:
              - {{name: n, schema: {{type: integer}}, default: "five"}}
            steps:
              - {{name: a, {C}}}
            """,
            [
                "spec.params[0].default: does not satisfy the param's schema: 'five' is not of type 'integer'"
            ],
        ),
        (
            f"""
            steps:
              - {{name: a, retry: {{limit: -1}}, {C}}}
            """,
            ["spec.steps[0].retry.limit: must be greater than or equal to 0"],
        ),
    ],
)
def test_workflow_errors_name_the_field(body, expected):
    assert problems(wf(body)) == expected


def test_params_are_validated_against_their_schema_with_paths():
    text = (
        wf(
            f"""
        params:
          - {{name: count, schema: {{type: integer, minimum: 1}}}}
          - {{name: tags, schema: {{type: array, items: {{type: string}}}}}}
          - {{name: topic}}
        steps:
          - {{name: a, {C}}}
        """
        )
        + """
---
apiVersion: braid.dev/v1alpha1
kind: WorkflowRun
metadata: {name: r}
spec:
  workflowRef: {name: w}
  params: {count: 0, tags: [ok, 3], colour: red}
"""
    )
    assert problems(text) == [
        "document[1].spec.params.colour: unknown param; declared params: count, tags, topic",
        "document[1].spec.params.count: 0 is less than the minimum of 1 (schema: type=integer, minimum=1)",
        "document[1].spec.params.tags[1]: 3 is not of type 'string' (schema: type=string)",
        "document[1].spec.params.topic: required param is missing",
    ]


def test_a_valid_workflow_has_no_problems():
    assert problems(wf(f"steps:\n  - {{name: a, {C}}}\n")) == []


def test_not_yaml_and_wrong_kind():
    assert problems("a: [")[0].startswith("not valid YAML")
    assert problems("apiVersion: braid.dev/v1alpha1\nkind: Pipeline\n") == [
        "kind: must be Workflow, WorkflowRun or WorkflowSchedule; got 'Pipeline'"
    ]

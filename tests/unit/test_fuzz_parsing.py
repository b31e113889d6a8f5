"""Hypothesis fuzzing of manifest parsing and validation: whatever the input — valid workflows
with one field replaced by garbage, or arbitrary JSON — Braid answers with field errors (or a
valid manifest) and never crashes; and every manifest it accepts, the engine runs to the end."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from braid.api.errors import InvalidSpecError
from braid.api.manifests import parse_documents
from braid.api.workflow import Workflow
from braid.engine.simulate import Outcome, simulate
from braid.engine.validate import validate_manifests
from tests.corpus import base

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
CEL_ISH = st.sampled_from(
    [
        "true",
        "steps.a.outputs.x",
        "params.topic + 1",
        "${{ params.topic }}",
        "}}{{",
        "((",
        "'a' +",
        "size(steps)",
        "[1,2][5]",
    ]
)


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, (*prefix, i))
    return out


def answer(manifest: Any) -> list[str]:
    """Braid's verdict: the problems, or [] when valid. Anything else is a crash."""
    try:
        parsed = parse_documents(json.dumps(manifest))
    except InvalidSpecError as exc:
        return [str(e) for e in exc.errors]
    return [str(e) for e in validate_manifests(parsed)]


@st.composite
def mutated(draw) -> dict[str, Any]:
    manifest = base()
    manifest["spec"]["steps"][1]["when"] = "steps.a.outputs.ok == true"
    manifest["spec"]["steps"][0]["container"]["args"] = ["${{ params.topic }}"]
    target = draw(st.sampled_from(paths(manifest["spec"])[1:]))
    value = draw(JSON_VALUES | CEL_ISH)
    node: Any = manifest["spec"]
    for key in target[:-1]:
        node = node[key]
    node[target[-1]] = value
    return manifest


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_a_valid_workflow_with_one_field_replaced_never_crashes_validation(manifest):
    problems = answer(manifest)
    assert all(isinstance(p, str) and p for p in problems)
    if not problems:
        # Accepted: then it is a real workflow the engine can run to its end.
        spec = Workflow.model_validate(copy.deepcopy(manifest)).spec
        missing: list[str] = []
        try:
            result = simulate(spec, lambda a: Outcome(output=json.dumps({"ok": True})))
        except InvalidSpecError as exc:  # a run without its required params: named, not a crash
            missing = [e.path for e in exc.errors]
        if missing:
            assert all(path.startswith("spec.params") for path in missing)
        else:
            assert result.status.phase.value in ("Succeeded", "Failed")


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["apiVersion", "kind", "metadata", "spec", "status"]), JSON_VALUES
    )
)
def test_arbitrary_json_documents_get_field_errors(document):
    document.setdefault("kind", "Workflow")
    problems = answer(document)
    assert problems
    assert all(isinstance(p, str) for p in problems)

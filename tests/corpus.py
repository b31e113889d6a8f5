"""A corpus of malformed and hostile Workflows: wrong types, cycles, huge strings, expression
injection, deep nesting, invalid CEL, unknown fields, impossible numbers. Each case names the
field path its error must name. Used by tests/unit/test_corpus.py (braid's own validation)
and tests/e2e/test_corpus.py (the API server and the operator)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

C = {"image": "busybox", "command": ["true"]}


def base() -> dict[str, Any]:
    return {
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "hostile"},
        "spec": {
            "params": [{"name": "topic", "default": "cats"}],
            "steps": [
                {"name": "a", "container": copy.deepcopy(C)},
                {"name": "b", "container": copy.deepcopy(C)},
            ],
        },
    }


@dataclass(frozen=True)
class Case:
    id: str
    manifest: dict[str, Any]
    path: str  # the field path the error must name


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"deeper": value}
    return value


def case(id_: str, path: str, edit: Any) -> Case:
    m = base()
    edit(m)
    return Case(id_, m, path)


def step(m: dict[str, Any], i: int = 0) -> dict[str, Any]:
    return m["spec"]["steps"][i]


def _set(target_fn: Any, key: str, value: Any) -> Any:
    return lambda m: target_fn(m).__setitem__(key, value)


S0 = step
SPEC = lambda m: m["spec"]  # noqa: E731


def _replace_steps(steps: list[dict[str, Any]]) -> Any:
    return lambda m: m["spec"].__setitem__("steps", steps)


CASES: list[Case] = [
    # ---- wrong types
    case("steps-not-a-list", "spec.steps", _set(SPEC, "steps", {"a": 1})),
    case("step-name-number", "spec.steps[0].name", _set(S0, "name", 42)),
    case(
        "command-not-list",
        "spec.steps[0].container.command",
        lambda m: S0(m)["container"].__setitem__("command", "rm -rf /"),
    ),
    case(
        "image-number",
        "spec.steps[0].container.image",
        lambda m: S0(m)["container"].__setitem__("image", 7),
    ),
    case("timeout-string", "spec.steps[0].timeoutSeconds", _set(S0, "timeoutSeconds", "soon")),
    case("retry-limit-float", "spec.steps[0].retry.limit", _set(S0, "retry", {"limit": 1.5})),
    case(
        "env-not-list",
        "spec.steps[0].container.env",
        lambda m: S0(m)["container"].__setitem__("env", {"A": "1"}),
    ),
    case("maxparallel-bool", "spec.maxParallel", _set(SPEC, "maxParallel", True)),
    case("params-not-list", "spec.params", _set(SPEC, "params", "topic")),
    case(
        "depends-on-string",
        "spec.steps[1].dependsOn",
        lambda m: step(m, 1).__setitem__("dependsOn", "a"),
    ),
    case("when-number", "spec.steps[0].when", _set(S0, "when", 1)),
    case(
        "fanout-items-object",
        "spec.steps[0].fanOut.items",
        _replace_steps([{"name": "f", "fanOut": {"items": {"a": 1}, "container": C}}]),
    ),
    # ---- structure
    case("no-steps", "spec.steps", _set(SPEC, "steps", [])),
    case(
        "two-kinds", "spec.steps[0]", lambda m: S0(m).__setitem__("webhook", {"url": "https://x"})
    ),
    case("no-kind", "spec.steps[0]", lambda m: S0(m).pop("container")),
    case("duplicate-step", "spec.steps[1].name", _set(lambda m: step(m, 1), "name", "a")),
    case(
        "duplicate-param",
        "spec.params[1].name",
        _set(SPEC, "params", [{"name": "p"}, {"name": "p"}]),
    ),
    case(
        "unknown-dependency",
        "spec.steps[1].dependsOn[0]",
        lambda m: step(m, 1).__setitem__("dependsOn", ["ghost"]),
    ),
    case("self-dependency", "spec.steps[0].dependsOn[0]", _set(S0, "dependsOn", ["a"])),
    case(
        "cycle-two",
        "spec.steps[0].dependsOn",
        lambda m: (
            S0(m).__setitem__("dependsOn", ["b"]),
            step(m, 1).__setitem__("dependsOn", ["a"]),
        ),
    ),
    case(
        "cycle-three",
        "spec.steps",
        _replace_steps(
            [
                {"name": "x", "container": C, "dependsOn": ["z"]},
                {"name": "y", "container": C, "dependsOn": ["x"]},
                {"name": "z", "container": C, "dependsOn": ["y"]},
            ]
        ),
    ),
    case(
        "loop-without-until",
        "spec.steps[0].loop.until",
        _replace_steps(
            [{"name": "l", "loop": {"steps": [{"name": "s", "container": C}], "maxIterations": 3}}]
        ),
    ),
    case(
        "loop-empty-body",
        "spec.steps[0].loop.steps",
        _replace_steps([{"name": "l", "loop": {"steps": [], "until": "true", "maxIterations": 3}}]),
    ),
    case(
        "fanout-both-items",
        "spec.steps[0].fanOut",
        _replace_steps(
            [{"name": "f", "fanOut": {"items": [1], "itemsExpression": "[1]", "container": C}}]
        ),
    ),
    case(
        "finally-clash",
        "spec.finally[0].name",
        _set(SPEC, "finally", [{"name": "a", "container": C}]),
    ),
    case(
        "body-name-clash",
        "spec.steps[1].loop.steps[0].name",
        lambda m: (
            step(m, 1).update(
                {
                    "loop": {
                        "steps": [{"name": "a", "container": C}],
                        "until": "true",
                        "maxIterations": 2,
                    }
                }
            )
            or step(m, 1).pop("container")
        ),
    ),
    # ---- names
    case("name-uppercase", "spec.steps[0].name", _set(S0, "name", "Fetch")),
    case("name-double-dash", "spec.steps[0].name", _set(S0, "name", "a--b")),
    case("name-too-long", "spec.steps[0].name", _set(S0, "name", "a" * 300)),
    case("name-path-traversal", "spec.steps[0].name", _set(S0, "name", "../../etc")),
    case(
        "param-name-injection", "spec.params[0].name", _set(SPEC, "params", [{"name": "x}}; drop"}])
    ),
    # ---- numbers out of range
    case("negative-timeout", "spec.steps[0].timeoutSeconds", _set(S0, "timeoutSeconds", -5)),
    case("zero-max-parallel", "spec.maxParallel", _set(SPEC, "maxParallel", 0)),
    case("huge-retry-limit", "spec.steps[0].retry.limit", _set(S0, "retry", {"limit": 10**9})),
    case(
        "loop-too-many-iterations",
        "spec.steps[0].loop.maxIterations",
        _replace_steps(
            [
                {
                    "name": "l",
                    "loop": {
                        "steps": [{"name": "s", "container": C}],
                        "until": "true",
                        "maxIterations": 10**6,
                    },
                }
            ]
        ),
    ),
    case(
        "quorum-unreachable",
        "spec.steps[0].approval",
        _replace_steps(
            [{"name": "g", "approval": {"approvers": {"users": ["alice"]}, "required": 2}}]
        ),
    ),
    case(
        "threshold-fraction-above-one",
        "spec.steps[0].fanOut.successThreshold.fraction",
        _replace_steps(
            [
                {
                    "name": "f",
                    "fanOut": {"items": [1], "successThreshold": {"fraction": 1.5}, "container": C},
                }
            ]
        ),
    ),
    case("budget-negative-cost", "spec.budget.cost", _set(SPEC, "budget", {"cost": -1})),
    case(
        "concurrency-zero",
        "spec.steps[0].concurrency.limit",
        _set(S0, "concurrency", {"key": "k", "limit": 0}),
    ),
    # ---- huge strings and deep nesting
    case(
        "huge-image",
        "spec.steps[0].container.image",
        lambda m: S0(m)["container"].__setitem__("image", "x" * 2_000_000),
    ),
    case("huge-when", "spec.steps[0].when", _set(S0, "when", "true && " * 200_000 + "true")),
    case("huge-description", "spec.description", _set(SPEC, "description", "d" * 2_000_000)),
    case(
        "deep-nested-body",
        "spec.steps[0].webhook.body",
        _replace_steps([{"name": "w", "webhook": {"url": "https://x", "body": nested(200)}}]),
    ),
    case(
        "deep-nested-default",
        "spec.params[0].default",
        _set(SPEC, "params", [{"name": "p", "default": nested(200)}]),
    ),
    case("deep-cel", "spec.steps[0].when", _set(S0, "when", "(" * 3000 + "true" + ")" * 3000)),
    # ---- invalid or hostile CEL
    case(
        "cel-syntax",
        "spec.steps[1].when",
        lambda m: step(m, 1).__setitem__("when", "steps.a.outputs.x =="),
    ),
    case(
        "cel-unknown-step",
        "spec.steps[1].when",
        lambda m: step(m, 1).__setitem__("when", "steps.ghost.outputs.x == 1"),
    ),
    case("cel-downstream-ref", "spec.steps[0].when", _set(S0, "when", "steps.b.outputs.ok")),
    case(
        "cel-unknown-param",
        "spec.steps[0].container.args[0]",
        lambda m: S0(m)["container"].__setitem__("args", ["${{ params.nope }}"]),
    ),
    case("cel-type-error", "spec.steps[0].when", _set(S0, "when", "1 + 'a' == 2")),
    case(
        "template-unclosed",
        "spec.steps[0].container.args[0]",
        lambda m: S0(m)["container"].__setitem__("args", ["${{ params.topic"]),
    ),
    case(
        "template-injection",
        "spec.steps[0].container.args[0]",
        lambda m: S0(m)["container"].__setitem__(
            "args", ["${{ params.topic }}}}${{ system('id') }}"]
        ),
    ),
    case("outputs-bad-cel", "spec.outputs.x", _set(SPEC, "outputs", {"x": "steps.a.outputs["})),
    case(
        "items-expression-not-cel",
        "spec.steps[0].fanOut.itemsExpression",
        _replace_steps(
            [{"name": "f", "fanOut": {"itemsExpression": "for i in range(10)", "container": C}}]
        ),
    ),
    # ---- unknown fields
    case("unknown-spec-field", "spec.stepz", _set(SPEC, "stepz", [])),
    case("unknown-step-field", "spec.steps[0].privileged", _set(S0, "privileged", True)),
    case(
        "unknown-container-field",
        "spec.steps[0].container.securityContext",
        lambda m: S0(m)["container"].__setitem__("securityContext", {"privileged": True}),
    ),
    case(
        "unknown-retry-field", "spec.steps[0].retry.forever", _set(S0, "retry", {"forever": True})
    ),
    case(
        "unknown-webhook-method",
        "spec.steps[0].webhook.method",
        _replace_steps([{"name": "w", "webhook": {"url": "https://x", "method": "TRACE"}}]),
    ),
]


def manifests() -> list[Case]:
    return [Case(c.id, copy.deepcopy(c.manifest), c.path) for c in CASES]

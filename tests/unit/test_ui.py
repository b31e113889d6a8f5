"""The web UI's pure parts: the start form from JSON Schema, who may decide a gate, the check
that the inputs shown are what an approval binds to, sessions, names that go into API paths
and the server-sent events the pages are kept live with. (In a browser, against the real
control plane: tests/e2e/test_ui.py.)"""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from braid.api.run import PendingApproval
from braid.api.workflow import WorkflowSpec
from braid.engine.approvals import digest, gate_digest
from braid.kube.rest import ApiError
from braid.kube.userapi import Identity, checked
from braid.ui import forms, views
from braid.ui.app import Settings, Ui, _local_path
from braid.ui.live import _apply, event
from braid.ui.sessions import TTL, Sessions, csrf_ok

SPEC = WorkflowSpec.model_validate(
    {
        "params": [
            {
                "name": "count",
                "description": "How many drafts",
                "schema": {"type": "integer", "minimum": 1},
            },
            {"name": "ratio", "default": 0.5, "schema": {"type": "number"}},
            {"name": "tone", "default": "formal", "schema": {"enum": ["formal", "casual"]}},
            {"name": "dry", "default": False, "schema": {"type": "boolean"}},
            {
                "name": "tags",
                "default": [],
                "schema": {"type": "array", "items": {"type": "string"}},
            },
            {"name": "note", "default": ""},
        ],
        "steps": [{"name": "write", "sleep": {"durationSeconds": 0}}],
    }
)


def test_each_param_gets_the_widget_its_schema_asks_for() -> None:
    shown = {f.name: f for f in forms.fields(SPEC)}
    assert {n: f.widget for n, f in shown.items()} == {
        "count": "integer",
        "ratio": "number",
        "tone": "select",
        "dry": "boolean",
        "tags": "json",
        "note": "text",
    }
    assert shown["count"].required
    assert not shown["ratio"].required
    assert shown["count"].help == "How many drafts; minimum: 1"
    assert shown["tone"].choices == ("formal", "casual")
    assert shown["tags"].default == "[]"


@pytest.mark.parametrize(
    ("typed", "params", "errors"),
    [
        ({"count": "3"}, {"count": 3}, {}),
        (
            {"count": "3", "ratio": "2", "dry": "true", "tags": '["a"]'},
            {"count": 3, "ratio": 2, "dry": True, "tags": ["a"]},
            {},
        ),
        ({"count": "0"}, {"count": 0}, {"count": "params.count: 0 is less than the minimum of 1"}),
        ({"count": "three"}, {}, {"count": "params.count: 'three' is not an integer"}),
        ({}, {}, {"count": "params.count: required param is missing (How many drafts)"}),
        (
            {"count": "1", "tone": "shouty"},
            {"count": 1},
            {"tone": 'params.tone: \'shouty\' is not one of "formal", "casual"'},
        ),
        ({"count": "1", "tags": "[a"}, {"count": 1}, {"tags": "params.tags: not valid JSON"}),
        (
            {"count": "1", "tags": "[1]"},
            {"count": 1, "tags": [1]},
            {"tags": "params.tags[0]: 1 is not of type 'string'"},
        ),
        (
            {"count": "1", "dry": "yes"},
            {"count": 1},
            {"dry": "params.dry: 'yes' is not true or false"},
        ),
    ],
)
def test_what_was_typed_becomes_params_or_errors_naming_the_param(
    typed: dict[str, str], params: dict[str, Any], errors: dict[str, str]
) -> None:
    got, said = forms.params_from(SPEC, typed)
    assert set(said) == set(errors)
    for name, start in errors.items():
        assert said[name].startswith(start), said[name]
    if not errors:
        assert got == params


def gate(users: list[str] | None, groups: list[str] | None) -> PendingApproval:
    return PendingApproval(step="review", users=users, groups=groups, required=1, digest="d" * 32)


@pytest.mark.parametrize(
    ("users", "groups", "who", "allowed"),
    [
        (["alice"], None, Identity("alice", ()), True),
        (["alice"], None, Identity("mallory", ()), False),
        (None, ["sre"], Identity("bob", ("sre", "system:authenticated")), True),
        (None, ["sre"], Identity("bob", ("dev",)), False),
        (None, None, Identity("anyone", ()), True),  # nobody listed: whoever may annotate
    ],
)
def test_who_may_decide_a_gate(users: Any, groups: Any, who: Identity, allowed: bool) -> None:
    assert views.may_decide(who, gate(users, groups)) is allowed


def _gated_run(outputs: dict[str, Any]) -> dict[str, Any]:
    """A run waiting at ``review`` after ``prep``, its digest taken as the operator takes it
    (from in-memory values: a float 8.0 is stored by the API server as 8)."""
    opened = datetime(2026, 12, 2, 18, 0, 8, 486759, tzinfo=UTC)
    message = "ship v2?"
    taken = gate_digest(
        {"steps": {"prep": outputs}},
        message,
        run_uid="uid-1",
        step="review",
        body=None,
        iteration=None,
        opened=opened,
    )
    stored = {
        k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in outputs.items()
    }
    spec = {
        "steps": [
            {"name": "prep", "sleep": {"durationSeconds": 8}},
            {
                "name": "review",
                "dependsOn": ["prep"],
                "approval": {
                    "message": "ship ${{ steps.prep.outputs.plan }}?",
                    "approvers": {"users": ["alice"]},
                },
            },
        ]
    }
    return {
        "metadata": {"name": "r1", "namespace": "ns", "uid": "uid-1", "resourceVersion": "7"},
        "spec": {"workflow": spec},
        "status": {
            "workflowSpec": spec,
            "steps": [
                {"name": "prep", "kind": "sleep", "phase": "Succeeded", "outputs": stored},
                {
                    "name": "review",
                    "kind": "approval",
                    "phase": "Waiting",
                    "message": message,
                    "startTime": "2026-12-02T18:00:08.486759Z",
                    "approvalDigest": taken,
                },
            ],
            "pendingApprovals": [
                {"step": "review", "users": ["alice"], "required": 1, "digest": taken}
            ],
        },
    }


def test_the_inbox_confirms_the_inputs_it_shows_are_what_an_approval_binds_to() -> None:
    run = _gated_run({"plan": "v2", "sleptSeconds": 8.0})
    [shown] = views.gates([run], Identity("alice", ()), "approve.braid.dev/")
    assert shown.inputs == {"steps": {"prep": {"plan": "v2", "sleptSeconds": 8}}}
    assert shown.message == "ship v2?"
    assert shown.allowed
    assert shown.confirmed

    run["status"]["steps"][0]["outputs"]["plan"] = "v3"  # what is shown is not what was hashed
    [shown] = views.gates([run], Identity("mallory", ()), "approve.braid.dev/")
    assert not shown.confirmed
    assert not shown.allowed


def test_a_digest_does_not_tell_8_from_8_point_0() -> None:
    assert digest({"a": 8.0, "b": [1.0, 2.5]}) == digest({"a": 8, "b": [1, 2.5]})
    assert digest({"a": 8.5}) != digest({"a": 8})
    assert digest({"a": True}) != digest({"a": 1})


def test_sessions_end_after_disuse_and_never_show_their_token() -> None:
    now = [0.0]
    sessions = Sessions(lambda: now[0])
    s = sessions.new(token="eyJsecret")
    assert "eyJsecret" not in repr(s)
    now[0] = TTL - 1
    assert sessions.get(s.id) is s  # use keeps it alive
    now[0] += TTL - 1
    assert sessions.get(s.id) is s
    now[0] += TTL + 1
    assert sessions.get(s.id) is None
    assert sessions.drain() == [s]  # its API client is closed by the app
    assert sessions.drain() == []
    assert sessions.get(None) is None
    assert sessions.get("made-up") is None


def test_csrf_tokens_must_match_exactly() -> None:
    s = Sessions(lambda: 0.0).new()
    assert csrf_ok(s, s.csrf)
    assert not csrf_ok(s, None)
    assert not csrf_ok(s, "")
    assert not csrf_ok(s, s.csrf[:-1])


@pytest.mark.parametrize("name", ["..", "a/b", "A", "a..b", "", "x" * 254, "a%2fb", "-a"])
def test_names_that_could_bend_an_api_path_are_refused(name: str) -> None:
    with pytest.raises(ApiError, match="is not a valid Kubernetes name"):
        checked("name", name)


def test_valid_names_pass_unchanged() -> None:
    assert checked("namespace", "team-a") == "team-a"
    assert checked("name", "run.v2-x") == "run.v2-x"


def test_watch_events_fold_into_the_runs_shown() -> None:
    runs: dict[str, dict[str, Any]] = {"a": {"metadata": {"name": "a"}}}
    going = _apply(
        runs,
        [
            ("ADDED", {"metadata": {"name": "b"}}),
            ("MODIFIED", {"metadata": {"name": "a"}, "status": {"phase": "Running"}}),
            ("DELETED", {"metadata": {"name": "b"}}),
            ("BOOKMARK", {"metadata": {"resourceVersion": "9"}}),
        ],
    )
    assert going
    assert runs == {"a": {"metadata": {"name": "a"}, "status": {"phase": "Running"}}}
    assert not _apply(runs, [("ERROR", {"code": 410})])
    assert not _apply(runs, [None])


def test_an_event_carries_every_line_of_its_html() -> None:
    assert (
        event("run", "<p>\n<b>x</b>\n</p>")
        == "event: run\ndata: <p>\ndata: <b>x</b>\ndata: </p>\n\n"
    )
    assert event("run", "") == "event: run\ndata: \n\n"


def test_rows_filter_by_workflow_and_phase_newest_first() -> None:
    def run(name: str, created: str, workflow: str, phase: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
            "spec": {"workflowRef": {"name": workflow}},
            "status": {"phase": phase},
        }

    runs = [
        run("a", "2026-12-02T10:00:00Z", "w1", "Succeeded"),
        run("b", "2026-12-02T11:00:00Z", "w1", "Running"),
        run("c", "2026-12-02T12:00:00Z", "w2", "Succeeded"),
    ]
    now = datetime(2026, 12, 2, 12, 30, tzinfo=UTC)
    assert [r.name for r in views.rows(runs, now)] == ["c", "b", "a"]
    assert [r.name for r in views.rows(runs, now, workflow="w1")] == ["b", "a"]
    assert [r.name for r in views.rows(runs, now, phase="Succeeded")] == ["c", "a"]
    assert views.rows(runs, now)[0].age == "30m"


@pytest.mark.parametrize(
    ("given", "goes"),
    [
        ("/approvals", "/approvals"),
        ("/runs/ns/r1", "/runs/ns/r1"),
        ("//evil.example/x", "/runs"),
        ("https://evil.example", "/runs"),
        ("/\\evil.example", "/runs"),
        ("", "/runs"),
    ],
)
def test_after_sign_in_only_a_path_of_the_ui_itself(given: str, goes: str) -> None:
    assert _local_path(given) == goes


def test_a_steps_attempts_are_the_pods_its_run_controls_oldest_first() -> None:
    def pod(name: str, attempt: str, uid: str, exit_code: int | None = None) -> dict[str, Any]:
        state = {"terminated": {"exitCode": exit_code, "reason": "Error"}} if exit_code else {}
        return {
            "metadata": {
                "name": name,
                "labels": {"braid.dev/attempt": attempt},
                "ownerReferences": [{"controller": True, "uid": uid}],
            },
            "status": {"phase": "Failed", "containerStatuses": [{"name": "step", "state": state}]},
        }

    pods = [pod("r-s-2", "2", "run-uid"), pod("r-s-1", "1", "run-uid", 3), pod("x", "9", "other")]
    shown = views.attempts_of(pods, "run-uid", "braid.dev/attempt")
    assert [(a.pod, a.attempt, a.exit_code) for a in shown] == [("r-s-1", 1, 3), ("r-s-2", 2, None)]


def test_the_workflow_page_shows_the_analysis_recommendations() -> None:
    ui = Ui(Settings())
    html = ui.templates.get_template("workflow.html").render(
        request=SimpleNamespace(url=SimpleNamespace(path="/workflows/ns/wf")),
        auth="kubeconfig",
        csrf="t",
        user="alice",
        namespace="ns",
        name="wf",
        yaml="steps: []",
        analysis={
            "runs": 12,
            "succeeded": 11,
            "durationP50": 3.2,
            "durationP95": 9.5,
            "criticalPath": ["fetch", "summarise"],
            "recommendations": [
                {
                    "kind": "Parallelize",
                    "steps": ["fetch", "rank"],
                    "gainSeconds": 2.5,
                    "message": "run rank beside fetch",
                    "evidence": "rank reads nothing of fetch",
                }
            ],
        },
        rows=[],
        fields=[],
        invalid="",
        errors={},
    )
    assert "Parallelize" in html
    assert "run rank beside fetch" in html
    assert "saves ~2.5s" in html
    assert "fetch → summarise" in html

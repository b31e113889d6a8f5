"""Artifacts in step Pods (pure translation): the init container and the native sidecar in
Braid's image, credentials only there, the step's own container untouched but for its two
directories; results read back from the Pod's status; the finalizer and artifactGC."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
from pathlib import Path

import pytest
from rich.console import Console

from braid.api.podtemplate import PodPolicy, check_pod_template
from braid.artifacts.store import LocalStore, Repository
from braid.cli.plugin import status_tree
from braid.controller.reconcile import Reconciler
from braid.engine import AttemptLabels, ContainerRequest, StartAttempt
from braid.engine.actions import ArtifactRoom, InputArtifact
from braid.kube.artifact_pods import FINALIZER, ArtifactSettings
from braid.kube.memory import MemoryCluster
from braid.kube.pods import pod_for, result_of
from tests.memory import cluster_with_run, ticking_clock

REPO = Repository("http://s3.example:9000", "bucket", "braid")
SETTINGS = ArtifactSettings(REPO, "braid:1.0", "s3-creds")
SHA = hashlib.sha256(b"x").hexdigest()


ROOM = ArtifactRoom(1000, 5)


def request(inputs=(), room=ROOM) -> StartAttempt:
    container = ContainerRequest(
        image="alpine",
        command=["sh"],
        args=[],
        env={},
        working_dir=None,
        resources=None,
        pod_template=None,
        inputs=tuple(inputs),
        artifacts=room,
    )
    return StartAttempt("r-a-1", AttemptLabels("a", 1), 60, container=container)


def pod(req: StartAttempt, settings: ArtifactSettings | None = SETTINGS) -> dict:
    return pod_for(
        req, namespace="ns", run_name="r", run_uid="u", workflow="wf", artifacts=settings
    )


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_the_sidecar_and_init_container_carry_the_credentials_the_step_does_not():
    p = pod(request([InputArtifact("in/a", "s3://bucket/braid/ns/q/q-b-1/a", SHA)]))
    spec = p["spec"]
    init = {c["name"]: c for c in spec["initContainers"]}
    assert list(init) == ["braid-inputs", "braid-artifacts"]  # fetch first, then the sidecar
    sidecar, fetch = init["braid-artifacts"], init["braid-inputs"]
    assert sidecar["restartPolicy"] == "Always"
    assert "restartPolicy" not in fetch
    assert sidecar["image"] == fetch["image"] == "braid:1.0"
    assert sidecar["command"] == ["braid", "pod-agent", "store-outputs"]
    assert fetch["command"] == ["braid", "pod-agent", "fetch-inputs"]
    for c in (sidecar, fetch):
        assert env_of(c)["AWS_SECRET_ACCESS_KEY"] == {
            "secretKeyRef": {"name": "s3-creds", "key": "secretKey"}
        }
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert env_of(sidecar)["BRAID_ARTIFACT_PREFIX"] == "braid/ns/r/r-a-1/"
    assert env_of(sidecar)["BRAID_ARTIFACT_MAX_BYTES"] == "1000"
    assert env_of(fetch)["BRAID_ARTIFACT_SCOPE"] == "braid/ns/"
    assert json.loads(env_of(fetch)["BRAID_INPUT_ARTIFACTS"]) == [
        {"path": "in/a", "uri": "s3://bucket/braid/ns/q/q-b-1/a", "sha256": SHA}
    ]
    main = spec["containers"][0]
    assert "AWS_SECRET_ACCESS_KEY" not in env_of(main)
    assert env_of(main)["BRAID_ARTIFACTS"] == "/braid/artifacts"
    assert env_of(main)["BRAID_INPUTS"] == "/braid/inputs"
    assert {"name": "braid-inputs", "mountPath": "/braid/inputs", "readOnly": True} in main[
        "volumeMounts"
    ]
    assert (
        p["metadata"]["annotations"]["braid.dev/artifact-prefix"] == "s3://bucket/braid/ns/r/r-a-1/"
    )
    assert spec["terminationGracePeriodSeconds"] == 300
    assert {v["name"] for v in spec["volumes"]} == {
        "braid-inputs",
        "braid-artifacts",
        "braid-agent",
    }
    assert sidecar["startupProbe"]["exec"]["command"] == ["test", "-e", "/braid/agent/ready"]


def test_no_repository_or_no_room_means_no_artifact_containers():
    assert "initContainers" not in pod(request(), settings=None)["spec"]
    assert "initContainers" not in pod(request(room=None))["spec"]


def finished(p: dict, sidecar_message: str | None, fetch_code: int = 0) -> dict:
    p = copy.deepcopy(p)
    init = []
    if any(c["name"] == "braid-inputs" for c in p["spec"].get("initContainers", [])):
        init.append(
            {
                "name": "braid-inputs",
                "state": {
                    "terminated": {
                        "exitCode": fetch_code,
                        "message": json.dumps({"error": "input artifacts: 404"})
                        if fetch_code
                        else "",
                    }
                },
            }
        )
    if sidecar_message is not None:
        init.append(
            {
                "name": "braid-artifacts",
                "state": {"terminated": {"exitCode": 0, "message": sidecar_message}},
            }
        )
    main = (
        {"name": "step", "state": {"terminated": {"exitCode": 0, "message": "{}"}}}
        if not fetch_code
        else {"name": "step", "state": {"waiting": {}}}
    )
    p["status"] = {
        "phase": "Failed" if fetch_code else "Succeeded",
        "containerStatuses": [main],
        "initContainerStatuses": init,
    }
    return p


def test_results_carry_what_the_sidecar_stored_or_why_not():
    p = pod(request())
    r = result_of(finished(p, json.dumps({"a": [["out.md", 1, SHA]]})))
    assert r.artifacts["out.md"].uri == "s3://bucket/braid/ns/r/r-a-1/out.md"
    assert r.artifacts["out.md"].sha256 == SHA
    r = result_of(finished(p, json.dumps({"error": "too big", "tooLarge": True})))
    assert (r.artifact_error, r.artifact_too_large) == ("too big", True)
    r = result_of(finished(p, None))
    assert "reported nothing" in r.artifact_error
    for garbage in ("not json", "[]", json.dumps({"a": [["x", "big", "nope"]]})):
        assert result_of(finished(p, garbage)).artifact_error


def test_an_input_that_cannot_be_fetched_fails_the_attempt_as_artifact_failed():
    p = pod(request([InputArtifact("a", "s3://bucket/braid/ns/x", None)]))
    r = result_of(finished(p, "", fetch_code=1))
    assert r.artifact_error == "input artifacts: 404"
    assert r.error is None


@pytest.mark.parametrize(
    ("template", "field"),
    [
        (
            {"spec": {"volumes": [{"name": "braid-artifacts", "emptyDir": {}}]}},
            "podTemplate.spec.volumes[0].name",
        ),
        (
            {
                "spec": {
                    "containers": [{"volumeMounts": [{"name": "braid-inputs", "mountPath": "/x"}]}]
                }
            },
            "podTemplate.spec.containers[0].volumeMounts[0].name",
        ),
    ],
)
def test_a_template_cannot_take_braids_volumes(template, field):
    errors = check_pod_template(template, "podTemplate", PodPolicy(), "ns")
    assert [e.path for e in errors] == [field]


WORKFLOW = {"spec": {"steps": [{"name": "a", "container": {"image": "x", "command": ["a"]}}]}}


def setup(tmp_path: Path) -> tuple[MemoryCluster, Reconciler]:
    cluster = cluster_with_run(WORKFLOW)
    reconciler = Reconciler(cluster, clock=ticking_clock(), artifacts=SETTINGS)
    assert reconciler.apply.keeper is not None
    reconciler.apply.keeper.store = LocalStore(tmp_path)
    return cluster, reconciler


def reconcile(cluster: MemoryCluster, reconciler: Reconciler) -> None:
    asyncio.run(reconciler.reconcile("ns", "r", list(cluster.pods.values())))


def test_the_run_holds_a_finalizer_until_its_artifacts_are_deleted(tmp_path: Path):
    cluster, reconciler = setup(tmp_path)
    reconcile(cluster, reconciler)
    run = cluster.runs["r"]
    assert run["metadata"]["finalizers"] == [FINALIZER]
    # the finalizer patch did not cost a conflict: the status write went through
    assert cluster.requests["PUT workflowruns/status"] == 1
    assert "r-a-1" in cluster.pods
    (tmp_path / "braid" / "ns" / "r" / "r-a-1").mkdir(parents=True)
    (tmp_path / "braid" / "ns" / "r" / "r-a-1" / "f").write_text("x")
    asyncio.run(cluster.delete_run("ns", "r", "u1"))
    assert cluster.runs["r"]["metadata"]["deletionTimestamp"]
    reconcile(cluster, reconciler)
    assert "r" not in cluster.runs  # the finalizer went, so did the run
    assert not (tmp_path / "braid" / "ns" / "r").exists()


def test_the_operator_loads_an_item_list_once_and_again_after_a_restart(tmp_path: Path):
    """fanOut.itemsFrom through the reconciler: the list is fetched in the background, kept
    in memory (never in the run), and fetched again by a new operator process."""
    items = json.dumps([{"n": i} for i in range(6)]).encode()
    key = "braid/ns/r/r-plan-1/items.json"
    (tmp_path / key).parent.mkdir(parents=True)
    (tmp_path / key).write_bytes(items)
    cluster = cluster_with_run(
        {
            "spec": {
                "steps": [
                    {"name": "plan", "container": {"image": "x", "command": ["a"]}},
                    {
                        "name": "work",
                        "fanOut": {
                            "itemsFrom": "steps.plan.artifacts['items.json']",
                            "parallelism": 2,
                            "container": {
                                "image": "x",
                                "command": ["w", "${{ string(item.n) }}"],
                                "artifactLimits": {"maxFiles": 0},
                            },
                        },
                    },
                ]
            }
        }
    )
    clock = ticking_clock()

    def operator() -> Reconciler:
        reconciler = Reconciler(cluster, clock=clock, artifacts=SETTINGS)
        assert reconciler.apply.keeper is not None
        reconciler.apply.keeper.store = LocalStore(tmp_path)
        return reconciler

    async def reconcile(reconciler: Reconciler) -> None:
        await reconciler.reconcile("ns", "r", list(cluster.pods.values()))
        await asyncio.gather(*reconciler.apply.calls)  # the background load

    async def scenario() -> None:
        reconciler = operator()
        await reconcile(reconciler)
        plan = cluster.pods["r-plan-1"]
        plan["status"] = {
            "phase": "Succeeded",
            "containerStatuses": [
                {"name": "step", "state": {"terminated": {"exitCode": 0, "message": "{}"}}}
            ],
            "initContainerStatuses": [
                {
                    "name": "braid-artifacts",
                    "state": {
                        "terminated": {
                            "exitCode": 0,
                            "message": json.dumps(
                                {
                                    "a": [
                                        [
                                            "items.json",
                                            len(items),
                                            hashlib.sha256(items).hexdigest(),
                                        ]
                                    ]
                                }
                            ),
                        }
                    },
                }
            ],
        }
        plan["metadata"]["annotations"]["braid.dev/artifact-prefix"] = (
            tmp_path / key
        ).parent.resolve().as_uri() + "/"
        await reconcile(reconciler)  # plan done: the list is asked for and loaded
        await reconcile(reconciler)  # the fan-out begins
        assert sorted(p for p in cluster.pods if p.startswith("r-work")) == [
            "r-work--0-1",
            "r-work--1-1",
        ]
        cluster.finish_pod("r-work--0-1", "{}")
        restarted = operator()  # a new process: nothing in memory
        await reconcile(restarted)  # asks for the list again; the result waits in the pod
        await reconcile(restarted)
        status = cluster.runs["r"]["status"]["steps"][1]
        assert status["items"][0]["phase"] == "Succeeded"
        assert "r-work--2-1" in cluster.pods
        assert '"n": 3' not in json.dumps(cluster.runs["r"])

    asyncio.run(scenario())


def test_kubectl_braid_status_lists_each_steps_artifacts_with_sizes():
    run = {
        "metadata": {"name": "r"},
        "status": {
            "phase": "Succeeded",
            "steps": [
                {
                    "name": "write",
                    "phase": "Succeeded",
                    "attempts": 1,
                    "artifacts": {
                        "report.md": {"size": 5 * 1024 * 1024 + 1, "sha256": SHA, "uri": "s3://b/k"}
                    },
                }
            ],
        },
    }
    console = Console(record=True, width=100)
    console.print(status_tree(run))
    assert "artifact report.md 5.0 MiB" in console.export_text()

"""Artifacts in a step Pod, with Braid's own image so the step's image needs nothing.

- ``braid-inputs``, an init container, fetches the input artifacts into an emptyDir mounted at
  $BRAID_INPUTS (read-only in the step's container) before the step starts;
- ``braid-artifacts``, a native sidecar (an init container with restartPolicy Always), waits;
  once the step's container has exited the kubelet sends it SIGTERM, and it stores what the
  step left in the emptyDir at $BRAID_ARTIFACTS, then reports in its termination message.

Only these two containers get the repository's credentials (from a Secret in the run's
namespace); the step's container never sees them. Why not a wrapper around the step's command
(Argo's emissary): that needs an executable that runs in any image, and Braid is Python; the
sidecar needs nothing of the image and uses the kubelet's own ordering. Pure translation.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from braid.api.run import Artifact
from braid.artifacts import agent
from braid.artifacts.store import Repository, attempt_prefix, run_prefix
from braid.engine import AttemptResult, StartAttempt

INPUTS_CONTAINER, SIDECAR, AGENT_VOLUME = "braid-inputs", "braid-artifacts", "braid-agent"
ARTIFACTS_DIR, INPUTS_DIR = "/braid/artifacts", "/braid/inputs"
# The sidecar says it is waiting by this file; its startupProbe holds the step's container
# back until then, so a step that ends at once cannot end before the sidecar listens.
READY_FILE = "/braid/agent/ready"
PREFIX_ANNOTATION = "braid.dev/artifact-prefix"
FINALIZER = "braid.dev/artifacts"
# Storing a large artifact can take a while: the kubelet waits this long for the sidecar.
UPLOAD_GRACE_SECONDS = 300

_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True)
class ArtifactSettings:
    """The operator's artifact repository (--artifact-* flags, chart ``artifacts.*``)."""

    repository: Repository
    image: str  # Braid's own image, for the init container and the sidecar
    credentials_secret: str | None = None  # in each run's namespace: accessKey, secretKey

    def run_prefix(self, namespace: str, run: str) -> str:
        return run_prefix(self.repository.prefix, namespace, run)


def uses_artifacts(request: StartAttempt) -> bool:
    c = request.container
    return c is not None and (c.artifacts is not None or bool(c.inputs))


def add_artifacts(
    pod: dict[str, Any], request: StartAttempt, settings: ArtifactSettings, run: str
) -> None:
    """Give the Pod its artifact containers and volumes (when the attempt reads or may write
    artifacts)."""
    container = request.container
    assert container is not None
    meta, spec = pod["metadata"], pod["spec"]
    namespace = meta["namespace"]
    main = spec["containers"][0]
    repo = settings.repository
    common = [
        {"name": agent.REPOSITORY, "value": repo.wire()},
        *_credentials(settings.credentials_secret),
    ]
    init: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    if container.inputs:
        volumes.append({"name": INPUTS_CONTAINER, "emptyDir": {}})
        listed = [{"path": i.path, "uri": i.uri, "sha256": i.sha256} for i in container.inputs]
        init.append(
            _agent(
                settings.image,
                INPUTS_CONTAINER,
                "fetch-inputs",
                [
                    {"name": agent.INPUTS, "value": INPUTS_DIR},
                    {"name": agent.INPUT_LIST, "value": json.dumps(listed)},
                    {"name": agent.SCOPE, "value": run_prefix(repo.prefix, namespace, "")},
                    *common,
                ],
                INPUTS_DIR,
            )
        )
        main["env"].append({"name": agent.INPUTS, "value": INPUTS_DIR})
        main.setdefault("volumeMounts", []).append(
            {"name": INPUTS_CONTAINER, "mountPath": INPUTS_DIR, "readOnly": True}
        )
    if container.artifacts is not None:
        key = attempt_prefix(repo.prefix, namespace, run, request.name)
        volumes.append({"name": SIDECAR, "emptyDir": {}})
        sidecar = _agent(
            settings.image,
            SIDECAR,
            "store-outputs",
            [
                {"name": agent.ARTIFACTS, "value": ARTIFACTS_DIR},
                {"name": agent.KEY_PREFIX, "value": key},
                {"name": agent.MAX_BYTES, "value": str(container.artifacts.max_bytes)},
                {"name": agent.MAX_FILES, "value": str(container.artifacts.max_files)},
                {"name": agent.READY, "value": READY_FILE},
                *common,
            ],
            ARTIFACTS_DIR,
        )
        sidecar["restartPolicy"] = "Always"
        sidecar["volumeMounts"].append({"name": AGENT_VOLUME, "mountPath": "/braid/agent"})
        sidecar["startupProbe"] = {
            "exec": {"command": ["test", "-e", READY_FILE]},
            "periodSeconds": 1,
            "failureThreshold": 120,
        }
        volumes.append({"name": AGENT_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}})
        init.append(sidecar)
        main["env"].append({"name": agent.ARTIFACTS, "value": ARTIFACTS_DIR})
        main.setdefault("volumeMounts", []).append({"name": SIDECAR, "mountPath": ARTIFACTS_DIR})
        meta.setdefault("annotations", {})[PREFIX_ANNOTATION] = repo.uri(key)
        grace = spec.get("terminationGracePeriodSeconds") or 30
        spec["terminationGracePeriodSeconds"] = max(grace, UPLOAD_GRACE_SECONDS)
    spec["initContainers"] = [*init, *(spec.get("initContainers") or [])]
    spec["volumes"] = [*(spec.get("volumes") or []), *volumes]


def _credentials(secret: str | None) -> list[dict[str, Any]]:
    if not secret:
        return []
    return [
        {
            "name": env,
            "valueFrom": {"secretKeyRef": {"name": secret, "key": key}},
        }
        for env, key in (
            ("AWS_ACCESS_KEY_ID", "accessKey"),
            ("AWS_SECRET_ACCESS_KEY", "secretKey"),
        )
    ]


def _agent(
    image: str, name: str, command: str, env: list[dict[str, Any]], mount: str
) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "command": ["braid", "pod-agent", command],
        "env": env,
        "volumeMounts": [{"name": name, "mountPath": mount}],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "securityContext": copy.deepcopy(_SECURITY),
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
    }


def with_artifacts(pod: dict[str, Any], result: AttemptResult) -> AttemptResult:
    """The attempt's result with what the Pod's artifact containers reported."""
    statuses = {
        s.get("name"): (s.get("state") or {}).get("terminated")
        for s in (pod.get("status") or {}).get("initContainerStatuses") or []
    }
    fetched = statuses.get(INPUTS_CONTAINER)
    if fetched is not None and fetched.get("exitCode") not in (0, None):
        detail = _error(fetched.get("message")) or "the init container failed"
        return AttemptResult(result.name, artifact_error=detail)
    prefix = ((pod.get("metadata") or {}).get("annotations") or {}).get(PREFIX_ANNOTATION)
    if prefix is None:
        return result
    stored = statuses.get(SIDECAR)
    found, error, too_large = agent.parse_report(stored.get("message") if stored else None, prefix)
    if error is not None:
        return _replace(result, artifact_error=error, artifact_too_large=too_large)
    try:
        artifacts = {k: Artifact.model_validate(v) for k, v in (found or {}).items()}
    except ValueError:
        return _replace(result, artifact_error="the artifact sidecar's report is malformed")
    return _replace(result, artifacts=artifacts)


def _error(message: str | None) -> str | None:
    try:
        data = json.loads(message or "")
    except ValueError:
        return message
    return str(data.get("error")) if isinstance(data, dict) else message


def _replace(result: AttemptResult, **changes: Any) -> AttemptResult:
    from dataclasses import replace  # noqa: PLC0415

    return replace(result, **changes)

"""The one in-memory Cluster: the ``Cluster`` protocol over dicts, for unit tests and benches.

It behaves as the API server does where Braid depends on it: objects go over the wire as
JSON (a caller never shares a dict with the store), status writes are guarded by the
resourceVersion that was read (a stale one is a ConflictError), a Pod's name is unique (a
second create returns False), and every request is counted by verb and resource. Faults can
be scripted: the next status write fails, or Pods are refused.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from braid.engine import RecordEvent
from braid.kube.client import ConflictError, DataKind, ForbiddenError, PodRejectedError


def _wire(obj: Any) -> Any:
    return json.loads(json.dumps(obj)) if obj is not None else None


@dataclass
class MemoryCluster:
    """Runs, workflows and pods by name (one namespace's worth: names are not prefixed)."""

    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    workflows: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[RecordEvent] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)
    resource_version: int = 1
    # Scripted faults: the next status write raises this; pods are refused with this message.
    fail_next_status_write: Exception | None = None
    refuse_pods: str | None = None
    # (kind, name) -> data; kinds listed in forbidden may not be read at all.
    data: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    forbidden: set[str] = field(default_factory=set)

    async def read_data(self, kind: DataKind, namespace: str, name: str) -> dict[str, str] | None:
        self.requests[f"GET {kind.lower()}s"] += 1
        if kind in self.forbidden:
            raise ForbiddenError(f"the operator may not read {kind} {name!r} in {namespace}")
        found = self.data.get((kind, name))
        return dict(found) if found is not None else None

    async def patch_config_map(
        self, namespace: str, name: str, data: dict[str, str | None], labels: dict[str, str]
    ) -> None:
        self.requests["PATCH configmaps"] += 1
        stored = self.data.setdefault(("ConfigMap", name), {})
        for key, value in data.items():
            if value is None:
                stored.pop(key, None)
            else:
                stored[key] = value

    async def set_run_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> str | None:
        self.requests["PATCH workflowruns"] += 1
        run = self.runs.get(name)
        if run is None or run["metadata"].get("resourceVersion") != resource_version:
            return None
        run["metadata"]["finalizers"] = list(finalizers)
        self.resource_version += 1
        run["metadata"]["resourceVersion"] = str(self.resource_version)
        version = run["metadata"]["resourceVersion"]
        if not finalizers and run["metadata"].get("deletionTimestamp"):
            del self.runs[name]  # the API server deletes it once no finalizer holds it
        return str(version)

    async def get_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.requests["GET workflowruns"] += 1
        return _wire(self.runs.get(name))  # type: ignore[no-any-return]

    async def list_runs(self, namespace: str) -> list[dict[str, Any]]:
        self.requests["LIST workflowruns"] += 1
        return [copy.deepcopy(r) for r in self.runs.values()]

    async def get_workflow(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.requests["GET workflows"] += 1
        return _wire(self.workflows.get(name))  # type: ignore[no-any-return]

    async def replace_run_status(
        self, run: dict[str, Any], status: dict[str, Any]
    ) -> dict[str, Any]:
        self.requests["PUT workflowruns/status"] += 1
        current = self.runs[run["metadata"]["name"]]
        if self.fail_next_status_write is not None:
            fault, self.fail_next_status_write = self.fail_next_status_write, None
            raise fault
        if current["metadata"].get("resourceVersion") != run["metadata"].get("resourceVersion"):
            raise ConflictError(run["metadata"]["name"])
        self.resource_version += 1
        current["status"] = _wire(status)
        current["metadata"]["resourceVersion"] = str(self.resource_version)
        return _wire(current)  # type: ignore[no-any-return]

    async def create_pod(self, pod: dict[str, Any]) -> bool:
        self.requests["POST pods"] += 1
        if self.refuse_pods is not None:
            raise PodRejectedError(self.refuse_pods)
        name = pod["metadata"]["name"]
        if name in self.pods:
            return False
        self.pods[name] = _wire(pod)
        return True

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.requests["GET pods"] += 1
        return _wire(self.pods.get(name))  # type: ignore[no-any-return]

    async def create_job(self, job: dict[str, Any]) -> bool:
        self.requests["POST jobs"] += 1
        name = job["metadata"]["name"]
        if name in self.jobs:
            return False
        self.jobs[name] = _wire(job)
        return True

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.requests["GET jobs"] += 1
        return _wire(self.jobs.get(name))  # type: ignore[no-any-return]

    async def delete_job(self, namespace: str, name: str) -> None:
        self.requests["DELETE jobs"] += 1
        self.jobs.pop(name, None)

    async def delete_pod(self, namespace: str, name: str) -> None:
        self.requests["DELETE pods"] += 1
        self.pods.pop(name, None)

    async def create_run(self, run: dict[str, Any]) -> bool:
        self.requests["POST workflowruns"] += 1
        name = run["metadata"]["name"]
        if name in self.runs:
            return False
        self.resource_version += 1
        stored = _wire(run)
        stored["metadata"].setdefault("uid", f"uid-{name}")
        stored["metadata"]["resourceVersion"] = str(self.resource_version)
        stored["metadata"].setdefault("generation", 1)
        self.runs[name] = stored
        return True

    async def cancel_run(self, namespace: str, name: str) -> None:
        self.requests["PATCH workflowruns"] += 1
        run = self.runs.get(name)
        if run is not None:
            run.setdefault("spec", {})["cancelled"] = True
            self.resource_version += 1
            run["metadata"]["resourceVersion"] = str(self.resource_version)

    async def delete_run(self, namespace: str, name: str, uid: str) -> None:
        self.requests["DELETE workflowruns"] += 1
        meta = self.runs.get(name, {}).get("metadata", {})
        if meta.get("uid") != uid:
            return
        if meta.get("finalizers"):  # the API server only marks it while a finalizer holds it
            meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
            self.resource_version += 1
            meta["resourceVersion"] = str(self.resource_version)
        else:
            del self.runs[name]

    async def record_event(self, run: dict[str, Any], event: RecordEvent) -> None:
        self.requests["POST events"] += 1
        self.events.append(event)

    # ------------------------------------------------------------------ what a kubelet does

    def finish_pod(self, name: str, output: str = "{}", exit_code: int = 0) -> None:
        """The pod's step container terminated (its termination message is ``output``)."""
        terminated = {"exitCode": exit_code, "message": output}
        self.pods[name]["status"] = {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [{"name": "step", "state": {"terminated": terminated}}],
        }

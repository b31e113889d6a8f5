"""The operator's API server: one narrow async protocol and its real implementation on
``kube/rest.py`` (raw JSON, no client models). Counts its requests by verb, for benchmarks."""

from __future__ import annotations

import base64
import json
import socket
from collections import Counter
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from braid.api.common import GROUP, VERSION
from braid.engine import RecordEvent
from braid.kube import rest
from braid.kube.rest import ApiError, Rest


class ConflictError(Exception):
    """The object changed since it was read; reconcile again from fresh state."""


class ForbiddenError(Exception):
    """The operator may not read this object (its RBAC does not grant it)."""


class PodRejectedError(Exception):
    """The API server refused to create a step's Pod (invalid, forbidden, over quota): the
    attempt fails with this message rather than the reconcile being retried forever."""


def _message(body: bytes | None, fallback: object) -> str:
    return rest.message_of(body, fallback)


def _check(status: int, body: bytes, what: str, *, allowed: tuple[int, ...] = ()) -> None:
    """Raise ``ApiError`` with the API server's message unless 2xx or one of ``allowed``."""
    if status not in allowed and not 200 <= status < 300:
        raise rest.error_of(status, body, what)


class Cluster(Protocol):
    requests: Counter[str]

    async def get_run(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def list_runs(self, namespace: str) -> list[dict[str, Any]]: ...
    async def get_workflow(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def replace_run_status(
        self, run: dict[str, Any], status: dict[str, Any]
    ) -> dict[str, Any]: ...
    async def create_pod(self, pod: dict[str, Any]) -> bool: ...
    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def delete_pod(self, namespace: str, name: str) -> None: ...
    async def create_job(self, job: dict[str, Any]) -> bool: ...
    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def delete_job(self, namespace: str, name: str) -> None: ...
    async def delete_run(self, namespace: str, name: str, uid: str) -> None: ...
    async def create_run(self, run: dict[str, Any]) -> bool:
        """Create; False when a run of that name exists already."""
        ...

    async def cancel_run(self, namespace: str, name: str) -> None:
        """Set spec.cancelled (a run that is gone is no error)."""
        ...

    async def set_run_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> str | None:
        """Replace the run's finalizers, guarded by resourceVersion: the new resourceVersion;
        None on a conflict or when the run is gone."""
        ...

    async def record_event(self, run: dict[str, Any], event: RecordEvent) -> None: ...
    async def read_data(self, kind: DataKind, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's (decoded) or ConfigMap's data; None when it does not exist;
        ForbiddenError when the operator may not read it."""
        ...

    async def patch_config_map(
        self, namespace: str, name: str, data: dict[str, str | None], labels: dict[str, str]
    ) -> None:
        """Merge ``data`` into a ConfigMap (None removes a key), creating it when missing."""
        ...


DataKind = Literal["Secret", "ConfigMap"]


class KubeCluster:
    """The ``Cluster`` protocol over HTTP, as raw JSON."""

    def __init__(self, api: Rest) -> None:
        self.api = api
        self.requests: Counter[str] = Counter()
        self.instance = socket.gethostname()

    @classmethod
    async def from_kubeconfig(cls, kubeconfig: str | None = None) -> KubeCluster:
        """The pod's ServiceAccount in a pod, else the kubeconfig (as kopf logs in)."""
        return cls(Rest(rest.load(kubeconfig)))

    async def close(self) -> None:
        await self.api.close()

    async def served_resources(self, group: str, version: str) -> set[str]:
        """The resource names the API server serves for group/version (discovery)."""
        self.requests["GET discovery"] += 1
        status, body = await self.api.request("GET", f"/apis/{group}/{version}")
        if status == 404:
            return set()
        _check(status, body, "discovery")
        return {r["name"] for r in json.loads(body).get("resources") or []}

    async def _get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.requests[f"GET {plural}"] += 1
        status, body = await self.api.request("GET", _custom(namespace, plural, name))
        if status == 404:
            return None
        _check(status, body, f"reading {plural} {name}")
        obj: dict[str, Any] = json.loads(body)
        return obj

    async def get_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get("workflowruns", namespace, name)

    async def list_runs(self, namespace: str) -> list[dict[str, Any]]:
        self.requests["LIST workflowruns"] += 1
        listed = await self.api.json("GET", _custom(namespace, "workflowruns"))
        return list(listed.get("items") or [])

    async def get_workflow(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get("workflows", namespace, name)

    async def replace_run_status(
        self, run: dict[str, Any], status: dict[str, Any]
    ) -> dict[str, Any]:
        """PUT the whole status, guarded by the resourceVersion that was read.

        A replace (not a merge patch) because fields the engine cleared must disappear, and
        Braid owns the whole status, conditions included.
        """
        meta = run["metadata"]
        self.requests["PUT workflowruns/status"] += 1
        code, body = await self.api.request(
            "PUT",
            _custom(meta["namespace"], "workflowruns", meta["name"]) + "/status",
            body={**run, "status": status},
        )
        if code == 409:
            raise ConflictError(meta["name"])
        _check(code, body, "writing a run's status")
        updated: dict[str, Any] = json.loads(body)
        return updated

    # WorkflowSchedules (controller/schedules.py): only the real cluster has them.

    async def get_schedule(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get("workflowschedules", namespace, name)

    async def create_run(self, run: dict[str, Any]) -> bool:
        """Create; False when a run of that name exists already (a time already started)."""
        self.requests["POST workflowruns"] += 1
        status, body = await self.api.request(
            "POST", _custom(run["metadata"]["namespace"], "workflowruns"), body=run
        )
        if status == 409:
            return False
        if status in (400, 403, 422):  # invalid, forbidden, over quota
            raise PodRejectedError(_message(body, status))
        _check(status, body, "creating a run")
        return True

    async def cancel_run(self, namespace: str, name: str) -> None:
        self.requests["PATCH workflowruns"] += 1
        status, body = await self.api.request(
            "PATCH",
            _custom(namespace, "workflowruns", name),
            body={"spec": {"cancelled": True}},
            content_type=MERGE_PATCH,
        )
        _check(status, body, "cancelling a run", allowed=(404,))

    async def replace_schedule_status(
        self, schedule: dict[str, Any], status: dict[str, Any]
    ) -> None:
        meta = schedule["metadata"]
        self.requests["PUT workflowschedules/status"] += 1
        code, body = await self.api.request(
            "PUT",
            _custom(meta["namespace"], "workflowschedules", meta["name"]) + "/status",
            body={**schedule, "status": status},
        )
        # Gone, or changed: the next pass writes it.
        _check(code, body, "writing a schedule's status", allowed=(404, 409))

    async def create_pod(self, pod: dict[str, Any]) -> bool:
        """Create; False when a Pod of that name exists already (whose it is, the caller
        reads). PodRejectedError when the API server refuses the Pod itself."""
        self.requests["POST pods"] += 1
        # The created Pod is not needed: its body is not parsed.
        status, body = await self.api.request(
            "POST", f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods", body=pod
        )
        if status == 409:
            return False
        if status in (400, 403, 422):
            raise PodRejectedError(_message(body, status))
        _check(status, body, "creating a pod")
        return True

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Pod's metadata and status (read after a 409, to see whose it is)."""
        self.requests["GET pods"] += 1
        status, body = await self.api.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
        if status == 404:
            return None
        _check(status, body, "reading a pod")
        pod: dict[str, Any] = json.loads(body)
        return {"metadata": pod.get("metadata") or {}, "status": pod.get("status") or {}}

    async def read_data(self, kind: DataKind, namespace: str, name: str) -> dict[str, str] | None:
        plural = "secrets" if kind == "Secret" else "configmaps"
        self.requests[f"GET {plural}"] += 1
        status, body = await self.api.request(
            "GET", f"/api/v1/namespaces/{namespace}/{plural}/{name}"
        )
        if status == 404:
            return None
        if status == 403:
            raise ForbiddenError(f"the operator may not read {kind} {name!r} in {namespace}")
        _check(status, body, f"reading a {kind}")
        obj = json.loads(body)
        data: dict[str, str] = dict(obj.get("stringData") or {})
        for key, value in (obj.get("data") or {}).items():
            if kind == "Secret":
                data[key] = base64.b64decode(value).decode("utf-8", errors="replace")
            else:
                data[key] = str(value)
        return data

    async def patch_config_map(
        self, namespace: str, name: str, data: dict[str, str | None], labels: dict[str, str]
    ) -> None:
        path = f"/api/v1/namespaces/{namespace}/configmaps"

        async def merge() -> int:
            self.requests["PATCH configmaps"] += 1
            status, body = await self.api.request(
                "PATCH", f"{path}/{name}", body={"data": data}, content_type=MERGE_PATCH
            )
            _check(status, body, "patching a ConfigMap", allowed=(404,))
            return status

        if await merge() != 404:
            return
        self.requests["POST configmaps"] += 1
        created = {
            "metadata": {"name": name, "labels": labels},
            "data": {k: v for k, v in data.items() if v is not None},
        }
        status, body = await self.api.request("POST", path, body=created)
        if status == 409:  # made meanwhile: merge into it
            await merge()
            return
        _check(status, body, "creating a ConfigMap")

    async def approval_policy_enforced(self, name: str) -> bool:
        """Is the ValidatingAdmissionPolicy ``name`` installed, failing closed, and bound with
        Deny? Only then has the API server checked who wrote each approval annotation."""
        base = "/apis/admissionregistration.k8s.io/v1"
        found = []
        for kind in ("validatingadmissionpolicies", "validatingadmissionpolicybindings"):
            self.requests[f"GET {kind}"] += 1
            status, body = await self.api.request("GET", f"{base}/{kind}/{name}")
            if status in (403, 404):
                return False
            _check(status, body, f"reading {kind} {name}")
            found.append(json.loads(body).get("spec") or {})
        policy, binding = found
        return bool(
            (policy.get("failurePolicy") or "Fail") == "Fail"
            and binding.get("policyName") == name
            and "Deny" in (binding.get("validationActions") or [])
            and binding.get("paramRef") is None
        )

    async def create_job(self, job: dict[str, Any]) -> bool:
        """Create; False when a Job of that name exists already (whose, the caller reads)."""
        self.requests["POST jobs"] += 1
        status, body = await self.api.request(
            "POST", f"/apis/batch/v1/namespaces/{job['metadata']['namespace']}/jobs", body=job
        )
        if status == 409:
            return False
        if status in (400, 403, 422):
            raise PodRejectedError(_message(body, status))
        _check(status, body, "creating a Job")
        return True

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.requests["GET jobs"] += 1
        status, body = await self.api.request(
            "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}"
        )
        if status == 404:
            return None
        _check(status, body, "reading a Job")
        job: dict[str, Any] = json.loads(body)
        return job

    async def delete_job(self, namespace: str, name: str) -> None:
        self.requests["DELETE jobs"] += 1
        status, body = await self.api.request(
            "DELETE",
            f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}",
            query=[("propagationPolicy", "Background"), ("gracePeriodSeconds", 0)],
        )
        _check(status, body, "deleting a Job", allowed=(404,))

    async def delete_pod(self, namespace: str, name: str) -> None:
        # The answer (the Pod as it is being deleted) is not parsed: parsing it into client
        # models was most of what a deletion cost the operator (a profile under the soak).
        self.requests["DELETE pods"] += 1
        status, body = await self.api.request(
            "DELETE",
            f"/api/v1/namespaces/{namespace}/pods/{name}",
            query=[("gracePeriodSeconds", 0)],
        )
        _check(status, body, "deleting a Pod", allowed=(404,))

    async def delete_run(self, namespace: str, name: str, uid: str) -> None:
        """Delete a finished run (its TTL passed); the uid precondition spares a new run that
        took the name meanwhile. Its pods go with it (owner references)."""
        self.requests["DELETE workflowruns"] += 1
        status, body = await self.api.request(
            "DELETE",
            _custom(namespace, "workflowruns", name),
            body={
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "preconditions": {"uid": uid},
                "propagationPolicy": "Background",
            },
        )
        _check(status, body, "deleting a run", allowed=(404, 409))

    async def set_run_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> str | None:
        self.requests["PATCH workflowruns"] += 1
        status, body = await self.api.request(
            "PATCH",
            _custom(namespace, "workflowruns", name),
            body={"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}},
            content_type=MERGE_PATCH,
        )
        if status in (404, 409):
            return None
        _check(status, body, "setting a run's finalizers")
        return str(json.loads(body)["metadata"]["resourceVersion"])

    async def record_event(self, run: dict[str, Any], event: RecordEvent) -> None:
        meta = run["metadata"]
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "WorkflowRun",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
                **({"fieldPath": f"status.steps{{{event.step}}}"} if event.step else {}),
            },
            "type": event.type,
            "reason": event.reason,
            "message": event.message[:1024],
            "source": {"component": "braid-operator"},
            "reportingComponent": "braid.dev/operator",
            "reportingInstance": self.instance[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self.requests["POST events"] += 1
        # An Event that cannot be written (its namespace is going, an Event quota) is lost:
        # the status, written first, holds what it said.
        status, response = await self.api.request(
            "POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=body
        )
        if status >= 500:
            raise rest.error_of(status, response, "recording an Event")


MERGE_PATCH = "application/merge-patch+json"


def _custom(namespace: str, plural: str, name: str | None = None) -> str:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}"
    return path if name is None else f"{path}/{name}"


__all__ = ["ApiError", "Cluster", "ConflictError", "ForbiddenError", "KubeCluster"]

"""The only code that talks to the API server: one narrow async protocol and its real
implementation on kubernetes_asyncio. Counts its requests by verb, for benchmarks."""

from __future__ import annotations

import base64
import json
import os
import socket
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, cast

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from braid.api.common import GROUP, VERSION
from braid.engine import RecordEvent


class ConflictError(Exception):
    """The object changed since it was read; reconcile again from fresh state."""


class ForbiddenError(Exception):
    """The operator may not read this object (its RBAC does not grant it)."""


class PodRejectedError(Exception):
    """The API server refused to create a step's Pod (invalid, forbidden, over quota): the
    attempt fails with this message rather than the reconcile being retried forever."""


def _message(body: str | bytes | None, fallback: object) -> str:
    try:
        message = json.loads(body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or fallback)[:1000]


def _deleted(status: int, body: bytes, fallback: str) -> None:
    """A deletion's answer: done, or gone already (404); anything else raises."""
    if status != 404 and not 200 <= status < 300:
        raise ApiException(status=status, reason=_message(body, fallback))


async def _unloaded(call: Any) -> tuple[int, bytes]:
    """Status and body of a call made with ``_preload_content=False``: the client then raises
    on no status at all, so every caller must look at the status itself."""
    response: Any = await call
    try:
        return int(response.status), await response.read()
    finally:
        response.release()


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
    """kubernetes_asyncio behind the ``Cluster`` protocol."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.api = api
        self.core = k8s.CoreV1Api(api)
        self.batch = k8s.BatchV1Api(api)
        self.custom = k8s.CustomObjectsApi(api)
        self.requests: Counter[str] = Counter()
        self.instance = socket.gethostname()

    @classmethod
    async def from_kubeconfig(cls, kubeconfig: str | None = None) -> KubeCluster:
        try:
            k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
        except k8s_config.ConfigException:
            await k8s_config.load_kube_config(config_file=kubeconfig)
        api = k8s.ApiClient()
        _skip_env_lookups(api)
        return cls(api)

    async def close(self) -> None:
        await self.api.close()

    async def served_resources(self, group: str, version: str) -> set[str]:
        """The resource names the API server serves for group/version (discovery)."""
        self.requests["GET discovery"] += 1
        try:
            found = await self.custom.get_api_resources(group, version)
        except ApiException as exc:
            if exc.status == 404:
                return set()
            raise
        return {r.name for r in found.resources or []}

    async def _get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.requests[f"GET {plural}"] += 1
        try:
            obj: dict[str, Any] = await self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    async def get_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get("workflowruns", namespace, name)

    async def list_runs(self, namespace: str) -> list[dict[str, Any]]:
        self.requests["LIST workflowruns"] += 1
        listed = await self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "workflowruns"
        )
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
        body = {**run, "status": status}
        self.requests["PUT workflowruns/status"] += 1
        try:
            updated: dict[str, Any] = await self.custom.replace_namespaced_custom_object_status(
                GROUP, VERSION, meta["namespace"], "workflowruns", meta["name"], body
            )
        except ApiException as exc:
            if exc.status == 409:
                raise ConflictError(meta["name"]) from None
            raise
        return updated

    # WorkflowSchedules (controller/schedules.py): only the real cluster has them.

    async def get_schedule(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get("workflowschedules", namespace, name)

    async def create_run(self, run: dict[str, Any]) -> bool:
        """Create; False when a run of that name exists already (a time already started)."""
        self.requests["POST workflowruns"] += 1
        try:
            await self.custom.create_namespaced_custom_object(
                GROUP, VERSION, run["metadata"]["namespace"], "workflowruns", run
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            if exc.status in (400, 403, 422):  # invalid, forbidden, over quota
                raise PodRejectedError(_message(exc.body, exc.status)) from None
            raise
        return True

    async def cancel_run(self, namespace: str, name: str) -> None:
        self.requests["PATCH workflowruns"] += 1
        try:
            await self.custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
                GROUP,
                VERSION,
                namespace,
                "workflowruns",
                name,
                {"spec": {"cancelled": True}},
                _content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def replace_schedule_status(
        self, schedule: dict[str, Any], status: dict[str, Any]
    ) -> None:
        meta = schedule["metadata"]
        self.requests["PUT workflowschedules/status"] += 1
        try:
            await self.custom.replace_namespaced_custom_object_status(
                GROUP,
                VERSION,
                meta["namespace"],
                "workflowschedules",
                meta["name"],
                {**schedule, "status": status},
            )
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone, or changed: the next pass writes it
                raise

    async def create_pod(self, pod: dict[str, Any]) -> bool:
        """Create; False when a Pod of that name exists already (whose it is, the caller
        reads). PodRejectedError when the API server refuses the Pod itself."""
        self.requests["POST pods"] += 1
        # The created Pod is not needed: skip deserialising it into models.
        status, body = await _unloaded(
            self.core.create_namespaced_pod(
                pod["metadata"]["namespace"], cast("Any", pod), _preload_content=False
            )
        )
        if status == 409:
            return False
        if status in (400, 403, 422):
            raise PodRejectedError(_message(body, status))
        if not 200 <= status < 300:
            raise ApiException(status=status, reason=_message(body, "creating a pod failed"))
        return True

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Pod's metadata and status (read after a 409, to see whose it is)."""
        self.requests["GET pods"] += 1
        status, body = await _unloaded(
            self.core.read_namespaced_pod(name, namespace, _preload_content=False)
        )
        if status == 404:
            return None
        if not 200 <= status < 300:
            raise ApiException(status=status, reason=_message(body, "reading a pod failed"))
        pod: dict[str, Any] = json.loads(body)
        return {"metadata": pod.get("metadata") or {}, "status": pod.get("status") or {}}

    async def read_data(self, kind: DataKind, namespace: str, name: str) -> dict[str, str] | None:
        plural = "secrets" if kind == "Secret" else "configmaps"
        self.requests[f"GET {plural}"] += 1
        read = (
            self.core.read_namespaced_secret
            if kind == "Secret"
            else self.core.read_namespaced_config_map
        )
        status, body = await _unloaded(read(name, namespace, _preload_content=False))
        if status == 404:
            return None
        if status == 403:
            raise ForbiddenError(f"the operator may not read {kind} {name!r} in {namespace}")
        if not 200 <= status < 300:
            raise ApiException(status=status, reason=_message(body, f"reading a {kind} failed"))
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
        self.requests["PATCH configmaps"] += 1
        try:
            await self.core.patch_namespaced_config_map(  # type: ignore[call-arg]
                name, namespace, {"data": data}, _content_type="application/merge-patch+json"
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
        else:
            return
        self.requests["POST configmaps"] += 1
        body = {
            "metadata": {"name": name, "labels": labels},
            "data": {k: v for k, v in data.items() if v is not None},
        }
        try:
            await self.core.create_namespaced_config_map(namespace, cast("Any", body))
        except ApiException as exc:
            if exc.status != 409:  # made meanwhile: merge into it
                raise
            self.requests["PATCH configmaps"] += 1
            await self.core.patch_namespaced_config_map(  # type: ignore[call-arg]
                name, namespace, {"data": data}, _content_type="application/merge-patch+json"
            )

    async def approval_policy_enforced(self, name: str) -> bool:
        """Is the ValidatingAdmissionPolicy ``name`` installed, failing closed, and bound with
        Deny? Only then has the API server checked who wrote each approval annotation."""
        api = k8s.AdmissionregistrationV1Api(self.api)
        self.requests["GET validatingadmissionpolicies"] += 1
        self.requests["GET validatingadmissionpolicybindings"] += 1
        try:
            policy = await api.read_validating_admission_policy(name)
            binding = await api.read_validating_admission_policy_binding(name)
        except ApiException as exc:
            if exc.status in (403, 404):
                return False
            raise
        return bool(
            (policy.spec.failure_policy or "Fail") == "Fail"
            and binding.spec.policy_name == name
            and "Deny" in (binding.spec.validation_actions or [])
            and binding.spec.param_ref is None
        )

    async def create_job(self, job: dict[str, Any]) -> bool:
        """Create; False when a Job of that name exists already (whose, the caller reads)."""
        self.requests["POST jobs"] += 1
        status, body = await _unloaded(
            self.batch.create_namespaced_job(
                job["metadata"]["namespace"], cast("Any", job), _preload_content=False
            )
        )
        if status == 409:
            return False
        if status in (400, 403, 422):
            raise PodRejectedError(_message(body, status))
        if not 200 <= status < 300:
            raise ApiException(status=status, reason=_message(body, "creating a Job failed"))
        return True

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.requests["GET jobs"] += 1
        status, body = await _unloaded(
            self.batch.read_namespaced_job(name, namespace, _preload_content=False)
        )
        if status == 404:
            return None
        if not 200 <= status < 300:
            raise ApiException(status=status, reason=_message(body, "reading a Job failed"))
        job: dict[str, Any] = json.loads(body)
        return job

    async def delete_job(self, namespace: str, name: str) -> None:
        self.requests["DELETE jobs"] += 1
        status, body = await _unloaded(
            self.batch.delete_namespaced_job(
                name,
                namespace,
                propagation_policy="Background",
                grace_period_seconds=0,
                _preload_content=False,
            )
        )
        _deleted(status, body, "deleting a Job failed")

    async def delete_pod(self, namespace: str, name: str) -> None:
        # The answer (the Pod as it is being deleted) is not read: parsing it into client
        # models was most of what a deletion cost the operator (a profile under the soak).
        self.requests["DELETE pods"] += 1
        status, body = await _unloaded(
            self.core.delete_namespaced_pod(
                name, namespace, grace_period_seconds=0, _preload_content=False
            )
        )
        _deleted(status, body, "deleting a Pod failed")

    async def delete_run(self, namespace: str, name: str, uid: str) -> None:
        """Delete a finished run (its TTL passed); the uid precondition spares a new run that
        took the name meanwhile. Its pods go with it (owner references)."""
        self.requests["DELETE workflowruns"] += 1
        try:
            await self.custom.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                "workflowruns",
                name,
                body=k8s.V1DeleteOptions(
                    preconditions=k8s.V1Preconditions(uid=uid), propagation_policy="Background"
                ),
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    async def set_run_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> str | None:
        self.requests["PATCH workflowruns"] += 1
        body = {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}}
        try:
            patched = await self.custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
                GROUP,
                VERSION,
                namespace,
                "workflowruns",
                name,
                body,
                _content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                return None
            raise
        return str(patched["metadata"]["resourceVersion"])

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
        status, response = await _unloaded(
            self.core.create_namespaced_event(
                meta["namespace"], cast("Any", body), _preload_content=False
            )
        )
        if status >= 500:
            raise ApiException(status=status, reason=_message(response, "recording failed"))


PROXY_VARIABLES = ("http_proxy", "https_proxy", "ws_proxy", "wss_proxy", "no_proxy", "netrc")


def _skip_env_lookups(api: k8s.ApiClient) -> None:
    """kubernetes_asyncio's HTTP session trusts the environment, so aiohttp looks for proxy
    variables and reads ~/.netrc in a worker thread on every request (a profile of the
    operator found it in 2 % of all samples, two thread hops per request). When no proxy
    variable is set and there is no ~/.netrc, there is nothing to find: the lookups are
    turned off. With either present, the session is left as it is."""
    if any(key.lower() in PROXY_VARIABLES for key in os.environ):
        return
    if (Path.home() / ".netrc").exists() or (Path.home() / "_netrc").exists():
        return
    session = getattr(getattr(api, "rest_client", None), "pool_manager", None)
    if session is not None and hasattr(session, "_trust_env"):
        session._trust_env = False  # noqa: SLF001 - aiohttp has no public setter

"""The API server as one person sees it: the web UI's client, which holds no rights of its own.

Every call is made with the user's credentials — their kubeconfig (``braid ui`` on a laptop)
or the bearer token they signed in with (the chart's UI, the Kubernetes Dashboard model) — so
RBAC and the approval admission policy judge each read and each decision exactly as they
would judge ``kubectl``. Objects come back as plain JSON (no client models); a refusal comes
back as ``ApiError`` carrying the API server's own message.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from braid.api.common import GROUP, VERSION
from braid.kube import rest
from braid.kube.rest import ApiError, Credentials, Rest

RUNS = f"/apis/{GROUP}/{VERSION}/namespaces/{{ns}}/workflowruns"
WORKFLOWS = f"/apis/{GROUP}/{VERSION}/namespaces/{{ns}}/workflows"
PODS = "/api/v1/namespaces/{ns}/pods"
WATCH_SECONDS = 240  # the API server ends a watch after this; the caller watches again


_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def checked(what: str, name: str) -> str:
    """A namespace or object name as it goes into a request path: never ``..``, a slash or
    anything else a path could be bent with."""
    if len(name) > 253 or not _NAME.match(name) or ".." in name:
        raise ApiError(
            400,
            f"{what} {name[:80]!r} is not a valid Kubernetes name "
            "(lowercase letters, digits, '-' and '.')",
        )
    return name


def _path(collection: str, namespace: str, name: str | None = None) -> str:
    path = collection.format(ns=checked("namespace", namespace))
    return path if name is None else f"{path}/{checked('name', name)}"


@dataclass(frozen=True)
class Identity:
    """Who the API server says the caller is (a SelfSubjectReview)."""

    user: str
    groups: tuple[str, ...]


class UserApi:
    """One user's view of the API server. ``namespace``: the one their kubeconfig context
    names (the first one the UI shows when they may not list namespaces)."""

    def __init__(self, api: Rest, namespace: str = "default") -> None:
        self.api = api
        self.namespace = namespace

    @classmethod
    async def from_kubeconfig(cls, kubeconfig: str | None, context: str | None) -> UserApi:
        try:
            credentials = rest.from_kubeconfig(kubeconfig, context)
        except (rest.ConfigError, OSError, ValueError) as exc:
            raise ApiError(0, f"the kubeconfig cannot be used: {exc}") from None
        return cls(Rest(credentials), credentials.namespace)

    @classmethod
    def from_token(
        cls, server: str, token: str, ca_file: str | None, *, verify: bool = True
    ) -> UserApi:
        """A client that sends ``token`` as its bearer token and nothing else of the UI's."""
        return cls(
            Rest(Credentials(server=server, token=token, ca_file=ca_file, insecure=not verify))
        )

    async def close(self) -> None:
        await self.api.close()

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return await self.api.json(method, path, **kwargs)

    async def _text(self, path: str, query: list[tuple[str, Any]]) -> str:
        status, body = await self.api.request("GET", path, query=query)
        if not 200 <= status < 300:
            raise rest.error_of(status, body, f"GET {path}")
        return str(body.decode(errors="replace"))

    async def whoami(self) -> Identity:
        review = await self._json(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        info = (review.get("status") or {}).get("userInfo") or {}
        return Identity(str(info.get("username") or ""), tuple(info.get("groups") or ()))

    async def namespaces(self) -> list[str]:
        """The namespaces the user may list; only their own when they may not."""
        try:
            listed = await self._json("GET", "/api/v1/namespaces")
        except ApiError as exc:
            if exc.status in (401, 403):
                return [self.namespace]
            raise
        return sorted(n["metadata"]["name"] for n in listed.get("items") or [])

    async def list_runs(self, namespace: str, selector: str | None = None) -> dict[str, Any]:
        query = [("labelSelector", selector)] if selector else []
        result: dict[str, Any] = await self._json("GET", _path(RUNS, namespace), query=query)
        return result

    async def get_run(self, namespace: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", _path(RUNS, namespace, name))
        return result

    async def watch_runs(
        self, namespace: str, version: str, name: str | None = None
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(type, object) from ``version`` on, until the API server ends the watch; an
        ``ERROR`` event (410: the version is too old) ends it too, after being yielded."""
        query: list[tuple[str, Any]] = [
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
        ]
        if name is not None:
            query.append(("fieldSelector", f"metadata.name={name}"))
        async for event in self.api.watch(_path(RUNS, namespace), query, seconds=WATCH_SECONDS):
            yield str(event.get("type")), event.get("object") or {}
            if event.get("type") == "ERROR":
                return

    async def create_run(self, namespace: str, run: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("POST", _path(RUNS, namespace), body=run)
        return result

    async def patch_run(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch; one that names ``metadata.resourceVersion`` is refused (409)
        when the run changed since that version."""
        result: dict[str, Any] = await self._json(
            "PATCH",
            _path(RUNS, namespace, name),
            body=patch,
            content_type="application/merge-patch+json",
        )
        return result

    async def list_workflows(self, namespace: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", _path(WORKFLOWS, namespace))
        return result

    async def get_workflow(self, namespace: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", _path(WORKFLOWS, namespace, name))
        return result

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        listed = await self._json(
            "GET", _path(PODS, namespace), query=[("labelSelector", selector)]
        )
        return list(listed.get("items") or [])

    async def pod_log(self, namespace: str, pod: str, container: str, tail: int) -> str:
        return await self._text(
            _path(PODS, namespace, pod) + "/log",
            [("container", container), ("tailLines", tail)],
        )

"""The operator's step pods, kept from one list-then-watch per namespace (or one for all):
what a reconcile needs of each pod, by run and by name, and a callback when one finishes or
is deleted before it finished.

kopf keeps the custom resources; the pods come straight from the API server, because they
are the hot path (several events per step) and kopf's per-event machinery (a deep copy of the
object to detect changes nobody asked for, two index handlers run in a thread each, the
handler's own invocation) was about a quarter of the busy samples in a profile of the
operator under steady load (bench/README.md). Events are parsed from the raw JSON lines,
never into client models.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import structlog

from braid.kube.artifact_pods import PREFIX_ANNOTATION
from braid.kube.pods import JOB_NAME_LABEL, LABEL_CONCURRENCY_KEY, LABEL_RUN, secret_refs
from braid.kube.rest import ApiError, Rest

log = structlog.get_logger("braid.controller")

RunKey = tuple[str, str]  # (namespace, name)
Snapshot = dict[str, Any]


class OnPod(Protocol):
    """A step pod finished, or went away (``lost``: before it finished)."""

    def __call__(self, namespace: str, run: str, pod: str, *, lost: bool) -> None: ...


FINISHED = ("Succeeded", "Failed")
# The API server ends each watch after this long (then it is started again from where it
# stopped); the client gives up on a silent connection a little later.
WATCH_SECONDS = 300
LIST_PAGE = 500
RETRY_AFTER_ERROR = 5.0


def snapshot(pod: Mapping[str, Any]) -> Snapshot:
    """What a reconcile needs of a step pod; the rest of the Pod is not kept in memory. The
    controlling owner says whose it is: a pod named like an attempt but owned by something
    else is never taken for that attempt's."""
    meta = pod["metadata"]
    owners = [r for r in meta.get("ownerReferences") or [] if r.get("controller")]
    labels = meta.get("labels") or {}
    return {
        "metadata": {
            "name": meta["name"],
            "ownerReferences": [
                {"uid": r.get("uid"), "kind": r.get("kind"), "controller": True} for r in owners
            ],
            "annotations": {
                k: v for k, v in (meta.get("annotations") or {}).items() if k == PREFIX_ANNOTATION
            },
        },
        "status": dict(pod.get("status") or {}),
        "key": labels.get(LABEL_CONCURRENCY_KEY),
        "deleting": bool(meta.get("deletionTimestamp")),
        "secrets": secret_refs(pod),  # whose values the result is masked with
    }


class PodIndex:
    """Step pods by run and by name. ``by_name`` also files a Job's Pod under the Job's name
    (runAs: Job: the attempt is the Job, its Pod's name is the Job controller's), so one name
    may hold several pods (a Job's evicted Pod and its replacement)."""

    def __init__(self) -> None:
        self.by_run: dict[RunKey, dict[str, Snapshot]] = {}
        self.by_name: dict[RunKey, dict[str, Snapshot]] = {}
        self.synced = asyncio.Event()  # every namespace listed once

    def lookup(self, namespace: str, name: str) -> list[Snapshot]:
        return list((self.by_name.get((namespace, name)) or {}).values())

    def of_run(self, key: RunKey) -> list[Snapshot]:
        return list((self.by_run.get(key) or {}).values())

    def pool_pods(self) -> list[tuple[RunKey, str, str | None]]:
        """(run, key, phase) of every step pod that holds a concurrency key."""
        return [
            (run, pod["key"], (pod.get("status") or {}).get("phase"))
            for run, pods in self.by_run.items()
            for pod in pods.values()
            if pod.get("key")
        ]

    def put(self, namespace: str, pod: Mapping[str, Any]) -> tuple[str, Snapshot] | None:
        """File a pod as the watch sent it: its run and its snapshot (None: not a step pod)."""
        labels = pod["metadata"].get("labels") or {}
        run = labels.get(LABEL_RUN)
        if not run:
            return None
        name = pod["metadata"]["name"]
        snap = snapshot(pod)
        self.by_run.setdefault((namespace, run), {})[name] = snap
        for alias in (name, labels.get(JOB_NAME_LABEL)):
            if alias:
                self.by_name.setdefault((namespace, alias), {})[name] = snap
        return run, snap

    def drop(self, namespace: str, pod: Mapping[str, Any]) -> str | None:
        """Forget a deleted pod; its run."""
        labels = pod["metadata"].get("labels") or {}
        run, name = labels.get(LABEL_RUN), pod["metadata"]["name"]
        if not run:
            return None
        _discard(self.by_run, (namespace, run), name)
        for alias in (name, labels.get(JOB_NAME_LABEL)):
            if alias:
                _discard(self.by_name, (namespace, alias), name)
        return str(run)

    def names_in(self, namespace: str | None) -> dict[tuple[str, str], str]:
        """(namespace, pod) -> run of every indexed pod in ``namespace`` (None: all)."""
        return {
            (ns, name): run
            for (ns, run), pods in self.by_run.items()
            if namespace is None or ns == namespace
            for name in pods
        }


def _discard(index: dict[RunKey, dict[str, Snapshot]], key: RunKey, name: str) -> None:
    found = index.get(key)
    if found is not None:
        found.pop(name, None)
        if not found:
            del index[key]


class PodWatch:
    """Lists the step pods, then watches them from that listing's resourceVersion; when the
    API server ends the watch it goes on from the last version seen, and when that is too
    old (410 Gone) it lists again — a pod missing from the new listing was deleted meanwhile.
    ``on_pod`` hears of every pod that finished and every pod deleted (finished or not)."""

    def __init__(
        self,
        api: Rest,
        namespaces: Iterable[str],
        selector: str,
        on_pod: OnPod,
        index: PodIndex | None = None,
        requests: Counter[str] | None = None,
    ) -> None:
        self.api = api
        self.namespaces: list[str | None] = list(namespaces) or [None]  # None: all of them
        self.selector = selector
        self.on_pod = on_pod
        self.index = index or PodIndex()
        self.tasks: list[asyncio.Task[None]] = []
        self.listed: set[str | None] = set()
        self.requests: Counter[str] = Counter() if requests is None else requests

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._follow(ns)) for ns in self.namespaces]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _follow(self, namespace: str | None) -> None:
        version: str | None = None
        while True:
            try:
                if version is None:
                    version = await self._list(namespace)
                version = await self._watch(namespace, version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the API server away: try again
                log.warning(
                    "Pod watch failed; trying again",
                    namespace=namespace or "(all)",
                    error=str(exc)[:300],
                    retry_after=RETRY_AFTER_ERROR,
                )
                await asyncio.sleep(RETRY_AFTER_ERROR)

    @staticmethod
    def _path(namespace: str | None) -> str:
        return "/api/v1/pods" if namespace is None else f"/api/v1/namespaces/{namespace}/pods"

    async def _list(self, namespace: str | None) -> str:
        """List in pages of LIST_PAGE pods: a large listing is never parsed whole at once
        (with 5,000 pods, the whole listing's JSON and its objects were the high-water mark
        of the operator's memory after a restart)."""
        before = self.index.names_in(namespace)
        now: set[tuple[str, str]] = set()
        token: str | None = None
        while True:
            self.requests["LIST pods"] += 1
            query: list[tuple[str, Any]] = [("labelSelector", self.selector), ("limit", LIST_PAGE)]
            if token:
                query.append(("continue", token))
            try:
                listed = await self.api.json("GET", self._path(namespace), query=query, seconds=60)
            except ApiError as exc:
                if exc.status != 410 or not token:
                    raise
                now, token = set(), None  # the listing's continue token expired: start over
                continue
            for pod in listed.get("items") or []:
                ns = pod["metadata"]["namespace"]
                now.add((ns, pod["metadata"]["name"]))
                self._changed(ns, pod, deleted=False)
            token = (listed.get("metadata") or {}).get("continue")
            if not token:
                break
            del listed
        for (ns, name), run in before.items():
            if (ns, name) not in now:  # deleted while nobody watched
                self._gone(ns, run, name)
        self.listed.add(namespace)
        if len(self.listed) == len(self.namespaces):
            self.synced.set()
        return str(listed["metadata"]["resourceVersion"])

    @property
    def synced(self) -> asyncio.Event:
        return self.index.synced

    async def _watch(self, namespace: str | None, version: str) -> str | None:
        """Events from ``version`` on; the last version seen when the watch ended, None
        when it must list again."""
        self.requests["WATCH pods"] += 1
        query = [
            ("labelSelector", self.selector),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
        ]
        async for event in self.api.watch(self._path(namespace), query, seconds=WATCH_SECONDS):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:  # too old: list again
                    return None
                raise ApiError(int(obj.get("code") or 0), str(obj.get("message")))
            version = (obj.get("metadata") or {}).get("resourceVersion") or version
            if kind in ("ADDED", "MODIFIED"):
                self._changed(obj["metadata"]["namespace"], obj, deleted=False)
            elif kind == "DELETED":
                self._changed(obj["metadata"]["namespace"], obj, deleted=True)
        return version

    def _changed(self, namespace: str, pod: Mapping[str, Any], *, deleted: bool) -> None:
        finished = (pod.get("status") or {}).get("phase") in FINISHED
        if deleted:
            run = self.index.drop(namespace, pod)
            if run is not None:
                self.on_pod(namespace, run, pod["metadata"]["name"], lost=not finished)
            return
        filed = self.index.put(namespace, pod)
        if filed is not None and finished:
            self.on_pod(namespace, filed[0], pod["metadata"]["name"], lost=False)

    def _gone(self, namespace: str, run: str, name: str) -> None:
        found = (self.index.by_run.get((namespace, run)) or {}).get(name) or {}
        finished = (found.get("status") or {}).get("phase") in FINISHED
        self.index.drop(namespace, {"metadata": {"name": name, "labels": {LABEL_RUN: run}}})
        for key, pods in list(self.index.by_name.items()):  # a Job's alias of that pod
            if key[0] == namespace and name in pods:
                _discard(self.index.by_name, key, name)
        self.on_pod(namespace, run, name, lost=not finished)

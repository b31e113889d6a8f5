"""The operator's step pods, kept from one list-then-watch per namespace (or one for all;
kube/listwatch.py): what a reconcile needs of each pod, by run and by name, and a callback
when one finishes or is deleted before it finished.

The pods come straight from the API server, not through kopf, because they are the hot path
(several events per step) and kopf's per-event machinery (a deep copy of the object to
detect changes nobody asked for, two index handlers run in a thread each, the handler's own
invocation) was about a quarter of the busy samples in a profile of the operator under
steady load (bench/README.md).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from braid.kube.artifact_pods import PREFIX_ANNOTATION
from braid.kube.listwatch import ListWatch
from braid.kube.pods import JOB_NAME_LABEL, LABEL_CONCURRENCY_KEY, LABEL_RUN, secret_refs
from braid.kube.rest import Rest

RunKey = tuple[str, str]  # (namespace, name)
Snapshot = dict[str, Any]


class OnPod(Protocol):
    """A step pod finished, or went away (``lost``: before it finished)."""

    def __call__(self, namespace: str, run: str, pod: str, *, lost: bool) -> None: ...


FINISHED = ("Succeeded", "Failed")


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


class PodWatch(ListWatch):
    """The step pods (kube/listwatch.py: listed, then watched). ``on_pod`` hears of every
    pod that finished and every pod deleted (finished or not)."""

    resource = "pods"

    def __init__(
        self,
        api: Rest,
        namespaces: Iterable[str],
        selector: str,
        on_pod: OnPod,
        index: PodIndex | None = None,
        requests: Counter[str] | None = None,
    ) -> None:
        self.index = index or PodIndex()
        super().__init__(api, namespaces, selector, requests, self.index.synced)
        self.on_pod = on_pod

    def changed(self, namespace: str, obj: Mapping[str, Any], *, deleted: bool) -> None:
        self._changed(namespace, obj, deleted=deleted)

    def relisted(self, namespace: str | None, now: set[tuple[str, str]]) -> None:
        for (ns, name), run in self.index.names_in(namespace).items():
            if (ns, name) not in now:  # deleted while nobody watched
                self._gone(ns, run, name)

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

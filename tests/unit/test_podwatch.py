"""The operator's own pod watch: what it files, what it forgets, what it reports (the real
watch against the API server is exercised by every e2e test)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from braid.kube.podwatch import PodIndex, PodWatch
from braid.kube.rest import Credentials, Rest
from tests.unit.test_rest import api_server


def pod(name: str, run: str = "r", phase: str = "Running", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "labels": {"braid.dev/run": run, **labels},
            "ownerReferences": [{"uid": "u1", "kind": "WorkflowRun", "controller": True}],
            "resourceVersion": "5",
        },
        "spec": {"containers": [{"name": "main", "env": [{"name": "A", "value": "b"}]}]},
        "status": {"phase": phase},
    }


class Heard:
    def __init__(self) -> None:
        self.news: list[tuple[str, str, str, bool]] = []

    def __call__(self, namespace: str, run: str, pod: str, *, lost: bool) -> None:
        self.news.append((namespace, run, pod, lost))


def watch_of(heard: Heard) -> PodWatch:
    return PodWatch(Rest(Credentials(server="http://127.0.0.1:9")), ["ns"], "braid.dev/run", heard)


def test_a_finished_pod_is_filed_and_reported_a_running_one_only_filed():
    heard = Heard()
    watch = watch_of(heard)
    watch._changed("ns", pod("r-a-1"), deleted=False)
    assert heard.news == []
    watch._changed("ns", pod("r-a-1", phase="Succeeded"), deleted=False)
    assert heard.news == [("ns", "r", "r-a-1", False)]
    (snap,) = watch.index.lookup("ns", "r-a-1")
    assert snap["status"]["phase"] == "Succeeded"
    assert snap["metadata"]["ownerReferences"] == [
        {"uid": "u1", "kind": "WorkflowRun", "controller": True}
    ]
    assert [p["metadata"]["name"] for p in watch.index.of_run(("ns", "r"))] == ["r-a-1"]


def test_a_pod_deleted_before_it_finished_is_lost_and_forgotten():
    heard = Heard()
    watch = watch_of(heard)
    watch._changed("ns", pod("r-a-1"), deleted=False)
    watch._changed("ns", pod("r-a-1"), deleted=True)
    assert heard.news == [("ns", "r", "r-a-1", True)]
    assert watch.index.lookup("ns", "r-a-1") == []
    assert watch.index.by_run == {}


def test_a_jobs_pod_is_found_by_the_jobs_name_too():
    heard = Heard()
    watch = watch_of(heard)
    watch._changed(
        "ns", pod("r-a-1-x7k2p", **{"batch.kubernetes.io/job-name": "r-a-1"}), deleted=False
    )
    assert [p["metadata"]["name"] for p in watch.index.lookup("ns", "r-a-1")] == ["r-a-1-x7k2p"]
    watch._changed(
        "ns", pod("r-a-1-x7k2p", **{"batch.kubernetes.io/job-name": "r-a-1"}), deleted=True
    )
    assert watch.index.by_name == {}


def test_a_pod_missing_from_a_new_listing_was_deleted_meanwhile():
    heard = Heard()
    watch = watch_of(heard)
    watch._changed("ns", pod("r-a-1"), deleted=False)
    watch._changed("ns", pod("r-b-1", phase="Succeeded"), deleted=False)
    heard.news.clear()

    asked: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        asked.append(dict(request.query))
        token = request.query.get("continue")
        if token is None:  # page 1 of 2
            meta = {"resourceVersion": "9", "continue": "page2"}
            return web.json_response({"metadata": meta, "items": [pod("r-c-1")]})
        if token == "page2" and len(asked) == 2:  # the token expired: start over
            return web.json_response({"kind": "Status", "code": 410}, status=410)
        items = [pod("r-b-1", phase="Succeeded")]
        return web.json_response({"metadata": {"resourceVersion": "9"}, "items": items})

    async def listed() -> str:
        async with api_server(handler) as url:
            watch.api = Rest(Credentials(server=url))
            try:
                return await watch._list("ns")
            finally:
                await watch.api.close()

    assert asyncio.run(listed()) == "9"
    assert [a.get("continue") for a in asked] == [None, "page2", None, "page2"]
    assert {a["limit"] for a in asked} == {"500"}
    assert ("ns", "r", "r-a-1", True) in heard.news  # gone while nobody watched: lost
    assert watch.index.lookup("ns", "r-a-1") == []
    assert [p["metadata"]["name"] for p in watch.index.lookup("ns", "r-c-1")] == ["r-c-1"]
    assert watch.synced.is_set()


def test_pool_pods_are_the_pods_holding_a_key():
    index = PodIndex()
    index.put("ns", pod("r-a-1", **{"braid.dev/concurrency-key": "gpu"}))
    index.put("ns", pod("r-b-1"))
    assert index.pool_pods() == [(("ns", "r"), "gpu", "Running")]

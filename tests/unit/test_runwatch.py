"""The operator's own watch of its runs, against a loopback server that speaks the API
server's list and watch protocol: listed in pages, watched from the listing's version, the
echo of the operator's own write dropped, a deletion missed while nobody watched found by the
next listing (the real API server is exercised by every e2e test)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from braid.controller.apply import Inbox
from braid.controller.runtime import Runtime
from braid.kube.rest import Credentials, Rest
from braid.kube.runwatch import RunWatch
from braid.kube.schedulewatch import ScheduleWatch
from tests.unit.test_rest import api_server

PATH = "/apis/braid.dev/v1alpha1/namespaces/ns/workflowruns"


def run(name: str, version: str, **labels: str) -> dict[str, Any]:
    meta = {"name": name, "namespace": "ns", "resourceVersion": version, "labels": labels}
    return {"apiVersion": "braid.dev/v1alpha1", "kind": "WorkflowRun", "metadata": meta}


class Heard:
    def __init__(self) -> None:
        self.runs: list[tuple[str, str]] = []
        self.gone: list[tuple[tuple[str, str], str | None]] = []
        self.kept: set[tuple[str, str]] = set()
        self.done = asyncio.Event()

    def on_run(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.runs.append((meta["name"], meta["resourceVersion"]))
        self.kept.add((meta["namespace"], meta["name"]))

    def on_gone(self, key: tuple[str, str], obj: dict[str, Any] | None) -> None:
        self.gone.append((key, None if obj is None else obj["metadata"]["resourceVersion"]))
        self.kept.discard(key)
        if obj is None:
            self.done.set()


class Runs:
    """The API server's side: a listing in two pages, a watch that sends a change, a
    bookmark, a run added and deleted, then a watch that says 410 (too old), a listing
    without r1, and a watch that sends nothing more."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, dict[str, str]]] = []
        self.watches = 0
        self.resting = asyncio.Event()  # the third watch came: nothing more to send
        self.released = asyncio.Event()  # the test is done with it

    async def handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        self.asked.append((request.path, query))
        if query.get("watch") != "true":
            if query.get("continue") == "p2":
                items, more = [run("r2", "3")], {}
            elif self.watches == 0:
                items, more = [run("r1", "2")], {"continue": "p2"}
            else:  # listed again after the 410: r1 went while nobody watched
                items, more = [run("r2", "9")], {}
            meta = {"resourceVersion": "10" if self.watches else "5", **more}
            return web.json_response({"metadata": meta, "items": items})
        self.watches += 1
        response = web.StreamResponse()
        await response.prepare(request)
        events: list[dict[str, Any]] = []
        if self.watches == 1:
            events = [
                {"type": "MODIFIED", "object": run("r2", "6")},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "7"}}},
                {"type": "ADDED", "object": run("r3", "8")},
                {"type": "DELETED", "object": run("r3", "8")},
            ]
        elif self.watches == 2:
            events = [{"type": "ERROR", "object": {"kind": "Status", "code": 410}}]
        else:
            self.resting.set()
            await self.released.wait()
        for event in events:
            await response.write(json.dumps(event).encode() + b"\n")
        await response.write_eof()
        return response


def test_runs_are_listed_in_pages_watched_and_a_missed_deletion_found_on_relisting():
    heard, server = Heard(), Runs()

    async def scenario() -> RunWatch:
        async with api_server(server.handle) as url:
            api = Rest(Credentials(server=url))
            watch = RunWatch(
                api, ["ns"], "shard=a", heard.on_run, heard.on_gone, lambda: set(heard.kept)
            )
            watch.start()
            try:
                await asyncio.wait_for(asyncio.gather(heard.done.wait(), server.resting.wait()), 10)
            finally:
                await watch.stop()
                server.released.set()
                await api.close()
        return watch

    watch = asyncio.run(scenario())
    assert watch.synced.is_set()
    assert watch.requests == {"LIST workflowruns": 3, "WATCH workflowruns": 3}
    assert {path for path, _ in server.asked} == {PATH}
    assert all(q["labelSelector"] == "shard=a" for _, q in server.asked)
    lists = [(q.get("continue"), q["limit"]) for _, q in server.asked if "watch" not in q]
    assert lists == [(None, "500"), ("p2", "500"), (None, "500")]
    # from the listing's version, then from the last one seen (r3's), then the new listing's
    watched = [q["resourceVersion"] for _, q in server.asked if "watch" in q]
    assert watched == ["5", "8", "10"]
    assert heard.runs == [("r1", "2"), ("r2", "3"), ("r2", "6"), ("r3", "8"), ("r2", "9")]
    assert heard.gone == [(("ns", "r3"), "8"), (("ns", "r1"), None)]


class Told:
    def __init__(self) -> None:
        self.inbox = Inbox()
        self.metrics = None
        self.written: dict[tuple[str, str], str] = {}
        self.children_checked: dict[tuple[str, str], set[str]] = {}
        self.gone: list[dict[str, Any]] = []
        self.pools = self.queues = self

    def child_gone(self, obj: dict[str, Any]) -> None:
        self.gone.append(obj)

    def forget(self, key: Any) -> set[Any]:
        return set()

    release = forget


def test_the_runtime_wakes_only_for_news_and_tells_a_parent_of_a_child_gone_unseen():
    async def scenario() -> tuple[Told, Runtime]:
        told = Told()
        runtime = Runtime(told)  # type: ignore[arg-type]
        told.written[("ns", "r1")] = "4"
        runtime.run_changed(run("r1", "4"))  # the echo of the operator's own status write
        assert ("ns", "r1") not in runtime.runs
        assert not runtime.timers
        runtime.run_changed(run("r1", "5"))  # news
        kept = runtime.runs.get(("ns", "r1"))
        assert kept is not None
        assert kept["metadata"]["resourceVersion"] == "5"
        assert ("ns", "r1") in runtime.timers
        runtime.timers.pop(("ns", "r1")).cancel()
        runtime.run_changed(run("r1", "3"))  # an earlier write's echo, after a later one
        runtime.run_changed(run("r1", "5"))  # the same version again (a new listing)
        assert not runtime.timers
        runtime.run_changed(run("r1", "6"))  # news again
        assert ("ns", "r1") in runtime.timers
        assert runtime.known_runs() == {("ns", "r1")}
        runtime.run_gone(("ns", "r1"), None)  # went while nobody watched: the kept one tells
        return told, runtime

    told, runtime = asyncio.run(scenario())
    assert [g["metadata"]["resourceVersion"] for g in told.gone] == ["6"]
    assert runtime.known_runs() == set()
    assert not runtime.timers
    assert ("ns", "r1") not in told.written


def test_the_schedule_watch_tells_changes_deletions_and_schedules_gone_while_unwatched():
    changed: list[tuple[str, str]] = []
    deleted: list[tuple[str, str]] = []
    followed = {("ns", "a"), ("ns", "b"), ("other", "c")}
    watch = ScheduleWatch(
        Rest(Credentials(server="http://127.0.0.1:9")),
        ["ns", "other"],
        changed.append,
        deleted.append,
        lambda: sorted(followed),
    )
    watch.changed("ns", {"metadata": {"name": "a"}}, deleted=False)
    watch.changed("ns", {"metadata": {"name": "b"}}, deleted=True)
    watch.relisted("ns", {("ns", "a")})  # b went while nobody watched; c is another listing's
    assert changed == [("ns", "a")]
    assert deleted == [("ns", "b"), ("ns", "b")]
    assert watch.resource == "workflowschedules"
    assert watch.selector == ""

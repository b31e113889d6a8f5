"""The operator's runtime: news that arrives while a run reconciles is never pushed back by
that reconcile's own "come back later"."""

from __future__ import annotations

import asyncio
from typing import Any

from braid.controller.apply import Inbox
from braid.controller.reconcile import Result
from braid.controller.runtime import Runtime


class SlowReconciler:
    """Each reconcile takes a moment and asks to come back in a minute."""

    def __init__(self) -> None:
        self.inbox = Inbox()
        self.metrics = None
        self.calls = 0

    async def reconcile(
        self, namespace: str, name: str, pods: Any, run: Any = None, deferred: Any = None
    ) -> Result:
        self.calls += 1
        await asyncio.sleep(0.05)
        if self.calls == 1:
            # a webhook result lands as this reconcile ends, before its requeue is set
            self.inbox.notify((namespace, name))
        return Result(60.0)


def test_news_during_a_reconcile_is_reconciled_at_once_not_after_the_requeue():
    async def scenario() -> int:
        reconciler = SlowReconciler()
        runtime = Runtime(reconciler)  # type: ignore[arg-type]
        await runtime.trigger("ns", "r")
        await asyncio.sleep(0.3)
        for timer in runtime.timers.values():
            timer.cancel()
        return reconciler.calls

    assert asyncio.run(scenario()) == 2


def _run(version: str, **status: Any) -> dict[str, Any]:
    meta = {"namespace": "ns", "name": "r", "resourceVersion": version}
    return {"metadata": meta, "status": status}


class EchoReconciler:
    """Reconciles from the object it is handed and leaves it as it was (no write)."""

    def __init__(self, runtime_: list[Runtime], version: str | None = None) -> None:
        self.inbox = Inbox()
        self.metrics = None
        self.given: list[Any] = []
        self.runtime = runtime_
        self.version = version

    async def reconcile(
        self, namespace: str, name: str, pods: Any, run: Any = None, deferred: Any = None
    ) -> Result:
        self.given.append(run)
        if self.version is not None:  # the watch brings a newer version meanwhile
            self.runtime[0].seen(_run(self.version, news=True))
        return Result(None, frozenset(), run)


def test_a_reconcile_starts_from_the_run_last_seen_and_keeps_what_it_left():
    async def scenario() -> tuple[list[Any], Any]:
        box: list[Runtime] = []
        reconciler = EchoReconciler(box)
        runtime = Runtime(reconciler)  # type: ignore[arg-type]
        box.append(runtime)
        runtime.seen(_run("4"))
        await runtime.trigger("ns", "r")
        await runtime.trigger("ns", "r")
        return reconciler.given, runtime.runs.get(("ns", "r"))

    given, kept = asyncio.run(scenario())
    assert [g["metadata"]["resourceVersion"] for g in given] == ["4", "4"]
    assert kept is not None
    assert kept["metadata"]["resourceVersion"] == "4"


def test_a_newer_version_seen_during_a_reconcile_is_not_replaced_by_the_older_one():
    async def scenario() -> Any:
        box: list[Runtime] = []
        runtime = Runtime(EchoReconciler(box, version="5"))  # type: ignore[arg-type]
        box.append(runtime)
        runtime.seen(_run("4"))
        await runtime.trigger("ns", "r")
        return runtime.runs.get(("ns", "r"))

    kept = asyncio.run(scenario())
    assert kept["metadata"]["resourceVersion"] == "5"
    assert kept["status"] == {"news": True}


def test_versions_that_are_not_integers_are_never_compared_the_run_is_read_again():
    runtime = Runtime(EchoReconciler([]))  # type: ignore[arg-type]
    runtime.seen(_run("a1"))
    runtime.seen(_run("b2"))
    assert ("ns", "r") not in runtime.runs


def test_a_reconcile_that_knows_nothing_current_drops_the_kept_run():
    async def scenario() -> int:
        runtime = Runtime(SlowReconciler())  # type: ignore[arg-type]
        runtime.seen(_run("4"))
        await runtime.trigger("ns", "r")
        for timer in runtime.timers.values():
            timer.cancel()
        return len(runtime.runs)

    assert asyncio.run(scenario()) == 0


class Closing:
    """Reconciles that take long; counts closes."""

    def __init__(self) -> None:
        self.inbox = Inbox()
        self.metrics = None
        self.closed = 0

    async def reconcile(
        self, namespace: str, name: str, pods: Any, run: Any = None, deferred: Any = None
    ) -> Result:
        await asyncio.sleep(60)
        return Result()

    async def close(self) -> None:
        self.closed += 1


def test_closing_stops_wake_ups_and_the_reconciles_they_started_before_the_client_closes():
    async def scenario() -> tuple[Runtime, Closing]:
        reconciler = Closing()
        runtime = Runtime(reconciler)  # type: ignore[arg-type]
        runtime.wake(("ns", "a"), 0.0)  # starts a reconcile
        runtime.wake(("ns", "b"), 30.0)  # a wake-up due later
        await asyncio.sleep(0.05)
        assert len(runtime.tasks) == 1
        await asyncio.wait_for(runtime.close(), 5)
        return runtime, reconciler

    runtime, reconciler = asyncio.run(scenario())
    assert runtime.timers == {}
    assert runtime.tasks == set()
    assert reconciler.closed == 1

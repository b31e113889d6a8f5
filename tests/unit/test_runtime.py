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

    async def reconcile(self, namespace: str, name: str, pods: Any) -> Result:
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

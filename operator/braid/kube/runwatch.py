"""The WorkflowRuns, followed straight from the API server (kube/listwatch.py) as the step
pods are. kopf watched them until a profile of the operator moving 100 concurrent 3-step
runs found its per-event handling of runs (a body and its views built, the change checked
against the last handled state, the handler invoked through its machinery, and all of it
also for the echo of every status write) a fifth of the busy samples (bench/README.md,
"Passing the peers"). kopf keeps them only for a hot standby, whose pause it decides.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from braid.api.common import GROUP, VERSION
from braid.kube.listwatch import ListWatch
from braid.kube.rest import Rest

RunKey = tuple[str, str]  # (namespace, name)


class RunWatch(ListWatch):
    """``on_run`` hears of every run added or changed, ``on_gone`` of every run deleted
    (with its last object, None when it was deleted while nobody watched); ``known`` says
    which runs are kept, so a new listing tells which of them went meanwhile."""

    prefix = f"/apis/{GROUP}/{VERSION}"
    resource = "workflowruns"

    def __init__(
        self,
        api: Rest,
        namespaces: Iterable[str],
        selector: str,
        on_run: Callable[[dict[str, Any]], None],
        on_gone: Callable[[RunKey, dict[str, Any] | None], None],
        known: Callable[[], Iterable[RunKey]],
        requests: Counter[str] | None = None,
    ) -> None:
        super().__init__(api, namespaces, selector, requests)
        self.on_run = on_run
        self.on_gone = on_gone
        self.known = known

    def changed(self, namespace: str, obj: Mapping[str, Any], *, deleted: bool) -> None:
        run = dict(obj)
        if deleted:
            self.on_gone((namespace, run["metadata"]["name"]), run)
        else:
            self.on_run(run)

    def relisted(self, namespace: str | None, now: set[tuple[str, str]]) -> None:
        for key in list(self.known()):
            if (namespace is None or key[0] == namespace) and key not in now:
                self.on_gone(key, None)

"""The WorkflowSchedules, followed straight from the API server (kube/listwatch.py) as the
runs and step pods are, when the operator runs standalone; a hot standby leaves them to kopf,
whose peering pauses them with the runs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from braid.api.common import GROUP, VERSION
from braid.kube.listwatch import ListWatch
from braid.kube.rest import Rest

ScheduleKey = tuple[str, str]  # (namespace, name)


class ScheduleWatch(ListWatch):
    """``on_changed`` hears of every schedule added or changed, ``on_deleted`` of every one
    deleted (also of those a new listing no longer has: ``known`` says which are followed).
    Only keys: the schedule's loop reads the schedule itself."""

    prefix = f"/apis/{GROUP}/{VERSION}"
    resource = "workflowschedules"

    def __init__(
        self,
        api: Rest,
        namespaces: Iterable[str],
        on_changed: Callable[[ScheduleKey], None],
        on_deleted: Callable[[ScheduleKey], None],
        known: Callable[[], Iterable[ScheduleKey]],
        requests: Counter[str] | None = None,
    ) -> None:
        super().__init__(api, namespaces, "", requests)
        self.on_changed = on_changed
        self.on_deleted = on_deleted
        self.known = known

    def changed(self, namespace: str, obj: Mapping[str, Any], *, deleted: bool) -> None:
        key = (namespace, obj["metadata"]["name"])
        if deleted:
            self.on_deleted(key)
        else:
            self.on_changed(key)

    def relisted(self, namespace: str | None, now: set[tuple[str, str]]) -> None:
        for key in list(self.known()):
            if (namespace is None or key[0] == namespace) and key not in now:
                self.on_deleted(key)

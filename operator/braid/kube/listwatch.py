"""List-then-watch, the way the operator follows what it keeps (its step pods, its runs):
list in pages, watch from that listing's resourceVersion, go on from the last version seen
when the API server ends a watch, and list again when that version is too old (410 Gone) —
an object missing from the new listing was deleted meanwhile. Events are parsed from the
raw JSON lines, never into client models, and handed on as plain dicts.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import structlog

from braid.kube.rest import ApiError, Rest

log = structlog.get_logger("braid.controller")

# The API server ends each watch after this long (then it is started again from where it
# stopped); the client gives up on a silent connection a little later.
WATCH_SECONDS = 300
LIST_PAGE = 500
RETRY_AFTER_ERROR = 5.0


class ListWatch:
    """Follows one collection (``resource``, under ``prefix``: ``/api/v1`` or
    ``/apis/group/version``) in each namespace given (none: one watch of all). A subclass
    says what an object is to it (``changed``) and what to do with the ones a listing no
    longer has (``relisted``)."""

    prefix = "/api/v1"
    resource = ""

    def __init__(
        self,
        api: Rest,
        namespaces: Iterable[str],
        selector: str,
        requests: Counter[str] | None = None,
        synced: asyncio.Event | None = None,
    ) -> None:
        self.api = api
        self.namespaces: list[str | None] = list(namespaces) or [None]  # None: all of them
        self.selector = selector
        self.tasks: list[asyncio.Task[None]] = []
        self.listed: set[str | None] = set()
        self.requests: Counter[str] = Counter() if requests is None else requests
        self.synced = asyncio.Event() if synced is None else synced  # every namespace listed

    def changed(self, namespace: str, obj: Mapping[str, Any], *, deleted: bool) -> None:
        raise NotImplementedError

    def relisted(self, namespace: str | None, now: set[tuple[str, str]]) -> None:
        """A listing of ``namespace`` (None: all) ended with ``now`` (namespace, name) in it;
        what was kept and is not in it was deleted while nobody watched."""
        raise NotImplementedError

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
                    "Watch failed; trying again",
                    resource=self.resource,
                    namespace=namespace or "(all)",
                    error=str(exc)[:300],
                    retry_after=RETRY_AFTER_ERROR,
                )
                await asyncio.sleep(RETRY_AFTER_ERROR)

    def _path(self, namespace: str | None) -> str:
        if namespace is None:
            return f"{self.prefix}/{self.resource}"
        return f"{self.prefix}/namespaces/{namespace}/{self.resource}"

    def _query(self) -> list[tuple[str, Any]]:
        return [("labelSelector", self.selector)] if self.selector else []

    async def _list(self, namespace: str | None) -> str:
        """List in pages of LIST_PAGE: a large listing is never parsed whole at once (with
        5,000 pods, the whole listing's JSON and its objects were the high-water mark of the
        operator's memory after a restart)."""
        now: set[tuple[str, str]] = set()
        token: str | None = None
        while True:
            self.requests[f"LIST {self.resource}"] += 1
            query = [*self._query(), ("limit", LIST_PAGE)]
            if token:
                query.append(("continue", token))
            try:
                listed = await self.api.json("GET", self._path(namespace), query=query, seconds=60)
            except ApiError as exc:
                if exc.status != 410 or not token:
                    raise
                now, token = set(), None  # the listing's continue token expired: start over
                continue
            for obj in listed.get("items") or []:
                ns = obj["metadata"]["namespace"]
                now.add((ns, obj["metadata"]["name"]))
                self.changed(ns, obj, deleted=False)
            token = (listed.get("metadata") or {}).get("continue")
            if not token:
                break
            del listed
        self.relisted(namespace, now)
        self.listed.add(namespace)
        if len(self.listed) == len(self.namespaces):
            self.synced.set()
        return str(listed["metadata"]["resourceVersion"])

    async def _watch(self, namespace: str | None, version: str) -> str | None:
        """Events from ``version`` on; the last version seen when the watch ended, None
        when it must list again."""
        self.requests[f"WATCH {self.resource}"] += 1
        query = [*self._query(), ("resourceVersion", version), ("allowWatchBookmarks", "true")]
        async for event in self.api.watch(self._path(namespace), query, seconds=WATCH_SECONDS):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:  # too old: list again
                    return None
                raise ApiError(int(obj.get("code") or 0), str(obj.get("message")))
            version = (obj.get("metadata") or {}).get("resourceVersion") or version
            if kind in ("ADDED", "MODIFIED"):
                self.changed(obj["metadata"]["namespace"], obj, deleted=False)
            elif kind == "DELETED":
                self.changed(obj["metadata"]["namespace"], obj, deleted=True)
        return version

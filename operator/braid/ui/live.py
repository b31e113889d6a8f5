"""Pages kept live: a list-then-watch of runs (as the viewer) turned into server-sent events,
each carrying the HTML the page swaps in. A burst of changes is painted once; a repaint that
looks the same is not sent; the API server ending a watch means list (or get) and watch
again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from braid.kube.rest import ApiError
from braid.kube.userapi import UserApi

KEEPALIVE = 15.0  # seconds between SSE comments, so proxies keep the stream open
SETTLE = 0.2  # seconds a burst of watch events is gathered before one repaint
Runs = dict[str, dict[str, Any]]
Change = tuple[str, dict[str, Any]] | None  # None: the watch ended


def event(name: str, html: str) -> str:
    data = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    return f"event: {name}\n{data}\n"


async def _snapshot(api: UserApi, namespace: str, name: str | None) -> tuple[Runs, str]:
    if name is None:
        listed = await api.list_runs(namespace)
        runs = {r["metadata"]["name"]: r for r in listed.get("items") or []}
        return runs, str(listed["metadata"]["resourceVersion"])
    try:
        one = await api.get_run(namespace, name)
    except ApiError as exc:
        if exc.status != 404:
            raise
        return {}, "0"
    return {name: one}, str(one["metadata"]["resourceVersion"])


def _apply(runs: Runs, batch: list[Change]) -> bool:
    """Fold a batch of watch events into ``runs``; False when the watch ended."""
    going = True
    for item in batch:
        if item is None or item[0] == "ERROR":
            going = False
            continue
        kind, obj = item
        key = (obj.get("metadata") or {}).get("name", "")
        if kind == "DELETED":
            runs.pop(key, None)
        elif kind in ("ADDED", "MODIFIED"):
            runs[key] = obj
    return going


async def _watched(
    api: UserApi, namespace: str, name: str | None, runs: Runs, version: str
) -> AsyncIterator[bool]:
    """True after each batch folded into ``runs``, False for a quiet KEEPALIVE; ends with
    the watch."""
    changes: asyncio.Queue[Change] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for change in api.watch_runs(namespace, version, name):
                await changes.put(change)
        finally:
            await changes.put(None)

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                first = await asyncio.wait_for(changes.get(), KEEPALIVE)
            except TimeoutError:
                yield False
                continue
            await asyncio.sleep(SETTLE)
            batch = [first]
            while not changes.empty():
                batch.append(changes.get_nowait())
            going = _apply(runs, batch)
            yield True
            if not going:
                return
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def follow(
    api: UserApi,
    namespace: str,
    name: str | None,
    paint: Callable[[Runs], str],
    kind: str,
) -> AsyncIterator[str]:
    """Server-sent events named ``kind``: the painted runs of ``namespace`` (or the one run
    ``name``) now and at every change, comments in between."""
    last = ""
    while True:
        runs, version = await _snapshot(api, namespace, name)
        painted = paint(runs)
        if painted != last:
            last = painted
            yield event(kind, painted)
        async for changed in _watched(api, namespace, name, runs, version):
            if not changed:
                yield ": keepalive\n\n"
                continue
            painted = paint(runs)
            if painted != last:
                last = painted
                yield event(kind, painted)

"""`braid run` on a terminal: a live view under the event lines of what is going on now —
each running step with its elapsed time, fan-outs as done/failed/running of total, retries
with their countdown, approvals and sleeps waiting, child runs nested under their step. It
reads the run's status on the run's own event loop (no thread), four times a second."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from braid.api.reasons import StepReason
from braid.api.run import FannedStatus, StepPhase, StepStatus, TaskStatus, WorkflowRunStatus
from braid.local.runner import LocalRun

Clock = Callable[[], datetime]


def _since(then: datetime | None, now: datetime) -> str:
    if then is None:
        return ""
    seconds = max(0.0, (now - then).total_seconds())
    return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"


def _task_line(st: TaskStatus, now: datetime) -> str:
    if st.phase == StepPhase.RETRYING and st.retry_time is not None:
        left = max(0.0, (st.retry_time - now).total_seconds())
        return f"[yellow]retry in {left:.1f}s[/] after attempt {st.attempts} ({st.reason})"
    if st.phase == StepPhase.WAITING:
        return f"[yellow]awaiting approval[/] {_since(st.start_time, now)}"
    if st.reason == StepReason.SLEEPING and st.wake_time is not None:
        return f"[blue]sleeping[/] {_since(now, st.wake_time)} left"
    if st.reason == StepReason.WAITING_FOR_CONCURRENCY:
        return f"[dim]waiting for a slot[/] {st.message or ''}"
    attempt = f" (attempt {st.attempts})" if st.attempts > 1 else ""
    return f"[blue]running[/] {_since(st.attempt_start_time or st.start_time, now)}{attempt}"


def _fan_line(st: FannedStatus, now: datetime) -> str:
    items = st.items or []
    done = sum(i.phase == StepPhase.SUCCEEDED for i in items)
    failed = sum(i.phase in (StepPhase.FAILED, StepPhase.CANCELLED) for i in items)
    if st.items_summary is not None:
        done += st.items_summary.succeeded
        failed += st.items_summary.failed
    running = sum(i.phase in (StepPhase.RUNNING, StepPhase.RETRYING) for i in items)
    total = st.item_count if st.item_count is not None else "?"
    bad = f", [red]{failed} failed[/]" if failed else ""
    took = _since(st.start_time, now)
    return f"[blue]fan-out[/] {done} done{bad}, {running} running of {total} ({took})"


def lines(
    status: WorkflowRunStatus, now: datetime, children: dict[str, LocalRun], depth: int = 0
) -> Iterator[str]:
    """What is going on in a run (and its child runs), one line a live step."""
    pad = "  " * depth
    for st in [*status.steps, *(status.finally_ or [])]:
        if st.phase.final or (st.phase == StepPhase.PENDING and st.reason is None):
            continue
        yield from _step_lines(st, now, pad)
        for name, child in children.items():
            mine = child.parent is not None and child.parent.step.split("[")[0] == st.name
            if mine and child.status is not None:
                yield f"{pad}  [dim]child run {name}[/]"
                yield from lines(child.status, now, child.children, depth + 2)


def _step_lines(st: StepStatus, now: datetime, pad: str) -> Iterator[str]:
    if st.items is not None or st.items_summary is not None:
        yield f"{pad}[bold]{st.name}[/] {_fan_line(st, now)}"
        for item in st.items or []:
            if item.phase in (StepPhase.RETRYING, StepPhase.WAITING):
                yield f"{pad}  {st.name}[{item.index}] {_task_line(item, now)}"
    elif st.iterations is not None:
        it = st.iterations[-1] if st.iterations else None
        yield f"{pad}[bold]{st.name}[/] [blue]loop[/] iteration {it.iteration if it else 0}"
        for body in it.steps if it else []:
            if not body.phase.final and body.phase != StepPhase.PENDING:
                yield f"{pad}  {body.name} {_task_line(body, now)}"
    else:
        yield f"{pad}[bold]{st.name}[/] {_task_line(st, now)}"


def waiting_for_a_person(status: WorkflowRunStatus | None, children: dict[str, LocalRun]) -> bool:
    if status is not None and status.pending_approvals:
        return True
    return any(waiting_for_a_person(c.status, c.children) for c in children.values())


async def drive(run: LocalRun, console: Console, clock: Clock | None = None) -> WorkflowRunStatus:
    """Execute the run with the live view below its event lines; the view steps aside while
    a prompt asks a person (it would draw over the question)."""
    now = clock or (lambda: datetime.now(UTC))
    task = asyncio.ensure_future(run.execute())
    live = Live(console=console, transient=True, auto_refresh=False, redirect_stdout=False)
    try:
        while not task.done():
            asking = run.prompt is not None and waiting_for_a_person(run.status, run.children)
            if asking and live.is_started:
                live.stop()
            elif not asking:
                if not live.is_started:
                    live.start()
                shown = list(lines(run.status, now(), run.children)) if run.status else []
                view: RenderableType = Group(*(Text.from_markup(s) for s in shown))
                live.update(view, refresh=True)
            await asyncio.wait({task}, timeout=0.25)
    finally:
        if live.is_started:
            live.stop()
    result: Any = task.result()
    return result  # type: ignore[no-any-return]

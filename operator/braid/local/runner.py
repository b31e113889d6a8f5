"""The local runner: the engine's decisions carried out as processes and HTTP calls.

One loop: ask the engine, carry out its actions, wait for the first thing that happens (an
attempt ends, a timer the engine asked for, an approval, Ctrl-C), tell the engine, repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from braid.api.errors import InvalidSpecError
from braid.api.reasons import EventReason
from braid.api.run import ParentLink, WorkflowRunStatus
from braid.api.workflow import WorkflowSpec
from braid.artifacts.lists import read_item_list
from braid.engine import (
    Action,
    ApprovalDecision,
    AttemptResult,
    CancelAttempt,
    Observations,
    RecordEvent,
    RunState,
    StartAttempt,
    children,
    plan_for,
    resolve_params,
)
from braid.engine.actions import LoadItems, StoreCache
from braid.engine.breakers import BreakerBoard
from braid.local.artifacts import DEFAULT_DIR, LocalArtifacts
from braid.local.cache import DEFAULT_DIR as CACHE_DIR
from braid.local.cache import LocalCache
from braid.local.data import LocalData
from braid.local.executors import HTTPExecutor, ProcessExecutor

Clock = Callable[[], datetime]
Prompt = Callable[[RecordEvent, str], ApprovalDecision]
"""Asks a person about an ApprovalRequested event; returns their decision on the gate."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class LocalRun:
    """Everything a local run needs; ``execute`` drives it to the end."""

    run_name: str
    spec: WorkflowSpec
    params: dict[str, Any]
    decisions: list[ApprovalDecision] = field(default_factory=list)
    prompt: Prompt | None = None  # asks a person on a terminal; None: no one to ask
    on_event: Callable[[RecordEvent, datetime], None] = lambda _e, _t: None
    on_start: Callable[[StartAttempt], None] = lambda _a: None
    # braid run --follow: each line a step process writes (attempt name, line), masked.
    on_output: Callable[[str, str], None] | None = None
    workdir: Path | None = None
    clock: Clock = _utcnow
    cancel_requested: bool = False
    # How long a cancelled or timed-out step has between SIGTERM and SIGKILL of its process
    # group (a Pod's terminationGracePeriodSeconds plays this part in a cluster).
    grace_seconds: float = 10.0
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Secrets and ConfigMaps the steps read (--secrets files, else the environment), and
    # whether step processes get the whole environment (--inherit-env) or BASE_ENV only.
    data: LocalData = field(default_factory=LocalData)
    inherit_env: bool = False
    # Where the steps' artifacts are kept (braid run --artifacts), as keys <run>/<attempt>/.
    artifacts_dir: Path = DEFAULT_DIR
    # Where successes of cached steps are kept across runs (braid run --cache); None: no cache.
    cache_dir: Path | None = CACHE_DIR
    cache: LocalCache | None = field(default=None, init=False)
    # Sub-workflows: the workflows `workflow.name` may name (the other files given), and for
    # a child run (run in-process by its parent's runner) its parent; a child's signals are
    # its parent's, which cancels it.
    workflows: Mapping[str, WorkflowSpec] = field(default_factory=dict)
    parent: ParentLink | None = None
    interrupted: asyncio.Event | None = field(default=None, init=False)
    status: WorkflowRunStatus | None = field(default=None, init=False)
    children: dict[str, LocalRun] = field(default_factory=dict, init=False)  # running now

    async def execute(self) -> WorkflowRunStatus:
        workdir = self.workdir or Path(tempfile.mkdtemp(prefix=f"braid-{self.run_name}-"))
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        state = RunState.load(
            self.run_name,
            self.spec,
            WorkflowRunStatus(parent=self.parent),
            self.params,
            uid=self.uid,
        )
        self.status = state.status  # what a live view reads (on this event loop only)
        processes = ProcessExecutor(
            workdir,
            self.grace_seconds,
            self.data,
            self.inherit_env,
            run_uid=self.uid,
            artifacts=LocalArtifacts(self.artifacts_dir, workdir, self.run_name),
            follow=self.on_output,
        )
        loop = asyncio.get_running_loop()
        interrupted = self.interrupted = asyncio.Event()
        if self.cancel_requested:
            interrupted.set()
        signals = self.parent is None
        if signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGINT, self._on_interrupt, interrupted, processes)
                loop.add_signal_handler(signal.SIGTERM, self._on_interrupt, interrupted, processes)
        try:
            async with httpx.AsyncClient(follow_redirects=False) as client:
                http = HTTPExecutor(client, self.data, processes.artifacts)
                await self._loop(state, processes, http, interrupted)
        finally:
            # Nothing of the run outlives `braid run`: every process group is stopped and
            # waited for, SIGKILLed after the grace period.
            await processes.stop_all()
            if signals:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(signal.SIGINT)
                    loop.remove_signal_handler(signal.SIGTERM)
        return state.status

    def cancel(self) -> None:
        """Cancel the run (its parent was cancelled, or the step timed out): running steps
        stop, compensation and finally run."""
        self.cancel_requested = True
        if self.interrupted is not None:
            self.interrupted.set()

    def _on_interrupt(self, interrupted: asyncio.Event, processes: ProcessExecutor) -> None:
        if self.cancel_requested:
            processes.kill_all()  # second Ctrl-C: stop compensation too, at once
            raise KeyboardInterrupt
        self.cancel_requested = True
        interrupted.set()

    async def _loop(
        self,
        state: RunState,
        processes: ProcessExecutor,
        http: HTTPExecutor,
        interrupted: asyncio.Event,
    ) -> None:
        work = _Work(processes, http, _Children(self))
        # One run locally: its breakers are its own (a retry storm still trips them), and its
        # concurrency pools hold only its own attempts.
        breakers = BreakerBoard()
        lists: dict[str, list[Any] | str] = {}  # fanOut.itemsFrom, loaded when asked
        self.cache = LocalCache(self.cache_dir) if self.cache_dir is not None else None
        observations = Observations(
            decisions=list(self.decisions), breakers=breakers, cache=self.cache
        )
        while True:
            now = self.clock()
            decision = state.decide(observations, now)
            for action in decision.actions:
                self._carry_out(action, work, now)
            loads = [a for a in decision.actions if isinstance(a, LoadItems)]
            for load in loads:
                lists[load.uri] = await asyncio.to_thread(
                    read_item_list, processes.fetch, load.uri, load.sha256
                )
            if decision.finished:
                for task in [*work.running, *work.prompts]:
                    task.cancel()
                return
            timeout = 0.0 if loads else None
            if decision.wake_at is not None and not loads:
                timeout = max(0.0, (decision.wake_at - self.clock()).total_seconds())
            observations = Observations(
                decisions=list(self.decisions),
                cancel=self.cancel_requested,
                breakers=breakers,
                item_lists=lists,
                cache=self.cache,
            )
            for value in await work.next(interrupted, timeout):
                if isinstance(value, AttemptResult):
                    observations.results.append(value)
                elif isinstance(value, ApprovalDecision):
                    self.decisions.append(value)
                    observations.decisions.append(value)

    def _carry_out(self, action: Action, work: _Work, now: datetime) -> None:
        if isinstance(action, StartAttempt):
            self.on_start(action)
            work.start(action)
        elif isinstance(action, CancelAttempt):
            work.cancel(action.name)
        elif isinstance(action, StoreCache) and self.cache is not None:
            self.cache.put(action.entry)
        elif isinstance(action, RecordEvent):
            self.on_event(action, now)
            requested = action.reason == EventReason.APPROVAL_REQUESTED
            if requested and (action.gate or action.step):
                work.prompts.add(self._ask(action))
        # RecordDecision: kept in the status, which `braid run --record` writes.

    def _ask(self, event: RecordEvent) -> asyncio.Future[Any]:
        gate = event.gate or event.step or ""
        given = next((d for d in self.decisions if d.step == gate and d.iteration is None), None)
        if given is not None:
            return asyncio.ensure_future(_ready(given))
        if self.prompt is None and event.deadline is not None:
            # No one to ask, but the gate times out: it decides then (onTimeout), as the
            # operator's would, instead of being refused at once.
            return asyncio.ensure_future(_never())
        if self.prompt is None:
            refusal = ApprovalDecision(
                gate,
                "braid-local",
                approve=False,
                reason=f"no one to ask: not a terminal and no --approve/--reject {gate} given",
                iteration=event.iteration,
                trusted=True,
            )
            return asyncio.ensure_future(_ready(refusal))
        return _ask_in_thread(self.prompt, event, gate)


def _ask_in_thread(prompt: Prompt, event: RecordEvent, gate: str) -> asyncio.Future[Any]:
    """The prompt reads the terminal in a daemon thread: Ctrl-C cancels the run at once, and
    nothing waits for an answer no one will give (a thread of asyncio's executor would keep
    `braid run` from exiting until Enter)."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[Any] = loop.create_future()

    def settle(value: Any) -> None:
        if answer.done():
            return
        if isinstance(value, BaseException):
            answer.set_exception(value)
        else:
            answer.set_result(value)

    def ask() -> None:
        decision: ApprovalDecision | Exception
        try:
            decision = prompt(event, gate)
        except Exception as exc:  # noqa: BLE001 - handed to the run, which reports it
            decision = exc
        with contextlib.suppress(RuntimeError):  # the run ended meanwhile: its loop is gone
            loop.call_soon_threadsafe(settle, decision)

    threading.Thread(target=ask, name="braid-prompt", daemon=True).start()
    return answer


async def _ready(decision: ApprovalDecision) -> ApprovalDecision:
    return decision


async def _never() -> ApprovalDecision:
    """A prompt no one answers: the gate's own deadline decides (cancelled when the run ends)."""
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


class _Children:
    """Sub-workflow attempts: each a LocalRun of the child's workflow in this process, with
    the same engine, approvals, secrets, artifacts and cache; its lines are prefixed by the
    parent's step."""

    def __init__(self, parent: LocalRun) -> None:
        self.parent = parent
        self.runs: dict[str, LocalRun] = {}

    async def run(self, action: StartAttempt) -> AttemptResult:
        request, parent = action.child, self.parent
        assert request is not None
        spec = request.spec or parent.workflows.get(request.workflow or "")
        if spec is None:
            known = ", ".join(sorted(parent.workflows)) or "none"
            return AttemptResult(
                action.name,
                error=f"no workflow named {request.workflow!r} was given (workflows: {known}); "
                f"pass its file too: braid run <workflow.yaml> <{request.workflow}.yaml>",
            )
        try:
            spec = children.capped(spec, request.budget)
            plan_for(spec)
            params = resolve_params(spec, request.params, "workflow.params")
        except InvalidSpecError as exc:
            return AttemptResult(action.name, error=f"the child run is invalid: {exc}")
        said = request.parent.step

        def on_event(event: RecordEvent, now: datetime) -> None:
            parent.on_event(replace(event, message=f"{said} > {event.message}"), now)

        def on_start(start: StartAttempt) -> None:
            labels = replace(start.labels, step=f"{said} > {start.labels.step}")
            parent.on_start(replace(start, labels=labels))

        child = LocalRun(
            run_name=action.name,
            spec=spec,
            params=params,
            decisions=list(parent.decisions),
            prompt=parent.prompt,
            on_event=on_event,
            on_start=on_start,
            workdir=(parent.workdir or Path(tempfile.gettempdir())) / action.name,
            clock=parent.clock,
            grace_seconds=parent.grace_seconds,
            data=parent.data,
            inherit_env=parent.inherit_env,
            artifacts_dir=parent.artifacts_dir,
            cache_dir=parent.cache_dir,
            workflows=parent.workflows,
            parent=request.parent,
            on_output=parent.on_output,
        )
        self.runs[action.name] = child
        parent.children[action.name] = child
        try:
            status = await child.execute()
        finally:
            self.runs.pop(action.name, None)
            parent.children.pop(action.name, None)
        ended = children.outcome_of(status)
        if ended is None:
            return AttemptResult(action.name, error="the child run stopped before it finished")
        return AttemptResult(action.name, child=ended)

    def cancel(self, name: str) -> bool:
        child = self.runs.get(name)
        if child is not None:
            child.cancel()  # it finishes (compensation, finally) and reports its end
        return child is not None


class _Work:
    """What a local run is waiting on: attempts (processes, HTTP calls, child runs) and
    prompts."""

    def __init__(self, processes: ProcessExecutor, http: HTTPExecutor, kids: _Children) -> None:
        self.processes, self.http, self.children = processes, http, kids
        self.running: dict[asyncio.Future[Any], str] = {}
        self.prompts: set[asyncio.Future[Any]] = set()

    def start(self, action: StartAttempt) -> None:
        executor: Callable[[StartAttempt], Awaitable[AttemptResult]] = (
            self.processes.run if action.container else self.http.run
        )
        if action.child is not None:
            executor = self.children.run
        self.running[asyncio.ensure_future(executor(action))] = action.name

    def cancel(self, name: str) -> None:
        if name in self.processes.processes:
            self.processes.cancel(name)  # its result arrives and is ignored
            return
        if self.children.cancel(name):
            return
        for task, running in list(self.running.items()):
            if running == name:
                task.cancel()

    async def next(self, interrupted: asyncio.Event, wake_in: float | None) -> list[Any]:
        """Wait for the first thing that happens (an attempt ends, a prompt is answered,
        Ctrl-C, or the engine's timer) and return what ended."""
        interrupt_wait = asyncio.ensure_future(interrupted.wait())
        waiters: set[asyncio.Future[Any]] = {*self.running, *self.prompts, interrupt_wait}
        if len(waiters) == 1 and wake_in is None:
            interrupt_wait.cancel()
            raise RuntimeError("the run is stuck: nothing is running and nothing is scheduled")
        done, _ = await asyncio.wait(waiters, timeout=wake_in, return_when=asyncio.FIRST_COMPLETED)
        interrupt_wait.cancel()
        out = []
        for fut in done:
            self.running.pop(fut, None)
            self.prompts.discard(fut)
            if fut is not interrupt_wait and not fut.cancelled():
                out.append(fut.result())
        return out


def stdin_is_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()

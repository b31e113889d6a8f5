"""Drive a run to its end on a virtual clock, with attempt outcomes supplied by a function.

Pure like the rest of the engine: nothing runs, time is simulated. Tests use it to state
"these outcomes -> this run", property tests to explore random workflows, benchmarks to measure
decisions without process noise.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from braid.api.reasons import EventReason
from braid.api.run import Artifact, ParentLink, WorkflowRunStatus
from braid.api.workflow import WorkflowSpec
from braid.engine.actions import (
    Action,
    ApprovalDecision,
    AttemptResult,
    CacheEntry,
    CancelAttempt,
    ChildOutcome,
    HTTPResponse,
    LoadItems,
    Observations,
    RecordEvent,
    StartAttempt,
    StoreCache,
)
from braid.engine.breakers import BreakerBoard
from braid.engine.params import resolve_params
from braid.engine.scheduler import RunState

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Outcome:
    """What an attempt does: how long it takes and how it ends."""

    seconds: float = 1.0
    exit_code: int = 0
    output: str | None = None
    error: str | None = None
    artifacts: dict[str, Artifact] | None = None
    artifact_error: str | None = None
    artifact_too_large: bool = False
    response: HTTPResponse | None = None  # a webhook's or model call's reply
    child: ChildOutcome | None = None  # a sub-workflow's child run's end
    message: str | None = None  # the tail of what a failed container wrote


Script = Callable[[StartAttempt], Outcome]


@dataclass
class SimulationResult:
    status: WorkflowRunStatus
    started: list[StartAttempt] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    events: list[RecordEvent] = field(default_factory=list)
    start_times: dict[str, datetime] = field(default_factory=dict)
    max_running: int = 0
    decisions: int = 0
    end: datetime = EPOCH
    loads: list[str] = field(default_factory=list)  # item lists asked for (LoadItems)

    def step(self, name: str) -> Any:
        return next(s for s in self.status.steps if s.name == name)


def simulate(
    spec: WorkflowSpec,
    script: Script,
    params: dict[str, Any] | None = None,
    decisions: list[tuple[float, ApprovalDecision]] | None = None,
    cancel_at: float | None = None,
    run_name: str = "run",
    max_decisions: int = 1_000_000,
    breakers: BreakerBoard | None = None,
    elsewhere: dict[str, int] | None = None,
    start: datetime = EPOCH,
    stored_lists: dict[str, list[Any] | str] | None = None,
    cache: dict[str, CacheEntry] | None = None,
    parent: ParentLink | None = None,
    standing: list[ApprovalDecision] | None = None,
) -> SimulationResult:
    """Run to completion. ``decisions`` arrive at the given virtual seconds, ``standing``
    ones are told every time (as `braid run --approve` does: a gate finds them when it opens);
    ``stored_lists`` are the item lists a LoadItems finds (by uri), handed over at once."""
    state = RunState.load(
        run_name,
        spec,
        WorkflowRunStatus(parent=parent),
        resolve_params(spec, params),
        uid=f"uid-{run_name}",
    )
    sim = _Simulation(state, script, SimulationResult(state.status), start, breakers, elsewhere)
    sim.stored_lists = stored_lists or {}
    sim.cache = cache
    sim.standing = list(standing or [])
    sim.inbox = sorted(
        ((start + timedelta(seconds=t), d) for t, d in decisions or []), key=lambda x: x[0]
    )
    sim.cancel_time = start + timedelta(seconds=cancel_at) if cancel_at is not None else None
    obs = sim.observations()
    for _ in range(max_decisions):
        decision = state.decide(obs, sim.now)
        sim.result.decisions += 1
        for action in decision.actions:
            sim.carry_out(action)
        sim.result.max_running = max(sim.result.max_running, len(sim.running))
        if decision.finished:
            sim.result.end = sim.now
            return sim.result
        obs = sim.advance(decision.wake_at)
    raise AssertionError("run did not finish within max_decisions")


@dataclass
class _Simulation:
    """The virtual world around one run: attempts ending when their script says, people
    deciding at their times, a cancel, and a clock that jumps to the next of them."""

    state: RunState
    script: Script
    result: SimulationResult
    now: datetime
    breakers: BreakerBoard | None
    elsewhere: dict[str, int] | None
    pending: list[tuple[datetime, int, str, AttemptResult]] = field(default_factory=list)
    running: set[str] = field(default_factory=set)
    inbox: list[tuple[datetime, ApprovalDecision]] = field(default_factory=list)
    cancel_time: datetime | None = None
    seq: int = 0
    stored_lists: dict[str, list[Any] | str] = field(default_factory=dict)
    loaded: dict[str, list[Any] | str] = field(default_factory=dict)
    just_loaded: bool = False  # a list was handed over: decide again at once
    cache: dict[str, CacheEntry] | None = None  # successes of cached steps, shared by runs
    standing: list[ApprovalDecision] = field(default_factory=list)

    def observations(self) -> Observations:
        return Observations(
            decisions=list(self.standing),
            breakers=self.breakers,
            elsewhere=dict(self.elsewhere or {}),
            item_lists=self.loaded,
            cache=self.cache,
        )

    def carry_out(self, action: Action) -> None:
        if isinstance(action, StartAttempt):
            if action.name in self.result.start_times:
                raise AssertionError(f"attempt {action.name} started twice")
            self.result.started.append(action)
            self.result.start_times[action.name] = self.now
            self.running.add(action.name)
            outcome = self.script(action)
            ended = AttemptResult(
                action.name,
                exit_code=outcome.exit_code,
                output=outcome.output,
                error=outcome.error,
                artifacts=outcome.artifacts,
                artifact_error=outcome.artifact_error,
                artifact_too_large=outcome.artifact_too_large,
                response=outcome.response,
                child=outcome.child,
                message=outcome.message,
            )
            self.seq += 1
            done = self.now + timedelta(seconds=outcome.seconds)
            heapq.heappush(self.pending, (done, self.seq, action.name, ended))
        elif isinstance(action, CancelAttempt):
            self.result.cancelled.append(action.name)
            self.running.discard(action.name)
        elif isinstance(action, RecordEvent):
            self.result.events.append(action)
            gate = action.gate or action.step
            requested = action.reason == EventReason.APPROVAL_REQUESTED
            if requested and any(d.step == gate for d in self.standing):
                self.just_loaded = True  # a standing decision is for it: decide again now
        elif isinstance(action, StoreCache) and self.cache is not None:
            self.cache[action.entry.key] = action.entry
        elif isinstance(action, LoadItems):
            self.result.loads.append(action.uri)
            self.loaded[action.uri] = self.stored_lists.get(action.uri, "no such artifact")
            self.just_loaded = True

    def advance(self, wake_at: datetime | None) -> Observations:
        """Move the clock to the next thing that happens; what happened by then."""
        now = self.now
        candidates = [t for t in (wake_at, self.cancel_time) if t is not None and t > now]
        if (wake_at is not None and wake_at <= now) or self.just_loaded:
            candidates.append(now)
            self.just_loaded = False
        while self.pending and self.pending[0][2] not in self.running:
            heapq.heappop(self.pending)  # cancelled before it ended
        if self.pending:
            candidates.append(self.pending[0][0])
        if self.inbox:
            candidates.append(self.inbox[0][0])
        if not candidates:
            raise AssertionError(f"run is stuck at {now}: nothing running and nothing scheduled")
        self.now = max(now, min(candidates))
        obs = self.observations()
        while self.pending and self.pending[0][0] <= self.now:
            _, _, name, res = heapq.heappop(self.pending)
            if name in self.running:
                self.running.discard(name)
                obs.results.append(res)
        while self.inbox and self.inbox[0][0] <= self.now:
            obs.decisions.append(self.inbox.pop(0)[1])
        if self.cancel_time is not None and self.now >= self.cancel_time:
            obs.cancel = True
        return obs

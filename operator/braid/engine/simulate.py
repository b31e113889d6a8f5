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

from braid.api.run import WorkflowRunStatus
from braid.api.workflow import WorkflowSpec
from braid.engine.actions import (
    ApprovalDecision,
    AttemptResult,
    CancelAttempt,
    Observations,
    RecordEvent,
    StartAttempt,
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
) -> SimulationResult:
    """Run to completion. ``decisions`` arrive at the given virtual seconds."""
    state = RunState.load(
        run_name, spec, WorkflowRunStatus(), resolve_params(spec, params), uid=f"uid-{run_name}"
    )
    result = SimulationResult(state.status)
    now = start
    pending: list[tuple[datetime, int, str, AttemptResult]] = []  # completions by time
    seq = 0
    running: set[str] = set()
    inbox: list[tuple[datetime, ApprovalDecision]] = sorted(
        ((start + timedelta(seconds=t), d) for t, d in decisions or []), key=lambda x: x[0]
    )
    cancel_time = start + timedelta(seconds=cancel_at) if cancel_at is not None else None

    def observations() -> Observations:
        return Observations(breakers=breakers, elsewhere=dict(elsewhere or {}))

    obs = observations()
    for _ in range(max_decisions):
        decision = state.decide(obs, now)
        result.decisions += 1
        for action in decision.actions:
            if isinstance(action, StartAttempt):
                if action.name in result.start_times:
                    raise AssertionError(f"attempt {action.name} started twice")
                result.started.append(action)
                result.start_times[action.name] = now
                running.add(action.name)
                outcome = script(action)
                done = now + timedelta(seconds=outcome.seconds)
                seq += 1
                heapq.heappush(
                    pending,
                    (
                        done,
                        seq,
                        action.name,
                        AttemptResult(
                            action.name,
                            exit_code=outcome.exit_code,
                            output=outcome.output,
                            error=outcome.error,
                        ),
                    ),
                )
            elif isinstance(action, CancelAttempt):
                result.cancelled.append(action.name)
                running.discard(action.name)
            elif isinstance(action, RecordEvent):
                result.events.append(action)
        result.max_running = max(result.max_running, len(running))
        if decision.finished:
            result.end = now
            return result
        # Advance the clock to the next thing that happens.
        candidates = [t for t in (decision.wake_at, cancel_time) if t is not None and t > now]
        if decision.wake_at is not None and decision.wake_at <= now:
            candidates.append(now)
        while pending and pending[0][2] not in running:
            heapq.heappop(pending)  # cancelled before it ended
        if pending:
            candidates.append(pending[0][0])
        if inbox:
            candidates.append(inbox[0][0])
        if not candidates:
            raise AssertionError(f"run is stuck at {now}: nothing running and nothing scheduled")
        now = max(now, min(candidates))
        obs = observations()
        while pending and pending[0][0] <= now:
            _, _, name, res = heapq.heappop(pending)
            if name in running:
                running.discard(name)
                obs.results.append(res)
        while inbox and inbox[0][0] <= now:
            obs.decisions.append(inbox.pop(0)[1])
        if cancel_time is not None and now >= cancel_time:
            obs.cancel = True
    raise AssertionError("run did not finish within max_decisions")

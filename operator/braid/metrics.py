"""Prometheus instruments, fed in one place: each reconcile's status before and after the
engine's decision, and the events of that decision.

Labels are bounded: workflow, namespace, step names, results and reasons — never a run name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from braid.api.reasons import EventReason
from braid.api.run import RunPhase, StepPhase, WorkflowRunStatus
from braid.engine import Action, RecordEvent
from braid.engine.breakers import BreakerBoard

# Agent steps take from seconds to hours; runs up to a day.
STEP_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400)
RUN_BUCKETS = (5, 30, 60, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
APPROVAL_BUCKETS = (10, 60, 300, 900, 1800, 3600, 14400, 43200, 86400, 259200)
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

_FINISHED = {RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.CANCELLED}
_DECISIONS = frozenset(
    {
        EventReason.APPROVED,
        EventReason.APPROVAL_REJECTED,
        EventReason.APPROVAL_REFUSED,
        EventReason.APPROVAL_TIMED_OUT,
    }
)


@dataclass(frozen=True)
class Before:
    """What matters of a status before a decision, to see what the decision changed."""

    phase: RunPhase
    steps: Mapping[str, StepPhase]
    gates: frozenset[tuple[str, int | None]]

    @classmethod
    def of(cls, status: WorkflowRunStatus) -> Before:
        return cls(
            status.phase,
            {s.name: s.phase for s in status.steps},
            frozenset((g.step, g.iteration) for g in status.pending_approvals or []),
        )


class _RequestCollector(Collector):
    """API requests as counted by the operator's client, read at scrape time."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily(
            "braid_api_requests",
            "Requests the operator made to the API server.",
            labels=["verb", "resource"],
        )
        for key, value in sorted(self.counts().items()):
            verb, _, resource = key.partition(" ")
            family.add_metric([verb, resource], value)
        yield family


class _ActiveCollector(Collector):
    """Runs started and not finished, and the approval gates they wait on, by namespace and
    workflow, counted at scrape time from what the operator keeps of each run."""

    def __init__(self, active: Mapping[tuple[str, str], tuple[str, int]]) -> None:
        self.active = active

    def collect(self) -> Iterable[Metric]:
        runs: dict[tuple[str, str], int] = {}
        gates: dict[tuple[str, str], int] = {}
        for (namespace, _), (workflow, pending) in list(self.active.items()):
            runs[(namespace, workflow)] = runs.get((namespace, workflow), 0) + 1
            gates[(namespace, workflow)] = gates.get((namespace, workflow), 0) + pending
        labels = ["namespace", "workflow"]
        pending_now = GaugeMetricFamily(
            "braid_approvals_pending", "Approval gates waiting now.", labels=labels
        )
        active = GaugeMetricFamily(
            "braid_active_runs", "Runs started and not finished.", labels=labels
        )
        for pair, count in sorted(runs.items()):
            active.add_metric(list(pair), count)
            pending_now.add_metric(list(pair), gates[pair])
        yield pending_now
        yield active


BREAKER_STATES = {"Closed": 0, "Open": 1, "HalfOpen": 2}


class _SharedCollector(Collector):
    """Concurrency pools and circuit breakers, read at scrape time."""

    def __init__(self, in_use: Callable[[], Mapping[str, int]], board: BreakerBoard) -> None:
        self.in_use = in_use
        self.board = board

    def collect(self) -> Iterable[Metric]:
        pools = GaugeMetricFamily(
            "braid_concurrency_in_use",
            "Attempts holding a slot of each concurrency key.",
            labels=["key"],
        )
        for key, value in sorted(self.in_use().items()):
            pools.add_metric([key], value)
        yield pools
        state = GaugeMetricFamily(
            "braid_circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
            labels=["key"],
        )
        failures = GaugeMetricFamily(
            "braid_circuit_breaker_failures",
            "Consecutive failures counted by each circuit breaker.",
            labels=["key"],
        )
        for key, breaker in sorted(self.board.breakers.items()):
            state.add_metric([key], BREAKER_STATES[breaker.state])
            failures.add_metric([key], breaker.failures)
        yield state
        yield failures
        yield from _routes(self.board)


def _routes(board: BreakerBoard) -> Iterable[Metric]:
    """Routed calls: how often each candidate was chosen, and the figures choices use."""
    labels = ["key", "candidate"]
    selected = CounterMetricFamily(
        "braid_route_selected", "Attempts routed to each candidate.", labels=labels
    )
    latency = GaugeMetricFamily(
        "braid_route_latency_seconds", "EWMA call latency of each candidate.", labels=labels
    )
    success = GaugeMetricFamily(
        "braid_route_success_ratio", "EWMA success rate of each candidate.", labels=labels
    )
    for name, s in sorted(board.routes.items()):
        key, _, candidate = name.rpartition("/")
        selected.add_metric([key, candidate], s.selected)
        if s.latency is not None:
            latency.add_metric([key, candidate], s.latency)
        if s.success is not None:
            success.add_metric([key, candidate], s.success)
    yield selected
    yield latency
    yield success


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.runs_started = Counter(
            "braid_runs_started", "Runs started.", ["namespace", "workflow"], registry=r
        )
        self.runs_finished = Counter(
            "braid_runs_finished",
            "Runs finished, by result.",
            ["namespace", "workflow", "result"],
            registry=r,
        )
        self.run_duration = Histogram(
            "braid_run_duration_seconds",
            "Duration of finished runs.",
            ["namespace", "workflow", "result"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.step_duration = Histogram(
            "braid_step_duration_seconds",
            "Duration of finished steps, retries included.",
            ["namespace", "workflow", "step", "result"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.step_failures = Counter(
            "braid_step_failures",
            "Steps that failed, by reason.",
            ["namespace", "workflow", "step", "reason"],
            registry=r,
        )
        self.retries = Counter(
            "braid_step_retries", "Attempts retried.", ["namespace", "workflow", "step"], registry=r
        )
        self.sla_breaches = Counter(
            "braid_sla_breaches",
            "SLA breaches, of a run or of a step.",
            ["namespace", "workflow", "scope"],
            registry=r,
        )
        self.approvals_decided = Counter(
            "braid_approval_decisions",
            "Decisions on approval gates.",
            ["namespace", "workflow", "decision"],
            registry=r,
        )
        self.approval_wait = Histogram(
            "braid_approval_wait_seconds",
            "How long gates waited for a decision.",
            ["namespace", "workflow"],
            buckets=APPROVAL_BUCKETS,
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "braid_reconcile_duration_seconds",
            "Time of one reconcile.",
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        self.reconcile_errors = Counter(
            "braid_reconcile_errors", "Reconciles that raised.", registry=r
        )
        # run -> (workflow, gates waiting): braid_active_runs and braid_approvals_pending,
        # counted at scrape time (counting them at each decision cost a pass over every
        # active run per reconcile).
        self._active: dict[tuple[str, str], tuple[str, int]] = {}
        r.register(_ActiveCollector(self._active))

    def watch_requests(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self.registry.register(_RequestCollector(counts))

    def watch_shared(self, in_use: Callable[[], Mapping[str, int]], board: BreakerBoard) -> None:
        self.registry.register(_SharedCollector(in_use, board))

    def record(
        self,
        namespace: str,
        workflow: str,
        run: str,
        before: Before,
        after: WorkflowRunStatus,
        actions: Iterable[Action],
        now: datetime,
    ) -> None:
        """Everything one decision changed, as metrics."""
        labels = {"namespace": namespace, "workflow": workflow}
        self._run(labels, before, after)
        self._steps(labels, before, after)
        for action in actions:
            if isinstance(action, RecordEvent):
                self._count_event(labels, action)
        self._gates(labels, before, after, now)
        key = (namespace, run)
        if after.phase in _FINISHED:
            self._active.pop(key, None)
        elif after.phase != RunPhase.PENDING:
            self._active[key] = (workflow, len(after.pending_approvals or []))

    def forget(self, namespace: str, run: str) -> None:
        self._active.pop((namespace, run), None)

    def _run(self, labels: dict[str, str], before: Before, after: WorkflowRunStatus) -> None:
        if before.phase == RunPhase.PENDING and after.phase != RunPhase.PENDING:
            self.runs_started.labels(**labels).inc()
        if before.phase not in _FINISHED and after.phase in _FINISHED:
            result = after.phase.value
            self.runs_finished.labels(**labels, result=result).inc()
            if after.start_time and after.completion_time:
                seconds = (after.completion_time - after.start_time).total_seconds()
                self.run_duration.labels(**labels, result=result).observe(seconds)

    def _steps(self, labels: dict[str, str], before: Before, after: WorkflowRunStatus) -> None:
        """Steps that finished (ran, not skipped) in this decision."""
        for step in after.steps:
            was = before.steps.get(step.name, StepPhase.PENDING)
            if was.final or not step.phase.final or step.phase == StepPhase.SKIPPED:
                continue
            if step.start_time and step.completion_time:
                seconds = (step.completion_time - step.start_time).total_seconds()
                self.step_duration.labels(
                    **labels, step=step.name, result=step.phase.value
                ).observe(seconds)
            if step.phase == StepPhase.FAILED:
                self.step_failures.labels(
                    **labels, step=step.name, reason=step.reason or "Unknown"
                ).inc()

    def _count_event(self, labels: dict[str, str], event: RecordEvent) -> None:
        if event.reason == EventReason.STEP_RETRYING:
            self.retries.labels(**labels, step=event.step or "").inc()
        elif event.reason == EventReason.SLA_BREACHED:
            self.sla_breaches.labels(**labels, scope="step" if event.step else "run").inc()
        elif event.reason in _DECISIONS:
            self.approvals_decided.labels(**labels, decision=event.reason).inc()

    def _gates(
        self, labels: dict[str, str], before: Before, after: WorkflowRunStatus, now: datetime
    ) -> None:
        open_now = {(g.step, g.iteration) for g in after.pending_approvals or []}
        for step, iteration in before.gates - open_now:
            opened = _gate_opened(after, step, iteration)
            if opened is not None:
                self.approval_wait.labels(**labels).observe((now - opened).total_seconds())


def _gate_opened(status: WorkflowRunStatus, step: str, iteration: int | None) -> Any:
    for st in status.steps:
        if iteration is None and st.name == step:
            return st.start_time
        for it in st.iterations or []:
            if it.iteration == iteration:
                for body in it.steps:
                    if body.name == step:
                        return body.start_time
    return None

"""The run state machine: observations and the time in, actions and a new status out.

``RunState`` is an indexed, in-memory view of one ``WorkflowRunStatus``. It is built once from
the status (``RunState.load``, linear in the run's size) and then each ``decide`` costs time
proportional to what changed, not to the size of the run: ready steps sit in a queue fed by
dependency counters, only running attempts are scanned for deadlines, and fan-out items are
materialised only when they start. The operator rebuilds the state on every reconcile (it
reads the status anyway); the local runner keeps one state for the whole run.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from braid.api.common import ConditionStatus
from braid.api.run import (
    CONDITION_APPROVAL_PENDING,
    CONDITION_SLA_BREACHED,
    CONDITION_SUCCEEDED,
    ApprovalRecord,
    BreakerStatus,
    BudgetStatus,
    HistoryEntry,
    ItemsSummary,
    ItemStatus,
    IterationStatus,
    LoopTaskStatus,
    PendingApproval,
    RunPhase,
    StepPhase,
    StepStatus,
    TaskStatus,
    Usage,
    WorkflowRunStatus,
)
from braid.api.workflow import (
    BUDGET_GATE,
    ApprovalTimeoutAction,
    BudgetAction,
    FailureReason,
    MaxIterationsAction,
    ThresholdAction,
    WorkflowSpec,
)
from braid.engine.actions import (
    Action,
    ApprovalDecision,
    AttemptResult,
    CancelAttempt,
    Decision,
    Observations,
    RecordDecision,
    RecordEvent,
)
from braid.engine.backoff import is_retryable, retry_delay
from braid.engine.breakers import BreakerBoard
from braid.engine.outputs import depth_failure, usage_of
from braid.engine.plan import COMPACT_ABOVE as PLAN_COMPACT_ABOVE
from braid.engine.plan import ActionPlan, Plan, StepPlan, plan_for
from braid.engine.tasks import Task, judge, render_request
from braid.expressions import Expression, ExpressionError, type_name

_ACTIVE = frozenset({StepPhase.RUNNING})
_NEVER = datetime.min.replace(tzinfo=UTC)
DIGEST_LENGTH = 32  # hex: 128 bits, bound to the run, the gate and when it opened
HISTORY_LIMIT = 100
# Fan-outs with more items than this keep per-item detail only for items that are running,
# retrying or among the last KEEP_FAILED failures; the rest are counted in itemsSummary, so the
# run object stays far below the API server's size limit and reconciles stay cheap. Their
# outputs carry counts but not the per-item list.
COMPACT_ABOVE = PLAN_COMPACT_ABOVE
KEEP_FAILED = 50
# Items of one fan-out running at once when it does not say: a run's width is bounded, so one
# run cannot start thousands of pods (or calls) in a single decision.
DEFAULT_FAN_OUT_PARALLELISM = 100
# Reasons of an Unknown Succeeded condition that mean "going on normally", not "failing".
IN_PROGRESS_REASONS = frozenset({"Running", "AwaitingApproval"})


@dataclass
class _FanOut:
    plan: StepPlan
    items: list[Any]
    threshold: int
    running: int = 0
    succeeded: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return len(self.items)


@dataclass
class _Failing:
    reason: str
    message: str
    cancelled: bool = False


@dataclass
class RunState:
    """Everything the engine knows about one run. Mutated only by ``decide``."""

    run_name: str
    plan: Plan
    status: WorkflowRunStatus
    params: dict[str, Any]
    generation: int | None = None
    steps: dict[str, StepStatus] = field(default_factory=dict)
    active: dict[str, Task] = field(default_factory=dict)
    slot_queue: deque[Task] = field(default_factory=deque)
    queued: set[int] = field(default_factory=set)
    retrying: list[Task] = field(default_factory=list)
    approvals: list[Task] = field(default_factory=list)
    remaining_deps: dict[str, int] = field(default_factory=dict)
    ready: deque[str] = field(default_factory=deque)
    fan_outs: dict[str, _FanOut] = field(default_factory=dict)
    loops: set[str] = field(default_factory=set)
    finished_steps: int = 0
    failing: _Failing | None = None
    actions: list[Action] = field(default_factory=list)
    dirty: bool = False
    # Shared with other runs, given by the driver with each decision.
    elsewhere: dict[str, int] = field(default_factory=dict)  # key -> attempts of other runs
    breakers: BreakerBoard | None = None
    held: Counter[str] = field(default_factory=Counter)  # key -> this run's active attempts
    moves: int = 0  # tasks queued, started or finished: _advance loops while this changes
    waiting_for: set[str] = field(default_factory=set)  # keys with a free slot wanted
    run_uid: str = ""  # binds approval digests to this run: a digest never approves another
    approvals_verified: bool | None = None  # see Observations

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls,
        run_name: str,
        spec: WorkflowSpec,
        status: WorkflowRunStatus,
        params: dict[str, Any],
        generation: int | None = None,
        uid: str = "",
    ) -> RunState:
        """Index a status (new or resumed). ``spec`` is the run's snapshot of the workflow;
        ``uid`` the run's unique id (the driver's: the API server's uid, a local run's own)."""
        plan = plan_for(spec)
        state = cls(run_name, plan, status, params, generation, run_uid=uid)
        if status.workflow_spec is None:
            status.workflow_spec = spec
        if status.params is None:
            status.params = params
        by_name = {s.name: s for s in status.steps}
        status.steps = [
            by_name.get(n) or StepStatus(name=n, kind=plan.steps[n].kind) for n in plan.order
        ]
        state.steps = {s.name: s for s in status.steps}
        if status.finally_ is None and plan.finally_steps:
            status.finally_ = [StepStatus(name=f.name, kind="finally") for f in plan.finally_steps]
        for name in plan.order:
            st = state.steps[name]
            deps = plan.steps[name].deps
            state.remaining_deps[name] = sum(not state.steps[d].phase.final for d in deps)
            if st.phase.final:
                state.finished_steps += 1
            elif st.phase == StepPhase.PENDING and state.remaining_deps[name] == 0:
                state.ready.append(name)
            else:
                state._resume_step(plan.steps[name], st)
        cond = status.condition(CONDITION_SUCCEEDED)
        if not state.finished and cond is not None and cond.reason not in IN_PROGRESS_REASONS:
            # While unfinished, any other reason is the failure being handled.
            state.failing = _Failing(cond.reason, cond.message, cond.reason == "Cancelled")
            state.ready.clear()
        if status.phase in (RunPhase.COMPENSATING, RunPhase.FINALIZING):
            state._resume_tail()
        return state

    def _resume_task(self, task: Task) -> None:
        phase = task.status.phase
        if task.status.fallback and task.action.fallback is not None:
            task = replace(task, action=task.action.fallback)
        if phase in _ACTIVE and task.status.attempt_name:
            self._activate(task.status.attempt_name, task)
        elif phase == StepPhase.RETRYING:
            self.retrying.append(task)
        elif phase == StepPhase.WAITING:
            self.approvals.append(task)

    def _resume_step(self, plan: StepPlan, st: StepStatus) -> None:
        if plan.action is not None:
            self._resume_task(self._step_task(plan, st))
        elif plan.fan_out is not None and st.phase == StepPhase.RUNNING:
            items = self._evaluate_items(plan)
            if isinstance(items, str):
                return  # unreachable for a run that started the fan-out; it stays as recorded
            fan = self._new_fan_out(plan, items)
            if st.items_summary is not None:
                fan.succeeded += st.items_summary.succeeded
                fan.failed += st.items_summary.failed
            for item in st.items or []:
                task = self._item_task(plan, item, items)
                self._resume_task(task)
                fan.running += item.phase in _ACTIVE or item.phase == StepPhase.RETRYING
                fan.succeeded += item.phase == StepPhase.SUCCEEDED
                fan.failed += item.phase in (StepPhase.FAILED, StepPhase.CANCELLED)
        elif plan.loop is not None and st.phase == StepPhase.RUNNING:
            self.loops.add(plan.name)
            for body in self._current_body(plan, st):
                self._resume_task(body)

    # ------------------------------------------------------------------ tasks

    def _step_task(self, plan: StepPlan, st: StepStatus) -> Task:
        assert plan.action is not None
        return Task(st, plan.action, "step", plan.name, f"{self.run_name}-{plan.name}")

    def _item_task(self, plan: StepPlan, item: ItemStatus, items: list[Any]) -> Task:
        assert plan.fan_out is not None
        return Task(
            item,
            plan.fan_out.action,
            "item",
            plan.name,
            f"{self.run_name}-{plan.name}--{item.index}",
            item=item.index,
            scope={"item": items[item.index], "index": item.index},
        )

    def _current_body(self, plan: StepPlan, st: StepStatus) -> list[Task]:
        assert plan.loop is not None
        if not st.iterations:
            return []
        it = st.iterations[-1]
        scope = {
            "iteration": it.iteration,
            "previous": self._iteration_outputs(st, it.iteration - 1),
        }
        return [
            Task(
                body_status,
                body.action,
                "body",
                plan.name,
                f"{self.run_name}-{plan.name}--{it.iteration}-{body.name}",
                iteration=it.iteration,
                body=body.name,
                scope=scope,
            )
            for body, body_status in zip(plan.loop.body, it.steps, strict=True)
        ]

    @staticmethod
    def _iteration_outputs(st: StepStatus, index: int) -> dict[str, Any]:
        if index < 0 or not st.iterations or index >= len(st.iterations):
            return {}
        return {b.name: b.outputs or {} for b in st.iterations[index].steps}

    # ------------------------------------------------------------------ context

    def _step_view(self, name: str) -> dict[str, Any]:
        st = self.steps[name]
        return {"phase": st.phase.value, "outputs": st.outputs or {}}

    def context(
        self, task: Task | None, expressions: tuple[Expression, ...] = ()
    ) -> dict[str, Any]:
        """The names an expression sees; only the steps it reads are materialised."""
        names: set[str] = set()
        everything = False
        for e in expressions:
            names |= e.steps.names
            everything |= e.steps.whole
        steps = {
            n: self._step_view(n) for n in (self.steps if everything else names) if n in self.steps
        }
        if task is not None and task.role == "body":
            st = self.steps[task.step]
            assert st.iterations
            for body in st.iterations[-1].steps:
                steps[body.name] = {"phase": body.phase.value, "outputs": body.outputs or {}}
        ctx: dict[str, Any] = {
            "params": self.params,
            "steps": steps,
            "run": {
                "name": self.run_name,
                "succeeded": self.failing is None,
                "reason": self.failing.reason if self.failing else "",
            },
        }
        if task is not None:
            ctx.update(task.scope)
        return ctx

    @staticmethod
    def _action_expressions(action: ActionPlan) -> tuple[Expression, ...]:
        out: list[Expression] = []
        if action.container:
            for t in (*action.container.command, *action.container.args):
                out.extend(t.expressions)
            for _, t in action.container.env:
                out.extend(t.expressions)
        if action.webhook:
            w = action.webhook
            out.extend(w.url.expressions)
            out.extend(w.body.expressions)
            for _, t in w.headers:
                out.extend(t.expressions)
            out.extend((w.success, w.output))
        if action.approval and action.approval.message:
            out.extend(action.approval.message.expressions)
        return tuple(out)

    # ------------------------------------------------------------------ helpers

    def _event(self, type_: str, reason: str, message: str, step: str | None = None) -> None:
        self.actions.append(RecordEvent(type_, reason, message, step))  # type: ignore[arg-type]

    def _capacity(self) -> float:
        limit = self.plan.spec.max_parallel
        return math.inf if limit is None else limit - len(self.active)

    def _enqueue(self, task: Task) -> None:
        if id(task.status) not in self.queued:
            self.moves += 1
            self.queued.add(id(task.status))
            self.slot_queue.append(task)

    # ------------------------------------------------------------------ decide

    def decide(self, observations: Observations, now: datetime) -> Decision:
        """Apply what was observed and what time it is; return what to do next."""
        self.actions = []
        self.dirty = False
        self.elsewhere = observations.elsewhere
        self.breakers = observations.breakers
        self.approvals_verified = observations.approvals_verified
        self.waiting_for = set()
        if self.status.phase == RunPhase.PENDING:
            self._start_run(now)
        if observations.oversized is not None:
            self._on_oversized(*observations.oversized, now)
        if not self.finished:
            for result in observations.results:
                self._on_result(result, now)
            for decision in observations.decisions:
                self._on_decision(decision, now)
            if observations.cancel and not (self.failing and self.failing.cancelled):
                self._begin_failing("Cancelled", "the run was cancelled", now, cancel=True)
            self._check_time(now)
            self._advance(now)
            self._update_conditions(now)
        self._record_history(now)
        if self.dirty:
            self.status.progress = f"{self.finished_steps}/{len(self.plan.order)}"
            end = self.status.completion_time or now
            if self.status.start_time is not None:
                self.status.duration = _format_duration(end - self.status.start_time)
        if self.breakers is not None and self.plan.breaker_keys:
            shown = [
                BreakerStatus.of(key, self.breakers.get(key)) for key in self.plan.breaker_keys
            ]
            if shown != (self.status.circuit_breakers or []):
                self.status.circuit_breakers = shown
                self.dirty = True
        return Decision(
            self.actions,
            self._wake_at(),
            self.dirty,
            self.finished,
            held={k: n for k, n in self.held.items() if n > 0},
            waiting_for=frozenset(self.waiting_for),
        )

    def _record_history(self, now: datetime) -> None:
        """Every transition but routine progress goes into the bounded audit history."""
        entries = [
            HistoryEntry(
                time=now, type=a.type, reason=a.reason, message=a.message[:512], step=a.step
            )
            for a in self.actions
            if isinstance(a, RecordEvent) and not a.progress
        ]
        if entries:
            history = [*(self.status.history or []), *entries]
            self.status.history = history[-HISTORY_LIMIT:]
            self.dirty = True

    @property
    def finished(self) -> bool:
        return self.status.phase in (RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.CANCELLED)

    def _start_run(self, now: datetime) -> None:
        self.status.phase = RunPhase.RUNNING
        self.status.start_time = now
        self.status.observed_generation = self.generation
        self._event("Normal", "RunStarted", f"Started run with {len(self.plan.order)} steps")
        self.dirty = True

    def _advance(self, now: datetime) -> None:
        """Start whatever may start now, repeating until nothing changes."""
        while True:
            before = (self.moves, len(self.ready), len(self.active), self.status.phase)
            if self.failing is None:
                while self.ready:
                    self._begin_step(self.ready.popleft(), now)
            self._fill_slots(now)
            if self.status.phase == RunPhase.RUNNING:
                if self.failing is not None and not self.active:
                    self._begin_compensation(now)
                elif self.failing is None and self.finished_steps == len(self.plan.order):
                    self._begin_finally()
            if self.status.phase == RunPhase.COMPENSATING:
                self._advance_compensation()
            if self.status.phase == RunPhase.FINALIZING:
                self._advance_finally(now)
            # A task can be queued, started, fail at once (a template error, an open breaker)
            # and the next be queued within one pass: counting moves, not queue lengths, sees it.
            after = (self.moves, len(self.ready), len(self.active), self.status.phase)
            if after == before and not self.ready:
                return

    # ------------------------------------------------------------------ steps

    def _begin_step(self, name: str, now: datetime) -> None:
        plan = self.plan.steps[name]
        st = self.steps[name]
        if st.phase != StepPhase.PENDING:
            return
        dep_phases = [self.steps[d].phase for d in plan.deps]
        if plan.deps and all(p == StepPhase.SKIPPED for p in dep_phases):
            self._skip(
                name,
                "UpstreamSkipped",
                f"all of its dependencies were skipped: {', '.join(plan.deps)}",
                now,
            )
            return
        if plan.when is not None:
            try:
                run_it = plan.when.evaluate_bool(self.context(None, (plan.when,)))
            except ExpressionError as exc:
                st.start_time = now
                self._finish_step(
                    name, StepPhase.FAILED, FailureReason.EXPRESSION_ERROR, str(exc), now
                )
                return
            if not run_it:
                self._skip(name, "WhenFalse", f"when {plan.when.source!r} is false", now)
                return
        self.dirty = True
        if plan.action is not None:
            task = self._step_task(plan, st)
            if plan.action.approval is not None:
                self._open_gate(task, now)
            else:
                self._enqueue(task)
        elif plan.fan_out is not None:
            self._begin_fan_out(plan, st, now)
        elif plan.loop is not None:
            st.phase = StepPhase.RUNNING
            st.start_time = now
            st.iterations = []
            self.loops.add(name)
            self._next_iteration(plan, st, now)

    def _skip(self, name: str, reason: str, message: str, now: datetime) -> None:
        self._event("Normal", "StepSkipped", f"Skipped step {name}: {message}", name)
        self._finish_step(name, StepPhase.SKIPPED, reason, message, now)

    def _finish_step(
        self, name: str, phase: StepPhase, reason: str, message: str | None, now: datetime
    ) -> None:
        st = self.steps[name]
        st.phase, st.reason, st.message = phase, reason, message
        st.completion_time = now
        st.retry_time = None
        self.finished_steps += 1
        self.dirty = True
        if phase == StepPhase.SUCCEEDED:
            self.actions.append(
                RecordEvent(
                    "Normal", "StepSucceeded", f"Step {name} succeeded", name, progress=True
                )
            )
        elif phase == StepPhase.FAILED:
            self._event("Warning", "StepFailed", f"Step {name} failed ({reason}): {message}", name)
            if self.failing is None:
                self._begin_failing("StepFailed", f"step {name} failed ({reason}): {message}", now)
        for dependent in self.plan.dependents[name]:
            self.remaining_deps[dependent] -= 1
            if self.remaining_deps[dependent] == 0 and self.failing is None:
                self.ready.append(dependent)

    # ------------------------------------------------------------------ attempts

    def _fill_slots(self, now: datetime) -> None:
        if self.paused:
            return
        blocked: list[Task] = []
        while self.slot_queue and self._capacity() > 0:
            task = self.slot_queue.popleft()
            self.queued.discard(id(task.status))
            if task.status.phase in (StepPhase.PENDING, StepPhase.RETRYING) and self._may_start(
                task
            ):
                if self._admit(task.action, task.status):
                    self._start_attempt(task, now)
                else:
                    blocked.append(task)
        for task in reversed(blocked):  # they keep their place in the queue
            self.slot_queue.appendleft(task)
            self.queued.add(id(task.status))
        if self.failing is None:
            for fan in list(self.fan_outs.values()):
                self._start_items(fan, now)

    def _may_start(self, task: Task) -> bool:
        if self.failing is None:
            return True
        return task.role in ("compensation", "finally")

    def _activate(self, name: str, task: Task) -> None:
        self.active[name] = task
        if task.action.concurrency is not None:
            self.held[task.action.concurrency.key] += 1

    def _deactivate(self, name: str) -> Task | None:
        task = self.active.pop(name, None)
        if task is not None and task.action.concurrency is not None:
            self.held[task.action.concurrency.key] -= 1
        return task

    def _admit(self, action: ActionPlan, status: TaskStatus) -> bool:
        """A free slot in the action's concurrency pool, counting every run's attempts."""
        pool = action.concurrency
        if pool is None:
            return True
        in_use = self.held[pool.key] + self.elsewhere.get(pool.key, 0)
        if in_use < pool.limit:
            return True
        self.waiting_for.add(pool.key)
        message = f"waiting for a slot of concurrency key {pool.key} ({in_use}/{pool.limit} in use)"
        if (status.reason, status.message) != ("WaitingForConcurrency", message):
            status.reason, status.message = "WaitingForConcurrency", message
            self.dirty = True
        return False

    def _start_attempt(self, task: Task, now: datetime) -> None:
        st = task.status
        st.attempts += 1
        st.retry_time = None
        st.start_time = st.start_time or now
        breaker = task.action.breaker
        if breaker is not None and self.breakers is not None:
            if self.breakers.admit(breaker.key, task.attempt_name(), now):
                st.fallback = None
            elif task.action.fallback is not None:
                task = replace(task, action=task.action.fallback)
                st.fallback = True
                self._event(
                    "Warning",
                    "CircuitOpenFallback",
                    f"Circuit breaker {breaker.key} is open: {task.display} runs its fallback",
                    task.step,
                )
            else:
                st.attempt_name = task.attempt_name()
                retry_at = self.breakers.get(breaker.key).retry_at
                when = f" until {retry_at.isoformat()}" if retry_at else ""
                self._task_failed(
                    task,
                    FailureReason.CIRCUIT_OPEN,
                    f"circuit breaker {breaker.key} is open{when} after "
                    f"{self.breakers.get(breaker.key).failures} consecutive failures",
                    None,
                    now,
                )
                return
        try:
            request = render_request(
                task, self.context(task, self._action_expressions(task.action))
            )
        except ExpressionError as exc:
            st.attempt_name = task.attempt_name()
            self._task_failed(task, FailureReason.EXPRESSION_ERROR, str(exc), None, now)
            return
        st.phase = StepPhase.RUNNING
        if st.reason == "WaitingForConcurrency":
            st.reason = st.message = None
        st.attempt_name = request.name
        st.attempt_start_time = now
        self._activate(request.name, task)
        self.actions.append(request)
        self.dirty = True

    def _on_result(self, result: AttemptResult, now: datetime) -> None:
        task = self._deactivate(result.name)
        if task is None:
            return  # already recorded, cancelled, or not ours: results are idempotent
        self._release(task)
        verdict = judge(task, result, self.context(task, self._action_expressions(task.action)))
        task.status.exit_code = verdict.exit_code
        breaker = task.action.breaker
        if breaker is not None and self.breakers is not None:
            self.breakers.record(
                breaker.key,
                result.name,
                ok=verdict.failure is None,
                now=now,
                threshold=breaker.failure_threshold,
                cool_down_seconds=breaker.cool_down_seconds,
            )
        if verdict.failure is None:
            self._task_succeeded(task, verdict.outputs or {}, now)
        else:
            self._task_failed(task, verdict.failure, verdict.message or "", verdict.exit_code, now)

    def _release(self, task: Task) -> None:
        if task.role == "item":
            self.fan_outs[task.step].running -= 1

    def _task_succeeded(self, task: Task, outputs: dict[str, Any], now: datetime) -> None:
        st = task.status
        st.phase, st.reason, st.message = StepPhase.SUCCEEDED, "Succeeded", None
        st.outputs = outputs
        st.completion_time = now
        self.dirty = True
        used = usage_of(outputs)
        if used is not None:
            self._account(task, used, now)
        self._task_done(task, now)

    # ------------------------------------------------------------------ budget

    def _account(self, task: Task, used: Usage, now: datetime) -> None:
        """Add a task's reported usage to it, its step (fan-outs, loops) and the run."""
        task.status.usage = (task.status.usage or Usage()).add(used)
        if task.role in ("item", "body"):
            owner = self.steps[task.step]
            owner.usage = (owner.usage or Usage()).add(used)
        self.status.usage = (self.status.usage or Usage()).add(used)
        budget = self.plan.spec.budget
        if budget is None or self.status.budget is not None or self.failing is not None:
            return
        total = self.status.usage
        over = []
        if budget.tokens is not None and total.tokens > budget.tokens:
            over.append(f"{total.tokens} tokens > {budget.tokens}")
        if budget.cost is not None and total.cost > budget.cost:
            over.append(f"cost {total.cost:g} > {budget.cost:g}")
        if not over:
            return
        message = f"over budget after step {task.display}: {', '.join(over)}"
        digest = _digest(
            {"run": self.run_uid, "gate": BUDGET_GATE, "opened": now, "usage": total.wire()}
        )
        self.status.budget = BudgetStatus(state="Exceeded", time=now, usage=total, digest=digest)
        if budget.on_exceeded == BudgetAction.PAUSE:
            who = _approvers_text(budget.approvers)
            self.actions.append(
                RecordEvent(
                    "Warning",
                    "BudgetExceeded",
                    f"Paused {message}; waiting for approval from {who} to go on "
                    f"(approve.braid.dev/{BUDGET_GATE})",
                    gate=BUDGET_GATE,
                )
            )
            self.actions.append(
                RecordEvent(
                    "Normal",
                    "ApprovalRequested",
                    f"Going over budget awaits 1 approval from {who}: {message}",
                    gate=BUDGET_GATE,
                )
            )
            return
        self._event("Warning", "BudgetExceeded", f"Stopping: {message}")
        self._begin_failing("BudgetExceeded", message, now, cancel=True)

    @property
    def paused(self) -> bool:
        """Over a Pause budget and not yet approved: nothing new starts."""
        return (
            self.status.budget is not None
            and self.status.budget.state == "Exceeded"
            and self.failing is None
        )

    def _on_budget_decision(self, decision: ApprovalDecision, now: datetime) -> None:
        budget, record = self.plan.spec.budget, self.status.budget
        if budget is None or record is None or not self.paused:
            return
        if decision.digest is not None and decision.digest != record.digest:
            return
        refused = None if decision.trusted else _refusal(budget.approvers, decision)
        allowed = refused is None
        records = record.approvals or []
        if not self._record(
            records, decision, refused=refused, digest=record.digest, now=now, gate=BUDGET_GATE
        ):
            return
        record.approvals = records
        if not allowed:
            self._event(
                "Warning",
                "ApprovalRefused",
                f"Ignored budget decision by {decision.user}: {refused}",
            )
        elif decision.approve:
            record.state = "Approved"
            self._event(
                "Normal", "BudgetApproved", f"Going over budget approved by {decision.user}"
            )
        else:
            record.state = "Rejected"
            why = decision.reason or "no reason given"
            self._event(
                "Warning", "BudgetRejected", f"Going over budget rejected by {decision.user}: {why}"
            )
            self._begin_failing(
                "BudgetRejected",
                f"over budget, rejected by {decision.user}: {why}",
                now,
                cancel=True,
            )

    def _task_failed(
        self, task: Task, reason: FailureReason, message: str, exit_code: int | None, now: datetime
    ) -> None:
        st = task.status
        st.exit_code = exit_code
        self.dirty = True
        retry = task.action.retry
        if (
            task.action.approval is None
            and st.attempts <= retry.limit
            and is_retryable(retry, reason, exit_code)
            and self._may_start(task)
        ):
            delay = retry_delay(retry.backoff, st.attempts, task.attempt_name())
            st.phase, st.reason, st.message = StepPhase.RETRYING, reason.value, message
            st.retry_time = now + timedelta(seconds=delay)
            self.retrying.append(task)
            if task.role == "item":
                self.fan_outs[task.step].running += 1  # a retrying item keeps its slot
            self._event(
                "Warning",
                "StepRetrying",
                f"Attempt {st.attempts} of {task.display} failed ({reason.value}): {message}; "
                f"retrying in {delay:.1f}s ({st.attempts}/{retry.limit} retries used)",
                task.step,
            )
            return
        st.phase, st.reason, st.message = StepPhase.FAILED, reason.value, message
        st.completion_time = now
        self._task_done(task, now)

    def _task_done(self, task: Task, now: datetime) -> None:
        """A task reached a final phase: tell whatever owns it."""
        self.moves += 1
        if task.role == "step":
            st = task.status
            self._finish_step(task.step, st.phase, st.reason or "", st.message, now)
        elif task.role == "item":
            fan = self.fan_outs.get(task.step)
            if fan is not None:
                if task.status.phase == StepPhase.SUCCEEDED:
                    fan.succeeded += 1
                else:
                    fan.failed += 1
                self._compact(fan)
                self._check_fan_out(fan, now)
        elif task.role == "body":
            self._advance_loop(self.plan.steps[task.step], now)
        elif task.role == "compensation":
            level = "Normal" if task.status.phase == StepPhase.SUCCEEDED else "Warning"
            self._event(
                level,
                f"Compensation{task.status.phase.value}",
                f"Compensation of step {task.step} {task.status.phase.value.lower()}",
                task.step,
            )

    def _cancel_task(self, task: Task, reason: str, message: str, now: datetime) -> None:
        st = task.status
        name = st.attempt_name
        if name and (active := self._deactivate(name)) is not None:
            self.actions.append(CancelAttempt(name, reason))
            self._release(task)
            breaker = active.action.breaker
            if breaker is not None and self.breakers is not None:
                self.breakers.abandon(breaker.key, name, now)
        st.phase, st.reason, st.message = StepPhase.CANCELLED, reason, message
        st.completion_time = now
        st.retry_time = None
        self.dirty = True

    # ------------------------------------------------------------------ approvals

    def _open_gate(self, task: Task, now: datetime) -> None:
        approval = task.action.approval
        assert approval is not None
        st = task.status
        st.phase, st.reason = StepPhase.WAITING, "ApprovalPending"
        st.start_time = now
        st.attempts = 1
        st.attempt_name = task.attempt_name()
        try:
            ctx = self.context(task, self._action_expressions(task.action))
            text = approval.message.render(ctx) if approval.message else ""
        except ExpressionError as exc:
            self._task_failed(task, FailureReason.EXPRESSION_ERROR, str(exc), None, now)
            return
        spec = approval.spec
        who = _approvers_text(spec.approvers)
        st.message = text or f"waiting for {spec.required} approval(s) from {who}"
        if isinstance(st, StepStatus | LoopTaskStatus):
            st.approval_digest = self._gate_digest(task, text)
        if spec.timeout_seconds:
            deadline = now + timedelta(seconds=spec.timeout_seconds)
            if isinstance(st, StepStatus | LoopTaskStatus):
                st.approval_deadline = deadline
        self.approvals.append(task)
        self.dirty = True
        ask = f": {text}" if text else ""
        self.actions.append(
            RecordEvent(
                "Normal",
                "ApprovalRequested",
                f"Step {task.display} awaits {spec.required} approval(s) from {who}{ask}",
                task.step,
                gate=task.body or task.step,
                iteration=task.iteration,
            )
        )

    def _gate_digest(self, task: Task, message: str) -> str:
        """What the approvers see: the upstream outputs the gated step builds on, and the
        question. If any of it changes, earlier approvals no longer count."""
        if task.role == "body":
            st = self.steps[task.step]
            assert st.iterations
            before = {}
            for body in st.iterations[-1].steps:
                if body is task.status:
                    break
                before[body.name] = body.outputs or {}
            inputs: dict[str, Any] = {"previous": task.scope.get("previous", {}), "body": before}
        else:
            deps = self.plan.steps[task.step].deps
            inputs = {"steps": {d: self.steps[d].outputs or {} for d in deps}}
        inputs["message"] = message
        # Bound to this run, this gate and this opening of it: a digest approved once cannot
        # be replayed in another run or a later loop iteration with inputs crafted to match.
        inputs["gate"] = {
            "run": self.run_uid,
            "step": task.step,
            "body": task.body,
            "iteration": task.iteration,
            "opened": task.status.start_time,
        }
        return _digest(inputs)

    def _earlier_bare_digest(self, task: Task, user: str) -> str | None:
        """The digest a bare (digest-less) decision by ``user`` on this gate was first counted
        for, in any opening of the gate (loop iterations included)."""
        statuses: list[StepStatus | LoopTaskStatus]
        if task.role == "body":
            statuses = [
                b
                for it in self.steps[task.step].iterations or []
                for b in it.steps
                if b.name == task.body
            ]
        else:
            statuses = [self.steps[task.step]]
        for st in statuses:
            for record in st.approvals or []:
                if record.user == user and record.bound is False and record.digest:
                    return record.digest
        return None

    def _record(
        self,
        records: list[ApprovalRecord],
        decision: ApprovalDecision,
        *,
        refused: str | None,
        digest: str | None,
        now: datetime,
        gate: str,
        iteration: int | None = None,
    ) -> bool:
        """Add a decision to a gate's records; False when it is already there (level-based:
        the same annotation is observed on every reconcile). ``refused``: why it does not
        count, if it does not."""
        verdict: Literal["Approved", "Rejected", "Refused"] = (
            ("Approved" if decision.approve else "Rejected") if refused is None else "Refused"
        )
        if any(r.user == decision.user and r.decision == verdict for r in records):
            return False
        verified = None if decision.trusted else decision.admitted
        reason = decision.reason if refused is None else refused
        records.append(
            ApprovalRecord(
                user=decision.user,
                decision=verdict,
                time=now,
                reason=reason,
                digest=digest,
                bound=decision.digest is not None,
                verified=verified,
            )
        )
        self.actions.append(
            RecordDecision(gate, decision.user, verdict, digest, reason, iteration, verified)
        )
        self.dirty = True
        return True

    def _on_decision(self, decision: ApprovalDecision, now: datetime) -> None:
        if decision.step == BUDGET_GATE and self.plan.spec.budget is not None:
            self._on_budget_decision(decision, now)
            return
        for task in list(self.approvals):
            name = task.body or task.step
            if name != decision.step or task.status.phase != StepPhase.WAITING:
                continue
            if decision.iteration is not None and decision.iteration != task.iteration:
                continue
            self._apply_decision(task, decision, now)

    def _apply_decision(self, task: Task, decision: ApprovalDecision, now: datetime) -> None:
        st = task.status
        assert isinstance(st, StepStatus | LoopTaskStatus)
        approval = task.action.approval
        assert approval is not None
        spec = approval.spec
        records = st.approvals if st.approvals is not None else []
        current = st.approval_digest
        if not decision.trusted:
            if decision.digest is not None and decision.digest != current:
                return  # given for other inputs
            if decision.digest is None:
                earlier = self._earlier_bare_digest(task, decision.user)
                if earlier is not None and earlier != current:
                    return  # counted before for inputs that have since changed
        refused = None if decision.trusted else _refusal(spec.approvers, decision)
        allowed = refused is None
        gate = task.body or task.step
        if not self._record(
            records,
            decision,
            refused=refused,
            digest=current,
            now=now,
            gate=gate,
            iteration=task.iteration,
        ):
            return
        st.approvals = records
        if not allowed:
            self._event(
                "Warning",
                "ApprovalRefused",
                f"Ignored decision by {decision.user} on step {task.display}: {refused}",
                task.step,
            )
            return
        if not decision.approve:
            self._event(
                "Warning",
                "ApprovalRejected",
                f"Step {task.display} rejected by {decision.user}: "
                f"{decision.reason or 'no reason given'}",
                task.step,
            )
            self._close_gate(
                task,
                approved=False,
                reason="Rejected",
                message=f"rejected by {decision.user}: {decision.reason or 'no reason given'}",
                now=now,
            )
            return
        self._event(
            "Normal", "Approved", f"Step {task.display} approved by {decision.user}", task.step
        )
        approvers = [r.user for r in records if r.decision == "Approved"]
        if decision.trusted or len(approvers) >= spec.required:
            self._close_gate(
                task,
                approved=True,
                reason="Approved",
                message=f"approved by {', '.join(approvers)}",
                now=now,
            )

    def _close_gate(
        self, task: Task, *, approved: bool, reason: str, message: str, now: datetime
    ) -> None:
        if task in self.approvals:
            self.approvals.remove(task)
        st = task.status
        if approved:
            approvers = [
                r.user for r in (getattr(st, "approvals", None) or []) if r.decision == "Approved"
            ]
            self._task_succeeded(task, {"approved": True, "approvedBy": approvers}, now)
            st.reason, st.message = reason, message
        else:
            st.phase, st.reason, st.message = StepPhase.FAILED, reason, message
            st.completion_time = now
            self.dirty = True
            self._task_done(task, now)

    # ------------------------------------------------------------------ fan-out

    def _evaluate_items(self, plan: StepPlan) -> list[Any] | str:
        """The fan-out's items, or why there are none. Deterministic, so a resumed run
        re-evaluates instead of storing the list."""
        fan = plan.fan_out
        assert fan is not None
        if fan.items_expression is None:
            return list(fan.spec.items or [])
        try:
            items = fan.items_expression.evaluate(self.context(None, (fan.items_expression,)))
        except ExpressionError as exc:
            return str(exc)
        if not isinstance(items, list):
            return f"{fan.items_expression.path}: must evaluate to a list, got {type_name(items)}"
        if len(items) > fan.spec.max_items:
            path = fan.items_expression.path
            return f"{path}: {len(items)} items exceed maxItems {fan.spec.max_items}"
        return items

    def _new_fan_out(self, plan: StepPlan, items: list[Any]) -> _FanOut:
        fan_spec = plan.fan_out.spec if plan.fan_out else None
        assert fan_spec is not None
        n = len(items)
        threshold = n
        if fan_spec.success_threshold is not None:
            t = fan_spec.success_threshold
            threshold = t.count if t.count is not None else math.ceil((t.fraction or 0) * n - 1e-9)
        fan = _FanOut(plan, items, min(threshold, n))
        self.fan_outs[plan.name] = fan
        return fan

    def _begin_fan_out(self, plan: StepPlan, st: StepStatus, now: datetime) -> None:
        st.phase, st.start_time = StepPhase.RUNNING, now
        items = self._evaluate_items(plan)
        if isinstance(items, str):
            self._finish_step(
                plan.name, StepPhase.FAILED, FailureReason.EXPRESSION_ERROR, items, now
            )
            return
        st.items, st.item_count, st.items_started = [], len(items), 0
        fan = self._new_fan_out(plan, items)
        self._event(
            "Normal",
            "FanOutStarted",
            f"Step {plan.name} fans out over {fan.total} items (success threshold {fan.threshold})",
            plan.name,
        )
        self._check_fan_out(fan, now)

    def _start_items(self, fan: _FanOut, now: datetime) -> None:
        st = self.steps[fan.plan.name]
        assert fan.plan.fan_out is not None
        assert st.items is not None
        limit = fan.plan.fan_out.spec.parallelism or DEFAULT_FAN_OUT_PARALLELISM
        if st.items_started is None:  # a status written before itemsStarted existed
            st.items_started = len(st.items)
        while (
            self.fan_outs.get(fan.plan.name) is fan  # an item failing fast can end it
            and self._capacity() > 0
            and st.items_started < fan.total
            and fan.running < limit
            and self._admit(fan.plan.fan_out.action, st)
        ):
            item = ItemStatus(index=st.items_started)
            st.items.append(item)
            st.items_started += 1
            fan.running += 1
            self._start_attempt(self._item_task(fan.plan, item, fan.items), now)

    def _compact(self, fan: _FanOut) -> None:
        """Fold finished items of a large fan-out into its summary (see COMPACT_ABOVE)."""
        st = self.steps[fan.plan.name]
        if fan.total <= COMPACT_ABOVE or st.items is None:
            return
        summary = st.items_summary or ItemsSummary()
        kept: list[ItemStatus] = []
        failed = [i for i in st.items if i.phase.final and i.phase != StepPhase.SUCCEEDED]
        keep_failed = {id(i) for i in failed[-KEEP_FAILED:]}
        for item in st.items:
            if not item.phase.final or id(item) in keep_failed:
                kept.append(item)
            elif item.phase == StepPhase.SUCCEEDED:
                summary.succeeded += 1
            else:
                summary.failed += 1
        if len(kept) != len(st.items):
            st.items, st.items_summary = kept, summary
            self.dirty = True

    def _check_fan_out(self, fan: _FanOut, now: datetime) -> None:
        name = fan.plan.name
        st = self.steps[name]
        assert fan.plan.fan_out is not None
        assert st.items is not None
        done = fan.succeeded + fan.failed
        all_done = done == fan.total
        reached = fan.succeeded >= fan.threshold
        wait_all = fan.plan.fan_out.spec.on_threshold_reached == ThresholdAction.WAIT_FOR_ALL
        if reached and (all_done or not wait_all):
            self._end_fan_out(
                fan,
                StepPhase.SUCCEEDED,
                "Succeeded",
                f"{fan.succeeded}/{fan.total} items succeeded (threshold {fan.threshold})",
                now,
            )
        elif fan.failed > fan.total - fan.threshold:
            self._end_fan_out(
                fan,
                StepPhase.FAILED,
                "ThresholdUnreachable",
                f"{fan.failed}/{fan.total} items failed; {fan.threshold} must succeed",
                now,
            )

    def _end_fan_out(
        self, fan: _FanOut, phase: StepPhase, reason: str, message: str, now: datetime
    ) -> None:
        name = fan.plan.name
        st = self.steps[name]
        assert st.items is not None
        for item in st.items:
            if not item.phase.final:
                self._cancel_item(fan, item, now)
        st.outputs = {"succeeded": fan.succeeded, "failed": fan.failed, "total": fan.total}
        if fan.total <= COMPACT_ABOVE:
            gathered: list[Any] = [None] * fan.total
            for item in st.items:
                if item.phase == StepPhase.SUCCEEDED:
                    gathered[item.index] = item.outputs or {}
            st.outputs = {"items": gathered, **st.outputs}
        else:
            self._compact(fan)
        del self.fan_outs[name]
        self._finish_step(name, phase, reason, message, now)

    def _cancel_item(self, fan: _FanOut, item: ItemStatus, now: datetime) -> None:
        task = self._item_task(fan.plan, item, fan.items)
        if item.phase == StepPhase.RETRYING:
            fan.running -= 1
            self.retrying = [t for t in self.retrying if t.status is not item]
        self._cancel_task(
            task, "ThresholdReached", "cancelled: the step's outcome was already decided", now
        )

    # ------------------------------------------------------------------ loops

    def _next_iteration(self, plan: StepPlan, st: StepStatus, now: datetime) -> None:
        assert plan.loop is not None
        assert st.iterations is not None
        index = len(st.iterations)
        st.iterations.append(
            IterationStatus(
                iteration=index, steps=[LoopTaskStatus(name=b.name) for b in plan.loop.body]
            )
        )
        self.dirty = True
        self._advance_loop(plan, now)

    def _advance_loop(self, plan: StepPlan, now: datetime) -> None:
        st = self.steps[plan.name]
        loop = plan.loop
        assert loop is not None
        assert st.iterations is not None
        if st.phase.final or self.failing is not None:
            return  # a failing run sweeps unfinished loops; no new work starts
        tasks = self._current_body(plan, st)
        for body, task in zip(loop.body, tasks, strict=True):
            phase = task.status.phase
            if phase == StepPhase.FAILED:
                self._end_loop(
                    plan,
                    StepPhase.FAILED,
                    "BodyStepFailed",
                    f"iteration {task.iteration} step {body.name} failed: {task.status.message}",
                    now,
                )
                return
            if phase.final:
                continue
            if phase == StepPhase.PENDING and self.failing is None:
                self._begin_body(body.when, task, now)
            return
        it = st.iterations[-1].iteration
        ctx = self.context(tasks[0] if tasks else None, (loop.until,))
        try:
            done = loop.until.evaluate_bool(ctx)
        except ExpressionError as exc:
            self._end_loop(plan, StepPhase.FAILED, FailureReason.EXPRESSION_ERROR, str(exc), now)
            return
        if done:
            self._end_loop(
                plan,
                StepPhase.SUCCEEDED,
                "Converged",
                f"until held after iteration {it}",
                now,
                converged=True,
            )
        elif it + 1 >= loop.spec.max_iterations:
            if loop.spec.on_max_iterations == MaxIterationsAction.SUCCEED:
                self._end_loop(
                    plan,
                    StepPhase.SUCCEEDED,
                    "MaxIterationsReached",
                    f"stopped after {it + 1} iterations",
                    now,
                )
            else:
                self._end_loop(
                    plan,
                    StepPhase.FAILED,
                    "MaxIterationsReached",
                    f"until still false after {it + 1} iterations",
                    now,
                )
        else:
            self._next_iteration(plan, st, now)

    def _begin_body(self, when: Expression | None, task: Task, now: datetime) -> None:
        if when is not None:
            try:
                run_it = when.evaluate_bool(self.context(task, (when,)))
            except ExpressionError as exc:
                task.status.start_time = now
                self._task_failed(task, FailureReason.EXPRESSION_ERROR, str(exc), None, now)
                return
            if not run_it:
                st = task.status
                st.phase, st.reason, st.message = (
                    StepPhase.SKIPPED,
                    "WhenFalse",
                    f"when {when.source!r} is false",
                )
                st.completion_time = now
                self.dirty = True
                self._advance_loop(self.plan.steps[task.step], now)
                return
        if task.action.approval is not None:
            self._open_gate(task, now)
        else:
            self._enqueue(task)

    def _end_loop(
        self,
        plan: StepPlan,
        phase: StepPhase,
        reason: str,
        message: str,
        now: datetime,
        *,
        converged: bool = False,
    ) -> None:
        st = self.steps[plan.name]
        assert st.iterations is not None
        history = [self._iteration_outputs(st, i) for i in range(len(st.iterations))]
        st.outputs = {
            "iterations": history,
            "last": history[-1] if history else {},
            "count": len(history),
            "converged": converged,
        }
        self.loops.discard(plan.name)
        self._finish_step(plan.name, phase, reason, message, now)

    # ------------------------------------------------------------ failure, compensation, finally

    def _begin_failing(
        self, reason: str, message: str, now: datetime, *, cancel: bool = False
    ) -> None:
        self.failing = _Failing(reason, message, cancelled=reason == "Cancelled")
        self.dirty = True
        self.ready.clear()
        for task in list(self.retrying):
            if task.status.phase == StepPhase.RETRYING:
                self._cancel_task(task, "RunFailed", "cancelled: " + message, now)
        self.retrying.clear()
        for task in list(self.approvals):
            self._cancel_task(task, "RunFailed", "cancelled: " + message, now)
        self.approvals.clear()
        if cancel:
            for task in list(self.active.values()):
                self._cancel_task(task, reason, message, now)
        self.slot_queue = deque(t for t in self.slot_queue if t.role in ("compensation", "finally"))
        self.queued = {id(t.status) for t in self.slot_queue}

    def _sweep_unfinished(self, now: datetime) -> None:
        reason = "RunCancelled" if self.failing and self.failing.cancelled else "RunFailed"
        for name in self.plan.order:
            st = self.steps[name]
            for sub in _subtasks(st):
                if not sub.phase.final:
                    sub.phase, sub.reason, sub.completion_time = StepPhase.CANCELLED, reason, now
            if not st.phase.final:
                started = st.start_time is not None
                st.phase = StepPhase.CANCELLED if started else StepPhase.SKIPPED
                st.reason, st.completion_time = reason, now
                self.finished_steps += 1
        self.fan_outs.clear()
        self.loops.clear()

    def _compensation_order(self) -> list[str]:
        done = [
            self.plan.steps[n]
            for n in self.plan.order
            if self.plan.steps[n].compensation is not None
            and self.steps[n].phase == StepPhase.SUCCEEDED
        ]
        return [
            p.name
            for p in sorted(
                done,
                key=lambda p: (self.steps[p.name].completion_time or _NEVER, p.index),
                reverse=True,
            )
        ]

    def _begin_compensation(self, now: datetime) -> None:
        self._sweep_unfinished(now)
        policy = self.plan.spec.compensation
        enabled = policy is None or (
            policy.enabled and (policy.on_cancel or not (self.failing and self.failing.cancelled))
        )
        budget = self.plan.spec.budget
        if (
            self.failing is not None
            and self.failing.reason == "BudgetExceeded"
            and budget is not None
            and budget.on_exceeded == BudgetAction.FAIL
        ):
            enabled = False  # Fail means stop as it is; Compensate is the other choice
        self.dirty = True
        if enabled and self._compensation_order():
            self.status.phase = RunPhase.COMPENSATING
            self._event(
                "Warning",
                "CompensationStarted",
                f"Compensating {len(self._compensation_order())} step(s) in reverse completion "
                "order",
            )
        else:
            self._begin_finally()

    def _advance_compensation(self) -> None:
        for name in self._compensation_order():
            st = self.steps[name]
            plan = self.plan.steps[name]
            assert plan.compensation is not None
            if st.compensation is None:
                st.compensation = TaskStatus()
            comp = st.compensation
            if comp.phase.final:
                continue
            task = Task(
                comp, plan.compensation, "compensation", name, f"{self.run_name}-{name}--undo"
            )
            if comp.phase == StepPhase.PENDING:
                self._enqueue(task)
            return
        self._begin_finally()

    def _resume_tail(self) -> None:
        for name in self.plan.order:
            st = self.steps[name]
            plan = self.plan.steps[name]
            if st.compensation is not None and plan.compensation is not None:
                self._resume_task(
                    Task(
                        st.compensation,
                        plan.compensation,
                        "compensation",
                        name,
                        f"{self.run_name}-{name}--undo",
                    )
                )
        for fin, st in zip(self.plan.finally_steps, self.status.finally_ or [], strict=True):
            self._resume_task(
                Task(st, fin.action, "finally", fin.name, f"{self.run_name}-{fin.name}")
            )

    def _begin_finally(self) -> None:
        self.status.phase = RunPhase.FINALIZING
        self.dirty = True
        for fin, st in zip(self.plan.finally_steps, self.status.finally_ or [], strict=True):
            if st.phase == StepPhase.PENDING:
                self._enqueue(
                    Task(st, fin.action, "finally", fin.name, f"{self.run_name}-{fin.name}")
                )

    def _advance_finally(self, now: datetime) -> None:
        if (
            any(not s.phase.final for s in self.status.finally_ or [])
            or self.active
            or self.slot_queue
        ):
            return
        self._complete(now)

    def _complete(self, now: datetime) -> None:
        status = self.status
        status.completion_time = now
        failed_finally = [s.name for s in status.finally_ or [] if s.phase == StepPhase.FAILED]
        if self.failing is None and failed_finally:
            self.failing = _Failing(
                "FinallyFailed", f"finally step(s) failed: {', '.join(failed_finally)}"
            )
        if self.failing is None:
            try:
                ctx = self.context(None, tuple(self.plan.outputs.values()))
                outputs = {k: e.evaluate(ctx) for k, e in self.plan.outputs.items()}
            except ExpressionError as exc:
                self.failing = _Failing("OutputsError", str(exc))
            else:
                deep = depth_failure(outputs, "spec.outputs")
                if deep is not None:
                    self.failing = _Failing("OutputsError", deep.message or "")
                else:
                    status.outputs = outputs
        if self.failing is None:
            status.phase = RunPhase.SUCCEEDED
            status.set_condition(
                CONDITION_SUCCEEDED,
                ConditionStatus.TRUE,
                "Succeeded",
                "all steps finished",
                now,
                self.generation,
            )
            self._event(
                "Normal",
                "RunSucceeded",
                f"Run succeeded in {_format_duration(now - (status.start_time or now))}",
            )
        else:
            status.phase = RunPhase.CANCELLED if self.failing.cancelled else RunPhase.FAILED
            status.set_condition(
                CONDITION_SUCCEEDED,
                ConditionStatus.FALSE,
                self.failing.reason,
                self.failing.message,
                now,
                self.generation,
            )
            self._event(
                "Warning",
                "RunCancelled" if self.failing.cancelled else "RunFailed",
                f"Run ended: {self.failing.message}",
            )
        self.dirty = True

    # ------------------------------------------------------------------ size

    def _on_oversized(self, message: str, level: int, now: datetime) -> None:
        """The status cannot be stored: fail the run now (running steps cancelled) and shed
        what made it large, so that the failure itself can be written. A run that has just
        finished keeps its outcome and only sheds."""
        if self.finished:
            self._event("Warning", "StatusTooLarge", f"Dropped outputs to fit: {message}")
        elif self.failing is None:
            self._event("Warning", "StatusTooLarge", f"Failing the run: {message}")
            self._begin_failing("StatusTooLarge", message, now, cancel=True)
        self.shed(level)
        self.dirty = True

    def shed(self, level: int) -> None:
        """Drop outputs from the status: level 1 those of fan-out items and loop iterations
        (and iterations before the last two), level 2 every output."""
        note = "outputs dropped: the run's status grew too large to store"
        for st in self.status.steps:
            for item in st.items or []:
                item.outputs = None
            if st.iterations and len(st.iterations) > 2:
                st.iterations = st.iterations[-2:]
            for it in st.iterations or []:
                for body in it.steps:
                    body.outputs = None
            if st.outputs is not None and ("items" in st.outputs or "iterations" in st.outputs):
                st.outputs = {
                    k: v for k, v in st.outputs.items() if k not in ("items", "iterations", "last")
                }
                st.message = f"{st.message or ''} ({note})".strip()
            if level >= 2 and st.outputs:
                st.outputs = None
                st.message = f"{st.message or ''} ({note})".strip()
            if level >= 2 and st.compensation is not None:
                st.compensation.outputs = None
        if self.status.history and len(self.status.history) > 20:
            self.status.history = self.status.history[-20:]

    # ------------------------------------------------------------------ time

    def _check_time(self, now: datetime) -> None:
        spec = self.plan.spec
        start = self.status.start_time
        if (
            spec.timeout_seconds
            and start
            and self.failing is None
            and self.status.phase == RunPhase.RUNNING
            and now >= start + timedelta(seconds=spec.timeout_seconds)
        ):
            self._begin_failing(
                "TimedOut",
                f"the run exceeded timeoutSeconds={spec.timeout_seconds}",
                now,
                cancel=True,
            )
            self._event(
                "Warning", "RunTimedOut", f"Run exceeded timeoutSeconds={spec.timeout_seconds}"
            )
        for name, task in list(self.active.items()):
            deadline = _attempt_deadline(task)
            if deadline is not None and now >= deadline:
                self._deactivate(name)
                self._release(task)
                self.actions.append(CancelAttempt(name, "TimedOut"))
                self._task_failed(
                    task,
                    FailureReason.TIMED_OUT,
                    f"attempt {task.status.attempts} exceeded "
                    f"timeoutSeconds={task.action.timeout_seconds}",
                    None,
                    now,
                )
        due = [
            t
            for t in self.retrying
            if t.status.retry_time is not None and t.status.retry_time <= now
        ]
        if due:
            self.retrying = [t for t in self.retrying if t not in due]
            for task in due:
                self._enqueue(task)  # a retrying item still holds its fan-out slot
        for task in list(self.approvals):
            deadline = getattr(task.status, "approval_deadline", None)
            if deadline is not None and now >= deadline and task.status.phase == StepPhase.WAITING:
                approval = task.action.approval
                assert approval is not None
                self._event(
                    "Warning",
                    "ApprovalTimedOut",
                    f"Approval of step {task.display} timed out ({approval.spec.on_timeout.value})",
                    task.step,
                )
                if approval.spec.on_timeout == ApprovalTimeoutAction.APPROVE:
                    self._close_gate(
                        task,
                        approved=True,
                        reason="ApprovalTimedOut",
                        message="approved automatically on timeout",
                        now=now,
                    )
                else:
                    self._close_gate(
                        task,
                        approved=False,
                        reason="ApprovalTimedOut",
                        message="no decision before the deadline",
                        now=now,
                    )
        self._check_sla(now)

    def _sla_deadlines(self) -> list[tuple[str | None, datetime]]:
        out: list[tuple[str | None, datetime]] = []
        sla = self.plan.spec.sla
        start = self.status.start_time
        if (
            sla
            and sla.max_duration_seconds
            and start
            and not self.finished
            and not self.status.sla_breached
        ):
            out.append((None, start + timedelta(seconds=sla.max_duration_seconds)))
        for task in (*self.active.values(), *self.approvals, *self.retrying):
            if task.role != "step":
                continue
            out.extend(self._step_sla(task.step))
        for name in self.loops | set(self.fan_outs):
            out.extend(self._step_sla(name))
        return out

    def _step_sla(self, name: str) -> list[tuple[str | None, datetime]]:
        st = self.steps[name]
        seconds = self.plan.steps[name].sla_seconds
        if not seconds or st.start_time is None or st.sla_breached:
            return []
        return [(name, st.start_time + timedelta(seconds=seconds))]

    def _check_sla(self, now: datetime) -> None:
        for step, deadline in self._sla_deadlines():
            if now < deadline:
                continue
            if step is None:
                self.status.sla_breached = True
                target = self.plan.spec.sla.max_duration_seconds if self.plan.spec.sla else 0
                self._sla_breach(
                    "RunDeadlineExceeded",
                    f"the run has been running longer than its SLA of {target}s",
                    now,
                )
            else:
                self.steps[step].sla_breached = True
                self._sla_breach(
                    "StepDeadlineExceeded",
                    f"step {step} has been running longer than its SLA of "
                    f"{self.plan.steps[step].sla_seconds}s",
                    now,
                    step,
                )

    def _sla_breach(
        self, reason: str, message: str, now: datetime, step: str | None = None
    ) -> None:
        self.status.set_condition(
            CONDITION_SLA_BREACHED, ConditionStatus.TRUE, reason, message, now, self.generation
        )
        self._event("Warning", "SLABreached", message[0].upper() + message[1:], step)
        self.dirty = True

    def _wake_at(self) -> datetime | None:
        if self.finished:
            return None
        times: list[datetime] = []
        spec = self.plan.spec
        start = self.status.start_time
        if spec.timeout_seconds and start and self.failing is None:
            times.append(start + timedelta(seconds=spec.timeout_seconds))
        for task in self.active.values():
            deadline = _attempt_deadline(task)
            if deadline is not None:
                times.append(deadline)
        times.extend(t.status.retry_time for t in self.retrying if t.status.retry_time)
        for task in self.approvals:
            deadline = getattr(task.status, "approval_deadline", None)
            if deadline is not None:
                times.append(deadline)
        times.extend(deadline for _, deadline in self._sla_deadlines())
        return min(times) if times else None

    # ------------------------------------------------------------------ conditions

    def _update_conditions(self, now: datetime) -> None:
        status = self.status
        gen = self.generation
        waiting = [t for t in self.approvals if t.status.phase == StepPhase.WAITING]
        if not self.finished:
            if self.failing is not None:
                reason, message = self.failing.reason, self.failing.message
            elif self.paused and not self.active:
                reason, message = "AwaitingApproval", "over budget: waiting for approval to go on"
            elif waiting and not self.active:
                # Nothing else is moving: the printer column says why the run stands still.
                reason, message = "AwaitingApproval", "waiting for approval"
            else:
                reason = "Running"
                message = f"{self.finished_steps}/{len(self.plan.order)} steps finished"
            self.dirty |= status.set_condition(
                CONDITION_SUCCEEDED, ConditionStatus.UNKNOWN, reason, message, now, gen
            )
        pending = [self._pending(t) for t in waiting]
        if self.paused and self.plan.spec.budget is not None and self.status.budget is not None:
            approvers = self.plan.spec.budget.approvers
            pending.append(
                PendingApproval(
                    step=BUDGET_GATE,
                    users=(approvers.users or None) if approvers else None,
                    groups=(approvers.groups or None) if approvers else None,
                    required=1,
                    digest=self.status.budget.digest or "",
                )
            )
        if (pending or None) != status.pending_approvals:
            status.pending_approvals = pending or None
            self.dirty = True
        if pending:
            parts = [
                f"step {p.step} needs {p.required - len(p.approved_by or [])} more approval(s) "
                f"from {_who(p)}; approve as <user>:{p.digest}"
                + (f" until {p.deadline.isoformat()}" if p.deadline else "")
                for p in pending
            ]
            reason = "AwaitingApproval"
            if self.approvals_verified is False:
                # Without the admission policy nobody checked who wrote an annotation.
                reason = "AwaitingUnverifiedApproval"
                parts.append(
                    "approver identity is not verified: the operator did not find the approval "
                    "admission policy installed, so approvals through groups are not counted"
                )
            self.dirty |= status.set_condition(
                CONDITION_APPROVAL_PENDING,
                ConditionStatus.TRUE,
                reason,
                "; ".join(parts),
                now,
                gen,
            )
        elif status.condition(CONDITION_APPROVAL_PENDING) is not None:
            self.dirty |= status.set_condition(
                CONDITION_APPROVAL_PENDING, ConditionStatus.FALSE, "NoApprovalPending", "", now, gen
            )
        if self.plan.has_sla and status.condition(CONDITION_SLA_BREACHED) is None:
            self.dirty |= status.set_condition(
                CONDITION_SLA_BREACHED, ConditionStatus.FALSE, "WithinSLA", "", now, gen
            )

    @staticmethod
    def _pending(task: Task) -> PendingApproval:
        approval = task.action.approval
        assert approval is not None
        st = task.status
        assert isinstance(st, StepStatus | LoopTaskStatus)
        approvers = approval.spec.approvers
        approved = [r.user for r in st.approvals or [] if r.decision == "Approved"]
        return PendingApproval(
            step=task.body or task.step,
            iteration=task.iteration,
            users=(approvers.users or None) if approvers else None,
            groups=(approvers.groups or None) if approvers else None,
            required=approval.spec.required,
            approved_by=approved or None,
            digest=st.approval_digest or "",
            deadline=st.approval_deadline,
        )


def _attempt_deadline(task: Task) -> datetime | None:
    timeout = task.action.timeout_seconds
    start = task.status.attempt_start_time
    if timeout is None or start is None:
        return None
    return start + timedelta(seconds=timeout)


def _subtasks(st: StepStatus) -> list[TaskStatus]:
    out: list[TaskStatus] = list(st.items or [])
    for it in st.iterations or []:
        out.extend(it.steps)
    return out


def _digest(inputs: dict[str, Any]) -> str:
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:DIGEST_LENGTH]


def _refusal(approvers: Any, decision: ApprovalDecision) -> str | None:
    """Why a decision does not count, or None when it does. Defence in depth: listed users are
    checked here too; group membership is known only to the API server, so an approval through
    a group counts only when its admission policy checked it."""
    if approvers is None or (not approvers.users and not approvers.groups):
        return None
    if decision.user in (approvers.users or []):
        return None
    if set(decision.groups) & set(approvers.groups or []):
        return None
    if approvers.groups and decision.admitted:
        return None
    if approvers.groups:
        return (
            f"not a listed user, and membership of {', '.join(approvers.groups)} cannot be "
            "checked: the operator did not find the approval admission policy installed"
        )
    return f"not an allowed approver ({_approvers_text(approvers)})"


def _who(pending: PendingApproval) -> str:
    names = list(pending.users or []) + [f"group:{g}" for g in pending.groups or []]
    return ", ".join(names) or "anyone allowed to annotate the run"


def _approvers_text(approvers: Any) -> str:
    if approvers is None or (not approvers.users and not approvers.groups):
        return "anyone allowed to annotate the run"
    names = list(approvers.users or []) + [f"group:{g}" for g in approvers.groups or []]
    return ", ".join(names)


def _format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"

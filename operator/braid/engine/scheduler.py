"""The run state machine: observations and the time in, actions and a new status out.

``RunState`` is an indexed, in-memory view of one ``WorkflowRunStatus``. It is built once from
the status (``RunState.load``, linear in the run's size) and then each ``decide`` costs time
proportional to what changed, not to the size of the run: ready steps sit in a queue fed by
dependency counters, only running attempts are scanned for deadlines, and fan-out items are
materialised only when they start. The operator rebuilds the state on every reconcile (it
reads the status anyway); the local runner keeps one state for the whole run.

What each feature means — a gate's decision, a fan-out's outcome, a loop's next move, a
budget's verdict, what is due — is decided in its own module (approvals, fanout, loops,
budget, deadlines, finishing) as a pure function returning a verdict; RunState owns the
indexes, readiness, slots and attempts, and is the one place verdicts are applied.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from braid.api.reasons import EventReason, FailureReason, RunReason, StepReason
from braid.api.run import (
    BreakerStatus,
    HistoryEntry,
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
from braid.api.workflow import BUDGET_GATE, WorkflowSpec
from braid.engine import approvals, budget, deadlines, fanout, finishing, loops
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
from braid.engine.breakers import BreakerBoard, passage
from braid.engine.compile import plan_for
from braid.engine.context import expression_context
from braid.engine.fanout import FanOut
from braid.engine.outputs import depth_failure, shed, usage_of
from braid.engine.plan import ActionPlan, Plan, StepPlan
from braid.engine.slots import Slots
from braid.engine.tasks import (
    Task,
    compensation_task,
    expressions_of,
    finally_task,
    item_task,
    judge,
    render_request,
    step_task,
)
from braid.expressions import Expression, ExpressionError

HISTORY_LIMIT = 100
Level = Literal["Normal", "Warning"]


@dataclass
class _Failing:
    """The failure the run is handling (it compensates and finalizes, then ends with it)."""

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
    run_uid: str = ""  # binds approval digests to this run: a digest never approves another
    steps: dict[str, StepStatus] = field(default_factory=dict)
    # readiness: dependency counters feed the ready queue
    remaining_deps: dict[str, int] = field(default_factory=dict)
    ready: deque[str] = field(default_factory=deque)
    finished_steps: int = 0
    # tasks waiting for a slot, running attempts, the pools they hold
    slots: Slots = field(default_factory=Slots)
    # tasks by what else they wait for
    retrying: list[Task] = field(default_factory=list)
    gates: list[Task] = field(default_factory=list)  # approval gates waiting for people
    fan_outs: dict[str, FanOut] = field(default_factory=dict)
    running_loops: set[str] = field(default_factory=set)
    failing: _Failing | None = None
    breakers: BreakerBoard | None = None  # shared with other runs, given by the driver
    approvals_verified: bool | None = None  # see Observations
    # this decision's output
    actions: list[Action] = field(default_factory=list)
    dirty: bool = False

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
        state = cls(run_name, plan, status, params, generation, uid, slots=Slots(spec.max_parallel))
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
            state.remaining_deps[name] = sum(
                not state.steps[d].phase.final for d in plan.steps[name].deps
            )
            if st.phase.final:
                state.finished_steps += 1
            elif st.phase == StepPhase.PENDING and state.remaining_deps[name] == 0:
                state.ready.append(name)
            else:
                state._resume_step(plan.steps[name], st)
        failure = status.failure if not state.finished else None
        if failure is not None:
            reason, message = failure
            state.failing = _Failing(reason, message, reason == RunReason.CANCELLED)
            state.ready.clear()
        if status.phase in (RunPhase.COMPENSATING, RunPhase.FINALIZING):
            state._resume_tail()
        return state

    def _resume_task(self, task: Task) -> None:
        phase = task.status.phase
        if task.status.fallback and task.action.fallback is not None:
            task = replace(task, action=task.action.fallback)
        if phase == StepPhase.RUNNING and task.status.attempt_name:
            self.slots.activate(task.status.attempt_name, task)
        elif phase == StepPhase.RETRYING:
            self.retrying.append(task)
        elif phase == StepPhase.WAITING:
            self.gates.append(task)

    def _resume_step(self, plan: StepPlan, st: StepStatus) -> None:
        if plan.action is not None:
            self._resume_task(step_task(self.run_name, plan, st))
        elif plan.fan_out is not None and st.phase == StepPhase.RUNNING:
            items = fanout.evaluate_items(plan, lambda e: self.context(None, (e,)))
            if isinstance(items, str):
                return  # unreachable for a run that started the fan-out; it stays as recorded
            self.fan_outs[plan.name] = fanout.resume(plan, st, items)
            for item in st.items or []:
                self._resume_task(item_task(self.run_name, plan, item, items))
        elif plan.loop is not None and st.phase == StepPhase.RUNNING:
            self.running_loops.add(plan.name)
            for body in self._body_tasks(plan, st):
                self._resume_task(body)

    def _resume_tail(self) -> None:
        for name in self.plan.order:
            st, plan = self.steps[name], self.plan.steps[name]
            if st.compensation is not None and plan.compensation is not None:
                self._resume_task(compensation_task(self.run_name, plan, st))
        for fin, st in zip(self.plan.finally_steps, self.status.finally_ or [], strict=True):
            self._resume_task(finally_task(self.run_name, fin, st))

    def _body_tasks(self, plan: StepPlan, st: StepStatus) -> list[Task]:
        return loops.body_tasks(self.run_name, plan, st)

    # ------------------------------------------------------------------ context

    def context(
        self, task: Task | None, expressions: tuple[Expression, ...] = ()
    ) -> dict[str, Any]:
        """The names an expression sees; only the steps it reads are materialised."""
        body = None
        if task is not None and task.role == "body":
            iterations = self.steps[task.step].iterations
            assert iterations
            body = iterations[-1].steps
        return expression_context(
            run_name=self.run_name,
            params=self.params,
            failure=self.failing.reason if self.failing else None,
            steps=self.steps,
            expressions=expressions,
            body=body,
            scope=task.scope if task is not None else None,
        )

    def _task_context(self, task: Task) -> dict[str, Any]:
        return self.context(task, expressions_of(task.action))

    # ------------------------------------------------------------------ decide

    def decide(self, observations: Observations, now: datetime) -> Decision:
        """Apply what was observed and what time it is; return what to do next."""
        self.actions, self.dirty, self.slots.waiting_for = [], False, set()
        self.slots.elsewhere = observations.elsewhere
        self.breakers = observations.breakers
        self.approvals_verified = observations.approvals_verified
        if self.status.phase == RunPhase.PENDING:
            self.status.mark_started(now, self.generation)
            self._event("Normal", EventReason.RUN_STARTED, f"Started run with {self.total} steps")
            self.dirty = True
        if observations.oversized is not None:
            self._on_oversized(*observations.oversized, now)
        if not self.finished:
            for result in observations.results:
                self._on_result(result, now)
            for decision in observations.decisions:
                self._on_decision(decision, now)
            if observations.cancel and not (self.failing and self.failing.cancelled):
                self._begin_failing(RunReason.CANCELLED, "the run was cancelled", now, cancel=True)
            self._check_time(now)
            self._advance(now)
            self._update_conditions(now)
        self._record_history(now)
        if self.dirty:
            self.status.progress = f"{self.finished_steps}/{self.total}"
            end = self.status.completion_time or now
            if self.status.start_time is not None:
                self.status.duration = format_duration(end - self.status.start_time)
        self._show_breakers()
        return Decision(
            self.actions,
            self._wake_at(),
            self.dirty,
            self.finished,
            held=self.slots.in_use(),
            waiting_for=frozenset(self.slots.waiting_for),
        )

    @property
    def finished(self) -> bool:
        return self.status.phase in (RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.CANCELLED)

    @property
    def total(self) -> int:
        return len(self.plan.order)

    def _event(self, level: Level, reason: str, message: str, step: str | None = None) -> None:
        self.actions.append(RecordEvent(level, reason, message, step))

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
            self.status.history = [*(self.status.history or []), *entries][-HISTORY_LIMIT:]
            self.dirty = True

    def _show_breakers(self) -> None:
        if self.breakers is None or not self.plan.breaker_keys:
            return
        shown = [BreakerStatus.of(key, self.breakers.get(key)) for key in self.plan.breaker_keys]
        if shown != (self.status.circuit_breakers or []):
            self.status.circuit_breakers = shown
            self.dirty = True

    def _advance(self, now: datetime) -> None:
        """Start whatever may start now, repeating until nothing changes."""
        while True:
            before = (self.slots.moves, len(self.ready), len(self.active), self.status.phase)
            if self.failing is None:
                while self.ready:
                    self._begin_step(self.ready.popleft(), now)
            self._fill_slots(now)
            if self.status.phase == RunPhase.RUNNING:
                if self.failing is not None and not self.active:
                    self._begin_compensation(now)
                elif self.failing is None and self.finished_steps == self.total:
                    self._begin_finally()
            if self.status.phase == RunPhase.COMPENSATING:
                self._advance_compensation()
            if self.status.phase == RunPhase.FINALIZING:
                self._advance_finally(now)
            # A task can be queued, started, fail at once (a template error, an open breaker)
            # and the next be queued within one pass: counting moves, not queue lengths, sees it.
            after = (self.slots.moves, len(self.ready), len(self.active), self.status.phase)
            if after == before and not self.ready:
                return

    # ------------------------------------------------------------------ steps

    def _begin_step(self, name: str, now: datetime) -> None:
        plan, st = self.plan.steps[name], self.steps[name]
        if st.phase != StepPhase.PENDING:
            return
        if plan.deps and all(self.steps[d].phase == StepPhase.SKIPPED for d in plan.deps):
            message = f"all of its dependencies were skipped: {', '.join(plan.deps)}"
            self._skip(name, StepReason.UPSTREAM_SKIPPED, message, now)
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
                self._skip(name, StepReason.WHEN_FALSE, f"when {plan.when.source!r} is false", now)
                return
        self.dirty = True
        if plan.action is not None:
            task = step_task(self.run_name, plan, st)
            if plan.action.approval is not None:
                self._open_gate(task, now)
            else:
                self._enqueue(task)
        elif plan.fan_out is not None:
            self._begin_fan_out(plan, st, now)
        elif plan.loop is not None:
            st.phase, st.start_time, st.iterations = StepPhase.RUNNING, now, []
            self.running_loops.add(name)
            self._next_iteration(plan, st, now)

    def _skip(self, name: str, reason: str, message: str, now: datetime) -> None:
        self._event("Normal", EventReason.STEP_SKIPPED, f"Skipped step {name}: {message}", name)
        self._finish_step(name, StepPhase.SKIPPED, reason, message, now)

    def _finish_step(
        self, name: str, phase: StepPhase, reason: str, message: str | None, now: datetime
    ) -> None:
        st = self.steps[name]
        if phase == StepPhase.SUCCEEDED:
            st.mark_succeeded(st.outputs, now, reason, message)
            self.actions.append(
                RecordEvent(
                    "Normal",
                    EventReason.STEP_SUCCEEDED,
                    f"Step {name} succeeded",
                    name,
                    progress=True,
                )
            )
        elif phase == StepPhase.SKIPPED:
            st.mark_skipped(reason, message, now)
        else:
            st.mark_failed(reason, message, now)
            said = f"step {name} failed ({reason}): {message}"
            self._event("Warning", EventReason.STEP_FAILED, said[0].upper() + said[1:], name)
            if self.failing is None:
                self._begin_failing(RunReason.STEP_FAILED, said, now)
        self.finished_steps += 1
        self.dirty = True
        for dependent in self.plan.dependents[name]:
            self.remaining_deps[dependent] -= 1
            if self.remaining_deps[dependent] == 0 and self.failing is None:
                self.ready.append(dependent)

    # ------------------------------------------------------------------ slots and attempts

    @property
    def active(self) -> dict[str, Task]:
        """Running attempts by name."""
        return self.slots.active

    def _enqueue(self, task: Task) -> None:
        self.slots.enqueue(task)

    def _fill_slots(self, now: datetime) -> None:
        if self.paused:
            return
        blocked: list[Task] = []
        while self.slots.queue and self.slots.capacity() > 0:
            task = self.slots.pop()
            startable = task.status.phase in (StepPhase.PENDING, StepPhase.RETRYING)
            if startable and self._may_start(task):
                if self._admit(task.action, task.status):
                    self._start_attempt(task, now)
                else:
                    blocked.append(task)
        self.slots.requeue_first(blocked)  # they keep their place in the queue
        if self.failing is None:
            for fan in list(self.fan_outs.values()):
                self._start_items(fan, now)

    def _may_start(self, task: Task) -> bool:
        return self.failing is None or task.role in ("compensation", "finally")

    def _admit(self, action: ActionPlan, status: TaskStatus) -> bool:
        free, changed = self.slots.admit(action, status)
        self.dirty |= changed
        return free

    def _deactivate(self, name: str) -> Task | None:
        task = self.slots.deactivate(name)
        if task is not None and task.role == "item" and task.step in self.fan_outs:
            self.fan_outs[task.step].running -= 1
        return task

    def _start_attempt(self, task: Task, now: datetime) -> None:
        st = task.status
        # A fan-out's running count holds its items that run or wait to retry: an item takes
        # its slot when it first starts and keeps it while it retries.
        first = st.phase == StepPhase.PENDING
        st.attempts += 1
        st.retry_time = None
        st.start_time = st.start_time or now
        through = self._through_breaker(task, now)
        if through is None:
            return
        task = through
        try:
            request = render_request(task, self._task_context(task))
        except ExpressionError as exc:
            st.attempt_name = task.attempt_name()
            self._task_failed(task, FailureReason.EXPRESSION_ERROR, str(exc), None, now)
            return
        st.mark_running(request.name, now)
        self.slots.activate(request.name, task)
        if task.role == "item" and first:
            self.fan_outs[task.step].running += 1
        self.actions.append(request)
        self.dirty = True

    def _through_breaker(self, task: Task, now: datetime) -> Task | None:
        """The task as it goes through its circuit breaker: as it is, as its fallback, or
        None when the breaker is open and the attempt failed fast."""
        breaker = task.action.breaker
        if breaker is None or self.breakers is None:
            return task
        st = task.status
        fallback = task.action.fallback
        way = passage(self.breakers, breaker.key, task.attempt_name(), now, fallback is not None)
        if way.kind == "through":
            st.fallback = None
            return task
        if way.kind == "fallback" and fallback is not None:
            st.fallback = True
            message = f"{way.message}: {task.display} runs its fallback"
            self._event("Warning", EventReason.CIRCUIT_OPEN_FALLBACK, message, task.step)
            return replace(task, action=fallback)
        st.attempt_name = task.attempt_name()
        self._task_failed(task, FailureReason.CIRCUIT_OPEN, way.message, None, now)
        return None

    def _on_result(self, result: AttemptResult, now: datetime) -> None:
        task = self._deactivate(result.name)
        if task is None:
            return  # already recorded, cancelled, or not ours: results are idempotent
        verdict = judge(task, result, self._task_context(task))
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

    def _task_succeeded(
        self,
        task: Task,
        outputs: dict[str, Any],
        now: datetime,
        reason: str = StepReason.SUCCEEDED,
        message: str | None = None,
    ) -> None:
        task.status.mark_succeeded(outputs, now, reason, message)
        self.dirty = True
        used = usage_of(outputs)
        if used is not None:
            self._account(task, used, now)
        self._task_done(task, now)

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
            st.mark_retrying(reason, message, now + timedelta(seconds=delay))
            self.retrying.append(task)
            if task.role == "item":
                self.fan_outs[task.step].running += 1  # a retrying item keeps its slot
            self._event(
                "Warning",
                EventReason.STEP_RETRYING,
                f"Attempt {st.attempts} of {task.display} failed ({reason.value}): {message}; "
                f"retrying in {delay:.1f}s ({st.attempts}/{retry.limit} retries used)",
                task.step,
            )
            return
        st.mark_failed(reason, message, now)
        self._task_done(task, now)

    def _task_done(self, task: Task, now: datetime) -> None:
        """A task reached a final phase: tell whatever owns it."""
        self.slots.moves += 1
        st = task.status
        if task.role == "step":
            self._finish_step(task.step, st.phase, st.reason or "", st.message, now)
        elif task.role == "item":
            self._item_done(task, now)
        elif task.role == "body":
            self._advance_loop(self.plan.steps[task.step], now)
        elif task.role == "compensation":
            reason = {
                StepPhase.SUCCEEDED: EventReason.COMPENSATION_SUCCEEDED,
                StepPhase.FAILED: EventReason.COMPENSATION_FAILED,
            }.get(st.phase, EventReason.COMPENSATION_CANCELLED)
            level: Level = "Normal" if st.phase == StepPhase.SUCCEEDED else "Warning"
            message = f"Compensation of step {task.step} {st.phase.value.lower()}"
            self._event(level, reason, message, task.step)

    def _cancel_task(self, task: Task, reason: str, message: str, now: datetime) -> None:
        name = task.status.attempt_name
        if name and (active := self._deactivate(name)) is not None:
            self.actions.append(CancelAttempt(name, reason))
            breaker = active.action.breaker
            if breaker is not None and self.breakers is not None:
                self.breakers.abandon(breaker.key, name, now)
        task.status.mark_cancelled(reason, message, now)
        self.dirty = True

    # ------------------------------------------------------------------ budget

    def _account(self, task: Task, used: Usage, now: datetime) -> None:
        """Add a task's reported usage to it, its step (fan-outs, loops) and the run."""
        task.status.usage = (task.status.usage or Usage()).add(used)
        if task.role in ("item", "body"):
            owner = self.steps[task.step]
            owner.usage = (owner.usage or Usage()).add(used)
        self.status.usage = (self.status.usage or Usage()).add(used)
        spec = self.plan.spec.budget
        if spec is None or self.status.budget is not None or self.failing is not None:
            return
        verdict = budget.judge_usage(
            spec, self.status.usage, task.display, run_uid=self.run_uid, now=now
        )
        if verdict is None:
            return
        self.status.budget = verdict.status
        self.actions += verdict.events
        if verdict.stop is not None:
            self._begin_failing(*verdict.stop, now, cancel=True)

    @property
    def paused(self) -> bool:
        """Over a Pause budget and not yet approved: nothing new starts."""
        record = self.status.budget
        return record is not None and record.state == "Exceeded" and self.failing is None

    def _on_budget_decision(self, decision: ApprovalDecision, now: datetime) -> None:
        spec, record = self.plan.spec.budget, self.status.budget
        if spec is None or record is None or not self.paused:
            return
        if decision.digest is not None and decision.digest != record.digest:
            return
        refused = approvals.refusal(spec.approvers, decision)
        entry = approvals.record_of(decision, refused, record.digest, now)
        records = record.approvals or []
        if approvals.already_recorded(records, entry):
            return
        record.approvals = [*records, entry]
        self._recorded(BUDGET_GATE, None, entry.user, entry)
        verdict = budget.judge_decision(decision, refused)
        self.actions.append(verdict.event)
        if verdict.state is not None:
            record.state = verdict.state
        if verdict.stop is not None:
            self._begin_failing(*verdict.stop, now, cancel=True)

    # ------------------------------------------------------------------ approvals

    def _open_gate(self, task: Task, now: datetime) -> None:
        approval = task.action.approval
        assert approval is not None
        st = task.status
        assert isinstance(st, StepStatus | LoopTaskStatus)
        st.attempts, st.attempt_name = 1, task.attempt_name()
        try:
            text = approval.message.render(self._task_context(task)) if approval.message else ""
        except ExpressionError as exc:
            st.start_time = now
            self._task_failed(task, FailureReason.EXPRESSION_ERROR, str(exc), None, now)
            return
        spec = approval.spec
        who = approvals.approvers_text(spec.approvers)
        st.mark_waiting(text or f"waiting for {spec.required} approval(s) from {who}", now)
        st.approval_digest = approvals.gate_digest(
            self._gate_inputs(task),
            text,
            run_uid=self.run_uid,
            step=task.step,
            body=task.body,
            iteration=task.iteration,
            opened=st.start_time,
        )
        st.approval_deadline = deadlines.after(now, spec.timeout_seconds)
        self.gates.append(task)
        self.dirty = True
        ask = f": {text}" if text else ""
        self.actions.append(
            RecordEvent(
                "Normal",
                EventReason.APPROVAL_REQUESTED,
                f"Step {task.display} awaits {spec.required} approval(s) from {who}{ask}",
                task.step,
                gate=task.body or task.step,
                iteration=task.iteration,
            )
        )

    def _gate_inputs(self, task: Task) -> dict[str, Any]:
        """What the gated step builds on: its dependencies' outputs (inside a loop: the
        previous iteration's and this iteration's body steps before it)."""
        if task.role != "body":
            deps = self.plan.steps[task.step].deps
            return {"steps": {d: self.steps[d].outputs or {} for d in deps}}
        iterations = self.steps[task.step].iterations
        assert iterations
        before = {}
        for body in iterations[-1].steps:
            if body is task.status:
                break
            before[body.name] = body.outputs or {}
        return {"previous": task.scope.get("previous", {}), "body": before}

    def _openings(self, task: Task) -> list[StepStatus | LoopTaskStatus]:
        """Every opening of a task's gate: the step's, or each iteration's of a body step."""
        if task.role != "body":
            return [self.steps[task.step]]
        iterations = self.steps[task.step].iterations or []
        return [b for it in iterations for b in it.steps if b.name == task.body]

    def _on_decision(self, decision: ApprovalDecision, now: datetime) -> None:
        if decision.step == BUDGET_GATE and self.plan.spec.budget is not None:
            self._on_budget_decision(decision, now)
            return
        for task in list(self.gates):
            name = task.body or task.step
            if name != decision.step or task.status.phase != StepPhase.WAITING:
                continue
            if decision.iteration is not None and decision.iteration != task.iteration:
                continue
            st = task.status
            assert isinstance(st, StepStatus | LoopTaskStatus)
            assert task.action.approval is not None
            verdict = approvals.judge(
                task.action.approval.spec,
                st.approvals or [],
                decision,
                current=st.approval_digest,
                earlier=approvals.earlier_bare_digest(self._openings(task), decision.user),
                display=task.display,
                now=now,
            )
            self._apply_gate(task, verdict, now)

    def _apply_gate(self, task: Task, verdict: approvals.GateVerdict, now: datetime) -> None:
        st = task.status
        assert isinstance(st, StepStatus | LoopTaskStatus)
        if verdict.record is not None:
            st.approvals = [*(st.approvals or []), verdict.record]
            self._recorded(
                task.body or task.step, task.iteration, verdict.record.user, verdict.record
            )
        if verdict.event is not None:
            level, reason, message = verdict.event
            self._event(level, reason, message, task.step)
        if verdict.close is None:
            return
        self.gates.remove(task)
        if verdict.close == "approved":
            outputs = {"approved": True, "approvedBy": approvals.approvers_of(st.approvals)}
            self._task_succeeded(task, outputs, now, verdict.reason, verdict.message)
        else:
            st.mark_failed(verdict.reason, verdict.message, now)
            self.dirty = True
            self._task_done(task, now)

    def _recorded(self, gate: str, iteration: int | None, user: str, record: Any) -> None:
        self.actions.append(
            RecordDecision(
                gate,
                user,
                record.decision,
                record.digest,
                record.reason,
                iteration,
                record.verified,
            )
        )
        self.dirty = True

    # ------------------------------------------------------------------ fan-out

    def _begin_fan_out(self, plan: StepPlan, st: StepStatus, now: datetime) -> None:
        st.phase, st.start_time = StepPhase.RUNNING, now
        items = fanout.evaluate_items(plan, lambda e: self.context(None, (e,)))
        if isinstance(items, str):
            self._finish_step(
                plan.name, StepPhase.FAILED, FailureReason.EXPRESSION_ERROR, items, now
            )
            return
        st.items, st.item_count, st.items_started = [], len(items), 0
        fan = self.fan_outs[plan.name] = fanout.start(plan, items)
        self._event(
            "Normal",
            EventReason.FAN_OUT_STARTED,
            f"Step {plan.name} fans out over {fan.total} items (success threshold {fan.threshold})",
            plan.name,
        )
        self._check_fan_out(fan, now)

    def _start_items(self, fan: FanOut, now: datetime) -> None:
        st = self.steps[fan.plan.name]
        assert fan.plan.fan_out is not None
        assert st.items is not None
        if st.items_started is None:  # a status written before itemsStarted existed
            st.items_started = len(st.items)
        while (
            self.fan_outs.get(fan.plan.name) is fan  # an item failing fast can end it
            and fanout.may_start_another(fan, st.items_started, self.slots.capacity())
            and self._admit(fan.plan.fan_out.action, st)
        ):
            item = ItemStatus(index=st.items_started)
            st.items.append(item)
            st.items_started += 1
            self._start_attempt(item_task(self.run_name, fan.plan, item, fan.items), now)

    def _item_done(self, task: Task, now: datetime) -> None:
        fan = self.fan_outs.get(task.step)
        if fan is None:
            return
        if task.status.phase == StepPhase.SUCCEEDED:
            fan.succeeded += 1
        else:
            fan.failed += 1
        self._compact(fan)
        self._check_fan_out(fan, now)

    def _compact(self, fan: FanOut) -> None:
        st = self.steps[fan.plan.name]
        folded = fanout.compacted(st.items or [], st.items_summary, fan.total)
        if folded is not None:
            st.items, st.items_summary = folded
            self.dirty = True

    def _check_fan_out(self, fan: FanOut, now: datetime) -> None:
        verdict = fanout.outcome(fan)
        if verdict is None:
            return
        st = self.steps[fan.plan.name]
        for item in st.items or []:
            if not item.phase.final:
                self._cancel_item(fan, item, now)
        st.outputs = fanout.outputs(fan, st.items or [])
        self._compact(fan)
        del self.fan_outs[fan.plan.name]
        self._finish_step(fan.plan.name, verdict.phase, verdict.reason, verdict.message, now)

    def _cancel_item(self, fan: FanOut, item: ItemStatus, now: datetime) -> None:
        task = item_task(self.run_name, fan.plan, item, fan.items)
        if item.phase == StepPhase.RETRYING:
            fan.running -= 1
            self.retrying = [t for t in self.retrying if t.status is not item]
        self._cancel_task(
            task,
            StepReason.THRESHOLD_REACHED,
            "cancelled: the step's outcome was already decided",
            now,
        )

    # ------------------------------------------------------------------ loops

    def _next_iteration(self, plan: StepPlan, st: StepStatus, now: datetime) -> None:
        assert plan.loop is not None
        assert st.iterations is not None
        st.iterations.append(
            IterationStatus(
                iteration=len(st.iterations),
                steps=[LoopTaskStatus(name=b.name) for b in plan.loop.body],
            )
        )
        self.dirty = True
        self._advance_loop(plan, now)

    def _advance_loop(self, plan: StepPlan, now: datetime) -> None:
        st, loop = self.steps[plan.name], plan.loop
        assert loop is not None
        assert st.iterations is not None
        if st.phase.final or self.failing is not None:
            return  # a failing run sweeps unfinished loops; no new work starts
        tasks = self._body_tasks(plan, st)
        move = loops.next_in_body([t.status.phase for t in tasks])
        iteration = st.iterations[-1].iteration
        if move.kind == "failed":
            body = loop.body[move.index]
            verdict = loops.body_failed(iteration, body.name, tasks[move.index].status.message)
            self._end_loop(plan, verdict, now)
        elif move.kind == "begin":
            self._begin_body(loop.body[move.index].when, tasks[move.index], now)
        elif move.kind == "done":
            try:
                until: bool | str = loop.until.evaluate_bool(
                    self.context(tasks[0] if tasks else None, (loop.until,))
                )
            except ExpressionError as exc:
                until = str(exc)
            ended = loops.after_iteration(loop.spec, iteration, until)
            if ended is None:
                self._next_iteration(plan, st, now)
            else:
                self._end_loop(plan, ended, now)

    def _begin_body(self, when: Expression | None, task: Task, now: datetime) -> None:
        if when is not None:
            try:
                run_it = when.evaluate_bool(self.context(task, (when,)))
            except ExpressionError as exc:
                task.status.start_time = now
                self._task_failed(task, FailureReason.EXPRESSION_ERROR, str(exc), None, now)
                return
            if not run_it:
                task.status.mark_skipped(
                    StepReason.WHEN_FALSE, f"when {when.source!r} is false", now
                )
                self.dirty = True
                self._advance_loop(self.plan.steps[task.step], now)
                return
        if task.action.approval is not None:
            self._open_gate(task, now)
        else:
            self._enqueue(task)

    def _end_loop(self, plan: StepPlan, verdict: loops.LoopVerdict, now: datetime) -> None:
        self.steps[plan.name].outputs = loops.outputs(self.steps[plan.name], verdict.converged)
        self.running_loops.discard(plan.name)
        self._finish_step(plan.name, verdict.phase, verdict.reason, verdict.message, now)

    # ------------------------------------------------------------ failure, compensation, finally

    def _begin_failing(
        self, reason: str, message: str, now: datetime, *, cancel: bool = False
    ) -> None:
        self.failing = _Failing(reason, message, cancelled=reason == RunReason.CANCELLED)
        self.dirty = True
        self.ready.clear()
        for task in [t for t in self.retrying if t.status.phase == StepPhase.RETRYING]:
            self._cancel_task(task, StepReason.RUN_FAILED, "cancelled: " + message, now)
        self.retrying.clear()
        for task in self.gates:
            self._cancel_task(task, StepReason.RUN_FAILED, "cancelled: " + message, now)
        self.gates.clear()
        if cancel:
            for task in list(self.active.values()):
                self._cancel_task(task, reason, message, now)
        self.slots.keep_only(("compensation", "finally"))

    def _begin_compensation(self, now: datetime) -> None:
        failing = self.failing
        assert failing is not None
        self.finished_steps += finishing.sweep(self.status.steps, failing.cancelled, now)
        self.fan_outs.clear()
        self.running_loops.clear()
        self.dirty = True
        spec = self.plan.spec
        order = finishing.compensation_order(self.plan, self.steps)
        if order and finishing.compensates(
            spec.compensation, failing.reason, failing.cancelled, spec.budget
        ):
            self.status.phase = RunPhase.COMPENSATING
            self._event(
                "Warning",
                EventReason.COMPENSATION_STARTED,
                f"Compensating {len(order)} step(s) in reverse completion order",
            )
        else:
            self._begin_finally()

    def _advance_compensation(self) -> None:
        for name in finishing.compensation_order(self.plan, self.steps):
            task = compensation_task(self.run_name, self.plan.steps[name], self.steps[name])
            if task.status.phase.final:
                continue
            if task.status.phase == StepPhase.PENDING:
                self._enqueue(task)
            return
        self._begin_finally()

    def _begin_finally(self) -> None:
        self.status.phase = RunPhase.FINALIZING
        self.dirty = True
        for fin, st in zip(self.plan.finally_steps, self.status.finally_ or [], strict=True):
            if st.phase == StepPhase.PENDING:
                self._enqueue(finally_task(self.run_name, fin, st))

    def _advance_finally(self, now: datetime) -> None:
        unfinished = any(not s.phase.final for s in self.status.finally_ or [])
        if not (unfinished or self.active or self.slots.queue):
            self._complete(now)

    def _complete(self, now: datetime) -> None:
        status = self.status
        if self.failing is None:
            failed = finishing.finally_failure(status.finally_ or [])
            if failed is not None:
                self.failing = _Failing(*failed)
        if self.failing is None:
            self._run_outputs()
        self.dirty = True
        if self.failing is None:
            status.mark_succeeded("all steps finished", now, self.generation)
            took = format_duration(now - (status.start_time or now))
            self._event("Normal", EventReason.RUN_SUCCEEDED, f"Run succeeded in {took}")
            return
        cancelled = self.failing.cancelled
        status.mark_failed(
            self.failing.reason, self.failing.message, now, self.generation, cancelled=cancelled
        )
        reason = EventReason.RUN_CANCELLED if cancelled else EventReason.RUN_FAILED
        self._event("Warning", reason, f"Run ended: {self.failing.message}")

    def _run_outputs(self) -> None:
        try:
            ctx = self.context(None, tuple(self.plan.outputs.values()))
            outputs = {k: e.evaluate(ctx) for k, e in self.plan.outputs.items()}
        except ExpressionError as exc:
            self.failing = _Failing(RunReason.OUTPUTS_ERROR, str(exc))
            return
        deep = depth_failure(outputs, "spec.outputs")
        if deep is not None:
            self.failing = _Failing(RunReason.OUTPUTS_ERROR, deep.message or "")
        else:
            self.status.outputs = outputs

    def _on_oversized(self, message: str, level: int, now: datetime) -> None:
        """The status cannot be stored: fail the run now (running steps cancelled) and shed
        what made it large, so that the failure itself can be written. A run that has just
        finished keeps its outcome and only sheds."""
        if self.finished:
            self._event(
                "Warning", EventReason.STATUS_TOO_LARGE, f"Dropped outputs to fit: {message}"
            )
        elif self.failing is None:
            self._event("Warning", EventReason.STATUS_TOO_LARGE, f"Failing the run: {message}")
            self._begin_failing(RunReason.STATUS_TOO_LARGE, message, now, cancel=True)
        shed(self.status, level)
        self.dirty = True

    # ------------------------------------------------------------------ time

    def _check_time(self, now: datetime) -> None:
        spec, start = self.plan.spec, self.status.start_time
        if self.failing is None and self.status.phase == RunPhase.RUNNING:
            end = deadlines.after(start, spec.timeout_seconds)
            if end is not None and now >= end:
                said = f"exceeded timeoutSeconds={spec.timeout_seconds}"
                self._begin_failing(RunReason.TIMED_OUT, f"the run {said}", now, cancel=True)
                self._event("Warning", EventReason.RUN_TIMED_OUT, f"Run {said}")
        for name, task in list(self.active.items()):
            end = deadlines.attempt(task.action.timeout_seconds, task.status.attempt_start_time)
            if end is not None and now >= end:
                self._deactivate(name)
                self.actions.append(CancelAttempt(name, FailureReason.TIMED_OUT))
                self._task_failed(
                    task,
                    FailureReason.TIMED_OUT,
                    f"attempt {task.status.attempts} exceeded "
                    f"timeoutSeconds={task.action.timeout_seconds}",
                    None,
                    now,
                )
        due = [t for t in self.retrying if t.status.retry_time and t.status.retry_time <= now]
        if due:
            self.retrying = [t for t in self.retrying if t not in due]
            for task in due:
                self._enqueue(task)  # a retrying item still holds its fan-out slot
        for task in list(self.gates):
            end = getattr(task.status, "approval_deadline", None)
            if end is not None and now >= end and task.status.phase == StepPhase.WAITING:
                assert task.action.approval is not None
                verdict = approvals.on_timeout(task.action.approval.spec, task.display)
                self._apply_gate(task, verdict, now)
        self._check_sla(now)

    def _sla_deadlines(self) -> list[tuple[str | None, datetime | None]]:
        out: list[tuple[str | None, datetime | None]] = []
        if not self.finished:
            start, breached = self.status.start_time, bool(self.status.sla_breached)
            out.append((None, deadlines.run_sla(self.plan.spec.sla, start, breached)))
        tasks = (*self.active.values(), *self.gates, *self.retrying)
        running = {t.step for t in tasks if t.role == "step"} | self.running_loops | set(self.fan_outs)
        for name in sorted(running):
            st = self.steps[name]
            seconds = self.plan.steps[name].sla_seconds
            out.append((name, deadlines.step_sla(seconds, st.start_time, bool(st.sla_breached))))
        return out

    def _check_sla(self, now: datetime) -> None:
        sla = self.plan.spec.sla
        for step in deadlines.due(self._sla_deadlines(), now):
            if step is None:
                self.status.sla_breached = True
            else:
                self.steps[step].sla_breached = True
            reason, message = deadlines.sla_breach(
                step,
                sla.max_duration_seconds if sla else None,
                self.plan.steps[step].sla_seconds if step else None,
            )
            self.status.mark_sla_breached(reason, message, now, self.generation)
            self._event("Warning", EventReason.SLA_BREACHED, message[0].upper() + message[1:], step)
            self.dirty = True

    def _wake_at(self) -> datetime | None:
        if self.finished:
            return None
        spec = self.plan.spec
        run_end = (
            None if self.failing else deadlines.after(self.status.start_time, spec.timeout_seconds)
        )
        return deadlines.earliest(
            [
                run_end,
                *(
                    deadlines.attempt(t.action.timeout_seconds, t.status.attempt_start_time)
                    for t in self.active.values()
                ),
                *(t.status.retry_time for t in self.retrying),
                *(getattr(t.status, "approval_deadline", None) for t in self.gates),
                *(at for _, at in self._sla_deadlines()),
            ]
        )

    # ------------------------------------------------------------------ conditions

    def _update_conditions(self, now: datetime) -> None:
        status, gen = self.status, self.generation
        waiting = [t for t in self.gates if t.status.phase == StepPhase.WAITING]
        if not self.finished:
            failing = (self.failing.reason, self.failing.message) if self.failing else None
            reason, message = finishing.progress(
                failing,
                self.paused,
                bool(waiting),
                bool(self.active),
                self.finished_steps,
                self.total,
            )
            self.dirty |= status.mark_progressing(reason, message, now, gen)
        pending = [self._pending(t) for t in waiting]
        spec_budget = self.plan.spec.budget
        if self.paused and spec_budget is not None and status.budget is not None:
            pending.append(
                approvals.budget_pending(spec_budget.approvers, status.budget.digest or "")
            )
        if (pending or None) != status.pending_approvals:
            status.pending_approvals = pending or None
            self.dirty = True
        if pending:
            reason, message = approvals.pending_condition(pending, self.approvals_verified)
            self.dirty |= status.mark_approval_pending(reason, message, now, gen)
        else:
            self.dirty |= status.mark_no_approval_pending(now, gen)
        if self.plan.has_sla:
            self.dirty |= status.mark_within_sla(now, gen)

    @staticmethod
    def _pending(task: Task) -> PendingApproval:
        assert task.action.approval is not None
        st = task.status
        assert isinstance(st, StepStatus | LoopTaskStatus)
        spec = task.action.approval.spec
        return approvals.pending_of(spec, task.body or task.step, task.iteration, st)


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"

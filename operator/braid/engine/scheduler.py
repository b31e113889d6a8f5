"""The run state machine: observations and the time in, actions and a new status out.

``RunState`` is an indexed, in-memory view of one ``WorkflowRunStatus``. It is built once from
the status (``RunState.load``, linear in the run's size) and then each ``decide`` costs time
proportional to what changed, not to the size of the run: ready steps sit in a queue fed by
dependency counters, only running attempts are scanned for deadlines, and fan-out items are
materialised only when they start. The operator rebuilds the state on every reconcile (it
reads the status anyway); the local runner keeps one state for the whole run.

What each feature means — a gate's decision, a fan-out's outcome, a loop's next move, a
budget's verdict, what is due, how a run ends — is decided in its own module (approvals,
gates, fanout, loops, budget, deadlines, finishing) by pure functions and small components
that return verdicts and never call back; RunState owns the indexes, readiness, slots and
attempts, and is the one place verdicts are applied.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from braid.api.reasons import EventReason, FailureReason, RunReason, StepReason
from braid.api.run import (
    ApprovalRecord,
    IterationStatus,
    LoopTaskStatus,
    ParentLink,
    RunPhase,
    StepPhase,
    StepStatus,
    TaskStatus,
    Usage,
    WorkflowRunStatus,
)
from braid.api.workflow import BUDGET_GATE, WorkflowSpec
from braid.engine import (
    approvals,
    breakers,
    budget,
    caching,
    children,
    deadlines,
    failures,
    fanout,
    finishing,
    loops,
    routing,
    timers,
)
from braid.engine.actions import (
    Action,
    ApprovalDecision,
    AttemptResult,
    CacheEntry,
    CancelAttempt,
    Decision,
    LoadItems,
    Observations,
    RecordDecision,
    RecordEvent,
)
from braid.engine.artifacts import record_attempt, run_left
from braid.engine.breakers import BreakerBoard, passage
from braid.engine.compile import plan_for
from braid.engine.context import RunView, task_context
from braid.engine.fanout import FanOuts
from braid.engine.gates import Gates, inputs_of
from braid.engine.outputs import shed, usage_of
from braid.engine.plan import (
    ActionPlan,
    BodyPlan,
    CachePlan,
    CandidatePlan,
    FanOutPlan,
    Plan,
    SleepPlan,
    StepPlan,
)
from braid.engine.slots import Slots
from braid.engine.tasks import (
    Fan,
    Task,
    compensation_task,
    expressions_of,
    finally_task,
    judge,
    render_request,
    step_task,
)
from braid.expressions import Expression, ExpressionError

HISTORY_LIMIT = 100
Level = Literal["Normal", "Warning"]


@dataclass
class _Failing:
    """The failure the run is handling (it compensates and finalizes, then ends with it).
    ``drain``: what runs, and its retries, may finish first (a step failed: failFast)."""

    reason: str
    message: str
    cancelled: bool = False
    drain: bool = False

    @classmethod
    def resumed(cls, reason: str, message: str) -> _Failing:
        """The failure a stored status says the run is handling."""
        return cls(reason, message, reason == RunReason.CANCELLED, reason == RunReason.STEP_FAILED)


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
    # what tasks wait for: a slot, a retry, people, the items and iterations of their step
    slots: Slots = field(default_factory=Slots)
    retrying: list[Task] = field(default_factory=list)
    gates: Gates = field(default_factory=Gates)
    sleepers: timers.Sleepers = field(default_factory=timers.Sleepers)
    fans: FanOuts = field(default_factory=FanOuts)
    running_loops: set[str] = field(default_factory=set)
    failing: _Failing | None = None
    failed_steps: list[str] = field(default_factory=list)  # in the order they failed
    now: datetime | None = None  # of the current decision (run.durationSeconds)
    sla: deadlines.SLATargets = field(default_factory=lambda: deadlines.SLATargets(None, {}))
    breakers: BreakerBoard | None = None  # shared with other runs, given by the driver
    item_lists: Mapping[str, list[Any] | str] = field(default_factory=dict)  # see Observations
    cache: Mapping[str, CacheEntry] | None = None  # see Observations
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
        item_lists: Mapping[str, list[Any] | str] | None = None,
    ) -> RunState:
        """Index a status (new or resumed). ``spec`` is the run's snapshot of the workflow;
        ``uid`` the run's unique id (the driver's: the API server's uid, a local run's own);
        ``item_lists`` the fan-out item lists the driver holds (see Observations)."""
        plan = plan_for(spec)
        state = cls(run_name, plan, status, params, generation, uid, slots=Slots(spec.max_parallel))
        state.item_lists = item_lists or {}
        if plan.has_sla:
            targets = {n: p.sla_seconds for n, p in plan.steps.items() if p.sla_seconds}
            state.sla = deadlines.SLATargets(spec.sla, targets)
        kinds = [(n, plan.steps[n].kind) for n in plan.order]
        status.shape(spec, params, kinds, [f.name for f in plan.finally_steps])
        state.steps = {s.name: s for s in status.steps}
        for name in plan.order:
            st = state.steps[name]
            deps = plan.steps[name].deps
            state.remaining_deps[name] = sum(not state.steps[d].phase.final for d in deps)
            if st.phase.final:
                state.finished_steps += 1
                if st.phase == StepPhase.FAILED:
                    state.failed_steps.append(name)
            elif st.phase == StepPhase.PENDING and state.remaining_deps[name] == 0:
                state.ready.append(name)
            else:
                state._resume_step(plan.steps[name], st)
        state._resume_ending()
        return state

    def _resume_ending(self) -> None:
        """The failure being handled, and compensation and finally tasks under way."""
        status, plan = self.status, self.plan
        failure = status.failure if not self.finished else None
        if failure is not None:
            self.failing = _Failing.resumed(*failure)
            self.ready.clear()
        if status.phase in (RunPhase.COMPENSATING, RunPhase.FINALIZING):
            for name in plan.order:
                if self.steps[name].compensation is not None:
                    self._resume(
                        compensation_task(self.run_name, plan.steps[name], self.steps[name])
                    )
            for fin, fst in zip(plan.finally_steps, status.finally_ or [], strict=True):
                self._resume(finally_task(self.run_name, fin, fst))

    def _resume(self, task: Task) -> None:
        phase = task.status.phase
        if task.status.fallback and task.action.fallback is not None:
            task = replace(task, action=task.action.fallback)
        if phase == StepPhase.RUNNING and task.action.sleep is not None:
            self.sleepers.add(task)
        elif phase == StepPhase.RUNNING and task.status.attempt_name:
            self.slots.activate(task.status.attempt_name, task)
        elif phase == StepPhase.RETRYING:
            self.retrying.append(task)
        elif phase == StepPhase.WAITING:
            self.gates.waiting.append(task)

    def _resume_step(self, plan: StepPlan, st: StepStatus) -> None:
        if plan.action is not None:
            self._resume(step_task(self.run_name, plan, st))
        elif plan.fan_out is not None and st.phase == StepPhase.RUNNING:
            self._resume_fan_out(Fan.of_step(self.run_name, plan, st))
        elif plan.loop is not None and st.phase == StepPhase.RUNNING:
            self.running_loops.add(plan.name)
            tasks = loops.body_tasks(self.run_name, plan, st)  # none before the first iteration
            for body, bplan in zip(tasks, plan.loop.body, strict=False):
                self._resume(body)
                if bplan.fan_out is not None and body.status.phase == StepPhase.RUNNING:
                    self._resume_fan_out(Fan.of_body(body, bplan.fan_out))

    def _resume_fan_out(self, where: Fan) -> None:
        """A running fan-out's tasks, once its items are at hand (itemsFrom: loaded)."""
        ctx = lambda e: self.context(where.body_task, (e,))  # noqa: E731
        items = fanout.evaluate_items(where.step, where.plan, ctx, self.item_lists)
        if isinstance(items, LoadItems):
            self.fans.unloaded[where.key] = items
        elif not isinstance(items, str):  # it evaluated when the fan-out began
            self.fans.unloaded.pop(where.key, None)
            for task in self.fans.resume(where, items):
                cased = self._cased(task)
                self._resume(cased if isinstance(cased, Task) else task)

    # ------------------------------------------------------------------ context

    def context(
        self, task: Task | None, expressions: tuple[Expression, ...] = ()
    ) -> dict[str, Any]:
        """The names an expression sees; only the steps it reads are materialised."""
        f, status = self.failing, self.status
        failed = [self.steps[n] for n in self.failed_steps]
        run = RunView.of(
            self.run_name, status, (f.reason, f.cancelled) if f else None, self.now, failed
        )
        fins = zip(self.plan.finally_steps, status.finally_ or [], strict=True)
        return task_context(
            run, self.params, self.steps, {p.name: s for p, s in fins}, task, expressions
        )

    def _task_context(self, task: Task) -> dict[str, Any]:
        return self.context(task, expressions_of(task.action))

    def _when(self, when: Expression, task: Task | None) -> bool | str:
        """A `when` condition's value, or the message of its error."""
        try:
            return when.evaluate_bool(self.context(task, (when,)))
        except ExpressionError as exc:
            return str(exc)

    # ------------------------------------------------------------------ decide

    def decide(self, observations: Observations, now: datetime) -> Decision:
        """Apply what was observed and what time it is; return what to do next."""
        self.actions, self.dirty, self.slots.waiting_for = [], False, set()
        self.now = now
        self.slots.elsewhere = observations.elsewhere
        self.breakers = observations.breakers
        self.approvals_verified = observations.approvals_verified
        self.item_lists = observations.item_lists
        self.cache = observations.cache
        for name in list(self.fans.unloaded):  # item lists that had to be loaded first
            plan, st = self.plan.steps[name], self.steps[name]
            self._resume_fan_out(Fan.of_step(self.run_name, plan, st))
        self.actions.extend(self.fans.unloaded.values())
        self.ready.extend(self.fans.loading)
        self.fans.loading.clear()
        queued = self._queued(observations, now)
        if queued is not None:
            return queued
        if self.status.phase == RunPhase.PENDING:
            self.status.mark_started(now, self.generation)
            self._event(
                "Normal",
                EventReason.RUN_STARTED,
                f"Started run with {self.total} step{'s' if self.total != 1 else ''}",
            )
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
        said = [a for a in self.actions if isinstance(a, RecordEvent) and not a.progress]
        self.dirty |= self.status.record_history([a.history(now) for a in said], HISTORY_LIMIT)
        if self.dirty:
            self.status.mark_progress(self.finished_steps, self.total, now)
        self.dirty |= breakers.show(self.status, self.breakers, self.plan.breaker_keys)
        return Decision(
            self.actions,
            self._wake_at(),
            self.dirty,
            self.finished,
            held=self.slots.in_use(),
            waiting_for=frozenset(self.slots.waiting_for),
        )

    def _queued(self, observations: Observations, now: datetime) -> Decision | None:
        """A run the driver's queue holds back (spec.concurrency): it stays Pending, saying
        where it stands; a cancel still ends it at once."""
        queued = observations.queued
        if self.status.phase != RunPhase.PENDING or not queued or observations.cancel:
            return None
        position, waiting, key, limit = queued
        message = f"queued: {position} of {waiting} waiting for key {key} ({limit} may run)"
        changed = self.status.mark_progressing(RunReason.QUEUED, message, now, self.generation)
        return Decision([], None, changed, finished=False)

    @property
    def finished(self) -> bool:
        return self.status.phase in (RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.CANCELLED)

    @property
    def total(self) -> int:
        return len(self.plan.order)

    @property
    def active(self) -> dict[str, Task]:
        """Running attempts by name."""
        return self.slots.active

    def _event(self, level: Level, reason: str, message: str, step: str | None = None) -> None:
        self.actions.append(RecordEvent(level, reason, message, step))

    def _advance(self, now: datetime) -> None:
        """Start whatever may start now, repeating until nothing changes."""
        while True:
            before = self._progress_mark()
            if self.failing is None:
                while self.ready:
                    self._begin_step(self.ready.popleft(), now)
            self._fill_slots(now)
            if self.status.phase == RunPhase.RUNNING:
                if self.failing is not None and not self.active and not self._draining():
                    self._begin_compensation(now)
                elif self.failing is None and self.finished_steps == self.total:
                    self._all_steps_finished(now)
            if self.status.phase == RunPhase.COMPENSATING:
                self._advance_compensation(now)
            if self.status.phase == RunPhase.FINALIZING:
                self._advance_finally(now)
            # A task can be queued, started, fail at once (a template error, an open breaker)
            # and the next be queued within one pass: counting moves, not queue lengths, sees it.
            after = self._progress_mark()
            if after == before and not self.ready:
                return

    def _progress_mark(self) -> tuple[object, ...]:
        return len(self.ready), len(self.active), self.slots.moves, self.status.phase, self.failing

    # ------------------------------------------------------------------ steps

    def _begin_step(self, name: str, now: datetime) -> None:
        plan, st = self.plan.steps[name], self.steps[name]
        if st.phase != StepPhase.PENDING:
            return
        routed = failures.routed_away(plan.deps, self.steps, self._continues)
        if routed is not None:
            self._skip(name, *routed, now)
            return
        when = plan.when
        run_it = self._when(when, None) if when is not None else True
        if isinstance(run_it, str):
            st.start_time = now
            self._finish_step(name, StepPhase.FAILED, FailureReason.EXPRESSION_ERROR, run_it, now)
        elif not run_it and when is not None:
            self._skip(name, StepReason.WHEN_FALSE, f"when {when.source!r} is false", now)
        if run_it is not True:
            return
        self.dirty = True
        if plan.action is not None:
            self._begin_task(step_task(self.run_name, plan, st), now)
        elif plan.fan_out is not None:
            self._begin_fan_out(plan, st, now)
        elif plan.loop is not None:
            st.phase, st.start_time = StepPhase.RUNNING, now
            st.iterations = []
            self.running_loops.add(name)
            self._next_iteration(plan, st, now)

    def _begin_fan_out(self, plan: StepPlan, st: StepStatus, now: datetime) -> None:
        where = Fan.of_step(self.run_name, plan, st)
        ctx = lambda e: self.context(None, (e,))  # noqa: E731
        items = fanout.evaluate_items(plan.name, where.plan, ctx, self.item_lists)
        if isinstance(items, LoadItems):  # the driver loads them; asked again next decision
            self.actions.append(items)
            self.fans.loading.add(plan.name)
            return
        st.phase, st.start_time = StepPhase.RUNNING, now
        if isinstance(items, str):
            self._finish_step(
                plan.name, StepPhase.FAILED, FailureReason.EXPRESSION_ERROR, items, now
            )
            return
        self.actions.append(self.fans.begin(where, items))
        self._check_fan_out(where.key, now)

    def _begin_body_fan_out(self, task: Task, plan: FanOutPlan, now: datetime) -> None:
        """A loop body step fanning out in this iteration (itemsFrom is refused at lint)."""
        where = Fan.of_body(task, plan)
        items = fanout.evaluate_items(task.step, plan, lambda e: self.context(task, (e,)))
        task.status.phase, task.status.start_time = StepPhase.RUNNING, now
        self.dirty = True
        if not isinstance(items, list):
            message = items if isinstance(items, str) else "itemsFrom is not allowed here"
            self._task_failed(task, FailureReason.EXPRESSION_ERROR, message, None, now)
            return
        self.actions.append(self.fans.begin(where, items))
        self._check_fan_out(where.key, now)

    def _begin_task(self, task: Task, now: datetime) -> None:
        """A step or body step that may run: a gate opens, a sleep starts, anything else
        waits for a slot."""
        if task.action.sleep is not None:
            self._begin_sleep(task, task.action.sleep, now)
            return
        if task.action.approval is None:
            self.slots.enqueue(task)
            return
        approval = task.action.approval
        st = task.status
        st.attempts, st.attempt_name = 1, task.attempt_name()
        try:
            text = approval.message.render(self._task_context(task)) if approval.message else ""
        except ExpressionError as exc:
            st.start_time = now
            self._task_failed(task, FailureReason.EXPRESSION_ERROR, str(exc), None, now)
            return
        inputs = inputs_of(task, self.plan.steps[task.step].deps, self.steps)
        self.actions.append(self.gates.opened(task, text, inputs, run_uid=self.run_uid, now=now))
        self.dirty = True

    def _begin_sleep(self, task: Task, plan: SleepPlan, now: datetime) -> None:
        st = task.status
        st.attempts, st.attempt_name = 1, task.attempt_name()
        wake = timers.wake_time(plan, lambda: self._task_context(task), now)
        if isinstance(wake, str):
            st.start_time = now
            self._task_failed(task, FailureReason.EXPRESSION_ERROR, wake, None, now)
            return
        st.mark_sleeping(wake, now)
        self.dirty = True
        said = f"Step {task.display} sleeps until {wake.isoformat()}"
        self.actions.append(RecordEvent("Normal", EventReason.STEP_SLEEPING, said, task.step))
        if wake <= now:
            self._wake(task, now)
        else:
            self.sleepers.add(task)

    def _wake(self, task: Task, now: datetime) -> None:
        wake = task.status.wake_time or now
        outputs = timers.woke(task.status.start_time, wake)
        self._task_succeeded(task, outputs, now, StepReason.WOKE, f"woke at {wake.isoformat()}")

    def _skip(self, name: str, reason: str, message: str, now: datetime) -> None:
        self._event("Normal", EventReason.STEP_SKIPPED, f"Skipped step {name}: {message}", name)
        self._finish_step(name, StepPhase.SKIPPED, reason, message, now)

    def _finish_step(
        self, name: str, phase: StepPhase, reason: str, message: str | None, now: datetime
    ) -> None:
        st = self.steps[name]
        if phase == StepPhase.SUCCEEDED:
            st.mark_succeeded(st.outputs, now, reason, message)
            said = f"Step {name} succeeded" + (
                f" ({message})" if reason == StepReason.CACHED else ""
            )
            self.actions.append(
                RecordEvent("Normal", EventReason.STEP_SUCCEEDED, said, name, progress=True)
            )
        elif phase == StepPhase.SKIPPED:
            st.mark_skipped(reason, message, now)
        else:
            st.mark_failed(reason, message, now)
            self.failed_steps.append(name)
            failed = f"failed ({reason}): {message}"
            then = failures.consequence(self.plan.steps[name].spec, self.plan.spec)
            more = "; the run goes on (continueOn.failed)" if then == "continue" else ""
            self._event("Warning", EventReason.STEP_FAILED, f"Step {name} {failed}{more}", name)
            if then == "fail" and self.failing is None:
                self._begin_failing(RunReason.STEP_FAILED, f"step {name} {failed}", now)
        self.finished_steps += 1
        self.dirty = True
        for dependent in self.plan.dependents[name]:
            self.remaining_deps[dependent] -= 1
            if self.remaining_deps[dependent] == 0 and self.failing is None:
                self.ready.append(dependent)

    # ------------------------------------------------------------------ slots and attempts

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
            for key in list(self.fans.running):
                self._start_items(key, now)

    def _may_start(self, task: Task) -> bool:
        """Anything while the run goes on; while it fails, compensation and finally, and
        the retries of what had started when a step failed (failFast lets them finish)."""
        failing = self.failing
        if failing is None or task.role in ("compensation", "finally"):
            return True
        return failing.drain and task.status.attempts > 0

    def _continues(self, name: str) -> bool:
        return failures.continues(self.plan.steps[name].spec)

    def _admit(self, action: ActionPlan, status: TaskStatus) -> bool:
        """A free slot in the action's concurrency pool, counting every run's attempts."""
        free, changed = self.slots.admit(action, status)
        self.dirty |= changed
        return free

    def _deactivate(self, name: str) -> Task | None:
        task = self.slots.deactivate(name)
        if task is not None and task.role == "item":
            self.fans.took_slot(task.fan_key, -1)
        return task

    def _start_attempt(self, task: Task, now: datetime) -> None:
        if task.action.cache is not None and self._cached(task, task.action.cache, now):
            return
        st = task.status
        # A fan-out's running count holds its items that run or wait to retry: an item takes
        # its slot when it first starts and keeps it while it retries.
        first = st.phase == StepPhase.PENDING
        st.attempts += 1
        st.start_time, st.retry_time = st.start_time or now, None
        way = passage(self.breakers, task.action, task.attempt_name(), now)
        st.fallback = True if way.kind == "fallback" else None
        if way.kind == "open":
            st.attempt_name = task.attempt_name()
            self._task_failed(task, FailureReason.CIRCUIT_OPEN, way.message, None, now)
            return
        if way.kind == "fallback" and task.action.fallback is not None:
            said = f"{way.message}: {task.display} runs its fallback"
            self._event("Warning", EventReason.CIRCUIT_OPEN_FALLBACK, said, task.step)
            task = replace(task, action=task.action.fallback)
        candidate: CandidatePlan | None = None
        if task.action.routes is not None:
            chosen = routing.route(task.action.routes, self.breakers, st, task.attempt_name(), now)
            if isinstance(chosen, str):
                st.attempt_name = task.attempt_name()
                self._task_failed(task, FailureReason.CIRCUIT_OPEN, chosen, None, now)
                return
            candidate = chosen
        child = None
        if task.action.child is not None and (deep := children.too_deep(self.status.parent)):
            st.attempt_name = task.attempt_name()
            self._task_failed(task, FailureReason.SUB_WORKFLOW_TOO_DEEP, deep, None, now)
            return
        try:
            left = run_left(self.status, self.plan.max_run_artifact_bytes)
            context = self._task_context(task)
            if task.action.child is not None:
                child = children.request(
                    task.action.child,
                    task.attempt_name(),
                    context,
                    ParentLink(run=self.run_name, step=task.display, depth=self.depth + 1),
                    children.remaining(self.plan.spec.budget, self.status),
                )
            request = render_request(task, context, left, candidate, child)
        except ExpressionError as exc:
            st.attempt_name = task.attempt_name()
            self._task_failed(task, FailureReason.EXPRESSION_ERROR, str(exc), None, now)
            return
        st.mark_running(request.name, now)
        st.child_run = child.run_name if child is not None else None
        self.slots.activate(request.name, task)
        if task.role == "item" and first:
            self.fans.took_slot(task.fan_key, 1)
        self.actions.append(request)
        self.dirty = True

    def _cached(self, task: Task, plan: CachePlan, now: datetime) -> bool:
        """A cached task: its key, and when an entry may be reused, the task succeeds with
        the entry's outputs and artifacts instead of starting an attempt."""
        st = task.status
        try:
            st.cache_key = caching.key_of(plan, lambda e: self.context(task, (e,)))
        except ExpressionError as exc:
            st.attempts += 1
            st.start_time, st.attempt_name = now, task.attempt_name()
            self._task_failed(task, FailureReason.EXPRESSION_ERROR, str(exc), None, now)
            return True
        entry = caching.reusable(plan, self.cache, st.cache_key, now)
        if entry is None:
            return False
        st.start_time, st.artifacts = st.start_time or now, entry.artifacts
        outputs = dict(entry.outputs)
        outputs.pop("usage", None)  # nothing was used this time
        message = caching.hit_message(entry)
        self._task_succeeded(task, outputs, now, StepReason.CACHED, message)
        return True

    def _on_result(self, result: AttemptResult, now: datetime) -> None:
        task = self._deactivate(result.name)
        if task is None:
            return  # already recorded, cancelled, or not ours: results are idempotent
        verdict = judge(task, result, self._task_context(task))
        task.status.exit_code = verdict.exit_code
        record_attempt(self.status, task.status, verdict.artifacts)
        ok = verdict.failure is None
        breakers.record(self.breakers, task.action, result.name, ok, now)
        routes = task.action.routes
        if routes is not None:
            routing.observe(routes, self.breakers, task.status, result.name, ok, now)
        if verdict.failure is None:
            outputs = verdict.outputs or {}
            if routes is not None:
                outputs = routing.priced(routes, task.status, outputs)
            key = task.status.cache_key
            if task.action.cache is not None and key is not None:
                said = caching.store(
                    key, outputs, verdict.artifacts, self.run_name, task.display, now
                )
                self.actions.append(said)
            self._task_succeeded(task, outputs, now)
        else:
            self._task_failed(
                task,
                verdict.failure,
                verdict.message or "",
                verdict.exit_code,
                now,
                verdict.outputs,
            )

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
        self,
        task: Task,
        reason: FailureReason,
        message: str,
        exit_code: int | None,
        now: datetime,
        outputs: dict[str, Any] | None = None,
    ) -> None:
        st, retry = task.status, task.action.retry
        st.exit_code = exit_code
        if outputs is not None:
            st.outputs = outputs  # what a failed attempt wrote: continueOn branches read it
        self.dirty = True
        retry_at: tuple[datetime, float] | str = ""
        if task.action.approval is None and self._may_start(task):
            facts = failures.RetryFacts.of(reason, message, exit_code, outputs, st, now)
            expression = task.action.retry_expression
            scope = (lambda: self.context(task, (expression,))) if expression else dict
            retry_at = failures.next_retry(task.action, st, task.attempt_name(), facts, now, scope)
        if not isinstance(retry_at, str):
            at, delay = retry_at
            st.mark_retrying(reason, message, at)
            self.retrying.append(task)
            if task.role == "item":
                self.fans.took_slot(task.fan_key, 1)  # a retrying item keeps its slot
            self._event(
                "Warning",
                EventReason.STEP_RETRYING,
                f"Attempt {st.attempts} of {task.display} failed ({reason.value}): {message}; "
                f"retrying in {delay:.1f}s ({st.attempts}/{retry.limit} retries used)",
                task.step,
            )
            return
        st.mark_failed(reason, f"{message} ({retry_at})" if retry_at else message, now)
        if task.role == "item":
            said = f"Item {task.display} failed ({reason.value}): {(st.message or '')[:300]}"
            self.actions.append(
                RecordEvent("Warning", EventReason.ITEM_FAILED, said, task.step, progress=True)
            )
        self._task_done(task, now)

    def _task_done(self, task: Task, now: datetime) -> None:
        """A task reached a final phase: tell whatever owns it."""
        self.slots.moves += 1
        st = task.status
        if task.role == "step":
            self._finish_step(task.step, st.phase, st.reason or "", st.message, now)
        elif task.role == "item":
            key = task.fan_key
            self.dirty |= self.fans.item_done(key, st.phase == StepPhase.SUCCEEDED)
            self._check_fan_out(key, now)
        elif task.role == "body":
            self._advance_loop(self.plan.steps[task.step], now)
        elif task.role == "compensation":
            reason = {
                StepPhase.SUCCEEDED: EventReason.COMPENSATION_SUCCEEDED,
                StepPhase.FAILED: EventReason.COMPENSATION_FAILED,
            }.get(st.phase, EventReason.COMPENSATION_CANCELLED)
            level: Level = "Normal" if st.phase == StepPhase.SUCCEEDED else "Warning"
            said = f"Compensation of step {task.step} {st.phase.value.lower()}"
            self._event(level, reason, said, task.step)

    def _cancel_task(self, task: Task, reason: str, message: str, now: datetime) -> None:
        name = task.status.attempt_name
        if name and (active := self._deactivate(name)) is not None:
            self.actions.append(
                CancelAttempt(name, reason, job=active.is_job, child=active.is_child)
            )
            breakers.abandon(self.breakers, active.action, name, now)
            if active.action.routes is not None:
                routing.abandon(active.action.routes, self.breakers, task.status, name, now)
        if task.status.phase == StepPhase.RETRYING:
            self.retrying = [t for t in self.retrying if t.status is not task.status]
        task.status.mark_cancelled(reason, message, now)
        self.dirty = True

    # ------------------------------------------------------------------ budget

    def _account(self, task: Task, used: Usage, now: datetime) -> None:
        """Add a task's reported usage to it, its step (fan-outs, loops) and the run."""
        owner = self.steps[task.step] if task.role in ("item", "body") else None
        total = budget.add_usage(used, task.status, owner, self.status)
        spec = self.plan.spec.budget
        if spec is None or self.status.budget is not None or self.failing is not None:
            return
        verdict = budget.judge_usage(spec, total, task.display, run_uid=self.run_uid, now=now)
        if verdict is not None:
            self.status.budget = verdict.status
            self.actions += verdict.events
            if verdict.stop is not None:
                self._begin_failing(*verdict.stop, now, cancel=True)

    @property
    def depth(self) -> int:
        """How deep this run is nested (0: not a sub-workflow's run)."""
        return self.status.parent.depth if self.status.parent is not None else 0

    @property
    def paused(self) -> bool:
        """Over a Pause budget and not yet approved: nothing new starts."""
        record = self.status.budget
        return record is not None and record.state == "Exceeded" and self.failing is None

    # ------------------------------------------------------------------ approvals

    def _on_decision(self, decision: ApprovalDecision, now: datetime) -> None:
        if decision.step == BUDGET_GATE and self.plan.spec.budget is not None:
            self._on_budget_decision(decision, now)
            return
        for task, verdict in self.gates.decided(decision, self._openings, now):
            self._apply_gate(task, verdict, now)

    def _openings(self, task: Task) -> list[StepStatus | LoopTaskStatus]:
        """Every opening of a task's gate: the step's, or each iteration's of a body step."""
        if task.role != "body":
            return [self.steps[task.step]]
        iterations = self.steps[task.step].iterations or []
        return [b for it in iterations for b in it.steps if b.name == task.body]

    def _apply_gate(self, task: Task, verdict: approvals.GateVerdict, now: datetime) -> None:
        st = task.status
        assert isinstance(st, StepStatus | LoopTaskStatus)
        if verdict.record is not None:
            st.approvals = [*(st.approvals or []), verdict.record]
            self._recorded(task.body or task.step, task.iteration, verdict.record)
        if verdict.event is not None:
            level, reason, message = verdict.event
            self._event(level, reason, message, task.step)
        if verdict.close is None:
            return
        self.gates.close(task)
        if verdict.close == "approved":
            outputs = {"approved": True, "approvedBy": approvals.approvers_of(st.approvals)}
            self._task_succeeded(task, outputs, now, verdict.reason, verdict.message)
        else:
            st.mark_failed(verdict.reason, verdict.message, now)
            self.dirty = True
            self._task_done(task, now)

    def _on_budget_decision(self, decision: ApprovalDecision, now: datetime) -> None:
        record = self.status.budget
        decided = budget.decided(self.plan.spec.budget, record, self.paused, decision, now)
        if decided is None or record is None:
            return
        entry, verdict = decided
        record.approvals = [*(record.approvals or []), entry]
        self._recorded(BUDGET_GATE, None, entry)
        self.actions.append(verdict.event)
        record.state = verdict.state or record.state
        if verdict.stop is not None:
            self._begin_failing(*verdict.stop, now, cancel=True)

    def _recorded(self, gate: str, iteration: int | None, record: ApprovalRecord) -> None:
        self.actions.append(RecordDecision.of(gate, iteration, record))
        self.dirty = True

    # ------------------------------------------------------------------ fan-out

    def _start_items(self, key: str, now: datetime) -> None:
        where = self.fans.running[key].where
        while self.fans.may_start(key, self.slots.capacity()) and self._admit(
            where.plan.action, where.owner
        ):
            task = self.fans.next_item(key)
            cased = self._cased(task)
            if isinstance(cased, Task):
                self._start_attempt(cased, now)
            else:  # no case runs it: the item fails as it starts
                task.status.attempts += 1
                task.status.start_time, task.status.attempt_name = now, task.attempt_name()
                self._task_failed(task, *cased, None, now)

    def _cased(self, task: Task) -> Task | tuple[FailureReason, str]:
        """An item's task with the action of the case that runs it, or why none does."""
        cases = self.fans.running[task.fan_key].where.plan.cases
        if not cases:
            return task
        chosen = fanout.choose(cases, lambda e: self._when(e, task))
        return replace(task, action=chosen) if isinstance(chosen, ActionPlan) else chosen

    def _check_fan_out(self, key: str, now: datetime) -> None:
        decided = self.fans.decided(key)
        if decided is None:
            return
        where, verdict, unfinished = decided
        for task in unfinished:
            self._cancel_task(task, StepReason.THRESHOLD_REACHED, fanout.DECIDED, now)
        body = where.body_task
        if body is None:
            self._finish_step(where.step, verdict.phase, verdict.reason, verdict.message, now)
            return
        if verdict.phase == StepPhase.SUCCEEDED:
            body.status.mark_succeeded(body.status.outputs, now, verdict.reason, verdict.message)
        else:
            body.status.mark_failed(verdict.reason, verdict.message, now)
        self.dirty = True
        self._task_done(body, now)

    # ------------------------------------------------------------------ loops

    def _next_iteration(self, plan: StepPlan, st: StepStatus, now: datetime) -> None:
        assert plan.loop is not None
        assert st.iterations is not None
        body = [LoopTaskStatus(name=b.name) for b in plan.loop.body]
        st.iterations.append(IterationStatus(iteration=len(st.iterations), steps=body))
        self.dirty = True
        self._advance_loop(plan, now)

    def _advance_loop(self, plan: StepPlan, now: datetime) -> None:
        st, loop = self.steps[plan.name], plan.loop
        assert loop is not None
        assert st.iterations
        if st.phase.final or self.failing is not None:
            return  # a failing run sweeps unfinished loops; no new work starts
        tasks = loops.body_tasks(self.run_name, plan, st)
        move = loops.next_in_body([t.status.phase for t in tasks], [b.continues for b in loop.body])
        iteration = st.iterations[-1].iteration
        if move.kind == "failed":
            failed = tasks[move.index]
            self._end_loop(
                plan, loops.body_failed(iteration, failed.body or "", failed.status.message), now
            )
        elif move.kind == "begin":
            self._begin_body(loop.body[move.index], tasks[move.index], now)
        elif move.kind == "done":
            until = self._when(loop.until, tasks[0] if tasks else None)
            ended = loops.after_iteration(loop.spec, iteration, until)
            if ended is None:
                self._next_iteration(plan, st, now)
            else:
                self._end_loop(plan, ended, now)

    def _begin_body(self, body: BodyPlan, task: Task, now: datetime) -> None:
        runs = self._passes(body.when, task, now)
        if runs and body.fan_out is not None:
            self._begin_body_fan_out(task, body.fan_out, now)
        elif runs:
            self._begin_task(task, now)
        elif runs is False:
            self._advance_loop(self.plan.steps[task.step], now)

    def _passes(self, when: Expression | None, task: Task, now: datetime) -> bool | None:
        """Whether a task's `when` lets it run; False: it is Skipped; None: the expression
        failed, and so did the task."""
        run_it = self._when(when, task) if when is not None else True
        if isinstance(run_it, str):
            task.status.start_time = now
            self._task_failed(task, FailureReason.EXPRESSION_ERROR, run_it, None, now)
            return None
        if not run_it:
            assert when is not None
            task.status.mark_skipped(StepReason.WHEN_FALSE, f"when {when.source!r} is false", now)
            self.slots.moves += 1
            self.dirty = True
        return run_it

    def _end_loop(self, plan: StepPlan, verdict: loops.LoopVerdict, now: datetime) -> None:
        self.steps[plan.name].outputs = loops.outputs(self.steps[plan.name], verdict.converged)
        self.running_loops.discard(plan.name)
        self._finish_step(plan.name, verdict.phase, verdict.reason, verdict.message, now)

    # ------------------------------------------------------------ failure, compensation, finally

    def _begin_failing(
        self, reason: str, message: str, now: datetime, *, cancel: bool = False
    ) -> None:
        """Stop starting new work. ``cancel``: stop what runs too (cancelled, timed out, over
        budget); otherwise (a step failed) what runs, and its retries, may finish."""
        drain = not cancel
        self.failing = _Failing(reason, message, reason == RunReason.CANCELLED, drain)
        self.dirty = True
        self.ready.clear()
        if not drain:
            for task in [t for t in self.retrying if t.status.phase == StepPhase.RETRYING]:
                self._cancel_task(task, StepReason.RUN_FAILED, "cancelled: " + message, now)
            self.retrying.clear()
        for task in [*self.gates.waiting, *self.sleepers.take_all()]:
            self._cancel_task(task, StepReason.RUN_FAILED, "cancelled: " + message, now)
        self.gates.waiting.clear()
        if cancel:
            for task in list(self.active.values()):
                self._cancel_task(task, reason, message, now)
        self.slots.keep_only(self._may_start)

    def _draining(self) -> bool:
        """Retries of what ran when a step failed are still to come."""
        return bool(self.retrying) or any(
            t.role not in ("compensation", "finally") for t in self.slots.queue
        )

    def _all_steps_finished(self, now: datetime) -> None:
        """Failures held back by failFast: false fail the run now; else finally runs."""
        held = [self.steps[n] for n in self.failed_steps if not self._continues(n)]
        if held:
            self._begin_failing(RunReason.STEP_FAILED, failures.run_failure_message(held), now)
        else:
            self._begin_finally(now)

    def _begin_compensation(self, now: datetime) -> None:
        failing = self.failing
        assert failing is not None
        self.finished_steps += finishing.sweep(self.status.steps, failing.cancelled, now)
        self.fans.running.clear()
        self.running_loops.clear()
        self.dirty = True
        order = finishing.to_compensate(self.plan, self.steps, failing.reason, failing.cancelled)
        if order:
            self.status.phase = RunPhase.COMPENSATING
            said = f"Compensating {len(order)} step(s) in reverse completion order"
            self._event("Warning", EventReason.COMPENSATION_STARTED, said)
        else:
            self._begin_finally(now)

    def _advance_compensation(self, now: datetime) -> None:
        task = finishing.next_compensation(self.run_name, self.plan, self.steps)
        if task is None:
            self._begin_finally(now)
        elif task.status.phase == StepPhase.PENDING:
            self.slots.enqueue(task)

    def _begin_finally(self, now: datetime) -> None:
        self.status.phase = RunPhase.FINALIZING
        self.dirty = True
        self._start_finally(now)

    def _start_finally(self, now: datetime) -> None:
        """Finally steps whose finally dependencies have finished: queued, or skipped when
        their `when` is false."""
        statuses = self.status.finally_ or []
        for fin, st in finishing.finally_ready(self.plan.finally_steps, statuses):
            task = finally_task(self.run_name, fin, st)
            if id(st) not in self.slots.queued and self._passes(fin.when, task, now):
                self.slots.enqueue(task)

    def _advance_finally(self, now: datetime) -> None:
        self._start_finally(now)
        unfinished = any(not s.phase.final for s in self.status.finally_ or [])
        if unfinished or self.active or self.slots.queue:
            return
        if self.failing is None:
            ctx = self.context(None, tuple(self.plan.outputs.values()))
            failed = finishing.finally_failure(
                self.status.finally_ or []
            ) or finishing.set_run_outputs(self.status, self.plan.outputs, ctx)
            if failed is not None:
                self.failing = _Failing(*failed)
        f = self.failing
        outcome = (f.reason, f.message, f.cancelled) if f else None
        self.actions.append(finishing.end(self.status, outcome, now, self.generation))
        self.dirty = True

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
        end = deadlines.after(start, spec.timeout_seconds)
        if end and now >= end and self.failing is None and self.status.phase == RunPhase.RUNNING:
            said = f"exceeded timeoutSeconds={spec.timeout_seconds}"
            self._begin_failing(RunReason.TIMED_OUT, f"the run {said}", now, cancel=True)
            self._event("Warning", EventReason.RUN_TIMED_OUT, f"Run {said}")
        timed = [(n, t) for n, t in self.active.items() if t.action.timeout_seconds]
        for name, task in timed:
            timeout = task.action.timeout_seconds
            end = deadlines.attempt(timeout, task.status.attempt_start_time)
            if end is not None and now >= end:
                self._deactivate(name)
                self.actions.append(
                    CancelAttempt(
                        name, FailureReason.TIMED_OUT, job=task.is_job, child=task.is_child
                    )
                )
                said = f"attempt {task.status.attempts} exceeded timeoutSeconds={timeout}"
                self._task_failed(task, FailureReason.TIMED_OUT, said, None, now)
        due = [t for t in self.retrying if t.status.retry_time and t.status.retry_time <= now]
        if due:
            self.retrying = [t for t in self.retrying if t not in due]
            for task in due:
                self.slots.enqueue(task)  # a retrying item still holds its fan-out slot
        for task, verdict in self.gates.timed_out(now):
            self._apply_gate(task, verdict, now)
        for task in self.sleepers.due(now):
            self._wake(task, now)
        for step in deadlines.due(self._sla_deadlines(), now):
            (self.steps[step] if step else self.status).sla_breached = True
            reason, message = self.sla.breach(step)
            self.status.mark_sla_breached(reason, message, now, self.generation)
            self._event("Warning", EventReason.SLA_BREACHED, message[0].upper() + message[1:], step)
            self.dirty = True

    def _sla_deadlines(self) -> list[tuple[str | None, datetime | None]]:
        if not self.plan.has_sla:
            return []  # called twice per decision: a run without targets pays nothing
        tasks = (*self.active.values(), *self.gates.waiting, *self.retrying)
        running = [t.step for t in tasks if t.role == "step"]
        running += [*self.running_loops, *self.fans.steps()]
        return self.sla.deadlines(self.status, self.steps, running, self.finished)

    def _wake_at(self) -> datetime | None:
        if self.finished:
            return None
        timeout = None if self.failing else self.plan.spec.timeout_seconds
        return deadlines.earliest(
            [
                deadlines.after(self.status.start_time, timeout),
                *(
                    deadlines.attempt(t.action.timeout_seconds, t.status.attempt_start_time)
                    for t in self.active.values()
                    if t.action.timeout_seconds
                ),
                *(t.status.retry_time for t in self.retrying),
                *self.gates.deadlines(),
                *self.sleepers.deadlines(),
                *(at for _, at in self._sla_deadlines()),
            ]
        )

    # ------------------------------------------------------------------ conditions

    def _update_conditions(self, now: datetime) -> None:
        failing = (self.failing.reason, self.failing.message) if self.failing else None
        pending, done = self.gates.pending(), self.finished_steps
        moving = bool(self.active)
        progress = finishing.progress(failing, self.paused, bool(pending), moving, done, self.total)
        self.dirty |= finishing.update_conditions(
            self.status,
            self.plan,
            now,
            self.generation,
            progress=None if self.finished else progress,
            pending=pending,
            paused=self.paused,
            verified=self.approvals_verified,
        )

"""Fan-outs as decisions over facts: the items, the success threshold, when the step's
outcome is decided, how many items may start, what is folded out of a large one's status.
Pure: RunState keeps the live counters and applies the verdicts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from braid.api.reasons import EventReason, StepReason
from braid.api.run import ItemsSummary, ItemStatus, StepPhase, StepStatus
from braid.api.workflow import ThresholdAction
from braid.engine.actions import LoadItems, RecordEvent
from braid.engine.plan import COMPACT_ABOVE, StepPlan
from braid.engine.tasks import Task, item_task
from braid.expressions import Expression, ExpressionError, type_name

# Items of one fan-out running at once when it does not say: a run's width is bounded, so one
# run cannot start thousands of pods (or calls) in a single decision.
DEFAULT_PARALLELISM = 100
# Large fan-outs keep the details of running items and of the last this many failures.
KEEP_FAILED = 50
DECIDED = "cancelled: the step's outcome was already decided"


@dataclass
class FanOut:
    """The live counts of one running fan-out (rebuilt from its status on load)."""

    plan: StepPlan
    items: list[Any]
    threshold: int
    running: int = 0
    succeeded: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return len(self.items)

    @property
    def parallelism(self) -> int:
        assert self.plan.fan_out is not None
        return self.plan.fan_out.spec.parallelism or DEFAULT_PARALLELISM


def evaluate_items(
    plan: StepPlan,
    context: Callable[[Expression], dict[str, Any]],
    lists: Mapping[str, list[Any] | str] | None = None,
) -> list[Any] | str | LoadItems:
    """The fan-out's items, or why there are none, or (itemsFrom) the artifact to load first.
    Deterministic, so a resumed run re-evaluates instead of storing the list."""
    fan = plan.fan_out
    assert fan is not None
    source = fan.items_expression or fan.items_from
    if source is None:
        return list(fan.spec.items or [])
    try:
        items = source.evaluate(context(source))
    except ExpressionError as exc:
        return str(exc)
    if fan.items_from is not None:
        items = _loaded(plan.name, source, items, lists or {})
        if isinstance(items, (str, LoadItems)):
            return items
    if not isinstance(items, list):
        return f"{source.path}: must evaluate to a list, got {type_name(items)}"
    if len(items) > fan.spec.max_items:
        return f"{source.path}: {len(items)} items exceed maxItems {fan.spec.max_items}"
    return items


def _loaded(step: str, source: Expression, ref: Any, lists: Mapping[str, list[Any] | str]) -> Any:
    """itemsFrom: the loaded list (checked like any other), the artifact to load, or why not."""
    ref = ref if isinstance(ref, dict) else {"uri": ref}
    uri, sha = ref.get("uri"), ref.get("sha256")
    if not isinstance(uri, str) or not uri:
        return f"{source.path}: gives {type_name(ref)}, not an artifact"
    loaded = lists.get(uri)
    if loaded is None:
        return LoadItems(step, uri, sha if isinstance(sha, str) else None)
    return f"{source.path}: {loaded}" if isinstance(loaded, str) else loaded


def start(plan: StepPlan, items: list[Any]) -> FanOut:
    """The counts of a fan-out over ``items``, with its success threshold (default: all)."""
    assert plan.fan_out is not None
    n = len(items)
    threshold = n
    t = plan.fan_out.spec.success_threshold
    if t is not None:
        threshold = t.count if t.count is not None else math.ceil((t.fraction or 0) * n - 1e-9)
    return FanOut(plan, items, min(threshold, n))


def resume(plan: StepPlan, st: StepStatus, items: list[Any]) -> FanOut:
    """The counts of a running fan-out, from its status."""
    fan = start(plan, items)
    if st.items_summary is not None:
        fan.succeeded += st.items_summary.succeeded
        fan.failed += st.items_summary.failed
    for item in st.items or []:
        fan.running += item.phase in (StepPhase.RUNNING, StepPhase.RETRYING)
        fan.succeeded += item.phase == StepPhase.SUCCEEDED
        fan.failed += item.phase in (StepPhase.FAILED, StepPhase.CANCELLED)
    return fan


@dataclass(frozen=True)
class FanOutVerdict:
    """The fan-out's outcome is decided: what the step becomes (the rest are cancelled)."""

    phase: StepPhase
    reason: StepReason
    message: str


def outcome(fan: FanOut) -> FanOutVerdict | None:
    """Decided once the threshold is met (at once, or when all are done with WaitForAll),
    or once so many failed that it cannot be met any more."""
    assert fan.plan.fan_out is not None
    all_done = fan.succeeded + fan.failed == fan.total
    reached = fan.succeeded >= fan.threshold
    wait_all = fan.plan.fan_out.spec.on_threshold_reached == ThresholdAction.WAIT_FOR_ALL
    if reached and (all_done or not wait_all):
        return FanOutVerdict(
            StepPhase.SUCCEEDED,
            StepReason.SUCCEEDED,
            f"{fan.succeeded}/{fan.total} items succeeded (threshold {fan.threshold})",
        )
    fail_fast = fan.plan.fan_out.spec.fail_fast
    if fan.failed > fan.total - fan.threshold and (fail_fast or all_done):
        return FanOutVerdict(
            StepPhase.FAILED,
            StepReason.THRESHOLD_UNREACHABLE,
            f"{fan.failed}/{fan.total} items failed; {fan.threshold} must succeed",
        )
    return None


def may_start_another(fan: FanOut, started: int, capacity: float) -> bool:
    return capacity > 0 and started < fan.total and fan.running < fan.parallelism


def compacted(
    items: list[ItemStatus], summary: ItemsSummary | None, total: int
) -> tuple[list[ItemStatus], ItemsSummary] | None:
    """A large fan-out's finished items folded into its summary (every success, failures
    beyond the last KEEP_FAILED); None when there is nothing to fold."""
    if total <= COMPACT_ABOVE:
        return None
    folded = summary.model_copy() if summary is not None else ItemsSummary()
    failed = [i for i in items if i.phase.final and i.phase != StepPhase.SUCCEEDED]
    keep_failed = {id(i) for i in failed[-KEEP_FAILED:]}
    kept: list[ItemStatus] = []
    for item in items:
        if not item.phase.final or id(item) in keep_failed:
            kept.append(item)
        elif item.phase == StepPhase.SUCCEEDED:
            folded.succeeded += 1
        else:
            folded.failed += 1
    return (kept, folded) if len(kept) != len(items) else None


def outputs(fan: FanOut, items: list[ItemStatus]) -> dict[str, Any]:
    """What downstream steps read: counts, and each item's outputs in item order (null
    where it did not succeed) unless the fan-out is too large to gather them."""
    counts = {"succeeded": fan.succeeded, "failed": fan.failed, "total": fan.total}
    if fan.total > COMPACT_ABOVE:
        return counts
    gathered: list[Any] = [None] * fan.total
    for item in items:
        if item.phase == StepPhase.SUCCEEDED:
            gathered[item.index] = item.outputs or {}
    return {"items": gathered, **counts}


@dataclass
class FanOuts:
    """The running fan-outs of one run: their counts, the items they start, what their
    status folds away, and their outputs when decided. Decides with the functions above and
    never calls back into RunState: it hands back the item tasks to start or cancel."""

    run_name: str
    running: dict[str, FanOut] = field(default_factory=dict)
    # itemsFrom: ready steps waiting for their list, and running ones to resume once loaded
    loading: set[str] = field(default_factory=set)
    unloaded: dict[str, LoadItems] = field(default_factory=dict)

    def begin(self, plan: StepPlan, st: StepStatus, items: list[Any]) -> RecordEvent:
        st.items, st.item_count, st.items_started = [], len(items), 0
        fan = self.running[plan.name] = start(plan, items)
        return RecordEvent(
            "Normal",
            EventReason.FAN_OUT_STARTED,
            f"Step {plan.name} fans out over {fan.total} items (success threshold {fan.threshold})",
            plan.name,
        )

    def resume(self, plan: StepPlan, st: StepStatus, items: list[Any]) -> list[Task]:
        """The counts of a running fan-out, from its status; the tasks of its listed items."""
        self.running[plan.name] = resume(plan, st, items)
        return [item_task(self.run_name, plan, item, items) for item in st.items or []]

    def may_start(self, name: str, st: StepStatus, capacity: float) -> bool:
        fan = self.running.get(name)
        if fan is None:  # an item failing fast can end it
            return False
        if st.items_started is None:  # a status written before itemsStarted existed
            st.items_started = len(st.items or [])
        return may_start_another(fan, st.items_started, capacity)

    def next_item(self, name: str, st: StepStatus) -> Task:
        """The next item's task (its status listed, not started yet)."""
        assert st.items is not None
        assert st.items_started is not None
        fan = self.running[name]
        item = ItemStatus(index=st.items_started)
        st.items.append(item)
        st.items_started += 1
        return item_task(self.run_name, fan.plan, item, fan.items)

    def took_slot(self, name: str, delta: int) -> None:
        if name in self.running:
            self.running[name].running += delta

    def item_done(self, name: str, st: StepStatus, succeeded: bool) -> bool:
        """Count a finished item; True when its status folded (a large fan-out)."""
        fan = self.running.get(name)
        if fan is None:
            return False
        if succeeded:
            fan.succeeded += 1
        else:
            fan.failed += 1
        return self.compact(name, st)

    def compact(self, name: str, st: StepStatus) -> bool:
        folded = compacted(st.items or [], st.items_summary, self.running[name].total)
        if folded is not None:
            st.items, st.items_summary = folded
        return folded is not None

    def decided(self, name: str, st: StepStatus) -> tuple[FanOutVerdict, list[Task]] | None:
        """The fan-out's outcome once decided, with the unfinished items to cancel; its
        outputs are set and it stops running."""
        fan = self.running.get(name)
        verdict = outcome(fan) if fan is not None else None
        if fan is None or verdict is None:
            return None
        cancel = [
            item_task(self.run_name, fan.plan, item, fan.items)
            for item in st.items or []
            if not item.phase.final
        ]
        # A retrying item holds its slot; an active one gives it up when it is deactivated.
        fan.running -= sum(t.status.phase == StepPhase.RETRYING for t in cancel)
        st.outputs = outputs(fan, st.items or [])
        self.compact(name, st)
        del self.running[name]
        return verdict, cancel

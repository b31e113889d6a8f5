"""Fan-outs as decisions over facts: the items, the success threshold, when the step's
outcome is decided, how many items may start, what is folded out of a large one's status.
Pure: RunState keeps the live counters and applies the verdicts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from braid.api.reasons import EventReason, FailureReason, StepReason
from braid.api.run import ItemsSummary, ItemStatus, StepPhase
from braid.api.workflow import ThresholdAction
from braid.engine.actions import LoadItems, RecordEvent
from braid.engine.plan import COMPACT_ABOVE, ActionPlan, CasePlan, FanOutPlan
from braid.engine.tasks import Fan, Task, item_task
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

    where: Fan
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
        return self.where.plan.spec.parallelism or DEFAULT_PARALLELISM


def evaluate_items(
    step: str,
    fan: FanOutPlan,
    context: Callable[[Expression], dict[str, Any]],
    lists: Mapping[str, list[Any] | str] | None = None,
) -> list[Any] | str | LoadItems:
    """The fan-out's items, or why there are none, or (itemsFrom) the artifact to load first.
    Deterministic, so a resumed run re-evaluates instead of storing the list."""
    source = fan.items_expression or fan.items_from
    if source is None:
        return list(fan.spec.items or [])
    try:
        items = source.evaluate(context(source))
    except ExpressionError as exc:
        return str(exc)
    if fan.items_from is not None:
        items = _loaded(step, source, items, lists or {})
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


def start(where: Fan, items: list[Any]) -> FanOut:
    """The counts of a fan-out over ``items``, with its success threshold (default: all)."""
    n = len(items)
    threshold = n
    t = where.plan.spec.success_threshold
    if t is not None:
        threshold = t.count if t.count is not None else math.ceil((t.fraction or 0) * n - 1e-9)
    return FanOut(where, items, min(threshold, n))


def resume(where: Fan, items: list[Any]) -> FanOut:
    """The counts of a running fan-out, from its status."""
    st = where.owner
    fan = start(where, items)
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
    spec = fan.where.plan.spec
    all_done = fan.succeeded + fan.failed == fan.total
    reached = fan.succeeded >= fan.threshold
    wait_all = spec.on_threshold_reached == ThresholdAction.WAIT_FOR_ALL
    if reached and (all_done or not wait_all):
        return FanOutVerdict(
            StepPhase.SUCCEEDED,
            StepReason.SUCCEEDED,
            f"{fan.succeeded}/{fan.total} items succeeded (threshold {fan.threshold})",
        )
    fail_fast = spec.fail_fast
    if fan.failed > fan.total - fan.threshold and (fail_fast or all_done):
        return FanOutVerdict(
            StepPhase.FAILED,
            StepReason.THRESHOLD_UNREACHABLE,
            f"{fan.failed}/{fan.total} items failed; {fan.threshold} must succeed",
        )
    return None


def which_failed(items: list[ItemStatus]) -> str:
    """Which items failed, and how the first of them did (a person asks that first)."""
    failed = [i for i in items if i.phase == StepPhase.FAILED]
    if not failed:
        return ""
    first = failed[0]
    why = f"({first.reason}): {first.message[:400]}" if first.message else f"({first.reason})"
    if len(failed) == 1:
        return f"; item {first.index} failed {why}"
    shown = ", ".join(str(i.index) for i in failed[:5]) + (", ..." if len(failed) > 5 else "")
    return f"; items {shown} failed; item {first.index} {why}"


def may_start_another(fan: FanOut, started: int, capacity: float) -> bool:
    return capacity > 0 and started < fan.total and fan.running < fan.parallelism


def choose(
    cases: tuple[CasePlan, ...], holds: Callable[[Expression], bool | str]
) -> ActionPlan | tuple[FailureReason, str]:
    """The action of the first case whose `when` holds for the item, or why none runs it."""
    for case in cases:
        held = holds(case.when)
        if isinstance(held, str):
            return FailureReason.EXPRESSION_ERROR, held
        if held:
            return case.action
    tried = "; ".join(f"{c.name}: {c.when.source}" for c in cases)
    return FailureReason.NO_CASE_MATCHED, f"no case matches the item (cases: {tried})"


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
    """The running fan-outs of one run (of steps, and of loop body steps in an iteration),
    by Task.fan_key: their counts, the items they start, what their status folds away, and
    their outputs when decided. Decides with the functions above and never calls back into
    RunState: it hands back the item tasks to start or cancel."""

    running: dict[str, FanOut] = field(default_factory=dict)
    # itemsFrom: ready steps waiting for their list, and running ones to resume once loaded
    loading: set[str] = field(default_factory=set)
    unloaded: dict[str, LoadItems] = field(default_factory=dict)

    def begin(self, where: Fan, items: list[Any]) -> RecordEvent:
        st = where.owner
        st.items, st.item_count, st.items_started = [], len(items), 0
        fan = self.running[where.key] = start(where, items)
        said = where.body_task.display if where.body_task else f"Step {where.step}"
        return RecordEvent(
            "Normal",
            EventReason.FAN_OUT_STARTED,
            f"{said} fans out over {fan.total} items (success threshold {fan.threshold})",
            where.step,
        )

    def resume(self, where: Fan, items: list[Any]) -> list[Task]:
        """The counts of a running fan-out, from its status; the tasks of its listed items."""
        self.running[where.key] = resume(where, items)
        return [item_task(where, item, items) for item in where.owner.items or []]

    def steps(self) -> list[str]:
        """The steps whose fan-outs run (a loop's, for its body's)."""
        return list(dict.fromkeys(f.where.step for f in self.running.values()))

    def may_start(self, key: str, capacity: float) -> bool:
        fan = self.running.get(key)
        if fan is None:  # an item failing fast can end it
            return False
        st = fan.where.owner
        if st.items_started is None:  # a status written before itemsStarted existed
            st.items_started = len(st.items or [])
        return may_start_another(fan, st.items_started, capacity)

    def next_item(self, key: str) -> Task:
        """The next item's task (its status listed, not started yet)."""
        fan = self.running[key]
        st = fan.where.owner
        assert st.items is not None
        assert st.items_started is not None
        item = ItemStatus(index=st.items_started)
        st.items.append(item)
        st.items_started += 1
        return item_task(fan.where, item, fan.items)

    def took_slot(self, key: str, delta: int) -> None:
        if key in self.running:
            self.running[key].running += delta

    def item_done(self, key: str, succeeded: bool) -> bool:
        """Count a finished item; True when its status folded (a large fan-out)."""
        fan = self.running.get(key)
        if fan is None:
            return False
        if succeeded:
            fan.succeeded += 1
        else:
            fan.failed += 1
        return self.compact(key)

    def compact(self, key: str) -> bool:
        fan = self.running[key]
        st = fan.where.owner
        folded = compacted(st.items or [], st.items_summary, fan.total)
        if folded is not None:
            st.items, st.items_summary = folded
        return folded is not None

    def decided(self, key: str) -> tuple[Fan, FanOutVerdict, list[Task]] | None:
        """The fan-out's outcome once decided, with the unfinished items to cancel; its
        outputs are set and it stops running."""
        fan = self.running.get(key)
        verdict = outcome(fan) if fan is not None else None
        if fan is None or verdict is None:
            return None
        st = fan.where.owner
        cancel = [
            item_task(fan.where, item, fan.items) for item in st.items or [] if not item.phase.final
        ]
        # A retrying item holds its slot; an active one gives it up when it is deactivated.
        fan.running -= sum(t.status.phase == StepPhase.RETRYING for t in cancel)
        st.outputs = outputs(fan, st.items or [])
        if verdict.phase == StepPhase.FAILED:
            verdict = replace(verdict, message=verdict.message + which_failed(st.items or []))
        self.compact(key)
        del self.running[key]
        return fan.where, verdict, cancel

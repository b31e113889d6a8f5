"""Who may run now: a run's queue of tasks waiting for a slot, its running attempts, and the
concurrency pools they hold (counting other runs' use, which the driver gives with each
decision). A small index with no decisions of its own beyond admission: RunState drives it.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from braid.api.run import TaskStatus
from braid.engine.plan import ActionPlan
from braid.engine.tasks import Task


@dataclass
class Slots:
    max_parallel: int | None = None
    queue: deque[Task] = field(default_factory=deque)
    queued: set[int] = field(default_factory=set)  # id() of the queued tasks' statuses
    active: dict[str, Task] = field(default_factory=dict)  # attempt name -> task
    held: Counter[str] = field(default_factory=Counter)  # key -> this run's active attempts
    elsewhere: dict[str, int] = field(default_factory=dict)  # key -> other runs' attempts
    waiting_for: set[str] = field(default_factory=set)  # keys a queued task waits for
    moves: int = 0  # tasks queued (RunState counts starts and ends too)

    def capacity(self) -> float:
        """How many more attempts the run may have running (spec.maxParallel)."""
        if self.max_parallel is None:
            return float("inf")
        return self.max_parallel - len(self.active)

    def enqueue(self, task: Task) -> None:
        if id(task.status) not in self.queued:
            self.moves += 1
            self.queued.add(id(task.status))
            self.queue.append(task)

    def pop(self) -> Task:
        task = self.queue.popleft()
        self.queued.discard(id(task.status))
        return task

    def requeue_first(self, tasks: Iterable[Task]) -> None:
        """Put back tasks that could not start, in their place at the head of the queue."""
        for task in reversed(list(tasks)):
            self.queue.appendleft(task)
            self.queued.add(id(task.status))

    def keep_only(self, keep: Callable[[Task], bool]) -> None:
        self.queue = deque(t for t in self.queue if keep(t))
        self.queued = {id(t.status) for t in self.queue}

    def activate(self, name: str, task: Task) -> None:
        self.active[name] = task
        if task.action.concurrency is not None:
            self.held[task.action.concurrency.key] += 1

    def deactivate(self, name: str) -> Task | None:
        task = self.active.pop(name, None)
        if task is not None and task.action.concurrency is not None:
            self.held[task.action.concurrency.key] -= 1
        return task

    def admit(self, action: ActionPlan, status: TaskStatus) -> tuple[bool, bool]:
        """(whether a slot of the action's pool is free, counting every run's attempts;
        whether the status changed to say it waits for one)."""
        pool = action.concurrency
        if pool is None:
            return True, False
        in_use = self.held[pool.key] + self.elsewhere.get(pool.key, 0)
        if in_use < pool.limit:
            return True, False
        self.waiting_for.add(pool.key)
        message = f"waiting for a slot of concurrency key {pool.key} ({in_use}/{pool.limit} in use)"
        return False, status.mark_waiting_for_slot(message)

    def in_use(self) -> dict[str, int]:
        return {k: n for k, n in self.held.items() if n > 0}

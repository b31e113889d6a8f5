"""The workflow graph: which steps wait for which. A small pure leaf: no CEL, no status models.

The same functions validate a spec (cycles, unknown or self dependencies, with field paths) and
serve the scheduler, retries and the pictures, as Tekton's ``pipeline/dag`` does for both
admission and the reconciler. ``braid graph`` can draw a workflow whose expressions do not
compile, because nothing here compiles them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from braid.api.errors import FieldError, did_you_mean
from braid.api.workflow import WorkflowSpec

T = TypeVar("T")


@dataclass(frozen=True)
class Graph:
    """Steps in declaration order, what each depends on, and what depends on each."""

    order: tuple[str, ...]
    deps: Mapping[str, tuple[str, ...]]
    dependents: Mapping[str, tuple[str, ...]]

    def roots(self) -> list[str]:
        return [n for n in self.order if not self.deps[n]]


def build(spec: WorkflowSpec) -> tuple[Graph, list[FieldError]]:
    """The graph of a spec's steps, and every problem with its dependencies. A step without
    ``dependsOn`` depends on the step before it; unknown and self dependencies are dropped
    from the graph (and reported); a cycle is reported with every step on it."""
    errors: list[FieldError] = []
    names = [s.name for s in spec.steps]
    known = set(names)
    deps: dict[str, tuple[str, ...]] = {}
    for i, step in enumerate(spec.steps):
        if step.depends_on is None:
            deps[step.name] = (names[i - 1],) if i > 0 else ()
            continue
        for j, dep in enumerate(step.depends_on):
            path = f"spec.steps[{i}].dependsOn[{j}]"
            if dep not in known:
                errors.append(
                    FieldError(
                        path, f"unknown step {dep!r}" + did_you_mean(dep, names, "must be one of")
                    )
                )
            elif dep == step.name:
                errors.append(FieldError(path, "a step cannot depend on itself"))
        deps[step.name] = tuple(
            d for d in dict.fromkeys(step.depends_on) if d in known and d != step.name
        )
    graph = _graph(names, deps)
    if len(known) == len(names) and not errors:
        cycle = find_cycle(graph)
        if cycle:
            first = names.index(cycle[0])
            errors.append(
                FieldError(
                    f"spec.steps[{first}].dependsOn",
                    f"dependency cycle: {' -> '.join(cycle)}; a workflow must be acyclic "
                    "(use a loop step to repeat work)",
                )
            )
    return graph, errors


def _graph(order: Sequence[str], deps: Mapping[str, tuple[str, ...]]) -> Graph:
    dependents: dict[str, list[str]] = {n: [] for n in order}
    for n in order:
        for d in deps.get(n, ()):
            dependents.setdefault(d, []).append(n)
    return Graph(
        tuple(dict.fromkeys(order)),
        {n: tuple(deps.get(n, ())) for n in order},
        {n: tuple(v) for n, v in dependents.items()},
    )


def of(order: Sequence[str], deps: Mapping[str, Iterable[str]]) -> Graph:
    """A graph from explicit dependencies (tests, and callers that resolved them already)."""
    return _graph(order, {n: tuple(deps.get(n, ())) for n in order})


def topological(graph: Graph) -> tuple[list[str], dict[str, int]]:
    """Kahn's algorithm: every step after its dependencies (ties in declaration order), and
    the unmet dependency counts left over (non-zero only on and behind a cycle)."""
    indegree = {n: len(graph.deps[n]) for n in graph.order}
    queue = deque(n for n in graph.order if indegree[n] == 0)
    out: list[str] = []
    while queue:
        n = queue.popleft()
        out.append(n)
        for m in graph.dependents[n]:
            indegree[m] -= 1
            if indegree[m] == 0:
                queue.append(m)
    return out, indegree


def find_cycle(graph: Graph) -> list[str] | None:
    """On a cycle, walk it to name every step on it (the first one repeated)."""
    order, indegree = topological(graph)
    if len(order) == len(graph.order):
        return None
    node = next(n for n in graph.order if indegree[n] > 0)
    path: list[str] = []
    while node not in path:
        path.append(node)
        node = next(d for d in graph.deps[node] if indegree[d] > 0)
    return [*path[path.index(node) :], node]


def ready(graph: Graph, done: Collection[str], started: Collection[str] = ()) -> list[str]:
    """The steps that may start once ``done`` have finished: not done, not started, every
    dependency done. In declaration order (Tekton's GetCandidateTasks)."""
    return [
        n
        for n in graph.order
        if n not in done and n not in started and all(d in done for d in graph.deps[n])
    ]


def downstream(graph: Graph, roots: Iterable[str]) -> set[str]:
    """``roots`` and every step that depends on one of them, directly or not."""
    out: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name not in out:
            out.add(name)
            stack.extend(graph.dependents.get(name, ()))
    return out


def upstream(graph: Graph, name: str) -> set[str]:
    """Every step ``name`` depends on, directly or not (not ``name`` itself)."""
    out: set[str] = set()
    stack = list(graph.deps.get(name, ()))
    while stack:
        node = stack.pop()
        if node not in out:
            out.add(node)
            stack.extend(graph.deps[node])
    return out


def skipped_because_all_parents_skipped(
    graph: Graph, name: str, skipped: Callable[[str], bool]
) -> bool:
    """A step whose dependencies were all skipped is skipped too; one dependency that ran
    is enough to run it (a join after routing)."""
    deps = graph.deps[name]
    return bool(deps) and all(skipped(d) for d in deps)


def reverse_completion_order(
    finished: Iterable[T], completed: Callable[[T], tuple[object, int]]
) -> list[T]:
    """The order in which finished work is undone: last finished first (ties: the later
    declared first). ``completed`` gives (completion time, declaration index)."""
    return sorted(finished, key=completed, reverse=True)

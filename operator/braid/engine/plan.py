"""A workflow compiled for execution: the DAG resolved, every expression compiled once.

``compile_plan`` is also the validator: ``braid lint``, the local runner and the operator all
reject the same workflows with the same field-path messages.
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from braid.api.errors import FieldError, InvalidSpecError
from braid.api.workflow import (
    BUDGET_GATE,
    ApprovalSpec,
    CircuitBreakerSpec,
    ConcurrencySpec,
    ContainerSpec,
    FanOutSpec,
    FinallyStep,
    LoopSpec,
    LoopStep,
    RetryPolicy,
    Step,
    StepAction,
    WebhookSpec,
    WorkflowSpec,
)
from braid.expressions import (
    Expression,
    ExpressionError,
    Template,
    ValueTemplate,
    clip,
    compile_expression,
    compile_template,
    compile_value_template,
)

DEFAULT_SUCCESS = "response.status >= 200 && response.status < 300"
WEBHOOK_TIMEOUT_SECONDS = 30
# A webhook attempt without a step timeout still has a deadline: its call's timeout and this
# much more, after which an attempt whose call was lost (an operator restart) is retried.
WEBHOOK_GRACE_SECONDS = 10
DEFAULT_OUTPUT = "{'status': response.status, 'body': response.body}"


@dataclass(frozen=True)
class ContainerPlan:
    spec: ContainerSpec
    command: tuple[Template, ...]
    args: tuple[Template, ...]
    env: tuple[tuple[str, Template], ...]


@dataclass(frozen=True)
class WebhookPlan:
    spec: WebhookSpec
    url: Template
    headers: tuple[tuple[str, Template], ...]
    body: ValueTemplate
    success: Expression
    output: Expression
    timeout_seconds: float = WEBHOOK_TIMEOUT_SECONDS  # of the HTTP call


@dataclass(frozen=True)
class ApprovalPlan:
    spec: ApprovalSpec
    message: Template | None


@dataclass(frozen=True)
class ActionPlan:
    """What one task runs, with its retry policy and per-attempt timeout resolved."""

    path: str
    container: ContainerPlan | None
    webhook: WebhookPlan | None
    approval: ApprovalPlan | None
    retry: RetryPolicy
    timeout_seconds: int | None
    concurrency: ConcurrencySpec | None = None
    breaker: CircuitBreakerSpec | None = None
    fallback: ActionPlan | None = None  # runs instead while the breaker is open

    @property
    def kind(self) -> str:
        if self.container:
            return "container"
        return "webhook" if self.webhook else "approval"


@dataclass(frozen=True)
class BodyPlan:
    name: str
    index: int
    when: Expression | None
    action: ActionPlan


@dataclass(frozen=True)
class LoopPlan:
    spec: LoopSpec
    body: tuple[BodyPlan, ...]
    until: Expression


@dataclass(frozen=True)
class FanOutPlan:
    spec: FanOutSpec
    items_expression: Expression | None
    action: ActionPlan


@dataclass(frozen=True)
class StepPlan:
    name: str
    index: int
    path: str
    spec: Step
    deps: tuple[str, ...]
    when: Expression | None
    action: ActionPlan | None  # container, webhook, approval
    fan_out: FanOutPlan | None
    loop: LoopPlan | None
    compensation: ActionPlan | None
    sla_seconds: int | None

    @property
    def kind(self) -> str:
        return self.spec.kind


@dataclass(frozen=True)
class FinallyPlan:
    name: str
    index: int
    action: ActionPlan


@dataclass
class Plan:
    spec: WorkflowSpec
    steps: dict[str, StepPlan]
    order: list[str]  # declaration order
    dependents: dict[str, list[str]]
    finally_steps: list[FinallyPlan]
    outputs: dict[str, Expression]
    param_names: frozenset[str]
    body_names: dict[str, str] = field(default_factory=dict)  # body step -> loop step
    has_sla: bool = False  # any run or step SLA target: decides whether SLABreached is shown
    breaker_keys: tuple[str, ...] = ()  # circuit breakers the steps go through, shown in status
    pools: bool = False  # some step holds a concurrency key


class _Compiler:
    """Collects every problem instead of stopping at the first."""

    def __init__(self, spec: WorkflowSpec) -> None:
        self.spec = spec
        self.errors: list[FieldError] = []
        self.expressions: list[tuple[Expression, str | None, frozenset[str]]] = []

    def expr(
        self, source: str, path: str, owner: str | None, extra: frozenset[str] = frozenset()
    ) -> Expression | None:
        try:
            compiled = compile_expression(source, path)
        except ExpressionError as exc:
            self.errors.append(exc.field_error())
            return None
        self.expressions.append((compiled, owner, extra))
        return compiled

    def template(
        self, source: str, path: str, owner: str | None, extra: frozenset[str] = frozenset()
    ) -> Template:
        try:
            compiled = compile_template(source, path)
        except ExpressionError as exc:
            self.errors.append(exc.field_error())
            return Template(source, path, (source,))
        for e in compiled.expressions:
            self.expressions.append((e, owner, extra))
        return compiled

    def value_template(
        self, value: Any, path: str, owner: str | None, extra: frozenset[str]
    ) -> ValueTemplate:
        try:
            compiled = compile_value_template(value, path)
        except ExpressionError as exc:
            self.errors.append(exc.field_error())
            return ValueTemplate(value, {})
        for e in compiled.expressions:
            self.expressions.append((e, owner, extra))
        return compiled

    def action(
        self,
        path: str,
        owner: str | None,
        container: ContainerSpec | None,
        webhook: WebhookSpec | None,
        approval: ApprovalSpec | None,
        retry: RetryPolicy | None,
        timeout: int | None,
        extra: frozenset[str] = frozenset(),
    ) -> ActionPlan:
        defaults = self.spec.defaults
        container_plan = webhook_plan = approval_plan = None
        deadline = timeout or (defaults.timeout_seconds if defaults else None)
        if container is not None:
            cpath = f"{path}.container"
            container_plan = ContainerPlan(
                container,
                tuple(
                    self.template(c, f"{cpath}.command[{i}]", owner, extra)
                    for i, c in enumerate(container.command or [])
                ),
                tuple(
                    self.template(a, f"{cpath}.args[{i}]", owner, extra)
                    for i, a in enumerate(container.args or [])
                ),
                tuple(
                    (e.name, self.template(e.value, f"{cpath}.env[{i}].value", owner, extra))
                    for i, e in enumerate(container.env or [])
                ),
            )
        if webhook is not None:
            wpath = f"{path}.webhook"
            response = extra | {"response"}
            webhook_plan = WebhookPlan(
                webhook,
                self.template(webhook.url, f"{wpath}.url", owner, extra),
                tuple(
                    (k, self.template(v, f"{wpath}.headers.{k}", owner, extra))
                    for k, v in (webhook.headers or {}).items()
                ),
                self.value_template(webhook.body, f"{wpath}.body", owner, extra),
                self.expr(
                    webhook.success_condition or DEFAULT_SUCCESS,
                    f"{wpath}.successCondition",
                    owner,
                    response,
                )
                or compile_expression(DEFAULT_SUCCESS, f"{wpath}.successCondition"),
                self.expr(webhook.output or DEFAULT_OUTPUT, f"{wpath}.output", owner, response)
                or compile_expression(DEFAULT_OUTPUT, f"{wpath}.output"),
                webhook.timeout_seconds or deadline or WEBHOOK_TIMEOUT_SECONDS,
            )
            if deadline is None:
                deadline = (webhook.timeout_seconds or WEBHOOK_TIMEOUT_SECONDS) + (
                    WEBHOOK_GRACE_SECONDS
                )
        if approval is not None:
            message = (
                self.template(approval.message, f"{path}.approval.message", owner, extra)
                if approval.message
                else None
            )
            approval_plan = ApprovalPlan(approval, message)
        return ActionPlan(
            path=path,
            container=container_plan,
            webhook=webhook_plan,
            approval=approval_plan,
            retry=retry or (defaults.retry if defaults and defaults.retry else RetryPolicy()),
            timeout_seconds=deadline,
        )


def _resolve_deps(spec: WorkflowSpec) -> tuple[dict[str, tuple[str, ...]], list[FieldError]]:
    errors: list[FieldError] = []
    names = [s.name for s in spec.steps]
    known = set(names)
    deps: dict[str, tuple[str, ...]] = {}
    for i, step in enumerate(spec.steps):
        if step.depends_on is None:
            deps[step.name] = (names[i - 1],) if i > 0 else ()
            continue
        for j, dep in enumerate(step.depends_on):
            if dep not in known:
                errors.append(
                    FieldError(
                        f"spec.steps[{i}].dependsOn[{j}]",
                        f"unknown step {dep!r}; must be one of: {', '.join(names)}",
                    )
                )
            elif dep == step.name:
                errors.append(
                    FieldError(f"spec.steps[{i}].dependsOn[{j}]", "a step cannot depend on itself")
                )
        deps[step.name] = tuple(d for d in dict.fromkeys(step.depends_on) if d in known)
    return deps, errors


def _find_cycle(order: list[str], deps: dict[str, tuple[str, ...]]) -> list[str] | None:
    """Kahn's algorithm; on a cycle, walk it to name every step on it."""
    indegree = {n: len(deps[n]) for n in order}
    dependents: dict[str, list[str]] = {n: [] for n in order}
    for n in order:
        for d in deps[n]:
            dependents[d].append(n)
    queue = deque(n for n in order if indegree[n] == 0)
    seen = 0
    while queue:
        n = queue.popleft()
        seen += 1
        for m in dependents[n]:
            indegree[m] -= 1
            if indegree[m] == 0:
                queue.append(m)
    if seen == len(order):
        return None
    start = next(n for n in order if indegree[n] > 0)
    path: list[str] = []
    node = start
    while node not in path:
        path.append(node)
        node = next(d for d in deps[node] if indegree[d] > 0)
    return [*path[path.index(node) :], node]


def _check_references(
    compiler: _Compiler,
    deps: dict[str, tuple[str, ...]],
    all_steps: list[str],
    body_of: dict[str, list[str]],
) -> None:
    known_steps = set(all_steps)
    upstream: dict[str, set[str]] = {}  # computed only for owners whose expressions need it

    def ancestors_of(owner: str) -> set[str]:
        if owner not in upstream:
            seen: set[str] = set()
            stack = list(deps.get(owner, ()))
            while stack:
                node = stack.pop()
                if node not in seen:
                    seen.add(node)
                    stack.extend(deps[node])
            upstream[owner] = seen
        return upstream[owner]

    params = {p.name for p in compiler.spec.param_specs()}
    for expr, owner, extra in compiler.expressions:
        for name in sorted(expr.params.names - params):
            compiler.errors.append(
                FieldError(
                    expr.path,
                    f"unknown param {name!r} in {clip(expr.source)!r}; declared: "
                    f"{', '.join(sorted(params)) or 'none'}",
                )
            )
        unknown = expr.unknown_names() - extra
        scoped = {"item", "index", "iteration", "previous", "response"} - extra
        for name in sorted(unknown | (expr.variables & scoped)):
            compiler.errors.append(
                FieldError(
                    expr.path,
                    f"unknown name {name!r} in {clip(expr.source)!r}; in scope here: "
                    f"{', '.join(sorted({'params', 'steps', 'run'} | extra))}",
                )
            )
        for ref in sorted(expr.steps.names):
            loop_body = body_of.get(owner or "", [])
            if ref in loop_body:
                continue
            if ref not in known_steps:
                compiler.errors.append(
                    FieldError(
                        expr.path,
                        f"unknown step {ref!r} in {clip(expr.source)!r}; steps whose names "
                        """contain '-' are written steps["the-name"]""",
                    )
                )
            elif owner is not None and ref != owner and ref not in ancestors_of(owner):
                compiler.errors.append(
                    FieldError(
                        expr.path,
                        f"step {ref!r} is not upstream of step {owner!r}, so its outputs are "
                        f"not available; add it to dependsOn (directly or transitively)",
                    )
                )
        _trial(compiler, expr)


# Fan-outs with more items than this keep a summary instead of per-item detail in the run's
# status, and do not gather outputs.items (engine/scheduler.py).
COMPACT_ABOVE = 200


def _check_gathering(compiler: _Compiler, steps: list[Step]) -> None:
    """A literal fan-out over COMPACT_ABOVE items has no outputs.items to read."""
    large = [
        s.name
        for s in steps
        if s.fan_out is not None and len(s.fan_out.items or []) > COMPACT_ABOVE
    ]
    for name in large:
        pattern = re.compile(
            rf"steps(\.{re.escape(name)}|\[\s*['\"]{re.escape(name)}['\"]\s*\])\.outputs\.items\b"
        )
        for expr, _owner, _extra in compiler.expressions:
            if pattern.search(expr.source):
                compiler.errors.append(
                    FieldError(
                        expr.path,
                        f"{name} fans out over more than {COMPACT_ABOVE} items, so its outputs "
                        "carry succeeded/failed/total but not items; have the items write their "
                        "results somewhere a later step reads them",
                    )
                )


def _trial(compiler: _Compiler, expr: Expression) -> None:
    """Catch type errors that do not depend on run-time data: evaluate constant expressions."""
    if expr.variables:
        return
    try:
        expr.evaluate({})
    except ExpressionError as exc:
        compiler.errors.append(exc.field_error())


def compile_plan(spec: WorkflowSpec) -> Plan:
    """Validate and compile; raises InvalidSpecError with every problem found."""
    compiler = _Compiler(spec)
    errors = compiler.errors
    order = [s.name for s in spec.steps]
    seen: dict[str, int] = {}
    for i, step in enumerate(spec.steps):
        if step.name in seen:
            errors.append(
                FieldError(
                    f"spec.steps[{i}].name",
                    f"duplicate step name {step.name!r} (also spec.steps[{seen[step.name]}])",
                )
            )
        seen.setdefault(step.name, i)
        if step.name == BUDGET_GATE and spec.budget is not None:
            errors.append(
                FieldError(
                    f"spec.steps[{i}].name",
                    f"{BUDGET_GATE!r} is the name of the budget's approval gate "
                    "(approve.braid.dev/budget) when spec.budget is set; rename the step",
                )
            )
    param_names: list[str] = []
    for i, p in enumerate(spec.param_specs()):
        if p.name in param_names:
            errors.append(FieldError(f"spec.params[{i}].name", f"duplicate param {p.name!r}"))
        param_names.append(p.name)
    deps, dep_errors = _resolve_deps(spec)
    errors.extend(dep_errors)
    if len(seen) == len(order) and not dep_errors:
        cycle = _find_cycle(order, deps)
        if cycle:
            first = order.index(cycle[0])
            errors.append(
                FieldError(
                    f"spec.steps[{first}].dependsOn",
                    f"dependency cycle: {' -> '.join(cycle)}; a workflow must be acyclic "
                    "(use a loop step to repeat work)",
                )
            )
    if errors:
        raise InvalidSpecError(errors)

    dependents: dict[str, list[str]] = {n: [] for n in order}
    for n in order:
        for d in deps[n]:
            dependents[d].append(n)

    body_names: dict[str, str] = {}
    body_of: dict[str, list[str]] = {}
    steps: dict[str, StepPlan] = {}
    sla = spec.sla
    for i, step in enumerate(spec.steps):
        path = f"spec.steps[{i}]"
        when = compiler.expr(step.when, f"{path}.when", step.name) if step.when else None
        action = fan_plan = loop_plan = None
        if step.container or step.webhook or step.approval:
            action = compiler.action(
                path,
                step.name,
                step.container,
                step.webhook,
                step.approval,
                step.retry,
                step.timeout_seconds,
            )
            action = _shared(compiler, step, action, path)
        elif step.fan_out is not None:
            fan_plan = _fan_out(compiler, step, step.fan_out, path)
        elif step.loop is not None:
            loop_plan = _loop(compiler, step, step.loop, path, body_names, seen)
            for key, value in (
                ("concurrency", step.concurrency),
                ("circuitBreaker", step.circuit_breaker),
            ):
                if value is not None:
                    errors.append(
                        FieldError(f"{path}.{key}", "set it on the loop's body steps instead")
                    )
            body_of[step.name] = [b.name for b in step.loop.steps]
        compensation = None
        if step.compensation is not None:
            compensation = _action_of(
                compiler, step.compensation, f"{path}.compensation", step.name
            )
        step_sla = step.sla.max_duration_seconds if step.sla else None
        steps[step.name] = StepPlan(
            name=step.name,
            index=i,
            path=path,
            spec=step,
            deps=deps[step.name],
            when=when,
            action=action,
            fan_out=fan_plan,
            loop=loop_plan,
            compensation=compensation,
            sla_seconds=step_sla or (sla.step_max_duration_seconds if sla else None),
        )

    finally_steps: list[FinallyPlan] = []
    for i, fin in enumerate(spec.finally_ or []):
        path = f"spec.finally[{i}]"
        if fin.name in seen or fin.name in body_names:
            errors.append(FieldError(f"{path}.name", f"{fin.name!r} is already the name of a step"))
        finally_steps.append(FinallyPlan(fin.name, i, _action_of(compiler, fin, path, None)))
    outputs = {}
    for key, source in (spec.outputs or {}).items():
        compiled = compiler.expr(source, f"spec.outputs.{key}", None)
        if compiled is not None:
            outputs[key] = compiled

    _check_references(compiler, deps, order, body_of)
    _check_gathering(compiler, spec.steps)
    if errors:
        raise InvalidSpecError(errors)
    return Plan(
        spec=spec,
        steps=steps,
        order=order,
        dependents=dependents,
        finally_steps=finally_steps,
        outputs=outputs,
        param_names=frozenset(param_names),
        body_names=body_names,
        has_sla=spec.sla is not None or any(p.sla_seconds for p in steps.values()),
        breaker_keys=tuple(
            dict.fromkeys(a.breaker.key for a in _actions(steps) if a.breaker is not None)
        ),
        pools=any(a.concurrency is not None for a in _actions(steps)),
    )


def _actions(steps: dict[str, StepPlan]) -> list[ActionPlan]:
    """The actions of the steps, fan-outs and loop bodies (not compensation or finally)."""
    out: list[ActionPlan | None] = []
    for plan in steps.values():
        out += [plan.action, plan.fan_out.action if plan.fan_out else None]
        out += [b.action for b in plan.loop.body] if plan.loop else []
    return [a for a in out if a is not None]


def _action_of(
    compiler: _Compiler, action: StepAction | FinallyStep, path: str, owner: str | None
) -> ActionPlan:
    return compiler.action(
        path, owner, action.container, action.webhook, None, action.retry, action.timeout_seconds
    )


def _fan_out(compiler: _Compiler, step: Step, fan: FanOutSpec, path: str) -> FanOutPlan:
    fpath = f"{path}.fanOut"
    items_expr = None
    if fan.items_expression is not None:
        items_expr = compiler.expr(fan.items_expression, f"{fpath}.itemsExpression", step.name)
    elif fan.items is not None and len(fan.items) > fan.max_items:
        compiler.errors.append(
            FieldError(f"{fpath}.items", f"{len(fan.items)} items exceed maxItems {fan.max_items}")
        )
    action = compiler.action(
        fpath,
        step.name,
        fan.container,
        fan.webhook,
        None,
        step.retry,
        step.timeout_seconds,
        frozenset({"item", "index"}),
    )
    shared = _shared(compiler, step, action, path, step.name, frozenset({"item", "index"}))
    return FanOutPlan(fan, items_expr, shared)


def _loop(
    compiler: _Compiler,
    step: Step,
    loop: LoopSpec,
    path: str,
    body_names: dict[str, str],
    top_names: dict[str, int],
) -> LoopPlan:
    lpath = f"{path}.loop"
    scope = frozenset({"iteration", "previous"})
    body: list[BodyPlan] = []
    for j, sub in enumerate(loop.steps):
        spath = f"{lpath}.steps[{j}]"
        if sub.name in top_names or sub.name in body_names:
            compiler.errors.append(
                FieldError(f"{spath}.name", f"{sub.name!r} is already the name of a step")
            )
        body_names[sub.name] = step.name
        body.append(_body(compiler, step, sub, spath, j, scope))
    until = compiler.expr(loop.until, f"{lpath}.until", step.name, scope)
    if until is None:
        until = compile_expression("true", f"{lpath}.until")
    return LoopPlan(loop, tuple(body), until)


def _body(
    compiler: _Compiler, step: Step, sub: LoopStep, path: str, index: int, scope: frozenset[str]
) -> BodyPlan:
    when = compiler.expr(sub.when, f"{path}.when", step.name, scope) if sub.when else None
    action = compiler.action(
        path,
        step.name,
        sub.container,
        sub.webhook,
        sub.approval,
        sub.retry or step.retry,
        sub.timeout_seconds or step.timeout_seconds,
        scope,
    )
    return BodyPlan(sub.name, index, when, _shared(compiler, sub, action, path, step.name, scope))


def _shared(
    compiler: _Compiler,
    step: Step | LoopStep,
    action: ActionPlan,
    path: str,
    owner: str | None = None,
    extra: frozenset[str] = frozenset(),
) -> ActionPlan:
    """Attach the step's concurrency pool and circuit breaker (and its fallback)."""
    if step.concurrency is None and step.circuit_breaker is None:
        return action
    if action.approval is not None:
        name = "concurrency" if step.concurrency is not None else "circuitBreaker"
        compiler.errors.append(
            FieldError(f"{path}.{name}", "only container, webhook and fan-out steps hold slots")
        )
        return action
    fallback = None
    breaker = step.circuit_breaker
    if breaker is not None and breaker.fallback is not None:
        spec = breaker.fallback
        fallback = compiler.action(
            f"{path}.circuitBreaker.fallback",
            owner or step.name,
            spec.container,
            spec.webhook,
            None,
            spec.retry,
            spec.timeout_seconds or action.timeout_seconds,
            extra,
        )
        fallback = replace(fallback, concurrency=step.concurrency)
    return replace(action, concurrency=step.concurrency, breaker=breaker, fallback=fallback)


@lru_cache(maxsize=256)
def _cached(spec_json: str) -> Plan:
    return compile_plan(WorkflowSpec.model_validate_json(spec_json))


def plan_for(spec: WorkflowSpec) -> Plan:
    """Compile with a cache keyed by the spec's content; runs of one workflow share a plan."""
    return _cached(json.dumps(spec.wire(), sort_keys=True))

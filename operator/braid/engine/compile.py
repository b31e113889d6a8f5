"""The compiler: a workflow spec into a frozen Plan, every expression compiled once.

``compile_plan`` is also the validator: ``braid lint``, the local runner and the operator all
reject the same workflows with the same field-path messages, every problem at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from braid.api.errors import FieldError, InvalidSpecError, from_validation_error
from braid.api.workflow import (
    BUDGET_GATE,
    ApprovalSpec,
    CacheSpec,
    ContainerSpec,
    FanOutCase,
    FanOutSpec,
    FinallyStep,
    LLMSpec,
    LoopSpec,
    LoopStep,
    RetryPolicy,
    RouteCandidate,
    RoutingStrategy,
    SecretValue,
    SleepSpec,
    Step,
    StepAction,
    SubWorkflowSpec,
    WebhookSpec,
    WorkflowSpec,
)
from braid.engine import artifacts, checks, children, dag
from braid.engine.checks import Scoped
from braid.engine.plan import (
    WEBHOOK_TIMEOUT_SECONDS,
    ActionPlan,
    ApprovalPlan,
    BodyPlan,
    CachePlan,
    CandidatePlan,
    CasePlan,
    ChildPlan,
    ContainerPlan,
    FanOutPlan,
    FinallyPlan,
    LoopPlan,
    Plan,
    RoutePlan,
    SleepPlan,
    StepPlan,
    WebhookPlan,
)
from braid.expressions import (
    Expression,
    ExpressionError,
    Template,
    ValueTemplate,
    compile_expression,
    compile_template,
    compile_value_template,
)

DEFAULT_SUCCESS = "response.status >= 200 && response.status < 300"
DEFAULT_OUTPUT = "{'status': response.status, 'body': response.body}"
# A webhook attempt without a step timeout still has a deadline: its call's timeout and this
# much more, after which an attempt whose call was lost (an operator restart) is retried.
WEBHOOK_GRACE_SECONDS = 10
ITEM_SCOPE = frozenset({"item", "index"})
LOOP_SCOPE = frozenset({"iteration", "previous", "iterations"})
RETRY_SCOPE = frozenset({"lastRetry"})


class _Compiler:
    """Compiles expressions and actions, collecting every problem instead of stopping at the
    first, and every expression with where it stands (for the checks)."""

    def __init__(self, spec: WorkflowSpec) -> None:
        self.spec = spec
        self.errors: list[FieldError] = []
        self.expressions: list[Scoped] = []
        self.reads: frozenset[str] = frozenset()  # steps readable besides upstream ones

    @contextmanager
    def reading(self, names: frozenset[str]) -> Iterator[None]:
        """Expressions compiled inside may also read these steps (a compensation its own
        step, a finally step the finally steps before it)."""
        before, self.reads = self.reads, names
        try:
            yield
        finally:
            self.reads = before

    def expr(
        self, source: str, path: str, owner: str | None, extra: frozenset[str] = frozenset()
    ) -> Expression | None:
        try:
            compiled = compile_expression(source, path)
        except ExpressionError as exc:
            self.errors.append(exc.field_error())
            return None
        self.expressions.append(Scoped(compiled, owner, extra, self.reads))
        return compiled

    def template(
        self, source: str, path: str, owner: str | None, extra: frozenset[str] = frozenset()
    ) -> Template:
        try:
            compiled = compile_template(source, path)
        except ExpressionError as exc:
            self.errors.append(exc.field_error())
            return Template(source, path, (source,))
        self.expressions += [Scoped(e, owner, extra, self.reads) for e in compiled.expressions]
        return compiled

    def value_template(
        self, value: Any, path: str, owner: str | None, extra: frozenset[str]
    ) -> ValueTemplate:
        try:
            compiled = compile_value_template(value, path)
        except ExpressionError as exc:
            self.errors.append(exc.field_error())
            return ValueTemplate(value, {})
        self.expressions += [Scoped(e, owner, extra, self.reads) for e in compiled.expressions]
        return compiled

    def secret_leaves(self, value: Any, path: str) -> Any:
        """A webhook body with its {valueFrom: {secretKeyRef: ...}} leaves as SecretValues:
        only what the spec says literally can name a Secret, never a value a run computes."""
        if isinstance(value, list):
            return [self.secret_leaves(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if not isinstance(value, dict):
            return value
        if set(value) == {"valueFrom"}:
            try:
                return SecretValue.model_validate(value)
            except ValidationError as exc:
                self.errors += from_validation_error(exc, path).errors
                return value
        return {k: self.secret_leaves(v, f"{path}.{k}") for k, v in value.items()}

    def action(self, path: str, owner: str | None, what: _What) -> ActionPlan:
        defaults = self.spec.defaults
        deadline = what.timeout or (defaults.timeout_seconds if defaults else None)
        webhook = None
        hook = what.llm.as_webhook() if what.llm is not None else what.webhook
        if hook is not None:
            where = f"{path}.llm" if what.llm is not None else f"{path}.webhook"
            webhook = self.webhook(where, owner, hook, what.extra, deadline, what.llm)
            if deadline is None:
                deadline = (hook.timeout_seconds or WEBHOOK_TIMEOUT_SECONDS) + WEBHOOK_GRACE_SECONDS
        approval = None
        if what.approval is not None:
            message = what.approval.message
            approval = ApprovalPlan(
                what.approval,
                self.template(message, f"{path}.approval.message", owner, what.extra)
                if message
                else None,
            )
        retry = what.retry or (defaults.retry if defaults and defaults.retry else RetryPolicy())
        retry_expression = None
        if retry.expression is not None:
            where = f"{path}.retry.expression" if what.retry else "spec.defaults.retry.expression"
            retry_expression = self.expr(retry.expression, where, owner, what.extra | RETRY_SCOPE)
        routed = what.llm or what.webhook
        routes = None
        if routed is not None:
            where = f"{path}.llm" if what.llm is not None else f"{path}.webhook"
            routes = self.routes(where, owner, routed, what.extra)
        return ActionPlan(
            path=path,
            container=self.container(f"{path}.container", owner, what.container, what.extra)
            if what.container is not None
            else None,
            webhook=webhook,
            approval=approval,
            retry=retry,
            timeout_seconds=deadline,
            retry_expression=retry_expression,
            routes=routes,
            sleep=SleepPlan(
                what.sleep,
                self.template(what.sleep.until, f"{path}.sleep.until", owner, what.extra)
                if what.sleep.until is not None
                else None,
            )
            if what.sleep is not None
            else None,
            cache=self.cache(path, owner, what),
            child=self.child(f"{path}.workflow", owner, what.workflow, what.extra)
            if what.workflow is not None
            else None,
        )

    def child(
        self, path: str, owner: str | None, spec: SubWorkflowSpec, extra: frozenset[str]
    ) -> ChildPlan:
        """A sub-workflow: its params as templates; an inline spec validated (and compiled)
        here, its errors named under ``path``.spec."""
        params = self.value_template(spec.params or {}, f"{path}.params", owner, extra)
        inline = None
        if spec.spec is not None:
            inline, errors = children.inline_spec(spec.spec, f"{path}.spec")
            if inline is not None:
                try:
                    compile_plan(inline)
                except InvalidSpecError as exc:
                    errors = children.nested_errors(exc.errors, f"{path}.spec")
            self.errors += errors
        return ChildPlan(spec, params, inline)

    def cache(self, path: str, owner: str | None, what: _What) -> CachePlan | None:
        if what.cache is None:
            return None
        if what.approval is not None or what.sleep is not None or what.workflow is not None:
            self.errors.append(
                FieldError(f"{path}.cache", "only container, webhook and llm steps are cached")
            )
            return None
        key = self.expr(what.cache.key, f"{path}.cache.key", owner, what.extra)
        return CachePlan(what.cache, key) if key is not None else None

    def routes(
        self, path: str, owner: str | None, spec: LLMSpec | WebhookSpec, extra: frozenset[str]
    ) -> RoutePlan | None:
        """The candidates of a routed call; each names only the fields of its kind."""
        if not spec.candidates:
            if spec.routing is not None:
                self.errors.append(FieldError(f"{path}.routing", "routing needs candidates"))
            return None
        if spec.routing is None:
            self.errors.append(
                FieldError(
                    f"{path}.routing",
                    "required with candidates: routing.key (the statistics every run "
                    "routing with it shares) and a strategy",
                )
            )
            return None
        names = [c.name for c in spec.candidates]
        plans = []
        for i, c in enumerate(spec.candidates):
            cpath = f"{path}.candidates[{i}]"
            if c.name in names[:i]:
                self.errors.append(FieldError(f"{cpath}.name", f"duplicate candidate {c.name!r}"))
            plans.append(self.candidate(cpath, owner, c, isinstance(spec, LLMSpec), extra))
        if spec.routing.strategy == RoutingStrategy.CHEAPEST and not any(p.priced for p in plans):
            self.errors.append(
                FieldError(
                    f"{path}.routing.strategy",
                    "Cheapest needs costs: set costPerInputToken/costPerOutputToken (llm) or "
                    "costPerCall on the candidates",
                )
            )
        return RoutePlan(spec.routing, tuple(plans))

    def candidate(
        self, path: str, owner: str | None, c: RouteCandidate, llm: bool, extra: frozenset[str]
    ) -> CandidatePlan:
        """An llm candidate names endpoint, model and token costs; a webhook one a url."""
        given = {
            "endpoint": c.endpoint,
            "model": c.model,
            "url": c.url,
            "costPerInputToken": c.cost_per_input_token,
            "costPerOutputToken": c.cost_per_output_token,
        }
        foreign = ("url",) if llm else tuple(k for k in given if k != "url")
        for name in foreign:
            if given[name] is not None:
                says = (
                    "an llm candidate sets endpoint, model and token costs, not url"
                    if llm
                    else "a webhook candidate sets url and costPerCall only"
                )
                self.errors.append(FieldError(f"{path}.{name}", says))
        url = None
        if llm and c.endpoint is not None:
            base = c.endpoint.base_url.removesuffix("/") + "/chat/completions"
            url = self.template(base, f"{path}.endpoint.baseURL", owner, extra)
        elif not llm and c.url:
            url = self.template(c.url, f"{path}.url", owner, extra)
        elif not llm:
            self.errors.append(FieldError(f"{path}.url", "a webhook candidate needs a url"))
        return CandidatePlan(
            c.name,
            url,
            self.template(c.model, f"{path}.model", owner, extra) if c.model else None,
            c.endpoint is not None,
            c.endpoint.api_key if c.endpoint else None,
            c.cost_per_input_token or 0.0,
            c.cost_per_output_token or 0.0,
            c.cost_per_call or 0.0,
        )

    def container(
        self, path: str, owner: str | None, spec: ContainerSpec, extra: frozenset[str]
    ) -> ContainerPlan:
        max_bytes, max_files = artifacts.limits(spec, self.spec.artifact_limits)
        inputs = tuple(
            (e, a.path)
            for i, a in enumerate((spec.inputs.artifacts or []) if spec.inputs else [])
            if (e := self.expr(a.from_, f"{path}.inputs.artifacts[{i}].from", owner, extra))
        )
        return ContainerPlan(
            spec,
            self.template(spec.image, f"{path}.image", owner, extra),
            tuple(
                self.template(c, f"{path}.command[{i}]", owner, extra)
                for i, c in enumerate(spec.command or [])
            ),
            tuple(
                self.template(a, f"{path}.args[{i}]", owner, extra)
                for i, a in enumerate(spec.args or [])
            ),
            tuple(
                (e.name, self.template(e.value or "", f"{path}.env[{i}].value", owner, extra))
                for i, e in enumerate(spec.env or [])
                if e.value_from is None
            ),
            tuple(e for e in spec.env or [] if e.value_from is not None),
            inputs,
            max_bytes,
            max_files,
        )

    def webhook(
        self,
        path: str,
        owner: str | None,
        spec: WebhookSpec,
        extra: frozenset[str],
        deadline: int | None,
        llm: LLMSpec | None = None,
    ) -> WebhookPlan:
        response = extra | {"response"}
        success = spec.success_condition or DEFAULT_SUCCESS
        output = spec.output or DEFAULT_OUTPUT
        url = spec.url
        if isinstance(url, str) and not url.strip():
            self.errors.append(FieldError(f"{path}.url", "must not be empty"))
        # An llm step names its own fields in errors (endpoint.baseURL, model, messages).
        url_path = f"{path}.endpoint.baseURL" if llm else f"{path}.url"
        body_path = path if llm else f"{path}.body"
        return WebhookPlan(
            spec,
            self.template(url, url_path, owner, extra) if isinstance(url, str) else url,
            tuple(
                (k, self.template(v, f"{path}.headers.{k}", owner, extra))
                if isinstance(v, str)
                else (k, v)
                for k, v in (spec.headers or {}).items()
            ),
            self.value_template(self.secret_leaves(spec.body, body_path), body_path, owner, extra),
            self.expr(success, f"{path}.successCondition", owner, response)
            or compile_expression(DEFAULT_SUCCESS, f"{path}.successCondition"),
            self.expr(output, f"{path}.output", owner, response)
            or compile_expression(DEFAULT_OUTPUT, f"{path}.output"),
            spec.timeout_seconds or deadline or WEBHOOK_TIMEOUT_SECONDS,
            llm,
        )


@dataclass(frozen=True)
class _What:
    """What one action runs, as a spec says it."""

    container: ContainerSpec | None = None
    webhook: WebhookSpec | None = None
    llm: LLMSpec | None = None  # runs as the webhook it is, judged as a model reply
    approval: ApprovalSpec | None = None
    sleep: SleepSpec | None = None
    workflow: SubWorkflowSpec | None = None
    cache: CacheSpec | None = None
    retry: RetryPolicy | None = None
    timeout: int | None = None
    extra: frozenset[str] = frozenset()

    @classmethod
    def of(cls, action: StepAction | FinallyStep | Step | LoopStep, **kw: Any) -> _What:
        llm = action.llm if isinstance(action, Step | LoopStep) else None
        fields: dict[str, Any] = {
            "container": action.container,
            "webhook": action.webhook,
            "llm": llm,
            "approval": action.approval if isinstance(action, Step | LoopStep) else None,
            "sleep": action.sleep if isinstance(action, Step | LoopStep) else None,
            "workflow": action.workflow if isinstance(action, Step | LoopStep) else None,
            "cache": action.cache if isinstance(action, Step | LoopStep) else None,
            "retry": action.retry,
            "timeout": action.timeout_seconds,
        }
        return cls(**{**fields, **kw})


def compile_plan(spec: WorkflowSpec) -> Plan:
    """Validate and compile; raises InvalidSpecError with every problem found."""
    compiler = _Compiler(spec)
    errors = compiler.errors
    positions = _names(spec, errors)
    param_names = _params(spec, errors)
    graph, dep_errors = dag.build(spec)
    errors += dep_errors
    if errors:
        raise InvalidSpecError(errors)
    body_names: dict[str, str] = {}
    steps = {
        step.name: _step(compiler, step, i, graph, body_names, positions)
        for i, step in enumerate(spec.steps)
    }
    finally_steps = _finally(compiler, spec.finally_ or [], positions, body_names)
    outputs = {}
    for key, source in (spec.outputs or {}).items():
        compiled = compiler.expr(source, f"spec.outputs.{key}", None)
        if compiled is not None:
            outputs[key] = compiled
    body_of = {n: [b.name for b in p.loop.body] for n, p in steps.items() if p.loop}
    found = compiler.expressions
    errors += checks.expression_errors(found, frozenset(param_names), graph, body_of)
    errors += checks.gathering(found, spec.steps)
    if errors:
        raise InvalidSpecError(errors)
    whens = {s.name: s.when for s in spec.steps if s.when}
    warnings = checks.unguarded_reads(found, _conditional(spec, graph), whens)
    actions = _actions(steps)
    return Plan(
        spec=spec,
        steps=steps,
        graph=graph,
        finally_steps=finally_steps,
        outputs=outputs,
        param_names=frozenset(param_names),
        body_names=body_names,
        has_sla=spec.sla is not None or any(p.sla_seconds for p in steps.values()),
        breaker_keys=_breaker_keys(actions),
        pools=any(a.concurrency is not None for a in actions),
        cached=any(a.cache is not None for a in actions),
        has_children=any(a.child is not None for a in actions),
        max_run_artifact_bytes=artifacts.run_limit(spec.artifact_limits),
        warnings=tuple(warnings),
    )


def _breaker_keys(actions: list[ActionPlan]) -> tuple[str, ...]:
    """The breakers the run's status shows: the steps' own, and each routed candidate's."""
    keys = [a.breaker.key for a in actions if a.breaker]
    keys += [a.routes.breaker_key(c.name) for a in actions if a.routes for c in a.routes.candidates]
    return tuple(dict.fromkeys(keys))


def _conditional(spec: WorkflowSpec, graph: dag.Graph) -> dict[str, str]:
    """Steps that may end without outputs while the run goes on, and why."""
    out: dict[str, str] = {}
    by_name = {s.name: s for s in spec.steps}
    for step in (by_name[n] for n in dag.topological(graph)[0]):
        deps = graph.deps[step.name]
        if step.when:
            out[step.name] = "runs only when its `when` holds"
        elif step.continue_on and step.continue_on.failed:
            out[step.name] = "may fail while the run goes on (continueOn.failed)"
        elif len(deps) == 1 and deps[0] in out:
            out[step.name] = f"is skipped when {deps[0]} is"
    return out


def _finally(
    compiler: _Compiler,
    steps: list[FinallyStep],
    positions: dict[str, int],
    body_names: dict[str, str],
) -> list[FinallyPlan]:
    """Finally steps with their conditions and their order among themselves (no default
    order: without dependsOn they start together)."""
    errors = compiler.errors
    names = [f.name for f in steps]
    for i, fin in enumerate(steps):
        path = f"spec.finally[{i}]"
        if fin.name in positions or fin.name in body_names:
            errors.append(FieldError(f"{path}.name", f"{fin.name!r} is already the name of a step"))
        if fin.name in names[:i]:
            errors.append(FieldError(f"{path}.name", f"duplicate finally step {fin.name!r}"))
        for j, dep in enumerate(fin.depends_on or []):
            if dep not in names or dep == fin.name:
                what = "itself" if dep == fin.name else f"{dep!r}, not a finally step"
                errors.append(
                    FieldError(
                        f"{path}.dependsOn[{j}]",
                        f"a finally step depends only on other finally steps, not {what}; "
                        f"finally steps: {', '.join(names)}",
                    )
                )
    graph = dag.of(names, {f.name: [d for d in f.depends_on or [] if d in names] for f in steps})
    cycle = dag.find_cycle(graph) if len(set(names)) == len(names) else None
    if cycle:
        errors.append(
            FieldError(
                f"spec.finally[{names.index(cycle[0])}].dependsOn",
                f"dependency cycle: {' -> '.join(cycle)}",
            )
        )
    plans = []
    for i, fin in enumerate(steps):
        path = f"spec.finally[{i}]"
        before = frozenset(dag.upstream(graph, fin.name)) if not cycle else frozenset()
        with compiler.reading(before):
            when = compiler.expr(fin.when, f"{path}.when", None) if fin.when else None
            action = compiler.action(path, None, _What.of(fin))
        plans.append(FinallyPlan(fin.name, i, action, when, graph.deps[fin.name]))
    return plans


def _names(spec: WorkflowSpec, errors: list[FieldError]) -> dict[str, int]:
    """Each step name's position; duplicates and the budget gate's name are errors."""
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
    return seen


def _params(spec: WorkflowSpec, errors: list[FieldError]) -> list[str]:
    names: list[str] = []
    for i, p in enumerate(spec.param_specs()):
        if p.name in names:
            errors.append(FieldError(f"spec.params[{i}].name", f"duplicate param {p.name!r}"))
        names.append(p.name)
    return names


def _step(
    compiler: _Compiler,
    step: Step,
    i: int,
    graph: dag.Graph,
    body_names: dict[str, str],
    positions: dict[str, int],
) -> StepPlan:
    path = f"spec.steps[{i}]"
    when = compiler.expr(step.when, f"{path}.when", step.name) if step.when else None
    action = fan_plan = loop_plan = None
    if step.container or step.webhook or step.llm or step.approval or step.sleep or step.workflow:
        action = _shared(compiler, step, compiler.action(path, step.name, _What.of(step)), path)
    elif step.fan_out is not None:
        fan_plan = _fan_out(compiler, step, step.fan_out, path)
    elif step.loop is not None:
        loop_plan = _loop(compiler, step, step.loop, path, body_names, positions)
        for key, value in (
            ("concurrency", step.concurrency),
            ("circuitBreaker", step.circuit_breaker),
            ("cache", step.cache),
        ):
            if value is not None:
                compiler.errors.append(
                    FieldError(f"{path}.{key}", "set it on the loop's body steps instead")
                )
    compensation = None
    if step.compensation is not None:
        with compiler.reading(frozenset({step.name})):  # it undoes what its step did
            compensation = compiler.action(
                f"{path}.compensation", step.name, _What.of(step.compensation)
            )
    sla = compiler.spec.sla
    step_sla = step.sla.max_duration_seconds if step.sla else None
    return StepPlan(
        name=step.name,
        index=i,
        path=path,
        spec=step,
        deps=graph.deps[step.name],
        when=when,
        action=action,
        fan_out=fan_plan,
        loop=loop_plan,
        compensation=compensation,
        sla_seconds=step_sla or (sla.step_max_duration_seconds if sla else None),
    )


def _actions(steps: dict[str, StepPlan]) -> list[ActionPlan]:
    """The actions of the steps, fan-outs and loop bodies (not compensation or finally)."""
    out: list[ActionPlan | None] = []
    for plan in steps.values():
        fans = [plan.fan_out] if plan.fan_out else []
        out.append(plan.action)
        if plan.loop:
            out += [b.action for b in plan.loop.body]
            fans += [b.fan_out for b in plan.loop.body if b.fan_out]
        for fan in fans:
            out += [c.action for c in fan.cases] if fan.cases else [fan.action]
    return [a for a in out if a is not None]


def _fan_out(
    compiler: _Compiler,
    step: Step | LoopStep,
    fan: FanOutSpec,
    path: str,
    loop: Step | None = None,
) -> FanOutPlan:
    """A fan-out step's, or (``loop``) a loop body step's: items see the body's scope too."""
    fpath = f"{path}.fanOut"
    owner = loop.name if loop is not None else step.name
    extra = ITEM_SCOPE | LOOP_SCOPE if loop is not None else ITEM_SCOPE
    items_expr = items_from = None
    if fan.items_from is not None:
        if loop is not None:
            compiler.errors.append(
                FieldError(
                    f"{fpath}.itemsFrom",
                    "a loop body fans out over items or itemsExpression, not itemsFrom",
                )
            )
        items_from = compiler.expr(fan.items_from, f"{fpath}.itemsFrom", owner, extra)
    if fan.items_expression is not None:
        items_expr = compiler.expr(fan.items_expression, f"{fpath}.itemsExpression", owner, extra)
    elif fan.items is not None and len(fan.items) > fan.max_items:
        compiler.errors.append(
            FieldError(f"{fpath}.items", f"{len(fan.items)} items exceed maxItems {fan.max_items}")
        )
    retry = step.retry or (loop.retry if loop is not None else None)
    timeout = step.timeout_seconds or (loop.timeout_seconds if loop is not None else None)

    def action(where: str, what: FanOutSpec | FanOutCase) -> ActionPlan:
        spec = _What(
            container=what.container,
            webhook=what.webhook,
            llm=what.llm,
            workflow=what.workflow,
            retry=retry,
            timeout=timeout,
            extra=extra,
            cache=step.cache,
        )
        return _shared(compiler, step, compiler.action(where, owner, spec), path, owner, extra)

    cases = []
    for i, case in enumerate(fan.cases or []):
        cpath = f"{fpath}.cases[{i}]"
        if case.name in [c.name for c in (fan.cases or [])[:i]]:
            compiler.errors.append(FieldError(f"{cpath}.name", f"duplicate case {case.name!r}"))
        when = compiler.expr(case.when, f"{cpath}.when", owner, extra)
        if when is not None:
            cases.append(CasePlan(case.name, when, action(cpath, case)))
    first = cases[0].action if cases else None
    return FanOutPlan(fan, items_expr, first or action(fpath, fan), items_from, tuple(cases))


def _loop(
    compiler: _Compiler,
    step: Step,
    loop: LoopSpec,
    path: str,
    body_names: dict[str, str],
    top_names: dict[str, int],
) -> LoopPlan:
    lpath = f"{path}.loop"
    body: list[BodyPlan] = []
    for j, sub in enumerate(loop.steps):
        spath = f"{lpath}.steps[{j}]"
        if sub.name in top_names or sub.name in body_names:
            compiler.errors.append(
                FieldError(f"{spath}.name", f"{sub.name!r} is already the name of a step")
            )
        body_names[sub.name] = step.name
        when = compiler.expr(sub.when, f"{spath}.when", step.name, LOOP_SCOPE) if sub.when else None
        fan = None
        if sub.fan_out is not None:
            fan = _fan_out(compiler, sub, sub.fan_out, spath, step)
            action = fan.action
        else:
            what = _What.of(
                sub,
                retry=sub.retry or step.retry,
                timeout=sub.timeout_seconds or step.timeout_seconds,
                extra=LOOP_SCOPE,
            )
            action = _shared(
                compiler, sub, compiler.action(spath, step.name, what), spath, step.name, LOOP_SCOPE
            )
        body.append(BodyPlan(sub.name, j, when, action, sub.continues_on_failure, fan))
    until = compiler.expr(loop.until, f"{lpath}.until", step.name, LOOP_SCOPE)
    if until is None:
        until = compile_expression("true", f"{lpath}.until")
    return LoopPlan(loop, tuple(body), until)


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
    if action.approval is not None or action.sleep is not None:
        name = "concurrency" if step.concurrency is not None else "circuitBreaker"
        compiler.errors.append(
            FieldError(f"{path}.{name}", "only container, webhook and fan-out steps hold slots")
        )
        return action
    fallback = None
    breaker = step.circuit_breaker
    if breaker is not None and breaker.fallback is not None:
        spec = breaker.fallback
        what = _What.of(spec, timeout=spec.timeout_seconds or action.timeout_seconds, extra=extra)
        fallback = compiler.action(f"{path}.circuitBreaker.fallback", owner or step.name, what)
        fallback = replace(fallback, concurrency=step.concurrency)
    return replace(action, concurrency=step.concurrency, breaker=breaker, fallback=fallback)


@lru_cache(maxsize=256)
def _cached(spec_json: str) -> Plan:
    return compile_plan(WorkflowSpec.model_validate_json(spec_json))


def plan_for(spec: WorkflowSpec) -> Plan:
    """Compile with a cache keyed by the spec's content; runs of one workflow share a plan."""
    return _cached(json.dumps(spec.wire(), sort_keys=True))

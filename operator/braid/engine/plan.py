"""A workflow compiled for execution: the frozen plan types. ``engine/compile.py`` builds them
(and validates: ``braid lint``, the local runner and the operator reject the same workflows
with the same field-path messages).

Purely data: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from braid.api.errors import FieldError
from braid.api.workflow import (
    ApprovalSpec,
    CacheSpec,
    CircuitBreakerSpec,
    ConcurrencySpec,
    ContainerSpec,
    EnvVar,
    FanOutSpec,
    LLMSpec,
    LoopSpec,
    RetryPolicy,
    RoutingSpec,
    SecretValue,
    SleepSpec,
    Step,
    SubWorkflowSpec,
    WebhookSpec,
    WorkflowSpec,
)
from braid.engine.dag import Graph
from braid.expressions import Expression, Template, ValueTemplate

WEBHOOK_TIMEOUT_SECONDS = 30
# Fan-outs with more items than this keep a summary instead of per-item detail in the run's
# status, and do not gather outputs.items (engine/fanout.py).
COMPACT_ABOVE = 200


@dataclass(frozen=True)
class ContainerPlan:
    spec: ContainerSpec
    image: Template
    command: tuple[Template, ...]
    args: tuple[Template, ...]
    env: tuple[tuple[str, Template], ...]
    env_refs: tuple[EnvVar, ...] = ()  # valueFrom: passed on as they are
    inputs: tuple[tuple[Expression, str], ...] = ()  # (from, path) of each input artifact
    max_artifact_bytes: int = 1 << 30
    max_artifact_files: int = 100


@dataclass(frozen=True)
class WebhookPlan:
    spec: WebhookSpec
    url: Template | SecretValue
    headers: tuple[tuple[str, Template | SecretValue], ...]
    body: ValueTemplate
    success: Expression
    output: Expression
    timeout_seconds: float = WEBHOOK_TIMEOUT_SECONDS  # of the HTTP call
    llm: LLMSpec | None = None  # a model call: the reply is judged as one (engine/llm.py)


@dataclass(frozen=True)
class CandidatePlan:
    """One place a routed call may go; None fields keep the step's own."""

    name: str
    url: Template | None = None  # llm: <baseURL>/chat/completions
    model: Template | None = None
    endpoint: bool = False  # llm: the candidate names its endpoint (and so its key, or none)
    api_key: SecretValue | None = None
    cost_per_input_token: float = 0.0
    cost_per_output_token: float = 0.0
    cost_per_call: float = 0.0

    @property
    def priced(self) -> bool:
        return bool(self.cost_per_input_token or self.cost_per_output_token or self.cost_per_call)


@dataclass(frozen=True)
class RoutePlan:
    spec: RoutingSpec
    candidates: tuple[CandidatePlan, ...]

    def breaker_key(self, candidate: str) -> str:
        return f"{self.spec.key}/{candidate}"


@dataclass(frozen=True)
class CachePlan:
    spec: CacheSpec
    key: Expression


@dataclass(frozen=True)
class SleepPlan:
    spec: SleepSpec
    until: Template | None


@dataclass(frozen=True)
class ChildPlan:
    """A workflow step: the child run's workflow (by name, or the inline spec as validated)
    and its params."""

    spec: SubWorkflowSpec
    params: ValueTemplate
    inline: WorkflowSpec | None = None


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
    retry_expression: Expression | None = None  # retry.expression, over lastRetry
    routes: RoutePlan | None = None  # candidates: each attempt goes to one (engine/routing.py)
    sleep: SleepPlan | None = None  # waits, then succeeds (engine/timers.py)
    cache: CachePlan | None = None  # memoized by this key (engine/caching.py)
    child: ChildPlan | None = None  # a sub-workflow: a child run per attempt (engine/children.py)

    @property
    def kind(self) -> str:
        if self.container:
            return "container"
        if self.webhook:
            return "llm" if self.webhook.llm else "webhook"
        if self.child:
            return "workflow"
        return "sleep" if self.sleep else "approval"


@dataclass(frozen=True)
class BodyPlan:
    name: str
    index: int
    when: Expression | None
    action: ActionPlan  # a fan-out body step: its fan-out's action
    continues: bool = False  # continueOn.failed: its failure does not end the loop
    fan_out: FanOutPlan | None = None


@dataclass(frozen=True)
class LoopPlan:
    spec: LoopSpec
    body: tuple[BodyPlan, ...]
    until: Expression


@dataclass(frozen=True)
class CasePlan:
    name: str
    when: Expression
    action: ActionPlan


@dataclass(frozen=True)
class FanOutPlan:
    spec: FanOutSpec
    items_expression: Expression | None
    action: ActionPlan  # with cases: the first case's (the items' pool and breaker are shared)
    items_from: Expression | None = None  # an artifact holding the JSON list
    cases: tuple[CasePlan, ...] = ()  # each item runs the first case whose `when` holds


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
    when: Expression | None = None
    deps: tuple[str, ...] = ()  # finally steps that finish first


@dataclass
class Plan:
    spec: WorkflowSpec
    steps: dict[str, StepPlan]
    graph: Graph
    finally_steps: list[FinallyPlan]
    outputs: dict[str, Expression]
    param_names: frozenset[str]
    body_names: dict[str, str] = field(default_factory=dict)  # body step -> loop step
    has_sla: bool = False  # any run or step SLA target: decides whether SLABreached is shown
    breaker_keys: tuple[str, ...] = ()  # circuit breakers the steps go through, shown in status
    pools: bool = False  # some step holds a concurrency key
    cached: bool = False  # some step has a cache key
    has_children: bool = False  # some step runs a sub-workflow (a child run per attempt)
    max_run_artifact_bytes: int = 10 << 30
    warnings: tuple[FieldError, ...] = ()  # what lint warns about but runs anyway

    @property
    def order(self) -> tuple[str, ...]:
        """The steps in declaration order."""
        return self.graph.order

    @property
    def dependents(self) -> Mapping[str, tuple[str, ...]]:
        return self.graph.dependents

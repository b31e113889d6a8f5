"""One unit of execution (a step, a fan-out item, a loop body step, a compensation or finally
step): rendering its request from the plan and judging the result of an attempt."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from braid.api.reasons import FailureReason
from braid.api.run import Artifact, FannedStatus, ItemStatus, StepStatus, TaskStatus
from braid.engine import artifacts, children
from braid.engine.actions import (
    AttemptLabels,
    AttemptResult,
    ChildRunRequest,
    ContainerRequest,
    StartAttempt,
    WebhookRequest,
)
from braid.engine.llm import judge_reply
from braid.engine.outputs import MAX_OUTPUT_BYTES, depth_failure, parse_outputs
from braid.engine.plan import (
    ActionPlan,
    CandidatePlan,
    FanOutPlan,
    FinallyPlan,
    StepPlan,
    WebhookPlan,
)
from braid.expressions import Expression, ExpressionError, Template, type_name

Role = Literal["step", "item", "body", "compensation", "finally"]


@dataclass(eq=False)
class Task:
    """A live handle on one TaskStatus inside the run status, with what it needs to run."""

    status: TaskStatus
    action: ActionPlan
    role: Role
    step: str  # owning step (or finally step) name
    prefix: str  # attempt names are f"{prefix}-{attempt}"
    item: int | None = None
    iteration: int | None = None
    body: str | None = None
    scope: dict[str, Any] = field(default_factory=dict)  # item/index/iteration/previous

    @property
    def display(self) -> str:
        if self.role == "item" and self.body is not None:
            return f"{self.step}#{self.iteration}/{self.body}[{self.item}]"
        if self.role == "item":
            return f"{self.step}[{self.item}]"
        if self.role == "body":
            return f"{self.step}#{self.iteration}/{self.body}"
        if self.role == "compensation":
            return f"{self.step} (compensation)"
        return self.step

    @property
    def fan_key(self) -> str:
        """The fan-out an item belongs to: its step's, or a loop body step's in an iteration."""
        return self.step if self.body is None else f"{self.step}#{self.iteration}/{self.body}"

    @property
    def is_job(self) -> bool:
        container = self.action.container
        return container is not None and container.spec.run_as == "Job"

    @property
    def is_child(self) -> bool:
        return self.action.child is not None

    def attempt_name(self) -> str:
        return f"{self.prefix}-{self.status.attempts}"

    def labels(self) -> AttemptLabels:
        role: Literal["step", "compensation", "finally"] = (
            self.role if self.role in ("compensation", "finally") else "step"
        )
        return AttemptLabels(
            step=self.step,
            attempt=self.status.attempts,
            item=self.item,
            iteration=self.iteration,
            body_step=self.body,
            role=role,
        )


def step_task(run_name: str, plan: StepPlan, st: StepStatus) -> Task:
    assert plan.action is not None
    return Task(st, plan.action, "step", plan.name, f"{run_name}-{plan.name}")


@dataclass(frozen=True)
class Fan:
    """Where a fan-out's items belong: a fan-out step, or a loop body step in one iteration."""

    key: str  # as Task.fan_key
    step: str
    prefix: str  # an item's attempts are f"{prefix}--{index}-{attempt}"
    plan: FanOutPlan
    owner: FannedStatus
    body_task: Task | None = None  # the body step that fans out (its iteration's scope)

    @classmethod
    def of_step(cls, run_name: str, plan: StepPlan, st: FannedStatus) -> Fan:
        assert plan.fan_out is not None
        return cls(plan.name, plan.name, f"{run_name}-{plan.name}", plan.fan_out, st)

    @classmethod
    def of_body(cls, task: Task, plan: FanOutPlan) -> Fan:
        assert isinstance(task.status, FannedStatus)
        return cls(task.fan_key, task.step, task.prefix, plan, task.status, task)


def item_task(fan: Fan, item: ItemStatus, items: list[Any]) -> Task:
    """An item's task, with the fan-out's action (choosing among cases comes later)."""
    body = fan.body_task
    return Task(
        item,
        fan.plan.action,
        "item",
        fan.step,
        f"{fan.prefix}--{item.index}",
        item=item.index,
        iteration=body.iteration if body else None,
        body=body.body if body else None,
        scope={**(body.scope if body else {}), "item": items[item.index], "index": item.index},
    )


def compensation_task(run_name: str, plan: StepPlan, st: StepStatus) -> Task:
    assert plan.compensation is not None
    if st.compensation is None:
        st.compensation = TaskStatus()
    return Task(
        st.compensation,
        plan.compensation,
        "compensation",
        plan.name,
        f"{run_name}-{plan.name}--undo",
    )


def finally_task(run_name: str, plan: FinallyPlan, st: TaskStatus) -> Task:
    return Task(st, plan.action, "finally", plan.name, f"{run_name}-{plan.name}")


def expressions_of(action: ActionPlan) -> tuple[Expression, ...]:
    """Every expression an attempt of ``action`` evaluates (to build only what they read)."""
    out: list[Expression] = []
    if action.container:
        for t in (action.container.image, *action.container.command, *action.container.args):
            out.extend(t.expressions)
        for _, t in action.container.env:
            out.extend(t.expressions)
        out.extend(e for e, _ in action.container.inputs)
    if action.webhook:
        out.extend(_webhook_expressions(action.webhook))
    if action.approval and action.approval.message:
        out.extend(action.approval.message.expressions)
    if action.sleep and action.sleep.until:
        out.extend(action.sleep.until.expressions)
    if action.child:
        out.extend(action.child.params.expressions)
    return tuple(out)


def _webhook_expressions(w: WebhookPlan) -> list[Expression]:
    out = list(w.url.expressions) if isinstance(w.url, Template) else []
    out.extend(w.body.expressions)
    for _, header in w.headers:
        if isinstance(header, Template):
            out.extend(header.expressions)
    out.extend((w.success, w.output))
    return out


def _attempt_env(task: Task) -> dict[str, str]:
    """Where the attempt sits, for idempotency keys and logs; same locally and in a cluster."""
    env = {"BRAID_STEP": task.step, "BRAID_ATTEMPT": str(task.status.attempts)}
    if task.item is not None:
        env["BRAID_ITEM_INDEX"] = str(task.item)
    if task.iteration is not None:
        env["BRAID_ITERATION"] = str(task.iteration)
    return env


def render_request(
    task: Task,
    context: dict[str, Any],
    run_left: int = 1 << 62,
    candidate: CandidatePlan | None = None,
    child: ChildRunRequest | None = None,
) -> StartAttempt:
    """The attempt's request with every ${{ }} resolved; raises ExpressionError. ``run_left``:
    the artifact bytes the run has left; ``candidate``: where a routed call goes."""
    action = task.action
    container = webhook = None
    if action.container is not None:
        c = action.container
        image = c.image.render(context)
        if not image.strip() or any(ch.isspace() for ch in image):
            raise ExpressionError(
                c.image.path, c.image.source, f"renders to {image!r}, which is not an image name"
            )
        container = ContainerRequest(
            image=image,
            command=[t.render(context) for t in c.command],
            args=[t.render(context) for t in c.args],
            env={**_attempt_env(task), **{name: t.render(context) for name, t in c.env}},
            working_dir=c.spec.working_dir,
            resources=c.spec.resources.wire() if c.spec.resources else None,
            pod_template=c.spec.pod_template,
            env_refs=c.env_refs,
            env_from=tuple(c.spec.env_from or ()),
            inputs=artifacts.inputs(c.inputs, context),
            artifacts=artifacts.room(c.max_artifact_bytes, c.max_artifact_files, run_left),
            job=c.spec.run_as == "Job",
        )
    elif action.webhook is not None:
        w = action.webhook
        webhook = WebhookRequest(
            method=w.spec.method,
            url=w.url.render(context) if isinstance(w.url, Template) else w.url,
            headers={k: t.render(context) if isinstance(t, Template) else t for k, t in w.headers},
            body=w.body.render(context),
            timeout_seconds=w.timeout_seconds,
            model_call=w.llm is not None,
        )
        if candidate is not None:
            webhook = _routed(webhook, candidate, context)
    return StartAttempt(
        name=task.attempt_name(),
        labels=task.labels(),
        timeout_seconds=action.timeout_seconds,
        container=container,
        webhook=webhook,
        child=child,
        concurrency_key=action.concurrency.key if action.concurrency else None,
        candidate=candidate.name if candidate is not None else None,
    )


def _routed(request: WebhookRequest, c: CandidatePlan, context: dict[str, Any]) -> WebhookRequest:
    """The call sent to a routing candidate: its URL, model and key instead of the step's."""
    headers = dict(request.headers)
    if c.endpoint:  # its own endpoint: its own key, or none
        headers.pop("authorization", None)
        if c.api_key is not None:
            prefix = c.api_key.prefix or "Bearer "
            headers["authorization"] = c.api_key.model_copy(update={"prefix": prefix})
    body = request.body
    if c.model is not None and isinstance(body, dict):
        body = {**body, "model": c.model.render(context)}
    url = c.url.render(context) if c.url is not None else request.url
    return replace(request, url=url, headers=headers, body=body)


@dataclass(frozen=True)
class Verdict:
    """How an attempt ended, judged by the contract: outputs on success, a reason otherwise
    (with the outputs a failed container wrote, when they are valid)."""

    outputs: dict[str, Any] | None
    failure: FailureReason | None = None
    message: str | None = None
    exit_code: int | None = None
    artifacts: dict[str, Artifact] | None = None


def judge(task: Task, result: AttemptResult, context: dict[str, Any]) -> Verdict:
    if result.timed_out:
        return Verdict(
            None,
            FailureReason.TIMED_OUT,
            f"attempt exceeded timeoutSeconds={task.action.timeout_seconds}",
            result.exit_code,
        )
    if result.lost:
        return Verdict(None, FailureReason.POD_LOST, result.error or "the pod was lost")
    if result.conflict:
        return Verdict(None, FailureReason.POD_CONFLICT, result.error or "the pod is not ours")
    if result.error is not None:
        reason = FailureReason.START_FAILED
        if task.action.webhook is not None:
            model = task.action.webhook.llm is not None
            reason = FailureReason.MODEL_CALL_FAILED if model else FailureReason.WEBHOOK_FAILED
        return Verdict(None, reason, result.error, result.exit_code)
    return _judge_ended(task, result, context)


def _judge_ended(task: Task, result: AttemptResult, context: dict[str, Any]) -> Verdict:
    """An attempt that ran to its end, judged by its kind."""
    if task.action.webhook is not None:
        return _judge_webhook(task, result, context)
    if task.action.child is not None:
        if result.child is None:
            return Verdict(None, FailureReason.SUB_WORKFLOW_FAILED, "no outcome was recorded")
        outputs, failure, message = children.judge(result.name, result.child)
        return Verdict(outputs, failure, message, artifacts=result.child.artifacts)
    return replace(_judge_container(task, result), artifacts=result.artifacts)


def _judge_container(task: Task, result: AttemptResult) -> Verdict:
    if result.exit_code not in (0, None):
        detail = f": {result.message.strip()}" if result.message and result.message.strip() else ""
        # What the attempt wrote before it failed, when it is valid: failure branches read it.
        written = parse_outputs(result.output).outputs if result.output else None
        return Verdict(
            written,
            FailureReason.ERROR,
            f"exited with code {result.exit_code}{detail}",
            result.exit_code,
        )
    parsed = parse_outputs(result.output)
    container = task.action.container
    allowed = (
        artifacts.room(container.max_artifact_bytes, container.max_artifact_files, 1 << 62)
        if container is not None
        else None
    )
    refused = artifacts.judge(result, allowed)
    if refused is not None:
        return Verdict(parsed.outputs, refused[0], refused[1], result.exit_code)
    return Verdict(parsed.outputs, parsed.failure, parsed.message, result.exit_code)


def _judge_webhook(  # noqa: PLR0911 - a decision table: one return per outcome
    task: Task, result: AttemptResult, context: dict[str, Any]
) -> Verdict:
    webhook = task.action.webhook
    assert webhook is not None
    response = result.response
    if response is None:
        return Verdict(None, FailureReason.WEBHOOK_FAILED, "no response was recorded")
    if webhook.llm is not None:
        outputs, failure, message = judge_reply(
            webhook.llm, response.status, response.body, result.artifacts
        )
        return Verdict(outputs, failure, message, artifacts=result.artifacts)
    ctx = {
        **context,
        "response": {"status": response.status, "headers": response.headers, "body": response.body},
    }
    try:
        if not webhook.success.evaluate_bool(ctx):
            body = (
                json.dumps(response.body) if not isinstance(response.body, str) else response.body
            )
            return Verdict(
                None,
                FailureReason.WEBHOOK_FAILED,
                f"HTTP {response.status}: success condition {webhook.success.source!r} is false"
                f" (body: {body[:200]})",
            )
        outputs = webhook.output.evaluate(ctx)
    except ExpressionError as exc:
        return Verdict(None, FailureReason.EXPRESSION_ERROR, str(exc))
    if not isinstance(outputs, dict):
        return Verdict(
            None,
            FailureReason.OUTPUT_INVALID,
            f"{webhook.output.path}: must evaluate to a map, got {type_name(outputs)}",
        )
    deep = depth_failure(outputs, f"outputs ({webhook.output.path})")
    if deep is not None:
        return Verdict(None, deep.failure, deep.message)
    size = len(json.dumps(outputs).encode())
    if size > MAX_OUTPUT_BYTES:
        return Verdict(
            None,
            FailureReason.OUTPUT_TOO_LARGE,
            f"outputs are {size} bytes; the limit is {MAX_OUTPUT_BYTES} bytes; select what to "
            f"keep with {webhook.output.path}",
        )
    return Verdict(outputs)

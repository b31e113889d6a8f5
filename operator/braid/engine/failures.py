"""What a failure means, as decisions over facts: whether a failed step stops the run now,
lets it go on, or is held until the end; which steps a failure keeps from starting; whether a
failed attempt is retried. Pure: RunState applies the verdicts.

The rules, as in Argo's DAGs:

- ``continueOn.failed``: the failure is a branch; dependants run and read the failure.
- ``failFast: true`` (the default): nothing new starts; what is running, and its retries,
  finishes; then compensation and finally run and the run fails.
- ``failFast: false``: steps that do not depend on the failure keep starting; those that do
  are Skipped (UpstreamFailed); the run fails once everything has finished.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from braid.api.reasons import FailureReason, StepReason
from braid.api.run import StepPhase, StepStatus, TaskStatus
from braid.api.workflow import LoopStep, RetryPolicy, Step, WorkflowSpec
from braid.engine.backoff import is_retryable, retry_delay
from braid.engine.plan import ActionPlan
from braid.expressions import Expression, ExpressionError


def continues(step: Step | LoopStep) -> bool:
    """The step's failure is a branch, not the run's failure."""
    return step.continues_on_failure


Consequence = Literal["continue", "fail", "hold"]


def consequence(step: Step, spec: WorkflowSpec) -> Consequence:
    """What a step's (final) failure does to the run: nothing (continue), stops it now (fail),
    or fails it once everything else has finished (hold, failFast: false)."""
    if continues(step):
        return "continue"
    return "fail" if spec.fail_fast else "hold"


def blocking(
    deps: Sequence[str], steps: Mapping[str, StepStatus], goes_on: Callable[[str], bool]
) -> list[str]:
    """The dependencies whose failure keeps a step from running: failed without continueOn,
    or skipped because one of theirs failed."""

    def blocks(d: str) -> bool:
        st = steps[d]
        if st.phase == StepPhase.FAILED:
            return not goes_on(d)
        return st.phase == StepPhase.SKIPPED and st.reason == StepReason.UPSTREAM_FAILED

    return [d for d in deps if blocks(d)]


def routed_away(
    deps: Sequence[str], steps: Mapping[str, StepStatus], goes_on: Callable[[str], bool]
) -> tuple[StepReason, str] | None:
    """Why a ready step does not run because of its dependencies: one failed (and the run
    goes on: failFast false), or all of them were skipped."""
    blocked = blocking(deps, steps, goes_on)
    if blocked:
        return StepReason.UPSTREAM_FAILED, f"a dependency failed: {', '.join(blocked)}"
    if deps and all(steps[d].phase == StepPhase.SKIPPED for d in deps):
        return (
            StepReason.UPSTREAM_SKIPPED,
            f"all of its dependencies were skipped: {', '.join(deps)}",
        )
    return None


def run_failure_message(failed: Sequence[StepStatus]) -> str:
    """The run's message when held failures fail it at the end."""
    if len(failed) == 1:
        st = failed[0]
        return f"step {st.name} failed ({st.reason}): {st.message}"
    named = ", ".join(f"{s.name} ({s.reason})" for s in failed)
    return f"{len(failed)} steps failed: {named}"


@dataclass(frozen=True)
class RetryFacts:
    """The attempt that just failed, as retry.expression sees it (lastRetry)."""

    reason: FailureReason
    message: str
    exit_code: int | None
    outputs: dict[str, Any] | None
    attempt: int
    duration_seconds: float

    @classmethod
    def of(
        cls,
        reason: FailureReason,
        message: str,
        exit_code: int | None,
        outputs: dict[str, Any] | None,
        status: TaskStatus,
        now: datetime,
    ) -> RetryFacts:
        began = status.attempt_start_time or now
        took = (now - began).total_seconds()
        return cls(reason, message, exit_code, outputs, status.attempts, took)

    def wire(self) -> dict[str, Any]:
        return {
            "reason": self.reason.value,
            "message": self.message,
            "exitCode": self.exit_code,
            "outputs": self.outputs or {},
            "attempt": self.attempt,
            "durationSeconds": self.duration_seconds,
        }


def next_retry(
    action: ActionPlan,
    status: TaskStatus,
    attempt_name: str,
    facts: RetryFacts,
    now: datetime,
    context: Callable[[], dict[str, Any]],
) -> tuple[datetime, float] | str:
    """When to retry the failed attempt and after what delay; or why it is not retried."""
    delay = retry_delay(action.retry.backoff, facts.attempt, attempt_name)
    at = now + timedelta(seconds=delay)
    refused = retry_refusal(action.retry, action.retry_expression, facts, status, at, context)
    return (at, delay) if refused is None else refused


def retry_refusal(
    policy: RetryPolicy,
    expression: Expression | None,
    facts: RetryFacts,
    status: TaskStatus,
    retry_at: datetime,
    context: Callable[[], dict[str, Any]],
) -> str | None:
    """Why the failed attempt is not retried (None: retry it at ``retry_at``). The empty
    string: not retried for the plain reason that the policy does not cover it."""
    if facts.attempt > policy.limit or not is_retryable(policy, facts.reason, facts.exit_code):
        return ""
    if policy.max_duration_seconds is not None and status.start_time is not None:
        end = status.start_time + timedelta(seconds=policy.max_duration_seconds)
        if retry_at > end:
            return f"not retried: retry.maxDurationSeconds={policy.max_duration_seconds} is spent"
    if expression is None:
        return None
    try:
        again = expression.evaluate_bool({**context(), "lastRetry": facts.wire()})
    except ExpressionError as exc:
        return f"not retried: {exc}"
    return None if again else f"not retried: retry.expression {expression.source!r} is false"

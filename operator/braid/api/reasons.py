"""The status vocabulary, defined once: condition types, the CamelCase reasons of runs, steps,
attempts and Events, and the annotation keys people write. Everything that sets or branches on
one of these names imports it from here.

Purely declarative.
"""

from __future__ import annotations

from enum import StrEnum


class ConditionType(StrEnum):
    SUCCEEDED = "Succeeded"
    APPROVAL_PENDING = "ApprovalPending"
    SLA_BREACHED = "SLABreached"


class RunReason(StrEnum):
    """Reasons of the Succeeded condition: Unknown while going on, then True or False."""

    RUNNING = "Running"
    QUEUED = "Queued"
    AWAITING_APPROVAL = "AwaitingApproval"
    SUCCEEDED = "Succeeded"
    STEP_FAILED = "StepFailed"
    TIMED_OUT = "TimedOut"
    CANCELLED = "Cancelled"
    FINALLY_FAILED = "FinallyFailed"
    OUTPUTS_ERROR = "OutputsError"
    BUDGET_EXCEEDED = "BudgetExceeded"
    BUDGET_REJECTED = "BudgetRejected"
    STATUS_TOO_LARGE = "StatusTooLarge"
    INVALID_SPEC = "InvalidSpec"

    @property
    def in_progress(self) -> bool:
        """An Unknown condition with this reason means "going on normally", not "failing"."""
        return self in (RunReason.RUNNING, RunReason.QUEUED, RunReason.AWAITING_APPROVAL)


class ApprovalReason(StrEnum):
    """Reasons of the ApprovalPending condition."""

    AWAITING_APPROVAL = "AwaitingApproval"
    # Nobody checked who wrote the annotations: the admission policy is not enforced.
    AWAITING_UNVERIFIED_APPROVAL = "AwaitingUnverifiedApproval"
    NO_APPROVAL_PENDING = "NoApprovalPending"


class SLAReason(StrEnum):
    """Reasons of the SLABreached condition."""

    WITHIN_SLA = "WithinSLA"
    RUN_DEADLINE_EXCEEDED = "RunDeadlineExceeded"
    STEP_DEADLINE_EXCEEDED = "StepDeadlineExceeded"


class FailureReason(StrEnum):
    """Why one attempt failed; used to classify failures as retryable."""

    ERROR = "Error"
    TIMED_OUT = "TimedOut"
    OUTPUT_INVALID = "OutputInvalid"
    OUTPUT_TOO_LARGE = "OutputTooLarge"
    ARTIFACT_TOO_LARGE = "ArtifactTooLarge"
    # A model call: the API refused or failed (after its own retries of 429/5xx), or its
    # reply was not what the step asked for (no choices, invalid tool calls, responseSchema).
    MODEL_CALL_FAILED = "ModelCallFailed"
    INVALID_RESPONSE = "InvalidResponse"
    # Input artifacts could not be fetched, or output artifacts could not be stored.
    ARTIFACT_FAILED = "ArtifactFailed"
    WEBHOOK_FAILED = "WebhookFailed"
    EXPRESSION_ERROR = "ExpressionError"
    # A fan-out item that none of the fan-out's cases runs (e.g. a tool the model made up).
    NO_CASE_MATCHED = "NoCaseMatched"
    START_FAILED = "StartFailed"
    CIRCUIT_OPEN = "CircuitOpen"
    POD_LOST = "PodLost"
    POD_CONFLICT = "PodConflict"
    # A workflow step: the child run failed or was cancelled; or it would nest too deep.
    SUB_WORKFLOW_FAILED = "SubWorkflowFailed"
    SUB_WORKFLOW_TOO_DEEP = "SubWorkflowTooDeep"


class StepReason(StrEnum):
    """Reasons a step, item or body step is in its phase, other than an attempt's failure."""

    SUCCEEDED = "Succeeded"
    WHEN_FALSE = "WhenFalse"
    UPSTREAM_SKIPPED = "UpstreamSkipped"
    # A dependency failed (without continueOn) and the run went on (failFast: false).
    UPSTREAM_FAILED = "UpstreamFailed"
    APPROVAL_PENDING = "ApprovalPending"
    SLEEPING = "Sleeping"
    WOKE = "Woke"
    CACHED = "Cached"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    APPROVAL_TIMED_OUT = "ApprovalTimedOut"
    CONVERGED = "Converged"
    MAX_ITERATIONS_REACHED = "MaxIterationsReached"
    BODY_STEP_FAILED = "BodyStepFailed"
    THRESHOLD_UNREACHABLE = "ThresholdUnreachable"
    THRESHOLD_REACHED = "ThresholdReached"
    WAITING_FOR_CONCURRENCY = "WaitingForConcurrency"
    RUN_FAILED = "RunFailed"
    RUN_CANCELLED = "RunCancelled"

    @property
    def routed(self) -> bool:
        """Skipped by the workflow's routing (not because the run stopped)."""
        return self in (StepReason.WHEN_FALSE, StepReason.UPSTREAM_SKIPPED)


class EventReason(StrEnum):
    """Reasons of the Events (and history entries) a run records."""

    RUN_STARTED = "RunStarted"
    RUN_SUCCEEDED = "RunSucceeded"
    RUN_FAILED = "RunFailed"
    RUN_CANCELLED = "RunCancelled"
    RUN_TIMED_OUT = "RunTimedOut"
    INVALID_SPEC = "InvalidSpec"
    STATUS_TOO_LARGE = "StatusTooLarge"
    STEP_SKIPPED = "StepSkipped"
    STEP_SUCCEEDED = "StepSucceeded"
    STEP_FAILED = "StepFailed"
    STEP_RETRYING = "StepRetrying"
    FAN_OUT_STARTED = "FanOutStarted"
    ITEM_FAILED = "ItemFailed"  # progress only: one fan-out item failed for good
    STEP_SLEEPING = "StepSleeping"
    CIRCUIT_OPEN_FALLBACK = "CircuitOpenFallback"
    APPROVAL_REQUESTED = "ApprovalRequested"
    APPROVED = "Approved"
    APPROVAL_REJECTED = "ApprovalRejected"
    APPROVAL_REFUSED = "ApprovalRefused"
    APPROVAL_TIMED_OUT = "ApprovalTimedOut"
    BUDGET_EXCEEDED = "BudgetExceeded"
    BUDGET_APPROVED = "BudgetApproved"
    BUDGET_REJECTED = "BudgetRejected"
    COMPENSATION_STARTED = "CompensationStarted"
    COMPENSATION_SUCCEEDED = "CompensationSucceeded"
    COMPENSATION_FAILED = "CompensationFailed"
    COMPENSATION_CANCELLED = "CompensationCancelled"
    SLA_BREACHED = "SLABreached"


class DecisionKind(StrEnum):
    """What an approval record says."""

    APPROVED = "Approved"
    REJECTED = "Rejected"
    # Not counted: the person is not an allowed approver (kept for the audit trail).
    REFUSED = "Refused"


# Annotations people write on a run.
APPROVE_PREFIX = "approve.braid.dev/"  # approve.braid.dev/<step>: alice,bob:<digest>
REJECT_PREFIX = "reject.braid.dev/"  # reject.braid.dev/<step>: "carol: too risky"
# Who asked for a retry (the approval policy checks it names the requester).
REQUESTED_BY = "braid.dev/requested-by"
# The prefix of every key Braid (and kopf, for Braid) persists on its objects.
DOMAIN = "braid.dev"

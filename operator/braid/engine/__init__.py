"""The engine: decides what happens next in a run.

Contract: purely data-manipulative. No I/O, no clock reads (``now`` is an argument), no
randomness (retry jitter is derived from attempt names), no kopf, no Kubernetes client. Given
the same workflow snapshot, status, observations and time it makes the same decision, and every
attempt it asks for has a deterministic name, so a repeated decision can never start a step
twice. import-linter enforces the imports (see pyproject.toml).
"""

from braid.engine.actions import (
    Action,
    ApprovalDecision,
    AttemptLabels,
    AttemptResult,
    CancelAttempt,
    ContainerRequest,
    Decision,
    HTTPResponse,
    Observations,
    RecordDecision,
    RecordEvent,
    StartAttempt,
    WebhookRequest,
)
from braid.engine.approvals import DIGEST_LENGTH
from braid.engine.compile import compile_plan, plan_for
from braid.engine.outputs import MAX_OUTPUT_BYTES, parse_outputs
from braid.engine.params import check_param_schemas, resolve_params
from braid.engine.plan import Plan
from braid.engine.scheduler import RunState

__all__ = [
    "DIGEST_LENGTH",
    "MAX_OUTPUT_BYTES",
    "Action",
    "ApprovalDecision",
    "AttemptLabels",
    "AttemptResult",
    "CancelAttempt",
    "ContainerRequest",
    "Decision",
    "HTTPResponse",
    "Observations",
    "Plan",
    "RecordDecision",
    "RecordEvent",
    "RunState",
    "StartAttempt",
    "WebhookRequest",
    "check_param_schemas",
    "compile_plan",
    "parse_outputs",
    "plan_for",
    "resolve_params",
]

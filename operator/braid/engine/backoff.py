"""Delay before a retry: exponential, capped, with jitter that is deterministic per attempt.

The jitter is derived from the attempt's name rather than a random source, so the engine stays
a pure function and a repeated decision computes the same retry time.
"""

from __future__ import annotations

import hashlib

from braid.api.reasons import FailureReason
from braid.api.workflow import Backoff, RetryPolicy


def retry_delay(backoff: Backoff | None, failed_attempt: int, attempt_name: str) -> float:
    """Seconds to wait after attempt number ``failed_attempt`` (1-based) failed."""
    b = backoff or Backoff()
    base = min(b.initial_delay_seconds * b.factor ** (failed_attempt - 1), b.max_delay_seconds)
    digest = hashlib.sha256(attempt_name.encode()).digest()
    unit = int.from_bytes(digest[:4], "big") / 2**32  # in [0, 1)
    return max(0.0, base * (1 + b.jitter * (2 * unit - 1)))


# Failures another attempt would repeat exactly: the same expressions over the same values.
_DETERMINISTIC = (
    FailureReason.EXPRESSION_ERROR,
    FailureReason.NO_CASE_MATCHED,
    FailureReason.SUB_WORKFLOW_TOO_DEEP,
)


def is_retryable(policy: RetryPolicy, reason: FailureReason, exit_code: int | None) -> bool:
    retry_on = policy.retry_on
    if retry_on is None:
        return reason not in _DETERMINISTIC
    if retry_on.reasons is not None and reason not in retry_on.reasons:
        return False
    if reason is FailureReason.ERROR and retry_on.exit_codes is not None:
        return exit_code in retry_on.exit_codes
    return reason not in _DETERMINISTIC

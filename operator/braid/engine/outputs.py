"""The step outputs contract: one JSON object of at most 4,096 bytes.

In a cluster the outputs travel in the container's termination message, which the kubelet cuts
at 4,096 bytes; the local runner enforces the same limit so a workflow that passes locally
does not break in a cluster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from braid.api.workflow import FailureReason

MAX_OUTPUT_BYTES = 4096


@dataclass(frozen=True)
class ParsedOutputs:
    outputs: dict[str, Any] | None
    failure: FailureReason | None = None
    message: str | None = None


def parse_outputs(raw: str | bytes | None) -> ParsedOutputs:
    if raw is None:
        return ParsedOutputs({})
    data = raw.encode() if isinstance(raw, str) else raw
    if len(data) > MAX_OUTPUT_BYTES:
        return ParsedOutputs(
            None,
            FailureReason.OUTPUT_TOO_LARGE,
            f"outputs are {len(data)} bytes; the limit is {MAX_OUTPUT_BYTES} bytes (the "
            "Kubernetes termination message limit); write large data elsewhere and output a "
            "reference to it",
        )
    text = data.decode("utf-8", errors="replace").strip()
    if not text:
        return ParsedOutputs({})
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return ParsedOutputs(
            None,
            FailureReason.OUTPUT_INVALID,
            f"outputs are not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "write one JSON object to $BRAID_OUTPUT",
        )
    if not isinstance(value, dict):
        return ParsedOutputs(
            None,
            FailureReason.OUTPUT_INVALID,
            f"outputs must be a JSON object, got {type(value).__name__}; write e.g. "
            '{"answer": 42} to $BRAID_OUTPUT',
        )
    return ParsedOutputs(value)

"""The step outputs contract: one JSON object of at most 4,096 bytes.

In a cluster the outputs travel in the container's termination message, which the kubelet cuts
at 4,096 bytes; the local runner enforces the same limit so a workflow that passes locally
does not break in a cluster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from braid.api.manifests import too_deep
from braid.api.reasons import FailureReason
from braid.api.run import Usage, WorkflowRunStatus

MAX_OUTPUT_BYTES = 4096
# Outputs are stored inside the run's status (a few levels down, more in loops and fan-outs);
# deeper values would make the status impossible to read back.
MAX_OUTPUT_DEPTH = 32


@dataclass(frozen=True)
class ParsedOutputs:
    outputs: dict[str, Any] | None
    failure: FailureReason | None = None
    message: str | None = None


def depth_failure(value: Any, where: str = "outputs") -> ParsedOutputs | None:
    """A failure when ``value`` nests deeper than MAX_OUTPUT_DEPTH."""
    deep = too_deep(value, MAX_OUTPUT_DEPTH)
    if deep is None:
        return None
    return ParsedOutputs(
        None,
        FailureReason.OUTPUT_INVALID,
        f"{where} are nested deeper than {MAX_OUTPUT_DEPTH} levels (at {deep[:120] or 'the top'}); "
        "flatten them",
    )


def parse_outputs(raw: str | bytes | None) -> ParsedOutputs:  # noqa: PLR0911 - one return per outcome
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
    except RecursionError:
        return ParsedOutputs(
            None,
            FailureReason.OUTPUT_INVALID,
            f"outputs are nested deeper than {MAX_OUTPUT_DEPTH} levels; flatten them",
        )
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
    return depth_failure(value) or ParsedOutputs(value)


def usage_of(outputs: dict[str, Any]) -> Usage | None:
    """The usage a step reported: ``outputs.usage.tokens`` (or ``inputTokens`` +
    ``outputTokens``) and ``outputs.usage.cost``; None when it reported none. Values that are
    not non-negative numbers are ignored rather than failing the step."""
    usage = outputs.get("usage")
    if not isinstance(usage, dict):
        return None

    def number(key: str) -> float | None:
        value = usage.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            return None
        return float(value)

    tokens = number("tokens")
    if tokens is None:
        parts = [n for n in (number("inputTokens"), number("outputTokens")) if n is not None]
        tokens = sum(parts) if parts else None
    cost = number("cost")
    if tokens is None and cost is None:
        return None
    return Usage(tokens=int(tokens or 0), cost=cost or 0.0)


SHED_NOTE = "outputs dropped: the run's status grew too large to store"


def shed(status: WorkflowRunStatus, level: int) -> None:
    """Drop outputs from a status that cannot be stored: level 1 those of fan-out items and
    loop iterations (and iterations before the last two), level 2 every output."""
    for st in status.steps:
        for item in st.items or []:
            item.outputs = None
        if st.iterations and len(st.iterations) > 2:
            st.iterations = st.iterations[-2:]
        for it in st.iterations or []:
            for body in it.steps:
                body.outputs = None
        if st.outputs is not None and ("items" in st.outputs or "iterations" in st.outputs):
            st.outputs = {
                k: v for k, v in st.outputs.items() if k not in ("items", "iterations", "last")
            }
            st.message = f"{st.message or ''} ({SHED_NOTE})".strip()
        if level >= 2 and st.outputs:
            st.outputs = None
            st.message = f"{st.message or ''} ({SHED_NOTE})".strip()
        if level >= 2 and st.compensation is not None:
            st.compensation.outputs = None
    if status.history and len(status.history) > 20:
        status.history = status.history[-20:]

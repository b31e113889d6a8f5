"""Artifacts, as the engine sees them: references only. A step attempt writes files under
$BRAID_ARTIFACTS; the driver stores them (an S3 bucket in a cluster, a directory locally) and
reports each file's size, sha256 and uri; the run keeps those references, never the bytes.

This module decides what an attempt may write (the step's limits, or what the run has left),
which artifacts an attempt reads (its ``inputs``), whether what it reported is acceptable, and
keeps the run's running total.
"""

from __future__ import annotations

from typing import Any

from braid.api.reasons import FailureReason
from braid.api.run import Artifact, TaskStatus, WorkflowRunStatus
from braid.api.workflow import ContainerSpec, RunArtifactLimits
from braid.engine.actions import ArtifactRoom, AttemptResult, InputArtifact
from braid.expressions import Expression, ExpressionError, type_name

STEP_BYTES = 1 << 30
STEP_FILES = 20  # a Pod reports them in its 4 KiB termination message
RUN_BYTES = 10 << 30


def limits(spec: ContainerSpec, run: RunArtifactLimits | None) -> tuple[int, int]:
    """(max bytes, max files) of one attempt of a container: its own, else the run's defaults."""
    own = spec.artifact_limits
    max_bytes = own.max_bytes if own and own.max_bytes is not None else None
    max_files = own.max_files if own and own.max_files is not None else None
    if max_bytes is None:
        max_bytes = run.max_bytes_per_step if run and run.max_bytes_per_step is not None else None
    if max_files is None:
        max_files = run.max_files_per_step if run and run.max_files_per_step is not None else None
    return (
        STEP_BYTES if max_bytes is None else max_bytes,
        STEP_FILES if max_files is None else max_files,
    )


def run_limit(run: RunArtifactLimits | None) -> int:
    return run.max_bytes_per_run if run and run.max_bytes_per_run is not None else RUN_BYTES


def room(max_bytes: int, max_files: int, run_left: int) -> ArtifactRoom | None:
    """What an attempt may write now; None when it may write nothing at all."""
    if max_files == 0:
        return None
    return ArtifactRoom(max(0, min(max_bytes, run_left)), max_files)


def run_left(status: WorkflowRunStatus, run_bytes: int) -> int:
    return run_bytes - (status.artifact_bytes or 0)


def inputs(
    declared: tuple[tuple[Expression, str], ...], context: dict[str, Any]
) -> tuple[InputArtifact, ...]:
    """The input artifacts of an attempt; ExpressionError naming the field when ``from`` gives
    anything but an artifact (or a uri)."""
    out = []
    for expression, path in declared:
        value = expression.evaluate(context)
        if isinstance(value, str) and value:
            out.append(InputArtifact(path, value))
            continue
        if isinstance(value, dict) and isinstance(value.get("uri"), str):
            sha = value.get("sha256")
            out.append(InputArtifact(path, value["uri"], sha if isinstance(sha, str) else None))
            continue
        raise ExpressionError(
            expression.path,
            expression.source,
            f"gives {type_name(value)}, not an artifact: write steps.<name>.artifacts['<file>'] "
            "of an upstream step (or its uri)",
        )
    return tuple(out)


def judge(result: AttemptResult, allowed: ArtifactRoom | None) -> tuple[FailureReason, str] | None:
    """Why what an attempt reported about its artifacts fails it, if it does."""
    if result.artifact_error is not None:
        reason = (
            FailureReason.ARTIFACT_TOO_LARGE
            if result.artifact_too_large
            else FailureReason.ARTIFACT_FAILED
        )
        return reason, result.artifact_error
    found = result.artifacts or {}
    if not found:
        return None
    if allowed is None:
        return FailureReason.ARTIFACT_TOO_LARGE, "the step may write no artifacts (maxFiles 0)"
    size = sum(a.size for a in found.values())
    if len(found) > allowed.max_files or size > allowed.max_bytes:
        return FailureReason.ARTIFACT_TOO_LARGE, (
            f"{len(found)} artifact(s), {size} bytes; the limit is {allowed.max_files} files, "
            f"{allowed.max_bytes} bytes"
        )
    return None


def record_attempt(
    status: WorkflowRunStatus, task: TaskStatus, artifacts: dict[str, Artifact] | None
) -> None:
    """The attempt's artifacts replace the task's (a retry's files are its own), and the run's
    total follows."""
    if not task.artifacts and not artifacts:
        return
    before = sum(a.size for a in (task.artifacts or {}).values())
    after = sum(a.size for a in (artifacts or {}).values())
    task.artifacts = dict(artifacts) if artifacts else None
    status.artifact_bytes = (status.artifact_bytes or 0) - before + after


def view(artifacts: dict[str, Artifact] | None) -> dict[str, Any]:
    """What expressions read: steps.x.artifacts['name'] -> {name, size, sha256, uri}."""
    return {
        name: {"name": name, "size": a.size, "sha256": a.sha256, "uri": a.uri}
        for name, a in (artifacts or {}).items()
    }

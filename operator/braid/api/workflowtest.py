"""The WorkflowTest kind: a test file for `braid test` (no cluster object). Stubbed step
results in, expected outcomes out, run on the engine's virtual clock — like `promtool test
rules` for alerts or `helm unittest` for charts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from braid.api.common import Model, ObjectMeta
from braid.api.workflow import JSON


class ToolCallStub(Model):
    name: str = Field(description="The tool (function) the model calls.")
    arguments: dict[str, JSON] = Field(default_factory=dict, description="Its arguments.")


class ReplyStub(Model):
    """What a stubbed model answers (an llm step), as the Chat Completions API would."""

    content: str | None = Field(
        default=None, description="The reply's text (JSON for responseSchema)."
    )
    tool_calls: list[ToolCallStub] | None = Field(default=None, description="Tool calls it makes.")
    finish_reason: str | None = Field(
        default=None, description="Default: tool_calls when it calls tools, else stop."
    )
    input_tokens: int = Field(default=0, ge=0, description="usage.prompt_tokens.")
    output_tokens: int = Field(default=0, ge=0, description="usage.completion_tokens.")


class ResponseStub(Model):
    """What a stubbed webhook answers."""

    status: int = Field(default=200, description="HTTP status.")
    body: JSON = Field(default=None, description="The JSON body.")
    headers: dict[str, str] | None = Field(default=None, description="Response headers.")


class ChildStub(Model):
    """How a stubbed sub-workflow's child run ends."""

    phase: Literal["Succeeded", "Failed", "Cancelled"] = "Succeeded"
    outputs: dict[str, JSON] | None = None
    reason: str | None = None
    message: str | None = None


class ArtifactStub(Model):
    """A file the attempt wrote under $BRAID_ARTIFACTS (only its reference exists)."""

    size: int = Field(default=0, ge=0, description="Bytes.")
    uri: str | None = Field(default=None, description="Default: file:///stub/<name>.")


class Stub(Model):
    """How an attempt ends. Unstubbed attempts succeed after a second with no outputs (a
    webhook answers 200 {}, a model "ok", a child run Succeeded)."""

    seconds: float = Field(default=1.0, ge=0, description="How long it takes (virtual time).")
    outputs: dict[str, JSON] | None = Field(default=None, description="What a container writes.")
    exit_code: int = Field(default=0, description="A container's exit code.")
    stderr: str | None = Field(default=None, description="The tail of its output, on failure.")
    error: str | None = Field(default=None, description="It could not start at all.")
    response: ResponseStub | None = Field(default=None, description="A webhook's answer.")
    reply: ReplyStub | None = Field(default=None, description="A model's reply (llm).")
    child: ChildStub | None = Field(default=None, description="A sub-workflow's end.")
    artifacts: dict[str, ArtifactStub] | None = Field(
        default=None, description="Files it wrote, by path under $BRAID_ARTIFACTS."
    )
    candidates: dict[str, Stub] | None = Field(
        default=None, description="Per routing candidate (llm/webhook candidates)."
    )
    attempts: list[Stub] | None = Field(
        default=None, description="Per attempt, in order (the last repeats): flaky steps."
    )
    items: dict[str, Stub] | None = Field(
        default=None, description="Per fan-out item index ('0', '1', ...); others get this stub."
    )
    iterations: list[Stub] | None = Field(
        default=None, description="Per loop iteration, for a body step (the last repeats)."
    )
    compensation: Stub | None = Field(default=None, description="The step's compensation.")


class DecisionStub(Model):
    """A person's decision on a gate (or the budget gate, 'budget')."""

    approve: str | None = Field(default=None, description="Approved by this user.")
    reject: str | None = Field(default=None, description="Rejected, with this reason.")


class StepExpectation(Model):
    phase: str | None = None
    reason: str | None = None
    attempts: int | None = None
    outputs: dict[str, JSON] | None = Field(
        default=None, description="These keys have these values (others are not checked)."
    )
    message_contains: str | None = None


class Expectation(Model):
    """What must hold when the run ends; only what is given is checked."""

    phase: Literal["Succeeded", "Failed", "Cancelled"] | None = None
    reason: str | None = Field(default=None, description="The Succeeded condition's reason.")
    outputs: dict[str, JSON] | None = Field(
        default=None, description="These run outputs have these values."
    )
    steps: dict[str, StepExpectation] | None = None
    ran: list[str] | None = Field(
        default=None,
        description="The steps that ran (not skipped), in the order they started (ties in "
        "declaration order).",
    )
    not_ran: list[str] | None = Field(default=None, description="Steps that must not have run.")
    compensated: list[str] | None = Field(
        default=None, description="Steps whose compensation ran, in the order it ran."
    )
    usage: dict[str, float] | None = Field(default=None, description="tokens and/or cost.")
    duration_seconds: float | None = Field(default=None, description="Virtual seconds it took.")


class TestCase(Model):
    name: str = Field(description="What the case shows.")
    params: dict[str, JSON] | None = None
    stubs: dict[str, Stub] | None = Field(
        default=None, description="By step, body step or finally step name."
    )
    decisions: dict[str, DecisionStub] | None = Field(default=None, description="By gate name.")
    cancel_at_seconds: float | None = Field(default=None, description="Cancel the run then.")
    expect: Expectation


class WorkflowTestSpec(Model):
    workflow: str = Field(
        default="workflow.yaml", description="The workflow file, relative to this file."
    )
    cases: list[TestCase] = Field(min_length=1)


class WorkflowTest(Model):
    api_version: Literal["braid.dev/v1alpha1"] = "braid.dev/v1alpha1"
    kind: Literal["WorkflowTest"] = "WorkflowTest"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: WorkflowTestSpec

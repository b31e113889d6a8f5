"""What `braid analyze` writes back: statistics of a workflow's past runs, its bottlenecks and
ranked recommendations, as data on the Workflow's status (``status.analysis``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from braid.api.common import Model


class StepStats(Model):
    """One step over the analysed runs (durations of the steps that ran, in seconds)."""

    step: str = Field(description="Step name.")
    runs: int = Field(description="Runs in which the step ran (was not skipped).")
    p50: float = Field(description="Median duration.")
    p95: float = Field(description="95th percentile duration.")
    mean: float = Field(description="Mean duration.")
    stdev: float = Field(description="Standard deviation of the duration.")
    success_rate: float = Field(description="Share of runs in which it succeeded.")
    error_rate: float = Field(description="Share of runs in which it failed.")
    retry_rate: float = Field(description="Share of runs in which it needed more than 1 attempt.")
    retry_waste: float = Field(
        description="Mean seconds per run spent in attempts that failed and were retried."
    )
    waiting: float = Field(
        description="Mean seconds per run between its dependencies finishing and it starting "
        "(pools, pending pods), plus approval waits for gates."
    )
    on_critical_path: float = Field(description="Share of runs whose critical path it is on.")
    tokens: float | None = Field(default=None, description="Mean tokens per run, if reported.")
    cost: float | None = Field(default=None, description="Mean cost per run, if reported.")


class Bottleneck(Model):
    step: str = Field(description="The step.")
    why: Literal["Slow", "Variable"] = Field(
        description="Slow: mean above the mean of all steps plus one standard deviation. "
        "Variable: coefficient of variation above 0.5."
    )
    evidence: str = Field(description="The numbers behind it.")


class RunPath(Model):
    run: str = Field(description="The run.")
    duration: float = Field(description="Its duration, seconds.")
    critical_path: list[str] = Field(description="The chain of steps that decided its length.")


class Straggler(Model):
    run: str = Field(description="The run.")
    step: str = Field(description="The step that took unusually long in it.")
    seconds: float = Field(description="How long it took there.")
    p50: float = Field(description="The step's median over all analysed runs.")


class ModelCallStats(Model):
    """One llm step's model calls over the analysed runs (the replies that succeeded)."""

    step: str = Field(description="The llm step (or loop body step).")
    loop: str | None = Field(default=None, description="The loop it is in, if any.")
    calls: int = Field(description="Replies counted (every iteration's, in a loop).")
    models: dict[str, int] = Field(description="Replies by the model that gave them.")
    candidates: dict[str, int] | None = Field(
        default=None, description="Routed calls: replies by the candidate chosen."
    )
    finish_reasons: dict[str, int] = Field(description="Replies by finish_reason.")
    input_tokens: float | None = Field(default=None, description="Mean prompt tokens per call.")
    output_tokens: float | None = Field(
        default=None, description="Mean completion tokens per call."
    )
    truncated: int = Field(
        default=0, description="Replies too long for the outputs (whole in response.json)."
    )


class Recommendation(Model):
    kind: Literal[
        "Parallelize", "Cache", "RaiseTimeout", "LowerRetries", "RelaxSLA", "RaiseMaxTokens"
    ] = Field(description="What to change.")
    steps: list[str] = Field(description="The steps concerned.")
    gain_seconds: float = Field(
        description="Expected time saved (or lost time avoided) per run; the ranking key."
    )
    message: str = Field(description="What to do, in a sentence.")
    evidence: str = Field(description="The observations it rests on.")


class WorkflowAnalysis(Model):
    generated_at: datetime = Field(description="When the analysis was made.")
    runs: int = Field(description="Finished runs analysed.")
    succeeded: int = Field(description="Of which succeeded.")
    duration_p50: float = Field(description="Median run duration, seconds.")
    duration_p95: float = Field(description="95th percentile run duration, seconds.")
    critical_path: list[str] = Field(description="The most frequent critical path.")
    run_paths: list[RunPath] = Field(
        default_factory=list, description="Each run's critical path (the latest 50 runs)."
    )
    stragglers: list[Straggler] = Field(
        default_factory=list,
        description="Step executions over twice the step's median (and over a second).",
    )
    steps: list[StepStats] = Field(description="Per-step statistics.")
    model_calls: list[ModelCallStats] = Field(
        default_factory=list, description="Per llm step: models, candidates, tokens, finishes."
    )
    bottlenecks: list[Bottleneck] = Field(default_factory=list, description="Bottlenecks.")
    recommendations: list[Recommendation] = Field(
        default_factory=list, description="Ranked by expected gain, largest first."
    )


class WorkflowStatus(Model):
    """Observed state of a Workflow."""

    analysis: WorkflowAnalysis | None = Field(
        default=None, description="The last `braid analyze --write` of its finished runs."
    )

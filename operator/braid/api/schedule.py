"""The WorkflowSchedule kind (Argo's CronWorkflow, Kubernetes' CronJob): runs of a workflow
created on cron schedules."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from braid.api.common import Model, ObjectMeta
from braid.api.run import WorkflowRef
from braid.api.workflow import JSON, WorkflowSpec


class ConcurrencyPolicy(StrEnum):
    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


class RunTemplateMeta(Model):
    labels: dict[str, str] | None = Field(default=None, description="Labels of each run.")
    annotations: dict[str, str] | None = Field(default=None, description="Annotations of each run.")


class RunTemplateSpec(Model):
    """A WorkflowRun spec, but its own model: a run's spec is immutable once created (CEL
    transition rules), a schedule's template is edited like any spec."""

    workflow_ref: WorkflowRef | None = Field(default=None, description="The Workflow to run.")
    workflow: WorkflowSpec | None = Field(default=None, description="Or an inline workflow.")
    params: dict[str, JSON] | None = Field(default=None, description="Param values.")
    priority: int | None = Field(
        default=None, ge=-1000, le=1000, description="Queue priority (spec.concurrency)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> RunTemplateSpec:
        if (self.workflow_ref is None) == (self.workflow is None):
            raise ValueError("set exactly one of workflowRef or workflow")
        return self


class RunTemplate(Model):
    metadata: RunTemplateMeta | None = Field(default=None, description="Labels, annotations.")
    spec: RunTemplateSpec = Field(description="The WorkflowRun spec of each run.")


def _cron_error(expr: str) -> str | None:
    fields = expr.split()
    if len(fields) not in (5, 6):
        return "5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first"
    from croniter import croniter  # noqa: PLC0415 - loaded by schedules only, not every start

    if not croniter.is_valid(expr, second_at_beginning=len(fields) == 6):
        return "not a valid cron expression"
    return None


class WorkflowScheduleSpec(Model):
    """Start runs of a workflow on cron schedules."""

    schedules: list[str] = Field(
        min_length=1,
        max_length=20,
        description="Cron expressions: 5 fields (minute hour day-of-month month day-of-week), "
        "or 6 with seconds first (e.g. '*/10 * * * * *'). A run starts at each time any gives.",
    )
    timezone: str = Field(
        default="UTC", max_length=64, description="IANA time zone the schedules are read in."
    )
    concurrency_policy: ConcurrencyPolicy = Field(
        default=ConcurrencyPolicy.ALLOW,
        description="When a run of this schedule is still going: Allow another, Forbid it "
        "(the time is skipped), or Replace it (the running one is cancelled).",
    )
    starting_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        description="A time missed by more than this (the operator was down) is skipped; "
        "default: the latest missed time still runs.",
    )
    suspend: bool = Field(default=False, description="true: start no runs until set false.")
    successful_runs_history_limit: int = Field(
        default=3, ge=0, le=1000, description="Finished successful runs kept."
    )
    failed_runs_history_limit: int = Field(
        default=1, ge=0, le=1000, description="Finished failed or cancelled runs kept."
    )
    run_template: RunTemplate = Field(description="What each run is.")

    @field_validator("schedules")
    @classmethod
    def _valid_cron(cls, value: list[str]) -> list[str]:
        for i, expr in enumerate(value):
            error = _cron_error(expr)
            if error:
                raise ValueError(f"schedules[{i}] {expr!r}: {error}")
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. Europe/Paris)") from None
        return value


class WorkflowScheduleStatus(Model):
    last_schedule_time: datetime | None = Field(
        default=None, description="The last time a run was due (started or skipped)."
    )
    next_schedule_time: datetime | None = Field(default=None, description="The next time due.")
    last_run: str | None = Field(default=None, description="The run started last.")
    active: list[str] | None = Field(default=None, description="Its runs still going.")
    last_successful_time: datetime | None = Field(
        default=None, description="When a run of it last succeeded."
    )
    message: str | None = Field(default=None, description="What happened last (skips, errors).")


class WorkflowSchedule(Model):
    api_version: Literal["braid.dev/v1alpha1"] = "braid.dev/v1alpha1"
    kind: Literal["WorkflowSchedule"] = "WorkflowSchedule"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: WorkflowScheduleSpec
    status: WorkflowScheduleStatus | None = None

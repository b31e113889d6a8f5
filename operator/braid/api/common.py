"""Shared building blocks: the model base class, object metadata and conditions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "braid.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Step names become parts of Pod names and label values, so they follow DNS-1123 label rules,
# with room left for the run name and attempt suffix. "--" is reserved: attempt names use it
# to separate a step from its item or iteration, which keeps every attempt name unique.
NAME_PATTERN = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"
NAME_MAX = 40


class Model(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=False,
    )

    def wire(self) -> dict[str, Any]:
        """The object as it is written to YAML or the API server."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ObjectMeta(BaseModel):
    """The subset of Kubernetes ObjectMeta Braid reads; everything else is kept as is."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(default="", description="Name of the object.")
    namespace: str | None = Field(default=None, description="Namespace of the object.")
    generation: int | None = Field(default=None, description="Spec generation.")
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Model):
    """A Kubernetes-style condition: one observation of one aspect of the run."""

    type: str = Field(description="Condition type, e.g. Succeeded, ApprovalPending, SLABreached.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason for the last transition.")
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: datetime | None = Field(
        default=None, description="When the status last changed."
    )
    observed_generation: int | None = Field(
        default=None, description="The run generation this condition was computed from."
    )


def human_age(timestamp: str | None, now: datetime) -> str:
    """How long ago an RFC 3339 time was, as kubectl says it: '45s', '3m', '2h', '5d'."""
    if not timestamp:
        return ""
    seconds = int((now - datetime.fromisoformat(timestamp)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def human_size(size: int) -> str:
    """1536 -> '1.5 KiB': sizes as people read them."""
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"

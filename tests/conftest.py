from __future__ import annotations

import json
from typing import Any

import pytest

from braid.api.workflow import WorkflowSpec
from braid.engine.simulate import Outcome


def workflow(steps: list[dict[str, Any]], **spec: Any) -> WorkflowSpec:
    return WorkflowSpec.model_validate({"steps": steps, **spec})


def container(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "container": {"image": "busybox", "command": ["true"]}, **extra}


def ok(outputs: dict[str, Any] | None = None, seconds: float = 1.0) -> Outcome:
    return Outcome(seconds=seconds, output=json.dumps(outputs or {}))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

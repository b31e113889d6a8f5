from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from braid.api.workflow import WorkflowSpec
from braid.engine.simulate import Outcome
from tests.s3 import S3, s3_server


def workflow(steps: list[dict[str, Any]], **spec: Any) -> WorkflowSpec:
    return WorkflowSpec.model_validate({"steps": steps, **spec})


def container(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "container": {"image": "busybox", "command": ["true"]}, **extra}


def ok(outputs: dict[str, Any] | None = None, seconds: float = 1.0) -> Outcome:
    return Outcome(seconds=seconds, output=json.dumps(outputs or {}))


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    """A real S3 server (versitygw) on loopback, with the bucket ``braid``."""
    with s3_server() as server:
        yield server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextlib.contextmanager
def example_api_server(example: str = "09-webhook") -> Iterator[str]:
    """An example's stand-in API on a free loopback port: 09-webhook's, or (``model``) the
    model API the model examples share (examples/model-server.py)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    examples = Path(__file__).resolve().parents[1] / "examples"
    script = (
        examples / "model-server.py" if example == "model" else examples / example / "server.py"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script), str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert "listening" in proc.stdout.readline()
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)

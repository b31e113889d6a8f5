"""One webhook attempt as an HTTP call, shared by the local runner and the operator.

Carries out the request the engine rendered; the engine judges the response against the
step's success condition.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import httpx

from braid.engine import AttemptResult, HTTPResponse, StartAttempt

DEFAULT_TIMEOUT_SECONDS = 30.0


async def call_webhook(client: httpx.AsyncClient, request: StartAttempt) -> AttemptResult:
    hook = request.webhook
    assert hook is not None
    kwargs: dict[str, Any] = {"headers": hook.headers}
    if isinstance(hook.body, str):
        kwargs["content"] = hook.body
    elif hook.body is not None:
        kwargs["json"] = hook.body
    try:
        response = await client.request(
            hook.method,
            hook.url,
            timeout=request.timeout_seconds or DEFAULT_TIMEOUT_SECONDS,
            **kwargs,
        )
    except httpx.HTTPError as exc:
        return AttemptResult(request.name, error=f"{hook.method} {hook.url} failed: {exc!r}")
    body: Any = response.text
    if "json" in response.headers.get("content-type", ""):
        with contextlib.suppress(ValueError):
            body = json.loads(response.text)
    return AttemptResult(
        request.name, response=HTTPResponse(response.status_code, dict(response.headers), body)
    )

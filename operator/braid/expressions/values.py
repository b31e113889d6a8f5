"""JSON values in and out of CEL: their names in messages, CEL results as JSON, how a value
reads inside a string."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "bool",
        int: "int",
        float: "double",
        str: "string",
        list: "list",
        dict: "map",
    }.get(type(value), type(value).__name__)


def to_json(value: Any) -> Any:
    """CEL results as JSON values (timestamps as RFC 3339, durations as seconds)."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def render_scalar(value: Any) -> str:
    """How an interpolated value appears inside a string: strings as is, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)

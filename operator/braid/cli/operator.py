"""`braid operator`: run the kopf controller against the current kubeconfig."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sys
from enum import StrEnum
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from braid.api.podtemplate import PodPolicy
    from braid.webhook import WebhookPolicy


class LogFormat(StrEnum):
    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


def configure_logging(fmt: LogFormat, verbose: bool = False) -> None:
    """structlog for Braid's own lines: JSON unless on a terminal; kopf's lines go through
    the standard library at WARNING."""
    use_json = fmt == LogFormat.JSON or (fmt == LogFormat.AUTO and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if verbose else logging.INFO
        ),
    )
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    # Which replica of a hot standby is working ("Pausing/Resuming operations") is worth a line.
    logging.getLogger("kopf._core.engines.peering").setLevel(logging.INFO)


PRIORITY_SPAN = 2**30


def priority_from_name(name: str) -> int:
    """A stable priority in [1, 2**30) from a pod name: replicas of one Deployment get
    distinct priorities (a clash between two names has odds of about one in a billion), and
    a restarted pod keeps its own."""
    digest = hashlib.sha256(name.encode()).digest()
    return 1 + int.from_bytes(digest[:8], "big") % (PRIORITY_SPAN - 1)


def resolve_priority(value: str, hostname: str) -> int:
    """``--priority``: an integer, or ``auto`` for :func:`priority_from_name` of the host."""
    if value == "auto":
        return priority_from_name(hostname)
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"--priority: expected an integer or 'auto', got {value!r}") from None


def run_operator(
    namespaces: list[str],
    health_port: int | None,
    health_address: str = "127.0.0.1",
    metrics_port: int | None = None,
    metrics_address: str = "0.0.0.0",  # noqa: S104 - Prometheus scrapes it from the cluster
    peering: str | None = None,
    priority: int = 0,
    webhook_policy: WebhookPolicy | None = None,
    selector: str | None = None,
    pod_policy: PodPolicy | None = None,
    approval_policy: str | None = None,
) -> None:
    import kopf  # noqa: PLC0415 - only the operator needs kopf loaded

    from braid.controller import handlers  # noqa: F401, PLC0415 - registers the handlers

    health = f"http://{health_address}:{health_port}/healthz" if health_port else None
    asyncio.run(
        kopf.operator(
            namespaces=namespaces,
            clusterwide=not namespaces,
            # Without a peering name: one operator, no peering objects read or written.
            standalone=not peering,
            peering_name=peering or None,
            priority=priority,
            liveness_endpoint=health,
            memo=kopf.Memo(
                metrics_port=metrics_port,
                metrics_address=metrics_address,
                webhook_policy=webhook_policy,
                selector=selector,
                pod_policy=pod_policy,
                approval_policy=approval_policy,
            ),
        )
    )

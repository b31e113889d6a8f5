"""`braid operator`: run the kopf controller against the current kubeconfig."""

from __future__ import annotations

import asyncio
import logging
import sys
from enum import StrEnum

import structlog


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


def run_operator(
    namespaces: list[str],
    liveness_port: int | None,
    metrics_port: int | None = None,
    metrics_address: str = "0.0.0.0",  # noqa: S104 - Prometheus scrapes it from the cluster
) -> None:
    import kopf  # noqa: PLC0415 - only the operator needs kopf loaded

    from braid.controller import handlers  # noqa: F401, PLC0415 - registers the handlers

    liveness = f"http://127.0.0.1:{liveness_port}/healthz" if liveness_port else None
    asyncio.run(
        kopf.operator(
            namespaces=namespaces,
            clusterwide=not namespaces,
            standalone=True,
            liveness_endpoint=liveness,
            memo=kopf.Memo(metrics_port=metrics_port, metrics_address=metrics_address),
        )
    )

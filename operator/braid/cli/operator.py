"""`braid operator`: run the operator against the current kubeconfig: standalone, or as a
hot standby on kopf's peering (``--peering``)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import sys
from enum import StrEnum

import structlog
import typer

from braid.api.podtemplate import PodPolicy
from braid.artifacts.files import ArtifactError
from braid.artifacts.store import Repository
from braid.kube.artifact_pods import ArtifactSettings
from braid.kube.selectors import parse_selector
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
    artifacts: ArtifactSettings | None = None,
    step_cache: bool = False,
) -> None:
    from braid.controller.service import Service, Settings  # noqa: PLC0415 - the operator's

    settings = Settings(
        namespaces=namespaces,
        metrics_port=metrics_port,
        metrics_address=metrics_address,
        webhook_policy=webhook_policy or WebhookPolicy(),
        selector=selector or "",
        pod_policy=pod_policy or PodPolicy(),
        approval_policy=approval_policy or "",
        artifacts=artifacts,
        step_cache=step_cache,
    )
    if not peering:
        # One operator: no kopf at all (controller/standalone.py says why).
        from braid.controller.standalone import serve  # noqa: PLC0415

        health = (health_address, health_port) if health_port else None
        sys.exit(asyncio.run(serve(settings, health)))

    import kopf  # noqa: PLC0415 - only a hot standby needs kopf loaded

    from braid.controller import handlers  # noqa: F401, PLC0415 - registers the handlers

    asyncio.run(
        kopf.operator(
            namespaces=namespaces,
            clusterwide=not namespaces,
            peering_name=peering,
            priority=priority,
            liveness_endpoint=(
                f"http://{health_address}:{health_port}/healthz" if health_port else None
            ),
            memo=kopf.Memo(service=Service(settings)),
        )
    )


def operator(
    namespace: list[str] = typer.Option(
        [], "--namespace", "-n", help="Watch only these namespaces (repeatable); default all."
    ),
    log_format: LogFormat = typer.Option(
        LogFormat.AUTO, "--log-format", help="auto (JSON unless on a terminal), json or console."
    ),
    health_port: int | None = typer.Option(
        None, help="Serve /healthz (liveness and readiness) on this port; off by default."
    ),
    health_address: str = typer.Option(
        "127.0.0.1", help="Address for /healthz; 0.0.0.0 in a pod, so the kubelet reaches it."
    ),
    peering: str = typer.Option(
        "",
        help="kopf peering name for a hot standby: of the operators sharing it, only the one "
        "with the highest priority works. Empty: standalone, no peering objects used.",
    ),
    priority: str = typer.Option(
        "0",
        help="Peering priority: an integer, or 'auto' for a stable one derived from the pod "
        "name ($POD_NAME, else the host name), distinct per replica.",
    ),
    metrics_port: int | None = typer.Option(
        8080, help="Serve Prometheus /metrics on this port; 0 turns it off."
    ),
    webhook_allow: list[str] = typer.Option(
        [],
        "--webhook-allow",
        help="Networks, addresses or host names webhook steps may call (repeatable); when "
        "given, nothing else is reachable, and they win over --webhook-deny.",
    ),
    webhook_deny: list[str] = typer.Option(
        [],
        "--webhook-deny",
        help="Networks webhook steps may not call (repeatable); replaces the default, which is "
        "everything but the public internet (loopback, link-local and cloud metadata, RFC 1918, "
        "CGNAT, ULA, multicast, reserved); 'none' for no deny list.",
    ),
    selector: str = typer.Option(
        "",
        "--selector",
        help="Shard: only runs whose labels match this selector (k=v, k!=v, k, !k; "
        "comma-separated), watched with a server-side label selector.",
    ),
    pod_security: str = typer.Option(
        "restricted",
        "--pod-security",
        help="The Pod Security Standard step Pods must meet, whatever their podTemplate asks: "
        "restricted (default), baseline, or privileged (host namespaces, hostPath, privileged "
        "containers, init containers: whoever may create runs may then run anything).",
    ),
    pod_service_account: list[str] = typer.Option(
        [],
        "--pod-service-account",
        help="A service account step Pods may run as (podTemplate.spec.serviceAccountName): "
        "NAMESPACE/NAME, or */NAME in every namespace (repeatable). Default: none.",
    ),
    approval_policy: str = typer.Option(
        "",
        "--approval-policy",
        help="Name of the ValidatingAdmissionPolicy (and its binding) that checks approval "
        "annotations (the chart's braid-approvals). Checked at start: only when it is "
        "enforced are approver names trusted and approvals through groups counted.",
    ),
    metrics_address: str = typer.Option("0.0.0.0", help="Address to serve metrics on."),  # noqa: S104
    artifact_endpoint: str = typer.Option(
        "",
        "--artifact-endpoint",
        help="The S3-compatible artifact repository, http(s)://host[:port]. Empty: no "
        "artifacts ($BRAID_ARTIFACTS is not set in step Pods; inputs are refused).",
    ),
    artifact_bucket: str = typer.Option("", "--artifact-bucket", help="Its bucket."),
    step_cache: bool = typer.Option(
        False,
        "--step-cache",
        help="Keep successes of steps with `cache` in the ConfigMap braid-cache of their "
        "namespace and reuse them (needs configmaps get, create, patch). Off: cached steps "
        "always run.",
    ),
    artifact_prefix: str = typer.Option(
        "braid", "--artifact-prefix", help="Key prefix: <prefix>/<namespace>/<run>/<attempt>/."
    ),
    artifact_region: str = typer.Option("us-east-1", "--artifact-region", help="Its region."),
    artifact_virtual_host: bool = typer.Option(
        False, "--artifact-virtual-host", help="Virtual-host style URLs (default path style)."
    ),
    artifact_secret: str = typer.Option(
        "",
        "--artifact-secret",
        help="A Secret in each run's namespace with keys accessKey and secretKey, given to "
        "the artifact containers of step Pods (never to the step's own container). The "
        "operator itself uses AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY to delete a deleted "
        "run's artifacts.",
    ),
    artifact_image: str = typer.Option(
        "",
        "--artifact-image",
        envvar="BRAID_IMAGE",
        help="Braid's image, run in step Pods to move artifacts ($BRAID_IMAGE; the chart "
        "sets the operator's own).",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the operator against the current kubeconfig (or in-cluster credentials)."""
    configure_logging(log_format, verbose)
    try:
        rank = resolve_priority(priority, os.environ.get("POD_NAME") or socket.gethostname())
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--priority") from None
    deny = None if not webhook_deny else [d for d in webhook_deny if d != "none"]
    own_ports = [p for p in (metrics_port, health_port) if p]
    try:
        policy = WebhookPolicy.parse(webhook_allow, deny, own_ports)
        parse_selector(selector)
        pods = PodPolicy.parse(pod_security, pod_service_account)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    artifacts = None
    if artifact_endpoint or artifact_bucket:
        if not (artifact_endpoint and artifact_bucket and artifact_image):
            raise typer.BadParameter(
                "artifacts need --artifact-endpoint, --artifact-bucket and --artifact-image "
                "(or $BRAID_IMAGE)"
            )
        try:
            repo = Repository.parse(
                Repository(
                    artifact_endpoint,
                    artifact_bucket,
                    artifact_prefix,
                    artifact_region,
                    not artifact_virtual_host,
                ).wire()
            )
        except ArtifactError as exc:
            raise typer.BadParameter(str(exc), param_hint="--artifact-endpoint") from None
        artifacts = ArtifactSettings(repo, artifact_image, artifact_secret or None)
    run_operator(
        namespace,
        health_port,
        health_address,
        metrics_port or None,
        metrics_address,
        peering=peering or None,
        priority=rank,
        webhook_policy=policy,
        selector=selector or None,
        pod_policy=pods,
        approval_policy=approval_policy or None,
        artifacts=artifacts,
        step_cache=step_cache,
    )


def register(app: typer.Typer) -> None:
    app.command()(operator)


def run_alone(args: list[str]) -> None:
    """`braid operator ARGS` without loading the rest of the CLI (cli/entry.py)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(app)
    typer.main.get_command(app).main(args, prog_name="braid operator")

"""`braid ui`: the web UI on this machine, acting as you (your kubeconfig), or — in the chart,
``--auth=token`` — as whoever signs in with a bearer token."""

from __future__ import annotations

import asyncio
import os
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console

err = Console(stderr=True, highlight=False)
IN_CLUSTER_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
VENDOR = Path(__file__).resolve().parents[1] / "ui" / "static" / "vendor"


class Auth(StrEnum):
    KUBECONFIG = "kubeconfig"
    TOKEN = "token"  # noqa: S105 - the name of a mode, not a secret


def ui(
    port: int = typer.Option(8765, help="Port to serve on."),
    address: str = typer.Option(
        "127.0.0.1",
        help="Address to serve on. Anything but loopback needs --auth=token (the kubeconfig "
        "is yours: nobody else may reach a UI acting as you).",
    ),
    auth: Auth = typer.Option(
        Auth.KUBECONFIG,
        help="kubeconfig: act as your kubeconfig's user. token: each person signs in with a "
        "bearer token, forwarded to the API server (the chart's mode).",
    ),
    kubeconfig: str | None = typer.Option(None, envvar="KUBECONFIG", help="kubeconfig file."),
    context: str | None = typer.Option(None, help="kubeconfig context."),
    server: str = typer.Option(
        "",
        help="--auth=token: the API server's URL (default: the in-cluster one).",
    ),
    certificate_authority: str | None = typer.Option(
        None, help="--auth=token: CA bundle for the API server (default: the in-cluster one)."
    ),
    namespace: str = typer.Option("default", help="--auth=token: the namespace shown first."),
    allowed_host: list[str] = typer.Option(
        [],
        "--allowed-host",
        help="Host names the browser may use to reach the UI (repeatable; default 127.0.0.1 "
        "and localhost): any other Host header is refused, against DNS rebinding.",
    ),
    secure_cookies: bool = typer.Option(
        False, help="Mark the session cookie Secure (behind TLS, as in the chart's Ingress)."
    ),
) -> None:
    """Serve the web UI: runs live, each run's DAG as it moves, workflows and an approvals
    inbox, every request made as you."""
    from braid.ui.app import Settings, serve  # noqa: PLC0415 - the server loads only here

    if not (VENDOR / "htmx.min.js").is_file():
        err.print(
            f"[red]error:[/] the UI's htmx is missing from {VENDOR}: run scripts/ui-assets "
            "(it fetches the pinned version from the npm registry)"
        )
        raise typer.Exit(2)
    loopback = address in ("127.0.0.1", "::1", "localhost")
    if auth == Auth.KUBECONFIG and not loopback:
        err.print(
            "[red]error:[/] --address: a UI acting as your kubeconfig serves only on loopback "
            "(127.0.0.1); use --auth=token to serve others"
        )
        raise typer.Exit(2)
    settings = Settings(
        auth=auth.value,
        kubeconfig=kubeconfig,
        context=context,
        allowed_hosts=allowed_host or ["127.0.0.1", "localhost"],
        secure_cookies=secure_cookies,
        default_namespace=namespace,
    )
    if auth == Auth.TOKEN:
        host, port_env = (
            os.environ.get("KUBERNETES_SERVICE_HOST"),
            os.environ.get("KUBERNETES_SERVICE_PORT", "443"),
        )
        settings.server = server or (f"https://{host}:{port_env}" if host else "")
        if not settings.server:
            err.print("[red]error:[/] --server: not in a cluster, so name the API server's URL")
            raise typer.Exit(2)
        settings.ca_file = certificate_authority or (
            IN_CLUSTER_CA if Path(IN_CLUSTER_CA).is_file() else None
        )
    if auth == Auth.KUBECONFIG:
        _check_kubeconfig(kubeconfig, context)
    err.print(f"Braid UI on http://{address}:{port}/ ({auth.value} identity)")
    serve(settings, address, port)


def _check_kubeconfig(kubeconfig: str | None, context: str | None) -> None:
    """Say what is wrong with the kubeconfig before serving, not in a traceback after."""
    from braid.kube.rest import ApiError  # noqa: PLC0415
    from braid.kube.userapi import UserApi  # noqa: PLC0415

    async def check() -> None:
        api = await UserApi.from_kubeconfig(kubeconfig, context)
        await api.close()

    try:
        asyncio.run(check())
    except ApiError as exc:
        err.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    app.command()(ui)

"""One webhook attempt as an HTTP call, shared by the local runner and the operator.

Carries out the request the engine rendered; the engine judges the response against the
step's success condition. In a cluster the call runs in the operator process (async I/O: no
pod start-up per call, and the response body never has to fit a termination message), so the
operator's configuration decides where workflow authors may send requests: a
:class:`WebhookPolicy` checks every address the URL's host resolves to before the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from braid.engine import AttemptResult, HTTPResponse, StartAttempt

DEFAULT_TIMEOUT_SECONDS = 30.0
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Denied unless allowed explicitly: the operator's own loopback endpoints, link-local (cloud
# metadata at 169.254.169.254 hands out credentials) and "this network".
DEFAULT_DENY = ("127.0.0.0/8", "::1/128", "169.254.0.0/16", "fe80::/10", "0.0.0.0/8")


class WebhookRefusedError(Exception):
    """The operator's policy does not let webhooks reach this address."""


@dataclass(frozen=True)
class WebhookPolicy:
    """Where webhook steps may send requests. ``allow`` (networks or host names), when given,
    is the only set reachable and wins over ``deny``; otherwise everything outside ``deny``
    is. Every address a host name resolves to must pass."""

    allow_networks: tuple[Network, ...] = ()
    allow_hosts: frozenset[str] = frozenset()
    deny_networks: tuple[Network, ...] = field(
        default_factory=lambda: tuple(ipaddress.ip_network(n) for n in DEFAULT_DENY)
    )

    @classmethod
    def parse(cls, allow: Iterable[str], deny: Iterable[str] | None = None) -> WebhookPolicy:
        """From the operator's options; raises ValueError naming a bad entry."""
        nets: list[Network] = []
        hosts: set[str] = set()
        for entry in allow:
            try:
                nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if not entry or "/" in entry or " " in entry:
                    raise ValueError(
                        f"--webhook-allow {entry!r}: expected a network (10.0.0.0/8), an "
                        "address or a host name"
                    ) from None
                hosts.add(entry.lower().rstrip("."))
        denied = []
        for entry in DEFAULT_DENY if deny is None else deny:
            try:
                denied.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(
                    f"--webhook-deny {entry!r}: expected a network such as 10.0.0.0/8"
                ) from None
        return cls(tuple(nets), frozenset(hosts), tuple(denied))

    @property
    def restrictive(self) -> bool:
        return bool(self.allow_networks or self.allow_hosts)

    async def check(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WebhookRefusedError(f"{url!r} is not an http(s) URL")
        host = parts.hostname.lower().rstrip(".")
        if host in self.allow_hosts:
            return
        try:
            addresses = {ipaddress.ip_address(host)}
        except ValueError:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise WebhookRefusedError(f"cannot resolve {host}: {exc}") from None
            addresses = {ipaddress.ip_address(info[4][0]) for info in infos}
        for address in addresses:
            allowed = any(address in n for n in self.allow_networks)
            if self.restrictive and not allowed:
                raise WebhookRefusedError(
                    f"{host} ({address}) is not in the operator's webhook allow list"
                )
            denied = next((n for n in self.deny_networks if address in n), None)
            if denied is not None and not allowed:
                raise WebhookRefusedError(
                    f"{host} ({address}) is in {denied}, which the operator's webhook policy "
                    "denies (--webhook-allow to permit it)"
                )


async def call_webhook(
    client: httpx.AsyncClient, request: StartAttempt, policy: WebhookPolicy | None = None
) -> AttemptResult:
    hook = request.webhook
    assert hook is not None
    if policy is not None:
        try:
            await policy.check(hook.url)
        except WebhookRefusedError as exc:
            return AttemptResult(request.name, error=f"{hook.method} {hook.url} refused: {exc}")
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

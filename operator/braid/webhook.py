"""One webhook attempt as an HTTP call, shared by the local runner and the operator.

Carries out the request the engine rendered; the engine judges the response against the
step's success condition. In a cluster the call runs in the operator process (async I/O: no
pod start-up per call, and the response body never has to fit a termination message), so the
operator's configuration decides where workflow authors may send requests: a
:class:`WebhookPolicy` resolves the URL's host once, checks every address (with any IPv4
address embedded in an IPv6 one), and the call then connects to an address that was checked,
so a second DNS answer cannot send it elsewhere (rebinding). Whatever goes wrong becomes the
attempt's result: nothing a URL, a header or a response holds can escape as an exception.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from braid.api.manifests import too_deep
from braid.api.workflow import KeySelector, SecretValue
from braid.engine import AttemptResult, HTTPResponse, StartAttempt, WebhookRequest
from braid.engine.masking import Masker

if TYPE_CHECKING:
    import httpx

DEFAULT_TIMEOUT_SECONDS = 30.0
# A response body is read up to this size; a larger one fails the attempt (it could never
# become outputs anyway: those are 4 KiB).
MAX_RESPONSE_BYTES = 1024 * 1024
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Denied unless allowed explicitly: everything that is not the public internet. The operator's
# own endpoints (loopback, its pod address), cloud metadata services (169.254.169.254,
# fd00:ec2::254, Alibaba's 100.100.100.200, Azure's 168.63.129.16), private and shared
# networks (RFC 1918, CGNAT, ULA), and addresses that mean "this host" or nothing at all.
DEFAULT_DENY = (
    "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host
    "10.0.0.0/8",
    "100.64.0.0/10",  # CGNAT; holds Alibaba Cloud's metadata service 100.100.100.200
    "127.0.0.0/8",
    "168.63.129.16/32",  # Azure's wire server
    "169.254.0.0/16",  # link-local: cloud metadata at 169.254.169.254
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",  # reserved, and 255.255.255.255
    "::/128",
    "::1/128",
    "64:ff9b:1::/48",  # local-use NAT64
    "100::/64",
    "fc00::/7",  # unique local: holds AWS's IPv6 metadata service fd00:ec2::254
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPATIBLE = ipaddress.ip_network("::/96")


class WebhookRefusedError(Exception):
    """The operator's policy does not let webhooks reach this address."""


def embedded_forms(address: Address) -> list[Address]:
    """The address and every IPv4 address an IPv6 one carries (mapped ``::ffff:a.b.c.d``,
    compatible ``::a.b.c.d``, NAT64 ``64:ff9b::a.b.c.d``, 6to4, Teredo server and client):
    each is a way to reach that IPv4 host, so each must pass the policy."""
    forms: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            forms.append(ipaddress.IPv6Address(str(address).split("%", 1)[0]))
        embedded = (address.ipv4_mapped, address.sixtofour, *(address.teredo or ()))
        forms += [e for e in embedded if e is not None]
        low = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address in _NAT64 or (address in _COMPATIBLE and int(address) > 1):
            forms.append(low)
    return forms


def _is_local(address: Address) -> bool:
    """Is the address one of this machine's own (binding to it succeeds only then)?"""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class WebhookPolicy:
    """Where webhook steps may send requests. ``allow`` (networks or host names), when given,
    is the only set reachable and wins over ``deny``; otherwise everything outside ``deny``
    is. Every address a host name resolves to must pass; ``own_ports`` (the operator's
    metrics and health ports) are refused on the operator's own addresses whatever is
    allowed."""

    allow_networks: tuple[Network, ...] = ()
    allow_hosts: frozenset[str] = frozenset()
    deny_networks: tuple[Network, ...] = field(
        default_factory=lambda: tuple(ipaddress.ip_network(n) for n in DEFAULT_DENY)
    )
    own_ports: frozenset[int] = frozenset()

    @classmethod
    def parse(
        cls,
        allow: Iterable[str],
        deny: Iterable[str] | None = None,
        own_ports: Iterable[int] = (),
    ) -> WebhookPolicy:
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
        return cls(tuple(nets), frozenset(hosts), tuple(denied), frozenset(own_ports))

    @property
    def restrictive(self) -> bool:
        return bool(self.allow_networks or self.allow_hosts)

    def refusal(self, host: str, address: Address, port: int) -> str | None:
        """Why a connection to ``address`` (for ``host``) is refused, or None."""
        forms = embedded_forms(address)
        if port in self.own_ports and any(f.is_loopback or _is_local(f) for f in forms):
            return f"{host} ({address}) port {port} is the operator's own metrics/health endpoint"
        if host in self.allow_hosts:
            return None
        allowed = any(f in n for f in forms for n in self.allow_networks)
        if self.restrictive and not allowed:
            return f"{host} ({address}) is not in the operator's webhook allow list"
        denied = next((n for f in forms for n in self.deny_networks if f in n), None)
        if denied is not None and not allowed:
            return (
                f"{host} ({address}) is in {denied}, which the operator's webhook policy denies "
                "(--webhook-allow to permit it)"
            )
        return None

    async def resolve(self, url: httpx.URL) -> Address:
        """The address to connect to for ``url``: every address the host resolves to must
        pass, and the call goes to the first of them."""
        if url.scheme not in ("http", "https") or not url.host:
            raise WebhookRefusedError(f"{url} is not an http(s) URL")
        host = url.host.lower().rstrip(".")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise WebhookRefusedError(f"cannot resolve {host}: {exc}") from None
            addresses = list(dict.fromkeys(ipaddress.ip_address(i[4][0]) for i in infos))
        if not addresses:
            raise WebhookRefusedError(f"{host} resolves to no address")
        for address in addresses:
            why = self.refusal(host, address, port)
            if why is not None:
                raise WebhookRefusedError(why)
        return addresses[0]


class SecretUnavailableError(Exception):
    """A Secret a webhook reads is missing, or may not be read; the message says which."""


# Reads one key of a Secret in the run's namespace: the value, None when it (or the key) is
# missing, or SecretUnavailableError when it may not be read.
SecretReader = Callable[[KeySelector], Awaitable[str | None]]


async def call_webhook(
    client: httpx.AsyncClient,
    request: StartAttempt,
    policy: WebhookPolicy | None = None,
    secrets: SecretReader | None = None,
) -> AttemptResult:
    """Make the call; every failure, whatever raised it, is the attempt's result. Values
    read from Secrets are masked in the result."""
    hook = request.webhook
    assert hook is not None
    read: list[str] = []
    try:
        resolved = await _resolve(hook, secrets, read)
    except SecretUnavailableError as exc:
        return AttemptResult(request.name, error=str(exc))
    sent = replace(request, webhook=resolved)
    result = await _attempt(client, sent, policy, hook.shown_url)
    if hook.model_call:
        result = await _model_retries(client, sent, policy, hook.shown_url, result)
    masker = Masker.of(read)
    result = masker.result(result)
    if hook.model_call:
        reply = result.response.body if result.response is not None else None
        result = replace(result, exchange=(masker.json(_shown(hook.body)), reply))
    return result


# A model API's own retries inside one attempt, as the OpenAI SDK does: 429 and 5xx, waiting
# what Retry-After says (at most MODEL_WAIT_SECONDS; longer waits are left to retry.backoff).
MODEL_RETRIES = 2
MODEL_WAIT_SECONDS = 30.0


async def _model_retries(
    client: httpx.AsyncClient,
    request: StartAttempt,
    policy: WebhookPolicy | None,
    shown: str,
    result: AttemptResult,
) -> AttemptResult:
    for n in range(MODEL_RETRIES):
        response = result.response
        if response is None or not (response.status == 429 or response.status >= 500):
            return result
        wait = _retry_after(response.headers)
        wait = 0.5 * 2**n if wait is None else wait
        if wait > MODEL_WAIT_SECONDS:
            return result
        await asyncio.sleep(wait)
        result = await _attempt(client, request, policy, shown)
    return result


def _retry_after(headers: dict[str, str]) -> float | None:
    """Retry-After in seconds (a number, or an HTTP date), if the response says."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _shown(node: Any) -> Any:
    """A request body as it may be kept: Secret values as the mask."""
    if isinstance(node, SecretValue):
        return "***"
    if isinstance(node, list):
        return [_shown(v) for v in node]
    if isinstance(node, dict):
        return {k: _shown(v) for k, v in node.items()}
    return node


async def _resolve(
    hook: WebhookRequest, secrets: SecretReader | None, read: list[str]
) -> WebhookRequest:
    """The request with every SecretValue read (``read`` collects the values)."""

    async def value(v: SecretValue) -> str:
        ref = v.value_from.secret_key_ref
        if secrets is None:
            raise SecretUnavailableError(f"Secret {ref.name!r}: no Secrets can be read here")
        got = await secrets(ref)
        if got is None:
            if ref.optional:
                return ""
            raise SecretUnavailableError(f"Secret {ref.name!r} has no key {ref.key!r}")
        read.append(got)
        return (v.prefix or "") + got

    async def body(node: Any) -> Any:
        if isinstance(node, SecretValue):
            return await value(node)
        if isinstance(node, list):
            return [await body(v) for v in node]
        if isinstance(node, dict):
            return {k: await body(v) for k, v in node.items()}
        return node

    url = hook.url
    if isinstance(url, SecretValue):
        url = await value(url)
        read += _url_parts(url)
    headers: dict[str, str | SecretValue] = {
        k: await value(v) if isinstance(v, SecretValue) else v for k, v in hook.headers.items()
    }
    return replace(hook, url=url, headers=headers, body=await body(hook.body))


def _url_parts(url: str) -> list[str]:
    """The host and path of a URL read from a Secret: an error or an echo naming only one of
    them must not show it either."""
    import httpx  # noqa: PLC0415 - loaded by the first webhook call, not at every start

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return []
    return [parsed.host, parsed.raw_path.decode("ascii", "replace")]


async def _attempt(
    client: httpx.AsyncClient, request: StartAttempt, policy: WebhookPolicy | None, shown: str
) -> AttemptResult:
    hook = request.webhook
    assert hook is not None
    where = f"{hook.method} {shown}"
    import httpx  # noqa: PLC0415 - loaded by the first webhook call, not at every start

    try:
        return await _call(client, request, policy)
    except WebhookRefusedError as exc:
        return AttemptResult(request.name, error=f"{where} refused: {exc}")
    except httpx.TimeoutException:
        return AttemptResult(request.name, error=f"{where} timed out", timed_out=True)
    except (httpx.HTTPError, httpx.InvalidURL, httpx.CookieConflict) as exc:
        return AttemptResult(request.name, error=f"{where} failed: {exc!r}"[:1000])
    except Exception as exc:  # noqa: BLE001 - a URL, header or body from a run must not escape
        return AttemptResult(request.name, error=f"{where} failed: {exc!r}"[:1000])


async def _call(
    client: httpx.AsyncClient, request: StartAttempt, policy: WebhookPolicy | None
) -> AttemptResult:
    hook = request.webhook
    assert hook is not None
    assert isinstance(hook.url, str), "secrets are resolved before the call"
    import httpx  # noqa: PLC0415 - loaded by the first webhook call, not at every start

    url = httpx.URL(hook.url)
    headers = {k: v for k, v in hook.headers.items() if isinstance(v, str)}
    extensions: dict[str, Any] = {}
    if policy is not None:
        address = await policy.resolve(url)
        if url.host != str(address):
            # Connect to the address that was checked; the server still sees its own name.
            headers.setdefault("Host", url.netloc.decode("ascii"))
            if url.scheme == "https":
                extensions["sni_hostname"] = url.host
            url = url.copy_with(host=str(address))
    kwargs: dict[str, Any] = {"headers": headers, "extensions": extensions}
    if isinstance(hook.body, str):
        kwargs["content"] = hook.body
    elif hook.body is not None:
        kwargs["json"] = hook.body
    timeout = hook.timeout_seconds or request.timeout_seconds or DEFAULT_TIMEOUT_SECONDS
    async with client.stream(hook.method, url, timeout=timeout, **kwargs) as response:
        return await _read(request, response)


async def _read(request: StartAttempt, response: httpx.Response) -> AttemptResult:
    """The response, read up to MAX_RESPONSE_BYTES; JSON parsed when it says it is JSON and
    is not nested deeper than anything a run may hold."""
    hook = request.webhook
    assert hook is not None
    where = f"{hook.method} {str(hook.url)[:300]}"
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            return AttemptResult(
                request.name,
                error=f"{where}: the response is larger than {MAX_RESPONSE_BYTES} bytes; "
                "select less on the server or page it",
            )
        chunks.append(chunk)
    text = b"".join(chunks).decode(response.encoding or "utf-8", errors="replace")
    body: Any = text
    if "json" in response.headers.get("content-type", ""):
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        except RecursionError:
            body = None  # deeper than the decoder goes: far deeper than allowed
        if body is None or too_deep(body) is not None:
            return AttemptResult(
                request.name, error=f"{where}: the JSON response is nested deeper than 64 levels"
            )
    return AttemptResult(
        request.name, response=HTTPResponse(response.status_code, dict(response.headers), body)
    )

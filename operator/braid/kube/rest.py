"""HTTP to the API server: where to connect and as whom, and requests that carry raw JSON.

Braid's own client rather than a generated one. The operator reads and writes a dozen kinds
of request as plain JSON and never needs client models; the generated client
(kubernetes_asyncio) imports ~860 modules of them — and kopf imports it too, whenever it is
installed — which cost the operator about 45 MiB and half a second of CPU at every start.
So every part of Braid (the operator, the web UI, the benchmarks) talks through this one:
HTTP/1.1 of its own (kube/wire.py, over asyncio's streams), credentials from the pod's
ServiceAccount or a kubeconfig (CA, client certificates, tokens, token files, exec plugins),
answers as bytes or JSON, watches as lines of JSON.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from braid.kube import wire

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_SECONDS = 60  # bound ServiceAccount tokens rotate; the kubelet rewrites the file
WATCH_LINE_LIMIT = 64 << 20  # one watch event: a whole object (etcd keeps at most 1.5 MiB)
Query = Iterable[tuple[str, Any]] | None


class ApiError(Exception):
    """The API server said no (or could not be reached): ``status`` is its HTTP status (0
    when there was no answer), ``message`` its own words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ConfigError(Exception):
    """No usable connection: what is missing or wrong, and where."""


def message_of(body: bytes | str | None, fallback: object) -> str:
    """The API server's ``message`` from a Status body, else ``fallback``."""
    try:
        message = json.loads(body or b"{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or fallback)[:1000]


def error_of(status: int, body: bytes, what: str) -> ApiError:
    return ApiError(status, message_of(body, f"{what}: HTTP {status}"))


@dataclass
class Credentials:
    """Where the API server is and how to prove who we are. A token may come from a file
    (read again every minute) or an exec plugin (run again when what it gave expires)."""

    server: str
    namespace: str = "default"
    ca_file: str | None = None
    ca_data: bytes | None = None
    insecure: bool = False
    token: str | None = None
    token_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    cert_data: bytes | None = None
    key_data: bytes | None = None
    exec_plugin: dict[str, Any] | None = None
    _token_read: float = field(default=0.0, repr=False)
    _exec_expires: float | None = field(default=None, repr=False)

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https://"):
            return False
        if self.insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context = ssl.create_default_context(
                cafile=self.ca_file,
                cadata=self.ca_data.decode() if self.ca_data else None,
            )
        if self.cert_data and self.key_data:
            _load_cert_chain(context, self.cert_data, self.key_data)
        elif self.cert_file and self.key_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context

    async def bearer(self) -> str | None:
        """The token to send now, read again from its file or plugin when due."""
        now = time.monotonic()
        if self.token_file and now - self._token_read > TOKEN_REREAD_SECONDS:
            # A few bytes, once a minute: not worth a thread.
            self.token = Path(self.token_file).read_text().strip()  # noqa: ASYNC240
            self._token_read = now
        if self.exec_plugin and (self._exec_expires is None or now >= self._exec_expires):
            await self.run_exec_plugin()
        return self.token

    async def run_exec_plugin(self) -> None:
        """A client-go credential plugin (``users[].user.exec``): its ExecCredential's token
        or client certificate, until its expirationTimestamp (or for good without one)."""
        spec = self.exec_plugin or {}
        command = spec.get("command")
        if not command:
            raise ConfigError("kubeconfig: users[].user.exec.command is missing")
        env = dict(os.environ)
        env.update({e["name"]: e["value"] for e in spec.get("env") or []})
        api_version = spec.get("apiVersion", "client.authentication.k8s.io/v1")
        env["KUBERNETES_EXEC_INFO"] = json.dumps(
            {"apiVersion": api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
        )
        process = await asyncio.create_subprocess_exec(
            command,
            *(spec.get("args") or []),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise ConfigError(
                f"kubeconfig: the exec plugin {command!r} failed "
                f"(exit {process.returncode}): {err.decode(errors='replace')[:300]}"
            )
        try:
            status = json.loads(out)["status"]
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                f"kubeconfig: the exec plugin {command!r} did not print an ExecCredential "
                "with a status"
            ) from None
        self.token = status.get("token") or self.token
        if status.get("clientCertificateData") and status.get("clientKeyData"):
            self.cert_data = status["clientCertificateData"].encode()
            self.key_data = status["clientKeyData"].encode()
        expires = status.get("expirationTimestamp")
        if expires:
            at = datetime.fromisoformat(str(expires)).timestamp()
            self._exec_expires = time.monotonic() + max(0.0, at - time.time() - 10)
        else:
            self._exec_expires = float("inf")


def _load_cert_chain(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """ssl loads a client certificate only from files: written to a private directory for
    the call and removed right after."""
    with tempfile.TemporaryDirectory(prefix="braid-tls-") as directory:
        cert_path, key_path = Path(directory, "tls.crt"), Path(directory, "tls.key")
        for path, data in ((cert_path, cert), (key_path, key)):
            path.touch(mode=0o600)
            path.write_bytes(data)
        context.load_cert_chain(str(cert_path), str(key_path))


def in_cluster() -> Credentials | None:
    """The pod's own ServiceAccount, when running in a pod."""
    host, port = (
        os.environ.get("KUBERNETES_SERVICE_HOST"),
        os.environ.get("KUBERNETES_SERVICE_PORT"),
    )
    token = SERVICE_ACCOUNT / "token"
    if not host or not port or not token.exists():
        return None
    if ":" in host:  # IPv6
        host = f"[{host}]"
    namespace = SERVICE_ACCOUNT / "namespace"
    return Credentials(
        server=f"https://{host}:{port}",
        namespace=namespace.read_text().strip() if namespace.exists() else "default",
        ca_file=str(SERVICE_ACCOUNT / "ca.crt"),
        token_file=str(token),
    )


def _kubeconfig_paths(path: str | None) -> list[Path]:
    if path:
        return [Path(path).expanduser()]
    listed = os.environ.get("KUBECONFIG")
    if listed:
        return [Path(p).expanduser() for p in listed.split(os.pathsep) if p]
    return [Path("~/.kube/config").expanduser()]


def _read(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"kubeconfig {path} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"kubeconfig {path} is not a mapping")
    return loaded


def _merged(paths: list[Path]) -> dict[str, Any]:
    """Several kubeconfigs as client-go merges them: the first file to name a cluster, user
    or context wins, and the first current-context set. Files named in a cluster or user
    are found beside the kubeconfig that names them."""
    merged: dict[str, Any] = {"clusters": {}, "users": {}, "contexts": {}, "current-context": ""}
    existing = [p for p in paths if p.exists()]
    if not existing:
        raise ConfigError(
            "no kubeconfig found at " + ", ".join(str(p) for p in paths) + " and not in a pod"
        )
    for path in existing:
        loaded = _read(path)
        for section in ("clusters", "users", "contexts"):
            for entry in loaded.get(section) or []:
                if isinstance(entry, dict) and entry.get("name") is not None:
                    merged[section].setdefault(str(entry["name"]), {**entry, "_base": path.parent})
        if not merged["current-context"] and loaded.get("current-context"):
            merged["current-context"] = str(loaded["current-context"])
    return merged


def _file(base: Path, value: str) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def from_kubeconfig(path: str | None = None, context: str | None = None) -> Credentials:
    """The credentials of ``context`` (default: the current one) in the kubeconfig at
    ``path`` (default: $KUBECONFIG, several files merged, else ~/.kube/config)."""
    config = _merged(_kubeconfig_paths(path))
    name = context or config["current-context"]
    if not name:
        raise ConfigError("kubeconfig: no current-context set and no context given")
    chosen = config["contexts"].get(name)
    if chosen is None:
        raise ConfigError(
            f"kubeconfig: no context named {name!r} (there are: "
            f"{', '.join(sorted(config['contexts'])) or 'none'})"
        )
    ctx = chosen.get("context") or {}
    cluster_entry = config["clusters"].get(ctx.get("cluster"))
    if cluster_entry is None:
        raise ConfigError(f"kubeconfig: context {name!r} names no known cluster")
    cluster, base = cluster_entry.get("cluster") or {}, cluster_entry["_base"]
    if not cluster.get("server"):
        raise ConfigError(f"kubeconfig: cluster {ctx.get('cluster')!r} has no server")
    credentials = Credentials(
        server=str(cluster["server"]).rstrip("/"),
        namespace=str(ctx.get("namespace") or "default"),
        ca_file=_file(base, cluster["certificate-authority"])
        if cluster.get("certificate-authority")
        else None,
        ca_data=_b64(cluster["certificate-authority-data"])
        if cluster.get("certificate-authority-data")
        else None,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
    )
    user_entry = config["users"].get(ctx.get("user")) if ctx.get("user") else None
    if user_entry is not None:
        user, base = user_entry.get("user") or {}, user_entry["_base"]
        if user.get("auth-provider"):
            raise ConfigError(
                f"kubeconfig: user {ctx.get('user')!r} uses an auth-provider, which Braid does "
                "not support; use an exec credential plugin (users[].user.exec) or a token"
            )
        credentials.token = user.get("token")
        if user.get("tokenFile"):
            credentials.token_file = _file(base, user["tokenFile"])
        cert, key = user.get("client-certificate-data"), user.get("client-key-data")
        credentials.cert_data = _b64(cert) if cert else None
        credentials.key_data = _b64(key) if key else None
        if user.get("client-certificate") and user.get("client-key"):
            credentials.cert_file = _file(base, user["client-certificate"])
            credentials.key_file = _file(base, user["client-key"])
        credentials.exec_plugin = user.get("exec")
        if user.get("username") or user.get("password"):
            raise ConfigError(
                f"kubeconfig: user {ctx.get('user')!r} uses basic auth, which the API server "
                "no longer accepts; use a token or a client certificate"
            )
    return credentials


def contexts(path: str | None = None) -> tuple[list[str], str]:
    """The context names in the kubeconfig, and the current one."""
    config = _merged(_kubeconfig_paths(path))
    return sorted(config["contexts"]), config["current-context"]


def load(path: str | None = None, context: str | None = None) -> Credentials:
    """In a pod (and no kubeconfig asked for): its ServiceAccount; otherwise the kubeconfig."""
    if path is None and context is None:
        found = in_cluster()
        if found is not None:
            return found
    return from_kubeconfig(path, context)


class Rest:
    """Requests to one API server as one identity. Its connections (and TLS context) are
    made on first use, inside the event loop."""

    def __init__(self, credentials: Credentials, *, connections: int = 100) -> None:
        self.credentials = credentials
        self.connections = connections
        self._pool: wire.Pool | None = None

    @property
    def namespace(self) -> str:
        return self.credentials.namespace

    def _open(self) -> wire.Pool:
        if self._pool is None:
            context = self.credentials.ssl_context()
            try:
                self._pool = wire.Pool(
                    self.credentials.server,
                    context if isinstance(context, ssl.SSLContext) else None,
                    limit=self.connections,
                )
            except wire.WireError as exc:
                raise ConfigError(str(exc)) from None
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "Accept-Encoding": "gzip"}
        if content_type:
            headers["Content-Type"] = content_type
        token = await self.credentials.bearer()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Query = None,
        body: Any = None,
        content_type: str = "application/json",
        seconds: float = 30,
    ) -> tuple[int, bytes]:
        """The answer's status and body, whatever the status; ``ApiError(0, ...)`` only when
        there was no answer. ``body``: JSON-able, or bytes sent as they are."""
        data = None if body is None else body if isinstance(body, bytes) else json.dumps(body)
        raw = data.encode() if isinstance(data, str) else data
        headers = await self._headers(content_type if raw is not None else None)
        pool = self._open()
        try:
            return await pool.request(method, path, _params(query), headers, raw, seconds=seconds)
        except TimeoutError:
            raise ApiError(
                0, f"the API server did not answer {method} {path} within {seconds:g} s"
            ) from None
        except (OSError, EOFError, wire.WireError, asyncio.LimitOverrunError) as exc:
            raise ApiError(0, f"the API server could not be reached: {exc}") from None

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """The answer as JSON; an ``ApiError`` with the API server's message unless 2xx."""
        status, body = await self.request(method, path, **kwargs)
        if not 200 <= status < 300:
            raise error_of(status, body, f"{method} {path}")
        return json.loads(body) if body else None

    async def watch(
        self, path: str, query: Query = None, *, seconds: int = 300
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of a watch of ``path`` (``watch=true`` is added), until the API server
        ends it after ``seconds``. A refused watch raises ``ApiError``; an ``ERROR`` event is
        yielded like any other (410: the version asked for is too old)."""
        params = [*_params(query), ("watch", "true"), ("timeoutSeconds", str(seconds))]
        headers = await self._headers(None)
        pool = self._open()
        try:
            async with pool.stream(path, params, headers, connect_seconds=30) as (status, body):
                if not 200 <= status < 300:
                    raise error_of(status, await body.read(), f"watch {path}")
                async for line in wire.lines(
                    body, read_seconds=seconds + 30, limit=WATCH_LINE_LIMIT
                ):
                    yield json.loads(line)
        except TimeoutError:
            raise ApiError(0, f"the watch of {path}: no answer in time") from None
        except (OSError, EOFError, wire.WireError, asyncio.LimitOverrunError) as exc:
            raise ApiError(0, f"the API server could not be reached: {exc}") from None


def _params(query: Query) -> list[tuple[str, str]]:
    return [(k, _param(v)) for k, v in query or []]


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
